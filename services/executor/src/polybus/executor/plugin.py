"""How the executor plugs into the `polybus` CLI and `polybus up`.

The executor brings its own ``polybus executor`` command (the CLI's generic one has no
``--live`` flag). ``polybus up --live`` first asks the ``check_live`` hook whether the
deployment may trade live, then starts the executor with ``--live``; ``polybus up`` without it
starts the executor on paper (harmless with no intents), and refuses a config that says
``mode = "live"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from pathlib import Path
from typing import Annotated

import typer

from polybus.common.plugins import ServicePlugin
from polybus.executor.config import ExecutorSettings

HELP = "Run the executor: intents to orders (paper by default), every decision an event."


def _commands() -> typer.Typer:
    commands = typer.Typer()

    @commands.command(name="executor", help=HELP)
    def executor(
        config: Annotated[
            Path,
            typer.Option("--config", "-c", help="Deployment config file (TOML).", dir_okay=False),
        ] = Path("config/default.toml"),
        live: Annotated[
            bool,
            typer.Option(
                "--live",
                help='Trade real money: also needs [executor] mode = "live" and the secrets '
                "file with the Polymarket private key.",
            ),
        ] = False,
    ) -> None:
        from polybus.common.cli import fail, load
        from polybus.common.logs import configure_logging
        from polybus.common.runtime import ServiceStopped
        from polybus.executor.service import LiveRefused, live_problem, run

        loaded = load(config)
        problem = live_problem(loaded, live=live)
        if problem:
            raise fail(problem, 2)
        log = loaded.deployment.log
        configure_logging(log.level, log.format, service="executor")
        try:
            with contextlib.suppress(ServiceStopped):
                asyncio.run(run(loaded, live=live))
        except LiveRefused as error:
            raise fail(str(error), 2) from None

    try:
        # The account commands (``polybus account``), once that module is installed.
        account = importlib.import_module("polybus.executor.cli")
    except ModuleNotFoundError as error:
        if error.name != "polybus.executor.cli":
            raise
    else:
        extra: typer.Typer = account.commands()
        commands.registered_commands.extend(extra.registered_commands)
        commands.registered_groups.extend(extra.registered_groups)
    return commands


PLUGIN = ServicePlugin(
    name="executor",
    help=HELP,
    settings_type=ExecutorSettings,
    run="polybus.executor.service:run",
    commands=_commands,
    start_order=60,
    hooks={"check_live": "polybus.executor.service:check_live"},
)
