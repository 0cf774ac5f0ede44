"""The asset dictionary on a real PostgreSQL: one key per asset, shared by concurrent recorders,
never a cached key that was rolled back, and rows of the old layout migrated replayable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from polybus.common.events import (
    BookSnapshot,
    Event,
    MarketDataEvent,
    MarketInfo,
    MarketResolved,
)
from polybus.recorder.migrations import load_migrations, migrate
from polybus.recorder.replay import recorded_events, select
from polybus.recorder.snapshot import book_at
from polybus.recorder.store import PostgresStore, RowsRejected
from polybus.recorder.tables import (
    EVENT_TABLES,
    MARKET_DATA_TABLES,
    TABLE_FOR_TYPE,
    Source,
    Table,
    timestamp,
)
from tests.helpers import eventually
from tests.integration.test_recorder_store import batch_of
from tests.samples import BASE_NS, market_data, one_of_each


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await migrate(connection)
    yield connection
    await connection.close()


def pairs_of(events: list[Event]) -> set[tuple[str, str]]:
    return {(e.asset_id, e.condition_id) for e in events if isinstance(e, MarketDataEvent)}


async def dictionary(connection: asyncpg.Connection) -> dict[tuple[str, str], int]:
    records = await connection.fetch("SELECT asset_id, token_id, condition_id FROM assets")
    return {(r["token_id"], r["condition_id"]): r["asset_id"] for r in records}


async def read_back(connection: asyncpg.Connection) -> list[Event]:
    events: list[Event] = []
    for table in EVENT_TABLES:
        records = await connection.fetch(f"{table.query} ORDER BY t.stream_seq")
        events.extend(table.event(record) for record in records)
    return events


async def test_each_asset_enters_the_dictionary_once(
    connection: asyncpg.Connection, database_url: str
) -> None:
    events: list[Event] = list(market_data(600, assets=10))
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    for start in range(0, len(events), 200):
        await store.write(batch_of(events[start : start + 200], first_seq=start + 1))
    await store.close()

    assert set(await dictionary(connection)) == pairs_of(events)
    # Inserted once each: an insert that conflicts would still have drawn a key.
    assert await connection.fetchval("SELECT last_value FROM assets_asset_id_seq") == 10
    assert sorted(await read_back(connection), key=lambda e: e.event_id) == sorted(
        events, key=lambda e: e.event_id
    )
    # Every row holds the 4-byte key, not the ids.
    assert (
        await connection.fetchval(
            "SELECT count(*) FROM book_deltas WHERE asset_id NOT IN (SELECT asset_id FROM assets)"
        )
        == 0
    )


async def test_a_recorder_waiting_on_another_s_new_asset_takes_its_key(
    connection: asyncpg.Connection, database_url: str
) -> None:
    [snapshot] = [e for e in one_of_each(1) if isinstance(e, BookSnapshot)]
    other = await asyncpg.connect(database_url)
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    try:
        transaction = other.transaction()
        await transaction.start()
        key = await other.fetchval(
            "INSERT INTO assets (token_id, condition_id) VALUES ($1, $2) RETURNING asset_id",
            snapshot.asset_id,
            snapshot.condition_id,
        )
        writing = asyncio.create_task(store.write(batch_of([snapshot])))

        async def store_waits_on_the_lock() -> bool:
            return bool(
                await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )

        await eventually(store_waits_on_the_lock, 10, "the store waiting on the new asset")
        await transaction.commit()
        assert await asyncio.wait_for(writing, 10) == {"book_snapshots": 1}
    finally:
        await store.close()
        await other.close()
    assert await dictionary(connection) == {(snapshot.asset_id, snapshot.condition_id): key}
    assert await connection.fetchval("SELECT asset_id FROM book_snapshots") == key


async def test_concurrent_recorders_resolving_the_same_new_assets_share_one_key_each(
    connection: asyncpg.Connection, database_url: str
) -> None:
    events: list[Event] = list(market_data(400, assets=20))
    stores = [PostgresStore(lambda: asyncpg.connect(database_url)) for _ in range(2)]
    try:
        for _ in range(3):
            # Both start with the same new assets, in different orders, at the same time.
            await asyncio.gather(
                stores[0].write(batch_of(events[0::2], first_seq=1)),
                stores[1].write(batch_of(events[1::2][::-1], first_seq=1000)),
            )
    finally:
        for store in stores:
            await store.close()
    assert set(await dictionary(connection)) == pairs_of(events)
    assert sorted(await read_back(connection), key=lambda e: e.event_id) == sorted(
        events, key=lambda e: e.event_id
    )


async def test_a_rolled_back_batch_leaves_no_asset_and_no_cached_key(
    connection: asyncpg.Connection, database_url: str
) -> None:
    events = one_of_each(1)
    [market] = [e for e in events if isinstance(e, MarketInfo)]
    refused = MarketInfo(
        **{**{f: getattr(market, f) for f in market.__struct_fields__}, "question": "a\x00b"}
    )
    market_data_events = [e for e in events if isinstance(e, MarketDataEvent)]
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    try:
        with pytest.raises(RowsRejected):
            await store.write(batch_of([*market_data_events, refused]))
        assert await dictionary(connection) == {}
        await connection.execute("ALTER SEQUENCE assets_asset_id_seq RESTART WITH 100")
        await store.write(batch_of(market_data_events))
    finally:
        await store.close()
    assert set((await dictionary(connection)).values()) == {100}
    assert sorted(await read_back(connection), key=lambda e: e.event_id) == sorted(
        market_data_events, key=lambda e: e.event_id
    )


def _old_layout_insert(table: Table, event: Event, seq: int) -> tuple[str, list[object]]:
    """The row as the recorder wrote it before 0004: ids as text in every market-data row."""
    values = dict(
        zip(table.columns, table.row(event, Source("MD", seq, "md.polymarket.5.x.y")), strict=True)
    )
    if table.uses_assets:
        values["asset_id"] = values.pop("token_id")
    values["ts_event"] = timestamp(event.ts_event)
    columns = list(values)
    placeholders = ", ".join(f"${n}" for n in range(2, len(columns) + 2))
    sql = (
        f"INSERT INTO {table.name} (event_key, {', '.join(columns)}) "
        f"VALUES (md5($1)::uuid, {placeholders})"
    )
    return sql, [event.event_id, *values.values()]


async def test_rows_recorded_in_the_old_layout_are_migrated_and_replay_the_same(
    database_url: str,
) -> None:
    # Markets 10 and 11 of one_of_each, beside market_data's assets 0-5 (markets 0-2).
    events = one_of_each(10) + one_of_each(11)
    events += list(market_data(300, assets=6))
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection, [m for m in load_migrations() if m.version < 4])
        for seq, event in enumerate(events, 1):
            sql, arguments = _old_layout_insert(TABLE_FOR_TYPE[type(event)], event, seq)
            await connection.execute(sql, *arguments)
        before = await connection.fetchval("SELECT count(*) FROM book_deltas")

        report = await migrate(connection)
        assert [m.version for m in report.applied] == [4]

        assert set(await dictionary(connection)) == pairs_of(events)
        assert await connection.fetchval("SELECT count(*) FROM book_deltas") == before
        assert sorted(await read_back(connection), key=lambda e: e.event_id) == sorted(
            events, key=lambda e: e.event_id
        )
        # Replay reads the converted rows back in recorded order, for a market and an asset.
        [market] = [e for e in one_of_each(10) if isinstance(e, MarketInfo)]
        start, end = timestamp(BASE_NS) - timedelta(hours=1), timestamp(BASE_NS) + timedelta(days=1)
        expected = [
            e
            for e in sorted(events[: len(one_of_each(10))], key=lambda e: e.ts_init)
            if isinstance(e, MarketDataEvent | MarketInfo | MarketResolved)
            and e.condition_id == market.condition_id
        ]
        async with connection.transaction(readonly=True):
            selection = await select(
                connection, market=market.condition_id, asset="", start=start, end=end
            )
            replayed = [r.event async for r in recorded_events(connection, selection)]
        assert replayed == expected
        # The book of an asset with deltas rebuilds from the converted rows without a gap.
        asset = next(e for e in events[::-1] if isinstance(e, BookSnapshot)).asset_id
        rebuilt = await book_at(connection, asset, end)
        assert rebuilt is not None
        assert rebuilt.complete
        assert rebuilt.deltas_applied > 0
        # The schema is what a fresh database gets.
        for table in MARKET_DATA_TABLES:
            assert (
                await connection.fetchval(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = $1 AND column_name = 'asset_id'",
                    table.name,
                )
                == "integer"
            )
    finally:
        await connection.close()
