"""The running system the fault scenarios and the soak (bench/soak.py) act on.

`polybus up --live` on a copy of config/sim.toml on free ports, with the executor trading live
against the built-in simulator (a throwaway key: the simulator takes every signer), so that the
venue's faults (425/503/429 windows, heartbeat cancels) reach it as they would in production.
Every service is its own child of `up` (sim, ingest, recorder, executor, both strategies) beside
the embedded nats-server and PostgreSQL; faults kill children by pid (found from the process
tree of `up`) and the supervisor restarts them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
from nats.js import JetStreamContext

from tests.e2e.test_out_of_the_box import shipped_config_on_free_ports
from tests.helpers import eventually, healthy_status, polybus, start_up, stop, write_secrets

SERVICES = frozenset(
    {"sim", "ingest", "recorder", "executor", "strategy.dutch_book", "strategy.spread_capture"}
)
"""The processes a user sees in `polybus status` once the system is up (by child name)."""
SERVERS = frozenset({"nats-server", "postgres"})
PRIVATE_KEY = "0x" + "fa" * 32
"""Any key: the simulator takes every signer (docs/simulator.md)."""
STALL_TIMEOUT_S = 5
"""The ingest's socket watchdog here (30 s shipped): a silent stall is seen within seconds."""


def children_of(pid: int) -> list[int]:
    """The pids of the live children of ``pid`` (from /proc)."""
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


def _setting(config: Path, key: str) -> str:
    return next(
        line.split("=")[1].strip()
        for line in config.read_text().splitlines()
        if line.startswith(f"{key} =")
    )


def write_config(workdir: Path) -> tuple[Path, int]:
    """config/sim.toml on free ports with the executor live against its simulator; returns
    the config and PostgreSQL's port."""
    config, postgres_port = shipped_config_on_free_ports(workdir)
    write_secrets(workdir / "secrets.toml", f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n')
    sim = f"127.0.0.1:{_setting(config, 'port')}"
    text = 'secrets_file = "secrets.toml"\n' + config.read_text()
    replacements = {
        r'^mode = "paper"$': f'mode = "live"\nclob_url = "http://{sim}"\n'
        f'user_ws_url = "ws://{sim}/ws/user"',
        r"^refresh_interval_s = (\d+)$": rf"refresh_interval_s = \1\n"
        f"stall_timeout_s = {STALL_TIMEOUT_S}",
    }
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"config/sim.toml has no single line matching {pattern}"
    # The shipped risk limits, the reject breaker included: the book's answers to orders that
    # raced it do not count towards it (docs/executor.md), so nothing here trips it.
    config.write_text(text)
    return config, postgres_port


@dataclass
class Pipeline:
    up_pid: int
    config: Path
    workdir: Path
    postgres_url: str
    nats_url: str

    def children(self) -> dict[str, int]:
        """Child name -> pid, for every live child of `up`."""
        named = {}
        for pid in children_of(self.up_pid):
            name = child_name(pid)
            if name is not None:
                named[name] = pid
        return named

    def sim_url(self) -> str:
        return f"http://127.0.0.1:{_setting(self.config, 'port')}"

    def stream(self, name: str) -> str:
        return name  # config/sim.toml has no bus.stream_prefix

    async def cli(self, *args: str) -> tuple[int, str]:
        return await polybus(*args, "--config", str(self.config), cwd=self.workdir)

    async def status(self) -> tuple[int, dict[str, Any]]:
        """`polybus status --json`: its exit code (0: healthy) and what it printed."""
        code, out = await self.cli("status", "--json")
        return code, json.loads(out)

    async def database(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(self.postgres_url)
        return connection

    async def sim_fault(self, name: str, **body: Any) -> dict[str, Any]:
        """``POST /admin/faults/<name>`` at the simulator; its answer."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.sim_url()}/admin/faults/{name}", json=body) as response,
        ):
            answer: dict[str, Any] = await response.json()
            assert response.status == 200, answer
            return answer

    async def sim_faults(self) -> dict[str, Any]:
        """``GET /admin/faults``: which of the simulator's faults are on."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.sim_url()}/admin/faults") as response,
        ):
            status: dict[str, Any] = await response.json()
            return status

    @contextlib.asynccontextmanager
    async def jetstream(self) -> AsyncIterator[JetStreamContext]:
        # A check's own connection: its calls fail or succeed by themselves, and nats-py's
        # default error callback would print a traceback per reconnect attempt while a fault
        # has the server down (the soak's output is read by a person).
        client = await nats.connect(self.nats_url, error_cb=_ignore)
        try:
            yield client.jetstream()
        finally:
            await client.close()


async def _ignore(error: Exception) -> None:
    del error


@contextlib.asynccontextmanager
async def running_pipeline(prefix: str = "polybus-faults-") -> AsyncIterator[Pipeline]:
    """The system up and every service running; stopped (SIGTERM, exit 0 asserted) and its
    work directory removed on leaving, the tail of its log printed."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(workdir, 0o755)  # PostgreSQL may run as another user
    config, postgres_port = write_config(workdir)
    up = await start_up(config, workdir, "--live")
    running = Pipeline(
        up_pid=up.pid,
        config=config,
        workdir=workdir,
        postgres_url=f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus",
        nats_url=f"nats://127.0.0.1:{_setting(config, 'nats_port')}",
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
        try:
            code = await stop(up)
        except ProcessLookupError:  # it stopped by itself (Ctrl-C reaches it too)
            code = await up.wait()
        print("up.log tail:", (workdir / "up.log").read_text()[-3000:])
        shutil.rmtree(workdir, ignore_errors=True)
    assert code == 0, f"polybus up exited {code} on SIGTERM"
