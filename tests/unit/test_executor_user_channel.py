"""The user channel's frames to reports, on the venue's verbatim examples (VENUE.md §4.4):
fills of our orders as taker and as maker in every settlement status, order changes to our
order states, malformed and unknown elements counted and skipped beside valid ones, and the
authentication frame (whose secrets only ever go there)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from polybus.common.money import MICROS
from polybus.common.polymarket.clob import PolymarketApiCredentials
from polybus.executor.live.user_channel import PolymarketUserChannel, UserChannelSettings
from polybus.executor.venue import VenueOrderUpdate, VenueTrade
from tests.unit.test_polymarket_wire import USER_ORDER, USER_TRADE

OURS = "9180014b-33c8-9240-a14b-bdca11c0a465"
THEIRS = "0b8a2b6f-0000-4000-8000-000000000001"
SECRET = "c2VjcmV0LW9mLXRoZS11c2VyLWNoYW5uZWw="
PASSPHRASE = "passphrase-of-the-user-channel"
SECOND = 1_000_000_000
SETTLEMENT_STATUSES = ["MATCHED", "MINED", "CONFIRMED", "RETRYING", "FAILED"]


def channel(api_key: str = OURS, **settings: Any) -> PolymarketUserChannel:
    credentials = PolymarketApiCredentials(api_key=api_key, secret=SECRET, passphrase=PASSPHRASE)
    return PolymarketUserChannel(credentials, UserChannelSettings(**settings))


def trade_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(USER_TRADE)
    event.update(fields)
    return event


def order_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(USER_ORDER)
    event.update(fields)
    return event


def frame(*events: dict[str, Any]) -> str:
    return json.dumps(list(events) if len(events) != 1 else events[0])


# -- trades ----------------------------------------------------------------------------------
def test_a_trade_we_took_is_one_taker_fill_with_the_venues_figures() -> None:
    # the taker's event: owner is the taker's key; the maker order belongs to someone else
    example = json.loads(USER_TRADE)
    example["maker_orders"][0]["owner"] = THEIRS
    [fill] = channel().decode(frame(example))
    assert fill == VenueTrade(
        trade_id="28c4d2eb-bbea-40e7-a9f0-b2fdb56b2c2e",
        venue_order_id="0x06bc63e346ed4ceddce9efd6b3af37c8f8f440c92fe7da6b2d0f9e4ccbc50c42",
        condition_id="0xbd31dc8a20211944f6b70f31557f1001557b59905b7738480ca09bd4532f84af",
        asset_id="52114319501245915516055106046884209969926127482827954674443846427813813222426",
        side="BUY",
        price=570_000,
        size=10 * MICROS,
        liquidity="taker",
        status="MATCHED",
        fee_rate_bps=0,
        matched_at_ns=1672290701 * 1_000_000_000,
        transaction_hash="",
    )


def test_a_trade_that_filled_our_resting_orders_is_one_maker_fill_per_order_of_ours() -> None:
    maker = json.loads(USER_TRADE)["maker_orders"][0]
    ours_a = {**maker, "order_id": "0xa1", "matched_amount": "4", "price": "0.57"}
    ours_b = {**maker, "order_id": "0xb2", "matched_amount": "5.5", "fee_rate_bps": "0"}
    theirs = {**maker, "order_id": "0xc3", "owner": THEIRS, "matched_amount": "0.5"}
    event = trade_event(
        owner=THEIRS, trade_owner=OURS, trader_side="MAKER", maker_orders=[ours_a, ours_b, theirs]
    )
    reports = channel().decode(frame(event))
    fills = [r for r in reports if isinstance(r, VenueTrade)]
    assert len(fills) == len(reports)
    assert [(f.venue_order_id, f.liquidity, f.side, f.size) for f in fills] == [
        ("0xa1", "maker", "SELL", 4 * MICROS),
        ("0xb2", "maker", "SELL", 5_500_000),
    ]


def test_every_settlement_status_is_reported_and_a_repeat_is_not() -> None:
    user = channel()
    reports = []
    for status in SETTLEMENT_STATUSES:
        event = trade_event(status=status, transaction_hash="" if status == "MATCHED" else "0x9")
        reports += user.decode(frame(event))
        reports += user.decode(frame(event))  # redelivered
    taker = [r for r in reports if isinstance(r, VenueTrade) and r.liquidity == "taker"]
    assert [t.status for t in taker] == SETTLEMENT_STATUSES


def test_a_self_cross_sent_once_as_taker_and_once_as_maker_gives_each_fill_once() -> None:
    as_taker = trade_event(trader_side="TAKER", trade_owner=OURS)
    as_maker = trade_event(trader_side="MAKER", trade_owner=OURS)
    user = channel()
    fills = user.decode(frame(as_taker)) + user.decode(frame(as_maker))
    assert sorted(f.liquidity for f in fills if isinstance(f, VenueTrade)) == ["maker", "taker"]


def test_a_trade_of_other_keys_gives_nothing() -> None:
    assert channel(api_key="another-key").decode(frame(trade_event())) == []


def test_a_gap_reaches_back_to_the_match_of_a_trade_still_settling() -> None:
    now_s = time.time_ns() // SECOND
    user = channel(gap_margin_s=5, settling_horizon_s=3600)
    for trade_id, matched_s, status in [
        ("t-open", now_s - 120, "MINED"),
        ("t-done", now_s - 600, "MATCHED"),
        ("t-done", now_s - 600, "CONFIRMED"),
        ("t-lost", now_s - 7200, "MATCHED"),  # its end was missed over an hour ago
    ]:
        user.decode(frame(trade_event(id=trade_id, matchtime=str(matched_s), status=status)))
    user._heard_ns = (now_s - 10) * SECOND
    # t-open matched before the last frame heard; t-done settled; t-lost is past the horizon
    assert user._gap_start() == (now_s - 120 - 5) * SECOND


# -- orders ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "status", "matched"),
    [
        ({"type": "PLACEMENT", "status": "LIVE"}, "live", 0),
        ({"type": "UPDATE", "status": "LIVE", "size_matched": "4"}, "partially_filled", 4),
        ({"type": "UPDATE", "status": "MATCHED", "size_matched": "10"}, "filled", 10),
        ({"type": "UPDATE", "status": "LIVE", "size_matched": "10"}, "filled", 10),
        ({"type": "CANCELLATION", "status": "CANCELED", "size_matched": "4"}, "canceled", 4),
        ({"type": "CANCELLATION", "status": "CANCELED_EXPIRED_ORDER"}, "expired", 0),
        ({"type": "UPDATE", "status": "CANCELED_MARKET_RESOLVED"}, "canceled", 0),
        ({"type": "PLACEMENT", "status": "DELAYED"}, "live", 0),
        ({"type": "UPDATE", "status": "UNMATCHED"}, "canceled", 0),
    ],
)
def test_an_order_event_becomes_our_order_state(
    fields: dict[str, str], status: str, matched: int
) -> None:
    [update] = channel().decode(frame(order_event(**fields)))
    assert isinstance(update, VenueOrderUpdate)
    assert (update.status, update.size_matched) == (status, matched * MICROS)
    assert update.venue_order_id == json.loads(USER_ORDER)["id"]
    assert update.at_ns == 1672290687 * 1_000_000_000


def test_an_order_timestamp_in_milliseconds_is_read_as_such() -> None:
    [update] = channel().decode(frame(order_event(timestamp="1672290687123")))
    assert isinstance(update, VenueOrderUpdate)
    assert update.at_ns == 1672290687123 * 1_000_000


def test_an_order_status_we_do_not_know_is_counted_not_guessed() -> None:
    user = channel()
    assert user.decode(frame(order_event(status="SOMETHING_NEW"))) == []
    assert user.rejected == 1


# -- frames that do not fit ------------------------------------------------------------------
def test_malformed_and_unknown_elements_are_skipped_and_their_siblings_reported() -> None:
    user = channel()
    malformed = order_event(size_matched=7)  # a number where the venue sends a string
    unknown = {"event_type": "something_new", "id": "x"}
    bad_price = trade_event(price="0.5.7")
    reports = user.decode(frame(malformed, unknown, bad_price, order_event(), trade_event()))
    assert [type(r) for r in reports] == [VenueOrderUpdate, VenueTrade, VenueTrade]
    assert user.rejected == 3


@pytest.mark.parametrize("text", ["not json", "[1, 2", "42", "[]", '{"event_type": "order"}'])
def test_a_frame_that_is_not_an_event_is_never_fatal(text: str) -> None:
    user = channel()
    assert user.decode(text) == []
    assert user.rejected == (0 if text == "[]" else 1)


# -- the authentication frame ----------------------------------------------------------------
def test_the_first_frame_authenticates_and_names_the_markets_as_the_venue_shows() -> None:
    subscribe = json.loads(channel(markets=("0xabc",))._subscription())
    assert subscribe == {
        "auth": {"apiKey": OURS, "secret": SECRET, "passphrase": PASSPHRASE},
        "markets": ["0xabc"],
        "type": "user",
    }
    assert "markets" not in json.loads(channel()._subscription())  # every market of the key


def test_the_channel_shows_no_secret() -> None:
    user = channel()
    assert SECRET not in repr(user)
    assert PASSPHRASE not in repr(user)
