"""LeaseFence on the in-memory lease bucket: the watch's tokens settle the common case, the
server settles everything else, and nothing stale is trusted for longer than ``trust_s``."""

from __future__ import annotations

from polybus.common.events import OrderIntent
from polybus.common.leases import LeaseKeeper, MemoryLeaseStore, partition_key, strategy_group
from polybus.executor.fencing import LeaseFence

TTL_S = 8.0
GROUP = strategy_group("maker")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def under(token: int, partition: int = 0) -> OrderIntent:
    return OrderIntent(
        event_id="e",
        ts_event=1,
        ts_init=1,
        intent_id="i",
        strategy_id="maker",
        action="place",
        condition_id="c",
        asset_id="a",
        partition=partition,
        lease_revision=token,
    )


async def held(store: MemoryLeaseStore, clock: Clock, member: str) -> tuple[LeaseKeeper, int]:
    keeper = LeaseKeeper(store, group=GROUP, member=member, partitions=1, clock=clock)
    await keeper.step()
    token = keeper.token(0)
    assert token is not None
    return keeper, token


async def test_a_token_the_watch_saw_costs_no_read_until_it_is_older_than_trust() -> None:
    clock = Clock()
    store = MemoryLeaseStore(TTL_S, clock)
    _, token = await held(store, clock, "a")
    fence = LeaseFence(store, clock=clock)
    entry = await store.get(partition_key(GROUP, 0))
    assert entry is not None
    fence.observe(entry)
    assert await fence.current(under(token)) == token
    assert fence.reads == 0
    clock.now += TTL_S / 2
    assert await fence.current(under(token)) == token
    assert fence.reads == 1  # too old to trust: asked the bucket


async def test_a_token_that_differs_from_the_one_seen_is_asked_of_the_server() -> None:
    clock = Clock()
    store = MemoryLeaseStore(TTL_S, clock)
    first, token_a = await held(store, clock, "a")
    fence = LeaseFence(store, clock=clock)
    await fence.current(under(token_a))
    await first.release_all()
    _, token_b = await held(store, clock, "b")
    # The watch has not delivered B's lease: B's intent is checked at the server and taken,
    # A's is refused from then on without another read.
    assert await fence.current(under(token_b)) == token_b
    reads = fence.reads
    assert await fence.current(under(token_a)) == token_b
    assert fence.reads == reads + 1


async def test_an_expired_lease_and_an_unreachable_bucket_are_no_lease() -> None:
    clock = Clock()
    store = MemoryLeaseStore(TTL_S, clock)
    _, token = await held(store, clock, "a")
    fence = LeaseFence(store, clock=clock)
    assert await fence.current(under(token)) == token
    clock.now += TTL_S  # the holder stopped renewing; the server expired the key
    assert await fence.current(under(token)) is None
    store.unreachable = True
    assert await fence.current(under(token)) is None
    assert await fence.current(under(7, partition=3)) is None


async def test_a_deleted_key_is_forgotten() -> None:
    clock = Clock()
    store = MemoryLeaseStore(TTL_S, clock)
    _, token = await held(store, clock, "a")
    fence = LeaseFence(store, clock=clock)
    await fence.current(under(token))
    fence.forget(partition_key(GROUP, 0))
    reads = fence.reads
    await fence.current(under(token))
    assert fence.reads == reads + 1
