"""Operator input for times, durations and replay speeds (``--at``, ``--older-than 30d``, …)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(?P<amount>\d+)\s*(?P<unit>[smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SPEED = re.compile(r"^\s*(?P<factor>\d+(\.\d+)?)\s*x\s*$")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w``; a positive whole number and one unit."""
    match = _DURATION.match(text)
    if match is None or int(match["amount"]) <= 0:
        raise ValueError(f"duration {text!r} is not like 30d, 12h, 15m, 90s or 2w")
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-29T10:00:00Z``); without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"time {text!r} is not ISO 8601 (e.g. 2026-11-29T10:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_speed(text: str) -> float | None:
    """``max`` (None: as fast as possible) or a factor of recorded time (``1x``, ``10x``)."""
    if text.strip().lower() == "max":
        return None
    match = _SPEED.match(text.lower())
    if match is None or float(match["factor"]) <= 0:
        raise ValueError(f"speed {text!r} is not max or a positive factor like 1x or 10x")
    return float(match["factor"])
