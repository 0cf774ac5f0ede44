"""The recorder's consumer loop on the in-memory twins (MemoryBus, MemoryStore).

What matters here is ordering: nothing is acked before its batch is committed, a failing store
holds the batch (and the stream) until it is back, and a poison message never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest

from polybus.common.bus import Delivery, PullConsumer
from polybus.common.bus.memory_bus import MemoryBus
from polybus.common.events import Event
from polybus.common.streams import Definitions, load_definitions
from polybus.common.subjects import Namespace
from polybus.recorder.config import RecorderSettings
from polybus.recorder.recorder import ConsumerLoop
from polybus.recorder.store import MemoryStore
from polybus.recorder.tables import (
    BOOK_DELTAS,
    CONTROL_MESSAGES,
    TABLE_FOR_TYPE,
    UNDECODABLE_MESSAGES,
)
from tests.conftest import STREAMS_FILE
from tests.helpers import eventually
from tests.samples import market_data, one_of_each, subject_for

SETTINGS = RecorderSettings(
    batch_max_events=50,
    batch_max_delay_s=0.005,
    fetch_timeout_s=0.05,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
)


@dataclass
class RecordingDelivery:
    """A delivery that remembers whether it was acked."""

    inner: Delivery
    log: list[tuple[str, int]]

    @property
    def subject(self) -> str:
        return self.inner.subject

    @property
    def data(self) -> bytes:
        return self.inner.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self.inner.headers

    @property
    def stream_sequence(self) -> int:
        return self.inner.stream_sequence

    @property
    def num_delivered(self) -> int:
        return self.inner.num_delivered

    async def ack(self) -> None:
        self.log.append(("ack", self.stream_sequence))
        await self.inner.ack()

    async def nak(self, delay: float = 0.0) -> None:
        self.log.append(("nak", self.stream_sequence))
        await self.inner.nak(delay)

    async def term(self) -> None:
        await self.inner.term()

    async def in_progress(self) -> None:
        self.log.append(("in_progress", self.stream_sequence))
        await self.inner.in_progress()


@dataclass
class RecordingConsumer:
    inner: PullConsumer
    log: list[tuple[str, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        return [RecordingDelivery(d, self.log) for d in await self.inner.fetch(batch, timeout)]

    def acked(self) -> set[int]:
        return {seq for verb, seq in self.log if verb == "ack"}


@dataclass
class Harness:
    bus: MemoryBus
    store: MemoryStore
    stop: asyncio.Event
    consumers: dict[str, RecordingConsumer]
    tasks: list[asyncio.Task[None]]

    async def publish(self, events: list[Event]) -> None:
        for event in events:
            await self.bus.publish_persistent(
                subject_for(self.bus.namespace.subjects, event), event, msg_id=event.event_id
            )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    namespace = Namespace("t", "T_")
    bus = MemoryBus(namespace)
    definitions: Definitions = load_definitions(STREAMS_FILE)
    await bus.apply(definitions)
    store = MemoryStore()
    stop = asyncio.Event()
    consumers: dict[str, RecordingConsumer] = {}
    tasks = []
    for definition in definitions.consumer:
        if definition.bucket or definition.durable != SETTINGS.durable:
            continue
        consumer = RecordingConsumer(bus.pull_consumer(definition.stream, definition.durable))
        consumers[definition.stream] = consumer
        loop = ConsumerLoop(
            label=definition.stream,
            stream=namespace.stream(definition.stream),
            consumer=consumer,
            store=store,
            settings=SETTINGS,
            stop=stop,
            raw=definition.stream in SETTINGS.verbatim_streams,
            ack_wait_s=0.3,
        )
        tasks.append(asyncio.create_task(loop.run()))
    yield Harness(bus, store, stop, consumers, tasks)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_events_are_stored_then_acked(harness: Harness) -> None:
    events = [e for e in one_of_each(1) if type(e).__name__ != "ServiceHealth"]
    await harness.publish(events)
    stored = lambda: sum(len(harness.store.rows(TABLE_FOR_TYPE[type(e)])) for e in events)  # noqa: E731
    await eventually(lambda: stored() >= len(events), 5, "every event stored")
    await eventually(
        lambda: sum(len(c.acked()) for c in harness.consumers.values()) == len(events),
        5,
        "every event acked",
    )
    for event in events:
        table = TABLE_FOR_TYPE[type(event)]
        assert event in harness.store.events(table)


async def test_nothing_is_acked_while_the_store_is_down_and_all_is_recorded_after(
    harness: Harness,
) -> None:
    harness.store.unavailable = True
    events = list(market_data(120, assets=10))
    await harness.publish(events)
    md = harness.consumers["MD"]
    await eventually(lambda: harness.store.failed_writes >= 5, 5, "retries while down")
    assert md.acked() == set()
    # The held batch is kept from redelivery meanwhile (ack wait 0.3 s here).
    await eventually(lambda: ("in_progress", 1) in md.log, 5, "in_progress on held messages")
    harness.store.unavailable = False
    await eventually(lambda: md.acked() == set(range(1, 121)), 5, "everything acked")
    stored = [row for table in TABLE_FOR_TYPE.values() for row in harness.store.rows(table)]
    assert len(stored) == 120


async def test_an_undecodable_message_is_dead_lettered_and_the_stream_keeps_flowing(
    harness: Harness,
) -> None:
    subjects = harness.bus.namespace.subjects
    events = list(market_data(30, assets=3))
    await harness.publish(events[:10])
    await harness.bus.publish_bytes(subjects.delta(1, "1"), b'{"type":"BookDelta","oops":1}')
    await harness.bus.publish_bytes(subjects.trade(1, "1"), b"\xff not json")
    await harness.publish(events[10:])
    md = harness.consumers["MD"]
    await eventually(lambda: md.acked() == set(range(1, 33)), 5, "all 32 messages acked")
    dead = sorted(harness.store.rows(UNDECODABLE_MESSAGES), key=lambda row: row[1])
    assert [(row[1], row[3]) for row in dead] == [
        (11, subjects.delta(1, "1")),
        (12, subjects.trade(1, "1")),
    ]
    assert dead[1][6] == b"\xff not json"
    assert all(row[4].startswith("undecodable:") for row in dead)
    recorded = sum(len(harness.store.rows(t)) for t in TABLE_FOR_TYPE.values())
    assert recorded == 30


async def test_a_row_the_store_refuses_is_isolated_and_dead_lettered(harness: Harness) -> None:
    events = list(market_data(60, assets=5))
    poison = next(e for e in events[5:] if type(e).__name__ == "BookDelta")
    harness.store.reject = lambda table, row: poison.event_id in row
    await harness.publish(events)
    md = harness.consumers["MD"]
    await eventually(lambda: md.acked() == set(range(1, 61)), 5, "all 60 acked")
    [dead] = harness.store.rows(UNDECODABLE_MESSAGES)
    assert dead[4].startswith("rejected by the store")
    assert poison.event_id.encode() in dead[6]
    assert poison not in harness.store.events(BOOK_DELTAS)
    recorded = sum(len(harness.store.rows(t)) for t in TABLE_FOR_TYPE.values())
    assert recorded == 59


async def test_a_republished_event_is_not_a_second_row(harness: Harness) -> None:
    events = list(market_data(20, assets=2))
    await harness.publish(events)
    # The same events again under other message ids (the stream stores them again).
    for event in events:
        await harness.bus.publish(
            subject_for(harness.bus.namespace.subjects, event),
            event,
            msg_id="again-" + event.event_id,
        )
    md = harness.consumers["MD"]
    await eventually(lambda: md.acked() == set(range(1, 41)), 5, "all 40 acked")
    recorded = sum(len(harness.store.rows(t)) for t in TABLE_FOR_TYPE.values())
    assert recorded == 20


async def test_control_commands_are_kept_verbatim(harness: Harness) -> None:
    subjects = harness.bus.namespace.subjects
    await harness.bus.publish_bytes(subjects.control("halt"), b"anything at all", {"X-By": "me"})
    ctl = harness.consumers["CTL"]
    await eventually(lambda: ctl.acked() == {1}, 5, "the command acked")
    [row] = harness.store.rows(CONTROL_MESSAGES)
    assert row[3:] == (subjects.control("halt"), "halt", '{"X-By":"me"}', b"anything at all")


async def test_a_key_value_delete_marker_is_acked_without_a_row(harness: Harness) -> None:
    subjects = harness.bus.namespace.subjects
    await harness.bus.publish_bytes(subjects.dead_letter("x"), b"", {"KV-Operation": "DEL"})
    dlq = harness.consumers["DLQ"]
    await eventually(lambda: dlq.acked() == {1}, 5, "the marker acked")
    assert harness.store.rows(UNDECODABLE_MESSAGES) == []


async def test_stopping_during_an_outage_leaves_the_batch_unacked(harness: Harness) -> None:
    harness.store.unavailable = True
    await harness.publish(list(market_data(5, assets=5)))
    await eventually(lambda: harness.store.failed_writes >= 2, 5, "retries while down")
    harness.stop.set()
    await asyncio.wait_for(asyncio.gather(*harness.tasks), 5)
    assert harness.consumers["MD"].acked() == set()


async def test_a_dead_letter_the_store_refuses_is_kept_bare(harness: Harness) -> None:
    subjects = harness.bus.namespace.subjects
    harness.store.reject = lambda table, row: table is UNDECODABLE_MESSAGES and row[5] != "{}"
    await harness.bus.publish_bytes(subjects.trade(1, "1"), b"junk", {"X-Odd": "a\x00b"})
    await harness.publish(list(market_data(3, assets=3)))
    md = harness.consumers["MD"]
    await eventually(lambda: md.acked() == {1, 2, 3, 4}, 5, "all acked")
    [dead] = harness.store.rows(UNDECODABLE_MESSAGES)
    assert dead[3:] == (subjects.trade(1, "1"), "unstorable: see raw", "{}", b"junk")


def test_dead_letter_text_never_carries_a_nul() -> None:
    from polybus.recorder.recorder import undecodable_row
    from polybus.recorder.tables import Source

    @dataclass
    class Raw:
        subject: str = "s"
        data: bytes = b"\x00"
        headers: Mapping[str, str] = field(default_factory=lambda: {"k\x00": "v\x00"})
        stream_sequence: int = 1
        num_delivered: int = 1

    row = undecodable_row(Raw(), Source("S", 1, "s"), "bad \x00 byte")  # type: ignore[arg-type]
    assert "\x00" not in row[4]
    assert "\x00" not in row[5]
    assert "\\u0000" not in row[5]
    assert row[6] == b"\x00"
