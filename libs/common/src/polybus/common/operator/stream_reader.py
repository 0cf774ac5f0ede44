"""Reading the streams for the operator: which streams capture a wildcard, and a window of one.

``polybus tail --since``, ``status`` and ``top`` read stored events with an ephemeral,
ack-less consumer (server-side name, in memory, removed when done or after a short inactivity,
so a killed command leaves nothing behind). Its ``num_pending`` at creation says how many
messages the window holds now, so a bounded read ends without a timeout guess; a followed read
goes on with live messages after them.
"""

from __future__ import annotations

import contextlib
import datetime
import uuid
from collections.abc import AsyncIterator, Sequence

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import NotFoundError

from polybus.common.bus import Message
from polybus.common.bus.nats_pull import NatsPullConsumer
from polybus.common.streams import Definitions
from polybus.common.subjects import Namespace

_BATCH = 1_000
_INACTIVE_THRESHOLD_S = 10.0
_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"10m"``, ``"90s"``, ``"2h"``, ``"1d"``, ``"500ms"`` or a plain number.

    Raises ValueError naming the text when it is not a positive duration.
    """
    body = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h", "d") if body.endswith(u)), "s")
    number = body.removesuffix(unit) if body.endswith(unit) else body
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r} is not a duration like 90s, 10m, 2h or 1d")
    return value * _UNITS_S[unit]


def intersect(first: str, second: str) -> str | None:
    """The subjects both patterns match, as one pattern, or None when they share none.

    Token by token: a literal meets ``*`` as itself, ``>`` takes whatever the other has left.
    """
    left, right = first.split("."), second.split(".")
    tokens: list[str] = []
    for index, piece in enumerate(left):
        if piece == ">":
            return ".".join(tokens + right[index:]) if index < len(right) else None
        if index >= len(right):
            return None
        other = right[index]
        if other == ">":
            return ".".join(tokens + left[index:])
        if piece == "*":
            tokens.append(other)
        elif other in ("*", piece):
            tokens.append(piece)
        else:
            return None
    return ".".join(tokens) if len(left) == len(right) else None


def capturing_streams(pattern: str, definitions: Definitions) -> list[tuple[str, list[str]]]:
    """Each stream holding subjects ``pattern`` matches, with the filters that select them.

    Names and subjects are relative (no deployment prefix); KV buckets are not included.
    """
    captured = []
    for stream in definitions.stream:
        filters = sorted(
            {
                common
                for subject in stream.subjects
                if (common := intersect(pattern, subject)) is not None
            }
        )
        if filters:
            captured.append((stream.name, filters))
    return captured


async def read_stream(
    nc: Client,
    namespace: Namespace,
    stream: str,
    filters: Sequence[str],
    *,
    since_ns: int | None = None,
    follow: bool = False,
    fetch_timeout_s: float = 1.0,
) -> AsyncIterator[Message]:
    """The messages of ``stream`` on ``filters`` (relative subjects), in stream order.

    From ``since_ns`` (wall clock, ns) or the start; without ``follow`` it ends after what the
    stream held when the read began, with ``follow`` it goes on with new messages until the
    caller stops iterating. Nothing when the stream does not exist.
    """
    js = nc.jetstream()
    server_stream = namespace.stream(stream)
    name = f"operator_{uuid.uuid4().hex}"
    subjects = namespace.subjects
    config = api.ConsumerConfig(
        name=name,
        deliver_policy=api.DeliverPolicy.ALL
        if since_ns is None
        else api.DeliverPolicy.BY_START_TIME,
        opt_start_time=None
        if since_ns is None
        else datetime.datetime.fromtimestamp(since_ns / 1e9, tz=datetime.UTC),
        ack_policy=api.AckPolicy.NONE,
        filter_subjects=[subjects.stream_subjects(subject) for subject in filters],
        inactive_threshold=_INACTIVE_THRESHOLD_S,
        mem_storage=True,
        num_replicas=1,
    )
    try:
        info = await js.add_consumer(server_stream, config=config)
    except NotFoundError:
        return
    remaining = info.num_pending or 0
    consumer = NatsPullConsumer(nc, server_stream, name)
    try:
        while follow or remaining > 0:
            wanted = _BATCH if follow else min(_BATCH, remaining)
            for delivery in await consumer.fetch(wanted, fetch_timeout_s):
                remaining -= 1
                yield Message(delivery.subject, delivery.data, dict(delivery.headers))
    finally:
        await consumer.close()
        with contextlib.suppress(Exception):
            await js.delete_consumer(server_stream, name)
