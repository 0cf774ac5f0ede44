"""``polybus backtest --strategy NAME (--capture FILE | --from-db --market ID|--asset ID --start T
--end T) [--config FILE] [--json] [--plot FILE]``.

Exit codes: 0 the report was printed; 1 the store could not be read; 2 bad usage or input (an
unknown strategy, a missing, unreadable or empty file, bad times, a bad config, ``--plot``
without matplotlib), one line on stderr naming the problem.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import typer

from polybus.common.cli import fail, load
from polybus.common.config import Config
from polybus.common.events import MarketDataStreamEvent
from polybus.strategy.api import Strategy
from polybus.strategy.backtest.driver import Backtest
from polybus.strategy.backtest.inputs import (
    BacktestInputError,
    StoreUnavailable,
    read_events,
    store_events,
)
from polybus.strategy.backtest.report import (
    PlotUnavailable,
    build_report,
    check_plot_available,
    to_json,
    to_text,
    write_plot,
)
from polybus.strategy.config import StrategyServiceSettings, configured, runtime_keys
from polybus.strategy.registry import strategies

DEFAULT_CONFIG = Path("config/default.toml")
DEFAULT_TIMER_INTERVAL_S = 1.0


def backtest_command(
    *,
    strategy: str,
    capture: Path | None,
    from_db: bool,
    market: str,
    asset: str,
    start: str,
    end: str,
    config_path: Path | None,
    json_output: bool,
    plot: Path | None,
) -> None:
    """Run the backtest and print its report; raises ``typer.Exit`` with the exit code."""
    _check_usage(capture, from_db=from_db, store_options=bool(market or asset or start or end))
    classes = strategies()
    if strategy not in classes:
        known = ", ".join(classes) or "none"
        raise fail(f"backtest: --strategy {strategy}: no such strategy (installed: {known})", 2)
    if plot is not None:
        try:
            check_plot_available()
        except PlotUnavailable as error:
            raise fail(f"backtest: {error}", 2) from None
    config = load(config_path or DEFAULT_CONFIG) if (config_path or from_db) else None
    settings, timer_interval_s, partitions = _settings(classes[strategy], config)
    try:
        events = _events(capture, config, market=market, asset=asset, start=start, end=end)
    except BacktestInputError as error:
        raise fail(f"backtest: {error}", 2) from None
    except StoreUnavailable as error:
        raise typer.Exit(error.code) from None  # the recorder said why, in one line
    engine = Backtest(
        classes[strategy],
        settings,
        timer_interval_ns=round(timer_interval_s * 1e9),
        partitions=partitions,
    )
    report = build_report(engine.run(events))
    if json_output:
        sys.stdout.write(to_json(report).decode() + "\n")
    else:
        sys.stdout.write(to_text(report))
    if plot is not None:
        try:
            write_plot(report, plot)
        except OSError as error:
            raise fail(f"backtest: --plot {plot}: {error.strerror or error}", 2) from None


def _check_usage(capture: Path | None, *, from_db: bool, store_options: bool) -> None:
    if from_db == (capture is not None):
        raise fail("backtest: give either --capture FILE or --from-db", 2)
    if not from_db and store_options:
        raise fail("backtest: --market, --asset, --start and --end go with --from-db", 2)


def _events(
    capture: Path | None,
    config: Config | None,
    *,
    market: str,
    asset: str,
    start: str,
    end: str,
) -> list[MarketDataStreamEvent]:
    if capture is not None:
        return read_events(capture)
    assert config is not None  # --from-db always loads one
    return store_events(config, market=market, asset=asset, start=start, end=end)


def _settings(
    strategy_type: type[Strategy], config: Config | None
) -> tuple[msgspec.Struct, float, int]:
    """The strategy's settings, timer interval and partition count: from the config's
    ``[strategy.<name>]`` table when there is one, else the strategy's defaults."""
    interval = DEFAULT_TIMER_INTERVAL_S
    partitions = 16
    table: msgspec.Struct | None = None
    if config is not None:
        section = config.section("strategy", StrategyServiceSettings)
        interval = section.timer_interval_s
        partitions = config.deployment.bus.partitions
        table = configured(section).get(strategy_type.name)
    if table is not None:
        interval = runtime_keys(table).timer_interval_s or interval
        return table, interval, partitions
    try:
        return strategy_type.settings_type(), interval, partitions
    except (TypeError, msgspec.ValidationError) as error:
        raise fail(
            f"backtest: {strategy_type.name} has required settings: give --config with a "
            f"[strategy.{strategy_type.name}] table ({error})",
            2,
        ) from None
