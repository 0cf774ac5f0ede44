"""Ending asyncio tasks for sure, on the Python 3.11 the project runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

_RECANCEL_S = 0.05


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], timeout: float | None
) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and wait until they end, cancelling again every 50 ms while one runs on;
    the ones still running after ``timeout`` (None: no limit) are returned.

    Once is not enough on Python 3.11: a cancel that lands as an inner ``wait_for`` completes is
    lost (CPython gh-86296, fixed in 3.12), so a task looping on timed waits - every consumer's
    fetch - may carry on after one cancel, and ``asyncio.run`` then waits for it at exit
    forever."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    pending = {task for task in tasks if not task.done()}
    while pending:
        left = _RECANCEL_S if deadline is None else min(_RECANCEL_S, deadline - loop.time())
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=left)
    return pending
