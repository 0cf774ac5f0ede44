"""`polybus up` as a new user runs it: starts everything, reports healthy, stops cleanly on
SIGTERM with exit 0, and keeps its data across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import nats
import pytest

from polybus.common.infra import free_port
from tests.conftest import STREAMS_FILE
from tests.helpers import healthy_status, polybus, start_up, stop


def write_config(workdir: Path) -> tuple[Path, int, int]:
    nats_port, postgres_port = free_port(), free_port()
    config = workdir / "polybus.toml"
    config.write_text(
        f"""venue = "sim"
[bus]
streams_file = "{STREAMS_FILE}"
[embedded]
nats_port = {nats_port}
nats_monitor_port = {free_port()}
postgres_port = {postgres_port}
[log]
format = "json"
[supervisor]
metrics_port = 0
heartbeat_interval_s = 0.5
# This test is about the platform; the services have their own end-to-end tests.
[sim]
enabled = false
[ingest]
enabled = false
[recorder]
enabled = false
"""
    )
    return config, nats_port, postgres_port


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_up_reports_healthy_stops_cleanly_and_keeps_data(workdir: Path) -> None:
    config, nats_port, postgres_port = write_config(workdir)
    up = await start_up(config, workdir)
    try:
        status = await healthy_status(config, workdir)
        assert status["healthy"] is True
        assert status["nats"] == {
            "url": f"nats://127.0.0.1:{nats_port}",
            "reachable": True,
            "error": "",
        }
        assert {s["name"] for s in status["streams"]} >= {"MD", "INTENT", "EXEC"}
        # Leave something in each store.
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")
        await nc.jetstream().publish("md.polymarket.0.book.1", b"{}")
        await nc.close()
        db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus")
        await db.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await db.close()
    finally:
        code = await stop(up)
    assert code == 0, (workdir / "up.log").read_text()[-3000:]
    assert (workdir / "var" / "nats").is_dir()
    assert (workdir / "var" / "pg" / "PG_VERSION").is_file()

    again = await start_up(config, workdir)
    try:
        status = await healthy_status(config, workdir)
        [md] = [s for s in status["streams"] if s["name"] == "MD"]
        assert md["messages"] == 1
        db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus")
        assert await db.fetchval("SELECT x FROM kept") == 42
        await db.close()
    finally:
        assert await stop(again) == 0
    log = (workdir / "up.log").read_text()
    assert '"event": "up.stopped"' in log
    # Servers stop after the services: postgres and nats are the last children stopped.
    stopped = [
        json.loads(line)["child"] for line in log.splitlines() if '"supervisor.stopped"' in line
    ]
    assert stopped[-2:] == ["postgres", "nats-server"]


async def test_status_reports_unreachable_servers_and_exits_1(workdir: Path) -> None:
    config, _, _ = write_config(workdir)
    code, out = await polybus("status", "--json", "--config", str(config), cwd=workdir)
    assert code == 1
    status = json.loads(out)
    assert status["healthy"] is False
    assert status["nats"]["reachable"] is False
    assert status["postgres"]["reachable"] is False
