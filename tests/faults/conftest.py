"""One running pipeline for every fault scenario: `polybus up` on a copy of config/sim.toml.

Every service is its own child of `up` (sim, ingest, recorder, executor paper, both strategies)
beside the embedded nats-server and PostgreSQL; the scenarios kill children by pid (found from
the process tree of `up`) and the supervisor restarts them. The fixture and the scenarios share
one event loop per module (``loop_scope="module"``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import pytest_asyncio
from nats.js import JetStreamContext

from tests.e2e.test_out_of_the_box import shipped_config_on_free_ports
from tests.helpers import eventually, healthy_status, polybus, start_up, stop

SERVICES = frozenset(
    {"sim", "ingest", "recorder", "executor", "strategy.dutch_book", "strategy.spread_capture"}
)
"""The processes a user sees in `polybus status` once the system is up (by child name)."""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return found


def child_name(pid: int) -> str | None:
    """``ingest``, ``strategy.dutch_book``, ``postgres``, ``nats-server``; None once gone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [word.decode() for word in argv if word]
    if not words:
        return None
    if "polybus.common.cli" in words:
        rest = words[words.index("polybus.common.cli") + 1 :]
        positional = [
            w
            for i, w in enumerate(rest)
            if not w.startswith("-") and (i == 0 or rest[i - 1] != "--config")
        ]
        return ".".join(positional[:2]) if positional[:1] == ["strategy"] else positional[0]
    return Path(words[0]).name


@dataclass
class Pipeline:
    up: asyncio.subprocess.Process
    up_pid: int
    config: Path
    workdir: Path
    postgres_url: str
    nats_url: str

    def children(self) -> dict[str, int]:
        """Child name -> pid, for every live child of `up`."""
        named = {}
        for pid in _children(self.up_pid):
            name = child_name(pid)
            if name is not None:
                named[name] = pid
        return named

    def sim_url(self) -> str:
        port = next(
            line.split("=")[1].strip()
            for line in self.config.read_text().splitlines()
            if line.startswith("port =")
        )
        return f"http://127.0.0.1:{port}"

    def stream(self, name: str) -> str:
        return name  # config/sim.toml has no bus.stream_prefix

    async def cli(self, *args: str) -> tuple[int, str]:
        return await polybus(*args, "--config", str(self.config), cwd=self.workdir)

    async def database(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(self.postgres_url)
        return connection


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline() -> AsyncIterator[Pipeline]:
    workdir = Path(tempfile.mkdtemp(prefix="polybus-faults-"))
    os.chmod(workdir, 0o755)  # PostgreSQL may run as another user
    config, postgres_port = shipped_config_on_free_ports(workdir)
    nats_port = int(
        next(
            line.split("=")[1]
            for line in config.read_text().splitlines()
            if line.startswith("nats_port =")
        )
    )
    up = await start_up(config, workdir)
    running = Pipeline(
        up=up,
        up_pid=up.pid,
        config=config,
        workdir=workdir,
        postgres_url=f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus",
        nats_url=f"nats://127.0.0.1:{nats_port}",
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
        yield running
    finally:
        code = await stop(up)
        print("up.log tail:", (workdir / "up.log").read_text()[-3000:])
        shutil.rmtree(workdir, ignore_errors=True)
        assert code == 0


@pytest_asyncio.fixture(loop_scope="module")
async def jetstream(pipeline: Pipeline) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(pipeline.nats_url)
    try:
        yield client.jetstream()
    finally:
        await client.close()
