"""Record and replay: capture files, and ``polybus replay`` running the engine offline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import msgspec
import pytest

from polybus.ingest.capture import CaptureWriter, read_capture
from polybus.ingest.replay import replay_capture, replay_engine

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "polymarket"
BURST = RESOURCES / "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"


def burst_frames() -> list[str]:
    return [json.dumps(event) for event in json.loads(BURST.read_bytes())]


@pytest.mark.parametrize("compress", [False, True])
def test_a_capture_round_trips_frames_verbatim(tmp_path: Path, compress: bool) -> None:
    frames = ["PONG", '[{"event_type":"book"}]', "not json at all", *burst_frames()[:3]]
    path = tmp_path / ("capture.jsonl.gz" if compress else "capture.jsonl")
    writer = CaptureWriter(path)
    for index, frame in enumerate(frames):
        writer.write(frame, 1_000 + index)
    writer.close()

    assert (path.read_bytes()[:2] == b"\x1f\x8b") is compress
    read = list(read_capture(path))
    assert read == [(1_000 + i, frame.encode()) for i, frame in enumerate(frames)]


def test_each_capture_line_has_recv_ns_and_the_frame_text(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    writer = CaptureWriter(path)
    writer.write('{"a": 1}', 42)
    writer.close()
    assert json.loads(path.read_text()) == {"recv_ns": 42, "frame": '{"a": 1}'}


def test_rotation_starts_new_parts_that_read_back_in_order(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "cap.jsonl.gz", rotate_bytes=2_000, compress=True)
    frames = burst_frames()
    for index, frame in enumerate(frames):
        writer.write(frame, index)
    writer.close()
    assert len(writer.parts) > 3
    assert [p.name for p in writer.parts][:2] == ["cap.0001.jsonl.gz", "cap.0002.jsonl.gz"]
    read = [frame for part in writer.parts for _, frame in read_capture(part)]
    assert read == [frame.encode() for frame in frames]
    with gzip.open(writer.parts[0]) as first:
        assert first.readline().startswith(b'{"recv_ns":0,')


def test_bare_frames_one_per_line_replay_like_a_capture(tmp_path: Path) -> None:
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(burst_frames()) + "\n")
    captured = tmp_path / "captured.jsonl"
    writer = CaptureWriter(captured)
    for index, frame in enumerate(burst_frames()):
        writer.write(frame, 1_000_000_000 + index * 1_000_000)
    writer.close()

    a, b = replay_engine(bare), replay_engine(captured)
    assert {k: (t.state, t.book) for k, t in a.tracks.items()} == {
        k: (t.state, t.book) for k, t in b.tracks.items()
    }


def test_replay_of_the_recording_prints_one_json_line_per_asset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert replay_capture(BURST, json_output=True) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    live = next(line for line in lines if line["state"] == "live")
    final = json.loads(BURST.read_bytes())[-1]
    assert live["asset_id"] == final["asset_id"]
    assert (live["best_bid"], live["best_ask"]) == ("0.29", "0.301")
    # The full book, best first, as decimal strings - the venue's final snapshot exactly.
    assert live["bids"] == sorted(
        ([lv["price"], lv["size"]] for lv in final["bids"]), key=lambda lv: -float(lv[0])
    )
    assert live["asks"] == sorted(
        ([lv["price"], lv["size"]] for lv in final["asks"]), key=lambda lv: float(lv[0])
    )
    assert live["events"]["book"] == 2
    assert live["events"]["price_change_entry"] == 49
    assert live["checks"]["bbo_passed"] == 47
    assert live["checks"]["bbo_failed"] == 0
    assert live["checks"]["hash_passed"] == 46
    assert live["checks"]["hash_explained_by_trade"] == 1
    assert live["resyncs_requested"] == 0
    waiting = next(line for line in lines if line["state"] != "live")
    assert waiting["state"] == "needs_snapshot"
    assert waiting["events"]["buffered_entry"] == 49


def test_replay_counts_a_resync_when_a_delta_is_missing(tmp_path: Path) -> None:
    events = json.loads(BURST.read_bytes())
    # Drop one price_change: the book misses a level and a later batch check must fail.
    del events[5]
    path = tmp_path / "gap.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    engine = replay_engine(path)
    track = engine.tracks[events[0]["asset_id"]]
    assert track.counts.bbo_failed + track.counts.hash_failed >= 1
    assert track.counts.resyncs >= 1
    assert track.counts.stale >= 1


def test_replay_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    assert replay_capture(tmp_path / "nope.jsonl", json_output=True) == 2


def test_replay_survives_garbage_lines(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [*burst_frames()[:3], '{"event_type": "mystery"}', "[1,2]", "{}"]
    path.write_text("\n".join(lines))
    engine = replay_engine(path)
    assert engine.stats.decode_errors == 4  # the mystery event, each element of [1,2], {}
    assert msgspec.json.encode(engine.states())
