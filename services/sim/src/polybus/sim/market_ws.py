"""The market channel (``/ws/market``): subscriptions, fan-out and per-socket writers.

A socket must send its subscribe frame (``assets_ids``, ``type``, ``initial_dump``, ``level``,
``custom_feature_enabled``) within ``subscribe_timeout_s`` or it is closed; afterwards it may
send ``{"operation": "subscribe"|"unsubscribe", "assets_ids": [...]}`` and text ``PING``
(answered ``PONG``). Each event is encoded once by the exchange; fan-out appends the same bytes
to every interested socket's queue, and each socket's writer sends whatever has accumulated:
one event as a single object, several as one JSON array (at most ``max_events_per_frame``), so
frames grow with the rate. Initial dumps are arrays of ``book`` events (at most 100 a frame).

Faults act here: a stalled socket drops data but still answers ``PING``; a disconnect aborts
the TCP connection without a close frame; a dropped ``price_change`` is never sent to anyone.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import Counter, Gauge

from polybus.sim.exchange import Audience, Exchange, Outgoing

_log = structlog.get_logger("polybus.sim.market_ws")

DUMP_BOOKS_PER_FRAME = 100

SOCKETS = Gauge("polybus_sim_ws_sockets", "Open simulator WebSockets", ["channel"])
FRAMES_SENT = Counter("polybus_sim_ws_frames_sent", "WebSocket frames sent", ["channel"])
EVENTS_SENT = Counter(
    "polybus_sim_ws_events_sent", "Events sent (array members count)", ["channel"]
)
EVENTS_DROPPED = Counter(
    "polybus_sim_ws_events_dropped", "Events not sent, by reason", ["channel", "reason"]
)
BAD_CLIENT_MESSAGES = Counter(
    "polybus_sim_ws_bad_client_messages", "Client messages that were not understood", ["channel"]
)


class WholeFrame(bytes):
    """A queued item sent as its own frame, never merged into an array (dumps, PONG, faults)."""

    __slots__ = ()


PONG = WholeFrame(b"PONG")


class SimSocket:
    """One WebSocket connection, market or user channel."""

    def __init__(
        self, socket_id: int, channel: str, ws: web.WebSocketResponse, request: web.Request
    ) -> None:
        self.id = socket_id
        self.channel = channel
        self.ws = ws
        self.request = request
        self.assets: set[str] = set()
        self.custom = False
        self.subscribed = False
        self.stalled = False
        self.closed = False
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()
        self.enqueued = 0
        self.sent = 0
        self.remote = request.remote or ""
        self.extra: dict[str, Any] = {}

    def push(self, data: bytes) -> None:
        """Queue data for this socket (dropped while the socket is stalled)."""
        if self.stalled and data is not PONG:
            EVENTS_DROPPED.labels(self.channel, "stalled").inc()
            return
        self.pending.append(data)
        self.enqueued += 1

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (an abrupt disconnect)."""
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()


@dataclass(frozen=True)
class SocketInfo:
    id: int
    channel: str
    assets: int
    custom_feature_enabled: bool
    stalled: bool
    subscribed: bool
    pending: int


class SocketRegistry:
    """Every open socket of both channels, their writers and flush bookkeeping."""

    def __init__(self, *, max_events_per_frame: int, max_pending: int) -> None:
        self.sockets: dict[int, SimSocket] = {}
        self.max_events_per_frame = max_events_per_frame
        self.max_pending = max_pending
        self._ids = itertools.count(1)
        self._progress = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self, channel: str, ws: web.WebSocketResponse, request: web.Request) -> SimSocket:
        socket = SimSocket(next(self._ids), channel, ws, request)
        self.sockets[socket.id] = socket
        SOCKETS.labels(channel).inc()
        task = asyncio.get_running_loop().create_task(
            self._write_loop(socket), name=f"sim.ws.writer.{socket.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        socket.extra["writer"] = task
        return socket

    def close(self, socket: SimSocket) -> None:
        socket.closed = True
        if self.sockets.pop(socket.id, None) is not None:
            SOCKETS.labels(socket.channel).dec()
        writer = socket.extra.get("writer")
        if isinstance(writer, asyncio.Task):
            writer.cancel()

    def wake(self, sockets: Iterable[SimSocket]) -> None:
        for socket in sockets:
            if len(socket.pending) > self.max_pending:
                _log.warning("ws.slow_consumer_disconnected", socket=socket.id)
                EVENTS_DROPPED.labels(socket.channel, "slow_consumer").inc(len(socket.pending))
                socket.pending.clear()
                socket.abort()
                continue
            socket.wake.set()

    def select(self, channel: str, socket_id: int | None) -> list[SimSocket]:
        return [
            socket
            for socket in self.sockets.values()
            if (channel in ("all", socket.channel)) and socket_id in (None, socket.id)
        ]

    def info(self) -> list[SocketInfo]:
        return [
            SocketInfo(
                id=socket.id,
                channel=socket.channel,
                assets=len(socket.assets),
                custom_feature_enabled=socket.custom,
                stalled=socket.stalled,
                subscribed=socket.subscribed,
                pending=len(socket.pending),
            )
            for socket in self.sockets.values()
        ]

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far has been written (or its socket closed)."""
        targets = [(socket, socket.enqueued) for socket in self.sockets.values()]

        def done() -> bool:
            return all(socket.closed or socket.sent >= target for socket, target in targets)

        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(done)

    async def drained(self, socket: SimSocket) -> None:
        """Wait until the socket's writer has sent everything queued so far."""
        target = socket.enqueued
        async with self._progress:
            await self._progress.wait_for(lambda: socket.closed or socket.sent >= target)

    async def close_all(self) -> None:
        for socket in list(self.sockets.values()):
            if not socket.closed:
                await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
            self.close(socket)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _write_loop(self, socket: SimSocket) -> None:
        ws, limit = socket.ws, self.max_events_per_frame
        channel = socket.channel
        frames_sent = FRAMES_SENT.labels(channel)
        events_sent = EVENTS_SENT.labels(channel)
        try:
            while not socket.closed:
                await socket.wake.wait()
                socket.wake.clear()
                while socket.pending and not socket.closed:
                    items, socket.pending = socket.pending, []
                    batch: list[bytes] = []
                    frames = 0
                    for item in items:
                        if type(item) is WholeFrame:
                            frames += await self._send_batch(ws, batch)
                            batch = []
                            await ws.send_frame(item, WSMsgType.TEXT)
                            frames += 1
                            continue
                        batch.append(item)
                        if len(batch) >= limit:
                            frames += await self._send_batch(ws, batch)
                            batch = []
                    frames += await self._send_batch(ws, batch)
                    frames_sent.inc(frames)
                    events_sent.inc(len(items))
                    socket.sent += len(items)
                    async with self._progress:
                        self._progress.notify_all()
        except (ConnectionError, RuntimeError):
            # The peer went away (or we aborted it); the handler notices and unregisters.
            socket.closed = True
        finally:
            async with self._progress:
                self._progress.notify_all()

    @staticmethod
    async def _send_batch(ws: web.WebSocketResponse, batch: list[bytes]) -> int:
        """Send queued events: one alone, several as one array. Returns frames sent."""
        if not batch:
            return 0
        await ws.send_frame(
            batch[0] if len(batch) == 1 else b"[" + b",".join(batch) + b"]", WSMsgType.TEXT
        )
        return 1


class _SubscribeFrame(msgspec.Struct, kw_only=True):
    assets_ids: list[str] | None = None
    type: str = ""
    operation: str = ""
    initial_dump: bool = True
    level: int = 2
    custom_feature_enabled: bool | None = None


_subscribe_decoder = msgspec.json.Decoder(_SubscribeFrame)


class MarketHub:
    """Subscriptions of the market channel and fan-out of the exchange's events."""

    def __init__(
        self,
        exchange: Exchange,
        registry: SocketRegistry,
        *,
        subscribe_timeout_s: float,
        replay: Callable[[SimSocket], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.registry = registry
        self.subscribe_timeout_s = subscribe_timeout_s
        self.replay = replay
        self.subscribers: dict[str, set[SimSocket]] = {}
        self.drop_next: set[str] = set()
        """Assets whose next ``price_change`` is silently not sent (fault)."""

    # -- fan-out ---------------------------------------------------------------------------
    def publish(self, outgoing: list[Outgoing]) -> None:
        subscribers = self.subscribers
        touched: set[SimSocket] = set()
        for message in outgoing:
            assets = message.assets
            if message.price_change and self.drop_next and not self.drop_next.isdisjoint(assets):
                self.drop_next.difference_update(assets)
                EVENTS_DROPPED.labels("market", "fault").inc()
                continue
            audience = message.audience
            targets: Iterable[SimSocket]
            if audience is Audience.ASSET:
                targets = subscribers.get(assets[0], ())
            elif audience is Audience.MARKET:
                first = subscribers.get(assets[0])
                second = subscribers.get(assets[1])
                targets = (first | second) if first and second else (first or second or ())
            elif audience is Audience.CUSTOM_ASSET:
                targets = {
                    socket
                    for asset in assets
                    for socket in subscribers.get(asset, ())
                    if socket.custom
                }
            else:
                targets = [
                    socket
                    for socket in self.registry.sockets.values()
                    if socket.channel == "market" and socket.custom and socket.subscribed
                ]
            data = message.data
            for socket in targets:
                socket.push(data)
                touched.add(socket)
        if touched:
            self.registry.wake(touched)

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(
        self, socket: SimSocket, asset_ids: list[str], *, initial_dump: bool = True
    ) -> None:
        new = [asset for asset in dict.fromkeys(asset_ids) if asset not in socket.assets]
        socket.assets.update(new)
        if self.replay is not None:
            return
        known = [asset for asset in new if asset in self.exchange.tokens]
        for asset in known:
            self.subscribers.setdefault(asset, set()).add(socket)
        if initial_dump and known:
            for start in range(0, len(known), DUMP_BOOKS_PER_FRAME):
                chunk = known[start : start + DUMP_BOOKS_PER_FRAME]
                books = [self.exchange.snapshot_frame(asset) for asset in chunk]
                socket.push(WholeFrame(b"[" + b",".join(books) + b"]"))
            self.registry.wake((socket,))

    def unsubscribe(self, socket: SimSocket, asset_ids: Iterable[str]) -> None:
        for asset in asset_ids:
            socket.assets.discard(asset)
            subscribers = self.subscribers.get(asset)
            if subscribers is not None:
                subscribers.discard(socket)
                if not subscribers:
                    del self.subscribers[asset]

    def forget(self, socket: SimSocket) -> None:
        self.unsubscribe(socket, list(socket.assets))

    def resend_snapshots(self, asset_ids: Iterable[str]) -> None:
        """Send a fresh ``book`` to every subscriber of these assets (after a tick change)."""
        for asset in asset_ids:
            subscribers = self.subscribers.get(asset)
            if subscribers:
                data = self.exchange.snapshot_frame(asset)
                for socket in subscribers:
                    socket.push(data)
                self.registry.wake(subscribers)

    # -- the handler -----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        socket = self.registry.open("market", ws, request)
        _log.info("ws.market.connected", socket=socket.id, remote=socket.remote)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.subscribe_timeout_s
        try:
            while not socket.closed:
                timeout = None if socket.subscribed else max(deadline - loop.time(), 0.0)
                try:
                    message = await ws.receive(timeout=timeout)
                except TimeoutError:
                    _log.info("ws.market.subscribe_timeout", socket=socket.id)
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no subscription")
                    break
                if message.type != WSMsgType.TEXT:
                    break
                self._on_text(socket, message.data)
        finally:
            self.forget(socket)
            self.registry.close(socket)
            _log.info("ws.market.disconnected", socket=socket.id)
        return ws

    def _on_text(self, socket: SimSocket, text: str) -> None:
        if text == "PING":
            socket.push(PONG)
            self.registry.wake((socket,))
            return
        try:
            frame = _subscribe_decoder.decode(text)
        except msgspec.DecodeError:
            BAD_CLIENT_MESSAGES.labels("market").inc()
            return
        operation = frame.operation.lower()
        assets = frame.assets_ids or []
        if operation == "unsubscribe":
            self.unsubscribe(socket, assets)
            return
        if operation not in ("", "subscribe") or (
            not operation and frame.type.lower() not in ("market", "")
        ):
            BAD_CLIENT_MESSAGES.labels("market").inc()
            return
        if frame.custom_feature_enabled is not None:
            # Applied before anything else, as the venue does (pmsdk relies on it to toggle
            # the flag by re-naming an asset it already has).
            socket.custom = frame.custom_feature_enabled
        first = not socket.subscribed
        socket.subscribed = True
        if first and self.replay is not None:
            self.replay(socket)
        self.subscribe(socket, assets, initial_dump=frame.initial_dump)
