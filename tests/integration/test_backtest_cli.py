"""``polybus backtest`` as an operator runs it: a file of recorded events in, a report out
(``--json`` parsed), and every bad input one line on stderr with exit 2."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from polybus.common.events import encode
from polybus.recorder.migrations import migrate
from polybus.recorder.store import PostgresStore
from tests.integration.test_recorder_store import batch_of
from tests.unit.test_backtest import CONDITION, NO, SECOND_NS, YES, mispriced_market

pytestmark = pytest.mark.timeout(120)


def polybus(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polybus.common.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(encode(event) + b"\n" for event in mispriced_market().events))
    return path


def test_json_report_of_a_recorded_events_file(events_file: Path, tmp_path: Path) -> None:
    done = polybus("backtest", "--strategy", "dutch_book", "--capture", str(events_file),
                   "--json", cwd=tmp_path)  # fmt: skip

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(f["asset_id"], f["side"], f["price"]) for f in report["fills"]] == [
        (YES, "BUY", 450_000),
        (NO, "BUY", 500_000),
    ]
    assert report["realized_pnl"] + report["unrealized_pnl"] == report["total_pnl"]
    again = polybus("backtest", "--strategy", "dutch_book", "--capture", str(events_file),
                    "--json", cwd=tmp_path)  # fmt: skip
    assert again.stdout == done.stdout


def test_text_report(events_file: Path, tmp_path: Path) -> None:
    done = polybus("backtest", "-s", "dutch_book", "--capture", str(events_file), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "fills 2" in done.stdout
    assert "max drawdown" in done.stdout


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--strategy", "nope", "--capture", "{events}"], "nope"),
        (["--strategy", "dutch_book", "--capture", "{missing}"], "no such file"),
        (["--strategy", "dutch_book", "--capture", "{empty}"], "empty.jsonl"),
        (["--strategy", "dutch_book", "--capture", "{garbage}"], "garbage.jsonl"),
        (["--strategy", "dutch_book"], "--capture FILE or --from-db"),
        (["--strategy", "dutch_book", "--capture", "{events}", "--start", "x"], "--from-db"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    events_file: Path, tmp_path: Path, arguments: list[str], named: str
) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "garbage.jsonl").write_text("not json at all\n")
    paths = {
        "events": str(events_file),
        "missing": str(tmp_path / "missing.jsonl"),
        "empty": str(tmp_path / "empty.jsonl"),
        "garbage": str(tmp_path / "garbage.jsonl"),
    }

    done = polybus("backtest", *(a.format(**paths) for a in arguments), cwd=tmp_path)

    assert done.returncode == 2
    assert named in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_bad_times_from_the_store_are_one_line_and_exit_2(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "config" / "sim.toml"
    done = polybus("backtest", "--strategy", "dutch_book", "--from-db", "--market", "0xabc",
                   "--start", "yesterday-ish", "--end", "2026-01-01T00:00:00Z",
                   "--config", str(config), cwd=config.parents[1])  # fmt: skip

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed"
)
def test_plot_without_matplotlib_says_how_to_install_it(events_file: Path, tmp_path: Path) -> None:
    done = polybus("backtest", "-s", "dutch_book", "--capture", str(events_file),
                   "--plot", str(tmp_path / "out.png"), cwd=tmp_path)  # fmt: skip

    assert done.returncode == 2
    assert "uv sync --extra plot" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib (the plot extra) is absent"
)
def test_plot_writes_a_png(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    done = polybus("backtest", "-s", "dutch_book", "--capture", str(events_file),
                   "--plot", str(out), cwd=tmp_path)  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\x89PNG")


def test_a_raw_venue_capture_goes_through_the_ingest(tmp_path: Path) -> None:
    capture = (
        Path(__file__).resolve().parents[1]
        / "resources"
        / "polymarket"
        / "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"
    )

    done = polybus("backtest", "-s", "dutch_book", "--capture", str(capture), "--json",
                   cwd=tmp_path)  # fmt: skip

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["events"] > 1  # books and deltas, the ingest's dead letters left out
    assert report["fills"] == []  # raw frames carry no MarketInfo: nothing is tradeable


async def test_from_db_runs_the_same_backtest_as_the_capture_of_the_same_events(
    database_url: str, events_file: Path, tmp_path: Path
) -> None:
    """The recorder's rows on a real PostgreSQL, read back by ``--from-db``, give the report
    the events themselves give."""
    events = mispriced_market().events
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    store = PostgresStore(lambda: asyncpg.connect(database_url))
    try:
        await store.write(batch_of(list(events)))
    finally:
        await store.close()
    config = tmp_path / "polybus.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n')
    first, last = min(e.ts_event for e in events), max(e.ts_event for e in events)

    def iso(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    from_db = await asyncio.to_thread(
        polybus, "backtest", "--strategy", "dutch_book", "--from-db", "--market", CONDITION,
        "--start", iso(first - 2 * SECOND_NS), "--end", iso(last + 2 * SECOND_NS),
        "--config", str(config), "--json", cwd=tmp_path,
    )  # fmt: skip
    captured = await asyncio.to_thread(
        polybus, "backtest", "--strategy", "dutch_book", "--capture", str(events_file),
        "--json", cwd=tmp_path,
    )  # fmt: skip

    assert from_db.returncode == 0, from_db.stderr
    report = json.loads(from_db.stdout)
    assert len(report["fills"]) == 2
    assert report == json.loads(captured.stdout)
