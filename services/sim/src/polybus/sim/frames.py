"""Market-channel events as the venue writes them: same keys, same key order, string numbers.

The key orders follow the recordings in ``tests/resources/polymarket`` (msgspec writes Struct
fields in declaration order): the initial ``book`` is ``market, asset_id, timestamp, hash,
bids, asks, tick_size, event_type, last_trade_price``; the ``book`` re-sent after a trade is
``market, asset_id, bids, asks, hash, timestamp, event_type``; ``price_change`` is ``market,
price_changes[asset_id, price, size, side, hash, best_bid, best_ask], timestamp, event_type``.
Levels arrive pre-encoded (:func:`polybus.common.polymarket.book_hash.level_json`) and are
embedded as raw JSON, so a book is never re-encoded level by level.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

_encoder = msgspec.json.Encoder()


def raw_levels(joined: bytes) -> msgspec.Raw:
    """Comma-joined JSON levels as a JSON array embedded verbatim."""
    return msgspec.Raw(b"[" + joined + b"]")


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    pass


class BookFrame(_Wire, frozen=True, kw_only=True):
    market: str
    asset_id: str
    timestamp: str
    hash: str
    bids: msgspec.Raw
    asks: msgspec.Raw
    tick_size: str
    event_type: str = "book"
    last_trade_price: str


class ResentBookFrame(_Wire, frozen=True, kw_only=True):
    market: str
    asset_id: str
    bids: msgspec.Raw
    asks: msgspec.Raw
    hash: str
    timestamp: str
    event_type: str = "book"


class PriceChangeEntry(_Wire, frozen=True, kw_only=True):
    asset_id: str
    price: str
    size: str
    side: str
    hash: str
    best_bid: str
    best_ask: str


class PriceChangeFrame(_Wire, frozen=True, kw_only=True):
    market: str
    price_changes: list[PriceChangeEntry]
    timestamp: str
    event_type: str = "price_change"


class LastTradePriceFrame(_Wire, frozen=True, kw_only=True):
    asset_id: str
    event_type: str = "last_trade_price"
    fee_rate_bps: str
    market: str
    price: str
    side: str
    size: str
    timestamp: str


class TickSizeChangeFrame(_Wire, frozen=True, kw_only=True):
    asset_id: str
    event_type: str = "tick_size_change"
    market: str
    new_tick_size: str
    old_tick_size: str
    timestamp: str


class BestBidAskFrame(_Wire, frozen=True, kw_only=True):
    event_type: str = "best_bid_ask"
    market: str
    asset_id: str
    best_bid: str
    best_ask: str
    spread: str
    timestamp: str


class EventMessage(_Wire, frozen=True, kw_only=True):
    id: str
    ticker: str
    slug: str
    title: str
    description: str


class NewMarketFrame(_Wire, frozen=True, kw_only=True):
    id: str
    question: str
    market: str
    slug: str
    description: str
    assets_ids: list[str]
    outcomes: list[str]
    event_message: EventMessage
    timestamp: str
    event_type: str = "new_market"


class MarketResolvedFrame(_Wire, frozen=True, kw_only=True):
    id: str
    question: str
    market: str
    slug: str
    description: str
    assets_ids: list[str]
    outcomes: list[str]
    winning_asset_id: str
    winning_outcome: str
    event_message: EventMessage
    timestamp: str
    event_type: str = "market_resolved"


def encode(frame: _Wire) -> bytes:
    return _encoder.encode(frame)


def array(parts: Sequence[bytes]) -> bytes:
    """Several encoded events as one JSON array frame."""
    return b"[" + b",".join(parts) + b"]"
