"""Ingest benchmarks (DESIGN §9): prints each figure beside a baseline measured in the same run.

1. decode + book + checks, no I/O: price-change entries/s through ``IngestEngine.on_frame``
   (every batch's best bid/ask checked; the venue hash recomputed on every batch, and with the
   default sampling), beside a bare ``msgspec`` decode loop over the same frames.
2. end to end: the simulator -> WebSocket -> ingest -> NATS, frames/s and events/s with a
   subscriber counting every published event (zero drops required), and CPU per 1,000 events.
3. memory: RSS per book with 5,000 assets live.

Run: ``uv run python bench/ingest.py [--quick]``. Needs nothing but loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import sys
import time
from typing import Any

import msgspec

from polybus.common.book import OrderBook
from polybus.common.money import MICROS, format_micros
from polybus.common.polymarket.book_hash import book_hash
from polybus.common.subjects import Subjects
from polybus.ingest.config import IngestSettings
from polybus.ingest.engine import IngestEngine

TICK = 10_000


def _levels(book: dict[int, int], descending: bool) -> list[tuple[str, str]]:
    return [
        (format_micros(p), format_micros(s)) for p, s in sorted(book.items(), reverse=descending)
    ]


def _hash(market: str, asset: str, ts: str, book: OrderBook) -> str:
    return book_hash(
        market=market,
        asset_id=asset,
        timestamp=ts,
        bids=_levels(book.bids, descending=False),
        asks=_levels(book.asks, descending=True),
        min_order_size="5",
        tick_size="0.01",
        neg_risk=False,
        last_trade_price="0.500",
    )


def _wire_levels(levels: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"price": p, "size": s} for p, s in levels]


def _initial_books(rng: random.Random) -> tuple[OrderBook, OrderBook]:
    """A YES book of 20 levels a side around a random mid, and its NO mirror."""
    yes_book, no_book = OrderBook(), OrderBook()
    mid = rng.randint(20, 80)
    for step in range(1, 21):
        size = rng.randint(1, 5000) * MICROS // 100
        if mid - step > 0:
            yes_book.set_bid((mid - step) * TICK, size)
            no_book.set_ask(MICROS - (mid - step) * TICK, size)
        if mid + step < 100:
            yes_book.set_ask((mid + step) * TICK, size)
            no_book.set_bid(MICROS - (mid + step) * TICK, size)
    return yes_book, no_book


def _book_frame(market: str, asset: str, book: OrderBook) -> bytes:
    ts = "1700000000000"
    event = {
        "market": market,
        "asset_id": asset,
        "timestamp": ts,
        "hash": _hash(market, asset, ts, book),
        "bids": _wire_levels(_levels(book.bids, descending=False)),
        "asks": _wire_levels(_levels(book.asks, descending=True)),
        "tick_size": "0.01",
        "event_type": "book",
        "last_trade_price": "0.500",
    }
    return msgspec.json.encode(event)


def generate(markets: int, messages: int, seed: int = 7) -> tuple[list[bytes], list[bytes], int]:
    """Initial book frames and price_change frames with correct best bid/ask and hashes, for
    ``markets`` binary markets (two mirrored tokens each). Returns (books, changes, entries)."""
    rng = random.Random(seed)
    state: list[tuple[str, str, str, OrderBook, OrderBook]] = []
    books: list[bytes] = []
    for m in range(markets):
        market = "0x" + f"{m:064x}"
        yes, no = f"{10**76 + 2 * m}", f"{10**76 + 2 * m + 1}"
        yes_book, no_book = _initial_books(rng)
        for asset, book in ((yes, yes_book), (no, no_book)):
            books.append(_book_frame(market, asset, book))
        state.append((market, yes, no, yes_book, no_book))
    changes: list[bytes] = []
    entries = 0
    for n in range(messages):
        market, yes, no, yes_book, no_book = state[rng.randrange(markets)]
        ts = str(1700000000001 + n)
        # A resting order added or removed near the top of the YES book, mirrored on NO.
        side = rng.choice(("BUY", "SELL"))
        best = yes_book.best_bid if side == "BUY" else yes_book.best_ask
        if best is None:
            continue
        offset = rng.randint(0, 3) * TICK
        price = best - offset if side == "BUY" else best + offset
        if not TICK <= price <= MICROS - TICK:
            continue
        size = 0 if rng.random() < 0.3 else rng.randint(1, 5000) * MICROS // 100
        yes_book.set_level(side, price, size)
        no_side = "SELL" if side == "BUY" else "BUY"
        no_book.set_level(no_side, MICROS - price, size)
        if yes_book.crossed or no_book.crossed:
            yes_book.set_level(side, price, 0)
            no_book.set_level(no_side, MICROS - price, 0)
            continue
        entry: list[dict[str, str]] = []
        for asset, book, s, p in (
            (yes, yes_book, side, price),
            (no, no_book, no_side, MICROS - price),
        ):
            entry.append(
                {
                    "asset_id": asset,
                    "price": format_micros(p),
                    "size": format_micros(size),
                    "side": s,
                    "hash": _hash(market, asset, ts, book),
                    "best_bid": format_micros(book.best_bid) if book.best_bid else "0",
                    "best_ask": format_micros(book.best_ask) if book.best_ask else "1",
                }
            )
        changes.append(
            msgspec.json.encode(
                {
                    "market": market,
                    "price_changes": entry,
                    "timestamp": ts,
                    "event_type": "price_change",
                }
            )
        )
        entries += 2
    return books, changes, entries


def bench_engine(books: list[bytes], changes: list[bytes], entries: int) -> dict[str, float]:
    results: dict[str, float] = {}
    decoder = msgspec.json.Decoder()
    started = time.perf_counter()
    for frame in changes:
        decoder.decode(frame)
    results["baseline bare msgspec decode (untyped), entries/s"] = entries / (
        time.perf_counter() - started
    )
    for label, interval in (("hash every batch", 0.0), ("hash at most 1/s per asset", 1.0)):
        settings = IngestSettings(hash_check_interval_s=interval, snapshot_interval_s=0)
        engine = IngestEngine(Subjects(), 16, settings, auto_track=True)
        for frame in books:
            engine.on_frame(frame, 1)
        engine.outbox.clear()
        gc.collect()
        started = time.perf_counter()
        for frame in changes:
            # The wall clock, as in the service: the hash sampling runs in real time.
            engine.on_frame(frame, time.time_ns())
            if len(engine.outbox) > 1_000:
                # The publisher drains the outbox continuously; a long one only makes the
                # garbage collector's work grow.
                engine.outbox.clear()
        elapsed = time.perf_counter() - started
        failed = sum(t.counts.bbo_failed + t.counts.hash_failed for t in engine.tracks.values())
        stale = sum(t.counts.stale for t in engine.tracks.values())
        if failed or stale:
            raise SystemExit(f"benchmark frames failed checks: {failed} failed, {stale} stale")
        results[f"decode+book+checks ({label}), entries/s"] = entries / elapsed
    return results


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory(assets: int) -> dict[str, float]:
    books, _, _ = generate(assets // 2, 0, seed=11)
    gc.collect()
    before = rss_bytes()
    engine = IngestEngine(Subjects(), 16, IngestSettings(snapshot_interval_s=0), auto_track=True)
    for frame in books:
        engine.on_frame(frame, 1)
    engine.outbox.clear()
    del books
    gc.collect()
    after = rss_bytes()
    live = sum(1 for t in engine.tracks.values() if t.state.value == "live")
    levels = sum(len(t.book) for t in engine.tracks.values()) / max(1, live)
    return {
        "assets live": float(live),
        "levels per book": levels,
        "RSS per book (bytes), engine + book + track": (after - before) / max(1, live),
    }


_SIM_PROCESS = """
import asyncio, sys
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator

async def main():
    settings = SimSettings(
        port=0, seed=3, binary_markets=int(sys.argv[1]), neg_risk_events=0, connect_bus=False,
        changes_per_second=float(sys.argv[2]), flow_interval_ms=10, trade_probability=0.02,
        custom_feature_interval_s=0.0,
    )
    async with Simulator(settings) as sim:
        print("URLS", sim.http_url, sim.market_ws_url, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def bench_end_to_end(markets: int, rate: float, seconds: float) -> dict[str, float]:
    """The simulator (its own process) -> WebSocket -> this process's ingest -> nats-server.
    Zero drops: every event published must be in the MD stream at the end."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from polybus.common.bus.nats_bus import NatsBus
    from polybus.common.infra import RunningProcess, free_port
    from polybus.common.infra.nats_server import nats_server_spec
    from polybus.common.streams import load_definitions
    from polybus.common.subjects import Namespace
    from polybus.ingest.service import Ingest

    workdir = Path(tempfile.mkdtemp(prefix="polybus-bench-"))
    port = free_port()
    server = RunningProcess(
        nats_server_spec(
            store_dir=workdir / "js",
            port=port,
            monitor_port=free_port(),
            log_file=workdir / "nats.log",
        )
    )
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SIM_PROCESS,
        str(markets),
        str(rate),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert sim.stdout is not None
        line = b""
        while not line.startswith(b"URLS "):
            line = await sim.stdout.readline()
            if not line:
                raise SystemExit("the simulator did not start")
        _, http_url, ws_url = line.decode().split()
        bus = await NatsBus.connect(
            f"nats://127.0.0.1:{port}", name="bench-ingest", namespace=Namespace("b", "B_")
        )
        definitions = load_definitions(Path(__file__).parents[1] / "config" / "streams.toml")
        await bus.apply(definitions)
        settings = IngestSettings(
            market_ws_url=ws_url,
            clob_url=http_url,
            gamma_url=http_url,
            discover_top_n=100_000,
            snapshot_interval_s=0,
        )
        ingest = Ingest(bus, settings, partitions=16)
        async with ingest:
            for _ in range(600):
                if ingest.engine.states()["live"] >= 2 * markets:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # warm up
            stats = ingest.engine.stats
            frames0, entries0, published0 = stats.frames, stats.entries, ingest.publisher.published
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            cpu1, wall1 = time.process_time(), time.perf_counter()
            frames1, entries1 = stats.frames, stats.entries
            published1 = ingest.publisher.published
            backlog = len(ingest.engine.outbox)
            sim.terminate()
            await asyncio.sleep(0.5)
            await ingest.publisher.publish_pending()
            await bus.flush()
            await asyncio.sleep(0.5)
            total_published = ingest.publisher.published
            failed = sum(
                t.counts.bbo_failed + t.counts.hash_failed for t in ingest.engine.tracks.values()
            )
        stream = await bus.js.stream_info(bus.namespace.stream("MD"))
        await bus.drain()
        elapsed = wall1 - wall0
        events = published1 - published0
        return {
            "e2e frames/s (sim -> ws -> ingest)": (frames1 - frames0) / elapsed,
            "e2e price-change entries/s": (entries1 - entries0) / elapsed,
            "e2e events published to NATS/s": events / elapsed,
            "e2e ingest CPU ms per 1,000 events": (cpu1 - cpu0) * 1e6 / max(1, events),
            "e2e events published (total)": float(total_published),
            "e2e events in the MD stream (total)": float(stream.state.messages),
            "e2e dropped (published - stored)": float(total_published - stream.state.messages),
            "e2e batch checks failed": float(failed),
            "e2e publish backlog at the end of the window": float(backlog),
        }
    finally:
        if sim.returncode is None:
            sim.kill()
        await sim.wait()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def bench_publish(count: int) -> dict[str, float]:
    """The publisher alone: ``count`` deltas through ``Publisher`` into NATS (captured by the
    MD stream), beside a raw nats-py publish loop of the same pre-encoded bytes."""
    import shutil
    import tempfile
    from pathlib import Path

    from polybus.common.bus import MSG_ID_HEADER
    from polybus.common.bus.nats_bus import NatsBus
    from polybus.common.events import encode
    from polybus.common.infra import RunningProcess, free_port
    from polybus.common.infra.nats_server import nats_server_spec
    from polybus.common.streams import load_definitions
    from polybus.common.subjects import Namespace
    from polybus.ingest.publisher import Publisher

    books, changes, _ = generate(100, count // 2 + 10, seed=5)
    engine = IngestEngine(Subjects("p"), 16, IngestSettings(snapshot_interval_s=0), auto_track=True)
    for frame in books + changes:
        engine.on_frame(frame, 1)
    items = list(engine.outbox)[:count]
    engine.outbox.clear()
    workdir = Path(tempfile.mkdtemp(prefix="polybus-bench-"))
    port = free_port()
    server = RunningProcess(
        nats_server_spec(
            store_dir=workdir / "js",
            port=port,
            monitor_port=free_port(),
            log_file=workdir / "nats.log",
        )
    )
    try:
        bus = await NatsBus.connect(
            f"nats://127.0.0.1:{port}", name="bench-publish", namespace=Namespace("p", "P_")
        )
        definitions = load_definitions(Path(__file__).parents[1] / "config" / "streams.toml")
        await bus.apply(definitions)
        # Baselines: the same subjects (so the MD stream stores every message in both), the
        # payloads encoded and the header dicts (Nats-Msg-Id, as the bus sends) built in advance.
        encoded = [
            (subject, encode(event), {MSG_ID_HEADER: f"raw.{msg_id}"})
            for subject, event, msg_id in items
        ]
        started = time.perf_counter()
        for subject, data, headers in encoded:
            await bus.nc.publish(subject, data, headers=headers)
        await bus.nc.flush()
        raw = len(encoded) / (time.perf_counter() - started)
        started = time.perf_counter()
        for subject, data, _ in encoded:
            await bus.nc.publish("raw." + subject, data)
        await bus.nc.flush()
        raw_no_headers = len(encoded) / (time.perf_counter() - started)
        # The floor of any publisher that encodes: the same loop, encoding each event and
        # building its header as it goes (nothing of ours beyond msgspec and a dict).
        await asyncio.sleep(1.0)
        await bus.js.purge_stream(bus.namespace.stream("MD"))
        renamed = [(subject, event, f"enc.{msg_id}") for subject, event, msg_id in items]
        started = time.perf_counter()
        for subject, event, msg_id in renamed:
            await bus.nc.publish(subject, encode(event), headers={MSG_ID_HEADER: msg_id})
        await bus.nc.flush()
        raw_encoding = len(items) / (time.perf_counter() - started)
        # An empty stream again, so both runs make the server store into the same state.
        await asyncio.sleep(1.0)
        await bus.js.purge_stream(bus.namespace.stream("MD"))
        engine.outbox.extend(items)
        publisher = Publisher(bus, engine.outbox)
        started = time.perf_counter()
        await publisher.publish_pending()
        await bus.nc.flush()
        ours = len(items) / (time.perf_counter() - started)
        await asyncio.sleep(1.0)
        stored = (await bus.js.stream_info(bus.namespace.stream("MD"))).state.messages
        await bus.drain()
        return {
            "baseline nc.publish, pre-encoded, no headers, no stream, msgs/s": raw_no_headers,
            "baseline nc.publish, pre-encoded + headers, into MD, msgs/s": raw,
            "baseline nc.publish, encoding + headers in the loop, into MD, msgs/s": raw_encoding,
            "Publisher -> NatsBus.publish_many -> NATS (encode + Nats-Msg-Id), events/s": ours,
            "publish dropped (published - stored in MD)": float(len(items) - stored),
        }
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args()
    messages = 20_000 if args.quick else 100_000
    books, changes, entries = generate(200, messages)
    print(f"# {len(changes)} price_change frames, {entries} entries, 400 assets")
    report: dict[str, Any] = {}
    # Memory first, while the heap has not grown yet (freed arenas would hide the growth).
    report.update(bench_memory(1_000 if args.quick else 5_000))
    report.update(bench_engine(books, changes, entries))
    report.update(asyncio.run(bench_publish(20_000 if args.quick else 200_000)))
    report.update(
        asyncio.run(
            bench_end_to_end(
                markets=100 if args.quick else 500,
                rate=2_000 if args.quick else 10_000,
                seconds=3 if args.quick else 10,
            )
        )
    )
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    report["process CPU so far (s)"] = cpu.ru_utime + cpu.ru_stime
    for key, value in report.items():
        print(f"{key:<60} {value:>14,.1f}")
    json.dump(report, sys.stderr)
    sys.stderr.write("\n")


if __name__ == "__main__":
    main()
