"""Settings of the [sim] section of a deployment file."""

from __future__ import annotations

from polybus.common.config import Port, ServiceSettings


class SimSettings(ServiceSettings, frozen=True):
    metrics_port: Port = 9103
