"""The executor service as `polybus executor` runs it (in-process here), paper mode, on a real
nats-server: intents published with JetStream acks on ``intent.<strategy>.<condition>``, market
data on the MD stream, every answer read back from EXEC. PostgreSQL is not running for any of
these tests (the config names a port nothing listens on): the executor must not care.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from polybus.common.bus import Message
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config, load_config
from polybus.common.events import (
    BookSnapshot,
    Event,
    Fill,
    Level,
    MarketInfo,
    OrderEvent,
    OrderIntent,
    Outcome,
    PositionSnapshot,
    RiskEvent,
    execution_decoder,
)
from polybus.common.halt import set_halt
from polybus.common.leases import LeaseKeeper, NatsLeaseStore, strategy_group
from polybus.common.money import MICROS
from polybus.common.plugins import discover_plugins, section_types
from polybus.common.runtime import now_ns
from polybus.common.streams import Definitions
from polybus.common.subjects import partition_of
from polybus.executor.service import run
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually, running

pytestmark = pytest.mark.timeout(60)

STRATEGY = "maker"
CONDITION = "0x" + "ab" * 32
YES = "1" * 70
NO = "2" * 70
TICK = 10_000
MIN_SIZE = 5 * MICROS
EVENT_TIMEOUT_S = 10.0
_ids = itertools.count(1)
T = TypeVar("T")


def write_config(
    path: Path, nats_url: str, bus: NatsBus, executor: str = "", extra: str = "", risk: str = ""
) -> Config:
    path.write_text(
        f'{extra}[bus]\nurl = "{nats_url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
        # Nothing listens on port 1: no PostgreSQL anywhere.
        '[database]\nurl = "postgresql://postgres@127.0.0.1:1/polybus"\n'
        f"[executor]\nmetrics_port = 0\n{executor}"
        '[executor.risk.strategy]\nmax_intent_age_s = 60.0\nmax_order_notional = "250"\n'
        f"{risk}"
    )
    return load_config(path, section_types(discover_plugins()))


async def publish_market(bus: NatsBus, *, bids: list[Level], asks: list[Level]) -> None:
    """A market with one YES book in the MD stream, as the ingest would have left it."""
    subjects = bus.namespace.subjects
    part = partition_of(CONDITION, 16)
    now = now_ns()
    info = MarketInfo(
        event_id=f"market.{CONDITION}",
        ts_event=now,
        ts_init=now,
        condition_id=CONDITION,
        question="Will the test pass?",
        slug="test-pass",
        outcomes=(Outcome(token_id=YES, outcome="Yes"), Outcome(token_id=NO, outcome="No")),
        tick_size=TICK,
        min_order_size=MIN_SIZE,
    )
    await bus.publish_persistent(subjects.market(part, CONDITION), info, msg_id=info.event_id)
    snapshot = BookSnapshot(
        event_id=f"book.{YES}.1",
        ts_event=now,
        ts_init=now,
        asset_id=YES,
        condition_id=CONDITION,
        seq=1,
        epoch=1,
        bids=tuple(bids),
        asks=tuple(asks),
        tick_size=TICK,
        min_order_size=MIN_SIZE,
    )
    await bus.publish_persistent(subjects.book(part, YES), snapshot, msg_id=snapshot.event_id)


def intent(**fields: Any) -> OrderIntent:
    number = next(_ids)
    values: dict[str, Any] = {
        "event_id": f"intent-event-{number}",
        "ts_event": now_ns(),
        "ts_init": now_ns(),
        "intent_id": f"intent-{number}-{now_ns()}",
        "strategy_id": STRATEGY,
        "action": "place",
        "condition_id": CONDITION,
        "asset_id": YES,
        "side": "BUY",
        "price": 400_000,
        "size": 10 * MICROS,
    }
    values.update(fields)
    return OrderIntent(**values)


class Execution:
    """Every event the executor publishes on EXEC, decoded, in arrival order."""

    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    async def receive(self, message: Message) -> None:
        self.events.append(execution_decoder.decode(message.data))
        self.changed.set()

    async def send(self, order: OrderIntent, *, msg_id: str | None = None) -> None:
        subject = self.bus.namespace.subjects.intent(order.strategy_id, order.condition_id)
        await self.bus.publish_persistent(subject, order, msg_id=msg_id or order.intent_id)

    def orders(self, order_id: str) -> list[OrderEvent]:
        return [e for e in self.events if isinstance(e, OrderEvent) and e.order_id == order_id]

    def statuses(self, order_id: str) -> list[str]:
        return [event.status for event in self.orders(order_id)]

    def of_type(self, kind: type[T]) -> list[T]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        await eventually(condition, EVENT_TIMEOUT_S, what, poll=0.02)

    async def status(self, order_id: str, status: str) -> OrderEvent:
        await self.wait_for(f"{order_id} {status}", lambda: status in self.statuses(order_id))
        return next(e for e in self.orders(order_id) if e.status == status)


def executor_running(config: Config) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running(run(config))


@pytest.fixture
async def execution(bus: NatsBus, definitions: Definitions) -> AsyncIterator[Execution]:
    await bus.apply(definitions)
    watcher = Execution(bus)
    subscription = await bus.subscribe(bus.namespace.subjects.execution_all(), watcher.receive)
    await publish_market(
        bus,
        bids=[Level(390_000, 100 * MICROS)],
        asks=[Level(410_000, 20 * MICROS), Level(420_000, 100 * MICROS)],
    )
    yield watcher
    await subscription.unsubscribe()


@pytest.fixture
def config(tmp_path: Path, nats_server: NatsServerInfo, bus: NatsBus) -> Config:
    return write_config(tmp_path / "executor.toml", nats_server.url, bus)


async def test_paper_intents_become_orders_fills_and_positions(
    execution: Execution, config: Config
) -> None:
    resting = intent(price=380_000)
    taking = intent(price=410_000, size=10 * MICROS, time_in_force="FAK")
    async with executor_running(config):
        await execution.send(resting)
        await execution.send(taking)
        await execution.status(resting.intent_id, "accepted")
        filled = await execution.status(taking.intent_id, "filled")
        await execution.wait_for("a position", lambda: bool(execution.of_type(PositionSnapshot)))
    assert execution.statuses(resting.intent_id) == ["submitted", "accepted"]
    assert execution.statuses(taking.intent_id)[:2] == ["submitted", "accepted"]
    assert filled.filled_size == 10 * MICROS
    [fill] = execution.of_type(Fill)
    assert (fill.order_id, fill.price, fill.size, fill.settlement) == (
        taking.intent_id,
        410_000,
        10 * MICROS,
        "CONFIRMED",
    )
    position = execution.of_type(PositionSnapshot)[-1]
    assert (position.strategy_id, position.asset_id, position.size) == (STRATEGY, YES, 10 * MICROS)
    assert position.average_price == 410_000


async def test_the_same_intent_delivered_twice_makes_one_order(
    execution: Execution, config: Config, bus: NatsBus
) -> None:
    once = intent(price=380_000)
    marker = intent(price=370_000)
    async with executor_running(config):
        await execution.send(once)
        # A republication past the stream's dedup (another message id): a new message.
        await execution.send(once, msg_id=f"{once.intent_id}-again")
        await execution.send(marker)
        await execution.status(marker.intent_id, "accepted")
        info = await bus.js.consumer_info(bus.namespace.stream("INTENT"), "executor")
        assert info.num_pending == 0
    assert execution.statuses(once.intent_id) == ["submitted", "accepted"]


async def test_a_malformed_intent_is_rejected_and_the_service_keeps_running(
    execution: Execution, config: Config, bus: NatsBus
) -> None:
    after = intent(price=380_000)
    subject = bus.namespace.subjects.intent(STRATEGY, CONDITION)
    async with executor_running(config) as service:
        await bus.js.publish(
            subject, b'{"type": "OrderIntent", "intent_id": "garbled-1", "price": "0.5"}'
        )
        await bus.js.publish(subject, b"not json at all")
        await execution.send(intent(intent_id="zero-size", size=0))
        await execution.send(after)
        await execution.status(after.intent_id, "accepted")
        assert not service.done()
    [garbled] = execution.orders("garbled-1")
    assert (garbled.status, garbled.reason) == ("rejected", "malformed_intent")
    [zero] = execution.orders("zero-size")
    assert (zero.status, zero.reason) == ("rejected", "invalid_intent")
    rejected = [e for e in execution.of_type(OrderEvent) if e.reason == "malformed_intent"]
    assert len(rejected) == 2


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"price": 405_000}, "off_tick"),
        ({"size": 1 * MICROS}, "below_min_size"),
        ({"price": 0}, "price_out_of_range"),
        ({"asset_id": "9" * 70}, "unknown_market"),
        ({"ts_init": 1}, "intent_too_old"),
        ({"size": 1000 * MICROS}, "max_order_notional"),
    ],
)
async def test_each_risk_refusal_is_a_rejected_order_event_with_its_reason(
    execution: Execution, config: Config, fields: dict[str, Any], reason: str
) -> None:
    refused = intent(**fields)
    async with executor_running(config):
        await execution.send(refused)
        event = await execution.status(refused.intent_id, "rejected")
    assert event.reason == reason
    assert execution.statuses(refused.intent_id) == ["rejected"]
    if reason.startswith("max_"):
        [limit] = execution.of_type(RiskEvent)
        assert (limit.kind, limit.limit) == ("limit_hit", reason)


async def test_the_books_answers_do_not_open_the_breaker_but_bad_orders_do(
    execution: Execution, tmp_path: Path, nats_server: NatsServerInfo, bus: NatsBus
) -> None:
    """A FAK/FOK the book cannot fill and a post-only quote the book moved onto are the
    market's answers (an arbitrage and a market maker meet them routinely), not a fault of
    ours; an order the venue refuses as invalid (here a GTD already expired) is."""
    config = write_config(
        tmp_path / "executor.toml",
        nats_server.url,
        bus,
        risk="reject_burst_count = 2\nreject_burst_window_s = 60.0\n",
    )
    misses = [intent(price=400_000, time_in_force=tif) for tif in ("FAK", "FOK", "FAK", "FOK")]
    resting = intent(price=380_000)
    crossers = [intent(price=420_000, post_only=True) for _ in range(3)]
    expired = [intent(price=370_000, time_in_force="GTD", expires_at_ns=1) for _ in range(2)]
    after = intent(price=370_000)
    async with executor_running(config):
        for miss in misses:
            await execution.send(miss)
        await execution.send(resting)
        await execution.status(resting.intent_id, "accepted")
        for crosser in crossers:
            await execution.send(crosser)
            await execution.status(crosser.intent_id, "rejected")
        # Seven venue rejects so far and no breaker: the next order is still placed.
        canary = intent(price=360_000)
        await execution.send(canary)
        await execution.status(canary.intent_id, "accepted")
        assert not any(e.limit == "breaker_open" for e in execution.of_type(RiskEvent))
        for bad in expired:
            await execution.send(bad)
            await execution.status(bad.intent_id, "rejected")
        await execution.wait_for(
            "the breaker",
            lambda: any(e.limit == "breaker_open" for e in execution.of_type(RiskEvent)),
        )
        await execution.send(after)
        refused = await execution.status(after.intent_id, "rejected")
    for miss, code in zip(misses, ("fak_not_filled", "fok_not_filled") * 2, strict=True):
        [event] = [e for e in execution.orders(miss.intent_id) if e.status == "rejected"]
        assert (event.reason, event.detail.split(":")[0]) == ("venue_rejected", code)
    for crosser in crossers:
        [event] = [e for e in execution.orders(crosser.intent_id) if e.status == "rejected"]
        assert event.detail.startswith("post_only_would_cross"), event
    for bad in expired:
        [event] = [e for e in execution.orders(bad.intent_id) if e.status == "rejected"]
        assert event.detail.startswith("invalid_expiration"), event
    assert refused.reason in ("halted", "breaker_open"), refused


async def test_a_restarted_executor_resumes_with_the_same_positions(
    execution: Execution, config: Config
) -> None:
    first = intent(price=410_000, size=5 * MICROS, time_in_force="FAK")
    resting = intent(price=380_000)
    second = intent(price=410_000, size=5 * MICROS, time_in_force="FAK")
    async with executor_running(config):
        await execution.send(first)
        await execution.send(resting)
        await execution.status(first.intent_id, "filled")
        await execution.status(resting.intent_id, "accepted")
    async with executor_running(config):
        # Paper orders died with the process: the resting one is reported canceled.
        canceled = await execution.status(resting.intent_id, "canceled")
        await execution.send(second)
        await execution.status(second.intent_id, "filled")
        await execution.wait_for(
            "a position of both fills",
            lambda: any(p.size == 10 * MICROS for p in execution.of_type(PositionSnapshot)),
        )
    assert canceled.reason == "paper_restart"
    assert execution.of_type(PositionSnapshot)[-1].average_price == 410_000


async def test_halt_cancels_open_orders_and_refuses_intents_until_resume(
    execution: Execution, config: Config, bus: NatsBus
) -> None:
    resting = intent(price=380_000)
    while_halted = intent(price=370_000)
    after_resume = intent(price=360_000)
    async with executor_running(config):
        await execution.send(resting)
        await execution.status(resting.intent_id, "accepted")
        await set_halt(bus.js, bus.namespace, halted=True, strategy_id=STRATEGY, reason="drill")
        await execution.status(resting.intent_id, "canceled")
        await execution.send(while_halted)
        refused = await execution.status(while_halted.intent_id, "rejected")
    async with executor_running(config):
        # Still halted after a restart: the state is in the HALT bucket.
        still = intent(price=350_000)
        await execution.send(still)
        assert (await execution.status(still.intent_id, "rejected")).reason == "halted"
        await set_halt(bus.js, bus.namespace, halted=False, strategy_id=STRATEGY)
        await execution.wait_for(
            "a resume", lambda: any(e.kind == "resume" for e in execution.of_type(RiskEvent))
        )
        await execution.send(after_resume)
        await execution.status(after_resume.intent_id, "accepted")
    assert refused.reason == "halted"
    halts = [e for e in execution.of_type(RiskEvent) if e.kind == "halt"]
    assert halts
    assert all(e.strategy_id == STRATEGY and e.limit == "halted" for e in halts)


async def test_an_intent_is_taken_only_under_its_partitions_current_lease(
    execution: Execution, config: Config, bus: NatsBus
) -> None:
    """Fencing (DESIGN §5): replica A's lease moves to B; A's intents are refused from then on,
    B's are taken, and a token no lease ever had is refused."""
    store = await NatsLeaseStore.open(bus.js, bus.namespace)
    group = strategy_group(STRATEGY)
    partition = partition_of(CONDITION, 16)
    first = LeaseKeeper(store, group=group, member="replica-a", partitions=16)
    await first.step()
    token_a = first.token(partition)
    assert token_a
    under_a = intent(price=380_000, partition=partition, lease_revision=token_a)
    invented = intent(price=380_000, partition=partition, lease_revision=token_a + 1_000)
    async with executor_running(config):
        await execution.send(under_a)
        await execution.status(under_a.intent_id, "accepted")
        await execution.send(invented)
        assert (await execution.status(invented.intent_id, "rejected")).reason == "stale_lease"

        await first.release_all()
        second = LeaseKeeper(store, group=group, member="replica-b", partitions=16)
        await second.step()
        token_b = second.token(partition)
        assert token_b is not None
        assert token_b > token_a
        # B's first intent arrives before the executor's watch may have seen B's lease.
        under_b = intent(price=370_000, partition=partition, lease_revision=token_b)
        late_a = intent(price=360_000, partition=partition, lease_revision=token_a)
        await execution.send(under_b)
        await execution.send(late_a)
        await execution.status(under_b.intent_id, "accepted")
        refused = await execution.status(late_a.intent_id, "rejected")
        # Cancels are never fenced: the old holder can always take its orders off.
        cancel = intent(
            action="cancel",
            target_intent_id=under_a.intent_id,
            price=0,
            size=0,
            partition=partition,
            lease_revision=token_a,
        )
        await execution.send(cancel)
        await execution.status(under_a.intent_id, "canceled")
        await second.release_all()
    assert refused.reason == "stale_lease"
    assert str(token_a) in refused.detail


async def test_a_paper_gtd_order_expires_at_its_time_in_a_market_that_does_not_move(
    execution: Execution, config: Config
) -> None:
    expires_at = now_ns() + 1_500_000_000
    gtd = intent(price=380_000, time_in_force="GTD", expires_at_ns=expires_at)
    async with executor_running(config):
        await execution.send(gtd)
        await execution.status(gtd.intent_id, "accepted")
        # No book or trade event after this: only the service's own timer can end it.
        expired = await execution.status(gtd.intent_id, "expired")
    assert expired.ts_init >= expires_at
    assert execution.statuses(gtd.intent_id) == ["submitted", "accepted", "expired"]
