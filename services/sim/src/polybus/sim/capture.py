"""Generate a capture of simulated market data offline, for replay at full speed.

Live flow is bounded by generating it (tens of thousands of price-change entries a second on
one core); a benchmark that needs more replays a capture instead (``capture_file`` with
``capture_pace = "max"``), where the simulator only writes pre-encoded frames. The capture
holds the initial dump of every asset, then one array frame per batch, each line
``{"recv_ns": …, "frame": "<text>"}`` spaced ``interval_ms`` apart — the same format the
replay reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from polybus.sim.config import SimSettings
from polybus.sim.exchange import Exchange, Outgoing
from polybus.sim.flow import OrderFlow

_DUMP_CHUNK = 100


class _Line(msgspec.Struct, frozen=True):
    recv_ns: int
    frame: str


@dataclass(frozen=True)
class CaptureStats:
    frames: int
    events: int
    price_change_entries: int
    bytes: int


def generate_capture(
    path: Path,
    settings: SimSettings,
    *,
    batches: int,
    actions_per_batch: int,
    interval_ms: int = 10,
) -> CaptureStats:
    """Write ``batches`` batches of the seed's flow (after the initial dump) to ``path``."""
    pending: list[Outgoing] = []
    exchange = Exchange(settings, pending.extend)
    flow = OrderFlow(exchange, seed=settings.seed, trade_probability=settings.trade_probability)
    encoder = msgspec.json.Encoder()
    assets = list(exchange.tokens)
    frames = events = entries = size = 0
    recv_ns = 1_000_000_000
    with path.open("wb") as file:

        def write(frame: bytes, count: int) -> None:
            nonlocal frames, events, size
            line = encoder.encode(_Line(recv_ns, frame.decode())) + b"\n"
            file.write(line)
            frames += 1
            events += count
            size += len(frame)

        for start in range(0, len(assets), _DUMP_CHUNK):
            dumped = assets[start : start + _DUMP_CHUNK]
            write(b"[" + b",".join(exchange.snapshot_frame(a) for a in dumped) + b"]", len(dumped))
        limit = settings.max_events_per_frame
        for _ in range(batches):
            recv_ns += interval_ms * 1_000_000
            flow.run_actions(actions_per_batch)
            for start in range(0, len(pending), limit):
                messages = pending[start : start + limit]
                parts = [message.data for message in messages]
                entries += sum(2 for message in messages if message.price_change)
                write(parts[0] if len(parts) == 1 else b"[" + b",".join(parts) + b"]", len(parts))
            pending.clear()
    return CaptureStats(frames=frames, events=events, price_change_entries=entries, bytes=size)
