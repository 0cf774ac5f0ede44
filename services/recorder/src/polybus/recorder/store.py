"""The event store's write side: idempotent batches into PostgreSQL, and its in-memory twin.

A batch is written in one transaction: for each table, ``COPY`` its rows into a per-connection
staging table (``ON COMMIT DELETE ROWS``), then ``INSERT … SELECT … ON CONFLICT DO NOTHING``
into the table, so a row whose key is already there (a redelivery, a re-publication) is not
written twice. Only after the commit does the caller ack the messages.

Market data is keyed by the asset dictionary (``assets``): the store maps each row's
(token_id, condition_id) to its integer key from an in-process cache. A pair the cache does not
know is inserted (``ON CONFLICT DO NOTHING``, then read back: a concurrent recorder's row is the
one both use) in the batch's own transaction, and enters the cache only after the commit - so a
rolled-back or crashed batch leaves neither the pair nor a cached key that does not exist.

Failures come in two kinds the caller treats differently: :class:`StoreUnavailable` (the
server is down, restarting or out of resources: retry the same batch later) and
:class:`RowsRejected` (the server refused the data itself: retrying cannot help, so the caller
isolates the offending rows and dead-letters them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import asyncpg
import structlog

from polybus.common.config import Config
from polybus.recorder.tables import ALL_TABLES, EventTable, RawTable, Row, Table

_log = structlog.get_logger("polybus.recorder.store")

Batch = Mapping[Table, Sequence[Row]]


AssetPair = tuple[str, str]
"""(token_id, condition_id): what the asset dictionary keys."""

_ADD_ASSETS = (
    "INSERT INTO assets (token_id, condition_id) "
    "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING"
)
# A statement of its own after the insert: in READ COMMITTED it sees the row a concurrent
# recorder committed while this one waited on the unique index.
_ASSET_KEYS = (
    "SELECT a.asset_id, a.token_id, a.condition_id FROM assets AS a "
    "JOIN unnest($1::text[], $2::text[]) AS n(token_id, condition_id) "
    "USING (token_id, condition_id)"
)


class StoreUnavailable(Exception):
    """The store cannot take the batch now; the same batch may succeed later."""


class RowsRejected(Exception):
    """The store refused the batch's data (a value it cannot hold); retrying will not help."""


class Store(Protocol):
    async def write(self, batch: Batch) -> dict[str, int]:
        """Write every row idempotently in one transaction; return rows inserted per table."""
        ...

    async def close(self) -> None: ...


async def connect(config: Config) -> asyncpg.Connection:
    """Connect to the deployment's database; the password comes from the secrets file only."""
    password = config.secrets.database.password
    connection: asyncpg.Connection = await asyncpg.connect(
        config.database_url(), password=password.reveal() if password else None, timeout=10
    )
    return connection


def stage_name(table: Table) -> str:
    return f"stage_{table.name}"


def _rejected(error: BaseException) -> bool:
    """Whether the server (or the driver, while encoding) refused the data itself."""
    if isinstance(error, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        return True
    # The driver raises these while encoding a value no column type can hold (an int beyond
    # BIGINT, a string with a NUL byte) - before anything reaches the server.
    return isinstance(error, ValueError | OverflowError | TypeError) and not isinstance(
        error, asyncpg.InterfaceError
    )


class PostgresStore:
    """Idempotent batch writes over one asyncpg connection, reconnecting after a failure."""

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], *, timeout: float = 30.0
    ) -> None:
        self._connect = connect
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None
        self._asset_keys: dict[AssetPair, int] = {}

    async def _open(self) -> asyncpg.Connection:
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        connection = await self._connect()
        try:
            for table in ALL_TABLES:
                # A temp table per connection: no name clashes between recorder instances, and
                # ON COMMIT DELETE ROWS empties it at each commit without a statement of ours.
                await connection.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage_name(table)} ON COMMIT DELETE ROWS "  # noqa: S608 - our own table names
                    f"AS SELECT {', '.join(table.stage_columns)} FROM {table.name} WITH NO DATA"
                )
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        return connection

    async def write(self, batch: Batch) -> dict[str, int]:
        try:
            # A server that vanishes mid-COPY can leave the client waiting on a dead socket:
            # the timeout turns that into an ordinary "unavailable, retry later".
            async with asyncio.timeout(self._timeout):
                return await self._write(batch)
        except Exception as error:
            if _rejected(error):
                raise RowsRejected(f"{type(error).__name__}: {error}") from error
            # Anything else - refused or reset connections, a server shutting down, a timeout,
            # a driver left mid-protocol by a connection that died under it ("another operation
            # is in progress") - may pass on a fresh connection: drop this one, retry later.
            await self._discard()
            raise StoreUnavailable(f"{type(error).__name__}: {error}") from error

    async def _write(self, batch: Batch) -> dict[str, int]:
        connection = await self._open()
        inserted: dict[str, int] = {}
        added: dict[AssetPair, int] = {}
        async with connection.transaction():
            for table, rows in batch.items():
                if not rows:
                    continue
                if table.uses_assets:
                    rows = await self._keyed(connection, rows, added)
                stage = stage_name(table)
                await connection.copy_records_to_table(
                    stage, records=rows, columns=table.stage_columns
                )
                status = await connection.execute(table.insert_sql(stage))
                # "INSERT 0 <rows>": the rows that were not already there.
                inserted[table.name] = int(status.rsplit(" ", 1)[1])
                if table.after_insert:
                    await connection.execute(table.after_insert.format(stage=stage))
        self._asset_keys.update(added)  # committed: the keys exist now
        return inserted

    async def _keyed(
        self, connection: asyncpg.Connection, rows: Sequence[Row], added: dict[AssetPair, int]
    ) -> list[Row]:
        """The rows with their leading (token_id, condition_id) replaced by the asset's key."""
        keys = self._asset_keys
        try:
            return [(keys[row[:2]], *row[2:]) for row in rows]
        except KeyError:
            pass
        # Sorted, so that two recorders adding the same new assets lock them in one order.
        missing = sorted({row[:2] for row in rows} - keys.keys() - added.keys())
        if missing:
            tokens, conditions = [p[0] for p in missing], [p[1] for p in missing]
            await connection.execute(_ADD_ASSETS, tokens, conditions)
            for record in await connection.fetch(_ASSET_KEYS, tokens, conditions):
                added[(record["token_id"], record["condition_id"])] = record["asset_id"]
        every = {**keys, **added}
        return [(every[row[:2]], *row[2:]) for row in rows]

    async def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=5)
            except Exception:
                connection.terminate()


def _key(table: Table, row: Row) -> tuple[object, ...]:
    if isinstance(table, RawTable):
        return (row[0], row[1])
    return (row[table.columns.index("event_id")],)


class MemoryStore:
    """The in-memory twin of :class:`PostgresStore` for unit tests: same idempotency by key.

    ``unavailable`` makes writes fail as if the server were down; ``reject`` names rows the
    "server" refuses (a batch containing one is refused whole, like a failed COPY).
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[object, ...], Row]] = {t.name: {} for t in ALL_TABLES}
        self.unavailable = False
        self.reject: Callable[[Table, Row], bool] = lambda table, row: False
        self.writes = 0
        self.failed_writes = 0

    async def write(self, batch: Batch) -> dict[str, int]:
        if self.unavailable:
            self.failed_writes += 1
            raise StoreUnavailable("memory store is unavailable")
        for table, rows in batch.items():
            if any(self.reject(table, row) for row in rows):
                raise RowsRejected(f"rejected a row of {table.name}")
        inserted: dict[str, int] = {}
        for table, rows in batch.items():
            stored = self.tables[table.name]
            before = len(stored)
            for row in rows:
                stored.setdefault(_key(table, row), row)
            inserted[table.name] = len(stored) - before
        self.writes += 1
        return inserted

    def rows(self, table: Table) -> list[Row]:
        return list(self.tables[table.name].values())

    def events(self, table: EventTable) -> list[object]:
        return [table.event(dict(zip(table.columns, row, strict=True))) for row in self.rows(table)]

    async def close(self) -> None:
        return None
