"""``Bus.publish_many`` (the ingest's publisher path) sends what ``publish`` of each message
would, on the real NatsBus and the MemoryBus twin alike: subjects, payloads, ``Nats-Msg-Id``
(so the stream drops a re-publication), in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from polybus.common.bus import Bus, Message
from polybus.common.bus.memory_bus import MemoryBus
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DeadLetter, Event, decode
from polybus.common.streams import ConsumerDefinition, Definitions, StreamDefinition
from polybus.common.subjects import Namespace
from tests.conftest import NatsServerInfo

DEFINITIONS = Definitions(
    stream=(StreamDefinition(name="WORK", subjects=("work.>",), duplicate_window_s=60),),
    consumer=(ConsumerDefinition(stream="WORK", durable="worker", ack_wait_s=1.0),),
)


def letter(n: int) -> DeadLetter:
    return DeadLetter(
        event_id=f"e{n}", ts_event=n, ts_init=n, source="test", reason="r", raw=str(n)
    )


@pytest.fixture(params=["nats", "memory"])
async def any_bus(request: pytest.FixtureRequest, namespace: Namespace) -> AsyncIterator[Bus]:
    if request.param == "memory":
        twin = MemoryBus(namespace)
        await twin.apply(DEFINITIONS)
        yield twin
        await twin.drain()
        return
    server: NatsServerInfo = request.getfixturevalue("nats_server")
    real = await NatsBus.connect(server.url, name="publish-many", namespace=namespace)
    await real.apply(DEFINITIONS)
    yield real
    await real.js.delete_stream(namespace.stream("WORK"))
    await real.drain()


async def test_publish_many_sends_each_message_as_publish_would(any_bus: Bus) -> None:
    subjects = any_bus.namespace.subjects
    received: list[Message] = []
    all_in = asyncio.Event()

    async def on_message(message: Message) -> None:
        received.append(message)
        if len(received) == 4:
            all_in.set()

    subscription = await any_bus.subscribe(subjects.market_data_kind("delta"), on_message)
    await any_bus.flush()
    messages: list[tuple[str, Event, str | None]] = [
        (subjects.delta(0, "1"), letter(0), "d0"),
        (subjects.delta(1, "2"), letter(1), None),
        (subjects.delta(0, "1"), letter(2), "d2"),
        (subjects.delta(0, "1"), letter(2), "d2"),
    ]
    await any_bus.publish_many(messages)
    await any_bus.flush()
    await asyncio.wait_for(all_in.wait(), 5)
    assert [m.subject for m in received] == [subject for subject, _, _ in messages]
    assert [decode(m.data) for m in received] == [event for _, event, _ in messages]
    assert [m.headers.get("Nats-Msg-Id") for m in received] == ["d0", None, "d2", "d2"]
    await subscription.unsubscribe()


async def test_publish_many_is_deduplicated_by_the_stream_like_publish(any_bus: Bus) -> None:
    work = any_bus.namespace.subjects.stream_subjects("work.0")
    await any_bus.publish_many(
        [(work, letter(1), "same"), (work, letter(1), "same"), (work, letter(2), "other")]
    )
    await any_bus.flush()
    fetched = await any_bus.pull_consumer("WORK", "worker").fetch(10, 1.0)
    assert [decode(d.data) for d in fetched] == [letter(1), letter(2)]
    for delivery in fetched:
        await delivery.ack()


async def test_publish_many_sends_each_message_as_it_reads_it(any_bus: Bus) -> None:
    # The ingest's publisher hands over a generator that pops its outbox as messages go out:
    # what was read before a failure is sent, not held back.
    work = any_bus.namespace.subjects.stream_subjects("work.0")

    def messages() -> Iterator[tuple[str, Event, str | None]]:
        yield work, letter(0), "m0"
        yield work, letter(1), "m1"
        raise RuntimeError("the outbox broke")

    with pytest.raises(RuntimeError, match="the outbox broke"):
        await any_bus.publish_many(messages())
    await any_bus.flush()
    fetched = await any_bus.pull_consumer("WORK", "worker").fetch(10, 1.0)
    assert [decode(d.data) for d in fetched] == [letter(0), letter(1)]
    for delivery in fetched:
        await delivery.ack()
