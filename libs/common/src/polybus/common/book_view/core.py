"""The book view's pure core: market-data events in, verified books out. No I/O.

A :class:`BookView` keeps, per asset, an :class:`~polybus.common.book.OrderBook` rebuilt from
the ingest's events, with the facts a trader needs beside it (state, tick size, minimum order
size, last trade, the market it belongs to). The live feed (:mod:`.feed`), a store replay and a
backtest all drive it through :meth:`BookView.apply`, which says what happened so the caller
can react.

Sequencing (DESIGN §3): every book event of an asset (snapshot, delta, status, tick change)
carries ``seq`` + 1 within an ``epoch``. Events at or below the asset's last applied position
are old and ignored. The next ``seq`` of the same epoch is applied. Anything else - a gap, or
a new epoch that does not start with a snapshot - means events were lost: the asset is
RESYNCING (untradeable) and :meth:`BookView.apply` returns ``NEEDS_REBUILD`` once, so the caller
fetches a snapshot. Events arriving meanwhile are buffered; a snapshot newer than what the
asset has rebases the book, and the buffered events after it are replayed (older ones are
dropped). A gap still left among them asks for another rebuild.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from polybus.common.book import OrderBook
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    MarketDataStreamEvent,
    MarketInfo,
    MarketResolved,
    TickSizeChanged,
    Trade,
)

SequencedEvent = BookSnapshot | BookDelta | BookStatus | TickSizeChanged
"""The events that carry the asset's next ``seq`` (trades repeat the current one)."""

MAX_BUFFERED = 10_000
"""Events held per asset while it waits for a snapshot. Past this the oldest go: the replay
then finds a gap and asks for another snapshot, which is cheaper than unbounded memory."""


class AssetState(enum.Enum):
    """Where an asset's book stands. Only LIVE is tradeable."""

    NEEDS_SNAPSHOT = "needs_snapshot"
    """Nothing applied yet: waiting for the first snapshot."""
    LIVE = "live"
    RESYNCING = "resyncing"
    """Events were lost (a ``seq`` gap, a new epoch), or the ingest is resyncing: waiting for
    a snapshot at or after the gap."""
    STALE = "stale"
    """The ingest no longer trusts its book; it publishes a new epoch when it has one."""
    CLOSED = "closed"
    """The ingest stopped following the asset (market resolved or unsubscribed)."""


_STATE_OF_STATUS = {
    "live": AssetState.LIVE,
    "stale": AssetState.STALE,
    "resyncing": AssetState.RESYNCING,
    "closed": AssetState.CLOSED,
}


class Applied(enum.Enum):
    """What :meth:`BookView.apply` did with an event."""

    UPDATED = "updated"
    """The book or a fact beside it (tick, last trade, market) changed."""
    STATE_CHANGED = "state_changed"
    """The asset's state changed (the book may have changed with it)."""
    UNCHANGED = "unchanged"
    """In sequence and applied, but nothing a reader sees changed (a repeated status)."""
    NEEDS_REBUILD = "needs_rebuild"
    """Events were lost: fetch a snapshot of this asset. Returned once per rebuild."""
    BUFFERED = "buffered"
    """Held until the snapshot the asset is waiting for."""
    IGNORED = "ignored"
    """Older than what the asset already has (a duplicate or a late event)."""


@dataclass(slots=True)
class AssetBook:
    """One asset's book and the facts beside it. Read it; only :class:`BookView` writes it.

    ``book`` is the last known book whatever the state; trade only when ``state`` is LIVE.
    """

    asset_id: str
    condition_id: str = ""
    book: OrderBook = field(default_factory=OrderBook)
    state: AssetState = AssetState.NEEDS_SNAPSHOT
    reason: str = ""
    """Why the state is what it is (the ingest's status reason, ``seq_gap``, ``new_epoch``)."""
    epoch: int = 0
    seq: int = 0
    """Position of the last applied book event; 0/0 before the first snapshot."""
    tick_size: int = 0
    min_order_size: int = 0
    last_trade: Trade | None = None
    updated_ns: int = 0
    """``ts_init`` of the last applied event (the ingest's clock, so a replay is deterministic)."""
    rebuild_requested: bool = False
    buffered: deque[SequencedEvent] = field(default_factory=lambda: deque(maxlen=MAX_BUFFERED))

    @property
    def tradeable(self) -> bool:
        return self.state is AssetState.LIVE


@dataclass(slots=True)
class BookViewStats:
    """Counts a caller may export as metrics or assert on in tests."""

    applied: int = 0
    ignored: int = 0
    buffered: int = 0
    gaps: int = 0
    """Times an asset found events missing and asked for a rebuild."""
    rebuilds: int = 0
    """Snapshots that ended a rebuild (the book is LIVE again)."""


class BookView:
    """Every followed asset's book, tick, minimum size, state and market. No I/O.

    Feed it market-data events in the order they were published with :meth:`apply`; read it
    with :meth:`book`, :meth:`state`, :meth:`tradeable`, :meth:`tick`, :meth:`min_size`,
    :meth:`market` and :meth:`assets`. Prices and sizes are micro-unit ints.
    """

    def __init__(self) -> None:
        self._assets: dict[str, AssetBook] = {}
        self._markets: dict[str, MarketInfo] = {}
        self._resolutions: dict[str, MarketResolved] = {}
        self.stats = BookViewStats()

    # -- reading -----------------------------------------------------------------------------
    def asset(self, asset_id: str) -> AssetBook | None:
        """Everything known about one asset, or None if nothing arrived for it."""
        return self._assets.get(asset_id)

    def book(self, asset_id: str) -> OrderBook | None:
        """The asset's book (the last known one unless :meth:`tradeable`), or None."""
        asset = self._assets.get(asset_id)
        return asset.book if asset is not None else None

    def state(self, asset_id: str) -> AssetState:
        """The asset's state; NEEDS_SNAPSHOT for an asset nothing arrived for."""
        asset = self._assets.get(asset_id)
        return asset.state if asset is not None else AssetState.NEEDS_SNAPSHOT

    def tradeable(self, asset_id: str) -> bool:
        """True when the asset's book is LIVE: complete, in sequence and trusted by the ingest."""
        asset = self._assets.get(asset_id)
        return asset is not None and asset.state is AssetState.LIVE

    def tick(self, asset_id: str) -> int:
        """The asset's current tick size in micro-units (0 if unknown)."""
        asset = self._assets.get(asset_id)
        return asset.tick_size if asset is not None else 0

    def min_size(self, asset_id: str) -> int:
        """The asset's minimum order size in micro-units (0 if unknown)."""
        asset = self._assets.get(asset_id)
        return asset.min_order_size if asset is not None else 0

    def market(self, condition_id: str) -> MarketInfo | None:
        """The latest :class:`MarketInfo` of a market (outcomes, neg-risk group, fees)."""
        return self._markets.get(condition_id)

    def market_of(self, asset_id: str) -> MarketInfo | None:
        """The market an asset is an outcome of, once its MarketInfo arrived."""
        asset = self._assets.get(asset_id)
        return self._markets.get(asset.condition_id) if asset is not None else None

    def resolution(self, condition_id: str) -> MarketResolved | None:
        return self._resolutions.get(condition_id)

    def assets(self) -> Iterator[str]:
        """Every asset the view knows, in the order it first heard of them."""
        return iter(self._assets)

    def markets(self) -> Iterator[MarketInfo]:
        return iter(self._markets.values())

    def rebuilds_pending(self) -> list[str]:
        """Assets waiting for a snapshot because events were lost (ask again if one failed)."""
        return [a.asset_id for a in self._assets.values() if a.rebuild_requested]

    # -- writing -----------------------------------------------------------------------------
    def apply(self, event: MarketDataStreamEvent) -> Applied:
        """Apply one market-data event; say what happened (see :class:`Applied`)."""
        # Deltas are nearly every event: test for them first.
        if isinstance(event, BookDelta | BookStatus | TickSizeChanged | BookSnapshot):
            asset = self._assets.get(event.asset_id)
            if asset is None:
                asset = self._new_asset(event.asset_id, event.condition_id)
            return self._apply_sequenced(asset, event)
        if isinstance(event, Trade):
            return self._apply_trade(event)
        if isinstance(event, MarketInfo):
            return self._apply_market(event)
        self._resolutions[event.condition_id] = event
        return Applied.UPDATED

    def apply_snapshot_reply(self, reply: BookSnapshot | BookStatus) -> Applied:
        """Apply the ingest's answer to a snapshot request.

        A snapshot goes through :meth:`apply`. A status means the ingest has no live book
        (its ``seq`` is its current one, not a next one): the asset takes that state, keeps
        waiting, and is rebuilt by the new epoch the ingest publishes once it has a book.
        """
        if isinstance(reply, BookSnapshot):
            return self.apply(reply)
        asset = self._assets.get(reply.asset_id)
        if asset is None or (reply.epoch, reply.seq) < (asset.epoch, asset.seq):
            self.stats.ignored += 1
            return Applied.IGNORED
        asset.rebuild_requested = False
        return self._set_state(asset, _STATE_OF_STATUS[reply.status], reply.reason)

    def _new_asset(self, asset_id: str, condition_id: str) -> AssetBook:
        asset = AssetBook(asset_id, condition_id)
        market = self._markets.get(condition_id)
        if market is not None:
            asset.tick_size = market.tick_size
            asset.min_order_size = market.min_order_size
        self._assets[asset_id] = asset
        return asset

    def _apply_sequenced(self, asset: AssetBook, event: SequencedEvent) -> Applied:
        stats = self.stats
        epoch, seq = event.epoch, event.seq
        if epoch == asset.epoch and seq == asset.seq + 1 and not asset.rebuild_requested:
            stats.applied += 1
            return self._apply_in_sequence(asset, event)
        if epoch < asset.epoch or (epoch == asset.epoch and seq <= asset.seq):
            stats.ignored += 1
            return Applied.IGNORED
        if isinstance(event, BookSnapshot):
            stats.applied += 1
            return self._rebase(asset, event)
        # Events are missing before this one: hold it until a snapshot covers the gap.
        asset.buffered.append(event)
        stats.buffered += 1
        if asset.rebuild_requested:
            return Applied.BUFFERED
        asset.rebuild_requested = True
        stats.gaps += 1
        if asset.state is not AssetState.NEEDS_SNAPSHOT:
            reason = "new_epoch" if epoch != asset.epoch else "seq_gap"
            self._set_state(asset, AssetState.RESYNCING, reason)
        return Applied.NEEDS_REBUILD

    def _apply_in_sequence(self, asset: AssetBook, event: SequencedEvent) -> Applied:
        asset.seq = event.seq
        asset.updated_ns = event.ts_init
        if isinstance(event, BookDelta):
            asset.book.apply_delta(event)
            return Applied.UPDATED
        if isinstance(event, BookStatus):
            return self._set_state(asset, _STATE_OF_STATUS[event.status], event.reason)
        if isinstance(event, TickSizeChanged):
            asset.tick_size = event.new_tick_size
            return Applied.UPDATED
        # A snapshot in sequence: the ingest's periodic one.
        return self._take_snapshot(asset, event)

    def _rebase(self, asset: AssetBook, snapshot: BookSnapshot) -> Applied:
        """A snapshot newer than the book: start from it, then replay what came after it."""
        was_rebuilding = asset.rebuild_requested and asset.epoch != 0  # not a first snapshot
        asset.epoch = snapshot.epoch
        asset.seq = snapshot.seq
        asset.updated_ns = snapshot.ts_init
        asset.rebuild_requested = False
        self._take_snapshot(asset, snapshot)
        # The ingest publishes a snapshot only for a book it trusts.
        applied = (
            Applied.STATE_CHANGED
            if self._set_state(asset, AssetState.LIVE, "snapshot") is Applied.STATE_CHANGED
            else Applied.UPDATED
        )
        if was_rebuilding:
            self.stats.rebuilds += 1
        buffered = list(asset.buffered)
        asset.buffered.clear()
        for event in buffered:
            if self._apply_sequenced(asset, event) is Applied.STATE_CHANGED:
                applied = Applied.STATE_CHANGED
        if asset.rebuild_requested:
            return Applied.NEEDS_REBUILD  # still a gap after the snapshot: ask again
        return applied

    def _take_snapshot(self, asset: AssetBook, snapshot: BookSnapshot) -> Applied:
        asset.book.apply_snapshot(snapshot)
        if snapshot.tick_size:
            asset.tick_size = snapshot.tick_size
        if snapshot.min_order_size:
            asset.min_order_size = snapshot.min_order_size
        asset.condition_id = snapshot.condition_id or asset.condition_id
        return Applied.UPDATED

    def _set_state(self, asset: AssetBook, state: AssetState, reason: str) -> Applied:
        if state is asset.state:
            return Applied.UNCHANGED
        asset.state = state
        asset.reason = reason
        return Applied.STATE_CHANGED

    def _apply_trade(self, trade: Trade) -> Applied:
        asset = self._assets.get(trade.asset_id)
        if asset is None:
            asset = self._new_asset(trade.asset_id, trade.condition_id)
        if trade.epoch < asset.epoch:
            self.stats.ignored += 1
            return Applied.IGNORED
        asset.last_trade = trade
        return Applied.UPDATED

    def _apply_market(self, market: MarketInfo) -> Applied:
        self._markets[market.condition_id] = market
        for outcome in market.outcomes:
            asset = self._assets.get(outcome.token_id)
            if asset is None:
                continue
            # The book's own events (snapshot, tick change) are live; Gamma's figures only
            # fill in what they have not said yet.
            if not asset.tick_size:
                asset.tick_size = market.tick_size
            if not asset.min_order_size:
                asset.min_order_size = market.min_order_size
        return Applied.UPDATED
