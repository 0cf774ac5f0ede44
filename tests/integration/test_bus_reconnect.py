"""A NATS restart: the bus reconnects by itself and nothing acknowledged is lost (DESIGN §10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from polybus.common.bus import PublishError
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DeadLetter
from polybus.common.infra import RunningProcess
from polybus.common.streams import ConsumerDefinition, Definitions, StreamDefinition
from polybus.common.subjects import Namespace
from tests.helpers import RestartableNats, eventually

DEFINITIONS = Definitions(
    stream=(StreamDefinition(name="WORK", subjects=("work.>",)),),
    consumer=(ConsumerDefinition(stream="WORK", durable="worker", ack_wait_s=2.0),),
)


def letter(n: int) -> DeadLetter:
    return DeadLetter(event_id=f"e{n}", ts_event=n, ts_init=n, source="t", reason="r", raw=str(n))


def reconnects(name: str) -> float:
    return REGISTRY.get_sample_value("polybus_nats_reconnects_total", {"connection": name}) or 0.0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_bus_reconnects_after_a_server_restart_and_loses_nothing(tmp_path: Path) -> None:
    nats = RestartableNats(tmp_path / "js")

    first = nats.start()
    bus = await NatsBus.connect(nats.url, name="restart-test", namespace=Namespace())
    second: RunningProcess | None = None
    try:
        await bus.apply(DEFINITIONS)
        for n in range(100):
            await bus.publish_persistent(f"work.{n}", letter(n), msg_id=f"m{n}")
        before = reconnects("restart-test")
        first.stop()
        with pytest.raises(PublishError):  # down: a persistent publish fails loudly, not silently
            await bus.publish_persistent("work.x", letter(-1), msg_id="down", timeout=0.5)
        second = nats.start()
        await eventually(lambda: reconnects("restart-test") > before, 30, "the reconnect")
        for n in range(100, 200):
            await bus.publish_persistent(f"work.{n}", letter(n), msg_id=f"m{n}")
        consumer = bus.pull_consumer("WORK", "worker")
        seen: list[int] = []
        while len(seen) < 200:
            batch = await consumer.fetch(100, 2.0)
            assert batch, f"stream ran dry after {len(seen)} messages"
            for delivery in batch:
                seen.append(delivery.stream_sequence)
                await delivery.ack()
        assert sorted(seen) == list(range(1, 201))
        assert await consumer.fetch(10, 0.5) == []
    finally:
        await bus.drain()
        first.stop()
        if second is not None:
            second.stop()
