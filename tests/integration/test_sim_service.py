"""``polybus sim --config FILE`` as a process: prints its URLs, serves, stops on SIGTERM;
``polybus sim-fault`` switches a running simulator's faults; ``polybus up`` wants the sim only
for ``venue = "sim"``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from polybus.common.config import load_config
from polybus.common.plugins import discover_plugins, section_types
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.conftest import NatsServerInfo

CLI = [sys.executable, "-m", "polybus.common.cli"]


async def start_sim(config: Path) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        *CLI, "sim", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    urls: dict[str, str] = {}
    async with asyncio.timeout(30):
        while len(urls) < 5:
            line = (await process.stdout.readline()).decode().strip()
            assert line, "the simulator exited before printing its URLs"
            name, _, url = line.partition("=")
            urls[name] = url
    return process, urls


@pytest.mark.slow
async def test_polybus_sim_prints_urls_serves_and_stops_on_sigterm(
    nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    config = tmp_path / "sim.toml"
    config.write_text(
        f'venue = "sim"\n[bus]\nurl = "{nats_server.url}"\n[log]\nformat = "json"\n'
        "[sim]\nport = 0\nmetrics_port = 0\nbinary_markets = 3\nneg_risk_events = 0\n"
    )
    process, urls = await start_sim(config)
    try:
        assert set(urls) == {"http_url", "market_ws_url", "user_ws_url", "gamma_url", "admin_url"}
        assert urls["market_ws_url"].startswith("ws://127.0.0.1:")
        async with httpx.AsyncClient(base_url=urls["http_url"]) as http:
            assert (await http.get("/version")).json() == {"version": 2}
            markets = (await http.get("/markets")).json()
            assert len(markets) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await process.wait()
    assert code == 0


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(port=0, binary_markets=2, neg_risk_events=0, connect_bus=False)
    async with Simulator(settings) as simulator:
        yield simulator


async def test_polybus_sim_fault_switches_a_fault(sim: Simulator) -> None:
    process = await asyncio.create_subprocess_exec(
        *CLI, "sim-fault", "rate_limit", "--url", sim.http_url, "--set", "count=1",
        "--set", "retry_after_s=4",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(30):
        stdout, _ = await process.communicate()
    assert process.returncode == 0
    assert json.loads(stdout)["status"]["rate_limited_requests"] == 1
    async with httpx.AsyncClient(base_url=sim.http_url) as http:
        limited = await http.get("/book", params={"token_id": sim.asset_ids()[0]})
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "4")
    unknown = await asyncio.create_subprocess_exec(
        *CLI, "sim-fault", "no_such_fault", "--url", sim.http_url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(30):
        assert await unknown.wait() == 1


def test_polybus_up_runs_the_sim_only_for_the_sim_venue(tmp_path: Path) -> None:
    plugin = discover_plugins()["sim"]
    for venue, wanted in (("sim", True), ("polymarket", False)):
        path = tmp_path / f"{venue}.toml"
        path.write_text(f'venue = "{venue}"\n')
        config = load_config(path, section_types(discover_plugins()))
        assert plugin.wanted(config) is wanted
    assert config.section("sim", SimSettings).port == 8080


def test_a_typo_in_the_sim_section_names_the_key(tmp_path: Path) -> None:
    from polybus.common.config import ConfigError

    path = tmp_path / "bad.toml"
    path.write_text('venue = "sim"\n[sim]\nbinary_market = 3\n')
    with pytest.raises(ConfigError, match=r"sim\.binary_market"):
        load_config(path, section_types(discover_plugins()))
