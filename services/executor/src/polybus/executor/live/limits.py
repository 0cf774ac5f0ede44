"""Throttling ourselves before the venue does: the per-signer token buckets of VENUE §6.2, and
the backoff used when the venue says wait (425 restart, 429 rate limit).

The venue keeps an order bucket and a cancel bucket per signer, charged per order or id: a
``POST /orders`` of 15 costs 15 order tokens, a ``DELETE /orders`` of 300 ids 300 cancel
tokens. A request costing more than the burst can never pass, so callers split it first
(:meth:`SignerLimits.cancel_chunk`). ``cancel-all`` is charged after the fact (1 + the
orders canceled) and may leave the cancel balance negative on tiers that allow it. The
venue's table is :mod:`polybus.common.polymarket.rate_limits` (the simulator enforces it).

Everything waits on an injectable :class:`Clock`, so tests drive time themselves.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Protocol

from polybus.common.polymarket.rate_limits import TIERS, TierName

__all__ = ["TIERS", "Backoff", "Clock", "SignerLimits", "SystemClock", "TierName", "TokenBucket"]


class Clock(Protocol):
    """Monotonic seconds and a sleep that moves with them."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's monotonic clock and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TokenBucket:
    """Tokens refill at ``rate`` per second up to ``burst``; :meth:`take` waits until a cost
    fits. Waiters are served in arrival order (a big batch is not starved by small ones)."""

    def __init__(self, *, rate: float, burst: int, clock: Clock, allow_negative: bool) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._allow_negative = allow_negative
        self._tokens = float(burst)
        self._updated = clock.monotonic()
        self._turn = asyncio.Lock()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if now > self._updated:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def wait_s(self, cost: int) -> float:
        """Seconds until ``cost`` tokens are there (0: now)."""
        self._refill()
        missing = cost - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate

    async def take(self, cost: int) -> None:
        """Wait until ``cost`` tokens are available, then spend them."""
        if cost > self.burst:
            raise ValueError(f"a cost of {cost} exceeds the burst of {self.burst}: split it")
        async with self._turn:
            while (wait := self.wait_s(cost)) > 0:
                await self._clock.sleep(wait)
            self._tokens -= cost

    def charge(self, cost: int) -> None:
        """Spend ``cost`` after the fact (cancel-all); the balance may go below zero only on
        tiers whose cancel balance may."""
        self._refill()
        self._tokens -= cost
        if not self._allow_negative:
            self._tokens = max(self._tokens, 0.0)


class SignerLimits:
    """The order and cancel buckets of one signer (one API key's address)."""

    def __init__(self, tier: TierName = "standard", clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        row = TIERS[tier]
        self.tier = tier
        self.orders = TokenBucket(
            rate=row.order_rate, burst=row.order_burst, clock=clock, allow_negative=False
        )
        self.cancels = TokenBucket(
            rate=row.cancel_rate,
            burst=row.cancel_burst,
            clock=clock,
            allow_negative=row.negative_cancel_balance,
        )

    @property
    def cancel_chunk(self) -> int:
        """The most ids one ``DELETE /orders`` may carry and still pass the cancel bucket."""
        return self.cancels.burst


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter on the upper half, or the venue's own
    ``Retry-After`` (never less) plus a little jitter, so clients do not retry in lockstep."""

    initial_s: float = 1.0
    maximum_s: float = 30.0
    jitter: float = 0.2
    """Up to this fraction is added to a ``Retry-After``."""

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        if retry_after_s is not None and retry_after_s > 0:
            return retry_after_s * (1 + rng.uniform(0, self.jitter))
        ceiling = min(self.maximum_s, self.initial_s * 2.0**attempt)
        return ceiling * rng.uniform(0.5, 1.0)
