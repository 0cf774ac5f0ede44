"""Settings of the [ingest] section of a deployment file."""

from __future__ import annotations

from polybus.common.config import Port, ServiceSettings


class IngestSettings(ServiceSettings, frozen=True):
    metrics_port: Port = 9101
