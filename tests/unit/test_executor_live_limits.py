"""Token buckets and backoff on a clock the test moves."""

from __future__ import annotations

import asyncio
import random

import pytest

from polybus.executor.live.limits import TIERS, Backoff, SignerLimits, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_a_bucket_passes_its_burst_then_waits_for_the_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=40, burst=60, clock=clock, allow_negative=False)
    await bucket.take(60)
    assert clock.slept == []
    await bucket.take(20)
    assert clock.slept == [pytest.approx(0.5)]


async def test_a_cost_above_the_burst_can_never_pass() -> None:
    bucket = TokenBucket(rate=40, burst=60, clock=FakeClock(), allow_negative=False)
    with pytest.raises(ValueError, match="split it"):
        await bucket.take(61)


def test_cancel_all_may_leave_the_balance_negative_on_tiers_that_allow_it() -> None:
    clock = FakeClock()
    standard = SignerLimits("standard", clock)
    standard.cancels.charge(500)
    assert standard.cancels.tokens == 120 - 500
    assert standard.cancels.wait_s(1) == pytest.approx((500 - 120 + 1) / 80)
    elite = SignerLimits("elite", clock)
    elite.cancels.charge(5000)
    assert elite.cancels.tokens == 0


def test_the_tiers_are_the_published_table() -> None:
    assert (TIERS["standard"].order_rate, TIERS["standard"].order_burst) == (40, 60)
    assert (TIERS["standard"].cancel_rate, TIERS["standard"].cancel_burst) == (80, 120)
    assert SignerLimits("gold").cancel_chunk == 1200


def test_backoff_honours_retry_after_and_otherwise_doubles_with_jitter() -> None:
    backoff = Backoff(initial_s=1.0, maximum_s=30.0, jitter=0.2)
    rng = random.Random(7)
    assert 3.0 <= backoff.delay_s(0, 3.0, rng) <= 3.6
    delays = [backoff.delay_s(attempt, None, rng) for attempt in range(8)]
    assert all(0.5 * min(30, 2**n) <= d <= min(30, 2**n) for n, d in enumerate(delays))
