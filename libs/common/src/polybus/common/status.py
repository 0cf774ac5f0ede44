"""``polybus status``: is the system up, and how far behind is it?

Reports whether NATS and PostgreSQL answer (URLs with passwords redacted), every service
instance's last heartbeat from the ``HEALTH`` KV bucket, and each stream's message count with
its consumers' lag (pending + unacknowledged). An instance that is not healthy carries the
``reason``: its failing health checks, or how long it has been silent.

Beside that, what an operator asks next (all additive fields): ``metrics``, figures read from
every live instance's ``/metrics`` (timings p50/p99, reconnects, resyncs, rate limits; see
:mod:`polybus.common.operator.scrape`), and ``trading``, read from the streams and buckets
(books by state, halts, lease holders, positions and PnL, recent rejects and risk events; see
:mod:`polybus.common.operator.activity`). ``resync_ratio`` is the ingests' resyncs per
followed asset since they started.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import msgspec
from nats.js.errors import BucketNotFoundError, NoKeysError

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config, redact_url
from polybus.common.events import health_decoder
from polybus.common.operator.activity import Trading, collect_trading
from polybus.common.operator.scrape import Scraped, metrics_url, scrape
from polybus.common.operator.tail import load_market_names
from polybus.common.operator.tail_format import MarketNames
from polybus.common.runtime import HEALTH_BUCKET

RECENT_WINDOW_S = 3600.0
"""The window of the recent rejects and risk events ``status`` counts."""

STALE_AFTER_S = 15.0
"""A heartbeat older than this (3 missed beats at the default 5 s) means the instance is down."""


class ServerStatus(msgspec.Struct, kw_only=True):
    url: str
    reachable: bool
    error: str = ""


class ServiceStatus(msgspec.Struct, kw_only=True):
    service: str
    instance: str
    status: str
    healthy: bool
    last_heartbeat_age_s: float
    detail: str = ""
    reason: str = ""
    """Why the instance is not healthy (empty when it is, or when it stopped cleanly)."""
    pid: int = 0
    version: str = ""


class ConsumerStatus(msgspec.Struct, kw_only=True):
    name: str
    pending: int
    ack_pending: int
    redelivered: int

    @property
    def lag(self) -> int:
        return self.pending + self.ack_pending


class StreamStatus(msgspec.Struct, kw_only=True):
    name: str
    messages: int
    bytes: int
    consumers: list[ConsumerStatus]


class Status(msgspec.Struct, kw_only=True):
    healthy: bool
    nats: ServerStatus
    postgres: ServerStatus
    services: list[ServiceStatus]
    streams: list[StreamStatus]
    metrics: Scraped = msgspec.field(default_factory=Scraped)
    trading: Trading = msgspec.field(default_factory=Trading)
    resync_ratio: float = 0.0


async def _postgres(config: Config, timeout_s: float) -> ServerStatus:
    url = config.database_url()
    password = config.secrets.database.password
    try:
        connection = await asyncpg.connect(
            url, password=password.reveal() if password else None, timeout=timeout_s
        )
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        # asyncpg messages name host and user, never the password.
        return ServerStatus(url=redact_url(url), reachable=False, error=str(error) or repr(error))
    return ServerStatus(url=redact_url(url), reachable=True)


async def _services(bus: NatsBus) -> list[ServiceStatus]:
    try:
        bucket = await bus.js.key_value(bus.namespace.bucket(HEALTH_BUCKET))
        keys = await bucket.keys()
    except (BucketNotFoundError, NoKeysError):
        return []
    now = time.time_ns()
    services = []
    for key in sorted(keys):
        entry = await bucket.get(key)
        if entry.value is None:
            continue
        health = health_decoder.decode(entry.value)
        age = (now - health.ts_event) / 1e9
        if health.status == "stopping":
            status = "stopped"
        else:
            status = health.status if age <= STALE_AFTER_S else "down"
        healthy = health.status == "healthy" and age <= STALE_AFTER_S
        services.append(
            ServiceStatus(
                service=health.service,
                instance=health.instance,
                status=status,
                healthy=healthy,
                last_heartbeat_age_s=round(age, 3),
                detail=health.detail,
                reason=""
                if healthy or status == "stopped"
                else _reason(status, age, health.detail),
                pid=health.pid,
                version=health.version,
            )
        )
    return services


def _reason(status: str, age_s: float, detail: str) -> str:
    if status == "down":
        return f"no heartbeat for {age_s:.0f}s (an instance is down after {STALE_AFTER_S:g}s)"
    # The runtime's detail is "metrics URL; <check> ok|failing[: why]; ...": keep the failures.
    failing = [part for part in detail.split("; ") if " failing" in part]
    return "; ".join(failing) or detail or f"reported {status}"


async def _streams(bus: NatsBus) -> list[StreamStatus]:
    prefix = bus.namespace.stream_prefix
    streams = []
    for info in await bus.js.streams_info():
        name = info.config.name or ""
        if not name.startswith(prefix) or name.startswith("KV_"):
            continue
        consumers = [
            ConsumerStatus(
                name=consumer.name,
                pending=consumer.num_pending or 0,
                ack_pending=consumer.num_ack_pending or 0,
                redelivered=consumer.num_redelivered or 0,
            )
            for consumer in await bus.js.consumers_info(name)
        ]
        streams.append(
            StreamStatus(
                name=name,
                messages=info.state.messages,
                bytes=info.state.bytes,
                consumers=sorted(consumers, key=lambda c: c.name),
            )
        )
    return sorted(streams, key=lambda s: s.name)


async def collect_status(config: Config, *, connect_timeout_s: float = 5.0) -> Status:
    """Ask NATS and PostgreSQL (at the same time), each for at most ``connect_timeout_s``."""
    postgres_task = asyncio.ensure_future(_postgres(config, connect_timeout_s))
    url = config.nats_url()
    services: list[ServiceStatus] = []
    streams: list[StreamStatus] = []
    trading = Trading()
    scraped = Scraped()
    try:
        bus = await asyncio.wait_for(
            NatsBus.connect(
                url,
                name="polybus-status",
                namespace=config.namespace(),
                secrets=config.secrets,
                reconnect=False,
                connect_timeout=min(2.0, connect_timeout_s),
            ),
            timeout=connect_timeout_s,
        )
    except Exception as error:
        reason = str(error) or type(error).__name__
        nats_status = ServerStatus(url=redact_url(url), reachable=False, error=reason)
    else:
        try:
            nats_status = ServerStatus(url=redact_url(url), reachable=True)
            services = await _services(bus)
            streams = await _streams(bus)
            scrape_task = asyncio.ensure_future(
                scrape(
                    [
                        (service.service, url)
                        for service in services
                        if service.status not in ("stopped", "down")
                        and (url := metrics_url(service.detail))
                    ]
                )
            )
            names = MarketNames()
            await load_market_names(bus, names)
            trading = await collect_trading(bus, names, window_s=RECENT_WINDOW_S)
            scraped = await scrape_task
        finally:
            await bus.drain()
    postgres_status = await postgres_task
    healthy = (
        nats_status.reachable
        and postgres_status.reachable
        # An instance that stopped cleanly said so; that is not a failure of the running system.
        and all(service.healthy for service in services if service.status != "stopped")
    )
    return Status(
        healthy=healthy,
        nats=nats_status,
        postgres=postgres_status,
        services=services,
        streams=streams,
        metrics=scraped,
        trading=trading,
        resync_ratio=round(scraped.resyncs / max(1, sum(scraped.assets_by_state.values())), 4),
    )
