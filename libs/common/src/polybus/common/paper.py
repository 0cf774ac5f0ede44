"""Paper fills: our orders matched against one asset's public L2 book and trade prints.

Pure and deterministic (no I/O, no wall clock, no randomness): the paper executor and
backtests feed it the same :class:`~polybus.common.book.OrderBook` states, :class:`Trade`
prints and clock readings and get the same fills. Every rule leans against us, so paper
results are a bound the live venue should beat, never flatter (``docs/paper.md``):

- A new order takes only the depth the book shows, level by level at the shown prices, minus
  what our own earlier fills already took there. Post-only, FOK and FAK behave and are
  rejected with the venue's own messages (VENUE §3.6, the SDK's ``errorMsg`` strings).
- A resting order joins the back of its price level. Trades at its price eat the queue ahead
  first; a level that shrinks is assumed to lose orders *behind* it, unless it shrinks below
  the queue ahead. It fills when a trade prints strictly through its price (up to the traded
  size) or the other side of the book crosses it (up to the crossing size beyond the bids or
  asks ahead); always at its own price, as a maker, without fee.
- The public book never shows our paper orders, so liquidity we took stays visible there; we
  remember what we took per level and subtract it until that level empties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from polybus.common.book import OrderBook
from polybus.common.book_view import BookView
from polybus.common.events import OrderIntent, OrderStatus, Side, TimeInForce, Trade
from polybus.common.fees import FEE_FREE, FeeSchedule, taker_fee, taker_fee_value
from polybus.common.money import MICROS, format_micros, notional

# The venue's rejection messages (the SDKs map them to codes by these exact strings).
FOK_NOT_FILLED = "order couldn't be fully filled. FOK orders are fully filled or killed."
FAK_NOT_FILLED = (
    "no orders found to match with FAK order. FAK orders are partially filled or killed if no "
    "match is found."
)
POST_ONLY_CROSSES = "invalid post-only order: order crosses book"
POST_ONLY_TYPE = "invalid post-only order: only GTC and GTD orders can be post-only"
INVALID_EXPIRATION = "invalid expiration"
INVALID_ORDER = "Invalid order payload"
DUPLICATE_ORDER = "order already submitted"
"""polybus's own: an order id the matcher has seen before (fill ids derive from it)."""
FAK_REMAINDER_CANCELED = "FAK remainder canceled"
MARKET_NOT_READY = "the market is not yet ready to process new orders"
"""The venue's words (VENUE §3.1) for an order on a book we cannot trade: not live, or no
``MarketInfo`` yet (without it the taker fee is unknown)."""

TRADE_PAIRING_WINDOW_NS = 1_000_000_000
"""How long a level shrink at a resting order's price may still be the book's side of a trade
print that has not arrived yet (the venue sends the ``price_change`` and the
``last_trade_price`` of one match in either order)."""

Liquidity = Literal["maker", "taker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperOrder:
    """An order for the paper venue. ``size`` is in shares for every time in force (the live
    adapter converts a marketable BUY to the venue's pUSD amount); a GTD order stops being
    live at ``expires_at_ns`` (the live adapter adds the venue's one-minute threshold)."""

    order_id: str
    side: Side
    price: int
    size: int
    time_in_force: TimeInForce = "GTC"
    post_only: bool = False
    expires_at_ns: int = 0

    @classmethod
    def from_intent(cls, intent: OrderIntent) -> PaperOrder:
        """The order a ``place`` intent asks for; its ``intent_id`` is the order id."""
        return cls(
            order_id=intent.intent_id,
            side=intent.side,
            price=intent.price,
            size=intent.size,
            time_in_force=intent.time_in_force,
            post_only=intent.post_only,
            expires_at_ns=intent.expires_at_ns,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperFill:
    """One (part) execution of one of our orders; the executor turns it into a ``Fill``."""

    fill_id: str
    """``<order_id>:<n>`` for the order's n-th fill: the same inputs give the same ids."""
    order_id: str
    side: Side
    price: int
    size: int
    liquidity: Liquidity
    fee_value: int
    """The taker fee's pUSD value, micro-units (0 for a maker fill); a SELL pays exactly this."""
    fee_shares: int
    """The shares the venue keeps from a taker BUY as its fee (0 otherwise), VENUE §6.5."""
    leaves: int
    """The order's size still open after this fill (0: filled, or a FAK/FOK's end)."""
    ts_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperOrderUpdate:
    """The outcome of a submit, cancel or expiry: the order's new status and its fills."""

    order_id: str
    status: OrderStatus
    fills: tuple[PaperFill, ...] = ()
    filled_size: int = 0
    """Everything the order has filled so far."""
    open_size: int = 0
    """What rests on the book now (0 unless accepted or partially filled)."""
    reason: str = ""


@dataclass(slots=True)
class _Resting:
    order: PaperOrder
    remaining: int
    filled: int
    fill_count: int
    queue_ahead: int
    """Visible size ahead of us at our price (the public book never includes our orders)."""
    clipped: int = 0
    """Queue ahead we gave up to level shrinks that a trade print may still explain."""
    clipped_at_ns: int = 0


class PaperMatcher:
    """One asset's paper venue: our orders against its public book and trades.

    Feed it every book state (:meth:`on_book`, after the book view applied a snapshot or a
    delta) and every trade print (:meth:`on_trade`) in arrival order, with the clock reading.
    """

    __slots__ = ("_known", "_resting", "_taken", "fees", "trade_pairing_window_ns")

    def __init__(
        self,
        fees: FeeSchedule = FEE_FREE,
        *,
        trade_pairing_window_ns: int = TRADE_PAIRING_WINDOW_NS,
    ) -> None:
        self.fees = fees
        """The market's taker fee schedule; replace it when a new MarketInfo says so."""
        self.trade_pairing_window_ns = trade_pairing_window_ns
        self._resting: dict[str, _Resting] = {}  # arrival order
        self._taken: dict[tuple[Side, int], int] = {}  # (book side, price) -> size we took
        self._known: set[str] = set()

    # -- reading ---------------------------------------------------------------------------
    def open_size(self, order_id: str) -> int:
        """What ``order_id`` still has resting (0 if it is not resting)."""
        resting = self._resting.get(order_id)
        return resting.remaining if resting is not None else 0

    def queue_ahead(self, order_id: str) -> int:
        """The visible size ahead of a resting order at its price (0 if not resting)."""
        resting = self._resting.get(order_id)
        return resting.queue_ahead if resting is not None else 0

    def taken(self, book_side: Side, price: int) -> int:
        """How much of the shown level (BUY = bids, SELL = asks) our fills have used."""
        return self._taken.get((book_side, price), 0)

    def available(self, book: OrderBook, book_side: Side, price: int) -> int:
        """The shown size at a level minus what we already took from it."""
        return max(0, book.size_at(book_side, price) - self._taken.get((book_side, price), 0))

    # -- orders ----------------------------------------------------------------------------
    def submit(self, order: PaperOrder, book: OrderBook, now_ns: int) -> PaperOrderUpdate:
        """Place ``order`` against the book as it is now: take what it crosses, rest the rest
        (GTC/GTD), or reject it the way the venue would."""
        reason = self._refusal(order, book, now_ns)
        self._known.add(order.order_id)
        if reason:
            return _rejected(order, reason)
        plan = self._crossing_depth(order.side, order.price, book, order.size)
        planned = sum(size for _, size in plan)
        if order.time_in_force == "FOK" and planned < order.size:
            return _rejected(order, FOK_NOT_FILLED)
        if order.time_in_force == "FAK" and not planned:
            return _rejected(order, FAK_NOT_FILLED)
        fills = self._take(order, plan, now_ns)
        remaining = order.size - planned
        if not remaining:
            return PaperOrderUpdate(
                order_id=order.order_id, status="filled", fills=fills, filled_size=planned
            )
        if order.time_in_force == "FAK":
            return PaperOrderUpdate(
                order_id=order.order_id,
                status="canceled",
                fills=fills,
                filled_size=planned,
                reason=FAK_REMAINDER_CANCELED,
            )
        self._resting[order.order_id] = _Resting(
            order=order,
            remaining=remaining,
            filled=planned,
            fill_count=len(fills),
            queue_ahead=book.size_at(order.side, order.price),
        )
        return PaperOrderUpdate(
            order_id=order.order_id,
            status="partially_filled" if fills else "accepted",
            fills=fills,
            filled_size=planned,
            open_size=remaining,
        )

    def cancel(self, order_id: str) -> PaperOrderUpdate | None:
        """Cancel a resting order; None when it is not resting (unknown, filled or gone)."""
        resting = self._resting.pop(order_id, None)
        if resting is None:
            return None
        return PaperOrderUpdate(order_id=order_id, status="canceled", filled_size=resting.filled)

    def expire(self, now_ns: int) -> list[PaperOrderUpdate]:
        """Remove the GTD orders whose time has come, in arrival order."""
        expired = [r for r in self._resting.values() if not _live(r.order, now_ns)]
        for resting in expired:
            del self._resting[resting.order.order_id]
        return [
            PaperOrderUpdate(
                order_id=resting.order.order_id, status="expired", filled_size=resting.filled
            )
            for resting in expired
        ]

    # -- market data -----------------------------------------------------------------------
    def on_book(self, book: OrderBook, now_ns: int) -> list[PaperFill]:
        """Update queues from the book's new state and fill what its other side crosses."""
        if self._taken:
            # A level that emptied is forgotten: whatever appears there later is not ours.
            for key in [key for key in self._taken if not book.size_at(*key)]:
                del self._taken[key]
        crossed: list[_Resting] = []
        best_bid, best_ask = book.best_bid, book.best_ask
        for resting in self._resting.values():
            order = resting.order
            if not _live(order, now_ns):
                continue
            level = book.size_at(order.side, order.price)
            if level < resting.queue_ahead:
                # Cancels are assumed to come from behind us; only a level smaller than the
                # queue ahead proves the queue itself got shorter.
                resting.clipped += resting.queue_ahead - level
                resting.clipped_at_ns = now_ns
                resting.queue_ahead = level
            if order.side == "BUY":
                if best_ask is not None and best_ask <= order.price:
                    crossed.append(resting)
            elif best_bid is not None and best_bid >= order.price:
                crossed.append(resting)
        if not crossed:
            return []
        fills = [
            fill
            for resting in sorted(crossed, key=_priority)
            if (fill := self._fill_crossed(resting, book, now_ns)) is not None
        ]
        self._drop_filled()
        return fills

    def on_trade(self, trade: Trade, now_ns: int) -> list[PaperFill]:
        """Let a public trade print eat queues and fill the orders it passed."""
        through: list[_Resting] = []
        at_price: list[_Resting] = []
        for resting in self._resting.values():
            order = resting.order
            if not _live(order, now_ns):
                continue
            # Through our price: the better-priced order (ours) had to trade first, whatever
            # side the feed says the taker was (VENUE §4.3: the public side is unreliable).
            if trade.price < order.price if order.side == "BUY" else trade.price > order.price:
                through.append(resting)
            elif trade.price == order.price and trade.side != order.side:
                at_price.append(resting)
        fills: list[PaperFill] = []
        volume = trade.size
        for resting in sorted(through, key=_priority):
            # Credited up to the print's size only: what cleared at our level is not printed.
            take = min(resting.remaining, volume)
            volume -= take
            resting.queue_ahead = resting.clipped = 0
            if take:
                fills.append(self._maker_fill(resting, take, now_ns))
        own_ahead = filled_ahead = 0
        for resting in at_price:  # one price level, arrival order
            explained = 0
            if now_ns - resting.clipped_at_ns <= self.trade_pairing_window_ns:
                explained = min(volume, resting.clipped)
            resting.clipped -= explained
            reaching = volume - explained  # this print's volume not already seen as a shrink
            take = max(0, min(reaching - resting.queue_ahead - own_ahead, resting.remaining))
            resting.queue_ahead = max(0, resting.queue_ahead - max(0, reaching - filled_ahead))
            own_ahead += resting.remaining
            filled_ahead += take
            if take:
                fills.append(self._maker_fill(resting, take, now_ns))
        self._drop_filled()
        return fills

    # -- internals -------------------------------------------------------------------------
    def _refusal(self, order: PaperOrder, book: OrderBook, now_ns: int) -> str:
        if order.order_id in self._known:
            return DUPLICATE_ORDER
        if not 0 < order.price < MICROS or order.size <= 0:
            return INVALID_ORDER
        if order.post_only and order.time_in_force not in ("GTC", "GTD"):
            return POST_ONLY_TYPE
        if order.time_in_force == "GTD" and order.expires_at_ns <= now_ns:
            return INVALID_EXPIRATION
        if order.post_only:
            # Against the book as shown, even where we took from it: rejecting more post-only
            # orders than the venue would is the conservative error.
            if order.side == "BUY":
                crosses = book.best_ask is not None and book.best_ask <= order.price
            else:
                crosses = book.best_bid is not None and book.best_bid >= order.price
            if crosses:
                return POST_ONLY_CROSSES
        return ""

    def _crossing_depth(
        self, side: Side, limit: int, book: OrderBook, wanted: int
    ) -> list[tuple[int, int]]:
        """(price, size) we can take, best level first, up to ``wanted``."""
        book_side: Side
        if side == "BUY":
            best, levels, book_side = book.best_ask, book.asks, "SELL"
            if best is None or best > limit:
                return []
            prices = sorted(price for price in levels if price <= limit)
        else:
            best, levels, book_side = book.best_bid, book.bids, "BUY"
            if best is None or best < limit:
                return []
            prices = sorted((price for price in levels if price >= limit), reverse=True)
        plan: list[tuple[int, int]] = []
        taken = self._taken
        for price in prices:
            size = min(levels[price] - taken.get((book_side, price), 0), wanted)
            if size > 0:
                plan.append((price, size))
                wanted -= size
                if not wanted:
                    break
        return plan

    def _take(
        self, order: PaperOrder, plan: list[tuple[int, int]], now_ns: int
    ) -> tuple[PaperFill, ...]:
        book_side: Side = "SELL" if order.side == "BUY" else "BUY"
        fills: list[PaperFill] = []
        leaves = order.size
        for number, (price, size) in enumerate(plan, start=1):
            key = (book_side, price)
            self._taken[key] = self._taken.get(key, 0) + size
            leaves -= size
            if order.side == "BUY":
                fee_value = taker_fee_value(price, size, self.fees)
                fee_shares = taker_fee("BUY", price, size, self.fees)
            else:
                fee_value, fee_shares = taker_fee("SELL", price, size, self.fees), 0
            fills.append(
                PaperFill(
                    fill_id=f"{order.order_id}:{number}",
                    order_id=order.order_id,
                    side=order.side,
                    price=price,
                    size=size,
                    liquidity="taker",
                    fee_value=fee_value,
                    fee_shares=fee_shares,
                    leaves=leaves,
                    ts_ns=now_ns,
                )
            )
        return tuple(fills)

    def _fill_crossed(self, resting: _Resting, book: OrderBook, now_ns: int) -> PaperFill | None:
        """Fill a resting order from the other side's levels that cross it, after the
        visible orders ahead of it (better-priced ones, and its queue) had theirs."""
        order = resting.order
        if order.side == "BUY":
            ahead = sum(size for price, size in book.bids.items() if price > order.price)
        else:
            ahead = sum(size for price, size in book.asks.items() if price < order.price)
        ahead += resting.queue_ahead
        plan = self._crossing_depth(order.side, order.price, book, ahead + resting.remaining)
        take = min(sum(size for _, size in plan) - ahead, resting.remaining)
        if take <= 0:
            return None
        # What we take is marked from the best crossing level on, so a later taker of ours
        # finds only the worse levels left.
        book_side: Side = "SELL" if order.side == "BUY" else "BUY"
        left = take
        for price, size in plan:
            used = min(size, left)
            key = (book_side, price)
            self._taken[key] = self._taken.get(key, 0) + used
            left -= used
            if not left:
                break
        return self._maker_fill(resting, take, now_ns)

    def _maker_fill(self, resting: _Resting, size: int, now_ns: int) -> PaperFill:
        order = resting.order
        resting.remaining -= size
        resting.filled += size
        resting.fill_count += 1
        return PaperFill(
            fill_id=f"{order.order_id}:{resting.fill_count}",
            order_id=order.order_id,
            side=order.side,
            price=order.price,
            size=size,
            liquidity="maker",
            fee_value=0,
            fee_shares=0,
            leaves=resting.remaining,
            ts_ns=now_ns,
        )

    def _drop_filled(self) -> None:
        for order_id in [key for key, resting in self._resting.items() if not resting.remaining]:
            del self._resting[order_id]


def _live(order: PaperOrder, now_ns: int) -> bool:
    return order.time_in_force != "GTD" or now_ns < order.expires_at_ns


def _priority(resting: _Resting) -> int:
    """Price priority for sorting (a stable sort keeps arrival order within a price)."""
    price = resting.order.price
    return -price if resting.order.side == "BUY" else price


def _rejected(order: PaperOrder, reason: str) -> PaperOrderUpdate:
    return PaperOrderUpdate(order_id=order.order_id, status="rejected", reason=reason)


def venue_refusal(view: BookView, asset_id: str, order: PaperOrder, tick_size: int = 0) -> str:
    """The venue's words for an order on ``asset_id`` it refuses before matching ("" if none):
    a book that is not live or a market without ``MarketInfo``, an off-tick price, a size under
    the minimum. The market's current tick and minimum count, as the venue checks them (VENUE
    §3.6); ``tick_size`` (the order's) stands in while the book does not know its tick."""
    if not view.tradeable(asset_id) or view.market_of(asset_id) is None:
        return MARKET_NOT_READY
    tick = view.tick(asset_id) or tick_size
    if order.price % tick or not tick <= order.price <= MICROS - tick:
        return (
            f"order {order.order_id} is invalid. Price ({format_micros(order.price)}) "
            f"breaks minimum tick size rule: {format_micros(tick)}"
        )
    minimum = view.min_size(asset_id)
    if order.time_in_force in ("GTC", "GTD") and order.size < minimum:
        return (
            f"order {order.order_id} is invalid. Size ({format_micros(order.size)}) lower "
            f"than the minimum: {format_micros(minimum)}"
        )
    amount = notional(order.price, order.size)
    if order.time_in_force in ("FOK", "FAK") and amount < MICROS:
        # Marketable orders have a $1 minimum instead of the share minimum.
        return (
            f"order {order.order_id} is invalid. Amount ({format_micros(amount)}) lower "
            "than the minimum: 1"
        )
    return ""
