"""The market channel for ``bench/e2e.py``: a pre-generated capture served as the venue would.

The capture is the simulator's own (:func:`polybus.sim.capture.generate_capture`, the same seed
and universe as the ``[sim]`` service, so its books, hashes and token ids are the ones the ingest
discovers through the simulator's Gamma). The simulator's capture replay cannot serve it here:
it sends every socket the whole capture whatever the socket subscribed, and the ingest spreads
5,000 assets over 25 sockets, so it would get every event 25 times. This process answers the
venue's subscribe protocol (``assets_ids``/``operation``, ``initial_dump``, text ``PING``) and
sends each socket only the events of its markets, the way the venue and the live simulator do.

Two sections of one continuous flow:

- *paced*: ``--rate`` level changes a second (one batch every 10 ms) for ``--seconds``; in the
  second half a burst of ``--burst-factor`` times the rate for ``--burst-seconds`` at the start
  of every ``--burst-every`` seconds;
- *flood*: the rest as fast as each socket takes it (aiohttp waits for the socket to drain), up
  to ``max_events_per_frame`` events a frame, as the simulator's writer batches at high rates.

Control, one line each way (stdin / stdout), so the caller decides when each section starts::

    -> READY {"port": …, "markets": [[condition_id, spread_ticks], …], …}
    <- PACED        -> PACED {"start_ns": …, "end_ns": …, "sent": [[venue ms, sent ns], …], …}
    <- FLOOD        -> FLOOD {"start_ns": …, "end_ns": …, "frames": …, "events": …}
    <- DECODE       -> DECODE {"samples_ns": […]}  (a bare msgspec decode of each paced frame)

End of stdin stops it. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from polybus.common.money import parse_price
from polybus.sim.capture import generate_capture
from polybus.sim.config import SimSettings
from polybus.sim.replay import load_capture

BATCH_INTERVAL_MS = 10
DUMP_BOOKS_PER_FRAME = 100
MAX_EVENTS_PER_FRAME = SimSettings().max_events_per_frame


class _Keys(msgspec.Struct):
    """What routes a venue event: its market (every market-channel event names it)."""

    market: str = ""
    asset_id: str = ""
    event_type: str = ""
    timestamp: str = ""


class _Level(msgspec.Struct):
    price: str


class _Book(msgspec.Struct):
    bids: list[_Level]
    asks: list[_Level]
    tick_size: str


class _Subscribe(msgspec.Struct, kw_only=True):
    assets_ids: list[str] | None = None
    operation: str = ""
    initial_dump: bool = True


_keys = msgspec.json.Decoder(_Keys)
_subscribe = msgspec.json.Decoder(_Subscribe)
_elements = msgspec.json.Decoder(list[msgspec.Raw])


def schedule(seconds: float, every_s: float, burst_s: float, factor: int) -> list[float]:
    """Send times (s from the start) of the paced batches: one every 10 ms; in the second half,
    ``factor`` times as often for ``burst_s`` at the start of every ``every_s``."""
    offsets: list[float] = []
    now = 0.0
    base = BATCH_INTERVAL_MS / 1000
    while now < seconds:
        offsets.append(now)
        in_burst = now >= seconds / 2 and (now - seconds / 2) % every_s < burst_s
        now += base / factor if in_burst else base
    return offsets


def _frame(elements: list[bytes]) -> bytes:
    return elements[0] if len(elements) == 1 else b"[" + b",".join(elements) + b"]"


@dataclass
class _Capture:
    books: dict[str, bytes]
    """asset id -> its ``book`` event of the initial dump."""
    market_of: dict[str, str]
    batches: list[list[tuple[str, bytes]]]
    """One list per venue batch: (market, event) in the order generated."""
    timestamps: list[int]
    """Each batch's venue timestamp (ms): a batch's events share it, and it grows by batch."""


def load(path: Path) -> _Capture:
    frames = load_capture(path)
    books: dict[str, bytes] = {}
    market_of: dict[str, str] = {}
    by_time: dict[int, list[tuple[str, bytes]]] = {}
    venue_ms: dict[int, int] = {}
    dump_ns = frames[0].recv_ns
    for frame in frames:
        data = bytes(frame.data)
        raws = _elements.decode(data) if data.startswith(b"[") else [msgspec.Raw(data)]
        for raw in raws:
            element = bytes(raw)
            keys = _keys.decode(element)
            if frame.recv_ns == dump_ns:
                books[keys.asset_id] = element
                market_of[keys.asset_id] = keys.market
            else:
                by_time.setdefault(frame.recv_ns or 0, []).append((keys.market, element))
                if keys.timestamp:
                    venue_ms.setdefault(frame.recv_ns or 0, int(keys.timestamp))
    order = sorted(by_time)
    return _Capture(
        books, market_of, [by_time[t] for t in order], [venue_ms.get(t, 0) for t in order]
    )


def spread_ticks(book: bytes) -> int:
    levels = msgspec.json.decode(book, type=_Book)
    if not levels.bids or not levels.asks:
        return 0
    best_bid = max(parse_price(level.price) for level in levels.bids)
    best_ask = min(parse_price(level.price) for level in levels.asks)
    return (best_ask - best_bid) // parse_price(levels.tick_size)


@dataclass(eq=False)
class _Socket:
    ws: web.WebSocketResponse
    assets: set[str] = field(default_factory=set)

    async def send(self, data: bytes) -> bool:
        """Send one text frame; False once the peer has gone (the ingest reconnects)."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            return False
        return True


class Feed:
    def __init__(self, capture: _Capture, offsets: list[float], seconds: float) -> None:
        self.capture = capture
        self.offsets = offsets
        self.seconds = seconds
        self.sockets: set[_Socket] = set()
        self.streaming = False
        self.late_subscribes = 0
        """Assets subscribed after the flow started: their dump is stale (should stay 0)."""
        self.paced_frames: list[bytes] = []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        socket = _Socket(ws)
        self.sockets.add(socket)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                if message.data == "PING":
                    await socket.send(b"PONG")
                    continue
                await self._on_subscription(socket, message.data)
        finally:
            self.sockets.discard(socket)
        return ws

    async def _on_subscription(self, socket: _Socket, text: str) -> None:
        try:
            request = _subscribe.decode(text)
        except msgspec.DecodeError:
            return
        assets = request.assets_ids or []
        if request.operation.lower() == "unsubscribe":
            socket.assets.difference_update(assets)
            return
        new = [a for a in assets if a in self.capture.books and a not in socket.assets]
        socket.assets.update(new)
        if self.streaming:
            self.late_subscribes += len(new)
        if request.initial_dump:
            for start in range(0, len(new), DUMP_BOOKS_PER_FRAME):
                chunk = [self.capture.books[a] for a in new[start : start + DUMP_BOOKS_PER_FRAME]]
                await socket.send(b"[" + b",".join(chunk) + b"]")

    def _split(self, batches: list[list[tuple[str, bytes]]]) -> list[dict[_Socket, list[bytes]]]:
        """Each batch's events per socket that follows their market."""
        owner = {
            self.capture.market_of[asset]: socket
            for socket in self.sockets
            for asset in socket.assets
        }
        split = []
        for batch in batches:
            parts: dict[_Socket, list[bytes]] = {}
            for market, element in batch:
                socket = owner.get(market)
                if socket is not None:
                    parts.setdefault(socket, []).append(element)
            split.append(parts)
        return split

    async def paced(self) -> dict[str, Any]:
        self.streaming = True
        split = self._split(self.capture.batches[: len(self.offsets)])
        timestamps = self.capture.timestamps
        loop = asyncio.get_running_loop()
        frames = events = 0
        sent: list[tuple[int, int]] = []
        started, start_ns = loop.time(), time.time_ns()
        for batch, (offset, parts) in enumerate(zip(self.offsets, split, strict=True)):
            delay = started + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append((timestamps[batch], time.time_ns()))
            for socket, elements in parts.items():
                data = _frame(elements)
                if await socket.send(data):
                    self.paced_frames.append(data)
                    frames += 1
                    events += len(elements)
        first_burst = next(i for i, offset in enumerate(self.offsets) if offset >= self.seconds / 2)
        return {
            "start_ns": start_ns,
            "end_ns": time.time_ns(),
            "frames": frames,
            "events": events,
            "bursts_from_ms": timestamps[first_burst],
            "sent": sent,
        }

    async def flood(self) -> dict[str, int]:
        split = self._split(self.capture.batches[len(self.offsets) :])
        per_socket: dict[_Socket, list[bytes]] = {}
        for parts in split:
            for socket, elements in parts.items():
                per_socket.setdefault(socket, []).extend(elements)
        counts = {"frames": 0, "events": 0}

        async def send(socket: _Socket, elements: list[bytes]) -> None:
            for start in range(0, len(elements), MAX_EVENTS_PER_FRAME):
                chunk = elements[start : start + MAX_EVENTS_PER_FRAME]
                if not await socket.send(_frame(chunk)):
                    return
                counts["frames"] += 1
                counts["events"] += len(chunk)

        start_ns = time.time_ns()
        await asyncio.gather(*(send(s, e) for s, e in per_socket.items()))
        return {"start_ns": start_ns, "end_ns": time.time_ns(), **counts}

    def decode_floor(self) -> dict[str, Any]:
        """A bare, untyped ``msgspec`` decode of every paced frame as sent (ns each)."""
        decoder = msgspec.json.Decoder()
        samples = []
        for frame in self.paced_frames:
            started = time.perf_counter_ns()
            decoder.decode(frame)
            samples.append(time.perf_counter_ns() - started)
        return {"samples_ns": samples}


def _say(kind: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


async def serve(arguments: argparse.Namespace) -> None:
    offsets = schedule(
        arguments.seconds, arguments.burst_every, arguments.burst_seconds, arguments.burst_factor
    )
    per_batch = max(1, arguments.rate * BATCH_INTERVAL_MS // 1000)
    flood_batches = arguments.flood_changes // per_batch
    path = Path(arguments.workdir) / "capture.jsonl"
    settings = SimSettings(
        seed=arguments.seed, binary_markets=arguments.assets // 2, neg_risk_events=0
    )
    stats = await asyncio.to_thread(
        generate_capture,
        path,
        settings,
        batches=len(offsets) + flood_batches,
        actions_per_batch=per_batch,
        interval_ms=BATCH_INTERVAL_MS,
    )
    capture = await asyncio.to_thread(load, path)
    path.unlink()
    feed = Feed(capture, offsets, arguments.seconds)
    app = web.Application()
    app.router.add_get("/ws/market", feed.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", arguments.port).start()
    markets: dict[str, int] = {}
    for asset, book in capture.books.items():
        markets.setdefault(capture.market_of[asset], spread_ticks(book))
    _say(
        "READY",
        {
            "port": arguments.port,
            "markets": sorted(markets.items()),
            "paced_batches": len(offsets),
            "flood_batches": flood_batches,
            "changes_per_batch": per_batch,
            "capture_events": stats.events,
            "capture_bytes": stats.bytes,
        },
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "PACED":
                _say("PACED", {**await feed.paced(), "late_subscribes": feed.late_subscribes})
            elif line == "FLOOD":
                _say("FLOOD", {**await feed.flood(), "late_subscribes": feed.late_subscribes})
            elif line == "DECODE":
                _say("DECODE", feed.decode_floor())
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=int, default=1000, help="level changes/s, paced")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the paced section")
    parser.add_argument("--burst-every", type=float, default=5.0)
    parser.add_argument("--burst-seconds", type=float, default=0.5)
    parser.add_argument("--burst-factor", type=int, default=10)
    parser.add_argument("--flood-changes", type=int, default=300_000)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
