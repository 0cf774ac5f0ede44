"""Event <-> row conversion for every table, without a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polybus.common.events import AnyEvent, BookDelta, BookSnapshot, Level, LevelChange
from polybus.recorder.tables import (
    ALL_TABLES,
    BOOK_DELTAS,
    BOOK_SNAPSHOTS,
    EVENT_TABLES,
    TABLE_FOR_TYPE,
    EventTable,
    Source,
    nanoseconds,
    partition_of_subject,
    timestamp,
)
from tests.full_events import every_field_set, unset_fields
from tests.samples import market_data, one_of_each

SOURCE = Source("MD", 42, "md.polymarket.3.delta.123")


def round_trip(event: object) -> object:
    table = TABLE_FOR_TYPE[type(event)]  # type: ignore[index]
    row = table.row(event, SOURCE)
    assert len(row) == len(table.columns)
    return table.event(dict(zip(table.columns, row, strict=True)))


def test_every_event_type_has_a_table() -> None:
    union_members = set(AnyEvent.__args__)
    assert set(TABLE_FOR_TYPE) == union_members


def test_table_columns_are_unique_and_carry_their_source() -> None:
    for table in ALL_TABLES:
        assert len(set(table.columns)) == len(table.columns), table.name
        assert {"stream", "stream_seq"} <= set(table.columns), table.name
    for table in EVENT_TABLES:
        assert {"event_id", "ts_event_ns", "ts_init_ns"} <= set(table.columns)


@pytest.mark.parametrize("event", one_of_each(5), ids=lambda e: type(e).__name__)
def test_each_event_type_round_trips_through_its_row(event: object) -> None:
    assert round_trip(event) == event


@pytest.mark.parametrize("table", EVENT_TABLES, ids=lambda table: table.name)
def test_every_field_of_every_event_type_survives_its_row(table: EventTable) -> None:
    """Built from the event type itself: a field added to an event and not to its table (a
    column list written by hand) fails here, not silently in production."""
    event = every_field_set(table.event_type)
    assert unset_fields(event) == []
    assert round_trip(event) == event


def test_a_market_data_load_round_trips() -> None:
    events = list(market_data(2000, assets=20))
    assert [round_trip(e) for e in events] == events


prices = st.integers(min_value=0, max_value=1_000_000)
sizes = st.integers(min_value=0, max_value=2**62)


@given(
    changes=st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), prices, sizes), max_size=30),
    best=st.tuples(st.none() | prices, st.none() | prices),
    ts=st.integers(min_value=0, max_value=2**62),
)
def test_deltas_keep_every_change_in_order(
    changes: list[tuple[str, int, int]], best: tuple[int | None, int | None], ts: int
) -> None:
    delta = BookDelta(
        event_id="d",
        ts_event=ts,
        ts_init=ts + 1,
        asset_id="a",
        condition_id="c",
        seq=1,
        epoch=1,
        changes=tuple(LevelChange(side, price, size) for side, price, size in changes),  # type: ignore[arg-type]
        best_bid=best[0],
        best_ask=best[1],
    )
    row = dict(zip(BOOK_DELTAS.columns, BOOK_DELTAS.row(delta, SOURCE), strict=True))
    assert row["change_sides"] == "".join(side[0] for side, _, _ in changes)
    assert BOOK_DELTAS.event(row) == delta


@given(
    bids=st.lists(st.tuples(prices, sizes), max_size=50),
    asks=st.lists(st.tuples(prices, sizes), max_size=50),
)
def test_snapshot_levels_are_parallel_arrays(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]]
) -> None:
    snapshot = BookSnapshot(
        event_id="s",
        ts_event=1,
        ts_init=2,
        asset_id="a",
        condition_id="c",
        seq=1,
        epoch=1,
        bids=tuple(Level(p, s) for p, s in bids),
        asks=tuple(Level(p, s) for p, s in asks),
        tick_size=10_000,
    )
    row = dict(zip(BOOK_SNAPSHOTS.columns, BOOK_SNAPSHOTS.row(snapshot, SOURCE), strict=True))
    assert row["bid_prices"] == [p for p, _ in bids]
    assert row["ask_sizes"] == [s for _, s in asks]
    assert BOOK_SNAPSHOTS.event(row) == snapshot


@pytest.mark.parametrize(
    ("subject", "part"),
    [
        ("md.polymarket.3.delta.123", 3),
        ("t1.replay.md.polymarket.15.book.9", 15),
        ("md.polymarket.x.delta.1", None),
        ("md.polymarket.99999.delta.1", None),
        ("short", None),
    ],
)
def test_partition_comes_from_the_subject(subject: str, part: int | None) -> None:
    assert partition_of_subject(subject) == part


@given(st.integers(min_value=0, max_value=2**62))
def test_timestamps_are_exact_to_the_microsecond(ns: int) -> None:
    moment = timestamp(ns)
    assert moment.tzinfo is UTC
    assert nanoseconds(moment) == ns // 1000 * 1000


def test_timestamp_of_a_known_instant() -> None:
    assert timestamp(1_764_400_000_123_456_789) == datetime(
        2025, 11, 29, 7, 6, 40, 123456, tzinfo=UTC
    )
