"""The in-memory twin of :class:`~polybus.common.bus.nats_bus.NatsBus`, for unit tests.

It keeps the semantics services rely on: streams capture the subjects they define (core and
persistent publishes alike), ``Nats-Msg-Id`` dedup within the stream's window, durable pull
consumers with explicit ack, nak with delay, redelivery after the ack wait, and core
subscriptions with wildcards and queue groups. It is not a NATS server: no limits other than
dedup, no KV, no persistence across instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from polybus.common.bus import (
    MSG_ID_HEADER,
    Delivery,
    Message,
    MessageHandler,
    PublishAck,
    PublishError,
    Subscription,
    event_headers,
)
from polybus.common.events import Event, encode
from polybus.common.streams import Definitions
from polybus.common.subjects import Namespace

_log = structlog.get_logger("polybus.bus")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, part in enumerate(pattern_tokens):
        if part == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens) or (part not in ("*", subject_tokens[index])):
            return False
    return len(pattern_tokens) == len(subject_tokens)


@dataclass(slots=True)
class _Stored:
    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class _Stream:
    name: str
    subjects: list[str]
    duplicate_window: float
    messages: list[_Stored] = field(default_factory=list)
    seen_ids: dict[str, tuple[int, float]] = field(default_factory=dict)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def captures(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self.subjects)

    async def store(self, subject: str, data: bytes, headers: Mapping[str, str]) -> PublishAck:
        now = asyncio.get_running_loop().time()
        msg_id = headers.get(MSG_ID_HEADER)
        if msg_id:
            seen = self.seen_ids.get(msg_id)
            if seen is not None and now - seen[1] < self.duplicate_window:
                return PublishAck(self.name, seen[0], duplicate=True)
        sequence = len(self.messages) + 1
        self.messages.append(_Stored(sequence, subject, data, dict(headers)))
        if msg_id:
            self.seen_ids[msg_id] = (sequence, now)
        async with self.arrived:
            self.arrived.notify_all()
        return PublishAck(self.name, sequence, duplicate=False)


@dataclass(slots=True)
class _MemoryDelivery:
    consumer: _MemoryPullConsumer
    stored: _Stored
    num_delivered: int

    @property
    def subject(self) -> str:
        return self.stored.subject

    @property
    def data(self) -> bytes:
        return self.stored.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self.stored.headers

    @property
    def stream_sequence(self) -> int:
        return self.stored.sequence

    async def ack(self) -> None:
        self.consumer.settle(self.stored.sequence)

    async def term(self) -> None:
        self.consumer.settle(self.stored.sequence)

    async def nak(self, delay: float = 0.0) -> None:
        await self.consumer.redeliver_after(self.stored.sequence, delay)

    async def in_progress(self) -> None:
        self.consumer.extend(self.stored.sequence)


class _MemoryPullConsumer:
    def __init__(
        self, stream: _Stream, name: str, filters: list[str], ack_wait: float, max_deliver: int
    ) -> None:
        self.name = name
        self._stream = stream
        self._filters = filters
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._next_index = 0
        self._deliveries: dict[int, int] = {}
        self._pending: dict[int, float] = {}
        """Delivered, not yet acked: sequence -> time it becomes redeliverable."""

    def _wanted(self, stored: _Stored) -> bool:
        return not self._filters or any(subject_matches(f, stored.subject) for f in self._filters)

    def settle(self, sequence: int) -> None:
        self._pending.pop(sequence, None)

    def extend(self, sequence: int) -> None:
        if sequence in self._pending:
            self._pending[sequence] = asyncio.get_running_loop().time() + self._ack_wait

    async def redeliver_after(self, sequence: int, delay: float) -> None:
        if sequence in self._pending:
            self._pending[sequence] = asyncio.get_running_loop().time() + delay
            async with self._stream.arrived:
                self._stream.arrived.notify_all()

    def _take(self, batch: int) -> list[Delivery]:
        now = asyncio.get_running_loop().time()
        taken: list[Delivery] = []
        for sequence, due in sorted(self._pending.items()):
            if len(taken) >= batch:
                return taken
            if due <= now:
                taken.append(self._deliver(self._stream.messages[sequence - 1], now))
        while len(taken) < batch and self._next_index < len(self._stream.messages):
            stored = self._stream.messages[self._next_index]
            self._next_index += 1
            if self._wanted(stored):
                taken.append(self._deliver(stored, now))
        return taken

    def _deliver(self, stored: _Stored, now: float) -> Delivery:
        count = self._deliveries.get(stored.sequence, 0) + 1
        self._deliveries[stored.sequence] = count
        if self._max_deliver > 0 and count >= self._max_deliver:
            self._pending.pop(stored.sequence, None)
        else:
            self._pending[stored.sequence] = now + self._ack_wait
        return _MemoryDelivery(self, stored, count)

    async def unacked(self) -> int:
        return len(self._pending)

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            taken = self._take(batch)
            remaining = deadline - loop.time()
            if taken or remaining <= 0:
                return taken
            # Wake for a new message, or when the earliest pending redelivery comes due.
            next_due = min(self._pending.values(), default=deadline) - loop.time()
            async with self._stream.arrived:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stream.arrived.wait(), max(0.001, min(remaining, next_due))
                    )


@dataclass(slots=True)
class _MemorySubscription:
    bus: MemoryBus
    pattern: str
    queue: str
    handler: MessageHandler
    inbox: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            message = await self.inbox.get()
            try:
                await self.handler(message)
            except Exception:
                # Like NatsBus: a failing handler must not stop the subscription.
                _log.exception("subscription.handler_failed", subject=message.subject)
            finally:
                self.inbox.task_done()

    async def unsubscribe(self) -> None:
        if self in self.bus.subscriptions:
            self.bus.subscriptions.remove(self)
        if self.task is not None:
            self.task.cancel()


class MemoryBus:
    """In-memory bus with the same interface as :class:`NatsBus`."""

    def __init__(self, namespace: Namespace | None = None) -> None:
        self.namespace = namespace or Namespace()
        self.streams: dict[str, _Stream] = {}
        self.consumers: dict[tuple[str, str], _MemoryPullConsumer] = {}
        self.subscriptions: list[_MemorySubscription] = []
        self._inbox_ids = itertools.count()
        self._queue_turns: dict[tuple[str, str], int] = {}

    async def apply(self, definitions: Definitions) -> None:
        subjects = self.namespace.subjects
        for definition in definitions.stream:
            name = self.namespace.stream(definition.name)
            if name not in self.streams:
                self.streams[name] = _Stream(
                    name,
                    [subjects.stream_subjects(s) for s in definition.subjects],
                    definition.duplicate_window_s,
                )
        for consumer in definitions.consumer:
            if consumer.bucket:
                continue  # the twin has no KV buckets
            stream = self.streams[self.namespace.stream(consumer.stream)]
            key = (stream.name, consumer.durable)
            if key not in self.consumers:
                self.consumers[key] = _MemoryPullConsumer(
                    stream,
                    consumer.durable,
                    [subjects.stream_subjects(s) for s in consumer.filter_subjects],
                    consumer.ack_wait_s,
                    consumer.max_deliver,
                )

    async def _route(self, subject: str, data: bytes, headers: Mapping[str, str]) -> None:
        message = Message(subject=subject, data=data, headers=dict(headers))
        groups: dict[str, list[_MemorySubscription]] = {}
        for subscription in self.subscriptions:
            if subject_matches(subscription.pattern, subject):
                if subscription.queue:
                    groups.setdefault(subscription.queue, []).append(subscription)
                else:
                    subscription.inbox.put_nowait(message)
        for queue, members in groups.items():
            turn = self._queue_turns.get((subject, queue), 0)
            members[turn % len(members)].inbox.put_nowait(message)
            self._queue_turns[(subject, queue)] = turn + 1

    async def _capture(
        self, subject: str, data: bytes, headers: Mapping[str, str]
    ) -> PublishAck | None:
        for stream in self.streams.values():
            if stream.captures(subject):
                return await stream.store(subject, data, headers)
        return None

    async def publish(self, subject: str, event: Event, *, msg_id: str | None = None) -> None:
        await self.publish_bytes(subject, encode(event), {MSG_ID_HEADER: msg_id} if msg_id else {})

    async def publish_many(self, messages: Iterable[tuple[str, Event, str | None]]) -> None:
        for subject, event, msg_id in messages:
            await self.publish(subject, event, msg_id=msg_id)

    async def publish_bytes(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        headers = headers or {}
        await self._capture(subject, data, headers)
        await self._route(subject, data, headers)

    async def publish_persistent(
        self, subject: str, event: Event, *, msg_id: str, timeout: float = 5.0
    ) -> PublishAck:
        data, headers = encode(event), event_headers(event, msg_id)
        ack = await self._capture(subject, data, headers)
        if ack is None:
            raise PublishError(f"no stream captures {subject}")
        await self._route(subject, data, headers)
        return ack

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        subscription = _MemorySubscription(self, subject, queue, handler)
        subscription.task = asyncio.get_running_loop().create_task(subscription.run())
        self.subscriptions.append(subscription)
        return subscription

    async def request(self, subject: str, data: bytes, timeout: float = 2.0) -> Message:
        inbox = f"_INBOX.memory.{next(self._inbox_ids)}"
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def on_reply(message: Message) -> None:
            if not answer.done():
                answer.set_result(message)

        reply_subscription = await self.subscribe(inbox, on_reply)
        try:
            responders = [s for s in self.subscriptions if subject_matches(s.pattern, subject)]
            if not responders:
                raise PublishError(f"no responders on {subject}")
            for subscription in responders:
                subscription.inbox.put_nowait(Message(subject=subject, data=data, reply=inbox))
            return await asyncio.wait_for(answer, timeout)
        finally:
            await reply_subscription.unsubscribe()

    async def respond(self, message: Message, data: bytes) -> None:
        if message.reply:
            await self._route(message.reply, data, {})

    def pull_consumer(self, stream: str, durable: str) -> _MemoryPullConsumer:
        return self.consumers[(self.namespace.stream(stream), durable)]

    async def last_per_subject(
        self, stream: str, subjects: Sequence[str], timeout: float = 5.0
    ) -> list[Message]:
        found = self.streams.get(self.namespace.stream(stream))
        if found is None:
            return []
        last: dict[str, _Stored] = {}
        for stored in found.messages:
            if any(subject_matches(pattern, stored.subject) for pattern in subjects):
                last[stored.subject] = stored
        return [
            Message(subject=s.subject, data=s.data, headers=dict(s.headers))
            for s in sorted(last.values(), key=lambda stored: stored.sequence)
        ]

    async def flush(self, timeout: float = 5.0) -> None:
        # Let subscription tasks drain what is already queued.
        for _ in range(3):
            await asyncio.sleep(0)

    async def drain(self) -> None:
        for subscription in list(self.subscriptions):
            await subscription.inbox.join()
            await subscription.unsubscribe()
