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


def level_json(price: str, size: str) -> bytes:
    """One level as the hash input (and the venue's compact JSON) prints it:
    ``{"price":"0.48","size":"30"}``. ``price``/``size`` are plain decimal strings."""
    return b'{"price":"' + price.encode() + b'","size":"' + size.encode() + b'"}'


def book_hash_of_levels(
    *,
    market: str,
    asset_id: str,
    timestamp: str,
    bids_json: Iterable[bytes],
    asks_json: Iterable[bytes],
    min_order_size: str,
    tick_size: str,
    neg_risk: bool,
    last_trade_price: str,
) -> str:
    """:func:`book_hash` for a caller that keeps its levels pre-encoded with :func:`level_json`
    (``bids_json`` ascending, ``asks_json`` descending): the same rule and result, without
    re-encoding every level (the simulator hashes two books per market per batch)."""
    encode = _encoder.encode
    summary = b"".join(
        (
            b'{"market":',
            encode(market),
            b',"asset_id":',
            encode(asset_id),
            b',"timestamp":',
            encode(timestamp),
            b',"hash":"","bids":[',
            b",".join(bids_json),
            b'],"asks":[',
            b",".join(asks_json),
            b'],"min_order_size":',
            encode(min_order_size),
            b',"tick_size":',
            encode(tick_size),
            b',"neg_risk":',
            b"true" if neg_risk else b"false",
            b',"last_trade_price":',
            encode(last_trade_price),
            b"}",
        )
    )
    return hashlib.sha1(summary, usedforsecurity=False).hexdigest()
