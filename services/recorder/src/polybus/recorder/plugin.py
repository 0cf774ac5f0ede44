"""How the recorder service plugs into the `polybus` CLI and `polybus up`."""

from __future__ import annotations

from polybus.common.config import Config
from polybus.common.plugins import ServicePlugin
from polybus.recorder.config import RecorderSettings


def _always(config: Config) -> bool:
    return True


PLUGIN = ServicePlugin(
    name="recorder",
    help="Run the recorder: every stream into PostgreSQL.",
    settings_type=RecorderSettings,
    run="polybus.recorder.service:run",
    wanted=_always,
    start_order=20,
)
