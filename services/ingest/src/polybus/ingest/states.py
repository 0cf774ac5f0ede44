"""The engine's first layer: per-asset book states, their transitions and output.

Per asset the book is NEEDS_SNAPSHOT -> LIVE -> STALE (-> LIVE again after a snapshot), or
CLOSED once unsubscribed (VENUE §4.6). Every state change is a ``BookStatus`` with the asset's
next ``seq``; going stale drops the book and asks the I/O side for a resync (an
:class:`~polybus.ingest.tracks.Action`). Timers here: snapshot deadlines (re-subscribe, then a
REST seed). The layers above add batches and checks (``batches``), snapshots (``snapshots``)
and frame dispatch (``engine``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable

from polybus.common.events import BookState, BookStatus, DeadLetter, Event, MarketInfo
from polybus.common.money import format_micros
from polybus.common.polymarket.market_channel import PolymarketNewMarket
from polybus.common.subjects import Subjects, market_partition
from polybus.ingest.config import IngestSettings
from polybus.ingest.normalize import envelope
from polybus.ingest.tracks import (
    NS_PER_S,
    Action,
    ActionKind,
    AssetTrack,
    EngineStats,
    Outbox,
    State,
)


class BookStates:
    """Book states of many assets and the events they produce. See :class:`IngestEngine`."""

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
        self._unpublished: list[AssetTrack] = []
        """Tracks whose open batch gained changes in the current frame."""
        self._open_batches: dict[AssetTrack, None] = {}
        """Tracks with an open batch, oldest first, for the quiet delay."""
        self.reading_held = 0
        """Socket readers holding (the publish backlog full): timers that wait for the venue's
        next input do not run meanwhile (:meth:`IngestEngine.hold_reading`)."""
        self._suspects: set[AssetTrack] = set()
        self._crossed: set[AssetTrack] = set()
        self._awaiting: set[AssetTrack] = set()
        self._grace_ns = int(settings.mismatch_grace_s * NS_PER_S)
        self._quiet_ns = int(settings.batch_quiet_s * NS_PER_S)
        self._crossed_grace_ns = int(settings.crossed_grace_s * NS_PER_S)
        self._snapshot_timeout_ns = int(settings.first_snapshot_timeout_s * NS_PER_S)
        self._hash_interval_ns = int(settings.hash_check_interval_s * NS_PER_S)
        self._snapshot_interval_ns = int(settings.snapshot_interval_s * NS_PER_S)
        self._last_epoch = 0
        self._dead_letter_subject = subjects.dead_letter(source)

    # == which assets are followed ================================================================
    def group_partition(self, condition_id: str) -> int:
        """The market's partition: by its neg-risk group when known, else its condition id
        (DESIGN §4), so all outcomes of one event share a partition."""
        info = self.markets.get(condition_id)
        group = info.neg_risk_market_id if info is not None else ""
        return market_partition(condition_id, group, self.partitions)

    def _new_track(self, asset_id: str, condition_id: str, now_ns: int) -> AssetTrack:
        track = AssetTrack(
            asset_id, condition_id, self.group_partition(condition_id), self.subjects
        )
        track.awaiting_since_ns = now_ns
        info = self.markets.get(condition_id)
        if info is not None:
            self._learn_market(track, info)
        self.tracks[asset_id] = track
        return track

    @staticmethod
    def _learn_market(track: AssetTrack, info: MarketInfo) -> None:
        """What Gamma says about the market's books (the venue hash's inputs)."""
        if track.tick is None and info.tick_size:
            track.tick = info.tick_size
        if info.min_order_size:
            track.min_order_size = format_micros(info.min_order_size)
        track.neg_risk = info.neg_risk

    def _track(self, asset_id: str, condition_id: str, now_ns: int) -> AssetTrack | None:
        """The asset's track, auto-tracked in replay; None for an asset not followed."""
        track = self.tracks.get(asset_id)
        return track if track is not None else self._auto_track(asset_id, condition_id, now_ns)

    def _auto_track(self, asset_id: str, condition_id: str, now_ns: int) -> AssetTrack | None:
        if not self.auto_track:
            self.stats.untracked += 1
            return None
        return self._new_track(asset_id, condition_id, now_ns)

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
            **envelope(
                track, f"pm.status.{track.asset_id}.{track.epoch}.{track.seq}", now_ns, now_ns
            ),
            status=status,
            reason=reason,
        )
        self._emit(track.status_subject, event, event.event_id)

    def _drop_batch(self, track: AssetTrack) -> None:
        """Forget the open batch unchecked (its book is being dropped or replaced)."""
        track.batch_ts = -1
        track.batch_changes = []
        track.batch_published = 0
        self._open_batches.pop(track, None)

    def _go_stale(
        self, track: AssetTrack, reason: str, now_ns: int, *, resubscribe: bool = True
    ) -> None:
        """The book can no longer be trusted: say so, drop it, ask for a resync."""
        if track.state is State.CLOSED:
            return
        if track.batch_ts >= 0:
            self._drop_batch(track)
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
    def _tick_problems(self, now_ns: int) -> None:
        for track in list(self._suspects):
            if now_ns - track.suspect_since_ns >= self._grace_ns:
                self._go_stale(track, track.suspect_reason, now_ns)
        for track in list(self._crossed):
            if now_ns - track.crossed_since_ns >= self._crossed_grace_ns:
                self._go_stale(track, "crossed", now_ns)

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
