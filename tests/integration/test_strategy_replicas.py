"""Strategy replicas split the 16 partitions with leases and never drive one at the same time;
a SIGKILLed replica's partitions move to the survivors within the TTL, its orders cancelled
before anything new is placed there.

A real nats-server with the ``LEASES`` bucket's TTL cut to 2 s, the simulator and an ingest
in-process, the executor on paper in-process, and ``spread_capture`` replicas as the
subprocesses an operator runs (``polybus strategy --name spread_capture --replica k``). Every
intent is read back from INTENT and every event from EXEC with its stream sequence, and "no
overlap at any instant" is checked from the intents' lease revisions (the fencing tokens) and
the executor's answers, not by sampling the replicas."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js import api
from nats.js.api import ConsumerInfo

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import (
    OrderEvent,
    OrderIntent,
    execution_decoder,
    intent_decoder,
)
from polybus.common.leases import NatsLeaseStore, current_token, decode_record, strategy_group
from polybus.common.streams import Definitions
from polybus.common.subjects import partition_of
from polybus.executor.service import DURABLE, INTENT_STREAM
from polybus.executor.service import run as run_executor
from polybus.ingest.service import Ingest
from polybus.sim.server import Simulator
from tests.conftest import REPO, NatsServerInfo
from tests.helpers import eventually, running
from tests.integration.test_executor_service import write_config
from tests.integration.test_ingest_scale import short_leases
from tests.integration.test_ingest_sim import all_live, ingest_settings, sim_settings

pytestmark = pytest.mark.timeout(180)

STRATEGY = "spread_capture"
GROUP = strategy_group(STRATEGY)
PARTITIONS = 16
MARKETS = 40
"""Binary markets: with the simulator's seed every one of the 16 partitions has some."""
STOP_S = 2.0
"""A replica must exit this soon after SIGTERM."""
WAIT_S = 60.0
OPEN = frozenset({"submitted", "accepted", "partially_filled", "unknown"})

# The keys of config/sim.toml's [strategy] tables, with spread_capture quoting every market it
# holds (re-chosen every second, so a partition taken over is quoted at once; position limits
# far above what the paper fills build up, so a flat market is always quoted; replaced at most
# every 2 s, which keeps 3 replicas' intents light on a shared 2-core machine) and the replicas
# named rep-1, rep-2, ... (instance "rep", --replica k).
STRATEGY_TABLES = """\
[strategy]
instance = "rep"
timer_interval_s = 1.0

[strategy.spread_capture]
replicas = 1
metrics_port = 0
auto_select_count = 1000
auto_select_interval_s = 1
auto_select_max_spread_ticks = 1000
narrow_spread_ticks = 1
quote_size = "10"
max_position_market = "100000"
max_position_total = "10000000"
min_replace_interval_ms = 2000
"""


def replica_of(intent_id: str) -> tuple[str, str]:
    """(replica, incarnation) of an intent id ``<strategy>.<replica>.<incarnation>.<n>``."""
    _, replica, incarnation, _ = intent_id.split(".")
    return replica, incarnation


def replica_of_member(member: str) -> str:
    """A lease holder's replica: member ids are ``<replica>-<8 hex>`` (leases.new_member_id)."""
    return member.rsplit("-", 1)[0]


class StreamLog:
    """Every message of one stream from its first, decoded, with its stream sequence: an
    ordered consumer, so in stream order, none missed, none twice."""

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self._decode = decode
        self.entries: list[tuple[int, Any]] = []

    async def receive(self, msg: Msg) -> None:
        self.entries.append((msg.metadata.sequence.stream, self._decode(msg.data)))

    @property
    def last_seq(self) -> int:
        return self.entries[-1][0] if self.entries else 0


class Trading:
    """The INTENT and EXEC streams as read back, and what the tests ask of them."""

    def __init__(self, bus: NatsBus, strategy_id: str | None = None) -> None:
        """``strategy_id``: read that strategy's intents and order events only (None: every
        one); both streams are followed whole, so :meth:`settle` can read them to the end."""
        self.bus = bus
        self.strategy_id = strategy_id
        self.intent_stream = bus.namespace.stream(INTENT_STREAM)
        self.exec_stream = bus.namespace.stream("EXEC")
        self.intent_log = StreamLog(intent_decoder.decode)
        self.exec_log = StreamLog(execution_decoder.decode)
        self._subscriptions: list[Any] = []

    async def follow(self) -> None:
        subjects = self.bus.namespace.subjects
        for subject, stream, log in (
            (subjects.intent_all(), self.intent_stream, self.intent_log),
            (subjects.execution_all(), self.exec_stream, self.exec_log),
        ):
            self._subscriptions.append(
                await self.bus.js.subscribe(
                    subject,
                    stream=stream,
                    cb=log.receive,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.ALL,
                )
            )

    async def close(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    # -- reading -------------------------------------------------------------------------------
    def _ours(self, event: OrderIntent | OrderEvent) -> bool:
        return self.strategy_id is None or event.strategy_id == self.strategy_id

    def intents(self) -> list[tuple[int, OrderIntent]]:
        return [
            (seq, e)
            for seq, e in self.intent_log.entries
            if isinstance(e, OrderIntent) and self._ours(e)
        ]

    def order_events(self) -> list[tuple[int, OrderEvent]]:
        return [
            (seq, e)
            for seq, e in self.exec_log.entries
            if isinstance(e, OrderEvent) and self._ours(e)
        ]

    def by_id(self) -> dict[str, tuple[int, OrderIntent]]:
        """Intent id -> (stream sequence, intent)."""
        return {intent.intent_id: (seq, intent) for seq, intent in self.intents()}

    def submitted(self) -> set[str]:
        """The intents the executor accepted: it published ``submitted`` for them."""
        return {e.order_id for _, e in self.order_events() if e.status == "submitted"}

    def rejections(self) -> dict[str, str]:
        """Intent id -> reason, for the intents the executor refused."""
        return {e.order_id: e.reason for _, e in self.order_events() if e.status == "rejected"}

    def last_status(self) -> dict[str, OrderEvent]:
        latest: dict[str, OrderEvent] = {}
        for _, event in self.order_events():
            latest[event.order_id] = event
        return latest

    def open_orders(self, replica: str | None = None) -> dict[str, OrderEvent]:
        """Orders whose latest event leaves them working (of one replica, or of all)."""
        return {
            order_id: event
            for order_id, event in self.last_status().items()
            if event.status in OPEN and (replica is None or replica_of(order_id)[0] == replica)
        }

    def unquoted(self, holders: dict[int, tuple[str, int]]) -> list[int]:
        """The partitions whose holder has had no quote accepted there under its lease."""
        submitted = self.submitted()
        driven = {
            (replica_of(i.intent_id)[0], i.partition, i.lease_revision)
            for _, i in self.intents()
            if i.action == "place" and i.intent_id in submitted
        }
        return sorted(p for p, (r, token) in holders.items() if (r, p, token) not in driven)

    def quoting(self, holders: dict[int, tuple[str, int]]) -> bool:
        """Every partition's holder has had a quote accepted there under its current lease."""
        return not self.unquoted(holders)

    async def settle(self) -> None:
        """Wait until the executor has answered every intent stored so far (it acks an intent
        after its events are on EXEC) and both logs have read that far."""
        js = self.bus.js
        intent_last = (await js.stream_info(self.intent_stream)).state.last_seq

        async def answered() -> bool:
            info: ConsumerInfo = await js.consumer_info(self.intent_stream, DURABLE)
            floor = info.ack_floor.stream_seq if info.ack_floor is not None else None
            return (floor or 0) >= intent_last

        await eventually(answered, WAIT_S, f"the executor answering INTENT up to {intent_last}")
        exec_last = (await js.stream_info(self.exec_stream)).state.last_seq
        await eventually(
            lambda: self.intent_log.last_seq >= intent_last and self.exec_log.last_seq >= exec_last,
            WAIT_S,
            "the INTENT and EXEC logs read to the end",
        )


Lease = tuple[int, int]
"""(partition, token)."""


def overlaps(trading: Trading) -> list[str]:
    """Every way the intents show two replicas driving one partition at once (empty: none)."""
    intents = trading.intents()
    return [
        *_without_a_lease(intents),
        *_shared_leases(intents),
        *_accepted_tokens_going_back(intents, trading.submitted()),
        *_superseded_places_not_refused(intents, trading.rejections()),
        *_places_after_giving_up(intents, trading.submitted()),
    ]


def _without_a_lease(intents: list[tuple[int, OrderIntent]]) -> list[str]:
    """Every intent, a cancel too, is made under a lease of its partition the replica holds."""
    return [
        f"{i.intent_id} ({i.action} {i.reason}) in partition {i.partition} without a lease"
        for _, i in intents
        if not i.lease_revision
    ]


def _shared_leases(intents: list[tuple[int, OrderIntent]]) -> list[str]:
    """(a) a lease (partition, token) is used by one replica incarnation only."""
    users: dict[Lease, set[tuple[str, str]]] = defaultdict(set)
    for _, intent in intents:
        if intent.lease_revision:
            users[intent.partition, intent.lease_revision].add(replica_of(intent.intent_id))
    return [f"lease {key} used by {sorted(who)}" for key, who in users.items() if len(who) > 1]


def _accepted_tokens_going_back(
    intents: list[tuple[int, OrderIntent]], submitted: set[str]
) -> list[str]:
    """(b) per partition, in stream order, the token of the places the executor accepted never
    goes down."""
    problems = []
    latest: dict[int, OrderIntent] = {}
    for _, intent in intents:
        if intent.action != "place" or intent.intent_id not in submitted:
            continue
        before = latest.get(intent.partition)
        if before is not None and intent.lease_revision < before.lease_revision:
            problems.append(f"{intent.intent_id} accepted after {before.intent_id}, older lease")
        else:
            latest[intent.partition] = intent
    return problems


def _superseded_places_not_refused(
    intents: list[tuple[int, OrderIntent]], rejections: dict[str, str]
) -> list[str]:
    """Once an intent under a newer lease of a partition is in the stream, the key held the
    newer token: a place under an older one after it must be refused ``stale_lease``."""
    problems = []
    newest: dict[int, int] = {}
    for _, intent in intents:
        if intent.action == "place" and intent.lease_revision < newest.get(intent.partition, 0):
            answer = rejections.get(intent.intent_id, "accepted")
            if answer != "stale_lease":
                problems.append(f"{intent.intent_id} under a superseded lease: {answer}")
        newest[intent.partition] = max(newest.get(intent.partition, 0), intent.lease_revision)
    return problems


def _places_after_giving_up(
    intents: list[tuple[int, OrderIntent]], submitted: set[str]
) -> list[str]:
    """(c) after a replica gave a partition up (its ``partition_lost`` cancels), no place of
    its under that lease, accepted or not."""
    problems = []
    given_up: dict[tuple[str, str, int, int], int] = {}
    for seq, intent in intents:
        key = (*replica_of(intent.intent_id), intent.partition, intent.lease_revision)
        if intent.action == "cancel" and intent.reason == "partition_lost":
            given_up.setdefault(key, seq)
        elif intent.action == "place" and key in given_up:
            verdict = "accepted" if intent.intent_id in submitted else "refused"
            problems.append(
                f"{intent.intent_id} placed in partition {intent.partition} after giving it up "
                f"at sequence {given_up[key]}, {verdict}"
            )
    return problems


class Replicas:
    """``polybus strategy --name spread_capture --replica k`` processes, by replica name."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, number: int) -> str:
        name = f"rep-{number}"
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            self.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "polybus.common.cli", "strategy", "--name", STRATEGY,
                "--config", str(self.config), "--replica", str(number),
                cwd=REPO, stdout=log, stderr=log,
            )  # fmt: skip
        return name

    async def stop(self, name: str) -> float:
        """SIGTERM; asserts a clean exit (0) within 2 s and returns how long it took."""
        process = self.processes[name]
        started, sent_at = time.monotonic(), time.time()
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), STOP_S)
        except TimeoutError:
            log = (self.logs / f"{name}.log").read_text().splitlines()[-3:]
            raise AssertionError(
                f"{name} still running {STOP_S}s after SIGTERM at {sent_at:.3f}; log: {log}"
            ) from None
        assert code == 0, f"{name} exited {code} on SIGTERM (log: {self.logs / name}.log)"
        return time.monotonic() - started

    async def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        await process.wait()

    async def close(self) -> None:
        """Whatever the test did: no replica outlives it."""
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()


@dataclass
class System:
    trading: Trading
    leases: NatsLeaseStore
    replicas: Replicas

    async def holders(self) -> dict[int, tuple[str, int]]:
        """Partition -> (replica, token) as the LEASES bucket has them now."""
        prefix = f"{GROUP}.partition."
        found: dict[int, tuple[str, int]] = {}
        for entry in await self.leases.entries(GROUP):
            if not entry.key.startswith(prefix):
                continue
            record = decode_record(entry.value)
            assert record is not None, f"{entry.key} holds no lease record"
            found[int(entry.key[len(prefix) :])] = (
                replica_of_member(record.holder),
                current_token(entry),
            )
        return found

    async def split_between(self, replicas: set[str]) -> dict[int, tuple[str, int]]:
        """Wait until ``replicas`` hold every partition, each its fair share at most, and
        each has a quote accepted in every partition it holds; the holders then."""
        share = math.ceil(PARTITIONS / len(replicas))
        holders: dict[int, tuple[str, int]] = {}

        async def split() -> bool:
            holders.clear()
            holders.update(await self.holders())
            counts = Counter(replica for replica, _ in holders.values())
            return (
                set(holders) == set(range(PARTITIONS))
                and set(counts) == replicas
                and max(counts.values()) <= share
                and self.trading.quoting(holders)
            )

        try:
            await eventually(
                split, WAIT_S, f"{sorted(replicas)} splitting the partitions, all quoting", 0.2
            )
        except AssertionError as error:
            unquoted = self.trading.unquoted(holders)
            raise AssertionError(f"{error}: holders {holders}, not quoting {unquoted}") from None
        return dict(holders)


@pytest.fixture
async def system(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> AsyncIterator[System]:
    """The simulator, an ingest and the paper executor running, the INTENT and EXEC logs
    followed; the test starts the replicas (any still running at the end are killed)."""
    await bus.apply(short_leases(definitions))
    config_file = tmp_path / "replicas.toml"
    config = write_config(config_file, nats_server.url, bus, extra=STRATEGY_TABLES)
    trading = Trading(bus)
    await trading.follow()
    replicas = Replicas(config_file, tmp_path)
    settings = sim_settings(binary_markets=MARKETS, neg_risk_events=0, changes_per_second=20.0)
    async with Simulator(settings) as sim:
        covered = {partition_of(m.condition_id, PARTITIONS) for m in sim.markets()}
        assert covered == set(range(PARTITIONS)), "some partition has no market"
        ingest = Ingest(bus, ingest_settings(sim), partitions=PARTITIONS)
        async with ingest, running(run_executor(config)) as executor:
            await eventually(lambda: all_live(ingest), 30, "every book live")
            try:
                yield System(trading, await NatsLeaseStore.open(bus.js, bus.namespace), replicas)
            finally:
                await replicas.close()
                await trading.close()
            assert not executor.done(), "the executor stopped"
            assert ingest.failed() is None


async def test_two_then_three_replicas_split_the_partitions_never_two_at_once(
    system: System,
) -> None:
    trading, replicas = system.trading, system.replicas
    first, second = await replicas.start(1), await replicas.start(2)
    holders = await system.split_between({first, second})
    assert sorted(Counter(r for r, _ in holders.values()).values()) == [8, 8]

    third = await replicas.start(3)
    holders = await system.split_between({first, second, third})
    counts = Counter(replica for replica, _ in holders.values())
    # Any fair split: nobody above ceil(16/3), so [4, 6, 6] or [5, 5, 6].
    assert sum(counts.values()) == PARTITIONS
    assert max(counts.values()) <= math.ceil(PARTITIONS / 3)

    stops = [await replicas.stop(name) for name in (first, second, third)]
    await trading.settle()

    assert overlaps(trading) == []
    intents = trading.intents()
    # Partitions changed hands with orders working (so (c) had something to check), and
    # more than one replica drove them over the test.
    assert any(i.reason == "partition_lost" for _, i in intents)
    drivers = defaultdict(set)
    for _, intent in intents:
        drivers[intent.partition].add(replica_of(intent.intent_id)[0])
    assert any(len(who) > 1 for who in drivers.values())
    # Clean stops cancelled every working order on the way out.
    assert trading.open_orders() == {}
    print(f"SIGTERM to exit: {', '.join(f'{s:.2f}s' for s in stops)}")


async def test_a_sigkilled_replicas_partitions_move_within_the_ttl_its_orders_cancelled_first(
    system: System,
) -> None:
    trading, replicas, ttl = system.trading, system.replicas, system.leases.ttl_s
    names = {await replicas.start(number) for number in (1, 2, 3)}
    holders = await system.split_between(names)
    victim = "rep-2"
    taken = {p: token for p, (replica, token) in holders.items() if replica == victim}

    await replicas.kill(victim)
    killed_at = time.monotonic()
    await trading.settle()  # its intents still in flight answered: what it left is known
    placed = trading.by_id()
    orphans = {order_id: placed[order_id][1].partition for order_id in trading.open_orders(victim)}
    assert orphans, f"{victim} had no working orders when it was killed"
    assert set(orphans.values()) <= taken.keys()
    # Its keys expire a TTL after its last renewal at the latest, the survivors take them in
    # their next round (every TTL/4); the margin, another TTL, is for the server's expiry timer
    # and a loaded machine.
    budget = ttl + ttl / 4 + ttl
    new_holders: dict[int, tuple[str, int]] = {}

    async def moved() -> bool:
        now = await system.holders()
        new_holders.clear()
        new_holders.update({p: now[p] for p in taken if p in now})
        return all(
            p in now and now[p][0] != victim and now[p][1] > token for p, token in taken.items()
        )

    await eventually(moved, budget - (time.monotonic() - killed_at), "the takeover", 0.05)
    took = time.monotonic() - killed_at
    try:
        await eventually(
            lambda: trading.quoting(new_holders) and not trading.open_orders(victim),
            WAIT_S,
            "the new holders quoting there, and the dead replica's orders finished",
            poll=0.2,
        )
    except AssertionError as error:
        left = {
            o: (e.status, placed[o][1].partition) for o, e in trading.open_orders(victim).items()
        }
        raise AssertionError(
            f"{error}: new holders {new_holders}, not quoting {trading.unquoted(new_holders)}, "
            f"{victim}'s orders still working (status, partition): {left}; "
            f"logs in {replicas.logs}"
        ) from None
    await trading.settle()

    intents, by_id, final = trading.intents(), trading.by_id(), trading.last_status()
    inherited_cancels = 0
    for partition, (holder, token) in sorted(new_holders.items()):
        theirs = [
            (seq, i) for seq, i in intents if (i.partition, i.lease_revision) == (partition, token)
        ]
        assert {replica_of(i.intent_id)[0] for _, i in theirs} == {holder}
        first_place = min(seq for seq, i in theirs if i.action == "place")
        for order_id in (o for o, p in orphans.items() if p == partition):
            end = final[order_id]
            if end.status == "filled":
                continue  # traded before anyone could cancel it (paper fills resting quotes)
            assert end.status == "canceled", f"{order_id} ended {end.status}"
            cancel_seq, cancel = by_id[end.reason.removeprefix("intent ")]
            assert (replica_of(cancel.intent_id)[0], cancel.reason, cancel.lease_revision) == (
                holder,
                "partition_inherited",
                token,
            ), f"{order_id} cancelled by {cancel.intent_id} ({cancel.reason})"
            assert cancel_seq < first_place, f"{holder} placed in {partition} before cancelling"
            inherited_cancels += 1
    assert inherited_cancels
    # Any intent it had in flight under its old lease that came after the takeover was refused
    # stale_lease (checked in overlaps); there may be none.
    rejections = trading.rejections()
    late = [
        i.intent_id
        for _, i in intents
        if replica_of(i.intent_id)[0] == victim and rejections.get(i.intent_id) == "stale_lease"
    ]

    for name in sorted(names - {victim}):
        await replicas.stop(name)
    await trading.settle()
    assert overlaps(trading) == []
    print(
        f"takeover after SIGKILL: {took:.2f}s (TTL {ttl}s, budget {budget}s); "
        f"{len(orphans)} orders left, {inherited_cancels} cancelled by the new holders; "
        f"{len(late)} late intents refused stale_lease"
    )
