"""The whole system, as `python3 dev.py up --config …sim…` runs it: the simulator, the ingest
and the recorder under `polybus up`, with embedded NATS and PostgreSQL. Market data flows from
the simulator's WebSocket through verified books onto NATS and into PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from polybus.common.infra import free_port
from tests.conftest import STREAMS_FILE
from tests.helpers import eventually, healthy_status, start_up, stop

SERVICES = frozenset({"supervisor", "sim", "ingest", "recorder", "executor"})


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_simulated_market_data_reaches_postgres_through_every_service(
    workdir: Path,
) -> None:
    sim_port, postgres_port = free_port(), free_port()
    config = workdir / "polybus.toml"
    config.write_text(
        f"""venue = "sim"
[bus]
streams_file = "{STREAMS_FILE}"
[embedded]
nats_port = {free_port()}
nats_monitor_port = {free_port()}
postgres_port = {postgres_port}
[log]
format = "json"
[supervisor]
metrics_port = 0
heartbeat_interval_s = 1
[sim]
port = {sim_port}
metrics_port = 0
heartbeat_interval_s = 1
binary_markets = 4
neg_risk_events = 1
outcomes_per_event = 3
[ingest]
market_ws_url = "ws://127.0.0.1:{sim_port}/ws/market"
clob_url = "http://127.0.0.1:{sim_port}"
gamma_url = "http://127.0.0.1:{sim_port}"
discover_top_n = 1000
metrics_port = 0
heartbeat_interval_s = 1
[recorder]
metrics_port = 0
heartbeat_interval_s = 1
[executor]
metrics_port = 0
heartbeat_interval_s = 1
"""
    )
    up = await start_up(config, workdir)
    try:
        status = await healthy_status(config, workdir, SERVICES)
        assert status["healthy"] is True
        database = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus")
        try:

            async def recorded() -> bool:
                snapshots = await database.fetchval("SELECT count(*) FROM book_snapshots")
                deltas = await database.fetchval("SELECT count(*) FROM book_deltas")
                markets = await database.fetchval("SELECT count(*) FROM markets")
                return bool(snapshots and deltas and markets)

            await eventually(recorded, 90, "snapshots, deltas and markets in PostgreSQL", poll=0.5)
            # Every tracked asset of the 7 markets (14 tokens) got a verified snapshot.
            assets = await database.fetchval("SELECT count(DISTINCT asset_id) FROM book_snapshots")
            assert assets == 14
            health = await database.fetchval("SELECT count(DISTINCT service) FROM service_health")
            assert health >= 4
        finally:
            await database.close()
    finally:
        code = await stop(up)
    assert code == 0
    log = (workdir / "up.log").read_text()
    children = [
        json.loads(line)["child"] for line in log.splitlines() if '"supervisor.stopped"' in line
    ]
    # The services first (stopped together, so in any order), then PostgreSQL, then NATS.
    assert sorted(children[:4]) == ["executor", "ingest", "recorder", "sim"]
    assert children[4:] == ["postgres", "nats-server"]
