"""Schemas of the user WebSocket channel, mirroring Polymarket's JSON (VENUE.md §4.4).

The client subscribes with its API credentials (and optionally condition ids); the venue then
sends the key's ``order`` and ``trade`` events, tagged by ``event_type``, numbers as strings.
Unknown fields are ignored; fields the venue leaves out or sends as ``null`` have defaults.
Fields are declared in the venue's key order, so an encoded event reads like the venue's own.
The channel never replays what a client missed: after a reconnect, read ``/data/orders`` and
``/data/trades`` (:mod:`polybus.common.polymarket.clob`).
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

from polybus.common.polymarket.clob import PolymarketApiCredentials, PolymarketMakerOrder


class PolymarketUserSubscription(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A client frame: the first one ``{"auth", "markets"?, "type": "user"}``, later ones
    ``{"operation": "subscribe" | "unsubscribe", "markets"}``. ``markets`` are condition ids;
    none means every market of the key."""

    auth: PolymarketApiCredentials | None = None
    markets: list[str] | None = None
    type: str = ""
    operation: str = ""


class _UserEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="event_type"):
    pass


class PolymarketUserOrder(_UserEvent, frozen=True, kw_only=True, tag="order"):
    """An order of the key changed: ``type`` PLACEMENT, UPDATE (a match) or CANCELLATION.

    ``created_at``/``expiration`` are unix seconds; ``timestamp`` is documented as
    milliseconds but the venue's own example is seconds (decide by magnitude)."""

    id: str
    owner: str
    market: str
    asset_id: str
    side: str
    order_owner: str = ""
    original_size: str
    size_matched: str
    price: str
    associate_trades: list[str] | None = None
    outcome: str = ""
    type: str
    created_at: str = ""
    expiration: str = ""
    order_type: str = ""
    status: str = ""
    maker_address: str = ""
    timestamp: str = ""


class PolymarketUserTrade(_UserEvent, frozen=True, kw_only=True, tag="trade"):
    """A trade of the key, sent on the match (MATCHED) and on each later settlement status
    (MINED, CONFIRMED, RETRYING, FAILED); key by ``id`` + ``status``. ``side`` is the taker's;
    as the maker, the key's own fill is its entry in ``maker_orders``. ``matchtime`` (spelled so
    here, ``match_time`` on REST) and ``last_update`` are unix seconds."""

    type: str = "TRADE"
    id: str
    taker_order_id: str
    market: str
    asset_id: str
    side: str
    size: str
    price: str
    fee_rate_bps: str = "0"
    status: str
    matchtime: str = ""
    last_update: str = ""
    outcome: str = ""
    owner: str = ""
    trade_owner: str = ""
    maker_address: str = ""
    transaction_hash: str = ""
    bucket_index: int = 0
    maker_orders: list[PolymarketMakerOrder] = []
    trader_side: str = ""
    timestamp: str = ""


PolymarketUserEvent: TypeAlias = PolymarketUserOrder | PolymarketUserTrade

USER_EVENT_TYPES = frozenset(
    member.__struct_config__.tag for member in PolymarketUserEvent.__args__
)
