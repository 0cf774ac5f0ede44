"""Venue numbers to polybus numbers, at the ingest boundary (DESIGN §2).

Prices come from a small set (the tick grid in [0, 1]), so their parses are cached: the hot
path turns ``"0.389"`` into ``389_000`` with one dict lookup, and every book shares the same
int objects for its prices. Sizes vary too much to cache and are parsed exactly each time.
"""

from __future__ import annotations

from polybus.common.events import Side
from polybus.common.money import (
    MICROS,
    FixedPointError,
    format_micros,
    parse_micros,
    parse_price,
    parse_size,
    parse_tick_size,
)

__all__ = [
    "FixedPointError",
    "bbo_price",
    "format_micros",
    "parse_micros",
    "parse_side",
    "parse_size",
    "parse_tick_size",
    "price_micros",
    "price_text",
    "size_micros",
    "size_text",
    "timestamp_ms",
]

_PRICE_CACHE_MAX = 200_000
_prices: dict[str, int] = {}
_price_texts: dict[int, str] = {}


def price_micros(text: str) -> int:
    """A venue price string in micro-units (cached; raises FixedPointError when invalid)."""
    value = _prices.get(text)
    if value is None:
        value = parse_price(text)
        if len(_prices) < _PRICE_CACHE_MAX:
            _prices[text] = value
    return value


def price_text(micros: int) -> str:
    """A price as the venue prints it (``"0.389"``), cached."""
    text = _price_texts.get(micros)
    if text is None:
        text = format_micros(micros)
        if len(_price_texts) < _PRICE_CACHE_MAX:
            _price_texts[micros] = text
    return text


_SIZE_TEXT_CACHE_MAX = 100_000
_size_texts: dict[int, str] = {}
_MAX_WHOLE_DIGITS = 13  # SIZE_MAX is 10**12 shares


_SIZE_CACHE_MAX = 100_000
_sizes: dict[str, int] = {"0": 0}


def size_micros(text: str) -> int:
    """A venue size string in micro-units, exactly. Sizes repeat (round lots, re-posted
    orders, ``"0"`` for a removed level), so parses are cached; the rest take a fast path."""
    value = _sizes.get(text)
    if value is not None:
        return value
    whole, dot, frac = text.partition(".")
    if (
        whole.isdigit()
        and whole.isascii()
        and len(whole) <= _MAX_WHOLE_DIGITS
        and (not dot or (frac.isdigit() and frac.isascii() and len(frac) <= 6))
    ):
        value = int(whole) * MICROS + (int(frac) * _SCALE[len(frac)] if dot else 0)
    else:
        value = parse_size(text)
    if len(_sizes) >= _SIZE_CACHE_MAX:
        _sizes.clear()
        _sizes["0"] = 0
    _sizes[text] = value
    return value


_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)


def size_text(micros: int) -> str:
    """A size as the venue prints it (``"3687.87"``), cached for the hash's unchanged levels."""
    text = _size_texts.get(micros)
    if text is None:
        whole, frac = divmod(micros, MICROS)
        text = f"{whole}.{frac:06d}".rstrip("0") if frac else str(whole)
        if len(_size_texts) >= _SIZE_TEXT_CACHE_MAX:
            _size_texts.clear()
        _size_texts[micros] = text
    return text


def bbo_price(text: str, empty: str) -> int | None:
    """A ``best_bid``/``best_ask`` value: ``"0"`` (bid) / ``"1"`` (ask) mean an empty side."""
    if text == empty:
        return None
    return price_micros(text)


def parse_side(text: str) -> Side:
    if text == "BUY":
        return "BUY"
    if text == "SELL":
        return "SELL"
    raise FixedPointError(f"side {text!r} is neither BUY nor SELL")


def timestamp_ms(text: str) -> int:
    """The venue's millisecond timestamp string as an int."""
    if not text.isascii() or not text.isdigit():
        raise FixedPointError(f"timestamp {text!r} is not a whole number of milliseconds")
    return int(text)


def min_order_size_text(micros: int) -> str:
    return format_micros(micros)


def parse_optional_micros(text: str, what: str) -> int | None:
    return parse_micros(text, what=what, minimum=0) if text else None
