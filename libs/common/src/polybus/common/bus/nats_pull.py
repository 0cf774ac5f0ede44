"""The bus's durable pull consumer on a real nats-server: one pull request per batch.

nats-py's ``PullSubscription.fetch`` hands over each message through ``next_msg`` (a timed
queue wait per message), which caps a durable consumer near 9,000 messages/s on the project's
2-core machine - far below what PostgreSQL takes from the recorder. This consumer speaks the
same JetStream pull protocol (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>``) with a plain
subscription callback that appends to a list: a batch costs one request and one wake-up.

``fetch(batch, timeout)`` first asks for whatever is pending now (``no_wait``); if nothing is, it
waits up to ``timeout`` for the next message and returns it as soon as it arrives. Callers that
want fuller batches fetch again for a short while (as the recorder does). It binds to the
durable that ``polybus streams apply`` created and never creates one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from polybus.common.bus import Delivery

_STATUS = "Status"
_NO_MESSAGES = "404"
_REQUEST_TIMEOUT = "408"
_CONFLICT = "409"
_HEARTBEAT = "100"
_request_encoder = msgspec.json.Encoder()


def _ack_tokens(reply: str) -> tuple[int, int] | None:
    """(stream sequence, delivery count) from a JetStream ack subject, or None if unknown.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>``, or
    the newer form with ``<domain>.<account hash>`` after ``ACK`` and a token at the end.
    nats-py's general parser builds a whole metadata object per message; consumers read these
    two numbers of every message, so they are read here.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[4])
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[6])
    return None


class NatsDelivery:
    """A JetStream message as a :class:`~polybus.common.bus.Delivery`."""

    __slots__ = ("_msg", "_numbers")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self._numbers: tuple[int, int] | None = None

    def _sequence_and_count(self) -> tuple[int, int]:
        if self._numbers is None:
            numbers = _ack_tokens(self._msg.reply)
            if numbers is None:
                metadata = self._msg.metadata
                numbers = (metadata.sequence.stream, metadata.num_delivered)
            self._numbers = numbers
        return self._numbers

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self._msg.headers or {}

    @property
    def stream_sequence(self) -> int:
        return self._sequence_and_count()[0]

    @property
    def num_delivered(self) -> int:
        return self._sequence_and_count()[1]

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay: float = 0.0) -> None:
        await self._msg.nak(delay=delay or None)

    async def term(self) -> None:
        await self._msg.term()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class NatsPullConsumer:
    """A durable pull consumer fetching whole batches per request (see the module doc)."""

    def __init__(self, nc: Client, stream: str, durable: str) -> None:
        self.name = durable
        self.stream = stream
        self._nc = nc
        self._request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._requests = itertools.count()
        self._subscription: Subscription | None = None
        self._messages: list[Msg] = []
        self._current = ""
        self._wanted = 0
        self._done = asyncio.Event()
        self._error: Exception | None = None

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(_STATUS) if headers else None
        if status is None:
            # A message delivered for an earlier, expired request is still ours to ack: keep it.
            self._messages.append(msg)
            if len(self._messages) >= self._wanted:
                self._done.set()
            return
        if msg.subject != self._current or status == _HEARTBEAT:
            return
        if status == _CONFLICT and "Consumer Deleted" in (headers or {}).get("Description", ""):
            self._error = NotFoundError()
        # 404 no messages, 408 request expired, 409 limits: this request is over.
        self._done.set()

    async def _request(self, batch: int, *, no_wait: bool, timeout: float) -> None:
        if self._subscription is None:
            # Fail loudly on a missing durable (the server would just never answer a pull).
            await self._nc.jetstream().consumer_info(self.stream, self.name)
            self._subscription = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        self._current = f"{self._inbox}.{next(self._requests)}"
        self._wanted = len(self._messages) + batch
        self._done.clear()
        request: dict[str, object] = {"batch": batch}
        if no_wait:
            request["no_wait"] = True
        else:
            # The server ends the request a little before we stop waiting for it.
            request["expires"] = max(int(timeout * 1e9) - 10_000_000, 1_000_000)
        await self._nc.publish(
            self._request_subject, _request_encoder.encode(request), reply=self._current
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages: all pending now, else the first within ``timeout``."""
        if not self._messages:
            await self._request(batch, no_wait=True, timeout=max(timeout, 1.0))
            if not self._messages:
                await self._request(1, no_wait=False, timeout=timeout)
        taken, self._messages = self._messages[:batch], self._messages[batch:]
        return [NatsDelivery(msg) for msg in taken]

    async def unacked(self) -> int:
        """The server's count of deliveries awaiting an ack (acks reach it asynchronously)."""
        info = await self._nc.jetstream().consumer_info(self.stream, self.name)
        return info.num_ack_pending or 0

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
