"""The service runtime (STYLE §5): the lifecycle every polybus service shares.

A service's ``run`` is::

    async def run(config: Config) -> None:
        settings = config.section("ingest", IngestSettings)
        async with ServiceRuntime("ingest", config, settings) as runtime:
            runtime.spawn(read_sockets(runtime), name="sockets")
            await runtime.wait()

Entering the runtime binds the service and instance to every log line, serves ``/healthz`` and
``/metrics``, connects to NATS (named, unlimited reconnects), registers a NATS micro service
(``nats micro ls`` lists it) and starts a heartbeat into the ``HEALTH`` KV bucket.
SIGTERM/SIGINT set the stop event; the handlers are installed before anything that can wait, and
waiting for a server (:meth:`ServiceRuntime.until_stopped`) gives up when the stop event is set,
so a service stops within 2 s at any moment, also while NATS or PostgreSQL is unreachable. A stop
before the service has started raises :class:`ServiceStopped` out of ``async with`` (the CLI exits
0). Leaving it cancels every owned task, stops the micro service and drains the NATS connection,
each step bounded in time. A task that dies with an exception stops the service (fail fast; the
supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import msgspec
import nats.micro
import structlog
from aiohttp import web
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from nats.micro.service import Service as MicroService
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from polybus.common import __version__, metrics
from polybus.common.bus import Bus
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config, ServiceSettings
from polybus.common.events import HealthStatus, ServiceHealth, encode
from polybus.common.signals import route_stop_signals
from polybus.common.tasks import cancel_and_wait

HEALTH_BUCKET = "HEALTH"
"""KV bucket with every instance's latest :class:`ServiceHealth`, key ``<service>.<instance>``."""

HealthCheck = Callable[[], tuple[bool, str]]
T = TypeVar("T")
S = TypeVar("S", bound=ServiceSettings)

SHUTDOWN_STEP_TIMEOUT_S = 0.5
"""Each shutdown step (cancelled tasks, last heartbeat, micro stop, NATS drain) gets this long: a
server that is down must not hold the process past its 2 s stop budget."""


class ServiceStopped(Exception):
    """The stop event was set while the service was still waiting (connecting, a database):
    a clean stop, exit code 0."""


def default_instance() -> str:
    """The host name as a NATS-safe token (compose replicas differ by container host name)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "local"


def replica_settings(settings: S, replica: int, *, metrics_port: int) -> S:
    """Process ``replica``'s copy of a replicated service's settings (``polybus up`` starts
    ``--replica 0..N-1``): its own instance name, ``<instance or host>-<k>`` past the first, so
    replicas on one host keep their own HEALTH key and NATS name; and its ``metrics_port``."""
    instance = settings.instance or default_instance()
    return msgspec.structs.replace(
        settings,
        instance=f"{instance}-{replica}" if replica else instance,
        metrics_port=metrics_port,
    )


def now_ns() -> int:
    return time.time_ns()


class ServiceRuntime:
    """Owns a service's connection, tasks, HTTP endpoints, heartbeat and shutdown."""

    def __init__(
        self,
        service: str,
        config: Config,
        settings: ServiceSettings,
        *,
        bus: Bus | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.service = service
        self.config = config
        self.settings = settings
        self.instance = settings.instance or default_instance()
        self.namespace = config.namespace()
        self.log = structlog.get_logger(f"polybus.{service}")
        self.stop_event = asyncio.Event()
        self.metrics_url = ""
        self._bus = bus
        self._owns_bus = bus is None
        self._install_signal_handlers = install_signal_handlers
        self._restore_signals: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._checks: dict[str, HealthCheck] = {}
        self._http: web.AppRunner | None = None
        self._micro: MicroService | None = None
        self._health_bucket: KeyValue | None = None
        self._started_ns = now_ns()
        self._stopping = False

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError("the runtime is not started")
        return self._bus

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> ServiceRuntime:
        # The process entry point configured logging; we only name who is speaking.
        structlog.contextvars.bind_contextvars(service=self.service, instance=self.instance)
        # First, so a signal during any wait below (NATS unreachable, ...) stops the service.
        if self._install_signal_handlers:
            self._restore_signals = route_stop_signals(
                asyncio.get_running_loop(), self.request_stop
            )
        try:
            await self._start()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def _start(self) -> None:
        await self._start_http()
        if self._bus is None:
            bus_config = self.config.deployment.bus
            connected = await self.until_stopped(
                NatsBus.connect(
                    self.config.nats_url(),
                    name=f"polybus-{self.service}-{self.instance}",
                    namespace=self.namespace,
                    secrets=self.config.secrets,
                    ping_interval=bus_config.ping_interval_s,
                    connect_timeout=bus_config.connect_timeout_s,
                )
            )
            self._bus = connected
        if isinstance(self._bus, NatsBus):
            self._micro = await self.until_stopped(
                nats.micro.add_service(
                    self._bus.nc,
                    name=f"polybus-{self.service}",
                    version=__version__,
                    description=f"polybus {self.service} service",
                    metadata={"instance": self.instance, "metrics": self.metrics_url},
                )
            )
            self.spawn(self._heartbeat(self._bus), name="heartbeat")
        metrics.SERVICE_UP.labels(self.service).set(1)
        self.log.info("service.started", metrics_url=self.metrics_url, version=__version__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stopping = True
        self.stop_event.set()
        await cancel_and_wait(list(self._tasks), SHUTDOWN_STEP_TIMEOUT_S)
        bus = self._bus
        # A last heartbeat only over a live connection: while reconnecting it would wait for
        # its request timeout.
        if isinstance(bus, NatsBus) and bus.nc.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._put_health(bus, "stopping", "shutting down"), SHUTDOWN_STEP_TIMEOUT_S
                )
        if self._micro is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._micro.stop(), SHUTDOWN_STEP_TIMEOUT_S)
        if isinstance(bus, NatsBus) and self._owns_bus:
            with contextlib.suppress(Exception):
                await bus.drain(timeout=SHUTDOWN_STEP_TIMEOUT_S)
        if self._http is not None:
            await self._http.cleanup()
        metrics.SERVICE_UP.labels(self.service).set(0)
        if self._restore_signals is not None:
            self._restore_signals()
            self._restore_signals = None
        self.log.info("service.stopped")

    def request_stop(self, reason: str = "requested") -> None:
        if not self.stop_event.is_set():
            self.log.info("service.stopping", reason=reason)
        self.stop_event.set()

    async def wait(self) -> None:
        """Wait until a signal, :meth:`request_stop` or a failed task stops the service."""
        await self.stop_event.wait()

    async def until_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the service is asked to stop first: then cancel it and
        raise :class:`ServiceStopped`. For every wait on something outside the process."""
        work = asyncio.ensure_future(awaitable)
        stopped = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            await cancel_and_wait({work}, SHUTDOWN_STEP_TIMEOUT_S)
        finished = work.done() and not work.cancelled()
        if finished and work.exception() is None:
            return work.result()
        if self.stop_event.is_set() or not finished:
            raise ServiceStopped(self.service)
        return work.result()  # raises the work's own error

    # -- tasks -------------------------------------------------------------------------------
    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start a task the runtime owns: cancelled on shutdown; its failure stops the service."""
        task = asyncio.get_running_loop().create_task(coroutine, name=f"{self.service}.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._stopping:
            return
        error = task.exception()
        if error is not None:
            metrics.SERVICE_TASK_FAILURES.labels(self.service).inc()
            # Stop first: nothing in the logging below may keep a broken service running.
            self.request_stop(f"task {task.get_name()} failed")
            try:
                self.log.error(
                    "service.task_failed", task=task.get_name(), exc_info=(type(error), error, None)
                )
            except TypeError:
                # rich's traceback renderer hashes the exceptions of a group, and some are not
                # hashable (nats-py's APIError defines __eq__ only).
                self.log.error(
                    "service.task_failed",
                    task=task.get_name(),
                    error=repr(error),
                    traceback="".join(traceback.format_exception(error)),
                )

    # -- health ------------------------------------------------------------------------------
    def add_health_check(self, name: str, check: HealthCheck) -> None:
        """``check()`` returns (healthy, detail); ``/healthz`` is 503 while any is unhealthy."""
        self._checks[name] = check

    def health(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        healthy = True
        for name, check in self._checks.items():
            try:
                ok, detail = check()
            except Exception as error:
                ok, detail = False, f"check failed: {error!r}"
            healthy &= ok
            results[name] = ("ok" if ok else "failing") + (f": {detail}" if detail else "")
        if isinstance(self._bus, NatsBus) and not self._bus.nc.is_connected:
            healthy = False
            results["nats"] = "failing: disconnected"
        return healthy, results

    async def _start_http(self) -> None:
        async def healthz(request: web.Request) -> web.Response:
            healthy, checks = self.health()
            body = {"service": self.service, "instance": self.instance, "healthy": healthy}
            body["checks"] = checks
            return web.json_response(body, status=200 if healthy else 503)

        async def metrics_endpoint(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics_endpoint)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.metrics_host, self.settings.metrics_port)
        await site.start()
        self._http = runner
        port = runner.addresses[0][1] if runner.addresses else self.settings.metrics_port
        self.metrics_url = f"http://{self.settings.metrics_host}:{port}"

    async def _put_health(self, bus: NatsBus, status: HealthStatus, detail: str) -> None:
        if self._health_bucket is None:
            self._health_bucket = await bus.js.key_value(self.namespace.bucket(HEALTH_BUCKET))
        now = now_ns()
        health = ServiceHealth(
            event_id=f"health:{self.service}:{self.instance}:{now}",
            ts_event=now,
            ts_init=now,
            service=self.service,
            instance=self.instance,
            status=status,
            detail=detail,
            version=__version__,
            pid=os.getpid(),
            started_ns=self._started_ns,
        )
        await self._health_bucket.put(f"{self.service}.{self.instance}", encode(health))

    async def _heartbeat(self, bus: NatsBus) -> None:
        warned = False
        while not self.stop_event.is_set():
            healthy, checks = self.health()
            detail = "; ".join(f"{name} {state}" for name, state in checks.items())
            detail = f"metrics {self.metrics_url}" + (f"; {detail}" if detail else "")
            try:
                await self._put_health(bus, "healthy" if healthy else "degraded", detail)
                warned = False
            except BucketNotFoundError:
                if not warned:
                    self.log.warning("heartbeat.no_bucket", hint="run: polybus streams apply")
                    warned = True
            except Exception as error:
                self.log.warning("heartbeat.failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), self.settings.heartbeat_interval_s)
