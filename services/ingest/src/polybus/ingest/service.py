"""The ingest service's wiring and lifecycle."""

from __future__ import annotations

from polybus.common.config import Config
from polybus.common.runtime import ServiceRuntime
from polybus.ingest.config import IngestSettings


async def run(config: Config) -> None:
    """Run the ingest service until SIGTERM/SIGINT."""
    settings = config.section("ingest", IngestSettings)
    async with ServiceRuntime("ingest", config, settings) as runtime:
        await runtime.wait()
