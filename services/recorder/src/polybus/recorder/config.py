"""Settings of the [recorder] section of a deployment file."""

from __future__ import annotations

from typing import Annotated

import msgspec

from polybus.common.config import Port, PositiveSeconds, ServiceSettings


class RecorderSettings(ServiceSettings, frozen=True):
    metrics_port: Port = 9102
    durable: str = "recorder"
    """The recorder reads every consumer of the streams file with this durable name."""
    batch_max_events: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5000
    """A batch is written when it holds this many events…"""
    batch_max_delay_s: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.05
    """…or when this long has passed since its first event arrived."""
    fetch_timeout_s: PositiveSeconds = 1.0
    """How long one pull waits for a first message (also how quickly a stop is noticed)."""
    backoff_initial_s: PositiveSeconds = 0.2
    backoff_max_s: PositiveSeconds = 5.0
    """Retry delays while the database is unreachable: doubling from initial up to max."""
    verbatim_streams: tuple[str, ...] = ("CTL",)
    """Streams recorded verbatim into ``control_messages`` (operator commands, not events)."""
    write_timeout_s: PositiveSeconds = 30.0
    """A batch write (connect, COPY, insert, commit) taking longer counts as a failure."""
    lag_interval_s: PositiveSeconds = 5.0
    """How often consumer lag is read from the server for the metrics."""
    migrate_on_start: bool = True
    """Apply pending migrations before recording (``polybus up`` also does it beforehand)."""
    stop_timeout_s: PositiveSeconds = 10.0
    """On stop, how long in-flight batches may take to commit and ack."""
