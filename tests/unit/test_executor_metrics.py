"""The executor's metrics move with what the ExecutionPublisher stores, nothing else; the
dashboard's executor panels read exactly these series."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from polybus.common.bus.memory_bus import MemoryBus
from polybus.common.config import BUILTIN_STREAMS_FILE
from polybus.common.events import Fill, OrderEvent, PositionSnapshot, RiskEvent
from polybus.common.money import MICROS
from polybus.common.streams import load_definitions
from polybus.executor import metrics
from polybus.executor.publishing import ExecutionPublisher
from polybus.executor.venue import SubmitAccepted, SubmitRejected


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def publisher() -> AsyncIterator[ExecutionPublisher]:
    bus = MemoryBus()
    await bus.apply(load_definitions(BUILTIN_STREAMS_FILE))
    yield ExecutionPublisher(bus)
    await bus.drain()


@pytest.fixture
def strategy() -> str:
    # A strategy id of its own per test: the registry is the process's, shared by every test.
    return f"s{uuid.uuid4().hex[:8]}"


def order(strategy: str, order_id: str, status: str, **fields: Any) -> OrderEvent:
    return OrderEvent(
        event_id=f"{order_id}.{status}",
        ts_event=1,
        ts_init=1,
        order_id=order_id,
        strategy_id=strategy,
        condition_id="0xc",
        asset_id="yes",
        status=status,  # type: ignore[arg-type]
        **fields,
    )


async def test_order_events_count_by_status_and_rejects_by_who_refused_and_why(
    publisher: ExecutionPublisher, strategy: str
) -> None:
    await publisher.publish(
        [
            order(strategy, "o1", "submitted"),
            order(strategy, "o1", "accepted"),
            order(strategy, "o2", "rejected", reason="max_open_orders", detail="10 open"),
            order(strategy, "o3", "rejected", reason="venue_rejected", detail="rate_limited: slow"),
            order(strategy, "o4", "rejected", reason="venue_rejected", detail="a new venue code"),
        ]
    )

    assert sample("polybus_executor_orders_total", strategy=strategy, status="submitted") == 1
    assert sample("polybus_executor_orders_total", strategy=strategy, status="rejected") == 3
    rejects = "polybus_executor_rejects_total"
    assert sample(rejects, strategy=strategy, source="executor", reason="max_open_orders") == 1
    assert sample(rejects, strategy=strategy, source="venue", reason="rate_limited") == 1
    assert sample(rejects, strategy=strategy, source="venue", reason="venue_rejected") == 1


async def test_ack_latency_runs_from_the_stored_submit_to_the_venue_answer(
    publisher: ExecutionPublisher, strategy: str
) -> None:
    await publisher.publish(
        [order(strategy, "a1", "submitted"), order(strategy, "a2", "submitted")]
    )

    metrics.submit_answered(
        strategy,
        "a1",
        SubmitAccepted(client_order_id="a1", venue_order_id="v1", venue_status="live"),
    )
    metrics.submit_answered(
        strategy, "a2", SubmitRejected(client_order_id="a2", reason="not_enough_balance")
    )
    metrics.submit_answered(strategy, "never-submitted", object())  # nothing to measure

    count = "polybus_executor_ack_seconds_count"
    assert sample(count, strategy=strategy, outcome="accepted") == 1
    assert sample(count, strategy=strategy, outcome="rejected") == 1
    assert sample(count, strategy=strategy, outcome="unknown") == 0
    # Seconds, measured in this process: well under one here (not ns, not the event clock).
    bucket = "polybus_executor_ack_seconds_bucket"
    assert sample(bucket, strategy=strategy, outcome="accepted", le="1.0") == 1


async def test_halts_breakers_and_the_venue_heartbeat_are_gauges_that_resume_clears(
    publisher: ExecutionPublisher, strategy: str
) -> None:
    def risk(kind: str, limit: str, scope: str = strategy) -> RiskEvent:
        return RiskEvent(
            event_id=f"r.{kind}.{limit}.{uuid.uuid4().hex}",
            ts_event=1,
            ts_init=1,
            strategy_id=scope,
            kind=kind,  # type: ignore[arg-type]
            limit=limit,
        )

    await publisher.publish([risk("halt", "halted"), risk("halt", "breaker_open")])
    halted = "polybus_executor_halted"
    assert sample(halted, strategy=strategy, switch="halted") == 1
    assert sample(halted, strategy=strategy, switch="breaker_open") == 1

    await publisher.publish([risk("resume", "halted"), risk("halt", "heartbeat", scope="")])
    assert sample(halted, strategy=strategy, switch="halted") == 0
    assert sample(halted, strategy=strategy, switch="breaker_open") == 0  # resume closes it
    assert sample("polybus_executor_venue_heartbeat_ok") == 0
    risk_events = "polybus_executor_risk_events_total"
    assert sample(risk_events, strategy="account", kind="halt", limit="heartbeat") == 1

    await publisher.publish([risk("resume", "heartbeat", scope="")])
    assert sample("polybus_executor_venue_heartbeat_ok") == 1


async def test_positions_and_pnl_are_summed_per_strategy_in_micro_units(
    publisher: ExecutionPublisher, strategy: str
) -> None:
    def position(asset_id: str, size: int, mark: int, realized: int, sequence: int) -> Any:
        return PositionSnapshot(
            event_id=f"p.{asset_id}.{sequence}",
            ts_event=1,
            ts_init=1,
            strategy_id=strategy,
            condition_id="0xc",
            asset_id=asset_id,
            size=size,
            provisional_size=size,
            average_price=400_000,
            provisional_average_price=400_000,
            realized_pnl=realized,
            mark_price=mark,
            unrealized_pnl=size * (mark - 400_000) // MICROS,
            fees=1_000,
        )

    fill = Fill(
        event_id="f1",
        ts_event=1,
        ts_init=1,
        fill_id="t1",
        order_id="o1",
        strategy_id=strategy,
        condition_id="0xc",
        asset_id="yes",
        side="BUY",
        price=400_000,
        size=10 * MICROS,
        liquidity="maker",
        settlement="CONFIRMED",
    )
    await publisher.publish(
        [
            fill,
            position("yes", 10 * MICROS, 450_000, 0, 1),
            position("no", 4 * MICROS, 500_000, 0, 2),
            position("yes", 10 * MICROS, 420_000, 2 * MICROS, 3),  # replaces the first "yes"
        ]
    )

    fills = "polybus_executor_fills_total"
    assert sample(fills, strategy=strategy, liquidity="maker", settlement="CONFIRMED") == 1
    assert sample("polybus_executor_positions", strategy=strategy) == 2
    # 10 shares at 0.42 + 4 at 0.50 = 6.2 pUSD; PnL from the last snapshot of each asset.
    assert sample("polybus_executor_position_value_micros", strategy=strategy) == 6_200_000
    assert sample("polybus_executor_realized_pnl_micros", strategy=strategy) == 2 * MICROS
    assert sample("polybus_executor_unrealized_pnl_micros", strategy=strategy) == 600_000
    assert sample("polybus_executor_fees_micros", strategy=strategy) == 2_000


def test_rate_limit_waits_are_observed_only_when_there_was_a_wait() -> None:
    before = sample("polybus_executor_throttle_wait_seconds_count", bucket="cancel")
    metrics.throttle_wait("cancel", 0.0)
    metrics.throttle_wait("cancel", 0.25)
    assert sample("polybus_executor_throttle_wait_seconds_count", bucket="cancel") == before + 1


def test_strategy_labels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_state", metrics._State())  # the other tests keep their labels
    labels = {metrics.strategy_label(f"flood-{n}") for n in range(metrics.MAX_STRATEGIES * 2)}
    assert metrics.OTHER in labels
    assert len(labels) <= metrics.MAX_STRATEGIES + 1
    assert metrics.strategy_label("") == metrics.ACCOUNT
