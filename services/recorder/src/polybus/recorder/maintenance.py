"""Retention on plain PostgreSQL: ``polybus db prune --older-than 30d [--table …]``.

On TimescaleDB the retention policies of migration 0002 do this; prune still works there and
drops whole chunks of a hypertable (``drop_chunks``) instead of deleting rows.
Without ``--table``, prune touches market data, heartbeats and dead letters only: orders,
fills, positions and risk events are the trading record and are pruned only when named.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from polybus.recorder.tables import (
    ALL_TABLES,
    CONTROL_MESSAGES,
    DEAD_LETTERS,
    MARKET_DATA_TABLES,
    SERVICE_HEALTH,
    UNDECODABLE_MESSAGES,
)

_log = structlog.get_logger("polybus.recorder.maintenance")

DEFAULT_PRUNE_TABLES: tuple[str, ...] = (
    *(t.name for t in MARKET_DATA_TABLES),
    SERVICE_HEALTH.name,
    DEAD_LETTERS.name,
    UNDECODABLE_MESSAGES.name,
)
PRUNABLE_TABLES: dict[str, str] = {
    table.name: "received_at" if table in (CONTROL_MESSAGES, UNDECODABLE_MESSAGES) else "ts_event"
    for table in ALL_TABLES
}
"""Every table that prune may touch, with its time column."""

_DELETE_BATCH = 50_000


async def _is_hypertable(connection: asyncpg.Connection, table: str) -> bool:
    installed = await connection.fetchval(
        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
    )
    if not installed:
        return False
    return bool(
        await connection.fetchval(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = $1", table
        )
    )


async def prune(
    connection: asyncpg.Connection, cutoff: datetime, tables: tuple[str, ...] = ()
) -> dict[str, int]:
    """Delete rows older than ``cutoff`` from ``tables`` (default: :data:`DEFAULT_PRUNE_TABLES`).

    Returns rows deleted per table (chunks dropped, on a hypertable). Deletes in batches of
    50,000 rows, each its own transaction, so a big prune neither holds locks for long nor
    bloats one transaction.
    """
    names = tables or DEFAULT_PRUNE_TABLES
    unknown = [name for name in names if name not in PRUNABLE_TABLES]
    if unknown:
        raise ValueError(
            f"unknown table {', '.join(unknown)} (tables: {', '.join(sorted(PRUNABLE_TABLES))})"
        )
    removed: dict[str, int] = {}
    for name in names:
        column = PRUNABLE_TABLES[name]
        if await _is_hypertable(connection, name):
            dropped = await connection.fetch(
                "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)", name, cutoff
            )
            removed[name] = len(dropped)
            continue
        total = 0
        while True:
            status = await connection.execute(
                f"DELETE FROM {name} WHERE ctid = ANY(ARRAY("  # noqa: S608 - names from PRUNABLE_TABLES
                f"SELECT ctid FROM {name} WHERE {column} < $1 LIMIT {_DELETE_BATCH}))",
                cutoff,
            )
            deleted = int(status.rsplit(" ", 1)[1])
            total += deleted
            if deleted < _DELETE_BATCH:
                break
        removed[name] = total
        _log.info("prune.table_done", table=name, deleted=total, cutoff=cutoff.isoformat())
    return removed
