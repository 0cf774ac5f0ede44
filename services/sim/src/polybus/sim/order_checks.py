"""The checks a signed order passes before it may trade, worded as the venue answers
(VENUE.md §3.1, §3.6): owner and signer against the API key, the EIP-712 signature in the
market's exchange domain ("2" for CTF markets, "3" for Protocol V2 ones) by signature type
(EOA, proxy and Safe wallets signed by their owner, ``POLY_1271`` deposit wallets through
ERC-1271), verified by the simulator's own :mod:`polybus.sim.signing`, never shared code; tick
size, minimum size and GTD expiration."""

from __future__ import annotations

from decimal import Decimal

from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import format_price, format_size
from polybus.common.polymarket.clob import PolymarketPostOrder, PolymarketSignedOrder
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
from polybus.sim.signing import (
    ExchangeDomain,
    OrderStruct,
    SignatureError,
    exchange_domain,
    order_hash,
    recover_order_signer,
    recover_poly_1271_owner,
)
from polybus.sim.wallets import EOA, POLY_1271, SIGNATURE_TYPES, Wallets

GTD_THRESHOLD_S = 60
"""The venue's security threshold: a GTD order must expire at least a minute from now."""
MARKETABLE_MIN = MICROS
"""The least collateral a FOK/FAK order may spend (1 pUSD, VENUE §6.3)."""
MAKER_NOT_ALLOWED = "maker address not allowed"


def verify_signed_order(
    key: ApiKey, post: PolymarketPostOrder, exchange: Exchange, wallets: Wallets
) -> tuple[OrderStruct, str, MarketBook, int]:
    """(signed struct, order id, book, token index) of an order the key may place."""
    payload = post.order
    if post.owner != key.key:
        raise Rejected(OWNER_MISMATCH)
    _check_signer(key, payload, wallets)
    found = exchange.tokens.get(payload.token_id)
    if found is None:
        raise Rejected("Invalid token id")
    book, token = found
    domain = exchange_domain(protocol_v2=book.protocol_v2, neg_risk=book.neg_risk)
    struct = _struct(payload)
    order_id = order_hash(struct, domain)
    _check_signature(key, payload, struct, domain)
    _check_maker(payload, wallets)
    return struct, order_id, book, token


def _check_signer(key: ApiKey, payload: PolymarketSignedOrder, wallets: Wallets) -> None:
    if payload.signature_type not in SIGNATURE_TYPES:
        raise Rejected(INVALID_PAYLOAD)
    # A deposit wallet signs as itself (ERC-1271); every other type signs with the key's EOA.
    if payload.signature_type == POLY_1271:
        if not wallets.owned_by(payload.signer, key.address, POLY_1271):
            raise Rejected(SIGNER_MISMATCH)
    elif payload.signer.lower() != key.address:
        raise Rejected(SIGNER_MISMATCH)


def _struct(payload: PolymarketSignedOrder) -> OrderStruct:
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
        struct.struct_hash()  # every field encodable
    except (KeyError, ValueError):
        raise Rejected(INVALID_PAYLOAD) from None
    if struct.maker_amount <= 0 or struct.taker_amount <= 0:
        raise Rejected(INVALID_PAYLOAD)
    return struct


def _check_signature(
    key: ApiKey, payload: PolymarketSignedOrder, struct: OrderStruct, domain: ExchangeDomain
) -> None:
    try:
        if payload.signature_type == POLY_1271:
            recovered = recover_poly_1271_owner(struct, payload.signature, domain)
            expected = key.address  # the deposit wallet's owner (checked by _check_signer)
        else:
            recovered = recover_order_signer(struct, payload.signature, domain)
            expected = payload.signer.lower()
    except SignatureError:
        raise Rejected(INVALID_SIGNATURE) from None
    if recovered != expected:
        raise Rejected(INVALID_SIGNATURE)


def _check_maker(payload: PolymarketSignedOrder, wallets: Wallets) -> None:
    signer, maker = payload.signer.lower(), payload.maker.lower()
    if payload.signature_type == EOA:
        if maker != signer:
            raise Rejected("the order maker has to be the signer for EOA orders")
    elif payload.signature_type == POLY_1271:
        if maker != signer:
            raise Rejected(MAKER_NOT_ALLOWED)
    elif not wallets.owned_by(maker, signer, payload.signature_type):
        # A proxy or Safe order spends the wallet's funds: its owner must be the signer.
        raise Rejected(MAKER_NOT_ALLOWED)


def price_and_size(
    struct: OrderStruct, order_id: str, book: MarketBook, order_type: str
) -> tuple[int, int, int]:
    """(shares, collateral, price) of a signed order, checked against the tick and minimums.

    BUY: makerAmount is the collateral paid, takerAmount the shares; SELL the reverse. The
    price is their ratio. A limit order's (GTC/GTD) must sit exactly on the market's tick grid.
    A market order's (FOK/FAK) need not: the official SDK builds a market BUY from a spend
    amount (cents) and floors the shares, so its ratio sits a fraction above the cap it was
    given; its limit is that ratio rounded to the grid against the order (a BUY down, a SELL
    up), which is the cap the SDK promises not to exceed."""
    if struct.side == 0:
        shares, collateral = struct.taker_amount, struct.maker_amount
    else:
        shares, collateral = struct.maker_amount, struct.taker_amount
    tick = book.tick_size
    if order_type in ("FOK", "FAK"):
        steps, inexact = divmod(collateral * MICROS, shares * tick)
        price = (steps + (1 if inexact and struct.side == 1 else 0)) * tick
    else:
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
    if order_type in ("FOK", "FAK") and collateral < MARKETABLE_MIN:
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
