"""Schemas of the market WebSocket channel, mirroring Polymarket's JSON (numbers as strings).

One frame is a single event object or a JSON array of them; events are tagged by
``event_type``. These Structs are the venue's shapes, not polybus events: the ingest converts
them at its boundary with one parse function per message. Unknown fields are ignored, so
additive venue changes do not break decoding. ``price_change`` comes in two formats: the
current one (``price_changes`` entries with ``best_bid``/``best_ask``) and the pre-2025-09-15
one (one asset per message); :meth:`PolymarketPriceChange.entries` normalizes both.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec


class PolymarketLevel(msgspec.Struct, frozen=True):
    price: str
    size: str


class _MarketEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="event_type"):
    pass


class PolymarketBook(_MarketEvent, frozen=True, kw_only=True, tag="book"):
    """A full L2 snapshot. Wire order: bids ascending (best last), asks descending (best last).

    Initial and periodic snapshots carry ``tick_size``/``last_trade_price``; the re-sent book
    after a trade does not. ``min_order_size``/``neg_risk`` appear on some frames.
    """

    market: str
    asset_id: str
    timestamp: str
    hash: str = ""
    bids: list[PolymarketLevel] = []
    asks: list[PolymarketLevel] = []
    tick_size: str = ""
    min_order_size: str = ""
    neg_risk: bool | None = None
    last_trade_price: str = ""


class PolymarketPriceChangeEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A level's new absolute size (``"0"`` removes it) and the asset's best bid/ask after it.

    ``side`` BUY is the bid side, SELL the ask side. ``best_bid``/``best_ask`` of ``"0"``/``"1"``
    mean an empty side; they are empty strings in the legacy format.
    """

    asset_id: str
    price: str
    size: str
    side: str
    hash: str = ""
    best_bid: str = ""
    best_ask: str = ""


class PolymarketLegacyChange(msgspec.Struct, frozen=True):
    price: str
    side: str
    size: str


class PolymarketPriceChange(_MarketEvent, frozen=True, kw_only=True, tag="price_change"):
    market: str
    timestamp: str
    price_changes: list[PolymarketPriceChangeEntry] = []
    # The pre-2025-09-15 format: one asset per message, a `changes` list or a single change.
    asset_id: str = ""
    hash: str = ""
    changes: list[PolymarketLegacyChange] = []
    price: str = ""
    size: str = ""
    side: str = ""

    def entries(self) -> list[PolymarketPriceChangeEntry]:
        """The entries in the current format, whichever format arrived."""
        if self.price_changes:
            return self.price_changes
        changes = list(self.changes)
        if self.price:
            changes.append(PolymarketLegacyChange(self.price, self.side, self.size))
        return [
            PolymarketPriceChangeEntry(
                asset_id=self.asset_id,
                price=change.price,
                size=change.size,
                side=change.side,
                hash=self.hash,
            )
            for change in changes
        ]


class PolymarketTickSizeChange(_MarketEvent, frozen=True, kw_only=True, tag="tick_size_change"):
    market: str
    asset_id: str
    old_tick_size: str
    new_tick_size: str
    timestamp: str


class PolymarketLastTradePrice(_MarketEvent, frozen=True, kw_only=True, tag="last_trade_price"):
    """A trade print; ``side`` is the taker's."""

    market: str
    asset_id: str
    price: str
    size: str
    side: str
    timestamp: str
    fee_rate_bps: str = "0"
    transaction_hash: str = ""


class PolymarketBestBidAsk(_MarketEvent, frozen=True, kw_only=True, tag="best_bid_ask"):
    market: str
    asset_id: str
    best_bid: str
    best_ask: str
    timestamp: str
    spread: str = ""


class PolymarketEventMessage(msgspec.Struct, frozen=True, kw_only=True):
    id: str = ""
    ticker: str = ""
    slug: str = ""
    title: str = ""
    description: str = ""


class PolymarketNewMarket(_MarketEvent, frozen=True, kw_only=True, tag="new_market"):
    market: str
    assets_ids: list[str]
    timestamp: str
    id: str = ""
    question: str = ""
    slug: str = ""
    description: str = ""
    outcomes: list[str] = []
    event_message: PolymarketEventMessage | None = None
    order_price_min_tick_size: str = ""
    active: bool | None = None


class PolymarketMarketResolved(_MarketEvent, frozen=True, kw_only=True, tag="market_resolved"):
    market: str
    assets_ids: list[str]
    winning_asset_id: str
    timestamp: str
    id: str = ""
    question: str = ""
    slug: str = ""
    outcomes: list[str] = []
    winning_outcome: str = ""
    event_message: PolymarketEventMessage | None = None


PolymarketMarketEvent: TypeAlias = (
    PolymarketBook
    | PolymarketPriceChange
    | PolymarketTickSizeChange
    | PolymarketLastTradePrice
    | PolymarketBestBidAsk
    | PolymarketNewMarket
    | PolymarketMarketResolved
)

MARKET_EVENT_TYPES = frozenset(
    member.__struct_config__.tag for member in PolymarketMarketEvent.__args__
)
