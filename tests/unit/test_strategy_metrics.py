"""A strategy replica's metrics move where the runtime decides: intents, places and the edge the
book showed, drops, reports, hook failures, halts and the partitions it holds."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY

from polybus.common.book_view import BookView
from polybus.strategy.api import Action, Report
from tests.unit.test_strategy_runtime import NO, PARTITION, PARTITIONS, YES, Harness, Recorder


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Metered(Recorder):
    """The runtime tests' strategy under its own id, reporting on the NO book."""

    name = "metered"

    def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
        if asset_id == NO:
            return (Report(kind="one_legged", detail="a test report", limit="detected"),)
        return super().on_book(view, asset_id)


def test_a_place_counts_as_intent_and_quote_with_its_edge_to_the_mid_in_ticks() -> None:
    before = {
        "places": sample(
            "polybus_strategy_places_total", strategy="metered", side="BUY", style="quote"
        ),
        "edge_1": sample(
            "polybus_strategy_edge_ticks_bucket", strategy="metered", style="quote", le="1.0"
        ),
        "edge_0.5": sample(
            "polybus_strategy_edge_ticks_bucket", strategy="metered", style="quote", le="0.5"
        ),
    }
    harness = Harness(Metered)

    # Bid 0.40, ask 0.42 (tick 0.01): a BUY at the bid is one tick inside the mid.
    [intent] = harness.book(YES, 400_000)

    assert intent.action == "place"
    places = sample("polybus_strategy_places_total", strategy="metered", side="BUY", style="quote")
    assert places - before["places"] == 1
    assert sample("polybus_strategy_intents_total", strategy="metered", action="place") >= 1
    edge = "polybus_strategy_edge_ticks_bucket"
    assert sample(edge, strategy="metered", style="quote", le="1.0") - before["edge_1"] == 1
    assert sample(edge, strategy="metered", style="quote", le="0.5") - before["edge_0.5"] == 0


def test_partitions_held_follow_acquire_and_lose() -> None:
    harness = Harness(Metered)
    assert sample("polybus_strategy_partitions_held", strategy="metered") == PARTITIONS
    lost = sample("polybus_strategy_partition_changes_total", strategy="metered", change="lost")

    harness.runtime.on_partition_lost(PARTITION)

    assert sample("polybus_strategy_partitions_held", strategy="metered") == PARTITIONS - 1
    changes = sample("polybus_strategy_partition_changes_total", strategy="metered", change="lost")
    assert changes - lost == 1


def test_drops_reports_hook_failures_and_halts_are_counted() -> None:
    def counts() -> tuple[float, ...]:
        return (
            sample("polybus_strategy_reports_total", strategy="metered", kind="one_legged"),
            sample("polybus_strategy_hook_failures_total", strategy="metered"),
            sample("polybus_strategy_intents_total", strategy="metered", action="cancel"),
        )

    harness = Harness(Metered)
    strategy = harness.strategy
    assert isinstance(strategy, Metered)
    reports, failures, cancels = counts()
    [working] = harness.book(YES, 400_000)

    harness.book(NO, 300_000)
    strategy.fail = True
    harness.book(YES, 410_000, seq=2)
    strategy.fail = False
    harness.runtime.set_halt("", halted=True)

    assert counts() == (reports + 1, failures + 1, cancels + 1)  # the halt cancels `working`
    assert sample("polybus_strategy_halted", strategy="metered") == 1
    dropped = sample("polybus_strategy_dropped_places_total", strategy="metered", refusal="halted")
    harness.runtime.intents_for(harness.strategy.on_book(harness.view, YES))
    after = sample("polybus_strategy_dropped_places_total", strategy="metered", refusal="halted")
    assert after - dropped == 1
    harness.runtime.set_halt("", halted=False)
    assert sample("polybus_strategy_halted", strategy="metered") == 0
    assert working.action == "place"
