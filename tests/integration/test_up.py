"""`polybus up` as a new user runs it: starts everything, reports healthy, stops cleanly on
SIGTERM with exit 0, and keeps its data across restarts."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from polybus.common.infra import free_port
from tests.conftest import STREAMS_FILE
from tests.helpers import eventually


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: that is 0700, and PostgreSQL may run as another user.
    path = Path(tempfile.mkdtemp(prefix="polybus-up-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(workdir: Path) -> tuple[Path, int, int]:
    nats_port, postgres_port = free_port(), free_port()
    config = workdir / "polybus.toml"
    config.write_text(
        f"""venue = "sim"
[bus]
streams_file = "{STREAMS_FILE}"
[embedded]
nats_port = {nats_port}
nats_monitor_port = {free_port()}
postgres_port = {postgres_port}
[log]
format = "json"
[supervisor]
metrics_port = 0
heartbeat_interval_s = 0.5
# This test is about the platform; the services have their own end-to-end tests.
[sim]
enabled = false
[ingest]
enabled = false
[recorder]
enabled = false
"""
    )
    return config, nats_port, postgres_port


async def polybus(*args: str, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def start_up(config: Path, workdir: Path) -> asyncio.subprocess.Process:
    with (workdir / "up.log").open("ab") as log:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polybus.common.cli", "up", "--config", str(config),
            cwd=workdir, stdout=log, stderr=log,
        )  # fmt: skip


async def healthy_status(config: Path, workdir: Path) -> dict[str, object]:
    status: dict[str, object] = {}

    async def is_healthy() -> bool:
        code, out = await polybus("status", "--json", "--config", str(config), cwd=workdir)
        status.update(json.loads(out))
        return code == 0 and any(s["service"] == "supervisor" for s in status["services"])  # type: ignore[index,union-attr]

    await eventually(is_healthy, 90, "polybus status --json to report healthy", poll=0.5)
    return status


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 60)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_up_reports_healthy_stops_cleanly_and_keeps_data(workdir: Path) -> None:
    config, nats_port, postgres_port = write_config(workdir)
    up = await start_up(config, workdir)
    try:
        status = await healthy_status(config, workdir)
        assert status["healthy"] is True
        assert status["nats"] == {
            "url": f"nats://127.0.0.1:{nats_port}",
            "reachable": True,
            "error": "",
        }
        assert {s["name"] for s in status["streams"]} >= {"MD", "INTENT", "EXEC"}  # type: ignore[index,union-attr]
        # Leave something in each store.
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")
        await nc.jetstream().publish("md.polymarket.0.book.1", b"{}")
        await nc.close()
        db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus")
        await db.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await db.close()
    finally:
        code = await stop(up)
    assert code == 0, (workdir / "up.log").read_text()[-3000:]
    assert (workdir / "var" / "nats").is_dir()
    assert (workdir / "var" / "pg" / "PG_VERSION").is_file()

    again = await start_up(config, workdir)
    try:
        status = await healthy_status(config, workdir)
        [md] = [s for s in status["streams"] if s["name"] == "MD"]  # type: ignore[index,union-attr]
        assert md["messages"] == 1
        db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus")
        assert await db.fetchval("SELECT x FROM kept") == 42
        await db.close()
    finally:
        assert await stop(again) == 0
    log = (workdir / "up.log").read_text()
    assert '"event": "up.stopped"' in log
    # Servers stop after the services: postgres and nats are the last children stopped.
    stopped = [
        json.loads(line)["child"] for line in log.splitlines() if '"supervisor.stopped"' in line
    ]
    assert stopped[-2:] == ["postgres", "nats-server"]


async def test_status_reports_unreachable_servers_and_exits_1(workdir: Path) -> None:
    config, _, _ = write_config(workdir)
    code, out = await polybus("status", "--json", "--config", str(config), cwd=workdir)
    assert code == 1
    status = json.loads(out)
    assert status["healthy"] is False
    assert status["nats"]["reachable"] is False
    assert status["postgres"]["reachable"] is False
