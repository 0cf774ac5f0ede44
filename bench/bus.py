"""Bus throughput and latency through a real nats-server, beside bare nats-py in the same run.

    uv run python bench/bus.py [--messages 100000]

Starts its own nats-server (the embedded launcher, loopback, free ports) and measures:

- core publish (msgs/s): ``bus.publish(subject, event, msg_id)`` (encode + headers) vs a bare
  ``nc.publish(subject, payload)`` of the same bytes;
- core subscribe (msgs/s): ``bus.subscribe`` handler vs a bare ``nc.subscribe`` callback;
- JetStream publish with ack (msgs/s): sequential ``bus.publish_persistent`` vs bare
  ``js.publish``;
- durable consume (msgs/s): ``polybus.common.bus.consume`` (fetch, handler, ack) vs a bare
  ``fetch(500)`` + ``ack()`` loop;
- one-hop latency (µs, p50/p99): publish → subscriber on another connection at 1,000 msg/s,
  polybus (event encode/decode) vs bare bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.msg import Msg

from polybus.common.bus import Delivery, Message, consume
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import BookDelta, LevelChange, encode, market_data_decoder
from polybus.common.infra import RunningProcess, free_port
from polybus.common.infra.nats_server import nats_server_spec
from polybus.common.streams import ConsumerDefinition, Definitions, StreamDefinition
from polybus.common.subjects import Namespace

ASSET = "76670567130917723816490572615540605537878462672464291990940067659127658071111"


def delta(n: int, ts: int = 0) -> BookDelta:
    return BookDelta(
        event_id=f"delta:{ASSET}:{n}",
        ts_event=ts or n,
        ts_init=ts or n,
        asset_id=ASSET,
        condition_id="0x285746de0e4f751fd4dc8f9dc2cecd0101ba9ad0096a43145ed9643b09514f01",
        seq=n,
        epoch=1,
        changes=(LevelChange("BUY", 301_000, 1_000_000_000),),
        best_bid=301_000,
        best_ask=397_000,
    )


async def rate(count: int, run: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await run()
    return count / (time.perf_counter() - started)


async def publish_rates(bus: NatsBus, raw: nats.NATS, n: int) -> tuple[float, float]:
    events = [delta(i) for i in range(n)]
    payload = encode(events[0])
    subject = bus.namespace.subjects.delta(0, ASSET)

    async def ours() -> None:
        for event in events:
            await bus.publish(subject, event, msg_id=event.event_id)
        await bus.flush(30)

    async def bare() -> None:
        for _ in range(n):
            await raw.publish(subject, payload)
        await raw.flush(30)

    return await rate(n, ours), await rate(n, bare)


async def subscribe_rates(bus: NatsBus, raw: nats.NATS, url: str, n: int) -> tuple[float, float]:
    subject = bus.namespace.subjects.delta(1, ASSET)
    payload = encode(delta(0))
    publisher = await nats.connect(url)

    async def measure(ours: bool) -> float:
        done = asyncio.Event()
        received = 0

        def count() -> None:
            nonlocal received
            received += 1
            if received == n:
                done.set()

        async def on_ours(message: Message) -> None:
            market_data_decoder.decode(message.data)
            count()

        async def on_bare(msg: Msg) -> None:
            count()

        handle = (
            await bus.subscribe(subject, on_ours)
            if ours
            else await raw.subscribe(subject, cb=on_bare)
        )
        await bus.flush()
        await raw.flush()
        started = time.perf_counter()
        for _ in range(n):
            await publisher.publish(subject, payload)
        await publisher.flush(30)
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - started
        await handle.unsubscribe()
        return n / elapsed

    try:
        return await measure(ours=True), await measure(ours=False)
    finally:
        await publisher.close()


async def persistent_rates(bus: NatsBus, n: int) -> tuple[float, float]:
    subject = bus.namespace.subjects.stream_subjects("work.persistent")
    events = [delta(i) for i in range(n)]
    payload = encode(events[0])

    async def ours() -> None:
        for event in events:
            await bus.publish_persistent(subject, event, msg_id=f"p{event.event_id}")

    async def bare() -> None:
        for _ in range(n):
            await bus.js.publish(subject, payload)

    return await rate(n, ours), await rate(n, bare)


async def consume_rates(bus: NatsBus, n: int) -> tuple[float, float]:
    subject = bus.namespace.subjects.stream_subjects("work.consume")
    payload = encode(delta(0))
    acks = [await bus.js.publish_async(subject, payload) for _ in range(2 * n)]
    await asyncio.gather(*acks)

    stop = asyncio.Event()
    handled = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            stop.set()

    async def ours() -> None:
        await consume(bus.pull_consumer("WORK", "ours"), handler, stop=stop, batch=500)

    async def bare() -> None:
        subscription = await bus.js.pull_subscribe_bind(
            durable="bare", stream=bus.namespace.stream("WORK")
        )
        done = 0
        while done < n:
            for msg in await subscription.fetch(500, timeout=5):
                await msg.ack()
                done += 1
        await subscription.unsubscribe()

    return await rate(n, ours), await rate(n, bare)


async def latency(
    bus: NatsBus, raw: nats.NATS, url: str, n: int
) -> tuple[list[float], list[float]]:
    subject = bus.namespace.subjects.trade(2, ASSET)
    publisher = await NatsBus.connect(url, name="bench-latency", namespace=bus.namespace)

    async def measure(ours: bool) -> list[float]:
        samples: list[float] = []
        done = asyncio.Event()

        def record(sent_ns: int) -> None:
            samples.append((time.perf_counter_ns() - sent_ns) / 1000)
            if len(samples) == n:
                done.set()

        async def on_ours(message: Message) -> None:
            record(market_data_decoder.decode(message.data).ts_init)

        async def on_bare(msg: Msg) -> None:
            record(int(msg.data))

        handle = (
            await bus.subscribe(subject, on_ours)
            if ours
            else await raw.subscribe(subject, cb=on_bare)
        )
        await bus.flush()
        await raw.flush()
        for i in range(n):
            if ours:
                await publisher.publish(subject, delta(i, time.perf_counter_ns()), msg_id=str(i))
            else:
                await publisher.nc.publish(subject, str(time.perf_counter_ns()).encode())
            await asyncio.sleep(0.001)  # ~1,000 msg/s: latency, not throughput
        await asyncio.wait_for(done.wait(), 60)
        await handle.unsubscribe()
        return samples

    try:
        return await measure(ours=True), await measure(ours=False)
    finally:
        await publisher.drain()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


async def main(n: int) -> None:
    store = Path(tempfile.mkdtemp(prefix="polybus-bench-"))
    port = free_port()
    server = RunningProcess(
        nats_server_spec(store_dir=store / "js", port=port, monitor_port=free_port())
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        bus = await NatsBus.connect(url, name="bench", namespace=Namespace("bench", "BENCH_"))
        raw = await nats.connect(url)
        await bus.apply(
            Definitions(
                stream=(StreamDefinition(name="WORK", subjects=("work.>",)),),
                consumer=(
                    ConsumerDefinition(
                        stream="WORK", durable="ours", max_ack_pending=20_000,
                        filter_subjects=("work.consume",),
                    ),
                    ConsumerDefinition(
                        stream="WORK", durable="bare", max_ack_pending=20_000,
                        filter_subjects=("work.consume",),
                    ),
                ),
            )
        )  # fmt: skip
        rows = [
            ("core publish (msgs/s)", *await publish_rates(bus, raw, n)),
            ("core subscribe (msgs/s)", *await subscribe_rates(bus, raw, url, n)),
            ("JetStream publish+ack, sequential (msgs/s)", *await persistent_rates(bus, n // 10)),
            ("durable consume, ack each (msgs/s)", *await consume_rates(bus, n // 2)),
        ]
        ours, bare = await latency(bus, raw, url, 5000)
        await raw.close()
        await bus.drain()
    finally:
        server.stop()
    print(f"bus benchmark: nats-server on loopback, {n} messages, {len(encode(delta(0)))} B events")
    print(f"{'measure':<46}{'polybus':>14}{'bare nats-py':>16}{'ratio':>8}")
    for label, mine, baseline in rows:
        print(f"{label:<46}{mine:>14,.0f}{baseline:>16,.0f}{mine / baseline:>8.2f}")
    for q in (0.5, 0.99):
        label = f"one-hop latency p{int(q * 100)} (µs, 1,000 msg/s)"
        mine, baseline = percentile(ours, q), percentile(bare, q)
        print(f"{label:<46}{mine:>14,.0f}{baseline:>16,.0f}{mine / baseline:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().messages))
