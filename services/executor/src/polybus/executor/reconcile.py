"""Reconciliation: the venue's open orders and our trades repair the executor's own state.

One pass (:meth:`Reconciler.reconcile`) reads the venue first and changes nothing until both
reads succeeded, so a venue that does not answer leaves the state as it was. Open orders are
read **before** trades: an order that fills completely between the two reads is missing from
the first and present in the second (filled), never taken for canceled.

Only orders that were already past ``submitted`` when the pass started are judged, and only if
no pushed report moved them while the venue was being read: a submit still in flight, or a
state newer than the reads, is left for the next pass. What a pass decides, per working order:

- listed open at the venue: ``unknown`` becomes ``accepted`` (or ``partially_filled``), and a
  bigger matched size than ours becomes ``partially_filled``;
- not listed: ``filled`` if its fills cover its size, else ``expired`` (a GTD order last seen
  with an expiry that has passed) or ``canceled``, with the filled size it has;
- ``unknown``, not listed and without a fill: it stays ``unknown`` for ``unknown_grace_s``
  after its submit (the venue may still be working on it), then becomes ``canceled`` with
  reason ``not_found_at_venue``. Whether it never arrived or was canceled there (say by the
  dead-man switch), it rests nowhere and never filled; ``rejected`` would claim a refusal
  nobody saw. It is never resubmitted.

A trade of ours becomes a ``Fill`` when the positions have not seen it with that settlement
status (idempotent by fill id + status, so the user channel and a pass may both see it). Trades
are attributed through the ledger's venue order ids, then through fills the positions already
hold; a trade of an order nobody here knows is reported, never guessed into a position. Open
orders the venue has and the ledger does not are reported with a ``RiskEvent`` and canceled when
``cancel_unknown_orders_on_reconcile`` is on — except one that may be a submit still in flight
(same asset, side, price and size as a ``submitted`` order), left for the next pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from polybus.common.events import Event, Fill, OrderEvent, OrderStatus, RiskEvent, SettlementStatus
from polybus.common.fees import FeeSchedule, taker_fee
from polybus.common.money import MICROS, format_micros
from polybus.common.positions import PositionBook
from polybus.executor.config import NANOS_PER_SECOND, ExecutorSettings
from polybus.executor.orders import IllegalTransition, OrderLedger, WorkingOrder
from polybus.executor.risk import ACCOUNT
from polybus.executor.venue import Venue, VenueOpenOrder, VenueTrade, VenueUnavailable

_log = structlog.get_logger("polybus.executor.reconcile")

MICROS_PER_BPS = 100
"""One basis point (0.0001) in micro-units: a trade's ``fee_rate_bps`` as a fee rate."""

_SETTLEMENT: dict[str, SettlementStatus] = {
    "MATCHED": "MATCHED",
    # Seen on account trade listings only (VENUE §3.5): matched, not yet sent on chain.
    "MATCHED_NOT_BROADCASTED": "MATCHED",
    "MINED": "MINED",
    "CONFIRMED": "CONFIRMED",
    "RETRYING": "RETRYING",
    "FAILED": "FAILED",
}

_EXPIRY_SLACK_NS = 60 * NANOS_PER_SECOND
"""The venue ends a GTD order up to its security threshold (60 s, VENUE §3.6) before the
expiration it lists, so a GTD order gone within that minute counts as expired."""

_REPORTED_IDS = 5
"""How many ids a report of unknown trades names (the count is always there)."""


def fill_id_of(trade: VenueTrade) -> str:
    """The fill id of our part of a trade: the trade id for a taker fill (one per trade), the
    trade id and our order id for a maker fill (one trade can fill several of our orders)."""
    if trade.liquidity == "taker":
        return trade.trade_id
    return f"{trade.trade_id}:{trade.venue_order_id}"


def settlement_of(trade: VenueTrade) -> SettlementStatus | None:
    """The settlement status of a trade, or None for a status this version does not know."""
    return _SETTLEMENT.get(trade.status.upper())


def fill_for_trade(
    trade: VenueTrade,
    *,
    order_id: str,
    strategy_id: str,
    now_ns: int,
    fee_exponent: int = 1,
) -> Fill | None:
    """The ``Fill`` of our part of ``trade`` (None when its status is unknown).

    A maker pays no fee; a taker pays the trade's ``fee_rate_bps`` by the venue's formula with
    the market's exponent, in the asset the venue takes it in (:func:`taker_fee`).
    """
    settlement = settlement_of(trade)
    if settlement is None:
        return None
    fee = 0
    if trade.liquidity == "taker" and trade.fee_rate_bps > 0 and 0 < trade.price < MICROS:
        schedule = FeeSchedule(rate=trade.fee_rate_bps * MICROS_PER_BPS, exponent=fee_exponent)
        fee = taker_fee(trade.side, trade.price, trade.size, schedule)
    fill_id = fill_id_of(trade)
    return Fill(
        # Deterministic: the same fill in the same status re-published dedups on EXEC.
        event_id=f"fill.{fill_id}.{settlement}",
        ts_event=trade.matched_at_ns or now_ns,
        ts_init=now_ns,
        correlation_id=order_id,
        fill_id=fill_id,
        order_id=order_id,
        strategy_id=strategy_id,
        condition_id=trade.condition_id,
        asset_id=trade.asset_id,
        side=trade.side,
        price=trade.price,
        size=trade.size,
        fee=fee,
        liquidity=trade.liquidity,
        settlement=settlement,
        venue_order_id=trade.venue_order_id,
    )


@dataclass(slots=True)
class _KnownFills:
    """What the positions hold, indexed for one pass: each fill by id, and per order the
    shares of all its fills (a FAILED one included: the venue matched it, VENUE §8)."""

    by_id: dict[str, Fill] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    earliest_provisional_ns: int | None = None

    @classmethod
    def of(cls, positions: PositionBook) -> _KnownFills:
        known = cls()
        for position in positions.positions():
            for fill_id, record in position.fills.items():
                fill = record.fill
                known.by_id[fill_id] = fill
                known.filled[fill.order_id] = known.filled.get(fill.order_id, 0) + fill.size
                if record.fill_class == "provisional" and (
                    known.earliest_provisional_ns is None
                    or fill.ts_event < known.earliest_provisional_ns
                ):
                    known.earliest_provisional_ns = fill.ts_event
        return known


def _same_order(order: WorkingOrder, listed: VenueOpenOrder) -> bool:
    return (
        order.asset_id == listed.asset_id
        and order.side == listed.side
        and order.price == listed.price
        and order.size == listed.original_size
    )


class Reconciler:
    """Repairs the ledger and the positions from what the venue says (module docstring).

    ``clock`` reads unix ns; it stamps the events a pass makes once the venue has answered.
    ``fee_exponent`` gives a market's fee exponent by condition id (the trades carry the rate
    only). The caller publishes the events :meth:`reconcile` returns and runs one pass at a
    time.
    """

    def __init__(
        self,
        venue: Venue,
        ledger: OrderLedger,
        positions: PositionBook,
        settings: ExecutorSettings,
        clock: Callable[[], int],
        *,
        unknown_grace_s: float = 30.0,
        trades_margin_s: float = 60.0,
        fee_exponent: Callable[[str], int] = lambda _condition_id: 1,
    ) -> None:
        self._venue = venue
        self._ledger = ledger
        self._positions = positions
        self._cancel_unknown = settings.cancel_unknown_orders_on_reconcile
        self._clock = clock
        self._unknown_grace_ns = round(unknown_grace_s * NANOS_PER_SECOND)
        self._trades_margin_ns = round(trades_margin_s * NANOS_PER_SECOND)
        self._fee_exponent = fee_exponent
        self._last_pass_ns: int | None = None
        self._expiry_ns: dict[str, int] = {}
        """GTD expiry by venue order id, from the listings: when an order is gone, expired?"""
        self._reported_trades: set[str] = set()
        self._snapshots = 0
        self.unresolved: tuple[str, ...] = ()
        """Order ids still ``unknown`` after the last pass (inside their grace period)."""

    def _trades_after(self) -> int:
        """Where the trades read starts: everything on the first pass; later, the last pass
        less a margin, or earlier still while a fill we hold is provisional (its settlement
        may move at any time, and the venue filters by match time)."""
        if self._last_pass_ns is None:
            return 0
        after = self._last_pass_ns - self._trades_margin_ns
        earliest = _KnownFills.of(self._positions).earliest_provisional_ns
        if earliest is not None:
            after = min(after, earliest - NANOS_PER_SECOND)
        return max(after, 0)

    async def reconcile(self, now_ns: int) -> list[Event]:
        """One pass (``now_ns``: when it starts); the events to publish, in order: fills,
        order changes, reports, position snapshots. Raises :class:`VenueUnavailable`, with
        nothing changed, when the venue cannot be read."""
        judged = {
            order.order_id: (order.status, order.filled_size)
            for order in self._ledger.open_orders()
            if order.status != "submitted"
        }
        listed = await self._venue.open_orders()
        trades = await self._venue.trades(self._trades_after())
        at_ns = self._clock()

        known = _KnownFills.of(self._positions)
        fills, changed, unattributed = self._apply_trades(trades, known, at_ns)
        for listing in listed:
            if listing.expires_at_ns:
                self._expiry_ns[listing.venue_order_id] = listing.expires_at_ns
        by_venue_id = {listing.venue_order_id: listing for listing in listed}
        claimed: set[str] = set()
        orders: list[Event] = []
        unresolved: list[str] = []
        for order_id, before in judged.items():
            order = self._ledger.find(order_id)
            if order is None or (order.status, order.filled_size) != before:
                continue  # a pushed report moved it meanwhile: newer than our reads
            match = self._listing_of(order, by_venue_id, listed, claimed)
            if match is not None:
                claimed.add(match.venue_order_id)
            event = self._resolve(order, match, known.filled.get(order_id, 0), now_ns, at_ns)
            if event is not None:
                orders.append(event)
            elif order.status == "unknown":
                unresolved.append(order_id)
        self.unresolved = tuple(unresolved)

        reports = await self._report_foreign(listed, claimed, at_ns)
        reports.extend(self._report_unattributed(unattributed, at_ns))
        snapshots = self._snapshot_positions(changed, at_ns)
        self._last_pass_ns = now_ns
        _log.info(
            "reconcile.done",
            open_at_venue=len(listed),
            trades=len(trades),
            fills=len(fills),
            order_changes=len(orders),
            reports=len(reports),
            unresolved=len(unresolved),
        )
        return [*fills, *orders, *reports, *snapshots]

    # -- trades ------------------------------------------------------------------------------
    def _apply_trades(
        self, trades: Iterable[VenueTrade], known: _KnownFills, at_ns: int
    ) -> tuple[list[Event], set[tuple[str, str]], list[VenueTrade]]:
        """Fold the trades into the positions (and ``known``); the new fills, the positions
        they changed, and the trades nobody here can attribute."""
        fills: list[Event] = []
        changed: set[tuple[str, str]] = set()
        unattributed: list[VenueTrade] = []
        owners: dict[str, tuple[str, str] | None] = {}
        for trade in trades:
            fill_id = fill_id_of(trade)
            owner = self._owner_of(trade, fill_id, known, owners)
            if owner is None:
                unattributed.append(trade)
                continue
            order_id, strategy_id = owner
            fill = fill_for_trade(
                trade,
                order_id=order_id,
                strategy_id=strategy_id,
                now_ns=at_ns,
                fee_exponent=self._fee_exponent(trade.condition_id),
            )
            if fill is None:
                _log.warning("reconcile.unknown_trade_status", trade_id=trade.trade_id)
                continue
            first_seen = fill_id not in known.by_id
            if self._positions.on_fill(fill) is not None:
                changed.add((strategy_id, trade.asset_id))
            elif not first_seen:
                continue  # seen in this status (or a final one) already
            if first_seen:
                known.filled[order_id] = known.filled.get(order_id, 0) + fill.size
            known.by_id[fill_id] = fill
            fills.append(fill)
        return fills, changed, unattributed

    def _owner_of(
        self,
        trade: VenueTrade,
        fill_id: str,
        known: _KnownFills,
        owners: dict[str, tuple[str, str] | None],
    ) -> tuple[str, str] | None:
        """(order id, strategy id) of the order a trade filled, if anyone here knows it."""
        if trade.venue_order_id not in owners:
            order = self._ledger.find_by_venue_id(trade.venue_order_id)
            owners[trade.venue_order_id] = (
                (order.order_id, order.strategy_id) if order is not None else None
            )
        owner = owners[trade.venue_order_id]
        if owner is None and (seen := known.by_id.get(fill_id)) is not None:
            owner = (seen.order_id, seen.strategy_id)
        return owner

    # -- orders ------------------------------------------------------------------------------
    def _listing_of(
        self,
        order: WorkingOrder,
        by_venue_id: dict[str, VenueOpenOrder],
        listed: list[VenueOpenOrder],
        claimed: set[str],
    ) -> VenueOpenOrder | None:
        if order.venue_order_id:
            return by_venue_id.get(order.venue_order_id)
        # An unknown submit whose venue id we never learnt: the one unclaimed listing that is
        # the same order, or none (two look-alikes cannot be told apart).
        candidates = [
            listing
            for listing in listed
            if listing.venue_order_id not in claimed
            and self._ledger.find_by_venue_id(listing.venue_order_id) is None
            and _same_order(order, listing)
        ]
        return candidates[0] if len(candidates) == 1 else None

    def _resolve(
        self,
        order: WorkingOrder,
        listing: VenueOpenOrder | None,
        fills_size: int,
        now_ns: int,
        at_ns: int,
    ) -> OrderEvent | None:
        filled = max(order.filled_size, fills_size, listing.size_matched if listing else 0)
        filled = min(filled, order.size)  # a marketable BUY may get more shares than asked
        venue_order_id = listing.venue_order_id if listing is not None else ""
        status: OrderStatus
        reason = "reconciled"
        if filled >= order.size:
            status = "filled"
        elif listing is not None:
            status = "partially_filled" if filled > 0 else "accepted"
            if status == "accepted" and order.status != "unknown":
                return None  # resting as we thought
        elif order.status == "unknown" and filled == 0:
            if now_ns - order.created_ns < self._unknown_grace_ns:
                return None  # the venue may still be working on it
            status, reason = "canceled", "not_found_at_venue"
        else:
            expiry = self._expiry_ns.get(order.venue_order_id, 0)
            status = "expired" if expiry and now_ns >= expiry - _EXPIRY_SLACK_NS else "canceled"
            reason = "not_open_at_venue"
        if status == order.status and filled == order.filled_size:
            return None
        try:
            event = self._ledger.transition(
                order.order_id,
                status,
                at_ns,
                filled_size=filled,
                venue_order_id=venue_order_id,
                reason=reason,
            )
        except IllegalTransition as error:
            _log.warning("reconcile.transition_refused", order_id=order.order_id, error=str(error))
            return None
        if status in ("filled", "canceled", "expired"):
            self._expiry_ns.pop(order.venue_order_id, None)
        _log.info(
            "reconcile.order_resolved",
            order_id=order.order_id,
            status=status,
            filled_size=filled,
            reason=reason,
        )
        return event

    async def _report_foreign(
        self, listed: list[VenueOpenOrder], claimed: set[str], at_ns: int
    ) -> list[Event]:
        """Report (and cancel, when configured) open orders the ledger does not know."""
        in_flight = [o for o in self._ledger.open_orders() if o.status == "submitted"]
        foreign = [
            listing
            for listing in listed
            if listing.venue_order_id not in claimed
            and self._ledger.find_by_venue_id(listing.venue_order_id) is None
            and not any(_same_order(order, listing) for order in in_flight)
        ]
        if not foreign:
            return []
        outcomes = {listing.venue_order_id: "left open" for listing in foreign}
        if self._cancel_unknown:
            try:
                results = await self._venue.cancel([o.venue_order_id for o in foreign])
            except VenueUnavailable as error:
                results = []
                _log.warning("reconcile.cancel_failed", reason=error.reason)
            for result in results:
                outcomes[result.venue_order_id] = (
                    "canceled"
                    if result.outcome == "canceled"
                    else f"cancel {result.outcome}: {result.reason or result.message}"
                )
            for listing in foreign:
                if outcomes[listing.venue_order_id] == "left open":
                    outcomes[listing.venue_order_id] = "cancel unknown: no answer"
        reports: list[Event] = []
        for listing in foreign:
            outcome = outcomes[listing.venue_order_id]
            _log.warning(
                "reconcile.unknown_venue_order",
                venue_order_id=listing.venue_order_id,
                outcome=outcome,
            )
            reports.append(
                RiskEvent(
                    event_id=f"risk.account.unknown_venue_order.{listing.venue_order_id}.{at_ns}",
                    ts_event=at_ns,
                    ts_init=at_ns,
                    strategy_id=ACCOUNT,
                    kind="venue_mismatch",
                    limit="unknown_venue_order",
                    detail=(
                        f"venue order {listing.venue_order_id} {listing.side} "
                        f"{format_micros(listing.original_size - listing.size_matched)} @ "
                        f"{format_micros(listing.price)} on {listing.asset_id}: {outcome}"
                    ),
                    condition_id=listing.condition_id,
                )
            )
        return reports

    def _report_unattributed(self, trades: list[VenueTrade], at_ns: int) -> list[Event]:
        """One report per pass of trades of orders nobody here knows (each trade once)."""
        new = sorted({fill_id_of(t) for t in trades} - self._reported_trades)
        if not new:
            return []
        self._reported_trades.update(new)
        _log.warning("reconcile.unknown_venue_trades", count=len(new))
        named = ", ".join(new[:_REPORTED_IDS]) + (", ..." if len(new) > _REPORTED_IDS else "")
        return [
            RiskEvent(
                event_id=f"risk.account.unknown_venue_trade.{new[0]}.{at_ns}",
                ts_event=at_ns,
                ts_init=at_ns,
                strategy_id=ACCOUNT,
                kind="venue_mismatch",
                limit="unknown_venue_trade",
                detail=f"{len(new)} fills of orders this executor does not know: {named}",
            )
        ]

    # -- positions ---------------------------------------------------------------------------
    def _snapshot_positions(self, changed: set[tuple[str, str]], at_ns: int) -> list[Event]:
        """Every position on the first pass (a restart republishes them), then those changed."""
        first = self._last_pass_ns is None
        snapshots: list[Event] = []
        for position in self._positions.positions():
            if first or (position.strategy_id, position.asset_id) in changed:
                self._snapshots += 1
                snapshots.append(position.snapshot(at_ns, sequence=self._snapshots))
        return snapshots
