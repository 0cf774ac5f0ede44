"""The ingest engine: parsing, books, batch checks, states and resync decisions, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    DeadLetter,
    Event,
    MarketInfo,
    MarketResolved,
    Outcome,
    TickSizeChanged,
    Trade,
)
from polybus.common.money import format_micros
from polybus.common.polymarket.book_hash import book_hash
from polybus.common.polymarket.rest import PolymarketOrderBookSummary
from polybus.common.subjects import Subjects
from polybus.ingest.config import IngestSettings
from polybus.ingest.engine import Action, IngestEngine, State

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "polymarket"
BURST = RESOURCES / "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"
MARKET = "0x" + "ab" * 32
YES = "1" * 77
NO = "2" * 77
S = 1_000_000_000


def burst() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(BURST.read_bytes())
    return events


def frame(*events: dict[str, Any]) -> str:
    payload: Any = events[0] if len(events) == 1 else list(events)
    return json.dumps(payload, separators=(",", ":"))


def engine(**overrides: Any) -> IngestEngine:
    settings = msgspec.structs.replace(
        IngestSettings(snapshot_interval_s=0, hash_check_interval_s=0), **overrides
    )
    return IngestEngine(Subjects("t"), 16, settings, auto_track=True)


def published(eng: IngestEngine, kind: type[Event] | None = None) -> list[Any]:
    events = [event for _, event, _ in eng.outbox]
    return [e for e in events if kind is None or isinstance(e, kind)]


def book_event(
    asset: str = YES,
    *,
    ts: int = 1000,
    bids: list[tuple[str, str]] | None = None,
    asks: list[tuple[str, str]] | None = None,
    tick: str = "0.01",
    last_trade_price: str = "0.500",
    with_hash: bool = True,
) -> dict[str, Any]:
    bids = bids if bids is not None else [("0.40", "100"), ("0.45", "50")]
    asks = asks if asks is not None else [("0.60", "80"), ("0.55", "20")]
    event: dict[str, Any] = {
        "market": MARKET,
        "asset_id": asset,
        "timestamp": str(ts),
        "hash": "",
        "bids": [{"price": p, "size": s} for p, s in bids],
        "asks": [{"price": p, "size": s} for p, s in asks],
        "tick_size": tick,
        "event_type": "book",
        "last_trade_price": last_trade_price,
    }
    if with_hash:
        event["hash"] = venue_hash(asset, ts, bids, asks, tick, last_trade_price)
    return event


def venue_hash(
    asset: str,
    ts: int,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    tick: str = "0.01",
    last_trade_price: str = "0.500",
) -> str:
    def number(text: str) -> str:
        return text.rstrip("0").rstrip(".") if "." in text else text

    def key(level: tuple[str, str]) -> float:
        return float(level[0])

    return book_hash(
        market=MARKET,
        asset_id=asset,
        timestamp=str(ts),
        bids=[(number(p), number(s)) for p, s in sorted(bids, key=key)],
        asks=[(number(p), number(s)) for p, s in sorted(asks, key=key, reverse=True)],
        min_order_size="5",
        tick_size=tick,
        neg_risk=False,
        last_trade_price=last_trade_price,
    )


def change(
    price: str, size: str, side: str, best_bid: str, best_ask: str, asset: str = YES, h: str = ""
) -> dict[str, str]:
    return {
        "asset_id": asset,
        "price": price,
        "size": size,
        "side": side,
        "hash": h,
        "best_bid": best_bid,
        "best_ask": best_ask,
    }


def price_change(ts: int, *changes: dict[str, str]) -> dict[str, Any]:
    return {
        "market": MARKET,
        "price_changes": list(changes),
        "timestamp": str(ts),
        "event_type": "price_change",
    }


# -- the real recording -----------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["one array frame", "one frame per event"])
def test_reconstruction_of_the_crossing_burst_equals_the_later_snapshot(framing: str) -> None:
    events = burst()
    final = events[-1]
    eng = engine()
    before_final = events[:-1]
    if framing == "one array frame":
        eng.on_frame(frame(*before_final), 1)
    else:
        for index, event in enumerate(before_final):
            eng.on_frame(frame(event), 1 + index)
    # The last batch (three messages, one frame each in the second framing) ends when
    # nothing more came for the quiet delay.
    eng.tick(1 * S)

    track = eng.tracks[final["asset_id"]]
    expected_bids = dict(_levels(final["bids"]))
    expected_asks = dict(_levels(final["asks"]))
    assert track.state is State.LIVE
    assert track.book.bids == expected_bids
    assert track.book.asks == expected_asks
    # ... and the venue's hash of that snapshot is our book's hash, with the trade price the
    # last batch revealed.
    assert track.venue_hash(final["timestamp"]) == final["hash"]

    counts = track.counts
    # One batch split over three frames is still one batch: no false failure.
    assert counts.bbo_failed == 0
    assert counts.bbo_passed == 47
    assert counts.hash_passed == 46
    assert counts.hash_explained_by_trade == 1
    assert counts.hash_failed == 0
    assert counts.stale == 0
    assert eng.actions == type(eng.actions)()

    # The final book is then accepted as a continuation (same epoch, next seq).
    epoch = track.epoch
    eng.on_frame(frame(final), 2 * S)
    snapshot = published(eng, BookSnapshot)[-1]
    assert snapshot.epoch == epoch
    assert track.hash_verified


def test_an_asset_without_a_snapshot_keeps_its_entries_for_later() -> None:
    eng = engine()
    eng.on_frame(BURST.read_bytes(), 1)
    other = next(t for t in eng.tracks.values() if t.counts.books == 0)
    assert other.state is State.NEEDS_SNAPSHOT
    assert other.counts.buffered == 49
    assert not published(eng, BookDelta) or all(
        d.asset_id != other.asset_id for d in published(eng, BookDelta)
    )


def _levels(levels: list[dict[str, str]]) -> list[tuple[int, int]]:
    from polybus.common.money import parse_price, parse_size

    return [(parse_price(level["price"]), parse_size(level["size"])) for level in levels]


# -- snapshots, deltas, seq and epoch ---------------------------------------------------------


def test_snapshot_then_batch_publishes_snapshot_status_and_delta_with_consecutive_seq() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 5 * S)
    eng.on_frame(
        frame(
            price_change(1001, change("0.46", "10", "BUY", "0.46", "0.55")),
            price_change(1001, change("0.55", "0", "SELL", "0.46", "0.6")),
        ),
        6 * S,
    )
    snapshot, status, delta = published(eng)
    assert isinstance(snapshot, BookSnapshot)
    assert isinstance(status, BookStatus)
    assert isinstance(delta, BookDelta)
    assert (snapshot.seq, status.seq, delta.seq) == (1, 2, 3)
    assert snapshot.epoch == status.epoch == delta.epoch > 0
    assert status.status == "live"
    assert status.reason == "snapshot"
    assert [(c.side, c.price, c.size) for c in delta.changes] == [
        ("BUY", 460_000, 10_000_000),
        ("SELL", 550_000, 0),
    ]
    assert (delta.best_bid, delta.best_ask) == (460_000, 600_000)
    assert delta.ts_event == 1001 * 1_000_000
    assert snapshot.bids[0].price == 450_000  # best first
    subjects = [subject for subject, _, _ in eng.outbox]
    assert subjects[0].startswith("t.md.polymarket.")
    assert ".book." in subjects[0]
    assert ".status." in subjects[1]
    assert ".delta." in subjects[2]


def test_event_ids_are_deterministic_across_instances() -> None:
    frames = [
        frame(book_event()),
        frame(price_change(1001, change("0.46", "10", "BUY", "0.46", "0.55"))),
        frame({**_trade(1002), "asset_id": YES}),
    ]
    ids = []
    for start in (1 * S, 99 * S):
        eng = engine()
        for offset, text in enumerate(frames):
            eng.on_frame(text, start + offset)
        ids.append([msg_id for _, event, msg_id in eng.outbox if not isinstance(event, BookStatus)])
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == len(ids[0])


def test_an_older_book_is_ignored() -> None:
    eng = engine()
    eng.on_frame(frame(book_event(ts=2000)), 1)
    eng.on_frame(frame(book_event(ts=1000, bids=[("0.10", "1")])), 2)
    assert eng.tracks[YES].book.best_bid == 450_000
    assert len(published(eng, BookSnapshot)) == 1


def test_a_trade_is_published_without_advancing_seq() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1)
    eng.on_frame(frame({**_trade(1002), "asset_id": YES}), 2)
    trade = published(eng, Trade)[0]
    assert (trade.price, trade.size, trade.side) == (456_000, 219_217_767, "BUY")
    assert trade.seq == 2  # the status after the snapshot was 2; a trade is not a book event
    assert eng.tracks[YES].last_trade_price == 456_000


def _trade(ts: int) -> dict[str, Any]:
    return {
        "asset_id": YES,
        "event_type": "last_trade_price",
        "fee_rate_bps": "0",
        "market": MARKET,
        "price": "0.456",
        "side": "BUY",
        "size": "219.217767",
        "timestamp": str(ts),
    }


def test_tick_size_change_updates_the_tick_at_once() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1)
    eng.on_frame(
        frame(
            {
                "event_type": "tick_size_change",
                "asset_id": YES,
                "market": MARKET,
                "old_tick_size": "0.01",
                "new_tick_size": "0.001",
                "timestamp": "1003",
            }
        ),
        2,
    )
    event = published(eng, TickSizeChanged)[0]
    assert (event.old_tick_size, event.new_tick_size) == (10_000, 1_000)
    assert event.seq == 3
    assert eng.tracks[YES].tick == 1_000


def test_legacy_price_change_format_is_applied() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1)
    legacy = {
        "asset_id": YES,
        "changes": [{"price": "0.44", "side": "BUY", "size": "7"}],
        "event_type": "price_change",
        "hash": "",
        "market": MARKET,
        "timestamp": "1004",
    }
    eng.on_frame(frame(legacy), 2)
    assert eng.tracks[YES].book.bids[440_000] == 7_000_000
    assert eng.tracks[YES].state is State.LIVE


def test_periodic_snapshots_follow_the_interval() -> None:
    eng = engine(snapshot_interval_s=10)
    eng.on_frame(frame(book_event()), 1 * S)
    eng.tick(5 * S)
    assert len(published(eng, BookSnapshot)) == 1
    eng.tick(12 * S)
    snapshots = published(eng, BookSnapshot)
    assert len(snapshots) == 2
    assert snapshots[1].seq == 3
    assert snapshots[1].bids == snapshots[0].bids


# -- failures: checks, resync, REST seed ------------------------------------------------------


def test_a_definite_best_bid_ask_mismatch_goes_stale_and_asks_for_a_resync() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1 * S)
    # The venue says the best bid is 0.47 but we never saw that level: a delta was lost.
    eng.on_frame(
        frame(
            price_change(1001, change("0.30", "5", "BUY", "0.47", "0.55")),
            price_change(1002, change("0.31", "5", "BUY", "0.47", "0.55")),
        ),
        2 * S,
    )
    track = eng.tracks[YES]
    assert track.state is State.STALE
    status = published(eng, BookStatus)[-1]
    assert (status.status, status.reason) == ("stale", "bbo_mismatch")
    assert Action("resubscribe", YES, "bbo_mismatch") in eng.actions
    assert not published(eng, BookDelta)  # the bad batch is not published
    assert track.counts.buffered == 1  # the next entry waits for the resync

    epoch = track.epoch
    eng.on_frame(frame(book_event(ts=1005)), 3 * S)
    assert track.state is State.LIVE
    live = published(eng, BookStatus)[-1]
    assert (live.status, live.reason, live.seq) == ("live", "snapshot", 2)
    assert live.epoch > epoch


def test_a_mismatch_at_the_end_of_a_frame_waits_for_the_rest_of_its_batch() -> None:
    eng = engine(mismatch_grace_s=1.0)
    eng.on_frame(frame(book_event()), 1 * S)
    # First half of a batch: crossed and disagreeing with the venue's end-of-batch values.
    eng.on_frame(frame(price_change(1001, change("0.58", "5", "BUY", "0.50", "0.60"))), 2 * S)
    assert eng.tracks[YES].state is State.LIVE
    # The rest of the batch arrives in the next frame and makes it right.
    eng.on_frame(
        frame(
            price_change(
                1001,
                change("0.58", "0", "BUY", "0.50", "0.60"),
                change("0.55", "0", "SELL", "0.50", "0.60"),
                change("0.50", "1", "BUY", "0.50", "0.60"),
            )
        ),
        int(2.5 * S),
    )
    eng.tick(10 * S)
    assert eng.tracks[YES].state is State.LIVE
    assert not eng.actions


def test_a_mismatched_batch_nothing_continues_goes_stale_after_the_quiet_delay() -> None:
    eng = engine(batch_quiet_s=0.5)
    eng.on_frame(frame(book_event()), 1 * S)
    eng.on_frame(frame(price_change(1001, change("0.30", "5", "BUY", "0.47", "0.55"))), 2 * S)
    eng.tick(int(2.4 * S))
    assert eng.tracks[YES].state is State.LIVE  # the batch may still go on
    eng.tick(int(2.5 * S))
    assert eng.tracks[YES].state is State.STALE
    assert published(eng, BookStatus)[-1].reason == "bbo_mismatch"


def test_a_suspect_mismatch_is_confirmed_by_the_next_timestamp() -> None:
    eng = engine(mismatch_grace_s=60.0)
    eng.on_frame(frame(book_event()), 1 * S)
    eng.on_frame(frame(price_change(1001, change("0.30", "5", "BUY", "0.47", "0.55"))), 2 * S)
    eng.on_frame(frame(price_change(1002, change("0.31", "5", "BUY", "0.47", "0.55"))), 3 * S)
    assert eng.tracks[YES].state is State.STALE


def test_an_unexplained_hash_mismatch_goes_stale() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1 * S)
    assert eng.tracks[YES].hash_verified
    bids_after = [("0.40", "100"), ("0.45", "50"), ("0.46", "10")]
    good = venue_hash(YES, 1001, bids_after, [("0.60", "80"), ("0.55", "20")])
    eng.on_frame(
        frame(price_change(1001, change("0.46", "10", "BUY", "0.46", "0.55", h=good))), 2 * S
    )
    eng.on_frame(
        frame(price_change(1002, change("0.40", "99", "BUY", "0.46", "0.55", h="0" * 40))), 3 * S
    )
    assert eng.tracks[YES].counts.hash_passed == 1  # batch 1001 ended with 1002's entry
    eng.on_frame(
        frame(price_change(1003, change("0.40", "98", "BUY", "0.46", "0.55", h="0" * 40))), 4 * S
    )
    assert eng.tracks[YES].state is State.STALE
    assert published(eng, BookStatus)[-1].reason == "hash_mismatch"


def test_a_book_crossed_for_longer_than_the_grace_is_resynced() -> None:
    eng = engine(crossed_grace_s=2.0)
    eng.on_frame(frame(book_event()), 1 * S)
    # The venue itself reports the crossed top of book, so the check passes...
    eng.on_frame(frame(price_change(1001, change("0.56", "5", "BUY", "0.56", "0.55"))), 2 * S)
    eng.tick(3 * S)  # the batch ends (quiet delay) and is checked: crossed from here
    eng.tick(int(4.9 * S))
    assert eng.tracks[YES].state is State.LIVE
    # ... but it may not stay crossed.
    eng.tick(int(5.1 * S))
    assert eng.tracks[YES].state is State.STALE
    assert published(eng, BookStatus)[-1].reason == "crossed"


def test_no_snapshot_leads_to_resubscribes_then_a_rest_seed_with_buffered_replay() -> None:
    eng = engine(first_snapshot_timeout_s=10, resubscribe_attempts=2)
    eng.track_market(_market_info(), 0)
    # Deltas arrive but no book does.
    eng.on_frame(frame(price_change(900, change("0.41", "1", "BUY", "", ""))), 1 * S)
    eng.on_frame(frame(price_change(1100, change("0.44", "3", "BUY", "0.45", "0.55"))), 2 * S)
    for second in (11, 22, 33):
        eng.tick(second * S)
    assert [action for action in eng.actions if action.asset_id == YES] == [
        Action("resubscribe", YES, "snapshot_timeout"),
        Action("resubscribe", YES, "snapshot_timeout"),
        Action("rest_seed", YES, "snapshot_timeout"),
    ]
    summary = msgspec.convert(
        {
            **book_event(ts=1000),
            "min_order_size": "5",
            "neg_risk": False,
        },
        PolymarketOrderBookSummary,
    )
    eng.on_rest_book(summary, 34 * S)
    track = eng.tracks[YES]
    assert track.state is State.LIVE
    # The delta older than the REST book is dropped, the newer one replayed.
    assert 410_000 not in track.book.bids
    assert track.book.bids[440_000] == 3_000_000
    status = published(eng, BookStatus)[-1]
    assert (status.status, status.reason) == ("live", "rest_seed")
    assert published(eng, BookDelta)[-1].changes[0].price == 440_000


def _market_info() -> MarketInfo:
    return MarketInfo(
        event_id="m",
        ts_event=0,
        ts_init=0,
        condition_id=MARKET,
        question="q",
        slug="s",
        outcomes=(Outcome(token_id=YES, outcome="Yes"), Outcome(token_id=NO, outcome="No")),
        tick_size=10_000,
        min_order_size=5_000_000,
    )


def test_a_socket_failure_makes_its_books_stale_without_a_per_asset_resubscribe() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1)
    eng.mark_stale([YES], "socket_stall", 2)
    assert eng.tracks[YES].state is State.STALE
    assert published(eng, BookStatus)[-1].reason == "socket_stall"
    assert not eng.actions


def test_market_resolved_closes_the_books_and_unsubscribes() -> None:
    eng = engine()
    eng.track_market(_market_info(), 0)
    eng.on_frame(frame(book_event()), 1)
    resolved = {
        "id": "1",
        "market": MARKET,
        "assets_ids": [YES, NO],
        "winning_asset_id": YES,
        "winning_outcome": "Yes",
        "timestamp": "1766790415550",
        "event_type": "market_resolved",
    }
    eng.on_frame(frame(resolved), 2)
    assert published(eng, MarketResolved)[0].winning_asset_id == YES
    closed = [s for s in published(eng, BookStatus) if s.status == "closed"]
    assert {s.asset_id for s in closed} == {YES, NO}
    assert {a.asset_id for a in eng.actions if a.kind == "unsubscribe"} == {YES, NO}
    assert YES not in eng.tracks


# -- bad input --------------------------------------------------------------------------------


def test_a_malformed_element_is_dead_lettered_and_its_siblings_still_apply() -> None:
    eng = engine()
    bad = '{"event_type":"price_change","market":"m"}'
    unknown = '{"event_type":"brand_new_thing","x":1}'
    text = "[" + ",".join([frame(book_event()), bad, unknown]) + "]"
    eng.on_frame(text, 1)
    letters = published(eng, DeadLetter)
    assert sorted(letter.reason for letter in letters) == ["invalid_event", "unknown_event_type"]
    assert {letter.raw for letter in letters} == {bad, unknown}
    assert eng.tracks[YES].state is State.LIVE
    assert eng.stats.decode_errors == 2


def test_an_impossible_value_is_dead_lettered_verbatim_and_resyncs_that_asset() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1)
    element = frame(price_change(1001, change("1.7", "5", "BUY", "0.45", "0.55")))
    eng.on_frame("[" + element + "]", 2)
    letter = published(eng, DeadLetter)[0]
    assert (letter.reason, letter.raw) == ("invalid_value", element)
    assert eng.tracks[YES].state is State.STALE


@pytest.mark.parametrize("text", ["not json", "[1, 2", "", "null", "[]", "{}", "PONG"])
def test_garbage_never_raises(text: str) -> None:
    eng = engine()
    eng.on_frame(text, 1)
    eng.tick(10**12)
    assert eng.stats.frames + eng.stats.pongs == 1


# -- number parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["0", "5", "3687.87", "219.217767", "0.1", ".5", "5.", "1.0000000", "00012.50"]
)
def test_fast_size_parsing_equals_the_exact_parser(text: str) -> None:
    from polybus.common.money import parse_size
    from polybus.ingest.normalize import size_micros, size_text

    assert size_micros(text) == parse_size(text)
    assert size_text(size_micros(text)) == format_micros(parse_size(text))


@pytest.mark.parametrize("text", ["-1", "1e5", "abc", "", "1.2.3", "١٢", "1.0000001", "1" * 20])
def test_fast_size_parsing_rejects_what_the_exact_parser_rejects(text: str) -> None:
    from polybus.common.money import FixedPointError
    from polybus.ingest.normalize import size_micros

    with pytest.raises(FixedPointError):
        size_micros(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=50),
    field=st.sampled_from(
        ["price", "size", "side", "best_bid", "best_ask", "timestamp", "asset_id", "bids"]
    ),
    value=json_values,
)
def test_a_recorded_frame_with_any_field_corrupted_never_raises(
    index: int, field: str, value: Any
) -> None:
    events = burst()
    event = events[index]
    if event["event_type"] == "price_change":
        target = event["price_changes"][0]
        target[field if field != "bids" else "price"] = value
    else:
        event[field] = value
    eng = engine()
    eng.on_frame(frame(*events), 1)
    eng.tick(10**12)
    assert eng.stats.frames == 1


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_any_json_frame_never_raises(value: Any) -> None:
    eng = engine()
    eng.on_frame(json.dumps(value), 1)
    eng.on_frame(
        json.dumps([value, {"event_type": "book", **(value if isinstance(value, dict) else {})}]), 2
    )
    assert eng.stats.frames == 2
