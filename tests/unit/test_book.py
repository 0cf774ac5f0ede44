"""The exact L2 book: random level updates against a simple reference model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from polybus.common.book import OrderBook
from polybus.common.events import BookDelta, BookSnapshot, Level, LevelChange

TICK = 1_000
prices = st.integers(min_value=1, max_value=999).map(lambda ticks: ticks * TICK)
sizes = st.one_of(st.just(0), st.integers(min_value=1, max_value=10**15))
sides = st.sampled_from(["BUY", "SELL"])
updates = st.lists(st.tuples(sides, prices, sizes), max_size=300)
snapshots = st.lists(st.tuples(prices, sizes), max_size=40)


class ReferenceBook:
    """The obvious model: a size per (side, price); best = max/min of the non-empty levels."""

    def __init__(self) -> None:
        self.levels: dict[tuple[str, int], int] = {}

    def set(self, side: str, price: int, size: int) -> None:
        self.levels[(side, price)] = size

    def side(self, side: str) -> dict[int, int]:
        return {price: size for (s, price), size in self.levels.items() if s == side and size}


def assert_matches(book: OrderBook, model: ReferenceBook) -> None:
    bids, asks = model.side("BUY"), model.side("SELL")
    assert book.bids == bids
    assert book.asks == asks
    assert book.best_bid == (max(bids) if bids else None)
    assert book.best_ask == (min(asks) if asks else None)
    assert book.bid_levels() == sorted(bids.items(), reverse=True)
    assert book.ask_levels() == sorted(asks.items())
    assert book.crossed == bool(bids and asks and max(bids) >= min(asks))
    assert len(book) == len(bids) + len(asks)


@settings(max_examples=300)
@given(initial_bids=snapshots, initial_asks=snapshots, changes=updates)
def test_random_updates_match_the_reference_model(
    initial_bids: list[tuple[int, int]],
    initial_asks: list[tuple[int, int]],
    changes: list[tuple[str, int, int]],
) -> None:
    book, model = OrderBook(), ReferenceBook()
    book.replace(initial_bids, initial_asks)
    for price, size in initial_bids:
        model.set("BUY", price, size)
    for price, size in initial_asks:
        model.set("SELL", price, size)
    assert_matches(book, model)
    for side, price, size in changes:
        book.set_level(side, price, size)  # type: ignore[arg-type]
        model.set(side, price, size)
        assert_matches(book, model)


@given(changes=updates)
def test_a_book_rebuilt_from_published_events_equals_the_source(
    changes: list[tuple[str, int, int]],
) -> None:
    source = OrderBook()
    for side, price, size in changes[: len(changes) // 2]:
        source.set_level(side, price, size)  # type: ignore[arg-type]
    bids, asks = source.levels()
    snapshot = BookSnapshot(
        event_id="s",
        ts_event=1,
        ts_init=1,
        asset_id="a",
        condition_id="c",
        seq=1,
        epoch=1,
        bids=bids,
        asks=asks,
        tick_size=TICK,
    )
    rest = changes[len(changes) // 2 :]
    delta = BookDelta(
        event_id="d",
        ts_event=2,
        ts_init=2,
        asset_id="a",
        condition_id="c",
        seq=2,
        epoch=1,
        changes=tuple(LevelChange(side, price, size) for side, price, size in rest),  # type: ignore[arg-type]
        best_bid=None,
        best_ask=None,
    )
    for side, price, size in rest:
        source.set_level(side, price, size)  # type: ignore[arg-type]

    rebuilt = OrderBook()
    rebuilt.apply_snapshot(snapshot)
    rebuilt.apply_delta(delta)

    assert rebuilt == source
    assert (rebuilt.best_bid, rebuilt.best_ask) == (source.best_bid, source.best_ask)


def test_removing_the_best_level_exposes_the_next_one() -> None:
    book = OrderBook()
    book.replace([(400_000, 10), (410_000, 5)], [(450_000, 7), (460_000, 1)])
    book.set_bid(410_000, 0)
    book.set_ask(450_000, 0)
    assert (book.best_bid, book.best_ask) == (400_000, 460_000)
    book.set_ask(460_000, 0)
    assert book.best_ask is None
    assert book.levels() == ((Level(400_000, 10),), ())


def test_removing_an_absent_level_changes_nothing() -> None:
    book = OrderBook()
    book.set_bid(500_000, 3)
    book.set_bid(400_000, 0)
    book.set_ask(600_000, 0)
    assert book.bids == {500_000: 3}
    assert book.asks == {}
    assert book.best_bid == 500_000
