"""Gamma's market objects (camelCase JSON, numbers as JSON numbers or strings) and the client.

Only the fields the ingest uses are declared; the rest are ignored. Numbers decode into
``Decimal`` from their JSON text, so a tick of ``0.01`` never passes through a float.
``outcomes`` and ``clobTokenIds`` are JSON-encoded strings (VENUE §5.3). A market's events
come embedded without their markets; ``GET /events`` has them (:meth:`GammaClient.events`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import msgspec


class GammaTag(msgspec.Struct, frozen=True, kw_only=True):
    id: str = ""
    label: str = ""
    slug: str = ""


class GammaFeeSchedule(msgspec.Struct, frozen=True, kw_only=True):
    rate: Decimal | None = None
    exponent: Decimal | None = None
    taker_only: bool | None = msgspec.field(default=None, name="takerOnly")


class GammaEventMarket(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A market as ``GET /events`` embeds it: only what counting an event's markets needs."""

    condition_id: str = ""
    closed: bool = False


class GammaEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str = ""
    slug: str = ""
    neg_risk: bool | None = msgspec.field(default=None, name="negRisk")
    enable_neg_risk: bool | None = msgspec.field(default=None, name="enableNegRisk")
    neg_risk_market_id: str = msgspec.field(default="", name="negRiskMarketID")
    neg_risk_augmented: bool = msgspec.field(default=False, name="negRiskAugmented")
    tags: list[GammaTag] = []
    markets: list[GammaEventMarket] = []
    """Only from ``GET /events``; empty in the events a ``/markets`` object embeds."""

    def open_market_count(self) -> int:
        """Its markets that still trade. In a neg-risk event a closed market has resolved NO
        (were it YES, the whole event would be closed), so it is no part of the set."""
        return sum(1 for market in self.markets if not market.closed)


class GammaMarket(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A Gamma ``/markets`` object."""

    id: str = ""
    question: str = ""
    condition_id: str = ""
    slug: str = ""
    outcomes: str = "[]"
    clob_token_ids: str = "[]"  # noqa: S105 - "token" as in outcome token, not a secret
    position_ids: list[str] = []
    version: str = ""
    enable_order_book: bool = False
    active: bool = False
    closed: bool = False
    archived: bool = False
    accepting_orders: bool | None = None
    neg_risk: bool = False
    neg_risk_market_id: str = msgspec.field(default="", name="negRiskMarketID")
    order_price_min_tick_size: Decimal | None = None
    order_min_size: Decimal | None = None
    end_date: str = ""
    volume24hr: Decimal | None = None
    liquidity_num: Decimal | None = None
    fees_enabled: bool | None = None
    fee_schedule: GammaFeeSchedule | None = None
    events: list[GammaEvent] = []
    tags: list[GammaTag] = []

    def token_ids(self) -> list[str]:
        """Outcome ids in outcome order: position ids for Protocol V2 markets. ``version``
        decides the field even when both are present (VENUE §5.3)."""
        if self.version == "v2":
            return list(self.position_ids)
        return _string_list(self.clob_token_ids)

    def outcome_names(self) -> list[str]:
        return _string_list(self.outcomes)

    def tag_names(self) -> set[str]:
        tags = [*self.tags, *(tag for event in self.events for tag in event.tags)]
        return {name.lower() for tag in tags for name in (tag.slug, tag.label) if name}

    def group_id(self) -> str:
        """The neg-risk event id (the partition key of neg-risk markets), else ""."""
        if not self.neg_risk:
            return ""
        if self.neg_risk_market_id:
            return self.neg_risk_market_id
        for event in self.events:
            if event.neg_risk_market_id:
                return event.neg_risk_market_id
        return self.events[0].id if self.events else ""

    def neg_risk_event(self) -> GammaEvent | None:
        """The neg-risk event this market is an outcome of, if it is one."""
        if not self.neg_risk or not self.events:
            return None
        group = self.group_id()
        return next((e for e in self.events if e.neg_risk_market_id == group), self.events[0])


def _string_list(text: str) -> list[str]:
    try:
        return msgspec.json.decode(text, type=list[str])
    except msgspec.DecodeError:
        return []


_markets_decoder = msgspec.json.Decoder(list[GammaMarket])
_events_decoder = msgspec.json.Decoder(list[GammaEvent])


class GammaClient:
    """``GET /markets`` with the filters Gamma supports; pages by offset."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def markets(self, params: dict[str, Any]) -> list[GammaMarket]:
        response = await self.http.get(f"{self.base_url}/markets", params=params)
        response.raise_for_status()
        return _markets_decoder.decode(response.content)

    async def events(self, params: dict[str, Any]) -> list[GammaEvent]:
        response = await self.http.get(f"{self.base_url}/events", params=params)
        response.raise_for_status()
        return _events_decoder.decode(response.content)

    async def active_markets(
        self, *, order: str, page_size: int, max_pages: int
    ) -> list[GammaMarket]:
        found: list[GammaMarket] = []
        for page in range(max_pages):
            batch = await self.markets(
                {
                    "active": "true",
                    "closed": "false",
                    "limit": page_size,
                    "offset": page * page_size,
                    "order": order,
                    "ascending": "false",
                }
            )
            found.extend(batch)
            if len(batch) < page_size:
                break
        return found
