"""A small process supervisor: start children in order, restart crashed ones, stop in reverse.

A child that exits while the supervisor is running is restarted after an exponential backoff
(reset once it has stayed up for a minute); each restart is logged and counted
(``polybus_supervisor_restarts_total``). Shutdown stops the children started without waiting
for readiness (services: nothing waited for them, so nothing depends on them) all at once, then
the others newest first, so services stop before the servers they use and the whole stop fits the
2 s budget of a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

import structlog

from polybus.common import metrics
from polybus.common.infra import InfraError, ProcessSpec, run_as

_log = structlog.get_logger("polybus.supervisor")

STABLE_AFTER_S = 60.0
"""A child that ran this long before exiting restarts with the initial backoff again."""


@dataclass
class _Child:
    spec: ProcessSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    watcher: asyncio.Task[None] | None = None
    depended_on: bool = True
    """Started with ``wait_ready``: later children may use it, so it stops after them."""


class Supervisor:
    def __init__(
        self,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._stop_timeout = stop_timeout_s
        self._children: list[_Child] = []
        self._stopping = False

    def restarts(self) -> dict[str, int]:
        return {child.spec.name: child.restarts for child in self._children}

    def running(self) -> dict[str, int | None]:
        """Child name -> pid (``None`` while it is down)."""
        return {
            child.spec.name: child.process.pid
            if child.process is not None and child.process.returncode is None
            else None
            for child in self._children
        }

    async def start(self, spec: ProcessSpec, *, wait_ready: bool = True) -> None:
        """Start a supervised child; with ``wait_ready``, return once ``spec.ready()`` holds."""
        child = _Child(spec, depended_on=wait_ready)
        self._children.append(child)
        await self._launch(child)
        if wait_ready:
            await self._wait_ready(child)
        child.watcher = asyncio.get_running_loop().create_task(
            self._watch(child), name=f"supervise.{spec.name}"
        )

    async def _launch(self, child: _Child) -> None:
        spec = child.spec
        log = spec.log_file.open("ab") if spec.log_file is not None else None
        try:
            child.process = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT if log is not None else None,
                # Own session: a terminal's Ctrl-C reaches only us, and we stop children in order.
                start_new_session=True,
                **run_as(spec.user),
            )
        finally:
            if log is not None:
                log.close()
        metrics.SUPERVISOR_CHILD_UP.labels(spec.name).set(1)
        _log.info("supervisor.started", child=spec.name, pid=child.process.pid)

    async def _wait_ready(self, child: _Child) -> None:
        assert child.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + child.spec.ready_timeout_s
        while not await asyncio.to_thread(child.spec.ready):
            if child.process.returncode is not None:
                hint = f"; see {child.spec.log_file}" if child.spec.log_file else ""
                raise InfraError(
                    f"{child.spec.name} exited with code {child.process.returncode}{hint}"
                )
            if loop.time() > deadline:
                raise InfraError(
                    f"{child.spec.name} not ready after {child.spec.ready_timeout_s:.0f}s"
                )
            await asyncio.sleep(0.05)

    async def _watch(self, child: _Child) -> None:
        backoff = self._backoff_initial
        loop = asyncio.get_running_loop()
        while True:
            assert child.process is not None
            started = loop.time()
            code = await child.process.wait()
            metrics.SUPERVISOR_CHILD_UP.labels(child.spec.name).set(0)
            if self._stopping:
                return
            if loop.time() - started > STABLE_AFTER_S:
                backoff = self._backoff_initial
            child.restarts += 1
            metrics.SUPERVISOR_RESTARTS.labels(child.spec.name).inc()
            _log.warning(
                "supervisor.child_exited",
                child=child.spec.name,
                exit_code=code,
                restarts=child.restarts,
                restart_in_s=backoff,
            )
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            backoff = min(backoff * 2, self._backoff_max)
            try:
                await self._launch(child)
            except OSError as error:
                _log.error("supervisor.restart_failed", child=child.spec.name, error=repr(error))
                continue
            _log.info("supervisor.restarted", child=child.spec.name, restarts=child.restarts)

    async def shutdown(self) -> None:
        """Stop every child with its stop signal (SIGKILL on timeout): the services together,
        then the servers newest first."""
        self._stopping = True
        leaves = [child for child in self._children if not child.depended_on]
        await asyncio.gather(*(self._stop(child) for child in leaves))
        for child in reversed(self._children):
            if child.depended_on:
                await self._stop(child)

    async def _stop(self, child: _Child) -> None:
        if child.watcher is not None:
            child.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await child.watcher
        process = child.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, child.spec.stop_signal)
        try:
            code = await asyncio.wait_for(process.wait(), self._stop_timeout)
        except TimeoutError:
            _log.warning("supervisor.kill", child=child.spec.name, after_s=self._stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            code = await process.wait()
        metrics.SUPERVISOR_CHILD_UP.labels(child.spec.name).set(0)
        _log.info("supervisor.stopped", child=child.spec.name, exit_code=code)
