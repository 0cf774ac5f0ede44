"""The account's read endpoints: ``/data/orders``, ``/data/order/{id}``, ``/data/trades``
(cursor-paged as on the venue, VENUE.md §3.5) and ``/balance-allowance`` (§5.2)."""

from __future__ import annotations

import base64
from typing import TypeVar

from aiohttp import web

from polybus.common.polymarket.clob import (
    FIRST_CURSOR,
    LAST_CURSOR,
    PolymarketBalanceAllowance,
    PolymarketPage,
    PolymarketTrade,
)
from polybus.sim.auth import ApiKey, ApiKeys
from polybus.sim.exchange import Exchange
from polybus.sim.http_util import error_response, json_response
from polybus.sim.matching import Matching
from polybus.sim.signing import CTF_EXCHANGE_V2, EXCHANGE_V3, NEG_RISK_CTF_EXCHANGE_V2
from polybus.sim.venue import open_order, trade_record

MAX_UINT256 = str(2**256 - 1)

ItemT = TypeVar("ItemT")


def _page(request: web.Request, items: list[ItemT], page_size: int) -> PolymarketPage[ItemT]:
    """One page from ``next_cursor`` (``MA==`` first, ``LTE=`` past the end): the cursor is
    the base64 offset, as the venue's look."""
    cursor = request.query.get("next_cursor", "") or FIRST_CURSOR
    if cursor == LAST_CURSOR:
        return PolymarketPage(data=[], next_cursor=LAST_CURSOR, limit=page_size, count=0)
    try:
        offset = int(base64.b64decode(cursor).decode())
    except ValueError:
        offset = 0
    page = items[offset : offset + page_size]
    end = offset + len(page)
    next_cursor = base64.b64encode(str(end).encode()).decode() if end < len(items) else LAST_CURSOR
    return PolymarketPage(data=page, next_cursor=next_cursor, limit=page_size, count=len(page))


class Queries:
    def __init__(
        self, api_keys: ApiKeys, matching: Matching, exchange: Exchange, *, page_size: int = 500
    ) -> None:
        self._api_keys = api_keys
        self._matching = matching
        self._exchange = exchange
        self._page_size = page_size

    def routes(self) -> list[web.RouteDef]:
        l2 = self._api_keys.l2
        return [
            web.get("/data/orders", l2(self.orders)),
            web.get("/data/order/{order_id}", l2(self.order)),
            web.get("/data/trades", l2(self.trades)),
            web.get("/balance-allowance", l2(self.balance_allowance)),
            web.get("/balance-allowance/update", l2(self.balance_allowance)),
        ]

    async def orders(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        query = request.query
        wanted_id = query.get("id", "")
        if wanted_id:
            order = self._matching.orders.get(wanted_id)
            orders = [order] if order is not None and order.owner == key.key else []
        else:
            orders = [
                o
                for o in self._matching.open_orders.get(key.key, {}).values()
                if (not query.get("market") or o.market == query["market"].lower())
                and (not query.get("asset_id") or o.asset_id == query["asset_id"])
            ]
        return json_response(_page(request, [open_order(o) for o in orders], self._page_size))

    async def order(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        order = self._matching.orders.get(request.match_info["order_id"])
        if order is None or order.owner != key.key:
            return error_response(404, "order not found")
        return json_response(open_order(order))

    async def trades(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        query = request.query
        before, after = query.get("before", ""), query.get("after", "")
        items: list[PolymarketTrade] = []
        for trade in self._matching.trades.values():
            if trade.taker is not None and trade.taker.owner == key.key:
                side = "TAKER"
            elif trade.maker.order is not None and trade.maker.owner == key.key:
                side = "MAKER"
            else:
                continue
            if (
                (query.get("id") and trade.id != query["id"])
                or (query.get("market") and trade.market != query["market"].lower())
                or (query.get("asset_id") and trade.asset_id != query["asset_id"])
                or (before.isdigit() and trade.match_time >= int(before))
                or (after.isdigit() and trade.match_time <= int(after))
            ):
                continue
            items.append(trade_record(trade, side))
        return json_response(_page(request, items, self._page_size))

    async def balance_allowance(
        self, request: web.Request, key: ApiKey, body: bytes
    ) -> web.Response:
        balances = self._matching.balances
        account = balances.account(key.address)
        asset_type = request.query.get("asset_type", "COLLATERAL").upper()
        if asset_type == "COLLATERAL":
            balance = account.collateral
        else:
            token_id = request.query.get("token_id", "")
            if token_id not in self._exchange.tokens:
                return error_response(400, "Invalid token id")
            balance = balances.position(account, token_id)
        allowances = {
            CTF_EXCHANGE_V2: MAX_UINT256,
            NEG_RISK_CTF_EXCHANGE_V2: MAX_UINT256,
            EXCHANGE_V3: MAX_UINT256,
        }
        return json_response(
            PolymarketBalanceAllowance(balance=str(balance), allowances=allowances)
        )
