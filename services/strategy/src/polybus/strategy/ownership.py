"""Which market partitions this replica drives (DESIGN §5), behind a small interface.

The runtime needs only: the partitions it holds with the lease revision of each (the fencing
token every intent carries), a call when one is acquired, and a call when one is lost that is
*awaited before the lease is released*, so the cancels for the orders there are stored first.
:class:`SingleReplicaOwnership` is the one-replica case: every partition, revision 0 (an
intent made without a lease, which the executor does not fence); :class:`LeaseOwnership` the
leases of :mod:`polybus.common.leases` (``[strategy] partition_leases = true``), for any number
of replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from polybus.common.leases import LeaseKeeper, LeaseStore

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

    async def release(self) -> None:
        """A clean stop (after ``run`` was cancelled): ``on_lost`` for every partition, then
        give them up at once, so the other replicas need not wait out the TTL."""
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

    async def release(self) -> None:
        """Nothing to hand over: no other replica takes these partitions."""


class LeaseOwnership:
    """The partitions this replica wins in the ``LEASES`` bucket (:mod:`polybus.common.leases`),
    group ``strategy.<strategy_id>``, each with its lease token as the revision."""

    def __init__(self, store: LeaseStore, *, group: str, member: str, partitions: int) -> None:
        self._store = store
        self._group = group
        self._member = member
        self._partitions = partitions
        self.keeper: LeaseKeeper | None = None

    async def start(self, on_acquired: OnAcquired, on_lost: OnLost) -> None:
        self.keeper = LeaseKeeper(
            self._store,
            group=self._group,
            member=self._member,
            partitions=self._partitions,
            on_acquired=on_acquired,
            on_lost=on_lost,
        )
        await self.keeper.step()

    async def run(self) -> None:
        if self.keeper is None:
            raise RuntimeError("LeaseOwnership.run before start")
        await self.keeper.run()

    async def release(self) -> None:
        if self.keeper is not None:
            await self.keeper.release_all()
