"""The strategy's intent publisher across a nats-server restart: every intent submitted is in
the INTENT stream exactly once (a failed publish is retried with the same ``Nats-Msg-Id``, so
one stored before its ack was lost is not stored twice)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import OrderIntent
from polybus.common.infra import RunningProcess
from polybus.common.money import MICROS
from polybus.common.streams import load_definitions
from polybus.common.subjects import Namespace
from polybus.strategy.service import IntentPublisher
from tests.conftest import STREAMS_FILE
from tests.helpers import RestartableNats, eventually

COUNT = 300


def intent(n: int) -> OrderIntent:
    return OrderIntent(
        event_id=f"maker.r.1.{n}",
        ts_event=n,
        ts_init=n,
        intent_id=f"maker.r.1.{n}",
        strategy_id="maker",
        action="place",
        condition_id="0x" + f"{n % 7:02x}" * 32,
        asset_id="1" * 70,
        price=400_000,
        size=5 * MICROS,
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_intents_submitted_across_a_nats_restart_are_stored_once_each(
    tmp_path: Path,
) -> None:
    nats = RestartableNats(tmp_path / "js")

    first = nats.start()
    second: RunningProcess | None = None
    bus = await NatsBus.connect(nats.url, name="publisher", namespace=Namespace())
    publisher = IntentPublisher(bus, retry_interval_s=0.05)
    task = asyncio.create_task(publisher.run())
    try:
        await bus.apply(load_definitions(STREAMS_FILE))
        publisher.submit(intent(n) for n in range(COUNT // 3))
        await eventually(lambda: publisher.published >= COUNT // 6, 20, "the first publishes")
        first.stop()  # mid-way through the first third
        publisher.submit(intent(n) for n in range(COUNT // 3, COUNT))
        await eventually(lambda: publisher.retries > 0, 20, "a failed publish being retried")
        second = nats.start()
        await asyncio.wait_for(publisher.flush(), 60)
        info = await bus.js.stream_info("INTENT")
        assert info.state.messages == COUNT
        assert publisher.published == COUNT
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.drain()
        first.stop()
        if second is not None:
            second.stop()
