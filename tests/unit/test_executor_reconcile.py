"""Reconciliation against an in-memory venue: unknown submits resolved (never resubmitted),
orders gone while we were away, fills we missed, orders nobody here knows, idempotent passes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from polybus.common.events import Event, Fill, OrderEvent, OrderIntent, PositionSnapshot, RiskEvent
from polybus.common.money import MICROS
from polybus.common.positions import PositionBook
from polybus.executor.config import ExecutorSettings
from polybus.executor.orders import OrderLedger
from polybus.executor.reconcile import Reconciler, fill_for_trade
from polybus.executor.venue import (
    CancelResult,
    SubmitResult,
    VenueOpenOrder,
    VenueOrder,
    VenueReport,
    VenueRestriction,
    VenueTrade,
    VenueUnavailable,
)

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND
PRICE = 450_000
SIZE = 10 * MICROS


class FakeVenue:
    """The venue as reconciliation sees it: open orders and trades the test sets, cancels
    that take orders off the book, and a record of every call. Submitting is a failure: a
    pass must never resubmit."""

    def __init__(self) -> None:
        self.open: dict[str, VenueOpenOrder] = {}
        self.venue_trades: list[VenueTrade] = []
        self.trades_after: list[int] = []
        self.canceled: list[str] = []
        self.unavailable = False

    @property
    def restriction(self) -> VenueRestriction | None:
        return None

    async def submit(self, orders: Sequence[VenueOrder]) -> list[SubmitResult]:
        raise AssertionError("reconciliation submitted an order")

    async def cancel(self, venue_order_ids: Sequence[str]) -> list[CancelResult]:
        results = []
        for venue_order_id in venue_order_ids:
            self.canceled.append(venue_order_id)
            found = self.open.pop(venue_order_id, None) is not None
            results.append(
                CancelResult(
                    venue_order_id=venue_order_id,
                    outcome="canceled" if found else "not_canceled",
                    reason="" if found else "not_found",
                )
            )
        return results

    async def cancel_all(self) -> list[CancelResult]:
        return await self.cancel(list(self.open))

    async def open_orders(self) -> list[VenueOpenOrder]:
        if self.unavailable:
            raise VenueUnavailable("timeout")
        return list(self.open.values())

    async def trades(self, after_ns: int = 0) -> list[VenueTrade]:
        if self.unavailable:
            raise VenueUnavailable("timeout")
        self.trades_after.append(after_ns)
        return [t for t in self.venue_trades if t.matched_at_ns > after_ns]

    async def reports(self) -> AsyncIterator[VenueReport]:
        return
        yield

    async def heartbeat(self, previous_id: str) -> str:
        return previous_id + "+"

    # -- arranging ---------------------------------------------------------------------------
    def rest(self, venue_order_id: str, size_matched: int = 0, **fields: Any) -> None:
        values: dict[str, Any] = {
            "venue_order_id": venue_order_id,
            "status": "LIVE",
            "condition_id": "0xc",
            "asset_id": "yes",
            "side": "BUY",
            "price": PRICE,
            "original_size": SIZE,
            "size_matched": size_matched,
            "order_type": "GTC",
            "created_at_ns": START,
        }
        values.update(fields)
        self.open[venue_order_id] = VenueOpenOrder(**values)

    def trade(self, trade_id: str, venue_order_id: str, size: int, **fields: Any) -> VenueTrade:
        values: dict[str, Any] = {
            "trade_id": trade_id,
            "venue_order_id": venue_order_id,
            "condition_id": "0xc",
            "asset_id": "yes",
            "side": "BUY",
            "price": PRICE,
            "size": size,
            "liquidity": "maker",
            "status": "MATCHED",
            "matched_at_ns": START + SECOND,
        }
        values.update(fields)
        trade = VenueTrade(**values)
        self.venue_trades.append(trade)
        return trade


class Executor:
    """The state a reconciler repairs, with the venue and a clock the test holds."""

    def __init__(self, *, cancel_unknown: bool = True) -> None:
        self.venue = FakeVenue()
        self.ledger = OrderLedger()
        self.positions = PositionBook()
        self.now = START
        self.reconciler = Reconciler(
            self.venue,
            self.ledger,
            self.positions,
            ExecutorSettings(cancel_unknown_orders_on_reconcile=cancel_unknown),
            lambda: self.now,
            unknown_grace_s=30.0,
            trades_margin_s=60.0,
        )

    def order(self, order_id: str, status: str, venue_order_id: str = "", **fields: Any) -> None:
        values: dict[str, Any] = {
            "event_id": f"e-{order_id}",
            "ts_event": self.now,
            "ts_init": self.now,
            "intent_id": order_id,
            "strategy_id": "mm",
            "action": "place",
            "condition_id": "0xc",
            "asset_id": "yes",
            "side": "BUY",
            "price": PRICE,
            "size": SIZE,
        }
        values.update(fields)
        self.ledger.submit(OrderIntent(**values), self.now)
        if status != "submitted":
            self.ledger.transition(order_id, status, self.now, venue_order_id=venue_order_id)  # type: ignore[arg-type]

    async def reconcile(self, after_s: float = 0) -> list[Event]:
        self.now += round(after_s * SECOND)
        return await self.reconciler.reconcile(self.now)


def of_type(events: list[Event], kind: type[Any]) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def statuses(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.order_id, e.status, e.filled_size) for e in of_type(events, OrderEvent)]


# -- unknown submits -----------------------------------------------------------------------
async def test_an_unknown_order_found_open_becomes_accepted_with_its_venue_id() -> None:
    executor = Executor()
    executor.order("o1", "unknown", venue_order_id="0xv1")
    executor.venue.rest("0xv1")
    events = await executor.reconcile(after_s=1)
    assert statuses(events) == [("o1", "accepted", 0)]
    assert executor.ledger.get("o1").venue_order_id == "0xv1"
    assert executor.venue.canceled == []
    assert executor.reconciler.unresolved == ()


async def test_an_unknown_order_without_a_venue_id_is_matched_to_its_one_look_alike() -> None:
    executor = Executor()
    executor.order("o1", "unknown")
    executor.venue.rest("0xv1")
    events = await executor.reconcile(after_s=1)
    assert statuses(events) == [("o1", "accepted", 0)]
    assert executor.ledger.get("o1").venue_order_id == "0xv1"
    assert executor.venue.canceled == []


async def test_an_unknown_order_found_in_trades_is_filled_with_its_fill() -> None:
    executor = Executor()
    executor.order("o1", "unknown", venue_order_id="0xv1", time_in_force="FOK")
    executor.venue.trade("t1", "0xv1", SIZE, liquidity="taker")
    events = await executor.reconcile(after_s=1)
    [fill] = of_type(events, Fill)
    assert (fill.fill_id, fill.order_id, fill.size, fill.settlement) == (
        "t1",
        "o1",
        SIZE,
        "MATCHED",
    )
    assert statuses(events) == [("o1", "filled", SIZE)]
    position = executor.positions.get("mm", "yes")
    assert position is not None
    assert position.provisional.size == SIZE


async def test_an_unknown_order_partly_filled_and_gone_is_canceled_with_its_fill() -> None:
    executor = Executor()
    executor.order("o1", "unknown", venue_order_id="0xv1", time_in_force="FAK")
    executor.venue.trade("t1", "0xv1", 4 * MICROS, liquidity="taker")
    events = await executor.reconcile(after_s=1)
    assert statuses(events) == [("o1", "canceled", 4 * MICROS)]


async def test_an_unknown_order_found_nowhere_waits_out_the_grace_then_is_canceled() -> None:
    executor = Executor()
    executor.order("o1", "unknown", venue_order_id="0xv1")
    early = await executor.reconcile(after_s=10)
    assert statuses(early) == []
    assert executor.ledger.get("o1").status == "unknown"
    assert executor.reconciler.unresolved == ("o1",)
    late = await executor.reconcile(after_s=20)
    [event] = of_type(late, OrderEvent)
    assert (event.status, event.reason, event.filled_size) == ("canceled", "not_found_at_venue", 0)
    assert len(executor.reconciler.unresolved) == 0


async def test_a_submit_still_in_flight_is_neither_judged_nor_canceled() -> None:
    executor = Executor()
    executor.order("o1", "submitted")
    executor.venue.rest("0xv1")  # the venue took it; its answer has not come back yet
    events = await executor.reconcile(after_s=60)
    assert events == []
    assert executor.ledger.get("o1").status == "submitted"
    assert executor.venue.canceled == []


# -- orders gone while we were away --------------------------------------------------------
async def test_a_working_order_the_venue_no_longer_has_is_canceled() -> None:
    executor = Executor()
    executor.order("o1", "accepted", venue_order_id="0xv1")
    events = await executor.reconcile(after_s=1)
    [event] = of_type(events, OrderEvent)
    assert (event.status, event.reason) == ("canceled", "not_open_at_venue")


async def test_a_gtd_order_gone_after_its_listed_expiry_is_expired() -> None:
    executor = Executor()
    executor.order("o1", "accepted", venue_order_id="0xv1", time_in_force="GTD")
    executor.venue.rest("0xv1", expires_at_ns=START + 600 * SECOND)
    assert statuses(await executor.reconcile(after_s=1)) == []
    del executor.venue.open["0xv1"]
    events = await executor.reconcile(after_s=600)
    assert statuses(events) == [("o1", "expired", 0)]


async def test_fills_while_away_become_fills_and_move_the_order() -> None:
    executor = Executor()
    executor.order("o1", "accepted", venue_order_id="0xv1")
    executor.venue.rest("0xv1", size_matched=4 * MICROS)
    executor.venue.trade("t1", "0xv1", 4 * MICROS)
    first = await executor.reconcile(after_s=1)
    assert [f.fill_id for f in of_type(first, Fill)] == ["t1:0xv1"]
    assert statuses(first) == [("o1", "partially_filled", 4 * MICROS)]
    del executor.venue.open["0xv1"]
    executor.venue.trade("t2", "0xv1", 6 * MICROS, matched_at_ns=START + 2 * SECOND)
    second = await executor.reconcile(after_s=1)
    assert [f.fill_id for f in of_type(second, Fill)] == ["t2:0xv1"]
    assert statuses(second) == [("o1", "filled", SIZE)]
    position = executor.positions.get("mm", "yes")
    assert position is not None
    assert position.provisional.size == SIZE


async def test_one_trade_filling_two_of_our_orders_is_two_fills() -> None:
    executor = Executor()
    executor.order("o1", "accepted", venue_order_id="0xv1")
    executor.order("o2", "accepted", venue_order_id="0xv2")
    executor.venue.trade("t1", "0xv1", SIZE)
    executor.venue.trade("t1", "0xv2", SIZE)
    events = await executor.reconcile(after_s=1)
    assert sorted(f.order_id for f in of_type(events, Fill)) == ["o1", "o2"]
    assert sorted(statuses(events)) == [("o1", "filled", SIZE), ("o2", "filled", SIZE)]
    position = executor.positions.get("mm", "yes")
    assert position is not None
    assert position.provisional.size == 2 * SIZE


# -- idempotence and settlement ------------------------------------------------------------
async def test_a_second_pass_over_the_same_venue_changes_nothing() -> None:
    executor = Executor()
    executor.order("o1", "accepted", venue_order_id="0xv1")
    executor.venue.rest("0xv1", size_matched=4 * MICROS)
    executor.venue.trade("t1", "0xv1", 4 * MICROS)
    await executor.reconcile(after_s=1)
    assert await executor.reconcile(after_s=1) == []


async def test_a_settlement_change_is_a_new_fill_and_confirms_the_position() -> None:
    executor = Executor()
    executor.order("o1", "accepted", venue_order_id="0xv1")
    executor.venue.trade("t1", "0xv1", SIZE)
    await executor.reconcile(after_s=1)
    executor.venue.venue_trades = [
        executor.venue.trade("t1", "0xv1", SIZE, status="CONFIRMED"),
    ]
    events = await executor.reconcile(after_s=1)
    [fill] = of_type(events, Fill)
    [snapshot] = of_type(events, PositionSnapshot)
    assert (fill.fill_id, fill.settlement, fill.event_id) == (
        "t1:0xv1",
        "CONFIRMED",
        "fill.t1:0xv1.CONFIRMED",
    )
    assert (snapshot.size, snapshot.provisional_size) == (SIZE, SIZE)
    assert statuses(events) == []  # the order was already filled


async def test_the_trades_window_starts_at_the_beginning_then_follows_the_passes() -> None:
    executor = Executor()
    await executor.reconcile(after_s=1)
    await executor.reconcile(after_s=100)
    executor.order("o1", "accepted", venue_order_id="0xv1")
    executor.venue.trade("t1", "0xv1", SIZE, matched_at_ns=executor.now - 5 * SECOND)
    await executor.reconcile(after_s=1000)  # the provisional fill arrives here
    await executor.reconcile(after_s=1000)
    first, second, third, fourth = executor.venue.trades_after
    assert first == 0  # everything the venue keeps
    assert second == START + 1 * SECOND - 60 * SECOND
    assert third == START + 101 * SECOND - 60 * SECOND
    # Still provisional: read from before its match time, whenever the last pass was.
    assert fourth == START + 96 * SECOND - SECOND


async def test_an_unreadable_venue_raises_and_changes_nothing() -> None:
    executor = Executor()
    executor.order("o1", "unknown", venue_order_id="0xv1")
    executor.venue.unavailable = True
    with pytest.raises(VenueUnavailable):
        await executor.reconcile(after_s=100)
    assert executor.ledger.get("o1").status == "unknown"
    executor.venue.unavailable = False
    assert executor.venue.trades_after == []
    events = await executor.reconcile(after_s=1)
    assert executor.venue.trades_after == [0]  # the failed pass did not count
    assert statuses(events) == [("o1", "canceled", 0)]


# -- what nobody here knows ----------------------------------------------------------------
async def test_an_order_nobody_here_knows_is_canceled_and_reported() -> None:
    executor = Executor()
    executor.venue.rest("0xforeign", side="SELL", price=600_000)
    events = await executor.reconcile(after_s=1)
    [report] = of_type(events, RiskEvent)
    assert executor.venue.canceled == ["0xforeign"]
    assert (report.kind, report.limit, report.strategy_id) == (
        "venue_mismatch",
        "unknown_venue_order",
        "",
    )
    assert "0xforeign SELL 10 @ 0.6" in report.detail
    assert report.detail.endswith("canceled")


async def test_with_the_switch_off_an_unknown_order_is_only_reported() -> None:
    executor = Executor(cancel_unknown=False)
    executor.venue.rest("0xforeign")
    events = await executor.reconcile(after_s=1)
    [report] = of_type(events, RiskEvent)
    assert executor.venue.canceled == []
    assert report.detail.endswith("left open")


async def test_trades_of_orders_nobody_knows_are_reported_once_and_not_guessed() -> None:
    executor = Executor()
    executor.venue.trade("t9", "0xforeign", SIZE)
    first = await executor.reconcile(after_s=1)
    [report] = of_type(first, RiskEvent)
    assert report.limit == "unknown_venue_trade"
    assert "t9:0xforeign" in report.detail
    assert of_type(first, Fill) == []
    assert list(executor.positions.positions()) == []
    assert await executor.reconcile(after_s=1) == []


# -- positions and fees --------------------------------------------------------------------
async def test_the_first_pass_publishes_every_position_then_only_changed_ones() -> None:
    executor = Executor()
    for order_id, asset in (("o1", "yes"), ("o2", "no")):
        executor.order(order_id, "accepted", venue_order_id=f"0x{order_id}", asset_id=asset)
        fill = fill_for_trade(
            executor.venue.trade(f"t-{order_id}", f"0x{order_id}", SIZE, asset_id=asset),
            order_id=order_id,
            strategy_id="mm",
            now_ns=executor.now,
        )
        assert fill is not None
        executor.positions.on_fill(fill)  # the user channel saw these before a restart
    executor.venue.trade("t3", "0xo1", MICROS, matched_at_ns=START + 2 * SECOND)
    first = await executor.reconcile(after_s=1)
    assert sorted(s.asset_id for s in of_type(first, PositionSnapshot)) == ["no", "yes"]
    executor.venue.trade("t4", "0xo2", MICROS, asset_id="no", matched_at_ns=START + 3 * SECOND)
    second = await executor.reconcile(after_s=1)
    assert [s.asset_id for s in of_type(second, PositionSnapshot)] == ["no"]


def test_a_taker_fill_pays_the_trade_fee_rate_and_a_maker_none() -> None:
    venue = FakeVenue()
    taker = venue.trade(
        "t1", "0xv1", 100 * MICROS, liquidity="taker", side="SELL", fee_rate_bps=700
    )
    maker = venue.trade("t2", "0xv2", 100 * MICROS, fee_rate_bps=700)
    taker_fill = fill_for_trade(taker, order_id="o1", strategy_id="mm", now_ns=START)
    maker_fill = fill_for_trade(maker, order_id="o2", strategy_id="mm", now_ns=START)
    assert taker_fill is not None
    assert maker_fill is not None
    # 100 shares x 0.07 x 0.45 x 0.55 = 1.7325 pUSD, taken from a SELL's proceeds.
    assert taker_fill.fee == 1_732_500
    assert maker_fill.fee == 0
    assert (
        fill_for_trade(
            venue.trade("t3", "0xv3", MICROS, status="SOMETHING_NEW"),
            order_id="o3",
            strategy_id="mm",
            now_ns=START,
        )
        is None
    )
