"""Settlement and placement faults the executor must survive (VENUE.md §3.1, §3.5, §8, §9
H14): RETRYING then CONFIRMED or FAILED, FAILED undoing the fill for both parties, the taker
delay (``delayed``), and an accepted order whose response is lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from polybus.common.money import MICROS
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket
from tests.integration.test_sim_support import Trader, user_client

KEY_A = "0x" + "d4" * 32
KEY_B = "0x" + "e5" * 32


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=12, binary_markets=3, neg_risk_events=0, flow=False, connect_bus=False,
        settlement_mined_ms=30, settlement_confirmed_ms=30, taker_fee_bps=500,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as client:
        yield client


@pytest.fixture
async def trader(http: httpx.AsyncClient) -> Trader:
    trader = Trader(http, KEY_A)
    await trader.login()
    return trader


def market(sim: Simulator) -> SimMarket:
    return next(m for m in sim.markets() if m.tick_size == 10_000)


def trade_with(status: str) -> Any:
    return lambda event: event["event_type"] == "trade" and event["status"] == status


def holdings(sim: Simulator, trader: Trader, asset_id: str) -> tuple[int, int]:
    balances = sim.trading.matching.balances
    account = balances.account(trader.address.lower())
    return account.collateral, balances.position(account, asset_id)


async def test_a_retried_settlement_goes_retrying_mined_confirmed(
    sim: Simulator, trader: Trader
) -> None:
    target = market(sim)
    best_ask = sim.book(target.yes)[1][0][0]
    sim.faults.retry_next_settlements(1, then="CONFIRMED")
    async with user_client(sim.user_ws_url, trader.creds) as user:
        await trader.request(
            "POST", "/order", trader.order(target.yes, side="BUY", price=best_ask, size=5 * MICROS)
        )
        events = [await user.until(trade_with(s)) for s in ("MATCHED", "RETRYING", "MINED")]
        events.append(await user.until(trade_with("CONFIRMED")))
    assert len({event["id"] for event in events}) == 1
    retrying, mined = events[1], events[2]
    assert retrying["transaction_hash"].startswith("0x")
    assert mined["transaction_hash"] != retrying["transaction_hash"]  # a new transaction


async def test_a_failed_settlement_reverses_the_fill_of_taker_and_maker(
    sim: Simulator, http: httpx.AsyncClient, trader: Trader
) -> None:
    target = next(
        m
        for m in sim.markets()
        if sim.book(m.yes)[0][0][0] + m.tick_size < sim.book(m.yes)[1][0][0]
    )
    inside = sim.book(target.yes)[0][0][0] + target.tick_size
    taker = Trader(http, KEY_B)
    await taker.login()
    maker_before = holdings(sim, trader, target.yes)
    taker_before = holdings(sim, taker, target.yes)
    async with (
        user_client(sim.user_ws_url, trader.creds) as maker_events,
        user_client(sim.user_ws_url, taker.creds) as taker_events,
    ):
        await trader.request(
            "POST", "/order", trader.order(target.yes, side="BUY", price=inside, size=6 * MICROS)
        )
        sim.faults.retry_next_settlements(1, then="FAILED")
        hit = await taker.request(
            "POST", "/order", taker.order(target.yes, side="SELL", price=inside, size=6 * MICROS)
        )
        assert hit.json()["status"] == "matched"
        await taker_events.until(trade_with("RETRYING"))
        # The fill moved shares and collateral (and the taker paid a fee) ...
        assert holdings(sim, taker, target.yes) != taker_before
        assert holdings(sim, trader, target.yes) != maker_before
        failed = await taker_events.until(trade_with("FAILED"))
        maker_failed = await maker_events.until(trade_with("FAILED"))
    # ... and FAILED undid all of it, for both parties.
    assert (failed["trader_side"], maker_failed["trader_side"]) == ("TAKER", "MAKER")
    assert holdings(sim, taker, target.yes) == taker_before
    assert holdings(sim, trader, target.yes) == maker_before
    trades = await taker.request("GET", "/data/trades", id=failed["id"])
    assert trades.json()["data"][0]["status"] == "FAILED"


async def test_a_taker_delay_answers_delayed_then_matches(sim: Simulator, trader: Trader) -> None:
    target = market(sim)
    best_ask = sim.book(target.yes)[1][0][0]
    sim.faults.taker_delay(target.condition_id, delay_ms=150)
    async with (
        httpx.AsyncClient(base_url=sim.http_url) as http,
        user_client(sim.user_ws_url, trader.creds) as user,
    ):
        described = (await http.get(f"/clob-markets/{target.condition_id}")).json()
        response = await trader.request(
            "POST", "/order", trader.order(target.yes, side="BUY", price=best_ask, size=5 * MICROS)
        )
        body = response.json()
        placed = await user.until(lambda e: e["event_type"] == "order")
        listed = await trader.request("GET", "/data/orders", id=body["orderID"])
        assert sim.book(target.yes)[1][0][0] == best_ask  # nothing taken yet
        matched = await user.until(lambda e: e["event_type"] == "order" and e["type"] == "UPDATE")
        trade = await user.until(trade_with("MATCHED"))
    assert described["itode"] is True
    assert (body["success"], body["status"], body["errorMsg"]) == (True, "delayed", "")
    assert (placed["type"], placed["status"]) == ("PLACEMENT", "DELAYED")
    assert listed.json()["data"][0]["status"] == "DELAYED"
    assert (matched["id"], matched["status"], matched["size_matched"]) == (
        body["orderID"],
        "MATCHED",
        "5",
    )
    assert trade["taker_order_id"] == body["orderID"]


async def test_a_delayed_order_can_be_canceled_before_it_matches(
    sim: Simulator, trader: Trader
) -> None:
    target = market(sim)
    asks_before = sim.book(target.yes)[1]
    sim.faults.taker_delay(target.condition_id, delay_ms=60_000)
    body = trader.order(target.yes, side="BUY", price=asks_before[0][0], size=5 * MICROS)
    order_id = (await trader.request("POST", "/order", body)).json()["orderID"]
    canceled = await trader.request("DELETE", "/order", {"orderID": order_id})
    assert canceled.json() == {"canceled": [order_id], "not_canceled": {}}
    assert sim.trading.matching.orders[order_id].status == "CANCELED"
    assert sim.book(target.yes)[1] == asks_before


@pytest.mark.parametrize("mode", ["hold", "drop"])
async def test_an_accepted_order_whose_response_is_lost_exists_once(
    sim: Simulator, trader: Trader, mode: str
) -> None:
    target = market(sim)
    price = sim.book(target.yes)[0][0][0] - 2 * target.tick_size
    body = trader.order(target.yes, side="BUY", price=price, size=5 * MICROS)
    sim.faults.lose_order_responses(1, mode=mode, hold_s=5.0)  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=0.3) as impatient:
        lost = Trader(impatient, KEY_A)
        lost.creds = trader.creds
        with pytest.raises(httpx.TransportError):
            await lost.request("POST", "/order", body)
    # Reconciliation finds the order; posting the same signed order again is refused.
    listed = (await trader.request("GET", "/data/orders", asset_id=target.yes)).json()["data"]
    again = await trader.request("POST", "/order", body)
    assert [order["status"] for order in listed] == ["LIVE"]
    assert again.status_code == 400
    assert "Duplicated" in again.json()["error"]
    assert len(sim.trading.matching.orders) == 1


async def test_the_new_faults_and_wallets_are_switched_over_the_admin_api(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    target = market(sim)
    calls = {
        "retry_settlement": {"count": 2, "then": "FAILED"},
        "taker_delay": {"condition_id": target.condition_id, "delay_ms": 250},
        "lose_order_response": {"count": 1, "mode": "drop"},
    }
    for name, body in calls.items():
        response = await http.post(f"/admin/faults/{name}", json=body)
        assert response.status_code == 200, response.text
    status = (await http.get("/admin/faults")).json()
    wallet, owner = "0x" + "ab" * 20, "0x" + "cd" * 20
    deployed = await http.post(
        "/admin/wallets", json={"address": wallet, "owner": owner, "signature_type": 3}
    )
    bad = await http.post("/admin/faults/retry_settlement", json={"then": "MINED"})
    asked = await http.get("/deployed", params={"address": wallet, "type": "WALLET"})
    as_safe = await http.get("/deployed", params={"address": wallet, "type": "SAFE"})
    assert status["retrying_settlements"] == ["FAILED", "FAILED"]
    assert status["taker_delays_ms"] == {target.condition_id: 250}
    assert status["lost_order_responses"] == 1
    assert deployed.json() == {"address": wallet, "owner": owner, "signature_type": 3}
    assert bad.status_code == 400
    assert (asked.json(), as_safe.json()) == ({"deployed": True}, {"deployed": False})
