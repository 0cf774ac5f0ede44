"""``polybus tail``: the events on a subject pattern, live or replayed from the streams.

Live, it subscribes with core NATS (what the MD stream captures is published that way). With
``since_ns`` it reads every stream that stores subjects the pattern matches, from that time on,
and goes on with live messages from the same consumers, so nothing falls between the replay
and the live part; streams are read side by side, each in its own order.

Output: one human line per event (:mod:`.tail_format`), or the event's JSON unchanged
(``json``), or a dead letter's verbatim input (``raw``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Literal, TextIO

from polybus.common.bus import Message
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DeadLetter, DecodeError, MarketInfo, decode
from polybus.common.operator.stream_reader import capturing_streams, intersect, read_stream
from polybus.common.operator.tail_format import MarketNames, clock, line
from polybus.common.streams import Definitions
from polybus.common.tasks import cancel_and_wait

OutputMode = Literal["human", "json", "raw"]
DEAD_LETTERS = "dlq.>"


def check_tail_options(
    pattern: str, definitions: Definitions, *, since: bool, mode: OutputMode
) -> str:
    """The problem with these options, or ``""``: a bad combination is a usage error."""
    if mode == "raw" and intersect(pattern, DEAD_LETTERS) is None:
        return f"--raw prints dead-lettered frames: {pattern!r} is not under {DEAD_LETTERS}"
    if since and not capturing_streams(pattern, definitions):
        return f"--since replays a stream, and no stream stores subjects matching {pattern!r}"
    return ""


async def load_market_names(bus: NatsBus, names: MarketNames) -> None:
    """Learn every market the MD stream holds a latest ``MarketInfo`` for."""
    subject = bus.namespace.subjects.market_data_kind("market")
    with contextlib.suppress(TimeoutError):
        for message in await bus.last_per_subject("MD", [subject]):
            with contextlib.suppress(DecodeError):
                event = decode(message.data)
                if isinstance(event, MarketInfo):
                    names.learn(event)


class _Printer:
    def __init__(self, mode: OutputMode, out: TextIO, count: int, done: asyncio.Event) -> None:
        self.mode = mode
        self.out = out
        self.count = count
        self.done = done
        self.names = MarketNames()
        self.printed = 0

    def show(self, message: Message) -> None:
        if self.done.is_set():
            return
        text = self._text(message)
        if text is None:
            return
        self.out.write(text + "\n")
        self.out.flush()
        self.printed += 1
        if self.count and self.printed >= self.count:
            self.done.set()

    def _text(self, message: Message) -> str | None:
        if self.mode == "json":
            return message.data.decode(errors="replace")
        try:
            event = decode(message.data)
        except DecodeError:
            if self.mode == "raw":
                return None
            return f"{clock(time.time_ns())} undecodable {message.subject} {message.data!r}"
        if self.mode == "raw":
            return event.raw if isinstance(event, DeadLetter) else None
        return line(event, self.names)


async def tail(
    bus: NatsBus,
    definitions: Definitions,
    pattern: str,
    *,
    since_ns: int | None,
    mode: OutputMode,
    count: int,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
) -> None:
    """Print what arrives on ``pattern`` (relative) until ``count`` lines or ``stop``."""
    done = stop if stop is not None else asyncio.Event()
    printer = _Printer(mode, out, count, done)
    if mode == "human":
        await load_market_names(bus, printer.names)
    async with asyncio.TaskGroup() as tasks:
        if since_ns is None:

            async def on_message(message: Message) -> None:
                printer.show(message)

            subscription = await bus.subscribe(
                bus.namespace.subjects.stream_subjects(pattern), on_message
            )
            try:
                await done.wait()
            finally:
                await subscription.unsubscribe()
            return
        readers = [
            tasks.create_task(_replay(bus, stream, filters, since_ns, printer.show))
            for stream, filters in capturing_streams(pattern, definitions)
        ]
        await done.wait()
        await cancel_and_wait(readers, None)


async def _replay(
    bus: NatsBus,
    stream: str,
    filters: list[str],
    since_ns: int,
    show: Callable[[Message], None],
) -> None:
    async for message in read_stream(
        bus.nc, bus.namespace, stream, filters, since_ns=since_ns, follow=True
    ):
        show(message)
