"""How the sim service plugs into the `polybus` CLI and `polybus up`."""

from __future__ import annotations

from polybus.common.plugins import ServicePlugin
from polybus.sim.config import SimSettings

PLUGIN = ServicePlugin(
    name="sim",
    help='Run the Polymarket simulator (used when venue = "sim").',
    settings_type=SimSettings,
    run="polybus.sim.service:run",
    wanted=lambda config: config.deployment.venue == "sim",
    start_order=10,
)
