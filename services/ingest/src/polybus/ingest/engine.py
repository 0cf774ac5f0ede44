"""The ingest's core: venue frames in, verified books and polybus events out. No I/O.

The live service and ``polybus replay`` run exactly this code: the service feeds it frames
from its sockets and drains :attr:`IngestEngine.outbox` (events to publish) and
:attr:`IngestEngine.actions` (re-subscribe / REST seed / unsubscribe requests); replay feeds it a
capture and reads the books at the end.

Per asset the book is NEEDS_SNAPSHOT -> LIVE -> STALE (-> LIVE again after a snapshot), or
CLOSED once unsubscribed (VENUE §4.6):

- every venue ``book`` replaces the book (an older timestamp is ignored);
- ``price_change`` entries set absolute level sizes; entries of one asset that share a venue
  timestamp form a batch, and at the end of each batch the local best bid/ask is compared with
  the venue's ``best_bid``/``best_ask`` and, where its inputs are known, the venue's ``hash``
  is recomputed. A batch ends when the asset's next entry has another timestamp (a definite
  end) or at the end of the frame (the batch may go on in the next frame: a failure there is
  only *suspect* until the next timestamp or ``mismatch_grace_s``);
- a best bid/ask mismatch, or a hash mismatch that no just-printed trade explains, makes the
  asset STALE and asks for a resync; entries are buffered meanwhile, and replayed past the
  timestamp of a REST ``/book`` seed if it comes to that;
- a book that stays crossed for ``crossed_grace_s`` is also resynced (VENUE H8).

Every book event (snapshot, delta, status, tick change) gets the asset's next ``seq``; a new
``epoch`` starts whenever a book is rebuilt from a snapshot after it was not live.
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import msgspec

from polybus.common.book import OrderBook
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    DeadLetter,
    Event,
    LevelChange,
    MarketInfo,
    MarketResolved,
    Side,
    TickSizeChanged,
    Trade,
)
from polybus.common.money import MICROS, format_micros
from polybus.common.polymarket.book_hash import book_hash, format_last_trade_price
from polybus.common.polymarket.market_channel import (
    PolymarketBestBidAsk,
    PolymarketBook,
    PolymarketLastTradePrice,
    PolymarketMarketEvent,
    PolymarketMarketResolved,
    PolymarketNewMarket,
    PolymarketPriceChange,
    PolymarketPriceChangeEntry,
    PolymarketTickSizeChange,
)
from polybus.common.polymarket.rest import PolymarketOrderBookSummary
from polybus.common.subjects import Subjects, partition_of
from polybus.ingest.config import IngestSettings
from polybus.ingest.normalize import (
    FixedPointError,
    _prices,
    bbo_price,
    parse_side,
    parse_size,
    parse_tick_size,
    price_micros,
    price_text,
    size_micros,
    size_text,
    timestamp_ms,
)
from polybus.ingest.venue import decode_frame, raw_elements

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

# When Gamma has not told us a market's minimum order size / neg-risk flag (replay of a bare
# capture), the first snapshot's hash tells us: these are the values the venue uses.
_MIN_ORDER_SIZE_CANDIDATES = ("5", "1", "15", "10", "20", "50", "100", "0")


class State(enum.Enum):
    NEEDS_SNAPSHOT = "needs_snapshot"
    LIVE = "live"
    STALE = "stale"
    CLOSED = "closed"


ActionKind = Literal["resubscribe", "rest_seed", "unsubscribe"]


class Action(NamedTuple):
    """Something only the I/O side can do for an asset."""

    kind: ActionKind
    asset_id: str
    reason: str


@dataclass(slots=True)
class AssetCounts:
    """What happened to one asset (``polybus replay`` prints these)."""

    books: int = 0
    rest_books: int = 0
    entries: int = 0
    buffered: int = 0
    trades: int = 0
    tick_changes: int = 0
    deltas: int = 0
    bbo_passed: int = 0
    bbo_failed: int = 0
    hash_passed: int = 0
    hash_failed: int = 0
    hash_explained_by_trade: int = 0
    hash_skipped: int = 0
    stale: int = 0
    resyncs: int = 0


class _Buffered(NamedTuple):
    timestamp: int
    timestamp_text: str
    side: Side
    price: int
    size: int
    best_bid: str
    best_ask: str
    hash: str


class AssetTrack:
    """Everything the engine knows about one asset. Thousands exist: slots, no extras."""

    __slots__ = (
        "asset_id",
        "awaiting_since_ns",
        "batch_ask",
        "batch_bid",
        "batch_changes",
        "batch_hash",
        "batch_ts",
        "batch_ts_text",
        "book",
        "book_subject",
        "buffer",
        "condition_id",
        "counts",
        "crossed_since_ns",
        "delta_subject",
        "epoch",
        "hash_verified",
        "last_book_ts",
        "last_hash_check_ns",
        "last_trade_known",
        "last_trade_price",
        "last_ts",
        "last_ts_entries",
        "min_order_size",
        "neg_risk",
        "next_snapshot_ns",
        "partition",
        "rest_requested",
        "resubscribes",
        "seq",
        "state",
        "status_subject",
        "suspect_reason",
        "suspect_since_ns",
        "suspect_ts",
        "tick",
        "trade_subject",
    )

    def __init__(self, asset_id: str, condition_id: str, partition: int, subjects: Subjects):
        self.asset_id = asset_id
        self.condition_id = condition_id
        self.partition = partition
        self.book_subject = subjects.book(partition, asset_id)
        self.delta_subject = subjects.delta(partition, asset_id)
        self.status_subject = subjects.status(partition, asset_id)
        self.trade_subject = subjects.trade(partition, asset_id)
        self.book = OrderBook()
        self.state = State.NEEDS_SNAPSHOT
        self.seq = 0
        self.epoch = 0
        self.tick: int | None = None
        self.min_order_size: str | None = None
        self.neg_risk: bool | None = None
        self.last_trade_price: int | None = None
        """Micro-units; None: no trade printed yet (if ``last_trade_known``)."""
        self.last_trade_known = False
        self.hash_verified = False
        """Our inputs reproduced the venue's last hash (of a snapshot or a batch), so a batch
        hash that does not match means a broken book."""
        self.last_book_ts = -1
        self.last_ts = -1
        self.last_ts_entries = 0
        self.batch_ts = -1
        self.batch_ts_text = ""
        self.batch_changes: list[LevelChange] = []
        self.batch_bid = ""
        self.batch_ask = ""
        self.batch_hash = ""
        self.suspect_reason = ""
        self.suspect_since_ns = 0
        self.suspect_ts = -1
        self.crossed_since_ns = 0
        self.awaiting_since_ns = 0
        self.resubscribes = 0
        self.rest_requested = False
        self.buffer: deque[_Buffered] | None = None
        self.last_hash_check_ns = 0
        self.next_snapshot_ns = 0
        self.counts = AssetCounts()

    def hash_inputs_known(self) -> bool:
        return (
            self.tick is not None
            and self.min_order_size is not None
            and self.neg_risk is not None
            and self.last_trade_known
        )

    def last_trade_price_text(self) -> str:
        if self.last_trade_price is None or self.tick is None:
            return ""
        return format_last_trade_price(self.last_trade_price, self.tick)

    def venue_hash(
        self,
        timestamp_text: str,
        *,
        min_order_size: str | None = None,
        neg_risk: bool | None = None,
        last_trade_price: str | None = None,
    ) -> str:
        """The venue's hash of this book as it stands (VENUE §4.6; rule in book_hash)."""
        book = self.book
        tick = self.tick or 0
        return book_hash(
            market=self.condition_id,
            asset_id=self.asset_id,
            timestamp=timestamp_text,
            bids=[(price_text(p), size_text(s)) for p, s in sorted(book.bids.items())],
            asks=[
                (price_text(p), size_text(s)) for p, s in sorted(book.asks.items(), reverse=True)
            ],
            min_order_size=min_order_size or self.min_order_size or "",
            tick_size=price_text(tick) if tick else "",
            neg_risk=bool(self.neg_risk if neg_risk is None else neg_risk),
            last_trade_price=(
                self.last_trade_price_text() if last_trade_price is None else last_trade_price
            ),
        )


@dataclass(slots=True)
class EngineStats:
    """Process-wide counters; the service turns them into Prometheus metrics."""

    frames: int = 0
    pongs: int = 0
    price_changes: int = 0
    entries: int = 0
    bbo_passed: int = 0
    bbo_failed: int = 0
    hash_passed: int = 0
    hash_failed: int = 0
    hash_explained: int = 0
    bytes: int = 0
    events: dict[str, int] = field(default_factory=dict)
    decode_errors: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    untracked: int = 0
    ignored_old: int = 0
    transitions: dict[tuple[str, str], int] = field(default_factory=dict)
    resyncs: dict[str, int] = field(default_factory=dict)
    checks: dict[tuple[str, str], int] = field(default_factory=dict)
    """Other checks (best_bid_ask events), by (check, result)."""
    lags_ns: list[int] = field(default_factory=list)

    def count(self, table: dict[str, int], key: str, amount: int = 1) -> None:
        table[key] = table.get(key, 0) + amount


Outbox = deque[tuple[str, Event, str]]
"""(subject, event, msg id) waiting to be published, in order."""


class IngestEngine:
    """Verified books for many assets. Feed frames; drain :attr:`outbox` and :attr:`actions`."""

    def __init__(
        self,
        subjects: Subjects,
        partitions: int,
        settings: IngestSettings,
        *,
        auto_track: bool = False,
        source: str = "ingest",
    ) -> None:
        self.subjects = subjects
        self.partitions = partitions
        self.settings = settings
        self.auto_track = auto_track
        """Track every asset seen in a frame (replay of a capture with no market list)."""
        self.source = source
        self.tracks: dict[str, AssetTrack] = {}
        self.markets: dict[str, MarketInfo] = {}
        self.outbox: Outbox = deque()
        self.actions: deque[Action] = deque()
        self.stats = EngineStats()
        self.on_new_market: Callable[[PolymarketNewMarket], None] | None = None
        self.on_output: Callable[[], None] | None = None
        """Called when the outbox goes from empty to non-empty (wakes the publisher)."""
        self._open: list[AssetTrack] = []
        self._suspects: set[AssetTrack] = set()
        self._crossed: set[AssetTrack] = set()
        self._awaiting: set[AssetTrack] = set()
        self._grace_ns = int(settings.mismatch_grace_s * NS_PER_S)
        self._crossed_grace_ns = int(settings.crossed_grace_s * NS_PER_S)
        self._snapshot_timeout_ns = int(settings.first_snapshot_timeout_s * NS_PER_S)
        self._hash_interval_ns = int(settings.hash_check_interval_s * NS_PER_S)
        self._snapshot_interval_ns = int(settings.snapshot_interval_s * NS_PER_S)
        self._last_epoch = 0
        self._dead_letter_subject = subjects.dead_letter(source)

    # == markets ==================================================================================
    def group_partition(self, condition_id: str) -> int:
        info = self.markets.get(condition_id)
        key = info.neg_risk_market_id if info is not None and info.neg_risk_market_id else ""
        return partition_of(key or condition_id, self.partitions)

    def track_market(self, info: MarketInfo, now_ns: int) -> list[str]:
        """Follow a market's assets (idempotent); returns the asset ids that are new."""
        self.markets[info.condition_id] = info
        partition = self.group_partition(info.condition_id)
        added: list[str] = []
        for outcome in info.outcomes:
            track = self.tracks.get(outcome.token_id)
            if track is None or track.state is State.CLOSED:
                track = AssetTrack(outcome.token_id, info.condition_id, partition, self.subjects)
                track.awaiting_since_ns = now_ns
                self.tracks[outcome.token_id] = track
                self._awaiting.add(track)
                added.append(outcome.token_id)
            if track.tick is None and info.tick_size:
                track.tick = info.tick_size
            if info.min_order_size:
                track.min_order_size = format_micros(info.min_order_size)
            track.neg_risk = info.neg_risk
        return added

    def untrack_market(self, condition_id: str, reason: str, now_ns: int) -> list[str]:
        """Stop following a market: its books close (``BookStatus`` closed) and are dropped."""
        info = self.markets.pop(condition_id, None)
        asset_ids = (
            [outcome.token_id for outcome in info.outcomes]
            if info is not None
            else [a for a, t in self.tracks.items() if t.condition_id == condition_id]
        )
        closed = []
        for asset_id in asset_ids:
            track = self.tracks.pop(asset_id, None)
            if track is None:
                continue
            self._discard_timers(track)
            track.batch_ts = -1
            track.batch_changes = []
            self._transition(track, State.CLOSED, "closed", reason, now_ns)
            track.book.clear()
            track.buffer = None
            self.actions.append(Action("unsubscribe", asset_id, reason))
            closed.append(asset_id)
        return closed

    def publish_market(self, info: MarketInfo) -> None:
        """Queue a MarketInfo on ``md.polymarket.<part>.market.<condition_id>``."""
        subject = self.subjects.market(self.group_partition(info.condition_id), info.condition_id)
        self._emit(subject, info, info.event_id)

    def _track(self, asset_id: str, condition_id: str, now_ns: int) -> AssetTrack | None:
        """The asset's track, auto-tracked in replay; None for an asset not followed."""
        track = self.tracks.get(asset_id)
        return track if track is not None else self._auto_track(asset_id, condition_id, now_ns)

    def _auto_track(self, asset_id: str, condition_id: str, now_ns: int) -> AssetTrack | None:
        if not self.auto_track:
            self.stats.untracked += 1
            return None
        track = AssetTrack(
            asset_id, condition_id, partition_of(condition_id, self.partitions), self.subjects
        )
        track.awaiting_since_ns = now_ns
        self.tracks[asset_id] = track
        return track

    # == frames ===================================================================================
    def on_frame(self, frame: bytes | str, recv_ns: int, *, flush: bool = True) -> None:
        """Process one WebSocket frame received at ``recv_ns``; never raises on bad input."""
        stats = self.stats
        stats.frames += 1
        stats.bytes += len(frame)
        if frame == "PONG" or frame == b"PONG":
            stats.pongs += 1
            stats.frames -= 1
            return
        events, rejected = decode_frame(frame)
        for bad in rejected:
            stats.decode_errors += 1
            self._dead_letter(bad.raw, bad.reason, recv_ns)
        for index, event in enumerate(events):
            try:
                self._apply(event, recv_ns)
            except Exception as error:
                # A well-formed element with an impossible value (or one this code did not
                # foresee): the asset's book cannot follow it, so it is resynced, and the
                # element is kept verbatim. Input never stops the ingest.
                reason = (
                    "invalid_value"
                    if isinstance(error, FixedPointError | ValueError)
                    else "processing_error"
                )
                stats.decode_errors += 1
                self._dead_letter(self._raw_of(frame, events, index, rejected), reason, recv_ns)
                self._invalidate(event, recv_ns)
        if events and stats.frames & 15 == 1:
            # Venue-to-local lag, sampled (1 frame in 16) to keep it off the hot path.
            stats.lags_ns.append(recv_ns - _event_ts_ns(events[0]))
            if len(stats.lags_ns) > 10_000:
                del stats.lags_ns[:5_000]
        if flush:
            self.flush(recv_ns)

    def _raw_of(
        self,
        frame: bytes | str,
        events: list[PolymarketMarketEvent],
        index: int,
        rejected: Sequence[object],
    ) -> str:
        if not rejected:
            elements = raw_elements(frame)
            if len(elements) == len(events):
                return elements[index]
        return msgspec.json.encode(events[index]).decode()

    def _apply(self, event: PolymarketMarketEvent, recv_ns: int) -> None:
        if isinstance(event, PolymarketPriceChange):
            self._on_price_change(event, recv_ns)
        elif isinstance(event, PolymarketBook):
            self._count("book")
            self._on_book(event, recv_ns, rest=False)
        elif isinstance(event, PolymarketLastTradePrice):
            self._count("last_trade_price")
            self._on_trade(event, recv_ns)
        elif isinstance(event, PolymarketTickSizeChange):
            self._count("tick_size_change")
            self._on_tick_size_change(event, recv_ns)
        elif isinstance(event, PolymarketBestBidAsk):
            self._count("best_bid_ask")
            self._on_best_bid_ask(event, recv_ns)
        elif isinstance(event, PolymarketNewMarket):
            self._count("new_market")
            if self.on_new_market is not None:
                self.on_new_market(event)
        else:
            self._count("market_resolved")
            self._on_market_resolved(event, recv_ns)

    def _count(self, kind: str, amount: int = 1) -> None:
        events = self.stats.events
        events[kind] = events.get(kind, 0) + amount

    def flush(self, now_ns: int) -> None:
        """End every open batch (the end of a frame): publish deltas, run the checks."""
        if self._open:
            # A track may be listed twice (a batch ended early, then a new one began) or be
            # already closed; closing is a no-op then.
            for track in self._open:
                if track.batch_ts >= 0:
                    self._close_batch(track, now_ns, definite=False)
            self._open.clear()

    # == price changes ============================================================================
    def _on_price_change(  # noqa: C901 - the per-entry hot path, inlined on purpose
        self, message: PolymarketPriceChange, recv_ns: int
    ) -> None:
        # The hot path (VENUE: ~99.7% of market data): keep per-entry work to dict lookups.
        entries = message.price_changes or message.entries()
        stats = self.stats
        stats.price_changes += 1
        stats.entries += len(entries)
        timestamp_text = message.timestamp
        timestamp = timestamp_ms(timestamp_text)
        tracks = self.tracks
        live = State.LIVE
        prices = _prices
        opened = self._open
        for entry in entries:
            track = tracks.get(entry.asset_id)
            if track is None:
                track = self._auto_track(entry.asset_id, message.market, recv_ns)
                if track is None:
                    continue
            side = entry.side
            price = prices.get(entry.price)
            if price is None:
                price = price_micros(entry.price)
            size = size_micros(entry.size)
            if track.suspect_reason and timestamp != track.suspect_ts:
                # The suspect batch is over for certain, and it ended wrong.
                self._go_stale(track, track.suspect_reason, recv_ns)
            if timestamp < track.last_book_ts:
                stats.ignored_old += 1
                continue
            if track.batch_ts != timestamp and track.state is live:
                if track.batch_ts < 0:
                    track.batch_ts = timestamp
                    track.batch_ts_text = timestamp_text
                    opened.append(track)
                else:
                    self._start_batch(track, timestamp, timestamp_text, recv_ns)
            if track.state is not live:
                self._park(track, timestamp, timestamp_text, parse_side(side), price, size, entry)
                continue
            if side == "BUY":
                track.book.set_bid(price, size)
                track.batch_changes.append(LevelChange("BUY", price, size))
            elif side == "SELL":
                track.book.set_ask(price, size)
                track.batch_changes.append(LevelChange("SELL", price, size))
            else:
                parse_side(side)  # raises: the element is dead-lettered
            track.batch_bid = entry.best_bid
            track.batch_ask = entry.best_ask
            track.batch_hash = entry.hash

    def _start_batch(
        self, track: AssetTrack, timestamp: int, timestamp_text: str, now_ns: int
    ) -> None:
        """A new timestamp for the asset: the previous batch has certainly ended."""
        if track.batch_ts >= 0:
            self._close_batch(track, now_ns, definite=True)
            if track.state is not State.LIVE:
                return
        track.batch_ts = timestamp
        track.batch_ts_text = timestamp_text
        self._open.append(track)

    def _park(
        self,
        track: AssetTrack,
        timestamp: int,
        timestamp_text: str,
        side: Side,
        price: int,
        size: int,
        entry: PolymarketPriceChangeEntry,
    ) -> None:
        """Keep an entry for an asset that is not live, for replay past a REST seed."""
        if track.state is State.CLOSED:
            return
        if track.buffer is None:
            track.buffer = deque(maxlen=self.settings.delta_buffer_max)
        track.buffer.append(
            _Buffered(
                timestamp,
                timestamp_text,
                side,
                price,
                size,
                entry.best_bid,
                entry.best_ask,
                entry.hash,
            )
        )
        track.counts.buffered += 1

    def _close_batch(  # noqa: C901 - the per-batch hot path, inlined on purpose
        self, track: AssetTrack, now_ns: int, *, definite: bool
    ) -> None:
        """End the asset's open batch: check it, then publish its delta (or go stale)."""
        timestamp = track.batch_ts
        if timestamp < 0:
            return
        changes = track.batch_changes
        track.batch_ts = -1
        track.batch_changes = []
        count = len(changes)
        counts = track.counts
        counts.entries += count
        if track.last_ts == timestamp:
            track.last_ts_entries += count
        else:
            track.last_ts = timestamp
            track.last_ts_entries = count
        book = track.book
        best_bid, best_ask = book.best_bid, book.best_ask
        # The best bid/ask check, inline: it runs for every batch.
        failure = ""
        bid_text, ask_text = track.batch_bid, track.batch_ask
        if bid_text or ask_text:
            expected_bid = None if bid_text == "0" else _prices.get(bid_text)
            expected_ask = None if ask_text == "1" else _prices.get(ask_text)
            if expected_bid is None and bid_text != "0":
                expected_bid = price_micros(bid_text)
            if expected_ask is None and ask_text != "1":
                expected_ask = price_micros(ask_text)
            if best_bid != expected_bid or best_ask != expected_ask:
                counts.bbo_failed += 1
                self.stats.bbo_failed += 1
                failure = "bbo_mismatch"
            else:
                counts.bbo_passed += 1
                self.stats.bbo_passed += 1
        if failure:
            pass
        elif track.batch_hash and (
            not self._hash_interval_ns
            or now_ns - track.last_hash_check_ns >= self._hash_interval_ns
        ):
            failure = self._check_hash(track, changes, now_ns)
        else:
            counts.hash_skipped += 1
        if failure:
            if definite:
                self._go_stale(track, failure, now_ns)
                return
            if not track.suspect_reason:
                track.suspect_since_ns = now_ns
            track.suspect_reason = failure
            track.suspect_ts = timestamp
            self._suspects.add(track)
        elif track.suspect_reason:
            track.suspect_reason = ""
            self._suspects.discard(track)
        if track.crossed_since_ns or (
            best_bid is not None and best_ask is not None and best_bid >= best_ask
        ):
            self._watch_crossing(track, now_ns)
        seq = track.seq = track.seq + 1
        counts.deltas += 1
        event_id = f"pm.delta.{track.asset_id}.{timestamp}.{track.last_ts_entries}"
        delta = BookDelta(
            event_id=event_id,
            ts_event=timestamp * NS_PER_MS,
            ts_init=now_ns,
            asset_id=track.asset_id,
            condition_id=track.condition_id,
            seq=seq,
            epoch=track.epoch,
            changes=tuple(changes),
            best_bid=best_bid,
            best_ask=best_ask,
        )
        outbox = self.outbox
        outbox.append((track.delta_subject, delta, event_id))
        if len(outbox) == 1 and self.on_output is not None:
            self.on_output()

    def _end_batch_early(self, track: AssetTrack, now_ns: int) -> None:
        """End the open batch before another kind of event for the asset is applied."""
        if track.batch_ts >= 0:
            self._close_batch(track, now_ns, definite=False)

    def _watch_crossing(self, track: AssetTrack, now_ns: int) -> None:
        if track.book.crossed:
            if not track.crossed_since_ns:
                track.crossed_since_ns = now_ns
                self._crossed.add(track)
        elif track.crossed_since_ns:
            track.crossed_since_ns = 0
            self._crossed.discard(track)

    def _check_hash(self, track: AssetTrack, changes: list[LevelChange], now_ns: int) -> str:
        """The venue hash check, where its inputs are known; "" or the failure reason."""
        counts = track.counts
        stats = self.stats
        expected = track.batch_hash
        if not track.hash_inputs_known():
            counts.hash_skipped += 1
            return ""
        track.last_hash_check_ns = now_ns
        if track.venue_hash(track.batch_ts_text) == expected:
            track.hash_verified = True
            counts.hash_passed += 1
            stats.hash_passed += 1
            return ""
        # A trade printed in this batch changes the hash's last_trade_price input before its
        # last_trade_price message reaches us (VENUE H6): try the prices this batch touched.
        assert track.tick is not None
        tick = track.tick
        for price in _trade_candidates(changes):
            text = format_last_trade_price(price, tick)
            if track.venue_hash(track.batch_ts_text, last_trade_price=text) == expected:
                track.last_trade_price = price
                track.last_trade_known = True
                track.hash_verified = True
                counts.hash_explained_by_trade += 1
                stats.hash_explained += 1
                return ""
        if not track.hash_verified:
            # The last snapshot's hash did not reproduce either: the rule or an input is
            # unknown, so a mismatch says nothing about the book. The next match re-arms it.
            counts.hash_skipped += 1
            return ""
        counts.hash_failed += 1
        stats.hash_failed += 1
        return "hash_mismatch"

    # == snapshots ================================================================================
    def _on_book(
        self, message: PolymarketBook | PolymarketOrderBookSummary, recv_ns: int, *, rest: bool
    ) -> None:
        track = self._track(message.asset_id, message.market, recv_ns)
        if track is None:
            return
        if track.state is State.CLOSED:
            return
        timestamp = timestamp_ms(message.timestamp)
        # The snapshot supersedes whatever the open batch left: check it, but let the
        # snapshot (not a resync) repair a failure.
        self._end_batch_early(track, recv_ns)
        if timestamp < track.last_book_ts or (rest and track.state is State.LIVE):
            self.stats.ignored_old += 1
            return
        self._replace_book(track, message)
        track.last_book_ts = timestamp
        if rest:
            track.counts.rest_books += 1
        else:
            track.counts.books += 1
        self._verify_snapshot_hash(track, message)
        self._book_live(track, message, timestamp, recv_ns, rest=rest)

    def _replace_book(
        self, track: AssetTrack, message: PolymarketBook | PolymarketOrderBookSummary
    ) -> None:
        bids = [(price_micros(level.price), parse_size(level.size)) for level in message.bids]
        asks = [(price_micros(level.price), parse_size(level.size)) for level in message.asks]
        if message.tick_size:
            track.tick = parse_tick_size(message.tick_size)
        if message.min_order_size:
            track.min_order_size = format_micros(parse_size(message.min_order_size))
        if message.neg_risk is not None and (message.neg_risk or track.neg_risk is None):
            track.neg_risk = message.neg_risk
        if message.last_trade_price:
            track.last_trade_price = price_micros(message.last_trade_price)
            track.last_trade_known = True
        elif message.tick_size:
            # A full snapshot (it has a tick size) with no last trade: none printed yet. The
            # book the venue re-sends after a trade has neither; it keeps what we know.
            track.last_trade_price = None
            track.last_trade_known = True
        track.book.replace(bids, asks)

    def _book_live(
        self,
        track: AssetTrack,
        message: PolymarketBook | PolymarketOrderBookSummary,
        timestamp: int,
        recv_ns: int,
        *,
        rest: bool,
    ) -> None:
        """Publish the new snapshot; the book is live (again) from here."""
        # Entries buffered while the book was not live: a venue book on the socket supersedes
        # them (they came before it); a REST seed is older than the socket, so replay the
        # entries newer than its timestamp.
        buffered = track.buffer
        track.buffer = None
        was_live = track.state is State.LIVE
        self._clear_problem(track)
        if not was_live:
            self._new_epoch(track, recv_ns)
        track.seq += 1
        reason = "rest_seed" if rest else "snapshot"
        snapshot = self._snapshot_event(
            track,
            event_id=f"pm.{'rest' if rest else 'book'}.{track.asset_id}.{timestamp}."
            f"{message.hash or track.seq}",
            ts_event=timestamp * NS_PER_MS,
            now_ns=recv_ns,
            venue_hash=message.hash,
        )
        self._emit(track.book_subject, snapshot, snapshot.event_id)
        track.last_ts = timestamp
        track.last_ts_entries = 0
        if not was_live:
            self._transition(track, State.LIVE, "live", reason, recv_ns)
        self._schedule_snapshot(track, recv_ns)
        if rest and buffered:
            self._replay_buffer(track, [b for b in buffered if b.timestamp > timestamp], recv_ns)

    def _verify_snapshot_hash(
        self, track: AssetTrack, message: PolymarketBook | PolymarketOrderBookSummary
    ) -> None:
        """Is the venue's hash of this snapshot reproducible? Learn unknown inputs from it."""
        track.hash_verified = False
        if not message.hash or track.tick is None or not track.last_trade_known:
            return
        sizes = (track.min_order_size,) if track.min_order_size else _MIN_ORDER_SIZE_CANDIDATES
        flags = (track.neg_risk,) if track.neg_risk is not None else (False, True)
        for size in sizes:
            for flag in flags:
                if track.venue_hash(message.timestamp, min_order_size=size, neg_risk=flag) == (
                    message.hash
                ):
                    track.min_order_size = size
                    track.neg_risk = flag
                    track.hash_verified = True
                    return

    def _replay_buffer(self, track: AssetTrack, entries: list[_Buffered], now_ns: int) -> None:
        for entry in entries:
            if track.state is not State.LIVE:
                return
            if track.batch_ts != entry.timestamp:
                self._start_batch(track, entry.timestamp, entry.timestamp_text, now_ns)
                if track.state is not State.LIVE:
                    return
            track.book.set_level(entry.side, entry.price, entry.size)
            track.batch_changes.append(LevelChange(entry.side, entry.price, entry.size))
            track.batch_bid = entry.best_bid
            track.batch_ask = entry.best_ask
            track.batch_hash = entry.hash

    def on_rest_book(self, summary: PolymarketOrderBookSummary, recv_ns: int) -> None:
        """A REST ``/book`` seed for an asset whose socket did not deliver a snapshot."""
        try:
            self._on_book(summary, recv_ns, rest=True)
        except (FixedPointError, ValueError):
            self.stats.decode_errors += 1
            self._dead_letter(msgspec.json.encode(summary).decode(), "invalid_value", recv_ns)
        self.flush(recv_ns)

    def snapshot(self, asset_id: str, now_ns: int) -> BookSnapshot | BookStatus | None:
        """The current book as a snapshot for a request/reply (not published; seq unchanged),
        the asset's status if it is not live, or None for an asset this engine does not own."""
        track = self.tracks.get(asset_id)
        if track is None:
            return None
        if track.state is not State.LIVE:
            return BookStatus(
                event_id=f"pm.status.{asset_id}.{track.epoch}.{track.seq}",
                ts_event=now_ns,
                ts_init=now_ns,
                asset_id=asset_id,
                condition_id=track.condition_id,
                seq=track.seq,
                epoch=track.epoch,
                status=_STATUS_OF[track.state],
                reason="not_live",
            )
        return self._snapshot_event(
            track,
            event_id=f"pm.snap.{asset_id}.{track.epoch}.{track.seq}",
            ts_event=max(track.last_ts, 0) * NS_PER_MS,
            now_ns=now_ns,
            venue_hash="",
        )

    def _snapshot_event(
        self, track: AssetTrack, *, event_id: str, ts_event: int, now_ns: int, venue_hash: str
    ) -> BookSnapshot:
        bids, asks = track.book.levels()
        return BookSnapshot(
            event_id=event_id,
            ts_event=ts_event,
            ts_init=now_ns,
            asset_id=track.asset_id,
            condition_id=track.condition_id,
            seq=track.seq,
            epoch=track.epoch,
            bids=bids,
            asks=asks,
            tick_size=track.tick or 0,
            min_order_size=_size_or_zero(track.min_order_size),
            venue_hash=venue_hash,
        )

    def _schedule_snapshot(self, track: AssetTrack, now_ns: int) -> None:
        if self._snapshot_interval_ns:
            track.next_snapshot_ns = now_ns + self._snapshot_interval_ns

    # == other venue events =======================================================================
    def _on_trade(self, message: PolymarketLastTradePrice, recv_ns: int) -> None:
        track = self._track(message.asset_id, message.market, recv_ns)
        if track is None:
            return
        price = price_micros(message.price)
        size = parse_size(message.size)
        side = parse_side(message.side)
        timestamp = timestamp_ms(message.timestamp)
        fee = int(message.fee_rate_bps) if message.fee_rate_bps.isdigit() else 0
        track.last_trade_price = price
        track.last_trade_known = True
        track.counts.trades += 1
        identity = message.transaction_hash or f"{message.price}.{message.size}.{side}"
        trade = Trade(
            event_id=f"pm.trade.{track.asset_id}.{timestamp}.{identity}",
            ts_event=timestamp * NS_PER_MS,
            ts_init=recv_ns,
            asset_id=track.asset_id,
            condition_id=track.condition_id,
            seq=track.seq,
            epoch=track.epoch,
            price=price,
            size=size,
            side=side,
            fee_rate_bps=fee,
        )
        self._emit(track.trade_subject, trade, trade.event_id)

    def _on_tick_size_change(self, message: PolymarketTickSizeChange, recv_ns: int) -> None:
        track = self._track(message.asset_id, message.market, recv_ns)
        if track is None:
            return
        new_tick = parse_tick_size(message.new_tick_size)
        old_tick = parse_tick_size(message.old_tick_size)
        timestamp = timestamp_ms(message.timestamp)
        self._end_batch_early(track, recv_ns)
        track.tick = new_tick
        track.counts.tick_changes += 1
        track.seq += 1
        event = TickSizeChanged(
            event_id=f"pm.tick.{track.asset_id}.{timestamp}.{message.new_tick_size}",
            ts_event=timestamp * NS_PER_MS,
            ts_init=recv_ns,
            asset_id=track.asset_id,
            condition_id=track.condition_id,
            seq=track.seq,
            epoch=track.epoch,
            old_tick_size=old_tick,
            new_tick_size=new_tick,
        )
        self._emit(track.status_subject, event, event.event_id)

    def _on_best_bid_ask(self, message: PolymarketBestBidAsk, recv_ns: int) -> None:
        track = self.tracks.get(message.asset_id)
        if track is None or track.state is not State.LIVE:
            return
        timestamp = timestamp_ms(message.timestamp)
        if track.batch_ts >= 0 and track.batch_ts != timestamp:
            self._end_batch_early(track, recv_ns)
        if track.batch_ts >= 0:
            return  # the batch of the same instant carries the same best bid/ask
        book = track.book
        checks = self.stats.checks
        if book.best_bid == bbo_price(message.best_bid, "0") and book.best_ask == bbo_price(
            message.best_ask, "1"
        ):
            checks[("best_bid_ask", "pass")] = checks.get(("best_bid_ask", "pass"), 0) + 1
            return
        checks[("best_bid_ask", "fail")] = checks.get(("best_bid_ask", "fail"), 0) + 1
        # Its order relative to the price_change of the same instant is not guaranteed: a
        # mismatch is only suspect until the asset's next batch confirms or clears it.
        if not track.suspect_reason:
            track.suspect_since_ns = recv_ns
            track.suspect_reason = "bbo_mismatch"
            track.suspect_ts = timestamp
            self._suspects.add(track)

    def _on_market_resolved(self, message: PolymarketMarketResolved, recv_ns: int) -> None:
        timestamp = timestamp_ms(message.timestamp)
        resolved = MarketResolved(
            event_id=f"pm.resolved.{message.market}",
            ts_event=timestamp * NS_PER_MS,
            ts_init=recv_ns,
            condition_id=message.market,
            winning_asset_id=message.winning_asset_id,
            winning_outcome=message.winning_outcome,
        )
        partition = self.group_partition(message.market)
        self._emit(self.subjects.market(partition, message.market), resolved, resolved.event_id)
        if message.market in self.markets or any(a in self.tracks for a in message.assets_ids):
            self.untrack_market(message.market, "resolved", recv_ns)

    def _invalidate(self, event: PolymarketMarketEvent, now_ns: int) -> None:
        asset_ids: Iterable[str]
        if isinstance(event, PolymarketPriceChange):
            asset_ids = {entry.asset_id for entry in event.entries()}
        else:
            asset_ids = [getattr(event, "asset_id", "")]
        for asset_id in asset_ids:
            track = self.tracks.get(asset_id)
            if track is not None and track.state is State.LIVE:
                if track.batch_ts >= 0:
                    self._close_batch(track, now_ns, definite=True)
                if track.state is State.LIVE:
                    self._go_stale(track, "invalid_value", now_ns)

    # == state changes ============================================================================
    def _new_epoch(self, track: AssetTrack, now_ns: int) -> None:
        # Epochs only grow, across restarts too (they start at the wall clock), so a consumer
        # can tell a rebuilt book from an old one.
        epoch = max(now_ns, self._last_epoch + 1)
        self._last_epoch = epoch
        track.epoch = epoch
        track.seq = 0

    def _transition(
        self, track: AssetTrack, state: State, status: BookState, reason: str, now_ns: int
    ) -> None:
        track.state = state
        track.seq += 1
        key = (status, reason)
        self.stats.transitions[key] = self.stats.transitions.get(key, 0) + 1
        event = BookStatus(
            event_id=f"pm.status.{track.asset_id}.{track.epoch}.{track.seq}",
            ts_event=now_ns,
            ts_init=now_ns,
            asset_id=track.asset_id,
            condition_id=track.condition_id,
            seq=track.seq,
            epoch=track.epoch,
            status=status,
            reason=reason,
        )
        self._emit(track.status_subject, event, event.event_id)

    def _go_stale(
        self, track: AssetTrack, reason: str, now_ns: int, *, resubscribe: bool = True
    ) -> None:
        """The book can no longer be trusted: say so, drop it, ask for a resync."""
        if track.state is State.CLOSED:
            return
        if track.batch_ts >= 0:
            track.batch_ts = -1
            track.batch_changes = []
        self._clear_problem(track)
        track.book.clear()
        track.hash_verified = False
        track.counts.stale += 1
        if track.state is State.LIVE:
            self._transition(track, State.STALE, "stale", reason, now_ns)
        else:
            track.state = State.STALE
        track.awaiting_since_ns = now_ns
        track.resubscribes = 0
        track.rest_requested = False
        self._awaiting.add(track)
        if resubscribe:
            self._request(track, "resubscribe", reason)

    def _clear_problem(self, track: AssetTrack) -> None:
        track.suspect_reason = ""
        track.crossed_since_ns = 0
        self._suspects.discard(track)
        self._crossed.discard(track)
        self._awaiting.discard(track)
        track.resubscribes = 0
        track.rest_requested = False

    def _discard_timers(self, track: AssetTrack) -> None:
        self._suspects.discard(track)
        self._crossed.discard(track)
        self._awaiting.discard(track)

    def _request(self, track: AssetTrack, kind: ActionKind, reason: str) -> None:
        track.counts.resyncs += 1
        self.stats.resyncs[f"{kind}:{reason}"] = self.stats.resyncs.get(f"{kind}:{reason}", 0) + 1
        self.actions.append(Action(kind, track.asset_id, reason))

    def mark_stale(
        self, asset_ids: Iterable[str], reason: str, now_ns: int, *, resubscribe: bool = False
    ) -> None:
        """Books from a socket that died or stalled: not to be trusted until a new snapshot."""
        for asset_id in asset_ids:
            track = self.tracks.get(asset_id)
            if track is None or track.state is State.CLOSED:
                continue
            if track.state is State.LIVE:
                self._go_stale(track, reason, now_ns, resubscribe=resubscribe)
            else:
                track.awaiting_since_ns = now_ns
                self._awaiting.add(track)

    def subscribed(self, asset_ids: Iterable[str], now_ns: int) -> None:
        """The socket (re)subscribed these assets: their snapshot deadline starts now."""
        for asset_id in asset_ids:
            track = self.tracks.get(asset_id)
            if track is not None and track.state in (State.NEEDS_SNAPSHOT, State.STALE):
                track.awaiting_since_ns = now_ns
                self._awaiting.add(track)

    # == timers ===================================================================================
    def tick(self, now_ns: int) -> None:
        """Run the timers: suspect/crossed grace, snapshot deadlines, periodic snapshots."""
        for track in list(self._suspects):
            if now_ns - track.suspect_since_ns >= self._grace_ns:
                self._go_stale(track, track.suspect_reason, now_ns)
        for track in list(self._crossed):
            if now_ns - track.crossed_since_ns >= self._crossed_grace_ns:
                self._go_stale(track, "crossed", now_ns)
        self._tick_deadlines(now_ns)
        if self._snapshot_interval_ns:
            self._tick_snapshots(now_ns)

    def _tick_deadlines(self, now_ns: int) -> None:
        for track in list(self._awaiting):
            if now_ns - track.awaiting_since_ns < self._snapshot_timeout_ns:
                continue
            track.awaiting_since_ns = now_ns
            if track.resubscribes < self.settings.resubscribe_attempts:
                track.resubscribes += 1
                self._request(track, "resubscribe", "snapshot_timeout")
            elif not track.rest_requested:
                track.rest_requested = True
                self._request(track, "rest_seed", "snapshot_timeout")
            else:
                # Neither the socket nor REST produced a book: start the cycle again.
                track.resubscribes = 0
                track.rest_requested = False

    def _tick_snapshots(self, now_ns: int) -> None:
        for track in self.tracks.values():
            due = now_ns >= track.next_snapshot_ns
            if due and track.state is State.LIVE and track.batch_ts < 0:
                track.seq += 1
                snapshot = self._snapshot_event(
                    track,
                    event_id=f"pm.snap.{track.asset_id}.{track.epoch}.{track.seq}",
                    ts_event=max(track.last_ts, 0) * NS_PER_MS,
                    now_ns=now_ns,
                    venue_hash="",
                )
                self._emit(track.book_subject, snapshot, snapshot.event_id)
                track.next_snapshot_ns = now_ns + self._snapshot_interval_ns

    # == output ===================================================================================
    def _emit(self, subject: str, event: Event, msg_id: str) -> None:
        outbox = self.outbox
        outbox.append((subject, event, msg_id))
        if len(outbox) == 1 and self.on_output is not None:
            self.on_output()

    def _dead_letter(self, raw: str, reason: str, now_ns: int) -> None:
        self.stats.count(self.stats.dead_letters, reason)
        digest = hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()
        letter = DeadLetter(
            event_id=f"dlq.{self.source}.{digest}",
            ts_event=now_ns,
            ts_init=now_ns,
            source=self.source,
            reason=reason,
            raw=raw,
        )
        self._emit(self._dead_letter_subject, letter, letter.event_id)

    # == inspection ===============================================================================
    def states(self) -> dict[str, int]:
        counts = {state.value: 0 for state in State}
        for track in self.tracks.values():
            counts[track.state.value] += 1
        return counts


_STATUS_OF: dict[State, BookState] = {
    State.NEEDS_SNAPSHOT: "resyncing",
    State.LIVE: "live",
    State.STALE: "stale",
    State.CLOSED: "closed",
}


def _trade_candidates(changes: list[LevelChange]) -> list[int]:
    seen: dict[int, None] = {}
    for change in reversed(changes):
        seen.setdefault(change.price, None)
        seen.setdefault(MICROS - change.price, None)
    return list(seen)


def _size_or_zero(text: str | None) -> int:
    if not text:
        return 0
    try:
        return parse_size(text)
    except FixedPointError:
        return 0


def _event_ts_ns(event: PolymarketMarketEvent) -> int:
    text = event.timestamp
    return int(text) * NS_PER_MS if text.isdigit() else 0
