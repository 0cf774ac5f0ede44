"""`polybus db migrate|prune|snapshot` and `polybus replay --from-db` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import typer
from typer.testing import CliRunner, Result

from polybus.common.book import OrderBook
from polybus.common.cli import app as polybus_app
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    Event,
    Level,
    LevelChange,
    decode,
    encode,
)
from polybus.recorder.cli import commands
from polybus.recorder.migrations import migrate
from polybus.recorder.store import PostgresStore
from polybus.recorder.tables import TABLE_FOR_TYPE, Row, Source, Table, nanoseconds
from tests.samples import condition_id, one_of_each, token_id

ASSET, MARKET = token_id(500), condition_id(500)
NOW = datetime.now(UTC).replace(microsecond=0)


def at(moment: datetime) -> int:
    return nanoseconds(moment)


def snapshot(seq: int, moment: datetime, bids: list[tuple[int, int]]) -> BookSnapshot:
    return BookSnapshot(
        event_id=f"book:{seq}",
        ts_event=at(moment),
        ts_init=at(moment),
        asset_id=ASSET,
        condition_id=MARKET,
        seq=seq,
        epoch=1,
        bids=tuple(Level(p, s) for p, s in bids),
        asks=(Level(600_000, 1_000_000),),
        tick_size=10_000,
    )


def delta(seq: int, moment: datetime, *changes: tuple[str, int, int]) -> BookDelta:
    return BookDelta(
        event_id=f"delta:{seq}",
        ts_event=at(moment),
        ts_init=at(moment),
        asset_id=ASSET,
        condition_id=MARKET,
        seq=seq,
        epoch=1,
        changes=tuple(LevelChange(side, p, s) for side, p, s in changes),  # type: ignore[arg-type]
        best_bid=None,
        best_ask=None,
    )


async def store_events(database_url: str, events: list[Event]) -> None:
    batch: dict[Table, list[Row]] = {}
    for seq, event in enumerate(events, 1):
        table = TABLE_FOR_TYPE[type(event)]
        batch.setdefault(table, []).append(
            table.row(event, Source("MD", seq, f"md.polymarket.4.x.{seq}"))
        )
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    await store.write(batch)
    await store.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def config_file(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "polybus.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n')
    return path


async def invoke(app: typer.Typer, *args: str) -> Result:
    # The commands run their own event loop: keep ours free meanwhile.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def db_command(config: Path, *args: str) -> Result:
    return await invoke(commands(), "db", *args, "--config", str(config))


async def test_db_migrate_applies_then_says_up_to_date(config_file: Path) -> None:
    first = await db_command(config_file, "migrate")
    assert first.exit_code == 0, first.output
    assert "applied 0001_core" in first.output
    second = await db_command(config_file, "migrate")
    assert second.exit_code == 0, second.output
    assert "schema is up to date" in second.output
    assert "applied" not in second.output.replace("already", "")


async def test_db_migrate_refuses_a_newer_schema_with_exit_1(
    config_file: Path, db: asyncpg.Connection
) -> None:
    await migrate(db)
    await db.execute(
        "INSERT INTO schema_migrations (version, name, checksum, polybus_version) "
        "VALUES (7, 'later', 'x', '3.0.0')"
    )
    result = await db_command(config_file, "migrate")
    assert result.exit_code == 1
    assert "migrate refused" in result.output
    assert "upgrade polybus" in result.output


async def test_db_commands_on_an_unreachable_database_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "down.toml"
    config.write_text('[database]\nurl = "postgresql://postgres@127.0.0.1:1/nothing"\n')
    result = await db_command(config, "migrate")
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.output


async def test_db_prune_deletes_only_older_rows_of_the_default_tables(
    config_file: Path, db: asyncpg.Connection, database_url: str
) -> None:
    await migrate(db)
    old, new = NOW - timedelta(days=40), NOW - timedelta(days=1)
    fill = next(e for e in one_of_each(1) if type(e).__name__ == "Fill")
    old_fill = type(fill)(
        **{**{f: getattr(fill, f) for f in fill.__struct_fields__}, "ts_event": at(old)}
    )
    await store_events(
        database_url,
        [
            snapshot(1, old, [(500_000, 1)]),
            delta(2, old, ("BUY", 500_000, 2)),
            snapshot(3, new, [(500_000, 3)]),
            delta(4, new, ("BUY", 500_000, 4)),
            old_fill,
        ],
    )
    result = await db_command(config_file, "prune", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert "book_deltas: 1 removed" in result.output
    assert await db.fetchval("SELECT array_agg(seq ORDER BY seq) FROM book_deltas") == [4]
    assert await db.fetchval("SELECT array_agg(seq ORDER BY seq) FROM book_snapshots") == [3]
    # The trading record is pruned only when named.
    assert await db.fetchval("SELECT count(*) FROM fills") == 1
    named = await db_command(config_file, "prune", "--older-than", "30d", "--table", "fills")
    assert named.exit_code == 0, named.output
    assert await db.fetchval("SELECT count(*) FROM fills") == 0
    assert await db.fetchval("SELECT count(*) FROM book_deltas") == 1


@pytest.mark.parametrize(
    "args", [("--older-than", "3y"), ("--older-than", "30d", "--table", "nope")]
)
async def test_db_prune_bad_input_exits_2(
    config_file: Path, db: asyncpg.Connection, args: tuple[str, ...]
) -> None:
    await migrate(db)
    result = await db_command(config_file, "prune", *args)
    assert result.exit_code == 2, result.output


async def test_db_snapshot_rebuilds_the_book_from_snapshot_plus_deltas(
    config_file: Path, db: asyncpg.Connection, database_url: str
) -> None:
    await migrate(db)
    t0 = NOW - timedelta(minutes=10)
    events: list[Event] = [
        snapshot(1, t0, [(500_000, 10_000_000), (490_000, 5_000_000)]),
        delta(2, t0 + timedelta(seconds=1), ("BUY", 500_000, 0), ("SELL", 590_000, 2_000_000)),
        delta(3, t0 + timedelta(seconds=2), ("BUY", 495_000, 7_000_000)),
        delta(4, t0 + timedelta(seconds=4), ("BUY", 480_000, 1_000_000)),  # after --at
    ]
    await store_events(database_url, events)
    moment = (t0 + timedelta(seconds=3)).isoformat()
    result = await db_command(config_file, "snapshot", "--asset", ASSET, "--at", moment, "--json")
    assert result.exit_code == 0, result.output
    rebuilt = decode(result.stdout.strip())
    assert isinstance(rebuilt, BookSnapshot)
    expected = OrderBook()
    expected.apply_snapshot(events[0])  # type: ignore[arg-type]
    expected.apply_delta(events[1])  # type: ignore[arg-type]
    expected.apply_delta(events[2])  # type: ignore[arg-type]
    assert (rebuilt.bids, rebuilt.asks) == expected.levels()
    assert (rebuilt.seq, rebuilt.epoch) == (3, 1)
    table = await db_command(config_file, "snapshot", "--asset", ASSET, "--at", moment)
    assert table.exit_code == 0, table.output
    assert "0.495" in table.output
    assert "0.59" in table.output


async def test_db_snapshot_warns_about_a_gap_and_a_missing_snapshot(
    config_file: Path, db: asyncpg.Connection, database_url: str
) -> None:
    await migrate(db)
    t0 = NOW - timedelta(minutes=10)
    status = BookStatus(
        event_id="status:3",
        ts_event=at(t0 + timedelta(seconds=1)),
        ts_init=at(t0),
        asset_id=ASSET,
        condition_id=MARKET,
        seq=3,
        epoch=1,
        status="live",
        reason="snapshot",
    )
    await store_events(
        database_url,
        [snapshot(1, t0, [(500_000, 1)]), status, delta(5, t0 + timedelta(seconds=2))],
    )
    later = (t0 + timedelta(seconds=5)).isoformat()
    gap = await db_command(config_file, "snapshot", "--asset", ASSET, "--at", later)
    assert gap.exit_code == 1
    assert "seq 2, 4 missing" in gap.output
    before = (t0 - timedelta(seconds=1)).isoformat()
    none = await db_command(config_file, "snapshot", "--asset", ASSET, "--at", before)
    assert none.exit_code == 1
    assert "no snapshot" in none.output
    bad = await db_command(config_file, "snapshot", "--asset", ASSET, "--at", "yesterday")
    assert bad.exit_code == 2


async def test_polybus_replay_from_db_writes_the_recorded_events(
    config_file: Path, db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    await migrate(db)
    t0 = NOW - timedelta(minutes=5)
    events: list[Event] = [
        snapshot(1, t0, [(500_000, 1)]),
        delta(2, t0 + timedelta(seconds=1), ("SELL", 550_000, 3)),
    ]
    await store_events(database_url, events)
    out = tmp_path / "out.jsonl"
    window = ["--start", (t0 - timedelta(seconds=1)).isoformat(), "--end", NOW.isoformat()]
    args = ["replay", "--from-db", "--asset", ASSET, *window, "--out", str(out)]
    result = await invoke(polybus_app, *args, "--config", str(config_file))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().splitlines() == [encode(e) for e in events]
    # --speed 4x keeps a quarter of the recorded spacing (the two events are 1 s apart).
    started = time.monotonic()
    paced = await invoke(polybus_app, *args, "--speed", "4x", "--config", str(config_file))
    assert paced.exit_code == 0, paced.output
    assert time.monotonic() - started >= 0.25
    assert out.read_bytes().splitlines() == [encode(e) for e in events]
    missing = await invoke(
        polybus_app, "replay", "--from-db", "--asset", ASSET, "--config", str(config_file)
    )
    assert missing.exit_code == 2
    both = await invoke(
        polybus_app,
        "replay",
        "--from-db",
        "--asset",
        ASSET,
        "--market",
        MARKET,
        *window,
        "--config",
        str(config_file),
    )
    assert both.exit_code == 2


async def test_a_replay_window_starts_each_book_at_its_last_snapshot(
    config_file: Path, db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    await migrate(db)
    t0 = NOW - timedelta(minutes=5)
    events: list[Event] = [
        snapshot(1, t0, [(500_000, 1)]),
        delta(2, t0 + timedelta(seconds=1), ("SELL", 550_000, 3)),
        delta(3, t0 + timedelta(seconds=3), ("BUY", 510_000, 4)),
    ]
    await store_events(database_url, events)
    out = tmp_path / "warm.jsonl"
    mid_window = (t0 + timedelta(seconds=2)).isoformat()
    result = await invoke(
        polybus_app,
        *("replay", "--from-db", "--asset", ASSET, "--start", mid_window),
        *("--end", NOW.isoformat(), "--out", str(out), "--config", str(config_file)),
    )
    assert result.exit_code == 0, result.output
    # The snapshot and the delta before the window's start come along: a whole book from the
    # first event on, then the window itself.
    assert out.read_bytes().splitlines() == [encode(e) for e in events]
