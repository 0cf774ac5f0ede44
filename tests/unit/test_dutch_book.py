"""dutch_book on scripted books: real opportunities fire, sized to depth and budget; fee-negative,
stale, cross-window and phantom (augmented, partly seen) ones never do; one-legged fills are
hedged or unwound, and reported (found, then what came of it)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from polybus.common.fees import FeeSchedule, taker_fee
from polybus.common.money import MICROS
from polybus.strategy.strategies import DutchBook, DutchBookSettings
from tests.unit.strategy_scripts import SHARES, FakePortfolio, Market, places, reports

YES, NO = "y1", "n1"
CONDITION = "0xbin"


def arbitrage(**overrides: Any) -> tuple[DutchBook, FakePortfolio, Market]:
    portfolio = FakePortfolio()
    strategy = DutchBook(DutchBookSettings(**overrides), portfolio)
    return strategy, portfolio, Market(strategy)


def binary(
    market: Market,
    yes_ask: tuple[int, int],
    no_ask: tuple[int, int],
    *,
    fee_rate: int = 0,
    yes_bid: tuple[int, int] = (100_000, 100 * SHARES),
    no_bid: tuple[int, int] = (100_000, 100 * SHARES),
) -> list[Any]:
    market.info(CONDITION, [(YES, "Yes"), (NO, "No")], fee_rate=fee_rate)
    market.snapshot(YES, [yes_bid], [yes_ask])
    return market.snapshot(NO, [no_bid], [no_ask])


def test_buys_both_legs_sized_to_the_smaller_depth() -> None:
    _, _, market = arbitrage()

    actions = binary(market, (450_000, 100 * SHARES), (500_000, 40 * SHARES))

    assert [(p.asset_id, p.side, p.price, p.size, p.time_in_force) for p in places(actions)] == [
        (YES, "BUY", 450_000, 40 * SHARES, "FAK"),
        (NO, "BUY", 500_000, 40 * SHARES, "FAK"),
    ]
    assert {p.reason for p in places(actions)} == {"complete_set.buy"}


def test_size_capped_by_max_notional_and_position_budget() -> None:
    _, portfolio, market = arbitrage(max_notional="10", time_in_force="FOK")
    actions = binary(market, (450_000, 100 * SHARES), (500_000, 100 * SHARES))
    # 10 pUSD / 0.95 per set = 10.526..., rounded down to the 2-decimal share grid.
    assert {(p.size, p.time_in_force) for p in places(actions)} == {(10_520_000, "FOK")}

    _, portfolio, market = arbitrage(max_position_market="30")
    portfolio.positions[NO] = 22 * SHARES
    actions = binary(market, (450_000, 100 * SHARES), (500_000, 100 * SHARES))
    assert {p.size for p in places(actions)} == {8 * SHARES}


def test_fires_only_at_or_below_one_minus_the_edge() -> None:
    _, _, market = arbitrage(min_edge_ticks=2)
    # 0.45 + 0.54 = 0.99: one tick of edge, two required.
    assert binary(market, (450_000, 50 * SHARES), (540_000, 50 * SHARES)) == []
    # 0.45 + 0.53 = 1 - 2 ticks exactly: the bound is inclusive.
    actions = market.delta(NO, ("SELL", 540_000, 0), ("SELL", 530_000, 50 * SHARES))
    assert [(p.asset_id, p.price) for p in places(actions)] == [(YES, 450_000), (NO, 530_000)]


def test_fees_can_take_the_whole_edge() -> None:
    # 0.48 + 0.50 = 0.98 looks like 2 ticks, but a 7% taker fee costs ~3.6% of the shares.
    _, _, market = arbitrage()
    assert binary(market, (480_000, 50 * SHARES), (500_000, 50 * SHARES), fee_rate=70_000) == []
    _, _, market = arbitrage()
    actions = binary(market, (450_000, 50 * SHARES), (450_000, 50 * SHARES), fee_rate=70_000)
    assert len(places(actions)) == 2


def test_stale_leg_blocks_the_arbitrage() -> None:
    _, _, market = arbitrage()
    market.info(CONDITION, [(YES, "Yes"), (NO, "No")])
    market.snapshot(NO, [(100_000, SHARES * 100)], [(500_000, 50 * SHARES)])
    market.status(NO, "stale")
    assert market.snapshot(YES, [(100_000, 100 * SHARES)], [(450_000, 50 * SHARES)]) == []


def test_legs_outside_one_batch_window_or_too_old_do_not_fire() -> None:
    _, _, market = arbitrage(batch_window_ms=250, max_book_age_ms=2_000)
    market.info(CONDITION, [(YES, "Yes"), (NO, "No")])
    market.snapshot(NO, [(100_000, SHARES * 100)], [(500_000, 50 * SHARES)])
    market.advance(251)
    assert market.snapshot(YES, [(100_000, 100 * SHARES)], [(450_000, 50 * SHARES)]) == []
    # Both books updated within the window: now it fires.
    assert len(places(market.delta(NO, ("SELL", 500_000, 60 * SHARES)))) == 2


def test_attempts_per_market_per_minute_are_capped() -> None:
    _strategy, _, market = arbitrage(max_attempts_per_minute=2, leg_timeout_ms=100)
    fired = [len(places(binary(market, (450_000, 50 * SHARES), (500_000, 50 * SHARES))))]
    for _ in range(3):
        market.advance(200)
        market.timer()  # nothing filled: the attempt is over
        fired.append(len(places(market.delta(YES, ("SELL", 450_000, 50 * SHARES)))))
    assert fired == [2, 2, 0, 0]
    market.advance(60_000)
    market.timer()
    # A minute on, with both books fresh again (the old NO book alone would be too old).
    assert market.delta(YES, ("SELL", 450_000, 50 * SHARES)) == []
    assert len(places(market.delta(NO, ("SELL", 500_000, 50 * SHARES)))) == 2


def test_one_attempt_at_a_time_while_legs_are_open() -> None:
    _, _, market = arbitrage()
    assert len(places(binary(market, (450_000, 50 * SHARES), (500_000, 50 * SHARES)))) == 2
    assert market.delta(YES, ("SELL", 450_000, 60 * SHARES)) == []


def test_sells_held_sets_above_one_plus_the_edge() -> None:
    _, portfolio, market = arbitrage()
    portfolio.positions.update({YES: 30 * SHARES, NO: 50 * SHARES})
    actions = binary(
        market,
        (900_000, 10 * SHARES),
        (900_000, 10 * SHARES),
        yes_bid=(550_000, 100 * SHARES),
        no_bid=(500_000, 100 * SHARES),
    )
    assert [(p.asset_id, p.side, p.price, p.size) for p in places(actions)] == [
        (YES, "SELL", 550_000, 30 * SHARES),
        (NO, "SELL", 500_000, 30 * SHARES),
    ]


def test_without_inventory_a_rich_bid_side_is_no_trade() -> None:
    _, _, market = arbitrage()
    actions = binary(
        market,
        (900_000, 10 * SHARES),
        (900_000, 10 * SHARES),
        yes_bid=(550_000, 100 * SHARES),
        no_bid=(500_000, 100 * SHARES),
    )
    assert actions == []


# -- neg-risk -------------------------------------------------------------------------------
EVENT = "0xevent"


def event(market: Market, asks: list[int], *, count: int | None = None, **info: Any) -> list[Any]:
    actions: list[Any] = []
    for index in range(len(asks)):
        market.info(
            f"0xm{index}",
            [(f"yes{index}", "Yes"), (f"no{index}", "No")],
            neg_risk_id=EVENT,
            market_count=len(asks) if count is None else count,
            **info,
        )
    for index, ask in enumerate(asks):
        # NO books priced so no binary arbitrage exists inside one market.
        market.snapshot(f"no{index}", [(10_000, SHARES)], [(990_000, SHARES)])
        actions = market.snapshot(f"yes{index}", [(10_000, SHARES)], [(ask, 20 * SHARES)])
    return actions


def test_neg_risk_buys_every_named_yes_when_the_sum_is_below_one() -> None:
    _, _, market = arbitrage()
    actions = event(market, [300_000, 300_000, 390_000])
    assert sorted((p.asset_id, p.price, p.size) for p in places(actions)) == [
        ("yes0", 300_000, 20 * SHARES),
        ("yes1", 300_000, 20 * SHARES),
        ("yes2", 390_000, 20 * SHARES),
    ]


def test_neg_risk_sum_is_exact_at_the_bound() -> None:
    _, _, market = arbitrage()
    assert event(market, [330_000, 330_000, 340_000]) == []  # exactly 1.00
    _, _, market = arbitrage()
    assert event(market, [330_000, 330_000, 330_000]) != []  # exactly 0.99


def test_augmented_event_is_never_a_complete_set() -> None:
    _, _, market = arbitrage()
    assert event(market, [200_000, 200_000, 200_000], augmented=True) == []


def test_event_seen_in_part_is_never_a_complete_set() -> None:
    _, _, market = arbitrage()
    assert event(market, [200_000, 200_000, 200_000], count=4) == []
    _, _, market = arbitrage()
    assert event(market, [200_000, 200_000, 200_000], count=0) == []
    _, _, market = arbitrage(require_event_size=False)
    assert len(places(event(market, [200_000, 200_000, 200_000], count=0))) == 3


# -- one-legged fills -----------------------------------------------------------------------
def one_legged(**overrides: Any) -> tuple[Market, list[Any]]:
    _, _, market = arbitrage(leg_timeout_ms=500, one_legged_max_loss="0.03", **overrides)
    legs = places(binary(market, (450_000, 50 * SHARES), (500_000, 50 * SHARES)))
    yes_leg = next(p for p in legs if p.asset_id == YES)
    assert market.fill(yes_leg) == []  # the other leg may still come
    market.advance(100)
    assert market.timer() == []
    market.advance(500)
    return market, market.timer()


def test_one_legged_fill_is_hedged_within_the_cap() -> None:
    market, actions = one_legged(one_legged_policy="hedge")
    [hedge] = places(actions)
    assert (hedge.asset_id, hedge.side, hedge.price, hedge.size, hedge.reason) == (
        NO,
        "BUY",
        500_000,
        50 * SHARES,
        "one_legged.hedge",
    )
    [found] = reports(actions)
    assert (found.kind, found.limit, found.condition_id) == ("one_legged", "detected", CONDITION)
    assert "policy hedge" in found.detail
    assert f"{YES} 50" in found.detail
    assert f"{NO} 0" in found.detail

    market.fill(hedge)
    market.advance(600)
    actions = market.timer()
    [outcome] = reports(actions)
    assert (outcome.kind, outcome.limit, len(actions)) == ("one_legged", "hedged", 1)


def test_hedge_past_the_cap_falls_back_to_unwinding() -> None:
    _, _, market = arbitrage(leg_timeout_ms=500, one_legged_max_loss="0.03")
    legs = places(binary(market, (450_000, 50 * SHARES), (500_000, 50 * SHARES)))
    market.fill(next(p for p in legs if p.asset_id == YES))
    market.delta(NO, ("SELL", 500_000, 0), ("SELL", 600_000, 50 * SHARES))
    market.advance(600)
    actions = market.timer()
    # 0.45 + 0.60 > 1.03: sell the YES back, no lower than 0.45 - 0.03.
    assert [(p.asset_id, p.side, p.price, p.size, p.reason) for p in places(actions)] == [
        (YES, "SELL", 420_000, 50 * SHARES, "one_legged.unwind")
    ]
    [found] = reports(actions)
    assert found.limit == "detected"
    assert "policy unwind" in found.detail


def test_unwind_policy_and_its_fill_closes_the_attempt() -> None:
    market, actions = one_legged(one_legged_policy="unwind")
    [unwind] = places(actions)
    assert (unwind.asset_id, unwind.side, unwind.price, unwind.reason) == (
        YES,
        "SELL",
        420_000,
        "one_legged.unwind",
    )
    market.fill(unwind)
    market.advance(600)
    actions = market.timer()
    [outcome] = reports(actions)
    assert (outcome.kind, outcome.limit, len(actions)) == ("one_legged", "unwound", 1)
    # The attempt is over: the market may be traded again, on books of one batch.
    market.delta(YES, ("SELL", 450_000, 50 * SHARES))
    assert len(places(market.delta(NO, ("SELL", 500_000, 50 * SHARES)))) == 2


def test_failed_settlement_undoes_a_leg() -> None:
    _, _, market = arbitrage(leg_timeout_ms=500)
    legs = places(binary(market, (450_000, 50 * SHARES), (500_000, 50 * SHARES)))
    for leg in legs:
        market.fill(leg, fill_id=f"t.{leg.asset_id}")
    no_leg = next(p for p in legs if p.asset_id == NO)
    market.fill(no_leg, fill_id=f"t.{NO}", settlement="FAILED")
    market.advance(600)
    assert [(p.asset_id, p.reason) for p in places(market.timer())] == [(NO, "one_legged.hedge")]


# -- properties -----------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    yes=st.integers(1, 99),
    no=st.integers(1, 99),
    rate=st.sampled_from([0, 30_000, 70_000]),
    depth=st.integers(5, 200),
)
def test_never_fires_when_the_exact_cost_with_fees_is_above_the_bound(
    yes: int, no: int, rate: int, depth: int
) -> None:
    _, _, market = arbitrage()
    asks = (yes * 10_000, no * 10_000)
    actions = places(
        binary(market, (asks[0], depth * SHARES), (asks[1], depth * SHARES), fee_rate=rate)
    )
    schedule = FeeSchedule(rate=rate)
    if not actions:
        return
    size = actions[0].size
    assert {p.size for p in actions} == {size}
    assert size <= depth * SHARES
    kept = size - max(taker_fee("BUY", price, size, schedule) for price in asks)
    # The set that pays (what is left of the shares) beats the cost by at least a tick a set.
    assert kept * MICROS - sum(asks) * size >= 10_000 * size


def test_policy_is_tried_a_bounded_number_of_times() -> None:
    _, _, market = arbitrage(leg_timeout_ms=500, one_legged_policy="unwind", one_legged_max_tries=2)
    legs = places(binary(market, (450_000, 50 * SHARES), (500_000, 50 * SHARES)))
    market.fill(next(p for p in legs if p.asset_id == YES))
    tries = []
    told = []
    for _ in range(4):
        market.advance(600)
        actions = market.timer()
        tries.append([p.reason for p in places(actions)])
        told.append([r.limit for r in reports(actions)])
    # Nobody bids within the cap: two unwinds, then the attempt is given up (and the set freed).
    assert tries == [["one_legged.unwind"], ["one_legged.unwind"], [], []]
    assert told == [["detected"], [], ["gave_up"], []]


def test_uneven_fill_below_the_minimum_size_is_kept() -> None:
    _, _, market = arbitrage(leg_timeout_ms=500)
    legs = places(binary(market, (450_000, 50 * SHARES), (500_000, 50 * SHARES)))
    for leg in legs:
        market.fill(leg, leg.size - (3 * SHARES if leg.asset_id == NO else 0))
    market.advance(600)
    # 3 shares short on NO, under the 5-share minimum: nothing can be traded, only told.
    actions = market.timer()
    [kept] = reports(actions)
    assert (kept.kind, kept.limit, len(actions)) == ("one_legged", "leftover_too_small", 1)
    assert f"{NO} 47" in kept.detail
