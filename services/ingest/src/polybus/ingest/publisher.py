"""Publishing the engine's output in order, so the socket readers never wait on the bus.

Market data goes out as core NATS publishes with ``Nats-Msg-Id`` = the event id (the MD
stream captures it and drops re-publications). A core publish only appends to the NATS
client's buffer, so nothing waits for the server; the publisher hands the bus a few hundred
messages per call (``Bus.publish_many``: no per-message overhead beyond the client's) and yields
to the event loop between them, so a large backlog cannot starve the socket readers.

Nor can the readers starve it: with frames queued in their sockets they run back to back and
the publisher seldom gets a turn (under a flood the backlog reached 302,000 events). Past
``publish_backlog_max`` events a reader waits (:meth:`Publisher.room`) until half of them have
gone out, so the venue's socket buffers instead and the ingest's memory stays bounded; nothing
is dropped.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator

from polybus.common.bus import Bus
from polybus.common.events import Event
from polybus.ingest import metrics
from polybus.ingest.engine import Outbox

_YIELD_EVERY = 500


class Publisher:
    def __init__(self, bus: Bus, outbox: Outbox, *, backlog_max: int = 0) -> None:
        """``backlog_max``: the outbox length past which :meth:`full` holds the readers
        (0: never)."""
        self.bus = bus
        self.outbox = outbox
        self.wake = asyncio.Event()
        self._counts: defaultdict[type[Event], int] = defaultdict(int)
        """Events that went out, by class (named only at export: this count runs per message)."""
        self.backlog_max = backlog_max
        self.holds = 0
        """How many times a reader waited for room (a counter for the metrics)."""
        self._holds_exported = 0
        self._drained = asyncio.Event()

    def full(self) -> bool:
        return 0 < self.backlog_max < len(self.outbox)

    async def room(self) -> None:
        """Wait until the backlog is down to half of ``backlog_max`` (a reader that found it
        :meth:`full`)."""
        self.holds += 1
        self._drained.clear()
        self.wake.set()
        await self._drained.wait()

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        """Publish forever (until cancelled)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.publish_pending()

    async def publish_pending(self) -> None:
        outbox = self.outbox
        publish_many = self.bus.publish_many
        while outbox:
            await publish_many(self._take(min(len(outbox), _YIELD_EVERY)))
            if len(outbox) <= self.backlog_max // 2:
                self._drained.set()
            if outbox:
                await asyncio.sleep(0)
        self._drained.set()

    def _take(self, count: int) -> Iterator[tuple[str, Event, str]]:
        """Up to ``count`` messages off the outbox, one at a time as the bus sends them; each
        is counted once the bus asks for the next (so only once it went out)."""
        outbox = self.outbox
        popleft = outbox.popleft
        counts = self._counts
        for _ in range(count):
            if not outbox:
                return
            item = popleft()
            yield item
            counts[type(item[1])] += 1

    @property
    def published(self) -> int:
        return sum(self._counts.values())

    def export_metrics(self, exported: dict[str, int]) -> None:
        """Move the counts since the last export into Prometheus."""
        for kind_type, count in self._counts.items():
            kind = kind_type.__name__
            delta = count - exported.get(kind, 0)
            if delta:
                metrics.PUBLISHED.labels(kind).inc(delta)
                exported[kind] = count
        metrics.PUBLISH_BACKLOG.set(len(self.outbox))
        if self.holds > self._holds_exported:
            metrics.PUBLISH_HOLDS.inc(self.holds - self._holds_exported)
            self._holds_exported = self.holds
