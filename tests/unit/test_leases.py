"""Partition leases on the in-memory twin of the bucket and a controlled clock."""

from __future__ import annotations

import pytest

from polybus.common.leases import (
    LeaseKeeper,
    MemoryLeaseStore,
    current_token,
    decode_record,
    partition_key,
)

PARTITIONS = 16
TTL = 8.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Member:
    """A keeper with its own clock (a paused process's clock jumps) and a log of callbacks."""

    def __init__(self, store: MemoryLeaseStore, name: str) -> None:
        self.clock = Clock()
        self.clock.now = store.clock()
        self.events: list[tuple[str, int, int]] = []
        self.keeper = LeaseKeeper(
            store,
            group="ingest",
            member=name,
            partitions=PARTITIONS,
            on_acquired=self._acquired,
            on_lost=self._lost,
            clock=self.clock,
        )

    async def _acquired(self, partition: int, token: int) -> None:
        self.events.append(("acquired", partition, token))

    async def _lost(self, partition: int) -> None:
        self.events.append(("lost", partition, 0))

    def held(self) -> set[int]:
        return set(self.keeper.held())


class Group:
    """Members on one store; the store's clock is the server's, each member's runs with it."""

    def __init__(self) -> None:
        self.server_clock = Clock()
        self.store = MemoryLeaseStore(TTL, self.server_clock)
        self.members: dict[str, Member] = {}
        self.paused: set[str] = set()

    def add(self, name: str) -> Member:
        member = Member(self.store, name)
        self.members[name] = member
        return member

    def advance(self, seconds: float) -> None:
        # A paused process runs no code, but time passes for it too: when it wakes, its clock
        # has jumped.
        self.server_clock.now += seconds
        for member in self.members.values():
            member.clock.now += seconds

    async def round(self, seconds: float | None = None) -> None:
        """Time passes by a renew interval; every live member runs a round, checked after each."""
        self.advance(TTL / 4 if seconds is None else seconds)
        for name, member in self.members.items():
            if name not in self.paused:
                await member.keeper.step()
                self.assert_no_overlap()

    def assert_no_overlap(self) -> None:
        seen: dict[int, str] = {}
        for name, member in self.members.items():
            for partition in member.held():
                assert partition not in seen, f"partition {partition}: {seen[partition]}, {name}"
                seen[partition] = name

    def counts(self) -> dict[str, int]:
        return {name: len(m.held()) for name, m in self.members.items()}


async def test_one_member_takes_every_partition() -> None:
    group = Group()
    alone = group.add("a")
    await group.round()
    assert alone.held() == set(range(PARTITIONS))
    assert [kind for kind, _, _ in alone.events] == ["acquired"] * PARTITIONS


async def test_members_split_fairly_as_they_come_and_go() -> None:
    group = Group()
    group.add("a")
    await group.round()
    group.add("b")
    for _ in range(3):
        await group.round()
    assert group.counts() == {"a": 8, "b": 8}
    group.add("c")
    for _ in range(3):
        await group.round()
    assert sorted(group.counts().values()) == [4, 6, 6]
    assert sum(group.counts().values()) == PARTITIONS
    # c stops cleanly: its partitions are given back and taken at once.
    await group.members["c"].keeper.release_all()
    del group.members["c"]
    for _ in range(2):
        await group.round()
    assert group.counts() == {"a": 8, "b": 8}


async def test_a_silent_member_expires_and_its_partitions_move_only_after_the_ttl() -> None:
    group = Group()
    group.add("a")
    group.add("b")
    for _ in range(3):
        await group.round()
    b_held = group.members["b"].held()
    assert len(b_held) == 8
    group.paused.add("b")  # dies: no renewal, no release (and asked, it holds nothing)
    elapsed = 0.0
    while not b_held <= group.members["a"].held():
        await group.round(0.5)
        elapsed += 0.5
        if elapsed < TTL - TTL / 4:
            assert not b_held & group.members["a"].held(), "taken before the key expired"
        assert elapsed <= TTL + TTL / 4, "not moved within the TTL and a round"
    assert group.members["a"].held() == set(range(PARTITIONS))


async def test_a_paused_member_is_not_the_owner_before_anyone_may_take_its_partitions() -> None:
    group = Group()
    a, b = group.add("a"), group.add("b")
    for _ in range(3):
        await group.round()
    held_by_b = b.held()
    # b is paused (SIGSTOP, a long GC) and runs no code; the overlap check after every step
    # asks b what it holds, as its first line of code would on waking up.
    group.paused.add("b")
    while not held_by_b <= a.held():
        await group.round(0.25)
    assert b.held() == set()
    assert b.keeper.token(min(held_by_b)) is None
    group.assert_no_overlap()
    group.paused.clear()
    await b.keeper.step()
    assert {p for kind, p, _ in b.events if kind == "lost"} == held_by_b
    for _ in range(3):
        await group.round()
    assert group.counts() == {"a": 8, "b": 8}


async def test_a_member_that_cannot_renew_lets_go_before_the_key_expires() -> None:
    group = Group()
    a = group.add("a")
    await group.round()
    group.store.unreachable = True
    last_renewal = group.server_clock.now
    while a.held():
        await group.round(0.25)
    # Let go locally no later than a safety margin before the server could expire any key.
    assert group.server_clock.now <= last_renewal + TTL - TTL / 4 + 0.25
    assert {p for kind, p, _ in a.events if kind == "lost"} == set(range(PARTITIONS))
    group.store.unreachable = False
    assert await group.store.get(partition_key("ingest", 0)) is not None  # still on the server
    for _ in range(6):
        await group.round()
    assert a.held() == set(range(PARTITIONS))


async def test_the_token_grows_with_every_acquisition_and_stays_through_renewals() -> None:
    group = Group()
    a, b = group.add("a"), group.add("b")
    await group.round()
    first = a.keeper.token(3)
    assert first is not None
    for _ in range(3):
        await group.round()
    tokens: dict[int, list[int]] = {}
    for member in (a, b):
        for kind, partition, token in member.events:
            if kind == "acquired":
                tokens.setdefault(partition, []).append(token)
    assert all(values == sorted(set(values)) for values in tokens.values())
    assert any(len(values) > 1 for values in tokens.values()), "no partition moved"
    # Renewals keep the token; the stored key says which acquisition is current.
    for member in (a, b):
        for partition, token in member.keeper.held().items():
            entry = await group.store.get(partition_key("ingest", partition))
            assert entry is not None
            assert entry.revision > token or entry.revision == token
            assert current_token(entry) == token
            record = decode_record(entry.value)
            assert record is not None
            assert record.holder == member.keeper.member


async def test_on_lost_runs_before_the_key_is_released() -> None:
    group = Group()
    a = group.add("a")
    await group.round()
    seen_while_losing: list[bool] = []

    async def lost(partition: int) -> None:
        entry = await group.store.get(partition_key("ingest", partition))
        seen_while_losing.append(entry is not None)

    a.keeper.on_lost = lost
    await a.keeper.release_all()
    assert seen_while_losing == [True] * PARTITIONS
    assert await group.store.entries("ingest") == []


def test_bad_names_are_refused() -> None:
    store = MemoryLeaseStore(TTL, Clock())
    with pytest.raises(ValueError, match="group"):
        LeaseKeeper(store, group="a b", member="m", partitions=16)
    with pytest.raises(ValueError, match="member"):
        LeaseKeeper(store, group="ingest", member="m.x", partitions=16)


async def test_a_slow_hand_over_of_surplus_does_not_run_the_kept_leases_out() -> None:
    """Each surplus release awaits its on_lost (a strategy storing its cancels); eight slow
    ones in a round take longer than the safety margin, and the kept leases are renewed."""
    group = Group()
    first = group.add("a")
    await group.round()
    slow_s = TTL / 8

    async def slow_lost(partition: int) -> None:
        group.advance(slow_s)  # time passes while the cancels are stored

    first.keeper.on_lost = slow_lost
    group.add("b")
    await group.round()  # b announces itself
    await group.round()  # a gives up its surplus
    assert len(first.held()) == PARTITIONS // 2  # 8 hand-overs took TTL in all
    deadlines = [lease.deadline for lease in first.keeper.leases().values()]
    assert min(deadlines) > first.clock()
