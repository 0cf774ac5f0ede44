"""The operator's `polybus status`, `top` and `book` against a running system: the simulator,
an in-process ingest on a real nats-server, and the CLI as an operator runs it (a subprocess).
Terminal output is checked at a fixed width (COLUMNS), `--json` output parsed."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import BookStatus, OrderEvent, PositionSnapshot, ServiceHealth, encode
from polybus.common.halt import set_halt
from polybus.common.money import format_micros
from polybus.common.operator.scrape import Scraped, quantile, summarise
from polybus.common.runtime import HEALTH_BUCKET
from polybus.common.streams import Definitions
from polybus.ingest.service import Ingest
from polybus.sim.server import Simulator
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually
from tests.integration.test_ingest_sim import quiesce, running, small

pytestmark = pytest.mark.timeout(120)


@dataclass
class System:
    bus: NatsBus
    sim: Simulator
    ingest: Ingest
    config: Path


@pytest.fixture
async def system(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> AsyncIterator[System]:
    """Two binary markets, every book live, the flow stopped so the books stand still."""
    config = tmp_path / "c.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
        '[database]\nurl = "postgresql://polybus@127.0.0.1:1/polybus"\n'
    )
    # A long stall timeout: with the flow stopped the feed is silent, and must stay live.
    async with running(bus, definitions, small(2), stall_timeout_s=600.0) as (sim, ingest, _):
        await quiesce(sim, ingest, bus)
        yield System(bus, sim, ingest, config)


async def polybus(*args: str, columns: int = 120) -> tuple[int, str, str]:
    environment = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def order(
    asset_id: str, condition_id: str, *, status: str, price: int, **fields: object
) -> OrderEvent:
    return OrderEvent(
        event_id=f"o-{asset_id}-{status}", ts_event=1, ts_init=1, order_id=f"ours-{status}",
        strategy_id="paper_test", condition_id=condition_id, asset_id=asset_id,
        status=status,  # type: ignore[arg-type]
        side="BUY", price=price, size=25_000_000, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


async def publish_exec(bus: NatsBus, kind: str, event: OrderEvent | PositionSnapshot) -> None:
    subject = bus.namespace.subjects.execution(event.strategy_id, kind, event.condition_id)  # type: ignore[arg-type]
    await bus.publish_persistent(subject, event, msg_id=event.event_id)


async def test_book_once_prints_the_simulators_top_levels_with_our_order_marked(
    system: System,
) -> None:
    market = system.sim.markets()[0]
    yes = market.tokens[0].token_id
    bids, asks = system.sim.book(yes)
    await publish_exec(
        system.bus, "order", order(yes, market.condition_id, status="accepted", price=bids[0][0])
    )

    code, out, err = await polybus(
        "book", market.slug, "--outcome", "YES", "--depth", "3", "--once",
        "--config", str(system.config),
    )  # fmt: skip

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert f'"{market.question}" YES  LIVE' in lines[0]
    assert all(len(text) <= 120 for text in lines)
    rows = [text for text in lines if text.startswith("│")]
    assert len(rows) == 3  # three levels a side
    for row, bid, ask in zip(rows, bids, asks, strict=False):
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells[1:5] == [
            format_micros(bid[1]), format_micros(bid[0]),
            format_micros(ask[0]), format_micros(ask[1]),
        ]  # fmt: skip
    assert "◀ paper_test 25" in rows[0]
    assert "paper_test" not in "".join(rows[1:])

    # By token id too, and the NO outcome of the slug is the other token.
    code, out, _ = await polybus("book", yes, "--once", "--config", str(system.config))
    assert code == 0
    assert f'"{market.question}" YES' in out
    code, out, _ = await polybus(
        "book", market.slug, "--outcome", "no", "--once", "--config", str(system.config)
    )
    assert code == 0
    assert market.tokens[1].token_id in out


async def test_status_json_has_books_positions_halts_and_rejects(system: System) -> None:
    market = system.sim.markets()[0]
    yes = market.tokens[0].token_id
    await publish_exec(
        system.bus,
        "order",
        order(yes, market.condition_id, status="rejected", price=10_000, reason="off_tick"),
    )
    position = PositionSnapshot(
        event_id="p1", ts_event=1, ts_init=1, strategy_id="paper_test",
        condition_id=market.condition_id, asset_id=yes, size=25_000_000,
        provisional_size=25_000_000, provisional_average_price=400_000,
        provisional_realized_pnl=-1_500_000, unrealized_pnl=2_000_000,
    )  # fmt: skip
    await publish_exec(system.bus, "position", position)
    await set_halt(
        system.bus.js, system.bus.namespace, halted=True, strategy_id="paper_test", reason="test"
    )

    code, out, _ = await polybus("status", "--json", "--config", str(system.config))

    assert code == 1  # PostgreSQL is not there: unhealthy, and the rest still reported
    status = json.loads(out)
    trading = status["trading"]
    assert trading["books_by_state"] == {"live": len(system.sim.asset_ids())}
    assert trading["rejects_by_reason"] == {"off_tick": 1}
    assert [halt["strategy_id"] for halt in trading["halts"] if halt["halted"]] == ["paper_test"]
    [row] = trading["positions"]
    assert (row["asset_id"], row["size"], row["market"]) == (
        yes,
        25_000_000,
        f'"{market.question}" YES',
    )
    assert trading["pnl"] == [
        {"strategy_id": "paper_test", "realized_pnl": -1_500_000, "unrealized_pnl": 2_000_000,
         "fees": 0}
    ]  # fmt: skip
    assert {"timings", "reconnects", "resyncs", "assets_by_state"} <= set(status["metrics"])

    code, out, _ = await polybus("status", "--config", str(system.config))
    assert code == 1
    assert "HALTED: paper_test" in out
    assert "off_tick 1" in out
    assert "-1.5" in out  # PnL as decimals


async def test_top_json_ranks_the_asset_with_resyncs_and_rejects_first(system: System) -> None:
    market = system.sim.markets()[1]
    asset_id = market.tokens[0].token_id
    subject = system.bus.namespace.subjects
    part = int(
        next(
            message.subject
            for message in await system.bus.last_per_subject(
                "MD", [subject.market_data_kind("status")]
            )
            if message.subject.endswith(asset_id)
        ).rsplit(".", 3)[1]
    )
    for seq, state in enumerate(("resyncing", "live", "stale"), start=1000):
        await system.bus.publish(
            subject.status(part, asset_id),
            BookStatus(
                event_id=f"s{seq}", ts_event=seq, ts_init=0, asset_id=asset_id,
                condition_id=market.condition_id, seq=seq, epoch=99, status=state,  # type: ignore[arg-type]
                reason="test",
            ),
        )  # fmt: skip
    await publish_exec(
        system.bus,
        "order",
        order(asset_id, market.condition_id, status="rejected", price=5, reason="off_tick"),
    )
    await system.bus.flush()

    code, out, _ = await polybus("top", "--json", "--window", "10m", "--config", str(system.config))

    assert code == 0
    rows = json.loads(out)
    assert rows[0]["asset_id"] == asset_id
    assert (rows[0]["resyncs"], rows[0]["stale_transitions"], rows[0]["rejects"]) == (1, 1, 1)
    assert rows[0]["state"] == "stale"
    assert rows[0]["market"] == f'"{market.question}" YES'

    code, out, _ = await polybus("top", "--config", str(system.config), columns=150)
    assert code == 0
    assert "most troubled assets, last 10 min" not in out  # the default window is an hour
    assert "last 60 min" in out


async def put_heartbeat(bus: NatsBus, service: str) -> None:
    """A healthy heartbeat of ``service`` in the HEALTH bucket, as its runtime writes one."""
    bucket = await bus.js.key_value(bus.namespace.bucket(HEALTH_BUCKET))
    now = time.time_ns()
    health = ServiceHealth(
        event_id=f"health:{service}:{now}", ts_event=now, ts_init=now, service=service,
        instance=f"{service}-1", status="healthy", version="9.9.9", pid=os.getpid(),
    )  # fmt: skip
    await bucket.put(f"{service}.{service}-1", encode(health))


ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
"""A terminal control sequence (cursor moves, line erases, cursor hide/show)."""


async def test_status_watch_redraws_in_place_until_ctrl_c(system: System) -> None:
    await put_heartbeat(system.bus, "ingest")
    # A terminal 120 columns wide: rich redraws in place only on one (a pipe gets the last frame).
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 200, 120, 0, 0))
    environment = {**os.environ, "COLUMNS": "120", "LINES": "200", "NO_COLOR": "1",
                   "TERM": "xterm"}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", "status", "--watch",
        "--config", str(system.config), "--connect-timeout", "1",
        stdin=asyncio.subprocess.DEVNULL, stdout=child_side, stderr=asyncio.subprocess.PIPE,
        env=environment,
    )  # fmt: skip
    os.close(child_side)
    output = bytearray()
    loop = asyncio.get_running_loop()

    def read() -> None:
        try:
            output.extend(os.read(terminal, 65536))
        except OSError:  # EIO: the child has closed its side
            loop.remove_reader(terminal)

    loop.add_reader(terminal, read)

    def frames() -> list[str]:
        # Each frame starts with the NATS line; the redraws between them are control sequences.
        return ESCAPE.sub("", output.decode(errors="replace")).split("NATS        nats://")[1:]

    try:
        await eventually(lambda: len(frames()) >= 1, 30, "the first frame")
        # A service that starts after the first frame is in a later one: it refreshes, and
        # does not merely repaint what it had.
        await put_heartbeat(system.bus, "recorder")
        await eventually(
            lambda: any("recorder-1" in frame for frame in frames()[1:]), 30, "a later frame"
        )
        assert "recorder-1" not in frames()[0]

        process.send_signal(signal.SIGINT)
        started = loop.time()
        code = await asyncio.wait_for(process.wait(), 2.0)
        assert loop.time() - started < 2.0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        loop.remove_reader(terminal)
        os.close(terminal)

    assert process.stderr is not None
    assert code == 0, await process.stderr.read()
    assert await process.stderr.read() == b""
    assert len(frames()) >= 2
    for frame in frames():
        assert "ingest-1" in frame
        assert "9.9.9" in frame
        lines = re.split(r"\r\n|\r|\n", frame)
        assert all(len(line) <= 120 for line in lines), frame
    assert "recorder-1" in frames()[-1]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("book", "a.b", "--once"), "bad ASSET"),
        (("book", "no-such-market", "--once"), "no market with slug"),
        (("book", "x", "--depth", "0"), "--depth"),
        (("top", "--window", "soon"), "bad --window"),
        (("status", "--watch", "--json"), "not both"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    system: System, args: tuple[str, ...], problem: str
) -> None:
    code, out, err = await polybus(*args, "--config", str(system.config))

    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert problem in err


def test_timings_come_from_histogram_buckets() -> None:
    text = (
        "# TYPE polybus_executor_ack_seconds histogram\n"
        'polybus_executor_ack_seconds_bucket{le="0.001"} 50\n'
        'polybus_executor_ack_seconds_bucket{le="0.01"} 99\n'
        'polybus_executor_ack_seconds_bucket{le="+Inf"} 100\n'
        "polybus_executor_ack_seconds_count 100\npolybus_executor_ack_seconds_sum 0.5\n"
        "# TYPE polybus_ingest_reconnects counter\n"
        'polybus_ingest_reconnects_total{reason="stall"} 3\n'
    )
    scraped = Scraped()

    summarise("executor", text, scraped)

    [timing] = scraped.timings
    assert (timing.metric, timing.count, timing.p50_ms, timing.p99_ms) == (
        "polybus_executor_ack_seconds",
        100,
        1.0,
        10.0,
    )
    assert scraped.reconnects == {"executor": 3}
    assert quantile([(1.0, 0.0), (float("inf"), 0.0)], 0.5) == 0.0
