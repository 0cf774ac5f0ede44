"""What the venue's answers mean for an order: our stable reason codes, and whether the outcome
is known, safe to retry, or a restricted mode (VENUE §2.3 errors, §3.1, §3.3, §7).

The wire carries human strings, not codes (VENUE §3.1: "match on substrings"); the SDK maps a
few of the 200 ``errorMsg`` strings to ``RejectedOrder.code`` and raises typed errors for HTTP
failures. Both end up here, in one table each, so a new venue message is one line to add.

The one rule that matters most: anything that may have reached the matching engine without a
usable answer (a timeout, a dropped connection, a 5xx, a response we cannot read) is
**unknown**, never "rejected" and never retried. A 425 or 429 is the venue saying it did not
take the order, so those alone are retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from polymarket.errors import (
    RateLimitError,
    RequestRejectedError,
    TransportError,
    UnexpectedResponseError,
)

from polybus.executor.venue import (
    CancelRefusal,
    Restriction,
    UnknownReason,
    VenueRejectReason,
)

Kind = Literal["rejected", "retry", "unknown"]


@dataclass(frozen=True, slots=True)
class Classified:
    """One venue answer, decided. ``restriction`` is set when the answer reveals a restricted
    mode; ``retry_after_s`` is the venue's hint (``None`` if it gave none)."""

    kind: Kind
    reason: VenueRejectReason | UnknownReason
    message: str
    retry_after_s: float | None = None
    restriction: Restriction | None = None


# Lower-case substrings of the venue's (and the SDK's pre-send) messages, first match wins.
_MESSAGE_REASONS: tuple[tuple[str, VenueRejectReason], ...] = (
    ("breaks minimum tick size rule", "off_tick"),
    ("must conform to tick size", "off_tick"),
    ("must be a multiple of tick size", "off_tick"),
    ("lower than the minimum", "below_min_size"),
    ("not enough balance / allowance", "not_enough_balance"),
    ("allowance is not enough", "not_enough_balance"),
    ("order crosses book", "post_only_would_cross"),
    ("can be post-only", "post_only_order_type"),
    ("post-only orders are only supported", "post_only_order_type"),
    ("fok orders are fully filled or killed", "fok_not_filled"),
    ("fak orders are partially filled or killed", "fak_not_filled"),
    ("post-only mode", "post_only_mode"),
    ("cancel-only", "cancel_only_mode"),
    ("trading is currently disabled", "trading_disabled"),
    ("service not ready", "engine_restarting"),
    ("not yet ready to process new orders", "market_not_ready"),
    ("invalid expiration", "invalid_expiration"),
    ("expiration must be", "invalid_expiration"),
    ("invalid order signature", "invalid_signature"),
    ("invalid signature", "invalid_signature"),
    ("invalid nonce", "invalid_nonce"),
    ("duplicated", "duplicate_order"),
    ("order already submitted", "duplicate_order"),
    ("order_version_mismatch", "order_version_mismatch"),
    ("invalid order version", "order_version_mismatch"),
    ("order owner has to be the owner of the api key", "owner_mismatch"),
    ("signer address has to be the address of the api key", "signer_mismatch"),
    ("maker address not allowed", "signer_mismatch"),
    ("maker has to be the signer", "signer_mismatch"),
    ("invalid api key", "invalid_api_key"),
    ("invalid l1 request headers", "invalid_api_key"),
    ("address banned", "address_banned"),
    ("closed only mode", "closed_only_mode"),
    ("blocked by cloudflare", "blocked"),
    ("invalid order payload", "invalid_order"),
    ("invalid token id", "invalid_order"),
    ("too many orders in payload", "invalid_order"),
)

# RejectedOrder.code (the SDK's reading of a 200 errorMsg) → ours; "unknown" falls back to
# the message table.
_SDK_CODES: dict[str, VenueRejectReason] = {
    "unmatched": "unmatched",
    "market_not_ready": "market_not_ready",
    "not_enough_balance": "not_enough_balance",
    "invalid_nonce": "invalid_nonce",
    "invalid_expiration": "invalid_expiration",
    "post_only_would_cross": "post_only_would_cross",
    "post_only_mode": "post_only_mode",
    "fok_not_filled": "fok_not_filled",
    "fak_not_filled": "fak_not_filled",
}

_RESTRICTIONS: dict[str, Restriction] = {
    "restarting": "engine_restarting",
    "post_only": "post_only_mode",
    "cancel_only": "cancel_only_mode",
}

_CANCEL_REFUSALS: tuple[tuple[str, CancelRefusal], ...] = (
    ("already canceled or matched", "already_canceled_or_matched"),
    ("already matched", "already_matched"),
    ("already canceled", "already_canceled"),
    ("not found", "not_found"),
)


def reason_for_message(message: str) -> VenueRejectReason:
    """The stable code of a venue (or SDK) refusal message; ``venue_rejected`` if unknown."""
    lowered = message.lower()
    for fragment, reason in _MESSAGE_REASONS:
        if fragment in lowered:
            return reason
    return "venue_rejected"


def reason_for_rejected_order(code: str, message: str) -> VenueRejectReason:
    """A ``RejectedOrder`` (a 200 answer refusing one order) in our terms."""
    return _SDK_CODES.get(code) or reason_for_message(message)


def restriction_for_reason(reason: str) -> Restriction | None:
    """The restricted mode a refusal reveals, if any."""
    if reason in ("post_only_mode", "cancel_only_mode", "trading_disabled", "engine_restarting"):
        return reason  # type: ignore[return-value]  # the four share their names
    return None


def classify_request_error(error: BaseException) -> Classified:
    """An exception raised by a request that was (or may have been) sent."""
    message = str(error)
    if isinstance(error, RateLimitError):
        return Classified("retry", "rate_limited", message, error.retry_after)
    if isinstance(error, RequestRejectedError):
        return _classify_rejection(error, message)
    if isinstance(error, TimeoutError):
        return Classified("unknown", "timeout", message or "no answer in time")
    if isinstance(error, TransportError):
        return Classified("unknown", "transport_error", message)
    if isinstance(error, UnexpectedResponseError):
        return Classified("unknown", "unexpected_response", message)
    return Classified("unknown", "transport_error", f"{type(error).__name__}: {message}")


def _classify_rejection(error: RequestRejectedError, message: str) -> Classified:
    restriction = _RESTRICTIONS.get(error.restriction or "")
    if error.status == 425 or restriction == "engine_restarting":
        return Classified(
            "retry", "engine_restarting", message, error.retry_after, "engine_restarting"
        )
    if restriction is not None:
        return Classified("rejected", restriction, message, error.retry_after, restriction)
    reason = reason_for_message(message)
    if error.status == 503 and reason == "trading_disabled":
        return Classified("rejected", reason, message, error.retry_after, "trading_disabled")
    if error.status >= 500:
        # "could not insert order", "could not run the execution": the engine may have it.
        return Classified("unknown", "server_error", message)
    if error.status == 401 and reason == "venue_rejected":
        reason = "invalid_api_key"
    if error.status == 403 and reason == "venue_rejected":
        reason = "blocked"
    return Classified("rejected", reason, message, error.retry_after)


def cancel_refusal(message: str) -> CancelRefusal:
    """Why the venue did not cancel an order, from its ``not_canceled`` text."""
    lowered = message.lower()
    for fragment, reason in _CANCEL_REFUSALS:
        if fragment in lowered:
            return reason
    return "cancel_refused"
