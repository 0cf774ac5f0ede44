"""Collateral and share balances of the simulated accounts, and what resting orders reserve.

Every address starts with ``starting_collateral`` pUSD and ``starting_shares`` of each token
(so selling works without buying first). Open orders reserve balance as on the venue
(VENUE.md §5.2): collateral for resting BUYs, shares for resting SELLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from polybus.common.money import MICROS
from polybus.sim.book import BUY, Side
from polybus.sim.config import SimSettings
from polybus.sim.orders import Rejected, UserOrder


@dataclass
class Account:
    collateral: int
    positions: dict[str, int] = field(default_factory=dict)


class Balances:
    def __init__(
        self, settings: SimSettings, resting_orders: Callable[[], Iterable[UserOrder]]
    ) -> None:
        self._settings = settings
        self._resting_orders = resting_orders
        self.accounts: dict[str, Account] = {}

    def account(self, address: str) -> Account:
        account = self.accounts.get(address)
        if account is None:
            account = self.accounts[address] = Account(
                collateral=self._settings.starting_collateral * MICROS
            )
        return account

    def position(self, account: Account, asset_id: str) -> int:
        return account.positions.setdefault(asset_id, self._settings.starting_shares * MICROS)

    def _reserved(self, address: str) -> tuple[int, dict[str, int]]:
        """Collateral and shares held by an address's resting orders."""
        collateral = 0
        shares: dict[str, int] = {}
        for order in self._resting_orders():
            if order.maker_address != address:
                continue
            if order.side == BUY:
                collateral += order.remaining * order.price // MICROS
            else:
                shares[order.asset_id] = shares.get(order.asset_id, 0) + order.remaining
        return collateral, shares

    def check(self, address: str, side: Side, asset_id: str, shares: int, collateral: int) -> None:
        """Refuse an order the address cannot pay for beside its resting orders."""
        account = self.account(address)
        reserved_collateral, reserved_shares = self._reserved(address)
        if side == BUY:
            available, needed = account.collateral - reserved_collateral, collateral
        else:
            held = self.position(account, asset_id)
            available, needed = held - reserved_shares.get(asset_id, 0), shares
        if needed > available:
            raise Rejected(
                "not enough balance / allowance: the balance is not enough -> balance: "
                f"{max(available, 0)}, order amount: {needed}"
            )

    def apply(
        self, address: str, asset_id: str, side: Side, size: int, price: int, sign: int = 1
    ) -> None:
        """Move collateral and shares for a fill (``sign`` -1 undoes it)."""
        account = self.account(address)
        cost = size * price // MICROS
        position = self.position(account, asset_id)
        if side == BUY:
            account.collateral -= sign * cost
            account.positions[asset_id] = position + sign * size
        else:
            account.collateral += sign * cost
            account.positions[asset_id] = position - sign * size

    def charge_fee(self, address: str, asset_id: str, side: Side, fee: int) -> None:
        """Take a taker fee from what the fill brought: shares of a BUY, pUSD of a SELL
        (VENUE.md §6.5); a negative ``fee`` gives it back."""
        account = self.account(address)
        if side == BUY:
            account.positions[asset_id] = self.position(account, asset_id) - fee
        else:
            account.collateral -= fee
