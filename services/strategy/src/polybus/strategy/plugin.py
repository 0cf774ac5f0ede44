"""How the strategy service plugs into the `polybus` CLI and `polybus up`.

``polybus strategy --name NAME`` runs one replica of one strategy. ``polybus up`` runs every
strategy that has a ``[strategy.<name>]`` table (and ``enabled = true``), ``replicas`` processes
each (default 1), as children ``strategy-<name>-<k>`` given ``--replica k``.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from polybus.common.config import Config
from polybus.common.plugins import ServicePlugin
from polybus.strategy.config import (
    StrategyServiceSettings,
    configured,
    runtime_keys,
    service_settings_type,
)
from polybus.strategy.registry import strategies

HELP = "Run one replica of a strategy: books in, intents out, state from EXEC."
BACKTEST_HELP = (
    "Backtest a strategy on recorded market data with the paper fill model: PnL, fills, fees, "
    "inventory, drawdown."
)


def _commands() -> typer.Typer:
    commands = typer.Typer()

    @commands.command(name="strategy", help=HELP)
    def strategy(
        name: Annotated[str, typer.Option("--name", "-n", help="The strategy id to run.")],
        config: Annotated[
            Path,
            typer.Option("--config", "-c", help="Deployment config file (TOML).", dir_okay=False),
        ] = Path("config/default.toml"),
        replica: Annotated[
            int,
            typer.Option("--replica", min=0, help="Replica number (metrics port offset)."),
        ] = 0,
    ) -> None:
        from polybus.common.cli import fail, load
        from polybus.common.logs import configure_logging
        from polybus.common.runtime import ServiceStopped
        from polybus.strategy.service import StrategyNotFound, run, strategy_class

        loaded = load(config)
        try:
            strategy_class(loaded, name)
        except StrategyNotFound as error:
            raise fail(str(error), 2) from None
        log = loaded.deployment.log
        configure_logging(log.level, log.format, service=f"strategy-{name}")
        with contextlib.suppress(ServiceStopped):
            asyncio.run(run(loaded, name=name, replica=replica))

    @commands.command(name="backtest", help=BACKTEST_HELP)
    def backtest(
        strategy: Annotated[str, typer.Option("--strategy", "-s", help="The strategy to test.")],
        capture: Annotated[
            Path | None,
            typer.Option(
                "--capture",
                help="Recorded market-data events (JSONL, as `polybus replay --out` writes) "
                "or a capture of raw venue frames.",
                dir_okay=False,
            ),
        ] = None,
        from_db: Annotated[bool, typer.Option("--from-db", help="Read the store.")] = False,
        market: Annotated[str, typer.Option(help="--from-db: a condition id.")] = "",
        asset: Annotated[str, typer.Option(help="--from-db: an asset (token) id.")] = "",
        start: Annotated[str, typer.Option(help="--from-db: start time (ISO 8601).")] = "",
        end: Annotated[str, typer.Option(help="--from-db: end time (ISO 8601).")] = "",
        config: Annotated[
            Path | None,
            typer.Option(
                "--config", "-c", help="Config with the strategy's settings.", dir_okay=False
            ),
        ] = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        plot: Annotated[
            Path | None,
            typer.Option("--plot", help="Write a PNG of PnL and inventory.", dir_okay=False),
        ] = None,
    ) -> None:
        # Imported on use: the CLI starts without loading the backtest's modules.
        from polybus.strategy.backtest.cli import backtest_command

        backtest_command(
            strategy=strategy,
            capture=capture,
            from_db=from_db,
            market=market,
            asset=asset,
            start=start,
            end=end,
            config_path=config,
            json_output=json_output,
            plot=plot,
        )

    return commands


def instances(config: Config) -> list[tuple[str, list[str]]]:
    """The processes ``polybus up`` starts: (child name, arguments) per strategy replica."""
    section = config.section("strategy", StrategyServiceSettings)
    children = []
    for name, table in configured(section).items():
        keys = runtime_keys(table)
        if not keys.enabled:
            continue
        for replica in range(keys.replicas):
            children.append(  # noqa: PERF401
                (f"strategy-{name}-{replica}", ["--name", name, "--replica", str(replica)])
            )
    return children


def _wanted(config: Config) -> bool:
    return bool(instances(config))


PLUGIN = ServicePlugin(
    name="strategy",
    help=HELP,
    settings_type=service_settings_type(strategies()),
    run="polybus.strategy.service:run",
    commands=_commands,
    wanted=_wanted,
    start_order=70,
    instances=instances,
)
