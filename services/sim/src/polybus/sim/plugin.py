"""How the sim service plugs into the `polybus` CLI and `polybus up`."""

from __future__ import annotations

import typer

from polybus.common.plugins import ServicePlugin
from polybus.sim.config import SimSettings


def _commands() -> typer.Typer:
    from polybus.sim.cli import app

    return app


PLUGIN = ServicePlugin(
    name="sim",
    help='Run the Polymarket simulator (used when venue = "sim").',
    settings_type=SimSettings,
    run="polybus.sim.service:run",
    commands=_commands,
    wanted=lambda config: config.deployment.venue == "sim",
    start_order=10,
)
