"""The engine's third layer: venue snapshots (socket ``book``, REST ``/book``) and our own.

Every venue ``book`` replaces the book (an older timestamp is ignored). Its hash is checked
where its inputs are known, and teaches them where they are not (a bare capture). A snapshot
after the book was not live starts a new ``epoch``; a REST seed (older than the socket) replays
the entries buffered meanwhile that are newer than it. Our own snapshots: periodic ones and
the request/reply answer.
"""

from __future__ import annotations

import msgspec

from polybus.common.events import BookSnapshot, BookStatus
from polybus.common.money import FixedPointError, format_micros
from polybus.common.polymarket.market_channel import PolymarketBook
from polybus.common.polymarket.rest import PolymarketOrderBookSummary
from polybus.ingest.batches import BatchedBooks
from polybus.ingest.normalize import (
    envelope,
    parse_book_levels,
    parse_size,
    parse_tick_size,
    price_micros,
    timestamp_ms,
)
from polybus.ingest.tracks import NS_PER_MS, STATUS_OF, AssetTrack, State

# When Gamma has not told us a market's minimum order size / neg-risk flag (replay of a bare
# capture), the first snapshot's hash tells us: these are the values the venue uses.
_MIN_ORDER_SIZE_CANDIDATES = ("5", "1", "15", "10", "20", "50", "100", "0")


class BookSnapshots(BatchedBooks):
    """Batched books plus snapshots in and out. See :class:`IngestEngine`."""

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
        self._end_batch(track, recv_ns, definite=False)
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
        bids, asks = parse_book_levels(message)
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
            self._transition(
                track, State.LIVE, "live", "rest_seed" if rest else "snapshot", recv_ns
            )
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

    def on_rest_book(self, summary: PolymarketOrderBookSummary, recv_ns: int) -> None:
        """A REST ``/book`` seed for an asset whose socket did not deliver a snapshot."""
        try:
            self._on_book(summary, recv_ns, rest=True)
        except (FixedPointError, ValueError):
            self.stats.decode_errors += 1
            self._dead_letter(msgspec.json.encode(summary).decode(), "invalid_value", recv_ns)
        # Like the end of a frame: the replayed entries' last batch may go on on the socket.
        self._publish_frame(recv_ns)

    # == our own snapshots ========================================================================
    def snapshot(self, asset_id: str, now_ns: int) -> BookSnapshot | BookStatus | None:
        """The current book as a snapshot for a request/reply (not published; seq unchanged),
        the asset's status if it is not live, or None for an asset this engine does not own."""
        track = self.tracks.get(asset_id)
        if track is None:
            return None
        if track.state is not State.LIVE:
            return BookStatus(
                **envelope(
                    track, f"pm.status.{asset_id}.{track.epoch}.{track.seq}", now_ns, now_ns
                ),
                status=STATUS_OF[track.state],
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
            **envelope(track, event_id, ts_event, now_ns),
            bids=bids,
            asks=asks,
            tick_size=track.tick or 0,
            min_order_size=_size_or_zero(track.min_order_size),
            venue_hash=venue_hash,
        )

    def _schedule_snapshot(self, track: AssetTrack, now_ns: int) -> None:
        if self._snapshot_interval_ns:
            track.next_snapshot_ns = now_ns + self._snapshot_interval_ns

    def _tick_snapshots(self, now_ns: int) -> None:
        for track in self.tracks.values():
            due = now_ns >= track.next_snapshot_ns
            # A batch may be open, but with every change published the book is exactly what
            # the deltas so far said.
            if (
                due
                and track.state is State.LIVE
                and track.batch_published == len(track.batch_changes)
            ):
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


def _size_or_zero(text: str | None) -> int:
    if not text:
        return 0
    try:
        return parse_size(text)
    except FixedPointError:
        return 0
