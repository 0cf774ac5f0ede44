"""The live adapter against the simulator's CLOB: the official SDK signs, the simulator verifies
and answers as the venue does. Orders are counted at the simulator; requests at a loopback
proxy in front of it (which can also swallow an answer after forwarding the request).
Protocol V2 markets (domain "3") and smart-contract wallets (signature types 1-3) at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from eth_account import Account
from polymarket._internal.wallet import (
    derive_beacon_deposit_wallet_address,
    derive_proxy_wallet_address,
    derive_safe_wallet_address,
)
from polymarket.environments import PRODUCTION

from polybus.common.config import Secret
from polybus.common.money import MICROS
from polybus.executor.live.adapter import LiveVenueSettings, PolymarketLiveVenue
from polybus.executor.live.client import (
    LiveAccount,
    SignatureType,
    create_client,
    private_environment,
)
from polybus.executor.live.limits import SignerLimits
from polybus.executor.venue import (
    HeartbeatRejected,
    SubmitAccepted,
    SubmitRejected,
    SubmitUnknown,
    VenueOrder,
)
from polybus.sim.clock import ManualClock
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket

PRIVATE_KEY = "0x" + "c3" * 32
OWNER = Account.from_key(PRIVATE_KEY).address
_DERIVATION = PRODUCTION._config.wallet_derivation
WALLETS: dict[SignatureType, tuple[int, str]] = {
    "POLY_PROXY": (1, derive_proxy_wallet_address(OWNER, _DERIVATION)),
    "GNOSIS_SAFE": (2, derive_safe_wallet_address(OWNER, _DERIVATION)),
    "POLY_1271": (3, derive_beacon_deposit_wallet_address(OWNER, _DERIVATION)),
}
"""Each smart-contract wallet type's number and the address the SDK derives for OWNER (the
SDK infers the signature type from it)."""
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}


class RecordingProxy:
    """Forwards every request to the simulator and records it; ``drop`` swallows the answer
    to the next request on a path (the venue got it, we never hear back): ``abort`` closes
    the connection, ``hang`` holds it until the test ends."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self.drops: dict[str, str] = {}
        self.release = asyncio.Event()
        self.url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    def count(self, method: str, path: str) -> int:
        return self.requests.count((method, path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        self.requests.append((request.method, request.path))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            answer_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP_HEADERS | {"content-encoding"}
            }
            status = upstream.status
        drop = self.drops.pop(request.path, "")
        if drop == "hang":
            await self.release.wait()
        elif drop == "abort" and request.transport is not None:
            request.transport.abort()
        return web.Response(body=payload, status=status, headers=answer_headers)

    async def __aenter__(self) -> RecordingProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        assert self._session is not None
        await self._runner.cleanup()
        await self._session.close()


class SharedClock:
    """The adapter's clock is the simulator's manual clock: a backoff sleep moves the venue's
    restart window and our token buckets together, with no real waiting."""

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self._clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._clock.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim_overrides() -> dict[str, Any]:
    """Simulator settings a test changes: ``@pytest.mark.parametrize("sim_overrides", ...)``."""
    return {}


@pytest.fixture
async def sim(sim_clock: ManualClock, sim_overrides: dict[str, Any]) -> AsyncIterator[Simulator]:
    settings = SimSettings(
        port=0,
        seed=11,
        binary_markets=3,
        neg_risk_events=1,
        outcomes_per_event=3,
        flow=False,
        connect_bus=False,
        starting_collateral=1_000,
        post_only_after_restart_s=0,
        settlement_mined_ms=20,
        settlement_confirmed_ms=20,
    )
    settings = msgspec.structs.replace(settings, **sim_overrides)
    async with Simulator(settings, clock=sim_clock) as simulator:
        yield simulator


@pytest.fixture
async def proxy(sim: Simulator) -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy(sim.http_url) as running:
        yield running


@pytest.fixture
def clock(sim_clock: ManualClock) -> SharedClock:
    return SharedClock(sim_clock)


@contextlib.asynccontextmanager
async def live_venue(
    proxy: RecordingProxy,
    clock: SharedClock,
    *,
    wallet: str = OWNER,
    signature_type: SignatureType = "EOA",
) -> AsyncIterator[PolymarketLiveVenue]:
    """The live adapter for OWNER's key trading for ``wallet``, through the proxy."""
    account = LiveAccount(
        private_key=Secret(PRIVATE_KEY), wallet=wallet, signature_type=signature_type
    )
    client = await create_client(account, private_environment(clob_url=proxy.url))
    adapter = PolymarketLiveVenue(
        client,
        limits=SignerLimits("standard", clock),
        clock=clock,
        settings=LiveVenueSettings(request_timeout_s=1.0, retry_budget_s=30.0),
    )
    try:
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture
async def venue(proxy: RecordingProxy, clock: SharedClock) -> AsyncIterator[PolymarketLiveVenue]:
    async with live_venue(proxy, clock) as adapter:
        yield adapter


def binary(sim: Simulator) -> SimMarket:
    return next(m for m in sim.markets() if not m.neg_risk and m.tick_size == 10_000)


def order(market: SimMarket, **fields: Any) -> VenueOrder:
    values: dict[str, Any] = {
        "client_order_id": "intent-1",
        "condition_id": market.condition_id,
        "asset_id": market.yes,
        "side": "BUY",
        "price": 0,
        "size": 10 * MICROS,
        "tick_size": market.tick_size,
        "neg_risk": market.neg_risk,
        "exchange_version": "3" if market.protocol_v2 else "2",
    }
    values.update(fields)
    return VenueOrder(**values)


def protocol_v2(sim: Simulator) -> SimMarket:
    return next(m for m in sim.markets() if m.protocol_v2 and not m.neg_risk)


def bid_size_at(sim: Simulator, market: SimMarket, price: int) -> int:
    bids, _ = sim.book(market.yes)
    return dict(bids).get(price, 0)


def passive_bid(sim: Simulator, market: SimMarket) -> int:
    bids, _ = sim.book(market.yes)
    return max(bids[0][0] - 2 * market.tick_size, market.tick_size)


def best_ask(sim: Simulator, market: SimMarket) -> tuple[int, int]:
    _, asks = sim.book(market.yes)
    return asks[0]


def best_bid(sim: Simulator, market: SimMarket) -> tuple[int, int]:
    bids, _ = sim.book(market.yes)
    return bids[0]


# -- placing ---------------------------------------------------------------------------------
async def test_gtc_post_only_fok_and_fak_orders_are_signed_verified_and_accepted(
    sim: Simulator, venue: PolymarketLiveVenue
) -> None:
    market = binary(sim)
    ask_price, _ = best_ask(sim, market)
    bid_price, _ = best_bid(sim, market)
    results = await venue.submit(
        [
            order(market, client_order_id="gtc", price=passive_bid(sim, market)),
            order(market, client_order_id="post", price=passive_bid(sim, market), post_only=True),
            order(
                market, client_order_id="fok", price=ask_price, size=5 * MICROS, time_in_force="FOK"
            ),
            order(
                market,
                client_order_id="fak",
                side="SELL",
                price=bid_price,
                size=5 * MICROS,
                time_in_force="FAK",
            ),
        ]
    )
    assert [type(r) for r in results] == [SubmitAccepted] * 4, results
    statuses = {r.client_order_id: r.venue_status for r in results if isinstance(r, SubmitAccepted)}
    assert statuses == {"gtc": "live", "post": "live", "fok": "matched", "fak": "matched"}
    venue_ids = {r.venue_order_id for r in results if isinstance(r, SubmitAccepted)}
    assert venue_ids <= set(sim.trading.matching.orders)
    assert len(sim.trading.matching.orders) == 4


async def test_a_gtd_order_expires_one_venue_threshold_after_our_expiry(
    sim: Simulator, venue: PolymarketLiveVenue, sim_clock: ManualClock
) -> None:
    market = binary(sim)
    expires_s = int(sim_clock.time()) + 600
    [result] = await venue.submit(
        [
            order(
                market,
                price=passive_bid(sim, market),
                time_in_force="GTD",
                expires_at_ns=expires_s * 1_000_000_000,
            )
        ]
    )
    assert isinstance(result, SubmitAccepted), result
    [resting] = await venue.open_orders()
    assert resting.expires_at_ns == (expires_s + 60) * 1_000_000_000


async def test_every_rejection_the_simulator_makes_has_its_reason_code(
    sim: Simulator, venue: PolymarketLiveVenue
) -> None:
    market = binary(sim)
    ask_price, ask_size = best_ask(sim, market)
    passive = passive_bid(sim, market)
    cases = {
        # signed on a finer tick than the market's: the venue refuses the grid
        "off_tick": order(market, price=passive + 1_000, tick_size=1_000),
        "below_min_size": order(market, price=passive, size=1 * MICROS),
        "post_only_would_cross": order(market, price=ask_price, post_only=True),
        "fok_not_filled": order(
            market, price=ask_price, size=ask_size + 500 * MICROS, time_in_force="FOK"
        ),
        "not_enough_balance": order(market, price=passive, size=100_000 * MICROS),
        # signed against the neg-risk exchange: the signature does not recover to the signer
        "invalid_signature": order(market, price=passive, neg_risk=True),
    }
    results = await venue.submit(
        [msgspec.structs.replace(case, client_order_id=name) for name, case in cases.items()]
    )
    reasons = {r.client_order_id: r.reason for r in results if isinstance(r, SubmitRejected)}
    assert reasons == {name: name for name in cases}, results
    assert sim.trading.matching.orders == {} or all(
        o.status != "LIVE" for o in sim.trading.matching.orders.values()
    )


async def test_sixteen_orders_go_in_two_posts(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy
) -> None:
    market = binary(sim)
    orders = [
        order(market, client_order_id=f"o{i}", price=passive_bid(sim, market), size=5 * MICROS)
        for i in range(16)
    ]
    results = await venue.submit(orders)
    assert [r.client_order_id for r in results] == [o.client_order_id for o in orders]
    assert all(isinstance(r, SubmitAccepted) for r in results), results
    assert proxy.count("POST", "/orders") == 2
    assert len(sim.trading.matching.orders) == 16


# -- the venue says wait -----------------------------------------------------------------------
async def test_an_engine_restart_is_waited_out_and_the_order_placed_once(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy, clock: SharedClock
) -> None:
    market = binary(sim)
    sim.faults.restart(duration_s=3, post_only_s=0)
    [result] = await venue.submit([order(market, price=passive_bid(sim, market))])
    assert isinstance(result, SubmitAccepted), result
    assert proxy.count("POST", "/orders") >= 2
    assert sum(clock.slept) >= 3
    assert len(sim.trading.matching.orders) == 1


async def test_a_restart_longer_than_the_budget_refuses_without_an_order(
    sim: Simulator, venue: PolymarketLiveVenue
) -> None:
    market = binary(sim)
    sim.faults.restart(duration_s=300, post_only_s=0)
    [result] = await venue.submit([order(market, price=passive_bid(sim, market))])
    assert isinstance(result, SubmitRejected), result
    assert result.reason == "engine_restarting", result
    assert sim.trading.matching.orders == {}


async def test_rate_limit_answers_are_waited_out_per_retry_after(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy, clock: SharedClock
) -> None:
    market = binary(sim)
    sim.faults.rate_limit_burst(count=2, retry_after_s=2)
    [result] = await venue.submit([order(market, price=passive_bid(sim, market))])
    assert isinstance(result, SubmitAccepted), result
    assert proxy.count("POST", "/orders") == 3
    assert len(clock.slept) == 2
    assert all(2 <= s <= 2.5 for s in clock.slept)
    assert len(sim.trading.matching.orders) == 1


async def test_post_only_mode_refuses_takers_keeps_makers_and_stops_asking(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy
) -> None:
    market = binary(sim)
    sim.faults.post_only(duration_s=60)
    [taker] = await venue.submit([order(market, price=passive_bid(sim, market))])
    assert isinstance(taker, SubmitRejected), taker
    assert taker.reason == "post_only_mode", taker
    assert venue.restriction is not None
    assert venue.restriction.mode == "post_only_mode"
    posts = proxy.count("POST", "/orders")
    [again] = await venue.submit(
        [order(market, client_order_id="i2", price=passive_bid(sim, market))]
    )
    assert isinstance(again, SubmitRejected)
    assert again.reason == "post_only_mode"
    assert proxy.count("POST", "/orders") == posts  # refused here, the venue is not asked
    [maker] = await venue.submit(
        [order(market, client_order_id="i3", price=passive_bid(sim, market), post_only=True)]
    )
    assert isinstance(maker, SubmitAccepted), maker


async def test_cancel_only_mode_is_a_reason_and_a_state(
    sim: Simulator, venue: PolymarketLiveVenue
) -> None:
    market = binary(sim)
    sim.faults.cancel_only(duration_s=60)
    [result] = await venue.submit([order(market, price=passive_bid(sim, market), post_only=True)])
    assert isinstance(result, SubmitRejected), result
    assert result.reason == "cancel_only_mode", result
    assert venue.restriction is not None
    assert venue.restriction.mode == "cancel_only_mode"
    assert sim.trading.matching.orders == {}


# -- unknown outcomes --------------------------------------------------------------------------
@pytest.mark.parametrize(("drop", "reason"), [("abort", "transport_error"), ("hang", "timeout")])
async def test_an_answer_lost_after_the_venue_took_the_order_is_unknown_and_not_resent(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy, drop: str, reason: str
) -> None:
    market = binary(sim)
    proxy.drops["/orders"] = drop
    [result] = await venue.submit([order(market, price=passive_bid(sim, market))])
    assert isinstance(result, SubmitUnknown), result
    assert result.reason == reason, result
    assert proxy.count("POST", "/orders") == 1
    assert list(sim.trading.matching.orders) == [result.venue_order_id]
    [resting] = await venue.open_orders()
    assert resting.venue_order_id == result.venue_order_id


# -- cancels, queries, heartbeats --------------------------------------------------------------
async def test_cancels_open_orders_and_trades(sim: Simulator, venue: PolymarketLiveVenue) -> None:
    market = binary(sim)
    ask_price, _ = best_ask(sim, market)
    resting = await venue.submit(
        [
            order(market, client_order_id=f"r{i}", price=passive_bid(sim, market), size=5 * MICROS)
            for i in range(3)
        ]
        + [
            order(
                market,
                client_order_id="take",
                price=ask_price,
                size=5 * MICROS,
                time_in_force="FOK",
            )
        ]
    )
    ids = [r.venue_order_id for r in resting if isinstance(r, SubmitAccepted)]
    assert len(ids) == 4
    opened = await venue.open_orders()
    assert {o.venue_order_id for o in opened} == set(ids[:3])
    assert all(o.original_size == 5 * MICROS and o.size_matched == 0 for o in opened)

    [canceled] = await venue.cancel([ids[0]])
    assert canceled.outcome == "canceled"
    [again] = await venue.cancel([ids[0]])
    assert again.outcome == "not_canceled", again
    assert again.reason == "already_canceled", again
    after_all = await venue.cancel_all()
    assert {r.venue_order_id for r in after_all if r.outcome == "canceled"} == set(ids[1:3])
    assert await venue.open_orders() == []

    trades = await venue.trades()
    [fill] = [t for t in trades if t.venue_order_id == ids[3]]
    assert (fill.side, fill.price, fill.size, fill.liquidity) == (
        "BUY",
        ask_price,
        5 * MICROS,
        "taker",
    )


async def test_the_heartbeat_chain_and_a_stale_id(venue: PolymarketLiveVenue) -> None:
    first = await venue.heartbeat("")
    second = await venue.heartbeat(first)
    assert first
    assert second
    assert second != first
    with pytest.raises(HeartbeatRejected) as rejected:
        await venue.heartbeat(first)
    assert rejected.value.expected_id == second
    assert await venue.heartbeat(rejected.value.expected_id)


# -- exchange versions and wallets ---------------------------------------------------------------
PROTOCOL_V2 = pytest.mark.parametrize("sim_overrides", [{"protocol_v2_markets": 1}], ids=["v2"])


@PROTOCOL_V2
async def test_protocol_v2_markets_are_signed_in_domain_3(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy
) -> None:
    market = protocol_v2(sim)
    book, _ = sim.exchange.tokens[market.yes]
    assert book.protocol_v2  # the simulator verifies its orders against ExchangeV3, domain "3"
    price = passive_bid(sim, market)
    before = bid_size_at(sim, market, price)
    [result] = await venue.submit([order(market, price=price)])
    assert isinstance(result, SubmitAccepted), result
    assert result.venue_status == "live"
    assert list(sim.trading.matching.orders) == [result.venue_order_id]
    resting = sim.trading.matching.orders[result.venue_order_id]
    assert (resting.status, resting.resting, resting.asset_id) == ("LIVE", True, market.yes)
    assert bid_size_at(sim, market, price) == before + 10 * MICROS
    assert proxy.count("POST", "/orders") == 1

    # Our own digest of a domain-"3" order is the venue's id: an unknown outcome is findable.
    proxy.drops["/orders"] = "abort"
    [unknown] = await venue.submit([order(market, client_order_id="lost", price=price)])
    assert isinstance(unknown, SubmitUnknown), unknown
    assert unknown.venue_order_id in sim.trading.matching.orders
    assert unknown.venue_order_id != result.venue_order_id
    assert len(sim.trading.matching.orders) == 2


@PROTOCOL_V2
async def test_a_protocol_v2_order_for_the_wrong_exchange_version_is_refused(
    sim: Simulator, venue: PolymarketLiveVenue, proxy: RecordingProxy
) -> None:
    market = protocol_v2(sim)
    price = passive_bid(sim, market)
    # Market data saying domain "2" for a position id: the adapter refuses it, nothing is sent.
    [mismatch] = await venue.submit([order(market, price=price, exchange_version="2")])
    assert isinstance(mismatch, SubmitRejected), mismatch
    assert mismatch.reason == "exchange_version_mismatch", mismatch
    assert proxy.count("POST", "/orders") == 0
    # The venue listing the market on CTFExchangeV2 instead: our domain-"3" signature does
    # not recover there, and the simulator says so.
    book, _ = sim.exchange.tokens[market.yes]
    book.protocol_v2 = False
    [refused] = await venue.submit([order(market, client_order_id="i2", price=price)])
    assert isinstance(refused, SubmitRejected), refused
    assert refused.reason == "invalid_signature", refused
    assert proxy.count("POST", "/orders") == 1
    assert sim.trading.matching.orders == {}


WALLET_TYPES = pytest.mark.parametrize("signature_type", list(WALLETS))


@WALLET_TYPES
async def test_poly_1271_deposit_wallet_orders_are_accepted(
    sim: Simulator, proxy: RecordingProxy, clock: SharedClock, signature_type: SignatureType
) -> None:
    """Deposit wallets (and proxy wallets and Safes) owned by our key: the SDK signs for the
    wallet (ERC-7739 for POLY_1271), the simulator verifies it and books the wallet as maker."""
    number, wallet = WALLETS[signature_type]
    sim.trading.wallets.deploy(address=wallet, owner=OWNER, signature_type=number)
    market = binary(sim)
    async with live_venue(proxy, clock, wallet=wallet, signature_type=signature_type) as venue:
        [result] = await venue.submit([order(market, price=passive_bid(sim, market))])
    assert isinstance(result, SubmitAccepted), result
    assert list(sim.trading.matching.orders) == [result.venue_order_id]
    placed = sim.trading.matching.orders[result.venue_order_id]
    assert (placed.status, placed.maker_address) == ("LIVE", wallet.lower())


@WALLET_TYPES
async def test_a_wallet_not_deployed_or_owned_by_another_key_is_refused(
    sim: Simulator, proxy: RecordingProxy, clock: SharedClock, signature_type: SignatureType
) -> None:
    """The venue's answers are "the order signer address has to be the address of the API KEY"
    (POLY_1271: the signer is the wallet) and "maker address not allowed" (proxy, Safe): both
    ``signer_mismatch`` (VENUE H20), not a bad signature — the signature itself is fine."""
    number, wallet = WALLETS[signature_type]
    market = binary(sim)
    async with live_venue(proxy, clock, wallet=wallet, signature_type=signature_type) as venue:
        [undeployed] = await venue.submit([order(market, price=passive_bid(sim, market))])
        sim.trading.wallets.deploy(address=wallet, owner="0x" + "11" * 20, signature_type=number)
        [foreign] = await venue.submit(
            [order(market, client_order_id="i2", price=passive_bid(sim, market))]
        )
    for result in (undeployed, foreign):
        assert isinstance(result, SubmitRejected), result
        assert result.reason == "signer_mismatch", result
    assert proxy.count("POST", "/orders") == 2
    assert sim.trading.matching.orders == {}
