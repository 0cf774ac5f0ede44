"""The recorder's migrations (tests/integration/test_recorder_migrations.py) against compose's
TimescaleDB image, where the guarded TimescaleDB migration (hypertables, compression, retention,
continuous aggregates) is applied instead of skipped (see conftest.py)."""

from __future__ import annotations

import asyncpg

from polybus.recorder.migrations import load_migrations, migrate, timescaledb_unavailable
from tests.integration.test_recorder_migrations import *  # noqa: F403 - the same tests, here
from tests.integration.test_recorder_migrations import TIMESCALE


async def test_compose_s_image_applies_every_migration_none_skipped(database_url: str) -> None:
    # What makes this tier worth running: the hypertable test above really runs here, where on
    # the wheels' plain PostgreSQL it skips.
    connection = await asyncpg.connect(database_url)
    try:
        assert await timescaledb_unavailable(connection, TIMESCALE) is None
        report = await migrate(connection)
    finally:
        await connection.close()
    assert report.skipped == []
    assert [m.version for m in report.applied] == [m.version for m in load_migrations()]
