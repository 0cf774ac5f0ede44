"""The ingest's metrics: the engine's counts reach Prometheus, with no per-asset label."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from polybus.common.bus.memory_bus import MemoryBus
from polybus.ingest.config import IngestSettings
from polybus.ingest.service import Ingest

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "polymarket"
BURST = RESOURCES / "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_engine_counts_are_exported_as_prometheus_metrics() -> None:
    ingest = Ingest(MemoryBus(), IngestSettings(hash_check_interval_s=0), partitions=16)
    ingest.engine.auto_track = True
    before = {
        "frames": sample("polybus_ingest_frames_total", kind="data"),
        "entries": sample("polybus_ingest_venue_events_total", type="price_change_entry"),
        "bbo": sample("polybus_ingest_batch_checks_total", check="bbo", result="pass"),
        "live": sample("polybus_ingest_book_transitions_total", status="live", reason="snapshot"),
        "dlq": sample("polybus_ingest_dead_letters_total", reason="invalid_json"),
    }
    ingest.engine.on_frame(BURST.read_bytes(), 1_790_658_661_234_000_000)
    ingest.engine.on_frame("not json", 1_790_658_661_235_000_000)
    ingest.export_metrics()
    ingest.export_metrics()  # idempotent: only new counts are added

    assert sample("polybus_ingest_frames_total", kind="data") - before["frames"] == 2
    entries = sample("polybus_ingest_venue_events_total", type="price_change_entry")
    assert entries - before["entries"] == 98
    bbo = sample("polybus_ingest_batch_checks_total", check="bbo", result="pass")
    assert bbo - before["bbo"] == 47
    live = sample("polybus_ingest_book_transitions_total", status="live", reason="snapshot")
    assert live - before["live"] == 1
    assert sample("polybus_ingest_dead_letters_total", reason="invalid_json") - before["dlq"] == 1
    assert sample("polybus_ingest_assets", state="live") == 1
    assert sample("polybus_ingest_lag_seconds_count") > 0
    # No metric carries an asset or condition id.
    for metric in REGISTRY.collect():
        if metric.name.startswith("polybus_ingest"):
            for s in metric.samples:
                assert not any(len(value) > 40 for value in s.labels.values()), s
    await ingest.http.aclose()
