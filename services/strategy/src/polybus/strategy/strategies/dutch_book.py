"""Complete-set arbitrage (``dutch_book``): buy every outcome of a set below 1, sell above it.

A complete set (:mod:`.neg_risk`: a binary market's YES and NO, or a neg-risk event's YES
tokens) pays exactly 1 pUSD at resolution. When its best asks, with the venue's taker fees,
cost less than 1 by at least the edge, the strategy buys one of each leg (FAK or FOK at the
observed prices); when it holds sets and their best bids, less fees, bring more than 1 by the
edge, it sells them. Positions are held to resolution: merging a set back into pUSD is an
on-chain call the venue's off-chain API does not offer.

The sum is exact, in integers, on the size to be traded: a BUY's fee is taken in shares
(:func:`~polybus.common.fees.taker_fee`), so of ``C`` shares bought per leg the set that pays
is ``C - max(fee shares)``; it must exceed what the legs cost by ``edge x C``.

Guards: every leg's book LIVE, its last update at most ``max_book_age_ms`` before the
triggering event and all legs' last updates within ``batch_window_ms`` of each other (so a
venue batch half applied is not read as a price), the edge at least ``min_edge_ticks`` of the
coarsest leg's tick, at most ``max_attempts_per_minute`` attempts per set, one attempt at a
time on any token.

A leg that filled while another did not is handled ``leg_timeout_ms`` after the attempt (FAK
orders answer at once): ``hedge`` buys the missing legs at their asks if the set then costs at
most 1 + ``one_legged_max_loss``, else (or with ``unwind``) the excess is sold FAK no lower
than its fill price less ``one_legged_max_loss``. Those orders carry the reasons
``one_legged.hedge`` / ``one_legged.unwind``; the policy is retried up to
``one_legged_max_tries`` times. Every uneven attempt is reported (a ``Report``, so a
``RiskEvent`` of kind ``one_legged``) when it is found and again with what came of it: its
``limit`` is ``detected``, then ``hedged``, ``unwound``, ``gave_up`` or ``leftover_too_small``.
Times are the ingest's event times (a book's ``updated_ns``) and the runtime's timer, so a
replay decides the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from polybus.common.book_view import BookView
from polybus.common.config import ConfigStruct
from polybus.common.events import Fill, MarketInfo, Side
from polybus.common.fees import FeeSchedule, taker_fee
from polybus.common.money import MICROS, format_micros, notional
from polybus.strategy.api import Action, Place, Portfolio, Report, Strategy
from polybus.strategy.strategies.neg_risk import CompleteSet, EventIndex, binary_set, event_set
from polybus.strategy.strategies.pricing import (
    MIN_MARKETABLE_NOTIONAL,
    NANOS_PER_MILLISECOND,
    Amount,
    ceil_to_tick,
    micros,
    on_grid,
    round_size_down,
)

_MINUTE_NS = 60_000_000_000
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Policy = Literal["hedge", "unwind"]


class DutchBookSettings(ConfigStruct, frozen=True):
    """``[strategy.dutch_book]``: amounts are decimal strings (pUSD, shares, prices)."""

    min_edge_ticks: PositiveInt = 1
    """The least profit per set, in ticks of the coarsest leg."""
    max_notional: Amount = "50"
    """pUSD one attempt may spend (or sell for), all legs together."""
    max_position_market: Amount = "500"
    """Shares of any one outcome token held plus open buys."""
    time_in_force: Literal["FAK", "FOK"] = "FAK"
    sell_side: bool = True
    neg_risk: bool = True
    require_event_size: bool = True
    """Trade a neg-risk event only when its size is known and every market of it is seen."""
    max_book_age_ms: PositiveInt = 2_000
    batch_window_ms: Annotated[int, msgspec.Meta(ge=0)] = 250
    max_attempts_per_minute: PositiveInt = 6
    one_legged_policy: Literal["hedge", "unwind"] = "hedge"
    one_legged_max_loss: Amount = "0.03"
    """Price per set (hedge) or per share (unwind) the policy may give up."""
    leg_timeout_ms: PositiveInt = 2_000
    one_legged_max_tries: PositiveInt = 3


@dataclass(frozen=True, slots=True)
class _Leg:
    asset_id: str
    market: MarketInfo
    price: int
    depth: int
    min_size: int
    tick: int


@dataclass(slots=True)
class _Attempt:
    """One attempt on a set, and what came of it (from the fills)."""

    legs: CompleteSet
    side: Side
    size: int
    deadline_ns: int
    filled: dict[str, int]
    """Net shares per leg traded on the attempt's side (a later opposite fill subtracts)."""
    spent: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per leg (shares, notional) of the fills on the attempt's side: their average price."""
    counted: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """fill id -> (asset, signed shares, notional) counted, to undo on FAILED."""
    tries: int = 0
    policy: Policy | None = None
    """The one-legged policy that ran last (None: none has run)."""


class DutchBook(Strategy):
    """Complete-set arbitrage on binary markets and neg-risk events."""

    name = "dutch_book"
    settings_type = DutchBookSettings

    def __init__(self, settings: msgspec.Struct, portfolio: Portfolio) -> None:
        super().__init__(settings, portfolio)
        if not isinstance(settings, DutchBookSettings):
            raise TypeError(f"dutch_book needs DutchBookSettings, got {type(settings).__name__}")
        self.config = settings
        self._max_notional = micros(settings.max_notional, "max_notional")
        self._max_position = micros(settings.max_position_market, "max_position_market")
        self._max_loss = micros(settings.one_legged_max_loss, "one_legged_max_loss")
        self._events = EventIndex()
        self._attempt_times: dict[str, deque[int]] = {}
        self._busy: dict[str, _Attempt] = {}
        """Each token of an open attempt -> that attempt."""

    # -- hooks -------------------------------------------------------------------------------
    def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
        market = view.market_of(asset_id)
        asset = view.asset(asset_id)
        if market is None or asset is None:
            return ()
        candidates = [binary_set(market)]
        if self.config.neg_risk:
            candidates.append(
                event_set(
                    view,
                    market,
                    self._events,
                    require_event_size=self.config.require_event_size,
                )
            )
        for complete_set in candidates:
            if complete_set is not None:
                actions = self._consider(view, complete_set, asset.updated_ns)
                if actions:
                    return actions
        return ()

    def on_fill(self, fill: Fill) -> Iterable[Action]:
        attempt = self._busy.get(fill.asset_id)
        if attempt is None:
            return ()
        counted = attempt.counted.get(fill.fill_id)
        if counted is not None:
            if fill.settlement == "FAILED":
                # The match was reverted on chain: the shares never came.
                asset, shares, cost = counted
                attempt.filled[asset] -= shares
                if shares > 0:
                    bought, spent = attempt.spent[asset]
                    attempt.spent[asset] = (bought - shares, spent - cost)
                attempt.counted[fill.fill_id] = (asset, 0, 0)
            return ()
        if fill.settlement == "FAILED":
            attempt.counted[fill.fill_id] = (fill.asset_id, 0, 0)
            return ()
        shares = fill.size if fill.side == attempt.side else -fill.size
        cost = notional(fill.price, fill.size) if shares > 0 else 0
        attempt.filled[fill.asset_id] += shares
        if shares > 0:
            bought, spent = attempt.spent.get(fill.asset_id, (0, 0))
            attempt.spent[fill.asset_id] = (bought + shares, spent + cost)
        attempt.counted[fill.fill_id] = (fill.asset_id, shares, cost)
        return self._check(attempt, fill.ts_init)

    def on_timer(self, now_ns: int) -> Iterable[Action]:
        self._events.refresh(self.view)
        actions: list[Action] = []
        for attempt in {id(a): a for a in self._busy.values()}.values():
            actions.extend(self._check(attempt, now_ns))
        return actions

    # -- opportunities -----------------------------------------------------------------------
    def _consider(self, view: BookView, legs: CompleteSet, now_ns: int) -> list[Action]:
        if any(asset in self._busy for asset in legs.assets):
            return []
        times = self._attempt_times.setdefault(legs.key, deque())
        while times and times[0] <= now_ns - _MINUTE_NS:
            times.popleft()
        if len(times) >= self.config.max_attempts_per_minute or not self._fresh(view, legs, now_ns):
            return []
        side: Side = "BUY"
        plan = self._buy_plan(view, legs)
        if plan is None and self.config.sell_side:
            side, plan = "SELL", self._sell_plan(view, legs)
        if plan is None:
            return []
        chosen, size = plan
        times.append(now_ns)
        attempt = _Attempt(
            legs=legs,
            side=side,
            size=size,
            deadline_ns=now_ns + self.config.leg_timeout_ms * NANOS_PER_MILLISECOND,
            filled=dict.fromkeys(legs.assets, 0),
        )
        for asset in legs.assets:
            self._busy[asset] = attempt
        reason = "complete_set.buy" if side == "BUY" else "complete_set.sell"
        return [
            Place(
                asset_id=leg.asset_id,
                side=side,
                price=leg.price,
                size=size,
                time_in_force=self.config.time_in_force,
                reason=reason,
            )
            for leg in chosen
        ]

    def _fresh(self, view: BookView, legs: CompleteSet, now_ns: int) -> bool:
        updated: list[int] = []
        for asset_id in legs.assets:
            asset = view.asset(asset_id)
            if asset is None or not asset.tradeable:
                return False
            updated.append(asset.updated_ns)
        window_ns = self.config.batch_window_ms * NANOS_PER_MILLISECOND
        age_ns = self.config.max_book_age_ms * NANOS_PER_MILLISECOND
        return now_ns - min(updated) <= age_ns and max(updated) - min(updated) <= window_ns

    def _legs(self, view: BookView, legs: CompleteSet, side: Side) -> list[_Leg] | None:
        found: list[_Leg] = []
        for asset_id, market in zip(legs.assets, legs.markets, strict=True):
            book = view.book(asset_id)
            tick = view.tick(asset_id)
            if book is None or not tick:
                return None
            price = book.best_ask if side == "BUY" else book.best_bid
            if price is None or not 0 < price < MICROS:
                return None
            depth = book.size_at("SELL" if side == "BUY" else "BUY", price)
            found.append(_Leg(asset_id, market, price, depth, view.min_size(asset_id), tick))
        return found

    def _edge(self, legs: Sequence[_Leg]) -> int:
        return self.config.min_edge_ticks * max(leg.tick for leg in legs)

    def _size(self, legs: Sequence[_Leg], limit: int) -> int | None:
        """The size to trade on every leg, or None when it is below a venue minimum."""
        price_sum = sum(leg.price for leg in legs)
        size = min(min(leg.depth for leg in legs), limit, self._max_notional * MICROS // price_sum)
        size = round_size_down(size)
        if size <= 0 or any(
            size < leg.min_size or notional(leg.price, size) < MIN_MARKETABLE_NOTIONAL
            for leg in legs
        ):
            return None
        return size

    def _buy_plan(self, view: BookView, sets: CompleteSet) -> tuple[list[_Leg], int] | None:
        legs = self._legs(view, sets, "BUY")
        if legs is None:
            return None
        edge = self._edge(legs)
        price_sum = sum(leg.price for leg in legs)
        if price_sum + edge > MICROS:
            return None  # fees only make it worse
        room = min(
            self._max_position
            - self.portfolio.position(leg.asset_id)
            - self._open_size(leg.asset_id, "BUY")
            for leg in legs
        )
        size = self._size(legs, room)
        if size is None:
            return None
        fee_shares = max(
            taker_fee("BUY", leg.price, size, FeeSchedule.of_market(leg.market)) for leg in legs
        )
        # Exact in micro-units squared: what the set pays, less what it costs, per the edge.
        surplus = (size - fee_shares) * MICROS - price_sum * size
        return (legs, size) if surplus >= edge * size else None

    def _sell_plan(self, view: BookView, sets: CompleteSet) -> tuple[list[_Leg], int] | None:
        legs = self._legs(view, sets, "SELL")
        if legs is None:
            return None
        edge = self._edge(legs)
        price_sum = sum(leg.price for leg in legs)
        if price_sum - edge < MICROS:
            return None
        held = min(
            self.portfolio.position(leg.asset_id) - self._open_size(leg.asset_id, "SELL")
            for leg in legs
        )
        size = self._size(legs, held)
        if size is None:
            return None
        fees = sum(
            taker_fee("SELL", leg.price, size, FeeSchedule.of_market(leg.market)) for leg in legs
        )
        surplus = price_sum * size - fees * MICROS - size * MICROS
        return (legs, size) if surplus >= edge * size else None

    def _open_size(self, asset_id: str, side: Side) -> int:
        return sum(
            order.size - order.filled_size
            for order in self.portfolio.working(asset_id)
            if order.side == side
        )

    # -- one-legged fills --------------------------------------------------------------------
    def _check(self, attempt: _Attempt, now_ns: int) -> list[Action]:
        """Close a finished attempt; past its deadline, run the policy on an uneven one."""
        if now_ns < attempt.deadline_ns:
            return []
        if any(self.portfolio.working(asset) for asset in attempt.legs.assets):
            return []  # orders still working: their outcome decides
        outcome = self._outcome(attempt)
        if outcome is not None:
            for asset in attempt.legs.assets:
                self._busy.pop(asset, None)
            return [self._report(attempt, outcome)] if outcome else []
        attempt.tries += 1
        attempt.deadline_ns = now_ns + self.config.leg_timeout_ms * NANOS_PER_MILLISECOND
        orders: list[Action] = []
        attempt.policy = "unwind"
        if attempt.side == "BUY" and self.config.one_legged_policy == "hedge":
            orders = self._hedge(self.view, attempt)
            if orders:
                attempt.policy = "hedge"
        if not orders:
            orders = (
                self._unwind(self.view, attempt)
                if attempt.side == "BUY"
                else self._finish_sale(self.view, attempt)
            )
        if attempt.tries == 1:
            return [self._report(attempt, "detected"), *orders]
        return orders

    def _outcome(self, attempt: _Attempt) -> str | None:
        """How a finished attempt ends (``""``: evenly, nothing to report), None: not over."""
        uneven = max(attempt.filled.values()) - min(attempt.filled.values())
        if uneven == 0:
            # A whole set, or nothing: after a policy ran, that is its success.
            if attempt.policy is None:
                return ""
            return "hedged" if attempt.policy == "hedge" else "unwound"
        if uneven < max(self.view.min_size(asset) for asset in attempt.legs.assets):
            return "leftover_too_small"
        if attempt.tries >= self.config.one_legged_max_tries:
            return "gave_up"
        return None

    def _report(self, attempt: _Attempt, outcome: str) -> Report:
        """The one-legged attempt and what its policy made of it, for the operator."""
        legs = ", ".join(
            f"{asset} {format_micros(shares)}" for asset, shares in attempt.filled.items()
        )
        policy = attempt.policy or "none"
        return Report(
            kind="one_legged",
            limit=outcome,
            detail=(
                f"{outcome}: set {attempt.legs.key} {attempt.side} "
                f"{format_micros(attempt.size)} filled {legs}; policy {policy}, "
                f"tries {attempt.tries}"
            ),
            condition_id=attempt.legs.markets[0].condition_id,
        )

    def _average_price(self, attempt: _Attempt, asset_id: str) -> int:
        shares, spent = attempt.spent.get(asset_id, (0, 0))
        return spent * MICROS // shares if shares > 0 else 0

    def _hedge(self, view: BookView, attempt: _Attempt) -> list[Action]:
        """Buy the legs that fell short, if the set then costs at most 1 + the loss cap."""
        target = max(attempt.filled.values())
        cost = 0
        orders: list[Place] = []
        for asset_id, shares in attempt.filled.items():
            if shares == target:
                cost += self._average_price(attempt, asset_id)
                continue
            book = view.book(asset_id)
            ask = book.best_ask if book is not None else None
            size = round_size_down(target - shares)
            if ask is None or not view.tradeable(asset_id) or size < view.min_size(asset_id):
                return []
            if notional(ask, size) < MIN_MARKETABLE_NOTIONAL:
                return []
            cost += ask
            orders.append(
                Place(
                    asset_id=asset_id,
                    side="BUY",
                    price=ask,
                    size=size,
                    time_in_force="FAK",
                    reason="one_legged.hedge",
                )
            )
        return list(orders) if cost <= MICROS + self._max_loss else []

    def _unwind(self, view: BookView, attempt: _Attempt) -> list[Action]:
        """Sell what one leg holds beyond the others, no lower than its cost less the cap."""
        low = min(attempt.filled.values())
        orders: list[Action] = []
        for asset_id, shares in attempt.filled.items():
            size = round_size_down(shares - low)
            tick = view.tick(asset_id)
            if size < max(view.min_size(asset_id), 1) or not tick:
                continue
            floor = self._average_price(attempt, asset_id) - self._max_loss
            price = on_grid(ceil_to_tick(floor, tick), tick)
            orders.append(
                Place(
                    asset_id=asset_id,
                    side="SELL",
                    price=price,
                    size=size,
                    time_in_force="FAK",
                    reason="one_legged.unwind",
                )
            )
        return orders

    def _finish_sale(self, view: BookView, attempt: _Attempt) -> list[Action]:
        """A set sold on some legs only: sell the rest at their bids if, with what the sold
        legs brought, the set still fetches at least 1 less the loss cap."""
        target = max(attempt.filled.values())
        proceeds = 0
        orders: list[Action] = []
        for asset_id, shares in attempt.filled.items():
            if shares == target:
                proceeds += self._average_price(attempt, asset_id)
                continue
            book = view.book(asset_id)
            bid = book.best_bid if book is not None else None
            size = round_size_down(target - shares)
            if bid is None or not view.tradeable(asset_id) or size < view.min_size(asset_id):
                return []
            proceeds += bid
            orders.append(
                Place(
                    asset_id=asset_id,
                    side="SELL",
                    price=bid,
                    size=size,
                    time_in_force="FAK",
                    reason="one_legged.unwind",
                )
            )
        return orders if proceeds >= MICROS - self._max_loss else []
