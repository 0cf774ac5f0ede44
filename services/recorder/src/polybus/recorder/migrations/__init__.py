"""Versioned SQL migrations of the event store, and the small runner that applies them.

The migrations are the ``NNNN_name.sql`` files beside this module, applied in version order,
each in its own transaction, and recorded in ``schema_migrations`` (version, name, checksum,
applied_at, polybus version). Re-running applies nothing new. A database that records a version
this polybus does not know (migrated by a newer polybus) is refused, and so is an applied file
whose checksum changed.

A file whose first line is ``-- requires: timescaledb >= X.Y`` is guarded: it is applied only
when the server offers that TimescaleDB (``pg_available_extensions``) and preloads it, and is
otherwise skipped without a record, so a later migrate that finds the extension applies it.
A session advisory lock serialises concurrent runners (``polybus up`` and a recorder starting).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

import asyncpg
import structlog

from polybus.common import __version__
from polybus.common.config import Config
from polybus.recorder.store import connect

_log = structlog.get_logger("polybus.recorder.migrations")

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_REQUIRES = re.compile(
    r"^--\s*requires:\s*timescaledb\s*>=\s*(?P<major>\d+)\.(?P<minor>\d+)\s*$", re.MULTILINE
)
_LOCK_KEY = 0x706F6C7962757301
"""The advisory lock id ("polybus" + 1) held while migrating."""

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version         INTEGER     PRIMARY KEY,
    name            TEXT        NOT NULL,
    checksum        TEXT        NOT NULL,
    applied_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    polybus_version TEXT        NOT NULL
)
"""


class MigrationError(Exception):
    """The database cannot be migrated by this polybus (newer schema, edited migration)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str
    requires_timescaledb: tuple[int, int] | None = None
    """The minimum TimescaleDB (major, minor) a guarded migration needs; None: always applied."""


@dataclass
class MigrationReport:
    applied: list[Migration] = field(default_factory=list)
    skipped: list[tuple[Migration, str]] = field(default_factory=list)
    """Guarded migrations not applied, with the reason."""
    already_applied: list[int] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"applied {m.version:04d}_{m.name}" for m in self.applied]
        lines += [f"skipped {m.version:04d}_{m.name}: {why}" for m, why in self.skipped]
        if not self.applied:
            lines.append("schema is up to date")
        return lines


def load_migrations() -> list[Migration]:
    """Every migration shipped in this package, in version order."""
    migrations = []
    for entry in resources.files(__name__).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        requires = _REQUIRES.search(sql.split("\n", 1)[0])
        migrations.append(
            Migration(
                version=int(match["version"]),
                name=match["name"],
                sql=sql,
                checksum=hashlib.sha256(sql.encode()).hexdigest(),
                requires_timescaledb=(
                    (int(requires["major"]), int(requires["minor"])) if requires else None
                ),
            )
        )
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version: {versions}")
    return migrations


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


async def timescaledb_unavailable(
    connection: asyncpg.Connection, minimum: tuple[int, int]
) -> str | None:
    """Why TimescaleDB ``minimum`` cannot be used on this server, or None when it can."""
    version = await connection.fetchval(
        "SELECT coalesce(installed_version, default_version) FROM pg_available_extensions "
        "WHERE name = 'timescaledb'"
    )
    if version is None:
        return "timescaledb is not available on this server"
    if _version_tuple(version) < minimum:
        return f"timescaledb {version} is older than {minimum[0]}.{minimum[1]}"
    preload = await connection.fetchval("SELECT current_setting('shared_preload_libraries')")
    if "timescaledb" not in (preload or ""):
        return "timescaledb is not in shared_preload_libraries"
    return None


async def migrate(
    connection: asyncpg.Connection, migrations: list[Migration] | None = None
) -> MigrationReport:
    """Apply every migration not yet applied; refuse a database migrated by a newer polybus."""
    migrations = load_migrations() if migrations is None else migrations
    known = {m.version: m for m in migrations}
    latest = max(known, default=0)
    report = MigrationReport()
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await connection.execute(_BOOTSTRAP)
        applied = {
            row["version"]: row
            for row in await connection.fetch(
                "SELECT version, name, checksum, polybus_version FROM schema_migrations"
            )
        }
        newer = sorted(v for v in applied if v > latest or v not in known)
        if newer:
            row = applied[newer[-1]]
            raise MigrationError(
                f"the database schema is at version {newer[-1]} ({row['name']}, applied by "
                f"polybus {row['polybus_version']}); this polybus {__version__} knows versions "
                f"up to {latest}: upgrade polybus, it will not run against a newer schema"
            )
        for version, row in applied.items():
            if row["checksum"] != known[version].checksum:
                raise MigrationError(
                    f"migration {version:04d}_{row['name']} changed after it was applied "
                    "(checksum differs): ship a new migration instead of editing an old one"
                )
        report.already_applied = sorted(applied)
        for migration in migrations:
            if migration.version in applied:
                continue
            if migration.requires_timescaledb is not None:
                reason = await timescaledb_unavailable(connection, migration.requires_timescaledb)
                if reason is not None:
                    report.skipped.append((migration, reason))
                    _log.info(
                        "migrations.skipped",
                        version=migration.version,
                        migration=migration.name,
                        reason=reason,
                    )
                    continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, polybus_version) "
                    "VALUES ($1, $2, $3, $4)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                    __version__,
                )
            report.applied.append(migration)
            _log.info("migrations.applied", version=migration.version, migration=migration.name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return report


async def migrate_database(config: Config) -> MigrationReport:
    """Connect to the deployment's database and migrate it."""
    connection = await connect(config)
    try:
        return await migrate(connection)
    finally:
        await connection.close()


async def prepare(config: Config) -> None:
    """The plugin's ``prepare`` step: ``polybus up`` migrates before any service starts."""
    report = await migrate_database(config)
    _log.info(
        "migrations.done",
        applied=[m.version for m in report.applied],
        skipped=[m.version for m, _ in report.skipped],
    )
