"""``cancel_and_wait`` ends a task that lost a cancel (CPython gh-86296 on 3.11), and is bounded."""

from __future__ import annotations

import asyncio

from polybus.common.tasks import cancel_and_wait


async def _loses_cancels(times: int, swallowed: list[int], let_go: asyncio.Event) -> None:
    """Loops like a consumer's fetch, and carries on after its first ``times`` cancels (until
    ``let_go``), as a task does whose cancel landed as an inner ``wait_for`` completed."""
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if len(swallowed) >= times or let_go.is_set():
                raise
            swallowed.append(1)


async def test_a_task_that_loses_its_first_cancels_is_cancelled_until_it_ends() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_loses_cancels(3, swallowed, asyncio.Event()))
    await asyncio.sleep(0)

    assert await cancel_and_wait([task], None) == set()

    assert task.cancelled()
    assert len(swallowed) == 3


async def test_one_that_never_ends_is_returned_after_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    swallowed: list[int] = []
    let_go = asyncio.Event()
    task = asyncio.create_task(_loses_cancels(10**9, swallowed, let_go))
    await asyncio.sleep(0)
    started = loop.time()

    assert await cancel_and_wait([task], 0.2) == {task}

    assert 0.2 <= loop.time() - started < 1.0
    assert len(swallowed) > 1  # asked again and again
    let_go.set()
    assert await cancel_and_wait([task], None) == set()
