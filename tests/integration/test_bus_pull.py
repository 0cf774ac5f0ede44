"""The bus's batch pull consumer against a real nats-server."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js.errors import NotFoundError

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DeadLetter
from polybus.common.streams import ConsumerDefinition, Definitions, StreamDefinition
from tests.helpers import eventually

DEFINITIONS = Definitions(
    stream=(StreamDefinition(name="WORK", subjects=("work.>",)),),
    consumer=(ConsumerDefinition(stream="WORK", durable="recorder", ack_wait_s=1.0),),
)


def letter(n: int) -> DeadLetter:
    return DeadLetter(event_id=f"e{n}", ts_event=n, ts_init=n, source="t", reason="r", raw="x")


async def publish(bus: NatsBus, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        await bus.publish_persistent(
            bus.namespace.subjects.stream_subjects(f"work.{n}"), letter(n), msg_id=f"m{n}"
        )


async def test_fetch_takes_what_is_pending_in_one_go_up_to_the_batch(bus: NatsBus) -> None:
    await bus.apply(DEFINITIONS)
    await publish(bus, 25)
    consumer = bus.pull_consumer("WORK", "recorder")
    first = await consumer.fetch(10, 1.0)
    rest = await consumer.fetch(100, 1.0)
    assert [d.stream_sequence for d in first] == list(range(1, 11))
    assert [d.stream_sequence for d in rest] == list(range(11, 26))
    for delivery in first + rest:
        await delivery.ack()
    started = time.monotonic()
    assert await consumer.fetch(100, 0.3) == []
    assert time.monotonic() - started < 1.0
    await consumer.close()


async def test_an_idle_fetch_returns_as_soon_as_a_message_arrives(bus: NatsBus) -> None:
    await bus.apply(DEFINITIONS)
    consumer = bus.pull_consumer("WORK", "recorder")
    fetching = asyncio.create_task(consumer.fetch(100, 5.0))

    async def waiting_on_the_server() -> bool:
        info = await bus.js.consumer_info(bus.namespace.stream("WORK"), "recorder")
        return (info.num_waiting or 0) >= 1

    await eventually(waiting_on_the_server, 5, "an idle pull request on the server")
    started = time.monotonic()
    await publish(bus, 1)
    [delivery] = await asyncio.wait_for(fetching, 5)
    assert time.monotonic() - started < 2.0
    assert delivery.stream_sequence == 1
    assert delivery.headers["Nats-Msg-Id"] == "m0"
    await delivery.ack()
    await consumer.close()


async def test_unacked_messages_come_back_after_the_ack_wait(bus: NatsBus) -> None:
    await bus.apply(DEFINITIONS)
    await publish(bus, 3)
    consumer = bus.pull_consumer("WORK", "recorder")
    first = await consumer.fetch(10, 1.0)
    assert len(first) == 3
    again = await consumer.fetch(10, 3.0)  # the first redelivery ends an idle fetch...
    while len(again) < 3:  # ...and the others follow
        more = await consumer.fetch(10, 3.0)
        assert more, "a redelivery never came"
        again += more
    assert sorted(d.stream_sequence for d in again) == [1, 2, 3]
    assert all(d.num_delivered == 2 for d in again)
    await consumer.close()


async def test_a_missing_durable_fails_loudly(bus: NatsBus) -> None:
    await bus.apply(Definitions(stream=DEFINITIONS.stream))
    consumer = bus.pull_consumer("WORK", "recorder")
    with pytest.raises(NotFoundError):
        await consumer.fetch(10, 0.5)
