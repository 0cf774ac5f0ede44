"""The simulator's clock: the venue's timers (restart and restriction windows, the heartbeat
dead-man switch, GTD expiry, timestamps) read it, so a test can hold time still and move it.

:class:`SystemClock` is the real one; :class:`ManualClock` stands still until ``advance``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines and windows)."""
        ...

    def time(self) -> float:
        """Unix seconds (timestamps, GTD expirations)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told: starts at the machine's time, then ``advance``."""

    def __init__(self) -> None:
        self._monotonic = time.monotonic()
        self._time = time.time()

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._time

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._monotonic += seconds
        self._time += seconds
