"""Two ingests on the simulator split the markets with leases; one dies, the other takes over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import BookSnapshot, BookStatus
from polybus.common.leases import NatsLeaseStore
from polybus.common.streams import Definitions
from polybus.ingest.service import Ingest
from polybus.sim.server import Simulator
from tests.helpers import eventually
from tests.integration.test_ingest_sim import (
    Collector,
    all_live,
    ingest_settings,
    mismatched_books,
    ping_fence,
    sim_settings,
)

pytestmark = pytest.mark.timeout(120)

TTL = 2.0


def short_leases(definitions: Definitions) -> Definitions:
    buckets = tuple(
        msgspec.structs.replace(bucket, ttl_s=TTL) if bucket.name == "LEASES" else bucket
        for bucket in definitions.bucket
    )
    return msgspec.structs.replace(definitions, bucket=buckets)


class Overlaps:
    """Samples, many times a second, that no asset is followed by both ingests."""

    def __init__(self, ingests: list[Ingest]) -> None:
        self.ingests = ingests
        self.found: list[str] = []
        self.samples = 0

    async def run(self) -> None:
        while True:
            seen: set[str] = set()
            for ingest in self.ingests:
                tracked = set(ingest.engine.tracks)
                self.found.extend(sorted(seen & tracked))
                seen |= tracked
            self.samples += 1
            await asyncio.sleep(0.005)


def epochs_never_go_back(collector: Collector) -> list[str]:
    """Assets whose events went back to an older epoch after a newer one was seen."""
    latest: dict[str, int] = {}
    wrong = []
    for _, event in collector.events:
        asset_id = getattr(event, "asset_id", "")
        epoch = getattr(event, "epoch", 0)
        if not asset_id or not epoch:
            continue
        if epoch < latest.get(asset_id, 0):
            wrong.append(asset_id)
        latest[asset_id] = max(latest.get(asset_id, 0), epoch)
    return wrong


@asynccontextmanager
async def split_ingest(bus: NatsBus, sim: Simulator, name: str) -> AsyncIterator[Ingest]:
    store = await NatsLeaseStore.open(bus.js, bus.namespace)
    ingest = Ingest(
        bus,
        ingest_settings(sim, split_markets=True),
        partitions=16,
        lease_store=store,
        member=name,
    )
    async with ingest:
        yield ingest


async def kill(ingest: Ingest) -> None:
    """Stop an ingest the way SIGKILL would: its tasks and sockets end, its leases stay."""
    assert ingest._task is not None
    ingest._task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ingest._task
    await ingest.pool.close()
    ingest.leases = None  # nothing to give back on the way out


async def test_two_ingests_split_the_markets_and_one_takes_over_when_the_other_dies(
    bus: NatsBus, definitions: Definitions
) -> None:
    await bus.apply(short_leases(definitions))
    collector = Collector()
    subscription = await bus.subscribe(bus.namespace.subjects.market_data_all(), collector)
    settings = sim_settings(binary_markets=24, neg_risk_events=3, outcomes_per_event=3)
    async with (
        Simulator(settings) as sim,
        split_ingest(bus, sim, "first") as first,
        split_ingest(bus, sim, "second") as second,
    ):
        overlaps = Overlaps([first, second])
        sampler = asyncio.create_task(overlaps.run())
        every_asset = set(sim.asset_ids())

        def split_and_live() -> bool:
            tracked = set(first.engine.tracks) | set(second.engine.tracks)
            return (
                tracked == every_asset
                and bool(first.engine.tracks)
                and bool(second.engine.tracks)
                and all_live(first)
                and all_live(second)
            )

        await eventually(split_and_live, 30, "both ingests following half, every book live")
        assert first.held is not None
        assert second.held is not None
        assert sorted([len(first.held), len(second.held)]) == [8, 8]
        # All outcomes of a neg-risk event are followed by the same ingest.
        for info in list(first.selected.values()) + list(second.selected.values()):
            owners = {
                ingest
                for ingest in (first, second)
                for outcome in info.outcomes
                if outcome.token_id in ingest.engine.tracks
            }
            assert len(owners) == 1
        moved = set(first.engine.tracks)
        released = [s for s in collector.of(BookStatus) if s.reason == "partition_released"]
        old_epochs = {asset: first.engine.tracks[asset].epoch for asset in moved}

        await kill(first)
        overlaps.ingests.remove(first)  # a dead process follows nothing
        await eventually(
            lambda: set(second.engine.tracks) == every_asset and all_live(second),
            2 * TTL + 20,
            "the survivor following every market, every book live",
        )
        assert second.held == set(range(16))
        await sim.pause_flow()
        await sim.flush()
        await ping_fence(second)
        await eventually(lambda: not second.engine.outbox, 10, "the outbox drained")
        await bus.flush()
        assert mismatched_books(second, sim) == []
        for asset in moved:
            snapshots = [
                s for s in collector.of(BookSnapshot, asset) if s.epoch > old_epochs[asset]
            ]
            assert snapshots, f"no fresh snapshot under a new epoch for {asset}"
            assert second.engine.tracks[asset].epoch > old_epochs[asset]
        assert epochs_never_go_back(collector) == []
        # The dead ingest said nothing on the way out (it was killed): no status of its own.
        assert [s for s in collector.of(BookStatus) if s.reason == "partition_released"] == released
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        assert overlaps.found == []
        assert overlaps.samples > 100
        assert second.failed() is None
    await subscription.unsubscribe()
