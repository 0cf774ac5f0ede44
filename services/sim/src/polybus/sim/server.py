"""The simulator: one aiohttp app on one port (CLOB REST, both WebSockets, Gamma, ``/admin``).

In process (tests, benchmarks)::

    async with Simulator(SimSettings(port=0, seed=7, binary_markets=500)) as sim:
        sim.http_url, sim.market_ws_url, sim.user_ws_url
        sim.asset_ids(); sim.markets(); sim.book(asset_id)
        await sim.pause_flow(); await sim.flush(); await sim.resume_flow()
        sim.faults.stall(); sim.faults.restart(5); ...

Standalone it runs under the service runtime (:mod:`polybus.sim.service`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from polybus.sim.admin import Admin
from polybus.sim.clob_public import ClobPublic
from polybus.sim.clock import Clock, SystemClock
from polybus.sim.config import SimSettings
from polybus.sim.exchange import Exchange, Outgoing
from polybus.sim.faults import Faults
from polybus.sim.flow import OrderFlow
from polybus.sim.gamma import Gamma
from polybus.sim.injections import Injections
from polybus.sim.market_ws import MarketHub, SocketRegistry
from polybus.sim.replay import CaptureReplay, load_capture
from polybus.sim.trading import Trading
from polybus.sim.universe import SimMarket, seeded_random

_log = structlog.get_logger("polybus.sim")


class Simulator:
    """A protocol-exact, offline Polymarket. Use as an async context manager."""

    def __init__(
        self,
        settings: SimSettings | None = None,
        *,
        on_task_failure: Callable[[str], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``on_task_failure(task_name)`` is told when a background task dies (the service
        stops on it); without it the failure is only logged. ``clock`` drives the venue's
        timers (a test passes a :class:`~polybus.sim.clock.ManualClock` to hold them)."""
        self.settings = settings = settings or SimSettings()
        self.clock = clock = clock or SystemClock()
        self._on_task_failure = on_task_failure
        self.registry = SocketRegistry(
            max_events_per_frame=settings.max_events_per_frame,
            max_pending=settings.max_pending_events,
        )
        self.exchange = Exchange(settings, self._publish)
        self.replay: CaptureReplay | None = None
        if settings.capture_file:
            self.replay = CaptureReplay(
                load_capture(Path(settings.capture_file)),
                self.registry,
                paced=settings.capture_pace == "recorded",
            )
        self.market_hub = MarketHub(
            self.exchange,
            self.registry,
            subscribe_timeout_s=settings.subscribe_timeout_s,
            replay=self.replay.start if self.replay is not None else None,
        )
        self.injections = Injections(self.exchange)
        self.faults = Faults(
            exchange=self.exchange,
            registry=self.registry,
            market_hub=self.market_hub,
            injections=self.injections,
            post_only_after_restart_s=settings.post_only_after_restart_s,
            clock=clock,
        )
        self.trading = Trading(self.exchange, self.registry, self.faults, settings, clock)
        self.flow = OrderFlow(
            self.exchange, seed=settings.seed, trade_probability=settings.trade_probability
        )
        self._flow_running = settings.flow and self.replay is None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._mispricing_rng = seeded_random(settings.seed, "mispricing")
        self.port = 0
        self._apply_startup_faults()

    # -- URLs ----------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def market_ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}/ws/market"

    @property
    def user_ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}/ws/user"

    # -- reading -------------------------------------------------------------------------------
    def asset_ids(self) -> list[str]:
        """Every token id, YES then NO per market."""
        return list(self.exchange.tokens)

    def markets(self) -> list[SimMarket]:
        """Every market's metadata with its current tick size and state."""
        return self.exchange.all_markets()

    def book(self, asset_id: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) of a token, best first, as (price, size) micros. KeyError if unknown."""
        book, token = self.exchange.tokens[asset_id]
        return book.view(token)

    def state(self) -> dict[str, Any]:
        return {
            "http_url": self.http_url,
            "markets": len(self.exchange.markets),
            "assets": len(self.exchange.tokens),
            "flow": "running" if self._flow_running else "paused",
            "replay": self.replay is not None,
            "sockets": [asdict(info) for info in self.registry.info()],
            "faults": self.faults.status(),
        }

    # -- flow ----------------------------------------------------------------------------------
    async def pause_flow(self) -> None:
        """Stop simulated flow and end running injections: books stay still from now on
        (frames already produced still go out; :meth:`flush` waits for them)."""
        self._flow_running = False
        self.injections.restore_all()

    async def resume_flow(self) -> None:
        self._flow_running = self.replay is None

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every frame produced so far was written to its socket."""
        await self.registry.flush(timeout)

    def inject_mispricing(
        self,
        *,
        event_id: str = "",
        condition_id: str = "",
        edge: int = 20_000,
        duration_ms: int = 300,
    ) -> list[dict[str, Any]]:
        """Make an arbitrage for ``duration_ms``: a neg-risk event's YES asks summing to
        ``1 - edge`` (micro-units; ``event_id``; default: one chosen by the seed), or, for a
        binary market (``condition_id``), a YES ask below the YES bid (YES ask + NO ask < 1)."""
        if condition_id:
            book = self.exchange.markets[condition_id].book
            injected = self.injections.crossed(book, duration_ms=duration_ms, levels=1)
        else:
            if event_id:
                event = self.exchange.events[event_id]
            else:
                candidates = [e for e in self.exchange.events.values() if e.neg_risk]
                if not candidates:
                    raise KeyError("no neg-risk event")
                event = self._mispricing_rng.choice(candidates)
            books = [self.exchange.markets[cid].book for cid in event.condition_ids]
            injected = self.injections.neg_risk(books, edge=edge, duration_ms=duration_ms)
        return [
            {
                "condition_id": item.book.condition_id,
                "asset_id": item.book.token_ids[0],
                "price": item.price,
                "size": item.size,
            }
            for item in injected
        ]

    # -- fan-out -------------------------------------------------------------------------------
    def _publish(self, outgoing: list[Outgoing]) -> None:
        if self.replay is None:
            self.market_hub.publish(outgoing)

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=f"sim.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("sim.task_failed", task=task.get_name(), exc_info=task.exception())
            if self._on_task_failure is not None:
                self._on_task_failure(task.get_name())

    async def start(self) -> None:
        app = web.Application(middlewares=[self._fault_middleware], client_max_size=1 << 22)
        clob, gamma = ClobPublic(self.exchange), Gamma(self.exchange)
        app.router.add_get("/ws/market", self.market_hub.handle)
        # (the trading routes include /ws/user)
        app.router.add_routes(self.trading.routes())
        app.router.add_routes(Admin(self).routes())
        app.router.add_routes(gamma.routes()[2:])
        # Gamma and the CLOB both have /markets: a CLOB cursor or a condition id (0x…) means
        # the CLOB, anything else Gamma.
        gamma_markets, gamma_market = gamma.routes()[0].handler, gamma.routes()[1].handler

        async def markets(request: web.Request) -> web.StreamResponse:
            if "next_cursor" in request.query:
                return await clob.clob_markets(request)
            return await gamma_markets(request)

        async def market(request: web.Request) -> web.StreamResponse:
            if request.match_info["id"].startswith("0x"):
                request.match_info["condition_id"] = request.match_info["id"]
                return await clob.clob_market_full(request)
            return await gamma_market(request)

        app.router.add_get("/markets", markets)
        app.router.add_get("/markets/{id}", market)
        app.router.add_routes(
            [
                route
                for route in clob.routes()
                if route.path not in ("/markets", "/markets/{condition_id}")
            ]
        )
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._spawn(self._flow_loop(), "flow")
        if self.settings.mispricing_interval_s > 0:
            self._spawn(self._mispricing_loop(), "mispricing")
        if self.settings.custom_feature_interval_s > 0:
            self._spawn(self._custom_feature_loop(), "custom_features")
        self.trading.start(self._spawn)
        _log.info("sim.started", url=self.http_url, markets=len(self.exchange.markets))

    async def stop(self) -> None:
        self._flow_running = False
        self.injections.restore_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.trading.stop()
        if self.replay is not None:
            await self.replay.stop()
        await self.registry.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        _log.info("sim.stopped")

    def _apply_startup_faults(self) -> None:
        startup = self.settings.startup_faults
        if startup.restart_s:
            self.faults.restart(startup.restart_s)
        if startup.post_only_s:
            self.faults.post_only(startup.post_only_s)
        if startup.cancel_only_s:
            self.faults.cancel_only(startup.cancel_only_s)
        if startup.slow_response_ms:
            self.faults.slow_responses(startup.slow_response_ms)

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path.startswith(("/admin", "/ws/")):
            response: web.StreamResponse = await handler(request)
            return response
        delay = self.faults.http_delay_s()
        if delay:
            await asyncio.sleep(delay)
        limited = self.faults.take_rate_limited()
        if limited is not None:
            return limited
        response = await handler(request)
        return response

    # -- background loops ----------------------------------------------------------------------
    async def _flow_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.flow_interval_ms / 1000
        rate = self.settings.changes_per_second
        last = loop.time()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            # When generation cannot keep up (or the loop was blocked), do not try to catch up
            # in one giant batch: at most 100 ms of flow per batch.
            elapsed, last = min(now - last, 0.1), now
            if self._flow_running:
                self.flow.run_actions(self.flow.actions_due(rate, elapsed))

    async def _mispricing_loop(self) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(settings.mispricing_interval_s)
            if self._flow_running:
                with contextlib.suppress(KeyError):
                    self.inject_mispricing(
                        edge=settings.mispricing_edge, duration_ms=settings.mispricing_duration_ms
                    )

    async def _custom_feature_loop(self) -> None:
        rng = seeded_random(self.settings.seed, "lifecycle")
        while True:
            await asyncio.sleep(self.settings.custom_feature_interval_s)
            if not self._flow_running:
                continue
            self.exchange.create_market()
            open_markets = [s for s in self.exchange.markets.values() if not s.info.closed]
            if len(open_markets) > 1:
                state = rng.choice(open_markets)
                self.exchange.resolve_market(state.info.condition_id)
