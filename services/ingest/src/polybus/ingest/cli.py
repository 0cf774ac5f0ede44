"""The ingest's operator commands: ``polybus markets`` and ``polybus record``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import msgspec
import typer
from rich.console import Console
from rich.table import Table

from polybus.common.cli import fail
from polybus.common.events import MarketInfo
from polybus.common.money import format_micros

DEFAULT_CONFIG = Path("config/default.toml")
ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Deployment config file (TOML).", dir_okay=False)
]


def commands() -> typer.Typer:
    """The Typer app whose commands the ``polybus`` CLI adds."""
    app = typer.Typer()
    app.command("markets")(markets)
    app.command("record")(record)
    return app


def _settings(config: Path):  # type: ignore[no-untyped-def]
    from polybus.common.cli import load
    from polybus.ingest.config import IngestSettings

    loaded = load(config)
    return loaded, loaded.section("ingest", IngestSettings)


def markets(
    config: ConfigOption = DEFAULT_CONFIG,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON MarketInfo per line.")
    ] = False,
) -> None:
    """Show the markets the ingest would subscribe (explicit lists plus Gamma discovery)."""
    from polybus.ingest.gamma import GammaClient
    from polybus.ingest.markets import MarketSelector

    _, settings = _settings(config)

    async def select() -> list[MarketInfo]:
        async with httpx.AsyncClient(timeout=settings.http_timeout_s) as http:
            return await MarketSelector(settings, GammaClient(http, settings.gamma_url)).select()

    try:
        selected = asyncio.run(select())
    except (httpx.HTTPError, ValueError) as error:
        raise fail(f"market selection failed: {error!r}", 1) from None
    if json_output:
        encoder = msgspec.json.Encoder()
        for info in selected:
            sys.stdout.write(encoder.encode(info).decode() + "\n")
        return
    table = Table(
        "condition id",
        "slug",
        "outcomes",
        "tick",
        "min size",
        "neg-risk",
        "24h volume",
        title=f"{len(selected)} markets, {sum(len(m.outcomes) for m in selected)} assets",
    )
    for info in selected:
        table.add_row(
            info.condition_id[:14] + "…",
            info.slug,
            " / ".join(outcome.outcome for outcome in info.outcomes),
            format_micros(info.tick_size),
            format_micros(info.min_order_size),
            "yes" if info.neg_risk else "",
            format_micros(info.volume_24h),
        )
    Console().print(table)


def record(
    out: Annotated[Path, typer.Option("--out", help="Capture file (.gz to compress).")],
    config: ConfigOption = DEFAULT_CONFIG,
    rotate_mb: Annotated[
        float, typer.Option(min=0, help="Start a new part at this size (0: never).")
    ] = 0,
    gzip: Annotated[bool, typer.Option("--gzip", help="Compress the capture.")] = False,
    duration: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds (0: Ctrl-C).")
    ] = 0,
) -> None:
    """Record the raw market-channel frames of the selected markets, as received, to JSONL."""
    from polybus.common.bus.memory_bus import MemoryBus
    from polybus.ingest.capture import CaptureWriter
    from polybus.ingest.service import Ingest

    if out.is_dir():
        raise fail(f"--out {out} is a directory; give a file name", 2)
    loaded, settings = _settings(config)
    writer = CaptureWriter(out, rotate_bytes=int(rotate_mb * 2**20), compress=gzip)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # The same sockets, watchdogs and resyncs as the service; the events go nowhere.
        ingest = Ingest(
            MemoryBus(loaded.namespace()),
            settings,
            partitions=loaded.deployment.bus.partitions,
            tap=writer.write,
        )
        started = time.monotonic()
        async with ingest:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                writer.flush()
                if duration and time.monotonic() - started >= duration:
                    break
                if (error := ingest.failed()) is not None:
                    raise error

    try:
        asyncio.run(run())
    except OSError as error:  # e.g. the capture file could not be created or written
        where = f"{error.filename}: " if error.filename else ""
        raise fail(f"record failed: {where}{error.strerror or error!r}", 1) from None
    finally:
        writer.close()
    parts = ", ".join(str(p) for p in writer.parts) or str(out)
    sys.stderr.write(f"recorded {writer.frames} frames to {parts}\n")
