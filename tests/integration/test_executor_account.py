"""``polybus account`` and ``polybus account derive-keys`` against the simulator, run as the
operator runs them (a process of their own): credentials derived into a secrets file that
stays mode 0600, the account's balance and allowances as the venue reports them and what is
missing to trade, the documented exit codes, one line per error, and no secret in any output."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.helpers import write_secrets
from tests.integration.test_sim_support import Trader

PRIVATE_KEY = "0x" + "b8" * 32
RUN_CLI = "from polybus.executor.cli import commands; commands()(prog_name='polybus')"
UNLIMITED = "unlimited"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=41, binary_markets=1, neg_risk_events=0, flow=False, connect_bus=False,
        starting_collateral=1_000,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


def deployment(directory: Path, clob_url: str, secrets: str = "", *, mode: int = 0o600) -> Path:
    """A config naming ``secrets.toml`` beside it, holding ``secrets`` (mode ``mode``)."""
    write_secrets(
        directory / "secrets.toml",
        secrets or f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n',
        mode,
    )
    config = directory / "live.toml"
    config.write_text(
        'venue = "sim"\nsecrets_file = "secrets.toml"\n\n'
        f'[executor]\nmode = "live"\nclob_url = "{clob_url}"\nsignature_type = "EOA"\n'
    )
    return config


async def polybus(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``polybus <args>`` in its own process (the simulator keeps serving meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN_CLI,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


async def test_derive_keys_writes_the_venues_credentials_into_a_private_secrets_file(
    sim: Simulator, tmp_path: Path
) -> None:
    config = deployment(tmp_path, sim.http_url)
    derived = await polybus("account", "derive-keys", "--config", str(config))
    assert derived.returncode == 0, derived.stderr

    secrets_path = tmp_path / "secrets.toml"
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600
    written = tomllib.loads(secrets_path.read_text())["polymarket"]
    assert written["private_key"] == PRIVATE_KEY
    # the venue's own credentials for this signer (nonce 0), as a raw L1 client derives them
    async with httpx.AsyncClient(base_url=sim.http_url) as http:
        trader = Trader(http, PRIVATE_KEY)
        venue_says = (await http.get("/auth/derive-api-key", headers=trader.l1_headers())).json()
    assert (written["api_key"], written["api_secret"], written["api_passphrase"]) == (
        venue_says["apiKey"],
        venue_says["secret"],
        venue_says["passphrase"],
    )
    output = derived.stdout + derived.stderr
    for secret in (
        PRIVATE_KEY,
        written["api_key"],
        written["api_secret"],
        written["api_passphrase"],
    ):
        assert secret not in output
    assert str(secrets_path) in derived.stdout


async def test_the_account_with_credentials_balance_and_allowances_is_ready(
    sim: Simulator, tmp_path: Path
) -> None:
    config = deployment(tmp_path, sim.http_url)
    assert (await polybus("account", "derive-keys", "--config", str(config))).returncode == 0

    shown = await polybus("account", "--json", "--config", str(config))
    assert shown.returncode == 0, (shown.stdout, shown.stderr)
    report = json.loads(shown.stdout)
    signer = Account.from_key(PRIVATE_KEY).address
    assert (report["signer"], report["wallet"], report["signature_type"]) == (signer, signer, "EOA")
    assert report["balance"] == "1000"
    assert report["allowances"]
    assert set(report["allowances"].values()) == {UNLIMITED}
    assert report["approvals"].startswith("not available")  # the simulator has no indexer
    assert (report["ready"], report["missing"]) == (True, [])

    human = await polybus("account", "--config", str(config))
    assert human.returncode == 0
    assert "pUSD balance" in human.stdout
    assert "ready" in human.stdout
    secrets = tomllib.loads((tmp_path / "secrets.toml").read_text())["polymarket"]
    for value in secrets.values():
        assert value not in shown.stdout + shown.stderr + human.stdout + human.stderr


async def test_an_account_without_credentials_or_without_balance_says_what_is_missing(
    tmp_path: Path,
) -> None:
    settings = SimSettings(
        port=0, seed=42, binary_markets=1, neg_risk_events=0, flow=False, connect_bus=False,
        starting_collateral=0,
    )  # fmt: skip
    async with Simulator(settings) as sim:
        config = deployment(tmp_path, sim.http_url)
        before = await polybus("account", "--json", "--config", str(config))
        assert before.returncode == 1, before.stderr
        assert json.loads(before.stdout)["missing"] == [
            "no API credentials in the secrets file (run: polybus account derive-keys)"
        ]
        assert (await polybus("account", "derive-keys", "--config", str(config))).returncode == 0
        after = await polybus("account", "--config", str(config))
    assert after.returncode == 1, after.stderr
    missing = [line for line in after.stdout.splitlines() if line.startswith("missing:")]
    assert len(missing) == 1
    assert "no pUSD balance" in missing[0]


async def test_a_secrets_file_others_can_read_is_refused_and_not_rewritten(
    sim: Simulator, tmp_path: Path
) -> None:
    config = deployment(tmp_path, sim.http_url, mode=0o644)
    before = (tmp_path / "secrets.toml").read_text()
    for command in (["account", "derive-keys"], ["account"]):
        result = await polybus(*command, "--config", str(config))
        assert_one_line_error(result, 2)
        assert "group/others" in result.stderr
        assert PRIVATE_KEY not in result.stderr
    assert (tmp_path / "secrets.toml").read_text() == before
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.toml").st_mode) == 0o644


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        ("[polymarket]\n", "no [polymarket] private_key"),
        ('[polymarket]\nprivate_key = "0x1234"\n', "not a 32-byte hex key"),
    ],
)
async def test_no_usable_signing_key_is_bad_config(
    sim: Simulator, tmp_path: Path, secrets: str, expected: str
) -> None:
    config = deployment(tmp_path, sim.http_url, secrets)
    for command in (["account", "derive-keys"], ["account", "--json"]):
        result = await polybus(*command, "--config", str(config))
        assert_one_line_error(result, 2)
        assert expected in result.stderr
        assert "0x1234" not in result.stderr


async def test_an_unreachable_venue_is_a_runtime_failure(tmp_path: Path) -> None:
    config = deployment(tmp_path, "http://127.0.0.1:9")  # discard port: nothing listens
    result = await polybus("account", "derive-keys", "--config", str(config))
    assert_one_line_error(result, 1)
    assert "unreachable" in result.stderr


async def test_a_missing_config_file_is_bad_usage(tmp_path: Path) -> None:
    result = await polybus("account", "--config", str(tmp_path / "absent.toml"))
    assert_one_line_error(result, 2)
