"""Rebuilding the executor's state from its own history on the EXEC stream (DESIGN §10).

Before the first intent, a restarted executor reads every ``OrderEvent`` and ``Fill`` it
published, from the start of the stream, with an ephemeral ordered consumer (no durable state
on the server, no acks) and folds them into a fresh ledger and position book: the orders'
latest states and every fill with its latest settlement status. Positions are therefore the
same as before the restart, as long as the stream keeps their fills (EXEC keeps 90 days).
Finished orders stay in the ledger (a filled order's trades still change settlement status);
the open ones are then reconciled with the venue.

The read ends at the stream's last sequence as it was when the rebuild started: what is
published later is the running executor's own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from polybus.common.events import DecodeError, Fill, OrderEvent, execution_decoder
from polybus.common.positions import PositionBook
from polybus.common.subjects import Namespace
from polybus.executor.orders import OrderLedger

_log = structlog.get_logger("polybus.executor.state")

EXEC_STREAM = "EXEC"


@dataclass(slots=True)
class RebuildStats:
    orders: int = 0
    open_orders: int = 0
    fills: int = 0
    messages: int = 0
    undecodable: int = 0


async def rebuild_state(
    js: JetStreamContext,
    namespace: Namespace,
    ledger: OrderLedger,
    positions: PositionBook,
    *,
    idle_timeout_s: float = 5.0,
) -> RebuildStats:
    """Fold the executor's past OrderEvents and Fills into ``ledger`` and ``positions``."""
    stream = namespace.stream(EXEC_STREAM)
    stats = RebuildStats()
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        _log.warning("state.no_stream", stream=stream, hint="run: polybus streams apply")
        return stats
    last = info.state.last_seq
    if info.state.messages == 0 or last == 0:
        return stats
    subjects = namespace.subjects
    done = asyncio.Event()
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        received.put_nowait(msg)

    subscription = await js.subscribe(
        subjects.stream_subjects("exec.>"),
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    try:
        while not done.is_set():
            try:
                msg = await asyncio.wait_for(received.get(), idle_timeout_s)
            except TimeoutError:
                _log.warning("state.rebuild_stalled", messages=stats.messages, last_seq=last)
                break
            stats.messages += 1
            _apply(msg.data, ledger, positions, stats)
            if msg.metadata.sequence.stream >= last or (msg.metadata.num_pending or 0) == 0:
                done.set()
    finally:
        await subscription.unsubscribe()
    stats.open_orders = sum(1 for _ in ledger.open_orders())
    _log.info(
        "state.rebuilt",
        orders=stats.orders,
        open_orders=stats.open_orders,
        fills=stats.fills,
        messages=stats.messages,
    )
    return stats


def _apply(data: bytes, ledger: OrderLedger, positions: PositionBook, stats: RebuildStats) -> None:
    try:
        event = execution_decoder.decode(data)
    except DecodeError:
        stats.undecodable += 1
        return
    if isinstance(event, OrderEvent):
        if event.status == "rejected" and event.order_id not in ledger:
            return  # refused before it became an order
        if event.order_id not in ledger:
            stats.orders += 1
        ledger.restore(event)
    elif isinstance(event, Fill):
        stats.fills += 1
        positions.on_fill(event)
