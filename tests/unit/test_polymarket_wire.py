"""The venue's wire schemas and book-hash rule, against real recordings and the venue's own
examples."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from polymarket.models.clob.account import BalanceAllowance, ClobTrade, OpenOrder
from polymarket.models.clob.cancel import CancelOrdersResponse
from polymarket.models.clob.order_heartbeats import OrderHeartbeat
from polymarket.models.clob.order_response import RawOrderResponse
from polymarket.models.clob.user_events import parse_user_event

from polybus.common.polymarket.book_hash import book_hash, format_last_trade_price, format_price
from polybus.common.polymarket.clob import (
    PolymarketApiCredentials,
    PolymarketApiKeys,
    PolymarketBalanceAllowance,
    PolymarketCancelMarketOrders,
    PolymarketCancelOrder,
    PolymarketCancelResponse,
    PolymarketHeartbeat,
    PolymarketHeartbeatRejection,
    PolymarketOpenOrder,
    PolymarketOrderResponse,
    PolymarketPage,
    PolymarketPostOrder,
    PolymarketTrade,
)
from polybus.common.polymarket.market_channel import (
    PolymarketBestBidAsk,
    PolymarketBook,
    PolymarketLastTradePrice,
    PolymarketMarketEvent,
    PolymarketPriceChange,
    PolymarketTickSizeChange,
)
from polybus.common.polymarket.rest import PolymarketOrderBookSummary
from polybus.common.polymarket.user_channel import (
    USER_EVENT_TYPES,
    PolymarketUserEvent,
    PolymarketUserOrder,
    PolymarketUserSubscription,
    PolymarketUserTrade,
)

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "polymarket"
frame_decoder = msgspec.json.Decoder(list[PolymarketMarketEvent] | PolymarketMarketEvent)


def read(name: str) -> bytes:
    return (RESOURCES / name).read_bytes()


def hash_of(book: PolymarketBook, last_trade_price: str, timestamp: str | None = None) -> str:
    return book_hash(
        market=book.market,
        asset_id=book.asset_id,
        timestamp=timestamp or book.timestamp,
        bids=[(level.price, level.size) for level in book.bids],
        asks=[(level.price, level.size) for level in book.asks],
        min_order_size="5",
        tick_size=book.tick_size or "0.001",
        neg_risk=False,
        last_trade_price=last_trade_price,
    )


@pytest.mark.parametrize(
    "name",
    [
        "nautilus_ws_book_snapshot_captured_2026-08-13.json",
        "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json",
    ],
)
def test_hash_rule_reproduces_recorded_snapshots(name: str) -> None:
    frame = frame_decoder.decode(read(name))
    book = frame[0] if isinstance(frame, list) else frame
    assert isinstance(book, PolymarketBook)
    assert hash_of(book, book.last_trade_price) == book.hash


def test_the_book_resent_after_a_trade_hashes_with_the_trade_price() -> None:
    frame = frame_decoder.decode(
        read("nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json")
    )
    assert isinstance(frame, list)
    after_trade = frame[-1]
    assert isinstance(after_trade, PolymarketBook)
    assert after_trade.tick_size == ""  # the re-sent book carries no tick size
    assert hash_of(after_trade, "0.301") == after_trade.hash
    assert hash_of(after_trade, "0.255") != after_trade.hash


def test_every_recorded_market_message_decodes() -> None:
    assert isinstance(
        frame_decoder.decode(read("nautilus_ws_last_trade_price.json")), PolymarketLastTradePrice
    )
    assert isinstance(
        frame_decoder.decode(read("nautilus_ws_tick_size_change.json")), PolymarketTickSizeChange
    )
    assert isinstance(
        frame_decoder.decode(read("nautilus_ws_best_bid_ask.json")), PolymarketBestBidAsk
    )
    assert isinstance(frame_decoder.decode(read("nautilus_ws_book_v1_pretty.json")), PolymarketBook)
    rest = msgspec.json.decode(
        read("nautilus_rest_book_response.json"), type=PolymarketOrderBookSummary
    )
    assert rest.bids[0].price == "0.01"


def test_legacy_price_change_is_normalized_to_entries() -> None:
    message = frame_decoder.decode(read("nautilus_ws_price_change_OLDFORMAT_single.json"))
    assert isinstance(message, PolymarketPriceChange)
    [entry] = message.entries()
    assert (entry.price, entry.size, entry.side) == ("0.514", "21574.08", "SELL")
    assert entry.asset_id.startswith("4833104333")
    assert entry.best_bid == ""


def test_venue_number_formatting() -> None:
    assert format_price(480_000) == "0.48"
    assert format_last_trade_price(620_000, 10_000) == "0.620"
    assert format_last_trade_price(301_000, 1_000) == "0.301"
    assert format_last_trade_price(301_500, 100) == "0.3015"


# -- trading: CLOB REST bodies and user-channel frames --------------------------------------
# The venue's own examples, verbatim from VENUE.md (§2.5, §3.1, §3.3, §3.4, §4.4).
POST_ORDER = b"""{
 "order": {
  "salt": 1495589619394,
  "maker": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
  "signer": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
  "tokenId": "71321045679252212594626385532706912750332728571942532289631379312455583992563",
  "makerAmount": "5000000",
  "takerAmount": "10000000",
  "side": "BUY",
  "expiration": "0",
  "signatureType": 0,
  "timestamp": "1795946806352",
  "metadata": "0x0000000000000000000000000000000000000000000000000000000000000000",
  "builder": "0x0000000000000000000000000000000000000000000000000000000000000000",
  "signature": "0xf2a6bd5be7f2fb7c89bd18c714d86c6e6e452c0a1120d185cb4ef1092b903895449d8f19c1edd3a3b62c836599662e31f222da69ed9223adbf0f6dfcff0dd6d21c"
 },
 "owner": "00000000-0000-0000-0000-000000000000",
 "orderType": "GTC",
 "deferExec": false,
 "postOnly": true
}"""  # noqa: E501
ORDER_LIVE = b"""{"success": true, "orderID": "0xabcdef1234567890abcdef1234567890abcdef12", "status": "live",
 "makingAmount": "100000000", "takingAmount": "200000000", "errorMsg": ""}"""  # noqa: E501
ORDER_MATCHED = b"""{"success": true, "orderID": "0xabcdef1234567890abcdef1234567890abcdef12", "status": "matched",
 "makingAmount": "100000000", "takingAmount": "200000000",
 "transactionsHashes": ["0x1234567890abcdef1234567890abcdef12345678"],
 "tradeIDs": ["trade-123"], "errorMsg": ""}"""  # noqa: E501
ORDER_DELAYED = b"""{"success": true, "orderID": "0xabcdef1234567890abcdef1234567890abcdef12", "status": "delayed",
 "makingAmount": "100000000", "takingAmount": "200000000", "errorMsg": ""}"""  # noqa: E501
CANCELED = b"""{"canceled": ["0xabcdef1234567890abcdef1234567890abcdef12", "0xfedcba0987654321fedcba0987654321fedcba09"],
 "not_canceled": {"0x1234567890abcdef1234567890abcdef12345678": "Order already matched"}}"""  # noqa: E501
HEARTBEAT = b'{"heartbeat_id": "7f335bb3-36cb-433d-b8ff-4f9a2233d833"}'
HEARTBEAT_STALE = b'{"error":"Invalid Heartbeat ID","heartbeat_id":"<expected id>"}'
CREDENTIALS = b"""{
  "apiKey": "550e8400-e29b-41d4-a716-446655440000",
  "secret": "base64EncodedSecretString",
  "passphrase": "randomPassphraseString"
}"""
USER_SUBSCRIBE = b"""{
  "auth": {
    "apiKey": "your-api-key",
    "secret": "your-api-secret",
    "passphrase": "your-passphrase"
  },
  "markets": ["0x1234...condition_id"],
  "type": "user"
}"""
USER_UPDATE = (
    b'{"operation": "subscribe", "markets": '
    b'["0x5f65177b394277fd294cd75650044e32ba009a95022d88a0c1d565897d72f8f1"]}'
)
USER_ORDER = b"""{
  "event_type": "order",
  "id": "0xff354cd7ca7539dfa9c28d90943ab5779a4eac34b9b37a757d7b32bdfb11790b",
  "owner": "9180014b-33c8-9240-a14b-bdca11c0a465",
  "market": "0xbd31dc8a20211944f6b70f31557f1001557b59905b7738480ca09bd4532f84af",
  "asset_id": "52114319501245915516055106046884209969926127482827954674443846427813813222426",
  "side": "SELL",
  "order_owner": "9180014b-33c8-9240-a14b-bdca11c0a465",
  "original_size": "10",
  "size_matched": "0",
  "price": "0.57",
  "associate_trades": null,
  "outcome": "YES",
  "type": "PLACEMENT",
  "created_at": "1672290687",
  "expiration": "1234567",
  "order_type": "GTD",
  "status": "LIVE",
  "maker_address": "0x1234...",
  "timestamp": "1672290687"
}"""
USER_TRADE = b"""{
  "event_type": "trade",
  "type": "TRADE",
  "id": "28c4d2eb-bbea-40e7-a9f0-b2fdb56b2c2e",
  "taker_order_id": "0x06bc63e346ed4ceddce9efd6b3af37c8f8f440c92fe7da6b2d0f9e4ccbc50c42",
  "market": "0xbd31dc8a20211944f6b70f31557f1001557b59905b7738480ca09bd4532f84af",
  "asset_id": "52114319501245915516055106046884209969926127482827954674443846427813813222426",
  "side": "BUY",
  "size": "10",
  "price": "0.57",
  "fee_rate_bps": "0",
  "status": "MATCHED",
  "matchtime": "1672290701",
  "last_update": "1672290701",
  "outcome": "YES",
  "owner": "9180014b-33c8-9240-a14b-bdca11c0a465",
  "trade_owner": "9180014b-33c8-9240-a14b-bdca11c0a465",
  "maker_address": "0x1234...",
  "transaction_hash": "",
  "bucket_index": 0,
  "maker_orders": [
    {
      "order_id": "0xff354cd7ca7539dfa9c28d90943ab5779a4eac34b9b37a757d7b32bdfb11790b",
      "owner": "9180014b-33c8-9240-a14b-bdca11c0a465",
      "maker_address": "0x5678...",
      "matched_amount": "10",
      "price": "0.57",
      "fee_rate_bps": "0",
      "asset_id": "52114319501245915516055106046884209969926127482827954674443846427813813222426",
      "outcome": "YES",
      "side": "SELL"
    }
  ],
  "trader_side": "TAKER",
  "timestamp": "1672290701"
}"""
# §3.5 lists the fields of an open order and a trade without a verbatim example; these carry
# every listed field with values in the venue's formats.
OPEN_ORDERS_PAGE = b"""{"data": [{"id": "0xff35", "status": "LIVE", "owner": "9180014b-33c8-9240-a14b-bdca11c0a465",
 "maker_address": "0x1234", "market": "0xbd31", "asset_id": "5211", "side": "BUY",
 "original_size": "10", "size_matched": "2.5", "price": "0.57", "outcome": "YES",
 "expiration": "0", "order_type": "GTC", "associate_trades": ["28c4"], "created_at": 1672290687}],
 "next_cursor": "LTE=", "limit": 500, "count": 1}"""  # noqa: E501
TRADES_PAGE = b"""{"data": [{"id": "28c4", "taker_order_id": "0x06bc", "market": "0xbd31",
 "asset_id": "5211", "side": "BUY", "size": "10", "fee_rate_bps": "0", "price": "0.57",
 "status": "CONFIRMED", "match_time": "1672290701", "last_update": "1672290730",
 "outcome": "YES", "owner": "9180014b-33c8-9240-a14b-bdca11c0a465", "maker_address": "0x1234",
 "trader_side": "TAKER", "transaction_hash": "0xabcd", "bucket_index": 0,
 "maker_orders": [{"order_id": "0xff35", "owner": "9180014b-33c8-9240-a14b-bdca11c0a465",
 "maker_address": "0x5678", "matched_amount": "10", "price": "0.57", "fee_rate_bps": "0",
 "asset_id": "5211", "outcome": "YES", "side": "SELL"}]}],
 "next_cursor": "MA==", "limit": 500, "count": 1}"""
BALANCE = (
    b'{"balance": "1000000", "allowances": {"0xE111": '
    b'"115792089237316195423570985008687907853269984665640564039457584007913129639935"}}'
)

TRADING_EXAMPLES: list[tuple[bytes, Any]] = [
    (POST_ORDER, PolymarketPostOrder),
    (ORDER_LIVE, PolymarketOrderResponse),
    (ORDER_MATCHED, PolymarketOrderResponse),
    (ORDER_DELAYED, PolymarketOrderResponse),
    (CANCELED, PolymarketCancelResponse),
    (b'{"orderID": "0xabcdef1234567890abcdef1234567890abcdef12"}', PolymarketCancelOrder),
    (b'{"market": "0xbd31", "asset_id": "5211"}', PolymarketCancelMarketOrders),
    (b'{"heartbeat_id": ""}', PolymarketHeartbeat),
    (HEARTBEAT, PolymarketHeartbeat),
    (HEARTBEAT_STALE, PolymarketHeartbeatRejection),
    (CREDENTIALS, PolymarketApiCredentials),
    (b'{"apiKeys": ["550e8400-e29b-41d4-a716-446655440000"]}', PolymarketApiKeys),
    (OPEN_ORDERS_PAGE, PolymarketPage[PolymarketOpenOrder]),
    (TRADES_PAGE, PolymarketPage[PolymarketTrade]),
    (BALANCE, PolymarketBalanceAllowance),
    (USER_SUBSCRIBE, PolymarketUserSubscription),
    (USER_UPDATE, PolymarketUserSubscription),
    (USER_ORDER, PolymarketUserEvent),
    (USER_TRADE, PolymarketUserEvent),
]


@pytest.mark.parametrize(("payload", "schema"), TRADING_EXAMPLES)
def test_every_trading_example_decodes_and_re_encodes_every_field(
    payload: bytes, schema: Any
) -> None:
    decoded = msgspec.json.decode(payload, type=schema)
    encoded = msgspec.json.encode(decoded)
    assert msgspec.json.decode(encoded, type=schema) == decoded
    original, again = json.loads(payload), json.loads(encoded)
    # Every field the venue sent comes back under its own name with its own value (a field the
    # venue sends as null is a default the encoder may write or leave out).
    assert {k: v for k, v in original.items() if v is not None} == {
        k: again[k] for k, v in original.items() if v is not None
    }


def test_order_responses_tell_acceptance_from_refusal() -> None:
    matched = msgspec.json.decode(ORDER_MATCHED, type=PolymarketOrderResponse)
    assert (matched.accepted, matched.trade_ids) == (True, ["trade-123"])
    assert msgspec.json.decode(ORDER_LIVE, type=PolymarketOrderResponse).transactions_hashes == []
    # A 200 can still refuse: success false, or success true with an error message.
    killed = b'{"success": false, "errorMsg": "order couldn\'t be fully filled.", "orderID": "0x1"}'
    assert not msgspec.json.decode(killed, type=PolymarketOrderResponse).accepted
    odd = b'{"success": true, "errorMsg": "invalid post-only order: order crosses book"}'
    assert not msgspec.json.decode(odd, type=PolymarketOrderResponse).accepted


def test_user_events_decode_by_event_type_and_ignore_unknown_fields() -> None:
    decoder = msgspec.json.Decoder(PolymarketUserEvent)
    order = decoder.decode(USER_ORDER)
    assert isinstance(order, PolymarketUserOrder)
    assert (order.type, order.associate_trades, order.price) == ("PLACEMENT", None, "0.57")
    trade = decoder.decode(USER_TRADE.replace(b'"bucket_index"', b'"new_field": 1, "bucket_index"'))
    assert isinstance(trade, PolymarketUserTrade)
    assert trade.maker_orders[0].side == "SELL"
    assert {"order", "trade"} == USER_EVENT_TYPES


def test_credentials_never_show_their_secret() -> None:
    credentials = msgspec.json.decode(CREDENTIALS, type=PolymarketApiCredentials)
    subscription = msgspec.json.decode(USER_SUBSCRIBE, type=PolymarketUserSubscription)
    for text in (repr(credentials), str(credentials), repr(subscription)):
        assert "Secret" not in text
        assert "secret" not in text.replace("secret=***", "")
        assert "Passphrase" not in text.replace("passphrase=***", "")
    assert credentials.api_key in repr(credentials)


def test_the_official_sdk_reads_what_the_schemas_write() -> None:
    """The executor reads the venue through the SDK's models: whatever the simulator writes
    through these schemas must parse there too."""

    def sdk_view(payload: bytes, schema: Any) -> Any:
        return json.loads(msgspec.json.encode(msgspec.json.decode(payload, type=schema)))

    response = RawOrderResponse.model_validate(sdk_view(ORDER_LIVE, PolymarketOrderResponse))
    assert response.order_id.startswith("0xabcdef")
    assert CancelOrdersResponse.model_validate(sdk_view(CANCELED, PolymarketCancelResponse))
    assert OrderHeartbeat.model_validate(sdk_view(HEARTBEAT, PolymarketHeartbeat))
    page = sdk_view(OPEN_ORDERS_PAGE, PolymarketPage[PolymarketOpenOrder])
    assert OpenOrder.model_validate(page["data"][0]).size_matched == Decimal("2.5")
    trades = sdk_view(TRADES_PAGE, PolymarketPage[PolymarketTrade])
    assert ClobTrade.model_validate(trades["data"][0]).status == "CONFIRMED"
    assert BalanceAllowance.model_validate(sdk_view(BALANCE, PolymarketBalanceAllowance))
    order = parse_user_event(sdk_view(USER_ORDER, PolymarketUserEvent))
    trade = parse_user_event(sdk_view(USER_TRADE, PolymarketUserEvent))
    assert (order.type, trade.type) == ("order", "trade")
