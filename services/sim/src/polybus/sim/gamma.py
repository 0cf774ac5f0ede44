"""Gamma (``/markets``, ``/events``) with the fields polybus reads, shaped like the venue's.

``outcomes``, ``outcomePrices`` and ``clobTokenIds`` are JSON-encoded strings (the venue's
quirk); numbers are written exactly from micro-units. Supported filters: ``id``, ``slug``,
``condition_ids``, ``clob_token_ids``, ``active``, ``closed``, ``archived``, ``limit``
(≤ 500), ``offset``, ``order`` (``volume``, ``volume24hr``/``volume_24hr``, ``liquidity``,
``id``, ``endDate``) and ``ascending``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from polybus.common.money import MICROS, format_micros
from polybus.sim.exchange import Exchange, MarketState
from polybus.sim.http_util import (
    error_response,
    json_response,
    number,
    query_bool,
    query_int,
    query_list,
)
from polybus.sim.universe import SimEvent

_MAX_LIMIT = 500


def market_object(exchange: Exchange, state: MarketState) -> dict[str, Any]:
    """One Gamma market object."""
    info = exchange.market_info(state.info.condition_id)
    book = state.book
    best_bid, best_ask = book.best_bid(), book.best_ask()
    yes_price = book.last_trade_price
    event = state.event
    market: dict[str, Any] = {
        "id": info.gamma_id,
        "question": info.question,
        "conditionId": info.condition_id,
        "slug": info.slug,
        "endDate": info.end_date,
        "liquidity": format_micros(info.liquidity),
        "startDate": info.start_date,
        "description": info.description,
        "outcomes": json.dumps([token.outcome for token in info.tokens]),
        "outcomePrices": json.dumps([format_micros(yes_price), format_micros(MICROS - yes_price)]),
        "volume": format_micros(info.volume),
        "active": info.active,
        "closed": info.closed,
        "archived": False,
        "questionID": info.question_id,
        "enableOrderBook": True,
        "orderPriceMinTickSize": number(info.tick_size),
        "orderMinSize": number(info.min_order_size),
        "volumeNum": number(info.volume),
        "liquidityNum": number(info.liquidity),
        "endDateIso": info.end_date[:10],
        "startDateIso": info.start_date[:10],
        "volume24hr": number(info.volume // 10),
        # A Protocol V2 market's outcomes are position ids; clients choose the field by
        # ``version`` (VENUE.md §5.3), so the CTF field stays empty rather than repeat them.
        "clobTokenIds": json.dumps(
            [] if info.protocol_v2 else [token.token_id for token in info.tokens]
        ),
        "acceptingOrders": info.active and not info.closed,
        "negRisk": info.neg_risk,
        "groupItemTitle": info.group_item_title,
        "spread": number((best_ask if best_ask is not None else MICROS) - (best_bid or 0)),
        "lastTradePrice": number(yes_price),
        "bestBid": number(best_bid or 0),
        "bestAsk": number(best_ask if best_ask is not None else MICROS),
        "feesEnabled": info.fee_rate > 0,
        "makerBaseFee": 0,
        "takerBaseFee": 0,
        "clearBookOnStart": False,
        "rfqEnabled": False,
        "secondsDelay": 0,
        "version": "v2" if info.protocol_v2 else "v1",
        "events": [_event_summary(event)],
    }
    if info.protocol_v2:
        market["positionIds"] = [token.token_id for token in info.tokens]
    if info.neg_risk:
        market["negRiskMarketID"] = info.neg_risk_market_id
        market["negRiskRequestID"] = info.question_id
    if info.fee_rate > 0:
        market["feeSchedule"] = {
            "exponent": info.fee_exponent,
            "rate": number(info.fee_rate),
            "takerOnly": True,
            "rebateRate": 0,
        }
    return market


def _event_summary(event: SimEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "ticker": event.ticker,
        "slug": event.slug,
        "title": event.title,
        "negRisk": event.neg_risk,
        "enableNegRisk": event.neg_risk,
        "negRiskAugmented": False,
        **({"negRiskMarketID": event.neg_risk_market_id} if event.neg_risk else {}),
    }


def event_object(exchange: Exchange, event: SimEvent) -> dict[str, Any]:
    states = [exchange.markets[cid] for cid in event.condition_ids if cid in exchange.markets]
    markets = [market_object(exchange, state) for state in states]
    infos = [state.info for state in states]
    return {
        **_event_summary(event),
        "description": infos[0].description if infos else "",
        "startDate": min((info.start_date for info in infos), default=""),
        "endDate": max((info.end_date for info in infos), default=""),
        "active": any(info.active for info in infos),
        "closed": all(info.closed for info in infos),
        "archived": False,
        "enableOrderBook": True,
        "liquidity": number(sum(info.liquidity for info in infos)),
        "volume": number(sum(info.volume for info in infos)),
        "volume24hr": number(sum(info.volume for info in infos) // 10),
        "markets": markets,
    }


def _sort_key(order: str) -> Callable[[MarketState], Any] | None:
    keys: dict[str, Callable[[MarketState], Any]] = {
        "volume": lambda state: state.info.volume,
        "volumeNum": lambda state: state.info.volume,
        "volume24hr": lambda state: state.info.volume,
        "volume_24hr": lambda state: state.info.volume,
        "liquidity": lambda state: state.info.liquidity,
        "liquidityNum": lambda state: state.info.liquidity,
        "id": lambda state: int(state.info.gamma_id),
        "endDate": lambda state: state.info.end_date,
        "end_date": lambda state: state.info.end_date,
    }
    return keys.get(order)


class Gamma:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/markets", self.markets),
            web.get("/markets/{id}", self.market),
            web.get("/markets/slug/{slug}", self.market_by_slug),
            web.get("/events", self.events),
            web.get("/events/{id}", self.event),
            web.get("/events/slug/{slug}", self.event_by_slug),
        ]

    def _matching_markets(self, request: web.Request) -> list[MarketState]:
        ids = set(query_list(request, "id"))
        slugs = set(query_list(request, "slug"))
        conditions = {cid.lower() for cid in query_list(request, "condition_ids")}
        tokens = set(query_list(request, "clob_token_ids"))
        active, closed = query_bool(request, "active"), query_bool(request, "closed")
        archived = query_bool(request, "archived")
        selected = []
        for state in self.exchange.markets.values():
            info = state.info
            if ids and info.gamma_id not in ids:
                continue
            if slugs and info.slug not in slugs:
                continue
            if conditions and info.condition_id.lower() not in conditions:
                continue
            if tokens and not tokens.intersection((info.yes, info.no)):
                continue
            if active is not None and info.active != active:
                continue
            if closed is not None and info.closed != closed:
                continue
            if archived is True:
                continue
            selected.append(state)
        return self._order(request, selected)

    @staticmethod
    def _order(request: web.Request, states: list[MarketState]) -> list[MarketState]:
        key = _sort_key(request.query.get("order", ""))
        if key is not None:
            ascending = query_bool(request, "ascending")
            states.sort(key=key, reverse=not ascending)
        offset = query_int(request, "offset", 0, maximum=10**9)
        limit = query_int(request, "limit", 100, maximum=_MAX_LIMIT)
        return states[offset : offset + limit]

    async def markets(self, request: web.Request) -> web.Response:
        states = self._matching_markets(request)
        return json_response([market_object(self.exchange, state) for state in states])

    async def market(self, request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        for state in self.exchange.markets.values():
            if wanted in (state.info.gamma_id, state.info.condition_id):
                return json_response(market_object(self.exchange, state))
        return error_response(404, "market not found")

    async def market_by_slug(self, request: web.Request) -> web.Response:
        wanted = request.match_info["slug"]
        for state in self.exchange.markets.values():
            if state.info.slug == wanted:
                return json_response(market_object(self.exchange, state))
        return error_response(404, "market not found")

    def _matching_events(self, request: web.Request) -> list[SimEvent]:
        ids = set(query_list(request, "id"))
        slugs = set(query_list(request, "slug"))
        active, closed = query_bool(request, "active"), query_bool(request, "closed")
        selected = []
        for event in self.exchange.events.values():
            infos = [
                self.exchange.markets[cid].info
                for cid in event.condition_ids
                if cid in self.exchange.markets
            ]
            is_active = any(info.active for info in infos)
            is_closed = all(info.closed for info in infos)
            if ids and event.id not in ids:
                continue
            if slugs and event.slug not in slugs:
                continue
            if active is not None and is_active != active:
                continue
            if closed is not None and is_closed != closed:
                continue
            selected.append(event)
        order = request.query.get("order", "")
        if order:
            volume = {
                event.id: sum(
                    self.exchange.markets[cid].info.volume
                    for cid in event.condition_ids
                    if cid in self.exchange.markets
                )
                for event in selected
            }
            if order in ("volume", "volume24hr", "volume_24hr", "liquidity"):
                selected.sort(
                    key=lambda e: volume[e.id], reverse=not query_bool(request, "ascending")
                )
            elif order == "id":
                selected.sort(key=lambda e: int(e.id), reverse=not query_bool(request, "ascending"))
        offset = query_int(request, "offset", 0, maximum=10**9)
        limit = query_int(request, "limit", 100, maximum=_MAX_LIMIT)
        return selected[offset : offset + limit]

    async def events(self, request: web.Request) -> web.Response:
        events = self._matching_events(request)
        return json_response([event_object(self.exchange, event) for event in events])

    async def event(self, request: web.Request) -> web.Response:
        event = self.exchange.events.get(request.match_info["id"])
        if event is None:
            return error_response(404, "event not found")
        return json_response(event_object(self.exchange, event))

    async def event_by_slug(self, request: web.Request) -> web.Response:
        wanted = request.match_info["slug"]
        for event in self.exchange.events.values():
            if event.slug == wanted:
                return json_response(event_object(self.exchange, event))
        return error_response(404, "event not found")
