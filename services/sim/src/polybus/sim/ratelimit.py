"""Per-signer trading rate limits: the venue's order and cancel token buckets (VENUE.md §6.2).

Each signer address has an order bucket and a cancel bucket sized by its tier. A request costs
its number of orders (cancel-all and cancel-market-orders: 1 + the orders canceled, charged
after the fact, so the cancel balance can go negative on tiers that allow it; the table is
:mod:`polybus.common.polymarket.rate_limits`). A request that
costs more than the tokens available is refused whole with 429 and a ``Retry-After``; every
response carries ``Poly-RateLimit-Remaining``/``-Reset``/``-Tier``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

from polybus.common.polymarket.rate_limits import TIERS, TierName

__all__ = ["TIERS", "Admission", "Bucket", "RateLimiter"]

Bucket = Literal["order", "cancel"]


@dataclass
class _TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are)."""
        missing = cost - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate


@dataclass(frozen=True)
class Admission:
    allowed: bool
    headers: dict[str, str]


class RateLimiter:
    """Token buckets per (signer, bucket)."""

    def __init__(self, tier: TierName) -> None:
        self.tier = TIERS[tier]
        self._buckets: dict[tuple[str, Bucket], _TokenBucket] = {}

    def _bucket(self, signer: str, kind: Bucket) -> _TokenBucket:
        bucket = self._buckets.get((signer, kind))
        if bucket is None:
            tier = self.tier
            rate, burst = (
                (tier.order_rate, tier.order_burst)
                if kind == "order"
                else (tier.cancel_rate, tier.cancel_burst)
            )
            bucket = self._buckets[(signer, kind)] = _TokenBucket(rate, burst, burst)
        return bucket

    def admit(self, signer: str, kind: Bucket, cost: float) -> Admission:
        """Take ``cost`` tokens if they are there; otherwise refuse (all or nothing)."""
        now = time.monotonic()
        bucket = self._bucket(signer, kind)
        bucket.refill(now)
        if bucket.tokens < cost:
            wait = bucket.wait_for(cost) if cost <= bucket.burst else math.inf
            headers = self._headers(bucket, now)
            # A batch above the burst can never pass: the client must split it.
            headers["Retry-After"] = str(max(math.ceil(wait), 1)) if math.isfinite(wait) else "60"
            return Admission(False, headers)
        bucket.tokens -= cost
        return Admission(True, self._headers(bucket, now))

    def charge(self, signer: str, kind: Bucket, cost: float) -> dict[str, str]:
        """Charge after the fact (cancel-all's canceled orders); may go negative if the tier
        allows it, else stops at zero."""
        now = time.monotonic()
        bucket = self._bucket(signer, kind)
        bucket.refill(now)
        bucket.tokens -= cost
        if not self.tier.negative_cancel_balance:
            bucket.tokens = max(bucket.tokens, 0.0)
        return self._headers(bucket, now)

    def _headers(self, bucket: _TokenBucket, now: float) -> dict[str, str]:
        full_in = max(bucket.burst - bucket.tokens, 0) / bucket.rate
        reset = time.time() + (bucket.wait_for(1) if bucket.tokens < 1 else full_in)
        return {
            "Poly-RateLimit-Remaining": f"{math.floor(bucket.tokens)}",
            "Poly-RateLimit-Reset": str(math.ceil(reset)),
            "Poly-RateLimit-Tier": self.tier.name,
        }
