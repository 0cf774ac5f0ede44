"""One market's order book, kept once in YES terms and mirrored for the NO token.

Polymarket matches complementary orders, so the YES and NO books of a market are one book seen
from two sides: a bid at ``p`` on YES is an ask at ``1 - p`` on NO. :class:`MarketBook` keeps the
YES bids and asks; every NO view, level, best price and hash is derived. Each price level is a
FIFO queue of entries: simulated (anonymous) liquidity and real resting orders, so a resting
order fills in time priority behind the liquidity that was there before it.

Every mutation reports the level's new absolute size (as the venue prints it) to
``on_change``; the exchange turns those into ``price_change`` entries. Each side keeps its
levels' JSON beside them, so a hash or a ``book`` frame is one ``join``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Final, Literal

from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import format_price, format_size, level_json

Side = Literal["BUY", "SELL"]
"""In YES terms: BUY is a bid, SELL an ask."""

BUY: Final = "BUY"
SELL: Final = "SELL"

_PRICE_TEXT: dict[int, str] = {}


def price_text(price: int) -> str:
    """The venue's text for a price (cached: there are at most 10,001 of them)."""
    text = _PRICE_TEXT.get(price)
    if text is None:
        text = _PRICE_TEXT[price] = format_price(price)
    return text


class QueueEntry:
    """Part of a level: ``order`` is a resting order, or None for simulated liquidity."""

    __slots__ = ("order", "size")

    def __init__(self, order: object | None, size: int) -> None:
        self.order = order
        self.size = size


class Level:
    __slots__ = ("price", "queue", "size")

    def __init__(self, price: int) -> None:
        self.price = price
        self.size = 0
        self.queue: list[QueueEntry] = []

    def add(self, order: object | None, size: int) -> None:
        queue = self.queue
        if order is None and queue and queue[-1].order is None:
            queue[-1].size += size
        else:
            queue.append(QueueEntry(order, size))
        self.size += size

    def anonymous_size(self) -> int:
        return sum(entry.size for entry in self.queue if entry.order is None)

    def cancel_anonymous(self, size: int) -> int:
        """Remove up to ``size`` simulated liquidity, newest first; returns what was removed."""
        removed = 0
        queue = self.queue
        for index in range(len(queue) - 1, -1, -1):
            entry = queue[index]
            if entry.order is not None:
                continue
            take = min(entry.size, size - removed)
            entry.size -= take
            removed += take
            if entry.size == 0:
                del queue[index]
            if removed == size:
                break
        self.size -= removed
        return removed

    def cancel_order(self, order: object) -> int:
        for index, entry in enumerate(self.queue):
            if entry.order is order:
                del self.queue[index]
                self.size -= entry.size
                return entry.size
        return 0

    def take(self, size: int) -> Iterator[tuple[object | None, int]]:
        """Consume up to ``size`` from the front; yields (order, filled) per entry touched."""
        queue = self.queue
        while size and queue:
            entry = queue[0]
            filled = min(entry.size, size)
            entry.size -= filled
            self.size -= filled
            size -= filled
            if entry.size == 0:
                del queue[0]
            yield entry.order, filled


class _SideLevels:
    """One side's levels, ascending by price, with each level's JSON for YES and for NO kept
    alongside (so a hash or a ``book`` frame is one ``join``)."""

    __slots__ = ("joined", "levels", "no_json", "prices", "yes_json")

    def __init__(self) -> None:
        self.prices: list[int] = []
        self.levels: dict[int, Level] = {}
        self.yes_json: list[bytes] = []
        self.no_json: list[bytes] = []
        self.joined: list[bytes | None] = [None, None]

    def level(self, price: int) -> Level:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = Level(price)
            index = bisect.bisect_left(self.prices, price)
            self.prices.insert(index, price)
            self.yes_json.insert(index, b"")
            self.no_json.insert(index, b"")
        return level

    def refresh(self, level: Level) -> str:
        """Record a level's new size (dropping the level at zero); returns the size as the
        venue prints it."""
        price = level.price
        index = bisect.bisect_left(self.prices, price)
        self.joined = [None, None]
        if level.size:
            size = format_size(level.size)
            self.yes_json[index] = level_json(price_text(price), size)
            self.no_json[index] = level_json(price_text(MICROS - price), size)
            return size
        del self.levels[price]
        del self.prices[index]
        del self.yes_json[index]
        del self.no_json[index]
        return "0"


ChangeSink = Callable[["MarketBook", Side, int, str, int], None]
"""``(book, yes_side, yes_price, new_size_text, origin_token_index)``."""


class Fill:
    """One piece of a match: the resting entry's ``order`` (None: simulated liquidity)."""

    __slots__ = ("order", "price", "size")

    def __init__(self, order: object | None, price: int, size: int) -> None:
        self.order = order
        self.price = price
        self.size = size


class MarketBook:
    """The YES book of one market; NO is its mirror. Prices and sizes in micros."""

    def __init__(
        self,
        *,
        condition_id: str,
        yes_id: str,
        no_id: str,
        tick_size: int,
        min_order_size: int,
        neg_risk: bool,
        on_change: ChangeSink,
        protocol_v2: bool = False,
    ) -> None:
        self.condition_id = condition_id
        self.token_ids = (yes_id, no_id)
        self.tick_size = tick_size
        self.min_order_size = min_order_size
        self.neg_risk = neg_risk
        self.protocol_v2 = protocol_v2
        """A Protocol V2 market: position ids, ExchangeV3, EIP-712 domain "3"."""
        self._bids = _SideLevels()
        self._asks = _SideLevels()
        self.bids = self._bids.levels
        self.asks = self._asks.levels
        self.bid_prices = self._bids.prices
        """Ascending; the best bid is last."""
        self.ask_prices = self._asks.prices
        """Ascending; the best ask is first."""
        self.last_trade_price = 0
        """YES terms; the NO token's is ``1 - this``."""
        self.timestamp = "0"
        """The timestamp of the last batch that changed this book."""
        self.hashes = ("", "")
        """YES and NO book hashes as of :attr:`timestamp`."""
        self.published_top = ("", "")
        """The YES best bid/ask last published (``best_bid_ask`` goes out when it moves)."""
        self.on_change = on_change

    # -- reading -------------------------------------------------------------------------------
    def token_index(self, asset_id: str) -> int:
        return self.token_ids.index(asset_id)

    def best_bid(self) -> int | None:
        return self.bid_prices[-1] if self.bid_prices else None

    def best_ask(self) -> int | None:
        return self.ask_prices[0] if self.ask_prices else None

    def best_texts(self, token: int) -> tuple[str, str]:
        """(best_bid, best_ask) of a token as the venue prints them; ``"0"``/``"1"`` if empty."""
        bids, asks = self.bid_prices, self.ask_prices
        if token == 0:
            return (
                price_text(bids[-1]) if bids else "0",
                price_text(asks[0]) if asks else "1",
            )
        return (
            price_text(MICROS - asks[0]) if asks else "0",
            price_text(MICROS - bids[-1]) if bids else "1",
        )

    def view(self, token: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) of a token, best first, as (price, size)."""
        bids = [(p, self.bids[p].size) for p in reversed(self.bid_prices)]
        asks = [(p, self.asks[p].size) for p in self.ask_prices]
        if token == 0:
            return bids, asks
        return (
            [(MICROS - p, size) for p, size in asks],
            [(MICROS - p, size) for p, size in bids],
        )

    def wire_levels(self, token: int) -> tuple[bytes, bytes]:
        """(bids ascending, asks descending), each the comma-joined JSON levels: the venue's
        wire order."""
        if token == 0:
            return self._joined(self._bids, 0, False), self._joined(self._asks, 0, True)
        # NO bids ascending are YES asks descending; NO asks descending are YES bids ascending.
        return self._joined(self._asks, 1, True), self._joined(self._bids, 1, False)

    @staticmethod
    def _joined(side: _SideLevels, token: int, descending: bool) -> bytes:
        joined = side.joined[token]
        if joined is None:
            levels = side.yes_json if token == 0 else side.no_json
            joined = side.joined[token] = b",".join(reversed(levels) if descending else levels)
        return joined

    def level_count(self) -> int:
        return len(self.bid_prices) + len(self.ask_prices)

    def size_at(self, side: Side, price: int) -> int:
        level = self.levels(side).get(price)
        return level.size if level is not None else 0

    def crosses(self, side: Side, price: int) -> bool:
        """Whether a YES order at ``price`` would trade on arrival."""
        if side == BUY:
            return bool(self.ask_prices) and price >= self.ask_prices[0]
        return bool(self.bid_prices) and price <= self.bid_prices[-1]

    def levels(self, side: Side) -> dict[int, Level]:
        return self.bids if side == BUY else self.asks

    def prices(self, side: Side) -> list[int]:
        return self.bid_prices if side == BUY else self.ask_prices

    # -- writing ---------------------------------------------------------------------------
    def _side(self, side: Side) -> _SideLevels:
        return self._bids if side == BUY else self._asks

    def add(self, side: Side, price: int, size: int, order: object | None, origin: int) -> None:
        """Rest ``size`` at ``price`` (no matching: callers match first)."""
        levels = self._side(side)
        level = levels.level(price)
        level.add(order, size)
        self.on_change(self, side, price, levels.refresh(level), origin)

    def cancel_anonymous(self, side: Side, price: int, size: int, origin: int) -> int:
        levels = self._side(side)
        level = levels.levels.get(price)
        if level is None:
            return 0
        removed = level.cancel_anonymous(size)
        if removed:
            self.on_change(self, side, price, levels.refresh(level), origin)
        return removed

    def cancel_order(self, side: Side, price: int, order: object, origin: int) -> int:
        levels = self._side(side)
        level = levels.levels.get(price)
        if level is None:
            return 0
        removed = level.cancel_order(order)
        if removed:
            self.on_change(self, side, price, levels.refresh(level), origin)
        return removed

    def take(self, side: Side, limit: int, size: int, origin: int) -> list[Fill]:
        """Match a YES ``side`` order up to ``limit`` for ``size`` against the other side."""
        fills: list[Fill] = []
        other: Side = SELL if side == BUY else BUY
        levels = self._side(other)
        prices = levels.prices
        while size and prices:
            price = prices[0] if side == BUY else prices[-1]
            if (price > limit) if side == BUY else (price < limit):
                break
            level = levels.levels[price]
            for order, filled in level.take(size):
                fills.append(Fill(order, price, filled))
                size -= filled
            self.on_change(self, other, price, levels.refresh(level), origin)
        return fills
