"""Venue messages to polybus events, at the ingest boundary (DESIGN §2, §3; STYLE §3).

One ``parse_*`` function per venue message that maps to an event of its own (``book`` levels,
``last_trade_price``, ``tick_size_change``, ``best_bid_ask``, ``market_resolved``); a
``price_change`` is applied entry by entry on the engine's hot path (``batches``) with the number
parsers below, and leaves as the BookDelta of its batch. :func:`envelope` is the one place the
market-data envelope is filled in.

Prices come from a small set (the tick grid in [0, 1]), so their parses are cached: the hot
path turns ``"0.389"`` into ``389_000`` with one dict lookup, and every book shares the same
int objects for its prices. Sizes repeat less, so their cache is cleared when it fills up.
Every rule (what is a valid number, how it prints) is :mod:`polybus.common.money`'s.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

from polybus.common.events import MarketResolved, Side, TickSizeChanged, Trade
from polybus.common.money import (
    MICROS,
    FixedPointError,
    format_micros,
    parse_price,
    parse_size,
    parse_tick_size,
)
from polybus.common.polymarket.market_channel import (
    PolymarketBestBidAsk,
    PolymarketBook,
    PolymarketLastTradePrice,
    PolymarketMarketResolved,
    PolymarketTickSizeChange,
)
from polybus.common.polymarket.rest import PolymarketOrderBookSummary

__all__ = [
    "NS_PER_MS",
    "PRICES",
    "FixedPointError",
    "MarketDataEnvelope",
    "MarketDataStream",
    "bbo_price",
    "envelope",
    "parse_best_bid_ask",
    "parse_book_levels",
    "parse_market_resolved",
    "parse_side",
    "parse_size",
    "parse_tick_size",
    "parse_tick_size_change",
    "parse_trade",
    "price_micros",
    "price_text",
    "size_micros",
    "size_text",
    "timestamp_ms",
]

NS_PER_MS = 1_000_000

_PRICE_CACHE_MAX = 200_000
PRICES: dict[str, int] = {}
"""Parsed venue prices by their text; the hot path reads it directly."""
_price_texts: dict[int, str] = {}


def price_micros(text: str) -> int:
    """A venue price string in micro-units (cached; raises FixedPointError when invalid)."""
    value = PRICES.get(text)
    if value is None:
        value = parse_price(text)
        if len(PRICES) < _PRICE_CACHE_MAX:
            PRICES[text] = value
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
    """A venue size string in micro-units, exactly as :func:`parse_size` reads it. Sizes
    repeat (round lots, re-posted orders, ``"0"`` for a removed level), so parses are cached;
    plain ``digits[.digits]`` take a fast path, anything else goes to ``parse_size`` (a test
    holds the two equal)."""
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
        text = format_micros(micros)
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


class MarketDataStream(Protocol):
    """What an envelope needs to know about the asset's book stream (an ``AssetTrack``)."""

    @property
    def asset_id(self) -> str: ...
    @property
    def condition_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def epoch(self) -> int: ...


class MarketDataEnvelope(TypedDict):
    event_id: str
    ts_event: int
    ts_init: int
    asset_id: str
    condition_id: str
    seq: int
    epoch: int


def envelope(
    stream: MarketDataStream, event_id: str, ts_event: int, ts_init: int
) -> MarketDataEnvelope:
    """The envelope of a market-data event of the asset, at the stream's current seq/epoch.

    The per-batch BookDelta fills these fields in inline instead: building and unpacking this
    dict costs ~0.5 µs, a tenth of the per-entry budget (bench/ingest.py)."""
    return {
        "event_id": event_id,
        "ts_event": ts_event,
        "ts_init": ts_init,
        "asset_id": stream.asset_id,
        "condition_id": stream.condition_id,
        "seq": stream.seq,
        "epoch": stream.epoch,
    }


def parse_book_levels(
    message: PolymarketBook | PolymarketOrderBookSummary,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """A ``book`` (socket) or ``/book`` (REST) as (price, size) bids and asks."""
    bids = [(price_micros(level.price), parse_size(level.size)) for level in message.bids]
    asks = [(price_micros(level.price), parse_size(level.size)) for level in message.asks]
    return bids, asks


def parse_trade(message: PolymarketLastTradePrice, stream: MarketDataStream, ts_init: int) -> Trade:
    """A ``last_trade_price`` as a Trade (a trade does not advance the stream's seq)."""
    price = price_micros(message.price)
    size = parse_size(message.size)
    side = parse_side(message.side)
    timestamp = timestamp_ms(message.timestamp)
    fee = int(message.fee_rate_bps) if message.fee_rate_bps.isdigit() else 0
    # The venue's trade has no id on this channel: its transaction hash where it has one.
    identity = message.transaction_hash or f"{message.price}.{message.size}.{side}"
    return Trade(
        **envelope(
            stream,
            f"pm.trade.{stream.asset_id}.{timestamp}.{identity}",
            timestamp * NS_PER_MS,
            ts_init,
        ),
        price=price,
        size=size,
        side=side,
        fee_rate_bps=fee,
    )


def parse_tick_size_change(
    message: PolymarketTickSizeChange, stream: MarketDataStream, ts_init: int
) -> TickSizeChanged:
    """A ``tick_size_change`` as a TickSizeChanged, at the stream's (already advanced) seq."""
    new_tick = parse_tick_size(message.new_tick_size)
    old_tick = parse_tick_size(message.old_tick_size)
    timestamp = timestamp_ms(message.timestamp)
    return TickSizeChanged(
        **envelope(
            stream,
            f"pm.tick.{stream.asset_id}.{timestamp}.{message.new_tick_size}",
            timestamp * NS_PER_MS,
            ts_init,
        ),
        old_tick_size=old_tick,
        new_tick_size=new_tick,
    )


def parse_best_bid_ask(message: PolymarketBestBidAsk) -> tuple[int, int | None, int | None]:
    """A ``best_bid_ask``: (timestamp ms, best bid, best ask), None for an empty side."""
    return (
        timestamp_ms(message.timestamp),
        bbo_price(message.best_bid, "0"),
        bbo_price(message.best_ask, "1"),
    )


def parse_market_resolved(message: PolymarketMarketResolved, ts_init: int) -> MarketResolved:
    timestamp = timestamp_ms(message.timestamp)
    return MarketResolved(
        event_id=f"pm.resolved.{message.market}",
        ts_event=timestamp * NS_PER_MS,
        ts_init=ts_init,
        condition_id=message.market,
        winning_asset_id=message.winning_asset_id,
        winning_outcome=message.winning_outcome,
    )
