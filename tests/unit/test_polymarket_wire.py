"""The venue's wire schemas and book-hash rule, against real recordings."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from polybus.common.polymarket.book_hash import book_hash, format_last_trade_price, format_price
from polybus.common.polymarket.market_channel import (
    PolymarketBestBidAsk,
    PolymarketBook,
    PolymarketLastTradePrice,
    PolymarketMarketEvent,
    PolymarketPriceChange,
    PolymarketTickSizeChange,
)
from polybus.common.polymarket.rest import PolymarketOrderBookSummary

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
