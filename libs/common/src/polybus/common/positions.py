"""Positions and PnL per strategy and asset, from ``Fill``s and their settlement status.

A venue trade is a fill that is re-published on every settlement status change (VENUE §3.5,
§8). Each fill id is counted by the class of its latest status:

- MATCHED, MINED, RETRYING: *provisional* (in ``provisional_size`` and the provisional PnL);
- CONFIRMED: *confirmed* (in ``size`` and the confirmed PnL, and still in the provisional);
- FAILED: the trade did not happen; it is removed from both, as if it had never arrived.

CONFIRMED and FAILED are final: a status arriving after them (a redelivery out of order) is
ignored, and the same fill with the same status twice changes nothing.

Fees are in the asset the venue takes them in (``Fill.fee``, VENUE §6.5): shares on a BUY,
pUSD on a SELL. A BUY of S shares at p with fee f pays p x S pUSD and delivers S - f shares,
so the position's size is what the venue shows at reconciliation. It is folded as the buy of S
at p followed by giving up f shares for nothing (a sale at price 0): the shares the venue kept
take their share of the cost out as a realised loss at once, like a SELL's pUSD fee, and the
average price of the rest stays what was paid. A SELL's pUSD fee counts in full against
realised PnL. ``fees`` reports every fee's pUSD value: a SELL's as paid, a BUY's shares valued
at the fill price, rounded up.

Arithmetic is exact: a position keeps its cost as the exact sum of price x size (micro-units
squared), so nothing is rounded while it is open, and realised plus open cost always equals the
exact cash paid. Rounding happens only where a value leaves in micro-units, always *against
us*: realised and unrealised PnL round down (a gain is smaller, a loss bigger, by under a
micro-pUSD); a partial close (the shares a BUY's fee gives up included) takes its cost share
rounded so the realised part is the lower one, and the full close then realises exactly the
rest, so a position opened and closed again realises exactly ``sell x sold - buy x bought``
(rounded down once) minus the SELL's pUSD fee.

A fill that FAILED after later fills were applied changes average prices retroactively; the
position is then rebuilt from its remaining fills in arrival order, which restores exactly the
state it would have had without that fill.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from polybus.common.events import Fill, PositionSnapshot, SettlementStatus, Side
from polybus.common.money import MICROS

FillClass = Literal["provisional", "confirmed", "failed"]

_CLASS_OF: dict[SettlementStatus, FillClass] = {
    "MATCHED": "provisional",
    "MINED": "provisional",
    "RETRYING": "provisional",
    "CONFIRMED": "confirmed",
    "FAILED": "failed",
}


def _ceil_div(numerator: int, denominator: int) -> int:
    return -((-numerator) // denominator)


@dataclass(slots=True)
class Holding:
    """A signed position with its exact cost: the fold of a sequence of fills."""

    size: int = 0
    """Signed shares, micro-units (negative: short)."""
    cost: int = 0
    """Signed sum of price x size of the open shares, micro-units squared."""
    realized: int = 0
    """Realised PnL before pUSD fees, micro-units squared (exact); a BUY's share fee is in it."""
    pusd_fees: int = 0
    """The fees paid in pUSD (a SELL's), micro-units."""
    fees: int = 0
    """Every fee's pUSD value, micro-units (a BUY's share fee at its fill price, rounded up)."""

    def apply(self, side: Side, price: int, size: int, fee: int) -> None:
        """Fold one fill in; ``fee`` as ``Fill.fee`` carries it (shares on a BUY, else pUSD)."""
        if side == "SELL":
            self._trade(price, -size)
            self.pusd_fees += fee
            self.fees += fee
            return
        self._trade(price, size)
        if fee:
            # The venue keeps ``fee`` of the shares bought: they leave for nothing. (A short,
            # which the CLOB cannot hold, takes them on at no proceeds, realised when covered.)
            self._trade(0, -fee)
            self.fees += _ceil_div(fee * price, MICROS)

    def _trade(self, price: int, signed: int) -> None:
        if self.size == 0 or (self.size > 0) == (signed > 0):
            self.size += signed
            self.cost += price * signed
            return
        closing = min(abs(signed), abs(self.size))
        if self.size > 0:
            # Closing a long: the cost share taken out is rounded up, so realised is the lower.
            removed = _ceil_div(self.cost * closing, self.size)
            self.realized += price * closing - removed
            self.cost -= removed
            self.size -= closing
        else:
            # Closing a short: the proceeds share taken out is rounded down, likewise.
            removed = (-self.cost * closing) // -self.size
            self.realized += removed - price * closing
            self.cost += removed
            self.size += closing
        rest = abs(signed) - closing
        if rest:
            self.size = rest if signed > 0 else -rest
            self.cost = price * self.size

    @property
    def realized_pnl(self) -> int:
        """Realised PnL including fees, pUSD micro-units, rounded down."""
        return self.realized // MICROS - self.pusd_fees

    @property
    def average_price(self) -> int:
        """Cost per share, rounded against us (up for a long, down for a short); 0 when flat."""
        if self.size == 0:
            return 0
        if self.size > 0:
            return _ceil_div(self.cost, self.size)
        return self.cost // self.size

    def cost_notional(self) -> int:
        """pUSD at cost of the open shares (absolute), rounded up."""
        return _ceil_div(abs(self.cost), MICROS)

    def unrealized_pnl(self, mark: int) -> int:
        """The open shares valued at ``mark`` against their cost, pUSD micro-units, rounded down."""
        return (mark * self.size - self.cost) // MICROS


@dataclass(slots=True)
class _FillRecord:
    fill: Fill
    fill_class: FillClass
    index: int
    """Arrival order within the position."""


@dataclass(slots=True)
class Position:
    """One strategy's position in one asset: the confirmed and the provisional holding."""

    strategy_id: str
    condition_id: str
    asset_id: str
    confirmed: Holding = field(default_factory=Holding)
    provisional: Holding = field(default_factory=Holding)
    fills: dict[str, _FillRecord] = field(default_factory=dict)
    """Every fill seen, in arrival order (dicts keep insertion order)."""
    confirmed_through: int = -1
    """The highest arrival index folded into ``confirmed``."""

    def on_fill(self, fill: Fill) -> bool:
        """Count ``fill`` by its settlement status; False when nothing changed."""
        new_class = _CLASS_OF[fill.settlement]
        record = self.fills.get(fill.fill_id)
        if record is None:
            record = self.fills[fill.fill_id] = _FillRecord(fill, new_class, len(self.fills))
            if new_class == "failed":
                return False
            # A new fill is the latest in arrival order, so it folds onto the end.
            self.provisional.apply(fill.side, fill.price, fill.size, fill.fee)
            if new_class == "confirmed":
                self._confirm(record)
            return True
        if record.fill_class != "provisional" or record.fill_class == new_class:
            return False
        record.fill_class = new_class
        if new_class == "failed":
            self._rebuild_provisional()
        else:
            self._confirm(record)
        return True

    def _confirm(self, record: _FillRecord) -> None:
        # Confirmations usually come in arrival order and fold onto the end; a fill confirmed
        # after a later-arrived one was needs a rebuild (the fold follows arrival order).
        if record.index > self.confirmed_through:
            fill = record.fill
            self.confirmed.apply(fill.side, fill.price, fill.size, fill.fee)
            self.confirmed_through = record.index
        else:
            self._rebuild_confirmed()

    def _rebuild_provisional(self) -> None:
        self.provisional = Holding()
        for record in self.fills.values():
            if record.fill_class != "failed":
                fill = record.fill
                self.provisional.apply(fill.side, fill.price, fill.size, fill.fee)

    def _rebuild_confirmed(self) -> None:
        self.confirmed = Holding()
        for record in self.fills.values():
            if record.fill_class == "confirmed":
                fill = record.fill
                self.confirmed.apply(fill.side, fill.price, fill.size, fill.fee)
                self.confirmed_through = record.index

    def snapshot(
        self, now_ns: int, *, mark: int | None = None, sequence: int = 0
    ) -> PositionSnapshot:
        """The position as the event to publish (``mark``: the price to value it at)."""
        return PositionSnapshot(
            event_id=f"position.{self.strategy_id}.{self.asset_id}.{now_ns}.{sequence}",
            ts_event=now_ns,
            ts_init=now_ns,
            strategy_id=self.strategy_id,
            condition_id=self.condition_id,
            asset_id=self.asset_id,
            size=self.confirmed.size,
            provisional_size=self.provisional.size,
            average_price=self.confirmed.average_price,
            realized_pnl=self.confirmed.realized_pnl,
            provisional_average_price=self.provisional.average_price,
            provisional_realized_pnl=self.provisional.realized_pnl,
            fees=self.provisional.fees,
            mark_price=mark or 0,
            unrealized_pnl=self.provisional.unrealized_pnl(mark) if mark is not None else 0,
        )


class PositionBook:
    """Every position of the account, by strategy and asset."""

    def __init__(self) -> None:
        self._positions: dict[tuple[str, str], Position] = {}

    def on_fill(self, fill: Fill) -> Position | None:
        """Apply a fill (idempotent); the position it changed, or None if nothing changed."""
        key = (fill.strategy_id, fill.asset_id)
        position = self._positions.get(key)
        if position is None:
            position = self._positions[key] = Position(
                fill.strategy_id, fill.condition_id, fill.asset_id
            )
        return position if position.on_fill(fill) else None

    def get(self, strategy_id: str, asset_id: str) -> Position | None:
        return self._positions.get((strategy_id, asset_id))

    def positions(self, strategy_id: str | None = None) -> Iterator[Position]:
        for (owner, _), position in self._positions.items():
            if strategy_id is None or owner == strategy_id:
                yield position
