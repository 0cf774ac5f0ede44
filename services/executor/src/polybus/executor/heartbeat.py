"""The venue's dead-man switch (VENUE §3.4): heartbeats that keep our orders alive.

The first accepted heartbeat arms the venue's timer for the whole API key: from then on, 10 s
without an accepted heartbeat cancels every open order of the key, and nothing disarms it. So
nothing is sent until :meth:`Heartbeat.arm` (the service calls it once an order is live), and
from then on :meth:`Heartbeat.run` sends one every ``interval_s`` with the id the last answer
gave (``""`` first). A refused id is answered with the one the venue expects, which is sent at
once. Sends are serialized: one loop, one request in flight.

A heartbeat that fails (the venue unavailable), is refused, or is accepted later than the
deadline after the previous one means the venue may have canceled everything: the switch is
*lost* (``healthy`` False) and ``on_lost(reason)`` is called once. The service then stops new
submissions (cancels and queries still work) and publishes a ``RiskEvent``. Coming back takes
two steps, because a fresh heartbeat alone does not say which orders survived:

1. the next accepted heartbeat calls ``on_restored(generation)``;
2. the service reconciles, then calls :meth:`Heartbeat.restored` with that generation, and
   only then is the switch ``healthy`` again.

A loss between the two makes the generation stale (``restored`` returns False), and the next
accepted heartbeat calls ``on_restored`` with the new one. If the reconcile fails, the service
retries it and calls ``restored`` when one succeeds; the generation stays valid until the
next loss. Both callbacks are plain functions called from the heartbeat loop: they must not
block (hand I/O to a task or a queue), or heartbeats would wait for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

from polybus.executor.live.limits import Clock
from polybus.executor.venue import HeartbeatRejected, VenueUnavailable

_log = structlog.get_logger("polybus.executor.heartbeat")

VENUE_DEADLINE_S = 10.0
"""The venue cancels the key's orders this long after the last accepted heartbeat."""
RETRY_AFTER_FAILURE_S = 1.0
"""After a failed send, try again this soon (capped at the interval): the deadline is near."""

_SEND_FAILURES = (VenueUnavailable, TimeoutError, OSError)


class HeartbeatVenue(Protocol):
    """The one venue method the heartbeat needs."""

    async def heartbeat(self, previous_id: str) -> str: ...


class Heartbeat:
    """Sends the venue heartbeats once armed and tracks whether the switch still holds."""

    def __init__(
        self,
        venue: HeartbeatVenue,
        interval_s: float,
        clock: Clock,
        on_lost: Callable[[str], None],
        on_restored: Callable[[int], None],
        *,
        deadline_s: float = VENUE_DEADLINE_S,
        retry_s: float = RETRY_AFTER_FAILURE_S,
    ) -> None:
        if not 0 < interval_s < deadline_s:
            raise ValueError(f"heartbeat interval {interval_s} s must be under {deadline_s} s")
        self._venue = venue
        self._interval_s = interval_s
        self._clock = clock
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._deadline_s = deadline_s
        self._retry_s = min(retry_s, interval_s)
        self._armed = asyncio.Event()
        self._healthy = True
        self._id = ""
        self._last_accepted_s: float | None = None
        self._generation = 0
        """Counts losses; a restore is valid for the generation it was offered in."""
        self._offered: int | None = None
        """The generation ``on_restored`` was called for, while it awaits :meth:`restored`."""
        self.accepted = 0
        """Heartbeats the venue accepted."""
        self.lost_reason = ""

    @property
    def armed(self) -> bool:
        return self._armed.is_set()

    @property
    def healthy(self) -> bool:
        """False from a loss until the service confirmed its reconcile (:meth:`restored`)."""
        return self._healthy

    @property
    def heartbeat_id(self) -> str:
        """The id the next heartbeat carries."""
        return self._id

    def arm(self) -> None:
        """Start heartbeats (idempotent). The venue has no disarm, so neither has this."""
        if not self._armed.is_set():
            _log.info("heartbeat.armed")
            self._armed.set()

    def restored(self, generation: int) -> bool:
        """The service reconciled after ``on_restored(generation)``: healthy again, unless a
        loss came after it (then False, and ``on_restored`` is called again later)."""
        if self._healthy:
            return True
        if generation != self._generation or self._offered != generation:
            return False
        self._healthy = True
        self._offered = None
        self.lost_reason = ""
        _log.info("heartbeat.restored", generation=generation)
        return True

    async def run(self) -> None:
        """Heartbeats until cancelled: nothing before :meth:`arm`, then every interval."""
        await self._armed.wait()
        while True:
            started = self._clock.monotonic()
            accepted = await self._beat()
            pause = self._interval_s if accepted else self._retry_s
            wait = pause - (self._clock.monotonic() - started)
            if wait > 0:
                await self._clock.sleep(wait)

    async def _beat(self) -> bool:
        """One heartbeat, and at once a second with the expected id if the first is refused."""
        for _ in range(2):
            try:
                next_id = await self._send(self._id)
            except HeartbeatRejected as rejected:
                self._lose("rejected")
                self._id = rejected.expected_id
                continue
            except _SEND_FAILURES as error:
                self._lose("venue_unavailable", detail=str(error))
                return False
            self._accepted(next_id)
            return True
        return False

    async def _send(self, previous_id: str) -> str:
        """The venue call; while the switch holds, the loss is declared at the deadline even if
        the call is still waiting (it is not abandoned: sends stay serialized)."""
        remaining = self._deadline_remaining()
        if remaining is None:
            return await self._venue.heartbeat(previous_id)
        send = asyncio.ensure_future(self._venue.heartbeat(previous_id))
        watchdog = asyncio.ensure_future(self._clock.sleep(remaining))
        try:
            done, _ = await asyncio.wait({send, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if send not in done:
                self._lose("deadline_passed")
            return await send
        finally:
            for task in (send, watchdog):
                task.cancel()
            # Collect both: a cancelled run leaves no send behind, and no error unread.
            await asyncio.gather(send, watchdog, return_exceptions=True)

    def _deadline_remaining(self) -> float | None:
        if not self._healthy or self._last_accepted_s is None:
            return None
        return max(self._last_accepted_s + self._deadline_s - self._clock.monotonic(), 0.0)

    def _accepted(self, next_id: str) -> None:
        now = self._clock.monotonic()
        if self._last_accepted_s is not None and now - self._last_accepted_s > self._deadline_s:
            # Accepted, but too late: the venue may have canceled everything meanwhile.
            self._lose("deadline_passed")
        self._id = next_id
        self._last_accepted_s = now
        self.accepted += 1
        if not self._healthy and self._offered != self._generation:
            self._offered = self._generation
            _log.info("heartbeat.accepted_after_loss", generation=self._generation)
            self._on_restored(self._generation)

    def _lose(self, reason: str, detail: str = "") -> None:
        self._generation += 1
        self._offered = None
        if not self._healthy:
            return  # already lost: the service knows; a new generation voids its restore
        self._healthy = False
        self.lost_reason = reason
        _log.warning("heartbeat.lost", reason=reason, detail=detail)
        self._on_lost(reason)
