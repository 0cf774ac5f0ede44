"""The paper venue over a scripted book view: the live adapter's results, fills, reports."""

from __future__ import annotations

import msgspec
import pytest

from polybus.common.book_view import BookView
from polybus.common.events import MarketInfo, Outcome, Side, TimeInForce
from polybus.common.fees import FeeSchedule, taker_fee, taker_fee_value
from polybus.common.money import MICROS, notional
from polybus.executor.paper import (
    FAK_NOT_FILLED,
    FOK_NOT_FILLED,
    MARKET_NOT_READY,
    POST_ONLY_CROSSES,
    PaperVenue,
    PaperVenueTrade,
    paper_order_id,
)
from polybus.executor.venue import (
    CancelResult,
    HeartbeatRejected,
    SubmitAccepted,
    SubmitRejected,
    Venue,
    VenueOrder,
    VenueOrderUpdate,
    VenueReport,
)
from tests.unit.test_book_view import ASSET, CONDITION, Script

SHARE = MICROS
START_NS = 1_000_000_000_000
CRYPTO = FeeSchedule(rate=70_000, exponent=1)


class ManualClock:
    def __init__(self) -> None:
        self.now = START_NS

    def __call__(self) -> int:
        return self.now


def market(fees: FeeSchedule = CRYPTO) -> MarketInfo:
    return MarketInfo(
        event_id="m",
        ts_event=0,
        ts_init=0,
        condition_id=CONDITION,
        question="?",
        slug="q",
        outcomes=(Outcome(token_id=ASSET, outcome="Yes"),),
        tick_size=10_000,
        min_order_size=5 * SHARE,
        fee_rate=fees.rate,
        fee_exponent=fees.exponent,
    )


class Paper:
    """A paper venue on one live asset: bids 0.40 x 10, 0.39 x 20; asks 0.45 x 10, 0.46 x 20."""

    def __init__(self, fees: FeeSchedule = CRYPTO) -> None:
        self.clock = ManualClock()
        self.script = Script()
        self.venue = PaperVenue(BookView(), self.clock)
        self.venue.apply(market(fees))
        self.venue.apply(
            self.script.snapshot(
                [(400_000, 10 * SHARE), (390_000, 20 * SHARE)],
                [(450_000, 10 * SHARE), (460_000, 20 * SHARE)],
            )
        )

    def trade(self, price: int, size: int, side: Side) -> None:
        self.venue.apply(msgspec.structs.replace(self.script.trade(price, size), side=side))

    def level(self, side: Side, price: int, size: int) -> None:
        self.venue.apply(self.script.delta(side, price, size))


def order(
    client_order_id: str,
    side: Side,
    price: int,
    size: int,
    time_in_force: TimeInForce = "GTC",
    *,
    post_only: bool = False,
    expires_at_ns: int = 0,
) -> VenueOrder:
    return VenueOrder(
        client_order_id=client_order_id,
        condition_id=CONDITION,
        asset_id=ASSET,
        side=side,
        price=price,
        size=size,
        time_in_force=time_in_force,
        post_only=post_only,
        expires_at_ns=expires_at_ns,
        tick_size=10_000,
    )


async def place(paper: Paper, venue_order: VenueOrder) -> SubmitAccepted:
    [result] = await paper.venue.submit([venue_order])
    assert isinstance(result, SubmitAccepted), result
    return result


def update(
    client_order_id: str, status: str, size_matched: int, at_ns: int = START_NS
) -> VenueOrderUpdate:
    return VenueOrderUpdate(
        venue_order_id=paper_order_id(client_order_id),
        condition_id=CONDITION,
        asset_id=ASSET,
        status=status,  # type: ignore[arg-type]
        size_matched=size_matched,
        at_ns=at_ns,
    )


def fills(reports: list[VenueReport]) -> list[tuple[int, int, str]]:
    return [(r.price, r.size, r.liquidity) for r in reports if isinstance(r, PaperVenueTrade)]


# -- the interface -----------------------------------------------------------------------------
async def test_the_paper_venue_is_a_venue_without_restrictions() -> None:
    venue: Venue = Paper().venue
    assert venue.restriction is None


# -- refusals, with the live adapter's reason codes --------------------------------------------
async def test_every_refusal_has_the_live_adapters_reason_code() -> None:
    paper = Paper()
    await place(paper, order("taken", "BUY", 390_000, 5 * SHARE))
    cases = {
        "off_tick": order("off_tick", "BUY", 395_000, 5 * SHARE),
        "below_min_size": order("below_min_size", "BUY", 390_000, 4 * SHARE),
        "post_only_would_cross": order(
            "post_only_would_cross", "BUY", 450_000, 5 * SHARE, post_only=True
        ),
        "post_only_order_type": order(
            "post_only_order_type", "BUY", 450_000, 5 * SHARE, "FOK", post_only=True
        ),
        "fok_not_filled": order("fok_not_filled", "BUY", 450_000, 11 * SHARE, "FOK"),
        "fak_not_filled": order("fak_not_filled", "BUY", 440_000, 5 * SHARE, "FAK"),
        "invalid_expiration": order(
            "invalid_expiration", "BUY", 390_000, 5 * SHARE, "GTD", expires_at_ns=START_NS
        ),
        "duplicate_order": order("taken", "BUY", 390_000, 5 * SHARE),
    }
    results = await paper.venue.submit(list(cases.values()))
    assert all(isinstance(r, SubmitRejected) for r in results), results
    assert [r.reason for r in results if isinstance(r, SubmitRejected)] == list(cases)
    by_reason = {r.reason: r for r in results if isinstance(r, SubmitRejected)}
    # The venue's own words, as the live adapter passes them on.
    assert by_reason["fok_not_filled"].message == FOK_NOT_FILLED
    assert by_reason["fak_not_filled"].message == FAK_NOT_FILLED
    assert by_reason["post_only_would_cross"].message == POST_ONLY_CROSSES
    # Nothing refused rests or reports anything beyond the one accepted order.
    assert [o.venue_order_id for o in await paper.venue.open_orders()] == [paper_order_id("taken")]
    assert paper.venue.take_reports() == [update("taken", "live", 0)]


async def test_an_asset_without_a_live_book_or_a_market_is_not_ready() -> None:
    view = BookView()
    venue = PaperVenue(view, ManualClock())
    script = Script()
    venue.apply(script.snapshot([(400_000, 10 * SHARE)], [(450_000, 10 * SHARE)]))
    [no_market] = await venue.submit([order("a", "BUY", 450_000, 5 * SHARE)])
    venue.apply(market())
    venue.apply(script.status("stale", "ws_stall"))
    [stale] = await venue.submit([order("b", "BUY", 450_000, 5 * SHARE)])
    elsewhere = msgspec.structs.replace(order("c", "BUY", 450_000, 5 * SHARE), asset_id="999")
    [unknown] = await venue.submit([elsewhere])
    for result, client_order_id in ((no_market, "a"), (stale, "b"), (unknown, "c")):
        assert result == SubmitRejected(
            client_order_id=client_order_id, reason="market_not_ready", message=MARKET_NOT_READY
        )


# -- marketable orders ------------------------------------------------------------------------
async def test_a_marketable_buy_takes_the_shown_levels_as_a_taker_with_the_venues_fee() -> None:
    paper = Paper()
    result = await place(paper, order("sweep", "BUY", 460_000, 15 * SHARE, "FAK"))
    venue_id = paper_order_id("sweep")
    assert result == SubmitAccepted(
        client_order_id="sweep",
        venue_order_id=venue_id,
        venue_status="matched",
        making_amount=notional(450_000, 10 * SHARE) + notional(460_000, 5 * SHARE),
        taking_amount=15 * SHARE,
        trade_ids=(f"{venue_id}:1", f"{venue_id}:2"),
    )
    reports = paper.venue.take_reports()
    assert fills(reports) == [(450_000, 10 * SHARE, "taker"), (460_000, 5 * SHARE, "taker")]
    first = reports[0]
    assert isinstance(first, PaperVenueTrade)
    assert (first.status, first.fee_rate_bps, first.matched_at_ns) == ("CONFIRMED", 700, START_NS)
    # A BUY pays its fee in shares (Fill.fee); its pUSD value rides along.
    assert first.fee == taker_fee("BUY", 450_000, 10 * SHARE, CRYPTO) > 0
    assert first.fee_value == taker_fee_value(450_000, 10 * SHARE, CRYPTO)
    assert reports[-1] == update("sweep", "filled", 15 * SHARE)
    assert await paper.venue.trades() == reports[:2]


async def test_a_marketable_sell_pays_its_fee_in_pusd_and_a_fak_remainder_is_canceled() -> None:
    paper = Paper()
    result = await place(paper, order("sell", "SELL", 390_000, 40 * SHARE, "FAK"))
    assert (result.making_amount, result.taking_amount) == (
        30 * SHARE,
        notional(400_000, 10 * SHARE) + notional(390_000, 20 * SHARE),
    )
    reports = paper.venue.take_reports()
    assert fills(reports) == [(400_000, 10 * SHARE, "taker"), (390_000, 20 * SHARE, "taker")]
    first = reports[0]
    assert isinstance(first, PaperVenueTrade)
    assert first.fee == first.fee_value == taker_fee("SELL", 400_000, 10 * SHARE, CRYPTO)
    assert reports[-1] == update("sell", "canceled", 30 * SHARE)
    assert await paper.venue.open_orders() == []


async def test_what_a_fill_took_is_not_shown_to_the_next_order() -> None:
    paper = Paper()
    await place(paper, order("first", "BUY", 450_000, 10 * SHARE, "FOK"))
    [second] = await paper.venue.submit([order("second", "BUY", 450_000, 5 * SHARE, "FOK")])
    assert isinstance(second, SubmitRejected)
    assert second.reason == "fok_not_filled"


# -- resting orders ---------------------------------------------------------------------------
async def test_a_resting_bid_fills_as_a_maker_when_a_trade_prints_through_it() -> None:
    paper = Paper()
    result = await place(paper, order("bid", "BUY", 400_000, 8 * SHARE))
    assert (result.venue_status, result.trade_ids) == ("live", ())
    paper.clock.now += 5
    paper.trade(390_000, 3 * SHARE, "SELL")
    reports = paper.venue.take_reports()
    assert fills(reports) == [(400_000, 3 * SHARE, "maker")]
    maker = reports[1]
    assert isinstance(maker, PaperVenueTrade)
    assert (maker.fee, maker.fee_value, maker.fee_rate_bps) == (0, 0, 0)
    assert reports[0] == update("bid", "live", 0)
    assert reports[2] == update("bid", "partially_filled", 3 * SHARE, START_NS + 5)
    [resting] = await paper.venue.open_orders()
    assert (resting.original_size, resting.size_matched, resting.status) == (
        8 * SHARE,
        3 * SHARE,
        "LIVE",
    )


async def test_the_queue_ahead_at_its_price_trades_first() -> None:
    paper = Paper()
    await place(paper, order("bid", "BUY", 400_000, 8 * SHARE))  # behind 10 shown
    paper.venue.take_reports()
    paper.trade(400_000, 10 * SHARE, "SELL")
    assert paper.venue.take_reports() == []
    paper.trade(400_000, 8 * SHARE, "SELL")
    reports = paper.venue.take_reports()
    assert fills(reports) == [(400_000, 8 * SHARE, "maker")]
    assert reports[-1] == update("bid", "filled", 8 * SHARE)
    assert await paper.venue.open_orders() == []


async def test_a_resting_ask_fills_when_a_bid_moves_through_it() -> None:
    paper = Paper()
    await place(paper, order("ask", "SELL", 440_000, 6 * SHARE))
    paper.venue.take_reports()
    paper.level("BUY", 440_000, 4 * SHARE)  # a bid crossing our ask
    reports = paper.venue.take_reports()
    assert fills(reports) == [(440_000, 4 * SHARE, "maker")]
    assert reports[-1] == update("ask", "partially_filled", 4 * SHARE)


async def test_no_fills_from_a_book_that_is_not_live() -> None:
    paper = Paper()
    await place(paper, order("ask", "SELL", 440_000, 6 * SHARE))
    paper.venue.take_reports()
    paper.venue.apply(paper.script.status("stale", "ws_stall"))
    paper.level("BUY", 440_000, 4 * SHARE)
    assert paper.venue.take_reports() == []


# -- cancels, expiry ----------------------------------------------------------------------------
async def test_cancels_answer_like_the_venue() -> None:
    paper = Paper()
    await place(paper, order("a", "BUY", 390_000, 5 * SHARE))
    await place(paper, order("b", "BUY", 380_000, 5 * SHARE))
    await place(paper, order("filled", "BUY", 450_000, 5 * SHARE))
    a, b, filled = (paper_order_id(name) for name in ("a", "b", "filled"))
    paper.venue.take_reports()
    assert await paper.venue.cancel([a, a, filled, "0xnone"]) == [
        CancelResult(venue_order_id=a, outcome="canceled"),
        CancelResult(
            venue_order_id=filled,
            outcome="not_canceled",
            reason="already_matched",
            message="Order already matched",
        ),
        CancelResult(
            venue_order_id="0xnone",
            outcome="not_canceled",
            reason="not_found",
            message="Order not found",
        ),
    ]
    [again] = await paper.venue.cancel([a])
    assert (again.outcome, again.reason) == ("not_canceled", "already_canceled")
    assert await paper.venue.cancel_all() == [CancelResult(venue_order_id=b, outcome="canceled")]
    assert await paper.venue.open_orders() == []
    assert paper.venue.take_reports() == [update("a", "canceled", 0), update("b", "canceled", 0)]
    # A canceled order no longer fills.
    paper.trade(370_000, 50 * SHARE, "SELL")
    assert paper.venue.take_reports() == []


async def test_a_gtd_order_expires_on_the_clock_and_stops_filling() -> None:
    paper = Paper()
    expiry = START_NS + 1_000
    await place(paper, order("gtd", "BUY", 400_000, 5 * SHARE, "GTD", expires_at_ns=expiry))
    assert paper.venue.next_expiry_ns == expiry
    paper.venue.take_reports()
    paper.clock.now = expiry - 1
    paper.venue.expire_due()
    assert paper.venue.take_reports() == []
    paper.clock.now = expiry
    paper.trade(390_000, 5 * SHARE, "SELL")  # too late: it expires first
    assert paper.venue.take_reports() == [update("gtd", "expired", 0, expiry)]
    assert paper.venue.next_expiry_ns is None
    assert await paper.venue.open_orders() == []
    [late] = await paper.venue.cancel([paper_order_id("gtd")])
    assert late.reason == "already_canceled"


# -- queries, heartbeat, reports ----------------------------------------------------------------
async def test_trades_after_a_time_are_the_fills_at_or_after_it() -> None:
    paper = Paper()
    await place(paper, order("one", "BUY", 450_000, 5 * SHARE, "FOK"))
    paper.clock.now += 10
    await place(paper, order("two", "BUY", 450_000, 5 * SHARE, "FOK"))
    assert len(await paper.venue.trades()) == 2
    [later] = await paper.venue.trades(after_ns=START_NS + 10)
    assert later.venue_order_id == paper_order_id("two")
    assert await paper.venue.trades(after_ns=START_NS + 11) == []


async def test_the_heartbeat_is_a_chain_that_refuses_a_stale_id() -> None:
    venue = Paper().venue
    first = await venue.heartbeat("")
    second = await venue.heartbeat(first)
    assert second != first
    with pytest.raises(HeartbeatRejected) as refused:
        await venue.heartbeat(first)
    assert refused.value.expected_id == second


async def test_reports_iterate_in_the_order_things_happened() -> None:
    paper = Paper()
    await place(paper, order("bid", "BUY", 400_000, 8 * SHARE))
    paper.trade(390_000, 8 * SHARE, "SELL")
    reports = paper.venue.reports()
    got = [await anext(reports) for _ in range(3)]
    assert got[0] == update("bid", "live", 0)
    assert fills(got[1:2]) == [(400_000, 8 * SHARE, "maker")]
    assert got[2] == update("bid", "filled", 8 * SHARE)


async def test_the_same_inputs_give_the_same_results_ids_and_reports() -> None:
    async def run() -> tuple[list[object], list[VenueReport]]:
        paper = Paper()
        results: list[object] = []
        results += await paper.venue.submit([order("a", "BUY", 400_000, 8 * SHARE)])
        results += await paper.venue.submit([order("b", "SELL", 390_000, 12 * SHARE, "FAK")])
        paper.clock.now += 7
        paper.trade(400_000, 15 * SHARE, "SELL")
        paper.level("SELL", 400_000, 2 * SHARE)
        results += await paper.venue.cancel_all()
        results += await paper.venue.trades()
        return results, paper.venue.take_reports()

    first, second = await run(), await run()
    assert first == second
    assert len(first[1]) > 4
