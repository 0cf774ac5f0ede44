"""A strategy replica's Prometheus metrics, moved by the runtime as it makes intents.

:class:`~polybus.strategy.runtime.StrategyRuntime` calls these where it decides: every intent
(place, cancel), every place it drops, every report, every hook that raised, every halt switch
and every partition it takes or loses. The ``strategy`` label is the strategy id (a configured
name, a bounded set); replicas of one strategy are told apart by Prometheus's own ``instance``
label, so "lease ownership per replica" is ``polybus_strategy_partitions_held`` by instance.
Never an asset or market id as a label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from polybus.common.book_view import BookView
from polybus.common.events import OrderIntent

INTENTS = Counter("polybus_strategy_intents", "Intents made, by action", ["strategy", "action"])
PLACES = Counter(
    "polybus_strategy_places",
    "Orders placed, by side and style (quote: GTC/GTD, rests on the book; take: FOK/FAK)",
    ["strategy", "side", "style"],
)
DROPPED_PLACES = Counter(
    "polybus_strategy_dropped_places",
    "Places the runtime did not send, by why (halted, unknown_asset, book_untradeable, "
    "partition_not_held)",
    ["strategy", "refusal"],
)
EDGE_TICKS = Histogram(
    "polybus_strategy_edge_ticks",
    "Each place's price against the book's mid when it was made, in ticks: positive inside "
    "the mid (a BUY below it, a SELL above), negative paying through it",
    ["strategy", "style"],
    buckets=(-10, -5, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 5, 10, 20),
)
REPORTS = Counter("polybus_strategy_reports", "Reports (RiskEvents) made", ["strategy", "kind"])
FILLS = Counter("polybus_strategy_fills", "Fills of this strategy handed to it", ["strategy"])
HOOK_FAILURES = Counter(
    "polybus_strategy_hook_failures",
    "Strategy hooks that raised (their actions dropped)",
    ["strategy"],
)
HALTED = Gauge("polybus_strategy_halted", "1 while this strategy is halted", ["strategy"])
PARTITIONS_HELD = Gauge(
    "polybus_strategy_partitions_held", "Partitions this replica holds (leases)", ["strategy"]
)
PARTITION_CHANGES = Counter(
    "polybus_strategy_partition_changes",
    "Partitions this replica acquired or lost",
    ["strategy", "change"],
)  # change: acquired | lost

_QUOTES = frozenset({"GTC", "GTD"})


def placed(intent: OrderIntent, view: BookView) -> None:
    """A place intent was made: count it and the edge the book showed."""
    style = "quote" if intent.time_in_force in _QUOTES else "take"
    INTENTS.labels(intent.strategy_id, intent.action).inc()
    PLACES.labels(intent.strategy_id, intent.side, style).inc()
    book = view.book(intent.asset_id)
    tick = view.tick(intent.asset_id)
    if book is None or book.best_bid is None or book.best_ask is None or tick <= 0:
        return
    # Twice the edge in micro-units stays an integer; only the tick count is a ratio.
    double_edge = book.best_bid + book.best_ask - 2 * intent.price
    if intent.side == "SELL":
        double_edge = -double_edge
    EDGE_TICKS.labels(intent.strategy_id, style).observe(double_edge / (2 * tick))


def holding(strategy_id: str, partitions: int, change: str) -> None:
    """The replica acquired or lost a partition and now holds ``partitions``."""
    PARTITIONS_HELD.labels(strategy_id).set(partitions)
    PARTITION_CHANGES.labels(strategy_id, change).inc()
