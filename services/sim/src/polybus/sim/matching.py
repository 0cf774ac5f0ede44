"""Matching user orders on the simulated CLOB: placement, fills against simulated liquidity and
other users' resting orders (in time priority), resting GTC/GTD remainders, cancels, and the
balance moves of every fill. Each fill becomes a trade handed to :mod:`polybus.sim.settlement`;
every change goes out as ``order``/``trade`` events on the user channel.

On a market with a taker delay a marketable order is held (status ``DELAYED``, answer
``delayed``) for the window, then matched as if it had just arrived. Taker fees follow the
venue's rule for the market's schedule (:mod:`polybus.common.fees`): taken in shares from a
BUY, in pUSD from a SELL; makers pay none."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from collections.abc import Iterator

from polybus.common.fees import FeeSchedule, taker_fee
from polybus.common.money import MICROS
from polybus.common.polymarket.clob import (
    PolymarketCancelResponse,
    PolymarketOrderResponse,
    PolymarketPostOrder,
)
from polybus.sim.auth import ApiKey
from polybus.sim.balances import Balances
from polybus.sim.book import BUY, SELL, Fill, MarketBook, Side
from polybus.sim.clock import Clock
from polybus.sim.config import SimSettings
from polybus.sim.exchange import Exchange, FillListener
from polybus.sim.faults import Faults
from polybus.sim.order_checks import expiration, price_and_size, verify_signed_order
from polybus.sim.orders import (
    FAK_NOT_FILLED,
    FOK_NOT_FILLED,
    INVALID_PAYLOAD,
    POST_ONLY_CROSSES,
    POST_ONLY_TYPE,
    SIM_MAKER_ADDRESS,
    SIM_OWNER,
    MakerFill,
    Rejected,
    Trade,
    UserOrder,
)
from polybus.sim.settlement import Settlement
from polybus.sim.venue import UserEvents, accepted, delayed
from polybus.sim.wallets import Wallets

BPS = 100
"""Micro-units per basis point."""


class Matching(FillListener):
    """The users' orders and trades, and the order book moves they make."""

    def __init__(
        self,
        exchange: Exchange,
        settings: SimSettings,
        faults: Faults,
        clock: Clock,
        events: UserEvents,
        wallets: Wallets,
    ) -> None:
        self._exchange = exchange
        self._wallets = wallets
        self._settings = settings
        self._clock = clock
        self._events = events
        self.orders: dict[str, UserOrder] = {}
        self.open_orders: dict[str, dict[str, UserOrder]] = {}
        """Resting orders by API key."""
        self.trades: dict[str, Trade] = {}
        self.balances = Balances(settings, self._resting_orders)
        self.settlement = Settlement(settings, faults, self.balances, clock, events.trade)
        self._trade_ids = itertools.count(1)
        self._placing: UserOrder | None = None
        self._delayed: dict[str, asyncio.TimerHandle] = {}
        """Orders held by a taker delay, by id, with the timer that releases them."""
        exchange.fills = self

    def _resting_orders(self) -> Iterator[UserOrder]:
        for orders in self.open_orders.values():
            yield from orders.values()

    def _outcome(self, book: MarketBook, token: int) -> str:
        return self._exchange.markets[book.condition_id].info.tokens[token].outcome

    def _new_trade_id(self) -> str:
        digest = hashlib.sha256(f"{self._settings.seed}:trade:{next(self._trade_ids)}".encode())
        return str(uuid.UUID(bytes=digest.digest()[:16], version=4))

    # -- placement ---------------------------------------------------------------------------
    def place(self, key: ApiKey, post: PolymarketPostOrder) -> PolymarketOrderResponse:
        """Validate, match and (for GTC/GTD) rest an order; the venue's 200 body."""
        struct, order_id, book, token = verify_signed_order(
            key, post, self._exchange, self._wallets
        )
        state = self._exchange.markets[book.condition_id]
        if state.info.closed:
            raise Rejected("the market is not yet ready to process new orders", status=200)
        if order_id in self.orders:
            raise Rejected(f"order {order_id} is invalid. Duplicated.")
        order_type = post.order_type.upper()
        if order_type not in ("GTC", "GTD", "FOK", "FAK"):
            raise Rejected(INVALID_PAYLOAD)
        if post.post_only and order_type not in ("GTC", "GTD"):
            raise Rejected(POST_ONLY_TYPE)
        side: Side = BUY if struct.side == 0 else SELL
        shares, collateral, price = price_and_size(struct, order_id, book, order_type)
        expires = expiration(post, order_type, self._clock.time())
        asset_id = book.token_ids[token]
        self.balances.check(struct.maker.lower(), side, asset_id, shares, collateral)
        order = UserOrder(
            id=order_id,
            owner=key.key,
            maker_address=struct.maker.lower(),
            market=book.condition_id,
            asset_id=asset_id,
            token=token,
            side=side,
            price=price,
            original_size=shares,
            order_type=order_type,  # type: ignore[arg-type]
            expiration=expires,
            created_at=int(self._clock.time()),
            outcome=self._outcome(book, token),
            book=book,
        )
        delay_ms = state.taker_delay_ms
        if delay_ms and not post.post_only and book.crosses(order.yes_side, order.yes_price):
            return self._delay(order, delay_ms)
        return self._execute(order, post_only=post.post_only)

    def _delay(self, order: UserOrder, delay_ms: int) -> PolymarketOrderResponse:
        # Held like a resting order (it reserves its balance and can be canceled), but off
        # the book until the window ends. The window is venue latency, so it runs on the
        # event loop's time like settlement, not on the simulator's clock.
        order.status = "DELAYED"
        self.orders[order.id] = order
        self.open_orders.setdefault(order.owner, {})[order.id] = order
        loop = asyncio.get_running_loop()
        self._delayed[order.id] = loop.call_later(delay_ms / 1000, self._release, order)
        self._events.order(order, "PLACEMENT")
        return delayed(order)

    def _release(self, order: UserOrder) -> None:
        """The taker delay of ``order`` is over: it matches now, the rest rests or dies."""
        self._delayed.pop(order.id, None)
        self.open_orders.get(order.owner, {}).pop(order.id, None)
        order.status = "LIVE"
        try:
            self._execute(order, post_only=False, event="UPDATE")
        except Rejected:
            # A FOK/FAK that the book no longer fills is killed, as on arrival.
            order.status = "CANCELED"
            self._events.order(order, "CANCELLATION")

    def clear_delays(self) -> None:
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()

    def _execute(
        self, order: UserOrder, *, post_only: bool, event: str = "PLACEMENT"
    ) -> PolymarketOrderResponse:
        book = order.book
        yes_side, yes_price = order.yes_side, order.yes_price
        if post_only and book.crosses(yes_side, yes_price):
            raise Rejected(POST_ONLY_CROSSES, status=200, order_id=order.id)
        if order.order_type == "FOK" and self._available(book, yes_side, yes_price) < (
            order.original_size
        ):
            raise Rejected(FOK_NOT_FILLED, status=200, order_id=order.id)
        if order.order_type == "FAK" and not book.crosses(yes_side, yes_price):
            raise Rejected(FAK_NOT_FILLED, status=200, order_id=order.id)
        self.orders[order.id] = order
        trades: list[Trade] = []
        with self._exchange.batch() as batch:
            self._placing = order
            try:
                fills = self._exchange.take(
                    book, yes_side, yes_price, order.original_size, order.token
                )
            finally:
                self._placing = None
            trades.extend(self._fill(order, fill, batch.timestamp_ms) for fill in fills)
            if order.remaining and order.order_type in ("GTC", "GTD"):
                book.add(yes_side, yes_price, order.remaining, order, order.token)
                order.resting = True
                self.open_orders.setdefault(order.owner, {})[order.id] = order
        if not order.remaining or (order.order_type == "FAK" and order.size_matched):
            order.status = "MATCHED"  # a FAK's unfilled rest is simply dropped
        elif order.order_type in ("FOK", "FAK"):
            order.status = "CANCELED"
        self._events.order(order, event)
        for trade in trades:
            self._events.trade(trade)
        return accepted(order, trades)

    @staticmethod
    def _available(book: MarketBook, side: Side, limit: int) -> int:
        if side == BUY:
            return sum(book.asks[p].size for p in book.ask_prices if p <= limit)
        return sum(book.bids[p].size for p in book.bid_prices if p >= limit)

    # -- fills and trades --------------------------------------------------------------------
    def _fee_schedule(self, book: MarketBook) -> FeeSchedule:
        info = self._exchange.markets[book.condition_id].info
        return FeeSchedule(rate=info.fee_rate, exponent=info.fee_exponent)

    def _fill(self, taker: UserOrder | None, fill: Fill, timestamp_ms: int) -> Trade:
        """Record one match between a taker (None: simulated flow) and a resting entry."""
        maker_order = fill.order if isinstance(fill.order, UserOrder) else None
        if taker is not None:
            book, token, side, outcome = taker.book, taker.token, taker.side, taker.outcome
        else:
            assert maker_order is not None
            book, token, side = maker_order.book, 1 - maker_order.token, maker_order.side
            outcome = self._outcome(book, token)
        # The fill price is the resting level's (YES terms); each party sees its own token.
        taker_price = fill.price if token == 0 else MICROS - fill.price
        schedule = self._fee_schedule(book)
        trade = Trade(
            id=self._new_trade_id(),
            taker_order_id=taker.id if taker is not None else "",
            market=book.condition_id,
            asset_id=book.token_ids[token],
            side=side,
            size=fill.size,
            price=taker_price,
            fee=taker_fee(side, taker_price, fill.size, schedule) if taker is not None else 0,
            fee_rate_bps=str(schedule.rate // BPS),
            match_time=timestamp_ms // 1000,
            last_update=timestamp_ms // 1000,
            outcome=outcome,
            owner=taker.owner if taker is not None else SIM_OWNER,
            maker_address=taker.maker_address if taker is not None else SIM_MAKER_ADDRESS,
            taker=taker,
            maker=self._maker_fill(book, fill, maker_order, taker),
        )
        if taker is None:
            trade.taker_order_id = "0x" + hashlib.sha256(trade.id.encode()).hexdigest()
        self.trades[trade.id] = trade
        if taker is not None:
            taker.size_matched += fill.size
            taker.associate_trades.append(trade.id)
            self.balances.apply(
                taker.maker_address, taker.asset_id, taker.side, fill.size, taker_price
            )
            self.balances.charge_fee(taker.maker_address, taker.asset_id, taker.side, trade.fee)
        if maker_order is not None:
            self._maker_filled(maker_order, fill.size, trade)
        self.settlement.schedule(trade)
        return trade

    def _maker_fill(
        self, book: MarketBook, fill: Fill, order: UserOrder | None, taker: UserOrder | None
    ) -> MakerFill:
        if order is None:
            # Simulated liquidity: an anonymous counterparty resting on the YES book.
            assert taker is not None
            yes_side: Side = SELL if taker.yes_side == BUY else BUY
            anonymous = hashlib.sha256(f"{book.condition_id}:{fill.price}:{taker.id}".encode())
            return MakerFill(
                order_id="0x" + anonymous.hexdigest(),
                owner=SIM_OWNER,
                maker_address=SIM_MAKER_ADDRESS,
                matched_amount=fill.size,
                price=fill.price,
                asset_id=book.token_ids[0],
                outcome=self._outcome(book, 0),
                side=yes_side,
                order=None,
            )
        return MakerFill(
            order_id=order.id,
            owner=order.owner,
            maker_address=order.maker_address,
            matched_amount=fill.size,
            price=order.price,
            asset_id=order.asset_id,
            outcome=order.outcome,
            side=order.side,
            order=order,
        )

    def _maker_filled(self, order: UserOrder, size: int, trade: Trade) -> None:
        order.size_matched += size
        order.associate_trades.append(trade.id)
        self.balances.apply(order.maker_address, order.asset_id, order.side, size, order.price)
        if not order.remaining:
            order.status = "MATCHED"
            order.resting = False
            self.open_orders.get(order.owner, {}).pop(order.id, None)
        self._events.order(order, "UPDATE")

    def on_maker_fill(self, book: MarketBook, fill: Fill, timestamp_ms: int) -> None:
        if self._placing is not None:
            return  # the placing order's own fills are recorded by _execute
        self._events.trade(self._fill(None, fill, timestamp_ms))

    def on_market_closed(self, book: MarketBook) -> None:
        for order in [o for o in self._resting_orders() if o.book is book]:
            self.cancel(order, status="CANCELED_MARKET_RESOLVED")

    # -- cancels -----------------------------------------------------------------------------
    def cancel(self, order: UserOrder, status: str = "CANCELED") -> None:
        held = self._delayed.pop(order.id, None)
        if held is not None:
            held.cancel()
        if order.resting:
            with self._exchange.batch():
                order.book.cancel_order(order.yes_side, order.yes_price, order, order.token)
            order.resting = False
        order.status = status
        self.open_orders.get(order.owner, {}).pop(order.id, None)
        self._events.order(order, "CANCELLATION")

    def cancel_ids(self, key: ApiKey, ids: list[str]) -> PolymarketCancelResponse:
        canceled: list[str] = []
        not_canceled: dict[str, str] = {}
        for order_id in dict.fromkeys(ids):
            order = self.orders.get(order_id)
            if order is None or order.owner != key.key:
                not_canceled[order_id] = "Order not found"
            elif order.status == "MATCHED":
                not_canceled[order_id] = "Order already matched"
            elif not order.resting and order.status != "DELAYED":
                not_canceled[order_id] = "Order already canceled"
            else:
                self.cancel(order)
                canceled.append(order_id)
        return PolymarketCancelResponse(canceled=canceled, not_canceled=not_canceled)

    def cancel_all_of(self, key: ApiKey, status: str = "CANCELED") -> int:
        """Cancel every resting order of a key; how many there were."""
        orders = list(self.open_orders.get(key.key, {}).values())
        for order in orders:
            self.cancel(order, status)
        return len(orders)

    def expire_orders(self, now_s: float) -> None:
        """GTD orders whose expiration has passed are canceled."""
        for order in [o for o in self._resting_orders() if o.expiration and o.expiration <= now_s]:
            self.cancel(order, status="CANCELED_EXPIRED_ORDER")
