"""The book view's core, with scripted ingest events; and its feed on the in-memory bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from polybus.common.book_view import Applied, AssetState, BookFeed, BookView
from polybus.common.bus import Message
from polybus.common.bus.memory_bus import MemoryBus
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    Level,
    LevelChange,
    MarketInfo,
    Outcome,
    TickSizeChanged,
    Trade,
    encode,
)
from polybus.common.streams import Definitions, StreamDefinition
from polybus.common.subjects import Subjects
from tests.helpers import eventually

ASSET = "111"
OTHER = "222"
CONDITION = "0xc0"
EPOCH = 1_700_000_000_000_000_000
LATER_EPOCH = EPOCH + 5


class Script:
    """Builds one asset's events the way the ingest numbers them."""

    def __init__(self, asset_id: str = ASSET, epoch: int = EPOCH) -> None:
        self.asset_id = asset_id
        self.epoch = epoch
        self.seq = 0

    def _envelope(self, seq: int | None = None) -> dict[str, object]:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return {
            "event_id": f"e.{self.epoch}.{seq}",
            "ts_event": seq,
            "ts_init": 1_000 + seq,
            "asset_id": self.asset_id,
            "condition_id": CONDITION,
            "seq": seq,
            "epoch": self.epoch,
        }

    def snapshot(
        self,
        bids: list[tuple[int, int]],
        asks: list[tuple[int, int]],
        *,
        tick: int = 10_000,
        min_size: int = 5_000_000,
        current: bool = False,
    ) -> BookSnapshot:
        """A published snapshot (next seq), or with ``current`` a request's reply (same seq)."""
        return BookSnapshot(
            **self._envelope(self.seq if current else None),  # type: ignore[arg-type]
            bids=tuple(Level(p, s) for p, s in bids),
            asks=tuple(Level(p, s) for p, s in asks),
            tick_size=tick,
            min_order_size=min_size,
        )

    def delta(self, side: str, price: int, size: int) -> BookDelta:
        return BookDelta(
            **self._envelope(),  # type: ignore[arg-type]
            changes=(LevelChange(side, price, size),),  # type: ignore[arg-type]
            best_bid=None,
            best_ask=None,
        )

    def status(self, status: BookState, reason: str, *, current: bool = False) -> BookStatus:
        return BookStatus(
            **self._envelope(self.seq if current else None),  # type: ignore[arg-type]
            status=status,
            reason=reason,
        )

    def tick_change(self, old: int, new: int) -> TickSizeChanged:
        return TickSizeChanged(
            **self._envelope(),  # type: ignore[arg-type]
            old_tick_size=old,
            new_tick_size=new,
        )

    def trade(self, price: int, size: int) -> Trade:
        return Trade(
            **self._envelope(self.seq),  # type: ignore[arg-type]
            price=price,
            size=size,
            side="BUY",
        )

    def new_epoch(self, epoch: int) -> None:
        self.epoch, self.seq = epoch, 0


def live_view(script: Script) -> BookView:
    """A view with ASSET live: bids 0.40 x 10, asks 0.45 x 20."""
    view = BookView()
    assert view.apply(script.snapshot([(400_000, 10_000_000)], [(450_000, 20_000_000)])) is (
        Applied.STATE_CHANGED
    )
    assert view.apply(script.status("live", "snapshot")) is Applied.UNCHANGED
    return view


def levels(view: BookView, asset_id: str = ASSET) -> tuple[list[tuple[int, int]], ...]:
    book = view.book(asset_id)
    assert book is not None
    return book.bid_levels(), book.ask_levels()


# -- in sequence ------------------------------------------------------------------------------


def test_a_snapshot_then_deltas_in_sequence_keep_the_book_live() -> None:
    script = Script()
    view = live_view(script)
    assert view.apply(script.delta("BUY", 410_000, 3_000_000)) is Applied.UPDATED
    assert view.apply(script.delta("SELL", 450_000, 0)) is Applied.UPDATED
    assert levels(view) == ([(410_000, 3_000_000), (400_000, 10_000_000)], [])
    assert view.tradeable(ASSET)
    assert view.state(ASSET) is AssetState.LIVE
    asset = view.asset(ASSET)
    assert asset is not None
    assert (asset.epoch, asset.seq, asset.updated_ns) == (EPOCH, 4, 1_004)
    assert view.tick(ASSET) == 10_000
    assert view.min_size(ASSET) == 5_000_000
    assert list(view.assets()) == [ASSET]


def test_a_duplicate_or_older_event_is_ignored() -> None:
    script = Script()
    view = live_view(script)
    delta = script.delta("BUY", 410_000, 3_000_000)
    assert view.apply(delta) is Applied.UPDATED
    assert view.apply(delta) is Applied.IGNORED
    assert view.stats.ignored == 1
    assert view.tradeable(ASSET)


def test_an_unknown_asset_reads_as_not_tradeable() -> None:
    view = BookView()
    assert view.book(ASSET) is None
    assert view.state(ASSET) is AssetState.NEEDS_SNAPSHOT
    assert not view.tradeable(ASSET)
    assert (view.tick(ASSET), view.min_size(ASSET)) == (0, 0)


# -- lost events ------------------------------------------------------------------------------


def test_a_seq_gap_makes_the_book_untradeable_until_a_snapshot_covers_it() -> None:
    script = Script()
    view = live_view(script)
    script.delta("BUY", 410_000, 3_000_000)  # lost on the way
    assert view.apply(script.delta("BUY", 420_000, 1_000_000)) is Applied.NEEDS_REBUILD
    assert view.state(ASSET) is AssetState.RESYNCING
    assert not view.tradeable(ASSET)
    assert view.rebuilds_pending() == [ASSET]
    # The ingest's book as of the last delta; what comes later waits for it, and the rebuild
    # is asked for only once.
    reply = script.snapshot(
        [(420_000, 1_000_000), (410_000, 3_000_000), (400_000, 10_000_000)],
        [(450_000, 20_000_000)],
        current=True,
    )
    assert view.apply(script.delta("SELL", 450_000, 7_000_000)) is Applied.BUFFERED
    assert view.apply(reply) is Applied.STATE_CHANGED
    assert view.tradeable(ASSET)
    assert levels(view) == (
        [(420_000, 1_000_000), (410_000, 3_000_000), (400_000, 10_000_000)],
        [(450_000, 7_000_000)],
    )
    assert view.rebuilds_pending() == []
    assert (view.stats.gaps, view.stats.rebuilds) == (1, 1)


def test_buffered_events_at_or_before_the_snapshot_are_dropped() -> None:
    script = Script()
    view = live_view(script)
    script.delta("BUY", 410_000, 3_000_000)  # lost
    assert view.apply(script.delta("BUY", 420_000, 1_000_000)) is Applied.NEEDS_REBUILD
    reply = script.snapshot([(420_000, 1_000_000)], [], current=True)
    assert view.apply(reply) is Applied.STATE_CHANGED
    assert levels(view) == ([(420_000, 1_000_000)], [])
    assert view.apply(script.delta("SELL", 430_000, 1_000_000)) is Applied.UPDATED


def test_a_gap_left_after_the_snapshot_asks_for_another_one() -> None:
    script = Script()
    view = live_view(script)
    reply = script.snapshot([(400_000, 1_000_000)], [], current=False)
    script.delta("BUY", 410_000, 3_000_000)  # lost after the point the snapshot shows
    assert view.apply(script.delta("BUY", 420_000, 1_000_000)) is Applied.NEEDS_REBUILD
    assert view.apply(reply) is Applied.NEEDS_REBUILD
    assert view.state(ASSET) is AssetState.RESYNCING
    assert view.rebuilds_pending() == [ASSET]


def test_a_new_epoch_without_its_snapshot_needs_a_rebuild() -> None:
    script = Script()
    view = live_view(script)
    script.new_epoch(LATER_EPOCH)
    script.snapshot([(300_000, 1_000_000)], [(310_000, 1_000_000)])  # lost
    assert view.apply(script.status("live", "snapshot")) is Applied.NEEDS_REBUILD
    assert view.state(ASSET) is AssetState.RESYNCING
    asset = view.asset(ASSET)
    assert asset is not None
    assert asset.reason == "new_epoch"
    assert view.apply(script.snapshot([(300_000, 1_000_000)], [], current=True)) is (
        Applied.STATE_CHANGED
    )
    assert view.tradeable(ASSET)
    assert (asset.epoch, asset.seq) == (LATER_EPOCH, 2)


def test_a_new_epoch_that_starts_with_its_snapshot_just_rebases() -> None:
    script = Script()
    view = live_view(script)
    assert view.apply(script.status("stale", "hash_mismatch")) is Applied.STATE_CHANGED
    assert not view.tradeable(ASSET)
    script.new_epoch(LATER_EPOCH)
    assert view.apply(script.snapshot([(300_000, 1_000_000)], [])) is Applied.STATE_CHANGED
    assert view.apply(script.status("live", "snapshot")) is Applied.UNCHANGED
    assert view.tradeable(ASSET)
    assert levels(view) == ([(300_000, 1_000_000)], [])
    assert view.stats.gaps == 0


def test_a_delta_before_any_snapshot_is_buffered_and_replayed_after_it() -> None:
    script = Script()
    snapshot = script.snapshot([(400_000, 1_000_000)], [])
    view = BookView()
    assert view.apply(script.delta("BUY", 410_000, 2_000_000)) is Applied.NEEDS_REBUILD
    assert view.state(ASSET) is AssetState.NEEDS_SNAPSHOT
    assert view.apply(snapshot) is Applied.STATE_CHANGED
    assert levels(view) == ([(410_000, 2_000_000), (400_000, 1_000_000)], [])
    assert view.tradeable(ASSET)


def test_an_older_snapshot_is_ignored() -> None:
    script = Script()
    old = script.snapshot([(100_000, 1_000_000)], [])
    view = BookView()
    view.apply(script.snapshot([(400_000, 1_000_000)], []))
    assert view.apply(old) is Applied.IGNORED
    assert levels(view) == ([(400_000, 1_000_000)], [])


# -- state and facts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("stale", AssetState.STALE),
        ("resyncing", AssetState.RESYNCING),
        ("closed", AssetState.CLOSED),
    ],
)
def test_stale_resyncing_and_closed_books_are_untradeable(
    status: BookState, state: AssetState
) -> None:
    script = Script()
    view = live_view(script)
    assert view.apply(script.status(status, "test")) is Applied.STATE_CHANGED
    assert view.state(ASSET) is state
    assert not view.tradeable(ASSET)


def test_a_status_reply_from_an_ingest_without_a_book_ends_the_request() -> None:
    script = Script()
    view = live_view(script)
    script.status("stale", "disconnect")  # lost
    assert view.apply(script.delta("BUY", 1, 1)) is Applied.NEEDS_REBUILD
    reply = script.status("stale", "not_live", current=True)
    assert view.apply_snapshot_reply(reply) is Applied.STATE_CHANGED
    assert view.state(ASSET) is AssetState.STALE
    assert view.rebuilds_pending() == []
    script.new_epoch(LATER_EPOCH)
    assert view.apply(script.snapshot([(1, 1)], [])) is Applied.STATE_CHANGED
    assert view.tradeable(ASSET)


def test_a_tick_change_applies_in_sequence() -> None:
    script = Script()
    view = live_view(script)
    assert view.apply(script.tick_change(10_000, 1_000)) is Applied.UPDATED
    assert view.tick(ASSET) == 1_000
    assert view.tradeable(ASSET)


def test_market_info_names_the_market_and_fills_in_tick_and_size() -> None:
    view = BookView()
    market = MarketInfo(
        event_id="m",
        ts_event=0,
        ts_init=0,
        condition_id=CONDITION,
        question="?",
        slug="q",
        outcomes=(Outcome(token_id=ASSET, outcome="Yes"), Outcome(token_id=OTHER, outcome="No")),
        tick_size=1_000,
        min_order_size=1_000_000,
        neg_risk=True,
        neg_risk_market_id="0xevent",
    )
    script = Script()
    view.apply(script.trade(500_000, 1_000_000))  # the asset is known before its market
    assert view.apply(market) is Applied.UPDATED
    assert view.market(CONDITION) == market
    assert view.market_of(ASSET) == market
    assert (view.tick(ASSET), view.min_size(ASSET)) == (1_000, 1_000_000)
    # The book's own snapshot is the live word on the tick.
    view.apply(script.snapshot([], [], tick=10_000, min_size=5_000_000))
    assert (view.tick(ASSET), view.min_size(ASSET)) == (10_000, 5_000_000)


def test_the_last_trade_is_kept() -> None:
    script = Script()
    view = live_view(script)
    trade = script.trade(450_000, 2_000_000)
    assert view.apply(trade) is Applied.UPDATED
    asset = view.asset(ASSET)
    assert asset is not None
    assert asset.last_trade == trade


# -- the feed on the in-memory bus ------------------------------------------------------------

PART = 3
DEFINITIONS = Definitions(stream=(StreamDefinition(name="MD", subjects=("md.polymarket.>",)),))


class FakeIngest:
    """Answers snapshot requests with whatever the test set."""

    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus
        self.answer: BookSnapshot | None = None
        self.requests = 0

    async def __call__(self, message: Message) -> None:
        self.requests += 1
        if self.answer is not None:
            await self.bus.respond(message, encode(self.answer))


@asynccontextmanager
async def running_feed(bus: MemoryBus, **kwargs: object) -> AsyncIterator[BookFeed]:
    feed = BookFeed(bus, partitions=[PART], retry_interval_s=0.05, **kwargs)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(feed.run())
    try:
        await asyncio.wait_for(feed.ready.wait(), 5)
        yield feed
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_feed_warm_starts_from_the_stream_and_heals_a_gap_by_request() -> None:
    subjects = Subjects()
    bus = MemoryBus()
    await bus.apply(DEFINITIONS)
    ingest = FakeIngest(bus)
    await bus.subscribe(subjects.snapshot_request_all(), ingest)
    script = Script()
    await bus.publish(subjects.book(PART, ASSET), script.snapshot([(400_000, 1_000_000)], []))
    await bus.publish(subjects.status(PART, ASSET), script.status("live", "snapshot"))
    states: list[AssetState] = []
    books: list[str] = []
    async with running_feed(
        bus,
        on_state=lambda view, asset, state: states.append(state),
        on_book=lambda view, asset: books.append(asset),
    ) as feed:
        view = feed.view
        assert view.tradeable(ASSET)
        assert ingest.requests == 0
        script.delta("BUY", 410_000, 1_000_000)  # never published: lost
        ingest.answer = script.snapshot([(410_000, 1_000_000)], [], current=True)
        await bus.publish(subjects.delta(PART, ASSET), script.delta("SELL", 500_000, 1_000_000))
        await eventually(lambda: view.stats.rebuilds == 1, 5, "the rebuild")
        assert ingest.requests == 1
        assert view.tradeable(ASSET)
        assert levels(view) == ([(410_000, 1_000_000)], [(500_000, 1_000_000)])
        assert AssetState.RESYNCING in states
        assert states[-1] is AssetState.LIVE
        assert books


async def test_the_feed_retries_a_rebuild_nobody_answered() -> None:
    subjects = Subjects()
    bus = MemoryBus()
    await bus.apply(DEFINITIONS)
    ingest = FakeIngest(bus)
    await bus.subscribe(subjects.snapshot_request_all(), ingest)
    script = Script()
    async with running_feed(bus, request_timeout_s=0.05) as feed:
        await bus.publish(subjects.delta(PART, ASSET), script.delta("BUY", 1_000, 1_000_000))
        await eventually(lambda: ingest.requests >= 2, 5, "a second request")
        assert not feed.view.tradeable(ASSET)
        ingest.answer = script.snapshot([(1_000, 1_000_000)], [], current=True)
        await eventually(lambda: feed.view.tradeable(ASSET), 5, "the answered rebuild")
