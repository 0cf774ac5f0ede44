"""Operator input: durations, times, replay speeds; and the shipped migration files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from polybus.recorder.migrations import load_migrations
from polybus.recorder.timespec import parse_duration, parse_speed, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("15m", timedelta(minutes=15)),
        ("90s", timedelta(seconds=90)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "-1d", "0d", "1.5h", "3y", "30 days"])
def test_bad_durations_name_the_format(text: str) -> None:
    with pytest.raises(ValueError, match="like 30d"):
        parse_duration(text)


def test_times_are_utc() -> None:
    assert parse_time("2026-11-29T10:00:00Z") == datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert parse_time("2026-11-29T11:00:00+01:00") == datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert parse_time("2026-11-29 10:00") == datetime(2026, 11, 29, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_speeds() -> None:
    assert parse_speed("max") is None
    assert parse_speed("1x") == 1.0
    assert parse_speed("2.5x") == 2.5
    for bad in ("0x", "fast", "1", "-1x"):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)


def test_migrations_are_numbered_checksummed_and_the_timescale_one_is_guarded() -> None:
    migrations = load_migrations()
    assert [(m.version, m.name) for m in migrations][:2] == [(1, "core"), (2, "timescale")]
    assert all(m.requires_timescaledb is None for m in migrations[2:])
    assert migrations[0].requires_timescaledb is None
    assert migrations[1].requires_timescaledb == (2, 13)
    assert all(len(m.checksum) == 64 for m in migrations)
    # The core schema never touches TimescaleDB; the guarded one is what creates hypertables.
    statements = [
        line for line in migrations[0].sql.lower().splitlines() if not line.startswith("--")
    ]
    assert not any("timescaledb" in line or "hypertable" in line for line in statements)
    assert "create_hypertable" in migrations[1].sql
