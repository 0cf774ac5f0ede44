"""Trading: API keys, orders, matching against the simulated book, the user channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from polybus.sim.config import SimSettings
from polybus.sim.exchange import Exchange
from polybus.sim.faults import Faults
from polybus.sim.market_ws import SocketRegistry

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Trading:
    def __init__(
        self, exchange: Exchange, registry: SocketRegistry, faults: Faults, settings: SimSettings
    ) -> None:
        self.exchange = exchange
        self.registry = registry
        self.faults = faults
        self.settings = settings

    def routes(self) -> list[web.RouteDef]:
        return []

    def start(self, spawn: Spawn) -> None:
        return None

    async def stop(self) -> None:
        await asyncio.sleep(0)
