"""Bus -> tables -> replay on real nats-server and PostgreSQL: identical content, every type."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from polybus.common.bus import Message
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import BusConfig, Config, DatabaseConfig, Deployment, Secrets
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    Event,
    MarketInfo,
    MarketResolved,
    ServiceHealth,
    TickSizeChanged,
    Trade,
    decode,
    encode,
)
from polybus.common.runtime import HEALTH_BUCKET
from polybus.common.streams import Definitions
from polybus.recorder.config import RecorderSettings
from polybus.recorder.migrations import migrate
from polybus.recorder.recorder import ConsumerLoop, build_loops
from polybus.recorder.replay import replay
from polybus.recorder.store import PostgresStore
from polybus.recorder.tables import EVENT_TABLES, timestamp
from tests.conftest import NatsServerInfo
from tests.helpers import eventually
from tests.samples import BASE_NS, one_of_each, subject_for

MARKET_DATA = (
    BookSnapshot,
    BookDelta,
    Trade,
    TickSizeChanged,
    BookStatus,
    MarketInfo,
    MarketResolved,
)
SETTINGS = RecorderSettings(batch_max_delay_s=0.01, fetch_timeout_s=0.2)


def deployment_config(bus: NatsBus, nats_url: str, database_url: str) -> Config:
    namespace = bus.namespace
    return Config(
        path=Path("test.toml"),
        deployment=Deployment(
            bus=BusConfig(
                url=nats_url,
                subject_prefix=namespace.subject_prefix,
                stream_prefix=namespace.stream_prefix,
            ),
            database=DatabaseConfig(url=database_url),
        ),
        secrets=Secrets(),
        sections={},
    )


async def run_recorder(
    bus: NatsBus, definitions: Definitions, database_url: str, settings: RecorderSettings = SETTINGS
) -> tuple[asyncio.Event, list[ConsumerLoop], list[asyncio.Task[None]]]:
    stop = asyncio.Event()
    loops = build_loops(
        bus,
        bus.namespace,
        [c for c in definitions.consumer if c.durable == "recorder"],
        settings,
        stop,
        lambda: PostgresStore(
            lambda: asyncpg.connect(database_url, timeout=5), timeout=settings.write_timeout_s
        ),
    )
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    return stop, loops, tasks


@pytest.fixture
async def recorder_database(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await migrate(connection)
    yield connection
    await connection.close()


async def publish_all(bus: NatsBus, events: list[Event]) -> None:
    health = await bus.js.key_value(bus.namespace.bucket(HEALTH_BUCKET))
    for event in events:
        if isinstance(event, ServiceHealth):
            await health.put(f"{event.service}.{event.instance}", encode(event))
        else:
            subject = subject_for(bus.namespace.subjects, event)
            await bus.publish_persistent(subject, event, msg_id=event.event_id)


async def stored_events(connection: asyncpg.Connection) -> list[Event]:
    events: list[Event] = []
    for table in EVENT_TABLES:
        records = await connection.fetch(table.query)
        events.extend(table.event(record) for record in records)
    return events


async def test_every_event_type_round_trips_bus_to_table_to_replay(
    bus: NatsBus,
    definitions: Definitions,
    recorder_database: asyncpg.Connection,
    database_url: str,
    nats_server: NatsServerInfo,
    tmp_path: Path,
) -> None:
    await bus.apply(definitions)
    events = one_of_each(1)
    assert {type(e) for e in events} == {t.event_type for t in EVENT_TABLES}
    await publish_all(bus, events)
    await bus.publish_bytes(bus.namespace.subjects.control("halt"), b'{"by":"operator"}')
    stop, _, tasks = await run_recorder(bus, definitions, database_url)

    async def all_recorded() -> bool:
        return len(await stored_events(recorder_database)) >= len(events)

    await eventually(all_recorded, 20, "every event recorded")
    await eventually(
        lambda: recorder_database.fetchval("SELECT count(*) FROM control_messages"),
        10,
        "the halt command recorded",
    )
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)

    # bus -> table: every field of every event, exactly.
    assert sorted(await stored_events(recorder_database), key=lambda e: e.event_id) == sorted(
        events, key=lambda e: e.event_id
    )
    halt = await recorder_database.fetchrow("SELECT subject, verb, payload FROM control_messages")
    assert halt is not None
    assert halt["subject"] == bus.namespace.subjects.control("halt")
    assert (halt["verb"], halt["payload"]) == ("halt", b'{"by":"operator"}')
    # Every row knows where it came from: stream and sequence.
    deltas = await recorder_database.fetch("SELECT stream, stream_seq FROM book_deltas")
    assert {r["stream"] for r in deltas} == {bus.namespace.stream("MD")}
    assert all(r["stream_seq"] > 0 for r in deltas)

    # table -> replay on the bus, under its own prefix: identical JSON, recorded order.
    market_data = [e for e in events if isinstance(e, MARKET_DATA)]
    assert isinstance(market_data[0], MarketInfo)
    config = deployment_config(bus, nats_server.url, database_url)
    prefix = f"{bus.namespace.subject_prefix}.replay"
    received: list[Message] = []

    async def on_message(message: Message) -> None:
        received.append(message)

    subscription = await bus.subscribe(f"{prefix}.md.>", on_message)
    await bus.flush()
    window = {
        "start": timestamp(BASE_NS) - timedelta(hours=1),
        "end": timestamp(BASE_NS) + timedelta(hours=1),
    }
    count = await replay(
        config,
        market=market_data[0].condition_id,
        asset="",
        speed=None,
        to_subject_prefix=prefix,
        out=None,
        **window,
    )
    assert count == len(market_data)
    await eventually(lambda: len(received) == count, 10, "every replayed event received")
    await subscription.unsubscribe()
    assert [m.data for m in received] == [encode(e) for e in market_data]
    assert [m.subject for m in received] == [
        subject_for(bus.namespace.subjects, e).replace(bus.namespace.subject_prefix, prefix, 1)
        for e in market_data
    ]

    # ... or into a file, one event per line.
    out = tmp_path / "replay.jsonl"
    await replay(
        config,
        market="",
        asset=market_data[1].asset_id,  # type: ignore[union-attr]
        speed=None,
        to_subject_prefix="replay",
        out=out,
        **window,
    )
    lines = out.read_bytes().splitlines()
    assert [decode(line) for line in lines] == market_data
    assert lines == [encode(e) for e in market_data]


async def test_a_poison_message_is_dead_lettered_and_the_stream_keeps_flowing(
    bus: NatsBus,
    definitions: Definitions,
    recorder_database: asyncpg.Connection,
    database_url: str,
) -> None:
    await bus.apply(definitions)
    subjects = bus.namespace.subjects
    [market, *_] = one_of_each(2)
    assert isinstance(market, MarketInfo)
    fields = {f: getattr(market, f) for f in market.__struct_fields__}
    # Valid JSON for the decoder, but PostgreSQL cannot store a NUL character in a text column.
    nul = MarketInfo(**{**fields, "event_id": "market:nul", "question": "a\x00b"})
    good = [MarketInfo(**{**fields, "event_id": f"market:{n}"}) for n in range(5)]
    await bus.publish_persistent(subject_for(subjects, good[0]), good[0], msg_id="g0")
    await bus.publish_bytes(subjects.delta(3, "123"), b"\x00\x01 not an event")
    await bus.publish_persistent(subject_for(subjects, nul), nul, msg_id="nul")
    for n, event in enumerate(good[1:], 1):
        await bus.publish_persistent(subject_for(subjects, event), event, msg_id=f"g{n}")
    dead_before = _metric("polybus_recorder_dead_letters_total", stream="MD", reason="rejected")
    rows_before = _metric("polybus_recorder_rows_written_total", table="markets")
    stop, _, tasks = await run_recorder(bus, definitions, database_url)
    try:
        await eventually(
            lambda: _count(recorder_database, "undecodable_messages", 2), 20, "two dead letters"
        )
        await eventually(lambda: _count(recorder_database, "markets", 5), 20, "the good events")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    dead = await recorder_database.fetch(
        "SELECT stream_seq, subject, error, raw FROM undecodable_messages ORDER BY stream_seq"
    )
    assert [(r["stream_seq"], r["subject"]) for r in dead] == [
        (2, subjects.delta(3, "123")),
        (3, subject_for(subjects, nul)),
    ]
    assert dead[0]["raw"] == b"\x00\x01 not an event"
    assert dead[0]["error"].startswith("undecodable")
    assert dead[1]["error"].startswith("rejected by the store")
    assert decode(dead[1]["raw"]) == nul
    info = await bus.js.consumer_info(bus.namespace.stream("MD"), "recorder")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    dead_after = _metric("polybus_recorder_dead_letters_total", stream="MD", reason="rejected")
    assert dead_after - dead_before == 1
    assert _metric("polybus_recorder_rows_written_total", table="markets") - rows_before == 5


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _count(connection: asyncpg.Connection, table: str, expected: int) -> bool:
    return bool(await connection.fetchval(f"SELECT count(*) FROM {table}") == expected)
