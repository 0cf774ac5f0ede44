"""An exact L2 order book for one asset, in fixed-point micro-units (DESIGN §2).

The ingest keeps one per subscribed asset; strategies and the paper executor rebuild theirs
from the bus with :meth:`OrderBook.apply_snapshot` / :meth:`OrderBook.apply_delta`. Prices and
sizes are ``int`` micro-units; a level's size is absolute (the venue's ``price_change`` says
"the level at p is now s"), and a size of 0 removes the level.

Each side is a plain ``dict`` of price -> size with the best price kept incrementally: setting
a level is O(1), removing the best level rescans that side once (books hold tens of levels).
Sorted views are built on demand, for snapshots and hashing only. Thousands of books live in
one process, so a book holds nothing else: two dicts and two optional ints.
"""

from __future__ import annotations

from collections.abc import Iterable

from polybus.common.events import BookDelta, BookSnapshot, Level, Side


class OrderBook:
    """One asset's book: bids and asks as price -> size (micro-units), best prices cached."""

    __slots__ = ("_best_ask", "_best_bid", "asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._best_bid: int | None = None
        self._best_ask: int | None = None

    # -- reading -----------------------------------------------------------------------------
    @property
    def best_bid(self) -> int | None:
        """The highest bid price, or None when there are no bids."""
        return self._best_bid

    @property
    def best_ask(self) -> int | None:
        """The lowest ask price, or None when there are no asks."""
        return self._best_ask

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (the venue can be, briefly)."""
        return (
            self._best_bid is not None
            and self._best_ask is not None
            and self._best_bid >= self._best_ask
        )

    def size_at(self, side: Side, price: int) -> int:
        """The size resting at ``price`` on ``side`` (0 if no level)."""
        return (self.bids if side == "BUY" else self.asks).get(price, 0)

    def bid_levels(self) -> list[tuple[int, int]]:
        """Bids best first (descending price)."""
        return sorted(self.bids.items(), reverse=True)

    def ask_levels(self) -> list[tuple[int, int]]:
        """Asks best first (ascending price)."""
        return sorted(self.asks.items())

    def levels(self) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """(bids, asks) best first, as event :class:`Level` tuples."""
        return (
            tuple(Level(price, size) for price, size in self.bid_levels()),
            tuple(Level(price, size) for price, size in self.ask_levels()),
        )

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderBook) and self.bids == other.bids and self.asks == other.asks

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"OrderBook(bids={len(self.bids)}, asks={len(self.asks)}, "
            f"best_bid={self._best_bid}, best_ask={self._best_ask})"
        )

    # -- writing -----------------------------------------------------------------------------
    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._best_bid = None
        self._best_ask = None

    def replace(self, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]]) -> None:
        """Replace the whole book (a snapshot). Order is free; a repeated price keeps its last
        size, and levels of size 0 are dropped."""
        self.bids = {price: size for price, size in dict(bids).items() if size > 0}
        self.asks = {price: size for price, size in dict(asks).items() if size > 0}
        self._best_bid = max(self.bids) if self.bids else None
        self._best_ask = min(self.asks) if self.asks else None

    def set_bid(self, price: int, size: int) -> None:
        """Set the bid level at ``price`` to ``size`` (absolute; 0 removes it)."""
        bids = self.bids
        if size:
            bids[price] = size
            best = self._best_bid
            if best is None or price > best:
                self._best_bid = price
        elif bids.pop(price, None) is not None and price == self._best_bid:
            self._best_bid = max(bids) if bids else None

    def set_ask(self, price: int, size: int) -> None:
        """Set the ask level at ``price`` to ``size`` (absolute; 0 removes it)."""
        asks = self.asks
        if size:
            asks[price] = size
            best = self._best_ask
            if best is None or price < best:
                self._best_ask = price
        elif asks.pop(price, None) is not None and price == self._best_ask:
            self._best_ask = min(asks) if asks else None

    def set_level(self, side: Side, price: int, size: int) -> None:
        """Set a level on ``side`` (BUY = bids, SELL = asks) to an absolute size."""
        if side == "BUY":
            self.set_bid(price, size)
        else:
            self.set_ask(price, size)

    # -- rebuilding from the bus -------------------------------------------------------------
    def apply_snapshot(self, snapshot: BookSnapshot) -> None:
        """Replace this book with a published :class:`BookSnapshot`."""
        self.replace(
            ((level.price, level.size) for level in snapshot.bids),
            ((level.price, level.size) for level in snapshot.asks),
        )

    def apply_delta(self, delta: BookDelta) -> None:
        """Apply a published :class:`BookDelta` (its levels' new absolute sizes)."""
        for change in delta.changes:
            self.set_level(change.side, change.price, change.size)
