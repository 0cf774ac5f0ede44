"""The service runtime: health and metrics endpoints, micro registration, heartbeat, shutdown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config, ServiceSettings, load_config
from polybus.common.events import health_decoder
from polybus.common.runtime import HEALTH_BUCKET, ServiceRuntime
from polybus.common.streams import Definitions
from tests.conftest import STREAMS_FILE, NatsServerInfo


@pytest.fixture
def config(bus: NatsBus, nats_server: NatsServerInfo, tmp_path: Path) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n[log]\nformat = "json"\n'
    )
    return load_config(path, {})


SETTINGS = ServiceSettings(instance="test-1", heartbeat_interval_s=0.2)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_health_metrics_micro_and_heartbeat(
    config: Config, bus: NatsBus, definitions: Definitions
) -> None:
    await bus.apply(definitions)
    async with ServiceRuntime("probe", config, SETTINGS, install_signal_handlers=False) as runtime:
        status, body = await get(f"{runtime.metrics_url}/healthz")
        assert status == 200
        assert json.loads(body)["healthy"] is True
        status, body = await get(f"{runtime.metrics_url}/metrics")
        assert status == 200
        assert 'polybus_service_up{service="probe"} 1.0' in body

        # `nats micro ls` finds services through $SRV.PING; so do we.
        reply = await bus.nc.request("$SRV.PING.polybus-probe", b"", timeout=2)
        assert json.loads(reply.data)["name"] == "polybus-probe"

        bucket = await bus.js.key_value(bus.namespace.bucket(HEALTH_BUCKET))
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            entry = await bucket.get("probe.test-1")
            assert entry.value is not None
            health = health_decoder.decode(entry.value)
            if health.status == "healthy" or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert health.status == "healthy"
        assert health.detail.startswith(f"metrics {runtime.metrics_url}")

        unhealthy = {"now": False}
        runtime.add_health_check("feed", lambda: (not unhealthy["now"], "socket silent"))
        unhealthy["now"] = True
        status, body = await get(f"{runtime.metrics_url}/healthz")
        assert status == 503
        assert json.loads(body)["checks"]["feed"] == "failing: socket silent"
    entry = await bucket.get("probe.test-1")
    assert entry.value is not None
    assert health_decoder.decode(entry.value).status == "stopping"


async def test_a_failed_task_stops_the_service(config: Config) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    async with ServiceRuntime("probe", config, SETTINGS, install_signal_handlers=False) as runtime:
        runtime.spawn(broken(), name="broken")
        await asyncio.wait_for(runtime.wait(), 5)
        assert runtime.stop_event.is_set()


async def test_owned_tasks_are_cancelled_on_exit(config: Config) -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with ServiceRuntime("probe", config, SETTINGS, install_signal_handlers=False) as runtime:
        runtime.spawn(forever(), name="forever")
        await asyncio.sleep(0)
        runtime.request_stop("test")
        await runtime.wait()
    assert cancelled.is_set()
