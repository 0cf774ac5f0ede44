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
    # Pre-Protocol V2 objects have no ``version``: a CTF market, signed in domain "2".
    assert "version" not in recorded_market()
    assert info.exchange_version == "2"
    assert (info.neg_risk_augmented, info.neg_risk_market_count) == (False, 0)
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
    selector must filter and rank by itself. ``/events`` answers with ``events`` (by id)."""

    def __init__(
        self, markets: list[dict[str, Any]], events: list[dict[str, Any]] | None = None
    ) -> None:
        self.markets = markets
        self.events = events or []
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = request.url.params
        if request.url.path == "/events":
            ids = params.get_list("id")
            return httpx.Response(200, json=[e for e in self.events if e["id"] in ids])
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


async def select_infos(gamma: FakeGamma, settings: IngestSettings | None = None) -> list[Any]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(gamma.handler)) as http:
        selector = MarketSelector(settings or IngestSettings(), GammaClient(http, "http://gamma"))
        return await selector.select()


async def select(settings: IngestSettings, markets: list[dict[str, Any]]) -> list[str]:
    return [info.slug for info in await select_infos(FakeGamma(markets), settings)]


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
    ("version", "exchange_version", "tokens"),
    [("v1", "2", ["71", "72"]), ("v2", "3", ["p1", "p2"]), (None, "2", ["71", "72"])],
)
def test_the_gamma_version_decides_the_exchange_and_the_id_field(
    version: str | None, exchange_version: str, tokens: list[str]
) -> None:
    # Both id fields present: "choose the ID field by version" (VENUE §5.3).
    fields: dict[str, Any] = {"positionIds": ["p1", "p2"]}
    if version is not None:
        fields["version"] = version
    market = msgspec.convert(gamma_market(7, **fields), GammaMarket)
    info = market_info(market, now_ns=1)
    assert info.exchange_version == exchange_version
    assert [outcome.token_id for outcome in info.outcomes] == tokens


def test_a_protocol_v2_market_without_position_ids_is_not_tradable() -> None:
    market = msgspec.convert(gamma_market(7, version="v2"), GammaMarket)
    assert market.token_ids() == []
    assert not tradable(market)


async def test_a_market_of_an_unknown_exchange_version_is_refused_loudly() -> None:
    markets = [gamma_market(1, version="v3"), gamma_market(2, version="v2", positionIds=["a", "b"])]
    with capture_logs() as logs:
        infos = await select_infos(FakeGamma(markets))
    assert [(info.slug, info.exchange_version) for info in infos] == [("market-2", "3")]
    [refusal] = [entry for entry in logs if entry["event"] == "markets.refused"]
    assert "'v3'" in refusal["error"]


def neg_risk_market(index: int, event: dict[str, Any]) -> dict[str, Any]:
    embedded = {key: event[key] for key in ("id", "negRiskMarketID", "negRiskAugmented")}
    return gamma_market(
        index, negRisk=True, negRiskMarketID=event["negRiskMarketID"], events=[embedded]
    )


async def test_neg_risk_markets_know_their_event_size_and_whether_it_is_augmented() -> None:
    complete = {"id": "900", "negRiskMarketID": "0xa", "negRiskAugmented": False}
    augmented = {"id": "901", "negRiskMarketID": "0xb", "negRiskAugmented": True}
    events = [
        # Three open markets and one that resolved NO (closed): a set of three.
        {**complete, "markets": [{"conditionId": f"c{n}", "closed": n == 3} for n in range(4)]},
        {**augmented, "markets": [{"conditionId": f"d{n}"} for n in range(5)]},
    ]
    markets = [neg_risk_market(1, complete), neg_risk_market(2, augmented), gamma_market(3)]
    gamma = FakeGamma(markets, events)
    infos = {info.slug: info for info in await select_infos(gamma)}
    facts = {
        slug: (info.neg_risk_market_id, info.neg_risk_augmented, info.neg_risk_market_count)
        for slug, info in infos.items()
    }
    assert facts == {
        "market-1": ("0xa", False, 3),
        "market-2": ("0xb", True, 5),
        "market-3": ("", False, 0),
    }
    [lookup] = [r for r in gamma.requests if r.url.path == "/events"]
    assert lookup.url.params.get_list("id") == ["900", "901"]


async def test_event_sizes_stay_unknown_when_gamma_events_fail() -> None:
    event = {"id": "900", "negRiskMarketID": "0xa", "negRiskAugmented": False}
    gamma = FakeGamma([neg_risk_market(1, event)], [{**event, "markets": [{}, {}]}])
    answer = gamma.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events":
            return httpx.Response(503, json={"error": "unavailable"})
        return answer(request)

    gamma.handler = handler  # type: ignore[method-assign]
    with capture_logs() as logs:
        [info] = await select_infos(gamma)
    assert (info.neg_risk, info.neg_risk_market_count) == (True, 0)
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert warnings == ["markets.event_sizes_failed"]


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
