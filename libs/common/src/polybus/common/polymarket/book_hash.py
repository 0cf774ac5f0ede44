"""The venue's book hash and number formatting (one module for the simulator and the ingest).

The ``hash`` of a ``book`` and of each ``price_change`` entry is the SHA-1 (hex) of the compact
JSON of the book summary, keys in this order::

    market, asset_id, timestamp, hash (""), bids (ascending), asks (descending),
    min_order_size, tick_size, neg_risk, last_trade_price

with levels as ``{"price": …, "size": …}`` strings exactly as the venue prints them,
``timestamp`` the message timestamp, computed on the book after the whole same-timestamp batch.
It reproduces the recorded snapshots in ``fixtures/polymarket`` (see their README). Numbers print
without trailing zeros (``"0.5"``, ``"220045"``, ``"3793.8"``) except ``last_trade_price``, which
prints at least three decimals (``"0.620"``; inferred from recordings at ticks 0.01 and 0.001).

:func:`book_hash` is the rule written out. The others produce the same bytes from parts kept
encoded: :func:`book_hash_of_levels` (the simulator), and :class:`HashedBook` with
:func:`summary_head` / :func:`summary_tail` (the ingest, which verifies every batch: each side's
levels are kept encoded and a level is re-encoded only when it changes, so a hash is one join
and one SHA-1).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable

import msgspec

from polybus.common.book import OrderBook
from polybus.common.money import MICROS, format_micros, tick_decimals


def format_price(micros: int) -> str:
    return format_micros(micros)


def format_size(micros: int) -> str:
    return format_micros(micros)


def format_last_trade_price(micros: int, tick: int) -> str:
    return format_micros(micros, min_decimals=max(3, tick_decimals(tick)))


class _HashLevel(msgspec.Struct, frozen=True):
    price: str
    size: str


class _HashSummary(msgspec.Struct, frozen=True, kw_only=True):
    # Field order is the hash's key order.
    market: str
    asset_id: str
    timestamp: str
    hash: str
    bids: list[_HashLevel]
    asks: list[_HashLevel]
    min_order_size: str
    tick_size: str
    neg_risk: bool
    last_trade_price: str


_encoder = msgspec.json.Encoder()


def book_hash(
    *,
    market: str,
    asset_id: str,
    timestamp: str,
    bids: Iterable[tuple[str, str]],
    asks: Iterable[tuple[str, str]],
    min_order_size: str,
    tick_size: str,
    neg_risk: bool,
    last_trade_price: str,
) -> str:
    """SHA-1 hex of the book summary. ``bids`` ascending and ``asks`` descending, as printed."""
    summary = _HashSummary(
        market=market,
        asset_id=asset_id,
        timestamp=timestamp,
        hash="",
        bids=[_HashLevel(price, size) for price, size in bids],
        asks=[_HashLevel(price, size) for price, size in asks],
        min_order_size=min_order_size,
        tick_size=tick_size,
        neg_risk=neg_risk,
        last_trade_price=last_trade_price,
    )
    return hashlib.sha1(_encoder.encode(summary), usedforsecurity=False).hexdigest()


def level_json(price: str, size: str) -> bytes:
    """One level as the hash input (and the venue's compact JSON) prints it:
    ``{"price":"0.48","size":"30"}``. ``price``/``size`` are plain decimal strings."""
    return b'{"price":"' + price.encode() + b'","size":"' + size.encode() + b'"}'


def summary_head(market: str, asset_id: str) -> bytes:
    """The hash input up to the timestamp's value (constant per asset)."""
    encode = _encoder.encode
    return b'{"market":' + encode(market) + b',"asset_id":' + encode(asset_id) + b',"timestamp":'


def summary_tail(
    *, min_order_size: str, tick_size: str, neg_risk: bool, last_trade_price: str
) -> bytes:
    """The hash input after the asks (it changes only with these inputs: a tick or a trade)."""
    encode = _encoder.encode
    return b"".join(
        (
            b'],"min_order_size":',
            encode(min_order_size),
            b',"tick_size":',
            encode(tick_size),
            b',"neg_risk":',
            b"true" if neg_risk else b"false",
            b',"last_trade_price":',
            encode(last_trade_price),
            b"}",
        )
    )


def _summary(head: bytes, timestamp: str, bids: bytes, asks: bytes, tail: bytes) -> bytes:
    """The hash input from its parts; ``bids``/``asks`` are the levels' :func:`level_json`
    joined by commas (bids ascending, asks descending)."""
    return b"".join(
        (head, _encoder.encode(timestamp), b',"hash":"","bids":[', bids, b'],"asks":[', asks, tail)
    )


def book_hash_of_levels(
    *,
    market: str,
    asset_id: str,
    timestamp: str,
    bids_json: Iterable[bytes],
    asks_json: Iterable[bytes],
    min_order_size: str,
    tick_size: str,
    neg_risk: bool,
    last_trade_price: str,
) -> str:
    """:func:`book_hash` for a caller that keeps its levels pre-encoded with :func:`level_json`
    (``bids_json`` ascending, ``asks_json`` descending): the same rule and result, without
    re-encoding every level (the simulator hashes two books per market per batch)."""
    summary = _summary(
        summary_head(market, asset_id),
        timestamp,
        b",".join(bids_json),
        b",".join(asks_json),
        summary_tail(
            min_order_size=min_order_size,
            tick_size=tick_size,
            neg_risk=neg_risk,
            last_trade_price=last_trade_price,
        ),
    )
    return hashlib.sha1(summary, usedforsecurity=False).hexdigest()


# A level is kept as the part of its JSON between ``{"price":"`` and ``"}`` (``0.48","size":"30``):
# the part every level has is written once per side, at the join, so a book holds one small
# bytes object per level. The price's part is cached (few distinct values: the tick grid), the
# size's too; both caches are bounded so hostile input cannot grow them without limit.
_PRICE_PARTS: dict[int, bytes] = {}
_PRICE_PARTS_MAX = 20_000
_SIZE_PARTS: dict[int, bytes] = {}
_SIZE_PARTS_MAX = 50_000
_LEVEL_START = b'{"price":"'
_LEVEL_BETWEEN = b'"},{"price":"'
_LEVEL_END = b'"}'


def _price_part(price: int) -> bytes:
    if not 0 <= price <= MICROS:
        # The levels' order as bytes is their order as prices only for texts "0", "0.…", "1".
        raise ValueError(f"a hashed book's prices lie in [0, 1], got {price} micro-units")
    part = format_price(price).encode() + b'","size":"'
    if len(_PRICE_PARTS) < _PRICE_PARTS_MAX:
        _PRICE_PARTS[price] = part
    return part


def _size_part(size: int) -> bytes:
    part = format_size(size).encode()
    if len(_SIZE_PARTS) >= _SIZE_PARTS_MAX:
        _SIZE_PARTS.clear()
    _SIZE_PARTS[size] = part
    return part


def _level(price: int, size: int) -> bytes:
    return (_PRICE_PARTS.get(price) or _price_part(price)) + (
        _SIZE_PARTS.get(size) or _size_part(size)
    )


def _side(levels: Iterable[bytes]) -> bytes:
    """A side's levels (kept as :func:`_level`) joined as the hash prints them."""
    joined = _LEVEL_BETWEEN.join(levels)
    return b"".join((_LEVEL_START, joined, _LEVEL_END)) if joined else b""


class HashedBook(OrderBook):
    """An :class:`OrderBook` that keeps its hash inputs: beside each side's levels, their
    :func:`level_json` bytes (less the part every level has), sorted by price and re-encoded
    only when that level is set. The venue's hash of it, :meth:`venue_hash`, is one join and
    one SHA-1.

    Prices lie in [0, 1] (:func:`polybus.common.money.parse_price` ensures it at the venue
    boundary): there, a level's bytes sort as its price does (``"0" < "0.05" < "0.5" < "0.55" <
    "1"``, the closing quote sorting before every digit), so a level is found by bisecting the
    bytes and a book keeps no second list of prices. Every way of writing the book
    (:meth:`set_bid`, :meth:`set_ask`, :meth:`replace`, :meth:`clear`, and what is built on
    them) keeps the bytes in step; nothing may write ``bids``/``asks`` directly. Only the
    ingest needs this: the strategies' and the paper executor's books stay plain
    :class:`OrderBook` and pay nothing for it.
    """

    __slots__ = ("_asks_encoded", "_bids_encoded")

    def __init__(self) -> None:
        super().__init__()
        self._bids_encoded: list[bytes] = []
        self._asks_encoded: list[bytes] = []
        """Both ascending by price (the hash prints the asks descending)."""

    def venue_hash(self, head: bytes, timestamp: str, tail: bytes) -> str:
        """The venue's hash of this book: ``head`` from :func:`summary_head`, ``tail`` from
        :func:`summary_tail`, ``timestamp`` the batch's (or snapshot's) timestamp text."""
        bids, asks = self._bids_encoded, self._asks_encoded
        if bids and asks:
            # :func:`_summary` of :func:`_side` written out in one join: this runs per batch.
            summary = b"".join(
                (
                    head,
                    _encoder.encode(timestamp),
                    b',"hash":"","bids":[{"price":"',
                    _LEVEL_BETWEEN.join(bids),
                    b'"}],"asks":[{"price":"',
                    _LEVEL_BETWEEN.join(asks[::-1]),
                    b'"}',
                    tail,
                )
            )
        else:
            summary = _summary(head, timestamp, _side(bids), _side(reversed(asks)), tail)
        return hashlib.sha1(summary, usedforsecurity=False).hexdigest()

    # -- writing -----------------------------------------------------------------------------
    def clear(self) -> None:
        super().clear()
        self._bids_encoded.clear()
        self._asks_encoded.clear()

    def replace(self, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]]) -> None:
        super().replace(bids, asks)
        try:
            self._bids_encoded = [_level(price, size) for price, size in sorted(self.bids.items())]
            self._asks_encoded = [_level(price, size) for price, size in sorted(self.asks.items())]
        except ValueError:
            self.clear()  # a price out of range: no book rather than one its bytes disagree with
            raise

    # The two setters are the ingest's per-entry hot path: the encoding is inlined.
    def set_bid(self, price: int, size: int) -> None:
        bids = self.bids
        if size:
            old = bids.get(price)
            if old == size:
                return
            part = _PRICE_PARTS.get(price) or _price_part(price)
            bids[price] = size
            levels = self._bids_encoded
            index = bisect_left(levels, part)  # the level at ``price``, or where it goes
            level = part + (_SIZE_PARTS.get(size) or _size_part(size))
            if old is None:
                levels.insert(index, level)
                best = self._best_bid
                if best is None or price > best:
                    self._best_bid = price
            else:
                levels[index] = level
        elif bids.pop(price, None) is not None:
            levels = self._bids_encoded
            del levels[bisect_left(levels, _PRICE_PARTS.get(price) or _price_part(price))]
            if price == self._best_bid:
                self._best_bid = max(bids) if bids else None

    def set_ask(self, price: int, size: int) -> None:
        asks = self.asks
        if size:
            old = asks.get(price)
            if old == size:
                return
            part = _PRICE_PARTS.get(price) or _price_part(price)
            asks[price] = size
            levels = self._asks_encoded
            index = bisect_left(levels, part)
            level = part + (_SIZE_PARTS.get(size) or _size_part(size))
            if old is None:
                levels.insert(index, level)
                best = self._best_ask
                if best is None or price < best:
                    self._best_ask = price
            else:
                levels[index] = level
        elif asks.pop(price, None) is not None:
            levels = self._asks_encoded
            del levels[bisect_left(levels, _PRICE_PARTS.get(price) or _price_part(price))]
            if price == self._best_ask:
                self._best_ask = min(asks) if asks else None
