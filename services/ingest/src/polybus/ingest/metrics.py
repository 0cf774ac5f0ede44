"""The ingest's Prometheus metrics. Labels are bounded: never an asset or condition id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES = Counter("polybus_ingest_frames", "WebSocket frames received", ["kind"])  # data | pong
BYTES = Counter("polybus_ingest_bytes", "Bytes of WebSocket frames received")
EVENTS = Counter("polybus_ingest_venue_events", "Venue events processed, by type", ["type"])
DECODE_ERRORS = Counter("polybus_ingest_decode_errors", "Frames or elements that did not decode")
DEAD_LETTERS = Counter(
    "polybus_ingest_dead_letters", "Inputs sent to the dead-letter subject", ["reason"]
)
UNTRACKED = Counter("polybus_ingest_untracked_entries", "Venue entries for assets not followed")
RECONNECTS = Counter("polybus_ingest_reconnects", "WebSocket reconnects, by cause", ["reason"])
RESYNCS = Counter("polybus_ingest_resyncs", "Resync actions requested", ["action", "reason"])
TRANSITIONS = Counter(
    "polybus_ingest_book_transitions", "Book state transitions", ["status", "reason"]
)
CHECKS = Counter(
    "polybus_ingest_batch_checks", "Batch checks by kind and result", ["check", "result"]
)
ASSETS = Gauge("polybus_ingest_assets", "Followed assets by book state", ["state"])
SOCKETS_CONNECTED = Gauge("polybus_ingest_sockets_connected", "Open market-channel sockets")
PUBLISHED = Counter("polybus_ingest_published", "Events published to the bus, by type", ["type"])
PUBLISH_BACKLOG = Gauge("polybus_ingest_publish_backlog", "Events waiting to be published")
PUBLISH_HOLDS = Counter(
    "polybus_ingest_publish_holds", "Socket reads held because the publish backlog was full"
)
REST_SEEDS = Counter("polybus_ingest_rest_seeds", "REST /book seeds by outcome", ["outcome"])
MARKETS = Gauge("polybus_ingest_markets", "Markets selected")
LAG = Histogram(
    "polybus_ingest_lag_seconds",
    "Venue timestamp to local receive (ts_init - ts_event), per frame",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
