"""Which market partitions this replica drives (DESIGN §5), behind a small interface.

The runtime needs only: the partitions it holds with the lease revision of each (the fencing
token every intent carries), a call when one is acquired, and a call when one is lost that is
*awaited before the lease is released*, so the cancels for the orders there are stored first.
:class:`SingleReplicaOwnership` is the one-replica case: every partition, revision 0 (an
intent made without a lease, which the executor does not fence). The leases of
``polybus.common.leases`` plug in behind the same interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

OnAcquired = Callable[[int, int], Awaitable[None]]
"""``on_acquired(partition, revision)``."""
OnLost = Callable[[int], Awaitable[None]]
"""``on_lost(partition)``: awaited before the partition's lease is released."""


class PartitionOwnership(Protocol):
    async def start(self, on_acquired: OnAcquired, on_lost: OnLost) -> None:
        """Take the first partitions (``on_acquired`` for each) and remember the callbacks."""
        ...

    async def run(self) -> None:
        """Keep the leases (renew, take, give up) until cancelled."""
        ...


class SingleReplicaOwnership:
    """This replica owns every partition, unfenced (revision 0), for as long as it runs."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    async def start(self, on_acquired: OnAcquired, on_lost: OnLost) -> None:
        for partition in range(self.partitions):
            await on_acquired(partition, 0)

    async def run(self) -> None:
        await asyncio.Event().wait()
