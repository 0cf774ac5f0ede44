"""The bus: what services need from NATS/JetStream, behind one small interface.

:class:`NatsBus` talks to a real nats-server; :class:`MemoryBus` is its in-memory twin for unit
tests. Both pass the same contract tests (``tests/integration/test_bus_contract.py``).

- ``publish``: core NATS (the market-data fast path, captured by a stream when one listens),
  with a ``Nats-Msg-Id`` so a stream drops re-publications (the only header: the event's type
  is its ``type`` field).
- ``publish_persistent``: JetStream publish that waits for the stream's ack (never lost
  silently); raises :class:`PublishError` when no stream stored it. Carries ``Nats-Msg-Id``
  and ``Polybus-Type`` headers (``nats sub --headers-only`` gives an audit trail).
- ``pull_consumer(stream, durable).fetch(...)`` and :func:`consume`: a durable pull consumer;
  a message is acked only after its handler returned, and nak'ed with a delay if it raised.
- ``last_per_subject(stream, subjects)``: the latest stored message per subject, for a warm
  start (the latest snapshot of every book) without replaying the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from polybus.common import metrics
from polybus.common.events import Event
from polybus.common.streams import Definitions
from polybus.common.subjects import Namespace

MSG_ID_HEADER = "Nats-Msg-Id"
TYPE_HEADER = "Polybus-Type"

_log = structlog.get_logger("polybus.bus")


class PublishError(Exception):
    """A persistent publish was not acknowledged by any stream."""


@dataclass(frozen=True, slots=True)
class PublishAck:
    stream: str
    sequence: int
    duplicate: bool


@dataclass(slots=True)
class Message:
    """A core NATS message. ``reply`` is set for requests; answer with :meth:`Bus.respond`."""

    subject: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    reply: str = ""


class Delivery(Protocol):
    """A message delivered by a durable consumer; it must be acked or nak'ed."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def stream_sequence(self) -> int: ...
    @property
    def num_delivered(self) -> int: ...

    async def ack(self) -> None: ...
    async def nak(self, delay: float = 0.0) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


class PullConsumer(Protocol):
    name: str

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages; an empty list if none arrived within ``timeout``."""
        ...

    async def unacked(self) -> int:
        """How many delivered messages still wait for an ack: each one will be redelivered."""
        ...


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


MessageHandler = Callable[[Message], Awaitable[None]]


class Bus(Protocol):
    namespace: Namespace

    async def publish(self, subject: str, event: Event, *, msg_id: str | None = None) -> None: ...
    async def publish_many(self, messages: Iterable[tuple[str, Event, str | None]]) -> None:
        """:meth:`publish` of each (subject, event, msg id) in order, for a producer of many
        events (the ingest's publisher): the same messages, less overhead per message. The
        iterable is read one message at a time, as each goes out."""
        ...

    async def publish_bytes(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> None: ...
    async def publish_persistent(
        self, subject: str, event: Event, *, msg_id: str, timeout: float = 5.0
    ) -> PublishAck: ...
    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription: ...
    async def request(self, subject: str, data: bytes, timeout: float = 2.0) -> Message: ...
    async def respond(self, message: Message, data: bytes) -> None: ...
    def pull_consumer(self, stream: str, durable: str) -> PullConsumer: ...
    async def last_per_subject(
        self, stream: str, subjects: Sequence[str], timeout: float = 5.0
    ) -> list[Message]:
        """The last message the stream holds on each subject matching ``subjects``
        (wildcards allowed), in stream order; [] if the stream does not exist."""
        ...

    async def apply(self, definitions: Definitions) -> None: ...
    async def flush(self, timeout: float = 5.0) -> None: ...
    async def drain(self) -> None: ...


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


async def consume(
    consumer: PullConsumer,
    handler: DeliveryHandler,
    *,
    stop: asyncio.Event,
    batch: int = 100,
    fetch_timeout: float = 1.0,
    nak_delay: float = 1.0,
) -> None:
    """Run a durable pull consumer until ``stop`` is set.

    Each message is acked after ``handler`` returns and nak'ed with ``nak_delay`` if it raises,
    so a message is never acked before it was handled. On stop, the rest of the fetched batch is
    nak'ed at once so another replica can take it without waiting for the ack timeout.
    """
    handled = metrics.CONSUMER_MESSAGES.labels(consumer.name, "ack")
    failed = metrics.CONSUMER_MESSAGES.labels(consumer.name, "nak")
    redelivered = metrics.CONSUMER_REDELIVERIES.labels(consumer.name)
    seconds = metrics.HANDLER_SECONDS.labels(consumer.name)
    while not stop.is_set():
        deliveries = await consumer.fetch(batch, fetch_timeout)
        for index, delivery in enumerate(deliveries):
            if stop.is_set():
                for pending in deliveries[index:]:
                    await pending.nak()
                return
            if delivery.num_delivered > 1:
                redelivered.inc()
            started = time.perf_counter()
            try:
                await handler(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                failed.inc()
                _log.exception(
                    "consumer.handler_failed",
                    consumer=consumer.name,
                    subject=delivery.subject,
                    stream_seq=delivery.stream_sequence,
                    num_delivered=delivery.num_delivered,
                )
                await delivery.nak(nak_delay)
            else:
                seconds.observe(time.perf_counter() - started)
                handled.inc()
                await delivery.ack()


def event_headers(event: Event, msg_id: str | None) -> dict[str, str]:
    headers = {TYPE_HEADER: type(event).__name__}
    if msg_id:
        headers[MSG_ID_HEADER] = msg_id
    return headers
