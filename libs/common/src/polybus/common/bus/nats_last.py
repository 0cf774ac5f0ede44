"""The latest stored message per subject, from a real nats-server (for warm starts).

A strategy that starts wants the latest snapshot of every book it follows, not the day of
deltas the MD stream holds. JetStream gives that with a consumer whose deliver policy is
``last_per_subject``: it delivers, in stream order, only the last message on each subject that
matches its filters. The consumer here is ephemeral (a server-side name, no durable state, in
memory, removed when done or after a short inactivity) and needs no acks; its ``num_pending``
at creation says how many messages to wait for, so reading ends without a timeout guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import NotFoundError

from polybus.common.bus import Message
from polybus.common.bus.nats_pull import NatsPullConsumer

_BATCH = 10_000
_INACTIVE_THRESHOLD_S = 10.0
"""The server removes the consumer by itself if this process dies before deleting it."""


async def last_per_subject(
    nc: Client, server_stream: str, subjects: Sequence[str], timeout: float = 5.0
) -> list[Message]:
    """The last message on each subject of ``server_stream`` matching ``subjects``.

    In stream order; [] when the stream does not exist. Raises :class:`TimeoutError` when the
    server did not deliver them all within ``timeout``.
    """
    if not subjects:
        return []  # the server refuses a last-per-subject consumer without a filter
    js = nc.jetstream()
    name = f"last_{uuid.uuid4().hex}"
    config = api.ConsumerConfig(
        name=name,
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=api.AckPolicy.NONE,
        filter_subjects=list(subjects),
        inactive_threshold=_INACTIVE_THRESHOLD_S,
        mem_storage=True,
        num_replicas=1,
    )
    try:
        info = await js.add_consumer(server_stream, config=config, timeout=timeout)
    except NotFoundError:
        return []
    pending = info.num_pending or 0
    consumer = NatsPullConsumer(nc, server_stream, name)
    messages: list[Message] = []
    try:
        async with asyncio.timeout(timeout):
            while len(messages) < pending:
                wanted = min(_BATCH, pending - len(messages))
                messages.extend(
                    Message(delivery.subject, delivery.data, dict(delivery.headers))
                    for delivery in await consumer.fetch(wanted, timeout)
                )
    finally:
        await consumer.close()
        with contextlib.suppress(Exception):
            await js.delete_consumer(server_stream, name)
    return messages
