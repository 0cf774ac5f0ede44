"""The checks a signed order passes before it may trade, worded as the venue answers
(VENUE.md §3.1, §3.6): owner and signer against the API key, the EIP-712 signature (verified
by the simulator's own :mod:`polybus.sim.signing`, never shared code), tick size, minimum size
and GTD expiration."""

from __future__ import annotations

from decimal import Decimal

from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import format_price, format_size
from polybus.common.polymarket.clob import PolymarketPostOrder
from polybus.sim.auth import ApiKey
from polybus.sim.book import MarketBook
from polybus.sim.exchange import Exchange
from polybus.sim.orders import (
    INVALID_EXPIRATION,
    INVALID_PAYLOAD,
    INVALID_SIGNATURE,
    OWNER_MISMATCH,
    SIGNER_MISMATCH,
    Rejected,
)
from polybus.sim.signing import OrderStruct, SignatureError, order_hash, recover_order_signer

GTD_THRESHOLD_S = 60
"""The venue's security threshold: a GTD order must expire at least a minute from now."""


def verify_signed_order(
    key: ApiKey, post: PolymarketPostOrder, exchange: Exchange
) -> tuple[OrderStruct, str, MarketBook, int]:
    """(signed struct, order id, book, token index) of an order the key may place."""
    payload = post.order
    if post.owner != key.key:
        raise Rejected(OWNER_MISMATCH)
    if payload.signer.lower() != key.address:
        raise Rejected(SIGNER_MISMATCH)
    found = exchange.tokens.get(payload.token_id)
    if found is None:
        raise Rejected("Invalid token id")
    book, token = found
    try:
        struct = OrderStruct(
            salt=int(payload.salt),
            maker=payload.maker,
            signer=payload.signer,
            token_id=int(payload.token_id),
            maker_amount=int(payload.maker_amount),
            taker_amount=int(payload.taker_amount),
            side={"BUY": 0, "SELL": 1}[payload.side.upper()],
            signature_type=payload.signature_type,
            timestamp=int(payload.timestamp),
            metadata=payload.metadata,
            builder=payload.builder,
        )
        order_id = order_hash(struct, neg_risk=book.neg_risk)
    except (KeyError, ValueError):
        raise Rejected(INVALID_PAYLOAD) from None
    if struct.maker_amount <= 0 or struct.taker_amount <= 0:
        raise Rejected(INVALID_PAYLOAD)
    try:
        signer = recover_order_signer(struct, payload.signature, neg_risk=book.neg_risk)
    except SignatureError:
        raise Rejected(INVALID_SIGNATURE) from None
    if signer != payload.signer.lower():
        raise Rejected(INVALID_SIGNATURE)
    if payload.signature_type == 0 and payload.maker.lower() != signer:
        raise Rejected("the order maker has to be the signer for EOA orders")
    return struct, order_id, book, token


def price_and_size(
    struct: OrderStruct, order_id: str, book: MarketBook, order_type: str
) -> tuple[int, int, int]:
    """(shares, collateral, price) of a signed order, checked against the tick and minimums.

    BUY: makerAmount is the collateral paid, takerAmount the shares; SELL the reverse. The
    price is their ratio and must sit exactly on the market's tick grid."""
    if struct.side == 0:
        shares, collateral = struct.taker_amount, struct.maker_amount
    else:
        shares, collateral = struct.maker_amount, struct.taker_amount
    tick = book.tick_size
    if (collateral * MICROS) % shares:
        raise Rejected(
            f"order {order_id} is invalid. Price ({_decimal_text(collateral, shares)}) "
            f"breaks minimum tick size rule: {format_price(tick)}"
        )
    price = collateral * MICROS // shares
    if price % tick or not tick <= price <= MICROS - tick:
        raise Rejected(
            f"order {order_id} is invalid. Price ({format_price(price)}) breaks minimum "
            f"tick size rule: {format_price(tick)}"
        )
    if order_type in ("GTC", "GTD") and shares < book.min_order_size:
        raise Rejected(
            f"order {order_id} is invalid. Size ({format_size(shares)}) lower than the "
            f"minimum: {format_size(book.min_order_size)}"
        )
    if order_type in ("FOK", "FAK") and collateral < MICROS:
        # Marketable orders have a $1 minimum instead of the share minimum.
        raise Rejected(
            f"order {order_id} is invalid. Amount ({format_size(collateral)}) lower than "
            "the minimum: 1"
        )
    return shares, collateral, price


def expiration(post: PolymarketPostOrder, order_type: str, now_s: float) -> int:
    """GTD orders expire at least a minute from now; other types carry no expiration."""
    try:
        expires = int(post.order.expiration or "0")
    except ValueError:
        raise Rejected(INVALID_PAYLOAD) from None
    if order_type == "GTD":
        if expires < now_s + GTD_THRESHOLD_S:
            raise Rejected(INVALID_EXPIRATION)
    elif expires != 0:
        raise Rejected(INVALID_EXPIRATION)
    return expires


def _decimal_text(numerator: int, denominator: int) -> str:
    value = Decimal(numerator) / Decimal(denominator)
    return format(value.normalize(), "f")
