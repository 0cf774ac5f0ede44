"""The executor's venue interface: what the paper and the live adapter both do, in our terms.

Every price, size and amount here is micro-units (DESIGN §2); an adapter converts to the
venue's decimals at its own boundary. The executor turns these results into ``OrderEvent`` and
``Fill`` events the same way for both adapters, so the same events come out of paper and live.

A submit has three outcomes, not two: **unknown** means the order may or may not be on the
venue (a timeout, a dropped connection, a 5xx after the request was sent). It is never
resubmitted blindly; reconciliation (``open_orders``/``trades``) decides what happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

import msgspec

from polybus.common.events import ExchangeVersion as ExchangeVersion  # re-exported for live/
from polybus.common.events import Side, TimeInForce

MAX_SUBMIT_BATCH = 15
"""Orders per ``POST /orders`` (VENUE §3.2)."""
MAX_CANCEL_BATCH = 1000
"""Ids per ``DELETE /orders`` (VENUE §3.3; older docs and the SDK say 3000)."""

VenueOrderStatus = Literal["live", "matched", "delayed"]
"""How the venue accepted an order: resting, matched on entry, or held by a taker delay."""

VenueRejectReason = Literal[
    # the order itself
    "off_tick",
    "below_min_size",
    "post_only_would_cross",
    "post_only_order_type",
    "fok_not_filled",
    "fak_not_filled",
    "unmatched",
    "not_enough_balance",
    "invalid_expiration",
    "invalid_signature",
    "invalid_nonce",
    "invalid_order",
    "duplicate_order",
    "order_version_mismatch",
    "exchange_version_mismatch",
    # the account
    "owner_mismatch",
    "signer_mismatch",
    "invalid_api_key",
    "address_banned",
    "closed_only_mode",
    # the venue's state
    "market_not_ready",
    "engine_restarting",
    "post_only_mode",
    "cancel_only_mode",
    "trading_disabled",
    "rate_limited",
    "blocked",
    # never sent: the SDK could not sign it (the message says why)
    "signing_failed",
    # none of the above: the venue's message is in ``message``
    "venue_rejected",
]
"""Stable codes for why the venue (or its SDK, before sending) refused an order."""

UnknownReason = Literal["timeout", "transport_error", "server_error", "unexpected_response"]
"""Why a submit's outcome cannot be known."""

CancelRefusal = Literal[
    "already_matched",
    "already_canceled",
    "already_canceled_or_matched",
    "not_found",
    "cancel_refused",
]

Restriction = Literal["engine_restarting", "post_only_mode", "cancel_only_mode", "trading_disabled"]


class VenueOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One order to place. ``client_order_id`` is the intent id that asked for it; ``size`` is
    shares for every time in force (an adapter converts a marketable BUY to the venue's pUSD
    amount). ``expires_at_ns`` is when a GTD order should stop (0: none). ``tick_size``,
    ``neg_risk`` and ``exchange_version`` are the market facts the order is signed with."""

    client_order_id: str
    condition_id: str
    asset_id: str
    side: Side
    price: int
    size: int
    time_in_force: TimeInForce = "GTC"
    post_only: bool = False
    expires_at_ns: int = 0
    tick_size: int
    neg_risk: bool = False
    exchange_version: ExchangeVersion = "2"


class SubmitAccepted(msgspec.Struct, frozen=True, kw_only=True, tag="accepted"):
    """The venue has the order. ``trade_ids`` are the fills at placement (later fills of a
    resting remainder arrive as trades)."""

    client_order_id: str
    venue_order_id: str
    venue_status: VenueOrderStatus
    making_amount: int = 0
    taking_amount: int = 0
    trade_ids: tuple[str, ...] = ()


class SubmitRejected(msgspec.Struct, frozen=True, kw_only=True, tag="rejected"):
    """The venue does not have the order (it refused it, or it never left)."""

    client_order_id: str
    reason: VenueRejectReason
    message: str = ""
    """The venue's (or SDK's) own words."""
    retry_after_s: float = 0.0
    """For a restriction or rate limit: when the venue suggests trying again."""


class SubmitUnknown(msgspec.Struct, frozen=True, kw_only=True, tag="unknown"):
    """The order may be on the venue: reconcile, never resubmit blindly. ``venue_order_id``
    is the id the venue gives the signed order (its hash), to look it up."""

    client_order_id: str
    reason: UnknownReason
    message: str = ""
    venue_order_id: str = ""


SubmitResult = SubmitAccepted | SubmitRejected | SubmitUnknown


class CancelResult(msgspec.Struct, frozen=True, kw_only=True):
    """One order's answer to a cancel. ``outcome`` unknown: the request failed in flight."""

    venue_order_id: str
    outcome: Literal["canceled", "not_canceled", "unknown"]
    reason: CancelRefusal | UnknownReason | Restriction | Literal["rate_limited", ""] = ""
    message: str = ""


class VenueOpenOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An open order as the venue reports it (for reconciliation)."""

    venue_order_id: str
    status: str
    condition_id: str
    asset_id: str
    side: Side
    price: int
    original_size: int
    size_matched: int
    order_type: str
    created_at_ns: int
    expires_at_ns: int = 0


class VenueTrade(msgspec.Struct, frozen=True, kw_only=True):
    """Our part of one venue trade: the order of ours it filled, our side and size. A trade
    that filled several of our resting orders gives one of these per order."""

    trade_id: str
    venue_order_id: str
    condition_id: str
    asset_id: str
    side: Side
    price: int
    size: int
    liquidity: Literal["maker", "taker"]
    status: str
    """MATCHED, MINED, CONFIRMED, RETRYING, FAILED (or a newer one the venue sends)."""
    fee_rate_bps: int = 0
    matched_at_ns: int = 0
    transaction_hash: str = ""


class VenueOrderUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A change of one of our orders that the venue pushed (live: the user channel's ``order``
    event; paper: the matcher). ``status`` is the order's state after the change."""

    venue_order_id: str
    condition_id: str
    asset_id: str
    status: Literal["live", "partially_filled", "filled", "canceled", "expired"]
    size_matched: int
    """Shares filled so far (cumulative)."""
    at_ns: int


class ReportsGap(msgspec.Struct, frozen=True, kw_only=True):
    """Reports may have been missed since ``since_ns`` (the user channel reconnected): the
    executor re-reads open orders and trades before it trusts its state again."""

    since_ns: int
    reason: str = ""


VenueReport = VenueTrade | VenueOrderUpdate | ReportsGap
"""What a venue pushes about our orders, in the order it learnt it."""


class VenueRestriction(msgspec.Struct, frozen=True, kw_only=True):
    """A restricted mode the venue reported, and until when (monotonic s) it expects it."""

    mode: Restriction
    until_s: float
    message: str = ""


class HeartbeatRejected(Exception):
    """The venue refused a heartbeat id; ``expected_id`` is the one it wants next. A rejected
    heartbeat does not refresh the venue's deadline."""

    def __init__(self, expected_id: str) -> None:
        super().__init__("heartbeat id refused by the venue")
        self.expected_id = expected_id


class VenueUnavailable(Exception):
    """A query, cancel or heartbeat the venue did not answer usably (``reason`` a stable
    code). The message never carries credentials."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


class Venue(Protocol):
    """A trading venue, as the executor uses it (one per trading account)."""

    @property
    def restriction(self) -> VenueRestriction | None:
        """The restricted mode the venue is in, if it said so and it has not expired."""
        ...

    async def submit(self, orders: Sequence[VenueOrder]) -> list[SubmitResult]:
        """Place orders (sent in batches of :data:`MAX_SUBMIT_BATCH`); one result each, in
        order."""
        ...

    async def cancel(self, venue_order_ids: Sequence[str]) -> list[CancelResult]:
        """Cancel orders by venue id (batches of at most :data:`MAX_CANCEL_BATCH`)."""
        ...

    async def cancel_all(self) -> list[CancelResult]:
        """Cancel every open order of the account."""
        ...

    async def open_orders(self) -> list[VenueOpenOrder]:
        """Every open order of the account."""
        ...

    async def trades(self, after_ns: int = 0) -> list[VenueTrade]:
        """Our fills in trades matched after ``after_ns`` (unix ns; 0: all the venue keeps)."""
        ...

    def reports(self) -> AsyncIterator[VenueReport]:
        """Fills, order changes and gaps as the venue pushes them; one consumer (the
        executor) iterates it for the venue's lifetime. A trade is reported again on every
        settlement status change."""
        ...

    async def heartbeat(self, previous_id: str) -> str:
        """Send the dead-man-switch heartbeat with the last id (``""`` first) and return the
        next one; raises :class:`HeartbeatRejected` with the id the venue expects."""
        ...
