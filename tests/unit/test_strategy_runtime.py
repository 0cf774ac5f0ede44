"""The strategy runtime's pure core: scripted books, EXEC events, halts and partition changes in,
intents out. The example strategy of docs/strategies.md is read from the page and run here."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from polybus.common.book_view import BookView
from polybus.common.bus import MSG_ID_HEADER
from polybus.common.bus.memory_bus import MemoryBus
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    Fill,
    Level,
    LevelChange,
    MarketInfo,
    OrderEvent,
    OrderIntent,
    Outcome,
    PositionSnapshot,
    RiskEvent,
    execution_decoder,
)
from polybus.common.money import MICROS
from polybus.common.streams import load_definitions
from polybus.common.subjects import partition_of
from polybus.strategy.api import Action, Cancel, Place, Report, Strategy
from polybus.strategy.portfolio import LivePortfolio
from polybus.strategy.runtime import IntentIds, StrategyRuntime
from polybus.strategy.service import IntentPublisher
from tests.conftest import STREAMS_FILE

REPO = Path(__file__).resolve().parents[2]
CONDITION = "0x" + "cd" * 32
YES, NO = "7" * 70, "8" * 70
PARTITIONS = 16
PARTITION = partition_of(CONDITION, PARTITIONS)
TICK = 10_000


class Recorder(Strategy):
    """Places one bid per book update at the best bid; records what the runtime told it."""

    name = "recorder"

    def __init__(self, settings: msgspec.Struct, portfolio: Any) -> None:
        super().__init__(settings, portfolio)
        self.books: list[str] = []
        self.fills: list[Fill] = []
        self.untradeable: list[str] = []
        self.timers: list[int] = []
        self.fail = False

    def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
        if self.fail:
            raise RuntimeError("a strategy bug")
        self.books.append(asset_id)
        book = view.book(asset_id)
        assert book is not None
        assert book.best_bid is not None
        return (Place(asset_id=asset_id, side="BUY", price=book.best_bid, size=5 * MICROS),)

    def on_fill(self, fill: Fill) -> Iterable[Action]:
        self.fills.append(fill)
        return ()

    def on_untradeable(self, view: BookView, asset_id: str) -> Iterable[Action]:
        self.untradeable.append(asset_id)
        return ()

    def on_timer(self, now_ns: int) -> Iterable[Action]:
        self.timers.append(now_ns)
        return ()


def market() -> MarketInfo:
    return MarketInfo(
        event_id="m",
        ts_event=1,
        ts_init=1,
        condition_id=CONDITION,
        question="q",
        slug="q",
        outcomes=(Outcome(token_id=YES, outcome="Yes"), Outcome(token_id=NO, outcome="No")),
        tick_size=TICK,
        min_order_size=5 * MICROS,
    )


def snapshot(asset_id: str, bid: int, seq: int = 1) -> BookSnapshot:
    return BookSnapshot(
        event_id=f"s{asset_id}{seq}",
        ts_event=1,
        ts_init=1,
        asset_id=asset_id,
        condition_id=CONDITION,
        seq=seq,
        epoch=1,
        bids=(Level(bid, 100 * MICROS),),
        asks=(Level(bid + 2 * TICK, 100 * MICROS),),
        tick_size=TICK,
    )


class Harness:
    def __init__(self, strategy: type[Strategy] = Recorder, incarnation: int = 1000) -> None:
        self.view = BookView()
        self.view.apply(market())
        self.portfolio = LivePortfolio(strategy.name)
        self.strategy = strategy(strategy.settings_type(), self.portfolio)
        self.now = 5_000
        self.runtime = StrategyRuntime(
            self.strategy,
            self.portfolio,
            self.view,
            IntentIds(strategy.name, "replica-a", incarnation),
            partitions=PARTITIONS,
            clock=lambda: self.now,
        )
        for partition in range(PARTITIONS):
            self.runtime.on_partition_acquired(partition, 7)
        self.runtime.start()

    def book(self, asset_id: str, bid: int, seq: int = 1) -> list[OrderIntent]:
        self.view.apply(snapshot(asset_id, bid, seq))
        return self.runtime.on_book(asset_id)

    def order_event(self, intent: OrderIntent, status: str, filled: int = 0) -> OrderEvent:
        return OrderEvent(
            event_id=f"o.{intent.intent_id}.{status}",
            ts_event=1,
            ts_init=1,
            order_id=intent.intent_id,
            strategy_id=intent.strategy_id,
            condition_id=intent.condition_id,
            asset_id=intent.asset_id,
            status=status,  # type: ignore[arg-type]
            side=intent.side,
            price=intent.price,
            size=intent.size,
            filled_size=filled,
        )


def fill(intent: OrderIntent, settlement: str = "MATCHED") -> Fill:
    return Fill(
        event_id=f"f.{settlement}",
        ts_event=1,
        ts_init=1,
        fill_id="trade-1",
        order_id=intent.intent_id,
        strategy_id=intent.strategy_id,
        condition_id=intent.condition_id,
        asset_id=intent.asset_id,
        side=intent.side,
        price=intent.price,
        size=intent.size,
        settlement=settlement,  # type: ignore[arg-type]
    )


def position(asset_id: str, size: int, realized: int = 0) -> PositionSnapshot:
    return PositionSnapshot(
        event_id=f"p.{size}",
        ts_event=1,
        ts_init=1,
        strategy_id="recorder",
        condition_id=CONDITION,
        asset_id=asset_id,
        size=0,
        provisional_size=size,
        provisional_realized_pnl=realized,
    )


def test_a_place_becomes_an_intent_with_partition_revision_and_a_stable_id() -> None:
    harness = Harness()

    intents = harness.book(YES, 400_000)

    assert len(intents) == 1
    intent = intents[0]
    assert intent.action == "place"
    assert (intent.asset_id, intent.condition_id) == (YES, CONDITION)
    assert (intent.price, intent.size, intent.side) == (400_000, 5 * MICROS, "BUY")
    assert (intent.partition, intent.lease_revision) == (PARTITION, 7)
    assert intent.intent_id == "recorder.replica-a.1000.1" == intent.event_id
    assert [o.status for o in harness.portfolio.working(YES)] == ["pending"]


def test_ids_are_unique_and_the_same_for_the_same_script() -> None:
    def script() -> list[str]:
        harness = Harness()
        ids = []
        for seq in range(1, 6):
            ids += [i.intent_id for i in harness.book(YES, 400_000 + seq * TICK, seq)]
            ids += [i.intent_id for i in harness.book(NO, 500_000 + seq * TICK, seq)]
        return ids

    first = script()
    assert len(first) == len(set(first)) == 10
    assert script() == first


def test_a_restarted_runtime_never_reuses_an_id_seen_in_exec() -> None:
    before = Harness(incarnation=2000)
    old = before.book(YES, 400_000)[0]
    # A clock that went back: the new process starts with a lower incarnation.
    after = Harness(incarnation=1500)
    after.runtime.restore(after.order_event(old, "accepted"))

    new = after.book(YES, 410_000, seq=2)

    assert IntentIds.incarnation_of("recorder", new[0].intent_id) == 2001
    assert new[0].intent_id != old.intent_id


def test_restore_rebuilds_working_orders_and_positions_without_hooks() -> None:
    harness = Harness()
    intent = harness.book(YES, 400_000)[0]
    restarted = Harness()

    restarted.runtime.restore(restarted.order_event(intent, "partially_filled", 2 * MICROS))
    restarted.runtime.restore(fill(intent))
    restarted.runtime.restore(position(YES, 2 * MICROS, realized=-3))

    assert restarted.strategy.fills == []  # type: ignore[attr-defined]
    (order,) = restarted.portfolio.working(YES)
    assert (order.order_id, order.status, order.filled_size) == (
        intent.intent_id,
        "partially_filled",
        2 * MICROS,
    )
    assert restarted.portfolio.position(YES) == 2 * MICROS
    assert restarted.portfolio.realized_pnl() == -3
    # The same fill status again live is not news; a new status is.
    assert restarted.runtime.on_execution(fill(intent)) == []
    restarted.runtime.on_execution(fill(intent, "CONFIRMED"))
    assert [f.settlement for f in restarted.strategy.fills] == ["CONFIRMED"]  # type: ignore[attr-defined]


def test_fills_reach_the_strategy_once_per_status_and_positions_follow_exec() -> None:
    harness = Harness()
    intent = harness.book(YES, 400_000)[0]

    for event in (
        harness.order_event(intent, "accepted"),
        fill(intent),
        fill(intent),  # a redelivery
        harness.order_event(intent, "filled", intent.size),
        position(YES, intent.size),
        fill(intent, "CONFIRMED"),
    ):
        assert harness.runtime.on_execution(event) == []

    strategy: Recorder = harness.strategy  # type: ignore[assignment]
    assert [f.settlement for f in strategy.fills] == ["MATCHED", "CONFIRMED"]
    assert harness.portfolio.position(YES) == intent.size
    assert harness.portfolio.working(YES) == []


def test_an_untradeable_book_cancels_its_working_orders_and_tells_the_strategy() -> None:
    harness = Harness()
    yes = harness.book(YES, 400_000)[0]
    no = harness.book(NO, 500_000)[0]
    harness.runtime.on_execution(harness.order_event(yes, "accepted"))
    harness.view.apply(
        BookStatus(
            event_id="st",
            ts_event=1,
            ts_init=1,
            asset_id=YES,
            condition_id=CONDITION,
            seq=2,
            epoch=1,
            status="stale",
            reason="ws_stall",
        )
    )

    cancels = harness.runtime.on_untradeable(YES)

    assert [(c.action, c.target_intent_id, c.reason) for c in cancels] == [
        ("cancel", yes.intent_id, "book_untradeable")
    ]
    assert harness.strategy.untradeable == [YES]  # type: ignore[attr-defined]
    assert no.intent_id not in {c.target_intent_id for c in cancels}
    # No hook and no place on the stale book; the cancel is not repeated.
    assert harness.runtime.on_book(YES) == []
    assert harness.runtime.on_untradeable(YES) == []


def test_halt_cancels_everything_then_silence_until_resume() -> None:
    harness = Harness()
    yes = harness.book(YES, 400_000)[0]
    no = harness.book(NO, 500_000)[0]

    cancels = harness.runtime.set_halt("", True)

    assert {c.target_intent_id for c in cancels} == {yes.intent_id, no.intent_id}
    assert all(c.action == "cancel" and c.reason == "halted" for c in cancels)
    assert harness.book(YES, 410_000, seq=2) == []
    assert harness.runtime.on_timer(1) == []
    assert harness.runtime.intents_for([Place(asset_id=YES, side="BUY", price=1, size=1)]) == []
    assert harness.runtime.set_halt("other_strategy", False) == []
    assert harness.runtime.halted

    harness.runtime.set_halt("", False)
    assert [i.action for i in harness.book(YES, 420_000, seq=3)] == ["place"]


def test_a_strategy_scoped_halt_applies_and_another_strategys_does_not() -> None:
    harness = Harness()
    assert harness.runtime.set_halt("other", True) == []
    assert not harness.runtime.halted
    harness.runtime.set_halt("recorder", True)
    assert harness.runtime.halted


def test_a_lost_partition_cancels_its_orders_under_the_old_revision_and_stops_places() -> None:
    harness = Harness()
    intent = harness.book(YES, 400_000)[0]

    cancels = harness.runtime.on_partition_lost(PARTITION)

    assert [(c.target_intent_id, c.lease_revision, c.reason) for c in cancels] == [
        (intent.intent_id, 7, "partition_lost")
    ]
    assert harness.book(YES, 410_000, seq=2) == []
    assert harness.runtime.intents_for([Place(asset_id=NO, side="BUY", price=1, size=1)]) == []
    harness.runtime.on_partition_acquired(PARTITION, 9)
    assert [i.lease_revision for i in harness.book(YES, 420_000, seq=3)] == [9]


def test_an_acquired_partition_first_cancels_the_orders_another_replica_left_there() -> None:
    dead = Harness()
    left = dead.book(YES, 400_000)[0]
    survivor = Harness()
    survivor.runtime.on_partition_lost(PARTITION)  # held by the dead replica until now
    # The survivor follows the strategy's EXEC: the dead replica's order is working there.
    survivor.runtime.on_execution(survivor.order_event(left, "accepted"))

    cancels = survivor.runtime.on_partition_acquired(PARTITION, 11)

    assert [(c.target_intent_id, c.lease_revision, c.reason) for c in cancels] == [
        (left.intent_id, 11, "partition_inherited")
    ]
    assert survivor.runtime.on_partition_acquired(PARTITION, 11) == []  # once


def test_another_replicas_order_reported_after_the_takeover_is_cancelled_as_reported() -> None:
    dead = Harness(incarnation=1000)
    left = dead.book(YES, 400_000)[0]
    survivor = Harness(incarnation=2000)
    survivor.runtime.on_partition_lost(PARTITION)
    assert survivor.runtime.on_partition_acquired(PARTITION, 11) == []  # nothing known there
    own = survivor.book(YES, 410_000, seq=2)[0]

    # EXEC reports the dead replica's order only now: nobody drives it, so it is cancelled.
    cancels = survivor.runtime.on_execution(survivor.order_event(left, "accepted"))

    assert [(c.target_intent_id, c.lease_revision, c.reason) for c in cancels] == [
        (left.intent_id, 11, "partition_inherited")
    ]
    assert survivor.runtime.on_execution(survivor.order_event(left, "partially_filled")) == []
    assert survivor.runtime.on_execution(survivor.order_event(own, "accepted")) == []
    # In a partition it does not hold, another replica's order is that replica's to drive.
    survivor.runtime.on_partition_lost(PARTITION)
    later = dead.book(NO, 500_000)[0]
    assert survivor.runtime.on_execution(survivor.order_event(later, "accepted")) == []


def test_a_strategys_cancel_of_another_replicas_order_is_dropped() -> None:
    holder = Harness()
    theirs = holder.book(YES, 400_000)[0]
    other = Harness()
    other.runtime.on_partition_lost(PARTITION)  # the holder's partition, not this replica's
    # Both follow the strategy's EXEC: the holder's order is in this replica's portfolio too.
    other.runtime.on_execution(other.order_event(theirs, "accepted"))

    assert other.runtime.intents_for([Cancel(order_id=theirs.intent_id)]) == []
    assert [
        i.target_intent_id for i in holder.runtime.intents_for([Cancel(order_id=theirs.intent_id)])
    ] == [theirs.intent_id]


def test_cancels_go_out_once_and_unknown_orders_are_ignored() -> None:
    harness = Harness()
    intent = harness.book(YES, 400_000)[0]
    cancel = Cancel(order_id=intent.intent_id)

    assert len(harness.runtime.intents_for([cancel])) == 1
    assert harness.runtime.intents_for([cancel]) == []
    assert harness.runtime.intents_for([Cancel(order_id="nobody")]) == []
    harness.runtime.on_execution(harness.order_event(intent, "canceled"))
    assert harness.portfolio.working() == []


def test_a_failing_hook_is_counted_and_the_runtime_carries_on() -> None:
    harness = Harness()
    harness.strategy.fail = True  # type: ignore[attr-defined]

    assert harness.book(YES, 400_000) == []
    assert harness.runtime.stats.hook_failures == 1
    assert harness.runtime.set_halt("", True) == []  # nothing working, nothing to cancel


def test_timer_reaches_the_strategy() -> None:
    harness = Harness()
    harness.runtime.on_timer(42)
    assert harness.strategy.timers == [42]  # type: ignore[attr-defined]


class TimerReader(Strategy):
    """Reads the book in its timer through ``self.view`` and reports what it saw."""

    name = "timer_reader"

    def on_timer(self, now_ns: int) -> Iterable[Action]:
        book = self.view.book(YES)
        bid = book.best_bid if book is not None else None
        return (
            Report(kind="one_legged", limit="seen", detail=f"bid {bid}", condition_id=CONDITION),
        )


def test_the_strategy_reads_the_runtimes_view_in_its_timer() -> None:
    harness = Harness(TimerReader)
    assert harness.strategy.view is harness.view  # before any hook ran

    harness.view.apply(snapshot(YES, 400_000))
    [report] = harness.runtime.on_timer(42)

    assert isinstance(report, RiskEvent)
    assert report.detail == "bid 400000"


def test_a_report_becomes_a_risk_event_of_the_strategy_in_order_with_its_intents() -> None:
    class PlaceThenReport(Recorder):
        def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
            return (
                *super().on_book(view, asset_id),
                Report(kind="one_legged", limit="detected", detail="d", condition_id=CONDITION),
            )

    harness = Harness(PlaceThenReport)

    place, report = harness.book(YES, 400_000)
    [second] = [e for e in harness.book(YES, 410_000, 2) if isinstance(e, RiskEvent)]

    assert isinstance(place, OrderIntent)
    assert isinstance(report, RiskEvent)
    assert (report.strategy_id, report.kind, report.limit, report.detail) == (
        "recorder",
        "one_legged",
        "detected",
        "d",
    )
    assert (report.condition_id, report.ts_init) == (CONDITION, harness.now)
    # Unique per report, and never an order id (four parts) the EXEC rebuild would parse.
    assert report.event_id == "recorder.replica-a.1000.report.1"
    assert second.event_id == "recorder.replica-a.1000.report.2"
    assert IntentIds.incarnation_of("recorder", report.event_id) is None
    assert harness.runtime.stats.reports == 2
    # Intent numbering is not disturbed by the reports.
    assert place.intent_id == "recorder.replica-a.1000.1"


def _doc_example() -> type[Strategy]:
    text = (REPO / "docs" / "strategies.md").read_text()
    match = re.search(r"## A complete example.*?```python\n(.*?)```", text, re.DOTALL)
    assert match is not None, "docs/strategies.md lost its example"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 30
    namespace: dict[str, Any] = {"__name__": "docs_strategies_example"}
    exec(compile(code, "docs/strategies.md", "exec"), namespace)
    found = [
        value
        for value in namespace.values()
        if isinstance(value, type) and issubclass(value, Strategy) and value is not Strategy
    ]
    assert len(found) == 1
    return found[0]


def test_the_example_in_docs_strategies_md_joins_the_bid_and_follows_it() -> None:
    harness = Harness(_doc_example())

    first = harness.book(YES, 400_000)
    again = harness.runtime.on_book(YES)  # still pending: no second order
    harness.runtime.on_execution(harness.order_event(first[0], "accepted"))
    harness.view.apply(
        BookDelta(
            event_id="d",
            ts_event=1,
            ts_init=1,
            asset_id=YES,
            condition_id=CONDITION,
            seq=2,
            epoch=1,
            changes=(LevelChange("BUY", 410_000, MICROS),),
            best_bid=410_000,
            best_ask=420_000,
        )
    )
    moved = harness.runtime.on_book(YES)

    assert [(i.action, i.price, i.size) for i in first] == [("place", 400_000, 5 * MICROS)]
    assert again == []
    assert [(i.action, i.target_intent_id) for i in moved] == [("cancel", first[0].intent_id)]


@pytest.mark.parametrize("bad", ["", "a.b"])
def test_id_parts_must_be_tokens(bad: str) -> None:
    with pytest.raises(ValueError, match="id part"):
        IntentIds(bad, "replica", 1)


async def test_the_publisher_sends_reports_to_exec_and_intents_to_intent_in_order() -> None:
    bus = MemoryBus()
    await bus.apply(load_definitions(STREAMS_FILE))
    publisher = IntentPublisher(bus, retry_interval_s=0.01)
    task = asyncio.create_task(publisher.run())

    class PlaceAndReport(Recorder):
        def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
            return (
                Report(kind="one_legged", limit="detected", detail="d", condition_id=CONDITION),
                *super().on_book(view, asset_id),
                Report(kind="one_legged", limit="gave_up", detail="no market"),
            )

    harness = Harness(PlaceAndReport)
    publisher.submit(harness.book(YES, 400_000))
    await publisher.flush()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    stored = {name: stream.messages for name, stream in bus.streams.items()}
    [intent] = stored["INTENT"]
    assert intent.subject == f"intent.recorder.{CONDITION}"
    assert intent.headers[MSG_ID_HEADER] == "recorder.replica-a.1000.1"
    assert [(m.subject, m.headers[MSG_ID_HEADER]) for m in stored["EXEC"]] == [
        (f"exec.recorder.risk.{CONDITION}", "recorder.replica-a.1000.report.1"),
        ("exec.recorder.risk._", "recorder.replica-a.1000.report.2"),
    ]
    reports = [execution_decoder.decode(m.data) for m in stored["EXEC"]]
    assert [(r.kind, r.limit) for r in reports if isinstance(r, RiskEvent)] == [
        ("one_legged", "detected"),
        ("one_legged", "gave_up"),
    ]
