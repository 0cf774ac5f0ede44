"""The ingest's commands as an operator runs them, against the simulator: `polybus ingest`,
`polybus markets`, `polybus record` then `polybus replay`."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import BookSnapshot, BookStatus, MarketInfo, decode
from polybus.common.streams import Definitions
from polybus.ingest.replay import replay_engine
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def simulator() -> Simulator:
    return Simulator(
        SimSettings(
            port=0,
            seed=11,
            binary_markets=4,
            neg_risk_events=1,
            outcomes_per_event=3,
            connect_bus=False,
            custom_feature_interval_s=0.0,
        )
    )


def write_config(path: Path, sim: Simulator, *, bus: str = "", prefix: str = "") -> Path:
    lines = [f'[bus]\nstreams_file = "{STREAMS_FILE}"']
    if bus:
        lines.append(f'url = "{bus}"\nsubject_prefix = "{prefix}"')
    lines.append(
        "[ingest]\n"
        f'market_ws_url = "{sim.market_ws_url}"\n'
        f'clob_url = "{sim.http_url}"\n'
        f'gamma_url = "{sim.http_url}"\n'
        "discover_top_n = 1000\nmetrics_port = 0\nheartbeat_interval_s = 0.5"
    )
    path.write_text("\n".join(lines) + "\n")
    return path


async def polybus(*args: str, stdout: int | None = asyncio.subprocess.PIPE) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus.common.cli",
        *args,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode() if out else err.decode()


async def test_polybus_markets_lists_what_would_be_subscribed(tmp_path: Path) -> None:
    async with simulator() as sim:
        config = write_config(tmp_path / "c.toml", sim)
        code, out = await polybus("markets", "--json", "--config", str(config))
        assert code == 0, out
        infos = [decode(line) for line in out.splitlines()]
        assert all(isinstance(info, MarketInfo) for info in infos)
        assert {info.condition_id for info in infos if isinstance(info, MarketInfo)} == {
            market.condition_id for market in sim.markets()
        }


async def test_polybus_record_then_replay_rebuilds_the_books(tmp_path: Path) -> None:
    async with simulator() as sim:
        config = write_config(tmp_path / "c.toml", sim)
        out = tmp_path / "capture.jsonl.gz"
        code, err = await polybus(
            "record", "--out", str(out), "--duration", "2", "--config", str(config)
        )
        assert code == 0, err
        assert "recorded" in err
    engine = replay_engine(out)
    assert len(engine.tracks) == len(sim.asset_ids())
    assert engine.states()["live"] == len(sim.asset_ids())
    assert sum(t.counts.bbo_failed + t.counts.hash_failed for t in engine.tracks.values()) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # gzip'ed, by its name
    code, text = await polybus("replay", "--json", str(out))
    assert code == 0
    lines = [json.loads(line) for line in text.splitlines()]
    assert {line["asset_id"] for line in lines} == set(sim.asset_ids())
    assert all(line["state"] == "live" for line in lines)


async def test_polybus_ingest_publishes_books_and_stops_cleanly_on_sigterm(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    await bus.apply(definitions)
    seen: list[object] = []

    async def collect(message: object) -> None:
        seen.append(decode(message.data))  # type: ignore[attr-defined]

    subscription = await bus.subscribe(bus.namespace.subjects.market_data_all(), collect)
    async with simulator() as sim:
        config = write_config(
            tmp_path / "c.toml",
            sim,
            bus=nats_server.url,
            prefix=bus.namespace.subject_prefix,
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polybus.common.cli",
            "ingest",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assets = set(sim.asset_ids())

        def all_live() -> bool:
            live = {e.asset_id for e in seen if isinstance(e, BookStatus) and e.status == "live"}
            return live == assets

        await eventually(all_live, 30, "every book live on the bus")
        assert {e.asset_id for e in seen if isinstance(e, BookSnapshot)} == assets
        assert {e.condition_id for e in seen if isinstance(e, MarketInfo)} == {
            m.condition_id for m in sim.markets()
        }
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    await subscription.unsubscribe()


async def test_an_ingest_that_follows_no_market_is_degraded_and_status_says_why(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    # Offline with the default market selection: Gamma cannot be reached, no explicit list.
    await bus.apply(definitions)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    namespace = bus.namespace
    config = tmp_path / "c.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nsubject_prefix = "{namespace.subject_prefix}"\n'
        f'stream_prefix = "{namespace.stream_prefix}"\n'
        f'[database]\nurl = "postgresql://polybus@{dead}/polybus"\n'
        f'[ingest]\ngamma_url = "http://{dead}"\nclob_url = "http://{dead}"\n'
        f'market_ws_url = "ws://{dead}"\nmetrics_port = 0\nheartbeat_interval_s = 0.5\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", "ingest", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    ingest: dict[str, object] = {}

    async def reported() -> bool:
        code, out = await polybus(
            "status", "--json", "--connect-timeout", "2", "--config", str(config)
        )
        services = [s for s in json.loads(out)["services"] if s["service"] == "ingest"]
        ingest.update(services[0] if services else {})
        # The first heartbeats can come before the first selection attempt has failed.
        return code == 1 and "market selection failed" in str(ingest.get("reason", ""))

    try:
        await eventually(reported, 30, "the ingest's failed selection in polybus status")
        assert ingest["status"] == "degraded"
        assert ingest["healthy"] is False
        assert "no markets selected" in str(ingest["reason"])
        assert "market selection failed" in str(ingest["reason"])
        code, human = await polybus("status", "--connect-timeout", "2", "--config", str(config))
        assert code == 1
        assert "ingest" in human
        assert "no markets selected" in " ".join(human.split())
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
