"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from polybus.common.infra import RunningProcess, free_port
from polybus.common.infra.nats_server import nats_server_spec
from tests.secret_guard import register_secrets_file


class RestartableNats:
    """A nats-server on ports and a store directory of its own, to stop and start again (a
    restart keeps what JetStream stored; clients reconnect to the same URL)."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.port, self.monitor_port = free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> RunningProcess:
        return RunningProcess(
            nats_server_spec(
                store_dir=self.store_dir, port=self.port, monitor_port=self.monitor_port
            )
        )


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str, poll: float = 0.05
) -> None:
    """Wait until ``predicate()`` holds (sync or async), or fail naming ``what``.

    For conditions that live in another process or server, where there is no event to await.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(poll)


@contextlib.asynccontextmanager
async def running(service: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``service`` (a service's ``run(...)``) as a task while inside; cancel it on leaving."""
    task = asyncio.create_task(service)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write_secrets(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write a secrets file (mode ``mode``); the secret guard learns its values and does not
    count the file itself as a leak (``tests/secret_guard.py``)."""
    path.write_text(text)
    path.chmod(mode)
    register_secrets_file(path)
    return path


# -- `polybus` as an operator runs it (subprocesses) ------------------------------------------
async def polybus(*args: str, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def start_up(config: Path, workdir: Path, *args: str) -> asyncio.subprocess.Process:
    """``polybus up --config config [args]`` (``--live``), its output in ``workdir/up.log``."""
    with (workdir / "up.log").open("ab") as log:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polybus.common.cli", "up", "--config", str(config), *args,
            cwd=workdir, stdout=log, stderr=log,
        )  # fmt: skip


async def healthy_status(
    config: Path, workdir: Path, services: frozenset[str] = frozenset({"supervisor"})
) -> dict[str, Any]:
    """Poll ``polybus status --json`` until it exits 0 with every one of ``services`` healthy."""
    status: dict[str, Any] = {}

    async def is_healthy() -> bool:
        code, out = await polybus("status", "--json", "--config", str(config), cwd=workdir)
        status.clear()
        status.update(json.loads(out))
        healthy = {service["service"] for service in status["services"] if service["healthy"]}
        return code == 0 and services <= healthy

    await eventually(is_healthy, 90, f"polybus status to report {sorted(services)} healthy", 0.5)
    return status


async def stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, as an init system or Ctrl-C would; returns the exit code."""
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 60)
