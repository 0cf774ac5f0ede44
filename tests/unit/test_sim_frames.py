"""The simulator's market-channel frames against the real recordings: same keys, same key
order, same types, valid hashes, mirrored entries, decodable with the common venue schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from polybus.common.money import MICROS, parse_price, parse_size
from polybus.common.polymarket.book_hash import book_hash, book_hash_of_levels, level_json
from polybus.common.polymarket.market_channel import (
    PolymarketBook,
    PolymarketMarketEvent,
)
from polybus.sim.config import SimSettings
from polybus.sim.exchange import Exchange, Outgoing
from polybus.sim.flow import OrderFlow

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "polymarket"
BURST = "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"
frame_decoder = msgspec.json.Decoder(list[PolymarketMarketEvent] | PolymarketMarketEvent)


def recorded(name: str) -> Any:
    return json.loads((RESOURCES / name).read_text())


def key_shape(value: Any) -> Any:
    """Keys (in order) and JSON types, recursively; what must match the venue exactly."""
    if isinstance(value, dict):
        return [(key, key_shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return ["list", key_shape(value[0])] if value else ["list"]
    return type(value).__name__


class Recorder:
    """An exchange whose published events are kept, decoded as plain JSON."""

    def __init__(self, **settings: Any) -> None:
        self.outgoing: list[Outgoing] = []
        self.exchange = Exchange(
            SimSettings(seed=settings.pop("seed", 7), **settings), self.outgoing.extend
        )
        self.flow = OrderFlow(self.exchange, seed=7, trade_probability=0.2)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(message.data) for message in self.outgoing]

    def run(self, batches: int, actions: int) -> list[dict[str, Any]]:
        for _ in range(batches):
            self.flow.run_actions(actions)
        return self.events()


@pytest.fixture(scope="module")
def flow_events() -> tuple[Recorder, list[dict[str, Any]]]:
    recorder = Recorder(binary_markets=6, neg_risk_events=1, outcomes_per_event=3)
    return recorder, recorder.run(batches=60, actions=12)


def first(events: list[dict[str, Any]], event_type: str, **match: Any) -> dict[str, Any]:
    return next(
        event
        for event in events
        if event.get("event_type") == event_type
        and all(event.get(key) == value for key, value in match.items())
    )


def test_initial_book_has_the_recorded_keys_order_and_types() -> None:
    recording = recorded(BURST)[0]
    exchange = Exchange(SimSettings(seed=7, binary_markets=3, neg_risk_events=0))
    asset = next(iter(exchange.tokens))
    book = json.loads(exchange.snapshot_frame(asset))
    assert list(book) == list(recording)
    assert key_shape(book) == key_shape(recording)
    assert isinstance(frame_decoder.decode(exchange.snapshot_frame(asset)), PolymarketBook)


def test_price_change_has_the_recorded_keys_order_and_types(
    flow_events: tuple[Recorder, list[dict[str, Any]]],
) -> None:
    _, events = flow_events
    recording = recorded(BURST)[1]
    change = first(events, "price_change")
    assert key_shape(change) == key_shape(recording)


def test_book_resent_after_a_trade_has_the_recorded_shape(
    flow_events: tuple[Recorder, list[dict[str, Any]]],
) -> None:
    _, events = flow_events
    recording = recorded(BURST)[-1]
    resent = next(e for e in events if e["event_type"] == "book" and "tick_size" not in e)
    assert key_shape(resent) == key_shape(recording)


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        ("last_trade_price", "nautilus_ws_last_trade_price.json"),
        ("best_bid_ask", "nautilus_ws_best_bid_ask.json"),
    ],
)
def test_other_events_have_the_recorded_shape(
    flow_events: tuple[Recorder, list[dict[str, Any]]], event_type: str, name: str
) -> None:
    _, events = flow_events
    assert key_shape(first(events, event_type)) == key_shape(recorded(name))


def test_tick_size_change_has_the_recorded_shape() -> None:
    recorder = Recorder(binary_markets=2, neg_risk_events=0)
    book = next(iter(recorder.exchange.markets.values())).book
    old = book.tick_size
    recorder.exchange.change_tick(book, 1_000 if old != 1_000 else 10_000)
    [yes, no] = recorder.events()
    assert key_shape(yes) == key_shape(recorded("nautilus_ws_tick_size_change.json"))
    assert {yes["asset_id"], no["asset_id"]} == set(book.token_ids)
    assert yes["old_tick_size"] != yes["new_tick_size"]


def test_every_frame_decodes_with_the_common_venue_schemas(
    flow_events: tuple[Recorder, list[dict[str, Any]]],
) -> None:
    recorder, _ = flow_events
    for message in recorder.outgoing:
        frame_decoder.decode(message.data)


def test_price_changes_carry_mirrored_entries_for_both_tokens(
    flow_events: tuple[Recorder, list[dict[str, Any]]],
) -> None:
    recorder, events = flow_events
    changes = [e for e in events if e["event_type"] == "price_change"]
    assert changes
    for change in changes:
        a, b = change["price_changes"]
        book, _ = recorder.exchange.tokens[a["asset_id"]]
        assert {a["asset_id"], b["asset_id"]} == set(book.token_ids)
        assert parse_price(a["price"]) + parse_price(b["price"]) == MICROS
        assert {a["side"], b["side"]} == {"BUY", "SELL"}
        assert a["size"] == b["size"]
        # Mirror books: the best bid of one token is 1 - the best ask of the other.
        assert parse_price(a["best_bid"]) + parse_price(b["best_ask"]) == MICROS
        assert parse_price(a["best_ask"]) + parse_price(b["best_bid"]) == MICROS


def test_numbers_are_strings_formatted_like_the_venue(
    flow_events: tuple[Recorder, list[dict[str, Any]]],
) -> None:
    _, events = flow_events
    venue_number = re.compile(r"^(0|[1-9]\d*)(\.\d*[1-9])?$")
    for event in events:
        if event["event_type"] != "price_change":
            continue
        for entry in event["price_changes"]:
            for key in ("price", "size", "best_bid", "best_ask"):
                assert venue_number.match(entry[key]), entry[key]
            assert re.fullmatch(r"[0-9a-f]{40}", entry["hash"])
        assert re.fullmatch(r"\d{13}", event["timestamp"])


class Replica:
    """A client-side book built only from frames, as the ingest would."""

    def __init__(self) -> None:
        self.books: dict[str, dict[str, dict[int, int]]] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def apply_book(self, event: dict[str, Any]) -> None:
        self.books[event["asset_id"]] = {
            "BUY": {parse_price(lv["price"]): parse_size(lv["size"]) for lv in event["bids"]},
            "SELL": {parse_price(lv["price"]): parse_size(lv["size"]) for lv in event["asks"]},
        }

    def apply_entry(self, entry: dict[str, Any]) -> None:
        side = self.books[entry["asset_id"]][entry["side"]]
        size = parse_size(entry["size"])
        if size:
            side[parse_price(entry["price"])] = size
        else:
            side.pop(parse_price(entry["price"]), None)

    def best(self, asset_id: str) -> tuple[str, str]:
        from polybus.common.polymarket.book_hash import format_price

        book = self.books[asset_id]
        bid = max(book["BUY"], default=None)
        ask = min(book["SELL"], default=None)
        return (
            format_price(bid) if bid is not None else "0",
            format_price(ask) if ask is not None else "1",
        )

    def levels(self, asset_id: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        from polybus.common.polymarket.book_hash import format_price, format_size

        book = self.books[asset_id]
        bids = [(format_price(p), format_size(book["BUY"][p])) for p in sorted(book["BUY"])]
        asks = [
            (format_price(p), format_size(book["SELL"][p]))
            for p in sorted(book["SELL"], reverse=True)
        ]
        return bids, asks


def test_best_prices_and_hashes_describe_the_book_at_the_end_of_each_batch() -> None:  # noqa: C901
    recorder = Recorder(binary_markets=3, neg_risk_events=0)
    replica = Replica()
    last_trade: dict[str, str] = {}
    for asset in recorder.exchange.tokens:
        dump = json.loads(recorder.exchange.snapshot_frame(asset))
        replica.apply_book(dump)
        last_trade[asset] = dump["last_trade_price"]
        bids, asks = replica.levels(asset)
        book, _ = recorder.exchange.tokens[asset]
        assert dump["hash"] == book_hash(
            market=dump["market"],
            asset_id=asset,
            timestamp=dump["timestamp"],
            bids=bids,
            asks=asks,
            min_order_size="5",
            tick_size=dump["tick_size"],
            neg_risk=False,
            last_trade_price=dump["last_trade_price"],
        )
    events = recorder.run(batches=40, actions=6)
    batches: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        batches.setdefault(event["timestamp"], []).append(event)
    checked = 0
    for timestamp, batch in batches.items():
        finals: dict[str, dict[str, Any]] = {}
        for event in batch:
            if event["event_type"] == "price_change":
                for entry in event["price_changes"]:
                    replica.apply_entry(entry)
                    finals[entry["asset_id"]] = entry
            elif event["event_type"] == "last_trade_price":
                last_trade[event["asset_id"]] = event["price"]
        for asset, entry in finals.items():
            book, _ = recorder.exchange.tokens[asset]
            assert (entry["best_bid"], entry["best_ask"]) == replica.best(asset)
            bids, asks = replica.levels(asset)
            tick = recorder.exchange.market_info(book.condition_id).tick_size
            assert entry["hash"] == book_hash(
                market=book.condition_id,
                asset_id=asset,
                timestamp=timestamp,
                bids=bids,
                asks=asks,
                min_order_size="5",
                tick_size="0.01" if tick == 10_000 else "0.001",
                neg_risk=False,
                last_trade_price=last_trade[asset],
            )
            checked += 1
        for event in batch:
            if event["event_type"] == "book":
                assert replica.levels(event["asset_id"]) == (
                    [(lv["price"], lv["size"]) for lv in event["bids"]],
                    [(lv["price"], lv["size"]) for lv in event["asks"]],
                )
    assert checked > 20
    for asset in recorder.exchange.tokens:
        bids, asks = recorder.exchange.tokens[asset][0].view(recorder.exchange.tokens[asset][1])
        assert replica.best(asset) == recorder.exchange.tokens[asset][0].best_texts(
            recorder.exchange.tokens[asset][1]
        )
        assert sorted(replica.books[asset]["BUY"].items(), reverse=True) == bids
        assert sorted(replica.books[asset]["SELL"].items()) == asks


def test_the_fast_hash_path_agrees_with_the_hash_rule() -> None:
    recording = frame_decoder.decode((RESOURCES / BURST).read_bytes())
    assert isinstance(recording, list)
    book = recording[0]
    assert isinstance(book, PolymarketBook)
    common = {
        "market": book.market,
        "asset_id": book.asset_id,
        "timestamp": book.timestamp,
        "min_order_size": "5",
        "tick_size": book.tick_size,
        "neg_risk": False,
        "last_trade_price": book.last_trade_price,
    }
    fast = book_hash_of_levels(
        bids_json=[level_json(lv.price, lv.size) for lv in book.bids],
        asks_json=[level_json(lv.price, lv.size) for lv in book.asks],
        **common,
    )
    assert fast == book.hash
    assert fast == book_hash(
        bids=[(lv.price, lv.size) for lv in book.bids],
        asks=[(lv.price, lv.size) for lv in book.asks],
        **common,
    )


def test_the_universe_is_a_function_of_the_seed() -> None:
    one = Exchange(SimSettings(seed=11, binary_markets=5, neg_risk_events=2))
    again = Exchange(SimSettings(seed=11, binary_markets=5, neg_risk_events=2))
    other = Exchange(SimSettings(seed=12, binary_markets=5, neg_risk_events=2))
    assert list(one.tokens) == list(again.tokens)
    # Same books (the timestamps, and so the hashes, are the wall clock's).
    assert [book.view(token) for book, token in one.tokens.values()] == [
        book.view(token) for book, token in again.tokens.values()
    ]
    assert set(one.tokens).isdisjoint(other.tokens)
    for market in one.all_markets():
        assert re.fullmatch(r"0x[0-9a-f]{64}", market.condition_id)
        for token in market.tokens:
            assert re.fullmatch(r"[1-9]\d{76}", token.token_id)
    neg_risk = [m for m in one.all_markets() if m.neg_risk]
    assert len(neg_risk) == 2 * 4
    assert all(re.fullmatch(r"0x[0-9a-f]{64}", m.neg_risk_market_id) for m in neg_risk)


def test_flow_is_deterministic_for_a_seed() -> None:
    def run() -> list[list[tuple[str, str, str, str]]]:
        recorder = Recorder(binary_markets=4, neg_risk_events=0)
        events = recorder.run(batches=20, actions=5)
        return [
            [(e["asset_id"], e["price"], e["size"], e["side"]) for e in event["price_changes"]]
            for event in events
            if event["event_type"] == "price_change"
        ]

    assert run() == run()


def test_initial_books_look_like_the_recordings() -> None:
    exchange = Exchange(SimSettings(seed=3, binary_markets=40, neg_risk_events=0))
    depths = []
    for book, _ in exchange.tokens.values():
        assert book.best_bid() is not None
        assert book.best_ask() is not None
        assert book.best_bid() < book.best_ask()  # type: ignore[operator]
        depths.append(len(book.bid_prices) + len(book.ask_prices))
    depths.sort()
    # Recordings show from a dozen to ~160 levels a book; the median is a few dozen.
    assert 12 <= depths[len(depths) // 2] <= 80
    assert any(b.tick_size == 1_000 for b, _ in exchange.tokens.values())


def test_a_trade_prints_on_both_tokens_and_resends_both_books() -> None:
    recorder = Recorder(binary_markets=1, neg_risk_events=0)
    book = next(iter(recorder.exchange.markets.values())).book
    ask = book.best_ask()
    assert ask is not None
    with recorder.exchange.batch():
        fills = recorder.exchange.take(book, "BUY", ask, 5 * MICROS, 0)
    assert sum(fill.size for fill in fills) == 5 * MICROS
    events = recorder.events()
    prints = [e for e in events if e["event_type"] == "last_trade_price"]
    assert [(p["asset_id"], p["side"]) for p in prints] == [
        (book.token_ids[0], "BUY"),
        (book.token_ids[1], "SELL"),
    ]
    assert parse_price(prints[0]["price"]) + parse_price(prints[1]["price"]) == MICROS
    resent = [e for e in events if e["event_type"] == "book"]
    assert [e["asset_id"] for e in resent] == list(book.token_ids)
    assert [e["hash"] for e in resent] == list(book.hashes)


def test_a_price_beyond_the_limits_narrows_the_tick() -> None:
    recorder = Recorder(binary_markets=1, neg_risk_events=0)
    book = next(iter(recorder.exchange.markets.values())).book
    book.tick_size = 10_000
    with recorder.exchange.batch():
        recorder.exchange.add_liquidity(book, "BUY", 970_000, 10 * MICROS, 0)
        # Make room: asks at or below the new bid would cross.
        for price in [p for p in book.ask_prices if p <= 970_000]:
            recorder.exchange.cancel_liquidity(book, "SELL", price, book.asks[price].size, 0)
    tick_changes = [e for e in recorder.events() if e["event_type"] == "tick_size_change"]
    assert [(e["old_tick_size"], e["new_tick_size"]) for e in tick_changes] == [
        ("0.01", "0.001"),
        ("0.01", "0.001"),
    ]
    assert book.tick_size == 1_000


def test_a_generated_capture_replays_through_the_common_schemas(tmp_path: Path) -> None:
    from polybus.sim.capture import generate_capture
    from polybus.sim.replay import load_capture

    path = tmp_path / "flow.jsonl"
    stats = generate_capture(
        path,
        SimSettings(seed=4, binary_markets=3, neg_risk_events=0),
        batches=20,
        actions_per_batch=10,
    )
    frames = load_capture(path)
    assert len(frames) == stats.frames
    assert [frame.recv_ns for frame in frames] == sorted(frame.recv_ns or 0 for frame in frames)
    dump = frame_decoder.decode(frames[0].data)
    assert isinstance(dump, list)
    assert len(dump) == 6
    assert all(isinstance(book, PolymarketBook) for book in dump)
    events = 0
    for frame in frames:
        decoded = frame_decoder.decode(frame.data)
        events += len(decoded) if isinstance(decoded, list) else 1
    assert events == stats.events
    assert stats.price_change_entries > 0


def test_a_capture_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    from polybus.sim.replay import load_capture

    path = tmp_path / "bad.jsonl"
    path.write_text('{"event_type":"book"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_capture(path)
