"""Where a backtest's market data comes from, without importing another service.

- A file of polybus market-data events, one JSON event per line: what ``polybus replay
  --from-db --out FILE`` writes, decoded by the common decoder.
- A capture of raw venue frames (``polybus record``): the ingest turns it into the events it
  would have published, through its own parsing, book and checks (the ``capture_events`` hook
  of the ingest's plugin). Raw frames carry no ``MarketInfo`` (that comes from Gamma), so a
  strategy that needs fees and outcomes trades only on a file of recorded events.
- The store (``--from-db``): the recorder's ``replay_store`` hook writes the window to a
  temporary events file, which is then read as above.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import tempfile
from pathlib import Path

from polybus.common.config import Config
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    DecodeError,
    Event,
    MarketDataStreamEvent,
    MarketInfo,
    MarketResolved,
    TickSizeChanged,
    Trade,
    market_data_decoder,
)
from polybus.common.plugins import discover_plugins, find_hook

_MARKET_DATA = (
    BookSnapshot,
    BookDelta,
    Trade,
    TickSizeChanged,
    BookStatus,
    MarketInfo,
    MarketResolved,
)


class BacktestInputError(Exception):
    """The input cannot be used (missing, unreadable, empty); the message names the problem."""


class StoreUnavailable(Exception):
    """The recorder's replay exited with ``code`` after saying why."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def read_events(path: Path) -> list[MarketDataStreamEvent]:
    """The market-data events in ``path``: recorded events, else a raw venue capture."""
    if not path.is_file():
        raise BacktestInputError(f"{path}: no such file")
    try:
        lines = _lines(path)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise BacktestInputError(f"{path}: cannot read it: {error}") from None
    events: list[MarketDataStreamEvent] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(market_data_decoder.decode(line))
        except DecodeError as error:
            if events:
                raise BacktestInputError(f"{path}: line {number}: {error}") from None
            return _capture_events(path)
    if not events:
        raise BacktestInputError(f"{path}: no events in it")
    return events


def _lines(path: Path) -> list[bytes]:
    with path.open("rb") as file:
        if file.read(2) == b"\x1f\x8b":
            file.seek(0)
            return gzip.GzipFile(fileobj=file).read().splitlines()
    return path.read_bytes().splitlines()


def _capture_events(path: Path) -> list[MarketDataStreamEvent]:
    hook = find_hook(discover_plugins(), "capture_events")
    if hook is None:
        raise BacktestInputError(
            f"{path}: not a file of polybus events, and the ingest (which reads raw venue "
            "captures) is not installed"
        )
    try:
        published: list[Event] = hook(path)  # type: ignore[assignment]
    except ValueError as error:
        raise BacktestInputError(f"{path}: neither polybus events nor a capture: {error}") from None
    # The ingest also publishes dead letters (frames it could not use): not market data.
    events = [event for event in published if isinstance(event, _MARKET_DATA)]
    if not events:
        raise BacktestInputError(f"{path}: the capture makes no market-data events")
    return events


def store_events(
    config: Config, *, market: str, asset: str, start: str, end: str
) -> list[MarketDataStreamEvent]:
    """The recorded market data of one market (or asset) in ``start <= ts_event < end``.

    :class:`StoreUnavailable` with the exit code when the recorder refused the window (2) or
    could not read the store (1): it said why on stderr, in one line, already."""
    hook = find_hook(discover_plugins(), "replay_store")
    if hook is None:
        raise BacktestInputError("--from-db needs the recorder, which is not installed")
    with tempfile.TemporaryDirectory(prefix="polybus-backtest-") as directory:
        out = Path(directory) / "events.jsonl"
        # The hook speaks for itself on stderr (one line); here only its exit code matters.
        with contextlib.redirect_stdout(io.StringIO()):
            code = hook(
                config,
                market=market,
                asset=asset,
                start=start,
                end=end,
                speed="max",
                to_subject_prefix="replay",
                out=out,
            )
        if code != 0:
            raise StoreUnavailable(code)
        if not out.is_file() or not out.stat().st_size:
            raise BacktestInputError(f"the store has no market data for {market or asset} then")
        return read_events(out)
