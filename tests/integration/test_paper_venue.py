"""The paper venue on a real ingest following the simulator, over a real nats-server.

Its fills must be what the simulator's books allowed: a marketable order takes exactly the
levels the venue showed at that moment, never a better price or more size (with the flow
stopped, against the simulator's own book; while it runs, against the book the order met); a
resting order fills only when the venue's own flow trades through its price.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest

from polybus.common.book_view import BookFeed, BookView
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import Side, TimeInForce, Trade
from polybus.common.fees import FeeSchedule, taker_fee
from polybus.common.money import MICROS
from polybus.common.runtime import now_ns
from polybus.common.streams import Definitions
from polybus.executor.paper import PaperVenue, PaperVenueTrade
from polybus.executor.venue import SubmitAccepted, VenueOrder, VenueOrderUpdate, VenueReport
from polybus.ingest.service import Ingest
from polybus.sim.server import Simulator
from polybus.sim.universe import SimMarket
from tests.helpers import eventually
from tests.integration.test_book_view import following, settle
from tests.integration.test_ingest_sim import running, small
from tests.integration.test_sim_support import Trader

pytestmark = pytest.mark.timeout(90)

TAKER_KEY = "0x" + "c3" * 32
REPORT_TIMEOUT_S = 10.0


class Paper:
    """A paper venue fed by a book feed; keeps the public trade prints it was shown."""

    def __init__(self) -> None:
        self.venue = PaperVenue(BookView(), now_ns)
        self.prints: list[Trade] = []
        self._reports = self.venue.reports()

    def on_trade(self, view: BookView, trade: Trade) -> None:
        self.prints.append(trade)
        self.venue.on_trade(view, trade)

    async def next_report(self) -> VenueReport:
        return await asyncio.wait_for(anext(self._reports), REPORT_TIMEOUT_S)

    async def reports_until(self, last: type) -> list[VenueReport]:
        """Reports up to and including the first of type ``last``."""
        reports = [await self.next_report()]
        while not isinstance(reports[-1], last):
            reports.append(await self.next_report())
        return reports


@asynccontextmanager
async def paper_trading(
    bus: NatsBus, definitions: Definitions, *, still: bool = True
) -> AsyncIterator[tuple[Simulator, Ingest, BookFeed, Paper]]:
    """Two fee-charging markets on the simulator, the ingest, and a paper venue on its books;
    ``still``: the simulated flow stopped and the view equal to the simulator's books."""
    settings = msgspec.structs.replace(small(2), taker_fee_bps=700)
    paper = Paper()
    async with (
        running(bus, definitions, settings) as (sim, ingest, _),
        following(
            bus, view=paper.venue.view, on_book=paper.venue.on_book, on_trade=paper.on_trade
        ) as feed,
    ):
        if still:
            await settle(sim, feed, ingest)
        yield sim, ingest, feed, paper


def binary(sim: Simulator) -> SimMarket:
    return next(market for market in sim.markets() if not market.neg_risk)


def order(
    market: SimMarket,
    client_order_id: str,
    side: Side,
    price: int,
    size: int,
    time_in_force: TimeInForce,
) -> VenueOrder:
    return VenueOrder(
        client_order_id=client_order_id,
        condition_id=market.condition_id,
        asset_id=market.yes,
        side=side,
        price=price,
        size=size,
        time_in_force=time_in_force,
        tick_size=market.tick_size,
    )


def taken(reports: list[VenueReport]) -> list[tuple[int, int]]:
    return [(r.price, r.size) for r in reports if isinstance(r, PaperVenueTrade)]


async def test_marketable_orders_take_exactly_the_levels_the_venue_showed(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with paper_trading(bus, definitions) as (sim, _, _, paper):
        market = binary(sim)
        bids, asks = sim.book(market.yes)  # the venue's book at this moment
        assert len(bids) >= 2
        assert len(asks) >= 2
        fees = FeeSchedule(rate=market.fee_rate, exponent=market.fee_exponent)
        assert fees.rate > 0
        extra = 1 * MICROS
        # A BUY up to the second ask, for more than the two levels hold: it must take both
        # whole levels at their own prices and nothing beyond the second.
        buy_size = asks[0][1] + asks[1][1] + extra
        [buy] = await paper.venue.submit([order(market, "buy", "BUY", asks[1][0], buy_size, "FAK")])
        assert isinstance(buy, SubmitAccepted), buy
        assert buy.venue_status == "matched"
        buy_reports = await paper.reports_until(VenueOrderUpdate)
        assert taken(buy_reports) == [asks[0], asks[1]]
        end = buy_reports[-1]
        assert isinstance(end, VenueOrderUpdate)
        assert (end.venue_order_id, end.status, end.size_matched) == (
            buy.venue_order_id,
            "canceled",  # the FAK's remainder
            asks[0][1] + asks[1][1],
        )
        for report in buy_reports[:-1]:
            assert isinstance(report, PaperVenueTrade)
            assert report.liquidity == "taker"
            assert report.fee == taker_fee("BUY", report.price, report.size, fees)
        # A SELL down to the best bid only takes that level.
        sell_size = bids[0][1] + extra
        [sell] = await paper.venue.submit(
            [order(market, "sell", "SELL", bids[0][0], sell_size, "FAK")]
        )
        assert isinstance(sell, SubmitAccepted), sell
        sell_reports = await paper.reports_until(VenueOrderUpdate)
        assert taken(sell_reports) == [bids[0]]
        # The venue's books did not move: paper orders never reach it.
        assert sim.book(market.yes) == (bids, asks)
        # What paper took stays taken: the same levels cannot fill a second FOK.
        # Sized to at least the venue's 1 pUSD for a marketable order, whatever the level held,
        # so it is refused for the liquidity, not for its size.
        at_least_one_pusd = -(-MICROS * MICROS // asks[0][0] // 10_000) * 10_000
        [again] = await paper.venue.submit(
            [order(market, "again", "BUY", asks[0][0], max(asks[0][1], at_least_one_pusd), "FOK")]
        )
        assert getattr(again, "reason", "") == "fok_not_filled", again


async def test_a_resting_bid_fills_when_the_venues_flow_trades_through_its_price(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with (
        paper_trading(bus, definitions) as (sim, _, feed, paper),
        httpx.AsyncClient(base_url=sim.http_url, timeout=10) as http,
    ):
        market = binary(sim)
        bids, _ = sim.book(market.yes)
        our_price, queue = bids[0]
        our_size = max(market.min_order_size, 5 * MICROS)
        [rest] = await paper.venue.submit([order(market, "bid", "BUY", our_price, our_size, "GTC")])
        assert isinstance(rest, SubmitAccepted), rest
        assert rest.venue_status == "live"
        [resting] = await paper.venue.open_orders()
        assert await paper.next_report() == VenueOrderUpdate(
            venue_order_id=rest.venue_order_id,
            condition_id=market.condition_id,
            asset_id=market.yes,
            status="live",
            size_matched=0,
            at_ns=resting.created_at_ns,
        )
        # Another trader sells at the venue through the whole best bid (the queue ahead of
        # us) and into the next level: a print strictly below our price.
        taker = Trader(http, TAKER_KEY)
        await taker.login()
        through = bids[1][0]
        body = taker.order(
            market.yes, side="SELL", price=through, size=queue + our_size, order_type="FAK"
        )
        response = await taker.request("POST", "/order", body)
        assert response.json()["status"] == "matched", response.text
        reports = await paper.reports_until(VenueOrderUpdate)
        [fill] = [r for r in reports if isinstance(r, PaperVenueTrade)]
        assert (fill.price, fill.size, fill.liquidity) == (our_price, our_size, "maker")
        assert (fill.fee, fill.fee_rate_bps) == (0, 0)
        assert reports[-1] == VenueOrderUpdate(
            venue_order_id=rest.venue_order_id,
            condition_id=market.condition_id,
            asset_id=market.yes,
            status="filled",
            size_matched=our_size,
            at_ns=fill.matched_at_ns,
        )
        # The fill came from the venue's print through our price, no larger than it.
        below = [t for t in paper.prints if t.price < our_price]
        assert below, paper.prints
        assert sum(t.size for t in below) >= fill.size
        assert await paper.venue.open_orders() == []
        assert feed.view.tradeable(market.yes)


async def test_while_the_books_move_no_taker_fill_beats_the_book_of_its_moment(
    bus: NatsBus, definitions: Definitions
) -> None:
    async with paper_trading(bus, definitions, still=False) as (sim, _, feed, paper):
        market = binary(sim)
        asset = market.yes
        checked = 0
        for number in range(30):

            def moved(since: int = feed.view.stats.applied) -> bool:
                return feed.view.stats.applied > since

            await eventually(moved, 10, "the books to move")
            book = feed.view.book(asset)
            assert book is not None
            if not feed.view.tradeable(asset) or not book.ask_levels():
                continue
            # The book the order meets: submit runs to its end without yielding to the feed.
            shown = dict(book.ask_levels())
            limit = min(book.ask_levels()[0][0] + 2 * market.tick_size, MICROS - market.tick_size)
            size = 20 * MICROS
            [result] = await paper.venue.submit(
                [order(market, f"take-{number}", "BUY", limit, size, "FAK")]
            )
            if not isinstance(result, SubmitAccepted):
                continue  # everything within the limit was already ours (fak_not_filled)
            fills = taken(await paper.reports_until(VenueOrderUpdate))
            prices = [price for price, _ in fills]
            assert prices == sorted(prices), fills  # best level first
            for price, filled in fills:
                assert price <= limit
                assert filled <= shown[price], (fills, shown)  # KeyError: a price never shown
            assert sum(filled for _, filled in fills) <= size
            checked += 1
        assert checked >= 10
