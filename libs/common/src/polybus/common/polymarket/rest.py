"""Shapes of the CLOB REST market-data responses the simulator serves and the ingest reads."""

from __future__ import annotations

import msgspec

from polybus.common.polymarket.market_channel import PolymarketLevel


class PolymarketOrderBookSummary(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /book`` (and each element of ``POST /books``); levels in the WebSocket's order."""

    market: str
    asset_id: str
    timestamp: str
    hash: str = ""
    bids: list[PolymarketLevel] = []
    asks: list[PolymarketLevel] = []
    min_order_size: str = ""
    tick_size: str = ""
    neg_risk: bool = False
    last_trade_price: str = ""


class PolymarketError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The venue's error body: ``{"error": "...", "code"?: "...", "retry_after_seconds"?: n}``."""

    error: str
    code: str = ""
    retry_after_seconds: int | None = None
