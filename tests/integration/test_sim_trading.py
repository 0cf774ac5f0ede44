"""Trading on the simulator over real HTTP/WebSocket: auth, order checks, matching,
settlement, heartbeats, restrictions and rate limits, each with the venue's answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from polybus.common.money import MICROS
from polybus.sim.clock import ManualClock
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.integration.test_sim_support import Trader, market_client, user_client

KEY_A = "0x" + "a1" * 32
KEY_B = "0x" + "b2" * 32


@pytest.fixture
def clock() -> ManualClock:
    """The venue's timers (restart windows, heartbeats, expirations) move only when a test
    says so; settlement delays still run on real time."""
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0,
        seed=9,
        binary_markets=4,
        neg_risk_events=1,
        outcomes_per_event=3,
        flow=False,
        connect_bus=False,
        heartbeat_timeout_s=0.6,
        settlement_mined_ms=50,
        settlement_confirmed_ms=50,
        post_only_after_restart_s=30,
    )
    async with Simulator(settings, clock=clock) as simulator:
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


def binary(sim: Simulator) -> Any:
    market = next(m for m in sim.markets() if not m.neg_risk and m.tick_size == 10_000)
    return market


def passive_bid(sim: Simulator, asset: str) -> int:
    """A price below the best bid, on the tick grid: rests without trading."""
    bids, _ = sim.book(asset)
    tick = next(m.tick_size for m in sim.markets() if asset in (m.yes, m.no))
    return max(bids[0][0] - 2 * tick, tick)


async def post(trader: Trader, body: Any) -> httpx.Response:
    response: httpx.Response = await trader.request("POST", "/order", body)
    return response


# -- authentication ---------------------------------------------------------------------------
async def test_api_keys_are_created_once_and_derived_again(
    http: httpx.AsyncClient, trader: Trader
) -> None:
    again = await http.post("/auth/api-key", headers=trader.l1_headers())
    assert (again.status_code, again.json()) == (400, {"error": "Could not create api key"})
    derived = await http.get("/auth/derive-api-key", headers=trader.l1_headers())
    assert derived.json() == trader.creds
    other_nonce = await http.get("/auth/derive-api-key", headers=trader.l1_headers(nonce=1))
    assert other_nonce.json()["apiKey"] != trader.creds["apiKey"]


async def test_l1_headers_signed_by_someone_else_are_refused(
    http: httpx.AsyncClient, trader: Trader
) -> None:
    headers = trader.l1_headers()
    headers["POLY_ADDRESS"] = Trader(http, KEY_B).address
    response = await http.post("/auth/api-key", headers=headers)
    assert (response.status_code, response.json()) == (
        401,
        {"error": "Invalid L1 Request headers"},
    )


async def test_a_wrong_hmac_is_refused(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    body = trader.order(market.yes, side="BUY", price=passive_bid(sim, market.yes), size=5 * MICROS)
    text = json.dumps(body, separators=(",", ":"))
    headers = trader.l2_headers("POST", "/order", text + " ")  # signs a different body
    response = await trader.http.post("/order", content=text.encode(), headers=headers)
    assert (response.status_code, response.json()) == (
        401,
        {"error": "Unauthorized/Invalid api key"},
    )
    assert sim.trading.matching.orders == {}


# -- order checks -----------------------------------------------------------------------------
async def test_a_tampered_signature_is_rejected(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    body = trader.order(market.yes, side="BUY", price=passive_bid(sim, market.yes), size=5 * MICROS)
    body["order"]["makerAmount"] = str(int(body["order"]["makerAmount"]) + 10_000)
    response = await post(trader, body)
    assert (response.status_code, response.json()) == (400, {"error": "invalid order signature"})


async def test_an_order_signed_for_the_wrong_exchange_is_rejected(
    sim: Simulator, trader: Trader
) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    body = trader.order(market.yes, side="BUY", price=price, size=5 * MICROS, neg_risk=True)
    response = await post(trader, body)
    assert (response.status_code, response.json()) == (400, {"error": "invalid order signature"})


async def test_an_off_tick_price_is_rejected(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes) + 5_000  # half a 0.01 tick
    response = await post(
        trader, trader.order(market.yes, side="BUY", price=price, size=10 * MICROS)
    )
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith("order 0x")
    assert message.endswith(
        f"is invalid. Price ({price / MICROS:g}) breaks minimum tick size rule: 0.01"
    )


async def test_a_market_buy_priced_off_the_grid_by_its_amounts_takes_the_book(
    sim: Simulator, trader: Trader
) -> None:
    # The official SDK's market BUY spends whole cents and floors the shares: the ratio of its
    # amounts sits a fraction above the cap (0.4510002 for a 0.451 cap), off the tick grid. A
    # limit order priced so is refused; a FAK takes the book up to the cap on the grid.
    market = binary(sim)
    _, asks = sim.book(market.yes)
    best_ask, depth = asks[0]
    whole = min(5, depth // MICROS)
    spend = whole * best_ask  # whole shares' worth, in micros of pUSD (whole cents)
    shares = whole * MICROS - 7  # a hair fewer shares: the ratio is above the ask
    amounts = (spend, shares)
    limit = trader.order(market.yes, side="BUY", price=0, size=0, amounts=amounts)
    refused = await post(trader, limit)
    assert refused.status_code == 400
    assert "breaks minimum tick size rule" in refused.json()["error"]
    fak = trader.order(market.yes, side="BUY", price=0, size=0, order_type="FAK", amounts=amounts)
    taken = (await post(trader, fak)).json()
    assert (taken["success"], taken["status"]) == (True, "matched"), taken
    # Every share bought, at the ask: no more than the cap on the grid, within the spend.
    assert taken["takingAmount"] == str(shares)
    assert taken["makingAmount"] == str(shares * best_ask // MICROS)


async def test_a_too_small_size_is_rejected(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    response = await post(
        trader, trader.order(market.yes, side="BUY", price=price, size=4 * MICROS)
    )
    assert response.status_code == 400
    assert response.json()["error"].endswith("is invalid. Size (4) lower than the minimum: 5")


async def test_a_post_only_order_that_crosses_is_rejected(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    _, asks = sim.book(market.yes)
    body = trader.order(market.yes, side="BUY", price=asks[0][0], size=5 * MICROS, post_only=True)
    response = await post(trader, body)
    assert response.status_code == 200
    assert response.json()["success"] is False
    assert response.json()["errorMsg"] == "invalid post-only order: order crosses book"
    assert sim.book(market.yes)[1] == asks  # nothing traded


async def test_a_batch_of_sixteen_orders_is_rejected(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    batch = [trader.order(market.yes, side="BUY", price=price, size=5 * MICROS) for _ in range(16)]
    response = await trader.request("POST", "/orders", batch)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "Too many orders in payload, max allowed: 15"},
    )
    ok = await trader.request("POST", "/orders", batch[:15])
    assert [entry["status"] for entry in ok.json()] == ["live"] * 15


async def test_owner_and_signer_must_be_the_api_keys(
    http: httpx.AsyncClient, sim: Simulator, trader: Trader
) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    body = trader.order(market.yes, side="BUY", price=price, size=5 * MICROS)
    body["owner"] = "00000000-0000-4000-8000-000000000001"
    response = await post(trader, body)
    assert response.json() == {"error": "the order owner has to be the owner of the API KEY"}
    stranger = Trader(http, KEY_B)
    stranger.creds = trader.creds  # someone else's key, their own signature
    response = await post(
        stranger, stranger.order(market.yes, side="BUY", price=price, size=5 * MICROS)
    )
    assert response.status_code == 401  # POLY_ADDRESS is not the key's address


async def test_fok_and_fak_that_cannot_fill_are_killed(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    _, asks = sim.book(market.yes)
    best_ask, depth = asks[0]
    too_big = (depth // MICROS + 50) * MICROS
    fok = trader.order(market.yes, side="BUY", price=best_ask, size=too_big, order_type="FOK")
    response = await post(trader, fok)
    assert response.json()["errorMsg"] == (
        "order couldn't be fully filled. FOK orders are fully filled or killed."
    )
    bids, _ = sim.book(market.yes)
    fak = trader.order(market.yes, side="BUY", price=bids[0][0], size=5 * MICROS, order_type="FAK")
    response = await post(trader, fak)
    assert response.json()["errorMsg"].startswith("no orders found to match with FAK order.")


async def test_not_enough_balance_is_rejected(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    huge = (sim.settings.starting_collateral * MICROS // price + 100) * MICROS
    response = await post(trader, trader.order(market.yes, side="BUY", price=price, size=huge))
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "not enough balance / allowance: the balance is not enough -> balance: "
    )


# -- matching, settlement and the user channel -----------------------------------------------
async def test_a_marketable_order_trades_and_settles(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    _, asks = sim.book(market.yes)
    best_ask = asks[0][0]
    async with (
        user_client(sim.user_ws_url, trader.creds) as user,
        market_client(sim.market_ws_url) as feed,
    ):
        await feed.subscribe([market.yes])
        await feed.recv_frame()
        response = await post(
            trader, trader.order(market.yes, side="BUY", price=best_ask, size=5 * MICROS)
        )
        body = response.json()
        assert (body["success"], body["status"]) == (True, "matched")
        [trade_id] = body["tradeIDs"]
        statuses = [
            (await user.until(lambda e, s=s: e["event_type"] == "trade" and e["status"] == s))
            for s in ("MATCHED", "MINED", "CONFIRMED")
        ]
        printed = await feed.until(lambda e: e["event_type"] == "last_trade_price")
    assert {event["id"] for event in statuses} == {trade_id}
    assert statuses[0]["trader_side"] == "TAKER"
    assert statuses[1]["transaction_hash"].startswith("0x")
    assert printed["price"].rstrip("0") == f"{best_ask / MICROS:g}".rstrip("0")
    trades = await trader.request("GET", "/data/trades", id=trade_id)
    assert trades.json()["data"][0]["status"] == "CONFIRMED"


async def test_a_resting_order_fills_when_another_trader_crosses_it(
    http: httpx.AsyncClient, sim: Simulator, trader: Trader
) -> None:
    market = binary(sim)
    bids, asks = sim.book(market.yes)
    tick = market.tick_size
    inside = bids[0][0] + tick
    assert inside < asks[0][0], "the fixture market needs a spread of two ticks or more"
    taker = Trader(http, KEY_B)
    await taker.login()
    async with user_client(sim.user_ws_url, trader.creds, markets=[market.condition_id]) as user:
        rest = await post(
            trader, trader.order(market.yes, side="BUY", price=inside, size=8 * MICROS)
        )
        order_id = rest.json()["orderID"]
        placed = await user.until(lambda e: e["event_type"] == "order")
        assert (placed["type"], placed["status"]) == ("PLACEMENT", "LIVE")
        # The taker sells YES at our bid: our resting order is the maker.
        hit = taker.order(market.yes, side="SELL", price=inside, size=5 * MICROS)
        assert (await post(taker, hit)).json()["status"] == "matched"
        update = await user.until(lambda e: e["event_type"] == "order" and e["type"] == "UPDATE")
        maker_trade = await user.until(lambda e: e["event_type"] == "trade")
    assert (update["id"], update["size_matched"], update["status"]) == (order_id, "5", "LIVE")
    assert maker_trade["trader_side"] == "MAKER"
    assert maker_trade["maker_orders"][0]["order_id"] == order_id
    assert sim.book(market.yes)[0][0] == (inside, 3 * MICROS)


async def test_a_no_buy_rests_on_the_yes_book_as_an_ask(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    bids, _ = sim.book(market.no)
    price = bids[0][0] - market.tick_size
    response = await post(trader, trader.order(market.no, side="BUY", price=price, size=6 * MICROS))
    assert response.json()["status"] == "live"
    yes_asks = dict(sim.book(market.yes)[1])
    assert yes_asks[MICROS - price] >= 6 * MICROS


async def test_an_injected_settlement_failure_ends_failed(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    _, asks = sim.book(market.yes)
    sim.faults.fail_next_settlements(1)
    async with user_client(sim.user_ws_url, trader.creds) as user:
        await post(trader, trader.order(market.yes, side="BUY", price=asks[0][0], size=5 * MICROS))
        failed = await user.until(lambda e: e["event_type"] == "trade" and e["status"] == "FAILED")
    assert failed["status"] == "FAILED"
    account = sim.trading.matching.balances.account(trader.address.lower())
    assert account.collateral == sim.settings.starting_collateral * MICROS  # undone


async def test_a_user_socket_with_bad_credentials_is_closed(sim: Simulator, trader: Trader) -> None:
    async with websockets.connect(sim.user_ws_url) as ws:
        await ws.send(json.dumps({"auth": {**trader.creds, "secret": "AAAA"}, "type": "user"}))
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()


# -- cancels and the dead-man switch ------------------------------------------------------------
async def test_cancels_answer_canceled_and_not_canceled(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    ids = []
    for _ in range(3):
        response = await post(
            trader, trader.order(market.yes, side="BUY", price=price, size=5 * MICROS)
        )
        ids.append(response.json()["orderID"])
    one = await trader.request("DELETE", "/order", {"orderID": ids[0]})
    assert one.json() == {"canceled": [ids[0]], "not_canceled": {}}
    again = await trader.request("DELETE", "/order", {"orderID": ids[0]})
    assert again.json() == {"canceled": [], "not_canceled": {ids[0]: "Order already canceled"}}
    market_cancel = await trader.request(
        "DELETE", "/cancel-market-orders", {"market": market.condition_id}
    )
    assert sorted(market_cancel.json()["canceled"]) == sorted(ids[1:])
    unknown = await trader.request("DELETE", "/orders", ["0x" + "ab" * 32])
    assert unknown.json()["not_canceled"] == {"0x" + "ab" * 32: "Order not found"}
    opened = await trader.request("GET", "/data/orders")
    assert opened.json()["data"] == []


async def test_heartbeat_expiry_cancels_the_keys_orders(
    sim: Simulator, clock: ManualClock, trader: Trader
) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    first = await trader.request("POST", "/v1/heartbeats", {"heartbeat_id": ""})
    heartbeat_id = first.json()["heartbeat_id"]
    stale = await trader.request("POST", "/v1/heartbeats", {"heartbeat_id": "stale"})
    assert stale.status_code == 400
    assert stale.json()["heartbeat_id"] == heartbeat_id
    resting_before = dict(sim.book(market.yes)[0]).get(price, 0)
    async with user_client(sim.user_ws_url, trader.creds) as user:
        response = await post(
            trader, trader.order(market.yes, side="BUY", price=price, size=5 * MICROS)
        )
        order_id = response.json()["orderID"]
        assert dict(sim.book(market.yes)[0])[price] == resting_before + 5 * MICROS
        # No more heartbeats: the dead-man switch fires after heartbeat_timeout_s.
        clock.advance(0.6)
        canceled = await user.until(
            lambda e: e["event_type"] == "order" and e["type"] == "CANCELLATION", timeout=5
        )
    assert canceled["id"] == order_id
    opened = await trader.request("GET", "/data/orders")
    assert opened.json()["data"] == []
    assert dict(sim.book(market.yes)[0]).get(price, 0) == resting_before
    restarted = await trader.request("POST", "/v1/heartbeats", {"heartbeat_id": ""})
    assert restarted.status_code == 200


async def test_heartbeats_keep_orders_alive(
    sim: Simulator, clock: ManualClock, trader: Trader
) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    heartbeat_id = (await trader.request("POST", "/v1/heartbeats", {"heartbeat_id": ""})).json()[
        "heartbeat_id"
    ]
    await post(trader, trader.order(market.yes, side="BUY", price=price, size=5 * MICROS))
    for _ in range(6):  # 2.4 s of heartbeats, four times the 0.6 s timeout
        clock.advance(0.4)
        await sim.trading.next_sweep()  # the dead-man switch has looked at the new time
        reply = await trader.request("POST", "/v1/heartbeats", {"heartbeat_id": heartbeat_id})
        heartbeat_id = reply.json()["heartbeat_id"]
    assert len((await trader.request("GET", "/data/orders")).json()["data"]) == 1


# -- restrictions and rate limits -------------------------------------------------------------
async def test_a_restart_window_answers_425_then_post_only(
    sim: Simulator, clock: ManualClock, trader: Trader
) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    sim.faults.restart(duration_s=0.3, post_only_s=30)
    during = await post(trader, trader.order(market.yes, side="BUY", price=price, size=5 * MICROS))
    assert (during.status_code, during.json()) == (425, {"error": "service not ready"})
    cancel = await trader.request("DELETE", "/cancel-all")
    assert cancel.status_code == 425
    clock.advance(0.35)
    after = await post(trader, trader.order(market.yes, side="BUY", price=price, size=5 * MICROS))
    assert after.status_code == 503
    assert after.json()["code"] == "post_only_mode"
    assert after.json()["error"] == "post-only mode: only post-only orders and cancels are allowed"
    assert int(after.headers["Retry-After"]) > 0
    post_only = trader.order(market.yes, side="BUY", price=price, size=5 * MICROS, post_only=True)
    assert (await post(trader, post_only)).json()["status"] == "live"
    assert (await trader.request("DELETE", "/cancel-all")).status_code == 200


async def test_cancel_only_mode_refuses_orders_but_not_cancels(
    sim: Simulator, trader: Trader
) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    sim.faults.cancel_only(30)
    response = await post(
        trader, trader.order(market.yes, side="BUY", price=price, size=5 * MICROS)
    )
    assert response.status_code == 503
    assert response.json()["error"].startswith("Trading is currently cancel-only.")
    assert (await trader.request("DELETE", "/cancel-all")).status_code == 200


async def test_trading_disabled_refuses_orders_and_cancels(sim: Simulator, trader: Trader) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    sim.faults.trading_disabled(30)
    response = await post(
        trader, trader.order(market.yes, side="BUY", price=price, size=5 * MICROS)
    )
    assert (response.status_code, response.json()) == (
        503,
        {"error": "Trading is currently disabled. Check polymarket.com for updates"},
    )
    assert (await trader.request("DELETE", "/cancel-all")).status_code == 503
    sim.faults.clear()
    assert (await trader.request("DELETE", "/cancel-all")).status_code == 200


async def test_gtd_orders_need_an_expiration_a_minute_ahead(
    sim: Simulator, clock: ManualClock, trader: Trader
) -> None:
    market = binary(sim)
    price = passive_bid(sim, market.yes)
    soon = trader.order(
        market.yes, side="BUY", price=price, size=5 * MICROS, order_type="GTD",
        expiration=int(clock.time()) + 30,
    )  # fmt: skip
    assert (await post(trader, soon)).json() == {"error": "invalid expiration"}
    later = trader.order(
        market.yes, side="BUY", price=price, size=5 * MICROS, order_type="GTD",
        expiration=int(clock.time()) + 120,
    )  # fmt: skip
    assert (await post(trader, later)).json()["status"] == "live"
    gtc_with_expiry = trader.order(
        market.yes, side="BUY", price=price, size=5 * MICROS, expiration=int(clock.time()) + 120
    )
    assert (await post(trader, gtc_with_expiry)).json() == {"error": "invalid expiration"}


async def test_cancel_rate_limits_answer_429_with_retry_after(trader: Trader) -> None:
    ids = [f"0x{i:064x}" for i in range(100)]
    first = await trader.request("DELETE", "/orders", ids)
    assert first.status_code == 200
    assert first.headers["Poly-RateLimit-Tier"] == "standard"
    assert int(first.headers["Poly-RateLimit-Remaining"]) == 20
    second = await trader.request("DELETE", "/orders", ids)
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    too_big = await trader.request("DELETE", "/orders", [f"0x{i:064x}" for i in range(121)])
    assert too_big.status_code == 429  # above the burst: it can never pass, split it
