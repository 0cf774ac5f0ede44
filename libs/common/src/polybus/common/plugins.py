"""How services plug into the operator CLI and ``polybus up`` without common importing them.

Each service package declares a :class:`ServicePlugin` under the ``polybus.services`` entry
point group::

    [project.entry-points."polybus.services"]
    ingest = "polybus.ingest.plugin:PLUGIN"

The CLI adds ``polybus <name>`` (run the service) and the plugin's own commands; the config
loader validates the ``[<name>]`` section with the plugin's settings Struct; ``polybus up``
runs the plugin's ``prepare`` step, then the service as a supervised OS process. A service that
is not installed is simply absent.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from polybus.common.config import Config, ServiceSettings

if TYPE_CHECKING:
    import typer

ENTRY_POINT_GROUP = "polybus.services"


def _always(config: Config) -> bool:
    return True


@dataclass(frozen=True)
class ServicePlugin:
    name: str
    """Section name in the config, CLI command and supervisor child name."""
    help: str
    settings_type: type[ServiceSettings]
    run: str
    """``"module:function"`` of ``async def run(config: Config) -> None`` (with a keyword
    ``replica: int`` if ``replicated``)."""
    prepare: str = ""
    """``"module:function"`` of ``async def prepare(config: Config) -> None``, run once by
    ``polybus up`` after the servers are up and before any service starts (e.g. migrations)."""
    commands: Callable[[], typer.Typer] | None = None
    """Extra operator commands (``polybus markets``, ``polybus db migrate``, …)."""
    wanted: Callable[[Config], bool] = field(default=_always)
    """Whether ``polybus up`` runs this service for a given deployment."""
    start_order: int = 100
    """``polybus up`` starts services in ascending order and stops them in reverse."""
    instances: Callable[[Config], Sequence[tuple[str, Sequence[str]]]] | None = None
    """The processes ``polybus up`` starts for this service: (child name, extra arguments)
    each; None: one process named after the service (a strategy runs one per replica)."""
    replicated: bool = False
    """``polybus <name>`` takes ``--replica K`` and calls ``run(config, replica=K)``: one of
    several processes of the service (``instances`` gives each its K)."""
    hooks: Mapping[str, str] = field(default_factory=dict)
    """Named ``"module:function"`` implementations of commands that common owns but a service
    implements, so two services can share one command (see :data:`HOOKS`)."""


HOOKS = {
    "replay_capture": "def (path: Path, *, json_output: bool) -> int - replay a capture file "
    "of raw venue frames through the ingest's parsing/book/check code, offline",
    "replay_store": "def (config: Config, *, market: str, asset: str, start: str, end: str, "
    "speed: str, to_subject_prefix: str, out: Path | None) -> int - republish recorded market "
    "data from the store",
    "capture_events": "def (path: Path) -> list[Event] - the market-data events the ingest "
    "makes of a capture of raw venue frames (ValueError naming the problem); a backtest's input",
}
"""The hooks the common CLI and the services call, with their signatures; each returns an exit
code unless its signature says otherwise."""


def find_hook(plugins: Mapping[str, ServicePlugin], name: str) -> Callable[..., int] | None:
    """The implementation of hook ``name`` from whichever installed plugin provides it."""
    for plugin in plugins.values():
        if name in plugin.hooks:
            module_name, _, attribute = plugin.hooks[name].partition(":")
            hook: Callable[..., int] = getattr(importlib.import_module(module_name), attribute)
            return hook
    return None


def load_callable(path: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Import ``"module:function"`` lazily, so the CLI starts without importing every service."""
    module_name, _, attribute = path.partition(":")
    function: Callable[..., Coroutine[Any, Any, Any]] = getattr(
        importlib.import_module(module_name), attribute
    )
    return function


def discover_plugins() -> dict[str, ServicePlugin]:
    """Every installed service plugin, by name, in start order."""
    plugins = [entry.load() for entry in entry_points(group=ENTRY_POINT_GROUP)]
    for plugin in plugins:
        if not isinstance(plugin, ServicePlugin):
            raise TypeError(f"entry point {plugin!r} in {ENTRY_POINT_GROUP} is not a ServicePlugin")
    return {p.name: p for p in sorted(plugins, key=lambda p: (p.start_order, p.name))}


def section_types(plugins: dict[str, ServicePlugin]) -> dict[str, type[ServiceSettings]]:
    return {name: plugin.settings_type for name, plugin in plugins.items()}
