"""``polybus up``: the whole system in one command, servers embedded when no URL is configured.

Order: nats-server (``./var/nats``) and PostgreSQL (``./var/pg``) when embedded, wait until both
are healthy, apply streams, run each plugin's ``prepare`` step, then start every wanted service
as its own OS process under the supervisor. SIGINT/SIGTERM stops services, then the servers.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence

import structlog

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.infra import InfraError, ProcessSpec, postgres
from polybus.common.infra.nats_server import nats_server_spec
from polybus.common.infra.supervisor import Supervisor
from polybus.common.logs import configure_logging
from polybus.common.plugins import ServicePlugin, load_callable
from polybus.common.runtime import ServiceRuntime, ServiceStopped
from polybus.common.signals import route_stop_signals
from polybus.common.streams import apply, load_definitions

_log = structlog.get_logger("polybus.up")


def service_spec(
    plugin: ServicePlugin, config: Config, extra_args: Sequence[str] = (), *, name: str = ""
) -> ProcessSpec:
    """A service runs as ``python -m polybus.common.cli <name> --config FILE [extra_args]``."""
    argv = [sys.executable, "-m", "polybus.common.cli", plugin.name, "--config", str(config.path)]
    return ProcessSpec(name=name or plugin.name, argv=[*argv, *extra_args])


async def apply_streams(config: Config) -> None:
    definitions = load_definitions(config.resolve(config.deployment.bus.streams_file))
    bus = await NatsBus.connect(
        config.nats_url(),
        name="polybus-up-apply",
        namespace=config.namespace(),
        secrets=config.secrets,
        reconnect=False,
    )
    try:
        for change in await apply(bus.js, definitions, bus.namespace):
            _log.info("streams.applied", change=change.describe())
    finally:
        await bus.drain()


async def _start_servers(config: Config, supervisor: Supervisor) -> None:
    var = config.var_dir()
    embedded = config.deployment.embedded
    if config.uses_embedded_nats():
        await supervisor.start(
            nats_server_spec(
                store_dir=var / "nats",
                host=embedded.host,
                port=embedded.nats_port,
                monitor_port=embedded.nats_monitor_port,
                log_file=var / "nats-server.log",
            )
        )
        _log.info("up.nats_ready", url=config.nats_url())
    if config.uses_embedded_postgres():
        install = await asyncio.to_thread(postgres.prepare, var / "pg")
        await postgres.initdb(install)
        spec = postgres.server_spec(
            install,
            host=embedded.host,
            port=embedded.postgres_port,
            log_file=var / "postgres.log",
        )
        await supervisor.start(spec)
        await postgres.ensure_database(
            embedded.host, embedded.postgres_port, embedded.postgres_database
        )
        _log.info("up.postgres_ready", url=config.database_url())


async def _start(
    config: Config,
    plugins: dict[str, ServicePlugin],
    supervisor: Supervisor,
    service_args: Mapping[str, Sequence[str]],
) -> list[ServicePlugin]:
    """Servers, streams, each plugin's ``prepare``, then the services; returns those started."""
    await _start_servers(config, supervisor)
    await apply_streams(config)
    wanted = [p for p in plugins.values() if p.wanted(config) and _enabled(config, p)]
    for plugin in wanted:
        if plugin.prepare:
            _log.info("up.prepare", service=plugin.name)
            await load_callable(plugin.prepare)(config)
    for plugin in wanted:
        extra = service_args.get(plugin.name, ())
        children = plugin.instances(config) if plugin.instances else [(plugin.name, ())]
        for child, args in children:
            spec = service_spec(plugin, config, [*args, *extra], name=child)
            await supervisor.start(spec, wait_ready=False)
    return wanted


async def up(
    config: Config,
    plugins: dict[str, ServicePlugin],
    *,
    service_args: Mapping[str, Sequence[str]] | None = None,
) -> int:
    """Run everything until SIGINT/SIGTERM; return the process exit code.

    ``service_args`` adds command-line arguments for some services (``up --live`` gives the
    executor its ``--live``)."""
    deployment = config.deployment
    configure_logging(deployment.log.level, deployment.log.format, service="up")
    settings = deployment.supervisor
    # Created first: its stop event is ours, so a signal while the servers are still starting
    # stops the start (``until_stopped``) as well as a running system.
    runtime = ServiceRuntime("supervisor", config, settings, install_signal_handlers=False)
    restore_signals = route_stop_signals(asyncio.get_running_loop(), runtime.request_stop)
    supervisor = Supervisor(
        backoff_initial_s=settings.restart_backoff_initial_s,
        backoff_max_s=settings.restart_backoff_max_s,
        stop_timeout_s=settings.stop_timeout_s,
    )
    exit_code = 0
    try:
        config.var_dir().mkdir(parents=True, exist_ok=True)
        wanted = await runtime.until_stopped(
            _start(config, plugins, supervisor, service_args or {})
        )
        async with runtime:
            runtime.add_health_check("children", lambda: _children_up(supervisor))
            _log.info("up.running", services=[p.name for p in wanted])
            await runtime.wait()
    except ServiceStopped:
        pass
    except InfraError as error:
        _log.error("up.failed", error=str(error))
        exit_code = 1
    finally:
        _log.info("up.stopping")
        await supervisor.shutdown()
        restore_signals()
    _log.info("up.stopped", exit_code=exit_code)
    return exit_code


def _enabled(config: Config, plugin: ServicePlugin) -> bool:
    return config.section(plugin.name, plugin.settings_type).enabled


def _children_up(supervisor: Supervisor) -> tuple[bool, str]:
    down = [name for name, pid in supervisor.running().items() if pid is None]
    return (not down, f"down: {', '.join(down)}" if down else "")
