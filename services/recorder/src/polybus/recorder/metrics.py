"""The recorder's Prometheus metrics. ``stream`` is the logical stream (MD, EXEC, …, HEALTH)
and ``table`` a table name: both bounded sets."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS_WRITTEN = Counter(
    "polybus_recorder_rows_written", "Rows inserted into the event store", ["table"]
)
DUPLICATE_ROWS = Counter(
    "polybus_recorder_duplicate_rows",
    "Rows not inserted because their key was already stored (redeliveries, re-publications)",
    ["table"],
)
EVENTS_ACKED = Counter(
    "polybus_recorder_events_acked", "Messages acked after their batch was committed", ["stream"]
)
BATCH_EVENTS = Histogram(
    "polybus_recorder_batch_events",
    "Messages per written batch",
    ["stream"],
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000),
)
FLUSH_SECONDS = Histogram(
    "polybus_recorder_flush_seconds",
    "Time to write and commit one batch (COPY, insert, commit)",
    ["stream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_LAG = Gauge(
    "polybus_recorder_consumer_lag_messages",
    "Messages of the stream not yet recorded (pending + delivered but unacked)",
    ["stream"],
)
REDELIVERIES = Counter(
    "polybus_recorder_redeliveries", "Messages delivered to the recorder more than once", ["stream"]
)
DEAD_LETTERS = Counter(
    "polybus_recorder_dead_letters",
    "Messages stored in undecodable_messages instead of an event table",
    ["stream", "reason"],
)  # reason: undecodable | rejected
WRITE_FAILURES = Counter(
    "polybus_recorder_write_failures",
    "Batch writes that failed because the database was unavailable (retried)",
    ["stream"],
)
DATABASE_UP = Gauge(
    "polybus_recorder_database_up", "1 while the last write to the database succeeded", ["stream"]
)
