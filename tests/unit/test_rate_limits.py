"""The venue's per-signer rate-limit table (VENUE.md §6.2) lives in one place, and both the
simulator that enforces it and the executor that throttles itself read that one table."""

from __future__ import annotations

import typing

from polybus.common.polymarket import rate_limits
from polybus.common.polymarket.rate_limits import TIERS, TierName
from polybus.executor.live import limits as executor_limits
from polybus.executor.live.limits import SignerLimits
from polybus.sim import ratelimit as sim_limits
from polybus.sim.config import RateLimitTier
from polybus.sim.ratelimit import RateLimiter

# Copied by hand from VENUE §6.2: tier, order rate/s, order burst, cancel rate/s, cancel
# burst, negative cancel balance.
PUBLISHED = [
    ("standard", 40, 60, 80, 120, True),
    ("copper", 60, 90, 120, 180, True),
    ("bronze", 80, 120, 160, 240, True),
    ("silver", 200, 300, 400, 600, True),
    ("gold", 400, 600, 800, 1200, True),
    ("platinum", 450, 675, 900, 1350, False),
    ("diamond", 525, 787, 1050, 1575, False),
    ("elite", 600, 900, 1200, 1800, False),
]


def test_the_table_is_the_venues_published_one_in_tier_order() -> None:
    rows = [
        (
            tier.name,
            tier.order_rate,
            tier.order_burst,
            tier.cancel_rate,
            tier.cancel_burst,
            tier.negative_cancel_balance,
        )
        for tier in TIERS.values()
    ]
    assert rows == PUBLISHED
    assert all(name == tier.name for name, tier in TIERS.items())


def test_every_tier_name_has_a_row_and_the_simulators_setting_accepts_the_same_names() -> None:
    assert set(typing.get_args(TierName)) == set(TIERS)
    assert set(typing.get_args(RateLimitTier)) == set(TIERS)


def test_the_simulator_and_the_executor_read_the_one_table() -> None:
    assert sim_limits.TIERS is rate_limits.TIERS
    assert executor_limits.TIERS is rate_limits.TIERS


def test_both_sides_size_their_buckets_from_the_table() -> None:
    for name, tier in TIERS.items():
        signer = SignerLimits(name)
        assert (signer.orders.rate, signer.orders.burst) == (tier.order_rate, tier.order_burst)
        assert (signer.cancels.rate, signer.cancels.burst) == (tier.cancel_rate, tier.cancel_burst)
        limiter = RateLimiter(name)
        # A batch above the burst can never pass; one of exactly the burst does.
        assert not limiter.admit("0xsigner", "order", tier.order_burst + 1).allowed
        assert limiter.admit("0xsigner", "order", tier.order_burst).allowed
        assert not limiter.admit("0xsigner", "cancel", tier.cancel_burst + 1).allowed
        assert limiter.admit("0xsigner", "cancel", tier.cancel_burst).allowed
