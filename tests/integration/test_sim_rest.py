"""The simulator's CLOB market-data REST and Gamma, over HTTP with a plain httpx client."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from polybus.common.money import MICROS, parse_price, parse_size
from polybus.common.polymarket.book_hash import book_hash
from polybus.common.polymarket.rest import PolymarketOrderBookSummary
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0,
        seed=5,
        binary_markets=6,
        neg_risk_events=2,
        outcomes_per_event=3,
        flow=False,
        connect_bus=False,
    )
    async with Simulator(settings) as simulator:
        yield simulator


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as client:
        yield client


async def test_book_is_the_summary_with_a_valid_hash(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    market = sim.markets()[0]
    response = await http.get("/book", params={"token_id": market.no})
    assert response.status_code == 200
    summary = msgspec.json.decode(response.content, type=PolymarketOrderBookSummary)
    assert list(response.json()) == [
        "market", "asset_id", "timestamp", "hash", "bids", "asks",
        "min_order_size", "tick_size", "neg_risk", "last_trade_price",
    ]  # fmt: skip
    bids, asks = sim.book(market.no)
    assert [(parse_price(lv.price), parse_size(lv.size)) for lv in summary.bids] == bids[::-1]
    assert [(parse_price(lv.price), parse_size(lv.size)) for lv in summary.asks] == asks[::-1]
    assert summary.hash == book_hash(
        market=summary.market,
        asset_id=summary.asset_id,
        timestamp=summary.timestamp,
        bids=[(lv.price, lv.size) for lv in summary.bids],
        asks=[(lv.price, lv.size) for lv in summary.asks],
        min_order_size=summary.min_order_size,
        tick_size=summary.tick_size,
        neg_risk=summary.neg_risk,
        last_trade_price=summary.last_trade_price,
    )


@pytest.mark.parametrize(
    ("token_id", "status", "error"),
    [
        ("", 400, "Invalid token id"),
        ("abc", 400, "Invalid token id"),
        ("123", 404, "No orderbook exists for the requested token id"),
    ],
)
async def test_book_errors_are_the_venues(
    http: httpx.AsyncClient, token_id: str, status: int, error: str
) -> None:
    response = await http.get("/book", params={"token_id": token_id})
    assert (response.status_code, response.json()) == (status, {"error": error})


async def test_books_prices_midpoints_and_spreads(sim: Simulator, http: httpx.AsyncClient) -> None:
    market = sim.markets()[1]
    books = await http.post("/books", json=[{"token_id": market.yes}, {"token_id": market.no}])
    assert [b["asset_id"] for b in books.json()] == [market.yes, market.no]
    bids, asks = sim.book(market.yes)
    best_bid, best_ask = bids[0][0], asks[0][0]
    buy = await http.get("/price", params={"token_id": market.yes, "side": "BUY"})
    sell = await http.get("/price", params={"token_id": market.yes, "side": "SELL"})
    assert parse_price(buy.json()["price"]) == best_bid
    assert parse_price(sell.json()["price"]) == best_ask
    mid = await http.get("/midpoint", params={"token_id": market.yes})
    assert parse_price(mid.json()["mid"]) == (best_bid + best_ask) // 2
    spread = await http.get("/spread", params={"token_id": market.yes})
    assert parse_price(spread.json()["spread"]) == best_ask - best_bid
    prices = await http.post("/prices", json=[{"token_id": market.no, "side": "BUY"}])
    assert parse_price(prices.json()[market.no]["BUY"]) == MICROS - best_ask
    midpoints = await http.post("/midpoints", json=[{"token_id": market.no}])
    assert parse_price(midpoints.json()[market.no]) == MICROS - (best_bid + best_ask) // 2
    bad = await http.post("/books", content=b"not json")
    assert (bad.status_code, bad.json()) == (400, {"error": "Invalid payload"})


async def test_market_parameters(sim: Simulator, http: httpx.AsyncClient) -> None:
    neg_risk = next(m for m in sim.markets() if m.neg_risk)
    tick = await http.get("/tick-size", params={"token_id": neg_risk.yes})
    assert tick.json() == {"minimum_tick_size": neg_risk.tick_size / MICROS}
    assert (await http.get("/neg-risk", params={"token_id": neg_risk.yes})).json() == {
        "neg_risk": True
    }
    compact = (await http.get(f"/clob-markets/{neg_risk.condition_id}")).json()
    assert compact["nr"] is True
    assert [t["t"] for t in compact["t"]] == [neg_risk.yes, neg_risk.no]
    assert compact["mos"] == 5
    by_token = (await http.get(f"/markets-by-token/{neg_risk.no}")).json()
    assert by_token["condition_id"] == neg_risk.condition_id
    assert (await http.get("/version")).json() == {"version": 2}
    assert abs((await http.get("/time")).json() - time.time()) < 5


async def test_gamma_markets_have_the_fields_polybus_reads(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    response = await http.get("/markets", params={"active": "true", "closed": "false"})
    markets = response.json()
    assert len(markets) == len(sim.markets())
    gamma = markets[0]
    first = sim.markets()[0]
    assert gamma["conditionId"] == first.condition_id
    assert json.loads(gamma["clobTokenIds"]) == [first.yes, first.no]
    assert json.loads(gamma["outcomes"]) == ["Yes", "No"]
    assert gamma["orderMinSize"] == 5
    assert gamma["orderPriceMinTickSize"] == first.tick_size / MICROS
    for key in (
        "negRisk",
        "active",
        "closed",
        "endDate",
        "volumeNum",
        "liquidityNum",
        "feesEnabled",
    ):
        assert key in gamma
    by_condition = await http.get("/markets", params={"condition_ids": first.condition_id})
    assert [m["id"] for m in by_condition.json()] == [first.gamma_id]
    by_token = await http.get("/markets", params={"clob_token_ids": first.no})
    assert [m["conditionId"] for m in by_token.json()] == [first.condition_id]
    ranked = (await http.get("/markets", params={"order": "volume", "limit": 3})).json()
    volumes = [m["volumeNum"] for m in ranked]
    assert volumes == sorted(volumes, reverse=True)
    assert len(ranked) == 3


async def test_gamma_events_embed_neg_risk_outcomes(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    events = (await http.get("/events", params={"active": "true", "closed": "false"})).json()
    neg_risk = [e for e in events if e["negRisk"]]
    assert len(neg_risk) == 2
    event = neg_risk[0]
    assert event["enableNegRisk"] is True
    assert len(event["markets"]) == 3
    assert {m["negRiskMarketID"] for m in event["markets"]} == {event["negRiskMarketID"]}
    one = (await http.get(f"/events/{event['id']}")).json()
    assert one["id"] == event["id"]


async def test_clob_markets_page_with_a_cursor(sim: Simulator, http: httpx.AsyncClient) -> None:
    page = (await http.get("/markets", params={"next_cursor": "MA=="})).json()
    assert page["next_cursor"] == "LTE="
    assert [m["condition_id"] for m in page["data"]] == [m.condition_id for m in sim.markets()]
    assert page["data"][0]["tokens"][0]["token_id"] == sim.markets()[0].yes


async def test_a_429_burst_carries_retry_after(sim: Simulator, http: httpx.AsyncClient) -> None:
    token = sim.asset_ids()[0]
    sim.faults.rate_limit_burst(count=2, retry_after_s=3)
    statuses = [(await http.get("/book", params={"token_id": token})) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "3"
    assert "error" in statuses[0].json()


async def test_slow_responses_are_held(sim: Simulator, http: httpx.AsyncClient) -> None:
    token = sim.asset_ids()[0]
    sim.faults.slow_responses(300, count=1)
    started = time.monotonic()
    slow = await http.get("/book", params={"token_id": token})
    held = time.monotonic() - started
    assert slow.status_code == 200
    assert held >= 0.3
    assert sim.faults.status()["slow_response_ms"] == 0  # used up


async def test_admin_faults_endpoint_switches_the_same_faults(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    response = await http.post("/admin/faults/rate_limit", json={"count": 1, "retry_after_s": 2})
    assert response.status_code == 200
    limited = await http.get("/book", params={"token_id": sim.asset_ids()[0]})
    assert limited.status_code == 429
    typo = await http.post("/admin/faults/rate_limit", json={"cnt": 1})
    assert typo.status_code == 400
    assert "cnt" in typo.json()["error"]
    unknown = await http.post("/admin/faults/nope", json={})
    assert unknown.status_code == 404
    book = (await http.get("/admin/book", params={"asset_id": sim.asset_ids()[0]})).json()
    assert [tuple(level) for level in book["bids"]] == sim.book(sim.asset_ids()[0])[0]
