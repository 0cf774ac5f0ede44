"""CLOB public REST: books, prices, tick sizes and market metadata, on the venue's paths.

Bodies and errors follow VENUE.md §5.1: ``/book`` is the order-book summary (levels in the
WebSocket's order, ``hash`` by the venue's rule at the book's timestamp, so it equals the hash
the market channel sent for the same book); ``/midpoint`` answers ``{"mid": ...}`` (what the
official SDK parses); ``/tick-size`` a number; ``/clob-markets/{condition_id}`` the compact
form the SDKs read tick size, neg-risk and fees from.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import msgspec
from aiohttp import web

from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import format_price
from polybus.sim import frames
from polybus.sim.book import MarketBook
from polybus.sim.exchange import Exchange
from polybus.sim.http_util import error_response, json_response, number

INVALID_TOKEN = "Invalid token id"  # noqa: S105 - an error message, not a secret
NO_BOOK = "No orderbook exists for the requested token id"
_MAX_BOOKS = 500


class _BookSummary(msgspec.Struct, frozen=True, kw_only=True):
    market: str
    asset_id: str
    timestamp: str
    hash: str
    bids: msgspec.Raw
    asks: msgspec.Raw
    min_order_size: str
    tick_size: str
    neg_risk: bool
    last_trade_price: str


class _TokenRequest(msgspec.Struct, kw_only=True):
    token_id: str
    side: str = ""


_token_requests = msgspec.json.Decoder(list[_TokenRequest])


def _cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


END_CURSOR = "LTE="


class ClobPublic:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/book", self.book),
            web.post("/books", self.books),
            web.get("/price", self.price),
            web.post("/prices", self.prices),
            web.get("/midpoint", self.midpoint),
            web.post("/midpoints", self.midpoints),
            web.get("/spread", self.spread),
            web.post("/spreads", self.spreads),
            web.get("/tick-size", self.tick_size),
            web.get("/tick-size/{token_id}", self.tick_size),
            web.get("/neg-risk", self.neg_risk),
            web.get("/neg-risk/{token_id}", self.neg_risk),
            web.get("/fee-rate", self.fee_rate),
            web.get("/fee-rate/{token_id}", self.fee_rate),
            web.get("/last-trade-price", self.last_trade_price),
            web.post("/last-trades-prices", self.last_trades_prices),
            web.get("/clob-markets/{condition_id}", self.clob_market),
            web.get("/markets-by-token/{token_id}", self.market_by_token),
            web.get("/markets", self.clob_markets),
            web.get("/markets/{condition_id}", self.clob_market_full),
            web.get("/simplified-markets", self.simplified_markets),
            web.get("/sampling-markets", self.clob_markets),
            web.get("/sampling-simplified-markets", self.simplified_markets),
            web.get("/time", self.server_time),
            web.get("/ok", self.ok),
            web.get("/version", self.version),
        ]

    # -- helpers -----------------------------------------------------------------------------
    def _token(self, request: web.Request) -> tuple[MarketBook, int] | web.Response:
        token_id = request.match_info.get("token_id") or request.query.get("token_id", "")
        if not token_id or not token_id.isdigit():
            return error_response(400, INVALID_TOKEN)
        found = self.exchange.tokens.get(token_id)
        if found is None:
            return error_response(404, NO_BOOK)
        return found

    def summary(self, asset_id: str) -> _BookSummary:
        book, token = self.exchange.tokens[asset_id]
        bids, asks = book.wire_levels(token)
        return _BookSummary(
            market=book.condition_id,
            asset_id=asset_id,
            timestamp=book.timestamp,
            hash=book.hashes[token],
            bids=frames.raw_levels(bids),
            asks=frames.raw_levels(asks),
            min_order_size=format_price(book.min_order_size),
            tick_size=format_price(book.tick_size),
            neg_risk=book.neg_risk,
            last_trade_price=self.exchange.last_trade_text(book, token),
        )

    async def _token_list(self, request: web.Request) -> list[_TokenRequest] | web.Response:
        try:
            items = _token_requests.decode(await request.read())
        except msgspec.DecodeError:
            return error_response(400, "Invalid payload")
        if len(items) > _MAX_BOOKS:
            return error_response(400, "Payload exceeds the limit")
        return items

    @staticmethod
    def _mid(book: MarketBook, token: int) -> int:
        best_bid, best_ask = book.best_bid(), book.best_ask()
        bid = best_bid or 0
        ask = best_ask if best_ask is not None else MICROS
        mid = (bid + ask) // 2
        return mid if token == 0 else MICROS - mid

    @staticmethod
    def _side_price(book: MarketBook, token: int, side: str) -> str:
        best_bid, best_ask = book.best_texts(token)
        return best_bid if side.upper() == "BUY" else best_ask

    # -- books and prices --------------------------------------------------------------------
    async def book(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        book, token = found
        return json_response(self.summary(book.token_ids[token]))

    async def books(self, request: web.Request) -> web.Response:
        items = await self._token_list(request)
        if isinstance(items, web.Response):
            return items
        return json_response(
            [self.summary(item.token_id) for item in items if item.token_id in self.exchange.tokens]
        )

    async def price(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        side = request.query.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            return error_response(400, "Invalid side")
        return json_response({"price": self._side_price(*found, side)})

    async def prices(self, request: web.Request) -> web.Response:
        items = await self._token_list(request)
        if isinstance(items, web.Response):
            return items
        result: dict[str, dict[str, str]] = {}
        for item in items:
            found = self.exchange.tokens.get(item.token_id)
            if found is not None and item.side.upper() in ("BUY", "SELL"):
                side = item.side.upper()
                result.setdefault(item.token_id, {})[side] = self._side_price(*found, side)
        return json_response(result)

    async def midpoint(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        return json_response({"mid": format_price(self._mid(*found))})

    async def midpoints(self, request: web.Request) -> web.Response:
        items = await self._token_list(request)
        if isinstance(items, web.Response):
            return items
        return json_response(
            {
                item.token_id: format_price(self._mid(*self.exchange.tokens[item.token_id]))
                for item in items
                if item.token_id in self.exchange.tokens
            }
        )

    @staticmethod
    def _spread(book: MarketBook) -> str:
        best_bid, best_ask = book.best_bid(), book.best_ask()
        return format_price(
            max((best_ask if best_ask is not None else MICROS) - (best_bid or 0), 0)
        )

    async def spread(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        return json_response({"spread": self._spread(found[0])})

    async def spreads(self, request: web.Request) -> web.Response:
        items = await self._token_list(request)
        if isinstance(items, web.Response):
            return items
        return json_response(
            {
                item.token_id: self._spread(self.exchange.tokens[item.token_id][0])
                for item in items
                if item.token_id in self.exchange.tokens
            }
        )

    async def tick_size(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        return json_response({"minimum_tick_size": number(found[0].tick_size)})

    async def neg_risk(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        return json_response({"neg_risk": found[0].neg_risk})

    async def fee_rate(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        return json_response({"base_fee": 0})

    def _last_trade(self, book: MarketBook, token: int) -> dict[str, str]:
        return {"price": self.exchange.last_trade_text(book, token), "side": ""}

    async def last_trade_price(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        return json_response(self._last_trade(*found))

    async def last_trades_prices(self, request: web.Request) -> web.Response:
        items = await self._token_list(request)
        if isinstance(items, web.Response):
            return items
        return json_response(
            [
                {
                    "token_id": item.token_id,
                    **self._last_trade(*self.exchange.tokens[item.token_id]),
                }
                for item in items
                if item.token_id in self.exchange.tokens
            ]
        )

    # -- market metadata ---------------------------------------------------------------------
    async def clob_market(self, request: web.Request) -> web.Response:
        state = self.exchange.markets.get(request.match_info["condition_id"].lower())
        if state is None:
            return error_response(404, "market not found")
        info = self.exchange.market_info(state.info.condition_id)
        body: dict[str, Any] = {
            "gst": None,
            "r": {},
            "t": [{"t": token.token_id, "o": token.outcome} for token in info.tokens],
            "mos": number(info.min_order_size),
            "mts": number(info.tick_size),
            "mbf": 0,
            "tbf": 0,
            "rfqe": False,
            # "marketable orders are held for the taker-delay window"; omitted when false
            **({"itode": True} if state.taker_delay_ms else {}),
            "ibce": False,
            "fd": {"r": number(info.fee_rate), "e": info.fee_exponent, "to": True},
            "oas": 0,
            "nr": info.neg_risk,
        }
        return json_response(body)

    async def market_by_token(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        book, _ = found
        info = self.exchange.markets[book.condition_id].info
        return json_response(
            {
                "condition_id": book.condition_id,
                "primary_token_id": info.yes,
                "secondary_token_id": info.no,
            }
        )

    def _clob_market_object(self, condition_id: str) -> dict[str, Any]:
        state = self.exchange.markets[condition_id]
        info = self.exchange.market_info(condition_id)
        book = state.book
        return {
            "enable_order_book": True,
            "active": info.active,
            "closed": info.closed,
            "archived": False,
            "accepting_orders": info.active and not info.closed,
            "accepting_order_timestamp": info.start_date,
            "minimum_order_size": number(info.min_order_size),
            "minimum_tick_size": number(info.tick_size),
            "condition_id": info.condition_id,
            "question_id": info.question_id,
            "question": info.question,
            "description": info.description,
            "market_slug": info.slug,
            "end_date_iso": info.end_date,
            "game_start_time": None,
            "seconds_delay": 0,
            "fpmm": "",
            "maker_base_fee": 0,
            "taker_base_fee": 0,
            "notifications_enabled": True,
            "neg_risk": info.neg_risk,
            "neg_risk_market_id": info.neg_risk_market_id,
            "neg_risk_request_id": info.question_id if info.neg_risk else "",
            "icon": "",
            "image": "",
            "rewards": {"rates": None, "min_size": 0, "max_spread": 0},
            "is_50_50_outcome": False,
            "tokens": [
                {
                    "token_id": token.token_id,
                    "outcome": token.outcome,
                    "price": number(
                        book.last_trade_price if index == 0 else MICROS - book.last_trade_price
                    ),
                    "winner": info.winner == token.token_id,
                }
                for index, token in enumerate(info.tokens)
            ],
            "tags": [],
        }

    def _page(self, request: web.Request) -> tuple[list[str], str]:
        cursor = request.query.get("next_cursor", "") or "MA=="
        if cursor == END_CURSOR:
            return [], END_CURSOR
        try:
            offset = int(base64.b64decode(cursor).decode())
        except ValueError:
            offset = 0
        condition_ids = list(self.exchange.markets)
        page = condition_ids[offset : offset + 500]
        end = offset + len(page)
        return page, (_cursor(end) if end < len(condition_ids) else END_CURSOR)

    async def clob_markets(self, request: web.Request) -> web.Response:
        page, next_cursor = self._page(request)
        data = [self._clob_market_object(cid) for cid in page]
        return json_response(
            {"data": data, "next_cursor": next_cursor, "limit": 500, "count": len(data)}
        )

    async def simplified_markets(self, request: web.Request) -> web.Response:
        page, next_cursor = self._page(request)
        data = []
        for cid in page:
            full = self._clob_market_object(cid)
            data.append(
                {
                    key: full[key]
                    for key in ("condition_id", "rewards", "tokens", "active", "closed", "archived")
                }
                | {"accepting_orders": full["accepting_orders"]}
            )
        return json_response(
            {"data": data, "next_cursor": next_cursor, "limit": 500, "count": len(data)}
        )

    async def clob_market_full(self, request: web.Request) -> web.Response:
        condition_id = request.match_info["condition_id"].lower()
        if condition_id not in self.exchange.markets:
            return error_response(404, "market not found")
        return json_response(self._clob_market_object(condition_id))

    async def server_time(self, request: web.Request) -> web.Response:
        return json_response(int(time.time()))

    async def ok(self, request: web.Request) -> web.Response:
        return json_response("OK")

    async def version(self, request: web.Request) -> web.Response:
        return json_response({"version": 2})
