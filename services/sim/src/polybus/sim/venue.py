"""The simulator's trading state in Polymarket's JSON: REST bodies and user-channel events,
written through the shared schemas of :mod:`polybus.common.polymarket` so the simulator speaks
exactly what the executor reads."""

from __future__ import annotations

import msgspec

from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import format_price, format_size
from polybus.common.polymarket.clob import (
    PolymarketMakerOrder,
    PolymarketOpenOrder,
    PolymarketOrderResponse,
    PolymarketTrade,
)
from polybus.common.polymarket.user_channel import PolymarketUserOrder, PolymarketUserTrade
from polybus.sim.book import BUY
from polybus.sim.clock import Clock
from polybus.sim.orders import MakerFill, Rejected, Trade, UserOrder
from polybus.sim.user_ws import UserHub

_encoder = msgspec.json.Encoder()


def open_order(order: UserOrder) -> PolymarketOpenOrder:
    return PolymarketOpenOrder(
        id=order.id,
        status=order.status,
        owner=order.owner,
        maker_address=order.maker_address,
        market=order.market,
        asset_id=order.asset_id,
        side=order.side,
        original_size=format_size(order.original_size),
        size_matched=format_size(order.size_matched),
        price=format_price(order.price),
        outcome=order.outcome,
        expiration=str(order.expiration),
        order_type=order.order_type,
        associate_trades=list(order.associate_trades),
        created_at=order.created_at,
    )


def maker_order(maker: MakerFill) -> PolymarketMakerOrder:
    return PolymarketMakerOrder(
        order_id=maker.order_id,
        owner=maker.owner,
        maker_address=maker.maker_address,
        matched_amount=format_size(maker.matched_amount),
        price=format_price(maker.price),
        fee_rate_bps="0",
        asset_id=maker.asset_id,
        outcome=maker.outcome,
        side=maker.side,
    )


def trade_record(trade: Trade, trader_side: str) -> PolymarketTrade:
    """A trade as ``/data/trades`` shows it to one of its two parties."""
    return PolymarketTrade(
        id=trade.id,
        taker_order_id=trade.taker_order_id,
        market=trade.market,
        asset_id=trade.asset_id,
        side=trade.side,
        size=format_size(trade.size),
        fee_rate_bps=trade.fee_rate_bps,
        price=format_price(trade.price),
        status=trade.status,
        match_time=str(trade.match_time),
        last_update=str(trade.last_update),
        outcome=trade.outcome,
        owner=trade.owner,
        maker_address=trade.maker_address,
        trader_side=trader_side,
        transaction_hash=trade.transaction_hash,
        bucket_index=0,
        maker_orders=[maker_order(trade.maker)],
    )


def accepted(order: UserOrder, trades: list[Trade]) -> PolymarketOrderResponse:
    """The 200 answer to a placed order: what it matched on entry, in its own amounts."""
    matched = order.size_matched
    making = matched * order.price // MICROS if order.side == BUY else matched
    taking = matched if order.side == BUY else matched * order.price // MICROS
    return PolymarketOrderResponse(
        success=True,
        error_msg="",
        order_id=order.id,
        status="matched" if trades else "live",
        making_amount=str(making) if trades else "",
        taking_amount=str(taking) if trades else "",
        transactions_hashes=[],
        trade_ids=[trade.id for trade in trades],
    )


def delayed(order: UserOrder) -> PolymarketOrderResponse:
    """The 200 answer to a marketable order held by the market's taker delay."""
    return PolymarketOrderResponse(success=True, error_msg="", order_id=order.id, status="delayed")


def refused(rejected: Rejected) -> PolymarketOrderResponse:
    """The 200 answer to an order refused at execution (post-only cross, FOK, FAK, ...)."""
    return PolymarketOrderResponse(
        success=False, error_msg=rejected.message, order_id=rejected.order_id
    )


class UserEvents:
    """Sends ``order`` and ``trade`` events to the user sockets of the parties."""

    def __init__(self, hub: UserHub, clock: Clock) -> None:
        self._hub = hub
        self._clock = clock

    def _timestamp(self) -> str:
        return str(int(self._clock.time() * 1000))

    def order(self, order: UserOrder, kind: str) -> None:
        """``kind``: PLACEMENT, UPDATE or CANCELLATION."""
        event = PolymarketUserOrder(
            id=order.id,
            owner=order.owner,
            market=order.market,
            asset_id=order.asset_id,
            side=order.side,
            order_owner=order.owner,
            original_size=format_size(order.original_size),
            size_matched=format_size(order.size_matched),
            price=format_price(order.price),
            associate_trades=list(order.associate_trades) or None,
            outcome=order.outcome,
            type=kind,
            created_at=str(order.created_at),
            expiration=str(order.expiration),
            order_type=order.order_type,
            status=order.status,
            maker_address=order.maker_address,
            timestamp=self._timestamp(),
        )
        self._hub.send(order.owner, order.market, _encoder.encode(event))

    def trade(self, trade: Trade) -> None:
        """The trade's current status, to the taker and to the maker (users only)."""
        audiences: list[tuple[str, str]] = []
        if trade.taker is not None:
            audiences.append((trade.taker.owner, "TAKER"))
        if trade.maker.order is not None:
            audiences.append((trade.maker.owner, "MAKER"))
        for owner, trader_side in audiences:
            event = PolymarketUserTrade(
                id=trade.id,
                taker_order_id=trade.taker_order_id,
                market=trade.market,
                asset_id=trade.asset_id,
                side=trade.side,
                size=format_size(trade.size),
                price=format_price(trade.price),
                fee_rate_bps=trade.fee_rate_bps,
                status=trade.status,
                matchtime=str(trade.match_time),
                last_update=str(trade.last_update),
                outcome=trade.outcome,
                owner=trade.owner,
                trade_owner=owner,
                maker_address=trade.maker_address,
                transaction_hash=trade.transaction_hash,
                bucket_index=0,
                maker_orders=[maker_order(trade.maker)],
                trader_side=trader_side,
                timestamp=self._timestamp(),
            )
            self._hub.send(owner, trade.market, _encoder.encode(event))
