"""The venue's published per-signer trading rate limits (VENUE.md §6.2, docs:
api-reference/trading-rate-limits), in one place for the simulator that enforces them and the
executor that throttles itself to stay under them.

Each signer address has an **order** bucket and a **cancel** bucket, sized by its tier (30-day
maker volume, refreshed every 3 h). A request costs its number of orders or ids; cancel-all and
cancel-market-orders cost 1 + the orders canceled, charged after the fact, so on the tiers with
``negative_cancel_balance`` the cancel balance can go below zero and block the next cancels.
Batches are admitted all or nothing: one costing more than the burst never passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TierName = Literal["standard", "copper", "bronze", "silver", "gold", "platinum", "diamond", "elite"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitTier:
    """One row of the venue's table: tokens per second and burst, per bucket."""

    name: TierName
    order_rate: int
    order_burst: int
    cancel_rate: int
    cancel_burst: int
    negative_cancel_balance: bool
    """Whether a charge after the fact may leave the cancel balance below zero."""


def _tier(
    name: TierName,
    order: tuple[int, int],
    cancel: tuple[int, int],
    *,
    negative_cancel_balance: bool,
) -> RateLimitTier:
    return RateLimitTier(
        name=name,
        order_rate=order[0],
        order_burst=order[1],
        cancel_rate=cancel[0],
        cancel_burst=cancel[1],
        negative_cancel_balance=negative_cancel_balance,
    )


TIERS: dict[TierName, RateLimitTier] = {
    tier.name: tier
    for tier in (
        # name, (order rate/s, burst), (cancel rate/s, burst): VENUE §6.2 as published.
        _tier("standard", (40, 60), (80, 120), negative_cancel_balance=True),
        _tier("copper", (60, 90), (120, 180), negative_cancel_balance=True),
        _tier("bronze", (80, 120), (160, 240), negative_cancel_balance=True),
        _tier("silver", (200, 300), (400, 600), negative_cancel_balance=True),
        _tier("gold", (400, 600), (800, 1200), negative_cancel_balance=True),
        _tier("platinum", (450, 675), (900, 1350), negative_cancel_balance=False),
        _tier("diamond", (525, 787), (1050, 1575), negative_cancel_balance=False),
        _tier("elite", (600, 900), (1200, 1800), negative_cancel_balance=False),
    )
}
"""The venue's tiers by name, from the lowest (every new signer) to the highest."""
