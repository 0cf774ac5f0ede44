"""Simulated order flow: makers adding and canceling liquidity near the top, takers trading.

Each market has a YES fair price that random-walks; makers quote around the book's top, takers
lean toward the fair price, so trades move prices over time. Activity is concentrated like the
real venue's (a few markets busy, most quiet). The sequence of actions is a function of the seed;
how many land in one batch depends on the clock.
"""

from __future__ import annotations

import bisect
import itertools

from polybus.common.money import MICROS
from polybus.sim.book import BUY, SELL, MarketBook, Side
from polybus.sim.exchange import Exchange, MarketState, random_size
from polybus.sim.universe import seeded_random

_MAX_LEVELS_PER_SIDE = 40
_MIN_LEVELS_PER_SIDE = 3


class OrderFlow:
    """Generates flow actions into the exchange, ``rate`` per second on average."""

    def __init__(self, exchange: Exchange, *, seed: int, trade_probability: float) -> None:
        self.exchange = exchange
        self.rng = seeded_random(seed, "flow")
        self.trade_probability = trade_probability
        self._carry = 0.0
        self._refresh_weights()

    def _refresh_weights(self) -> None:
        # Zipf-like activity: market k (in a seeded shuffled order) gets weight 1/(k+1)^0.8.
        states = [s for s in self.exchange.markets.values() if not s.info.closed]
        order = seeded_random(self.exchange.settings.seed, "activity").sample(states, len(states))
        self._states = order
        self._cumulative = list(
            itertools.accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(len(order)))
        )
        self._market_count = len(self.exchange.markets)

    def actions_due(self, rate: float, elapsed_s: float) -> int:
        """How many actions an interval of ``elapsed_s`` at ``rate``/s owes (keeps fractions)."""
        self._carry += rate * elapsed_s
        count = int(self._carry)
        self._carry -= count
        return count

    def run_actions(self, count: int) -> None:
        """Run ``count`` actions inside one batch (one timestamp)."""
        if count <= 0:
            return
        if len(self.exchange.markets) != self._market_count or any(
            s.info.closed for s in self._states
        ):
            self._refresh_weights()
        if not self._states:
            return
        chosen = self.rng.choices(self._states, cum_weights=self._cumulative, k=count)
        with self.exchange.batch():
            for state in chosen:
                self.step(state)

    def step(self, state: MarketState) -> None:
        rng = self.rng
        book = state.book
        tick = book.tick_size
        state.fair = min(max(state.fair + round(rng.gauss(0, 0.15) * tick), tick), MICROS - tick)
        bids, asks = book.bid_prices, book.ask_prices
        if len(bids) < _MIN_LEVELS_PER_SIDE:
            self._add(book, BUY)
            return
        if len(asks) < _MIN_LEVELS_PER_SIDE:
            self._add(book, SELL)
            return
        roll = rng.random()
        if roll < self.trade_probability:
            mid = (bids[-1] + asks[0]) // 2
            up = 0.5 + max(min((state.fair - mid) / (8 * tick), 0.35), -0.35)
            self._take(book, BUY if rng.random() < up else SELL)
        elif roll < self.trade_probability + (1 - self.trade_probability) * 0.52:
            self._add(book, BUY if rng.random() < 0.5 else SELL)
        else:
            side: Side = BUY if rng.random() < 0.5 else SELL
            if len(book.prices(side)) > _MAX_LEVELS_PER_SIDE:
                self._cancel_far(book, side)
            else:
                self._cancel(book, side)

    def _origin(self) -> int:
        return 0 if self.rng.random() < 0.5 else 1

    def _add(self, book: MarketBook, side: Side) -> None:
        rng, tick = self.rng, book.tick_size
        best_bid, best_ask = book.best_bid(), book.best_ask()
        depth = int(rng.expovariate(0.45))
        if side == BUY:
            top = best_bid if best_bid is not None else (best_ask or MICROS // 2) - tick
            price = top - depth * tick
            # Sometimes improve inside the spread, never cross it.
            if best_ask is not None and rng.random() < 0.15 and best_ask - top > tick:
                price = top + tick
            if best_ask is not None:
                price = min(price, best_ask - tick)
        else:
            top = best_ask if best_ask is not None else (best_bid or MICROS // 2) + tick
            price = top + depth * tick
            if best_bid is not None and rng.random() < 0.15 and top - best_bid > tick:
                price = top - tick
            if best_bid is not None:
                price = max(price, best_bid + tick)
        price = price // tick * tick
        if not tick <= price <= MICROS - tick:
            return
        self.exchange.add_liquidity(book, side, price, random_size(rng), self._origin())

    def _cancel(self, book: MarketBook, side: Side) -> None:
        rng = self.rng
        prices = book.prices(side)
        if not prices:
            return
        near = min(len(prices), 8)
        offset = min(int(rng.expovariate(0.5)), near - 1)
        price = prices[-1 - offset] if side == BUY else prices[offset]
        level = book.levels(side)[price]
        available = level.anonymous_size()
        if not available:
            return
        size = available if rng.random() < 0.45 else max(available * rng.randint(1, 9) // 10, 1)
        size = size // 10_000 * 10_000 or available
        self.exchange.cancel_liquidity(book, side, price, size, self._origin())

    def _cancel_far(self, book: MarketBook, side: Side) -> None:
        prices = book.prices(side)
        price = prices[0] if side == BUY else prices[-1]
        size = book.levels(side)[price].anonymous_size()
        if size:
            self.exchange.cancel_liquidity(book, side, price, size, self._origin())

    def _take(self, book: MarketBook, side: Side) -> None:
        rng, tick = self.rng, book.tick_size
        opposite = book.ask_prices if side == BUY else book.bid_prices
        if not opposite:
            return
        best = opposite[0] if side == BUY else opposite[-1]
        reach = int(rng.expovariate(1.2)) * tick
        limit = min(best + reach, MICROS - tick) if side == BUY else max(best - reach, tick)
        size = max(random_size(rng, 60.0), 5 * MICROS)
        self.exchange.take(book, side, limit, size, self._origin())

    def levels_between(self, book: MarketBook, side: Side, low: int, high: int) -> list[int]:
        prices = book.prices(side)
        return prices[bisect.bisect_left(prices, low) : bisect.bisect_right(prices, high)]
