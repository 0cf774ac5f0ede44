"""The engine's second layer: ``price_change`` entries, their batches, and the batch checks.

Entries set absolute level sizes. Entries of one asset that share a venue timestamp form a
batch, and the venue's ``best_bid``/``best_ask`` and ``hash`` on them describe the book after
the *whole* batch. On real captures one batch can arrive as several consecutive
``price_change`` messages (frames), the first of which already carries the end-of-batch values,
so a batch does not end with its frame. It ends when

- an entry for the asset with another timestamp arrives (``next_timestamp``),
- a ``book``, ``tick_size_change`` or a ``best_bid_ask`` of another instant arrives for the
  asset (``other_event``; a ``last_trade_price`` carries no levels and does not end it), or
- nothing was added to it for ``batch_quiet_s`` (``quiet``, run by the timer), or the input
  ends (:meth:`flush`).

The checks run then: the local best bid/ask against the venue's, and, where its inputs are
known, the venue's hash recomputed. A failure makes the asset STALE and asks for a resync
(a batch cut short by a snapshot only becomes *suspect*: the snapshot repairs the book).

Deltas do not wait for the checks: at the end of every frame the changes it added go out as a
BookDelta (consumers see the book as fast as the venue sends it); the checks then vouch for, or
retract (a stale status), what was published.
"""

from __future__ import annotations

from collections import deque

from polybus.common.events import BookDelta, LevelChange, Side
from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import format_last_trade_price
from polybus.common.polymarket.market_channel import (
    PolymarketPriceChange,
    PolymarketPriceChangeEntry,
)
from polybus.ingest.normalize import (
    NS_PER_MS,
    PRICES,
    parse_side,
    price_micros,
    size_micros,
    timestamp_ms,
)
from polybus.ingest.states import BookStates
from polybus.ingest.tracks import AssetTrack, BufferedEntry, State


class BatchedBooks(BookStates):
    """Book states plus the price-change batches and their checks. See :class:`IngestEngine`."""

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
        prices = PRICES
        unpublished = self._unpublished
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
                if track.batch_ts >= 0:
                    self._close_batch(track, recv_ns, definite=True)
                if track.state is live:
                    self._open_batch(track, timestamp, timestamp_text)
            if track.state is not live:
                self._park(track, timestamp, timestamp_text, parse_side(side), price, size, entry)
                continue
            changes = track.batch_changes
            if track.batch_published == len(changes):
                unpublished.append(track)  # its first change in this frame
            if side == "BUY":
                track.book.set_bid(price, size)
                changes.append(LevelChange("BUY", price, size))
            elif side == "SELL":
                track.book.set_ask(price, size)
                changes.append(LevelChange("SELL", price, size))
            else:
                parse_side(side)  # raises: the element is dead-lettered
            track.batch_bid = entry.best_bid
            track.batch_ask = entry.best_ask
            track.batch_hash = entry.hash

    def _open_batch(self, track: AssetTrack, timestamp: int, timestamp_text: str) -> None:
        track.batch_ts = timestamp
        track.batch_ts_text = timestamp_text
        self._open_batches[track] = None

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
            BufferedEntry(
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

    def _replay_buffer(self, track: AssetTrack, entries: list[BufferedEntry], now_ns: int) -> None:
        """Apply entries kept while the book was not live (after a REST seed)."""
        for entry in entries:
            if track.state is not State.LIVE:
                return
            if track.batch_ts != entry.timestamp:
                if track.batch_ts >= 0:
                    self._close_batch(track, now_ns, definite=True)
                    if track.state is not State.LIVE:
                        return
                self._open_batch(track, entry.timestamp, entry.timestamp_text)
            if track.batch_published == len(track.batch_changes):
                self._unpublished.append(track)
            track.book.set_level(entry.side, entry.price, entry.size)
            track.batch_changes.append(LevelChange(entry.side, entry.price, entry.size))
            track.batch_bid = entry.best_bid
            track.batch_ask = entry.best_ask
            track.batch_hash = entry.hash

    # == the end of a frame: publish, keep the batch open =========================================
    def _publish_frame(self, now_ns: int) -> None:
        """The frame is over: publish the changes it added; their batches stay open."""
        unpublished = self._unpublished
        if unpublished:
            # A track may be listed twice (a batch ended, then a new one began) or its batch
            # may be gone (stale, closed); publishing is a no-op then.
            for track in unpublished:
                if track.batch_ts >= 0:
                    track.batch_last_ns = now_ns
                    if track.batch_published < len(track.batch_changes):
                        self._publish_delta(track, track.batch_ts, now_ns)
            unpublished.clear()

    def _publish_delta(self, track: AssetTrack, timestamp: int, now_ns: int) -> None:
        """Publish the batch's changes not published yet, with the book's best bid/ask now."""
        changes = track.batch_changes
        start = track.batch_published
        count = len(changes) - start
        track.batch_published = len(changes)
        counts = track.counts
        counts.entries += count
        if track.last_ts == timestamp:
            track.last_ts_entries += count
        else:
            track.last_ts = timestamp
            track.last_ts_entries = count
        book = track.book
        seq = track.seq = track.seq + 1
        counts.deltas += 1
        event_id = f"pm.delta.{track.asset_id}.{timestamp}.{track.last_ts_entries}"
        # The envelope inline (not normalize.envelope): this runs for every frame's batch.
        delta = BookDelta(
            event_id=event_id,
            ts_event=timestamp * NS_PER_MS,
            ts_init=now_ns,
            asset_id=track.asset_id,
            condition_id=track.condition_id,
            seq=seq,
            epoch=track.epoch,
            changes=tuple(changes[start:] if start else changes),
            best_bid=book.best_bid,
            best_ask=book.best_ask,
        )
        outbox = self.outbox
        outbox.append((track.delta_subject, delta, event_id))
        if len(outbox) == 1 and self.on_output is not None:
            self.on_output()

    # == the end of a batch: check it ============================================================
    def flush(self, now_ns: int) -> None:
        """The input ended (end of a capture): end every open batch, check it, publish it."""
        self._publish_frame(now_ns)
        for track in list(self._open_batches):
            self._close_batch(track, now_ns, definite=True)

    def _close_quiet_batches(self, now_ns: int) -> None:
        """End the batches nothing was added to for ``batch_quiet_s`` (the timer runs this)."""
        quiet_ns = self._quiet_ns
        ended = [t for t in self._open_batches if now_ns - t.batch_last_ns >= quiet_ns]
        for track in ended:
            if track.batch_published == len(track.batch_changes):
                self.stats.quiet_closes += 1
                self._close_batch(track, now_ns, definite=True)

    def _end_batch(self, track: AssetTrack, now_ns: int, *, definite: bool) -> None:
        """End the open batch before another kind of event for the asset is applied."""
        if track.batch_ts >= 0:
            self._close_batch(track, now_ns, definite=definite)

    def _close_batch(  # noqa: C901 - the per-batch hot path, inlined on purpose
        self, track: AssetTrack, now_ns: int, *, definite: bool
    ) -> None:
        """End the asset's open batch: check it, then publish the rest of it (or go stale)."""
        timestamp = track.batch_ts
        if timestamp < 0:
            return
        track.batch_ts = -1
        self._open_batches.pop(track, None)
        counts = track.counts
        book = track.book
        best_bid, best_ask = book.best_bid, book.best_ask
        # The best bid/ask check, inline: it runs for every batch.
        failure = ""
        bid_text, ask_text = track.batch_bid, track.batch_ask
        if bid_text or ask_text:
            expected_bid = None if bid_text == "0" else PRICES.get(bid_text)
            expected_ask = None if ask_text == "1" else PRICES.get(ask_text)
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
            failure = self._check_hash(track, track.batch_changes, now_ns)
        else:
            counts.hash_skipped += 1
        if failure:
            if definite:
                track.batch_changes = []
                track.batch_published = 0
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
        if track.batch_published < len(track.batch_changes):
            self._publish_delta(track, timestamp, now_ns)
        track.batch_changes = []
        track.batch_published = 0

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


def _trade_candidates(changes: list[LevelChange]) -> list[int]:
    seen: dict[int, None] = {}
    for change in reversed(changes):
        seen.setdefault(change.price, None)
        seen.setdefault(MICROS - change.price, None)
    return list(seen)
