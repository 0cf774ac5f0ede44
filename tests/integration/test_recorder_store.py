"""The event store on a real PostgreSQL: every event type round-trips, writes are idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from polybus.common.events import Event, MarketInfo, type_name
from polybus.recorder.migrations import migrate
from polybus.recorder.store import PostgresStore, RowsRejected
from polybus.recorder.tables import (
    ALL_TABLES,
    EVENT_TABLES,
    MARKETS,
    TABLE_FOR_TYPE,
    Row,
    Source,
    Table,
)
from tests.samples import one_of_each


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await migrate(connection)
    yield connection
    await connection.close()


def batch_of(events: list[Event], first_seq: int = 1) -> dict[Table, list[Row]]:
    batch: dict[Table, list[Row]] = {}
    for seq, event in enumerate(events, first_seq):
        table = TABLE_FOR_TYPE[type(event)]
        source = Source("T_MD", seq, f"md.polymarket.7.x.{seq}")
        batch.setdefault(table, []).append(table.row(event, source))
    return batch


async def read_back(connection: asyncpg.Connection) -> list[Event]:
    events: list[Event] = []
    for table in EVENT_TABLES:
        records = await connection.fetch(f"{table.query} ORDER BY t.stream_seq")
        events.extend(table.event(record) for record in records)
    return events


async def test_every_table_has_the_columns_its_rows_fill(
    connection: asyncpg.Connection,
) -> None:
    for table in ALL_TABLES:
        columns = {
            record["column_name"]
            for record in await connection.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1",
                table.name,
            )
        }
        assert set(table.stage_columns) <= columns, table.name
        assert set(table.key_columns) <= columns, table.name


async def test_every_event_type_round_trips_through_its_table(
    connection: asyncpg.Connection, database_url: str
) -> None:
    events = one_of_each(1) + one_of_each(2)
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    inserted = await store.write(batch_of(events))
    assert sum(inserted.values()) == len(events)
    stored = await read_back(connection)
    assert sorted(stored, key=lambda e: e.event_id) == sorted(events, key=lambda e: e.event_id)
    # The outcomes of every MarketInfo, in venue order.
    outcomes = await connection.fetch(
        "SELECT token_id, outcome, outcome_index FROM outcomes ORDER BY condition_id, outcome_index"
    )
    expected = [
        (o.token_id, o.outcome, i)
        for market in events
        if isinstance(market, MarketInfo)
        for i, o in enumerate(market.outcomes)
    ]
    assert [tuple(r) for r in outcomes] == expected
    await store.close()


async def test_writing_the_same_events_again_adds_no_row(
    connection: asyncpg.Connection, database_url: str
) -> None:
    events = one_of_each(3)
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    await store.write(batch_of(events))
    # Redelivered with other stream sequences, plus duplicates inside one batch.
    again = await store.write(batch_of(events + events, first_seq=100))
    assert sum(again.values()) == 0
    counts = {
        table.name: await connection.fetchval(f"SELECT count(*) FROM {table.name}")
        for table in EVENT_TABLES
    }
    expected: dict[str, int] = {}
    for event in events:
        name = TABLE_FOR_TYPE[type(event)].name
        expected[name] = expected.get(name, 0) + 1
    assert {name: count for name, count in counts.items() if count} == expected
    assert await connection.fetchval("SELECT count(*) FROM outcomes") == 2
    await store.close()


async def test_a_value_postgres_cannot_hold_is_rejected_not_retried(
    connection: asyncpg.Connection, database_url: str
) -> None:
    [market, *_] = one_of_each(4)
    assert isinstance(market, MarketInfo)
    bad_nul = MarketInfo(
        **{**{f: getattr(market, f) for f in market.__struct_fields__}, "question": "a\x00b"}
    )
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    with pytest.raises(RowsRejected):
        await store.write(batch_of([bad_nul]))
    huge = MarketInfo(
        **{**{f: getattr(market, f) for f in market.__struct_fields__}, "liquidity": 2**70}
    )
    with pytest.raises(RowsRejected):
        await store.write(batch_of([huge]))
    # The connection is still usable for the next batch.
    inserted = await store.write(batch_of([market]))
    assert inserted == {MARKETS.name: 1}
    assert type_name(market) == "MarketInfo"
    await store.close()
