"""The executor service in live mode against the simulator's CLOB (the official SDK signs, the
simulator verifies): orders are counted at the simulator. Also the live switches: a live
config, the --live flag or the key alone refuses to start, one line, exit 2."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.events import BookSnapshot, Level, MarketInfo, Outcome
from polybus.common.money import MICROS
from polybus.common.runtime import now_ns
from polybus.common.streams import Definitions
from polybus.common.subjects import partition_of
from polybus.executor.service import LiveRefused, run
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket
from tests.conftest import NatsServerInfo
from tests.helpers import eventually, running, write_secrets
from tests.integration.test_executor_service import (
    STRATEGY,
    Execution,
    intent,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

PRIVATE_KEY = "0x" + "c4" * 32
HEARTBEAT_TIMEOUT_S = 3.0


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0,
        seed=5,
        binary_markets=2,
        neg_risk_events=0,
        flow=False,
        connect_bus=False,
        post_only_after_restart_s=0,
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
    )
    async with Simulator(settings) as simulator:
        yield simulator


def market_of(sim: Simulator) -> SimMarket:
    return next(m for m in sim.markets() if not m.neg_risk)


async def publish_sim_market(bus: NatsBus, sim: Simulator, market: SimMarket) -> None:
    """The simulator's market and YES book on the MD stream, as the ingest would publish them."""
    subjects = bus.namespace.subjects
    part = partition_of(market.condition_id, 16)
    yes, no = (token.token_id for token in market.tokens)
    bids, asks = sim.book(yes)
    now = now_ns()
    info = MarketInfo(
        event_id=f"market.{market.condition_id}",
        ts_event=now,
        ts_init=now,
        condition_id=market.condition_id,
        question=market.question,
        slug=market.slug,
        outcomes=(Outcome(token_id=yes, outcome="Yes"), Outcome(token_id=no, outcome="No")),
        tick_size=market.tick_size,
        min_order_size=market.min_order_size,
    )
    await bus.publish_persistent(subjects.market(part, info.condition_id), info, msg_id="m")
    snapshot = BookSnapshot(
        event_id=f"book.{yes}",
        ts_event=now,
        ts_init=now,
        asset_id=yes,
        condition_id=market.condition_id,
        seq=1,
        epoch=1,
        bids=tuple(Level(price, size) for price, size in bids),
        asks=tuple(Level(price, size) for price, size in asks),
        tick_size=market.tick_size,
        min_order_size=market.min_order_size,
    )
    await bus.publish_persistent(subjects.book(part, yes), snapshot, msg_id="b")


def live_config(tmp_path: Path, nats: NatsServerInfo, bus: NatsBus, sim: Simulator) -> Config:
    write_secrets(tmp_path / "secrets.toml", f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n')
    return write_config(
        tmp_path / "live.toml",
        nats.url,
        bus,
        executor=f'mode = "live"\nclob_url = "{sim.http_url}"\n'
        f'user_ws_url = "{sim.user_ws_url}"\nvenue_heartbeat_interval_s = 1.0\n',
        extra='secrets_file = "secrets.toml"\n',
    )


def live_at_sim(sim: Simulator) -> list[str]:
    return [
        order_id
        for order_id, order in sim.trading.matching.orders.items()
        if order.status == "LIVE"
    ]


@pytest.fixture
async def live(
    bus: NatsBus, definitions: Definitions, sim: Simulator
) -> AsyncIterator[tuple[Execution, SimMarket]]:
    await bus.apply(definitions)
    watcher = Execution(bus)
    subscription = await bus.subscribe(bus.namespace.subjects.execution_all(), watcher.receive)
    market = market_of(sim)
    await publish_sim_market(bus, sim, market)
    yield watcher, market
    await subscription.unsubscribe()


def passive_bid(sim: Simulator, market: SimMarket) -> int:
    bids, _ = sim.book(market.tokens[0].token_id)
    return max(bids[0][0] - 2 * market.tick_size, market.tick_size)


async def test_live_orders_reach_the_simulator_once(
    live: tuple[Execution, SimMarket],
    sim: Simulator,
    tmp_path: Path,
    nats_server: NatsServerInfo,
    bus: NatsBus,
) -> None:
    execution, market = live
    order = intent(
        condition_id=market.condition_id,
        asset_id=market.tokens[0].token_id,
        price=passive_bid(sim, market),
        size=10 * MICROS,
    )
    config = live_config(tmp_path, nats_server, bus, sim)
    async with executor_running_live(config):
        await execution.send(order)
        await execution.send(order, msg_id=f"{order.intent_id}-again")
        accepted = await execution.status(order.intent_id, "accepted")
        assert live_at_sim(sim) == [accepted.venue_order_id]
        await eventually(
            lambda: any(
                key.heartbeat_deadline is not None for key in sim.trading.api_keys.by_key.values()
            ),
            10,
            "a heartbeat to arm the venue's switch",
        )
    assert execution.statuses(order.intent_id) == ["submitted", "accepted"]
    assert len(sim.trading.matching.orders) == 1


def executor_running_live(config: Config) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running(run(config, live=True))


async def test_a_killed_executor_loses_its_orders_to_the_heartbeat_and_reconciles_on_restart(
    live: tuple[Execution, SimMarket],
    sim: Simulator,
    tmp_path: Path,
    nats_server: NatsServerInfo,
    bus: NatsBus,
) -> None:
    execution, market = live
    config = live_config(tmp_path, nats_server, bus, sim)
    asset = market.tokens[0].token_id
    resting = intent(
        condition_id=market.condition_id, asset_id=asset, price=passive_bid(sim, market)
    )
    log = (tmp_path / "executor.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", "executor", "--live",
        "--config", str(config.path), cwd=tmp_path,
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        await execution.send(resting)
        accepted = await execution.status(resting.intent_id, "accepted")
        await eventually(lambda: bool(live_at_sim(sim)), 10, "the order resting at the sim")
        # Killed only once the dead-man switch is armed (a first heartbeat accepted).
        await eventually(
            lambda: any(
                key.heartbeat_deadline is not None for key in sim.trading.api_keys.by_key.values()
            ),
            10,
            "a heartbeat to arm the venue's switch",
        )
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    finally:
        log.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The venue's dead-man switch: no heartbeat for HEARTBEAT_TIMEOUT_S cancels the key's orders.
    await eventually(lambda: not live_at_sim(sim), 3 * HEARTBEAT_TIMEOUT_S, "the sim to cancel")
    waiting = intent(
        condition_id=market.condition_id, asset_id=asset, price=passive_bid(sim, market)
    )
    await execution.send(waiting)  # queued while no executor runs
    async with executor_running_live(config):
        await execution.status(waiting.intent_id, "accepted")
    closed = execution.orders(resting.intent_id)[-1]
    assert closed.status == "canceled"
    assert closed.venue_order_id == accepted.venue_order_id
    # Reconciled before the first intent was taken.
    order = [e.order_id for e in execution.events if hasattr(e, "order_id")]
    assert order.index(resting.intent_id, 2) < order.index(waiting.intent_id)
    assert execution.of_type(type(closed))[0].strategy_id == STRATEGY


@pytest.mark.parametrize(
    ("executor", "secrets", "live_flag", "problem"),
    [
        ('mode = "live"\n', True, False, "needs the --live flag"),
        ("", True, True, 'mode = "paper", not "live"'),
        ('mode = "live"\n', False, True, "needs secrets_file"),
    ],
)
async def test_live_needs_the_config_the_flag_and_the_key(
    tmp_path: Path,
    nats_server: NatsServerInfo,
    bus: NatsBus,
    executor: str,
    secrets: bool,
    live_flag: bool,
    problem: str,
) -> None:
    extra = ""
    if secrets:
        write_secrets(tmp_path / "secrets.toml", f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n')
        extra = 'secrets_file = "secrets.toml"\n'
    config = write_config(tmp_path / "c.toml", nats_server.url, bus, executor, extra)
    with pytest.raises(LiveRefused, match=problem):
        await run(config, live=live_flag)
    for command in (["executor"], ["up"]):
        args = [*command, "--config", str(config.path)] + (["--live"] if live_flag else [])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polybus.common.cli", *args, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        lines = stderr.decode().splitlines()
        assert process.returncode == 2, (command, lines)
        assert len(lines) == 1, lines
        assert problem in lines[0]
        assert PRIVATE_KEY not in lines[0]
