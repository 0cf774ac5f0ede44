"""The book view against a real ingest on the simulator and a real nats-server.

The view's books must equal the simulator's (the venue's truth), after a warm start, live flow
and lost messages; and ``last_per_subject`` must behave the same on NATS and the memory twin.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest

from polybus.common.book_view import AssetState, BookFeed
from polybus.common.bus import Bus, Message, MessageHandler, Subscription
from polybus.common.bus.memory_bus import MemoryBus
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import BookDelta, Trade, decode
from polybus.common.streams import Definitions
from polybus.ingest.service import Ingest
from polybus.sim.server import Simulator
from tests.helpers import eventually
from tests.integration.test_ingest_sim import running, small

pytestmark = pytest.mark.timeout(90)


class DroppingBus:
    """The test's bus, except that the view's subscription loses one chosen delta."""

    def __init__(self, bus: NatsBus) -> None:
        self.inner = bus
        self.namespace = bus.namespace
        self.drop_asset = ""
        self.dropped: list[BookDelta] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        async def losing(message: Message) -> None:
            if self.drop_asset and b'"BookDelta"' in message.data:
                event = decode(message.data)
                if isinstance(event, BookDelta) and event.asset_id == self.drop_asset:
                    self.drop_asset = ""
                    self.dropped.append(event)
                    return
            await handler(message)

        return await self.inner.subscribe(subject, losing, queue=queue)


@asynccontextmanager
async def following(bus: Bus, **kwargs: Any) -> AsyncIterator[BookFeed]:
    """A feed on every partition, warm-started."""
    feed = BookFeed(bus, retry_interval_s=0.2, **kwargs)
    task = asyncio.get_running_loop().create_task(feed.run())
    try:
        await asyncio.wait_for(feed.ready.wait(), 20)
        yield feed
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def mismatches(feed: BookFeed, sim: Simulator) -> list[str]:
    wrong = []
    for asset_id in sim.asset_ids():
        book = feed.view.book(asset_id)
        if (
            book is None
            or not feed.view.tradeable(asset_id)
            or (book.bid_levels(), book.ask_levels()) != sim.book(asset_id)
        ):
            wrong.append(asset_id)
    return wrong


def same_position_as_ingest(feed: BookFeed, ingest: Ingest) -> bool:
    for asset_id, track in ingest.engine.tracks.items():
        asset = feed.view.asset(asset_id)
        if asset is None or (asset.epoch, asset.seq) != (track.epoch, track.seq):
            return False
    return True


async def settle(sim: Simulator, feed: BookFeed, ingest: Ingest) -> None:
    """Stop the flow and wait until the view has everything the simulator sent."""
    await sim.pause_flow()
    await sim.flush()
    await eventually(
        lambda: same_position_as_ingest(feed, ingest) and not mismatches(feed, sim),
        20,
        "the view to equal the simulator's books",
    )


# -- last_per_subject, on NATS and on the memory twin ------------------------------------------


@pytest.mark.parametrize("kind", ["nats", "memory"])
async def test_last_per_subject_gives_the_latest_message_per_subject_in_stream_order(
    bus: NatsBus, definitions: Definitions, kind: str
) -> None:
    target: Bus = bus if kind == "nats" else MemoryBus(bus.namespace)
    await target.apply(definitions)
    subjects = target.namespace.subjects
    script = [
        (subjects.book(1, "a"), "a1"),
        (subjects.book(2, "b"), "b1"),
        (subjects.delta(1, "a"), "d1"),
        (subjects.book(1, "a"), "a2"),
        (subjects.market(4, "c"), "m1"),
    ]
    for subject, event_id in script:
        trade = Trade(
            event_id=event_id, ts_event=0, ts_init=0, asset_id="a", condition_id="c",
            seq=0, epoch=0, price=1, size=1, side="BUY",
        )  # fmt: skip
        await target.publish(subject, trade, msg_id=event_id)
    await target.flush()
    filters = [subjects.market_data_kind("book"), subjects.market_data_kind("market")]
    found: list[Message] = []

    async def stored() -> bool:
        # A core publish is stored by the stream a moment after the server received it.
        found[:] = await target.last_per_subject("MD", filters, timeout=5)
        return len(found) == 3

    await eventually(stored, 5, "the stream to store every publish")
    assert [(m.subject, decode(m.data).event_id) for m in found] == [
        (subjects.book(2, "b"), "b1"),
        (subjects.book(1, "a"), "a2"),
        (subjects.market(4, "c"), "m1"),
    ]
    assert await target.last_per_subject("NO_SUCH_STREAM", filters) == []
    # A feed of no partitions (a replica holding none yet) asks for no subjects.
    assert await target.last_per_subject("MD", []) == []


# -- the view on a real ingest -----------------------------------------------------------------


async def test_after_a_warm_start_and_live_flow_the_view_equals_the_simulator(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with running(bus, definitions, small(4)) as (sim, ingest, _), following(bus) as feed:
        # The warm start may have found stored snapshots behind and rebuilt those books; from
        # then on the live flow alone keeps every book, with no event lost.
        applied, gaps = feed.view.stats.applied, feed.view.stats.gaps
        await eventually(lambda: feed.view.stats.applied > applied + 300, 20, "live flow")
        await settle(sim, feed, ingest)
        assert mismatches(feed, sim) == []
        assert feed.view.stats.gaps == gaps
        assert feed.stats.decode_errors == 0
        # Every outcome's market arrived with it.
        for asset_id in sim.asset_ids():
            market = feed.view.market_of(asset_id)
            assert market is not None
            assert asset_id in {outcome.token_id for outcome in market.outcomes}
            assert feed.view.tick(asset_id) == ingest.engine.tracks[asset_id].tick


async def test_a_delta_the_view_lost_is_noticed_and_healed(
    bus: NatsBus, definitions: Definitions
) -> None:
    # No trades: the book the venue re-sends after a trade would heal the book by itself.
    settings = msgspec.structs.replace(small(2), trade_probability=0.0)
    losing = DroppingBus(bus)
    states: list[tuple[str, AssetState]] = []
    async with (
        running(bus, definitions, settings) as (sim, ingest, _),
        following(
            losing,  # a Bus by delegation (__getattr__)
            on_state=lambda view, asset, state: states.append((asset, state)),
        ) as feed,
    ):
        asset = sim.asset_ids()[0]
        assert feed.view.tradeable(asset)
        losing.drop_asset = asset
        await eventually(lambda: bool(losing.dropped), 10, "a delta lost on the way")
        await eventually(lambda: feed.view.stats.rebuilds >= 1, 10, "the rebuild")
        assert (asset, AssetState.RESYNCING) in states
        assert states[-1] == (asset, AssetState.LIVE) or feed.view.tradeable(asset)
        assert feed.stats.snapshot_requests >= 1
        await settle(sim, feed, ingest)
        assert mismatches(feed, sim) == []
        assert feed.view.tradeable(asset)


async def test_the_view_follows_the_ingest_through_a_resync_after_a_venue_drop(
    bus: NatsBus, definitions: Definitions
) -> None:
    settings = msgspec.structs.replace(small(2), trade_probability=0.0)
    async with (
        running(bus, definitions, settings) as (sim, ingest, _),
        following(bus) as feed,
    ):
        asset = sim.asset_ids()[0]
        epoch = ingest.engine.tracks[asset].epoch
        # A later change at the same price can repair the gap before any check sees it, so
        # drop again until the ingest resyncs (a new epoch).
        for _ in range(5):
            sim.faults.drop_next_price_change(asset)
            try:
                await eventually(
                    lambda: ingest.engine.tracks[asset].epoch != epoch, 3, "the resync"
                )
                break
            except AssertionError:
                continue
        await settle(sim, feed, ingest)
        assert mismatches(feed, sim) == []
        view_asset = feed.view.asset(asset)
        assert view_asset is not None
        assert view_asset.epoch == ingest.engine.tracks[asset].epoch != epoch


async def test_a_view_started_later_warm_starts_from_the_stream_without_new_flow(
    bus: NatsBus, definitions: Definitions
) -> None:
    # Periodic snapshots: once the flow stops, each book's latest snapshot in the stream is
    # its current book, so nothing needs asking for.
    async with running(bus, definitions, small(3), snapshot_interval_s=0.2) as (sim, ingest, _):
        await sim.pause_flow()
        await sim.flush()
        await eventually(
            lambda: stream_holds_current_snapshots(bus, ingest), 20, "current snapshots stored"
        )
        async with following(bus) as feed:
            assert mismatches(feed, sim) == []
            assert feed.stats.snapshot_requests == 0
            assert feed.stats.warm_start_messages > 0


async def test_a_view_started_later_rebuilds_books_whose_stored_snapshot_is_behind(
    bus: NatsBus, definitions: Definitions
) -> None:
    # No periodic snapshots: the stored ones are as old as each book's first; the latest delta
    # in the stream shows it, and the view asks the ingest before it says it is ready.
    async with running(bus, definitions, small(3)) as (sim, ingest, _):
        await eventually(lambda: ingest.engine.stats.entries > 300, 20, "some flow")
        await sim.pause_flow()
        await sim.flush()
        await eventually(lambda: stream_holds_latest_deltas(bus, ingest), 20, "deltas stored")
        async with following(bus) as feed:
            assert mismatches(feed, sim) == []
            assert feed.stats.snapshot_requests > 0


async def _last_seq(bus: NatsBus, subject: str) -> int:
    found = await bus.last_per_subject("MD", [subject])
    return max((getattr(decode(m.data), "seq", 0) for m in found), default=0)


async def stream_holds_current_snapshots(bus: NatsBus, ingest: Ingest) -> bool:
    for track in ingest.engine.tracks.values():
        if await _last_seq(bus, track.book_subject) != track.seq:
            return False
    return True


async def stream_holds_latest_deltas(bus: NatsBus, ingest: Ingest) -> bool:
    for track in ingest.engine.tracks.values():
        last = max(
            [await _last_seq(bus, track.delta_subject), await _last_seq(bus, track.book_subject)]
        )
        statuses = await _last_seq(bus, track.status_subject)
        if max(last, statuses) != track.seq:
            return False
    return True
