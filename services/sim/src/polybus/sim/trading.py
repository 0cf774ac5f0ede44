"""Trading on the simulated CLOB: API keys, signed orders, matching, settlement, heartbeats.

Every order is checked the way the venue does (VENUE.md §3): L2 HMAC, the owner and signer
against the API key, the EIP-712 signature (CLOB V2 domain of the market's exchange), tick
size, minimum size, order type rules, expiration, balances, post-only crossing, FOK/FAK. A
valid order matches against the book (simulated liquidity and other resting orders, in time
priority) and rests if it is GTC/GTD. Each fill is a trade that settles MATCHED → MINED →
CONFIRMED (or FAILED, on demand), with ``order``/``trade`` events on the user channel.
Matching-engine restarts, restricted modes and rate limits answer as the venue does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import itertools
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import msgspec
import structlog
from aiohttp import web

from polybus.common.money import MICROS
from polybus.common.polymarket.book_hash import format_price, format_size
from polybus.sim.auth import ApiKey, ApiKeys, AuthError
from polybus.sim.book import BUY, SELL, Fill, MarketBook, Side
from polybus.sim.config import SimSettings
from polybus.sim.exchange import Exchange, FillListener
from polybus.sim.faults import POST_ONLY_BODY, Faults, OrderKind
from polybus.sim.http_util import error_response, json_response
from polybus.sim.market_ws import SocketRegistry
from polybus.sim.ratelimit import Bucket, RateLimiter
from polybus.sim.signing import (
    CTF_EXCHANGE_V2,
    NEG_RISK_CTF_EXCHANGE_V2,
    OrderStruct,
    SignatureError,
    order_hash,
    recover_order_signer,
)
from polybus.sim.user_ws import UserHub

_log = structlog.get_logger("polybus.sim.trading")

Spawn = Callable[[Coroutine[Any, Any, None], str], None]
OrderType = Literal["GTC", "GTD", "FOK", "FAK"]

MAX_BATCH = 15
MAX_CANCEL_BATCH = 1000
GTD_THRESHOLD_S = 60
"""The venue's security threshold: a GTD order must expire at least a minute from now."""
ZERO32 = "0x" + "00" * 32
SIM_OWNER = "00000000-0000-4000-8000-000000000000"
"""Owner of the simulated counterparties in trades."""
SIM_MAKER_ADDRESS = "0x5151515151515151515151515151515151515151"
MAX_UINT256 = str(2**256 - 1)

FOK_NOT_FILLED = "order couldn't be fully filled. FOK orders are fully filled or killed."
FAK_NOT_FILLED = (
    "no orders found to match with FAK order. FAK orders are partially filled or killed if no "
    "match is found."
)
POST_ONLY_CROSSES = "invalid post-only order: order crosses book"
POST_ONLY_TYPE = "invalid post-only order: only GTC and GTD orders can be post-only"
INVALID_PAYLOAD = "Invalid order payload"
OWNER_MISMATCH = "the order owner has to be the owner of the API KEY"
SIGNER_MISMATCH = "the order signer address has to be the address of the API KEY"
INVALID_SIGNATURE = "invalid order signature"
INVALID_EXPIRATION = "invalid expiration"


# -- wire bodies -------------------------------------------------------------------------------
class OrderPayload(msgspec.Struct, kw_only=True, rename="camel"):
    salt: int | str
    maker: str
    signer: str
    token_id: str
    maker_amount: str
    taker_amount: str
    side: str
    signature: str
    expiration: str = "0"
    signature_type: int = 0
    timestamp: str = "0"
    metadata: str = ZERO32
    builder: str = ZERO32


class PostOrder(msgspec.Struct, kw_only=True, rename="camel"):
    order: OrderPayload
    owner: str
    order_type: str = "GTC"
    defer_exec: bool = False
    post_only: bool = False


class _CancelOne(msgspec.Struct, kw_only=True):
    orderID: str


class _CancelMarket(msgspec.Struct, kw_only=True):
    market: str = ""
    asset_id: str = ""


class _Heartbeat(msgspec.Struct, kw_only=True):
    heartbeat_id: str = ""


_post_order = msgspec.json.Decoder(PostOrder)
_post_orders = msgspec.json.Decoder(list[PostOrder])
_cancel_one = msgspec.json.Decoder(_CancelOne)
_cancel_many = msgspec.json.Decoder(list[str])
_cancel_market = msgspec.json.Decoder(_CancelMarket)
_heartbeat = msgspec.json.Decoder(_Heartbeat)
_encoder = msgspec.json.Encoder()


class Rejected(Exception):
    """An order the venue refuses. ``status`` 400 answers ``{"error"}``; 200 answers
    ``{"success": false, "errorMsg"}`` (execution outcomes: post-only cross, FOK, FAK)."""

    def __init__(self, message: str, *, status: int = 400, order_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.order_id = order_id


# -- state -------------------------------------------------------------------------------------
@dataclass(eq=False)
class UserOrder:
    id: str
    owner: str
    maker_address: str
    market: str
    asset_id: str
    token: int
    side: Side
    """In the order's own token (BUY/SELL)."""
    price: int
    original_size: int
    order_type: OrderType
    expiration: int
    created_at: int
    outcome: str
    book: MarketBook
    size_matched: int = 0
    status: str = "LIVE"
    associate_trades: list[str] = field(default_factory=list)
    resting: bool = False

    @property
    def remaining(self) -> int:
        return self.original_size - self.size_matched

    @property
    def yes_side(self) -> Side:
        return self.side if self.token == 0 else (SELL if self.side == BUY else BUY)

    @property
    def yes_price(self) -> int:
        return self.price if self.token == 0 else MICROS - self.price


@dataclass(eq=False)
class MakerFill:
    order_id: str
    owner: str
    maker_address: str
    matched_amount: int
    price: int
    asset_id: str
    outcome: str
    side: Side
    order: UserOrder | None


@dataclass(eq=False)
class Trade:
    id: str
    taker_order_id: str
    market: str
    asset_id: str
    side: Side
    size: int
    price: int
    fee: int
    fee_rate_bps: str
    match_time: int
    outcome: str
    owner: str
    maker_address: str
    maker: MakerFill
    taker: UserOrder | None
    status: str = "MATCHED"
    last_update: int = 0
    transaction_hash: str = ""
    fails: bool = False


@dataclass
class Account:
    collateral: int
    positions: dict[str, int] = field(default_factory=dict)


def _price_and_size(
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


def _expiration(post: PostOrder, order_type: str) -> int:
    """GTD orders expire at least a minute from now; other types carry no expiration."""
    try:
        expiration = int(post.order.expiration or "0")
    except ValueError:
        raise Rejected(INVALID_PAYLOAD) from None
    if order_type == "GTD":
        if expiration < time.time() + GTD_THRESHOLD_S:
            raise Rejected(INVALID_EXPIRATION)
    elif expiration != 0:
        raise Rejected(INVALID_EXPIRATION)
    return expiration


def _token_outcome(book: MarketBook, token: int, exchange: Exchange) -> str:
    return exchange.markets[book.condition_id].info.tokens[token].outcome


def _decimal_text(numerator: int, denominator: int) -> str:
    value = Decimal(numerator) / Decimal(denominator)
    return format(value.normalize(), "f")


class Trading(FillListener):
    """The authenticated half of the CLOB, plus the user channel."""

    def __init__(
        self, exchange: Exchange, registry: SocketRegistry, faults: Faults, settings: SimSettings
    ) -> None:
        self.exchange = exchange
        self.registry = registry
        self.faults = faults
        self.settings = settings
        self.api_keys = ApiKeys(settings.seed)
        self.users = UserHub(
            self.api_keys, registry, subscribe_timeout_s=settings.subscribe_timeout_s
        )
        self.limiter = RateLimiter(settings.rate_limit_tier)
        self.orders: dict[str, UserOrder] = {}
        self.open_orders: dict[str, dict[str, UserOrder]] = {}
        """Resting orders by API key."""
        self.trades: dict[str, Trade] = {}
        self.accounts: dict[str, Account] = {}
        self._trade_ids = itertools.count(1)
        self._placing: UserOrder | None = None
        self._settlements: list[tuple[float, int, str, str]] = []
        self._settlement_ids = itertools.count()
        self._settlement_wake = asyncio.Event()
        self._settlement_rng = hashlib.sha256(f"{settings.seed}:settlement".encode()).digest()
        exchange.fills = self

    # -- lifecycle -------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ws/user", self.users.handle),
            web.post("/auth/api-key", self.create_api_key),
            web.get("/auth/derive-api-key", self.derive_api_key),
            web.get("/auth/api-keys", self.list_api_keys),
            web.delete("/auth/api-key", self.delete_api_key),
            web.post("/order", self.post_order),
            web.post("/orders", self.post_orders),
            web.delete("/order", self.cancel_order),
            web.delete("/orders", self.cancel_orders),
            web.delete("/cancel-all", self.cancel_all),
            web.delete("/cancel-market-orders", self.cancel_market_orders),
            web.get("/data/orders", self.data_orders),
            web.get("/data/order/{order_id}", self.data_order),
            web.get("/data/trades", self.data_trades),
            web.post("/v1/heartbeats", self.heartbeat),
            web.get("/balance-allowance", self.balance_allowance),
            web.get("/balance-allowance/update", self.balance_allowance),
        ]

    def start(self, spawn: Spawn) -> None:
        spawn(self._settlement_loop(), "settlement")
        spawn(self._maintenance_loop(), "trading.maintenance")

    async def stop(self) -> None:
        self._settlements.clear()

    # -- helpers -----------------------------------------------------------------------------
    async def _authenticated(self, request: web.Request) -> tuple[ApiKey, bytes]:
        body = await request.read()
        return self.api_keys.verify_l2(request, body), body

    def account(self, address: str) -> Account:
        account = self.accounts.get(address)
        if account is None:
            account = self.accounts[address] = Account(
                collateral=self.settings.starting_collateral * MICROS
            )
        return account

    def _position(self, account: Account, asset_id: str) -> int:
        return account.positions.setdefault(asset_id, self.settings.starting_shares * MICROS)

    def _reserved(self, address: str) -> tuple[int, dict[str, int]]:
        """Collateral and shares held by an address's resting orders."""
        collateral = 0
        shares: dict[str, int] = {}
        for orders in self.open_orders.values():
            for order in orders.values():
                if order.maker_address != address:
                    continue
                if order.side == BUY:
                    collateral += order.remaining * order.price // MICROS
                else:
                    shares[order.asset_id] = shares.get(order.asset_id, 0) + order.remaining
        return collateral, shares

    def _new_trade_id(self) -> str:
        digest = hashlib.sha256(f"{self.settings.seed}:trade:{next(self._trade_ids)}".encode())
        return str(uuid.UUID(bytes=digest.digest()[:16], version=4))

    def _gate(self, kind: OrderKind) -> web.Response | None:
        return self.faults.order_gate(kind)

    def _admit(self, key: ApiKey, bucket: Bucket, cost: int) -> tuple[bool, dict[str, str]]:
        admission = self.limiter.admit(key.address, bucket, cost)
        return admission.allowed, admission.headers

    # -- API keys ----------------------------------------------------------------------------
    @staticmethod
    def _creds(key: ApiKey) -> dict[str, str]:
        return {"apiKey": key.key, "secret": key.secret, "passphrase": key.passphrase}

    async def create_api_key(self, request: web.Request) -> web.Response:
        try:
            address, nonce = self.api_keys.verify_l1(request)
        except AuthError as error:
            return error_response(401, str(error))
        key = self.api_keys.create(address, nonce)
        if key is None:
            return error_response(400, "Could not create api key")
        _log.info("auth.api_key_created", address=address, nonce=nonce)
        return json_response(self._creds(key))

    async def derive_api_key(self, request: web.Request) -> web.Response:
        try:
            address, nonce = self.api_keys.verify_l1(request)
        except AuthError as error:
            return error_response(401, str(error))
        return json_response(self._creds(self.api_keys.derive(address, nonce)))

    async def list_api_keys(self, request: web.Request) -> web.Response:
        try:
            key, _ = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        return json_response({"apiKeys": [k.key for k in self.api_keys.keys_of(key.address)]})

    async def delete_api_key(self, request: web.Request) -> web.Response:
        try:
            key, _ = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        self.api_keys.delete(key)
        return json_response("OK")

    # -- orders ------------------------------------------------------------------------------
    async def post_order(self, request: web.Request) -> web.Response:
        try:
            key, body = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        try:
            post = _post_order.decode(body)
        except msgspec.DecodeError:
            return error_response(400, INVALID_PAYLOAD)
        gate = self._gate("post_only_order" if post.post_only else "order")
        if gate is not None:
            return gate
        allowed, headers = self._admit(key, "order", 1)
        if not allowed:
            return error_response(429, "Too Many Requests", headers=headers)
        try:
            result = self.place(key, post)
        except Rejected as rejected:
            if rejected.status == 400:
                return error_response(400, rejected.message, headers=headers)
            return json_response(self._rejection_body(rejected), headers=headers)
        return json_response(result, headers=headers)

    async def post_orders(self, request: web.Request) -> web.Response:
        try:
            key, body = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        try:
            posts = _post_orders.decode(body)
        except msgspec.DecodeError:
            return error_response(400, INVALID_PAYLOAD)
        if len(posts) > MAX_BATCH:
            return error_response(400, f"Too many orders in payload, max allowed: {MAX_BATCH}")
        if not posts:
            return error_response(400, INVALID_PAYLOAD)
        gate = self._gate("post_only_order")
        if gate is not None:
            return gate
        allowed, headers = self._admit(key, "order", len(posts))
        if not allowed:
            return error_response(429, "Too Many Requests", headers=headers)
        results: list[dict[str, Any]] = []
        for post in posts:
            try:
                if not post.post_only and self.faults.post_only_active():
                    raise Rejected(POST_ONLY_BODY, status=200)
                results.append(self.place(key, post))
            except Rejected as rejected:
                results.append(self._rejection_body(rejected))
        return json_response(results, headers=headers)

    @staticmethod
    def _rejection_body(rejected: Rejected) -> dict[str, Any]:
        return {
            "success": False,
            "errorMsg": rejected.message,
            "orderID": rejected.order_id,
            "status": "",
            "makingAmount": "",
            "takingAmount": "",
            "transactionsHashes": [],
            "tradeIDs": [],
        }

    def _verify(self, key: ApiKey, post: PostOrder) -> tuple[OrderStruct, str, MarketBook, int]:
        payload = post.order
        if post.owner != key.key:
            raise Rejected(OWNER_MISMATCH)
        if payload.signer.lower() != key.address:
            raise Rejected(SIGNER_MISMATCH)
        found = self.exchange.tokens.get(payload.token_id)
        if found is None:
            raise Rejected("Invalid token id")
        book, token = found
        side = payload.side.upper()
        try:
            struct = OrderStruct(
                salt=int(payload.salt),
                maker=payload.maker,
                signer=payload.signer,
                token_id=int(payload.token_id),
                maker_amount=int(payload.maker_amount),
                taker_amount=int(payload.taker_amount),
                side={"BUY": 0, "SELL": 1}[side],
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

    def place(self, key: ApiKey, post: PostOrder) -> dict[str, Any]:
        """Validate, match and (for GTC/GTD) rest an order; the venue's 200 body."""
        struct, order_id, book, token = self._verify(key, post)
        state = self.exchange.markets[book.condition_id]
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
        shares, collateral, price = _price_and_size(struct, order_id, book, order_type)
        expiration = _expiration(post, order_type)
        self._check_balance(struct.maker.lower(), side, book.token_ids[token], shares, collateral)
        order = UserOrder(
            id=order_id,
            owner=key.key,
            maker_address=struct.maker.lower(),
            market=book.condition_id,
            asset_id=book.token_ids[token],
            token=token,
            side=side,
            price=price,
            original_size=shares,
            order_type=order_type,  # type: ignore[arg-type]
            expiration=expiration,
            created_at=int(time.time()),
            outcome=_token_outcome(book, token, self.exchange),
            book=book,
        )
        return self._execute(order, post_only=post.post_only)

    def _check_balance(
        self, address: str, side: Side, asset_id: str, shares: int, collateral: int
    ) -> None:
        account = self.account(address)
        reserved_collateral, reserved_shares = self._reserved(address)
        if side == BUY:
            available, needed = account.collateral - reserved_collateral, collateral
        else:
            held = self._position(account, asset_id)
            available, needed = held - reserved_shares.get(asset_id, 0), shares
        if needed > available:
            raise Rejected(
                "not enough balance / allowance: the balance is not enough -> balance: "
                f"{max(available, 0)}, order amount: {needed}"
            )

    def _execute(self, order: UserOrder, *, post_only: bool) -> dict[str, Any]:
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
        with self.exchange.batch() as batch:
            self._placing = order
            try:
                fills = self.exchange.take(
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
        self._order_event(order, "PLACEMENT")
        for trade in trades:
            self._trade_events(trade)
        matched = order.size_matched
        making = matched * order.price // MICROS if order.side == BUY else matched
        taking = matched if order.side == BUY else matched * order.price // MICROS
        return {
            "success": True,
            "errorMsg": "",
            "orderID": order.id,
            "status": "matched" if trades else "live",
            "makingAmount": str(making) if trades else "",
            "takingAmount": str(taking) if trades else "",
            "transactionsHashes": [],
            "tradeIDs": [trade.id for trade in trades],
        }

    @staticmethod
    def _available(book: MarketBook, side: Side, limit: int) -> int:
        if side == BUY:
            return sum(book.asks[p].size for p in book.ask_prices if p <= limit)
        return sum(book.bids[p].size for p in book.bid_prices if p >= limit)

    # -- fills and trades --------------------------------------------------------------------
    def _fee(self, size: int, price: int) -> int:
        # shares x rate x p x (1 - p) in exact integers, rounded down to a micro-unit.
        rate_bps = self.settings.taker_fee_bps
        return size * rate_bps * price * (MICROS - price) // (10_000 * MICROS * MICROS)

    def _fill(self, taker: UserOrder | None, fill: Fill, timestamp_ms: int) -> Trade:
        """Record one match between a taker (None: simulated flow) and a resting entry."""
        book = (taker.book if taker is not None else None) or self._book_of_fill(fill)
        maker_order = fill.order if isinstance(fill.order, UserOrder) else None
        if taker is not None:
            token = taker.token
            side = taker.side
            outcome = taker.outcome
        else:
            assert maker_order is not None
            token = 1 - maker_order.token
            side = maker_order.side
            outcome = _token_outcome(book, token, self.exchange)
        # The fill price is the resting level's (YES terms); each party sees its own token.
        taker_price = fill.price if token == 0 else MICROS - fill.price
        trade = Trade(
            id=self._new_trade_id(),
            taker_order_id=taker.id if taker is not None else "",
            market=book.condition_id,
            asset_id=book.token_ids[token],
            side=side,
            size=fill.size,
            price=taker_price,
            fee=self._fee(fill.size, taker_price) if taker is not None else 0,
            fee_rate_bps=str(self.settings.taker_fee_bps),
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
            self._apply_balances(
                taker.maker_address, taker.asset_id, taker.side, fill.size, taker_price
            )
            self.account(taker.maker_address).collateral -= trade.fee
        if maker_order is not None:
            self._maker_filled(maker_order, fill.size, trade)
        trade.fails = self._will_fail()
        self._schedule(trade)
        return trade

    def _book_of_fill(self, fill: Fill) -> MarketBook:
        assert isinstance(fill.order, UserOrder)
        return fill.order.book

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
                outcome=_token_outcome(book, 0, self.exchange),
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
        self._apply_balances(order.maker_address, order.asset_id, order.side, size, order.price)
        if not order.remaining:
            order.status = "MATCHED"
            order.resting = False
            self.open_orders.get(order.owner, {}).pop(order.id, None)
        self._order_event(order, "UPDATE")

    def _apply_balances(
        self, address: str, asset_id: str, side: Side, size: int, price: int, sign: int = 1
    ) -> None:
        """Move collateral and shares for a fill (``sign`` -1 undoes it)."""
        account = self.account(address)
        cost = size * price // MICROS
        position = self._position(account, asset_id)
        if side == BUY:
            account.collateral -= sign * cost
            account.positions[asset_id] = position + sign * size
        else:
            account.collateral += sign * cost
            account.positions[asset_id] = position - sign * size

    def on_maker_fill(self, book: MarketBook, fill: Fill, timestamp_ms: int) -> None:
        if self._placing is not None:
            return  # the placing order's own fills are recorded by _execute
        trade = self._fill(None, fill, timestamp_ms)
        self._trade_events(trade)

    def on_market_closed(self, book: MarketBook) -> None:
        for orders in self.open_orders.values():
            for order in [o for o in orders.values() if o.book is book]:
                self._cancel(order, status="CANCELED_MARKET_RESOLVED")

    # -- settlement --------------------------------------------------------------------------
    def _will_fail(self) -> bool:
        if self.faults.failed_settlements > 0:
            self.faults.failed_settlements -= 1
            return True
        probability = self.settings.settlement_failure_probability
        if not probability:
            return False
        self._settlement_rng = hashlib.sha256(self._settlement_rng).digest()
        return int.from_bytes(self._settlement_rng[:8], "big") / 2**64 < probability

    def _schedule(self, trade: Trade) -> None:
        now = time.monotonic()
        mined = now + self.settings.settlement_mined_ms / 1000
        heapq.heappush(
            self._settlements,
            (mined, next(self._settlement_ids), trade.id, "FAILED" if trade.fails else "MINED"),
        )
        if not trade.fails:
            confirmed = mined + self.settings.settlement_confirmed_ms / 1000
            heapq.heappush(
                self._settlements, (confirmed, next(self._settlement_ids), trade.id, "CONFIRMED")
            )
        self._settlement_wake.set()

    async def _settlement_loop(self) -> None:
        while True:
            if not self._settlements:
                self._settlement_wake.clear()
                await self._settlement_wake.wait()
                continue
            due = self._settlements[0][0] - time.monotonic()
            if due > 0:
                self._settlement_wake.clear()
                try:
                    async with asyncio.timeout(due):
                        await self._settlement_wake.wait()
                except TimeoutError:
                    pass
                continue
            _, _, trade_id, status = heapq.heappop(self._settlements)
            self._settle(self.trades[trade_id], status)

    def _settle(self, trade: Trade, status: str) -> None:
        trade.status = status
        trade.last_update = int(time.time())
        if status == "MINED":
            trade.transaction_hash = "0x" + hashlib.sha256(f"tx:{trade.id}".encode()).hexdigest()
        if status == "FAILED":
            self._revert(trade)
        self._trade_events(trade)

    def _revert(self, trade: Trade) -> None:
        """A failed settlement: the fill did not happen, balances go back."""
        if trade.taker is not None:
            taker = trade.taker
            self._apply_balances(
                taker.maker_address, taker.asset_id, taker.side, trade.size, trade.price, sign=-1
            )
            self.account(taker.maker_address).collateral += trade.fee
        maker = trade.maker.order
        if maker is not None:
            self._apply_balances(
                maker.maker_address, maker.asset_id, maker.side, trade.size, maker.price, sign=-1
            )

    # -- cancels -----------------------------------------------------------------------------
    def _cancel(self, order: UserOrder, status: str = "CANCELED") -> None:
        if order.resting:
            with self.exchange.batch():
                order.book.cancel_order(order.yes_side, order.yes_price, order, order.token)
            order.resting = False
        order.status = status
        self.open_orders.get(order.owner, {}).pop(order.id, None)
        self._order_event(order, "CANCELLATION")

    def _cancel_ids(self, key: ApiKey, ids: list[str]) -> dict[str, Any]:
        canceled: list[str] = []
        not_canceled: dict[str, str] = {}
        for order_id in dict.fromkeys(ids):
            order = self.orders.get(order_id)
            if order is None or order.owner != key.key:
                not_canceled[order_id] = "Order not found"
            elif order.status == "MATCHED":
                not_canceled[order_id] = "Order already matched"
            elif not order.resting:
                not_canceled[order_id] = "Order already canceled"
            else:
                self._cancel(order)
                canceled.append(order_id)
        return {"canceled": canceled, "not_canceled": not_canceled}

    async def _cancel_request(
        self,
        request: web.Request,
        select: Callable[[ApiKey, bytes], list[str] | web.Response],
        *,
        cost: Callable[[list[str]], int],
        after: bool = False,
    ) -> web.Response:
        try:
            key, body = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        gate = self._gate("cancel")
        if gate is not None:
            return gate
        selected = select(key, body)
        if isinstance(selected, web.Response):
            return selected
        if after:
            allowed, headers = self._admit(key, "cancel", 1)
        else:
            allowed, headers = self._admit(key, "cancel", cost(selected))
        if not allowed:
            return error_response(429, "Too Many Requests", headers=headers)
        result = self._cancel_ids(key, selected)
        if after and result["canceled"]:
            headers = self.limiter.charge(key.address, "cancel", len(result["canceled"]))
        return json_response(result, headers=headers)

    async def cancel_order(self, request: web.Request) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            try:
                return [_cancel_one.decode(body).orderID]
            except msgspec.DecodeError:
                return error_response(400, "Invalid payload")

        return await self._cancel_request(request, select, cost=len)

    async def cancel_orders(self, request: web.Request) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            try:
                ids = _cancel_many.decode(body)
            except msgspec.DecodeError:
                return error_response(400, "Invalid payload")
            if len(ids) > MAX_CANCEL_BATCH:
                return error_response(
                    400, f"Too many orders in payload, max allowed: {MAX_CANCEL_BATCH}"
                )
            return list(dict.fromkeys(ids))

        return await self._cancel_request(request, select, cost=len)

    async def cancel_all(self, request: web.Request) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            return list(self.open_orders.get(key.key, {}))

        return await self._cancel_request(request, select, cost=len, after=True)

    async def cancel_market_orders(self, request: web.Request) -> web.Response:
        def select(key: ApiKey, body: bytes) -> list[str] | web.Response:
            try:
                target = _cancel_market.decode(body or b"{}")
            except msgspec.DecodeError:
                return error_response(400, "Invalid payload")
            if not target.market and not target.asset_id:
                return error_response(400, "Invalid payload")
            return [
                order.id
                for order in self.open_orders.get(key.key, {}).values()
                if (not target.market or order.market == target.market.lower())
                and (not target.asset_id or order.asset_id == target.asset_id)
            ]

        return await self._cancel_request(request, select, cost=len, after=True)

    # -- heartbeats --------------------------------------------------------------------------
    async def heartbeat(self, request: web.Request) -> web.Response:
        try:
            key, body = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        try:
            given = _heartbeat.decode(body or b"{}").heartbeat_id
        except msgspec.DecodeError:
            return error_response(400, "Invalid payload")
        if given != key.heartbeat_id:
            # The venue answers with the id it expects (py-clob-client reads "error", the
            # official SDK "error_msg"; both are here).
            return json_response(
                {
                    "error": "Invalid Heartbeat ID",
                    "error_msg": "Invalid Heartbeat ID",
                    "heartbeat_id": key.heartbeat_id,
                },
                status=400,
            )
        key.heartbeat_id = str(uuid.uuid4())
        key.heartbeat_deadline = time.monotonic() + self.settings.heartbeat_timeout_s
        return json_response({"heartbeat_id": key.heartbeat_id})

    def _expire_heartbeats(self, now: float) -> None:
        for key in list(self.api_keys.by_key.values()):
            if key.heartbeat_deadline is not None and now >= key.heartbeat_deadline:
                orders = list(self.open_orders.get(key.key, {}).values())
                _log.info("heartbeat.expired", address=key.address, canceled=len(orders))
                for order in orders:
                    self._cancel(order)
                key.heartbeat_deadline = None
                key.heartbeat_id = ""

    def _expire_orders(self, now_s: float) -> None:
        for orders in list(self.open_orders.values()):
            for order in [o for o in orders.values() if o.expiration and o.expiration <= now_s]:
                self._cancel(order, status="CANCELED_EXPIRED_ORDER")

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._expire_heartbeats(time.monotonic())
            self._expire_orders(time.time())

    # -- queries -----------------------------------------------------------------------------
    def _order_json(self, order: UserOrder) -> dict[str, Any]:
        return {
            "id": order.id,
            "status": order.status,
            "owner": order.owner,
            "maker_address": order.maker_address,
            "market": order.market,
            "asset_id": order.asset_id,
            "side": order.side,
            "original_size": format_size(order.original_size),
            "size_matched": format_size(order.size_matched),
            "price": format_price(order.price),
            "outcome": order.outcome,
            "expiration": str(order.expiration),
            "order_type": order.order_type,
            "associate_trades": list(order.associate_trades),
            "created_at": order.created_at,
        }

    async def data_orders(self, request: web.Request) -> web.Response:
        try:
            key, _ = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        query = request.query
        wanted_id = query.get("id", "")
        if wanted_id:
            order = self.orders.get(wanted_id)
            orders = [order] if order is not None and order.owner == key.key else []
        else:
            orders = [
                o
                for o in self.open_orders.get(key.key, {}).values()
                if (not query.get("market") or o.market == query["market"].lower())
                and (not query.get("asset_id") or o.asset_id == query["asset_id"])
            ]
        return json_response(self._page(request, [self._order_json(o) for o in orders]))

    async def data_order(self, request: web.Request) -> web.Response:
        try:
            key, _ = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        order = self.orders.get(request.match_info["order_id"])
        if order is None or order.owner != key.key:
            return error_response(404, "order not found")
        return json_response(self._order_json(order))

    @staticmethod
    def _page(request: web.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        cursor = request.query.get("next_cursor", "") or "MA=="
        if cursor == "LTE=":
            return {"data": [], "next_cursor": "LTE=", "limit": 500, "count": 0}
        try:
            offset = int(base64.b64decode(cursor).decode())
        except ValueError:
            offset = 0
        page = items[offset : offset + 500]
        end = offset + len(page)
        next_cursor = base64.b64encode(str(end).encode()).decode() if end < len(items) else "LTE="
        return {"data": page, "next_cursor": next_cursor, "limit": 500, "count": len(page)}

    def _maker_order_json(self, maker: MakerFill) -> dict[str, Any]:
        return {
            "order_id": maker.order_id,
            "owner": maker.owner,
            "maker_address": maker.maker_address,
            "matched_amount": format_size(maker.matched_amount),
            "price": format_price(maker.price),
            "fee_rate_bps": "0",
            "asset_id": maker.asset_id,
            "outcome": maker.outcome,
            "side": maker.side,
        }

    def _trade_json(self, trade: Trade, trader_side: str) -> dict[str, Any]:
        return {
            "id": trade.id,
            "taker_order_id": trade.taker_order_id,
            "market": trade.market,
            "asset_id": trade.asset_id,
            "side": trade.side,
            "size": format_size(trade.size),
            "fee_rate_bps": trade.fee_rate_bps,
            "price": format_price(trade.price),
            "status": trade.status,
            "match_time": str(trade.match_time),
            "last_update": str(trade.last_update),
            "outcome": trade.outcome,
            "owner": trade.owner,
            "maker_address": trade.maker_address,
            "trader_side": trader_side,
            "transaction_hash": trade.transaction_hash,
            "bucket_index": 0,
            "maker_orders": [self._maker_order_json(trade.maker)],
        }

    async def data_trades(self, request: web.Request) -> web.Response:
        try:
            key, _ = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        query = request.query
        items = []
        for trade in self.trades.values():
            if trade.taker is not None and trade.taker.owner == key.key:
                side = "TAKER"
            elif trade.maker.order is not None and trade.maker.owner == key.key:
                side = "MAKER"
            else:
                continue
            if query.get("id") and trade.id != query["id"]:
                continue
            if query.get("market") and trade.market != query["market"].lower():
                continue
            if query.get("asset_id") and trade.asset_id != query["asset_id"]:
                continue
            if query.get("before", "").isdigit() and trade.match_time >= int(query["before"]):
                continue
            if query.get("after", "").isdigit() and trade.match_time <= int(query["after"]):
                continue
            items.append(self._trade_json(trade, side))
        return json_response(self._page(request, items))

    async def balance_allowance(self, request: web.Request) -> web.Response:
        try:
            key, _ = await self._authenticated(request)
        except AuthError as error:
            return error_response(401, str(error))
        account = self.account(key.address)
        asset_type = request.query.get("asset_type", "COLLATERAL").upper()
        if asset_type == "COLLATERAL":
            balance = account.collateral
        else:
            token_id = request.query.get("token_id", "")
            if token_id not in self.exchange.tokens:
                return error_response(400, "Invalid token id")
            balance = self._position(account, token_id)
        return json_response(
            {
                "balance": str(balance),
                "allowances": {
                    CTF_EXCHANGE_V2: MAX_UINT256,
                    NEG_RISK_CTF_EXCHANGE_V2: MAX_UINT256,
                },
            }
        )

    # -- user channel events -----------------------------------------------------------------
    def _order_event(self, order: UserOrder, kind: str) -> None:
        now = time.time()
        data = _encoder.encode(
            {
                "event_type": "order",
                "id": order.id,
                "owner": order.owner,
                "market": order.market,
                "asset_id": order.asset_id,
                "side": order.side,
                "order_owner": order.owner,
                "original_size": format_size(order.original_size),
                "size_matched": format_size(order.size_matched),
                "price": format_price(order.price),
                "associate_trades": list(order.associate_trades) or None,
                "outcome": order.outcome,
                "type": kind,
                "created_at": str(order.created_at),
                "expiration": str(order.expiration),
                "order_type": order.order_type,
                "status": order.status,
                "maker_address": order.maker_address,
                "timestamp": str(int(now * 1000)),
            }
        )
        self.users.send(order.owner, order.market, data)

    def _trade_events(self, trade: Trade) -> None:
        audiences: list[tuple[str, str]] = []
        if trade.taker is not None:
            audiences.append((trade.taker.owner, "TAKER"))
        if trade.maker.order is not None:
            audiences.append((trade.maker.owner, "MAKER"))
        for owner, trader_side in audiences:
            data = _encoder.encode(
                {
                    "event_type": "trade",
                    "type": "TRADE",
                    "id": trade.id,
                    "taker_order_id": trade.taker_order_id,
                    "market": trade.market,
                    "asset_id": trade.asset_id,
                    "side": trade.side,
                    "size": format_size(trade.size),
                    "price": format_price(trade.price),
                    "fee_rate_bps": trade.fee_rate_bps,
                    "status": trade.status,
                    "matchtime": str(trade.match_time),
                    "last_update": str(trade.last_update),
                    "outcome": trade.outcome,
                    "owner": trade.owner,
                    "trade_owner": owner,
                    "maker_address": trade.maker_address,
                    "transaction_hash": trade.transaction_hash,
                    "bucket_index": 0,
                    "maker_orders": [self._maker_order_json(trade.maker)],
                    "trader_side": trader_side,
                    "timestamp": str(int(time.time() * 1000)),
                }
            )
            self.users.send(owner, trade.market, data)


__all__ = ["Rejected", "Trading"]
