"""`polybus tail` decodes what is on a subject with polybus's own schemas."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DeadLetter, Trade
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually


async def test_tail_prints_decoded_events_and_flags_undecodable_ones(
    bus: NatsBus, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
    )
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polybus.common.cli", "tail", "md.polymarket.*.trade.>",
            "--config", str(config), stdout=sink,
        )  # fmt: skip
    subjects = bus.namespace.subjects
    trade = Trade(
        event_id="t1", ts_event=1, ts_init=2, asset_id="7", condition_id="0xc", seq=1, epoch=1,
        price=456_000, size=219_217_767, side="BUY",
    )  # fmt: skip

    async def subscribed() -> bool:
        # Keep publishing until the tail process has subscribed and printed something.
        await bus.publish(subjects.trade(0, "7"), trade)
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
    tail.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(tail.wait(), 20) == 0
    text = out.read_text()
    assert "Trade(" in text
    assert "price=456000" in text
    assert "b'not json'" in text
    assert "skip me" not in text  # a book subject is not a trade subject
