"""`polybus tail` decodes what is on a subject with polybus's own schemas: one human line per
event (decimals, market names), the JSON unchanged with --json, a replay with --since and the
verbatim input of dead letters with --raw."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DeadLetter, Fill, MarketInfo, Outcome, Trade
from polybus.common.streams import Definitions
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)

MARKET = MarketInfo(
    event_id="m1", ts_event=1, ts_init=1, condition_id="0xc", question="Will X?", slug="will-x",
    outcomes=(Outcome(token_id="7", outcome="Yes"), Outcome(token_id="8", outcome="No")),
    tick_size=10_000, min_order_size=5_000_000,
)  # fmt: skip
TRADE = Trade(
    event_id="t1", ts_event=1_700_000_000_123_000_000, ts_init=2, asset_id="7", condition_id="0xc",
    seq=1, epoch=1, price=456_000, size=219_217_767, side="BUY",
)  # fmt: skip


def write_config(tmp_path: Path, bus: NatsBus, nats_server: NatsServerInfo) -> Path:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
    )
    return config


async def start_tail(config: Path, out: Path, *args: str) -> asyncio.subprocess.Process:
    with out.open("wb") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polybus.common.cli", "tail", *args, "--config", str(config),
            stdout=sink,
        )  # fmt: skip


async def run_tail(config: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", "tail", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        # Say what it printed, and leave no process or pipe behind for later tests to trip on.
        process.kill()
        stdout, stderr = await process.communicate()
        raise AssertionError(
            f"tail {' '.join(args)} still running after 30 s; printed {stdout.decode()!r}, "
            f"logged {stderr.decode()[-2000:]!r}"
        ) from None
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_tail_prints_one_line_per_event_with_decimals_and_market_names(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    await bus.apply(definitions)
    subjects = bus.namespace.subjects
    # Stored before the tail starts: the tail learns the name from the MD stream.
    await bus.publish(subjects.market(0, "0xc"), MARKET)
    await bus.flush()
    config = write_config(tmp_path, bus, nats_server)
    out = tmp_path / "out.txt"
    tail = await start_tail(config, out, "md.polymarket.*.trade.>")

    async def subscribed() -> bool:
        # Keep publishing until the tail process has subscribed and printed something.
        await bus.publish(subjects.trade(0, "7"), TRADE)
        await bus.flush()
        return out.stat().st_size > 0

    await eventually(subscribed, 20, "polybus tail to subscribe")
    await bus.publish_bytes(subjects.trade(0, "8"), b"not json")
    await bus.publish(
        subjects.book(0, "7"),
        DeadLetter(event_id="x", ts_event=1, ts_init=1, source="s", reason="r", raw="skip me"),
    )
    await bus.flush()
    await eventually(lambda: "undecodable" in out.read_text(), 20, "the undecodable line")
    tail.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(tail.wait(), 20) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == '22:13:20.123 Trade BUY 219.217767 @ 0.456 "Will X?" YES'
    assert "b'not json'" in lines[-1]
    assert "skip me" not in out.read_text()  # a book subject is not a trade subject


async def stored_market_trade_and_fill(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> Path:
    """MD holds a market and a trade, EXEC a fill; the config of a tail on that server."""
    await bus.apply(definitions)
    subjects = bus.namespace.subjects
    fill = Fill(
        event_id="f1", ts_event=5, ts_init=5, fill_id="v1", order_id="o1", strategy_id="dutch_book",
        condition_id="0xc", asset_id="7", side="BUY", price=530_000, size=12_500_000,
        settlement="CONFIRMED",
    )  # fmt: skip
    await bus.publish(subjects.market(0, "0xc"), MARKET)
    await bus.publish(subjects.trade(0, "7"), TRADE)
    await bus.publish_persistent(subjects.execution("dutch_book", "fill", "0xc"), fill, msg_id="f1")
    await bus.flush()

    async def stored() -> bool:
        # A core publish is stored by the stream a moment after the server received it.
        info = await bus.js.stream_info(bus.namespace.stream("MD"))
        return info.state.messages == 2

    await eventually(stored, 10, "the stream to store both market data events")
    config = write_config(tmp_path, bus, nats_server)

    return config


async def test_tail_json_since_replays_every_stream_unchanged(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    config = await stored_market_trade_and_fill(bus, definitions, nats_server, tmp_path)
    # Across two streams (MD and EXEC): '>' matches everything, KV and all.
    code, out, _ = await run_tail(config, ">", "--since", "10m", "--json", "--count", "3")
    assert code == 0
    events = [json.loads(text) for text in out.splitlines()]
    assert sorted(event["event_id"] for event in events) == ["f1", "m1", "t1"]
    assert next(e for e in events if e["type"] == "Fill")["price"] == 530_000


async def test_tail_since_replays_one_streams_stored_events(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    config = await stored_market_trade_and_fill(bus, definitions, nats_server, tmp_path)
    code, out, _ = await run_tail(config, "exec.>", "--since", "1h", "--count", "1")
    assert code == 0
    assert out.split(" ", 1)[1] == (
        'Fill dutch_book BUY 12.5 @ 0.53 "Will X?" YES CONFIRMED taker\n'
    )
    code, out, _ = await run_tail(config, "md.>", "--since", "10m", "--json", "--count", "2")
    assert code == 0
    assert sorted(json.loads(text)["event_id"] for text in out.splitlines()) == ["m1", "t1"]


async def test_tail_raw_prints_a_dead_letter_verbatim(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    await bus.apply(definitions)
    frame = '[{"event_type": "book", "asset_id": "7", "bids": "oops"}]'
    dead = DeadLetter(
        event_id="d1", ts_event=1, ts_init=1, source="ingest", reason="decode_error", raw=frame
    )
    await bus.publish_persistent(bus.namespace.subjects.dead_letter("ingest"), dead, msg_id="d1")
    config = write_config(tmp_path, bus, nats_server)

    code, out, _ = await run_tail(config, "dlq.>", "--since", "5m", "--raw", "--count", "1")

    assert code == 0
    assert out == frame + "\n"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("md..x",), "bad subject"),
        (("md.>", "--since", "ten minutes"), "bad --since"),
        (("md.>", "--since", "-5m"), "bad --since"),
        (("md.>", "--raw"), "--raw prints dead-lettered frames"),
        (("dlq.>", "--raw", "--json"), "not both"),
        (("nowhere.>", "--since", "5m"), "no stream stores"),
    ],
)
async def test_tail_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], problem: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[bus]\nurl = "nats://127.0.0.1:1"\nstreams_file = "{STREAMS_FILE}"\n')

    code, out, err = await run_tail(config, *args)

    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert problem in err
