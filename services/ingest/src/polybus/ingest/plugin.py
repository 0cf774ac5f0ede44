"""How the ingest service plugs into the `polybus` CLI and `polybus up`."""

from __future__ import annotations

from polybus.common.config import Config
from polybus.common.plugins import ServicePlugin
from polybus.ingest.cli import commands
from polybus.ingest.config import IngestSettings


def _always(config: Config) -> bool:
    return True


def instances(config: Config) -> list[tuple[str, list[str]]]:
    """The processes ``polybus up`` starts: one ``ingest``, or ``ingest-<k>`` given
    ``--replica k`` for each of ``[ingest] instances`` (they split the markets by lease)."""
    count = config.section("ingest", IngestSettings).instances
    if count == 1:
        return [("ingest", [])]
    return [(f"ingest-{k}", ["--replica", str(k)]) for k in range(count)]


PLUGIN = ServicePlugin(
    name="ingest",
    help="Run the ingest: venue WebSocket books to NATS.",
    settings_type=IngestSettings,
    run="polybus.ingest.service:run",
    commands=commands,
    wanted=_always,
    start_order=50,
    instances=instances,
    replicated=True,
    hooks={
        "replay_capture": "polybus.ingest.replay:replay_capture",
        "capture_events": "polybus.ingest.replay:capture_events",
    },
)
