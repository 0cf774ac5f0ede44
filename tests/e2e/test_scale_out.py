"""Scale-out under `polybus up` (issue 12, item 4): config/sim.toml with `[ingest] instances = 2`
and three replicas of spread_capture, every one its own child of `up`.

What a user checks: `polybus status` shows each process healthy under its own instance name;
the LEASES bucket has every partition of each group held by exactly one member, none above
its fair share; the MD
stream has every asset followed by one ingest at a time (its epochs never go back, its seqs have
no gap and no repeat within an epoch) and every simulated asset live; the intents show no two
replicas driving one partition (the fencing checks of tests/integration/test_strategy_replicas)
and every replica quoting; then an ingest SIGKILLed: restarted by the supervisor, the same holds
and every MD/EXEC sequence is in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js import api

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config, load_config
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    MarketDataEvent,
    TickSizeChanged,
    market_data_decoder,
)
from polybus.common.leases import decode_record, strategy_group
from polybus.common.plugins import discover_plugins, section_types
from tests.e2e.test_out_of_the_box import shipped_config_on_free_ports
from tests.faults.checks import assert_no_duplicates, assert_recorded_without_gaps
from tests.faults.pipeline import Pipeline, child_name, children_of
from tests.helpers import eventually, healthy_status, polybus, start_up, stop
from tests.integration.test_strategy_replicas import Trading, overlaps, replica_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

INGESTS = 2
REPLICAS = 3
PARTITIONS = 16
WAIT_S = 120


def scaled_config(workdir: Path) -> tuple[Path, int]:
    """config/sim.toml on free ports with 2 ingests and 3 spread_capture replicas (each picks
    the markets it quotes among those of its own partitions)."""
    config, postgres_port = shipped_config_on_free_ports(workdir)
    text = config.read_text()
    text = text.replace("[ingest]\n", f"[ingest]\ninstances = {INGESTS}\n", 1)
    text, count = re.subn(
        r"(\[strategy\.spread_capture\][^\[]*?)replicas = 1",
        rf"\1replicas = {REPLICAS}",
        text,
        flags=re.DOTALL,
    )
    assert count == 1
    config.write_text(text)
    return config, postgres_port


BOOK_EVENTS = (BookSnapshot, BookDelta, BookStatus, TickSizeChanged)
"""The events that count in an asset's ``seq`` (a trade carries the book's seq as it stands)."""


class MarketData:
    """Every book event on MD from the first, in stream order (an ordered consumer)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, MarketDataEvent]] = []

    async def receive(self, msg: Msg) -> None:
        event = market_data_decoder.decode(msg.data)
        if isinstance(event, BOOK_EVENTS):
            self.events.append((msg.metadata.sequence.stream, event))

    def assets(self) -> set[str]:
        return {event.asset_id for _, event in self.events}

    def problems(self) -> list[str]:
        """Per asset: an epoch older than one already seen (two ingests publishing it at once),
        or a seq that skips or repeats within an epoch (an event lost or published twice)."""
        found = []
        latest_epoch: dict[str, int] = {}
        last_seq: dict[tuple[str, int], int] = {}
        for stream_seq, event in self.events:
            asset, epoch = event.asset_id, event.epoch
            if epoch < latest_epoch.get(asset, 0):
                found.append(f"MD {stream_seq}: {asset} back to epoch {epoch}")
            latest_epoch[asset] = max(epoch, latest_epoch.get(asset, 0))
            before = last_seq.get((asset, epoch))
            if before is not None and event.seq != before + 1:
                found.append(f"MD {stream_seq}: {asset} epoch {epoch} seq {before} -> {event.seq}")
            last_seq[asset, epoch] = event.seq
        return found


async def holders(bus: NatsBus, group: str) -> dict[int, str]:
    """Partition -> holding member, from the LEASES bucket as a user would read it."""
    kv = await bus.js.key_value(bus.namespace.bucket("LEASES"))
    held: dict[int, str] = {}
    with contextlib.suppress(Exception):  # no key yet
        for key in await kv.keys():
            prefix, _, partition = key.rpartition(".partition.")
            if prefix != group:
                continue
            entry = await kv.get(key)
            record = decode_record(entry.value or b"")
            if record is not None:
                held[int(partition)] = record.holder
    return held


def fairly_split(held: dict[int, str], members: int) -> bool:
    """Every partition held, by ``members`` members, none above its fair share (the leases'
    rule: ceil(P / members) each, so three members may hold [6, 6, 4] or [6, 5, 5])."""
    counts = Counter(held.values())
    return (
        sorted(held) == list(range(PARTITIONS))
        and len(counts) == members
        and max(counts.values()) <= math.ceil(PARTITIONS / members)
    )


def ingest_pids(up_pid: int) -> list[int]:
    return [pid for pid in children_of(up_pid) if child_name(pid) == "ingest"]


@pytest_asyncio.fixture
async def system(workdir: Path) -> AsyncIterator[tuple[Config, int, asyncio.subprocess.Process]]:
    config_path, postgres_port = scaled_config(workdir)
    up = await start_up(config_path, workdir)
    try:
        yield load_config(config_path, section_types(discover_plugins())), postgres_port, up
    finally:
        code = await stop(up)
        assert code == 0, (workdir / "up.log").read_text()[-4000:]


async def test_two_ingests_and_three_replicas_split_their_partitions_without_overlap_or_loss(
    workdir: Path, system: tuple[Config, int, asyncio.subprocess.Process]
) -> None:
    config, postgres_port, up = system
    await healthy_status(config.path, workdir, frozenset({"sim", "ingest", "recorder"}))
    bus = await NatsBus.connect(
        config.nats_url(), name="test-scale-out", namespace=config.namespace()
    )
    market_data, trading = MarketData(), Trading(bus, "spread_capture")
    subscription = await bus.js.subscribe(
        bus.namespace.subjects.market_data_all(),
        stream=bus.namespace.stream("MD"),
        cb=market_data.receive,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    await trading.follow()
    try:
        group = strategy_group("spread_capture")

        seen: dict[str, dict[int, str]] = {}

        async def split() -> bool:
            seen["ingest"], seen[group] = await holders(bus, "ingest"), await holders(bus, group)
            return fairly_split(seen["ingest"], INGESTS) and fairly_split(seen[group], REPLICAS)

        try:
            await eventually(split, WAIT_S, "16 partitions of each group split fairly", poll=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}: {seen}") from None

        report: dict[str, Any] = {}

        async def every_instance_healthy() -> bool:
            _, out = await polybus("status", "--json", "--config", str(config.path), cwd=workdir)
            report.update(json.loads(out))
            healthy: dict[str, set[str]] = defaultdict(set)
            for service in report["services"]:
                if service["healthy"]:
                    healthy[service["service"]].add(service["instance"])
            return (
                len(healthy["ingest"]) == INGESTS
                and len(healthy["strategy-spread_capture"]) == REPLICAS
            )

        try:
            await eventually(every_instance_healthy, WAIT_S, "each process healthy", poll=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}: {report.get('services')}") from None

        # Each ingest follows books of its own; together every asset on MD, each once.
        live = [
            re.search(r"books ok: (\d+)/(\d+) books live", service["detail"])
            for service in report["services"]
            if service["service"] == "ingest"
        ]
        followed = [int(m[2]) for m in live if m is not None]
        assert len(followed) == INGESTS, report["services"]
        assert min(followed) > 0, report["services"]
        assert sum(followed) == len(market_data.assets())
        quoting_replicas: set[str] = set()

        def every_replica_quoting() -> bool:
            submitted = trading.submitted()
            quoting_replicas.update(
                replica_of(i.intent_id)[0]
                for _, i in trading.intents()
                if i.action == "place" and i.intent_id in submitted
            )
            return len(quoting_replicas) == REPLICAS

        await eventually(every_replica_quoting, WAIT_S, "a quote of every replica accepted")
        assert market_data.problems() == []
        await trading.settle()
        assert overlaps(trading) == []

        # An ingest SIGKILLed: the supervisor restarts it, its partitions come back to two.
        before = set(ingest_pids(up.pid))
        assert len(before) == INGESTS
        os.kill(min(before), signal.SIGKILL)

        def restarted() -> bool:
            now = set(ingest_pids(up.pid))
            return len(now) == INGESTS and now != before

        await eventually(restarted, WAIT_S, "the killed ingest restarted by the supervisor")
        await eventually(split, WAIT_S, "16 partitions split again after the restart", poll=0.5)
        count = len(market_data.events)
        await eventually(
            lambda: len(market_data.events) > count + 100, WAIT_S, "market data flowing again"
        )
        assert market_data.problems() == []
        await trading.settle()
        assert overlaps(trading) == []
        recorded = Pipeline(
            up_pid=up.pid,
            config=config.path,
            workdir=workdir,
            postgres_url=f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus",
            nats_url=config.nats_url(),
        )
        for table in ("book_deltas", "order_events", "intents"):
            await assert_recorded_without_gaps(recorded, bus.js, table)
        await assert_no_duplicates(recorded)
    finally:
        await subscription.unsubscribe()
        await trading.close()
        await bus.drain()
