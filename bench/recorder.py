"""Recorder throughput into PostgreSQL, beside a raw COPY of the same rows in the same run.

    uv run python -m bench.recorder [--events 200000] [--batch 5000]

Starts its own PostgreSQL (the embedded launcher, fsync on, as ``polybus up`` runs it) and
nats-server on loopback, migrates a fresh database and measures, over a venue-like
market-data load (a snapshot per asset, then ~90% one/two-level deltas, trades, statuses):

- raw COPY (baselines): ``copy_records_to_table`` of the prepared rows (market data with its
  asset dictionary keys already in place) straight into (a) plain tables of the same columns, no
  keys or indexes, and (b) copies of the event tables with their keys and indexes
  (``event_key`` and ``ts_event`` computed here) - no staging, no conflict handling, no
  dictionary;
- idempotent write: :class:`PostgresStore` - COPY into staging, ``INSERT … SELECT … ON CONFLICT
  DO NOTHING`` into the keyed, indexed event tables, commit - of the same rows and batches;
- the same batches again (every row a duplicate: what a redelivery storm costs);
- decode + rows + idempotent write: from the JSON bytes on the bus, as the recorder does;
- end to end: the recorder's MD consumer loop draining a JetStream stream holding the events
  (fetch, decode, write, commit, ack);
- disk bytes per recorded event (heap, TOAST and indexes of the event tables).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import Event, decode, encode
from polybus.common.infra import RunningProcess, free_port
from polybus.common.infra.nats_server import nats_server_spec
from polybus.common.infra.postgres import SUPERUSER, ensure_database, postgres_spec
from polybus.common.streams import load_definitions
from polybus.common.subjects import Namespace
from polybus.recorder.config import RecorderSettings
from polybus.recorder.migrations import migrate
from polybus.recorder.recorder import build_loop
from polybus.recorder.store import PostgresStore
from polybus.recorder.tables import EVENT_TABLES, TABLE_FOR_TYPE, Row, Source, Table, timestamp
from tests.samples import market_data, subject_for

REPO = Path(__file__).resolve().parents[1]


def batches(rows: list[tuple[Table, Row]], size: int) -> list[dict[Table, list[Row]]]:
    out = []
    for start in range(0, len(rows), size):
        batch: dict[Table, list[Row]] = {}
        for table, row in rows[start : start + size]:
            batch.setdefault(table, []).append(row)
        out.append(batch)
    return out


def event_key(table: Table, row: Row) -> uuid.UUID:
    """What PostgreSQL computes as md5(event_id)::uuid."""
    event_id: str = row[table.stage_columns.index("event_id")]
    return uuid.UUID(bytes=hashlib.md5(event_id.encode()).digest())


def staged(work: list[dict[Table, list[Row]]]) -> list[dict[Table, list[Row]]]:
    """The rows as the store stages them: (token, condition) replaced by a dictionary key."""
    keys: dict[tuple[str, str], int] = {}
    return [
        {
            table: [(keys.setdefault(row[:2], len(keys) + 1), *row[2:]) for row in rows]
            if table.uses_assets
            else rows
            for table, rows in chunk.items()
        }
        for chunk in work
    ]


async def timed(count: int, run: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    started = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - started
    return count / elapsed, elapsed


async def fresh_database(port: int, name: str) -> asyncpg.Connection:
    await ensure_database("127.0.0.1", port, name)
    connection = await asyncpg.connect(f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{name}")
    await migrate(connection)
    return connection


def url_of(port: int, name: str) -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{name}"


async def raw_copies(
    port: int, work: list[dict[Table, list[Row]]], events: int
) -> tuple[float, float]:
    """(bare tables, keyed and indexed tables) events/s of a plain COPY of the same rows."""
    raw = await fresh_database(port, "raw")
    work = staged(work)
    for table in EVENT_TABLES:
        columns = ", ".join(table.stage_columns)
        await raw.execute(
            f"CREATE TABLE bare_{table.name} AS SELECT {columns} FROM {table.name} WITH NO DATA"
        )
        await raw.execute(f"CREATE TABLE keyed_{table.name} (LIKE {table.name} INCLUDING ALL)")
    keyed_work = [
        {
            table: [
                (
                    event_key(table, row),
                    timestamp(row[table.stage_columns.index("ts_event_ns")]),
                    *row,
                )
                for row in table_rows
            ]
            for table, table_rows in chunk.items()
        }
        for chunk in work
    ]

    async def copy(prefix: str, chunks: list[dict[Table, list[Row]]], keyed: bool) -> None:
        for chunk in chunks:
            async with raw.transaction():
                for table, table_rows in chunk.items():
                    columns = table.stage_columns
                    if keyed:
                        columns = ("event_key", "ts_event", *columns)
                    await raw.copy_records_to_table(
                        f"{prefix}_{table.name}", records=table_rows, columns=columns
                    )

    bare_rate, _ = await timed(events, lambda: copy("bare", work, keyed=False))
    keyed_rate, _ = await timed(events, lambda: copy("keyed", keyed_work, keyed=True))
    await raw.close()
    return bare_rate, keyed_rate


async def idempotent_writes(
    port: int, work: list[dict[Table, list[Row]]], events: int
) -> tuple[float, float, int, int]:
    """(events/s, events/s all duplicates, bytes per event, heap bytes per event)."""
    connection = await fresh_database(port, "idempotent")
    store = PostgresStore(lambda: asyncpg.connect(url_of(port, "idempotent")))

    async def write() -> None:
        for chunk in work:
            await store.write(chunk)

    rate, _ = await timed(events, write)
    duplicate_rate, _ = await timed(events, write)
    stored = sum(
        [await connection.fetchval(f"SELECT count(*) FROM {t.name}") for t in EVENT_TABLES]
    )
    assert stored == events, f"stored {stored} of {events}"
    sizes = [
        await connection.fetchrow(
            "SELECT pg_total_relation_size($1::regclass) AS total, "
            "pg_table_size($1::regclass) AS heap",
            name,
        )
        # The asset dictionary belongs to the rows that use it.
        for name in (*(t.name for t in EVENT_TABLES), "assets")
    ]
    await store.close()
    await connection.close()
    total = sum(r["total"] for r in sizes if r is not None)
    heap = sum(r["heap"] for r in sizes if r is not None)
    return rate, duplicate_rate, total // events, heap // events


async def decode_and_write(
    port: int, payloads: list[bytes], sources: list[Source], batch: int
) -> float:
    """From the JSON bytes on the bus, as the recorder does: decode, rows, idempotent write."""
    connection = await fresh_database(port, "decode")
    store = PostgresStore(lambda: asyncpg.connect(url_of(port, "decode")))

    async def run() -> None:
        for start in range(0, len(payloads), batch):
            chunk: dict[Table, list[Row]] = {}
            for data, source in zip(
                payloads[start : start + batch], sources[start : start + batch], strict=True
            ):
                event = decode(data)
                table = TABLE_FOR_TYPE[type(event)]
                chunk.setdefault(table, []).append(table.row(event, source))
            await store.write(chunk)

    rate, _ = await timed(len(payloads), run)
    await store.close()
    await connection.close()
    return rate


async def end_to_end(pg_port: int, nats_port: int, sample: list[Event], batch: int) -> float:
    """The recorder's MD loop draining a stream that holds every event."""
    connection = await fresh_database(pg_port, "e2e")
    namespace = Namespace("bench", "BENCH_")
    bus = await NatsBus.connect(f"nats://127.0.0.1:{nats_port}", name="bench", namespace=namespace)
    definitions = load_definitions(REPO / "config" / "streams.toml")
    await bus.apply(definitions)
    for event in sample:
        await bus.publish(subject_for(namespace.subjects, event), event, msg_id=event.event_id)
    await bus.flush()
    stream = namespace.stream("MD")
    while (await bus.js.stream_info(stream)).state.messages < len(sample):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    stop = asyncio.Event()
    loop = build_loop(
        bus,
        namespace,
        definitions.consumer_named("MD", "recorder"),
        PostgresStore(lambda: asyncpg.connect(url_of(pg_port, "e2e"))),
        RecorderSettings(batch_max_events=batch, fetch_timeout_s=0.2),
        stop,
    )
    assert loop is not None
    task = asyncio.create_task(loop.run())

    async def drained() -> None:
        while (await bus.js.consumer_info(stream, "recorder")).ack_floor.stream_seq < len(sample):  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    rate, _ = await timed(len(sample), drained)
    stop.set()
    await task
    await bus.drain()
    await connection.close()
    return rate


async def main(events: int, batch: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="polybus-bench-recorder-"))
    os.chmod(base, 0o755)  # the server may run as another user (see the test fixtures)
    pg_port, nats_port = free_port(), free_port()
    postgres = RunningProcess(
        postgres_spec(data_dir=base / "pg", port=pg_port, log_file=base / "pg.log", durable=True)
    )
    nats_server = RunningProcess(
        nats_server_spec(
            store_dir=base / "js", port=nats_port, monitor_port=free_port(), log_file=base / "n.log"
        )
    )
    try:
        await run(events, batch, pg_port, nats_port)
    finally:
        nats_server.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


async def run(events: int, batch: int, pg_port: int, nats_port: int) -> None:
    sample: list[Event] = list(market_data(events, assets=500))
    payloads = [encode(e) for e in sample]
    sources = [Source("MD", n, f"md.polymarket.{n % 16}.delta.x") for n in range(1, events + 1)]
    rows = [
        (TABLE_FOR_TYPE[type(e)], TABLE_FOR_TYPE[type(e)].row(e, s))
        for e, s in zip(sample, sources, strict=True)
    ]
    kinds: dict[str, int] = {}
    for table, _ in rows:
        kinds[table.name] = kinds.get(table.name, 0) + 1
    print(f"{events} market-data events in batches of {batch}: {kinds}")
    print(f"mean JSON size {sum(map(len, payloads)) / events:.0f} B")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    work = batches(rows, batch)
    # The prepared events, payloads and rows are ~1.5M long-lived objects the recorder itself
    # never holds; keep the garbage collector from rescanning them in every measurement.
    gc.collect()
    gc.freeze()
    bare, keyed = await raw_copies(pg_port, work, events)
    idempotent, duplicates, total, heap = await idempotent_writes(pg_port, work, events)
    full = await decode_and_write(pg_port, payloads, sources, batch)
    e2e = await end_to_end(pg_port, nats_port, sample, batch)
    print()
    for label, value in (
        ("raw COPY into bare tables (no keys, no indexes)", bare),
        ("raw COPY into the keyed, indexed event tables", keyed),
        ("idempotent: staging COPY + INSERT ON CONFLICT", idempotent),
        ("idempotent, every row already stored", duplicates),
        ("decode JSON + build rows + idempotent write", full),
        ("end to end: JetStream -> recorder -> commit -> ack", e2e),
    ):
        print(f"{label:<52} {value:>10,.0f} events/s")
    print(
        f"idempotent / raw COPY: {idempotent / keyed:.2f}x (same tables), "
        f"{idempotent / bare:.2f}x (bare tables)"
    )
    print(f"end to end / idempotent write: {e2e / idempotent:.2f}x")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"disk per recorded event: {total:,} B with indexes ({heap:,} B heap), "
        "plain PostgreSQL, uncompressed"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.batch))
