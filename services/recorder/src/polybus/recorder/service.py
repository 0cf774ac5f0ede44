"""The recorder service's wiring and lifecycle."""

from __future__ import annotations

from polybus.common.config import Config
from polybus.common.runtime import ServiceRuntime
from polybus.recorder.config import RecorderSettings


async def run(config: Config) -> None:
    """Run the recorder service until SIGTERM/SIGINT."""
    settings = config.section("recorder", RecorderSettings)
    async with ServiceRuntime("recorder", config, settings) as runtime:
        await runtime.wait()
