"""The ingest against the simulator and a real nats-server: books live and exact, faults healed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest

from polybus.common.book import OrderBook
from polybus.common.bus import Message
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    DeadLetter,
    Event,
    MarketInfo,
    MarketResolved,
    TickSizeChanged,
    decode,
)
from polybus.common.streams import Definitions
from polybus.ingest.config import IngestSettings
from polybus.ingest.engine import State
from polybus.ingest.service import Ingest
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)


def sim_settings(**overrides: Any) -> SimSettings:
    base = {
        "port": 0,
        "seed": 7,
        "binary_markets": 10,
        "neg_risk_events": 1,
        "outcomes_per_event": 3,
        "connect_bus": False,
        "changes_per_second": 300.0,
        "custom_feature_interval_s": 0.0,
    }
    base.update(overrides)
    return SimSettings(**base)


def small(markets: int) -> SimSettings:
    """A few binary markets, no neg-risk events: faults are easy to aim."""
    return sim_settings(binary_markets=markets, neg_risk_events=0)


def ingest_settings(sim: Simulator, **overrides: Any) -> IngestSettings:
    base: dict[str, Any] = {
        "market_ws_url": sim.market_ws_url,
        "clob_url": sim.http_url,
        "gamma_url": sim.http_url,
        "discover_top_n": 10_000,
        "stall_timeout_s": 1.0,
        "first_snapshot_timeout_s": 2.0,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.5,
        "mismatch_grace_s": 0.3,
        "crossed_grace_s": 0.6,
        "tick_interval_s": 0.05,
        "ping_interval_s": 3600.0,
        "snapshot_interval_s": 0.0,
        "hash_check_interval_s": 0.0,
    }
    base.update(overrides)
    return IngestSettings(**base)


class Collector:
    """Every event published under the test's namespace, decoded, in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    async def __call__(self, message: Message) -> None:
        self.events.append((message.subject, decode(message.data)))

    def of(self, kind: type[Event], asset_id: str | None = None) -> list[Any]:
        return [
            event
            for _, event in self.events
            if isinstance(event, kind)
            and (asset_id is None or getattr(event, "asset_id", None) == asset_id)
        ]

    def statuses(self, asset_id: str | None = None) -> list[tuple[str, str]]:
        return [(s.status, s.reason) for s in self.of(BookStatus, asset_id)]


@asynccontextmanager
async def running(
    bus: NatsBus, definitions: Definitions, settings: SimSettings, **overrides: Any
) -> AsyncIterator[tuple[Simulator, Ingest, Collector]]:
    """The simulator, and an ingest following all of its markets with every book live."""
    async with Simulator(settings) as sim, _ingest(bus, definitions, sim, **overrides) as (i, c):
        yield sim, i, c


@asynccontextmanager
async def _ingest(
    bus: NatsBus, definitions: Definitions, sim: Simulator, **overrides: Any
) -> AsyncIterator[tuple[Ingest, Collector]]:
    await bus.apply(definitions)
    collector = Collector()
    subscription = await bus.subscribe(bus.namespace.subjects.market_data_all(), collector)
    dead = await bus.subscribe(bus.namespace.subjects.dead_letter_all(), collector)
    ingest = Ingest(bus, ingest_settings(sim, **overrides), partitions=16)
    try:
        async with ingest:
            await eventually(lambda: ingest.selected_once.is_set(), 10, "market selection")
            await eventually(lambda: all_live(ingest), 20, "every book live")
            yield ingest, collector
            assert ingest.failed() is None
    finally:
        await subscription.unsubscribe()
        await dead.unsubscribe()


def all_live(ingest: Ingest) -> bool:
    states = ingest.engine.states()
    return bool(ingest.engine.tracks) and states["live"] == len(ingest.engine.tracks)


async def quiesce(sim: Simulator, ingest: Ingest, bus: NatsBus) -> None:
    """The simulator stopped, and everything it sent processed by the ingest and published."""
    await sim.pause_flow()
    await sim.flush()
    await ping_fence(ingest)
    await eventually(lambda: not ingest.engine.outbox, 10, "the ingest's outbox drained")
    await bus.flush()


async def ping_fence(ingest: Ingest) -> None:
    """A PING on every socket, and its PONG read: the venue answers in order, and a socket's
    reader applies each frame before it reads the next, so every frame sent before is applied.
    (The tests' ping interval is far longer than a test: no other PONG can stand in.)"""
    sockets = [s for s in ingest.pool.sockets if s.connection is not None]
    pongs = {s: s.frames - s.data_frames for s in sockets}
    for socket in sockets:
        assert socket.connection is not None
        await socket.connection.send("PING")
    await eventually(
        lambda: all(s.frames - s.data_frames > pongs[s] for s in sockets), 10, "PONG fence"
    )


def mismatched_books(ingest: Ingest, sim: Simulator) -> list[str]:
    wrong = []
    for asset_id, track in ingest.engine.tracks.items():
        bids, asks = sim.book(asset_id)
        if track.book.bid_levels() != bids or track.book.ask_levels() != asks:
            wrong.append(asset_id)
    return wrong


async def books_equal(ingest: Ingest, sim: Simulator) -> bool:
    return not mismatched_books(ingest, sim)


# -- scale ------------------------------------------------------------------------------------


async def test_1000_assets_over_several_sockets_stay_equal_to_the_simulator(
    bus: NatsBus, definitions: Definitions
) -> None:
    settings = sim_settings(binary_markets=480, neg_risk_events=5, outcomes_per_event=4)
    async with running(bus, definitions, settings) as (sim, ingest, collector):
        assert len(sim.asset_ids()) == 1000
        assert len(ingest.pool.sockets) == 5
        assert all(len(s.assets) <= 200 for s in ingest.pool.sockets)
        stats = ingest.engine.stats
        await eventually(lambda: stats.bbo_passed > 500, 20, "flow to be checked")
        await quiesce(sim, ingest, bus)
        assert mismatched_books(ingest, sim) == []
        assert stats.bbo_failed == 0
        assert stats.hash_failed == 0
        assert stats.hash_passed > 0
        assert collector.statuses().count(("live", "snapshot")) == 1000
        # Everything went through NATS into the MD stream too.
        info = await bus.js.stream_info(bus.namespace.stream("MD"))
        assert info.state.messages >= ingest.publisher.published - 10


class SlowBus:
    """The test's bus, but every message takes ``per_message_s`` to publish: a publisher that
    cannot keep up with the venue, as under a flood on a loaded machine."""

    def __init__(self, bus: NatsBus, per_message_s: float) -> None:
        self.bus = bus
        self.per_message_s = per_message_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    async def publish_many(self, messages: Iterable[tuple[str, Event, str | None]]) -> None:
        for subject, event, msg_id in messages:
            await asyncio.sleep(self.per_message_s)
            await self.bus.publish(subject, event, msg_id=msg_id)


async def test_a_publisher_slower_than_the_venue_holds_the_readers_and_drops_nothing(
    bus: NatsBus, definitions: Definitions
) -> None:
    bound = 100
    settings = sim_settings(changes_per_second=2000.0)
    async with running(bus, definitions, settings, publish_backlog_max=bound) as (
        sim,
        ingest,
        collector,
    ):
        engine, publisher = ingest.engine, ingest.publisher
        publisher.bus = SlowBus(bus, 0.002)  # type: ignore[assignment]
        # The most one frame adds to the outbox: a reader checks the bound after each frame.
        grown = [0]
        on_frame = engine.on_frame

        def measured(frame: str | bytes, now_ns: int) -> None:
            before = len(engine.outbox)
            on_frame(frame, now_ns)
            grown[0] = max(grown[0], len(engine.outbox) - before)

        engine.on_frame = measured  # type: ignore[method-assign]
        peak = [0]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], len(engine.outbox))
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        await eventually(lambda: publisher.holds >= 5, 30, "the readers held 5 times")
        sampler.cancel()
        publisher.bus = bus  # fast again: what the venue's socket buffered meanwhile drains
        await quiesce(sim, ingest, bus)
    print(f"peak backlog {peak[0]} (bound {bound}, a frame adds at most {grown[0]})")
    assert bound < peak[0] <= bound + grown[0]
    assert mismatched_books(ingest, sim) == []
    # Nothing dropped: every asset's events came out with no seq missing within an epoch.
    last: dict[tuple[str, int], int] = {}
    gaps = []
    for _, event in collector.events:
        if isinstance(event, BookSnapshot | BookDelta | BookStatus | TickSizeChanged):
            key = (event.asset_id, event.epoch)
            if key in last and event.seq != last[key] + 1:
                gaps.append((key, last[key], event.seq))
            last[key] = event.seq
    assert gaps == []
    assert ingest.failed() is None


# -- faults -----------------------------------------------------------------------------------


async def test_a_silent_stall_is_detected_and_healed(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with running(bus, definitions, sim_settings()) as (sim, ingest, c):
        asset = next(iter(ingest.engine.tracks))
        sim.faults.stall()  # PONGs go on, data stops
        await eventually(lambda: ("stale", "socket_stall") in c.statuses(asset), 10, "stall seen")
        await eventually(lambda: all_live(ingest), 10, "books live again")
        await eventually(
            lambda: c.statuses(asset)[-1] == ("live", "snapshot"), 5, "the live status"
        )
        await quiesce(sim, ingest, bus)
        assert mismatched_books(ingest, sim) == []


async def test_an_abrupt_disconnect_is_detected_and_healed(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with running(bus, definitions, sim_settings()) as (sim, ingest, c):
        connects = sum(s.connects for s in ingest.pool.sockets)
        sim.faults.disconnect(channel="market")
        await eventually(lambda: ("stale", "disconnect") in c.statuses(), 10, "disconnect seen")
        await eventually(
            lambda: sum(s.connects for s in ingest.pool.sockets) > connects, 10, "reconnect"
        )
        await eventually(lambda: all_live(ingest), 10, "books live again")
        await quiesce(sim, ingest, bus)
        assert mismatched_books(ingest, sim) == []


async def test_a_dropped_delta_is_detected_and_the_asset_resynced(
    bus: NatsBus, definitions: Definitions
) -> None:
    # No trades: a book re-sent after a trade would repair the gap before anyone saw it.
    settings = msgspec.structs.replace(small(2), trade_probability=0.0)
    async with running(bus, definitions, settings) as (sim, ingest, c):
        asset = sim.asset_ids()[0]

        def detected() -> bool:
            return any(
                status == "stale" and reason in ("bbo_mismatch", "hash_mismatch")
                for status, reason in c.statuses(asset)
            )

        # A later change at the same price can repair a gap before any check sees it (sizes
        # are absolute), so drop again until one is detected.
        for _ in range(5):
            sim.faults.drop_next_price_change(asset)
            with contextlib.suppress(AssertionError):
                await eventually(detected, 3, "the gap detected")
                break
        assert detected()
        await eventually(lambda: c.statuses(asset)[-1] == ("live", "snapshot"), 10, "resynced")
        await quiesce(sim, ingest, bus)
        assert mismatched_books(ingest, sim) == []
        assert ingest.engine.tracks[asset].counts.resyncs >= 1


async def test_a_briefly_crossed_book_is_tolerated(bus: NatsBus, definitions: Definitions) -> None:
    async with running(bus, definitions, small(2), crossed_grace_s=5.0) as (sim, ingest, c):
        await sim.pause_flow()
        condition = sim.faults.crossed_burst(duration_ms=300)
        assets = [a for a, t in ingest.engine.tracks.items() if t.condition_id == condition]
        await eventually(
            lambda: all(ingest.engine.tracks[a].book.crossed for a in assets),
            5,
            "the crossing reaches the ingest",
        )
        await eventually(
            lambda: not any(ingest.engine.tracks[a].book.crossed for a in assets),
            5,
            "the crossing ends",
        )
        assert not any(status == "stale" for a in assets for status, _ in c.statuses(a))
        await quiesce(sim, ingest, bus)
        assert mismatched_books(ingest, sim) == []


async def test_a_persistently_crossed_book_is_resynced(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with running(bus, definitions, small(2), crossed_grace_s=0.3) as (sim, ingest, c):
        await sim.pause_flow()  # nothing trades the crossing away
        condition = sim.faults.crossed_burst(duration_ms=1500)
        assets = [a for a, t in ingest.engine.tracks.items() if t.condition_id == condition]
        await eventually(
            lambda: any(("stale", "crossed") in c.statuses(a) for a in assets),
            10,
            "the crossed book resynced",
        )
        await eventually(
            lambda: not any(ingest.engine.tracks[a].book.crossed for a in assets),
            10,
            "the crossing ends",
        )
        await eventually(lambda: all_live(ingest), 10, "books live again")
        await quiesce(sim, ingest, bus)
        assert mismatched_books(ingest, sim) == []


@pytest.mark.parametrize("kind", ["malformed", "unknown", "invalid_json"])
async def test_a_bad_frame_is_dead_lettered_its_siblings_applied_and_nothing_dies(
    bus: NatsBus, definitions: Definitions, kind: str
) -> None:
    async with running(bus, definitions, small(3)) as (
        sim,
        ingest,
        c,
    ):
        books_before = sum(t.counts.books for t in ingest.engine.tracks.values())
        sim.faults.inject_frame(kind)  # type: ignore[arg-type]
        await eventually(lambda: bool(c.of(DeadLetter)), 10, "a dead letter")
        letter = c.of(DeadLetter)[0]
        assert letter.source == "ingest"
        expected = {
            "malformed": "invalid_event",
            "unknown": "unknown_event_type",
            "invalid_json": "invalid_json",
        }[kind]
        assert letter.reason == expected
        assert "event_type" in letter.raw
        if kind != "invalid_json":
            # The valid book next to it in the same array was applied.
            await eventually(
                lambda: sum(t.counts.books for t in ingest.engine.tracks.values()) > books_before,
                5,
                "the sibling book applied",
            )
        assert all_live(ingest)
        await quiesce(sim, ingest, bus)
        assert mismatched_books(ingest, sim) == []


async def test_a_tick_change_updates_the_tick_at_once(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with running(bus, definitions, small(2)) as (
        sim,
        ingest,
        c,
    ):
        asset = sim.asset_ids()[0]
        sim.faults.change_tick(asset, 1_000)
        await eventually(lambda: bool(c.of(TickSizeChanged, asset)), 10, "tick change")
        event = c.of(TickSizeChanged, asset)[0]
        assert event.new_tick_size == 1_000
        assert ingest.engine.tracks[asset].tick == 1_000
        failed = ingest.engine.stats.hash_failed
        # Batches after the change are hashed with the new tick: several must pass.
        counts = ingest.engine.tracks[asset].counts
        passed = counts.hash_passed
        await eventually(lambda: counts.hash_passed >= passed + 5, 20, "hashes after the tick")
        assert ingest.engine.stats.hash_failed == failed
        assert all_live(ingest)


# -- consumers --------------------------------------------------------------------------------


class BookFollower:
    """A downstream consumer: rebuilds one asset's book from deltas, and from a snapshot
    (request/reply) whenever it sees a gap in ``seq`` or a new ``epoch``."""

    def __init__(self, bus: NatsBus, asset_id: str, *, skip_seq: int = 0) -> None:
        self.bus = bus
        self.asset_id = asset_id
        self.book = OrderBook()
        self.seq = 0
        self.epoch = 0
        self.rebuilds = 0
        self.skip_seq = skip_seq
        self._lock = asyncio.Lock()

    async def on_message(self, message: Message) -> None:
        event = decode(message.data)
        if not isinstance(event, BookDelta | BookSnapshot | BookStatus | TickSizeChanged):
            return
        if event.asset_id != self.asset_id:
            return
        if event.seq == self.skip_seq:
            self.skip_seq = 0
            return  # pretend the network lost it
        async with self._lock:
            if isinstance(event, BookSnapshot):
                self.book.apply_snapshot(event)
                self.seq, self.epoch = event.seq, event.epoch
                return
            if event.epoch == self.epoch and event.seq <= self.seq:
                return  # already in the snapshot we rebuilt from
            if event.epoch != self.epoch or event.seq != self.seq + 1:
                await self.rebuild()
                if event.epoch == self.epoch and event.seq <= self.seq:
                    return
            if isinstance(event, BookDelta):
                self.book.apply_delta(event)
            self.seq = event.seq

    async def rebuild(self) -> None:
        reply = await self.bus.request(
            self.bus.namespace.subjects.snapshot_request(self.asset_id), b"", timeout=2
        )
        snapshot = msgspec.json.decode(reply.data, type=BookSnapshot)
        self.book.apply_snapshot(snapshot)
        self.seq, self.epoch = snapshot.seq, snapshot.epoch
        self.rebuilds += 1


async def test_a_consumer_that_misses_a_seq_rebuilds_from_a_snapshot(
    bus: NatsBus, definitions: Definitions
) -> None:
    # No trades, so no venue snapshot can heal the gap before the follower notices it.
    settings = msgspec.structs.replace(small(1), trade_probability=0.0)
    async with running(bus, definitions, settings) as (sim, ingest, _):
        asset = sim.asset_ids()[0]
        track = ingest.engine.tracks[asset]
        follower = BookFollower(bus, asset)
        subjects = bus.namespace.subjects
        subscription = await bus.subscribe(subjects.market_data_all(), follower.on_message)
        async with follower._lock:
            await follower.rebuild()  # start from a snapshot, like any consumer
            follower.rebuilds = 0
            follower.skip_seq = follower.seq + 5  # a later event will be lost on the way
        await eventually(lambda: follower.skip_seq == 0, 10, "a delta lost on the way")
        await eventually(lambda: follower.rebuilds >= 1, 10, "the rebuild")
        await quiesce(sim, ingest, bus)
        await eventually(lambda: follower.seq == track.seq, 5, "the follower caught up")
        assert follower.book == track.book
        await subscription.unsubscribe()


async def test_no_snapshot_after_resync_leads_to_resubscribes_then_a_rest_seed(
    bus: NatsBus, definitions: Definitions
) -> None:
    overrides: dict[str, Any] = {
        "first_snapshot_timeout_s": 0.3,
        "resubscribe_attempts": 2,
        "stall_timeout_s": 60.0,  # the socket watchdog stays out of it
    }
    async with running(bus, definitions, small(1), **overrides) as (sim, ingest, c):
        asset = sim.asset_ids()[0]
        sim.faults.stall()  # the socket answers PING but sends nothing, not even a book
        await sim.pause_flow()
        await sim.flush()
        ingest.engine.mark_stale([asset], "test", time.time_ns(), resubscribe=True)
        await eventually(
            lambda: c.statuses(asset)[-1] == ("live", "rest_seed"), 10, "the REST seed"
        )
        track = ingest.engine.tracks[asset]
        assert track.state is State.LIVE
        assert track.counts.rest_books == 1
        # The resubscribes that got no book came first, then the seed.
        kinds = [k for k in ingest.engine.stats.resyncs if k.startswith(("resubscribe", "rest"))]
        assert "resubscribe:snapshot_timeout" in kinds
        assert "rest_seed:snapshot_timeout" in kinds
        assert mismatched_books(ingest, sim) == []


async def test_market_data_is_deduplicated_by_event_id_in_the_md_stream(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with running(bus, definitions, small(1)) as (sim, ingest, c):
        await quiesce(sim, ingest, bus)
        stream = bus.namespace.stream("MD")
        before = (await bus.js.stream_info(stream)).state.messages
        subject, event = next((s, e) for s, e in c.events if isinstance(e, BookSnapshot))
        await bus.publish(subject, event, msg_id=event.event_id)
        await bus.flush()
        assert (await bus.js.stream_info(stream)).state.messages == before


# -- market lifecycle -------------------------------------------------------------------------


async def test_new_markets_are_subscribed_and_resolved_ones_closed(
    bus: NatsBus, definitions: Definitions
) -> None:
    settings = msgspec.structs.replace(small(3), custom_feature_interval_s=0.5)
    overrides = {"new_market_refresh_delay_s": 0.05}
    async with running(bus, definitions, settings, **overrides) as (_, ingest, c):
        initial = set(ingest.selected)
        await eventually(lambda: bool(c.of(MarketResolved)), 15, "a market resolved")
        resolved = c.of(MarketResolved)[0].condition_id
        closed = {
            s.asset_id for s in c.of(BookStatus) if (s.status, s.reason) == ("closed", "resolved")
        }
        assert closed
        assert all(ingest.engine.tracks.get(asset) is None for asset in closed)
        assert all(asset not in ingest.pool.socket_of for asset in closed)
        # The new_market event led to a refresh that follows the new market, live.
        await eventually(
            lambda: bool(set(ingest.selected) - initial - {resolved}), 15, "a new market followed"
        )
        new = next(iter(set(ingest.selected) - initial - {resolved}))
        # Its MarketInfo reaches our subscriber through NATS a moment after the selection.
        await eventually(
            lambda: any(info.condition_id == new for info in c.of(MarketInfo)),
            5,
            "the new market's MarketInfo",
        )
        await eventually(
            lambda: all(
                t.state is State.LIVE
                for t in ingest.engine.tracks.values()
                if t.condition_id == new
            ),
            10,
            "the new market's books live",
        )
