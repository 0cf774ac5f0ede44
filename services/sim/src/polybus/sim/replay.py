"""Capture replay: a recorded market-channel capture served verbatim to subscribers.

A capture is JSONL, one frame per line: either the frame itself (the venue's JSON text, sent
as is) or ``{"recv_ns": <int>, "frame": "<text>"}`` (the text sent, paced by ``recv_ns``).
Every subscribing socket gets the whole capture from the start, regardless of the assets it
names, paced as recorded (``recorded``) or as fast as the socket takes it (``max``). Lines
without ``recv_ns`` are never delayed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from polybus.sim.market_ws import SimSocket, SocketRegistry, WholeFrame

_log = structlog.get_logger("polybus.sim.replay")


class _Wrapped(msgspec.Struct, frozen=True):
    frame: str
    recv_ns: int | None = None


_wrapped = msgspec.json.Decoder(_Wrapped)


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    recv_ns: int | None
    data: WholeFrame


def load_capture(path: Path) -> list[CapturedFrame]:
    """Read a capture file; raises ValueError naming the first line that is not JSON."""
    frames = []
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith(b"{") and b'"frame"' in line:
                try:
                    wrapped = _wrapped.decode(line)
                except msgspec.DecodeError:
                    pass
                else:
                    frames.append(
                        CapturedFrame(wrapped.recv_ns, WholeFrame(wrapped.frame.encode()))
                    )
                    continue
            try:
                msgspec.json.decode(line)
            except msgspec.DecodeError:
                raise ValueError(f"{path}:{number}: not a JSON frame") from None
            frames.append(CapturedFrame(None, WholeFrame(line)))
    return frames


class CaptureReplay:
    """Plays a loaded capture to each subscribing socket (one owned task per socket)."""

    def __init__(
        self, frames: list[CapturedFrame], registry: SocketRegistry, *, paced: bool
    ) -> None:
        self.frames = frames
        self.registry = registry
        self.paced = paced
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, socket: SimSocket) -> None:
        task = asyncio.get_running_loop().create_task(
            self._play(socket), name=f"sim.replay.{socket.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _play(self, socket: SimSocket) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_ns: int | None = None
        for count, frame in enumerate(self.frames, start=1):
            if socket.closed:
                return
            if self.paced and frame.recv_ns is not None:
                first_ns = frame.recv_ns if first_ns is None else first_ns
                delay = started + (frame.recv_ns - first_ns) / 1e9 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            socket.push(frame.data)
            self.registry.wake((socket,))
            if not self.paced and count % 256 == 0:
                # Let the writer drain so memory stays bounded at full speed.
                await self.registry.drained(socket)
        _log.info("replay.finished", socket=socket.id, frames=len(self.frames))
