"""Market selection: Gamma's objects as MarketInfo, explicit lists, discovery and its filters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from structlog.testing import capture_logs

from polybus.ingest.config import IngestSettings
from polybus.ingest.gamma import GammaClient, GammaMarket
from polybus.ingest.markets import MarketSelector, market_info, tradable
from polybus.ingest.ws import subscribe_frames, unsubscribe_frames

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "polymarket"


def recorded_market() -> dict[str, Any]:
    market: dict[str, Any] = json.loads(
        (RESOURCES / "nautilus_gamma_market_btc5m.json").read_bytes()
    )
    return market


def test_a_recorded_gamma_market_becomes_market_info() -> None:
    market = msgspec.convert(recorded_market(), GammaMarket)
    info = market_info(market, now_ns=1)
    assert tradable(market)
    assert info.condition_id == recorded_market()["conditionId"]
    assert [o.outcome for o in info.outcomes] == ["Up", "Down"]
    assert info.outcomes[0].token_id.startswith("10423989803880713605")
    assert info.tick_size == 10_000
    assert info.min_order_size == 5_000_000
    assert info.end_date_ns == 1_773_307_500 * 10**9  # 2026-03-12T09:25:00Z
    assert info.volume_24h == 9_999_997
    assert info.liquidity == 20_328_374_700
    assert not info.neg_risk
    # Same facts, same id: a re-publication dedups.
    assert market_info(market, now_ns=2).event_id == info.event_id


def gamma_market(index: int, **overrides: Any) -> dict[str, Any]:
    market = {
        "id": str(index),
        "question": f"q{index}",
        "conditionId": f"0x{index:064x}",
        "slug": f"market-{index}",
        "outcomes": '["Yes", "No"]',
        "clobTokenIds": json.dumps([f"{index}1", f"{index}2"]),
        "active": True,
        "closed": False,
        "enableOrderBook": True,
        "orderPriceMinTickSize": 0.01,
        "orderMinSize": 5,
        "volume24hr": 1000 - index,
        "liquidityNum": index,
        "endDate": "2030-01-01T00:00:00Z",
    }
    market.update(overrides)
    return market


class FakeGamma:
    """A Gamma double: id filters and paging only (no active/closed/order filters), so the
    selector must filter and rank by itself."""

    def __init__(self, markets: list[dict[str, Any]]) -> None:
        self.markets = markets
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = request.url.params
        markets = [
            m
            for m in self.markets
            if (
                not params.get_list("condition_ids")
                or m["conditionId"] in params.get_list("condition_ids")
            )
            and (not params.get_list("slug") or m["slug"] in params.get_list("slug"))
            and (
                not params.get_list("clob_token_ids")
                or set(json.loads(m["clobTokenIds"])) & set(params.get_list("clob_token_ids"))
            )
        ]
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", 100))
        return httpx.Response(200, json=markets[offset : offset + limit])


async def select(settings: IngestSettings, markets: list[dict[str, Any]]) -> list[str]:
    gamma = FakeGamma(markets)
    async with httpx.AsyncClient(transport=httpx.MockTransport(gamma.handler)) as http:
        chosen = await MarketSelector(settings, GammaClient(http, "http://gamma")).select()
    return [info.slug for info in chosen]


async def test_discovery_ranks_by_volume_and_keeps_the_top_n() -> None:
    markets = [gamma_market(i) for i in range(30)]
    settings = IngestSettings(discover_top_n=5, discover_page_size=7)
    assert await select(settings, markets) == [f"market-{i}" for i in range(5)]


async def test_discovery_by_liquidity_and_tags_and_end_dates() -> None:
    markets = [
        gamma_market(1, tags=[{"slug": "crypto"}]),
        gamma_market(2, tags=[{"slug": "politics"}]),
        gamma_market(3, events=[{"id": "e", "tags": [{"label": "Crypto"}]}]),
        gamma_market(4, tags=[{"slug": "crypto"}], endDate="2000-01-01T00:00:00Z"),
    ]
    settings = IngestSettings(
        discover_rank_by="liquidity", discover_tags=("crypto",), discover_end_after_days=1
    )
    assert await select(settings, markets) == ["market-3", "market-1"]


async def test_closed_or_bookless_markets_are_never_selected() -> None:
    markets = [
        gamma_market(1, closed=True),
        gamma_market(2, enableOrderBook=False),
        gamma_market(3, acceptingOrders=False),
        gamma_market(4, clobTokenIds="[]"),
        gamma_market(5),
    ]
    assert await select(IngestSettings(), markets) == ["market-5"]


async def test_explicit_lists_come_first_and_discovery_can_be_off() -> None:
    markets = [gamma_market(i) for i in range(10)]
    settings = IngestSettings(
        discover=False,
        condition_ids=(f"0x{7:064x}",),
        slugs=("market-3",),
        token_ids=("52",),
    )
    assert sorted(await select(settings, markets)) == ["market-3", "market-5", "market-7"]


async def test_neg_risk_markets_carry_their_event_id_for_partitioning() -> None:
    markets = [gamma_market(1, negRisk=True, events=[{"id": "900", "negRiskMarketID": "0xabc"}])]
    gamma = FakeGamma(markets)
    async with httpx.AsyncClient(transport=httpx.MockTransport(gamma.handler)) as http:
        [info] = await MarketSelector(IngestSettings(), GammaClient(http, "http://g")).select()
    assert info.neg_risk
    assert info.neg_risk_market_id == "0xabc"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("orderPriceMinTickSize", 0.0000001, "tick size"),  # finer than a micro-unit
        ("orderPriceMinTickSize", 0.02, "tick size"),  # exact, but not a venue tick size
        ("orderMinSize", 5.0000001, "orderMinSize 5.0000001"),
        ("feeSchedule", {"rate": 0.07000001, "exponent": 1}, "feeSchedule.rate 0.07000001"),
    ],
)
async def test_a_market_whose_book_facts_are_not_exact_is_refused_loudly(
    field: str, value: Any, named: str
) -> None:
    markets = [gamma_market(1, **{field: value}), gamma_market(2)]
    with capture_logs() as logs:
        selected = await select(IngestSettings(), markets)
    assert selected == ["market-2"]
    [refusal] = [entry for entry in logs if entry["event"] == "markets.refused"]
    assert refusal["log_level"] == "warning"
    assert refusal["condition_id"] == f"0x{1:064x}"
    assert named in refusal["error"]


def test_volume_and_liquidity_are_rounded_toward_zero() -> None:
    market = msgspec.json.decode(
        json.dumps(gamma_market(1, volume24hr=1000.1234567, liquidityNum=0.0000009)),
        type=GammaMarket,
    )
    info = market_info(market, now_ns=1)
    assert (info.volume_24h, info.liquidity) == (1_000_123_456, 0)


def test_subscribe_frames_are_chunked_and_ask_for_the_initial_dump() -> None:
    ids = [str(i) for i in range(250)]
    frames = [json.loads(frame) for frame in subscribe_frames(ids, 100, first=True)]
    assert [len(f["assets_ids"]) for f in frames] == [100, 100, 50]
    assert frames[0] == {
        "assets_ids": ids[:100],
        "type": "market",
        "initial_dump": True,
        "level": 2,
        "custom_feature_enabled": True,
    }
    assert frames[1]["operation"] == "subscribe"
    assert frames[1]["initial_dump"] is True
    assert [json.loads(f) for f in unsubscribe_frames(ids[:3], 2)] == [
        {"operation": "unsubscribe", "assets_ids": ["0", "1"]},
        {"operation": "unsubscribe", "assets_ids": ["2"]},
    ]
