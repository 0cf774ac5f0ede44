"""The simulated venue's market state: every market's book, batches and the events they emit.

Everything that changes a book happens inside :meth:`Exchange.batch`, which stamps the changes
with one millisecond timestamp (strictly increasing across batches). When the batch closes the
exchange computes each touched market's best prices and hashes on the final book and emits,
in order: one ``price_change`` message per level change (the token's entry and its mirror),
``last_trade_price`` for trades, the ``book`` re-sent for both tokens after a trade, and (for
custom-feature subscribers) ``best_bid_ask`` when a top of book moved. Those go to the
``publish`` callback as :class:`Outgoing` messages, encoded once.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

import msgspec

from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import (
    book_hash_of_levels,
    format_last_trade_price,
    format_price,
    format_size,
)
from polybus.sim import frames
from polybus.sim.book import BUY, SELL, Fill, MarketBook, Side, price_text
from polybus.sim.config import SimSettings
from polybus.sim.universe import SimEvent, SimMarket, build_universe, new_market, seeded_random

BPS = 100
"""Micro-units per basis point."""

TICK_LOW = 40_000
TICK_HIGH = 960_000
"""The venue narrows a market's tick when its book trades beyond 0.04 / 0.96."""
FINE_TICK = 1_000


class Audience(Enum):
    """Who receives an :class:`Outgoing` message."""

    MARKET = 1
    """Subscribers of any of its assets (``price_change`` carries both tokens)."""
    ASSET = 2
    """Subscribers of its first asset."""
    CUSTOM_ASSET = 3
    """Custom-feature subscribers of any of its assets."""
    CUSTOM_ALL = 4
    """Every custom-feature subscriber (``new_market``)."""


class Outgoing:
    """One encoded market-channel event and who should get it."""

    __slots__ = ("assets", "audience", "data", "price_change")

    def __init__(
        self,
        data: bytes,
        assets: tuple[str, ...],
        audience: Audience,
        *,
        price_change: bool = False,
    ) -> None:
        self.data = data
        self.assets = assets
        self.audience = audience
        self.price_change = price_change


Publish = Callable[[list[Outgoing]], None]


class FillListener:
    """Told about every fill of a resting order, and about resolved markets (the trading
    layer overrides it)."""

    def on_maker_fill(self, book: MarketBook, fill: Fill, timestamp_ms: int) -> None:
        return None

    def on_market_closed(self, book: MarketBook) -> None:
        return None


@dataclass(slots=True)
class MarketState:
    info: SimMarket
    event: SimEvent
    book: MarketBook
    fair: int
    """The flow's idea of the YES fair price; drifts."""
    taker_delay_ms: int = 0
    """Marketable orders are held this long before they match (``delayed``; 0 = none)."""


@dataclass(slots=True)
class _Trade:
    price: int
    size: int
    side: Side
    origin: int


@dataclass(slots=True)
class _MarketBatch:
    changes: list[tuple[Side, int, str, int]] = field(default_factory=list)
    trades: list[_Trade] = field(default_factory=list)
    tick_change: tuple[int, int] | None = None


@dataclass(slots=True)
class Batch:
    timestamp_ms: int
    markets: dict[MarketBook, _MarketBatch] = field(default_factory=dict)


class Exchange:
    """Books, the batch clock and market lifecycle. Single-threaded (one event loop)."""

    def __init__(self, settings: SimSettings, publish: Publish | None = None) -> None:
        self.settings = settings
        self.publish: Publish = publish or (lambda outgoing: None)
        self.fills = FillListener()
        universe = build_universe(
            seed=settings.seed,
            binary_markets=settings.binary_markets,
            neg_risk_events=settings.neg_risk_events,
            outcomes_per_event=settings.outcomes_per_event,
            min_order_size=settings.min_order_size,
            fee_rate=settings.taker_fee_bps * BPS,
            fee_exponent=settings.taker_fee_exponent,
            protocol_v2_markets=settings.protocol_v2_markets,
        )
        self.events: dict[str, SimEvent] = {event.id: event for event in universe.events}
        self.markets: dict[str, MarketState] = {}
        self.tokens: dict[str, tuple[MarketBook, int]] = {}
        self._batch: Batch | None = None
        self._last_ms = 0
        self.on_tick_change: list[Callable[[MarketBook, int, int], None]] = []
        start = self._next_ms()
        for market in universe.markets:
            self._add_market(market, self.events[market.event_id], start)

    # -- markets -------------------------------------------------------------------------------
    def _add_market(self, market: SimMarket, event: SimEvent, timestamp_ms: int) -> MarketState:
        book = MarketBook(
            condition_id=market.condition_id,
            yes_id=market.yes,
            no_id=market.no,
            tick_size=market.tick_size,
            min_order_size=market.min_order_size,
            neg_risk=market.neg_risk,
            on_change=self._on_change,
            protocol_v2=market.protocol_v2,
        )
        state = MarketState(info=market, event=event, book=book, fair=market.initial_price)
        self.markets[market.condition_id] = state
        self.tokens[market.yes] = (book, 0)
        self.tokens[market.no] = (book, 1)
        # The initial book is not news: nobody can be subscribed before the market exists.
        book.on_change = _ignore_change
        _seed_book(book, market, seeded_random(self.settings.seed, "book", market.gamma_id))
        book.on_change = self._on_change
        tick = book.tick_size
        book.last_trade_price = min(max(_round_to(market.initial_price, tick), tick), MICROS - tick)
        self._rehash(book, timestamp_ms)
        book.published_top = book.best_texts(0)
        return state

    def market_info(self, condition_id: str) -> SimMarket:
        state = self.markets[condition_id]
        return msgspec.structs.replace(state.info, tick_size=state.book.tick_size)

    def all_markets(self) -> list[SimMarket]:
        return [self.market_info(condition_id) for condition_id in self.markets]

    def book_of(self, asset_id: str) -> tuple[MarketBook, int]:
        """The book and token index (0 YES, 1 NO) of a token; KeyError if unknown."""
        return self.tokens[asset_id]

    def state_of(self, book: MarketBook) -> MarketState:
        return self.markets[book.condition_id]

    def create_market(self) -> SimMarket:
        """A new binary market (custom-feature subscribers get ``new_market``)."""
        index = len(self.markets) + 10_000
        settings = self.settings
        market, event = new_market(
            settings.seed,
            index,
            settings.min_order_size,
            settings.taker_fee_bps * BPS,
            settings.taker_fee_exponent,
        )
        self.events[event.id] = event
        with self.batch() as batch:
            state = self._add_market(market, event, batch.timestamp_ms)
            message = frames.EventMessage(
                id=event.id,
                ticker=event.ticker,
                slug=event.slug,
                title=event.title,
                description=market.description,
            )
            data = frames.encode(
                frames.NewMarketFrame(
                    id=market.gamma_id,
                    question=market.question,
                    market=market.condition_id,
                    slug=market.slug,
                    description=market.description,
                    assets_ids=[market.yes, market.no],
                    outcomes=[token.outcome for token in market.tokens],
                    event_message=message,
                    timestamp=str(batch.timestamp_ms),
                )
            )
        self.publish([Outgoing(data, state.book.token_ids, Audience.CUSTOM_ALL)])
        return market

    def resolve_market(self, condition_id: str, winning_asset_id: str = "") -> SimMarket:
        """Close a market: its orders are canceled; custom-feature subscribers get
        ``market_resolved``."""
        state = self.markets[condition_id]
        market = state.info
        winner = winning_asset_id or market.yes
        if winner not in (market.yes, market.no):
            raise KeyError(winning_asset_id)
        state.info = msgspec.structs.replace(
            market, active=False, closed=True, winner=winner, tick_size=state.book.tick_size
        )
        self.fills.on_market_closed(state.book)
        timestamp = str(self._next_ms())
        event = state.event
        data = frames.encode(
            frames.MarketResolvedFrame(
                id=market.gamma_id,
                question=market.question,
                market=market.condition_id,
                slug=market.slug,
                description=market.description,
                assets_ids=[market.yes, market.no],
                outcomes=[token.outcome for token in market.tokens],
                winning_asset_id=winner,
                winning_outcome=market.tokens[0 if winner == market.yes else 1].outcome,
                event_message=frames.EventMessage(
                    id=event.id,
                    ticker=event.ticker,
                    slug=event.slug,
                    title=event.title,
                    description=market.description,
                ),
                timestamp=timestamp,
            )
        )
        self.publish([Outgoing(data, state.book.token_ids, Audience.CUSTOM_ASSET)])
        return state.info

    # -- the batch clock -------------------------------------------------------------------
    def _next_ms(self) -> int:
        # Strictly increasing: a timestamp identifies one batch, and the venue's best prices
        # and hashes describe the book at the end of the batch with that timestamp.
        now = time.time_ns() // 1_000_000
        self._last_ms = max(now, self._last_ms + 1)
        return self._last_ms

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        """Group book changes under one timestamp; nested calls join the open batch."""
        if self._batch is not None:
            yield self._batch
            return
        batch = self._batch = Batch(self._next_ms())
        try:
            yield batch
        finally:
            self._batch = None
            outgoing = self._commit(batch)
            if outgoing:
                self.publish(outgoing)
        self._follow_up_tick_changes(batch)

    def _market_batch(self, book: MarketBook) -> _MarketBatch:
        batch = self._batch
        if batch is None:
            raise RuntimeError("book changes must happen inside Exchange.batch()")
        entry = batch.markets.get(book)
        if entry is None:
            entry = batch.markets[book] = _MarketBatch()
        return entry

    def _on_change(self, book: MarketBook, side: Side, price: int, size: str, origin: int) -> None:
        self._market_batch(book).changes.append((side, price, size, origin))

    # -- operations ------------------------------------------------------------------------
    def add_liquidity(
        self, book: MarketBook, side: Side, price: int, size: int, origin: int
    ) -> None:
        """Simulated resting liquidity (never matched on arrival: callers keep it passive)."""
        book.add(side, price, size, None, origin)

    def cancel_liquidity(
        self, book: MarketBook, side: Side, price: int, size: int, origin: int
    ) -> int:
        return book.cancel_anonymous(side, price, size, origin)

    def take(self, book: MarketBook, side: Side, limit: int, size: int, origin: int) -> list[Fill]:
        """A marketable order (YES terms) against the book; records the trade prints and
        tells the fill listener about resting orders that filled."""
        fills = book.take(side, limit, size, origin)
        if not fills:
            return fills
        entry = self._market_batch(book)
        assert self._batch is not None
        timestamp_ms = self._batch.timestamp_ms
        for fill in fills:
            last = entry.trades[-1] if entry.trades else None
            if last is not None and last.price == fill.price and last.side == side:
                last.size += fill.size
            else:
                entry.trades.append(_Trade(fill.price, fill.size, side, origin))
            if fill.order is not None:
                self.fills.on_maker_fill(book, fill, timestamp_ms)
        book.last_trade_price = fills[-1].price
        return fills

    def change_tick(self, book: MarketBook, new_tick: int) -> None:
        """Change a market's tick size now (``tick_size_change`` for both tokens)."""
        if new_tick == book.tick_size:
            return
        with self.batch():
            entry = self._market_batch(book)
            old = entry.tick_change[0] if entry.tick_change else book.tick_size
            entry.tick_change = (old, new_tick)
            book.tick_size = new_tick
        for listener in self.on_tick_change:
            listener(book, old, new_tick)

    def _follow_up_tick_changes(self, batch: Batch) -> None:
        if not self.settings.tick_size_changes:
            return
        for book in batch.markets:
            if book.tick_size <= FINE_TICK:
                continue
            best_bid, best_ask = book.best_bid(), book.best_ask()
            if (best_bid is not None and best_bid > TICK_HIGH) or (
                best_ask is not None and best_ask < TICK_LOW
            ):
                self.change_tick(book, FINE_TICK)

    # -- committing ------------------------------------------------------------------------
    def _rehash(self, book: MarketBook, timestamp_ms: int) -> None:
        book.timestamp = str(timestamp_ms)
        book.hashes = (self._hash(book, 0), self._hash(book, 1))

    def _hash(self, book: MarketBook, token: int) -> str:
        bids, asks = book.wire_levels(token)
        return book_hash_of_levels(
            market=book.condition_id,
            asset_id=book.token_ids[token],
            timestamp=book.timestamp,
            bids_json=(bids,),
            asks_json=(asks,),
            min_order_size=_size_text(book.min_order_size),
            tick_size=price_text(book.tick_size),
            neg_risk=book.neg_risk,
            last_trade_price=self.last_trade_text(book, token),
        )

    def last_trade_text(self, book: MarketBook, token: int) -> str:
        price = book.last_trade_price if token == 0 else MICROS - book.last_trade_price
        return _last_trade_text(price, book.tick_size)

    def _commit(self, batch: Batch) -> list[Outgoing]:
        outgoing: list[Outgoing] = []
        timestamp = str(batch.timestamp_ms)
        for book, entry in batch.markets.items():
            self._rehash(book, batch.timestamp_ms)
            if entry.tick_change is not None:
                outgoing.extend(self._tick_change_frames(book, *entry.tick_change, timestamp))
            if entry.changes:
                outgoing.extend(self._price_change_frames(book, entry, timestamp))
            if entry.trades:
                outgoing.extend(self._trade_frames(book, entry, timestamp))
            top = book.best_texts(0)
            if top != book.published_top:
                book.published_top = top
                outgoing.extend(self._best_bid_ask_frames(book, timestamp))
        return outgoing

    def _price_change_frames(
        self, book: MarketBook, entry: _MarketBatch, timestamp: str
    ) -> Iterator[Outgoing]:
        yes, no = book.token_ids
        yes_hash, no_hash = book.hashes
        yes_bid, yes_ask = book.best_texts(0)
        no_bid, no_ask = book.best_texts(1)
        market = book.condition_id
        for side, price, size_text, origin in entry.changes:
            yes_entry = frames.PriceChangeEntry(
                asset_id=yes,
                price=price_text(price),
                size=size_text,
                side=side,
                hash=yes_hash,
                best_bid=yes_bid,
                best_ask=yes_ask,
            )
            no_entry = frames.PriceChangeEntry(
                asset_id=no,
                price=price_text(MICROS - price),
                size=size_text,
                side=SELL if side == BUY else BUY,
                hash=no_hash,
                best_bid=no_bid,
                best_ask=no_ask,
            )
            data = frames.encode(
                frames.PriceChangeFrame(
                    market=market,
                    price_changes=[yes_entry, no_entry] if origin == 0 else [no_entry, yes_entry],
                    timestamp=timestamp,
                )
            )
            yield Outgoing(data, book.token_ids, Audience.MARKET, price_change=True)

    def _trade_frames(
        self, book: MarketBook, entry: _MarketBatch, timestamp: str
    ) -> Iterator[Outgoing]:
        fee_bps = str(self.markets[book.condition_id].info.fee_rate // BPS)
        for trade in entry.trades:
            size = format_size(trade.size)
            # The print appears on both tokens: taker side on the taker's token, mirrored on
            # the other (a YES buy at p is a NO sell at 1 - p).
            for token in (trade.origin, 1 - trade.origin):
                price = trade.price if token == 0 else MICROS - trade.price
                side = trade.side if token == 0 else (SELL if trade.side == BUY else BUY)
                data = frames.encode(
                    frames.LastTradePriceFrame(
                        asset_id=book.token_ids[token],
                        fee_rate_bps=fee_bps,
                        market=book.condition_id,
                        price=_last_trade_text(price, book.tick_size),
                        side=side,
                        size=size,
                        timestamp=timestamp,
                    )
                )
                yield Outgoing(data, (book.token_ids[token],), Audience.ASSET)
        for token in (0, 1):
            bids, asks = book.wire_levels(token)
            data = frames.encode(
                frames.ResentBookFrame(
                    market=book.condition_id,
                    asset_id=book.token_ids[token],
                    bids=frames.raw_levels(bids),
                    asks=frames.raw_levels(asks),
                    hash=book.hashes[token],
                    timestamp=timestamp,
                )
            )
            yield Outgoing(data, (book.token_ids[token],), Audience.ASSET)

    def _tick_change_frames(
        self, book: MarketBook, old: int, new: int, timestamp: str
    ) -> Iterator[Outgoing]:
        for token in (0, 1):
            data = frames.encode(
                frames.TickSizeChangeFrame(
                    asset_id=book.token_ids[token],
                    market=book.condition_id,
                    new_tick_size=format_price(new),
                    old_tick_size=format_price(old),
                    timestamp=timestamp,
                )
            )
            yield Outgoing(data, (book.token_ids[token],), Audience.ASSET)

    def _best_bid_ask_frames(self, book: MarketBook, timestamp: str) -> Iterator[Outgoing]:
        for token in (0, 1):
            best_bid, best_ask = book.best_texts(token)
            bid = book.best_bid() if token == 0 else _mirror(book.best_ask())
            ask = book.best_ask() if token == 0 else _mirror(book.best_bid())
            spread = format_price(max((ask or MICROS) - (bid or 0), 0))
            data = frames.encode(
                frames.BestBidAskFrame(
                    market=book.condition_id,
                    asset_id=book.token_ids[token],
                    best_bid=best_bid,
                    best_ask=best_ask,
                    spread=spread,
                    timestamp=timestamp,
                )
            )
            yield Outgoing(data, (book.token_ids[token],), Audience.CUSTOM_ASSET)

    def snapshot_frame(self, asset_id: str) -> bytes:
        """The ``book`` a subscriber gets on subscribe (and ``initial_dump``)."""
        book, token = self.tokens[asset_id]
        bids, asks = book.wire_levels(token)
        return frames.encode(
            frames.BookFrame(
                market=book.condition_id,
                asset_id=asset_id,
                timestamp=book.timestamp,
                hash=book.hashes[token],
                bids=frames.raw_levels(bids),
                asks=frames.raw_levels(asks),
                tick_size=format_price(book.tick_size),
                last_trade_price=self.last_trade_text(book, token),
            )
        )


# Few distinct values, formatted on every hash: cache them.
_size_text = functools.lru_cache(maxsize=1024)(format_size)
_last_trade_text = functools.lru_cache(maxsize=65_536)(format_last_trade_price)


def _mirror(price: int | None) -> int | None:
    return None if price is None else MICROS - price


def _ignore_change(book: MarketBook, side: Side, price: int, size: str, origin: int) -> None:
    return None


def _round_to(price: int, tick: int) -> int:
    return price // tick * tick


def random_size(rng: random.Random, median_shares: float = 250.0) -> int:
    """A level size like the venue's: lognormal, 2 decimals, sometimes whole."""
    shares = rng.lognormvariate(0.0, 1.5) * median_shares
    shares = min(max(shares, 1.0), 2_000_000.0)
    if rng.random() < 0.5:
        return round(shares) * MICROS
    return round(shares * 100) * (MICROS // 100)


def _seed_book(book: MarketBook, market: SimMarket, rng: random.Random) -> None:
    """An initial book around the market's fair price, shaped like the recordings: a dozen or
    more levels a side, a tight top and big resting size far from the money."""
    tick = book.tick_size
    fair = min(max(market.initial_price, tick), MICROS - tick)
    spread_ticks = 1 + int(rng.expovariate(0.6))
    best_bid = max(_round_to(fair, tick) - tick * (spread_ticks // 2), tick)
    best_ask = min(best_bid + tick * spread_ticks, MICROS - tick)
    if best_ask <= best_bid:
        best_bid = best_ask - tick
    plan: tuple[tuple[Side, int, int], ...] = ((BUY, best_bid, -tick), (SELL, best_ask, tick))
    for side, start, step in plan:
        price = start
        for _ in range(rng.randint(6, 28)):
            if not tick <= price <= MICROS - tick:
                break
            book.add(side, price, random_size(rng), None, 0)
            price += step * (1 + int(rng.expovariate(0.5)))
        edge = tick if side == BUY else MICROS - tick
        if rng.random() < 0.6 and book.size_at(side, edge) == 0:
            book.add(side, edge, random_size(rng, 20_000.0), None, 0)
