"""How an interactive operator command runs: until it is done or told to stop.

SIGTERM and SIGINT (Ctrl-C) cancel the command's work at any moment, also while it is still
connecting to NATS, so the process exits 0 well within 2 s (DESIGN §10); the work's own
``finally`` blocks close the connection with a short drain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from polybus.common.signals import route_stop_signals
from polybus.common.tasks import cancel_and_wait


async def run_until_signal(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; a stop signal cancels it and returns normally."""
    task = asyncio.ensure_future(work)
    cancelling: set[asyncio.Task[object]] = set()

    def cancel(signal_name: str) -> None:
        cancelling.add(asyncio.ensure_future(cancel_and_wait({task}, None)))

    restore = route_stop_signals(asyncio.get_running_loop(), cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        restore()
