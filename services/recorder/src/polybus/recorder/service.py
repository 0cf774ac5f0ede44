"""The recorder service's wiring and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import structlog
from nats.js.errors import NotFoundError

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.runtime import ServiceRuntime, ServiceStopped
from polybus.common.streams import ConsumerDefinition, load_definitions
from polybus.recorder import metrics
from polybus.recorder.config import RecorderSettings
from polybus.recorder.migrations import MigrationError, migrate_database
from polybus.recorder.recorder import ConsumerLoop, build_loops
from polybus.recorder.store import PostgresStore, connect

_log = structlog.get_logger("polybus.recorder")


def recorder_consumers(config: Config, settings: RecorderSettings) -> list[ConsumerDefinition]:
    """The streams file's consumers that belong to the recorder (by durable name)."""
    definitions = load_definitions(config.resolve(config.deployment.bus.streams_file))
    return [c for c in definitions.consumer if c.durable == settings.durable]


async def _migrate_when_reachable(config: Config, runtime: ServiceRuntime) -> bool:
    """Migrate, retrying while the database is unreachable; False if stopped meanwhile."""
    delay = 0.5
    while not runtime.stop_event.is_set():
        try:
            # A connect to an unreachable host can take its whole timeout: stop meanwhile.
            await runtime.until_stopped(migrate_database(config))
            return True
        except ServiceStopped:
            return False
        except MigrationError as error:
            _log.error("recorder.schema_refused", error=str(error))
            raise
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError,
        ) as error:
            _log.warning("recorder.migrate_waiting", error=str(error), retry_in_s=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stop_event.wait(), delay)
        delay = min(delay * 2, 10.0)
    return False


async def _watch_lag(
    bus: NatsBus, loops: list[ConsumerLoop], interval: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        for loop in loops:
            try:
                info = await bus.js.consumer_info(loop.stream, loop.consumer.name)
            except Exception as error:
                _log.debug("recorder.lag_unknown", stream=loop.stream, error=repr(error))
                continue
            lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
            metrics.CONSUMER_LAG.labels(loop.label).set(lag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _run_loop(loop: ConsumerLoop) -> None:
    try:
        await loop.run()
    except NotFoundError:
        _log.error(
            "recorder.consumer_missing",
            stream=loop.stream,
            consumer=loop.consumer.name,
            hint="run: polybus streams apply",
        )
        raise


async def run(config: Config) -> None:
    """Run the recorder until SIGTERM/SIGINT: every recorder consumer of the streams file into
    PostgreSQL, acking only what is committed."""
    settings = config.section("recorder", RecorderSettings)
    consumers = recorder_consumers(config, settings)
    async with ServiceRuntime("recorder", config, settings) as runtime:
        if settings.migrate_on_start and not await _migrate_when_reachable(config, runtime):
            return
        loops = build_loops(
            runtime.bus,
            runtime.namespace,
            consumers,
            settings,
            runtime.stop_event,
            lambda: PostgresStore(lambda: connect(config), timeout=settings.write_timeout_s),
        )

        def database_health() -> tuple[bool, str]:
            down = [
                f"{loop.label} for {time.monotonic() - loop.unavailable_since:.0f}s"
                for loop in loops
                if loop.unavailable_since is not None
            ]
            return (not down, f"unreachable: {', '.join(down)}" if down else "")

        if not loops:
            _log.warning(
                "recorder.no_consumers",
                durable=settings.durable,
                hint="the streams file defines no consumer with this durable name",
            )
        runtime.add_health_check("database", database_health)
        tasks = [runtime.spawn(_run_loop(loop), name=f"record-{loop.label}") for loop in loops]
        if isinstance(runtime.bus, NatsBus):
            runtime.spawn(
                _watch_lag(runtime.bus, loops, settings.lag_interval_s, runtime.stop_event),
                name="lag",
            )
        _log.info("recorder.running", streams=[loop.stream for loop in loops])
        await runtime.wait()
        # Let in-flight batches commit and ack before the runtime cancels what is left.
        if tasks:
            await asyncio.wait(tasks, timeout=settings.stop_timeout_s)
