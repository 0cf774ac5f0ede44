"""Every venue answer the docs and the SDK list, in our reason codes (VENUE §2.3, §3.1, §7)."""

from __future__ import annotations

import pytest
from polymarket.errors import (
    RateLimitError,
    RequestRejectedError,
    TransportError,
    UnexpectedResponseError,
)

from polybus.executor.live.errors import (
    cancel_refusal,
    classify_request_error,
    reason_for_message,
    reason_for_rejected_order,
)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("order 0xabc is invalid. Price (100) breaks minimum tick size rule: 0.1", "off_tick"),
        ("order 0x1 is invalid. Size (1.08) lower than the minimum: 5", "below_min_size"),
        (
            "not enough balance / allowance: the balance is not enough -> balance: 0, "
            "order amount: 5000000",
            "not_enough_balance",
        ),
        ("invalid post-only order: order crosses book", "post_only_would_cross"),
        (
            "invalid post-only order: only GTC and GTD orders can be post-only",
            "post_only_order_type",
        ),
        ("invalid order signature", "invalid_signature"),
        ("order 0xabc is invalid. Duplicated.", "duplicate_order"),
        ("invalid order version, please use the latest clob-client", "order_version_mismatch"),
        ("the order owner has to be the owner of the API KEY", "owner_mismatch"),
        ("the order signer address has to be the address of the API KEY", "signer_mismatch"),
        ("Invalid API key", "invalid_api_key"),
        ("'0x1234' address banned", "address_banned"),
        ("'0x1234' address in closed only mode", "closed_only_mode"),
        ("Invalid order payload", "invalid_order"),
        ("the market is not yet ready to process new orders", "market_not_ready"),
        ("price must conform to tick size 0.01 with at most 2 decimal places.", "off_tick"),
        ("expiration must be at least 180 seconds in the future.", "invalid_expiration"),
        ("something new", "venue_rejected"),
    ],
)
def test_venue_messages_map_to_stable_codes(message: str, reason: str) -> None:
    assert reason_for_message(message) == reason


def test_the_sdks_rejected_order_codes_map_and_unknown_falls_back_to_the_message() -> None:
    assert reason_for_rejected_order("fok_not_filled", "x") == "fok_not_filled"
    assert reason_for_rejected_order("unmatched", "") == "unmatched"
    assert reason_for_rejected_order("unknown", "invalid order signature") == "invalid_signature"


def test_425_and_429_are_retried_with_the_venues_hint() -> None:
    restart = classify_request_error(
        RequestRejectedError(
            "service not ready", status=425, retry_after=2, restriction="restarting"
        )
    )
    assert (restart.kind, restart.reason, restart.retry_after_s) == (
        "retry",
        "engine_restarting",
        2,
    )
    limited = classify_request_error(RateLimitError("slow down", retry_after=1.5))
    assert (limited.kind, limited.reason, limited.retry_after_s) == ("retry", "rate_limited", 1.5)


def test_restricted_modes_are_refusals_with_a_state() -> None:
    post_only = classify_request_error(
        RequestRejectedError(
            "post-only mode",
            status=503,
            code="post_only_mode",
            retry_after=79,
            restriction="post_only",
        )
    )
    assert (post_only.kind, post_only.reason, post_only.restriction) == (
        "rejected",
        "post_only_mode",
        "post_only_mode",
    )
    cancel_only = classify_request_error(
        RequestRejectedError(
            "Trading is currently cancel-only.", status=503, restriction="cancel_only"
        )
    )
    assert cancel_only.restriction == "cancel_only_mode"
    disabled = classify_request_error(
        RequestRejectedError("Trading is currently disabled. Check polymarket.com", status=503)
    )
    assert (disabled.kind, disabled.restriction) == ("rejected", "trading_disabled")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError(), "timeout"),
        (TransportError("connection reset"), "transport_error"),
        (UnexpectedResponseError("bad body"), "unexpected_response"),
        (RequestRejectedError("could not run the execution", status=500), "server_error"),
        (RequestRejectedError("could not insert order", status=500), "server_error"),
    ],
)
def test_anything_that_may_have_reached_the_engine_is_unknown(
    error: BaseException, reason: str
) -> None:
    classified = classify_request_error(error)
    assert (classified.kind, classified.reason) == ("unknown", reason)


def test_a_cloudflare_block_is_a_refusal_not_an_order_outcome() -> None:
    blocked = classify_request_error(RequestRejectedError("<html>Attention Required!", status=403))
    assert (blocked.kind, blocked.reason) == ("rejected", "blocked")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Order already matched", "already_matched"),
        ("Order already canceled", "already_canceled"),
        ("already canceled or matched", "already_canceled_or_matched"),
        ("Order not found", "not_found"),
        ("nope", "cancel_refused"),
    ],
)
def test_cancel_refusals(message: str, reason: str) -> None:
    assert cancel_refusal(message) == reason
