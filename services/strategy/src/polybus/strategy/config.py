"""The ``[strategy]`` config section and one ``[strategy.<name>]`` table per strategy to run.

::

    [strategy]                      # what every strategy process shares
    timer_interval_s = 1.0

    [strategy.spread_capture]       # run this strategy (``polybus up`` starts it)
    replicas = 3                    # processes ``polybus up`` starts; they split the partitions
    metrics_port = 9110             # replica k serves /metrics on 9110 + k (0: a free port)
    min_spread_ticks = 2            # ... the strategy's own settings (its ``settings_type``)

A strategy's table holds the runtime's keys (:class:`StrategyRuntimeKeys`: ``enabled``,
``replicas``, ``timer_interval_s``, ``metrics_port``) beside the strategy's own settings, so its
``settings_type`` must not use those names. Both are checked when the config loads: a typo in
either fails at startup naming the key, and so does a table for a strategy that is not
installed. The section's Struct is built from the installed strategies
(:func:`service_settings_type`).
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec

from polybus.common.config import Port, PositiveSeconds, ServiceSettings
from polybus.strategy.api import Strategy

RUNTIME_KEYS = ("enabled", "replicas", "timer_interval_s", "metrics_port")


class StrategyServiceSettings(ServiceSettings, frozen=True):
    """``[strategy]``: what every strategy process shares."""

    timer_interval_s: PositiveSeconds = 1.0
    """How often ``on_timer`` runs, unless a strategy's table says otherwise."""
    publish_retry_interval_s: PositiveSeconds = 0.2
    """How long a failed intent publish waits before it is retried (same id)."""
    rebuild_idle_timeout_s: PositiveSeconds = 5.0
    """How long the EXEC rebuild waits for the next message before it gives up (exit 1)."""
    book_warm_start_timeout_s: PositiveSeconds = 15.0
    partition_leases: bool = True
    """Split the partitions between the replicas with leases (``LEASES`` bucket); the executor
    fences every intent by its lease. Off: the replica owns every partition, unfenced (run
    exactly one; for a bus without the bucket)."""


class StrategyRuntimeKeys(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The runtime's keys in a ``[strategy.<name>]`` table."""

    enabled: bool = True
    replicas: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    timer_interval_s: PositiveSeconds | None = None
    metrics_port: Port = 0


def table_type(strategy: type[Strategy]) -> type[msgspec.Struct]:
    """The Struct of ``[strategy.<name>]``: the strategy's ``settings_type`` plus the runtime's
    keys. An instance *is* a ``settings_type``, so it is what the strategy gets as settings."""
    base = strategy.settings_type
    fields = [(name, field_type, default) for name, field_type, default in _runtime_fields()]
    frozen = bool(getattr(base.__struct_config__, "frozen", False))
    table = msgspec.defstruct(
        f"{strategy.__name__}Table",
        fields,
        bases=(base,),
        frozen=frozen,
        kw_only=True,
        forbid_unknown_fields=True,
    )
    # What docs/configuration.md says of the table (polybus.common.config_docs).
    table.__doc__ = " ".join(filter(None, [base.__doc__, _RUNTIME_KEYS_DOC]))
    return table


_RUNTIME_KEYS_DOC = (
    "Beside the strategy's own settings, the runtime's keys: ``enabled`` (whether ``polybus up``"
    " runs it), ``replicas`` (how many processes ``polybus up`` starts; they split the"
    " partitions), ``timer_interval_s`` (unset: the ``[strategy]`` one) and ``metrics_port``"
    " (replica k serves ``/metrics`` on this port + k; 0: a free port)."
)


def _runtime_fields() -> list[tuple[str, Any, Any]]:
    hints = StrategyRuntimeKeys.__annotations__
    defaults = StrategyRuntimeKeys()
    return [(name, hints[name], getattr(defaults, name)) for name in RUNTIME_KEYS]


def runtime_keys(table: msgspec.Struct) -> StrategyRuntimeKeys:
    """The runtime's keys of a decoded ``[strategy.<name>]`` table."""
    return StrategyRuntimeKeys(**{name: getattr(table, name) for name in RUNTIME_KEYS})


def service_settings_type(strategies: dict[str, type[Strategy]]) -> type[StrategyServiceSettings]:
    """The ``[strategy]`` Struct: the shared keys and an optional table per known strategy."""
    fields = [(name, table_type(cls) | None, None) for name, cls in strategies.items()]
    return cast(
        type[StrategyServiceSettings],
        msgspec.defstruct(
            "StrategySettings",
            fields,
            bases=(StrategyServiceSettings,),
            frozen=True,
            kw_only=True,
            forbid_unknown_fields=True,
        ),
    )


def configured(settings: StrategyServiceSettings) -> dict[str, msgspec.Struct]:
    """The strategies the section has a table for, by name."""
    return {
        name: table
        for name in settings.__struct_fields__
        if isinstance(table := getattr(settings, name), msgspec.Struct)
    }
