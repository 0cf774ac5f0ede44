"""The recorder service as `polybus recorder` runs it (in-process here)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import load_config
from polybus.common.plugins import discover_plugins, section_types
from polybus.common.streams import Definitions
from polybus.recorder.migrations import MigrationError, migrate
from polybus.recorder.service import run
from tests.conftest import STREAMS_FILE, NatsServerInfo


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
