"""The official Polymarket Python SDK (``polymarket-client``, pinned) against the simulator:
derive API credentials, sign and post a limit order, see it rest, cancel it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from eth_account import Account
from polymarket import AsyncSecureClient
from polymarket.environments import PRODUCTION, Environment, _create_environment

from polybus.common.money import MICROS
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator

PRIVATE_KEY = "0x" + "5d" * 32


def sim_environment(sim: Simulator) -> Environment:
    """The SDK has no public way to name a host (VENUE.md §2.3 caveat 3): build a private
    environment. If an SDK upgrade changes this, this is the place that fails."""
    config = dataclasses.replace(
        PRODUCTION._config,
        clob_url=sim.http_url,
        clob_market_ws_url=sim.market_ws_url,
        clob_user_ws_url=sim.user_ws_url,
        relayer_url=sim.http_url,
        gamma_url=sim.http_url,
        data_url=sim.http_url,
        rpc_url=sim.http_url,
    )
    return _create_environment(name="sim", config=config)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=3, binary_markets=3, neg_risk_events=1, flow=False, connect_bus=False
    )
    async with Simulator(settings) as simulator:
        yield simulator


async def test_the_official_sdk_derives_posts_sees_the_order_rest_and_cancels(
    sim: Simulator,
) -> None:
    wallet = Account.from_key(PRIVATE_KEY).address
    environment = sim_environment(sim)
    first = await AsyncSecureClient.create(
        private_key=PRIVATE_KEY, wallet=wallet, environment=environment
    )
    # A second client for the same wallet cannot create the key again: it derives it.
    client = await AsyncSecureClient.create(
        private_key=PRIVATE_KEY, wallet=wallet, environment=environment
    )
    try:
        assert [key.key for key in sim.trading.api_keys.by_key.values()] == [
            sim.trading.api_keys.derive(wallet.lower(), 0).key
        ]
        for market in (sim.markets()[0], next(m for m in sim.markets() if m.neg_risk)):
            bids, _ = sim.book(market.yes)
            price = bids[0][0] - 2 * market.tick_size
            signed = await client.create_limit_order(
                asset_id=market.yes,
                price=str(Decimal(price) / MICROS),
                size="10",
                side="BUY",
            )
            accepted = await client.post_order(signed)
            assert accepted.ok, accepted
            assert accepted.status == "live"
            pages = [page async for page in client.list_open_orders(asset_id=market.yes)]
            [resting] = [order for page in pages for order in page.items]
            assert resting.id == accepted.order_id
            assert resting.original_size == Decimal(10)
            assert dict(sim.book(market.yes)[0])[price] >= 10 * MICROS
            canceled = await client.cancel_order(order_id=accepted.order_id)
            assert canceled.canceled == (accepted.order_id,)
            pages = [page async for page in client.list_open_orders(asset_id=market.yes)]
            assert [order for page in pages for order in page.items] == []
    finally:
        await client.close()
        await first.close()
