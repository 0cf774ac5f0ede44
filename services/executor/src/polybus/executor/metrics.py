"""The executor's Prometheus metrics, moved by what it publishes and by the venue's answers.

:func:`published` sees every event the :class:`~polybus.executor.publishing.ExecutionPublisher`
stored (orders, fills, risk events, position snapshots), so the figures are the events' own:
orders by status, rejects by reason, halts, the venue heartbeat, and positions and PnL per
strategy. :func:`submit_answered` measures the time from a ``submitted`` order being stored to
the venue's answer to it (the engine calls it in ``_on_submit``); :func:`throttle_wait` and
:data:`VENUE_RETRIES` count the rate limits the live adapter met.

Labels are bounded (Prometheus naming, ``docs/architecture.md``): never an asset, market or
order id. Strategy ids come from intents, which a broken client could fill with anything, so at
most :data:`MAX_STRATEGIES` distinct ones get their own series and the rest share ``other``.
Money is exported as integer pUSD micro-units (``_micros``), exactly as the events carry it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from polybus.common.events import Event, Fill, OrderEvent, PositionSnapshot, RejectReason, RiskEvent
from polybus.executor.venue import SubmitAccepted, SubmitRejected, VenueRejectReason

ORDERS = Counter(
    "polybus_executor_orders", "Order state changes published, by status", ["strategy", "status"]
)
REJECTS = Counter(
    "polybus_executor_rejects",
    "Orders rejected, by who refused (executor: its risk gate and checks; venue) and the code",
    ["strategy", "source", "reason"],
)
FILLS = Counter(
    "polybus_executor_fills",
    "Fill events published (a fill again on every settlement status change)",
    ["strategy", "liquidity", "settlement"],
)
RISK_EVENTS = Counter(
    "polybus_executor_risk_events", "Risk events published", ["strategy", "kind", "limit"]
)
HALTED = Gauge(
    "polybus_executor_halted",
    "1 while a switch stops new orders of a strategy (account: all of them)",
    ["strategy", "switch"],
)  # switch: halted (operator) | breaker_open | loss_stop
VENUE_HEARTBEAT_OK = Gauge(
    "polybus_executor_venue_heartbeat_ok",
    "0 from a lost venue heartbeat (the dead-man switch may have fired) until reconciled",
)
VENUE_HEARTBEAT_OK.set(1)
ACK_SECONDS = Histogram(
    "polybus_executor_ack_seconds",
    "From a submitted order being stored to the venue's answer (accepted, rejected, unknown)",
    ["strategy", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
THROTTLE_WAIT_SECONDS = Histogram(
    "polybus_executor_throttle_wait_seconds",
    "Waits for the signer's own token bucket before a venue request (only waits > 0)",
    ["bucket"],  # order | cancel
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
VENUE_RETRIES = Counter(
    "polybus_executor_venue_retries",
    "Venue requests retried after the venue said wait (429 rate_limited, 425 restarting)",
    ["reason"],
)
POSITIONS = Gauge(
    "polybus_executor_positions", "Assets a strategy holds shares of (provisional)", ["strategy"]
)
POSITION_VALUE = Gauge(
    "polybus_executor_position_value_micros",
    "Held shares valued at their mark (at cost without one), pUSD micro-units",
    ["strategy"],
)
REALIZED_PNL = Gauge(
    "polybus_executor_realized_pnl_micros",
    "Realised PnL from confirmed fills, fees included, pUSD micro-units",
    ["strategy"],
)
UNREALIZED_PNL = Gauge(
    "polybus_executor_unrealized_pnl_micros",
    "Open positions at their mark against their cost, pUSD micro-units",
    ["strategy"],
)
FEES = Gauge("polybus_executor_fees_micros", "Fees paid, pUSD micro-units", ["strategy"])

MAX_STRATEGIES = 64
OTHER = "other"
ACCOUNT = "account"
"""The ``strategy`` label of an account-wide event (no strategy id)."""
_EXECUTOR_CODES = frozenset(get_args(RejectReason)) - {"venue_rejected"}
_VENUE_CODES = frozenset(get_args(VenueRejectReason))
_SWITCHES = ("halted", "breaker_open", "loss_stop")
_MAX_PENDING = 10_000
_MICROS = 1_000_000


@dataclass
class _State:
    strategies: set[str] = field(default_factory=set)
    submitted: dict[str, float] = field(default_factory=dict)
    """Order id -> monotonic time its ``submitted`` event was stored, until the venue answers."""
    positions: dict[tuple[str, str], PositionSnapshot] = field(default_factory=dict)
    """The last snapshot per (strategy, asset): the per-strategy gauges are their sums."""


_state = _State()


def strategy_label(strategy_id: str) -> str:
    if not strategy_id:
        return ACCOUNT
    if strategy_id in _state.strategies:
        return strategy_id
    if len(_state.strategies) >= MAX_STRATEGIES:
        return OTHER
    _state.strategies.add(strategy_id)
    return strategy_id


def published(event: Event) -> None:
    """Count one event the EXEC stream stored."""
    if isinstance(event, OrderEvent):
        _on_order(event)
    elif isinstance(event, Fill):
        FILLS.labels(strategy_label(event.strategy_id), event.liquidity, event.settlement).inc()
    elif isinstance(event, RiskEvent):
        _on_risk(event)
    elif isinstance(event, PositionSnapshot):
        _on_position(event)


def submit_answered(strategy_id: str, order_id: str, result: object) -> None:
    """The venue answered the submit of ``order_id`` (any result: a timeout is ``unknown``)."""
    started = _state.submitted.pop(order_id, None)
    if started is None:
        return
    if isinstance(result, SubmitAccepted):
        outcome = "accepted"
    elif isinstance(result, SubmitRejected):
        outcome = "rejected"
    else:
        outcome = "unknown"
    elapsed = max(0.0, time.monotonic() - started)
    ACK_SECONDS.labels(strategy_label(strategy_id), outcome).observe(elapsed)


def throttle_wait(bucket: str, waited_s: float) -> None:
    """A request waited ``waited_s`` for the signer's ``bucket`` (order or cancel)."""
    if waited_s > 0:
        THROTTLE_WAIT_SECONDS.labels(bucket).observe(waited_s)


def _on_order(event: OrderEvent) -> None:
    strategy = strategy_label(event.strategy_id)
    ORDERS.labels(strategy, event.status).inc()
    if event.status == "submitted":
        if len(_state.submitted) >= _MAX_PENDING:
            # Answers that never came (a crash between submit and answer): forget the oldest.
            del _state.submitted[next(iter(_state.submitted))]
        _state.submitted[event.order_id] = time.monotonic()
    elif event.status == "rejected":
        source, reason = _reject_reason(event)
        REJECTS.labels(strategy, source, reason).inc()


def _reject_reason(event: OrderEvent) -> tuple[str, str]:
    if event.reason == "venue_rejected":
        # The engine writes the venue's code first in the detail: "<code>: <venue's words>".
        code = event.detail.split(":", 1)[0].strip()
        return "venue", code if code in _VENUE_CODES else "venue_rejected"
    return "executor", event.reason if event.reason in _EXECUTOR_CODES else OTHER


def _on_risk(event: RiskEvent) -> None:
    strategy = strategy_label(event.strategy_id)
    limit = event.limit if event.limit in _EXECUTOR_CODES or event.limit == "heartbeat" else OTHER
    RISK_EVENTS.labels(strategy, event.kind, limit).inc()
    if event.kind not in ("halt", "resume"):
        return
    on = 1 if event.kind == "halt" else 0
    if event.limit == "heartbeat":
        VENUE_HEARTBEAT_OK.set(1 - on)
    elif event.limit in _SWITCHES:
        HALTED.labels(strategy, event.limit).set(on)
        if event.limit == "halted" and not on:
            # Lifting the operator's halt closes the breaker too (RiskGate.resume).
            HALTED.labels(strategy, "breaker_open").set(0)


def _on_position(event: PositionSnapshot) -> None:
    strategy = strategy_label(event.strategy_id)
    _state.positions[(strategy, event.asset_id)] = event
    held = [p for (s, _), p in _state.positions.items() if s == strategy]
    POSITIONS.labels(strategy).set(sum(1 for p in held if p.provisional_size))
    POSITION_VALUE.labels(strategy).set(sum(_value(p) for p in held))
    REALIZED_PNL.labels(strategy).set(sum(p.realized_pnl for p in held))
    UNREALIZED_PNL.labels(strategy).set(sum(p.unrealized_pnl for p in held))
    FEES.labels(strategy).set(sum(p.fees for p in held))


def _value(position: PositionSnapshot) -> int:
    price = position.mark_price or position.provisional_average_price
    return position.provisional_size * price // _MICROS
