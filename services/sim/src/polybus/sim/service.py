"""The sim service's wiring and lifecycle (``polybus sim --config FILE``, ``polybus up``)."""

from __future__ import annotations

import sys

from polybus.common.bus.memory_bus import MemoryBus
from polybus.common.config import Config
from polybus.common.runtime import ServiceRuntime
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator


async def run(config: Config) -> None:
    """Run the simulator until SIGTERM/SIGINT; print its URLs on stdout, one a line."""
    settings = config.section("sim", SimSettings)
    # With connect_bus = false the simulator runs with no NATS at all (the runtime gets the
    # in-memory bus, so there is no heartbeat or micro registration either).
    bus = None if settings.connect_bus else MemoryBus(config.namespace())
    async with (
        ServiceRuntime("sim", config, settings, bus=bus) as runtime,
        Simulator(
            settings,
            on_task_failure=lambda name: runtime.request_stop(f"simulator task {name} failed"),
        ) as sim,
    ):
        runtime.add_health_check("sim", lambda: (True, sim.http_url))
        sys.stdout.write(
            f"http_url={sim.http_url}\n"
            f"market_ws_url={sim.market_ws_url}\n"
            f"user_ws_url={sim.user_ws_url}\n"
            f"gamma_url={sim.http_url}\n"
            f"admin_url={sim.http_url}/admin\n"
        )
        sys.stdout.flush()
        await runtime.wait()
