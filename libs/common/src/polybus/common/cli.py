"""The operator CLI, ``polybus``.

Common commands live here (``up``, ``status``, ``streams apply``, ``config check``); every
installed service adds ``polybus <service>`` and its own commands through its plugin
(:mod:`polybus.common.plugins`).

Exit codes: 0 success (including a clean stop on SIGINT/SIGTERM), 1 runtime failure or an
unhealthy ``status``, 2 bad usage or an invalid config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from polybus.common.config import Config, ConfigError, load_config
from polybus.common.logs import configure_logging
from polybus.common.plugins import (
    ServicePlugin,
    discover_plugins,
    find_hook,
    load_callable,
    section_types,
)

DEFAULT_CONFIG = Path("config/default.toml")

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="Deployment config file (TOML).", dir_okay=False, show_default=True
    ),
]

app = typer.Typer(
    name="polybus",
    help="polybus: an event-sourced trading system for Polymarket's order book.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.",
)
streams_app = typer.Typer(help="JetStream streams, consumers and KV buckets.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration files.", no_args_is_help=True)
app.add_typer(streams_app, name="streams")
app.add_typer(config_app, name="config")

_stderr = Console(stderr=True)


def load(path: Path) -> Config:
    """Load a deployment file for a command; an invalid one exits 2 with the reason."""
    try:
        return load_config(path, section_types(discover_plugins()))
    except ConfigError as error:
        _stderr.print(f"[bold red]config error:[/] {error}", highlight=False, markup=True)
        raise typer.Exit(2) from None


@app.command()
def up(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run the whole system, supervised; Ctrl-C stops services, then servers.

    NATS and PostgreSQL start embedded (data under ./var) unless the config names their URLs;
    then every service runs as its own supervised process.
    """
    from polybus.common.infra.up import up as run_up

    loaded = load(config)
    raise typer.Exit(asyncio.run(run_up(loaded, discover_plugins())))


@app.command()
def status(
    config: ConfigOption = DEFAULT_CONFIG,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """NATS and PostgreSQL reachability, service heartbeats, streams and consumer lag.

    Exits 1 when anything is unhealthy.
    """
    from polybus.common.status import collect_status

    result = asyncio.run(collect_status(load(config)))
    if json_output:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        _print_status(result)
    raise typer.Exit(0 if result.healthy else 1)


def _print_status(result: object) -> None:
    from polybus.common.status import Status

    assert isinstance(result, Status)
    console = Console()
    for label, server in (("NATS", result.nats), ("PostgreSQL", result.postgres)):
        state = "[green]reachable[/]" if server.reachable else f"[red]unreachable[/] {server.error}"
        console.print(f"{label:<11} {server.url}  {state}", highlight=False)
    services = Table(
        "service", "instance", "status", "heartbeat age (s)", "detail", title="services"
    )
    for service in result.services:
        colour = "green" if service.healthy else "red"
        services.add_row(
            service.service,
            service.instance,
            f"[{colour}]{service.status}[/]",
            f"{service.last_heartbeat_age_s:.1f}",
            service.detail,
        )
    console.print(services)
    streams = Table(
        "stream", "messages", "bytes", "consumer", "lag", "redelivered", title="streams"
    )
    for stream in result.streams:
        streams.add_row(stream.name, str(stream.messages), str(stream.bytes), "", "", "")
        for consumer in stream.consumers:
            streams.add_row("", "", "", consumer.name, str(consumer.lag), str(consumer.redelivered))
    console.print(streams)
    console.print("[green]healthy[/]" if result.healthy else "[red]unhealthy[/]")


@streams_app.command("apply")
def streams_apply(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Create or update the streams, consumers and KV buckets of the streams file (idempotent)."""
    from polybus.common.bus.nats_bus import NatsBus
    from polybus.common.streams import apply, load_definitions

    loaded = load(config)
    try:
        definitions = load_definitions(loaded.resolve(loaded.deployment.bus.streams_file))
    except ConfigError as error:
        _stderr.print(f"[bold red]config error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None

    async def run() -> list[str]:
        bus = await NatsBus.connect(
            loaded.nats_url(),
            name="polybus-streams-apply",
            namespace=loaded.namespace(),
            secrets=loaded.secrets,
            reconnect=False,
        )
        try:
            return [change.describe() for change in await apply(bus.js, definitions, bus.namespace)]
        finally:
            await bus.drain()

    changes = asyncio.run(run())
    for line in changes:
        typer.echo(line)
    if all(line.endswith(": unchanged") for line in changes):
        typer.echo("nothing to change")


@app.command()
def tail(
    subject: Annotated[
        str, typer.Argument(help="Subject or wildcard, e.g. 'md.polymarket.*.trade.>'")
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    json_output: Annotated[
        bool, typer.Option("--json", help="Raw JSON, one event per line.")
    ] = False,
    count: Annotated[int, typer.Option(help="Stop after this many messages (0: never).")] = 0,
) -> None:
    """Print the events on a subject as they arrive, decoded with polybus's schemas.

    The deployment's subject prefix is put in front of SUBJECT. Ctrl-C stops.
    """
    from polybus.common.bus import Message
    from polybus.common.bus.nats_bus import NatsBus
    from polybus.common.events import DecodeError, decode

    loaded = load(config)
    console = Console(highlight=False)

    async def run() -> None:
        bus = await NatsBus.connect(
            loaded.nats_url(), name="polybus-tail", namespace=loaded.namespace(),
            secrets=loaded.secrets,
        )  # fmt: skip
        seen = 0
        done = asyncio.Event()

        async def show(message: Message) -> None:
            nonlocal seen
            if json_output:
                sys.stdout.write(message.data.decode(errors="replace") + "\n")
            else:
                try:
                    console.print(f"[dim]{message.subject}[/] {decode(message.data)!r}")
                except DecodeError:
                    console.print(f"[dim]{message.subject}[/] [red]undecodable[/] {message.data!r}")
            seen += 1
            if count and seen >= count:
                done.set()

        await bus.subscribe(loaded.namespace().subjects.stream_subjects(subject), show)
        try:
            await done.wait()
        finally:
            await bus.drain()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@app.command()
def replay(
    file: Annotated[
        Path | None, typer.Argument(help="Capture of raw venue frames (JSONL) to replay offline.")
    ] = None,
    from_db: Annotated[bool, typer.Option("--from-db", help="Replay from the store.")] = False,
    market: Annotated[str, typer.Option(help="--from-db: a condition id.")] = "",
    asset: Annotated[str, typer.Option(help="--from-db: an asset (token) id.")] = "",
    start: Annotated[str, typer.Option(help="--from-db: start time (ISO 8601).")] = "",
    end: Annotated[str, typer.Option(help="--from-db: end time (ISO 8601).")] = "",
    speed: Annotated[str, typer.Option(help="--from-db: 1x (as recorded) or max.")] = "max",
    to_subject_prefix: Annotated[
        str, typer.Option(help="--from-db: publish under this subject prefix.")
    ] = "replay",
    out: Annotated[Path | None, typer.Option(help="--from-db: write JSONL here instead.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON lines output.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Replay a capture file offline (FILE), or recorded market data from the store (--from-db)."""
    plugins = discover_plugins()
    if from_db == (file is not None):
        _stderr.print("give either a capture FILE or --from-db", highlight=False)
        raise typer.Exit(2)
    hook = find_hook(plugins, "replay_store" if from_db else "replay_capture")
    if hook is None:
        _stderr.print("the service that implements this replay is not installed", highlight=False)
        raise typer.Exit(2)
    if file is not None:
        raise typer.Exit(hook(file, json_output=json_output))
    raise typer.Exit(
        hook(
            load(config),
            market=market,
            asset=asset,
            start=start,
            end=end,
            speed=speed,
            to_subject_prefix=to_subject_prefix,
            out=out,
        )
    )


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="Deployment config file to validate.")],
) -> None:
    """Validate a config file and print the effective config, secrets redacted.

    The secrets file it names is checked too. Exits 2 naming the bad key and value.
    """
    loaded = load(file)
    typer.echo(json.dumps(loaded.effective(), indent=2, sort_keys=True))


def _add_service(plugin: ServicePlugin) -> None:
    def run_service(config: ConfigOption = DEFAULT_CONFIG) -> None:
        loaded = load(config)
        log = loaded.deployment.log
        configure_logging(log.level, log.format, service=plugin.name)
        asyncio.run(load_callable(plugin.run)(loaded))

    app.command(name=plugin.name, help=plugin.help)(run_service)
    if plugin.commands is not None:
        extra = plugin.commands()
        app.registered_commands.extend(extra.registered_commands)
        app.registered_groups.extend(extra.registered_groups)


def main() -> None:
    # Commands log to stderr (stdout carries their output); services reconfigure for themselves.
    configure_logging("warning")
    for plugin in discover_plugins().values():
        _add_service(plugin)
    app()


if __name__ == "__main__":
    main()
