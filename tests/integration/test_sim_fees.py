"""Taker fees on the simulator: advertised per market, charged by the venue's rule (VENUE.md
§6.5): ``fee = C x rate x (p(1-p))^exponent``, takers only, in shares on a BUY and in pUSD on
a SELL, to 5 decimals. The expected fees are computed here in decimals, independently of
``polybus.common.fees``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import ROUND_CEILING, Decimal

import httpx
import pytest

from polybus.common.money import MICROS
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.integration.test_sim_support import Trader

KEY = "0x" + "c3" * 32
RATE = Decimal("0.07")


@pytest.fixture(params=[1, 2], ids=["exponent-1", "exponent-2"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=5, binary_markets=2, neg_risk_events=0, flow=False, connect_bus=False,
        taker_fee_bps=700, taker_fee_exponent=request.param,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


def expected_fee(side: str, price: int, size: int, exponent: int) -> int:
    """The venue's fee in micro-units, from the published formula in decimal arithmetic."""
    p = Decimal(price) / MICROS
    shares = Decimal(size) / MICROS
    value = shares * RATE * (p * (1 - p)) ** exponent
    charged = value / p if side == "BUY" else value  # shares of a BUY, pUSD of a SELL
    rounded = charged.quantize(Decimal("0.00001"), rounding=ROUND_CEILING)
    return int(rounded * MICROS)


async def balances(trader: Trader, token_id: str) -> tuple[int, int]:
    collateral = await trader.request("GET", "/balance-allowance")
    shares = await trader.request(
        "GET", "/balance-allowance", asset_type="CONDITIONAL", token_id=token_id
    )
    return int(collateral.json()["balance"]), int(shares.json()["balance"])


async def test_the_market_advertises_its_fee_schedule(sim: Simulator) -> None:
    market = sim.markets()[0]
    exponent = sim.settings.taker_fee_exponent
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as http:
        clob_market = await http.get(f"/clob-markets/{market.condition_id}")
        gamma = (await http.get("/markets", params={"condition_ids": market.condition_id})).json()
    # An exact JSON number, not 0.07000000001.
    assert f'"fd":{{"r":0.07,"e":{exponent},"to":true}}' in clob_market.text
    assert gamma[0]["feeSchedule"]["exponent"] == exponent
    assert gamma[0]["feesEnabled"] is True


@pytest.mark.parametrize("side", ["BUY", "SELL"])
async def test_a_taker_pays_the_venues_fee_in_shares_on_buy_and_pusd_on_sell(
    sim: Simulator, side: str
) -> None:
    market = sim.markets()[0]
    exponent = sim.settings.taker_fee_exponent
    bids, asks = sim.book(market.yes)
    price = asks[0][0] if side == "BUY" else bids[0][0]
    size = 7 * MICROS
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as http:
        trader = Trader(http, KEY)
        await trader.login()
        collateral_before, shares_before = await balances(trader, market.yes)
        response = await trader.request(
            "POST", "/order", trader.order(market.yes, side=side, price=price, size=size)
        )
        [trade_id] = response.json()["tradeIDs"]
        trade = (await trader.request("GET", "/data/trades", id=trade_id)).json()["data"][0]
        collateral_after, shares_after = await balances(trader, market.yes)
    fee = expected_fee(side, price, size, exponent)
    assert fee > 0
    assert (trade["fee_rate_bps"], trade["price"], trade["size"]) == (
        "700",
        str(Decimal(price) / MICROS),
        "7",
    )
    cost = size * price // MICROS
    if side == "BUY":
        assert collateral_before - collateral_after == cost
        assert shares_after - shares_before == size - fee
    else:
        assert collateral_after - collateral_before == cost - fee
        assert shares_before - shares_after == size
