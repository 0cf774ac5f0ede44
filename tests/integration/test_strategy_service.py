"""The strategy service as `polybus strategy` runs it (in-process here) with the executor on
paper, on a real nats-server: a strategy's intents reach the executor, become paper fills that
come back as ``on_fill`` and Portfolio positions; a restarted strategy rebuilds its positions
from EXEC before it acts; halts cancel and silence it. Market data is the MD stream as an
ingest leaves it (the executor tests' helpers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from polybus.common.book_view import BookView
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import Config
from polybus.common.events import (
    BookDelta,
    Fill,
    Level,
    LevelChange,
    OrderIntent,
    PositionSnapshot,
    intent_decoder,
)
from polybus.common.halt import set_halt
from polybus.common.money import MICROS
from polybus.common.runtime import now_ns
from polybus.common.streams import Definitions
from polybus.common.subjects import partition_of
from polybus.strategy.api import Action, Place, Strategy
from polybus.strategy.service import run
from tests.conftest import NatsServerInfo
from tests.helpers import eventually, running
from tests.integration.test_executor_service import (
    CONDITION,
    YES,
    Execution,
    executor_running,
    publish_market,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

WAIT_S = 15.0


class BuyOnce(Strategy):
    """Takes 5 shares at the best ask once, and never again while it holds or works any."""

    name = "buy_once"
    instances: ClassVar[list[BuyOnce]] = []

    def __init__(self, settings: msgspec.Struct, portfolio: Any) -> None:
        super().__init__(settings, portfolio)
        self.fills: list[Fill] = []
        self.books = 0
        self.instances.append(self)

    def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
        self.books += 1
        book = view.book(asset_id)
        if book is None or book.best_ask is None or asset_id != YES:
            return ()
        if self.portfolio.position(asset_id) or self.portfolio.working(asset_id):
            return ()
        return (
            Place(
                asset_id=asset_id,
                side="BUY",
                price=book.best_ask,
                size=5 * MICROS,
                time_in_force="FAK",
            ),
        )

    def on_fill(self, fill: Fill) -> Iterable[Action]:
        self.fills.append(fill)
        return ()


class Intents:
    """Every intent the strategy published, from the INTENT stream's subjects."""

    def __init__(self) -> None:
        self.seen: list[OrderIntent] = []

    async def receive(self, message: Any) -> None:
        self.seen.append(intent_decoder.decode(message.data))


def strategy_running(config: Config) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running(run(config, name=BuyOnce.name, strategy=BuyOnce))


@pytest.fixture
async def execution(bus: NatsBus, definitions: Definitions) -> AsyncIterator[Execution]:
    await bus.apply(definitions)
    watcher = Execution(bus)
    subscription = await bus.subscribe(bus.namespace.subjects.execution_all(), watcher.receive)
    await publish_market(
        bus,
        bids=[Level(390_000, 100 * MICROS)],
        asks=[Level(410_000, 20 * MICROS), Level(420_000, 100 * MICROS)],
    )
    BuyOnce.instances.clear()
    yield watcher
    await subscription.unsubscribe()


@pytest.fixture
def config(tmp_path: Path, nats_server: NatsServerInfo, bus: NatsBus) -> Config:
    return write_config(tmp_path / "strategy.toml", nats_server.url, bus)


@pytest.fixture
async def intents(bus: NatsBus) -> AsyncIterator[Intents]:
    watcher = Intents()
    subscription = await bus.subscribe(bus.namespace.subjects.intent_all(), watcher.receive)
    yield watcher
    await subscription.unsubscribe()


def positions(execution: Execution) -> list[PositionSnapshot]:
    return execution.of_type(PositionSnapshot)


async def test_intents_become_paper_fills_that_come_back_as_on_fill_and_positions(
    execution: Execution, config: Config, intents: Intents
) -> None:
    async with executor_running(config), strategy_running(config):
        await eventually(lambda: bool(BuyOnce.instances), WAIT_S, "the strategy to start")
        strategy = BuyOnce.instances[0]
        await eventually(lambda: bool(strategy.fills), WAIT_S, "a fill reaching on_fill")
        await eventually(
            lambda: strategy.portfolio.position(YES) == 5 * MICROS, WAIT_S, "the position"
        )

    (placed,) = intents.seen
    assert placed.intent_id.startswith("buy_once.")
    assert (placed.action, placed.price, placed.size) == ("place", 410_000, 5 * MICROS)
    # Made under the partition's lease (on by default), and the executor's fence took it.
    assert placed.lease_revision > 0
    assert {fill.order_id for fill in strategy.fills} == {placed.intent_id}
    assert "filled" in execution.statuses(placed.intent_id)
    assert strategy.portfolio.working() == []


async def test_a_restarted_strategy_rebuilds_its_position_from_exec_before_it_acts(
    execution: Execution, config: Config, intents: Intents
) -> None:
    async with executor_running(config):
        async with strategy_running(config):
            await eventually(lambda: bool(BuyOnce.instances), WAIT_S, "the strategy to start")
            first = BuyOnce.instances[0]
            await eventually(lambda: first.portfolio.position(YES) > 0, WAIT_S, "a position")
        async with strategy_running(config):
            await eventually(lambda: len(BuyOnce.instances) == 2, WAIT_S, "the restart")
            second = BuyOnce.instances[1]
            await eventually(lambda: second.books > 0, WAIT_S, "a book after the restart")
            assert second.portfolio.position(YES) == 5 * MICROS
            # The book seen again; still one order: the rebuilt position says so.
            await execution.bus.flush()

    # One order; a cancel of it may follow at the stop (a clean stop pulls working orders).
    assert [i.action for i in intents.seen if i.action != "cancel"] == ["place"]
    assert second.fills == []  # history is state, not news


async def test_halt_at_start_keeps_the_strategy_silent_until_resume(
    execution: Execution, config: Config, intents: Intents, bus: NatsBus
) -> None:
    await set_halt(bus.js, bus.namespace, halted=True, strategy_id=None, reason="test")
    async with executor_running(config), strategy_running(config):
        await eventually(lambda: bool(BuyOnce.instances), WAIT_S, "the strategy to start")
        strategy = BuyOnce.instances[0]
        await publish_delta(bus, seq=2)
        await bus.flush()
        assert strategy.books == 0
        assert intents.seen == []
        await set_halt(bus.js, bus.namespace, halted=False, strategy_id=None)
        # Book events after the resume (the watch applies it a moment later): it acts.
        seq = iter(range(3, 1000))

        async def acted() -> bool:
            await publish_delta(bus, seq=next(seq))
            return bool(intents.seen)

        await eventually(acted, WAIT_S, "an intent after resume", poll=0.1)
    # One order; a cancel of it may follow at the stop (a clean stop pulls working orders).
    assert [i.action for i in intents.seen if i.action != "cancel"] == ["place"]


async def publish_delta(bus: NatsBus, *, seq: int) -> None:
    part = partition_of(CONDITION, 16)
    now = now_ns()
    delta = BookDelta(
        event_id=f"delta.{YES}.{seq}",
        ts_event=now,
        ts_init=now,
        asset_id=YES,
        condition_id=CONDITION,
        seq=seq,
        epoch=1,
        changes=(LevelChange("BUY", 390_000, (100 + seq) * MICROS),),
        best_bid=390_000,
        best_ask=410_000,
    )
    await bus.publish(bus.namespace.subjects.delta(part, YES), delta, msg_id=delta.event_id)
