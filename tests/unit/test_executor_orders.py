"""The order ledger: the DESIGN §3 state machine, one OrderEvent per transition."""

from __future__ import annotations

import pytest

from polybus.common.events import OrderIntent, OrderStatus
from polybus.common.money import MICROS
from polybus.executor.orders import IllegalTransition, OrderLedger, UnknownOrder, reject_intent

ALL_STATES: tuple[OrderStatus, ...] = (
    "submitted",
    "accepted",
    "rejected",
    "partially_filled",
    "filled",
    "canceled",
    "expired",
    "unknown",
)


def intent(intent_id: str = "i1", size: int = 10 * MICROS) -> OrderIntent:
    return OrderIntent(
        event_id=f"e-{intent_id}",
        ts_event=1,
        ts_init=1,
        intent_id=intent_id,
        strategy_id="mm",
        action="place",
        condition_id="0xc",
        asset_id="yes",
        side="BUY",
        price=450_000,
        size=size,
    )


def submitted(ledger: OrderLedger | None = None) -> OrderLedger:
    ledger = ledger or OrderLedger()
    ledger.submit(intent(), now_ns=10)
    return ledger


def test_submit_produces_the_submitted_event() -> None:
    ledger = OrderLedger()
    event = ledger.submit(intent(), now_ns=10)
    assert (event.order_id, event.status, event.size, event.causation_id) == (
        "i1",
        "submitted",
        10 * MICROS,
        "e-i1",
    )
    assert [order.order_id for order in ledger.open_orders("mm")] == ["i1"]
    with pytest.raises(IllegalTransition):
        ledger.submit(intent(), now_ns=11)


def test_the_happy_path_accepted_partially_filled_filled() -> None:
    ledger = submitted()
    accepted = ledger.transition("i1", "accepted", 11, venue_order_id="0xv")
    assert (accepted.status, accepted.venue_order_id) == ("accepted", "0xv")
    partial = ledger.on_fill("i1", 4 * MICROS, 12)
    assert (partial.status, partial.filled_size) == ("partially_filled", 4 * MICROS)
    more = ledger.on_fill("i1", 2 * MICROS, 13)
    assert (more.status, more.filled_size) == ("partially_filled", 6 * MICROS)
    done = ledger.on_fill("i1", 4 * MICROS, 14)
    assert (done.status, done.filled_size) == ("filled", 10 * MICROS)
    assert list(ledger.open_orders()) == []
    assert len({accepted.event_id, partial.event_id, more.event_id, done.event_id}) == 4


@pytest.mark.parametrize("terminal", ["filled", "canceled", "expired", "rejected"])
@pytest.mark.parametrize("target", ALL_STATES)
def test_a_terminal_order_never_changes(terminal: OrderStatus, target: OrderStatus) -> None:
    ledger = submitted()
    ledger.transition("i1", terminal, 11)
    with pytest.raises(IllegalTransition):
        ledger.transition("i1", target, 12)
    assert ledger.get("i1").status == terminal


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (["accepted"], "submitted"),
        (["accepted"], "rejected"),
        (["accepted"], "accepted"),
        (["unknown"], "unknown"),
        (["unknown"], "submitted"),
        (["accepted", "unknown"], "submitted"),
    ],
)
def test_illegal_transitions_are_refused_and_change_nothing(
    path: list[OrderStatus], refused: OrderStatus
) -> None:
    ledger = submitted()
    for status in path:
        ledger.transition("i1", status, 11)
    with pytest.raises(IllegalTransition):
        ledger.transition("i1", refused, 12)
    assert ledger.get("i1").status == path[-1]


@pytest.mark.parametrize(
    "resolved", ["accepted", "rejected", "partially_filled", "filled", "canceled", "expired"]
)
def test_unknown_resolves_to_whatever_the_venue_reports(resolved: OrderStatus) -> None:
    ledger = submitted()
    ledger.transition("i1", "unknown", 11, reason="submit_timeout")
    assert [order.order_id for order in ledger.open_orders()] == ["i1"]
    filled = 3 * MICROS if resolved == "partially_filled" else None
    event = ledger.transition("i1", resolved, 12, filled_size=filled, venue_order_id="0xv")
    assert (event.status, event.venue_order_id) == (resolved, "0xv")


def test_filled_size_never_goes_backwards_or_past_the_order() -> None:
    ledger = submitted()
    ledger.on_fill("i1", 5 * MICROS, 11)
    with pytest.raises(IllegalTransition):
        ledger.transition("i1", "partially_filled", 12, filled_size=4 * MICROS)
    with pytest.raises(IllegalTransition):
        ledger.transition("i1", "partially_filled", 12, filled_size=5 * MICROS)
    with pytest.raises(IllegalTransition):
        ledger.transition("i1", "filled", 12, filled_size=11 * MICROS)
    assert ledger.get("i1").filled_size == 5 * MICROS
    canceled = ledger.transition("i1", "canceled", 13)
    assert (canceled.filled_size, ledger.get("i1").remaining_size) == (5 * MICROS, 5 * MICROS)


def test_an_order_that_is_not_there_and_forgetting_finished_orders() -> None:
    ledger = submitted()
    with pytest.raises(UnknownOrder):
        ledger.transition("nope", "accepted", 11)
    with pytest.raises(IllegalTransition):
        ledger.forget("i1")
    ledger.transition("i1", "accepted", 11, venue_order_id="0xv")
    assert ledger.find_by_venue_id("0xv") is ledger.get("i1")
    ledger.transition("i1", "canceled", 12)
    ledger.forget("i1")
    assert "i1" not in ledger


def test_a_refused_intent_becomes_a_rejected_event_naming_the_reason() -> None:
    event = reject_intent(intent(), "off_tick", "price 0.455 is not on tick 0.01", 20)
    assert (event.order_id, event.status, event.reason) == ("i1", "rejected", "off_tick")
    assert event.detail == "price 0.455 is not on tick 0.01"
    assert event.causation_id == "e-i1"


def test_a_restored_order_is_open_until_its_terminal_event_is_restored() -> None:
    source = submitted()
    events = [
        source.transition("i1", "accepted", 11, venue_order_id="0xv"),
        source.transition("i1", "canceled", 12),
    ]
    rebuilt = OrderLedger()
    rebuilt.restore(events[0])
    assert [order.order_id for order in rebuilt.open_orders()] == ["i1"]
    rebuilt.restore(events[1])
    assert list(rebuilt.open_orders()) == []
    assert rebuilt.get("i1").status == "canceled"
