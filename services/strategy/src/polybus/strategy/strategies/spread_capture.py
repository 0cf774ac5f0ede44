"""Spread capture (``spread_capture``): post-only quotes on both sides of binary markets.

Per market the strategy quotes the first outcome's token (YES) around a fair value (the mid, or
the depth-weighted microprice), at least ``min_spread_ticks`` wide, shifted against its
inventory (``skew_ticks`` at a full position). The CLOB cannot short, so each side is placed as
the order that holds no more than needed: the ask is a SELL of YES when YES is held, else a BUY
of NO at 1 - ask (the same economics); the bid is a SELL of NO when NO is held, else a BUY of
YES. A side that would add to a position past ``max_position_market`` (net YES minus NO) or the
sum over markets past ``max_position_total`` is not quoted.

Refresh: a side is replaced (cancel, then place) only when its price is off by at least
``replace_threshold_ticks`` of the current tick, not sooner than ``min_replace_interval_ms``
after its last replace, and only while the strategy's cancel budget (a token bucket inside
the venue's Standard tier, VENUE §6.2) has a token. Pulls skip the interval and the budget:
a tick-size change (re-priced on the new grid: resting prices on the old one are stale), the
market's end within ``pull_before_end_s``, a market no longer selected. A spread narrower than
``narrow_spread_ticks`` is not quoted. When a book goes stale the runtime cancels the quotes;
the strategy then waits for that book to be live, for the cancels to land and
``stale_cooldown_ms`` more before quoting again.

Markets: ``markets`` (condition ids), or with none the ``auto_select_count`` binary markets
with the most liquidity whose live spread is within ``auto_select_max_spread_ticks``,
re-chosen every ``auto_select_interval_s``. The fair value includes the strategy's own quotes
when they are at the top of the book: they sit symmetrically around it, so they move it little.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from polybus.common.book_view import BookView
from polybus.common.config import ConfigStruct
from polybus.common.events import Fill, MarketInfo, Side
from polybus.common.money import MICROS
from polybus.common.polymarket.rate_limits import TIERS
from polybus.strategy.api import Action, Cancel, Place, Portfolio, Strategy, WorkingOrder
from polybus.strategy.strategies.pricing import (
    NANOS_PER_MILLISECOND,
    Amount,
    ceil_to_tick,
    floor_to_tick,
    microprice,
    micros,
    mid_price,
)

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
_SECOND_NS = 1_000_000_000
_STANDARD = TIERS["standard"]
QuoteSide = Literal["bid", "ask"]


class SpreadCaptureSettings(ConfigStruct, frozen=True):
    """``[strategy.spread_capture]``: amounts are decimal strings (shares)."""

    markets: tuple[str, ...] = ()
    auto_select_count: NonNegativeInt = 5
    auto_select_max_spread_ticks: PositiveInt = 10
    auto_select_interval_s: PositiveInt = 60
    fair_value: Literal["mid", "microprice"] = "microprice"
    microprice_levels: PositiveInt = 3
    quote_size: Amount = "10"
    min_spread_ticks: PositiveInt = 2
    narrow_spread_ticks: PositiveInt = 2
    skew_ticks: NonNegativeInt = 2
    max_position_market: Amount = "100"
    max_position_total: Amount = "500"
    replace_threshold_ticks: PositiveInt = 1
    min_replace_interval_ms: NonNegativeInt = 500
    cancels_per_second: Annotated[int, msgspec.Meta(ge=1, le=_STANDARD.cancel_rate)] = 5
    cancel_burst: Annotated[int, msgspec.Meta(ge=1, le=_STANDARD.cancel_burst)] = 10
    pull_before_end_s: NonNegativeInt = 3600
    stale_cooldown_ms: NonNegativeInt = 1_000
    order_ack_timeout_ms: PositiveInt = 5_000
    """How long a placed quote may take to show up as working before it is placed again."""


class CancelBudget:
    """A token bucket: ``rate`` cancels a second, at most ``burst`` at once, integer ns."""

    def __init__(self, rate: int, burst: int) -> None:
        self._rate = rate
        self._capacity = burst * _SECOND_NS
        self._level = self._capacity
        """Tokens x 1e9, so refilling needs no fraction."""
        self._at_ns: int | None = None

    def take(self, now_ns: int) -> bool:
        if self._at_ns is not None and now_ns > self._at_ns:
            self._level = min(self._capacity, self._level + (now_ns - self._at_ns) * self._rate)
        self._at_ns = now_ns if self._at_ns is None else max(self._at_ns, now_ns)
        if self._level < _SECOND_NS:
            return False
        self._level -= _SECOND_NS
        return True


@dataclass(frozen=True, slots=True)
class Quote:
    """One side's order: which token, which way, at what price."""

    asset_id: str
    side: Side
    price: int


@dataclass(slots=True)
class _MarketState:
    yes: str
    no: str
    tick: int = 0
    paused: bool = False
    resume_at_ns: int | None = None
    last_replace_ns: dict[QuoteSide, int] = field(default_factory=dict)
    pending: dict[QuoteSide, tuple[Quote, int]] = field(default_factory=dict)
    """A side placed but not yet working: (quote, placed at)."""


class SpreadCapture(Strategy):
    """Post-only two-sided quotes with inventory skew and a throttled refresh."""

    name = "spread_capture"
    settings_type = SpreadCaptureSettings

    def __init__(self, settings: msgspec.Struct, portfolio: Portfolio) -> None:
        super().__init__(settings, portfolio)
        if not isinstance(settings, SpreadCaptureSettings):
            raise TypeError(
                f"spread_capture needs SpreadCaptureSettings, got {type(settings).__name__}"
            )
        self.config = settings
        self._size = micros(settings.quote_size, "quote_size")
        self._max_market = micros(settings.max_position_market, "max_position_market")
        self._max_total = micros(settings.max_position_total, "max_position_total")
        self._budget = CancelBudget(settings.cancels_per_second, settings.cancel_burst)
        self._markets: dict[str, _MarketState] = {}
        self._cancelling: set[str] = set()
        self._selected_at_ns: int | None = None
        self._now_ns = 0

    # -- hooks -------------------------------------------------------------------------------
    def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
        asset = view.asset(asset_id)
        market = view.market_of(asset_id)
        if asset is None or market is None:
            return ()
        self._now_ns = max(self._now_ns, asset.updated_ns)
        state = self._markets.get(market.condition_id)
        if state is None and market.condition_id in self.config.markets:
            state = self._track(market)
        if state is None or asset_id not in (state.yes, state.no):
            return ()
        return self._refresh(view, market, state, self._now_ns)

    def on_fill(self, fill: Fill) -> Iterable[Action]:
        state = self._markets.get(fill.condition_id)
        view = self.view
        market = view.market(fill.condition_id)
        if state is None or market is None or not view.tradeable(state.yes):
            return ()
        return self._refresh(view, market, state, self._now_ns)

    def on_timer(self, now_ns: int) -> Iterable[Action]:
        self._now_ns = max(self._now_ns, now_ns)
        view = self.view
        actions = self._select(view, self._now_ns)
        for condition_id, state in list(self._markets.items()):
            market = view.market(condition_id)
            if market is not None and view.tradeable(state.yes):
                actions.extend(self._refresh(view, market, state, self._now_ns))
        return actions

    def on_untradeable(self, view: BookView, asset_id: str) -> Iterable[Action]:
        # The runtime cancels the quotes; quoting again waits for them to be gone.
        for state in self._markets.values():
            if asset_id in (state.yes, state.no):
                state.paused = True
                state.resume_at_ns = None
                state.pending.clear()
        return ()

    # -- markets -----------------------------------------------------------------------------
    def _select(self, view: BookView, now_ns: int) -> list[Action]:
        """(Re)choose the markets to quote; pull the quotes of the ones dropped."""
        interval_ns = self.config.auto_select_interval_s * _SECOND_NS
        # Until something is chosen, every timer looks again (the books are still arriving).
        recent = self._selected_at_ns is not None and now_ns - self._selected_at_ns < interval_ns
        if recent and self._markets:
            return []
        self._selected_at_ns = now_ns
        if self.config.markets:
            chosen = [m for m in map(view.market, self.config.markets) if m is not None]
        else:
            candidates = [m for m in view.markets() if self._quotable(view, m, now_ns)]
            candidates.sort(key=lambda m: (-m.liquidity, m.condition_id))
            chosen = candidates[: self.config.auto_select_count]
        actions: list[Action] = []
        wanted = {m.condition_id for m in chosen if len(m.outcomes) == 2}
        for condition_id in list(self._markets):
            if condition_id not in wanted:
                state = self._markets.pop(condition_id)
                actions.extend(self._cancel_all(state, "pull.deselected"))
        for market in chosen:
            if market.condition_id in wanted and market.condition_id not in self._markets:
                self._track(market)
        return actions

    def _track(self, market: MarketInfo) -> _MarketState | None:
        if len(market.outcomes) != 2:
            return None
        yes, no = (outcome.token_id for outcome in market.outcomes)
        state = self._markets[market.condition_id] = _MarketState(yes=yes, no=no)
        return state

    def _quotable(self, view: BookView, market: MarketInfo, now_ns: int) -> bool:
        if len(market.outcomes) != 2 or not market.active or market.closed:
            return False
        if self._ending(market, now_ns):
            return False
        yes = market.outcomes[0].token_id
        book, tick = view.book(yes), view.tick(yes)
        if not view.tradeable(yes) or book is None or not tick:
            return False
        if book.best_bid is None or book.best_ask is None:
            return False
        spread_ticks = (book.best_ask - book.best_bid) // tick
        return (
            self.config.narrow_spread_ticks
            <= spread_ticks
            <= self.config.auto_select_max_spread_ticks
        )

    def _ending(self, market: MarketInfo, now_ns: int) -> bool:
        pull_ns = self.config.pull_before_end_s * _SECOND_NS
        return bool(market.end_date_ns) and now_ns >= market.end_date_ns - pull_ns

    # -- quotes ------------------------------------------------------------------------------
    def _net_position(self, state: _MarketState) -> int:
        return self.portfolio.position(state.yes) - self.portfolio.position(state.no)

    def _total_position(self) -> int:
        return sum(abs(self._net_position(state)) for state in self._markets.values())

    def _quotes(self, view: BookView, state: _MarketState) -> dict[QuoteSide, Quote | None]:
        """The bid and the ask the strategy wants now (None: no quote on that side)."""
        none: dict[QuoteSide, Quote | None] = {"bid": None, "ask": None}
        book, tick = view.book(state.yes), view.tick(state.yes)
        if book is None or not tick or book.best_bid is None or book.best_ask is None:
            return none
        best_bid, best_ask = book.best_bid, book.best_ask
        if best_ask - best_bid < self.config.narrow_spread_ticks * tick:
            return none
        fair = (
            microprice(book, self.config.microprice_levels)
            if self.config.fair_value == "microprice"
            else mid_price(book)
        )
        if fair is None:
            return none
        net = self._net_position(state)
        # Long: both prices move down, so the bid fills less and the ask more.
        skew = self.config.skew_ticks * tick * net // self._max_market if self._max_market else 0
        center = fair - skew
        width = self.config.min_spread_ticks * tick
        # Post-only: never at or through the other side's best price.
        bid = min(floor_to_tick(center - width // 2, tick), best_ask - tick)
        ask = max(ceil_to_tick(center + width - width // 2, tick), best_bid + tick)
        total = self._total_position()
        wants_bid = tick <= bid and net < self._max_market and total < self._max_total
        wants_ask = ask <= MICROS - tick and -net < self._max_market and total < self._max_total
        # Reducing a position is always allowed.
        wants_bid = wants_bid or (net < 0 and tick <= bid)
        wants_ask = wants_ask or (net > 0 and ask <= MICROS - tick)
        if ask - bid < width:
            return none
        return {
            "bid": self._order(view, state, "bid", bid) if wants_bid else None,
            "ask": self._order(view, state, "ask", ask) if wants_ask else None,
        }

    def _order(
        self, view: BookView, state: _MarketState, side: QuoteSide, price: int
    ) -> Quote | None:
        """The order that quotes ``side`` at ``price`` on YES, selling what is held first."""
        sell_token = state.no if side == "bid" else state.yes
        if self.portfolio.position(sell_token) >= self._size:
            quote = Quote(sell_token, "SELL", price if side == "ask" else MICROS - price)
        elif side == "bid":
            quote = Quote(state.yes, "BUY", price)
        else:
            quote = Quote(state.no, "BUY", MICROS - price)
        book = view.book(quote.asset_id)
        if book is None or not view.tradeable(quote.asset_id):
            return None
        if self._size < view.min_size(quote.asset_id):
            return None
        if quote.side == "BUY" and book.best_ask is not None and quote.price >= book.best_ask:
            return None
        if quote.side == "SELL" and book.best_bid is not None and quote.price <= book.best_bid:
            return None
        return quote

    def _side_orders(self, state: _MarketState, side: QuoteSide) -> list[WorkingOrder]:
        """Working orders quoting ``side``: the bid is BUY YES or SELL NO, the ask the rest."""
        orders = [*self.portfolio.working(state.yes), *self.portfolio.working(state.no)]
        return [
            order
            for order in orders
            if order.order_id not in self._cancelling
            and ((order.asset_id == state.yes) == (order.side == "BUY")) == (side == "bid")
        ]

    def _refresh(
        self, view: BookView, market: MarketInfo, state: _MarketState, now_ns: int
    ) -> list[Action]:
        self._cancelling.intersection_update(order.order_id for order in self.portfolio.working())
        if self._ending(market, now_ns):
            return self._cancel_all(state, "pull.end")
        if state.paused:
            if self.portfolio.working(state.yes) or self.portfolio.working(state.no):
                return []
            if state.resume_at_ns is None:
                state.resume_at_ns = now_ns + self.config.stale_cooldown_ms * NANOS_PER_MILLISECOND
            if now_ns < state.resume_at_ns:
                return []
            state.paused = False
        tick = view.tick(state.yes)
        tick_changed = bool(state.tick) and tick != state.tick
        state.tick = tick
        wanted = self._quotes(view, state)
        actions: list[Action] = []
        for side in ("bid", "ask"):
            actions.extend(
                self._refresh_side(state, side, wanted[side], tick, now_ns, forced=tick_changed)
            )
        return actions

    def _refresh_side(
        self,
        state: _MarketState,
        side: QuoteSide,
        wanted: Quote | None,
        tick: int,
        now_ns: int,
        *,
        forced: bool,
    ) -> list[Action]:
        working = self._side_orders(state, side)
        if self._awaiting(state, side, working, now_ns):
            return []  # placed, not yet working: do not place it twice
        actions: list[Action] = []
        for extra in working[1:]:
            actions.extend(self._cancel(extra, "quote.extra"))
        current = working[0] if working else None
        if current is None:
            return [*actions, *self._place(state, side, wanted, now_ns)] if wanted else actions
        if wanted is not None and not forced:
            same = (current.asset_id, current.side) == (wanted.asset_id, wanted.side)
            threshold = self.config.replace_threshold_ticks * tick
            if same and abs(current.price - wanted.price) < threshold:
                return actions
        if not forced:
            last = state.last_replace_ns.get(side)
            interval_ns = self.config.min_replace_interval_ms * NANOS_PER_MILLISECOND
            if last is not None and now_ns - last < interval_ns:
                return actions
            if not self._budget.take(now_ns):
                return actions
        state.last_replace_ns[side] = now_ns
        reason = "pull.tick" if forced else "replace" if wanted else "pull.no_quote"
        actions.extend(self._cancel(current, reason))
        return [*actions, *self._place(state, side, wanted, now_ns)] if wanted else actions

    def _awaiting(
        self, state: _MarketState, side: QuoteSide, working: list[WorkingOrder], now_ns: int
    ) -> bool:
        """Whether ``side`` was placed and its order is not working yet (nor timed out)."""
        pending = state.pending.get(side)
        if pending is None:
            return False
        quote, placed_ns = pending
        shown = any(
            (order.asset_id, order.side, order.price) == (quote.asset_id, quote.side, quote.price)
            for order in working
        )
        timeout_ns = self.config.order_ack_timeout_ms * NANOS_PER_MILLISECOND
        if shown or now_ns - placed_ns >= timeout_ns:
            del state.pending[side]
            return False
        return not working

    def _place(
        self, state: _MarketState, side: QuoteSide, quote: Quote | None, now_ns: int
    ) -> list[Action]:
        if quote is None:
            return []
        state.pending[side] = (quote, now_ns)
        return [
            Place(
                asset_id=quote.asset_id,
                side=quote.side,
                price=quote.price,
                size=self._size,
                post_only=True,
                reason=f"quote.{side}",
            )
        ]

    def _cancel(self, order: WorkingOrder, reason: str) -> list[Action]:
        self._cancelling.add(order.order_id)
        return [Cancel(order_id=order.order_id, reason=reason)]

    def _cancel_all(self, state: _MarketState, reason: str) -> list[Action]:
        state.pending.clear()
        orders = [*self.portfolio.working(state.yes), *self.portfolio.working(state.no)]
        actions: list[Action] = []
        for order in orders:
            if order.order_id not in self._cancelling:
                actions.extend(self._cancel(order, reason))
        return actions
