"""Prices on the venue's grid, fair values and settings amounts, in exact micro-units.

Shared by the built-in strategies. Everything is integer arithmetic (DESIGN §2).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from polybus.common.book import OrderBook
from polybus.common.money import MICROS, parse_micros

SHARE_STEP = 10_000
"""Order sizes carry at most 2 decimals of a share (VENUE §6.3)."""

MIN_MARKETABLE_NOTIONAL = MICROS
"""FOK/FAK orders must be worth at least 1 pUSD (VENUE §6.3)."""

NANOS_PER_MILLISECOND = 1_000_000

Amount = Annotated[str, msgspec.Meta(pattern=r"^[0-9]+(\.[0-9]{1,6})?$")]
"""A non-negative decimal amount (pUSD, shares or a price) as written in the config."""


def micros(text: str, key: str) -> int:
    """A settings :data:`Amount` in micro-units (``key`` names it in the error)."""
    return parse_micros(text, what=key, minimum=0)


def floor_to_tick(price: int, tick: int) -> int:
    return price - price % tick


def ceil_to_tick(price: int, tick: int) -> int:
    return -(-price // tick) * tick


def on_grid(price: int, tick: int) -> int:
    """``price`` kept inside the venue's range ``[tick, 1 - tick]`` (VENUE §6.4)."""
    return min(max(price, tick), MICROS - tick)


def round_size_down(size: int) -> int:
    return size - size % SHARE_STEP


def mid_price(book: OrderBook) -> int | None:
    """The mid of the best bid and ask, rounded down to a micro-unit; None if a side is empty."""
    bid, ask = book.best_bid, book.best_ask
    if bid is None or ask is None:
        return None
    return (bid + ask) // 2


def microprice(book: OrderBook, levels: int) -> int | None:
    """The depth-weighted microprice over the top ``levels`` of each side.

    ``(bid x ask_depth + ask x bid_depth) / (bid_depth + ask_depth)``: the price leans toward
    the side with less depth, where the next trade is likelier to move it. Rounded down.
    """
    bid, ask = book.best_bid, book.best_ask
    if bid is None or ask is None:
        return None
    bid_depth = sum(size for _, size in book.bid_levels()[:levels])
    ask_depth = sum(size for _, size in book.ask_levels()[:levels])
    return (bid * ask_depth + ask * bid_depth) // (bid_depth + ask_depth)
