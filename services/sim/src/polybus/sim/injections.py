"""Timed book injections: mispricings (arbitrage for strategies) and crossed-book bursts.

Both add simulated liquidity that the matching engine would never let rest (it is placed
without matching), publish it like any other change, and take it back after a while. The
liquidity is real while it lasts: orders that cross it fill.

- A neg-risk mispricing lowers the YES asks of an event's outcomes so that they sum to at
  most ``1 - edge``: buying one YES of each outcome costs less than the 1 pUSD the set pays.
  The asks stay above the bids where the bids leave room, otherwise the largest cross.
- A binary mispricing (and the crossed-book fault) puts a YES ask below the YES bid, i.e. YES
  ask + NO ask < 1: the book is crossed, as the venue's briefly are (VENUE.md §9 H8).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from polybus.common.money import MICROS
from polybus.sim.book import SELL, MarketBook
from polybus.sim.exchange import Exchange, random_size
from polybus.sim.order_checks import MARKETABLE_MIN
from polybus.sim.universe import seeded_random


@dataclass(frozen=True)
class Injected:
    """Liquidity added by an injection: taken back by :meth:`Injections.restore`."""

    book: MarketBook
    price: int
    size: int


class Injections:
    """Places injections and owns their timers (``restore_all`` ends them early)."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self._timers: dict[int, tuple[asyncio.TimerHandle, Callable[[], None]]] = {}
        self._next_id = 0

    def _schedule(self, duration_ms: int, restore: Callable[[], None]) -> None:
        self._next_id += 1
        key = self._next_id

        def fire() -> None:
            self._timers.pop(key, None)
            restore()

        handle = asyncio.get_running_loop().call_later(duration_ms / 1000, fire)
        self._timers[key] = (handle, restore)

    def restore_all(self) -> None:
        """End every running injection now (pausing the flow makes the books quiescent)."""
        timers, self._timers = self._timers, {}
        for handle, restore in timers.values():
            handle.cancel()
            restore()

    def _take_back(self, injected: list[Injected]) -> None:
        with self.exchange.batch():
            for item in injected:
                self.exchange.cancel_liquidity(item.book, SELL, item.price, item.size, 0)

    def crossed(self, book: MarketBook, *, duration_ms: int, levels: int = 2) -> list[Injected]:
        """YES asks at and below the best bid: a crossed book (YES ask + NO ask < 1)."""
        best_bid = book.best_bid()
        tick = book.tick_size
        if best_bid is None or best_bid <= tick:
            return []
        injected = []
        rng = self._rng()
        with self.exchange.batch():
            for depth in range(levels):
                price = best_bid - depth * tick
                if price < tick:
                    break
                size = random_size(rng, 40.0)
                self.exchange.add_liquidity(book, SELL, price, size, 0)
                injected.append(Injected(book, price, size))
        self._schedule(duration_ms, lambda: self._take_back(injected))
        return injected

    def neg_risk(self, books: list[MarketBook], *, edge: int, duration_ms: int) -> list[Injected]:
        """Lower the outcomes' YES asks so that they sum to at most ``1 - edge``.

        Every outcome's book changes in the one batch: an ask that needs no cut gets more
        size at its price. A strategy that reads a set only when all its legs changed
        together (so that a venue batch half received is not taken for a price) then sees
        the mispricing whole, as it would from one venue batch. Every leg gets at least the
        shares that a marketable order on the cheapest outcome must buy (it spends 1 pUSD
        or more, VENUE §6.3): buying the set takes as many shares of every leg, so a few
        shares on one leg would leave the whole mispricing untradeable."""
        asks = [ask for book in books if (ask := book.best_ask()) is not None]
        if not books or len(asks) < len(books):
            return []
        discounted = _discounted_asks(books, asks, MICROS - edge)
        prices = [min(price, ask) for price, ask in zip(discounted, asks, strict=True)]
        one_set = -(-MARKETABLE_MIN * MICROS // min(prices))
        injected = []
        rng = self._rng()
        with self.exchange.batch():
            for book, price in zip(books, prices, strict=True):
                size = max(random_size(rng, 30.0), book.min_order_size, one_set)
                self.exchange.add_liquidity(book, SELL, price, size, 0)
                injected.append(Injected(book, price, size))
        self._schedule(duration_ms, lambda: self._take_back(injected))
        return injected

    def _rng(self) -> random.Random:
        return seeded_random(self.exchange.settings.seed, "injection", self._next_id)


def _discounted_asks(books: list[MarketBook], asks: list[int], target: int) -> list[int]:
    """New YES asks summing to at most ``target``: as close to the current asks as that
    allows, above each book's best bid while possible (then the largest ones go lower, and
    their books cross: the venue's bids can already sum to about 1)."""
    ticks = [book.tick_size for book in books]
    floors = [(book.best_bid() or 0) + tick for book, tick in zip(books, ticks, strict=True)]
    prices = list(floors)
    room = target - sum(floors)
    if room > 0:
        spans = [
            max(ask - tick - floor, 0) for ask, tick, floor in zip(asks, ticks, floors, strict=True)
        ]
        total = sum(spans)
        if total:
            prices = [
                floor + min(span, room * span // total) // tick * tick
                for floor, span, tick in zip(floors, spans, ticks, strict=True)
            ]
    deficit = sum(prices) - target
    for index in sorted(range(len(prices)), key=lambda i: -prices[i]):
        if deficit <= 0:
            break
        tick = ticks[index]
        cut = min(-(-deficit // tick) * tick, prices[index] - tick)
        prices[index] -= cut
        deficit -= cut
    return prices
