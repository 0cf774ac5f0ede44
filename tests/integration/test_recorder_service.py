"""The recorder service as `polybus recorder` runs it (in-process here)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import load_config
from polybus.common.infra import free_port
from polybus.common.plugins import discover_plugins, section_types
from polybus.common.streams import Definitions
from polybus.recorder.migrations import MigrationError, migrate
from polybus.recorder.service import run
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually
from tests.samples import market_data, subject_for


async def test_the_service_refuses_a_database_migrated_by_a_newer_polybus(
    bus: NatsBus,
    definitions: Definitions,
    nats_server: NatsServerInfo,
    database_url: str,
    tmp_path: Path,
) -> None:
    await bus.apply(definitions)
    connection = await asyncpg.connect(database_url)
    await migrate(connection)
    await connection.execute(
        "INSERT INTO schema_migrations (version, name, checksum, polybus_version) "
        "VALUES (50, 'newer', 'x', '2.0.0')"
    )
    await connection.close()
    path = tmp_path / "recorder.toml"
    path.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
        f'[database]\nurl = "{database_url}"\n'
        "[recorder]\nmetrics_port = 0\n"
    )
    config = load_config(path, section_types(discover_plugins()))
    with pytest.raises(MigrationError, match="version 50"):
        await run(config)


async def test_healthz_reports_an_unreachable_database_while_events_wait(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    await bus.apply(definitions)
    port = free_port()
    path = tmp_path / "recorder.toml"
    path.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
        # Nothing listens on port 1: the database is "down" from the start.
        '[database]\nurl = "postgresql://postgres@127.0.0.1:1/polybus"\n'
        f"[recorder]\nmetrics_port = {port}\nmigrate_on_start = false\n"
        "backoff_initial_s = 0.05\nbackoff_max_s = 0.2\n"
    )
    config = load_config(path, section_types(discover_plugins()))
    [event, *_] = market_data(1)
    await bus.publish(subject_for(bus.namespace.subjects, event), event, msg_id=event.event_id)
    service = asyncio.create_task(run(config))
    health: dict[str, object] = {}

    async def unhealthy() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/healthz") as response,
            ):
                health.update(await response.json())
                return response.status == 503 and "database" in health.get("checks", {})  # type: ignore[operator]
        except aiohttp.ClientError:
            return False

    try:
        await eventually(unhealthy, 20, "/healthz to report the database")
        checks = health["checks"]
        assert isinstance(checks, dict)
        assert checks["database"].startswith("failing: unreachable: MD")
        info = await bus.js.consumer_info(bus.namespace.stream("MD"), "recorder")
        assert info.ack_floor.stream_seq == 0  # held, not acked
    finally:
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service
