"""The paper venue: the executor's :class:`~polybus.executor.venue.Venue` over the paper matcher
and the public books of the shared book view.

One :class:`~polybus.common.paper.PaperMatcher` per asset decides the fills; this
module gives them the venue's shape: the same submit results and reason codes as the live
adapter (the venue's messages go through the live adapter's one message table), venue order ids,
trades, order updates pushed on :meth:`PaperVenue.reports`, cancels, open orders and a heartbeat
chain. It does no I/O and never reads the wall clock: the caller passes a clock (ns) and feeds
the book view (``BookFeed`` callbacks in the service, :meth:`PaperVenue.apply` in a backtest),
so the same inputs give the same outputs, ids included.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from polybus.common.book_view import Applied, BookView
from polybus.common.events import MarketDataStreamEvent, MarketInfo, MarketResolved, Trade
from polybus.common.fees import FeeSchedule
from polybus.common.money import notional
from polybus.common.paper import (
    DUPLICATE_ORDER,
    MARKET_NOT_READY,
    TRADE_PAIRING_WINDOW_NS,
    PaperFill,
    PaperMatcher,
    PaperOrder,
    venue_refusal,
)
from polybus.executor.live.errors import reason_for_message
from polybus.executor.venue import (
    CancelResult,
    HeartbeatRejected,
    SubmitAccepted,
    SubmitRejected,
    SubmitResult,
    VenueOpenOrder,
    VenueOrder,
    VenueOrderUpdate,
    VenueReport,
    VenueRestriction,
    VenueTrade,
)

Clock = Callable[[], int]
"""Unix ns now: the service passes the wall clock, a backtest the replayed event time."""

SETTLED = "CONFIRMED"
"""Paper fills have no chain to settle on: each is reported once, already final."""
OPEN = "LIVE"
"""The venue's status of an open order."""

OrderState = Literal["live", "partially_filled", "filled", "canceled", "expired"]
_OPEN_STATES = ("live", "partially_filled")
_MATCHER_STATES: dict[str, OrderState] = {
    "accepted": "live",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "canceled": "canceled",
    "expired": "expired",
}
_BASIS_POINTS = 100
"""Micro-units per basis point: a fee rate of 70_000 (0.07) is 700 bps."""


class PaperVenueTrade(VenueTrade, frozen=True, kw_only=True):
    """A paper fill, with the fee the venue would take (the live venue reports the fee rate
    only): ``fee`` as ``Fill.fee`` wants it, shares on a BUY and pUSD on a SELL (0 for a
    maker), and ``fee_value`` its pUSD value."""

    fee: int = 0
    fee_value: int = 0


def paper_order_id(client_order_id: str) -> str:
    """The paper venue's order id for a client order id: a hash, shaped like the venue's."""
    digest = hashlib.sha256(b"polybus.paper.order:" + client_order_id.encode()).hexdigest()
    return "0x" + digest


@dataclass(slots=True)
class _Order:
    order: VenueOrder
    venue_order_id: str
    created_at_ns: int
    state: OrderState = "live"
    size_matched: int = 0

    @property
    def open(self) -> bool:
        return self.state in _OPEN_STATES


class PaperVenue:
    """:class:`~polybus.executor.venue.Venue` that fills orders against the public books.

    ``view`` is the book view the venue reads (the service's ``BookFeed`` keeps it current and
    calls :meth:`on_book` and :meth:`on_trade`; a backtest or a test feeds events through
    :meth:`apply`). ``clock`` gives unix ns; GTD orders expire when any entry point, or
    :meth:`expire_due`, runs at or after their ``expires_at_ns``.
    """

    def __init__(
        self,
        view: BookView,
        clock: Clock,
        *,
        trade_pairing_window_ns: int = TRADE_PAIRING_WINDOW_NS,
    ) -> None:
        self.view = view
        self._clock = clock
        self._trade_pairing_window_ns = trade_pairing_window_ns
        self._matchers: dict[str, PaperMatcher] = {}
        self._orders: dict[str, _Order] = {}  # by venue order id, in arrival order
        self._trades: list[PaperVenueTrade] = []
        self._reports: asyncio.Queue[VenueReport] = asyncio.Queue()
        self._next_expiry_ns: int | None = None
        self._heartbeat_id = ""
        self._heartbeats = 0

    # -- the venue interface ----------------------------------------------------------------
    @property
    def restriction(self) -> VenueRestriction | None:
        return None  # paper has no restricted modes

    async def submit(self, orders: Sequence[VenueOrder]) -> list[SubmitResult]:
        return [self._submit(order) for order in orders]

    async def cancel(self, venue_order_ids: Sequence[str]) -> list[CancelResult]:
        self.expire_due()
        return [self._cancel(order_id) for order_id in dict.fromkeys(venue_order_ids)]

    async def cancel_all(self) -> list[CancelResult]:
        self.expire_due()
        return [self._cancel(order_id) for order_id, order in self._orders.items() if order.open]

    async def open_orders(self) -> list[VenueOpenOrder]:
        self.expire_due()
        return [
            VenueOpenOrder(
                venue_order_id=paper.venue_order_id,
                status=OPEN,
                condition_id=paper.order.condition_id,
                asset_id=paper.order.asset_id,
                side=paper.order.side,
                price=paper.order.price,
                original_size=paper.order.size,
                size_matched=paper.size_matched,
                order_type=paper.order.time_in_force,
                created_at_ns=paper.created_at_ns,
                expires_at_ns=paper.order.expires_at_ns,
            )
            for paper in self._orders.values()
            if paper.open
        ]

    async def trades(self, after_ns: int = 0) -> list[VenueTrade]:
        # At or after: a reader dedups by trade id, and an inclusive bound never loses a fill
        # that shares the instant of the last one it saw.
        return [trade for trade in self._trades if trade.matched_at_ns >= after_ns]

    async def reports(self) -> AsyncIterator[VenueReport]:
        while True:
            yield await self._reports.get()

    async def heartbeat(self, previous_id: str) -> str:
        # A chain like the venue's, but no dead-man switch: nothing rests anywhere if the
        # executor dies, since the paper orders live in this process.
        if previous_id != self._heartbeat_id:
            raise HeartbeatRejected(self._heartbeat_id)
        self._heartbeats += 1
        self._heartbeat_id = f"paper-heartbeat-{self._heartbeats}"
        return self._heartbeat_id

    # -- market data and time ---------------------------------------------------------------
    def on_book(self, view: BookView, asset_id: str) -> None:
        """``BookFeed``'s ``on_book``: the asset's book changed (``view`` is :attr:`view`)."""
        matcher = self._matchers.get(asset_id)
        if matcher is None:
            return
        now_ns = self._clock()
        self._expire(now_ns)
        book = self.view.book(asset_id)
        # A book that is not live may be missing events: no fills from it until it is rebuilt.
        if book is not None and self.view.tradeable(asset_id):
            self._record_fills(matcher.on_book(book, now_ns))

    def on_trade(self, view: BookView, trade: Trade) -> None:
        """``BookFeed``'s ``on_trade``: a public trade printed."""
        matcher = self._matchers.get(trade.asset_id)
        if matcher is None:
            return
        now_ns = self._clock()
        self._expire(now_ns)
        self._record_fills(matcher.on_trade(trade, now_ns))

    def apply(self, event: MarketDataStreamEvent) -> Applied:
        """Apply a market-data event to :attr:`view` and react to it, as the service's
        ``BookFeed`` would (for backtests and tests without a bus)."""
        applied = self.view.apply(event)
        if applied in (Applied.UPDATED, Applied.STATE_CHANGED):
            if isinstance(event, Trade):
                self.on_trade(self.view, event)
            elif not isinstance(event, MarketInfo | MarketResolved):
                self.on_book(self.view, event.asset_id)
        return applied

    def expire_due(self) -> None:
        """End the GTD orders whose time has come (the service calls it on a timer)."""
        self._expire(self._clock())

    @property
    def next_expiry_ns(self) -> int | None:
        """When the next open GTD order expires (None: none open)."""
        return self._next_expiry_ns

    def take_reports(self) -> list[VenueReport]:
        """Every report not yet read, in order, without waiting (a backtest's drain)."""
        reports = []
        while not self._reports.empty():
            reports.append(self._reports.get_nowait())
        return reports

    # -- internals --------------------------------------------------------------------------
    def _submit(self, order: VenueOrder) -> SubmitResult:
        now_ns = self._clock()
        self._expire(now_ns)
        venue_order_id = paper_order_id(order.client_order_id)
        book = self.view.book(order.asset_id)
        market = self.view.market_of(order.asset_id)
        message = self._refusal(order, venue_order_id)
        if message or book is None or market is None:  # the refusal covers both Nones
            return _rejected(order, message or MARKET_NOT_READY)
        matcher = self._matchers.get(order.asset_id)
        if matcher is None:
            matcher = PaperMatcher(trade_pairing_window_ns=self._trade_pairing_window_ns)
            self._matchers[order.asset_id] = matcher
        matcher.fees = FeeSchedule.of_market(market)  # the latest MarketInfo's schedule
        update = matcher.submit(_paper_order(order, venue_order_id), book, now_ns)
        if update.status == "rejected":
            return _rejected(order, update.reason)
        paper = _Order(order=order, venue_order_id=venue_order_id, created_at_ns=now_ns)
        self._orders[venue_order_id] = paper
        trades = [self._record_trade(paper, fill) for fill in update.fills]
        paper.size_matched = update.filled_size
        paper.state = _MATCHER_STATES[update.status]
        self._report_update(paper, now_ns)
        if paper.open and order.time_in_force == "GTD":
            expiry = order.expires_at_ns
            self._next_expiry_ns = min(expiry, self._next_expiry_ns or expiry)
        shares = sum(trade.size for trade in trades)
        value = sum(notional(trade.price, trade.size) for trade in trades)
        making, taking = (value, shares) if order.side == "BUY" else (shares, value)
        return SubmitAccepted(
            client_order_id=order.client_order_id,
            venue_order_id=venue_order_id,
            venue_status="matched" if trades else "live",
            making_amount=making,
            taking_amount=taking,
            trade_ids=tuple(trade.trade_id for trade in trades),
        )

    def _refusal(self, order: VenueOrder, venue_order_id: str) -> str:
        """The venue's words for an order it refuses before matching ("" if none)."""
        if venue_order_id in self._orders:
            return DUPLICATE_ORDER
        return venue_refusal(
            self.view, order.asset_id, _paper_order(order, venue_order_id), order.tick_size
        )

    def _cancel(self, venue_order_id: str) -> CancelResult:
        paper = self._orders.get(venue_order_id)
        if paper is None:
            return _not_canceled(venue_order_id, "not_found", "Order not found")
        if paper.state == "filled":
            return _not_canceled(venue_order_id, "already_matched", "Order already matched")
        if not paper.open:
            return _not_canceled(venue_order_id, "already_canceled", "Order already canceled")
        self._matchers[paper.order.asset_id].cancel(venue_order_id)
        paper.state = "canceled"
        self._report_update(paper, self._clock())
        return CancelResult(venue_order_id=venue_order_id, outcome="canceled")

    def _expire(self, now_ns: int) -> None:
        if self._next_expiry_ns is None or now_ns < self._next_expiry_ns:
            return
        for matcher in self._matchers.values():
            for update in matcher.expire(now_ns):
                paper = self._orders[update.order_id]
                paper.state = "expired"
                self._report_update(paper, now_ns)
        self._next_expiry_ns = min(
            (
                paper.order.expires_at_ns
                for paper in self._orders.values()
                if paper.open and paper.order.time_in_force == "GTD"
            ),
            default=None,
        )

    def _record_fills(self, fills: list[PaperFill]) -> None:
        for fill in fills:
            paper = self._orders[fill.order_id]
            self._record_trade(paper, fill)
            paper.size_matched += fill.size
            paper.state = "partially_filled" if fill.leaves else "filled"
            self._report_update(paper, fill.ts_ns)

    def _record_trade(self, paper: _Order, fill: PaperFill) -> PaperVenueTrade:
        rate = self._matchers[paper.order.asset_id].fees.rate
        trade = PaperVenueTrade(
            trade_id=fill.fill_id,
            venue_order_id=paper.venue_order_id,
            condition_id=paper.order.condition_id,
            asset_id=paper.order.asset_id,
            side=fill.side,
            price=fill.price,
            size=fill.size,
            liquidity=fill.liquidity,
            status=SETTLED,
            fee_rate_bps=rate // _BASIS_POINTS if fill.liquidity == "taker" else 0,
            matched_at_ns=fill.ts_ns,
            fee=fill.fee_shares if fill.side == "BUY" else fill.fee_value,
            fee_value=fill.fee_value,
        )
        self._trades.append(trade)
        self._reports.put_nowait(trade)
        return trade

    def _report_update(self, paper: _Order, at_ns: int) -> None:
        self._reports.put_nowait(
            VenueOrderUpdate(
                venue_order_id=paper.venue_order_id,
                condition_id=paper.order.condition_id,
                asset_id=paper.order.asset_id,
                status=paper.state,
                size_matched=paper.size_matched,
                at_ns=at_ns,
            )
        )


def _paper_order(order: VenueOrder, venue_order_id: str) -> PaperOrder:
    return PaperOrder(
        order_id=venue_order_id,
        side=order.side,
        price=order.price,
        size=order.size,
        time_in_force=order.time_in_force,
        post_only=order.post_only,
        expires_at_ns=order.expires_at_ns,
    )


def _rejected(order: VenueOrder, message: str) -> SubmitRejected:
    # The live adapter's table, so both venues give one code for one venue message.
    return SubmitRejected(
        client_order_id=order.client_order_id, reason=reason_for_message(message), message=message
    )


def _not_canceled(
    venue_order_id: str,
    reason: Literal["not_found", "already_matched", "already_canceled"],
    message: str,
) -> CancelResult:
    return CancelResult(
        venue_order_id=venue_order_id, outcome="not_canceled", reason=reason, message=message
    )
