"""Taker fees on the simulator: advertised per market, charged exactly in integers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from polybus.common.money import MICROS
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.integration.test_sim_support import Trader

KEY = "0x" + "c3" * 32


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=5, binary_markets=2, neg_risk_events=0, flow=False, connect_bus=False,
        taker_fee_bps=700,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


async def test_a_taker_pays_size_times_rate_times_p_times_one_minus_p(sim: Simulator) -> None:
    market = sim.markets()[0]
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as http:
        clob_market = await http.get(f"/clob-markets/{market.condition_id}")
        assert '"fd":{"r":0.07,' in clob_market.text  # an exact JSON number, not 0.07000000001
        trader = Trader(http, KEY)
        await trader.login()
        before = int((await trader.request("GET", "/balance-allowance")).json()["balance"])
        _, asks = sim.book(market.yes)
        price, size = asks[0][0], 5 * MICROS
        response = await trader.request(
            "POST", "/order", trader.order(market.yes, side="BUY", price=price, size=size)
        )
        [trade_id] = response.json()["tradeIDs"]
        trade = (await trader.request("GET", "/data/trades", id=trade_id)).json()["data"][0]
        after = int((await trader.request("GET", "/balance-allowance")).json()["balance"])
    fee = size * 700 * price * (MICROS - price) // (10_000 * MICROS * MICROS)
    assert fee > 0
    assert trade["fee_rate_bps"] == "700"
    assert before - after == size * price // MICROS + fee
