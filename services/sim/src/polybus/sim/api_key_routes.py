"""``/auth/*``: creating, deriving, listing and deleting API keys (VENUE.md §2.5)."""

from __future__ import annotations

import structlog
from aiohttp import web

from polybus.common.polymarket.clob import PolymarketApiKeys
from polybus.sim.auth import ApiKey, ApiKeys
from polybus.sim.http_util import error_response, json_response

_log = structlog.get_logger("polybus.sim.api_keys")


class ApiKeyRoutes:
    def __init__(self, api_keys: ApiKeys) -> None:
        self._api_keys = api_keys

    def routes(self) -> list[web.RouteDef]:
        keys = self._api_keys
        return [
            web.post("/auth/api-key", keys.l1(self.create)),
            web.get("/auth/derive-api-key", keys.l1(self.derive)),
            web.get("/auth/api-keys", keys.l2(self.list)),
            web.delete("/auth/api-key", keys.l2(self.delete)),
        ]

    async def create(self, request: web.Request, address: str, nonce: int) -> web.Response:
        key = self._api_keys.create(address, nonce)
        if key is None:
            return error_response(400, "Could not create api key")
        _log.info("auth.api_key_created", address=address, nonce=nonce)
        return json_response(self._api_keys.credentials(key))

    async def derive(self, request: web.Request, address: str, nonce: int) -> web.Response:
        return json_response(self._api_keys.credentials(self._api_keys.derive(address, nonce)))

    async def list(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        keys = [k.key for k in self._api_keys.keys_of(key.address)]
        return json_response(PolymarketApiKeys(api_keys=keys))

    async def delete(self, request: web.Request, key: ApiKey, body: bytes) -> web.Response:
        self._api_keys.delete(key)
        return json_response("OK")
