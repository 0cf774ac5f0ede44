"""The order ledger: the executor's working orders and their state machine (DESIGN §3).

Orders are keyed by their client order id, which is the id of the intent that placed them.
Every change of an order goes through :meth:`OrderLedger.transition` (or :meth:`on_fill`,
which derives the state from the filled size) and returns the ``OrderEvent`` to publish; a
transition the state machine does not allow raises :class:`IllegalTransition` and changes
nothing, so a late or duplicated venue message can never move an order backwards.

::

    submitted ──► accepted ──► partially_filled ──► filled
        │             │              │  (more fills)
        │             └──────────────┴──► canceled / expired
        ├──► rejected / filled / partially_filled / canceled / expired (the venue's first answer)
        └──► unknown ──► any state the venue reports (reconciliation)

``unknown`` is where a submit whose outcome we did not learn lands (timeout, transport error,
5xx after sending): it is never resubmitted, only resolved by what the venue says.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from polybus.common.events import (
    OrderEvent,
    OrderIntent,
    OrderStatus,
    RejectReason,
    Side,
    TimeInForce,
)

TERMINAL: Final = frozenset({"filled", "canceled", "expired", "rejected"})
"""States an order never leaves."""

OPEN: Final = frozenset({"submitted", "accepted", "partially_filled", "unknown"})
"""States in which an order may still rest at the venue (``unknown`` counts: it might)."""

_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "submitted": frozenset(
        {"accepted", "rejected", "partially_filled", "filled", "canceled", "expired", "unknown"}
    ),
    "accepted": frozenset({"partially_filled", "filled", "canceled", "expired", "unknown"}),
    "partially_filled": frozenset({"partially_filled", "filled", "canceled", "expired", "unknown"}),
    "unknown": frozenset(
        {"accepted", "rejected", "partially_filled", "filled", "canceled", "expired"}
    ),
}


class IllegalTransition(ValueError):
    """A state change the order state machine does not allow (the order is left as it was)."""


class UnknownOrder(KeyError):
    """No working order has this client order id."""


@dataclass(slots=True)
class WorkingOrder:
    """One order as the executor knows it. Mutated only by :class:`OrderLedger`."""

    order_id: str
    strategy_id: str
    condition_id: str
    asset_id: str
    side: Side
    price: int
    size: int
    time_in_force: TimeInForce
    post_only: bool
    status: OrderStatus
    created_ns: int
    filled_size: int = 0
    venue_order_id: str = ""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def remaining_size(self) -> int:
        return self.size - self.filled_size


class OrderLedger:
    """Working orders by client order id, with the transitions that produce ``OrderEvent``s."""

    def __init__(self) -> None:
        self._orders: dict[str, WorkingOrder] = {}
        self._open: dict[str, WorkingOrder] = {}
        """The open ones: every risk check sums them, and finished orders are kept."""
        self._by_venue_id: dict[str, str] = {}

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, order_id: str) -> WorkingOrder:
        try:
            return self._orders[order_id]
        except KeyError:
            raise UnknownOrder(order_id) from None

    def find(self, order_id: str) -> WorkingOrder | None:
        return self._orders.get(order_id)

    def find_by_venue_id(self, venue_order_id: str) -> WorkingOrder | None:
        order_id = self._by_venue_id.get(venue_order_id)
        return self._orders.get(order_id) if order_id is not None else None

    def open_orders(self, strategy_id: str | None = None) -> Iterator[WorkingOrder]:
        """Orders that may rest at the venue, of one strategy or of all."""
        for order in list(self._open.values()):
            if strategy_id is None or order.strategy_id == strategy_id:
                yield order

    def submit(self, intent: OrderIntent, now_ns: int) -> OrderEvent:
        """Record a ``place``/``replace`` intent the risk gate accepted, as ``submitted``."""
        if intent.intent_id in self._orders:
            raise IllegalTransition(f"order {intent.intent_id!r} was already submitted")
        order = WorkingOrder(
            order_id=intent.intent_id,
            strategy_id=intent.strategy_id,
            condition_id=intent.condition_id,
            asset_id=intent.asset_id,
            side=intent.side,
            price=intent.price,
            size=intent.size,
            time_in_force=intent.time_in_force,
            post_only=intent.post_only,
            status="submitted",
            created_ns=now_ns,
        )
        self._orders[order.order_id] = order
        self._index(order)
        return self._event(order, now_ns, causation_id=intent.event_id, reason=intent.reason)

    def transition(
        self,
        order_id: str,
        status: OrderStatus,
        now_ns: int,
        *,
        filled_size: int | None = None,
        venue_order_id: str = "",
        reason: str = "",
        detail: str = "",
        ts_event: int | None = None,
    ) -> OrderEvent:
        """Move an order to ``status`` (optionally with the venue's cumulative filled size)."""
        order = self.get(order_id)
        if status not in _ALLOWED.get(order.status, frozenset()):
            raise IllegalTransition(
                f"order {order_id!r}: {order.status} -> {status} is not allowed"
            )
        filled = order.filled_size if filled_size is None else filled_size
        if not order.filled_size <= filled <= order.size:
            raise IllegalTransition(
                f"order {order_id!r}: filled size {filled} outside "
                f"[{order.filled_size}, {order.size}]"
            )
        if status == "filled" and filled_size is None:
            filled = order.size
        if status == "filled" and filled != order.size:
            raise IllegalTransition(f"order {order_id!r}: filled with {filled} of {order.size}")
        if status == "partially_filled" and not 0 < filled < order.size:
            raise IllegalTransition(f"order {order_id!r}: partially filled with {filled}")
        if status == order.status and filled == order.filled_size:
            # Only partially_filled may repeat, and only with more filled.
            raise IllegalTransition(f"order {order_id!r}: already {status} with {filled}")
        order.status = status
        order.filled_size = filled
        self._index(order)
        if venue_order_id:
            order.venue_order_id = venue_order_id
            self._by_venue_id[venue_order_id] = order_id
        return self._event(order, now_ns, reason=reason, detail=detail, ts_event=ts_event)

    def on_fill(self, order_id: str, size: int, now_ns: int) -> OrderEvent:
        """Add a fill of ``size`` to an order: ``partially_filled`` or ``filled``.

        The caller counts each venue fill once (the positions book keys fills by trade id);
        settlement does not undo an order's fill at the venue, so a FAILED fill is not passed
        here.
        """
        order = self.get(order_id)
        filled = order.filled_size + size
        status: OrderStatus = "filled" if filled >= order.size else "partially_filled"
        return self.transition(order_id, status, now_ns, filled_size=min(filled, order.size))

    def restore(self, event: OrderEvent) -> None:
        """Take an order's state from its own earlier ``OrderEvent`` (rebuilding after a
        restart): the latest event wins, except that the filled size never shrinks and a
        terminal order stays terminal. Produces no event: it was published already."""
        order = self._orders.get(event.order_id)
        if order is None:
            order = self._orders[event.order_id] = WorkingOrder(
                order_id=event.order_id,
                strategy_id=event.strategy_id,
                condition_id=event.condition_id,
                asset_id=event.asset_id,
                side=event.side,
                price=event.price,
                size=event.size,
                # OrderEvent does not carry these; only an open order's cancel needs it, and
                # a cancel does not depend on them.
                time_in_force="GTC",
                post_only=False,
                status=event.status,
                created_ns=event.ts_init,
                filled_size=event.filled_size,
                venue_order_id=event.venue_order_id,
            )
            self._index(order)
            if event.venue_order_id:
                self._by_venue_id[event.venue_order_id] = event.order_id
            return
        if order.status in TERMINAL:
            return
        order.status = event.status
        order.filled_size = max(order.filled_size, event.filled_size)
        self._index(order)
        if event.venue_order_id:
            order.venue_order_id = event.venue_order_id
            self._by_venue_id[event.venue_order_id] = event.order_id

    def forget(self, order_id: str) -> None:
        """Drop a finished order (after its final events went out)."""
        order = self.get(order_id)
        if order.is_open:
            raise IllegalTransition(f"order {order_id!r} is still {order.status}")
        del self._orders[order_id]
        self._by_venue_id.pop(order.venue_order_id, None)

    def _index(self, order: WorkingOrder) -> None:
        if order.is_open:
            self._open[order.order_id] = order
        else:
            self._open.pop(order.order_id, None)

    def _event(
        self,
        order: WorkingOrder,
        now_ns: int,
        *,
        causation_id: str = "",
        reason: str = "",
        detail: str = "",
        ts_event: int | None = None,
    ) -> OrderEvent:
        return OrderEvent(
            # Deterministic: the same state of the same order re-published dedups on EXEC.
            event_id=f"{order.order_id}.{order.status}.{order.filled_size}",
            ts_event=now_ns if ts_event is None else ts_event,
            ts_init=now_ns,
            correlation_id=order.order_id,
            causation_id=causation_id,
            order_id=order.order_id,
            strategy_id=order.strategy_id,
            condition_id=order.condition_id,
            asset_id=order.asset_id,
            status=order.status,
            venue_order_id=order.venue_order_id,
            side=order.side,
            price=order.price,
            size=order.size,
            filled_size=order.filled_size,
            reason=reason,
            detail=detail,
        )


def rejection(
    *,
    order_id: str,
    strategy_id: str,
    condition_id: str,
    asset_id: str,
    reason: RejectReason,
    detail: str,
    now_ns: int,
    intent: OrderIntent | None = None,
) -> OrderEvent:
    """The ``rejected`` ``OrderEvent`` for an intent refused before it became a working order."""
    return OrderEvent(
        event_id=f"{order_id}.rejected.0",
        ts_event=now_ns,
        ts_init=now_ns,
        correlation_id=order_id,
        causation_id=intent.event_id if intent is not None else "",
        order_id=order_id,
        strategy_id=strategy_id,
        condition_id=condition_id,
        asset_id=asset_id,
        status="rejected",
        side=intent.side if intent is not None else "BUY",
        price=intent.price if intent is not None else 0,
        size=intent.size if intent is not None else 0,
        reason=reason,
        detail=detail,
    )


def reject_intent(
    intent: OrderIntent, reason: RejectReason, detail: str, now_ns: int
) -> OrderEvent:
    """The ``rejected`` ``OrderEvent`` answering ``intent``."""
    return rejection(
        order_id=intent.intent_id,
        strategy_id=intent.strategy_id,
        condition_id=intent.condition_id,
        asset_id=intent.asset_id,
        reason=reason,
        detail=detail,
        now_ns=now_ns,
        intent=intent,
    )
