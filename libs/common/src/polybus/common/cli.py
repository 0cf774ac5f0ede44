"""The operator CLI, ``polybus``.

Common commands live here (``up``, ``status``, ``streams apply``, ``config check``); every
installed service adds ``polybus <service>`` and its own commands through its plugin
(:mod:`polybus.common.plugins`).

Exit codes: 0 success (including a clean stop on SIGINT/SIGTERM), 1 runtime failure or an
unhealthy ``status``, 2 bad usage or an invalid config file. Every error a user can cause is one
line on stderr (:func:`fail`), never a traceback; commands that connect to NATS once give up
after ``--connect-timeout`` (:func:`connect_bus`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer
from rich.console import Console

# Typer vendors click and exports only some of its exceptions; main() needs the base ones.
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from polybus.common.config import Config, ConfigError, load_config, redact_url
from polybus.common.logs import configure_logging
from polybus.common.plugins import (
    ServicePlugin,
    discover_plugins,
    find_hook,
    load_callable,
    section_types,
)

if TYPE_CHECKING:
    from polybus.common.bus.nats_bus import NatsBus

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


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` as one line on stderr; return the Exit to raise with ``code``."""
    # Plain text: a rich console would wrap a long message (a path, an id) over several lines.
    sys.stderr.write(" ".join(message.split()) + "\n")
    sys.stderr.flush()
    return typer.Exit(code)


def load(path: Path) -> Config:
    """Load a deployment file for a command, with the streams file it uses.

    Any problem exits 2 with one line naming the file and the key.
    """
    from polybus.common.streams import load_definitions

    try:
        config = load_config(path, section_types(discover_plugins()))
    except ConfigError as error:
        raise fail(f"config error: {error}", 2) from None
    try:
        load_definitions(Path(config.deployment.bus.streams_file))
    except ConfigError as error:
        raise fail(f"config error: config file {path}: bus.streams_file: {error}", 2) from None
    return config


def _parse_seconds(text: str | float) -> float:
    # Typer passes the (float) default through the parser too.
    number = text if isinstance(text, float) else text.strip().removesuffix("s")
    try:
        seconds = float(number)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise typer.BadParameter(f"{text!r} is not a positive number of seconds, like 5s or 0.5")
    return seconds


ConnectTimeoutOption = Annotated[
    float,
    typer.Option(
        "--connect-timeout",
        parser=_parse_seconds,
        metavar="SECONDS",
        help="Give up (exit 1) when NATS cannot be reached within this time, e.g. 5s.",
    ),
]
DEFAULT_CONNECT_TIMEOUT_S = 5.0


@contextlib.contextmanager
def _quiet_bus_logs() -> Iterator[None]:
    # nats-py reports every failed attempt through the bus's error callback, a warning line a
    # second; a one-shot command sums them up in its own single line instead.
    bus_logger = logging.getLogger("polybus.bus")
    level = bus_logger.level
    bus_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bus_logger.setLevel(level)


async def connect_bus(config: Config, *, name: str, timeout_s: float) -> NatsBus:
    """Connect a one-shot command to the deployment's NATS, trying for at most ``timeout_s``.

    Once connected the bus reconnects as usual; if it never connects, this raises the Exit of
    :func:`fail` (code 1) naming the server, its password redacted.
    """
    from nats.errors import Error as NatsError

    from polybus.common.bus.nats_bus import NatsBus

    url = config.nats_url()
    with _quiet_bus_logs():
        try:
            return await asyncio.wait_for(
                NatsBus.connect(
                    url,
                    name=name,
                    namespace=config.namespace(),
                    secrets=config.secrets,
                    connect_timeout=min(timeout_s, config.deployment.bus.connect_timeout_s),
                ),
                timeout_s,
            )
        except (TimeoutError, OSError, NatsError) as error:
            reason = "" if isinstance(error, TimeoutError) else f" ({type(error).__name__})"
            raise fail(
                f"cannot reach NATS at {redact_url(url)} within {timeout_s:g}s{reason}", 1
            ) from None


@app.command()
def up(
    config: ConfigOption = DEFAULT_CONFIG,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help='Start the executor trading real money (also needs [executor] mode = "live" '
            "and the secrets file with the Polymarket private key).",
        ),
    ] = False,
) -> None:
    """Run the whole system, supervised; Ctrl-C stops services, then servers.

    NATS and PostgreSQL start embedded (data under ./var) unless the config names their URLs;
    then every service runs as its own supervised process.
    """
    from polybus.common.infra.up import up as run_up

    loaded = load(config)
    plugins = discover_plugins()
    # The executor says whether this deployment may trade as asked; refused before any server
    # starts, rather than a supervised executor failing over and over.
    check_live = find_hook(plugins, "check_live")
    if check_live is None and live:
        raise fail("--live given, but no installed service trades live", 2)
    problem = check_live(loaded, live=live) if check_live is not None else ""
    if problem:
        raise fail(str(problem), 2)
    service_args = {"executor": ("--live",)} if live else {}
    raise typer.Exit(asyncio.run(run_up(loaded, plugins, service_args=service_args)))


StrategyOption = Annotated[
    str,
    typer.Option(
        "--strategy", "-s", help="One strategy id (default: every strategy).", show_default=False
    ),
]


def _set_halt(
    config: Path, *, halted: bool, strategy: str, reason: str, connect_timeout: float
) -> None:
    from nats.errors import Error as NatsError

    from polybus.common.halt import halt_key, set_halt

    try:
        halt_key(strategy)
    except ValueError as error:
        raise fail(f"bad --strategy: {error}", 2) from None
    loaded = load(config)

    async def run() -> None:
        bus = await connect_bus(loaded, name="polybus-halt", timeout_s=connect_timeout)
        try:
            await set_halt(
                bus.js,
                bus.namespace,
                halted=halted,
                strategy_id=strategy or None,
                reason=reason,
            )
        finally:
            await bus.drain()

    try:
        asyncio.run(run())
    except (NatsError, TimeoutError) as error:
        hint = " (run: polybus streams apply)" if "not found" in str(error).lower() else ""
        raise fail(f"cannot set the halt state: {error!r}{hint}", 1) from None
    scope = f"strategy {strategy}" if strategy else "every strategy"
    typer.echo(f"{'halted' if halted else 'resumed'}: {scope}")


@app.command()
def halt(
    config: ConfigOption = DEFAULT_CONFIG,
    strategy: StrategyOption = "",
    reason: Annotated[str, typer.Option(help="Why (kept in the halt history).")] = "",
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """Stop trading: no new orders, open orders canceled, until resume (kept across restarts).

    Without --strategy every strategy is halted.
    """
    _set_halt(
        config, halted=True, strategy=strategy, reason=reason, connect_timeout=connect_timeout
    )


@app.command()
def resume(
    config: ConfigOption = DEFAULT_CONFIG,
    strategy: StrategyOption = "",
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """Lift a halt (of one strategy with --strategy, else the halt of every strategy)."""
    _set_halt(config, halted=False, strategy=strategy, reason="", connect_timeout=connect_timeout)


@app.command()
def status(
    config: ConfigOption = DEFAULT_CONFIG,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh in place until Ctrl-C (exit 0).")
    ] = False,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """NATS and PostgreSQL reachability, service health and versions, streams and consumer
    lag, books by state, resyncs, reconnects, timings p50/p99, rate limits, halts, leases,
    positions and PnL.

    Exits 1 when anything is unhealthy, saying why.
    """
    from polybus.common.operator.session import run_until_signal
    from polybus.common.operator.status_view import render_status
    from polybus.common.status import collect_status

    if watch and json_output:
        raise fail("give --watch or --json, not both", 2)
    loaded = load(config)
    if watch:
        from rich.live import Live

        async def refresh() -> None:
            first = await collect_status(loaded, connect_timeout_s=connect_timeout)
            with Live(render_status(first), auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(2.0)
                    result = await collect_status(loaded, connect_timeout_s=connect_timeout)
                    live.update(render_status(result), refresh=True)

        with _quiet_bus_logs():
            asyncio.run(run_until_signal(refresh()))
        raise typer.Exit(0)
    with _quiet_bus_logs():  # an unreachable server is reported in the output instead
        result = asyncio.run(collect_status(loaded, connect_timeout_s=connect_timeout))
    if json_output:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        Console(highlight=False, soft_wrap=True).print(render_status(result))
    raise typer.Exit(0 if result.healthy else 1)


WindowOption = Annotated[
    str, typer.Option("--window", help="How far back to look, e.g. 15m, 1h, 1d.")
]


@app.command()
def top(
    config: ConfigOption = DEFAULT_CONFIG,
    window: WindowOption = "1h",
    limit: Annotated[int, typer.Option(min=1, help="How many assets to show.")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """The assets with the most resyncs, stale books and rejected orders in the window."""
    from polybus.common.operator.activity import AssetActivity, collect_top
    from polybus.common.operator.session import run_until_signal
    from polybus.common.operator.status_view import render_top
    from polybus.common.operator.stream_reader import parse_duration
    from polybus.common.operator.tail import load_market_names
    from polybus.common.operator.tail_format import MarketNames

    try:
        window_s = parse_duration(window)
    except ValueError as error:
        raise fail(f"bad --window: {error}", 2) from None
    loaded = load(config)
    rows: list[AssetActivity] = []

    async def run() -> None:
        bus = await connect_bus(loaded, name="polybus-top", timeout_s=connect_timeout)
        try:
            names = MarketNames()
            await load_market_names(bus, names)
            rows.extend(await collect_top(bus, names, window_s=window_s, limit=limit))
        finally:
            await bus.drain(timeout=1.0)

    asyncio.run(run_until_signal(run()))
    if json_output:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
    else:
        Console(highlight=False).print(render_top(rows, window_s))


@app.command()
def book(
    asset: Annotated[str, typer.Argument(help="An asset (token) id, or a market slug.")],
    config: ConfigOption = DEFAULT_CONFIG,
    outcome: Annotated[
        str, typer.Option(help="With a slug: which outcome's book (YES or NO, or its name).")
    ] = "YES",
    depth: Annotated[int, typer.Option(min=1, max=100, help="Levels a side.")] = 10,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame and exit (for scripts).")
    ] = False,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """A live ladder of one asset's book: state, age, last trade, our working orders marked.

    Refreshes in place until Ctrl-C (exit 0); --once prints a single frame, as soon as the book
    is live (or after 10 s as it is). Exits 1 when the asset has no book on the bus.
    """
    from polybus.common.operator.book_ladder import (
        UnknownAsset,
        check_target,
        resolve,
        show_book,
        stream_markets,
    )
    from polybus.common.operator.session import run_until_signal

    try:
        check_target(asset)
    except ValueError as error:
        raise fail(f"bad ASSET: {error}", 2) from None
    loaded = load(config)
    found: list[bool] = []

    async def run() -> None:
        bus = await connect_bus(loaded, name="polybus-book", timeout_s=connect_timeout)
        try:
            try:
                target = resolve(asset, outcome, await stream_markets(bus))
            except UnknownAsset as error:
                raise fail(str(error), 2) from None
            found.append(await show_book(bus, target, depth=depth, once=once, console=Console()))
        finally:
            await bus.drain(timeout=1.0)

    asyncio.run(run_until_signal(run()))
    if once and found == [False]:
        raise fail(f"no book for {asset} on the bus (is the ingest following it?)", 1)


@streams_app.command("apply")
def streams_apply(
    config: ConfigOption = DEFAULT_CONFIG,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """Create or update the streams, consumers and KV buckets of the streams file (idempotent).

    The file is bus.streams_file, or the definitions built into polybus when the config names
    none.
    """
    from nats.errors import Error as NatsError

    from polybus.common.streams import apply, load_definitions

    loaded = load(config)
    try:
        definitions = load_definitions(Path(loaded.deployment.bus.streams_file))
    except ConfigError as error:
        raise fail(f"config error: {error}", 2) from None

    async def run() -> list[str]:
        bus = await connect_bus(loaded, name="polybus-streams-apply", timeout_s=connect_timeout)
        try:
            return [change.describe() for change in await apply(bus.js, definitions, bus.namespace)]
        finally:
            await bus.drain()

    try:
        changes = asyncio.run(run())
    except ConfigError as error:  # a stream whose storage cannot change in place
        raise fail(f"cannot apply: {error}", 1) from None
    except (NatsError, TimeoutError) as error:
        raise fail(f"cannot apply: the server refused or did not answer: {error!r}", 1) from None
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
    since: Annotated[
        str,
        typer.Option(
            help="Replay what the streams stored from this long ago (10m, 2h), then go on live.",
            show_default=False,
        ),
    ] = "",
    json_output: Annotated[
        bool, typer.Option("--json", help="The events' JSON unchanged, one per line (for jq).")
    ] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="Dead letters (dlq.>): the verbatim input only.")
    ] = False,
    count: Annotated[
        int, typer.Option(min=0, help="Stop after this many messages (0: never).")
    ] = 0,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """Print the events on a subject as they arrive, one line each, decoded with polybus's
    schemas (prices and sizes as decimals, markets by name).

    The deployment's subject prefix is put in front of SUBJECT. Ctrl-C stops (exit 0).
    """
    import time

    from polybus.common.operator.session import run_until_signal
    from polybus.common.operator.stream_reader import parse_duration
    from polybus.common.operator.tail import OutputMode, check_tail_options
    from polybus.common.operator.tail import tail as run_tail
    from polybus.common.streams import load_definitions
    from polybus.common.subjects import check_subject_pattern

    try:
        check_subject_pattern(subject)
    except ValueError as error:
        raise fail(f"bad subject: {error}", 2) from None
    try:
        since_ns = time.time_ns() - int(parse_duration(since) * 1e9) if since else None
    except ValueError as error:
        raise fail(f"bad --since: {error}", 2) from None
    if json_output and raw:
        raise fail("give --json or --raw, not both", 2)
    mode: OutputMode = "json" if json_output else "raw" if raw else "human"
    loaded = load(config)
    definitions = load_definitions(Path(loaded.deployment.bus.streams_file))
    problem = check_tail_options(subject, definitions, since=since_ns is not None, mode=mode)
    if problem:
        raise fail(problem, 2)

    async def run() -> None:
        bus = await connect_bus(loaded, name="polybus-tail", timeout_s=connect_timeout)
        try:
            await run_tail(bus, definitions, subject, since_ns=since_ns, mode=mode, count=count)
        finally:
            await bus.drain(timeout=1.0)

    asyncio.run(run_until_signal(run()))


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
        raise fail("give either a capture FILE or --from-db", 2)
    hook = find_hook(plugins, "replay_store" if from_db else "replay_capture")
    if hook is None:
        raise fail("the service that implements this replay is not installed", 2)
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

    The files it names are checked too: the secrets file (exists, not readable by group or
    others, valid) and the streams file (parses, validates). Exits 2 naming the file and key.
    """
    loaded = load(file)
    typer.echo(json.dumps(loaded.effective(), indent=2, sort_keys=True))


ReplicaOption = Annotated[
    int, typer.Option("--replica", min=0, help="Which of the service's processes this is (0..N-1).")
]


def _add_service(plugin: ServicePlugin) -> None:
    def run(config: Path, **options: int) -> None:
        loaded = load(config)
        log = loaded.deployment.log
        configure_logging(log.level, log.format, service=plugin.name)
        from polybus.common.runtime import ServiceStopped

        # Stopped by a signal before it had started (e.g. while NATS was unreachable): exit 0.
        with contextlib.suppress(ServiceStopped):
            asyncio.run(load_callable(plugin.run)(loaded, **options))

    def run_service(config: ConfigOption = DEFAULT_CONFIG) -> None:
        run(config)

    def run_replica(config: ConfigOption = DEFAULT_CONFIG, replica: ReplicaOption = 0) -> None:
        run(config, replica=replica)

    extra = plugin.commands() if plugin.commands is not None else None
    # A service may bring its own ``polybus <name>`` (with options of its own, e.g. --live).
    if extra is None or all(c.name != plugin.name for c in extra.registered_commands):
        command = run_replica if plugin.replicated else run_service
        app.command(name=plugin.name, help=plugin.help)(command)
    if extra is not None:
        app.registered_commands.extend(extra.registered_commands)
        app.registered_groups.extend(extra.registered_groups)


def with_plugins() -> typer.Typer:
    """The ``polybus`` app with every installed service's commands, as :func:`main` runs it.

    Idempotent: a service whose command is already there is not added again.
    """
    registered = {command.name for command in app.registered_commands}
    for plugin in discover_plugins().values():
        if plugin.name not in registered:
            _add_service(plugin)
    return app


def main() -> None:
    # Commands log to stderr (stdout carries their output); services reconfigure for themselves.
    configure_logging("warning")
    with_plugins()
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        code = fail("aborted", 1).exit_code
    except NoArgsIsHelpError as error:
        error.show()
        code = error.exit_code
    except ClickException as error:
        # Click's own report is a usage box over several lines; ours is the one line.
        context = getattr(error, "ctx", None)
        where = f"{context.command_path}: " if context else ""
        hint = f" (see {context.command_path} --help)" if context else ""
        code = fail(f"{where}{error.format_message()}{hint}", error.exit_code).exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
