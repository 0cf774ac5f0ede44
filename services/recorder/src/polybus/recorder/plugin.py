"""How the recorder service plugs into the `polybus` CLI and `polybus up`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polybus.common.config import Config
from polybus.common.plugins import ServicePlugin
from polybus.recorder.config import RecorderSettings

if TYPE_CHECKING:
    import typer


def _always(config: Config) -> bool:
    return True


def _commands() -> typer.Typer:
    # Imported on use: the CLI starts without loading asyncpg and the recorder's modules.
    from polybus.recorder.cli import commands

    return commands()


PLUGIN = ServicePlugin(
    name="recorder",
    help="Run the recorder: every stream into PostgreSQL.",
    settings_type=RecorderSettings,
    run="polybus.recorder.service:run",
    prepare="polybus.recorder.migrations:prepare",
    commands=_commands,
    wanted=_always,
    start_order=20,
    hooks={"replay_store": "polybus.recorder.replay:replay_store"},
)
