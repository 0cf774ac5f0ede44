"""Batches that span frames: when a batch ends, and that its checks run then (offline)."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest

from polybus.common.events import BookDelta, BookStatus, MarketInfo, Outcome
from polybus.common.subjects import Subjects, partition_of
from polybus.ingest.config import IngestSettings
from polybus.ingest.engine import IngestEngine, State
from tests.unit.test_ingest_engine import (
    BURST,
    MARKET,
    YES,
    S,
    book_event,
    change,
    frame,
    price_change,
    published,
)

QUIET_S = 0.5


def engine(**overrides: Any) -> IngestEngine:
    settings = msgspec.structs.replace(
        IngestSettings(snapshot_interval_s=0, hash_check_interval_s=0, batch_quiet_s=QUIET_S),
        **overrides,
    )
    return IngestEngine(Subjects("t"), 16, settings, auto_track=True)


# -- the real recording: one batch in three messages ------------------------------------------


def recorded() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(BURST.read_bytes())
    return events


def split_batch(events: list[dict[str, Any]]) -> list[int]:
    """Indexes of the recording's price_change messages that share the last one's timestamp."""
    last = next(e for e in reversed(events) if e["event_type"] == "price_change")
    return [
        i
        for i, e in enumerate(events)
        if e["event_type"] == "price_change" and e["timestamp"] == last["timestamp"]
    ]


def run_frame_by_frame(events: list[dict[str, Any]]) -> IngestEngine:
    """Each recorded message in a frame of its own, 1 ms apart, then the batch's quiet delay."""
    eng = engine()
    now = 1 * S
    for event in events:
        eng.on_frame(frame(event), now)
        now += 1_000_000
    eng.tick(now + int(QUIET_S * S))
    return eng


def test_the_recording_holds_a_batch_split_over_three_messages_with_end_of_batch_values() -> None:
    events = recorded()
    parts = split_batch(events)
    assert len(parts) == 3
    # The first part already carries the values of the whole batch: the later parts repeat them.
    first = {c["asset_id"]: c for c in events[parts[0]]["price_changes"]}
    for index in parts[1:]:
        for entry in events[index]["price_changes"]:
            expected = first[entry["asset_id"]]
            assert (entry["hash"], entry["best_bid"], entry["best_ask"]) == (
                expected["hash"],
                expected["best_bid"],
                expected["best_ask"],
            )


def test_a_batch_split_over_frames_passes_its_checks() -> None:
    events = recorded()
    eng = run_frame_by_frame(events[:-1])
    track = eng.tracks[events[0]["asset_id"]]
    counts = track.counts
    assert (counts.bbo_failed, counts.hash_failed, counts.stale) == (0, 0, 0)
    assert counts.bbo_passed == 47  # one check per batch: 49 messages, 47 timestamps
    assert track.state is State.LIVE
    assert eng.stats.quiet_closes == 1  # the last batch: nothing came after it
    assert not eng.actions
    # And the venue's book after the trade is a continuation of ours.
    final = events[-1]
    assert track.venue_hash(final["timestamp"]) == final["hash"]


@pytest.mark.parametrize("corruption", ["hash", "best_bid"])
def test_a_corrupted_split_batch_still_fails(corruption: str) -> None:
    events = copy.deepcopy(recorded())
    asset = events[0]["asset_id"]
    for index in split_batch(events):
        for entry in events[index]["price_changes"]:
            if entry["asset_id"] != asset:
                continue
            if corruption == "hash":
                entry["hash"] = "0" * 40
            else:
                entry["best_bid"] = "0.28"  # a level the book never had
    eng = run_frame_by_frame(events[:-1])
    track = eng.tracks[asset]
    expected_reason = "hash_mismatch" if corruption == "hash" else "bbo_mismatch"
    assert track.state is State.STALE
    assert published(eng, BookStatus)[-1].reason == expected_reason
    assert (track.counts.hash_failed, track.counts.bbo_failed) == (
        (1, 0) if corruption == "hash" else (0, 1)
    )


# -- what ends a batch ------------------------------------------------------------------------


def live_engine() -> IngestEngine:
    eng = engine()
    eng.on_frame(frame(book_event()), 1 * S)
    return eng


def open_batch(eng: IngestEngine, ts: int = 1001, best_bid: str = "0.46") -> None:
    """A batch whose first part is right (bid 0.46 added), received at 2 s."""
    eng.on_frame(frame(price_change(ts, change("0.46", "10", "BUY", best_bid, "0.55"))), 2 * S)


def checks(eng: IngestEngine) -> int:
    counts = eng.tracks[YES].counts
    return counts.bbo_passed + counts.bbo_failed


def test_a_frame_end_publishes_the_delta_but_leaves_the_batch_open() -> None:
    eng = live_engine()
    open_batch(eng)
    delta = published(eng, BookDelta)[-1]
    assert (delta.best_bid, [c.price for c in delta.changes]) == (460_000, [460_000])
    assert checks(eng) == 0
    assert eng.tracks[YES].batch_ts == 1001


def test_the_next_part_of_a_batch_in_another_frame_joins_it() -> None:
    eng = live_engine()
    # The venue's end-of-batch values (bid 0.47) are only true after the second part.
    open_batch(eng, best_bid="0.47")
    eng.on_frame(
        frame(price_change(1001, change("0.47", "1", "BUY", "0.47", "0.55"))), 2 * S + 1_000
    )
    eng.tick(3 * S)
    counts = eng.tracks[YES].counts
    assert (counts.bbo_passed, counts.bbo_failed) == (1, 0)
    deltas = published(eng, BookDelta)
    assert [d.seq for d in deltas] == [3, 4]  # one delta per frame, consecutive seq
    assert len({d.event_id for d in deltas}) == 2


def test_another_timestamp_ends_the_batch_at_once() -> None:
    eng = live_engine()
    open_batch(eng)
    eng.on_frame(frame(price_change(1002, change("0.45", "0", "BUY", "0.46", "0.55"))), 2 * S)
    assert checks(eng) == 1
    assert eng.tracks[YES].batch_ts == 1002


def test_another_timestamp_ends_a_wrong_batch_at_once_and_it_goes_stale() -> None:
    eng = live_engine()
    open_batch(eng, best_bid="0.47")
    eng.on_frame(frame(price_change(1002, change("0.45", "0", "BUY", "0.47", "0.55"))), 2 * S)
    assert eng.tracks[YES].state is State.STALE
    assert published(eng, BookStatus)[-1].reason == "bbo_mismatch"


def tick_size_change() -> dict[str, Any]:
    return {
        "event_type": "tick_size_change",
        "asset_id": YES,
        "market": MARKET,
        "old_tick_size": "0.01",
        "new_tick_size": "0.001",
        "timestamp": "1003",
    }


def best_bid_ask(ts: int) -> dict[str, Any]:
    return {
        "event_type": "best_bid_ask",
        "market": MARKET,
        "asset_id": YES,
        "best_bid": "0.46",
        "best_ask": "0.55",
        "spread": "0.09",
        "timestamp": str(ts),
    }


def trade(ts: int) -> dict[str, Any]:
    return {
        "asset_id": YES,
        "event_type": "last_trade_price",
        "fee_rate_bps": "0",
        "market": MARKET,
        "price": "0.46",
        "side": "BUY",
        "size": "1",
        "timestamp": str(ts),
    }


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(tick_size_change(), id="tick_size_change"),
        pytest.param(book_event(ts=1004), id="book"),
        pytest.param(best_bid_ask(1002), id="best_bid_ask of another instant"),
    ],
)
def test_another_event_type_for_the_asset_ends_the_batch(other: dict[str, Any]) -> None:
    eng = live_engine()
    open_batch(eng)
    eng.on_frame(frame(other), 2 * S + 1)
    assert checks(eng) == 1
    assert eng.tracks[YES].batch_ts == -1


@pytest.mark.parametrize(
    "same_instant",
    [
        pytest.param(best_bid_ask(1001), id="best_bid_ask of the same instant"),
        pytest.param(trade(1001), id="last_trade_price"),
    ],
)
def test_events_of_the_same_instant_without_levels_do_not_end_the_batch(
    same_instant: dict[str, Any],
) -> None:
    eng = live_engine()
    open_batch(eng)
    eng.on_frame(frame(same_instant), 2 * S + 1)
    assert checks(eng) == 0
    assert eng.tracks[YES].batch_ts == 1001


def test_the_quiet_delay_ends_the_batch_on_the_timer() -> None:
    eng = live_engine()
    open_batch(eng)
    eng.tick(2 * S + int(QUIET_S * S) - 1)
    assert checks(eng) == 0
    eng.tick(2 * S + int(QUIET_S * S))
    assert checks(eng) == 1
    assert eng.stats.quiet_closes == 1
    assert eng.tracks[YES].state is State.LIVE


def test_the_quiet_delay_counts_from_the_batchs_last_frame() -> None:
    eng = live_engine()
    open_batch(eng)
    later = 2 * S + int(0.4 * S)
    eng.on_frame(frame(price_change(1001, change("0.44", "1", "BUY", "0.46", "0.55"))), later)
    eng.tick(2 * S + int(QUIET_S * S))
    assert checks(eng) == 0
    eng.tick(later + int(QUIET_S * S))
    assert checks(eng) == 1


def test_reading_held_stops_the_quiet_delay_and_resuming_starts_it_over() -> None:
    # The publish backlog full, the readers wait: the rest of a batch is still in the socket,
    # so the batch must not end on its quiet delay meanwhile (it would be checked half-read).
    eng = live_engine()
    open_batch(eng)
    eng.hold_reading()
    eng.tick(2 * S + 5 * S)
    assert checks(eng) == 0
    resumed = 2 * S + 6 * S
    eng.resume_reading(resumed)
    eng.tick(resumed + int(QUIET_S * S) - 1)
    assert checks(eng) == 0
    eng.tick(resumed + int(QUIET_S * S))
    assert checks(eng) == 1
    assert eng.tracks[YES].state is State.LIVE


def test_the_end_of_the_input_ends_every_batch() -> None:
    eng = live_engine()
    open_batch(eng)
    eng.flush(2 * S)
    assert checks(eng) == 1


# -- partitions of auto-tracked assets --------------------------------------------------------


def test_an_auto_tracked_asset_of_a_known_neg_risk_market_partitions_by_its_group() -> None:
    group = "0x" + "cd" * 32
    info = MarketInfo(
        event_id="m",
        ts_event=0,
        ts_init=0,
        condition_id=MARKET,
        question="q",
        slug="s",
        outcomes=(Outcome(token_id=YES, outcome="Yes"),),
        tick_size=10_000,
        min_order_size=5_000_000,
        neg_risk=True,
        neg_risk_market_id=group,
    )
    assert partition_of(group, 16) != partition_of(MARKET, 16)  # the test can tell them apart
    eng = engine()
    eng.know_market(info)
    eng.on_frame(frame(book_event()), 1 * S)
    track = eng.tracks[YES]
    assert track.partition == partition_of(group, 16) == eng.group_partition(MARKET)
    assert f".{track.partition}.book." in track.book_subject
    assert (track.tick, track.min_order_size, track.neg_risk) == (10_000, "5", True)


def test_an_auto_tracked_asset_of_an_unknown_market_partitions_by_its_condition_id() -> None:
    eng = engine()
    eng.on_frame(frame(book_event()), 1 * S)
    assert eng.tracks[YES].partition == partition_of(MARKET, 16)
