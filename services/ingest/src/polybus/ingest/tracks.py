"""What the engine keeps per asset and for the whole process: states, counts, batch fields.

Data only; the behaviour lives in the engine's layers (``states``, ``batches``, ``snapshots``,
``engine``).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from polybus.common.events import BookState, Event, LevelChange, Side
from polybus.common.polymarket.book_hash import (
    HashedBook,
    format_last_trade_price,
    summary_head,
    summary_tail,
)
from polybus.common.subjects import Subjects
from polybus.ingest.normalize import price_text

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


class State(enum.Enum):
    NEEDS_SNAPSHOT = "needs_snapshot"
    LIVE = "live"
    STALE = "stale"
    CLOSED = "closed"


STATUS_OF: dict[State, BookState] = {
    State.NEEDS_SNAPSHOT: "resyncing",
    State.LIVE: "live",
    State.STALE: "stale",
    State.CLOSED: "closed",
}
"""The BookStatus a state is published as."""


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


class BufferedEntry(NamedTuple):
    """A ``price_change`` entry kept while its asset is not live."""

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
        "batch_last_ns",
        "batch_published",
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
        "hash_head",
        "hash_tail",
        "hash_tail_inputs",
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
        self.book = HashedBook()
        self.hash_head = summary_head(condition_id, asset_id)
        """The hash input's constant start (market, asset_id)."""
        self.hash_tail = b""
        self.hash_tail_inputs: tuple[str | None, int | None, bool | None, int | None] | None = None
        """What ``hash_tail`` was encoded from (min order size, tick, neg-risk, last trade
        price); None: not encoded yet. Compared on every hash, so the tail follows every
        writer of those fields."""
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
        """The venue timestamp of the open batch; -1: no batch open."""
        self.batch_ts_text = ""
        self.batch_changes: list[LevelChange] = []
        """Every change of the open batch (the hash check's trade candidates need them all)."""
        self.batch_published = 0
        """How many of ``batch_changes`` already went out in a BookDelta (at a frame's end)."""
        self.batch_last_ns = 0
        """Receive time of the last frame that added to the open batch (its quiet delay)."""
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
        self.buffer: deque[BufferedEntry] | None = None
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
        """The venue's hash of this book as it stands (VENUE §4.6; rule in book_hash). The book
        keeps its levels encoded and the tail is re-encoded only when its inputs change, so this
        is one join and one SHA-1: it runs on every batch. The keyword arguments replace an
        input for this hash only (candidates tried while learning or explaining a hash)."""
        if min_order_size is None and neg_risk is None and last_trade_price is None:
            inputs = (self.min_order_size, self.tick, self.neg_risk, self.last_trade_price)
            if inputs != self.hash_tail_inputs:
                self.hash_tail = self._hash_tail(None, None, None)
                self.hash_tail_inputs = inputs
            tail = self.hash_tail
        else:
            tail = self._hash_tail(min_order_size, neg_risk, last_trade_price)
        return self.book.venue_hash(self.hash_head, timestamp_text, tail)

    def _hash_tail(
        self, min_order_size: str | None, neg_risk: bool | None, last_trade_price: str | None
    ) -> bytes:
        tick = self.tick or 0
        return summary_tail(
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
    quiet_closes: int = 0
    """Batches ended by their quiet delay (no next timestamp or other event came first)."""
    lags_ns: list[int] = field(default_factory=list)

    def count(self, table: dict[str, int], key: str, amount: int = 1) -> None:
        table[key] = table.get(key, 0) + amount


Outbox = deque[tuple[str, Event, str]]
"""(subject, event, msg id) waiting to be published, in order."""
