"""The strategy service: ``polybus strategy --name NAME [--config FILE]``, one replica.

Start-up, in this order, before the first intent:

1. the strategy's EXEC history (``exec.<strategy_id>.>`` from the start of the stream, one
   ordered consumer that then keeps following live): working orders, positions, and the intent
   ids already used (:class:`~polybus.strategy.runtime.IntentIds`);
2. the halt switches from the ``HALT`` bucket;
3. the partitions this replica owns (:mod:`polybus.strategy.ownership`);
4. the books of those partitions (:class:`~polybus.common.book_view.BookFeed`, warm start).

Then the owned tasks: the book feed, the timer, the halt watch, the ownership and the intent
publisher. Intents go out one at a time, in the order the runtime made them, each with a
JetStream ack and ``Nats-Msg-Id`` = ``intent_id``; a publish that fails (NATS restarting, no
ack in time) is retried with the same id until the stream has it, so it is never lost, and the
stream's duplicate window (and the executor's intent claims) make it count once. The
strategy's reports (``RiskEvent``) go the same way, in the same order, to
``exec.<strategy_id>.risk.<condition_id>`` (the EXEC stream), ``Nats-Msg-Id`` = ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import NotFoundError

from polybus.common.book_view import AssetState, BookFeed, BookView
from polybus.common.bus import Bus, PublishError
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.events import DecodeError, OrderIntent, execution_decoder
from polybus.common.halt import HaltFollower, HaltState
from polybus.common.leases import NatsLeaseStore, new_member_id, strategy_group
from polybus.common.runtime import ServiceRuntime, ServiceStopped, replica_settings
from polybus.common.tasks import cancel_and_wait
from polybus.strategy.api import Strategy
from polybus.strategy.config import StrategyServiceSettings, configured, runtime_keys
from polybus.strategy.ownership import (
    LeaseOwnership,
    PartitionOwnership,
    SingleReplicaOwnership,
)
from polybus.strategy.portfolio import LivePortfolio
from polybus.strategy.registry import strategies
from polybus.strategy.runtime import IntentIds, Outgoing, StrategyRuntime

_log = structlog.get_logger("polybus.strategy")

EXEC_STREAM = "EXEC"
NO_MARKET = "_"
HAND_OVER_TIMEOUT_S = 0.5
"""Each step of a clean stop's hand-over (stop renewing; cancels stored and leases given up):
the whole stop must stay inside 2 s."""
"""The subject token of a report about no one market (the executor's convention too)."""


class StrategyNotFound(Exception):
    """``--name`` names no installed or no configured strategy (exit code 2)."""


def strategy_class(config: Config, name: str) -> tuple[type[Strategy], msgspec.Struct]:
    """The class of strategy ``name`` and its decoded ``[strategy.<name>]`` table."""
    classes = strategies()
    if name not in classes:
        known = ", ".join(classes) or "none"
        raise StrategyNotFound(f"--name {name}: no such strategy installed (installed: {known})")
    settings = config.section("strategy", StrategyServiceSettings)
    table = configured(settings).get(name)
    if table is None:
        raise StrategyNotFound(f"--name {name}: config file {config.path} has no [strategy.{name}]")
    return classes[name], table


class IntentPublisher:
    """Publishes intents (and reports) in order, each until its stream acknowledged it."""

    def __init__(self, bus: Bus, *, retry_interval_s: float) -> None:
        self._bus = bus
        self._subjects = bus.namespace.subjects
        self._retry_interval_s = retry_interval_s
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._submitted = 0
        self._done = 0
        self._progress = asyncio.Event()
        self.published = 0
        self.retries = 0

    def submit(self, intents: Iterable[Outgoing]) -> None:
        for intent in intents:
            self._queue.put_nowait(intent)
            self._submitted += 1

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def flush(self) -> None:
        """Wait until every intent submitted so far is stored by the stream (not the ones
        submitted meanwhile: a lost partition's cancels must not wait for a busy strategy)."""
        target = self._submitted
        while self._done < target:
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        while True:
            intent = await self._queue.get()
            try:
                await self._publish(intent)
            finally:
                self._queue.task_done()
                self._done += 1
                self._progress.set()

    async def _publish(self, outgoing: Outgoing) -> None:
        if isinstance(outgoing, OrderIntent):
            subject = self._subjects.intent(outgoing.strategy_id, outgoing.condition_id)
        else:
            market = outgoing.condition_id or NO_MARKET
            subject = self._subjects.execution(outgoing.strategy_id, "risk", market)
        while True:
            try:
                await self._bus.publish_persistent(subject, outgoing, msg_id=outgoing.event_id)
            except (PublishError, NatsError) as error:
                # Stored or not, the same id again: the stream keeps one copy either way.
                self.retries += 1
                _log.warning(
                    "intent.publish_retrying", event_id=outgoing.event_id, error=repr(error)
                )
                await asyncio.sleep(self._retry_interval_s)
            else:
                self.published += 1
                return


async def run(
    config: Config,
    *,
    name: str,
    replica: int = 0,
    strategy: type[Strategy] | None = None,
    ownership: PartitionOwnership | None = None,
) -> None:
    """Run one replica of strategy ``name`` until SIGTERM/SIGINT (see the module doc).

    ``strategy`` runs that class instead of the registered one (tests, notebooks);
    ``ownership`` decides the partitions (default: this replica owns them all)."""
    settings = config.section("strategy", StrategyServiceSettings)
    if strategy is None:
        strategy, table = strategy_class(config, name)
    else:
        table = configured(settings).get(name) or strategy.settings_type()
    keys = runtime_keys(table) if hasattr(table, "replicas") else None
    port = keys.metrics_port if keys is not None else 0
    # Replica k serves /metrics on the strategy's port + k (0 stays 0: a free port each).
    service_settings = replica_settings(
        settings, replica, metrics_port=port + replica if port else 0
    )
    timer_interval_s = (keys.timer_interval_s if keys else None) or settings.timer_interval_s
    async with ServiceRuntime(f"strategy-{name}", config, service_settings) as service:
        bus = service.bus
        if not isinstance(bus, NatsBus):
            raise TypeError("the strategy service needs a NATS bus (KV buckets, EXEC rebuild)")
        view = BookView()
        portfolio = LivePortfolio(name)
        replica_token = service.instance.replace(".", "-")
        core = StrategyRuntime(
            strategy(table, portfolio),
            portfolio,
            view,
            IntentIds(name, replica_token, time.time_ns()),
            partitions=config.deployment.bus.partitions,
            clock=time.time_ns,
        )
        publisher = IntentPublisher(bus, retry_interval_s=settings.publish_retry_interval_s)
        service.spawn(publisher.run(), name="publisher")
        await service.until_stopped(_follow_execution(bus, core, publisher, settings))

        async def on_halt(state: HaltState) -> None:
            publisher.submit(core.set_halt(state.strategy_id, state.halted))

        halts = HaltFollower(bus.js, service.namespace, on_halt)
        await service.until_stopped(halts.load())
        owner = ownership
        if owner is None:
            owner = await service.until_stopped(
                _ownership(bus, name, replica_token, config.deployment.bus.partitions, settings)
            )
        core.start()
        keeping = await _own_partitions(service, bus, core, publisher, owner, settings)
        service.spawn(halts.run(), name="halts")
        service.spawn(_timer(service, core, publisher, timer_interval_s), name="timer")
        service.add_health_check("halt", lambda: (not core.halted, "halted" if core.halted else ""))
        _log.info(
            "strategy.running",
            strategy_id=name,
            replica=replica_token,
            working=len(portfolio.working()),
            partitions=len(core.held()),
        )
        try:
            await service.wait()
        finally:  # also when cancelled
            await _hand_over(owner, keeping)


async def _ownership(
    bus: NatsBus, name: str, member: str, partitions: int, settings: StrategyServiceSettings
) -> PartitionOwnership:
    if not settings.partition_leases:
        return SingleReplicaOwnership(partitions)
    store = await NatsLeaseStore.open(bus.js, bus.namespace)
    return LeaseOwnership(
        store, group=strategy_group(name), member=new_member_id(member), partitions=partitions
    )


async def _follow_execution(
    bus: NatsBus,
    core: StrategyRuntime,
    publisher: IntentPublisher,
    settings: StrategyServiceSettings,
) -> None:
    """Rebuild from the strategy's EXEC history, then keep following it live (one consumer,
    so nothing falls between the two). Returns once the history is folded in."""
    namespace = bus.namespace
    stream = namespace.stream(EXEC_STREAM)
    subject = namespace.subjects.execution_all(core.strategy_id)
    try:
        last = (await bus.js.get_last_msg(stream, subject)).seq or 0
    except NotFoundError:
        last = 0  # no history yet (or no stream: the subscription below says so)
    caught_up = asyncio.Event()
    if last == 0:
        caught_up.set()
    progress = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        try:
            event = execution_decoder.decode(msg.data)
        except DecodeError:
            _log.warning("strategy.exec_undecodable", subject=msg.subject)
            event = None
        if event is not None and getattr(event, "strategy_id", "") == core.strategy_id:
            if caught_up.is_set():
                publisher.submit(core.on_execution(event))
            else:
                core.restore(event)
        progress.set()
        if msg.metadata.sequence.stream >= last:
            caught_up.set()

    await bus.js.subscribe(
        subject,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    # Unsubscribed when the connection drains at shutdown.
    while not caught_up.is_set():
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), settings.rebuild_idle_timeout_s)
        except TimeoutError:
            raise RuntimeError(
                f"EXEC rebuild of {core.strategy_id} stalled before stream sequence {last}"
            ) from None
    _log.info(
        "strategy.rebuilt",
        strategy_id=core.strategy_id,
        working=len(core.portfolio.working()),
        positions=len(core.portfolio.positions()),
        incarnation=core.ids.incarnation,
    )


async def _own_partitions(
    service: ServiceRuntime,
    bus: NatsBus,
    core: StrategyRuntime,
    publisher: IntentPublisher,
    ownership: PartitionOwnership,
    settings: StrategyServiceSettings,
) -> list[asyncio.Task[None]]:
    """Follow the partitions this replica holds, one book feed per partition: one acquired is
    warm-started alone, one lost stops alone. (One feed of everything held, restarted on every
    change, warm-started 1 + 2 + ... + 8 partitions' books for 8 taken one after another, and
    kept the event loop too busy to renew the leases.) Returns the tasks that follow the books
    and keep the ownership."""
    changed = asyncio.Event()

    async def on_book(view: BookView, asset_id: str) -> None:
        publisher.submit(core.on_book(asset_id))

    async def on_state(view: BookView, asset_id: str, state: AssetState) -> None:
        if state is not AssetState.LIVE:
            publisher.submit(core.on_untradeable(asset_id))

    async def on_acquired(partition: int, revision: int) -> None:
        publisher.submit(core.on_partition_acquired(partition, revision))
        changed.set()

    async def on_lost(partition: int) -> None:
        # Awaited by the ownership before it releases the lease: the cancels are stored first.
        publisher.submit(core.on_partition_lost(partition))
        await publisher.flush()
        changed.set()

    def feed(partition: int) -> asyncio.Task[None]:
        books = BookFeed(
            bus,
            core.view,
            partitions=[partition],
            on_book=on_book,
            on_state=on_state,
            warm_start_timeout_s=settings.book_warm_start_timeout_s,
        )
        return asyncio.create_task(books.run(), name=f"strategy.book_feed.{partition}")

    await service.until_stopped(ownership.start(on_acquired, on_lost))
    return [
        service.spawn(_follow_books(core, changed, feed), name="books"),
        service.spawn(ownership.run(), name="ownership"),
    ]


async def _follow_books(
    core: StrategyRuntime, changed: asyncio.Event, feed: Callable[[int], asyncio.Task[None]]
) -> None:
    """Keep one ``feed(partition)`` task per partition held, started and stopped as
    ``changed`` says the partitions did."""
    feeds: dict[int, asyncio.Task[None]] = {}
    try:
        while True:
            changed.clear()
            held = set(core.held())
            for partition in sorted(feeds.keys() - held):
                await cancel_and_wait([feeds.pop(partition)], None)
            for partition in sorted(held - feeds.keys()):
                feeds[partition] = feed(partition)
            waiting = asyncio.create_task(changed.wait(), name="strategy.partitions_changed")
            try:
                done, _ = await asyncio.wait(
                    (waiting, *feeds.values()), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiting.cancel()
            for task in done - {waiting}:
                # A feed that ends by itself failed: raise it (the service stops on it) rather
                # than go on holding a partition whose books nobody follows.
                task.result()
                raise RuntimeError(f"{task.get_name()} stopped")
    finally:
        await cancel_and_wait(feeds.values(), None)


async def _hand_over(ownership: PartitionOwnership, tasks: list[asyncio.Task[None]]) -> None:
    """On a clean stop, before the runtime cancels the publisher: stop following books and
    renewing, cancel the working orders and give the partitions up, so the other replicas take
    them at once instead of after the TTL. Bounded: with NATS away the leases simply expire."""
    await cancel_and_wait(tasks, HAND_OVER_TIMEOUT_S)
    try:
        await asyncio.wait_for(ownership.release(), HAND_OVER_TIMEOUT_S)
    except Exception as error:  # the TTL hands them over instead
        _log.warning("strategy.hand_over_failed", error=repr(error))


async def _timer(
    service: ServiceRuntime, core: StrategyRuntime, publisher: IntentPublisher, interval_s: float
) -> None:
    while not service.stop_event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.stop_event.wait(), interval_s)
        if not service.stop_event.is_set():
            publisher.submit(core.on_timer(time.time_ns()))


__all__ = ["IntentPublisher", "ServiceStopped", "StrategyNotFound", "run", "strategy_class"]
