"""``polybus replay FILE``: a capture through the live engine's code, offline.

The frames go through :class:`~polybus.ingest.engine.IngestEngine` exactly as the service
feeds it (``on_frame`` per frame at its recorded receive time, timers as that clock advances);
nothing is published. At the end one line per asset tells its state, best bid/ask, full book,
what it saw and how its batch checks went.

Exit codes: 0 every line was a frame; 1 the replay ran but skipped lines that are not frames or
stopped where a gzip file is cut short (the results of the frames read are still printed, and
one warning line says what was wrong); 2 nothing in the file is a frame, or it cannot be read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from polybus.common.events import Event
from polybus.common.money import format_micros
from polybus.common.subjects import Subjects
from polybus.ingest.capture import CaptureError, CaptureProblems, read_capture
from polybus.ingest.config import IngestSettings
from polybus.ingest.engine import AssetTrack, IngestEngine

_FRAME_STEP_NS = 1_000_000
"""Bare frames carry no receive time: the replay clock advances 1 ms per frame."""


class AssetReport(msgspec.Struct, frozen=True, kw_only=True):
    asset_id: str
    condition_id: str
    state: str
    best_bid: str | None
    best_ask: str | None
    bids: list[tuple[str, str]]
    """Best first."""
    asks: list[tuple[str, str]]
    events: dict[str, int]
    checks: dict[str, int]
    resyncs_requested: int
    tick_size: str | None


def replay_engine(
    path: Path,
    settings: IngestSettings | None = None,
    problems: CaptureProblems | None = None,
    published: list[Event] | None = None,
) -> IngestEngine:
    """Run a capture through a fresh engine and return it (for tests and the command).

    ``problems`` is filled with what the reader skipped, ``published`` with the events the
    engine would have published, in order; :class:`CaptureError` when the file cannot be read
    at all.
    """
    # Offline there is time to recompute the venue's hash after every batch.
    settings = settings or IngestSettings(snapshot_interval_s=0, hash_check_interval_s=0)
    engine = IngestEngine(Subjects(), 16, settings, auto_track=True)
    tick_ns = int(settings.tick_interval_s * 1e9)
    now = 0
    next_tick = 0
    for recv_ns, frame in read_capture(path, problems):
        now = recv_ns if recv_ns is not None else now + _FRAME_STEP_NS
        engine.on_frame(frame, now)
        if now >= next_tick:
            if next_tick:
                engine.tick(now)
            next_tick = now + tick_ns
        _drain(engine, published)
    engine.flush(now)
    _drain(engine, published)
    return engine


def _drain(engine: IngestEngine, published: list[Event] | None) -> None:
    if published is not None:
        published.extend(event for _, event, _ in engine.outbox)
    engine.outbox.clear()


def capture_events(path: Path) -> list[Event]:
    """The ``capture_events`` hook: the market-data events the ingest makes of a capture of raw
    venue frames, in order (a backtest's input). ``ValueError`` naming the problem when the
    file cannot be read or holds no frame."""
    problems = CaptureProblems()
    published: list[Event] = []
    try:
        replay_engine(path, problems=problems, published=published)
    except CaptureError as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not problems.frames:
        raise ValueError(f"nothing to replay: {problems.describe(path)}")
    return published


def asset_report(track: AssetTrack) -> AssetReport:
    book = track.book
    counts = track.counts
    return AssetReport(
        asset_id=track.asset_id,
        condition_id=track.condition_id,
        state=track.state.value,
        best_bid=format_micros(book.best_bid) if book.best_bid is not None else None,
        best_ask=format_micros(book.best_ask) if book.best_ask is not None else None,
        bids=[(format_micros(p), format_micros(s)) for p, s in book.bid_levels()],
        asks=[(format_micros(p), format_micros(s)) for p, s in book.ask_levels()],
        events={
            "book": counts.books,
            "rest_book": counts.rest_books,
            "price_change_entry": counts.entries,
            "buffered_entry": counts.buffered,
            "last_trade_price": counts.trades,
            "tick_size_change": counts.tick_changes,
            "delta_published": counts.deltas,
        },
        checks={
            "bbo_passed": counts.bbo_passed,
            "bbo_failed": counts.bbo_failed,
            "hash_passed": counts.hash_passed,
            "hash_failed": counts.hash_failed,
            "hash_explained_by_trade": counts.hash_explained_by_trade,
            "hash_skipped": counts.hash_skipped,
        },
        resyncs_requested=counts.resyncs,
        tick_size=format_micros(track.tick) if track.tick else None,
    )


def replay_capture(path: Path, *, json_output: bool) -> int:
    """The ``replay_capture`` hook: replay ``path`` and print one line per asset."""
    problems = CaptureProblems()
    try:
        engine = replay_engine(path, problems=problems)
    except CaptureError as error:
        return _warn(f"cannot replay {path}: {error}", 2)
    if not problems.frames:
        return _warn(f"nothing to replay: {problems.describe(path)}", 2)
    reports = [asset_report(track) for track in engine.tracks.values()]
    if json_output:
        encoder = msgspec.json.Encoder()
        for report in reports:
            sys.stdout.write(encoder.encode(report).decode() + "\n")
    else:
        _print_table(reports, engine)
    problem = problems.describe(path)
    return _warn(f"warning: {problem}", 1) if problem else 0


def _warn(message: str, code: int) -> int:
    sys.stdout.flush()  # the results first, then the line that qualifies them
    sys.stderr.write(message + "\n")
    return code


def _print_table(reports: list[AssetReport], engine: IngestEngine) -> None:
    table = Table(
        "asset",
        "state",
        "best bid",
        "best ask",
        "levels",
        "entries",
        "bbo ok/fail",
        "hash ok/fail/trade",
        "resyncs",
        title=f"{engine.stats.frames} frames, {len(reports)} assets",
    )
    for report in reports:
        checks: dict[str, Any] = report.checks
        table.add_row(
            report.asset_id[:12] + "…",
            report.state,
            report.best_bid or "-",
            report.best_ask or "-",
            f"{len(report.bids)}/{len(report.asks)}",
            str(report.events["price_change_entry"]),
            f"{checks['bbo_passed']}/{checks['bbo_failed']}",
            f"{checks['hash_passed']}/{checks['hash_failed']}/{checks['hash_explained_by_trade']}",
            str(report.resyncs_requested),
        )
    Console().print(table)
