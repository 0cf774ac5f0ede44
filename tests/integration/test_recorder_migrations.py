"""Schema migrations on a real PostgreSQL: idempotent, recorded, guarded, version-checked."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest

from polybus.recorder.migrations import (
    MigrationError,
    load_migrations,
    migrate,
    timescaledb_unavailable,
)

TIMESCALE = (2, 13)


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def schema(connection: asyncpg.Connection) -> list[tuple[str, ...]]:
    columns = await connection.fetch(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    )
    indexes = await connection.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "ORDER BY indexname"
    )
    return [tuple(r) for r in columns] + [tuple(r) for r in indexes]


async def test_migrating_twice_applies_once_and_changes_nothing(
    connection: asyncpg.Connection,
) -> None:
    timescale_missing = await timescaledb_unavailable(connection, TIMESCALE)
    first = await migrate(connection)
    expected = [
        m.version for m in load_migrations() if not (m.requires_timescaledb and timescale_missing)
    ]
    assert expected[0] == 1
    assert [m.version for m in first.applied] == expected
    before = await schema(connection)
    recorded = await connection.fetch("SELECT * FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in recorded] == [
        (m.version, m.name) for m in first.applied
    ]
    assert all(r["checksum"] and r["polybus_version"] and r["applied_at"] for r in recorded)

    second = await migrate(connection)
    assert second.applied == []
    assert second.already_applied == expected
    assert await schema(connection) == before
    assert await connection.fetch("SELECT * FROM schema_migrations ORDER BY version") == recorded
    assert "schema is up to date" in second.describe()


async def test_a_database_migrated_by_a_newer_polybus_is_refused(
    connection: asyncpg.Connection,
) -> None:
    await migrate(connection)
    await connection.execute(
        "INSERT INTO schema_migrations (version, name, checksum, polybus_version) "
        "VALUES (99, 'from_the_future', 'x', '9.9.9')"
    )
    with pytest.raises(MigrationError, match=r"version 99 .*polybus 9\.9\.9.*upgrade polybus"):
        await migrate(connection)


async def test_an_applied_migration_that_was_edited_is_refused(
    connection: asyncpg.Connection,
) -> None:
    await migrate(connection)
    edited = [
        dataclasses.replace(m, checksum="0" * 64) if m.version == 1 else m
        for m in load_migrations()
    ]
    with pytest.raises(MigrationError, match="0001_core changed after it was applied"):
        await migrate(connection, edited)


async def test_concurrent_runners_apply_each_migration_once(database_url: str) -> None:
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        reports = await asyncio.gather(migrate(first), migrate(second))
    finally:
        await first.close()
        await second.close()
    applied = [m.version for report in reports for m in report.applied]
    assert sorted(applied) == sorted(set(applied))
    assert 1 in applied


async def test_without_timescaledb_its_migration_is_skipped_and_retried_later(
    connection: asyncpg.Connection,
) -> None:
    reason = await timescaledb_unavailable(connection, TIMESCALE)
    if reason is None:
        pytest.skip("this PostgreSQL has TimescaleDB: the skip path cannot happen here")
    report = await migrate(connection)
    [(skipped, why)] = report.skipped
    assert (skipped.version, why) == (2, reason)
    # Not recorded: a later migrate on a server with the extension applies it. The plain
    # migrations after it are applied all the same.
    recorded = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in recorded] == [
        m.version for m in load_migrations() if m.requires_timescaledb is None
    ]
    assert [m.version for m, _ in (await migrate(connection)).skipped] == [2]
    # The core schema stands on plain PostgreSQL.
    assert await connection.fetchval("SELECT count(*) FROM book_deltas") == 0


async def test_with_timescaledb_the_event_tables_become_hypertables(
    connection: asyncpg.Connection,
) -> None:
    reason = await timescaledb_unavailable(connection, TIMESCALE)
    if reason is not None:
        pytest.skip(f"TimescaleDB path not testable on this server: {reason}")
    await migrate(connection)
    hypertables = {
        r["hypertable_name"]
        for r in await connection.fetch(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
        )
    }
    assert {"book_deltas", "book_snapshots", "trades", "fills", "service_health"} <= hypertables
    views = {
        r["view_name"]
        for r in await connection.fetch(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        )
    }
    assert views == {"trades_1m", "top_of_book_1m"}
