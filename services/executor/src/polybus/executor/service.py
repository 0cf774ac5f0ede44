"""The executor service: ``polybus executor [--config FILE] [--live]`` (docs/executor.md).

Start-up, in this order, before the first intent is taken:

1. the live switches (``mode = "live"``, ``--live``, the secrets file with the key) — all
   three or none; any one alone refuses to start, naming what is missing (exit 2);
2. the venue: paper (the default) over the shared book view, or the live adapter;
3. the book view, warm-started from the MD stream (ticks, minimum sizes, book states);
4. the ledger and positions rebuilt from the executor's own history on EXEC
   (:mod:`polybus.executor.state`), then squared with the venue: live, reconciliation; paper,
   its orders died with the process, so the ones that were open are reported ``canceled``;
5. the halt switches from the ``HALT`` bucket, and the watch of the strategies' partition
   leases (``LEASES``) that fences their intents (:mod:`polybus.executor.fencing`).

Then owned tasks: the INTENT consumer (durable ``executor``, explicit ack after the events
are stored), the venue's reports, the halt and lease watches, the loss-stop check, and (live)
periodic reconciliation and the venue heartbeat, or (paper) GTD expiry. Nothing here needs
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from eth_account import Account

from polybus.common.book_view import BookFeed, BookView
from polybus.common.bus import Delivery, consume
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.leases import NatsLeaseStore
from polybus.common.runtime import ServiceRuntime, ServiceStopped
from polybus.executor.config import ExecutorSettings
from polybus.executor.engine import Executor
from polybus.executor.fencing import LeaseFence
from polybus.executor.halt import HaltFollower, trip
from polybus.executor.heartbeat import Heartbeat
from polybus.executor.intake import INTENTS_BUCKET, KvIntentRegistry
from polybus.executor.live.adapter import PolymarketLiveVenue
from polybus.executor.live.limits import SystemClock
from polybus.executor.paper.venue import PaperVenue
from polybus.executor.publishing import ExecutionPublisher
from polybus.executor.reconcile import Reconciler
from polybus.executor.risk import RiskGate
from polybus.executor.state import rebuild_state
from polybus.executor.venue import Venue

_log = structlog.get_logger("polybus.executor")

INTENT_STREAM = "INTENT"
DURABLE = "executor"
"""The executor's durable consumer on INTENT (config/streams.toml)."""
LOSS_STOP_INTERVAL_S = 5.0
RECONCILE_INTERVAL_S = 30.0
"""Live: how often the venue's open orders and trades are read even without a gap."""
START_RECONCILE_RETRY_S = 1.0
BOOK_WARM_START_TIMEOUT_S = 15.0
PAPER_EXPIRY_POLL_S = 1.0
"""Paper: the longest a GTD order may outlive its expiry (sooner when one is due sooner)."""


class LiveRefused(Exception):
    """Live trading was asked for without all of its switches (exit code 2)."""


def live_problem(config: Config, *, live: bool) -> str:
    """Why the executor must not start as configured, or ``""``.

    Live trading needs three things together: ``mode = "live"`` in ``[executor]``, the
    ``--live`` flag, and the secrets file with the Polymarket private key. Paper trading needs
    none of them, and a live config or flag alone is refused rather than quietly run on paper.
    """
    settings = config.section("executor", ExecutorSettings)
    where = f"config file {config.path}"
    if settings.mode == "live" and not live:
        return f'{where}: [executor] mode = "live" also needs the --live flag'
    if live and settings.mode != "live":
        return f'--live given, but {where} has [executor] mode = "{settings.mode}", not "live"'
    if settings.mode != "live":
        return ""
    if not config.deployment.secrets_file:
        return f"{where}: live trading needs secrets_file naming the Polymarket private key"
    if not config.secrets.polymarket.private_key:
        return (
            f"secrets file {config.resolve(config.deployment.secrets_file)}: "
            "live trading needs [polymarket] private_key"
        )
    return ""


def check_live(config: Config, *, live: bool) -> str:
    """The ``check_live`` hook ``polybus up`` calls before it starts anything."""
    return live_problem(config, live=live)


async def _live_venue(config: Config, settings: ExecutorSettings) -> PolymarketLiveVenue:
    from polybus.executor.live.client import LiveAccount, environment_for
    from polybus.executor.live.user_channel import UserChannelSettings

    secrets = config.secrets.polymarket
    assert secrets.private_key is not None  # live_problem checked it
    account = LiveAccount(
        private_key=secrets.private_key,
        wallet=settings.wallet or Account.from_key(secrets.private_key.reveal()).address,
        signature_type=settings.signature_type,
        api_key=secrets.api_key,
        api_secret=secrets.api_secret,
        api_passphrase=secrets.api_passphrase,
    )
    return await PolymarketLiveVenue.connect(
        account,
        environment_for(settings.clob_url, user_ws_url=settings.user_ws_url),
        user_channel=UserChannelSettings(url=settings.user_ws_url),
    )


async def run(config: Config, *, live: bool = False) -> None:
    """Run the executor until SIGTERM/SIGINT: intents from INTENT to the venue, every decision
    and every venue report as events on EXEC. Raises :class:`LiveRefused` before anything
    starts when the live switches disagree."""
    problem = live_problem(config, live=live)
    if problem:
        raise LiveRefused(problem)
    settings = config.section("executor", ExecutorSettings)
    # Outside the runtime: the live venue's HTTP client closes after the tasks using it stopped.
    async with (
        contextlib.AsyncExitStack() as closing,
        ServiceRuntime("executor", config, settings) as runtime,
    ):
        bus = runtime.bus
        if not isinstance(bus, NatsBus):
            raise TypeError("the executor needs a NATS bus (KV buckets, ordered consumers)")
        executor, paper = await _start(runtime, bus, config, settings, closing)
        halts = HaltFollower(bus.js, runtime.namespace, executor.on_halt)
        await runtime.until_stopped(halts.load())
        heartbeat = None if paper is not None else _heartbeat(runtime, executor, settings)
        _add_health_checks(runtime, executor.venue, halts, heartbeat)
        _spawn_tasks(runtime, bus, executor, halts, live=paper is None)
        if paper is not None:
            runtime.spawn(_expire_paper_orders(runtime, paper), name="paper_expiry")
        _log.info("executor.running", mode=settings.mode, orders=len(executor.ledger))
        await runtime.wait()


async def _start(
    runtime: ServiceRuntime,
    bus: NatsBus,
    config: Config,
    settings: ExecutorSettings,
    closing: contextlib.AsyncExitStack,
) -> tuple[Executor, PaperVenue | None]:
    """The venue, the book view and the state rebuilt and squared with the venue."""
    namespace = runtime.namespace
    view = BookView()
    paper: PaperVenue | None = None
    if settings.mode == "live":
        live = await runtime.until_stopped(_live_venue(config, settings))
        closing.push_async_callback(live.aclose)
        venue: Venue = live
    else:
        paper = PaperVenue(view, time.time_ns)
        venue = paper
    feed = BookFeed(
        bus,
        view,
        on_book=paper.on_book if paper is not None else None,
        on_trade=paper.on_trade if paper is not None else None,
    )
    runtime.spawn(feed.run(), name="book_feed")
    with contextlib.suppress(TimeoutError):
        await runtime.until_stopped(asyncio.wait_for(feed.ready.wait(), BOOK_WARM_START_TIMEOUT_S))
    intents = await runtime.until_stopped(bus.js.key_value(namespace.bucket(INTENTS_BUCKET)))

    async def trip_halt(strategy_id: str, reason: str) -> None:
        await trip(bus.js, namespace, strategy_id, reason)

    leases = await runtime.until_stopped(NatsLeaseStore.open(bus.js, namespace))
    fence = LeaseFence(leases)
    runtime.spawn(fence.follow(leases.kv), name="lease_fence")
    executor = Executor(
        venue=venue,
        view=view,
        registry=KvIntentRegistry(intents),
        gate=RiskGate(settings.risk),
        publisher=ExecutionPublisher(bus, stop=runtime.stop_event),
        trip_halt=trip_halt,
        fence=fence,
    )
    await runtime.until_stopped(
        rebuild_state(bus.js, namespace, executor.ledger, executor.positions)
    )
    executor.reconciler = Reconciler(
        venue,
        executor.ledger,
        executor.positions,
        settings,
        time.time_ns,
        fee_exponent=executor.fee_exponent,
    )
    if paper is not None:
        await executor.cancel_restored_paper_orders()
        return executor, paper
    # No intent before the venue's open orders and fills are ours again (DESIGN §10).
    while True:
        async with executor.lock:
            if await runtime.until_stopped(executor.reconcile("start")):
                return executor, paper
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stop_event.wait(), START_RECONCILE_RETRY_S)
        if runtime.stop_event.is_set():
            raise ServiceStopped("executor")


def _spawn_tasks(
    runtime: ServiceRuntime, bus: NatsBus, executor: Executor, halts: HaltFollower, *, live: bool
) -> None:
    async def follow_reports() -> None:
        async for report in executor.venue.reports():
            await executor.handle_report(report)

    async def reconcile_periodically() -> None:
        while not runtime.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), RECONCILE_INTERVAL_S)
            async with executor.lock:
                await executor.reconcile("periodic")

    async def take(delivery: Delivery) -> None:
        await executor.handle_intent(delivery.data)

    async def loss_stops() -> None:
        while not runtime.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), LOSS_STOP_INTERVAL_S)
            await executor.check_loss_stops()

    runtime.spawn(follow_reports(), name="reports")
    runtime.spawn(halts.run(), name="halts")
    runtime.spawn(loss_stops(), name="loss_stops")
    if live:
        runtime.spawn(reconcile_periodically(), name="reconcile")
    runtime.spawn(
        consume(
            bus.pull_consumer(INTENT_STREAM, DURABLE),
            take,
            stop=runtime.stop_event,
            batch=64,
            fetch_timeout=0.5,
        ),
        name="intents",
    )


async def _expire_paper_orders(runtime: ServiceRuntime, paper: PaperVenue) -> None:
    """GTD paper orders end at their time also in a market that does not move (every book or
    trade event expires the due ones as well); the reports go the usual way."""
    while not runtime.stop_event.is_set():
        wait_s = PAPER_EXPIRY_POLL_S
        if paper.next_expiry_ns is not None:
            wait_s = min(wait_s, max(0.0, (paper.next_expiry_ns - time.time_ns()) / 1e9))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stop_event.wait(), wait_s)
        paper.expire_due()


def _heartbeat(
    runtime: ServiceRuntime, executor: Executor, settings: ExecutorSettings
) -> Heartbeat:
    """The venue's dead-man switch, armed by the first resting order (or one still resting
    after a restart). Its callbacks must not block: they hand the work to a task."""
    work: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()

    async def restore(generation: int) -> None:
        while not await executor.heartbeat_restored(lambda: heartbeat.restored(generation)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), START_RECONCILE_RETRY_S)

    heartbeat = Heartbeat(
        executor.venue,
        settings.venue_heartbeat_interval_s,
        SystemClock(),
        on_lost=lambda reason: work.put_nowait(lambda: executor.heartbeat_lost(reason)),
        on_restored=lambda generation: work.put_nowait(lambda: restore(generation)),
    )

    async def run_work() -> None:
        while True:
            await (await work.get())()

    executor.on_order_live = heartbeat.arm
    if any(executor.ledger.open_orders()):
        heartbeat.arm()
    runtime.spawn(heartbeat.run(), name="venue_heartbeat")
    runtime.spawn(run_work(), name="heartbeat_work")
    return heartbeat


def _add_health_checks(
    runtime: ServiceRuntime, venue: Venue, halts: HaltFollower, heartbeat: Heartbeat | None
) -> None:
    def venue_health() -> tuple[bool, str]:
        restriction = venue.restriction
        if restriction is None:
            return True, ""
        return False, f"venue restricted: {restriction.mode}"

    def halt_health() -> tuple[bool, str]:
        halted = halts.halted()
        if not halted:
            return True, ""
        scopes = ", ".join(
            f"{state.strategy_id or 'all'} ({state.reason or 'no reason'})" for state in halted
        )
        return False, f"halted: {scopes}"

    def heartbeat_health() -> tuple[bool, str]:
        if heartbeat is None or heartbeat.healthy:
            return True, ""
        return False, "venue heartbeat lost: new orders refused until reconciled"

    runtime.add_health_check("venue", venue_health)
    runtime.add_health_check("heartbeat", heartbeat_health)
    runtime.add_health_check("halt", halt_health)
