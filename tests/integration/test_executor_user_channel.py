"""The live adapter's pushed reports from the simulator's user WebSocket: an order of ours placed
through the adapter and crossed by another trader arrives as order updates and as a fill in
each settlement status; a forced disconnect yields a gap and the stream goes on; the API
secret and passphrase appear in no log line, even at DEBUG."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
import pytest
from eth_account import Account

from polybus.common.config import Secret
from polybus.common.money import MICROS
from polybus.executor.live.adapter import PolymarketLiveVenue
from polybus.executor.live.client import LiveAccount, create_client, private_environment
from polybus.executor.live.user_channel import UserChannelSettings
from polybus.executor.venue import (
    ReportsGap,
    SubmitAccepted,
    VenueOrder,
    VenueOrderUpdate,
    VenueReport,
    VenueTrade,
)
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket
from tests.integration.test_sim_support import Trader

OUR_KEY = "0x" + "d4" * 32
OTHER_KEY = "0x" + "e5" * 32
DEADLINE_S = 10.0
R = TypeVar("R", bound=VenueReport)


class Reports:
    """The adapter's reports, read by a task into a list; :meth:`next` waits for one."""

    def __init__(self, venue: PolymarketLiveVenue) -> None:
        self.seen: list[VenueReport] = []
        self._position = 0
        self._arrived = asyncio.Condition()
        self._venue = venue

    async def run(self) -> None:
        async for report in self._venue.reports():
            async with self._arrived:
                self.seen.append(report)
                self._arrived.notify_all()

    async def next(self, kind: type[R], where: Callable[[R], bool] = lambda _: True) -> R:
        """The next report (after the last one returned) of ``kind`` that satisfies
        ``where``."""
        async with asyncio.timeout(DEADLINE_S), self._arrived:
            while True:
                while self._position < len(self.seen):
                    report = self.seen[self._position]
                    self._position += 1
                    if isinstance(report, kind) and where(report):
                        return report
                await self._arrived.wait()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=31, binary_markets=3, neg_risk_events=0, flow=False, connect_bus=False,
        settlement_mined_ms=20, settlement_confirmed_ms=20,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


@pytest.fixture
async def venue(sim: Simulator) -> AsyncIterator[PolymarketLiveVenue]:
    account = LiveAccount(
        private_key=Secret(OUR_KEY),
        wallet=Account.from_key(OUR_KEY).address,
        signature_type="EOA",
    )
    client = await create_client(account, private_environment(clob_url=sim.http_url))
    adapter = PolymarketLiveVenue(
        client,
        user_channel=UserChannelSettings(
            url=sim.user_ws_url, reconnect_initial_s=0.05, reconnect_max_s=0.5
        ),
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def reports(venue: PolymarketLiveVenue) -> AsyncIterator[Reports]:
    reader = Reports(venue)
    task = asyncio.create_task(reader.run())
    await reader.next(ReportsGap)  # subscribed: the venue answered after our auth frame
    yield reader
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def other_trader(sim: Simulator) -> AsyncIterator[Trader]:
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=DEADLINE_S) as http:
        trader = Trader(http, OTHER_KEY)
        await trader.login()
        yield trader


def market_with_room(sim: Simulator) -> SimMarket:
    """A market whose spread has a free tick inside, for a resting bid of ours to lead."""
    return next(
        m
        for m in sim.markets()
        if sim.book(m.yes)[0][0][0] + m.tick_size < sim.book(m.yes)[1][0][0]
    )


async def rest_a_bid(venue: PolymarketLiveVenue, sim: Simulator, market: SimMarket) -> Any:
    price = sim.book(market.yes)[0][0][0] + market.tick_size
    [placed] = await venue.submit(
        [
            VenueOrder(
                client_order_id="intent-rest",
                condition_id=market.condition_id,
                asset_id=market.yes,
                side="BUY",
                price=price,
                size=12 * MICROS,
                tick_size=market.tick_size,
            )
        ]
    )
    assert isinstance(placed, SubmitAccepted), placed
    assert placed.venue_status == "live"
    return placed, price


async def hit(trader: Trader, market: SimMarket, price: int, size: int) -> None:
    answer = await trader.request(
        "POST", "/order", trader.order(market.yes, side="SELL", price=price, size=size)
    )
    assert answer.json().get("status") == "matched", answer.text


async def test_a_fill_at_the_venue_arrives_as_order_updates_and_a_fill_in_each_status(
    sim: Simulator, venue: PolymarketLiveVenue, reports: Reports, other_trader: Trader
) -> None:
    market = market_with_room(sim)
    placed, price = await rest_a_bid(venue, sim, market)
    ours = placed.venue_order_id

    live = await reports.next(VenueOrderUpdate, lambda u: u.venue_order_id == ours)
    assert (live.status, live.size_matched) == ("live", 0)
    await hit(other_trader, market, price, 5 * MICROS)

    partial = await reports.next(VenueOrderUpdate, lambda u: u.venue_order_id == ours)
    assert (partial.status, partial.size_matched) == ("partially_filled", 5 * MICROS)
    statuses = []
    while "CONFIRMED" not in statuses:
        fill = await reports.next(VenueTrade, lambda t: t.venue_order_id == ours)
        assert (fill.liquidity, fill.side, fill.price, fill.size) == (
            "maker",
            "BUY",
            price,
            5 * MICROS,
        )
        assert fill.condition_id == market.condition_id
        assert fill.asset_id == market.yes
        statuses.append(fill.status)
    assert statuses == ["MATCHED", "MINED", "CONFIRMED"]

    # the same fill as reconciliation reads it over REST
    [from_rest] = [t for t in await venue.trades() if t.venue_order_id == ours]
    assert (from_rest.trade_id, from_rest.status) == (fill.trade_id, "CONFIRMED")


async def test_a_forced_disconnect_yields_a_gap_and_the_stream_goes_on(
    sim: Simulator, venue: PolymarketLiveVenue, reports: Reports, other_trader: Trader
) -> None:
    market = market_with_room(sim)
    placed, price = await rest_a_bid(venue, sim, market)
    await reports.next(VenueOrderUpdate, lambda u: u.venue_order_id == placed.venue_order_id)
    before_disconnect_ns = time.time_ns()
    assert sim.faults.disconnect(channel="user")

    gap = await reports.next(ReportsGap)
    assert gap.since_ns <= before_disconnect_ns
    assert gap.reason.startswith("reconnected")

    # nothing is lost after the gap: the next fill arrives on the new socket
    await hit(other_trader, market, price, 5 * MICROS)
    fill = await reports.next(VenueTrade, lambda t: t.venue_order_id == placed.venue_order_id)
    assert (fill.status, fill.size) == ("MATCHED", 5 * MICROS)
    # and what the gap asks for is there to read: the order rests with its fill
    [resting] = await venue.open_orders()
    assert (resting.venue_order_id, resting.size_matched) == (placed.venue_order_id, 5 * MICROS)


async def test_no_secret_reaches_a_log_line_even_at_debug(
    sim: Simulator,
    venue: PolymarketLiveVenue,
    other_trader: Trader,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    credentials = venue.client.credentials
    secrets = [credentials.secret, credentials.passphrase, OUR_KEY, OUR_KEY.removeprefix("0x")]
    with caplog.at_level(logging.DEBUG):
        reader = Reports(venue)
        task = asyncio.create_task(reader.run())
        await reader.next(ReportsGap)
        market = market_with_room(sim)
        placed, price = await rest_a_bid(venue, sim, market)
        await hit(other_trader, market, price, 5 * MICROS)
        await reader.next(VenueTrade, lambda t: t.venue_order_id == placed.venue_order_id)
        sim.faults.disconnect(channel="user")
        await reader.next(ReportsGap)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    captured = capsys.readouterr()
    output = caplog.text + captured.out + captured.err
    assert "user_channel" in output or caplog.records  # something was logged to look at
    # websockets elides a long frame in the middle, so its DEBUG dump of the authentication
    # frame would show a secret's last characters: look for the frame and for fragments too.
    assert '"auth"' not in output
    for secret in secrets:
        assert secret not in output
        assert secret[-8:] not in output
        assert secret[:8] not in output
