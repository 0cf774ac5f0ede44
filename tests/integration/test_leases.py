"""Partition leases on a real nats-server: a fair split, never two holders, failover in a TTL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.infra import RunningProcess
from polybus.common.leases import LeaseKeeper, NatsLeaseStore
from polybus.common.streams import BucketDefinition, Definitions
from polybus.common.subjects import Namespace
from tests.conftest import NatsServerInfo
from tests.helpers import RestartableNats, eventually

pytestmark = pytest.mark.timeout(120)

TTL = 2.0
PARTITIONS = 16
DEFINITIONS = Definitions(bucket=(BucketDefinition(name="LEASES", ttl_s=TTL),))
WORKER = Path(__file__).with_name("lease_worker.py")


@dataclass
class Log:
    """Every member's beliefs over time: (monotonic time, member, "acquired"/"lost", partition)."""

    events: list[tuple[float, str, str, int]] = field(default_factory=list)

    def intervals(self) -> dict[int, list[tuple[float, float, str]]]:
        """Per partition, each member's [acquired, lost] spans (open ones end now)."""
        spans: dict[int, list[tuple[float, float, str]]] = {}
        open_since: dict[tuple[str, int], float] = {}
        for at, member, kind, partition in self.events:
            if kind == "acquired":
                open_since[(member, partition)] = at
            else:
                start = open_since.pop((member, partition))
                spans.setdefault(partition, []).append((start, at, member))
        now = time.monotonic()
        for (member, partition), start in open_since.items():
            spans.setdefault(partition, []).append((start, now, member))
        return spans

    def assert_no_overlap(self) -> None:
        for partition, spans in self.intervals().items():
            spans.sort()
            for (_, end, first), (start, _, second) in itertools.pairwise(spans):
                assert end <= start, f"partition {partition}: {first} and {second} overlap"


class Members:
    """In-process members, each on its own connection, and a sampler of what they believe."""

    def __init__(self, url: str, namespace: Namespace, log: Log) -> None:
        self.url = url
        self.namespace = namespace
        self.log = log
        self.keepers: dict[str, LeaseKeeper] = {}
        self.overlaps: list[str] = []
        self.samples = 0
        self._buses: list[NatsBus] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, name: str) -> LeaseKeeper:
        bus = await NatsBus.connect(self.url, name=name, namespace=self.namespace)
        self._buses.append(bus)
        store = await NatsLeaseStore.open(bus.js, self.namespace)

        async def acquired(partition: int, token: int) -> None:
            self.log.events.append((time.monotonic(), name, "acquired", partition))

        async def lost(partition: int) -> None:
            self.log.events.append((time.monotonic(), name, "lost", partition))

        keeper = LeaseKeeper(
            store,
            group="test",
            member=name,
            partitions=PARTITIONS,
            on_acquired=acquired,
            on_lost=lost,
        )
        self.keepers[name] = keeper
        self._tasks.append(asyncio.create_task(keeper.run()))
        return keeper

    async def sample(self) -> None:
        # What every member would answer if asked now, many times a second.
        while True:
            seen: dict[int, str] = {}
            for name, keeper in self.keepers.items():
                for partition in keeper.held():
                    if partition in seen:
                        self.overlaps.append(f"{partition}: {seen[partition]} and {name}")
                    seen[partition] = name
            self.samples += 1
            await asyncio.sleep(0.005)

    def counts(self) -> list[int]:
        return sorted(len(keeper.held()) for keeper in self.keepers.values())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for bus in self._buses:
            await bus.drain(timeout=1.0)


@asynccontextmanager
async def members(url: str, namespace: Namespace, log: Log) -> AsyncIterator[Members]:
    group = Members(url, namespace, log)
    sampler = asyncio.create_task(group.sample())
    try:
        yield group
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await group.close()
    assert group.overlaps == []
    assert group.samples > 100
    log.assert_no_overlap()


async def test_three_members_split_sixteen_partitions_with_no_overlap(
    bus: NatsBus, nats_server: NatsServerInfo
) -> None:
    await bus.apply(DEFINITIONS)
    log = Log()
    async with members(nats_server.url, bus.namespace, log) as group:
        await group.start("a")
        await eventually(lambda: group.counts() == [16], 10, "a to hold everything")
        await group.start("b")
        await eventually(lambda: group.counts() == [8, 8], 10, "an even split of two")
        await group.start("c")
        await eventually(lambda: group.counts() == [4, 6, 6], 10, "a fair split of three")
        # A clean stop gives back at once: no wait for a TTL.
        stopped_at = time.monotonic()
        await group.keepers.pop("c").release_all()
        await eventually(lambda: group.counts() == [8, 8], 10, "the split of two again")
        assert time.monotonic() - stopped_at < TTL
    assert len({p for _, _, kind, p in log.events if kind == "acquired"}) == PARTITIONS


def worker_deadlines(path: Path) -> dict[int, float]:
    """The latest deadline the worker kept for each partition it ever held."""
    latest: dict[int, float] = {}
    if not path.exists():
        return latest
    for line in path.read_text().splitlines():
        for held in line.split()[1:]:
            partition, deadline = held.split(":")
            latest[int(partition)] = max(latest.get(int(partition), 0.0), float(deadline))
    return latest


def worker_holds(path: Path) -> set[int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {int(held.split(":")[0]) for held in lines[-1].split()[1:]} if lines else set()


async def test_a_sigkilled_members_partitions_move_within_the_ttl(
    bus: NatsBus, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    await bus.apply(DEFINITIONS)
    out = tmp_path / "worker.txt"
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        nats_server.url,
        bus.namespace.stream_prefix,
        "test",
        "worker",
        str(out),
    )
    log = Log()
    try:
        await eventually(lambda: len(worker_holds(out)) == 16, 20, "the worker to hold all")
        async with members(nats_server.url, bus.namespace, log) as group:
            await group.start("a")
            await group.start("b")
            # Fair: all 16 held, nobody above its share of ceil(16 / 3) = 6. Which fair split
            # it settles on ([4, 6, 6] or [5, 5, 6]) depends on how a and b race for the rest.
            await eventually(
                lambda: sorted([*group.counts(), len(worker_holds(out))]) in ([4, 6, 6], [5, 5, 6]),
                20,
                "a fair split of three",
            )
            lost = worker_holds(out)
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
            killed_at = time.monotonic()
            await eventually(lambda: group.counts() == [8, 8], 2 * TTL + 5, "the failover")
            moved_within = time.monotonic() - killed_at
            # The worker's lease was at most one round old when it died.
            assert moved_within <= TTL + TTL / 4 + 0.5, moved_within
            deadlines = worker_deadlines(out)
            for at, _, kind, partition in log.events:
                if kind == "acquired" and partition in lost:
                    assert at > deadlines[partition], f"partition {partition} taken too early"
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


@pytest.mark.slow
async def test_a_nats_restart_keeps_no_two_holders(tmp_path: Path) -> None:
    nats = RestartableNats(tmp_path / "js")

    first = nats.start()
    second: RunningProcess | None = None
    url = nats.url
    namespace = Namespace("", "R_")
    setup = await NatsBus.connect(url, name="setup", namespace=namespace)
    await setup.apply(DEFINITIONS)
    await setup.drain()
    log = Log()
    try:
        async with members(url, namespace, log) as group:
            await group.start("a")
            await group.start("b")
            await eventually(lambda: group.counts() == [8, 8], 10, "an even split")
            first.stop()
            # Down for longer than a holder may go without renewing: everyone lets go.
            await eventually(lambda: group.counts() == [0, 0], 2 * TTL, "every lease let go")
            second = nats.start()
            await eventually(lambda: group.counts() == [8, 8], 30, "the split again")
    finally:
        first.stop()
        if second is not None:
            second.stop()
