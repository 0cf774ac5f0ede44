"""A durable-consumer worker for the kill test, run as its own process.

Usage: python bus_worker.py NATS_URL STREAM_PREFIX SUBJECT_PREFIX OUT_FILE

Appends each handled message's stream sequence to OUT_FILE (one O_APPEND write per message, so
the line is in the kernel before the ack leaves) and acks after the write, like a real service.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from polybus.common.bus import Delivery, consume
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.subjects import Namespace


async def main(url: str, stream_prefix: str, subject_prefix: str, out: str) -> None:
    bus = await NatsBus.connect(
        url, name="kill-test-worker", namespace=Namespace(subject_prefix, stream_prefix)
    )
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handle(delivery: Delivery) -> None:
        os.write(fd, f"{delivery.stream_sequence}\n".encode())

    try:
        await consume(
            bus.pull_consumer("WORK", "worker"), handle, stop=stop, batch=500, fetch_timeout=0.5
        )
    finally:
        os.close(fd)
        await bus.drain()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
