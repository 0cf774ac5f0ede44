"""Reconciliation and the dead-man heartbeat against the simulator's CLOB through the live
adapter (the official SDK signs, the simulator verifies): a lost answer is reconciled to the
one order the venue has, a fill made while we were away becomes a Fill, heartbeats keep an
order alive and stopping them gets it canceled by the venue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from eth_account import Account

from polybus.common.config import Secret
from polybus.common.events import Event, Fill, OrderEvent, OrderIntent, PositionSnapshot
from polybus.common.money import MICROS
from polybus.common.positions import PositionBook
from polybus.executor.config import ExecutorSettings
from polybus.executor.heartbeat import Heartbeat
from polybus.executor.live.adapter import LiveVenueSettings, PolymarketLiveVenue
from polybus.executor.live.client import LiveAccount, create_client, private_environment
from polybus.executor.live.limits import SignerLimits
from polybus.executor.orders import OrderLedger
from polybus.executor.reconcile import Reconciler
from polybus.executor.venue import SubmitAccepted, SubmitUnknown
from polybus.sim.clock import ManualClock
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket
from tests.integration.test_executor_live import (
    PRIVATE_KEY,
    RecordingProxy,
    SharedClock,
    best_ask,
    binary,
    order,
    passive_bid,
)
from tests.integration.test_sim_support import Trader

COUNTERPARTY_KEY = "0x" + "e7" * 32
HEARTBEAT_TIMEOUT_S = 0.6
SIZE = 10 * MICROS


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(sim_clock: ManualClock) -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=21, binary_markets=3, neg_risk_events=0, flow=False, connect_bus=False,
        starting_collateral=1_000, post_only_after_restart_s=0,
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        settlement_mined_ms=20, settlement_confirmed_ms=20,
    )  # fmt: skip
    async with Simulator(settings, clock=sim_clock) as simulator:
        yield simulator


@pytest.fixture
async def proxy(sim: Simulator) -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy(sim.http_url) as running:
        yield running


@pytest.fixture
async def venue(
    proxy: RecordingProxy, sim_clock: ManualClock
) -> AsyncIterator[PolymarketLiveVenue]:
    account = LiveAccount(
        private_key=Secret(PRIVATE_KEY),
        wallet=Account.from_key(PRIVATE_KEY).address,
        signature_type="EOA",
    )
    client = await create_client(account, private_environment(clob_url=proxy.url))
    clock = SharedClock(sim_clock)
    adapter = PolymarketLiveVenue(
        client,
        limits=SignerLimits("standard", clock),
        clock=clock,
        settings=LiveVenueSettings(request_timeout_s=1.0),
    )
    yield adapter
    await adapter.aclose()


class Executor:
    """The executor's state as the service keeps it, and the reconciler over it."""

    def __init__(self, venue: PolymarketLiveVenue) -> None:
        self.venue = venue
        self.ledger = OrderLedger()
        self.positions = PositionBook()
        self.reconciler = Reconciler(
            venue, self.ledger, self.positions, ExecutorSettings(), time.time_ns
        )

    async def place(self, market: SimMarket, intent_id: str, price: int, **fields: Any) -> Any:
        """Record the intent as submitted and send it, as the service does."""
        values: dict[str, Any] = {"price": price, "size": SIZE}
        values.update(fields)
        intent = OrderIntent(
            event_id=f"e-{intent_id}",
            ts_event=time.time_ns(),
            ts_init=time.time_ns(),
            intent_id=intent_id,
            strategy_id="mm",
            action="place",
            condition_id=market.condition_id,
            asset_id=market.yes,
            **values,
        )
        self.ledger.submit(intent, time.time_ns())
        [result] = await self.venue.submit([order(market, client_order_id=intent_id, **values)])
        if isinstance(result, SubmitUnknown):
            self.ledger.transition(
                intent_id, "unknown", time.time_ns(), venue_order_id=result.venue_order_id
            )
        elif isinstance(result, SubmitAccepted):
            self.ledger.transition(
                intent_id, "accepted", time.time_ns(), venue_order_id=result.venue_order_id
            )
        return result

    async def reconcile(self) -> list[Event]:
        return await self.reconciler.reconcile(time.time_ns())


def statuses(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.order_id, e.status, e.filled_size) for e in events if isinstance(e, OrderEvent)]


# -- reconciliation ----------------------------------------------------------------------------
async def test_a_lost_answer_is_reconciled_to_the_order_the_venue_took_never_a_second(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy
) -> None:
    market = binary(sim)
    executor = Executor(venue)
    proxy.drops["/orders"] = "abort"
    result = await executor.place(market, "intent-1", passive_bid(sim, market))
    assert isinstance(result, SubmitUnknown), result

    events = await executor.reconcile()

    assert statuses(events) == [("intent-1", "accepted", 0)]
    assert executor.ledger.get("intent-1").venue_order_id == result.venue_order_id
    assert list(sim.trading.matching.orders) == [result.venue_order_id]
    assert proxy.count("POST", "/orders") == 1
    assert await executor.reconcile() == []  # nothing left to repair


async def test_a_lost_answer_to_an_order_that_filled_becomes_its_fill(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy
) -> None:
    market = binary(sim)
    ask_price, _ = best_ask(sim, market)
    executor = Executor(venue)
    proxy.drops["/orders"] = "abort"
    result = await executor.place(market, "take-1", ask_price, size=5 * MICROS, time_in_force="FOK")
    assert isinstance(result, SubmitUnknown), result

    events = await executor.reconcile()

    [fill] = [e for e in events if isinstance(e, Fill)]
    assert (fill.order_id, fill.side, fill.price, fill.size, fill.liquidity) == (
        "take-1",
        "BUY",
        ask_price,
        5 * MICROS,
        "taker",
    )
    assert statuses(events) == [("take-1", "filled", 5 * MICROS)]
    assert proxy.count("POST", "/orders") == 1
    assert len(sim.trading.matching.orders) == 1


async def test_a_fill_while_we_were_away_is_found_and_becomes_a_fill(
    sim: Simulator, venue: PolymarketLiveVenue
) -> None:
    market = next(
        m
        for m in sim.markets()
        if not m.neg_risk and sim.book(m.yes)[0][0][0] + m.tick_size < sim.book(m.yes)[1][0][0]
    )
    inside = sim.book(market.yes)[0][0][0] + market.tick_size
    executor = Executor(venue)
    result = await executor.place(market, "rest-1", inside)
    assert isinstance(result, SubmitAccepted), result
    assert await executor.reconcile() == []  # resting, as we think; no positions yet

    # Away: someone sells into our bid.
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as http:
        counterparty = Trader(http, COUNTERPARTY_KEY)
        await counterparty.login()
        hit = await counterparty.request(
            "POST", "/order", counterparty.order(market.yes, side="SELL", price=inside, size=SIZE)
        )
        assert hit.json()["status"] == "matched", hit.text

    events = await executor.reconcile()

    [fill] = [e for e in events if isinstance(e, Fill)]
    [snapshot] = [e for e in events if isinstance(e, PositionSnapshot)]
    assert (fill.order_id, fill.price, fill.size, fill.liquidity, fill.fee) == (
        "rest-1",
        inside,
        SIZE,
        "maker",
        0,
    )
    assert statuses(events) == [("rest-1", "filled", SIZE)]
    assert (snapshot.strategy_id, snapshot.asset_id, snapshot.provisional_size) == (
        "mm",
        market.yes,
        SIZE,
    )


# -- the dead-man switch -----------------------------------------------------------------------
class DrivenClock:
    """The simulator's manual clock, moved by the test; a sleep ends when it reaches it."""

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock
        self._sleepers: list[tuple[float, asyncio.Future[None], asyncio.Task[Any] | None]] = []

    def monotonic(self) -> float:
        return self._clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        wake = asyncio.get_running_loop().create_future()
        entry = (self.monotonic() + seconds, wake, asyncio.current_task())
        self._sleepers.append(entry)
        try:
            await wake
        finally:
            self._sleepers.remove(entry)

    def sleeps_in(self, task: asyncio.Task[Any]) -> bool:
        return any(sleeper is task for _, _, sleeper in self._sleepers)

    def advance(self, seconds: float) -> None:
        self._clock.advance(seconds)
        for due, wake, _ in self._sleepers:
            if due <= self.monotonic() and not wake.done():
                wake.set_result(None)


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a condition the heartbeat loop reaches over real HTTP, within a generous bound."""
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 - state spread over several objects
            await asyncio.sleep(0.005)


async def test_heartbeats_keep_an_order_alive_and_stopping_them_gets_it_canceled(
    sim: Simulator, sim_clock: ManualClock, venue: PolymarketLiveVenue
) -> None:
    market = binary(sim)
    [placed] = await venue.submit([order(market, price=passive_bid(sim, market), size=SIZE)])
    assert isinstance(placed, SubmitAccepted), placed
    clock = DrivenClock(sim_clock)
    lost: list[str] = []
    heartbeat = Heartbeat(
        venue, 0.4, clock, lost.append, lambda _: None, deadline_s=HEARTBEAT_TIMEOUT_S
    )
    loop = asyncio.create_task(heartbeat.run())
    heartbeat.arm()  # an order is live

    def beaten(count: int) -> Callable[[], bool]:
        """``count`` heartbeats accepted and the loop pausing before the next."""
        return lambda: heartbeat.accepted == count and clock.sleeps_in(loop)

    for beat in range(1, 7):  # 2.4 s of venue time, four times its timeout
        await until(beaten(beat))
        clock.advance(0.4)
        await sim.trading.next_sweep()  # the dead-man switch has looked at the new time
    await until(beaten(7))
    assert [o.venue_order_id for o in await venue.open_orders()] == [placed.venue_order_id]
    assert heartbeat.healthy
    assert lost == []

    loop.cancel()  # the executor died: no more heartbeats
    with pytest.raises(asyncio.CancelledError):
        await loop
    clock.advance(HEARTBEAT_TIMEOUT_S)
    await sim.trading.next_sweep()

    assert await venue.open_orders() == []
    assert sim.trading.matching.orders[placed.venue_order_id].status == "CANCELED"
