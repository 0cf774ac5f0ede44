"""How the PostgreSQL store classifies failures (without a server: a stand-in connection)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from polybus.recorder.store import PostgresStore, RowsRejected, StoreUnavailable
from polybus.recorder.tables import TABLE_FOR_TYPE, Source
from tests.samples import one_of_each


class BrokenConnection:
    """Fails its first transaction with ``error``; remembers whether it was thrown away."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.terminated = False

    def is_closed(self) -> bool:
        return self.terminated

    async def execute(self, query: str, *args: Any) -> str:
        return "CREATE TABLE"

    def transaction(self) -> Any:
        raise self.error

    def terminate(self) -> None:
        self.terminated = True


def a_batch() -> dict[Any, Any]:
    [event, *_] = one_of_each(1)
    table = TABLE_FOR_TYPE[type(event)]
    return {table: [table.row(event, Source("MD", 1, "md.polymarket.1.market.x"))]}


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("closed in the middle"),
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress"),
        asyncpg.DiskFullError("no space left"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_failures_that_may_pass_later_drop_the_connection_and_say_unavailable(
    error: BaseException,
) -> None:
    connections: list[BrokenConnection] = []

    async def connect() -> Any:
        connections.append(BrokenConnection(error))
        return connections[-1]

    store = PostgresStore(connect)
    with pytest.raises(StoreUnavailable):
        await store.write(a_batch())
    assert connections[0].terminated
    with pytest.raises(StoreUnavailable):
        await store.write(a_batch())
    assert len(connections) == 2  # a fresh connection for the retry


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
        asyncpg.NotNullViolationError("null value"),
        OverflowError("int too big to convert"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_data_the_database_cannot_hold_is_rejected(error: BaseException) -> None:
    async def connect() -> Any:
        return BrokenConnection(error)

    with pytest.raises(RowsRejected):
        await PostgresStore(connect).write(a_batch())
