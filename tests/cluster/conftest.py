"""A 3-node NATS cluster from the nats-server wheel on loopback, and `polybus up` told its URLs.

Three servers n1..n3, each with its own client, cluster and monitoring port and its own
JetStream store, every one routing to all three (the config docs/operations.md shows). `up`
runs a copy of config/sim.toml with ``[bus] url`` listing the three servers and
``streams_file`` = config/streams.cluster.toml (every stream and bucket at R3); it starts no
nats-server of its own, only PostgreSQL and the services.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client

from polybus.common.infra import free_port
from polybus.common.infra.nats_server import nats_server_binary
from tests.e2e.test_out_of_the_box import shipped_config_on_free_ports
from tests.faults.pipeline import SERVICES, Pipeline
from tests.helpers import eventually, healthy_status, start_up, stop

REPO = Path(__file__).resolve().parents[2]
CLUSTER_STREAMS = REPO / "config" / "streams.cluster.toml"
NAMES = ("n1", "n2", "n3")

SERVER_CONF = """\
server_name: {name}
listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor}
jetstream {{
  store_dir: "{store}"
}}
cluster {{
  name: polybus
  listen: 127.0.0.1:{cluster_port}
  routes: [
{routes}
  ]
}}
"""
"""One server's config: the same, but for names, ports and store, as in docs/operations.md."""


@dataclass
class Node:
    name: str
    port: int
    monitor: int
    cluster_port: int
    conf: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(nats_server_binary()), "--config", str(self.conf)],
                stdout=log,
                stderr=log,
            )

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye to the peers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    async def jsz(self) -> dict[str, object] | None:
        """The server's /jsz, or None while it does not answer."""
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{self.monitor}/jsz",
                    timeout=aiohttp.ClientTimeout(total=2),
                ) as response,
            ):
                body: dict[str, object] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def healthy(self) -> bool:
        """/healthz answers 200: JetStream up and every stream and consumer current."""
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{self.monitor}/healthz",
                    timeout=aiohttp.ClientTimeout(total=2),
                ) as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@dataclass
class Cluster:
    nodes: list[Node]
    directory: Path

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def meta_leader(self) -> str | None:
        """The meta leader every running node agrees on with all three peers known, or None."""
        leaders = set()
        for node in self.nodes:
            if node.process is None:
                continue
            jsz = await node.jsz()
            meta = jsz.get("meta_cluster") if jsz else None
            if not isinstance(meta, dict) or not meta.get("leader"):
                return None
            if meta.get("cluster_size") != len(self.nodes):
                return None
            leaders.add(meta["leader"])
        return str(leaders.pop()) if len(leaders) == 1 else None

    async def formed(self) -> None:
        async def elected() -> bool:
            return await self.meta_leader() is not None

        await eventually(elected, 60, "the cluster to elect a meta leader", 0.2)


def make_cluster(directory: Path) -> Cluster:
    ports = {name: (free_port(), free_port(), free_port()) for name in NAMES}
    routes = "\n".join(f"    nats-route://127.0.0.1:{ports[n][2]}" for n in NAMES)
    nodes = []
    for name in NAMES:
        port, monitor, cluster_port = ports[name]
        conf = directory / f"{name}.conf"
        conf.write_text(
            SERVER_CONF.format(
                name=name,
                port=port,
                monitor=monitor,
                cluster_port=cluster_port,
                store=directory / name,
                routes=routes,
            )
        )
        nodes.append(Node(name, port, monitor, cluster_port, conf, directory / f"{name}.log"))
    return Cluster(nodes, directory)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="polybus-cluster-"))
    running = make_cluster(directory)
    try:
        for node in running.nodes:
            node.start()
        yield running
    finally:
        for node in running.nodes:
            node.stop()
        for node in running.nodes:
            if node.log.exists():
                print(f"{node.name} log tail:", node.log.read_text()[-1500:])
        shutil.rmtree(directory, ignore_errors=True)


def cluster_config(workdir: Path, url: str) -> tuple[Path, int]:
    """config/sim.toml on free ports, told the cluster's URLs and the R3 streams file."""
    config, postgres_port = shipped_config_on_free_ports(workdir)
    text = config.read_text()
    bus = f'[bus]\nurl = "{url}"\nstreams_file = "{CLUSTER_STREAMS}"\n'
    assert text.count("[bus]\n") == 1, "config/sim.toml has no single [bus] section"
    config.write_text(text.replace("[bus]\n", bus))
    return config, postgres_port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(cluster: Cluster) -> AsyncIterator[Pipeline]:
    await cluster.formed()
    workdir = Path(tempfile.mkdtemp(prefix="polybus-cluster-up-"))
    os.chmod(workdir, 0o755)  # PostgreSQL may run as another user
    config, postgres_port = cluster_config(workdir, cluster.url)
    up = await start_up(config, workdir)
    running = Pipeline(
        up_pid=up.pid,
        config=config,
        workdir=workdir,
        postgres_url=f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus",
        nats_url=cluster.url,
    )
    try:
        try:
            await healthy_status(config, workdir, frozenset({"supervisor", "ingest", "executor"}))
        except AssertionError:
            print("status at the timeout:", (await running.cli("status", "--json"))[1])
            raise
        await eventually(
            lambda: set(running.children()) >= SERVICES, 60, f"children {sorted(SERVICES)}", 0.2
        )
        assert "nats-server" not in running.children(), "up started its own nats-server"
        yield running
    finally:
        code = await stop(up)
        print("up.log tail:", (workdir / "up.log").read_text()[-3000:])
        shutil.rmtree(workdir, ignore_errors=True)
        assert code == 0


@pytest_asyncio.fixture(loop_scope="module")
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    """A client that knows all three servers and reconnects to a survivor."""
    connected = await nats.connect(
        servers=[node.url for node in cluster.nodes], max_reconnect_attempts=-1
    )
    try:
        yield connected
    finally:
        await connected.close()
