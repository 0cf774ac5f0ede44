"""A lease member in a process of its own, for the SIGKILL test.

Usage: python lease_worker.py NATS_URL STREAM_PREFIX GROUP MEMBER OUT_FILE

After every round it appends ``<monotonic now> <partition>:<deadline> ...`` (CLOCK_MONOTONIC is
one clock for every process of the host), so the test knows until when this member believed it
held each partition, also after it was killed without a word.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.leases import LeaseKeeper, NatsLeaseStore
from polybus.common.subjects import Namespace


async def main(url: str, stream_prefix: str, group: str, member: str, out: str) -> None:
    bus = await NatsBus.connect(url, name=member, namespace=Namespace("", stream_prefix))
    store = await NatsLeaseStore.open(bus.js, bus.namespace)
    keeper = LeaseKeeper(store, group=group, member=member, partitions=16)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while True:
        await keeper.step()
        # The deadlines as the keeper keeps them: the last moment it may act as the holder.
        held = " ".join(f"{p}:{lease.deadline}" for p, lease in sorted(keeper.leases().items()))
        os.write(fd, f"{time.monotonic()} {held}\n".encode())
        await asyncio.sleep(keeper.renew_interval_s)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
