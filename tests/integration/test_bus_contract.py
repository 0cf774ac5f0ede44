"""The bus contract: the real NatsBus and the MemoryBus twin pass the same tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from polybus.common.bus import Bus, Delivery, Message, PublishError, PullConsumer, consume
from polybus.common.bus.memory_bus import MemoryBus, subject_matches
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DeadLetter, Event, decode
from polybus.common.streams import ConsumerDefinition, Definitions, StreamDefinition
from polybus.common.subjects import Namespace
from tests.conftest import NatsServerInfo
from tests.helpers import eventually

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
    real = await NatsBus.connect(server.url, name="contract", namespace=namespace)
    await real.apply(DEFINITIONS)
    yield real
    await real.js.delete_stream(namespace.stream("WORK"))
    await real.drain()


def work(bus: Bus, n: int = 0) -> str:
    return bus.namespace.subjects.stream_subjects(f"work.{n}")


async def collect(bus: Bus, count: int, handler_fails: set[int] | None = None) -> list[Delivery]:
    """Consume until ``count`` messages were handled successfully."""
    handled: list[Delivery] = []
    attempts: dict[int, int] = {}
    stop = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        n = int(decode(delivery.data).raw)  # type: ignore[union-attr]
        attempts[n] = attempts.get(n, 0) + 1
        if handler_fails and n in handler_fails and attempts[n] == 1:
            raise RuntimeError(f"handler failed on {n}")
        handled.append(delivery)
        if len(handled) >= count:
            stop.set()

    consumer = bus.pull_consumer("WORK", "worker")
    await asyncio.wait_for(
        consume(consumer, handler, stop=stop, batch=10, fetch_timeout=0.2, nak_delay=0.1), 20
    )
    return handled


async def test_publish_then_durable_consume_then_ack(any_bus: Bus) -> None:
    for n in range(5):
        ack = await any_bus.publish_persistent(work(any_bus, n), letter(n), msg_id=f"m{n}")
        assert ack.sequence == n + 1
        assert not ack.duplicate
    handled = await collect(any_bus, 5)
    assert [d.stream_sequence for d in handled] == [1, 2, 3, 4, 5]
    assert [decode(d.data) for d in handled] == [letter(n) for n in range(5)]
    assert all(d.headers["Polybus-Type"] == "DeadLetter" for d in handled)  # persistent ones
    # Everything was acked: the server holds no delivery that could come back after the ack wait.
    consumer = any_bus.pull_consumer("WORK", "worker")
    await eventually(lambda: _none_unacked(consumer), 5, "the acks to reach the server")
    assert await consumer.fetch(10, 0.3) == []


async def _none_unacked(consumer: PullConsumer) -> bool:
    return await consumer.unacked() == 0


async def test_a_failed_handler_gets_the_message_again(any_bus: Bus) -> None:
    for n in range(3):
        await any_bus.publish_persistent(work(any_bus, n), letter(n), msg_id=f"m{n}")
    handled = await collect(any_bus, 3, handler_fails={1})
    assert sorted(int(decode(d.data).raw) for d in handled) == [0, 1, 2]  # type: ignore[union-attr]
    redelivered = [d for d in handled if int(decode(d.data).raw) == 1]  # type: ignore[union-attr]
    assert redelivered[0].num_delivered == 2


async def test_unacked_messages_are_redelivered_after_the_ack_wait(any_bus: Bus) -> None:
    await any_bus.publish_persistent(work(any_bus), letter(7), msg_id="m7")
    consumer = any_bus.pull_consumer("WORK", "worker")
    first = await consumer.fetch(1, 2)
    assert len(first) == 1  # ...and never acked
    assert await consumer.unacked() == 1
    again = await consumer.fetch(1, 3)
    assert len(again) == 1
    assert again[0].stream_sequence == first[0].stream_sequence
    assert again[0].num_delivered == 2
    await again[0].ack()


async def test_same_msg_id_is_stored_once(any_bus: Bus) -> None:
    first = await any_bus.publish_persistent(work(any_bus), letter(1), msg_id="same")
    second = await any_bus.publish_persistent(work(any_bus), letter(1), msg_id="same")
    assert not first.duplicate
    assert second.duplicate
    assert second.sequence == first.sequence
    # Core publishes with the same id are dropped by the stream too (the market-data path).
    await any_bus.publish(work(any_bus), letter(2), msg_id="core")
    await any_bus.publish(work(any_bus), letter(2), msg_id="core")
    await any_bus.flush()
    handled = await collect(any_bus, 2)
    assert [d.stream_sequence for d in handled] == [1, 2]
    assert await any_bus.pull_consumer("WORK", "worker").fetch(10, 0.5) == []


async def test_persistent_publish_to_a_subject_no_stream_captures_fails_loudly(
    any_bus: Bus,
) -> None:
    with pytest.raises(PublishError, match="no stream"):
        await any_bus.publish_persistent(
            any_bus.namespace.subjects.stream_subjects("nowhere.x"),
            letter(1),
            msg_id="x",
            timeout=1,
        )


async def test_core_subscribe_with_wildcards_and_request_reply(any_bus: Bus) -> None:
    received: list[Message] = []
    got = asyncio.Event()

    async def on_message(message: Message) -> None:
        received.append(message)
        got.set()

    subjects = any_bus.namespace.subjects
    subscription = await any_bus.subscribe(subjects.market_data_kind("book"), on_message)

    async def responder(message: Message) -> None:
        await any_bus.respond(message, b"pong:" + message.data)

    replier = await any_bus.subscribe(subjects.snapshot_request_all(), responder)
    await any_bus.flush()
    await any_bus.publish(subjects.delta(0, "1"), letter(0))
    await any_bus.publish(subjects.book(0, "1"), letter(1), msg_id="b1")
    await any_bus.flush()
    await asyncio.wait_for(got.wait(), 5)
    assert [m.subject for m in received] == [subjects.book(0, "1")]
    assert received[0].headers["Nats-Msg-Id"] == "b1"
    reply = await any_bus.request(subjects.snapshot_request("1"), b"ping", timeout=2)
    assert reply.data == b"pong:ping"
    await subscription.unsubscribe()
    await replier.unsubscribe()


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b", "a.b", True),
        ("*.b", "a.b", True),
        ("a.*.c", "a.x.d", False),
    ],
)
def test_twin_wildcard_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


# -- publish_many: the ingest's publisher path, the same messages as publish of each --------
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
