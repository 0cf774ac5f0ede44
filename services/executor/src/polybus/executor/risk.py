"""The risk gate: every intent is checked here before anything leaves for the venue.

:class:`RiskGate` is pure: it reads the intent, the market's current state, the order ledger
and the positions, and a clock passed in as ns, and returns a :class:`Decision` carrying the
events to publish (a rejected ``OrderEvent`` with a :data:`RejectReason`, ``RiskEvent``s for
limits hit and for halts). It owns the state only it needs: the rolling per-minute notional,
the venue-reject breaker, the daily loss stop and the operator halts.

Two scopes are checked, each with its own limits (:mod:`polybus.executor.config`): the intent's
strategy, and the account (every strategy together). Cancels are never refused: taking risk
off must always be possible, also while halted or after a lease was lost. See docs/executor.md.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from polybus.common.events import (
    BookState,
    OrderEvent,
    OrderIntent,
    RejectReason,
    RiskEvent,
)
from polybus.common.money import MICROS, format_micros, notional
from polybus.common.positions import Position, PositionBook
from polybus.executor.config import RiskLimits, RiskSettings
from polybus.executor.orders import OrderLedger, WorkingOrder, reject_intent

NANOS_PER_MINUTE = 60 * 1_000_000_000
NANOS_PER_DAY = 86_400 * 1_000_000_000
RiskKind = Literal["limit_hit", "halt", "resume"]
ACCOUNT = ""
"""The scope key of the account (all strategies); a strategy's scope key is its id."""

LIMIT_REASONS: frozenset[RejectReason] = frozenset(
    {
        "max_order_notional",
        "max_notional_per_minute",
        "max_open_orders",
        "max_position_market",
        "max_position_total",
    }
)
"""Reasons that are a configured limit (also reported as a ``limit_hit`` ``RiskEvent``)."""


@dataclass(frozen=True, slots=True)
class MarketState:
    """What the gate needs to know about the intent's asset, from the book view."""

    condition_id: str
    asset_id: str
    tick_size: int
    """The *current* tick (tick changes arrive on the bus)."""
    min_order_size: int
    book_state: BookState
    best_bid: int | None = None
    best_ask: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's answer: accepted, or refused for ``reason``; ``events`` to publish either way."""

    accepted: bool
    reason: RejectReason | None = None
    events: tuple[OrderEvent | RiskEvent, ...] = ()


class _Refusal(Exception):
    def __init__(self, reason: RejectReason, detail: str, scope: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.scope = scope


@dataclass(slots=True)
class _Scope:
    """The gate's state for one scope (a strategy, or the account)."""

    limits: RiskLimits
    halted: str | None = None
    """The operator's halt reason, if halted."""
    breaker_open: bool = False
    rejects: deque[int] = field(default_factory=deque)
    window: deque[tuple[int, int]] = field(default_factory=deque)
    """(accepted at ns, notional) of the last minute's accepted orders."""
    window_notional: int = 0
    day: int = -1
    day_start_pnl: int = 0
    loss_stopped: bool = False


def _money(value: int) -> str:
    return format_micros(value)


class RiskGate:
    """Checks intents against the risk limits; holds halts, breakers and loss stops."""

    def __init__(self, settings: RiskSettings) -> None:
        self._settings = settings
        self._scopes: dict[str, _Scope] = {ACCOUNT: _Scope(settings.account_limits())}

    def _scope(self, key: str) -> _Scope:
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = _Scope(self._settings.limits_for(key))
        return scope

    # -- decisions -------------------------------------------------------------------------

    def check(
        self,
        intent: OrderIntent,
        *,
        market: MarketState | None,
        ledger: OrderLedger,
        positions: PositionBook,
        marks: Mapping[str, int],
        now_ns: int,
        lease_revision: int | None = None,
    ) -> Decision:
        """Decide on one intent.

        ``marks`` prices each held asset for the unrealised PnL (a long at its best bid);
        ``lease_revision`` is the current revision of the lease on the intent's partition as
        the executor knows it (None: no lease is known).
        """
        if intent.action == "cancel":
            return Decision(accepted=True)
        events: list[OrderEvent | RiskEvent] = []
        try:
            self._check_switches(intent, positions, marks, now_ns, lease_revision, events)
            self._check_market(intent, market, now_ns)
            self._check_limits(intent, ledger, positions, now_ns)
        except _Refusal as refusal:
            events.append(reject_intent(intent, refusal.reason, refusal.detail, now_ns))
            if refusal.reason in LIMIT_REASONS:
                events.append(
                    self._risk_event(
                        refusal.scope, "limit_hit", refusal.reason, refusal.detail, now_ns, intent
                    )
                )
            return Decision(accepted=False, reason=refusal.reason, events=tuple(events))
        order_notional = notional(intent.price, intent.size)
        for key in (intent.strategy_id, ACCOUNT):
            scope = self._scope(key)
            scope.window.append((now_ns, order_notional))
            scope.window_notional += order_notional
        return Decision(accepted=True, events=tuple(events))

    def _check_switches(
        self,
        intent: OrderIntent,
        positions: PositionBook,
        marks: Mapping[str, int],
        now_ns: int,
        lease_revision: int | None,
        events: list[OrderEvent | RiskEvent],
    ) -> None:
        for key in (intent.strategy_id, ACCOUNT):
            scope = self._scope(key)
            if scope.halted is not None:
                raise _Refusal("halted", f"{self._label(key)} halted: {scope.halted}", key)
            if scope.breaker_open:
                raise _Refusal("breaker_open", f"{self._label(key)}: venue reject breaker", key)
        for key in (intent.strategy_id, ACCOUNT):
            events.extend(self._update_loss_stop(key, positions, marks, now_ns))
            scope = self._scope(key)
            if scope.loss_stopped:
                raise _Refusal("loss_stop", f"{self._label(key)}: daily loss stop", key)
        if intent.lease_revision and intent.lease_revision != lease_revision:
            raise _Refusal(
                "stale_lease",
                f"lease revision {intent.lease_revision} of partition {intent.partition} "
                f"is not current ({lease_revision})",
            )
        max_age = self._scope(intent.strategy_id).limits.max_intent_age_ns
        age = now_ns - intent.ts_init
        if max_age is not None and age > max_age:
            raise _Refusal("intent_too_old", f"intent is {age // 1_000_000} ms old")

    def _check_market(self, intent: OrderIntent, market: MarketState | None, now_ns: int) -> None:
        if market is None:
            raise _Refusal("unknown_market", f"no book for asset {intent.asset_id}")
        if market.book_state != "live":
            raise _Refusal("book_not_live", f"book is {market.book_state}")
        tick = market.tick_size
        # The venue accepts prices in [tick, 1 - tick] (VENUE §6.4).
        if not tick <= intent.price <= MICROS - tick:
            raise _Refusal(
                "price_out_of_range",
                f"price {_money(intent.price)} outside [{_money(tick)}, {_money(MICROS - tick)}]",
            )
        if intent.price % tick:
            raise _Refusal(
                "off_tick", f"price {_money(intent.price)} is not on tick {_money(tick)}"
            )
        if intent.size < market.min_order_size:
            raise _Refusal(
                "below_min_size",
                f"size {_money(intent.size)} below minimum {_money(market.min_order_size)}",
            )

    def _check_limits(
        self, intent: OrderIntent, ledger: OrderLedger, positions: PositionBook, now_ns: int
    ) -> None:
        order_notional = notional(intent.price, intent.size)
        # A replace cancels its target: the target no longer counts once the new order is in.
        replaced = intent.target_intent_id if intent.action == "replace" else ""
        for key in (intent.strategy_id, ACCOUNT):
            limits = self._scope(key).limits
            strategy = key or None
            label = self._label(key)
            open_orders = [o for o in ledger.open_orders(strategy) if o.order_id != replaced]
            if limits.max_order_notional is not None and order_notional > limits.max_order_notional:
                raise _Refusal(
                    "max_order_notional",
                    f"{label}: order notional {_money(order_notional)} > "
                    f"{_money(limits.max_order_notional)}",
                    key,
                )
            if limits.max_open_orders is not None and len(open_orders) >= limits.max_open_orders:
                raise _Refusal(
                    "max_open_orders",
                    f"{label}: {len(open_orders)} open orders, limit {limits.max_open_orders}",
                    key,
                )
            if intent.side == "BUY":
                held = list(positions.positions(strategy))
                self._check_exposure(
                    "max_position_market",
                    label,
                    key,
                    _exposure(
                        [p for p in held if p.condition_id == intent.condition_id],
                        [o for o in open_orders if o.condition_id == intent.condition_id],
                        intent,
                    ),
                    limits.max_position_market_shares,
                    limits.max_position_market_notional,
                )
                self._check_exposure(
                    "max_position_total",
                    label,
                    key,
                    _exposure(held, open_orders, intent),
                    limits.max_position_total_shares,
                    limits.max_position_total_notional,
                )
            if limits.max_notional_per_minute is not None:
                spent = self._window_notional(key, now_ns)
                if spent + order_notional > limits.max_notional_per_minute:
                    raise _Refusal(
                        "max_notional_per_minute",
                        f"{label}: {_money(spent)} in the last minute + {_money(order_notional)}"
                        f" > {_money(limits.max_notional_per_minute)}",
                        key,
                    )

    @staticmethod
    def _check_exposure(
        reason: RejectReason,
        label: str,
        key: str,
        exposure: tuple[int, int],
        max_shares: int | None,
        max_notional: int | None,
    ) -> None:
        shares, cost = exposure
        if max_shares is not None and shares > max_shares:
            raise _Refusal(reason, f"{label}: {_money(shares)} shares > {_money(max_shares)}", key)
        if max_notional is not None and cost > max_notional:
            raise _Refusal(reason, f"{label}: {_money(cost)} pUSD > {_money(max_notional)}", key)

    def _window_notional(self, key: str, now_ns: int) -> int:
        scope = self._scope(key)
        while scope.window and scope.window[0][0] <= now_ns - NANOS_PER_MINUTE:
            scope.window_notional -= scope.window.popleft()[1]
        return scope.window_notional

    # -- the daily loss stop ---------------------------------------------------------------

    def _update_loss_stop(
        self, key: str, positions: PositionBook, marks: Mapping[str, int], now_ns: int
    ) -> list[RiskEvent]:
        scope = self._scope(key)
        pnl = _pnl(positions.positions(key or None), marks)
        day = now_ns // NANOS_PER_DAY
        events: list[RiskEvent] = []
        if day != scope.day:
            # A new UTC day: the loss is counted from here, and yesterday's stop lifts.
            if scope.loss_stopped:
                events.append(self._risk_event(key, "resume", "loss_stop", "new UTC day", now_ns))
            scope.day, scope.day_start_pnl, scope.loss_stopped = day, pnl, False
        stop = scope.limits.daily_loss_stop
        loss = scope.day_start_pnl - pnl
        if not scope.loss_stopped and stop is not None and loss >= stop:
            scope.loss_stopped = True
            events.append(
                self._risk_event(
                    key,
                    "halt",
                    "loss_stop",
                    f"loss {_money(loss)} since UTC midnight >= {_money(stop)}",
                    now_ns,
                )
            )
        return events

    def update_loss_stops(
        self, positions: PositionBook, marks: Mapping[str, int], now_ns: int
    ) -> list[RiskEvent]:
        """Re-evaluate every scope's daily loss (call on a timer and after fills)."""
        events: list[RiskEvent] = []
        for key in list(self._scopes):
            events.extend(self._update_loss_stop(key, positions, marks, now_ns))
        return events

    # -- the venue-reject breaker and halts ------------------------------------------------

    def on_venue_reject(self, strategy_id: str, now_ns: int) -> list[RiskEvent]:
        """Count a venue rejection; N within T seconds open the breaker of that scope."""
        events: list[RiskEvent] = []
        for key in (strategy_id, ACCOUNT):
            scope = self._scope(key)
            count, window = scope.limits.reject_burst_count, scope.limits.reject_burst_window_ns
            if count is None or window is None or scope.breaker_open:
                continue
            scope.rejects.append(now_ns)
            while scope.rejects[0] <= now_ns - window:
                scope.rejects.popleft()
            if len(scope.rejects) >= count:
                scope.breaker_open = True
                scope.rejects.clear()
                events.append(
                    self._risk_event(
                        key,
                        "halt",
                        "breaker_open",
                        f"{count} venue rejects within {window / 1e9:g} s",
                        now_ns,
                    )
                )
        return events

    def halt(self, strategy_id: str | None, reason: str, now_ns: int) -> RiskEvent:
        """The operator's halt of one strategy (or, with None, of all)."""
        key = strategy_id or ACCOUNT
        self._scope(key).halted = reason or "operator"
        return self._risk_event(key, "halt", "halted", reason, now_ns)

    def resume(self, strategy_id: str | None, now_ns: int) -> RiskEvent:
        """Lift the operator's halt and close the breaker (not the daily loss stop)."""
        key = strategy_id or ACCOUNT
        scope = self._scope(key)
        scope.halted = None
        scope.breaker_open = False
        scope.rejects.clear()
        return self._risk_event(key, "resume", "halted", "", now_ns)

    def is_halted(self, strategy_id: str) -> bool:
        """Whether new orders of this strategy are refused by a halt, breaker or loss stop."""
        return any(
            scope.halted is not None or scope.breaker_open or scope.loss_stopped
            for scope in (self._scope(strategy_id), self._scope(ACCOUNT))
        )

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _label(key: str) -> str:
        return f"strategy {key}" if key else "account"

    @staticmethod
    def _risk_event(
        key: str,
        kind: RiskKind,
        limit: str,
        detail: str,
        now_ns: int,
        intent: OrderIntent | None = None,
    ) -> RiskEvent:
        return RiskEvent(
            event_id=f"risk.{key or 'account'}.{kind}.{limit}.{now_ns}",
            ts_event=now_ns,
            ts_init=now_ns,
            correlation_id=intent.intent_id if intent is not None else "",
            causation_id=intent.event_id if intent is not None else "",
            strategy_id=key,
            kind=kind,
            limit=limit,
            detail=detail,
            condition_id=intent.condition_id if intent is not None else "",
        )


def _exposure(
    held: Iterable[Position], open_orders: Iterable[WorkingOrder], intent: OrderIntent
) -> tuple[int, int]:
    """Shares and pUSD at cost if every open buy and this one filled.

    Only the long side counts: the CLOB cannot short (a SELL needs the tokens), so a sell
    only ever reduces a position.
    """
    shares = intent.size
    cost = notional(intent.price, intent.size)
    for position in held:
        holding = position.provisional
        if holding.size > 0:
            shares += holding.size
            cost += holding.cost_notional()
    for order in open_orders:
        if order.side == "BUY":
            shares += order.remaining_size
            cost += notional(order.price, order.remaining_size)
    return shares, cost


def _pnl(positions: Iterable[Position], marks: Mapping[str, int]) -> int:
    """Realised plus unrealised PnL (fees included); an asset without a mark counts at cost."""
    total = 0
    for position in positions:
        holding = position.provisional
        total += holding.realized_pnl
        mark = marks.get(position.asset_id)
        if mark is not None and holding.size:
            total += holding.unrealized_pnl(mark)
    return total
