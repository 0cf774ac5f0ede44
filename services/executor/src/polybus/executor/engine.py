"""The executor's decisions: intents in, venue calls out, every change an event.

:class:`Executor` ties the pure parts together (intake, risk gate, ledger, positions) with a
:class:`~polybus.executor.venue.Venue` and an :class:`ExecutionPublisher`; the service
(:mod:`polybus.executor.service`) owns its lifecycle. Intents, venue reports, halts and timers
all change the same ledger and positions, and a venue call in the middle of one must not let
another see half of it, so each runs under one lock, start to end: a report about an order
that is being submitted waits until the submit's answer is in the ledger.

Events are published (and acknowledged by the EXEC stream) before the intent that caused them
is acked; the publisher retries while NATS is away, so a decision is never lost silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import msgspec
import structlog

from polybus.common.book_view import BookView
from polybus.common.events import Event, OrderEvent, OrderIntent, OrderStatus, RiskEvent
from polybus.common.halt import HaltState
from polybus.common.positions import PositionBook
from polybus.executor import metrics
from polybus.executor.fencing import LeaseFence
from polybus.executor.intake import IntentRegistry, read_intent
from polybus.executor.live.client import exchange_version_of
from polybus.executor.orders import IllegalTransition, OrderLedger, WorkingOrder, reject_intent
from polybus.executor.paper.venue import PaperVenueTrade
from polybus.executor.publishing import ExecutionEvent, ExecutionPublisher
from polybus.executor.reconcile import fill_for_trade
from polybus.executor.risk import MarketState, RiskGate
from polybus.executor.venue import (
    ReportsGap,
    SubmitAccepted,
    SubmitRejected,
    Venue,
    VenueOrder,
    VenueOrderUpdate,
    VenueReport,
    VenueTrade,
    VenueUnavailable,
)

_log = structlog.get_logger("polybus.executor")

Clock = Callable[[], int]

NOT_A_BREAKER_REJECT = frozenset(
    {
        # The venue's state (the adapter already backs off from these).
        "engine_restarting",
        "post_only_mode",
        "cancel_only_mode",
        "trading_disabled",
        "rate_limited",
        # The book's answer to a taker: the liquidity was gone by the time the order arrived.
        # A complete-set arbitrage meets this routinely; counting it would halt the strategy
        # for doing its job.
        "fok_not_filled",
        "fak_not_filled",
        "unmatched",
        # The book's answer to a maker: it moved onto the quote's price on the way. A market
        # maker quoting at the touch meets this routinely (three spread_capture replicas on
        # the simulator opened the breaker within two minutes).
        "post_only_would_cross",
    }
)
"""Refusals that say nothing is wrong with our orders: they do not count towards the
reject-burst breaker (they are still rejected ``OrderEvent``s with their code)."""

_STATE_OF_UPDATE: dict[str, OrderStatus] = {
    "live": "accepted",
    "canceled": "canceled",
    "expired": "expired",
}
"""Order updates the ledger takes as a state; fill progress comes from the trades alone, so a
fill reported both as a trade and as an update is counted once."""


class Reconciling(Protocol):
    """What the executor needs from reconciliation (``polybus.executor.reconcile``)."""

    async def reconcile(self, now_ns: int) -> list[Event]: ...


class Executor:
    """Handles intents, venue reports and halts for one trading account."""

    def __init__(
        self,
        *,
        venue: Venue,
        view: BookView,
        registry: IntentRegistry,
        gate: RiskGate,
        publisher: ExecutionPublisher,
        ledger: OrderLedger | None = None,
        positions: PositionBook | None = None,
        trip_halt: Callable[[str, str], object] | None = None,
        fence: LeaseFence | None = None,
        clock: Clock = time.time_ns,
    ) -> None:
        self.venue = venue
        self.view = view
        self.registry = registry
        self.gate = gate
        self.publisher = publisher
        self.ledger = ledger or OrderLedger()
        self.positions = positions or PositionBook()
        self.reconciler: Reconciling | None = None
        self.lock = asyncio.Lock()
        self.duplicates = 0
        self._trip_halt = trip_halt
        self.fence = fence
        """Where the current lease of an intent's partition is read (None: no intent made
        under a lease is taken)."""
        self._clock = clock
        self._snapshots = 0
        self.on_order_live: Callable[[], None] | None = None
        """Called when an order rests at the venue (live: arms the dead-man heartbeat)."""
        self.submissions_blocked = ""
        """Why new orders are refused outside the risk gate (the venue heartbeat was lost)."""

    # -- intents ------------------------------------------------------------------------------
    async def handle_intent(self, data: bytes) -> None:
        """One message of the INTENT stream: answered by events, never raised for bad input."""
        now = self._clock()
        intent = read_intent(data, now)
        if isinstance(intent, OrderEvent):
            _log.warning("intent.refused", reason=intent.reason, detail=intent.detail)
            await self.publisher.publish([intent])
            return
        if not await self.registry.claim(intent.intent_id):
            # A redelivery or a republished intent: it was taken on before, never twice.
            self.duplicates += 1
            _log.info("intent.duplicate", intent_id=intent.intent_id)
            return
        async with self.lock:
            if intent.action == "cancel":
                await self._cancel_intent(intent, now)
            else:
                await self._place(intent, now)

    async def _cancel_intent(self, intent: OrderIntent, now: int) -> None:
        target = self.ledger.find(intent.target_intent_id)
        if target is None or not target.is_open:
            state = "unknown" if target is None else target.status
            await self.publisher.publish(
                [reject_intent(intent, "unknown_order", f"no open order {state}", now)]
            )
            return
        await self.cancel_orders([target], reason=f"intent {intent.intent_id}")

    async def _place(self, intent: OrderIntent, now: int) -> None:
        if self.submissions_blocked:
            # The venue may have canceled everything: nothing new until reconciled.
            await self.publisher.publish(
                [reject_intent(intent, "halted", self.submissions_blocked, now)]
            )
            return
        lease = None
        if intent.lease_revision and self.fence is not None:
            lease = await self.fence.current(intent)
        decision = self.gate.check(
            intent,
            market=self.market_state(intent.asset_id),
            ledger=self.ledger,
            positions=self.positions,
            marks=self.marks(),
            now_ns=now,
            lease_revision=lease,
        )
        await self.publisher.publish(decision.events)
        if not decision.accepted:
            return
        if intent.action == "replace" and not await self._cancel_target(intent, now):
            return
        await self.publisher.publish([self.ledger.submit(intent, now)])
        market = self.view.market_of(intent.asset_id)
        order = VenueOrder(
            client_order_id=intent.intent_id,
            condition_id=intent.condition_id,
            asset_id=intent.asset_id,
            side=intent.side,
            price=intent.price,
            size=intent.size,
            time_in_force=intent.time_in_force,
            post_only=intent.post_only,
            expires_at_ns=intent.expires_at_ns,
            tick_size=self.view.tick(intent.asset_id),
            neg_risk=market.neg_risk if market is not None else False,
            exchange_version=exchange_version_of(intent.asset_id),
        )
        [result] = await self.venue.submit([order])
        await self._on_submit(intent, result)

    async def _cancel_target(self, intent: OrderIntent, now: int) -> bool:
        """A replace cancels its target first; False (and a rejection) if that failed."""
        target = self.ledger.find(intent.target_intent_id)
        if target is None or not target.is_open:
            state = "unknown" if target is None else target.status
            await self.publisher.publish(
                [reject_intent(intent, "unknown_order", f"no open order to replace ({state})", now)]
            )
            return False
        await self.cancel_orders([target], reason=f"replaced by {intent.intent_id}")
        if target.is_open:
            await self.publisher.publish(
                [reject_intent(intent, "venue_rejected", "its target was not canceled", now)]
            )
            return False
        return True

    async def _on_submit(
        self, intent: OrderIntent, result: SubmitAccepted | SubmitRejected | object
    ) -> None:
        now = self._clock()
        order_id = intent.intent_id
        metrics.submit_answered(intent.strategy_id, order_id, result)
        if isinstance(result, SubmitAccepted):
            await self._transition(order_id, "accepted", now, venue_order_id=result.venue_order_id)
            if result.venue_status != "matched" and self.on_order_live is not None:
                self.on_order_live()
        elif isinstance(result, SubmitRejected):
            await self._transition(
                order_id,
                "rejected",
                now,
                reason="venue_rejected",
                detail=f"{result.reason}: {result.message}" if result.message else result.reason,
            )
            if result.reason not in NOT_A_BREAKER_REJECT:
                await self._count_reject(intent.strategy_id, now)
        else:
            # The venue may have the order: only reconciliation may say, never a resubmit.
            reason = getattr(result, "reason", "unknown")
            await self._transition(
                order_id,
                "unknown",
                now,
                venue_order_id=getattr(result, "venue_order_id", ""),
                reason=reason,
                detail=getattr(result, "message", ""),
            )
            await self.reconcile(f"submit outcome unknown: {reason}")

    async def _count_reject(self, strategy_id: str, now: int) -> None:
        events = self.gate.on_venue_reject(strategy_id, now)
        await self.publisher.publish(events)
        for event in events:
            if event.kind == "halt" and self._trip_halt is not None:
                # Through the HALT bucket, so the breaker survives a restart and resume lifts it.
                result = self._trip_halt(event.strategy_id, f"breaker_open: {event.detail}")
                if asyncio.iscoroutine(result):
                    await result

    # -- cancels and halts -------------------------------------------------------------------
    async def cancel_orders(self, orders: Sequence[WorkingOrder], *, reason: str) -> None:
        """Cancel open orders at the venue; what the venue confirms becomes ``canceled``."""
        by_venue_id = {o.venue_order_id: o for o in orders if o.is_open and o.venue_order_id}
        if not by_venue_id:
            return
        now = self._clock()
        for result in await self.venue.cancel(list(by_venue_id)):
            order = by_venue_id.get(result.venue_order_id)
            if order is None:
                continue
            if result.outcome == "canceled" or result.reason == "already_canceled":
                await self._transition(order.order_id, "canceled", now, reason=reason)
            else:
                # Matched meanwhile (its fills are on the way) or unanswered: the reports and
                # reconciliation settle it.
                _log.warning(
                    "order.cancel_refused",
                    order_id=order.order_id,
                    outcome=result.outcome,
                    reason=result.reason,
                )

    async def on_halt(self, state: HaltState) -> None:
        """A halt (or resume) of one strategy or of all, from the HALT bucket."""
        now = self._clock()
        scope = state.strategy_id or None
        async with self.lock:
            if state.halted:
                event = self.gate.halt(scope, state.reason, now)
                await self.publisher.publish([event])
                _log.warning("executor.halted", strategy_id=state.strategy_id, reason=state.reason)
                await self.cancel_orders(
                    list(self.ledger.open_orders(scope)), reason=f"halted: {state.reason}"
                )
            else:
                await self.publisher.publish([self.gate.resume(scope, now)])
                _log.info("executor.resumed", strategy_id=state.strategy_id)

    # -- venue reports -----------------------------------------------------------------------
    async def handle_report(self, report: VenueReport) -> None:
        async with self.lock:
            if isinstance(report, VenueTrade):
                await self._on_trade(report)
            elif isinstance(report, VenueOrderUpdate):
                await self._on_order_update(report)
            elif isinstance(report, ReportsGap):
                await self.reconcile(f"reports gap: {report.reason}")

    async def _on_trade(self, trade: VenueTrade) -> None:
        now = self._clock()
        order = self.ledger.find_by_venue_id(trade.venue_order_id)
        if order is None:
            _log.warning("fill.unknown_order", venue_order_id=trade.venue_order_id)
            return
        fill = fill_for_trade(
            trade,
            order_id=order.order_id,
            strategy_id=order.strategy_id,
            now_ns=now,
            fee_exponent=self.fee_exponent(order.condition_id),
        )
        if fill is not None and isinstance(trade, PaperVenueTrade):
            fill = msgspec.structs.replace(fill, fee=trade.fee)  # exactly what paper took
        if fill is None:
            _log.warning("fill.unknown_status", trade_id=trade.trade_id, status=trade.status)
            return
        position = self.positions.get(order.strategy_id, order.asset_id)
        seen = position is not None and fill.fill_id in position.fills
        changed = self.positions.on_fill(fill)
        events: list[ExecutionEvent] = [fill]
        if not seen and fill.settlement != "FAILED":
            event = self._ledger_event(lambda: self.ledger.on_fill(order.order_id, fill.size, now))
            if event is not None:
                events.append(event)
        if changed is not None:
            marks = self.marks()
            self._snapshots += 1
            events.append(
                changed.snapshot(now, mark=marks.get(changed.asset_id), sequence=self._snapshots)
            )
            events.extend(self.gate.update_loss_stops(self.positions, marks, now))
        await self.publisher.publish(events)

    async def _on_order_update(self, update: VenueOrderUpdate) -> None:
        order = self.ledger.find_by_venue_id(update.venue_order_id)
        status = _STATE_OF_UPDATE.get(update.status)
        if order is None or status is None or not order.is_open:
            return
        await self._transition(order.order_id, status, self._clock(), ts_event=update.at_ns)

    # -- reconciliation, timers, market facts ------------------------------------------------
    async def reconcile(self, why: str) -> bool:
        """Bring the ledger and positions in line with the venue (the caller holds the lock);
        False if the venue could not be read (nothing changed then)."""
        if self.reconciler is None:
            _log.warning("reconcile.unavailable", why=why)
            return False
        _log.info("reconcile.started", why=why)
        try:
            events = await self.reconciler.reconcile(self._clock())
        except VenueUnavailable as error:
            _log.warning("reconcile.venue_unavailable", why=why, reason=error.reason)
            return False
        await self.publisher.publish(e for e in events if isinstance(e, ExecutionEvent))
        return True

    async def heartbeat_lost(self, reason: str) -> None:
        """The venue's dead-man switch may have fired: refuse new orders until reconciled."""
        async with self.lock:
            self.submissions_blocked = f"venue heartbeat lost: {reason}"
            await self.publisher.publish([self._switch_event("halt", self.submissions_blocked)])

    async def heartbeat_restored(self, confirm: Callable[[], bool]) -> bool:
        """A fresh heartbeat ack: reconcile, then ``confirm()`` (the heartbeat's ``restored``)
        lifts the block; False when the venue could not be read (try again)."""
        async with self.lock:
            if not await self.reconcile("heartbeat restored"):
                return False
            if confirm():
                self.submissions_blocked = ""
                await self.publisher.publish([self._switch_event("resume", "heartbeat acked")])
            return True

    def _switch_event(self, kind: Literal["halt", "resume"], detail: str) -> RiskEvent:
        now = self._clock()
        return RiskEvent(
            event_id=f"risk.account.{kind}.heartbeat.{now}",
            ts_event=now,
            ts_init=now,
            strategy_id="",
            kind=kind,
            limit="heartbeat",
            detail=detail,
        )

    async def cancel_restored_paper_orders(self) -> None:
        """Paper orders live in the process: after a restart the ones that were open are gone,
        and say so (``canceled``, reason ``paper_restart``)."""
        now = self._clock()
        async with self.lock:
            for order in list(self.ledger.open_orders()):
                await self._transition(
                    order.order_id,
                    "canceled",
                    now,
                    reason="paper_restart",
                    detail="paper orders do not survive an executor restart",
                )

    async def check_loss_stops(self) -> None:
        async with self.lock:
            events = self.gate.update_loss_stops(self.positions, self.marks(), self._clock())
            await self.publisher.publish(events)

    def market_state(self, asset_id: str) -> MarketState | None:
        asset = self.view.asset(asset_id)
        if asset is None or not asset.tick_size:
            return None
        state = asset.state.value
        return MarketState(
            condition_id=asset.condition_id,
            asset_id=asset_id,
            tick_size=asset.tick_size,
            min_order_size=asset.min_order_size,
            book_state=state if state in ("live", "stale", "closed") else "resyncing",  # type: ignore[arg-type]
            best_bid=asset.book.best_bid,
            best_ask=asset.book.best_ask,
        )

    def fee_exponent(self, condition_id: str) -> int:
        """The market's taker fee exponent (trades carry the rate only); 1 until it is known."""
        market = self.view.market(condition_id)
        return market.fee_exponent if market is not None else 1

    def marks(self) -> dict[str, int]:
        """The price each held asset would close at now: a long at its best bid."""
        marks: dict[str, int] = {}
        for position in self.positions.positions():
            size = position.provisional.size
            book = self.view.book(position.asset_id)
            if not size or book is None:
                continue
            price = book.best_bid if size > 0 else book.best_ask
            if price is not None:
                marks[position.asset_id] = price
        return marks

    # -- helpers -----------------------------------------------------------------------------
    async def _transition(
        self, order_id: str, status: OrderStatus, now: int, **fields: object
    ) -> None:
        event = self._ledger_event(
            lambda: self.ledger.transition(order_id, status, now, **fields)  # type: ignore[arg-type]
        )
        if event is not None:
            await self.publisher.publish([event])

    @staticmethod
    def _ledger_event(change: Callable[[], OrderEvent]) -> OrderEvent | None:
        try:
            return change()
        except IllegalTransition as error:
            # A late or repeated venue message: the state machine keeps the order as it is.
            _log.debug("order.transition_ignored", error=str(error))
            return None
