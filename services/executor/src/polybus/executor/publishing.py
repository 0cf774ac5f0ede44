"""The executor's decisions as bus events on ``exec.<strategy_id>.<kind>.<condition_id>``.

Every event goes out with a JetStream ack and ``Nats-Msg-Id`` = its event id, so a
re-publication (after a crash, a redelivered intent) is dropped by the EXEC stream's duplicate
window; the ledger's and the fill's ids are deterministic for that reason.

An event about an account-wide switch (a halt of every strategy) has no strategy id, and a
rejected malformed intent may have no usable ids at all; since a subject token can be neither
empty nor contain a dot or a wildcard, such a token becomes ``_`` on the subject. The event
itself always carries the ids as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import structlog
from nats.errors import Error as NatsError

from polybus.common.bus import Bus, PublishError
from polybus.common.events import (
    Event,
    Fill,
    OrderEvent,
    PositionSnapshot,
    RiskEvent,
)
from polybus.common.subjects import ExecutionKind, Subjects
from polybus.executor import metrics

_log = structlog.get_logger("polybus.executor.publishing")

STAND_IN_ID = "_"
"""The subject token standing for an empty or unusable id."""

ExecutionEvent = OrderEvent | Fill | PositionSnapshot | RiskEvent

_KINDS: dict[type[Event], ExecutionKind] = {
    OrderEvent: "order",
    Fill: "fill",
    PositionSnapshot: "position",
    RiskEvent: "risk",
}
_PROBE = Subjects()


class ExecutionPublisher:
    """Publishes execution events, each acknowledged by the EXEC stream before returning.

    While NATS is away (a restart, no stream answering) it keeps trying every
    ``retry_interval_s``: a decision the venue already acted on must not be dropped. It gives
    up only when ``stop`` is set, raising :class:`PublishError` (the intent is then nak'ed).
    """

    def __init__(
        self, bus: Bus, *, stop: asyncio.Event | None = None, retry_interval_s: float = 0.5
    ) -> None:
        self._bus = bus
        self._subjects = bus.namespace.subjects
        self._stop = stop or asyncio.Event()
        self._retry_interval_s = retry_interval_s
        self.published = 0

    def subject(self, event: ExecutionEvent) -> str:
        return self._subjects.execution(
            _token_or_placeholder(event.strategy_id),
            _KINDS[type(event)],
            _token_or_placeholder(event.condition_id),
        )

    async def publish(self, events: Iterable[ExecutionEvent]) -> None:
        for event in events:
            await self._publish_one(event)
            self.published += 1
            metrics.published(event)

    async def _publish_one(self, event: ExecutionEvent) -> None:
        subject = self.subject(event)
        while True:
            try:
                await self._bus.publish_persistent(subject, event, msg_id=event.event_id)
                return
            except (PublishError, NatsError) as error:
                _log.warning("publish.retrying", subject=subject, error=repr(error))
                if self._stop.is_set():
                    raise PublishError(f"stopped before {subject} was stored") from error
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._retry_interval_s)


def _token_or_placeholder(value: str) -> str:
    try:
        _PROBE.control(value)
    except ValueError:
        return STAND_IN_ID
    return value
