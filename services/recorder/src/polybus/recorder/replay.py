"""Replay from the store: recorded market data back onto the bus (or into a file), in order.

``polybus replay --from-db --market ID|--asset ID --start T --end T [--speed 1x|max]
[--to-subject-prefix P | --out FILE]`` calls :func:`replay_store` (the ``replay_store`` hook).

Events are read back exactly as recorded (same JSON) for the window ``start <= ts_event < end``,
widened back per asset to its last snapshot at or before ``start`` (and per market to its last
MarketInfo), so a consumer has whole books from the first event. They are published in recorded
order - the order the ingest created them (``ts_init``, then the MD stream's sequence) - under a
separate subject prefix (default ``replay``), so live consumers never see them while a strategy
configured with ``bus.subject_prefix = "replay"`` consumes them with the same code.
``--market`` replays every asset of the market (from its recorded MarketInfo and snapshots) plus
its MarketInfo/MarketResolved events; ``--asset`` one asset plus its market's. ``--speed 1x``
keeps the recorded spacing, ``10x`` compresses it, ``max`` publishes as fast as possible.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    Event,
    MarketInfo,
    MarketResolved,
    TickSizeChanged,
    Trade,
    encode,
)
from polybus.common.subjects import MarketDataKind, Namespace, Subjects, partition_of
from polybus.recorder.store import connect
from polybus.recorder.tables import (
    MARKET_DATA_TABLES,
    MARKET_RESOLUTIONS,
    MARKETS,
    EventTable,
)
from polybus.recorder.timespec import parse_speed, parse_time

_KIND: dict[type[Event], MarketDataKind] = {
    BookSnapshot: "book",
    BookDelta: "delta",
    Trade: "trade",
    TickSizeChanged: "status",
    BookStatus: "status",
    MarketInfo: "market",
    MarketResolved: "market",
}


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event read back from the store, with where it was published."""

    event: Event
    part: int | None
    order: tuple[int, int]
    """(ts_init_ns, stream_seq): the recorded order."""


@dataclass(frozen=True)
class ReplaySelection:
    """What a replay covers: assets and markets, each from when its replay begins."""

    assets: tuple[str, ...]
    asset_since: tuple[datetime, ...]
    """Per asset: its last snapshot at or before ``start`` (else ``start``)."""
    conditions: tuple[str, ...]
    condition_since: tuple[datetime, ...]
    """Per market: its last MarketInfo at or before ``start`` (else ``start``)."""
    start: datetime
    end: datetime


_SINCE_SQL = """
SELECT k.key, coalesce(
    (SELECT max(t.ts_event) FROM {source} WHERE {column} = k.key AND t.ts_event <= $2), $2
) AS since
FROM unnest($1::text[]) AS k(key)
"""
_SNAPSHOTS_BY_TOKEN = ("book_snapshots AS t JOIN assets AS a USING (asset_id)", "a.token_id")
_MARKETS_BY_CONDITION = ("markets AS t", "t.condition_id")


async def _since(
    connection: asyncpg.Connection,
    source: tuple[str, str],
    keys: list[str],
    start: datetime,
) -> tuple[datetime, ...]:
    """Per key, the time of its table's last row at or before ``start`` (else ``start``)."""
    table, column = source
    rows = await connection.fetch(_SINCE_SQL.format(source=table, column=column), keys, start)
    since = {r["key"]: r["since"] for r in rows}
    return tuple(since[key] for key in keys)


async def select(
    connection: asyncpg.Connection, *, market: str, asset: str, start: datetime, end: datetime
) -> ReplaySelection:
    """Which assets and markets a replay covers, and from when.

    A replay of a window starts each asset at its last recorded snapshot at or before
    ``start`` (and each market at its last MarketInfo), so a consumer has a whole book - and the
    market's tick and fees - from the first event on: the window is widened back to those
    events, never narrowed.
    """
    if market:
        records = await connection.fetch(
            "SELECT token_id AS asset_id FROM outcomes WHERE condition_id = $1 "
            "UNION SELECT token_id FROM assets WHERE condition_id = $1",
            market,
        )
        assets = sorted(r["asset_id"] for r in records)
        conditions = [market]
    else:
        condition = await connection.fetchval(
            "SELECT condition_id FROM outcomes WHERE token_id = $1", asset
        )
        assets = [asset]
        conditions = [condition] if condition else []
    return ReplaySelection(
        assets=tuple(assets),
        asset_since=await _since(connection, _SNAPSHOTS_BY_TOKEN, assets, start),
        conditions=tuple(conditions),
        condition_since=await _since(connection, _MARKETS_BY_CONDITION, conditions, start),
        start=start,
        end=end,
    )


async def _rows(
    connection: asyncpg.Connection,
    table: EventTable,
    column: str,
    keys: Sequence[str],
    since: Sequence[datetime],
    end: datetime,
) -> AsyncIterator[RecordedEvent]:
    query = (
        f"{table.query} "
        f"JOIN unnest($1::text[], $2::timestamptz[]) AS w(key, since) ON {column} = w.key "
        "WHERE t.ts_event >= w.since AND t.ts_event < $3 "
        "ORDER BY t.ts_init_ns, t.stream_seq"
    )
    async for record in connection.cursor(query, list(keys), list(since), end, prefetch=2000):
        yield RecordedEvent(
            table.event(record), record["part"], (record["ts_init_ns"], record["stream_seq"])
        )


async def recorded_events(
    connection: asyncpg.Connection, selection: ReplaySelection
) -> AsyncIterator[RecordedEvent]:
    """The selection's events in recorded order: a k-way merge of one cursor per table.

    Must run inside a transaction (server-side cursors live in one).
    """
    sources: list[AsyncIterator[RecordedEvent]] = []
    if selection.assets:
        sources += [
            _rows(
                connection,
                table,
                "a.token_id",
                selection.assets,
                selection.asset_since,
                selection.end,
            )
            for table in MARKET_DATA_TABLES
        ]
    if selection.conditions:
        sources.append(
            _rows(
                connection,
                MARKETS,
                "t.condition_id",
                selection.conditions,
                selection.condition_since,
                selection.end,
            )
        )
        sources.append(
            _rows(
                connection,
                MARKET_RESOLUTIONS,
                "t.condition_id",
                selection.conditions,
                [selection.start] * len(selection.conditions),
                selection.end,
            )
        )
    heap: list[tuple[tuple[int, int], int, RecordedEvent]] = []
    for index, source in enumerate(sources):
        first = await anext(source, None)
        if first is not None:
            heap.append((first.order, index, first))
    heapq.heapify(heap)
    while heap:
        _, index, recorded = heapq.heappop(heap)
        yield recorded
        following = await anext(sources[index], None)
        if following is not None:
            heapq.heappush(heap, (following.order, index, following))


def subject_of(subjects: Subjects, recorded: RecordedEvent, partitions: int) -> str:
    """The subject the event was published on (under ``subjects``' prefix)."""
    event = recorded.event
    key_attribute = "condition_id" if isinstance(event, MarketInfo | MarketResolved) else "asset_id"
    key: str = getattr(event, key_attribute)
    part = recorded.part
    if part is None:
        # Recorded from a subject without a partition token: compute it as the ingest would.
        part = partition_of(getattr(event, "condition_id", key), partitions)
    return subjects.market_data(part, _KIND[type(event)], key)


async def replay(
    config: Config,
    *,
    market: str,
    asset: str,
    start: datetime,
    end: datetime,
    speed: float | None,
    to_subject_prefix: str,
    out: Path | None,
) -> int:
    """Replay the window; returns the number of events replayed."""
    connection = await connect(config)
    bus: NatsBus | None = None
    sink = None
    count = 0
    try:
        selection = await select(connection, market=market, asset=asset, start=start, end=end)
        subjects = Subjects(to_subject_prefix)
        if out is not None:
            sink = out.open("wb")
        else:
            bus = await NatsBus.connect(
                config.nats_url(),
                name="polybus-replay",
                namespace=Namespace(subject_prefix=to_subject_prefix),
                secrets=config.secrets,
                reconnect=False,
            )
        partitions = config.deployment.bus.partitions
        origin: tuple[float, int] | None = None
        async with connection.transaction(readonly=True):
            async for recorded in recorded_events(connection, selection):
                if speed is not None:
                    ts_init = recorded.event.ts_init
                    if origin is None:
                        origin = (time.monotonic(), ts_init)
                    due = origin[0] + (ts_init - origin[1]) / 1e9 / speed
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                if sink is not None:
                    sink.write(encode(recorded.event) + b"\n")
                else:
                    assert bus is not None
                    await bus.publish(
                        subject_of(subjects, recorded, partitions),
                        recorded.event,
                        msg_id=recorded.event.event_id,
                    )
                count += 1
        if bus is not None:
            await bus.flush()
    finally:
        if sink is not None:
            sink.close()
        if bus is not None:
            await bus.drain()
        await connection.close()
    return count


def replay_store(
    config: Config,
    *,
    market: str,
    asset: str,
    start: str,
    end: str,
    speed: str,
    to_subject_prefix: str,
    out: Path | None,
) -> int:
    """The ``replay_store`` hook of ``polybus replay --from-db``; returns the exit code."""
    try:
        if bool(market) == bool(asset):
            raise ValueError("give exactly one of --market and --asset")
        if not start or not end:
            raise ValueError("give --start and --end")
        window_start, window_end = parse_time(start), parse_time(end)
        if window_end <= window_start:
            raise ValueError("--end must be after --start")
        factor = parse_speed(speed)
        Subjects(to_subject_prefix)  # validates the prefix's tokens
    except ValueError as error:
        sys.stderr.write(f"replay: {error}\n")
        return 2
    try:
        count = asyncio.run(
            replay(
                config,
                market=market,
                asset=asset,
                start=window_start,
                end=window_end,
                speed=factor,
                to_subject_prefix=to_subject_prefix,
                out=out,
            )
        )
    except (OSError, asyncpg.PostgresError) as error:
        sys.stderr.write(f"replay failed: {error}\n")
        return 1
    where = str(out) if out is not None else f"subjects under {to_subject_prefix or '(none)'}"
    sys.stderr.write(f"replayed {count} events to {where}\n")
    return 0
