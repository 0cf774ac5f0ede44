"""Strategy classes by name: the built-ins and the ``polybus.strategies`` entry point group.

A strategy outside this repository plugs in with an entry point in its own package::

    [project.entry-points."polybus.strategies"]
    my_strategy = "my_package.module:MyStrategy"

The entry point's name must equal the class's ``name`` (the strategy id on the bus). Built-ins
are the :class:`~polybus.strategy.api.Strategy` subclasses in the modules of
:data:`BUILTIN_MODULES`; a built-in module that is not there (yet) is skipped.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points

from polybus.common.subjects import Subjects
from polybus.strategy.api import Strategy

ENTRY_POINT_GROUP = "polybus.strategies"
BUILTIN_MODULES = (
    "polybus.strategy.strategies.dutch_book",
    "polybus.strategy.strategies.spread_capture",
)


class RegistryError(Exception):
    """A strategy plugin is broken (wrong type, name mismatch, duplicate name)."""


def check_name(name: str) -> str:
    """Return ``name`` if it can be a strategy id (a subject token and a config key)."""
    if not name.isidentifier():
        raise ValueError(f"strategy name {name!r} must be a Python identifier, like dutch_book")
    Subjects().intent_all(name)  # raises ValueError naming the problem
    return name


def _builtin() -> dict[str, type[Strategy]]:
    found: dict[str, type[Strategy]] = {}
    for module_name in BUILTIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # not written (yet): no such built-in
            raise
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, Strategy) and value is not Strategy and "name" in vars(value):
                found[value.name] = value
    return found


def strategies() -> dict[str, type[Strategy]]:
    """Every strategy class that can run, by name (its strategy id)."""
    found = _builtin()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        value = entry.load()
        if not (inspect.isclass(value) and issubclass(value, Strategy)):
            raise RegistryError(
                f"entry point {entry.name} in {ENTRY_POINT_GROUP} is not a Strategy"
            )
        if getattr(value, "name", None) != entry.name:
            raise RegistryError(
                f"entry point {entry.name} in {ENTRY_POINT_GROUP}: the class's name is "
                f"{getattr(value, 'name', None)!r}"
            )
        if entry.name in found and found[entry.name] is not value:
            raise RegistryError(f"two strategies are named {entry.name}")
        found[entry.name] = value
    for name in found:
        check_name(name)
    return dict(sorted(found.items()))
