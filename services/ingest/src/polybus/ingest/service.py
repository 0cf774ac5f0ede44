"""The ingest service's wiring and lifecycle.

:class:`Ingest` owns the engine, the socket pool, the publisher, market selection, REST seeds,
timers and the snapshot request endpoint, as tasks of one TaskGroup: if any of them fails, the
whole ingest stops (the supervisor restarts it). :func:`run` runs it under the
:class:`~polybus.common.runtime.ServiceRuntime`.

With ``split_markets`` (or ``instances`` > 1) the ingests of a deployment split the partitions
with leases (:mod:`polybus.common.leases`): this one follows only the selected markets of the
partitions it holds. A partition won starts its markets afresh (subscribe, venue snapshot, new
epoch); a partition lost closes them as ``stale`` (``partition_released``), unsubscribes them and
pushes out what was queued, before the lease is released for the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import httpx
import structlog

from polybus.common.bus import Bus, Message, Subscription
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.events import MarketInfo, encode
from polybus.common.leases import LeaseKeeper, LeaseStore, NatsLeaseStore, new_member_id
from polybus.common.polymarket.market_channel import PolymarketNewMarket
from polybus.common.runtime import ServiceRuntime, replica_settings
from polybus.common.subjects import market_partition
from polybus.common.tasks import cancel_and_wait
from polybus.ingest import metrics
from polybus.ingest.config import IngestSettings
from polybus.ingest.engine import EngineStats, IngestEngine
from polybus.ingest.gamma import GammaClient
from polybus.ingest.markets import MarketSelector
from polybus.ingest.publisher import Publisher
from polybus.ingest.rest import ClobClient
from polybus.ingest.ws import FrameTap, SocketPool

_log = structlog.get_logger("polybus.ingest")

Selection = Callable[[], Any]
_RELEASE_TIMEOUT_S = 0.5
"""Giving the leases back on shutdown must fit the 2 s stop budget; what is left expires."""


class Ingest:
    """A running ingest. ``async with Ingest(bus, settings, partitions=16) as ingest: ...``"""

    def __init__(
        self,
        bus: Bus,
        settings: IngestSettings,
        *,
        partitions: int,
        tap: FrameTap | None = None,
        markets: Sequence[MarketInfo] | None = None,
        lease_store: LeaseStore | None = None,
        member: str = "",
    ) -> None:
        """``markets`` fixes the selection (no Gamma); otherwise the settings decide. With a
        ``lease_store`` this ingest is lease member ``member`` of ``settings.lease_group``."""
        self.bus = bus
        self.partitions = partitions
        self.settings = settings
        self.subjects = bus.namespace.subjects
        self.engine = IngestEngine(self.subjects, partitions, settings)
        self.publisher = Publisher(
            bus, self.engine.outbox, backlog_max=settings.publish_backlog_max
        )
        self.engine.on_output = self.publisher.notify
        self.engine.on_new_market = self._on_new_market
        self._actions_wake = asyncio.Event()
        self.pool = SocketPool(
            settings,
            self.engine,
            tap=tap,
            on_frames=self._actions_wake.set,
            backlog=self.publisher,
        )
        self.http = httpx.AsyncClient(timeout=settings.http_timeout_s)
        self.clob = ClobClient(self.http, settings.clob_url)
        self.selector = MarketSelector(settings, GammaClient(self.http, settings.gamma_url))
        self._fixed_markets = list(markets) if markets is not None else None
        self.selected: dict[str, MarketInfo] = {}
        """The markets followed now (with leases: those of the partitions held)."""
        self._selection_markets: list[MarketInfo] = []
        self._follow_lock = asyncio.Lock()
        self._follow_wake = asyncio.Event()
        self.held: set[int] | None = None
        """Partitions held (None: not split, every partition is this ingest's)."""
        self.leases: LeaseKeeper | None = None
        if lease_store is not None:
            self.held = set()
            self.leases = LeaseKeeper(
                lease_store,
                group=settings.lease_group,
                member=member or new_member_id("ingest"),
                partitions=partitions,
                on_acquired=self._on_partition_acquired,
                on_lost=self._on_partition_lost,
            )
        self.selections = 0
        self.selection_error = ""
        """Why the latest market selection failed (empty once one succeeds)."""
        self._refresh_now = asyncio.Event()
        self._rest_slots = asyncio.Semaphore(settings.rest_concurrency)
        self._responder: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._exported = _Exported()
        self.selected_once = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Ingest:
        self._responder = await self.bus.subscribe(
            self.subjects.snapshot_request_all(), self._answer_snapshot_request
        )
        self._task = asyncio.get_running_loop().create_task(self.run(), name="ingest.main")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            await cancel_and_wait({self._task}, None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # ended: raises its own error, if it had one
        await self.close()

    async def close(self) -> None:
        await self.pool.close()
        if self.leases is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RELEASE_TIMEOUT_S):
                    await self.leases.release_all()
        if self._responder is not None:
            with contextlib.suppress(Exception):
                await self._responder.unsubscribe()
            self._responder = None
        with contextlib.suppress(Exception):
            await self.publisher.publish_pending()
        await self.http.aclose()

    async def run(self) -> None:
        """Run every part until cancelled; the first failure stops them all."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.publisher.run(), name="ingest.publisher")
            group.create_task(self._timers(), name="ingest.timers")
            group.create_task(self._actions(group), name="ingest.actions")
            group.create_task(self._selection(), name="ingest.selection")
            if self.leases is not None:
                group.create_task(self.leases.run(), name="ingest.leases")
                group.create_task(self._following(), name="ingest.following")

    def failed(self) -> BaseException | None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return self.pool.failed()

    # -- market selection --------------------------------------------------------------------
    def _on_new_market(self, event: PolymarketNewMarket) -> None:
        self._refresh_now.set()

    async def _selection(self) -> None:
        settings = self.settings
        while True:
            try:
                markets = (
                    self._fixed_markets
                    if self._fixed_markets is not None
                    else await self.selector.select()
                )
            except (httpx.HTTPError, ValueError) as error:
                _log.warning("markets.refresh_failed", error=repr(error))
                self.selection_error = f"{type(error).__name__}: {error}"
                wait = min(settings.refresh_interval_s, 10.0)
            else:
                self.selection_error = ""
                await self.apply_selection(markets)
                wait = settings.refresh_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), wait)
                # new_market events come in bursts: one refresh for the lot, a little later.
                await asyncio.sleep(settings.new_market_refresh_delay_s)
            self._refresh_now.clear()

    async def apply_selection(self, markets: Sequence[MarketInfo]) -> None:
        """Follow exactly these markets (of the partitions held): publish MarketInfo,
        subscribe new, drop the rest."""
        self._selection_markets = list(markets)
        await self._follow()
        self.selections += 1
        self.selected_once.set()

    def _partition(self, info: MarketInfo) -> int:
        return market_partition(info.condition_id, info.neg_risk_market_id, self.partitions)

    def _mine(self, info: MarketInfo) -> bool:
        return self.held is None or self._partition(info) in self.held

    async def _follow(self) -> None:
        async with self._follow_lock:
            now = time.time_ns()
            wanted = {info.condition_id: info for info in self._selection_markets}
            for condition_id in [c for c in self.selected if c not in wanted]:
                del self.selected[condition_id]
                self.engine.untrack_market(condition_id, "deselected", now)
            for condition_id, info in wanted.items():
                previous = self.selected.get(condition_id)
                # Asked again after every await: a partition may be lost meanwhile.
                if not self._mine(info) or (
                    previous is not None and previous.event_id == info.event_id
                ):
                    continue
                self.selected[condition_id] = info
                self.engine.track_market(info, now)
                self.engine.publish_market(info)
                tokens = [outcome.token_id for outcome in info.outcomes]
                await self.pool.add_market(tokens)
                if condition_id not in self.selected:  # lost while subscribing
                    await self.pool.remove(tokens)
        metrics.MARKETS.set(len(self.selected))
        _log.info("markets.selected", markets=len(self.selected), assets=len(self.engine.tracks))
        self._actions_wake.set()

    # -- partitions held (leases) ------------------------------------------------------------
    async def _on_partition_acquired(self, partition: int, token: int) -> None:
        assert self.held is not None
        self.held.add(partition)
        # Subscribing may take a while (a new socket): not on the lease keeper's task.
        self._follow_wake.set()

    async def _on_partition_lost(self, partition: int) -> None:
        assert self.held is not None
        self.held.discard(partition)
        now = time.time_ns()
        dropped: list[str] = []
        for condition_id, info in list(self.selected.items()):
            if self._partition(info) == partition:
                del self.selected[condition_id]
                dropped += self.engine.untrack_market(
                    condition_id, "partition_released", now, status="stale"
                )
        metrics.MARKETS.set(len(self.selected))
        # Unsubscribed here, not by the engine's queued actions: a partition won back soon
        # after must find its assets unsubscribed, to subscribe them afresh.
        await self.pool.remove(dropped)
        # Everything queued for these books reaches the server before the next owner starts.
        with contextlib.suppress(Exception):
            await self.publisher.publish_pending()
            await self.bus.flush(timeout=1.0)

    async def _following(self) -> None:
        while True:
            await self._follow_wake.wait()
            self._follow_wake.clear()
            await self._follow()

    # -- actions: resubscribe, REST seed, unsubscribe ----------------------------------------
    async def _actions(self, group: asyncio.TaskGroup) -> None:
        engine = self.engine
        while True:
            await self._actions_wake.wait()
            self._actions_wake.clear()
            while engine.actions:
                action = engine.actions.popleft()
                metrics.RESYNCS.labels(action.kind, action.reason).inc()
                if action.kind == "resubscribe":
                    await self.pool.resubscribe(action.asset_id)
                elif action.kind == "unsubscribe":
                    await self.pool.remove([action.asset_id])
                else:
                    group.create_task(self._seed_from_rest(action.asset_id))

    async def _seed_from_rest(self, asset_id: str) -> None:
        async with self._rest_slots:
            try:
                summary = await self.clob.book(asset_id)
            except (httpx.HTTPError, ValueError) as error:
                metrics.REST_SEEDS.labels("error").inc()
                _log.warning("rest.seed_failed", asset_id=asset_id, error=repr(error))
                return
        metrics.REST_SEEDS.labels("ok").inc()
        self.engine.on_rest_book(summary, time.time_ns())
        self._actions_wake.set()

    # -- timers, metrics, health -------------------------------------------------------------
    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval_s)
            self.engine.tick(time.time_ns())
            self._actions_wake.set()
            self.export_metrics()

    def export_metrics(self) -> None:
        self._exported.export(self.engine.stats)
        for state, count in self.engine.states().items():
            metrics.ASSETS.labels(state).set(count)
        self.publisher.export_metrics(self._exported.published)

    def _held_detail(self) -> str:
        if self.leases is None or self.held is None:
            return ""
        return (
            f" ({len(self.held)} of {self.partitions} partitions held,"
            f" {self.leases.members} ingests)"
        )

    def health(self) -> tuple[bool, str]:
        states = self.engine.states()
        tracked = sum(states.values()) - states["closed"]
        live = states["live"]
        return (tracked == 0 or live > 0), f"{live}/{tracked} books live"

    def markets_health(self) -> tuple[bool, str]:
        """An ingest that follows no market publishes nothing: that is never healthy, unless
        it splits the markets and its partitions have none (or it holds none: a standby)."""
        if self.selected:
            return True, f"{len(self.selected)} markets selected" + self._held_detail()
        if self.held is not None and self.selections and not self.selection_error:
            return True, "no selected market in the partitions held" + self._held_detail()
        if self.selection_error:
            return False, f"no markets selected: market selection failed ({self.selection_error})"
        if not self.selections:
            return False, "no markets selected yet"
        return False, "no markets selected: the explicit lists are empty and discovery found none"

    # -- snapshot request endpoint -----------------------------------------------------------
    async def _answer_snapshot_request(self, message: Message) -> None:
        asset_id = message.subject.rsplit(".", 1)[-1]
        answer = self.engine.snapshot(asset_id, time.time_ns())
        if answer is not None:  # another instance may own it: stay silent
            await self.bus.respond(message, encode(answer))


class _Exported:
    """Counts already moved from EngineStats into Prometheus (the engine has no metrics)."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.published: dict[str, int] = {}

    def _inc(self, key: str, value: int, counter: Any) -> None:
        delta = value - self.values.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self.values[key] = value

    def export(self, stats: EngineStats) -> None:
        self._inc("frames", stats.frames, metrics.FRAMES.labels("data"))
        self._inc("pongs", stats.pongs, metrics.FRAMES.labels("pong"))
        self._inc("bytes", stats.bytes, metrics.BYTES)
        self._inc("decode_errors", stats.decode_errors, metrics.DECODE_ERRORS)
        self._inc("untracked", stats.untracked, metrics.UNTRACKED)
        self._inc("price_change", stats.price_changes, metrics.EVENTS.labels("price_change"))
        self._inc("entries", stats.entries, metrics.EVENTS.labels("price_change_entry"))
        for kind, count in stats.events.items():
            self._inc(f"event:{kind}", count, metrics.EVENTS.labels(kind))
        for reason, count in stats.dead_letters.items():
            self._inc(f"dlq:{reason}", count, metrics.DEAD_LETTERS.labels(reason))
        for (status, reason), count in stats.transitions.items():
            self._inc(f"tr:{status}:{reason}", count, metrics.TRANSITIONS.labels(status, reason))
        for check, result, count in (
            ("bbo", "pass", stats.bbo_passed),
            ("bbo", "fail", stats.bbo_failed),
            ("hash", "pass", stats.hash_passed),
            ("hash", "fail", stats.hash_failed),
            ("hash", "explained_by_trade", stats.hash_explained),
        ):
            self._inc(f"check:{check}:{result}", count, metrics.CHECKS.labels(check, result))
        for (check, result), count in stats.checks.items():
            self._inc(f"check:{check}:{result}", count, metrics.CHECKS.labels(check, result))
        lags, stats.lags_ns = stats.lags_ns, []
        for lag in lags:
            metrics.LAG.observe(max(lag, 0) / 1e9)


async def run(config: Config, *, replica: int = 0) -> None:
    """Run the ingest service until SIGTERM/SIGINT: select markets, follow their books over the
    venue's WebSocket, verify them after every batch, publish market data to NATS.

    ``replica`` is which of ``[ingest] instances`` processes this is (its instance name and
    metrics port; past the first a free one, not the next service's)."""
    settings = config.section("ingest", IngestSettings)
    settings = replica_settings(
        settings, replica, metrics_port=0 if replica else settings.metrics_port
    )
    async with ServiceRuntime("ingest", config, settings) as runtime:
        lease_store: LeaseStore | None = None
        if settings.splits_markets:
            bus = runtime.bus
            if not isinstance(bus, NatsBus):
                raise RuntimeError("split_markets needs a NATS server (its LEASES bucket)")
            lease_store = await runtime.until_stopped(NatsLeaseStore.open(bus.js, bus.namespace))
        ingest = Ingest(
            runtime.bus,
            settings,
            partitions=config.deployment.bus.partitions,
            lease_store=lease_store,
            member=new_member_id(runtime.instance),
        )
        async with ingest:
            runtime.add_health_check("books", ingest.health)
            runtime.add_health_check("markets", ingest.markets_health)
            runtime.spawn(_watch(ingest), name="watch")
            await runtime.wait()


async def _watch(ingest: Ingest) -> None:
    # Surface a dead part of the ingest as a failed runtime task (the service then stops).
    while True:
        await asyncio.sleep(1.0)
        error = ingest.failed()
        if error is not None:
            raise error
