"""Settings of the [recorder] section of a deployment file."""

from __future__ import annotations

from polybus.common.config import Port, ServiceSettings


class RecorderSettings(ServiceSettings, frozen=True):
    metrics_port: Port = 9102
