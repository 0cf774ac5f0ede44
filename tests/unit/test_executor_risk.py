"""The risk gate: one test per reason code, the breaker, the rolling window, the loss stop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from polybus.common.events import Fill, OrderEvent, OrderIntent, RiskEvent
from polybus.common.money import MICROS
from polybus.common.positions import PositionBook
from polybus.executor.config import RiskLimitSettings, RiskSettings
from polybus.executor.orders import OrderLedger
from polybus.executor.risk import NANOS_PER_DAY, NANOS_PER_MINUTE, Decision, MarketState, RiskGate

SECOND = 1_000_000_000
START = 20_000 * NANOS_PER_DAY + 12 * 3600 * SECOND
"""Noon UTC on some day: the controlled clock starts here."""

UNLIMITED = RiskLimitSettings()
LIVE = MarketState(
    condition_id="0xc",
    asset_id="yes",
    tick_size=10_000,
    min_order_size=5 * MICROS,
    book_state="live",
    best_bid=440_000,
    best_ask=460_000,
)


def place(intent_id: str = "i1", **changes: Any) -> OrderIntent:
    fields: dict[str, Any] = {
        "event_id": f"e-{intent_id}",
        "ts_event": START,
        "ts_init": START,
        "intent_id": intent_id,
        "strategy_id": "mm",
        "action": "place",
        "condition_id": "0xc",
        "asset_id": "yes",
        "side": "BUY",
        "price": 450_000,
        "size": 10 * MICROS,
    }
    fields.update(changes)
    return OrderIntent(**fields)


class Harness:
    """The gate with its inputs, and a clock the test moves."""

    def __init__(self, strategy: RiskLimitSettings = UNLIMITED, **settings: Any) -> None:
        self.gate = RiskGate(RiskSettings(strategy=strategy, **settings))
        self.ledger = OrderLedger()
        self.positions = PositionBook()
        self.marks: dict[str, int] = {}
        self.now = START

    def check(
        self,
        intent: OrderIntent,
        market: MarketState | None = LIVE,
        lease_revision: int | None = None,
    ) -> Decision:
        return self.gate.check(
            intent,
            market=market,
            ledger=self.ledger,
            positions=self.positions,
            marks=self.marks,
            now_ns=self.now,
            lease_revision=lease_revision,
        )

    def accept(self, intent: OrderIntent) -> None:
        decision = self.check(intent)
        assert decision.accepted, decision
        self.ledger.submit(intent, self.now)

    def fill(self, fill_id: str, side: str, price: int, size: int) -> None:
        self.positions.on_fill(
            Fill(
                event_id=fill_id,
                ts_event=self.now,
                ts_init=self.now,
                fill_id=fill_id,
                order_id="o",
                strategy_id="mm",
                condition_id="0xc",
                asset_id="yes",
                side=side,  # type: ignore[arg-type]
                price=price,
                size=size,
                settlement="CONFIRMED",
            )
        )


def rejected(decision: Decision, reason: str) -> OrderEvent:
    assert not decision.accepted
    assert decision.reason == reason
    [event] = [e for e in decision.events if isinstance(e, OrderEvent)]
    assert (event.status, event.reason, event.order_id) == ("rejected", reason, "i1")
    assert event.detail
    return event


def risk_events(decision: Decision) -> list[RiskEvent]:
    return [e for e in decision.events if isinstance(e, RiskEvent)]


def test_an_intent_within_every_limit_is_accepted_without_events() -> None:
    harness = Harness(strategy=RiskSettings().strategy)
    assert harness.check(place()) == Decision(accepted=True)


@pytest.mark.parametrize(
    ("changes", "market", "reason"),
    [
        ({"price": 0}, LIVE, "price_out_of_range"),
        ({"price": MICROS}, LIVE, "price_out_of_range"),
        ({"price": 995_000}, LIVE, "price_out_of_range"),
        ({"price": 455_000}, LIVE, "off_tick"),
        ({"size": 4 * MICROS}, LIVE, "below_min_size"),
        ({}, replace(LIVE, book_state="stale"), "book_not_live"),
        ({}, replace(LIVE, book_state="resyncing"), "book_not_live"),
        ({}, None, "unknown_market"),
    ],
)
def test_venue_rules_are_checked_against_the_current_market(
    changes: Mapping[str, Any], market: MarketState | None, reason: str
) -> None:
    rejected(Harness().check(place(**changes), market=market), reason)


def test_the_current_tick_decides() -> None:
    finer = replace(LIVE, tick_size=1_000)
    assert Harness().check(place(price=455_000), market=finer).accepted
    rejected(Harness().check(place(price=455_500), market=finer), "off_tick")


def test_an_old_intent_is_refused() -> None:
    harness = Harness(RiskLimitSettings(max_intent_age_s=2.0))
    harness.now = START + 2 * SECOND
    assert harness.check(place()).accepted
    harness.now += 1
    rejected(harness.check(place()), "intent_too_old")


def test_an_intent_made_under_a_lease_revision_that_is_not_current_is_refused() -> None:
    harness = Harness()
    assert harness.check(place(lease_revision=7, partition=3), lease_revision=7).accepted
    event = rejected(harness.check(place(lease_revision=6), lease_revision=7), "stale_lease")
    assert "6" in event.detail
    rejected(harness.check(place(lease_revision=6), lease_revision=None), "stale_lease")
    assert harness.check(place(lease_revision=0), lease_revision=7).accepted


def test_max_order_notional_per_strategy_with_an_override_and_for_the_account() -> None:
    limits = RiskLimitSettings(max_order_notional="4.5")
    harness = Harness(limits)
    assert harness.check(place()).accepted  # 0.45 x 10 = 4.5
    decision = harness.check(place(size=11 * MICROS))
    rejected(decision, "max_order_notional")
    [hit] = risk_events(decision)
    assert (hit.kind, hit.limit, hit.strategy_id) == ("limit_hit", "max_order_notional", "mm")
    lifted = Harness(limits, strategies={"mm": RiskLimitSettings(max_order_notional="unlimited")})
    assert lifted.check(place(size=11 * MICROS)).accepted
    account = Harness(account=RiskLimitSettings(max_order_notional="4"))
    decision = account.check(place())
    rejected(decision, "max_order_notional")
    assert risk_events(decision)[0].strategy_id == ""


def test_max_open_orders_counts_open_orders_and_not_the_one_a_replace_replaces() -> None:
    harness = Harness(RiskLimitSettings(max_open_orders=2))
    harness.accept(place("a"))
    harness.accept(place("b"))
    rejected(harness.check(place()), "max_open_orders")
    assert harness.check(place(action="replace", target_intent_id="a")).accepted
    harness.ledger.transition("a", "canceled", harness.now)
    assert harness.check(place()).accepted


def test_max_position_per_market_counts_held_shares_and_open_buys() -> None:
    harness = Harness(RiskLimitSettings(max_position_market_shares="30"))
    harness.fill("t1", "BUY", 400_000, 15 * MICROS)
    harness.accept(place("a", size=5 * MICROS))
    assert harness.check(place(size=10 * MICROS)).accepted  # 15 + 5 + 10 = 30
    rejected(harness.check(place(size=11 * MICROS)), "max_position_market")
    # A sell only reduces the position: never refused by position limits.
    assert harness.check(place(side="SELL", size=50 * MICROS)).accepted
    # Another market has its own allowance.
    other = replace(LIVE, condition_id="0xd", asset_id="no")
    assert harness.check(place(condition_id="0xd", asset_id="no"), market=other).accepted


def test_max_position_per_market_in_notional_at_cost() -> None:
    harness = Harness(RiskLimitSettings(max_position_market_notional="10"))
    harness.fill("t1", "BUY", 400_000, 10 * MICROS)  # 4 pUSD at cost
    assert harness.check(place(price=600_000, size=10 * MICROS)).accepted  # 4 + 6
    rejected(harness.check(place(price=610_000, size=10 * MICROS)), "max_position_market")


def test_max_position_total_spans_markets() -> None:
    harness = Harness(RiskLimitSettings(max_position_total_shares="20"))
    other = replace(LIVE, condition_id="0xd", asset_id="no")
    harness.accept(place("a", condition_id="0xd", asset_id="no", size=15 * MICROS))
    rejected(harness.check(place(size=6 * MICROS), market=other), "max_position_total")
    harness2 = Harness(RiskLimitSettings(max_position_total_notional="5"))
    harness2.accept(place("a", size=10 * MICROS))  # 4.5
    rejected(harness2.check(place(size=5 * MICROS)), "max_position_total")


def test_the_per_minute_notional_is_a_rolling_window_on_the_passed_clock() -> None:
    harness = Harness(RiskLimitSettings(max_notional_per_minute="9"))
    harness.accept(place("a"))  # 4.5 at t0
    harness.now += 30 * SECOND
    harness.accept(place("b"))  # 9 within the minute
    harness.now += 29 * SECOND
    rejected(harness.check(place()), "max_notional_per_minute")
    harness.now = START + NANOS_PER_MINUTE  # "a" is exactly a minute old: out of the window
    assert harness.check(place("c")).accepted
    rejected(harness.check(place()), "max_notional_per_minute")


def test_refused_intents_do_not_count_in_the_window() -> None:
    harness = Harness(RiskLimitSettings(max_notional_per_minute="5", max_order_notional="4.5"))
    rejected(harness.check(place(size=20 * MICROS)), "max_order_notional")
    assert harness.check(place()).accepted


def test_the_reject_burst_breaker_halts_the_strategy_until_resume() -> None:
    harness = Harness(RiskLimitSettings(reject_burst_count=3, reject_burst_window_s=10.0))
    assert harness.gate.on_venue_reject("mm", harness.now) == []
    harness.now += 9 * SECOND
    assert harness.gate.on_venue_reject("mm", harness.now) == []
    harness.now += 2 * SECOND  # the first reject left the 10 s window
    assert harness.gate.on_venue_reject("mm", harness.now) == []
    harness.now += 1 * SECOND
    [opened] = harness.gate.on_venue_reject("mm", harness.now)
    assert (opened.kind, opened.limit, opened.strategy_id) == ("halt", "breaker_open", "mm")
    assert harness.gate.is_halted("mm")
    rejected(harness.check(place(ts_init=harness.now)), "breaker_open")
    assert harness.gate.on_venue_reject("mm", harness.now) == []  # already open: one event
    other = harness.check(place(strategy_id="other", ts_init=harness.now))
    assert other.accepted
    resumed = harness.gate.resume("mm", harness.now)
    assert (resumed.kind, resumed.strategy_id) == ("resume", "mm")
    assert harness.check(place(ts_init=harness.now)).accepted


def test_an_operator_halt_of_one_strategy_or_all() -> None:
    harness = Harness()
    harness.gate.halt("mm", "maintenance", harness.now)
    rejected(harness.check(place()), "halted")
    assert harness.check(place(strategy_id="other")).accepted
    everything = harness.gate.halt(None, "", harness.now)
    assert (everything.kind, everything.strategy_id) == ("halt", "")
    rejected(harness.check(place(strategy_id="other")), "halted")
    harness.gate.resume(None, harness.now)
    harness.gate.resume("mm", harness.now)
    assert harness.check(place()).accepted


def test_cancels_are_never_refused() -> None:
    harness = Harness(RiskLimitSettings(max_open_orders=0, max_intent_age_s=1.0))
    harness.gate.halt(None, "", harness.now)
    harness.now += 10 * SECOND
    cancel = place(action="cancel", target_intent_id="a", lease_revision=3, price=0, size=0)
    assert harness.check(cancel, market=None, lease_revision=4) == Decision(accepted=True)


def test_the_daily_loss_stop_counts_realised_and_unrealised_and_resets_at_utc_midnight() -> None:
    harness = Harness(RiskLimitSettings(daily_loss_stop="3"))
    harness.fill("t1", "BUY", 500_000, 10 * MICROS)
    harness.marks["yes"] = 500_000
    assert harness.check(place()).accepted  # the day's baseline: 0
    harness.fill("t2", "SELL", 400_000, 5 * MICROS)  # realised -0.5
    harness.marks["yes"] = 300_000  # unrealised -1.0 on the other 5
    assert harness.check(place()).accepted  # -1.5
    harness.marks["yes"] = 0  # unrealised -2.5: -3 in total
    decision = harness.check(place())
    rejected(decision, "loss_stop")
    [stop] = risk_events(decision)
    assert (stop.kind, stop.limit, stop.strategy_id) == ("halt", "loss_stop", "mm")
    harness.marks["yes"] = 500_000  # even if the loss recovers, the stop holds for the day
    assert not risk_events(harness.check(place()))
    rejected(harness.check(place()), "loss_stop")
    harness.now = (START // NANOS_PER_DAY + 1) * NANOS_PER_DAY  # UTC midnight
    decision = harness.check(place(ts_init=harness.now))
    assert decision.accepted
    [resumed] = risk_events(decision)
    assert (resumed.kind, resumed.limit) == ("resume", "loss_stop")


def test_loss_stops_are_evaluated_on_a_timer_too() -> None:
    harness = Harness(RiskLimitSettings(daily_loss_stop="1"))
    harness.fill("t1", "BUY", 500_000, 10 * MICROS)
    harness.marks["yes"] = 500_000
    assert harness.check(place()).accepted
    harness.marks["yes"] = 400_000
    [stop] = harness.gate.update_loss_stops(harness.positions, harness.marks, harness.now)
    assert (stop.limit, stop.strategy_id) == ("loss_stop", "mm")
    assert harness.gate.is_halted("mm")
