"""Bodies of the CLOB's authenticated REST endpoints, mirroring Polymarket's JSON (VENUE.md §2.5,
§3, §5.2): API keys, orders, cancels, the order-safety heartbeat, order and trade queries,
balances.

Prices, sizes and amounts stay strings as the venue sends them; a caller converts them with
:mod:`polybus.common.money` at its own boundary. Field names are the venue's (``orderID``,
``makerAmount``, ``tradeIDs``) through ``rename``; unknown fields are ignored and fields the
venue may leave out have defaults, so additive venue changes do not break decoding. Order
signing is not here: the executor signs with the official SDK and the simulator verifies with
its own code, so a signing bug cannot hide behind shared code.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

ZERO_BYTES32 = "0x" + "00" * 32
"""The ``metadata`` and ``builder`` of an order that sets neither."""


class PolymarketApiCredentials(
    msgspec.Struct, frozen=True, kw_only=True, rename={"api_key": "apiKey"}
):
    """An API key's L2 credentials: the answer of ``POST /auth/api-key`` and
    ``GET /auth/derive-api-key``, and the ``auth`` of a user-channel subscription.

    The repr shows the key only, so the secret and passphrase never reach a log line."""

    api_key: str = ""
    secret: str = ""
    passphrase: str = ""

    def __repr__(self) -> str:
        return f"PolymarketApiCredentials(api_key={self.api_key!r}, secret=***, passphrase=***)"


class PolymarketApiKeys(msgspec.Struct, frozen=True, kw_only=True, rename={"api_keys": "apiKeys"}):
    """``GET /auth/api-keys``: the keys of the authenticated address."""

    api_keys: list[str] = []


class PolymarketSignedOrder(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The signed CLOB V2 order inside ``POST /order``. ``salt`` is a JSON number, amounts,
    ``expiration`` and ``timestamp`` are decimal strings, ``side`` is ``BUY``/``SELL`` (signed
    as 0/1) and ``signatureType`` a number (0 EOA, 1 proxy, 2 Safe, 3 deposit wallet)."""

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
    metadata: str = ZERO_BYTES32
    builder: str = ZERO_BYTES32


class PolymarketPostOrder(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``POST /order`` (and each element of ``POST /orders``). ``owner`` is the API key."""

    order: PolymarketSignedOrder
    owner: str
    order_type: str = "GTC"
    defer_exec: bool = False
    post_only: bool = False


class PolymarketOrderResponse(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename={
        "error_msg": "errorMsg",
        "order_id": "orderID",
        "making_amount": "makingAmount",
        "taking_amount": "takingAmount",
        "transactions_hashes": "transactionsHashes",
        "trade_ids": "tradeIDs",
    },
):
    """The 200 answer to one order: accepted (``status`` live / matched / delayed) or refused
    (``success`` false or a non-empty ``errorMsg`` — a client checks both). Amounts may be
    ``""``; ``transactionsHashes`` is often absent since settlement went asynchronous."""

    success: bool
    error_msg: str = ""
    order_id: str = ""
    status: str = ""
    making_amount: str = ""
    taking_amount: str = ""
    transactions_hashes: list[str] = []
    trade_ids: list[str] = []

    @property
    def accepted(self) -> bool:
        return self.success and not self.error_msg


class PolymarketCancelOrder(
    msgspec.Struct, frozen=True, kw_only=True, rename={"order_id": "orderID"}
):
    """``DELETE /order``. (``DELETE /orders`` takes a bare JSON array of order ids.)"""

    order_id: str


class PolymarketCancelMarketOrders(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``DELETE /cancel-market-orders``: a condition id, a token id, or both."""

    market: str = ""
    asset_id: str = ""


class PolymarketCancelResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of every cancel endpoint: what was canceled, and why the rest was not."""

    canceled: list[str] = []
    not_canceled: dict[str, str] = {}


class PolymarketHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/heartbeats`` both ways: the id last returned (``""`` for the first send),
    and the id to send next."""

    heartbeat_id: str = ""


class PolymarketHeartbeatRejection(msgspec.Struct, frozen=True, kw_only=True):
    """The 400 answer to a stale heartbeat id, carrying the id the venue expects. The message
    is in ``error`` for py-clob-client and ``error_msg`` for the official SDK."""

    error: str = ""
    error_msg: str = ""
    heartbeat_id: str


class PolymarketOpenOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as ``GET /data/orders`` and ``GET /data/order/{id}`` show it."""

    id: str
    status: str
    owner: str
    maker_address: str
    market: str
    asset_id: str
    side: str
    original_size: str
    size_matched: str
    price: str
    outcome: str = ""
    expiration: str = "0"
    """Unix seconds; ``"0"`` means none."""
    order_type: str = ""
    associate_trades: list[str] = []
    created_at: int | str = 0
    """Unix seconds (a number; a string is accepted too)."""


class PolymarketMakerOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One resting order a trade filled, in the trade's ``maker_orders``."""

    order_id: str
    owner: str
    maker_address: str
    matched_amount: str
    price: str
    fee_rate_bps: str = "0"
    asset_id: str
    outcome: str = ""
    side: str


class PolymarketTrade(msgspec.Struct, frozen=True, kw_only=True):
    """A trade as ``GET /data/trades`` shows it; ``side`` is the taker's, ``trader_side``
    says which of the two the caller was. ``status`` MATCHED → MINED → CONFIRMED, or
    MATCHED → FAILED, or through RETRYING (reverted, resubmitted) to MINED or FAILED."""

    id: str
    taker_order_id: str
    market: str
    asset_id: str
    side: str
    size: str
    fee_rate_bps: str = "0"
    price: str
    status: str
    match_time: str
    last_update: str = ""
    outcome: str = ""
    owner: str = ""
    maker_address: str = ""
    trader_side: str = ""
    transaction_hash: str = ""
    bucket_index: int = 0
    maker_orders: list[PolymarketMakerOrder] = []


ItemT = TypeVar("ItemT")

FIRST_CURSOR = "MA=="
LAST_CURSOR = "LTE="
"""The ``next_cursor`` of the last page."""


class PolymarketPage(msgspec.Struct, Generic[ItemT], frozen=True, kw_only=True):
    """One page of a ``/data/*`` listing; ask again with ``next_cursor`` until it is
    :data:`LAST_CURSOR`."""

    data: list[ItemT]
    next_cursor: str = LAST_CURSOR
    limit: int = 0
    count: int = 0


class PolymarketBalanceAllowance(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /balance-allowance``: base units (micro-units) as decimal strings, allowances by
    exchange contract address."""

    balance: str
    allowances: dict[str, str] = {}
