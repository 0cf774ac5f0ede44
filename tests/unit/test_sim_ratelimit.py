"""The simulator's per-signer token buckets (VENUE.md §6.2)."""

from __future__ import annotations

import pytest

from polybus.sim.ratelimit import TIERS, RateLimiter


def test_a_fresh_bucket_allows_its_burst_and_refuses_the_rest() -> None:
    limiter = RateLimiter("standard")
    first = limiter.admit("0xa", "order", 60)
    assert first.allowed
    assert first.headers["Poly-RateLimit-Remaining"] == "0"
    refused = limiter.admit("0xa", "order", 1)
    assert not refused.allowed
    assert int(refused.headers["Retry-After"]) >= 1
    # Buckets are per signer and per kind.
    assert limiter.admit("0xb", "order", 60).allowed
    assert limiter.admit("0xa", "cancel", 120).allowed


def test_a_batch_above_the_burst_never_passes() -> None:
    limiter = RateLimiter("gold")
    refused = limiter.admit("0xa", "order", TIERS["gold"].order_burst + 1)
    assert not refused.allowed
    assert refused.headers["Poly-RateLimit-Tier"] == "gold"


@pytest.mark.parametrize(("tier", "negative"), [("standard", True), ("platinum", False)])
def test_cancel_all_can_drive_the_cancel_balance_negative_on_lower_tiers(
    tier: str, negative: bool
) -> None:
    limiter = RateLimiter(tier)
    burst = TIERS[tier].cancel_burst
    headers = limiter.charge("0xa", "cancel", burst + 50)
    remaining = int(headers["Poly-RateLimit-Remaining"])
    assert (remaining < 0) is negative
    assert remaining == (-50 if negative else 0)
