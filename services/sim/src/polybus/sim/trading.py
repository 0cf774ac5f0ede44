"""Trading on the simulated CLOB: the authenticated endpoints and the user channel, wired
together.

Every order is checked the way the venue does (VENUE.md §3, :mod:`polybus.sim.order_checks`),
matched against the book (:mod:`polybus.sim.matching`) and settled MATCHED → MINED → CONFIRMED
or FAILED (:mod:`polybus.sim.settlement`), with ``order``/``trade`` events on the user channel.
This module holds the HTTP side of orders, cancels and heartbeats: matching-engine restarts,
restricted modes and rate limits answer as the venue does. API keys and the account's read
endpoints live in :mod:`polybus.sim.api_key_routes` and :mod:`polybus.sim.queries`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from aiohttp import web

from polybus.common.polymarket.clob import (
    PolymarketCancelMarketOrders,
    PolymarketCancelOrder,
    PolymarketHeartbeat,
    PolymarketHeartbeatRejection,
    PolymarketOrderResponse,
    PolymarketPostOrder,
)
from polybus.sim.api_key_routes import ApiKeyRoutes
from polybus.sim.auth import ApiKey, ApiKeys
from polybus.sim.clock import Clock
from polybus.sim.config import SimSettings
from polybus.sim.exchange import Exchange
from polybus.sim.faults import POST_ONLY_BODY, Faults
from polybus.sim.heartbeats import Heartbeats
from polybus.sim.http_util import error_response, json_response
from polybus.sim.market_ws import SocketRegistry
from polybus.sim.matching import Matching
from polybus.sim.orders import INVALID_PAYLOAD, Rejected
from polybus.sim.queries import Queries
from polybus.sim.ratelimit import Bucket, RateLimiter
from polybus.sim.user_ws import UserHub
from polybus.sim.venue import UserEvents, refused
from polybus.sim.wallets import Wallets

Spawn = Callable[[Coroutine[Any, Any, None], str], None]

MAX_BATCH = 15
MAX_CANCEL_BATCH = 1000
SWEEP_INTERVAL_S = 0.1
"""How often heartbeat deadlines and GTD expirations are checked."""

_post_order = msgspec.json.Decoder(PolymarketPostOrder)
_post_orders = msgspec.json.Decoder(list[PolymarketPostOrder])
_cancel_one = msgspec.json.Decoder(PolymarketCancelOrder)
_cancel_many = msgspec.json.Decoder(list[str])
_cancel_market = msgspec.json.Decoder(PolymarketCancelMarketOrders)
_heartbeat = msgspec.json.Decoder(PolymarketHeartbeat)

SelectOrders = Callable[[ApiKey, bytes], list[str] | web.Response]
"""The order ids a cancel request names, or the response refusing it."""


class Trading:
    """The authenticated half of the CLOB, plus the user channel."""

    def __init__(
        self,
        exchange: Exchange,
        registry: SocketRegistry,
        faults: Faults,
        settings: SimSettings,
        clock: Clock,
    ) -> None:
        self.faults = faults
        self.clock = clock
        self.api_keys = ApiKeys(settings.seed)
        self.users = UserHub(
            self.api_keys, registry, subscribe_timeout_s=settings.subscribe_timeout_s
        )
        self.limiter = RateLimiter(settings.rate_limit_tier)
        self.wallets = Wallets()
        self.matching = Matching(
            exchange, settings, faults, clock, UserEvents(self.users, clock), self.wallets
        )
        self.heartbeats = Heartbeats(
            self.api_keys,
            clock,
            timeout_s=settings.heartbeat_timeout_s,
            cancel_all_of=self.matching.cancel_all_of,
        )
        self._api_key_routes = ApiKeyRoutes(self.api_keys)
        self._queries = Queries(
            self.api_keys, self.matching, exchange, page_size=settings.query_page_size
        )
        self._next_sweep = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        l2 = self.api_keys.l2
        return [
            web.get("/ws/user", self.users.handle),
            *self._api_key_routes.routes(),
            web.post("/order", l2(self.post_order)),
            web.post("/orders", l2(self.post_orders)),
            web.delete("/order", l2(self.cancel_order)),
            web.delete("/orders", l2(self.cancel_orders)),
            web.delete("/cancel-all", l2(self.cancel_all)),
            web.delete("/cancel-market-orders", l2(self.cancel_market_orders)),
            web.post("/v1/heartbeats", l2(self.heartbeat)),
            *self._queries.routes(),
            *self.wallets.routes(),
        ]

    def start(self, spawn: Spawn) -> None:
        spawn(self.matching.settlement.run(), "settlement")
        spawn(self._sweep_loop(), "trading.maintenance")

    async def stop(self) -> None:
        self.matching.settlement.clear()
        self.matching.clear_delays()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.heartbeats.expire()
            self.matching.expire_orders(self.clock.time())
            done, self._next_sweep = self._next_sweep, asyncio.Event()
            done.set()

    async def next_sweep(self) -> None:
        """Return once heartbeat deadlines and expirations have been checked after this call
        (a test that moved the clock waits here before looking)."""
        # A sweep never awaits, so the one that sets this event starts after this call.
        await self._next_sweep.wait()

    # -- orders ------------------------------------------------------------------------------
    def _admit(self, key: ApiKey, bucket: Bucket, cost: int) -> tuple[bool, dict[str, str]]:
        admission = self.limiter.admit(key.address, bucket, cost)
        return admission.allowed, admission.headers

    async def post_order(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        try:
            post = _post_order.decode(body)
        except msgspec.DecodeError:
            return error_response(400, INVALID_PAYLOAD)
        gate = self.faults.order_gate("post_only_order" if post.post_only else "order")
        if gate is not None:
            return gate
        allowed, headers = self._admit(key, "order", 1)
        if not allowed:
            return error_response(429, "Too Many Requests", headers=headers)
        try:
            result = self.matching.place(key, post)
        except Rejected as rejected:
            if rejected.status == 400:
                return error_response(400, rejected.message, headers=headers)
            return json_response(refused(rejected), headers=headers)
        return await self._answer_placed(request, json_response(result, headers=headers))

    async def _answer_placed(self, request: web.Request, response: web.Response) -> web.Response:
        """The response to executed orders, unless a lost-response fault swallows it: the
        orders stand either way, only the client is left not knowing."""
        lost = self.faults.take_lost_response()
        if lost is None:
            return response
        if lost.mode == "hold":
            await asyncio.sleep(lost.hold_s)
            return response
        if request.transport is not None:
            request.transport.abort()
        # The connection is gone: aiohttp drops whatever is returned.
        return response

    async def post_orders(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        try:
            posts = _post_orders.decode(body)
        except msgspec.DecodeError:
            return error_response(400, INVALID_PAYLOAD)
        if len(posts) > MAX_BATCH:
            return error_response(400, f"Too many orders in payload, max allowed: {MAX_BATCH}")
        if not posts:
            return error_response(400, INVALID_PAYLOAD)
        gate = self.faults.order_gate("post_only_order")
        if gate is not None:
            return gate
        allowed, headers = self._admit(key, "order", len(posts))
        if not allowed:
            return error_response(429, "Too Many Requests", headers=headers)
        results: list[PolymarketOrderResponse] = []
        for post in posts:
            try:
                if not post.post_only and self.faults.post_only_active():
                    raise Rejected(POST_ONLY_BODY, status=200)
                results.append(self.matching.place(key, post))
            except Rejected as rejected:
                results.append(refused(rejected))
        return await self._answer_placed(request, json_response(results, headers=headers))

    # -- cancels -----------------------------------------------------------------------------
    async def _cancel_request(
        self, key: ApiKey, body: bytes, select: SelectOrders, *, charge_after: bool = False
    ) -> web.Response:
        """A cancel, charged one token per id named, or (``charge_after``, for the endpoints
        that name no ids) one token to pass and then one per order canceled."""
        gate = self.faults.order_gate("cancel")
        if gate is not None:
            return gate
        selected = select(key, body)
        if isinstance(selected, web.Response):
            return selected
        allowed, headers = self._admit(key, "cancel", 1 if charge_after else len(selected))
        if not allowed:
            return error_response(429, "Too Many Requests", headers=headers)
        result = self.matching.cancel_ids(key, selected)
        if charge_after and result.canceled:
            headers = self.limiter.charge(key.address, "cancel", len(result.canceled))
        return json_response(result, headers=headers)

    async def cancel_order(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            try:
                return [_cancel_one.decode(body).order_id]
            except msgspec.DecodeError:
                return error_response(400, "Invalid payload")

        return await self._cancel_request(key, body, select)

    async def cancel_orders(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            try:
                ids = _cancel_many.decode(body)
            except msgspec.DecodeError:
                return error_response(400, "Invalid payload")
            if len(ids) > MAX_CANCEL_BATCH:
                return error_response(
                    400, f"Too many orders in payload, max allowed: {MAX_CANCEL_BATCH}"
                )
            return list(dict.fromkeys(ids))

        return await self._cancel_request(key, body, select)

    async def cancel_all(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            return list(self.matching.open_orders.get(key.key, {}))

        return await self._cancel_request(key, body, select, charge_after=True)

    async def cancel_market_orders(
        self, request: web.Request, key: ApiKey, body: bytes
    ) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            try:
                target = _cancel_market.decode(body or b"{}")
            except msgspec.DecodeError:
                return error_response(400, "Invalid payload")
            if not target.market and not target.asset_id:
                return error_response(400, "Invalid payload")
            return [
                order.id
                for order in self.matching.open_orders.get(key.key, {}).values()
                if (not target.market or order.market == target.market.lower())
                and (not target.asset_id or order.asset_id == target.asset_id)
            ]

        return await self._cancel_request(key, body, select, charge_after=True)

    # -- heartbeats --------------------------------------------------------------------------
    async def heartbeat(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        try:
            given = _heartbeat.decode(body or b"{}").heartbeat_id
        except msgspec.DecodeError:
            return error_response(400, "Invalid payload")
        answer = self.heartbeats.beat(key, given)
        status = 400 if isinstance(answer, PolymarketHeartbeatRejection) else 200
        return json_response(answer, status=status)


__all__ = ["Trading"]
