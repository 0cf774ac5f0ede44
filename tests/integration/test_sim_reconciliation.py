"""The REST queries reconciliation rests on, through the official SDK (VENUE.md §3.5):
``/data/orders`` (open orders, filters, cursor pages), ``/data/order/{id}`` (any status) and
``/data/trades`` (filters ``id``/``market``/``asset_id``/``after``/``before``, cursor pages)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from eth_account import Account
from polymarket import AsyncSecureClient

from polybus.common.money import MICROS
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket
from tests.integration.test_sim_sdk import sim_environment

PRIVATE_KEY = "0x" + "7f" * 32


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=8, binary_markets=3, neg_risk_events=0, protocol_v2_markets=1,
        flow=False, connect_bus=False, query_page_size=2,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncSecureClient]:
    wallet = Account.from_key(PRIVATE_KEY).address
    client = await AsyncSecureClient.create(
        private_key=PRIVATE_KEY, wallet=wallet, environment=sim_environment(sim)
    )
    try:
        yield client
    finally:
        await client.close()


def text(price: int) -> str:
    return str(Decimal(price) / MICROS)


async def rest(
    client: AsyncSecureClient, sim: Simulator, market: SimMarket, ticks_below: int
) -> str:
    price = sim.book(market.yes)[0][0][0] - ticks_below * market.tick_size
    signed = await client.create_limit_order(
        asset_id=market.yes, price=text(price), size="5", side="BUY"
    )
    accepted = await client.post_order(signed)
    assert accepted.ok, accepted
    return str(accepted.order_id)


async def test_open_orders_are_listed_by_filter_across_cursor_pages(
    sim: Simulator, client: AsyncSecureClient
) -> None:
    first, v2 = sim.markets()[0], next(m for m in sim.markets() if m.protocol_v2)
    on_first = {await rest(client, sim, first, ticks) for ticks in (2, 3, 4)}
    on_v2 = {await rest(client, sim, v2, ticks) for ticks in (2, 3)}
    canceled = await rest(client, sim, first, 5)
    await client.cancel_order(order_id=canceled)

    pages = [page async for page in client.list_open_orders()]
    listed = {order.id for page in pages for order in page.items}
    by_market = [page async for page in client.list_open_orders(market=first.condition_id)]
    by_asset = [page async for page in client.list_open_orders(asset_id=v2.yes)]
    by_id = [page async for page in client.list_open_orders(id=canceled)]

    assert len(pages) == 3  # five open orders, two a page
    assert listed == on_first | on_v2
    assert {order.id for page in by_market for order in page.items} == on_first
    assert {order.id for page in by_asset for order in page.items} == on_v2
    # Filtering by id finds the order whatever its status.
    assert [order.status for page in by_id for order in page.items] == ["CANCELED"]
    fetched = await client.get_order(order_id=canceled)
    assert (fetched.status, fetched.original_size) == ("CANCELED", Decimal(5))


async def test_account_trades_are_listed_by_filter_and_time(
    sim: Simulator, client: AsyncSecureClient
) -> None:
    markets = [m for m in sim.markets() if m.tick_size == 10_000][:2]
    trade_ids: dict[str, list[str]] = {}
    for market in markets:
        best_ask = sim.book(market.yes)[1][0][0]
        for _ in range(2):
            signed = await client.create_limit_order(
                asset_id=market.yes, price=text(best_ask), size="5", side="BUY"
            )
            accepted = await client.post_order(signed)
            assert accepted.ok, accepted
            trade_ids.setdefault(market.condition_id, []).extend(accepted.trade_ids)

    async def listed(**filters: str) -> set[str]:
        pages = [page async for page in client.list_account_trades(**filters)]
        return {trade.id for page in pages for trade in page.items}

    everything = {trade for ids in trade_ids.values() for trade in ids}
    matched_at = max(t.match_time for t in sim.trading.matching.trades.values())
    first = markets[0]
    assert await listed() == everything
    assert await listed(market=first.condition_id) == set(trade_ids[first.condition_id])
    assert await listed(asset_id=first.yes) == set(trade_ids[first.condition_id])
    one = trade_ids[first.condition_id][0]
    assert await listed(id=one) == {one}
    assert await listed(after=str(matched_at - 60)) == everything
    assert await listed(after=str(matched_at + 60)) == set()
    assert await listed(before=str(matched_at + 60)) == everything
    assert await listed(before=str(matched_at - 60)) == set()
    [trade] = [t async for page in client.list_account_trades(id=one) for t in page.items]
    assert (trade.trader_side, trade.size, trade.condition_id) == (
        "TAKER",
        Decimal(5),
        first.condition_id,
    )
