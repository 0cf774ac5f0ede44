"""The backtest's engine: recorded market data through the live strategy runtime and the paper
fill model, on a simulated clock. No I/O, no wall clock, no randomness.

The clock is the event time (``ts_event``, never going back): each event first fires the timers
due before it, then goes into the :class:`~polybus.common.book_view.BookView`, then to the
paper matchers (resting orders fill against the new book or trade print), then to the
runtime (``on_book`` / ``on_untradeable``, as the service's book feed calls it). Every intent
the runtime returns is executed at once, in order, by :class:`_PaperDesk`, as the executor in
paper mode would: refused before matching like the venue (:func:`venue_refusal`), else matched
by :class:`~polybus.common.paper.PaperMatcher`; the ``OrderEvent``, ``Fill`` and
``PositionSnapshot`` it makes go back to the runtime, whose ``on_fill`` intents join the queue.
Paper fills are final at once (``CONFIRMED``), as in the paper executor.

The executor's risk gate is not applied: a backtest measures the strategy within its own
limits (docs/strategies.md, Backtests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from polybus.common.book_view import Applied, AssetState, BookView
from polybus.common.events import (
    ExecutionStreamEvent,
    Fill,
    MarketDataStreamEvent,
    MarketInfo,
    MarketResolved,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    RiskEvent,
    Trade,
)
from polybus.common.fees import FeeSchedule
from polybus.common.money import MICROS
from polybus.common.paper import PaperFill, PaperMatcher, PaperOrder, venue_refusal
from polybus.common.positions import Position, PositionBook
from polybus.strategy.api import Strategy
from polybus.strategy.portfolio import LivePortfolio
from polybus.strategy.runtime import IntentIds, StrategyRuntime

REPLICA = "backtest"
"""The replica part of a backtest's intent ids (incarnation 0: the same run, the same ids)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """The account at one instant: marked PnL and signed shares per asset."""

    ts_ns: int
    pnl: int
    inventory: dict[str, int]


@dataclass(slots=True)
class BacktestResult:
    """What a run produced: every fill, the samples, the positions and the closing marks."""

    strategy_id: str
    events: int = 0
    intents: int = 0
    rejected: int = 0
    first_ns: int = 0
    last_ns: int = 0
    fills: list[Fill] = field(default_factory=list)
    risk_events: list[RiskEvent] = field(default_factory=list)
    """What the strategy reported (e.g. a one-legged fill and the policy run on it)."""
    samples: list[Sample] = field(default_factory=list)
    positions: PositionBook = field(default_factory=PositionBook)
    marks: dict[str, int] = field(default_factory=dict)
    """The price each traded asset is valued at in the end (see :func:`mark_of`)."""


def mark_of(view: BookView, asset_id: str) -> int | None:
    """The price an open position is valued at: the book's mid (rounded down) when both sides
    show, else the last trade print, else None (the position is then valued at its cost)."""
    asset = view.asset(asset_id)
    if asset is None:
        return None
    book = asset.book
    if book.best_bid is not None and book.best_ask is not None:
        return (book.best_bid + book.best_ask) // 2
    return asset.last_trade.price if asset.last_trade is not None else None


class _PaperDesk:
    """The paper executor's part a backtest needs: orders, fills and positions, no bus."""

    def __init__(self, view: BookView, strategy_id: str, result: BacktestResult) -> None:
        self.view = view
        self.strategy_id = strategy_id
        self.result = result
        self.matchers: dict[str, PaperMatcher] = {}
        self.orders: dict[str, OrderIntent] = {}
        self.filled: dict[str, int] = {}

    def execute(self, intent: OrderIntent, now_ns: int) -> list[ExecutionStreamEvent]:
        if intent.action == "place":
            return self._place(intent, now_ns)
        if intent.action == "cancel":
            return self._cancel(intent, now_ns)
        return [self._order_event(intent, "rejected", now_ns, reason="invalid_intent")]

    def _place(self, intent: OrderIntent, now_ns: int) -> list[ExecutionStreamEvent]:
        order = PaperOrder.from_intent(intent)
        refusal = venue_refusal(self.view, intent.asset_id, order)
        market = self.view.market_of(intent.asset_id)
        book = self.view.book(intent.asset_id)
        if refusal or market is None or book is None:
            self.result.rejected += 1
            return [self._order_event(intent, "rejected", now_ns, "venue_rejected", refusal)]
        matcher = self.matchers.setdefault(intent.asset_id, PaperMatcher())
        matcher.fees = FeeSchedule.of_market(market)
        update = matcher.submit(order, book, now_ns)
        if update.status == "rejected":
            self.result.rejected += 1
            return [self._order_event(intent, "rejected", now_ns, "venue_rejected", update.reason)]
        self.orders[intent.intent_id] = intent
        events: list[ExecutionStreamEvent] = [self._order_event(intent, "accepted", now_ns)]
        events += self._fills(update.fills, now_ns)
        if update.status == "canceled":  # a FAK's remainder
            events.append(self._order_event(intent, "canceled", now_ns, update.reason))
        return events

    def _cancel(self, intent: OrderIntent, now_ns: int) -> list[ExecutionStreamEvent]:
        target = self.orders.get(intent.target_intent_id)
        matcher = self.matchers.get(intent.asset_id)
        if target is None or matcher is None or matcher.cancel(target.intent_id) is None:
            return []  # finished already: the runtime heard of it
        return [self._order_event(target, "canceled", now_ns, intent.reason)]

    def on_market_data(
        self, event: MarketDataStreamEvent, now_ns: int
    ) -> list[ExecutionStreamEvent]:
        """Let resting orders fill against a new book state or trade print."""
        if isinstance(event, MarketInfo | MarketResolved):
            return []
        asset_id = event.asset_id
        matcher = self.matchers.get(asset_id)
        if matcher is None:
            return []
        events = self.expire(now_ns)
        if isinstance(event, Trade):
            return events + self._fills(matcher.on_trade(event, now_ns), now_ns)
        book = self.view.book(asset_id)
        if book is None or not self.view.tradeable(asset_id):
            return events  # a book that may be missing events gives no fills
        return events + self._fills(matcher.on_book(book, now_ns), now_ns)

    def expire(self, now_ns: int) -> list[ExecutionStreamEvent]:
        return [
            self._order_event(self.orders[update.order_id], "expired", now_ns)
            for matcher in self.matchers.values()
            for update in matcher.expire(now_ns)
        ]

    def _fills(self, fills: Iterable[PaperFill], now_ns: int) -> list[ExecutionStreamEvent]:
        events: list[ExecutionStreamEvent] = []
        for paper in fills:
            intent = self.orders[paper.order_id]
            fill = Fill(
                event_id=f"fill.{paper.fill_id}.CONFIRMED",
                ts_event=now_ns,
                ts_init=now_ns,
                correlation_id=intent.intent_id,
                fill_id=paper.fill_id,
                order_id=intent.intent_id,
                strategy_id=self.strategy_id,
                condition_id=intent.condition_id,
                asset_id=intent.asset_id,
                side=paper.side,
                price=paper.price,
                size=paper.size,
                fee=paper.fee_shares if paper.side == "BUY" else paper.fee_value,
                liquidity=paper.liquidity,
                settlement="CONFIRMED",
            )
            self.result.fills.append(fill)
            self.filled[intent.intent_id] = self.filled.get(intent.intent_id, 0) + paper.size
            status: OrderStatus = "partially_filled" if paper.leaves else "filled"
            position = self.result.positions.on_fill(fill)
            events += [fill, self._order_event(intent, status, now_ns)]
            if position is not None:
                mark = mark_of(self.view, intent.asset_id)
                events.append(position.snapshot(now_ns, mark=mark, sequence=len(events)))
        return events

    def _order_event(
        self,
        intent: OrderIntent,
        status: OrderStatus,
        now_ns: int,
        reason: str = "",
        detail: str = "",
    ) -> OrderEvent:
        return OrderEvent(
            event_id=f"order.{intent.intent_id}.{status}.{self.filled.get(intent.intent_id, 0)}",
            ts_event=now_ns,
            ts_init=now_ns,
            correlation_id=intent.intent_id,
            order_id=intent.intent_id,
            strategy_id=self.strategy_id,
            condition_id=intent.condition_id,
            asset_id=intent.asset_id,
            status=status,
            side=intent.side,
            price=intent.price,
            size=intent.size,
            filled_size=self.filled.get(intent.intent_id, 0),
            reason=reason,
            detail=detail,
        )


class Backtest:
    """One strategy over one stream of market-data events; :meth:`run` returns the result.

    ``timer_interval_ns`` is how often ``on_timer`` runs on the simulated clock, and how often
    the account is sampled for the report.
    """

    def __init__(
        self,
        strategy_type: type[Strategy],
        settings: msgspec.Struct,
        *,
        timer_interval_ns: int,
        partitions: int = 16,
    ) -> None:
        if timer_interval_ns <= 0:
            raise ValueError("the timer interval must be positive")
        self.strategy_id = strategy_type.name
        self.timer_interval_ns = timer_interval_ns
        self.view = BookView()
        self.result = BacktestResult(strategy_id=self.strategy_id)
        self._now_ns = 0
        portfolio = LivePortfolio(self.strategy_id)
        self.runtime = StrategyRuntime(
            strategy_type(settings, portfolio),
            portfolio,
            self.view,
            IntentIds(self.strategy_id, REPLICA, 0),
            partitions=partitions,
            clock=lambda: self._now_ns,
        )
        for partition in range(partitions):
            self.runtime.on_partition_acquired(partition, 0)
        self.runtime.start()
        self._desk = _PaperDesk(self.view, self.strategy_id, self.result)
        self._next_timer_ns: int | None = None
        self._reported: dict[str, AssetState] = {}

    def run(self, events: Iterable[MarketDataStreamEvent]) -> BacktestResult:
        for event in events:
            self.step(event)
        self.finish()
        return self.result

    def step(self, event: MarketDataStreamEvent) -> None:
        """One recorded event: timers due before it, then the event itself."""
        at_ns = max(self._now_ns, event.ts_event)
        if self._next_timer_ns is None:
            self.result.first_ns = at_ns
            self._next_timer_ns = at_ns + self.timer_interval_ns
        while self._next_timer_ns <= at_ns:
            self._tick(self._next_timer_ns)
        self._now_ns = at_ns
        self.result.events += 1
        applied = self.view.apply(event)
        if applied in (Applied.UPDATED, Applied.STATE_CHANGED):
            self._execute_all(self._desk.on_market_data(event, at_ns))
        # No snapshot to ask for offline: an asset that lost events (NEEDS_REBUILD) waits for
        # the next recorded snapshot (the ingest publishes them periodically).
        self._react(event, applied)

    def _react(self, event: MarketDataStreamEvent, applied: Applied) -> None:
        """Tell the runtime, as the service's book feed does."""
        if isinstance(event, MarketInfo | MarketResolved):
            return
        asset_id = event.asset_id
        if applied is Applied.UPDATED:
            if not isinstance(event, Trade):
                self._handle(self.runtime.on_book(asset_id))
            return
        if applied not in (Applied.STATE_CHANGED, Applied.NEEDS_REBUILD):
            return
        state = self.view.state(asset_id)
        if self._reported.get(asset_id, AssetState.NEEDS_SNAPSHOT) is not state:
            self._reported[asset_id] = state
            if state is not AssetState.LIVE:
                self._handle(self.runtime.on_untradeable(asset_id))
        if applied is Applied.STATE_CHANGED:
            self._handle(self.runtime.on_book(asset_id))

    def finish(self) -> None:
        """The end of the input: the last sample, the closing marks."""
        self.result.last_ns = self._now_ns
        self._sample(self._now_ns)
        for position in self.result.positions.positions(self.strategy_id):
            mark = mark_of(self.view, position.asset_id)
            if mark is not None:
                self.result.marks[position.asset_id] = mark

    def _tick(self, at_ns: int) -> None:
        self._now_ns = at_ns
        self._execute_all(self._desk.expire(at_ns))
        self._handle(self.runtime.on_timer(at_ns))
        self._sample(at_ns)
        self._next_timer_ns = at_ns + self.timer_interval_ns

    def _handle(self, outgoing: Iterable[OrderIntent | RiskEvent]) -> None:
        """Execute what the runtime sent, in order, and what the reports to it made it send."""
        queue = deque(outgoing)
        while queue:
            item = queue.popleft()
            if isinstance(item, RiskEvent):
                self.result.risk_events.append(item)
                continue
            self.result.intents += 1
            for report in self._desk.execute(item, self._now_ns):
                queue.extend(self.runtime.on_execution(report))

    def _execute_all(self, reports: list[ExecutionStreamEvent]) -> None:
        for report in reports:
            self._handle(self.runtime.on_execution(report))

    def _sample(self, at_ns: int) -> None:
        positions = list(self.result.positions.positions(self.strategy_id))
        self.result.samples.append(
            Sample(
                ts_ns=at_ns,
                pnl=marked_pnl(positions, lambda asset_id: mark_of(self.view, asset_id)),
                inventory={p.asset_id: p.provisional.size for p in positions},
            )
        )


def marked_pnl(positions: Iterable[Position], mark: Callable[[str], int | None]) -> int:
    """Realised plus unrealised PnL of ``positions`` (fees included), pUSD micro-units.

    Exact until one final rounding down: realised PnL plus the open cost is the exact cash paid
    (``polybus.common.positions``), so this equals the cash flows of the fills plus the open
    shares at ``mark``. A position without a mark is valued at its cost."""
    total = 0
    for position in positions:
        holding = position.provisional
        total += holding.realized - holding.pusd_fees * MICROS
        price = mark(position.asset_id)
        if price is not None:
            total += price * holding.size - holding.cost
    return total // MICROS
