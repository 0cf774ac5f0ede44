"""The ingest's core: venue frames in, verified books and polybus events out. No I/O.

The live service and ``polybus replay`` run exactly this code: the service feeds it frames
from its sockets, runs :meth:`IngestEngine.tick` on a timer and drains
:attr:`IngestEngine.outbox` (events to publish) and :attr:`IngestEngine.actions` (re-subscribe
/ REST seed / unsubscribe requests); replay feeds it a capture and reads the books at the end.

The engine is built in layers, one concern each, bottom up:

- ``tracks``: what is kept per asset (data only);
- ``states``: NEEDS_SNAPSHOT -> LIVE -> STALE (-> LIVE) or CLOSED, transitions, resync
  requests, snapshot deadlines;
- ``batches``: ``price_change`` entries, batches that may span frames, and their checks (best
  bid/ask, venue hash); deltas go out at each frame's end, checks run when the batch ends;
- ``snapshots``: venue snapshots in (socket and REST), ours out (periodic, request/reply);
- here: frame dispatch, the markets followed, the other venue events, the timers.

A book that stays crossed for ``crossed_grace_s`` is resynced (VENUE H8). Every book event
(snapshot, delta, status, tick change) gets the asset's next ``seq``; a new ``epoch`` starts
whenever a book is rebuilt from a snapshot after it was not live.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from polybus.common.events import BookState, MarketInfo
from polybus.common.polymarket.market_channel import (
    PolymarketBestBidAsk,
    PolymarketBook,
    PolymarketLastTradePrice,
    PolymarketMarketEvent,
    PolymarketMarketResolved,
    PolymarketNewMarket,
    PolymarketPriceChange,
    PolymarketTickSizeChange,
)
from polybus.ingest.normalize import (
    FixedPointError,
    parse_best_bid_ask,
    parse_market_resolved,
    parse_tick_size_change,
    parse_trade,
)
from polybus.ingest.snapshots import BookSnapshots
from polybus.ingest.tracks import (
    NS_PER_MS,
    Action,
    AssetCounts,
    AssetTrack,
    EngineStats,
    Outbox,
    State,
)
from polybus.ingest.venue import decode_frame, raw_elements

__all__ = ["Action", "AssetCounts", "AssetTrack", "EngineStats", "IngestEngine", "Outbox", "State"]


class IngestEngine(BookSnapshots):
    """Verified books for many assets. Feed frames; drain :attr:`outbox` and :attr:`actions`."""

    # == markets ==================================================================================
    def track_market(self, info: MarketInfo, now_ns: int) -> list[str]:
        """Follow a market's assets (idempotent); returns the asset ids that are new."""
        self.markets[info.condition_id] = info
        added: list[str] = []
        for outcome in info.outcomes:
            track = self.tracks.get(outcome.token_id)
            if track is None or track.state is State.CLOSED:
                track = self._new_track(outcome.token_id, info.condition_id, now_ns)
                self._awaiting.add(track)
                added.append(outcome.token_id)
            else:
                self._learn_market(track, info)
        return added

    def know_market(self, info: MarketInfo) -> None:
        """Know a market's facts (partition, tick, min size) without following it: the assets
        auto-tracked from a capture then partition and hash as the live ingest's do."""
        self.markets[info.condition_id] = info

    def untrack_market(
        self, condition_id: str, reason: str, now_ns: int, *, status: BookState = "closed"
    ) -> list[str]:
        """Stop following a market: its books close (``BookStatus`` closed) and are dropped.

        A market handed to another ingest says ``stale`` instead: it is not closed, only no
        longer kept here, until its new owner publishes a fresh snapshot under a new epoch."""
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
            self._drop_batch(track)
            self._transition(track, State.CLOSED, status, reason, now_ns)
            track.book.clear()
            track.buffer = None
            self.actions.append(Action("unsubscribe", asset_id, reason))
            closed.append(asset_id)
        return closed

    def publish_market(self, info: MarketInfo) -> None:
        """Queue a MarketInfo on ``md.polymarket.<part>.market.<condition_id>``."""
        subject = self.subjects.market(self.group_partition(info.condition_id), info.condition_id)
        self._emit(subject, info, info.event_id)

    # == frames ===================================================================================
    def on_frame(self, frame: bytes | str, recv_ns: int, *, flush: bool = True) -> None:
        """Process one WebSocket frame received at ``recv_ns``; never raises on bad input.

        With ``flush`` (the default) the frame's changes are published at its end; batches
        stay open until they end (module ``batches``), so :meth:`tick` must run on a timer."""
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
            self._publish_frame(recv_ns)

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

    # == other venue events =======================================================================
    def _on_trade(self, message: PolymarketLastTradePrice, recv_ns: int) -> None:
        track = self._track(message.asset_id, message.market, recv_ns)
        if track is None:
            return
        # No batch ends here: a trade carries no levels, and it may arrive between the
        # messages of its batch.
        trade = parse_trade(message, track, recv_ns)
        track.last_trade_price = trade.price
        track.last_trade_known = True
        track.counts.trades += 1
        self._emit(track.trade_subject, trade, trade.event_id)

    def _on_tick_size_change(self, message: PolymarketTickSizeChange, recv_ns: int) -> None:
        track = self._track(message.asset_id, message.market, recv_ns)
        if track is None:
            return
        # The open batch was checked with the old tick (the hash prints the tick size).
        self._end_batch(track, recv_ns, definite=True)
        track.seq += 1
        event = parse_tick_size_change(message, track, recv_ns)
        track.tick = event.new_tick_size
        track.counts.tick_changes += 1
        self._emit(track.status_subject, event, event.event_id)

    def _on_best_bid_ask(self, message: PolymarketBestBidAsk, recv_ns: int) -> None:
        track = self.tracks.get(message.asset_id)
        if track is None or track.state is not State.LIVE:
            return
        timestamp, best_bid, best_ask = parse_best_bid_ask(message)
        if track.batch_ts >= 0:
            if track.batch_ts == timestamp:
                return  # the batch of the same instant carries the same best bid/ask
            self._end_batch(track, recv_ns, definite=True)
            if track.state is not State.LIVE:
                return
        book = track.book
        checks = self.stats.checks
        if book.best_bid == best_bid and book.best_ask == best_ask:
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
        resolved = parse_market_resolved(message, recv_ns)
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
                self._end_batch(track, now_ns, definite=True)
                if track.state is State.LIVE:
                    self._go_stale(track, "invalid_value", now_ns)

    # == timers ===================================================================================
    def hold_reading(self) -> None:
        """A socket reader stops reading for a while (the publish backlog is full)."""
        self.reading_held += 1

    def resume_reading(self, now_ns: int) -> None:
        """A held reader reads again: the open batches' quiet delays start over from now."""
        self.reading_held -= 1
        for track in self._open_batches:
            track.batch_last_ns = max(track.batch_last_ns, now_ns)

    def tick(self, now_ns: int) -> None:
        """Run the timers: quiet batches, suspect/crossed grace, snapshot deadlines, periodic
        snapshots. The service runs this every ``tick_interval_s``."""
        if not self.reading_held:
            # What the venue sent meanwhile waits in the sockets: neither a batch's quiet delay
            # nor a check's grace may run out on our own pause.
            if self._open_batches:
                self._close_quiet_batches(now_ns)
            self._tick_problems(now_ns)
        self._tick_deadlines(now_ns)
        if self._snapshot_interval_ns:
            self._tick_snapshots(now_ns)


def _event_ts_ns(event: PolymarketMarketEvent) -> int:
    text = event.timestamp
    return int(text) * NS_PER_MS if text.isdigit() else 0
