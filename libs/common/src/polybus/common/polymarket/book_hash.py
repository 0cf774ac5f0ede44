"""The venue's book hash and number formatting (one module for the simulator and the ingest).

The ``hash`` of a ``book`` and of each ``price_change`` entry is the SHA-1 (hex) of the compact
JSON of the book summary, keys in this order::

    market, asset_id, timestamp, hash (""), bids (ascending), asks (descending),
    min_order_size, tick_size, neg_risk, last_trade_price

with levels as ``{"price": …, "size": …}`` strings exactly as the venue prints them,
``timestamp`` the message timestamp, computed on the book after the whole same-timestamp batch.
It reproduces the recorded snapshots in ``fixtures/polymarket`` (see their README). Numbers print
without trailing zeros (``"0.5"``, ``"220045"``, ``"3793.8"``) except ``last_trade_price``, which
prints at least three decimals (``"0.620"``; inferred from recordings at ticks 0.01 and 0.001).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from polybus.common.money import format_micros, tick_decimals


def format_price(micros: int) -> str:
    return format_micros(micros)


def format_size(micros: int) -> str:
    return format_micros(micros)


def format_last_trade_price(micros: int, tick: int) -> str:
    return format_micros(micros, min_decimals=max(3, tick_decimals(tick)))


class _HashLevel(msgspec.Struct, frozen=True):
    price: str
    size: str


class _HashSummary(msgspec.Struct, frozen=True, kw_only=True):
    # Field order is the hash's key order.
    market: str
    asset_id: str
    timestamp: str
    hash: str
    bids: list[_HashLevel]
    asks: list[_HashLevel]
    min_order_size: str
    tick_size: str
    neg_risk: bool
    last_trade_price: str


_encoder = msgspec.json.Encoder()


def book_hash(
    *,
    market: str,
    asset_id: str,
    timestamp: str,
    bids: Iterable[tuple[str, str]],
    asks: Iterable[tuple[str, str]],
    min_order_size: str,
    tick_size: str,
    neg_risk: bool,
    last_trade_price: str,
) -> str:
    """SHA-1 hex of the book summary. ``bids`` ascending and ``asks`` descending, as printed."""
    summary = _HashSummary(
        market=market,
        asset_id=asset_id,
        timestamp=timestamp,
        hash="",
        bids=[_HashLevel(price, size) for price, size in bids],
        asks=[_HashLevel(price, size) for price, size in asks],
        min_order_size=min_order_size,
        tick_size=tick_size,
        neg_risk=neg_risk,
        last_trade_price=last_trade_price,
    )
    return hashlib.sha1(_encoder.encode(summary), usedforsecurity=False).hexdigest()
