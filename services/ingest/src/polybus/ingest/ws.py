"""The market-channel WebSockets: a pool of sockets, each with ≤ N assets, each watched.

- Subscribe frames carry ≤ ``subscribe_chunk`` ids; the first one on a connection has
  ``type: market``, later ones ``operation: subscribe``; all say ``initial_dump: true`` and
  ``custom_feature_enabled: true`` (VENUE §4.2, H3, H5).
- A text ``PING`` every ``ping_interval_s``; a PONG is not data (VENUE H1).
- Watchdog: no data frame for ``stall_timeout_s`` while assets are subscribed -> the socket is
  closed and reconnected, even when PONGs still arrive. Its books go stale meanwhile.
- Reconnects back off exponentially with jitter; a connection that delivered data resets it.
- Frames go to the engine in the order they arrive, on the reader task itself, so ordering
  within a socket is preserved end to end (VENUE §4.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from polybus.common.tasks import cancel_and_wait
from polybus.ingest import metrics
from polybus.ingest.config import IngestSettings
from polybus.ingest.engine import IngestEngine
from polybus.ingest.publisher import Publisher

_log = structlog.get_logger("polybus.ingest.ws")
_encoder = msgspec.json.Encoder()

FrameTap = Callable[[str | bytes, int], None]
"""Called with every frame as received (``polybus record``)."""


def subscribe_frames(asset_ids: list[str], chunk: int, *, first: bool) -> list[bytes]:
    """The frames that subscribe ``asset_ids``, ≤ ``chunk`` ids each."""
    frames = []
    for start in range(0, len(asset_ids), chunk):
        ids = asset_ids[start : start + chunk]
        body: dict[str, Any]
        if first and start == 0:
            body = {
                "assets_ids": ids,
                "type": "market",
                "initial_dump": True,
                "level": 2,
                "custom_feature_enabled": True,
            }
        else:
            body = {
                "operation": "subscribe",
                "assets_ids": ids,
                "initial_dump": True,
                "custom_feature_enabled": True,
            }
        frames.append(_encoder.encode(body))
    return frames


def unsubscribe_frames(asset_ids: list[str], chunk: int) -> list[bytes]:
    return [
        _encoder.encode({"operation": "unsubscribe", "assets_ids": asset_ids[i : i + chunk]})
        for i in range(0, len(asset_ids), chunk)
    ]


class _Stalled(Exception):
    pass


class MarketSocket:
    """One connection to the market channel and the assets it carries."""

    def __init__(
        self,
        index: int,
        settings: IngestSettings,
        engine: IngestEngine,
        *,
        tap: FrameTap | None = None,
        on_frames: Callable[[], None] | None = None,
        backlog: Publisher | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.engine = engine
        self.tap = tap
        self.on_frames = on_frames
        """Called after each frame was processed (the service then runs queued actions)."""
        self.backlog = backlog
        """Where the events go: reading waits while its backlog is full."""
        self.holding = False
        self.assets: dict[str, None] = {}
        """Assets this socket should carry, in subscription order."""
        self.connection: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.last_data_ns = 0
        self.connects = 0
        self.frames = 0
        self.data_frames = 0
        self._subscribed: set[str] = set()
        self._send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stalled = False

    # -- what it carries ---------------------------------------------------------------------
    # Every subscription change runs under one lock, and so does the initial subscription of a
    # new connection: an asset added while a connection opens is either in its first frames or
    # sent right after them, never lost in between.
    async def add(self, asset_ids: Iterable[str]) -> None:
        new = [a for a in asset_ids if a not in self.assets]
        if not new:
            return
        async with self._send_lock:
            for asset_id in new:
                self.assets[asset_id] = None
            self._wake.set()
            connection = self.connection
            if connection is None:
                return  # subscribed when the connection opens
            fresh = [a for a in new if a not in self._subscribed]
            self._subscribed.update(fresh)
            chunk = self.settings.subscribe_chunk
            await self._send(connection, subscribe_frames(fresh, chunk, first=False))
        self.engine.subscribed(fresh, time.time_ns())

    async def remove(self, asset_ids: Iterable[str]) -> None:
        async with self._send_lock:
            gone = [a for a in asset_ids if a in self.assets]
            for asset_id in gone:
                del self.assets[asset_id]
            sent = [a for a in gone if a in self._subscribed]
            self._subscribed.difference_update(gone)
            connection = self.connection
            if connection is not None and sent:
                chunk = self.settings.subscribe_chunk
                await self._send(connection, unsubscribe_frames(sent, chunk))

    async def resubscribe(self, asset_id: str) -> None:
        """Unsubscribe + subscribe one asset, for a fresh ``book`` (VENUE §4.6 step 5)."""
        async with self._send_lock:
            connection = self.connection
            if connection is None or asset_id not in self.assets:
                return
            chunk = self.settings.subscribe_chunk
            frames = [
                *unsubscribe_frames([asset_id], chunk),
                *subscribe_frames([asset_id], chunk, first=False),
            ]
            self._subscribed.add(asset_id)
            await self._send(connection, frames)
        self.engine.subscribed([asset_id], time.time_ns())

    @staticmethod
    async def _send(connection: ClientConnection, frames: list[bytes]) -> None:
        try:
            for frame in frames:
                await connection.send(frame.decode())
        except ConnectionClosed:
            pass  # the reader sees it and reconnects

    # -- the connection loop -----------------------------------------------------------------
    async def run(self) -> None:
        """Connect, subscribe, read; reconnect with backoff forever (until cancelled)."""
        attempt = 0
        while True:
            if not self.assets:
                self._wake.clear()
                await self._wake.wait()
                continue
            reason = "closed"
            data_before = self.data_frames
            try:
                await self._connect_and_read()
            except _Stalled:
                reason = "stall"
            except (OSError, TimeoutError, ConnectionClosed) as error:
                reason = "disconnect"
                _log.warning("ws.disconnected", socket=self.index, error=repr(error))
            except Exception as error:
                # Whatever a socket does, the service stays up and reconnects.
                reason = "error"
                _log.exception("ws.failed", socket=self.index, error=repr(error))
            finally:
                self.connection = None
                self.connected.clear()
                self._subscribed.clear()
            metrics.RECONNECTS.labels(reason).inc()
            self.engine.mark_stale(
                list(self.assets),
                "socket_stall" if reason == "stall" else "disconnect",
                time.time_ns(),
            )
            if self.on_frames is not None:
                self.on_frames()
            # A connection that delivered data was a success: back off from the start again.
            attempt = 0 if self.data_frames > data_before else attempt + 1
            delay = min(
                self.settings.reconnect_max_s, self.settings.reconnect_initial_s * 2**attempt
            ) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            _log.info("ws.reconnecting", socket=self.index, reason=reason, delay_s=round(delay, 3))
            await asyncio.sleep(delay)

    async def _connect_and_read(self) -> None:
        settings = self.settings
        async with connect(
            settings.market_ws_url,
            open_timeout=settings.connect_timeout_s,
            ping_interval=None,  # the venue wants its own text PING
            close_timeout=1,
            max_size=2**24,
            max_queue=None,
            compression=None,
        ) as connection:
            self.connects += 1
            async with self._send_lock:
                assets = list(self.assets)
                self._subscribed = set(assets)
                self.last_data_ns = time.time_ns()
                await self._send(
                    connection, subscribe_frames(assets, settings.subscribe_chunk, first=True)
                )
                self.connection = connection
            self.connected.set()
            self.engine.subscribed(assets, time.time_ns())
            metrics.SOCKETS_CONNECTED.inc()
            _log.info("ws.connected", socket=self.index, assets=len(assets))
            self._stalled = False
            helpers = [
                asyncio.create_task(self._ping(connection)),
                asyncio.create_task(self._watchdog(connection)),
            ]
            try:
                await self._read(connection)
            finally:
                metrics.SOCKETS_CONNECTED.dec()
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
            if self._stalled:
                raise _Stalled()

    async def _read(self, connection: ClientConnection) -> None:
        engine = self.engine
        tap = self.tap
        on_frames = self.on_frames
        backlog = self.backlog
        async for frame in connection:
            now = time.time_ns()
            if frame != "PONG":
                self.last_data_ns = now
                self.data_frames += 1
            self.frames += 1
            if tap is not None:
                tap(frame, now)
            engine.on_frame(frame, now)
            if on_frames is not None:
                on_frames()
            if backlog is not None and backlog.full():
                # The venue's socket buffers meanwhile; the wait is ours, not a silent venue:
                # neither the watchdog nor a batch's quiet delay counts it.
                self.holding = True
                engine.hold_reading()
                try:
                    await backlog.room()
                finally:
                    self.holding = False
                    self.last_data_ns = now = time.time_ns()
                    engine.resume_reading(now)

    async def _ping(self, connection: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            with contextlib.suppress(ConnectionClosed):
                await connection.send("PING")

    async def _watchdog(self, connection: ClientConnection) -> None:
        timeout_ns = int(self.settings.stall_timeout_s * 1e9)
        period = min(1.0, self.settings.stall_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            silent_ns = time.time_ns() - self.last_data_ns
            if self._subscribed and not self.holding and silent_ns > timeout_ns:
                _log.warning(
                    "ws.stalled", socket=self.index, silent_s=self.settings.stall_timeout_s
                )
                self._stalled = True
                await connection.close()
                return


class SocketPool:
    """Spreads assets over sockets (a market's outcomes stay together) and runs them."""

    def __init__(
        self,
        settings: IngestSettings,
        engine: IngestEngine,
        *,
        tap: FrameTap | None = None,
        on_frames: Callable[[], None] | None = None,
        backlog: Publisher | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.tap = tap
        self.on_frames = on_frames
        self.backlog = backlog
        self.sockets: list[MarketSocket] = []
        self.socket_of: dict[str, MarketSocket] = {}
        self._tasks: dict[MarketSocket, asyncio.Task[None]] = {}

    async def add_market(self, asset_ids: list[str]) -> None:
        """Subscribe a market's assets on one socket with room for all of them."""
        missing = [a for a in asset_ids if a not in self.socket_of]
        if not missing:
            return
        limit = self.settings.max_assets_per_socket
        socket = next((s for s in self.sockets if len(s.assets) + len(missing) <= limit), None)
        if socket is None:
            socket = MarketSocket(
                len(self.sockets),
                self.settings,
                self.engine,
                tap=self.tap,
                on_frames=self.on_frames,
                backlog=self.backlog,
            )
            self.sockets.append(socket)
            self._tasks[socket] = asyncio.get_running_loop().create_task(
                socket.run(), name=f"ingest.socket.{socket.index}"
            )
        for asset_id in missing:
            self.socket_of[asset_id] = socket
        await socket.add(missing)

    async def remove(self, asset_ids: Iterable[str]) -> None:
        by_socket: dict[MarketSocket, list[str]] = {}
        for asset_id in asset_ids:
            socket = self.socket_of.pop(asset_id, None)
            if socket is not None:
                by_socket.setdefault(socket, []).append(asset_id)
        for socket, ids in by_socket.items():
            await socket.remove(ids)

    async def resubscribe(self, asset_id: str) -> None:
        socket = self.socket_of.get(asset_id)
        if socket is not None:
            await socket.resubscribe(asset_id)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        await cancel_and_wait(tasks, None)
        await asyncio.gather(*tasks, return_exceptions=True)  # read their errors: all ended
        self._tasks.clear()

    def failed(self) -> BaseException | None:
        """A socket task's unexpected death, if any (they loop until cancelled)."""
        for task in self._tasks.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None
