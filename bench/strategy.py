"""Book event on the bus -> intent published by a strategy replica, beside a bare NATS hop.

One run, one local nats-server (JetStream on, the checked-in streams):

- *bare hop*: a core subscriber republishes each message it gets on another subject;
- *strategy*: a ``BookDelta`` published as the ingest does (core NATS, captured by MD) reaches
  a ``BookFeed``, the ``StrategyRuntime`` calls a strategy that places on every book change,
  and the service's ``IntentPublisher`` publishes the intent with a JetStream ack
  (``Nats-Msg-Id`` = intent id).

Latency is from the moment the event is published to the moment a core subscriber on the
target subject receives the result (one event in flight: p50/p99); throughput is events/s with
every event published back to back until the last result arrived. Figures are printed, never
asserted (DESIGN §9: frame -> intent p50 <= 1 ms, p99 <= 5 ms end to end).

    uv run python bench/strategy.py [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from polybus.common.book_view import BookFeed, BookView
from polybus.common.bus import Message
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    Level,
    LevelChange,
    MarketInfo,
    Outcome,
    intent_decoder,
)
from polybus.common.infra import RunningProcess, free_port
from polybus.common.infra.nats_server import nats_server_spec
from polybus.common.money import MICROS
from polybus.common.streams import load_definitions
from polybus.common.subjects import Namespace, partition_of
from polybus.strategy.api import Action, Place, Strategy
from polybus.strategy.portfolio import LivePortfolio
from polybus.strategy.runtime import IntentIds, StrategyRuntime
from polybus.strategy.service import IntentPublisher

STREAMS = Path(__file__).resolve().parents[1] / "config" / "streams.toml"
CONDITION = "0x" + "ee" * 32
ASSET = "9" * 70
PARTITIONS = 16
PART = partition_of(CONDITION, PARTITIONS)


class EveryBook(Strategy):
    """Places on every book change; the reason carries the event's publish time."""

    name = "bench"

    def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
        asset = view.asset(asset_id)
        assert asset is not None
        return (
            Place(
                asset_id=asset_id,
                side="BUY",
                price=400_000,
                size=5 * MICROS,
                reason=str(asset.updated_ns),
            ),
        )


def delta(seq: int) -> BookDelta:
    now = time.time_ns()
    return BookDelta(
        event_id=f"d{seq}",
        ts_event=now,
        ts_init=now,
        asset_id=ASSET,
        condition_id=CONDITION,
        seq=seq,
        epoch=1,
        changes=(LevelChange("BUY", 390_000, seq * MICROS),),
        best_bid=390_000,
        best_ask=410_000,
    )


def report(name: str, latencies_ns: list[int], rate: float) -> None:
    ordered = sorted(latencies_ns)
    p50 = statistics.median(ordered) / 1e6
    p99 = ordered[int(len(ordered) * 0.99) - 1] / 1e6
    print(f"{name:<34} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   {rate:10,.0f} events/s")


async def measure(
    count: int, send: Callable[[int], Awaitable[None]], received: list[int], arrived: asyncio.Event
) -> tuple[list[int], float]:
    """One in flight for latency, then ``count`` back to back for throughput."""
    latencies = []
    for n in range(count):
        arrived.clear()
        before = len(received)
        await send(n)
        while len(received) == before:
            await arrived.wait()
            arrived.clear()
        latencies.append(received[-1])
    target = len(received) + count
    started = time.perf_counter()
    for n in range(count, 2 * count):
        await send(n)
    while len(received) < target:
        arrived.clear()
        await arrived.wait()
    return latencies, count / (time.perf_counter() - started)


async def bare_hop(url: str, count: int) -> None:
    bus = await NatsBus.connect(url, name="bench-hop")
    received: list[int] = []
    arrived = asyncio.Event()

    async def hop(message: Message) -> None:
        await bus.publish_bytes("bench.out", message.data)

    async def done(message: Message) -> None:
        received.append(time.time_ns() - int(message.data))
        arrived.set()

    await bus.subscribe("bench.in", hop)
    await bus.subscribe("bench.out", done)
    await bus.flush()

    async def send(n: int) -> None:
        await bus.publish_bytes("bench.in", str(time.time_ns()).encode())

    latencies, rate = await measure(count, send, received, arrived)
    report("bare NATS subscribe -> publish", latencies, rate)
    await bus.drain()


async def strategy_hop(url: str, count: int) -> None:
    namespace = Namespace()
    bus = await NatsBus.connect(url, name="bench-strategy", namespace=namespace)
    await bus.apply(load_definitions(STREAMS))
    subjects = namespace.subjects
    now = time.time_ns()
    info = MarketInfo(
        event_id="m",
        ts_event=now,
        ts_init=now,
        condition_id=CONDITION,
        question="bench",
        slug="bench",
        outcomes=(Outcome(token_id=ASSET, outcome="Yes"),),
        tick_size=10_000,
        min_order_size=5 * MICROS,
    )
    await bus.publish_persistent(subjects.market(PART, CONDITION), info, msg_id="m")
    snapshot = BookSnapshot(
        event_id="s",
        ts_event=now,
        ts_init=now,
        asset_id=ASSET,
        condition_id=CONDITION,
        seq=1,
        epoch=1,
        bids=(Level(390_000, MICROS),),
        asks=(Level(410_000, MICROS),),
        tick_size=10_000,
    )
    await bus.publish_persistent(subjects.book(PART, ASSET), snapshot, msg_id="s")

    view = BookView()
    portfolio = LivePortfolio(EveryBook.name)
    core = StrategyRuntime(
        EveryBook(EveryBook.settings_type(), portfolio),
        portfolio,
        view,
        IntentIds(EveryBook.name, "bench", time.time_ns()),
        partitions=PARTITIONS,
        clock=time.time_ns,
    )
    for partition in range(PARTITIONS):
        core.on_partition_acquired(partition, 0)
    core.start()
    publisher = IntentPublisher(bus, retry_interval_s=0.2)
    received: list[int] = []
    arrived = asyncio.Event()

    async def on_intent(message: Message) -> None:
        intent = intent_decoder.decode(message.data)
        received.append(time.time_ns() - int(intent.reason))
        arrived.set()

    await bus.subscribe(subjects.intent_all(EveryBook.name), on_intent)

    def on_book(view: BookView, asset_id: str) -> None:
        publisher.submit(core.on_book(asset_id))

    feed = BookFeed(bus, view, on_book=on_book)
    tasks = [asyncio.create_task(feed.run()), asyncio.create_task(publisher.run())]
    await feed.ready.wait()
    await publisher.flush()
    received.clear()
    sequence = iter(range(2, 10**9))

    async def send(n: int) -> None:
        event = delta(next(sequence))
        await bus.publish(subjects.delta(PART, ASSET), event, msg_id=event.event_id)

    latencies, rate = await measure(count, send, received, arrived)
    report("book event -> intent (JetStream ack)", latencies, rate)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await bus.drain()


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        server = RunningProcess(
            nats_server_spec(
                store_dir=Path(scratch) / "js",
                port=port,
                monitor_port=free_port(),
                log_file=Path(scratch) / "log",
            )
        )
        try:
            url = f"nats://127.0.0.1:{port}"
            await bare_hop(url, count)
            await strategy_hop(url, count)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    asyncio.run(main(parser.parse_args().events))
