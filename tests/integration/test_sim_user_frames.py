"""The simulator's user-channel frames against the venue's verbatim examples (VENUE.md §4.4),
field by field: the same keys in the same order, numbers as strings where the venue writes
strings, for order PLACEMENT / UPDATE / CANCELLATION and for trades in every settlement status,
seen as taker and as maker."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from polybus.common.money import MICROS
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.integration.test_sim_support import Trader, UserClient, user_client
from tests.unit.test_polymarket_wire import USER_ORDER, USER_TRADE

KEY_MAKER = "0x" + "f6" * 32
KEY_TAKER = "0x" + "a7" * 32
ORDER_EXAMPLE = json.loads(USER_ORDER)
TRADE_EXAMPLE = json.loads(USER_TRADE)
SETTLEMENT_STATUSES = {"MATCHED", "MINED", "CONFIRMED", "RETRYING", "FAILED"}


def shape(value: Any) -> str:
    """What kind of JSON value the venue puts in a field."""
    if isinstance(value, str):
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return "decimal string"
        if value.startswith("0x"):
            return "hex string"
        return "empty string" if value == "" else "text"
    return type(value).__name__


def assert_like(event: dict[str, Any], example: dict[str, Any], varies: set[str]) -> None:
    """Same keys in the same order; each value of the example's kind (``varies``: fields whose
    kind legitimately depends on the state, e.g. a hash that exists only once mined)."""
    assert list(event) == list(example)
    for key, value in example.items():
        if key not in varies:
            assert shape(event[key]) == shape(value), (key, event[key], value)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=21, binary_markets=3, neg_risk_events=0, flow=False, connect_bus=False,
        settlement_mined_ms=20, settlement_confirmed_ms=20,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


async def until_settled(user: UserClient) -> None:
    """Until the user saw both trades end: one FAILED, one CONFIRMED."""

    def settled(event: dict[str, Any]) -> bool:
        ends = {e["status"] for e in user.events if e["event_type"] == "trade"}
        return {"FAILED", "CONFIRMED"} <= ends

    await user.until(settled)


async def test_user_channel_frames_match_the_venues_examples(sim: Simulator) -> None:
    market = next(
        m
        for m in sim.markets()
        if sim.book(m.yes)[0][0][0] + m.tick_size < sim.book(m.yes)[1][0][0]
    )
    price = sim.book(market.yes)[0][0][0] + market.tick_size
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as http:
        maker, taker = Trader(http, KEY_MAKER), Trader(http, KEY_TAKER)
        await maker.login()
        await taker.login()
        async with (
            user_client(sim.user_ws_url, maker.creds) as maker_events,
            user_client(sim.user_ws_url, taker.creds) as taker_events,
        ):
            resting = await maker.request(
                "POST", "/order", maker.order(market.yes, side="BUY", price=price, size=12 * MICROS)
            )
            order_id = resting.json()["orderID"]
            sim.faults.retry_next_settlements(1, then="FAILED")
            for size in (5, 6):
                hit = taker.order(market.yes, side="SELL", price=price, size=size * MICROS)
                answer = (await taker.request("POST", "/order", hit)).json()
                assert answer.get("status") == "matched", answer
            await maker.request("DELETE", "/order", {"orderID": order_id})
            await until_settled(maker_events)
            await until_settled(taker_events)
            events = [*maker_events.events, *taker_events.events]

    orders = [e for e in events if e["event_type"] == "order"]
    trades = [e for e in events if e["event_type"] == "trade"]
    resting = [o for o in orders if o["id"] == order_id]
    assert [o["type"] for o in resting] == ["PLACEMENT", "UPDATE", "UPDATE", "CANCELLATION"]
    assert [o["status"] for o in orders if o["id"] != order_id] == ["MATCHED", "MATCHED"]
    for order in orders:
        assert_like(order, ORDER_EXAMPLE, varies={"associate_trades"})
        assert order["associate_trades"] is None or all(
            isinstance(t, str) for t in order["associate_trades"]
        )
    assert [(o["size_matched"], o["status"]) for o in resting] == [
        ("0", "LIVE"),
        ("5", "LIVE"),
        ("11", "LIVE"),
        ("11", "CANCELED"),
    ]
    for trade in trades:
        assert_like(trade, TRADE_EXAMPLE, varies={"transaction_hash"})
        assert shape(trade["transaction_hash"]) == (
            "empty string" if trade["status"] == "MATCHED" else "hex string"
        )
        for entry in trade["maker_orders"]:
            assert list(entry) == list(TRADE_EXAMPLE["maker_orders"][0])
    for side in ("MAKER", "TAKER"):
        seen = {t["status"] for t in trades if t["trader_side"] == side}
        assert seen == SETTLEMENT_STATUSES, side
    maker_trade = next(t for t in trades if t["trader_side"] == "MAKER")
    assert maker_trade["maker_orders"][0]["order_id"] == order_id
    assert maker_trade["side"] == "SELL"  # the taker's side
