"""The simulator's market channel over a real socket, seen by a plain websockets client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websockets

from polybus.common.polymarket.market_channel import (
    PolymarketBook,
    PolymarketMarketEvent,
)
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.integration.test_sim_support import market_client

event_decoder = msgspec.json.Decoder(PolymarketMarketEvent)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0,
        seed=7,
        binary_markets=8,
        neg_risk_events=1,
        outcomes_per_event=3,
        changes_per_second=400,
        subscribe_timeout_s=0.5,
        connect_bus=False,
    )
    async with Simulator(settings) as simulator:
        yield simulator


async def test_subscribe_sends_an_initial_dump_as_an_array_of_books(sim: Simulator) -> None:
    assets = sim.asset_ids()[:3]
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe(assets)
        frame = json.loads(await client.recv_frame())
    assert isinstance(frame, list)
    assert [book["asset_id"] for book in frame] == assets
    for book in frame:
        decoded = event_decoder.decode(json.dumps(book))
        assert isinstance(decoded, PolymarketBook)
        assert decoded.tick_size
        assert decoded.last_trade_price


async def test_ping_is_answered_with_pong(sim: Simulator) -> None:
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe([])
        await client.ws.send("PING")
        assert await client.recv_frame() == "PONG"


async def test_a_socket_that_never_subscribes_is_closed(sim: Simulator) -> None:
    async with websockets.connect(sim.market_ws_url) as ws:
        await ws.send("PING")
        assert await ws.recv() == "PONG"
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()


async def test_dynamic_subscribe_and_unsubscribe(sim: Simulator) -> None:
    first, second = sim.asset_ids()[0], sim.asset_ids()[2]
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe([first])
        await client.recv_frame()
        await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": [second]}))
        added = await client.until(lambda e: e["event_type"] == "book" and e["asset_id"] == second)
        assert added["tick_size"]
        await client.ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": [first]}))
        await client.sync()
        await sim.pause_flow()
        await client.sync()
        # Flow on the unsubscribed market no longer reaches us; on the subscribed one it does.
        book, _ = sim.exchange.tokens[first]
        other, _ = sim.exchange.tokens[second]
        with sim.exchange.batch():
            sim.exchange.add_liquidity(book, "BUY", book.tick_size, 7_000_000, 0)
            sim.exchange.add_liquidity(other, "BUY", other.tick_size, 7_000_000, 0)
        await client.sync()
    markets = {e["market"] for e in client.events[-2:] if e["event_type"] == "price_change"}
    assert markets == {other.condition_id}


async def test_the_replica_equals_the_simulator_at_quiescence(sim: Simulator) -> None:
    assets = sim.asset_ids()
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe(assets)
        # Let the flow run until it has traded (trades re-send books mid-stream).
        await client.until(lambda e: e["event_type"] == "last_trade_price", timeout=20)
        await sim.pause_flow()
        await sim.flush()
        await client.sync()
    assert client.books.keys() == set(assets)
    for asset in assets:
        assert client.view(asset) == sim.book(asset)
    changes = [e for e in client.events if e["event_type"] == "price_change"]
    assert changes, "the flow produced no price changes"


async def test_custom_features_only_reach_sockets_that_enable_them(sim: Simulator) -> None:
    asset = sim.asset_ids()[0]
    async with (
        market_client(sim.market_ws_url) as plain,
        market_client(sim.market_ws_url) as custom,
    ):
        await plain.subscribe([asset])
        await custom.subscribe([asset], custom_feature_enabled=True)
        await plain.recv_frame()
        await custom.recv_frame()
        await sim.pause_flow()
        created = sim.exchange.create_market()
        resolved = sim.exchange.resolve_market(sim.markets()[0].condition_id)
        book, _ = sim.exchange.tokens[asset]
        best_bid = book.best_bid()
        assert best_bid is not None
        with sim.exchange.batch():
            sim.exchange.add_liquidity(book, "BUY", best_bid + book.tick_size, 9_000_000, 0)
        new_market = await custom.until(lambda e: e["event_type"] == "new_market")
        assert new_market["market"] == created.condition_id
        resolution = await custom.until(lambda e: e["event_type"] == "market_resolved")
        assert resolution["winning_asset_id"] == resolved.winner
        top = await custom.until(lambda e: e["event_type"] == "best_bid_ask")
        assert top["best_bid"] == custom.best(asset)[0]
        await plain.sync()
    for event in (new_market, resolution, top):
        event_decoder.decode(json.dumps(event))
    kinds = {e["event_type"] for e in plain.events}
    assert kinds.isdisjoint({"new_market", "market_resolved", "best_bid_ask"})


async def test_a_stalled_socket_answers_ping_but_gets_no_data(sim: Simulator) -> None:
    asset = sim.asset_ids()[0]
    book, _ = sim.exchange.tokens[asset]
    await sim.pause_flow()
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe([asset])
        await client.recv_frame()
        assert sim.faults.stall()
        received = len(client.events)
        with sim.exchange.batch():
            sim.exchange.add_liquidity(book, "BUY", book.tick_size, 3_000_000, 0)
        await client.sync()  # PONG still comes...
        assert len(client.events) == received  # ...the data does not
        sim.faults.unstall()
        with sim.exchange.batch():
            sim.exchange.add_liquidity(book, "BUY", book.tick_size, 4_000_000, 0)
        change = await client.until(lambda e: e["event_type"] == "price_change")
    assert change["price_changes"][0]["asset_id"] == asset


async def test_an_abrupt_disconnect_has_no_close_frame(sim: Simulator) -> None:
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe(sim.asset_ids()[:1])
        await client.recv_frame()
        assert sim.faults.disconnect()
        async with asyncio.timeout(5):
            await client.ws.wait_closed()
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await client.ws.recv()
    assert closed.value.rcvd is None  # no close frame: the TCP connection just went away


async def test_a_dropped_price_change_is_never_sent(sim: Simulator) -> None:
    asset = sim.asset_ids()[0]
    book, _ = sim.exchange.tokens[asset]
    await sim.pause_flow()
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe([asset])
        await client.recv_frame()
        sim.faults.drop_next_price_change(asset)
        # Two levels: a later absolute size at the same level would heal the gap.
        for ticks in (1, 2):
            with sim.exchange.batch():
                sim.exchange.add_liquidity(book, "BUY", ticks * book.tick_size, 11_000_000, 0)
        await client.sync()
    changes = [e for e in client.events if e["event_type"] == "price_change"]
    assert len(changes) == 1
    # The replica missed the first change: it now disagrees with the simulator.
    assert client.view(asset) != sim.book(asset)


async def test_a_crossed_burst_is_visible_in_best_prices(sim: Simulator) -> None:
    market = sim.markets()[0]
    await sim.pause_flow()
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe([market.yes])
        await client.recv_frame()
        sim.faults.crossed_burst(market.condition_id, duration_ms=100)
        crossed = await client.until(
            lambda e: (
                e["event_type"] == "price_change"
                and any(
                    float(x["best_ask"]) < float(x["best_bid"])
                    for x in e["price_changes"]
                    if x["asset_id"] == market.yes
                )
            )
        )
        # ...and it uncrosses by itself.
        uncrossed = await client.until(
            lambda e: (
                e["event_type"] == "price_change"
                and all(
                    float(x["best_ask"]) > float(x["best_bid"])
                    for x in e["price_changes"]
                    if x["asset_id"] == market.yes
                )
            )
        )
    assert int(uncrossed["timestamp"]) > int(crossed["timestamp"])


@pytest.mark.parametrize("kind", ["malformed", "unknown"])
async def test_a_bad_element_inside_an_array_sits_next_to_a_valid_book(
    sim: Simulator, kind: Any
) -> None:
    asset = sim.asset_ids()[0]
    await sim.pause_flow()
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe([asset])
        await client.recv_frame()
        assert sim.faults.inject_frame(kind)
        raw = await client.recv_frame()
    elements = json.loads(raw)
    assert isinstance(elements, list)
    outcomes = []
    for element in elements:
        try:
            outcomes.append(type(event_decoder.decode(json.dumps(element))).__name__)
        except msgspec.ValidationError:
            outcomes.append("invalid")
    assert outcomes == ["invalid", "PolymarketBook"]


async def test_a_tick_change_fault_sends_tick_size_change_for_both_tokens(
    sim: Simulator,
) -> None:
    market = sim.markets()[0]
    new_tick = 1_000 if market.tick_size != 1_000 else 10_000
    async with market_client(sim.market_ws_url) as client:
        await client.subscribe([market.yes, market.no])
        await client.recv_frame()
        sim.faults.change_tick(market.condition_id, new_tick)
        changes = [
            await client.until(
                lambda e, a=asset: e["event_type"] == "tick_size_change" and e["asset_id"] == a
            )
            for asset in (market.yes, market.no)
        ]
    assert {c["new_tick_size"] for c in changes} == {"0.001" if new_tick == 1_000 else "0.01"}
    assert sim.markets()[0].tick_size == new_tick


BURST = (
    Path(__file__).resolve().parents[1]
    / "resources"
    / "polymarket"
    / "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"
)


async def test_capture_replay_serves_frames_verbatim(tmp_path: Path) -> None:
    events = json.loads(BURST.read_text())
    texts = [json.dumps(event, separators=(",", ":")) for event in events[:5]]
    capture = tmp_path / "capture.jsonl"
    lines = [texts[0]]
    lines += [
        json.dumps({"recv_ns": 1_000_000_000 + i * 50_000_000, "frame": text})
        for i, text in enumerate(texts[1:])
    ]
    capture.write_text("\n".join(lines) + "\n")
    settings = SimSettings(
        port=0,
        seed=1,
        binary_markets=1,
        neg_risk_events=0,
        capture_file=str(capture),
        connect_bus=False,
    )
    async with Simulator(settings) as sim, market_client(sim.market_ws_url) as client:
        await client.subscribe(["anything"])
        started = asyncio.get_running_loop().time()
        received = [await client.recv_frame() for _ in texts]
        elapsed = asyncio.get_running_loop().time() - started
    assert received == texts
    # Paced as recorded: the last frame came 150 ms after the first wrapped one.
    assert elapsed >= 0.15
    fast = SimSettings(
        port=0,
        seed=1,
        binary_markets=1,
        neg_risk_events=0,
        capture_file=str(capture),
        capture_pace="max",
        connect_bus=False,
    )
    async with Simulator(fast) as sim, market_client(sim.market_ws_url) as client:
        await client.subscribe([])
        assert [await client.recv_frame() for _ in texts] == texts


async def test_a_neg_risk_mispricing_makes_the_yes_asks_sum_below_one(sim: Simulator) -> None:
    from polybus.common.money import MICROS, parse_price

    await sim.pause_flow()
    event = next(e for e in sim.exchange.events.values() if e.neg_risk)
    yes = [sim.exchange.markets[cid].info.yes for cid in event.condition_ids]

    def asks_sum(client: Any) -> int:
        return sum(parse_price(client.best(asset)[1]) for asset in yes)

    async with market_client(sim.market_ws_url) as client:
        await client.subscribe(yes)
        await client.recv_frame()
        before = asks_sum(client)
        start = len(client.events)
        injected = sim.inject_mispricing(event_id=event.id, edge=30_000, duration_ms=200)
        assert injected
        await client.until(lambda e: e["event_type"] == "price_change")
        await client.sync()
        during = asks_sum(client)
        # Every outcome's book changed, under one timestamp: the whole set is one batch (a
        # strategy that waits for all legs to change together sees the mispricing whole).
        changed = {
            (entry["asset_id"], change["timestamp"])
            for change in client.events[start:]
            if change["event_type"] == "price_change"
            for entry in change["price_changes"]
            if entry["asset_id"] in yes
        }
        assert {asset for asset, _ in changed} == set(yes)
        assert len({timestamp for _, timestamp in changed}) == 1
        # One set of the new liquidity is as many shares of every leg as a marketable order
        # (1 pUSD or more) must buy of the cheapest.
        assert {item["asset_id"] for item in injected} == set(yes)
        cheapest = min(item["price"] for item in injected)
        assert all(cheapest * item["size"] >= MICROS * MICROS for item in injected)
        # ...and it goes away by itself.
        async with asyncio.timeout(5):
            while asks_sum(client) != before:
                await client.recv_frame()
    assert before >= MICROS
    assert during < MICROS
