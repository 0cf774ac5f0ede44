"""Orders of every signature type, signed by the official SDK, verified by the simulator's own
code on both exchange versions: CTF markets (CTFExchangeV2, EIP-712 domain "2", token ids)
and Protocol V2 markets (ExchangeV3, domain "3", position ids) — VENUE.md §2.1-2.2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from eth_account import Account
from polymarket import AsyncSecureClient
from polymarket._internal.wallet import (
    derive_beacon_deposit_wallet_address,
    derive_proxy_wallet_address,
    derive_safe_wallet_address,
)
from polymarket.environments import PRODUCTION
from polymarket.errors import RequestRejectedError

from polybus.common.money import MICROS
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket
from tests.integration.test_sim_sdk import sim_environment

PRIVATE_KEY = "0x" + "6e" * 32
OWNER = Account.from_key(PRIVATE_KEY).address
_DERIVATION = PRODUCTION._config.wallet_derivation
WALLETS = {
    0: OWNER,
    1: derive_proxy_wallet_address(OWNER, _DERIVATION),
    2: derive_safe_wallet_address(OWNER, _DERIVATION),
    3: derive_beacon_deposit_wallet_address(OWNER, _DERIVATION),
}
"""The funder of each signature type, derived by the SDK from the owner."""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0, seed=4, binary_markets=2, neg_risk_events=1, outcomes_per_event=2,
        protocol_v2_markets=2, flow=False, connect_bus=False,
    )  # fmt: skip
    async with Simulator(settings) as simulator:
        yield simulator


def market_of(sim: Simulator, protocol_v2: bool) -> SimMarket:
    return next(m for m in sim.markets() if m.protocol_v2 == protocol_v2 and not m.neg_risk)


async def client_for(sim: Simulator, signature_type: int) -> AsyncSecureClient:
    wallet = WALLETS[signature_type]
    if signature_type:
        sim.trading.wallets.deploy(address=wallet, owner=OWNER, signature_type=signature_type)
    return await AsyncSecureClient.create(
        private_key=PRIVATE_KEY, wallet=wallet, environment=sim_environment(sim)
    )


async def test_protocol_v2_markets_are_described_as_the_venue_does(sim: Simulator) -> None:
    v2 = market_of(sim, protocol_v2=True)
    ctf = market_of(sim, protocol_v2=False)
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as http:
        gamma = (await http.get("/markets", params={"condition_ids": v2.condition_id})).json()
        gamma_ctf = (await http.get("/markets", params={"condition_ids": ctf.condition_id})).json()
        by_token = (await http.get(f"/markets-by-token/{v2.yes}")).json()
    assert (gamma[0]["version"], gamma[0]["positionIds"]) == ("v2", [v2.yes, v2.no])
    assert gamma[0]["clobTokenIds"] == "[]"
    assert gamma_ctf[0]["version"] == "v1"
    assert "positionIds" not in gamma_ctf[0]
    assert by_token["condition_id"] == v2.condition_id
    # A position id is the condition's 31-byte market id and the outcome index.
    assert int(v2.no) == int(v2.condition_id[:-2], 16) << 8 | 1


@pytest.mark.parametrize("protocol_v2", [False, True], ids=["ctf-domain-2", "v2-domain-3"])
@pytest.mark.parametrize("signature_type", [0, 1, 2, 3], ids=["eoa", "proxy", "safe", "1271"])
async def test_an_sdk_signed_order_of_every_signature_type_is_verified_and_rests(
    sim: Simulator, signature_type: int, protocol_v2: bool
) -> None:
    market = market_of(sim, protocol_v2)
    client = await client_for(sim, signature_type)
    try:
        bids, _ = sim.book(market.yes)
        price = bids[0][0] - 2 * market.tick_size
        signed = await client.create_limit_order(
            asset_id=market.yes, price=str(Decimal(price) / MICROS), size="10", side="BUY"
        )
        assert signed.signature_type == signature_type
        accepted = await client.post_order(signed)
        assert accepted.ok, accepted
        order = sim.trading.matching.orders[accepted.order_id]
        assert (order.status, order.maker_address) == ("LIVE", WALLETS[signature_type].lower())
        fetched = await client.get_order(order_id=accepted.order_id)
        assert fetched.original_size == Decimal(10)
    finally:
        await client.close()


@pytest.mark.parametrize("protocol_v2", [False, True], ids=["ctf-domain-2", "v2-domain-3"])
@pytest.mark.parametrize("signature_type", [0, 3], ids=["eoa", "1271"])
async def test_an_order_signed_in_the_other_exchange_domain_is_refused(
    sim: Simulator, signature_type: int, protocol_v2: bool
) -> None:
    """The SDK signs for the exchange the asset id implies; were the market listed on the
    other exchange version, the same signature must not verify there."""
    market = market_of(sim, protocol_v2)
    client = await client_for(sim, signature_type)
    try:
        price = sim.book(market.yes)[0][0][0] - 2 * market.tick_size
        signed = await client.create_limit_order(
            asset_id=market.yes, price=str(Decimal(price) / MICROS), size="10", side="BUY"
        )
        book, _ = sim.exchange.tokens[market.yes]
        book.protocol_v2 = not protocol_v2
        with pytest.raises(RequestRejectedError, match="invalid order signature"):
            await client.post_order(signed)
    finally:
        await client.close()
    assert sim.trading.matching.orders == {}


async def test_a_proxy_order_for_a_wallet_the_signer_does_not_own_is_refused(
    sim: Simulator,
) -> None:
    market = market_of(sim, protocol_v2=False)
    client = await client_for(sim, 1)
    try:
        # The wallet now belongs to someone else on chain.
        sim.trading.wallets.deploy(address=WALLETS[1], owner="0x" + "11" * 20, signature_type=1)
        price = sim.book(market.yes)[0][0][0] - 2 * market.tick_size
        signed = await client.create_limit_order(
            asset_id=market.yes, price=str(Decimal(price) / MICROS), size="10", side="BUY"
        )
        with pytest.raises(RequestRejectedError, match="maker address not allowed"):
            await client.post_order(signed)
    finally:
        await client.close()
