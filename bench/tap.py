"""The bus observer of ``bench/e2e.py``, in a process of its own so that what it sees is not
delayed by the benchmark's other work (metrics scrapes, /proc reads, the feed's control).

    python -m bench.tap NATS_URL OUT_FILE

Keeps, from ``READY`` until ``STOP`` on stdin, every intent and execution event with the time
it arrived (``time.time_ns()``, the clock the services stamp their events with: INTENT keeps an
intent only until it is acked, so the stream cannot tell later), and measures the floor of a bus
hop beside them: bare nats-py, a publish on one connection to a subscriber on another, every
10 ms. Writes everything to ``OUT_FILE`` (msgpack: :class:`Observed`), then says ``DONE``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats
from nats.aio.msg import Msg

from polybus.common.subjects import Subjects

FLOOR_SUBJECT = "bench.e2e.floor"
FLOOR_INTERVAL_S = 0.01


class Observed(msgspec.Struct):
    """(arrival ns, payload) per subject family, and the bare hop's samples (ns)."""

    intents: list[tuple[int, bytes]]
    execution: list[tuple[int, bytes]]
    floor: list[int]


def _keep(into: list[tuple[int, bytes]]) -> Callable[[Msg], Awaitable[None]]:
    async def on_message(msg: Msg) -> None:
        into.append((time.time_ns(), msg.data))

    return on_message


async def observe(url: str, out: Path) -> None:
    observed = Observed(intents=[], execution=[], floor=[])
    tap = await nats.connect(url, name="bench-e2e-tap")
    publisher = await nats.connect(url, name="bench-e2e-floor-publisher")
    subscriber = await nats.connect(url, name="bench-e2e-floor-subscriber")
    subjects = Subjects()
    for subject, into in (
        (subjects.intent_all(), observed.intents),
        (subjects.execution_all(), observed.execution),
    ):
        # Slow-consumer limits far above a paced section's traffic: nothing seen is dropped.
        await tap.subscribe(
            subject, cb=_keep(into), pending_msgs_limit=4_000_000, pending_bytes_limit=2 << 30
        )

    async def on_floor(msg: Msg) -> None:
        observed.floor.append(time.time_ns() - int(msg.data))

    await subscriber.subscribe(FLOOR_SUBJECT, cb=on_floor)
    await tap.flush()
    await subscriber.flush()
    stop = asyncio.Event()

    async def floor() -> None:
        while not stop.is_set():
            await publisher.publish(FLOOR_SUBJECT, str(time.time_ns()).encode())
            await asyncio.sleep(FLOOR_INTERVAL_S)

    task = asyncio.create_task(floor())
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    stop.set()
    await task
    for connection in (publisher, tap, subscriber):
        await connection.drain()
    await asyncio.to_thread(out.write_bytes, msgspec.msgpack.encode(observed))
    print("DONE", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    arguments = parser.parse_args()
    asyncio.run(observe(arguments.url, arguments.out))


if __name__ == "__main__":
    main()
