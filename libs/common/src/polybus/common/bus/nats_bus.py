"""The bus on a real nats-server (nats-py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js.errors import NoStreamResponseError

from polybus.common import metrics
from polybus.common.bus import (
    MSG_ID_HEADER,
    Message,
    MessageHandler,
    PublishAck,
    PublishError,
    Subscription,
    event_headers,
)
from polybus.common.bus.nats_last import last_per_subject
from polybus.common.bus.nats_pull import NatsPullConsumer
from polybus.common.config import Secrets
from polybus.common.events import Event, encode
from polybus.common.streams import Definitions, apply
from polybus.common.subjects import Namespace

_log = structlog.get_logger("polybus.bus")
_PUBLISHED_CORE = metrics.BUS_PUBLISHED.labels("core")
_PUBLISHED_JETSTREAM = metrics.BUS_PUBLISHED.labels("jetstream")


def _message(msg: Msg) -> Message:
    return Message(subject=msg.subject, data=msg.data, headers=msg.headers or {}, reply=msg.reply)


@dataclass(slots=True)
class _NatsSubscriptionHandle:
    subscription: NatsSubscription

    async def unsubscribe(self) -> None:
        await self.subscription.unsubscribe()


class NatsBus:
    """The bus on a real nats-server. Create with :meth:`connect`."""

    def __init__(self, nc: Client, namespace: Namespace, name: str = "") -> None:
        self.nc = nc
        self.name = name
        self.js = nc.jetstream()
        self.namespace = namespace
        self._pull_consumers: list[NatsPullConsumer] = []
        self._closing = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        namespace: Namespace | None = None,
        secrets: Secrets | None = None,
        ping_interval: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect: bool = True,
    ) -> NatsBus:
        """Connect with a name, unlimited reconnects and a short ping interval.

        Disconnects, reconnects, async errors and slow-consumer drops are counted as metrics
        (nats-py drops messages of a lagging subscription silently otherwise).
        """
        credentials: dict[str, Any] = {}
        if secrets is not None:
            nats_secrets = secrets.nats
            if nats_secrets.user:
                credentials["user"] = nats_secrets.user
            if nats_secrets.password:
                credentials["password"] = nats_secrets.password.reveal()
            if nats_secrets.token:
                credentials["token"] = nats_secrets.token.reveal()
        bus = cls(Client(), namespace or Namespace(), name)
        try:
            await bus.nc.connect(
                servers=[server.strip() for server in url.split(",")],
                name=name,
                allow_reconnect=reconnect,
                max_reconnect_attempts=-1 if reconnect else 0,
                reconnect_time_wait=1,
                ping_interval=int(max(1, ping_interval)),
                max_outstanding_pings=3,
                connect_timeout=int(max(1, connect_timeout)),
                error_cb=bus._on_error,
                disconnected_cb=bus._on_disconnected,
                reconnected_cb=bus._on_reconnected,
                # Every subject comes from polybus.common.subjects, whose token check refuses
                # wildcards, dots and control characters; nats-py's regex on each publish would
                # halve the market-data publish rate (bench/bus.py).
                skip_subject_validation=True,
                **credentials,
            )
        except BaseException:
            # Cancelled while still (re)trying, e.g. the service was asked to stop before NATS
            # came up: stop nats-py's connection attempts too.
            bus._closing = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.nc.close(), 1.0)
            raise
        metrics.NATS_CONNECTED.labels(name).set(1)
        return bus

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            metrics.NATS_SLOW_CONSUMER_DROPS.labels(self.name).inc()
            return
        metrics.NATS_ERRORS.labels(self.name).inc()
        _log.warning("nats.error", connection=self.name, error=repr(error))

    async def _on_disconnected(self) -> None:
        metrics.NATS_CONNECTED.labels(self.name).set(0)
        if self._closing:
            return
        metrics.NATS_DISCONNECTS.labels(self.name).inc()
        _log.warning("nats.disconnected", connection=self.name)

    async def _on_reconnected(self) -> None:
        metrics.NATS_RECONNECTS.labels(self.name).inc()
        metrics.NATS_CONNECTED.labels(self.name).set(1)
        _log.info("nats.reconnected", connection=self.name)

    async def publish(self, subject: str, event: Event, *, msg_id: str | None = None) -> None:
        # The hot path: one header at most (nats-py encodes each header in Python).
        await self.nc.publish(
            subject, encode(event), headers={MSG_ID_HEADER: msg_id} if msg_id else None
        )
        _PUBLISHED_CORE.inc()

    async def publish_many(self, messages: Iterable[tuple[str, Event, str | None]]) -> None:
        # The ingest's path: the client's publish called directly (no coroutine of ours per
        # message) and the metric counted once per call (a Prometheus increment takes a lock).
        publish = self.nc.publish
        sent = 0
        try:
            for subject, event, msg_id in messages:
                await publish(
                    subject, encode(event), headers={MSG_ID_HEADER: msg_id} if msg_id else None
                )
                sent += 1
        finally:
            _PUBLISHED_CORE.inc(sent)

    async def publish_bytes(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        await self.nc.publish(subject, data, headers=dict(headers) if headers else None)
        _PUBLISHED_CORE.inc()

    async def publish_persistent(
        self, subject: str, event: Event, *, msg_id: str, timeout: float = 5.0
    ) -> PublishAck:
        try:
            ack = await self.js.publish(
                subject, encode(event), timeout=timeout, headers=event_headers(event, msg_id)
            )
        except (nats.errors.NoRespondersError, NoStreamResponseError) as error:
            raise PublishError(f"no stream captures {subject}") from error
        except nats.errors.TimeoutError as error:
            raise PublishError(f"no ack for {subject} within {timeout}s") from error
        _PUBLISHED_JETSTREAM.inc()
        if ack.duplicate:
            metrics.BUS_PUBLISH_DUPLICATES.inc()
        return PublishAck(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        async def on_message(msg: Msg) -> None:
            try:
                await handler(_message(msg))
            except Exception:
                # A failing handler must not kill the subscription's delivery task.
                _log.exception("subscription.handler_failed", subject=msg.subject)

        subscription = await self.nc.subscribe(subject, queue=queue, cb=on_message)
        return _NatsSubscriptionHandle(subscription)

    async def request(self, subject: str, data: bytes, timeout: float = 2.0) -> Message:
        return _message(await self.nc.request(subject, data, timeout=timeout))

    async def respond(self, message: Message, data: bytes) -> None:
        if message.reply:
            await self.nc.publish(message.reply, data)

    def pull_consumer(self, stream: str, durable: str) -> NatsPullConsumer:
        return self._pull_consumer(self.namespace.stream(stream), durable)

    async def last_per_subject(
        self, stream: str, subjects: Sequence[str], timeout: float = 5.0
    ) -> list[Message]:
        return await last_per_subject(self.nc, self.namespace.stream(stream), subjects, timeout)

    def bucket_consumer(self, bucket: str, durable: str) -> NatsPullConsumer:
        """A durable pull consumer on a KV bucket's underlying stream (every put, in order)."""
        return self._pull_consumer(self.namespace.bucket_stream(bucket), durable)

    def _pull_consumer(self, server_stream: str, durable: str) -> NatsPullConsumer:
        consumer = NatsPullConsumer(self.nc, server_stream, durable)
        self._pull_consumers.append(consumer)
        return consumer

    async def apply(self, definitions: Definitions) -> None:
        await apply(self.js, definitions, self.namespace)

    async def flush(self, timeout: float = 5.0) -> None:
        await self.nc.flush(timeout=int(max(1, timeout)))

    async def drain(self, timeout: float = 30.0) -> None:
        """Finish in-flight work: stop subscriptions, flush publishes, then close.

        Waits at most about ``timeout``; a connection that is down or does not drain in time is
        closed (what it still buffered is lost, as it would be on a crash).
        """
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                for consumer in self._pull_consumers:
                    await consumer.close()
                if self.nc.is_connected:
                    await self.nc.drain()
        self._pull_consumers.clear()
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), timeout)
        metrics.NATS_CONNECTED.labels(self.name).set(0)
