"""Publishing the engine's output in order, so the socket readers never wait on the bus.

Market data goes out as core NATS publishes with ``Nats-Msg-Id`` = the event id (the MD
stream captures it and drops re-publications). A core publish only appends to the NATS
client's buffer, so nothing waits for the server; the publisher yields to the event loop every
few hundred messages so a large backlog cannot starve the socket readers.
"""

from __future__ import annotations

import asyncio

from polybus.common.bus import Bus
from polybus.common.events import type_name
from polybus.ingest import metrics
from polybus.ingest.engine import Outbox

_YIELD_EVERY = 500


class Publisher:
    def __init__(self, bus: Bus, outbox: Outbox) -> None:
        self.bus = bus
        self.outbox = outbox
        self.wake = asyncio.Event()
        self.published = 0
        self.by_type: dict[str, int] = {}

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
        publish = self.bus.publish
        by_type = self.by_type
        sent = 0
        try:
            while outbox:
                subject, event, msg_id = outbox.popleft()
                await publish(subject, event, msg_id=msg_id)
                kind = type_name(event)
                by_type[kind] = by_type.get(kind, 0) + 1
                sent += 1
                if sent % _YIELD_EVERY == 0:
                    self.published += _YIELD_EVERY
                    await asyncio.sleep(0)
        finally:
            self.published += sent % _YIELD_EVERY

    def export_metrics(self, exported: dict[str, int]) -> None:
        """Move the counts since the last export into Prometheus."""
        for kind, count in self.by_type.items():
            delta = count - exported.get(kind, 0)
            if delta:
                metrics.PUBLISHED.labels(kind).inc(delta)
                exported[kind] = count
        metrics.PUBLISH_BACKLOG.set(len(self.outbox))
