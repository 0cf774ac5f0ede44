"""Simulator benchmark: frames/s and price-change entries/s it sustains on loopback to one
subscriber (a plain websockets client in its own process), beside a baseline measured in the
same run: a bare aiohttp WebSocket server sending the same pre-encoded frames.

1. live flow: the simulator generating order flow as fast as it can (one process, one core),
   encoding each event once and batching them into array frames.
2. capture replay at full speed: a capture of that flow generated beforehand, served
   verbatim (``capture_file``, ``capture_pace = "max"``): the fan-out path alone.
3. baseline: a bare aiohttp server looping over the same frames with ``send_frame``.

Run: ``uv run python bench/sim.py [--quick]``. Loopback only; it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from polybus.sim.capture import generate_capture
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator


# -- the subscriber (a separate process) ---------------------------------------------------------
async def _client(url: str, assets: list[str], seconds: float) -> dict[str, float]:
    import websockets

    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"assets_ids": assets, "type": "market", "initial_dump": True}))
        frames = events = entries = size = 0
        first = last = 0.0
        deadline = time.perf_counter() + seconds + 30
        while time.perf_counter() < deadline:
            try:
                async with asyncio.timeout(2.0 if first else 30.0):
                    frame = await ws.recv(decode=False)
            except TimeoutError:
                break
            now = time.perf_counter()
            if not first:
                first = now  # the initial dump starts the clock; it is not counted
                deadline = now + seconds
                continue
            last = now
            frames += 1
            size += len(frame)
            events += frame.count(b'"event_type"')
            entries += frame.count(b'"best_bid"')
        elapsed = max(last - first, 1e-9)
        return {
            "seconds": elapsed,
            "frames_per_s": frames / elapsed,
            "events_per_s": events / elapsed,
            "entries_per_s": entries / elapsed,
            "mb_per_s": size / elapsed / 1e6,
            "events_per_frame": events / max(frames, 1),
        }


async def _subscribe_in_process(url: str, assets: list[str], seconds: float) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", url, "--seconds", str(seconds),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await process.communicate(json.dumps(assets).encode())
    result: dict[str, float] = json.loads(stdout)
    return result


# -- the three servers ---------------------------------------------------------------------------
async def live_flow(markets: int, seconds: float) -> dict[str, float]:
    settings = SimSettings(
        port=0,
        seed=1,
        binary_markets=markets,
        neg_risk_events=0,
        changes_per_second=200_000,  # more than one core generates: it runs flat out
        connect_bus=False,
    )
    async with Simulator(settings) as sim:
        return await _subscribe_in_process(sim.market_ws_url, sim.asset_ids(), seconds)


async def replay(capture: Path, seconds: float) -> dict[str, float]:
    settings = SimSettings(
        port=0,
        binary_markets=1,
        neg_risk_events=0,
        capture_file=str(capture),
        capture_pace="max",
        connect_bus=False,
    )
    async with Simulator(settings) as sim:
        return await _subscribe_in_process(sim.market_ws_url, ["any"], seconds)


async def baseline(frames: list[bytes], seconds: float) -> dict[str, float]:
    """A bare aiohttp WebSocket server sending pre-encoded frames, nothing else."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.receive()  # the subscribe frame
        try:
            while not ws.closed:
                for frame in frames:
                    await ws.send_frame(frame, WSMsgType.TEXT)
        except ConnectionError:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await _subscribe_in_process(f"ws://127.0.0.1:{port}/ws", [], seconds)
    finally:
        await runner.cleanup()


def _row(name: str, result: dict[str, float]) -> str:
    return (
        f"{name:<34} {result['frames_per_s']:>10,.0f} {result['events_per_s']:>12,.0f} "
        f"{result['entries_per_s']:>12,.0f} {result['events_per_frame']:>8.1f} "
        f"{result['mb_per_s']:>8.1f}"
    )


async def main(quick: bool) -> None:
    seconds = 3.0 if quick else 8.0
    markets = 200
    with tempfile.TemporaryDirectory() as directory:
        capture = Path(directory) / "flow.jsonl"
        stats = generate_capture(
            capture,
            SimSettings(seed=1, binary_markets=markets, neg_risk_events=0),
            batches=300 if quick else 1500,
            actions_per_batch=400,
        )
        frames = [
            json.loads(line)["frame"].encode()
            for line in capture.read_text().splitlines()[(markets * 2 + 99) // 100 :]
        ]
        print(
            f"capture: {stats.frames:,} frames, {stats.events:,} events, "
            f"{stats.price_change_entries:,} price-change entries, {stats.bytes / 1e6:.0f} MB"
        )
        results: list[tuple[str, dict[str, Any]]] = [
            ("simulator, live flow", await live_flow(markets, seconds)),
            ("simulator, capture replay (max)", await replay(capture, seconds)),
            ("baseline: bare aiohttp send_frame", await baseline(frames, seconds)),
        ]
    print(
        f"{'one subscriber on loopback':<34} {'frames/s':>10} {'events/s':>12} "
        f"{'entries/s':>12} {'ev/frame':>8} {'MB/s':>8}"
    )
    for name, result in results:
        print(_row(name, result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.client:
        subscribed = json.loads(sys.stdin.read())
        print(json.dumps(asyncio.run(_client(arguments.client, subscribed, arguments.seconds))))
    else:
        asyncio.run(main(arguments.quick))
