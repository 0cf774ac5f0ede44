"""Prometheus metrics shared by every service (bus, consumers, runtime, supervisor).

Names follow Prometheus conventions (``polybus_`` prefix, base units, ``_total`` counters).
Labels are bounded: never an asset id, condition id, order id or full subject.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NATS_DISCONNECTS = Counter(
    "polybus_nats_disconnects", "Times the NATS connection was lost", ["connection"]
)
NATS_RECONNECTS = Counter(
    "polybus_nats_reconnects", "Times the NATS connection was re-established", ["connection"]
)
NATS_SLOW_CONSUMER_DROPS = Counter(
    "polybus_nats_slow_consumer_drops",
    "Messages the NATS client dropped because a subscription fell behind",
    ["connection"],
)
NATS_ERRORS = Counter("polybus_nats_errors", "Asynchronous NATS client errors", ["connection"])
NATS_CONNECTED = Gauge("polybus_nats_connected", "1 while connected to NATS", ["connection"])

BUS_PUBLISHED = Counter(
    "polybus_bus_published_messages", "Messages published", ["delivery"]
)  # delivery: core | jetstream
BUS_PUBLISH_DUPLICATES = Counter(
    "polybus_bus_publish_duplicates",
    "JetStream publishes the server dropped as duplicates (same Nats-Msg-Id)",
)

CONSUMER_MESSAGES = Counter(
    "polybus_consumer_messages",
    "Messages handled by a durable consumer, by outcome",
    ["consumer", "outcome"],
)  # outcome: ack | nak
CONSUMER_REDELIVERIES = Counter(
    "polybus_consumer_redeliveries",
    "Messages delivered more than once to a durable consumer",
    ["consumer"],
)

SERVICE_UP = Gauge("polybus_service_up", "1 while the service runs", ["service"])
SERVICE_TASK_FAILURES = Counter(
    "polybus_service_task_failures", "Owned tasks that ended with an exception", ["service"]
)

SUPERVISOR_RESTARTS = Counter(
    "polybus_supervisor_restarts", "Child processes restarted after they exited", ["child"]
)
SUPERVISOR_CHILD_UP = Gauge(
    "polybus_supervisor_child_up", "1 while the supervised child process runs", ["child"]
)

HANDLER_SECONDS = Histogram(
    "polybus_consumer_handler_seconds",
    "Time a durable consumer's handler took per message",
    ["consumer"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
)
