"""Partition leases: the members of a group split P partitions, never two holding one at once.

A *group* (``ingest``, ``strategy.spread_capture``) is every process doing the same work; each
process is a *member* with an id unique to the process. The members split the partitions
0..P-1 (DESIGN §4-§5) through keys in the ``LEASES`` KV bucket:

- ``<group>.member.<member>``: "I am alive", rewritten every round.
- ``<group>.partition.<n>``: the holder of partition n, created only if absent (put-if-absent)
  and renewed only by compare-and-set on the revision the holder last wrote.

Nothing is ever taken from a live holder: the bucket's max age (its TTL) removes a key that
was not rewritten for a TTL, on the server's clock, and only then can another member create it.
The holder, on its own monotonic clock, stops considering itself the owner at
``send time of its last successful write + TTL - safety margin``, so it lets go before the
server could hand the key to anyone else, also when NATS is unreachable or the process was
paused. See docs/architecture.md, "Leases", for the timing and the reasons.

Each lease carries a *token*: the revision at which it was acquired. It only grows (the
bucket's sequence) and stays the same across renewals; an intent carries it and the executor
refuses one whose token is no longer :func:`current_token` (fencing).

:class:`LeaseKeeper` runs one member; :class:`NatsLeaseStore` is the bucket on a real
nats-server, :class:`MemoryLeaseStore` its in-memory twin on an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from polybus.common.subjects import Namespace

LEASE_BUCKET = "LEASES"
"""The KV bucket holding every group's leases (its max age is the lease TTL)."""

_log = structlog.get_logger("polybus.leases")
_GROUP = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_WRONG_LAST_SEQUENCE = (10071, 10164)

T = TypeVar("T")
Clock = Callable[[], float]
OnAcquired = Callable[[int, int], Awaitable[None]]
OnLost = Callable[[int], Awaitable[None]]


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The value of a partition or membership key."""

    holder: str
    token: int = 0
    """The revision the lease was acquired at; 0 in the acquiring write (its own revision)."""
    ts_ns: int = 0
    """Wall-clock time of the write, for people reading the bucket (never for decisions)."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LeaseRecord)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A key's latest value and revision in the store."""

    key: str
    value: bytes
    revision: int


class LeaseConflict(Exception):
    """The key's revision is not the one expected: someone else wrote (or removed) it."""


class LeaseStore(Protocol):
    """What leases need from a KV bucket: put-if-absent, compare-and-set, expiry after ``ttl_s``."""

    ttl_s: float

    async def entries(self, prefix: str) -> list[StoredEntry]:
        """Every live (not deleted, not expired) key under ``prefix`` (``<prefix>.>``)."""
        ...

    async def get(self, key: str) -> StoredEntry | None: ...
    async def create(self, key: str, value: bytes) -> int:
        """Write ``key`` only if absent; its new revision. Raises :class:`LeaseConflict`."""
        ...

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write ``key`` only if its revision is ``revision``. Raises :class:`LeaseConflict`."""
        ...

    async def delete(self, key: str, revision: int) -> None:
        """Remove ``key`` only if its revision is ``revision``. Raises :class:`LeaseConflict`."""
        ...

    async def put(self, key: str, value: bytes) -> int: ...


def strategy_group(strategy_id: str) -> str:
    """The lease group of one strategy's replicas (the executor fences its intents by it)."""
    return f"strategy.{strategy_id}"


def partition_key(group: str, partition: int) -> str:
    return f"{group}.partition.{partition}"


def member_key(group: str, member: str) -> str:
    return f"{group}.member.{member}"


def new_member_id(instance: str) -> str:
    """A member id unique to this process: two processes on one host never share one."""
    return f"{instance}-{uuid.uuid4().hex[:8]}"


def decode_record(data: bytes) -> LeaseRecord | None:
    """The record in a value, or None if it is not one (never raises)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


def current_token(entry: StoredEntry) -> int:
    """The fencing token of the lease a partition key holds now (the executor compares an
    intent's token with this; an intent under an older acquisition is stale)."""
    record = decode_record(entry.value)
    return record.token if record is not None and record.token else entry.revision


# -- stores -----------------------------------------------------------------------------------


class NatsLeaseStore:
    """The lease bucket on a real nats-server. Create with :meth:`open`."""

    def __init__(self, kv: KeyValue, ttl_s: float, *, timeout: float = 2.0) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self._timeout = timeout

    @classmethod
    async def open(
        cls, js: JetStreamContext, namespace: Namespace, bucket: str = LEASE_BUCKET
    ) -> NatsLeaseStore:
        """The bucket as ``polybus streams apply`` created it; its max age is the TTL."""
        kv = await js.key_value(namespace.bucket(bucket))
        ttl = (await kv.status()).ttl
        if not ttl:
            raise ValueError(f"KV bucket {namespace.bucket(bucket)} has no TTL: leases need one")
        return cls(kv, float(ttl))

    async def entries(self, prefix: str) -> list[StoredEntry]:
        # A last-per-subject watch: one server round trip for every key of the group.
        watcher = await self.kv.watch(f"{prefix}.>", ignore_deletes=True)
        found: list[StoredEntry] = []
        try:
            while True:
                entry = await watcher.updates(timeout=self._timeout)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                found.append(StoredEntry(entry.key, entry.value or b"", entry.revision or 0))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        return found

    async def get(self, key: str) -> StoredEntry | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return StoredEntry(key, entry.value or b"", entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        try:
            return await self.kv.create(key, value)
        except KeyWrongLastSequenceError as error:
            raise LeaseConflict(key) from error

    async def update(self, key: str, value: bytes, revision: int) -> int:
        try:
            return await self.kv.update(key, value, last=revision)
        except KeyWrongLastSequenceError as error:
            raise LeaseConflict(key) from error

    async def delete(self, key: str, revision: int) -> None:
        try:
            await self.kv.delete(key, last=revision)
        except APIError as error:
            if error.err_code in _WRONG_LAST_SEQUENCE:
                raise LeaseConflict(key) from error
            raise

    async def put(self, key: str, value: bytes) -> int:
        return await self.kv.put(key, value)


class MemoryLeaseStore:
    """The in-memory twin of the bucket: same rules, expiry on an injectable clock."""

    def __init__(self, ttl_s: float, clock: Clock) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.revision = 0
        self._entries: dict[str, tuple[StoredEntry, float]] = {}
        self.unreachable = False
        """While set every call raises ConnectionError (a NATS outage)."""

    def _live(self, key: str) -> StoredEntry | None:
        if self.unreachable:
            raise ConnectionError("store unreachable")
        found = self._entries.get(key)
        if found is None:
            return None
        entry, written = found
        if self.clock() - written >= self.ttl_s:
            del self._entries[key]
            return None
        return entry

    def _write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self._entries[key] = (StoredEntry(key, value, self.revision), self.clock())
        return self.revision

    async def entries(self, prefix: str) -> list[StoredEntry]:
        keys = [key for key in self._entries if key.startswith(f"{prefix}.")]
        return [entry for key in keys if (entry := self._live(key)) is not None]

    async def get(self, key: str) -> StoredEntry | None:
        return self._live(key)

    async def create(self, key: str, value: bytes) -> int:
        if self._live(key) is not None:
            raise LeaseConflict(key)
        return self._write(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        entry = self._live(key)
        if entry is None or entry.revision != revision:
            raise LeaseConflict(key)
        return self._write(key, value)

    async def delete(self, key: str, revision: int) -> None:
        entry = self._live(key)
        if entry is None or entry.revision != revision:
            raise LeaseConflict(key)
        del self._entries[key]

    async def put(self, key: str, value: bytes) -> int:
        self._live(key)
        return self._write(key, value)


# -- the keeper -------------------------------------------------------------------------------


@dataclass(slots=True)
class HeldLease:
    """One partition this member holds."""

    partition: int
    token: int
    """The fencing token: the revision the lease was acquired at."""
    revision: int
    """The key's latest revision (what the next renewal compares against)."""
    deadline: float
    """On the keeper's clock: past it, this member is no longer the owner."""


_STORE_ERRORS = (TimeoutError, OSError, nats.errors.Error)
"""A store call that failed without an answer: the round ends, leases keep their deadlines."""


async def _ignore_acquired(partition: int, token: int) -> None:
    return None


async def _ignore_lost(partition: int) -> None:
    return None


class LeaseKeeper:
    """One member of a group: claims its fair share of the partitions, renews, lets go.

    ``on_acquired(partition, token)`` is awaited once a lease is won; ``on_lost(partition)`` is
    awaited when it ends (expired locally, taken over, surplus, shutdown) and *before* the key
    is released for others, so a strategy cancels its working orders there first. Both run on
    the keeper's task: keep them short (well under the safety margin); hand long work to a
    task of your own.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        group: str,
        member: str,
        partitions: int,
        on_acquired: OnAcquired = _ignore_acquired,
        on_lost: OnLost = _ignore_lost,
        clock: Clock = time.monotonic,
    ) -> None:
        if not _GROUP.match(group):
            raise ValueError(f"lease group {group!r} must be dot-separated name tokens")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", member):
            raise ValueError(f"lease member id {member!r} must be one name token")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.store = store
        self.group = group
        self.member = member
        self.partitions = partitions
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.clock = clock
        ttl = store.ttl_s
        self.ttl_s = ttl
        self.renew_interval_s = ttl / 4
        """A round (renew, read, balance) this often: three missed renewals before expiry."""
        self.safety_margin_s = ttl / 4
        """Let go this long before the server can expire the key: room for a late on_lost,
        event-loop lag and the server's expiry timer firing a little early."""
        self._request_timeout_s = ttl / 4
        self._leases: dict[int, HeldLease] = {}
        self.members = 1
        """Live members seen in the latest round (this one included)."""
        self.rounds = 0
        self.failed_rounds = 0
        self._offset = int.from_bytes(hashlib.blake2b(member.encode(), digest_size=4).digest())

    # -- what this member holds ---------------------------------------------------------------
    def held(self) -> dict[int, int]:
        """Partition -> token of every lease still valid now."""
        now = self.clock()
        return {p: lease.token for p, lease in self._leases.items() if now < lease.deadline}

    def leases(self) -> dict[int, HeldLease]:
        """Every lease as kept, deadlines included (past its deadline a lease is not held)."""
        return dict(self._leases)

    def owns(self, partition: int) -> bool:
        lease = self._leases.get(partition)
        return lease is not None and self.clock() < lease.deadline

    def token(self, partition: int) -> int | None:
        """The fencing token of a partition held now, else None."""
        lease = self._leases.get(partition)
        return lease.token if lease is not None and self.clock() < lease.deadline else None

    def fair_share(self) -> int:
        return math.ceil(self.partitions / max(1, self.members))

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Rounds until cancelled (cancelling does not release: call :meth:`release_all`)."""
        while True:
            started = self.clock()
            await self.step()
            wake = started + self.renew_interval_s
            if self._leases:
                wake = min(wake, min(lease.deadline for lease in self._leases.values()))
            await asyncio.sleep(max(0.0, wake - self.clock()))

    async def step(self) -> None:
        """One round: drop what expired, renew, read the group, give up surplus, claim."""
        self.rounds += 1
        await self._expire()
        try:
            await self._renew()
            entries = await self._bounded(self.store.entries(self.group))
            await self._balance(entries)
        except _STORE_ERRORS as error:
            self.failed_rounds += 1
            _log.warning("lease.round_failed", group=self.group, error=repr(error))
        await self._expire()

    async def release_all(self) -> None:
        """Give every lease back at once (clean shutdown): on_lost, then delete the key."""
        for partition in sorted(self._leases):
            await self._release(partition)
        # Gone from the member count at once: the others rebalance without waiting a TTL.
        with contextlib.suppress(LeaseConflict, *_STORE_ERRORS):
            entry = await self._bounded(self.store.get(member_key(self.group, self.member)))
            if entry is not None:
                await self._bounded(self.store.delete(entry.key, entry.revision))

    # -- a round's parts ----------------------------------------------------------------------
    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        # No store call may outlive the earliest deadline: at that moment on_lost must run.
        limit = self._request_timeout_s
        if self._leases:
            earliest = min(lease.deadline for lease in self._leases.values())
            limit = min(limit, max(0.0, earliest - self.clock()))
        async with asyncio.timeout(limit):
            return await awaitable

    async def _expire(self) -> None:
        now = self.clock()
        for partition in [p for p, lease in self._leases.items() if now >= lease.deadline]:
            del self._leases[partition]
            _log.warning("lease.expired", group=self.group, partition=partition)
            await self.on_lost(partition)

    def _record(self, token: int = 0) -> bytes:
        return _encoder.encode(LeaseRecord(holder=self.member, token=token, ts_ns=time.time_ns()))

    async def _renew(self) -> None:
        for partition in sorted(self._leases):
            lease = self._leases.get(partition)
            if lease is None:
                continue
            sent = self.clock()
            key = partition_key(self.group, partition)
            revision: int | None
            try:
                revision = await self._bounded(
                    self.store.update(key, self._record(lease.token), lease.revision)
                )
            except LeaseConflict:
                revision = await self._recover(lease, key)
            if revision is None:
                del self._leases[partition]
                _log.warning("lease.taken", group=self.group, partition=partition)
                await self.on_lost(partition)
                continue
            lease.revision = revision
            lease.deadline = sent + self.ttl_s - self.safety_margin_s
        await self._bounded(self.store.put(member_key(self.group, self.member), self._record()))

    async def _recover(self, lease: HeldLease, key: str) -> int | None:
        """A renewal whose answer was lost may have landed: if the key still names this lease,
        write it again on the revision found (with a known send time); else it is gone."""
        entry = await self._bounded(self.store.get(key))
        record = decode_record(entry.value) if entry is not None else None
        if entry is None or record is None or record.holder != self.member:
            return None
        if current_token(entry) != lease.token:
            return None
        try:
            return await self._bounded(
                self.store.update(key, self._record(lease.token), entry.revision)
            )
        except LeaseConflict:
            return None

    async def _balance(self, entries: list[StoredEntry]) -> None:
        members, holders = self._read_group(entries)
        self.members = len(members)
        share = self.fair_share()
        await self._drop_strays(holders)
        for partition in sorted(self._leases, reverse=True)[: max(0, len(self._leases) - share)]:
            # Each release waits for its on_lost (a strategy storing its cancels): renew what is
            # kept when it runs short, so slow hand-overs cannot run the other leases out.
            if self._leases and self._shortest_left() < self.renew_interval_s:
                await self._renew()
            await self._release(partition)
        wanted = share - len(self._leases)
        # Start at a member-specific place, so members joining together rarely race for a key.
        order = [(self._offset + i) % self.partitions for i in range(self.partitions)]
        for partition in order:
            if wanted <= 0:
                break
            if partition in holders or partition in self._leases:
                continue
            if await self._claim(partition):
                wanted -= 1

    def _shortest_left(self) -> float:
        return min(lease.deadline for lease in self._leases.values()) - self.clock()

    def _read_group(self, entries: list[StoredEntry]) -> tuple[set[str], dict[int, StoredEntry]]:
        """The live members (this one included) and the partition keys present."""
        members = {self.member}
        holders: dict[int, StoredEntry] = {}
        member_prefix = f"{self.group}.member."
        partition_prefix = f"{self.group}.partition."
        for entry in entries:
            if entry.key.startswith(member_prefix):
                members.add(entry.key[len(member_prefix) :])
            elif entry.key.startswith(partition_prefix):
                suffix = entry.key[len(partition_prefix) :]
                if suffix.isdigit() and int(suffix) < self.partitions:
                    holders[int(suffix)] = entry
        return members, holders

    async def _drop_strays(self, holders: dict[int, StoredEntry]) -> None:
        """Release keys naming this member that it does not hold: a write whose answer was
        lost, a lease it already let go of locally (on_lost has run, or never applied)."""
        for partition, entry in list(holders.items()):
            record = decode_record(entry.value)
            if partition in self._leases or record is None or record.holder != self.member:
                continue
            with contextlib.suppress(LeaseConflict):
                await self._bounded(self.store.delete(entry.key, entry.revision))
            del holders[partition]

    async def _claim(self, partition: int) -> bool:
        sent = self.clock()
        try:
            revision = await self._bounded(
                self.store.create(partition_key(self.group, partition), self._record())
            )
        except LeaseConflict:
            return False
        deadline = sent + self.ttl_s - self.safety_margin_s
        if self.clock() >= deadline:
            return False  # won too late to use; the key is released next round
        self._leases[partition] = HeldLease(partition, revision, revision, deadline)
        _log.info("lease.acquired", group=self.group, partition=partition, token=revision)
        await self.on_acquired(partition, revision)
        return True

    async def _release(self, partition: int) -> None:
        lease = self._leases.pop(partition, None)
        if lease is None:
            return
        _log.info("lease.released", group=self.group, partition=partition)
        await self.on_lost(partition)
        with contextlib.suppress(LeaseConflict, *_STORE_ERRORS):
            await self._bounded(
                self.store.delete(partition_key(self.group, partition), lease.revision)
            )
