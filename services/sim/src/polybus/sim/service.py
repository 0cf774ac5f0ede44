"""The sim service's wiring and lifecycle."""

from __future__ import annotations

from polybus.common.config import Config
from polybus.common.runtime import ServiceRuntime
from polybus.sim.config import SimSettings


async def run(config: Config) -> None:
    """Run the sim service until SIGTERM/SIGINT."""
    settings = config.section("sim", SimSettings)
    async with ServiceRuntime("sim", config, settings) as runtime:
        await runtime.wait()
