"""What one strategy holds and has working, folded from its own events on EXEC.

The executor is the only authority on orders and positions: every state change of an order is
an ``OrderEvent`` and every position change a ``PositionSnapshot`` on ``exec.<strategy_id>.>``.
:class:`LivePortfolio` folds them in stream order, so a restarted strategy that reads EXEC from
the start ends with exactly the state it had (DESIGN §3, event-sourced). It does not compute a
position itself: the executor's ``PositionSnapshot`` (which follows the ``Fill`` that changed
it on EXEC) carries the numbers, so the strategy and the executor can never disagree.

Besides the executor's view, the portfolio remembers the places this runtime sent that EXEC has
not answered yet (status ``pending``): a strategy that checks ``working(asset_id)`` must not
place a second order while the first is still on its way, and a halt or a lost partition must
cancel those too.
"""

from __future__ import annotations

from collections.abc import Sequence

from polybus.common.events import (
    ExecutionStreamEvent,
    OrderEvent,
    OrderIntent,
    PositionSnapshot,
)
from polybus.strategy.api import WorkingOrder

WORKING_STATUSES = frozenset({"submitted", "accepted", "partially_filled", "unknown"})
"""The ``OrderEvent`` states in which an order may still trade."""
PENDING = "pending"
"""The status of a place this runtime published that EXEC has not reported yet."""


class LivePortfolio:
    """The :class:`~polybus.strategy.api.Portfolio` of one strategy, from its EXEC events."""

    def __init__(self, strategy_id: str) -> None:
        self.strategy_id = strategy_id
        self._working: dict[str, WorkingOrder] = {}
        self._finished: set[str] = set()
        self._positions: dict[str, PositionSnapshot] = {}

    # -- Portfolio ---------------------------------------------------------------------------
    def position(self, asset_id: str) -> int:
        snapshot = self._positions.get(asset_id)
        return snapshot.provisional_size if snapshot is not None else 0

    def working(self, asset_id: str | None = None) -> Sequence[WorkingOrder]:
        return [
            order
            for order in self._working.values()
            if asset_id is None or order.asset_id == asset_id
        ]

    def realized_pnl(self) -> int:
        return sum(snapshot.provisional_realized_pnl for snapshot in self._positions.values())

    # -- more reading ------------------------------------------------------------------------
    def order(self, order_id: str) -> WorkingOrder | None:
        return self._working.get(order_id)

    def positions(self) -> dict[str, PositionSnapshot]:
        """The executor's latest snapshot of every asset this strategy traded."""
        return dict(self._positions)

    def knows(self, order_id: str) -> bool:
        """Whether EXEC or this runtime ever mentioned the order."""
        return order_id in self._working or order_id in self._finished

    # -- writing -----------------------------------------------------------------------------
    def placed(self, intent: OrderIntent) -> None:
        """A place intent was handed to the publisher: working (``pending``) from now on."""
        if intent.intent_id in self._finished:
            return
        self._working[intent.intent_id] = WorkingOrder(
            order_id=intent.intent_id,
            asset_id=intent.asset_id,
            condition_id=intent.condition_id,
            side=intent.side,
            price=intent.price,
            size=intent.size,
            filled_size=0,
            status=PENDING,
        )

    def apply(self, event: ExecutionStreamEvent) -> None:
        """Fold one EXEC event of this strategy in (in stream order; idempotent per event)."""
        if isinstance(event, OrderEvent):
            self._apply_order(event)
        elif isinstance(event, PositionSnapshot):
            self._positions[event.asset_id] = event

    def _apply_order(self, event: OrderEvent) -> None:
        order_id = event.order_id
        if order_id in self._finished:
            return  # final states are final: a late or repeated event changes nothing
        if event.status not in WORKING_STATUSES:
            self._working.pop(order_id, None)
            self._finished.add(order_id)
            return
        self._working[order_id] = WorkingOrder(
            order_id=order_id,
            asset_id=event.asset_id,
            condition_id=event.condition_id,
            side=event.side,
            price=event.price,
            size=event.size,
            filled_size=event.filled_size,
            status=event.status,
        )
