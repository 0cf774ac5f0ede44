"""The ingest's incrementally hashed book: for any sequence of writes, the hash it keeps is the
venue's rule (``book_hash``) applied to the book written out from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polybus.common.book import OrderBook
from polybus.common.money import TICK_SIZES, format_micros, parse_price, parse_size
from polybus.common.polymarket.book_hash import (
    HashedBook,
    book_hash,
    format_last_trade_price,
    format_price,
    format_size,
    summary_head,
    summary_tail,
)
from polybus.common.polymarket.market_channel import PolymarketBook, PolymarketMarketEvent
from polybus.common.subjects import Subjects
from polybus.ingest.tracks import AssetTrack

MARKET = "0x" + "ab" * 32
ASSET = "7" * 77
Operation = tuple[Any, ...]
RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "polymarket"

# Prices mostly from a few ticks (so levels are often updated and removed, not only added),
# also anywhere on the finest grid and in [0, 1] (formatting of any micro-unit value); sizes
# from dust to the largest the venue allows; 0 removes the level.
prices = st.one_of(
    st.sampled_from(range(450_000, 550_000, 10_000)),
    st.sampled_from(range(450_000, 550_000, 10_000)),
    st.sampled_from(range(450_000, 550_000, 10_000)),
    st.integers(min_value=1, max_value=9_999).map(lambda ticks: ticks * 100),
    st.integers(min_value=0, max_value=1_000_000),
)
sizes = st.one_of(
    st.just(0),
    st.integers(min_value=1, max_value=10**18),
    st.integers(min_value=1, max_value=5_000).map(lambda lots: lots * 10_000),
)
sides = st.sampled_from(["BUY", "SELL"])
levels = st.lists(st.tuples(prices, sizes), max_size=12)
ticks = st.sampled_from(sorted(TICK_SIZES))

set_level = st.tuples(st.just("set"), sides, prices, sizes)
# An existing level (the n-th of its side) set to a new size or removed.
touch_level = st.tuples(st.just("touch"), sides, st.integers(min_value=0, max_value=40), sizes)
set_levels = st.one_of(*[set_level] * 4, *[touch_level] * 4)
replace = st.tuples(st.just("replace"), levels, levels)  # a snapshot or a resync
clear = st.tuples(st.just("clear"))
book_operations = st.lists(st.one_of(set_levels, replace, clear), min_size=10, max_size=60)
track_operations = st.lists(
    st.one_of(
        set_levels,
        replace,
        clear,
        st.tuples(st.just("tick"), st.one_of(st.none(), ticks)),
        st.tuples(st.just("trade"), st.one_of(st.none(), prices)),
        st.tuples(st.just("min_order_size"), st.one_of(st.none(), st.sampled_from(["5", "15"]))),
        st.tuples(st.just("neg_risk"), st.one_of(st.none(), st.booleans())),
    ),
    min_size=10,
    max_size=60,
)


def written_out_hash(
    book: OrderBook,
    timestamp: str,
    *,
    min_order_size: str = "5",
    tick_size: str = "0.01",
    neg_risk: bool = False,
    last_trade_price: str = "0.500",
) -> str:
    """The rule applied from scratch: sort, format, encode, SHA-1."""
    return book_hash(
        market=MARKET,
        asset_id=ASSET,
        timestamp=timestamp,
        bids=[(format_price(p), format_size(s)) for p, s in sorted(book.bids.items())],
        asks=[(format_price(p), format_size(s)) for p, s in sorted(book.asks.items())][::-1],
        min_order_size=min_order_size,
        tick_size=tick_size,
        neg_risk=neg_risk,
        last_trade_price=last_trade_price,
    )


def apply(book: OrderBook, operation: Operation) -> None:
    kind = operation[0]
    if kind == "set":
        _, side, price, size = operation
        book.set_level(side, price, size)
    elif kind == "touch":
        _, side, index, size = operation
        levels = sorted(book.bids if side == "BUY" else book.asks)
        if levels:
            book.set_level(side, levels[index % len(levels)], size)
    elif kind == "replace":
        book.replace(operation[1], operation[2])
    elif kind == "clear":
        book.clear()


def assert_same_book(hashed: HashedBook, plain: OrderBook) -> None:
    assert hashed == plain
    assert hashed.best_bid == plain.best_bid
    assert hashed.best_ask == plain.best_ask
    assert hashed.bid_levels() == plain.bid_levels()
    assert hashed.ask_levels() == plain.ask_levels()
    assert hashed.levels() == plain.levels()


@settings(max_examples=150, deadline=None)
@given(operations=book_operations)
def test_the_kept_hash_is_the_written_out_hash_after_any_writes(
    operations: list[Operation],
) -> None:
    hashed, plain = HashedBook(), OrderBook()
    head = summary_head(MARKET, ASSET)
    tail = summary_tail(
        min_order_size="5", tick_size="0.01", neg_risk=False, last_trade_price="0.500"
    )
    for number, operation in enumerate(operations):
        apply(hashed, operation)
        apply(plain, operation)
        timestamp = str(1_700_000_000_000 + number)
        assert_same_book(hashed, plain)
        assert hashed.venue_hash(head, timestamp, tail) == written_out_hash(plain, timestamp)


@settings(max_examples=150, deadline=None)
@given(operations=track_operations)
def test_a_tracks_hash_follows_its_book_tick_and_trade_price(operations: list[Operation]) -> None:
    track = AssetTrack(ASSET, MARKET, 0, Subjects())
    plain = OrderBook()
    for number, operation in enumerate(operations):
        kind = operation[0]
        if kind == "tick":
            track.tick = operation[1]
        elif kind == "trade":
            track.last_trade_price = operation[1]
        elif kind == "min_order_size":
            track.min_order_size = operation[1]
        elif kind == "neg_risk":
            track.neg_risk = operation[1]
        else:
            apply(track.book, operation)
            apply(plain, operation)
        timestamp = str(1_700_000_000_000 + number)
        tick = track.tick
        expected_trade = (
            format_last_trade_price(track.last_trade_price, tick)
            if track.last_trade_price is not None and tick is not None
            else ""
        )
        min_order_size = track.min_order_size or ""
        tick_size = format_micros(tick) if tick else ""
        neg_risk = bool(track.neg_risk)
        assert track.venue_hash(timestamp) == written_out_hash(
            plain,
            timestamp,
            min_order_size=min_order_size,
            tick_size=tick_size,
            neg_risk=neg_risk,
            last_trade_price=expected_trade,
        )
        # A candidate input for one hash only (learning a snapshot's inputs, a trade printed
        # inside a batch) leaves the kept tail as it was.
        assert track.venue_hash(timestamp, last_trade_price="0.125") == written_out_hash(
            plain,
            timestamp,
            min_order_size=min_order_size,
            tick_size=tick_size,
            neg_risk=neg_risk,
            last_trade_price="0.125",
        )
        assert track.venue_hash(timestamp, min_order_size="1", neg_risk=True) == (
            written_out_hash(
                plain,
                timestamp,
                min_order_size="1",
                tick_size=tick_size,
                neg_risk=True,
                last_trade_price=expected_trade,
            )
        )


@pytest.mark.parametrize(
    "name",
    [
        "nautilus_ws_book_snapshot_captured_2026-08-13.json",
        "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json",
    ],
)
def test_the_hashed_book_reproduces_recorded_snapshots(name: str) -> None:
    decoded = msgspec.json.decode(
        (RESOURCES / name).read_bytes(),
        type=list[PolymarketMarketEvent] | PolymarketMarketEvent,
    )
    message = decoded[0] if isinstance(decoded, list) else decoded
    assert isinstance(message, PolymarketBook)
    book = HashedBook()
    book.replace(
        [(parse_price(level.price), parse_size(level.size)) for level in message.bids],
        [(parse_price(level.price), parse_size(level.size)) for level in message.asks],
    )
    tail = summary_tail(
        min_order_size="5",
        tick_size=message.tick_size or "0.001",
        neg_risk=False,
        last_trade_price=message.last_trade_price,
    )
    head = summary_head(message.market, message.asset_id)
    assert book.venue_hash(head, message.timestamp, tail) == message.hash


def test_a_price_out_of_range_is_refused_and_leaves_no_half_written_book() -> None:
    book = HashedBook()
    book.set_bid(480_000, 30_000_000)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        book.set_bid(1_500_000, 1_000_000)
    assert book.bids == {480_000: 30_000_000}
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        book.replace([(480_000, 1)], [(1_000_001, 1)])
    assert len(book) == 0
    assert book.venue_hash(b"", "1", b"") == HashedBook().venue_hash(b"", "1", b"")
