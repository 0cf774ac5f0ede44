"""The simulated CLOB's trading state: user orders, fills and trades, and the venue's refusals.

Sizes and prices are micro-units; a price is in the order's own token (the YES book holds NO
orders at ``1 - price``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from polybus.common.money import MICROS
from polybus.sim.book import BUY, SELL, MarketBook, Side

OrderType = Literal["GTC", "GTD", "FOK", "FAK"]

SIM_OWNER = "00000000-0000-4000-8000-000000000000"
"""Owner of the simulated counterparties in trades."""
SIM_MAKER_ADDRESS = "0x5151515151515151515151515151515151515151"

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


class Rejected(Exception):
    """An order the venue refuses. ``status`` 400 answers ``{"error"}``; 200 answers
    ``{"success": false, "errorMsg"}`` (execution outcomes: post-only cross, FOK, FAK)."""

    def __init__(self, message: str, *, status: int = 400, order_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.order_id = order_id


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
    """None for simulated liquidity."""


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
    """The taker's fee in micro-units: shares on a BUY, pUSD on a SELL."""
    fee_rate_bps: str
    match_time: int
    outcome: str
    owner: str
    maker_address: str
    maker: MakerFill
    taker: UserOrder | None
    """None when simulated flow took a user's resting order."""
    status: str = "MATCHED"
    last_update: int = 0
    transaction_hash: str = ""
    fails: bool = False
    attempts: int = 0
    """Settlement transactions broadcast so far (a RETRYING trade is broadcast again)."""
