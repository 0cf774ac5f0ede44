"""spread_capture on scripted books: quotes around fair value, skewed by inventory, on the tick
grid and never crossing; narrow spreads skipped; replaces only past thresholds, intervals and
the cancel budget; re-priced on a tick change; pulled before the end and after a stale book."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from polybus.common.money import MICROS
from polybus.strategy.api import Place
from polybus.strategy.strategies import SpreadCapture, SpreadCaptureSettings
from tests.unit.strategy_scripts import MS, SHARES, FakePortfolio, Market, cancels, places

YES, NO = "y1", "n1"
CONDITION = "0xbin"
DEFAULTS: dict[str, Any] = {
    "markets": (CONDITION,),
    "fair_value": "mid",
    "min_spread_ticks": 2,
    "min_replace_interval_ms": 0,
}


def quoter(**overrides: Any) -> tuple[SpreadCapture, FakePortfolio, Market]:
    portfolio = FakePortfolio(condition_of={YES: CONDITION, NO: CONDITION})
    strategy = SpreadCapture(SpreadCaptureSettings(**{**DEFAULTS, **overrides}), portfolio)
    return strategy, portfolio, Market(strategy)


def open_market(
    market: Market,
    bid: int,
    ask: int,
    *,
    tick: int = 10_000,
    end_ns: int = 0,
    depth: tuple[int, int] = (100 * SHARES, 100 * SHARES),
) -> list[Any]:
    """A binary market whose NO book mirrors the YES book, as the venue's does."""
    market.info(CONDITION, [(YES, "Yes"), (NO, "No")], tick=tick, end_ns=end_ns)
    market.snapshot(NO, [(MICROS - ask, depth[1])], [(MICROS - bid, depth[0])], tick=tick)
    return market.snapshot(YES, [(bid, depth[0])], [(ask, depth[1])], tick=tick)


def quoted(actions: list[Any]) -> set[tuple[str, str, int]]:
    return {(p.asset_id, p.side, p.price) for p in places(actions)}


def test_quotes_both_sides_around_the_mid_post_only() -> None:
    _, _, market = quoter()
    actions = open_market(market, 400_000, 500_000)
    # Mid 0.45, two ticks wide: bid 0.44 on YES, ask 0.46 as a BUY of NO at 0.54 (no shorting).
    assert quoted(actions) == {(YES, "BUY", 440_000), (NO, "BUY", 540_000)}
    assert all(p.post_only and p.time_in_force == "GTC" for p in places(actions))
    assert {p.size for p in places(actions)} == {10 * SHARES}


def test_microprice_leans_toward_the_thin_side() -> None:
    _, _, market = quoter(fair_value="microprice", microprice_levels=1)
    # Little on the ask: the next trade likely lifts it, fair value is near the ask.
    actions = open_market(market, 400_000, 500_000, depth=(90 * SHARES, 10 * SHARES))
    assert quoted(actions) == {(YES, "BUY", 480_000), (NO, "BUY", 500_000)}


def test_quotes_follow_fair_value_with_cancel_then_place() -> None:
    _, portfolio, market = quoter()
    portfolio.accept(open_market(market, 400_000, 500_000))
    actions = market.delta(
        YES,
        ("BUY", 400_000, 0),
        ("BUY", 500_000, 100 * SHARES),
        ("SELL", 500_000, 0),
        ("SELL", 600_000, 100 * SHARES),
    )
    # Mid 0.55 now: each side is canceled and placed again around it.
    assert [c.reason for c in cancels(actions)] == ["replace", "replace"]
    assert quoted(actions) == {(YES, "BUY", 540_000), (NO, "BUY", 440_000)}


def test_inventory_skews_quotes_and_sells_what_is_held() -> None:
    _, portfolio, market = quoter(skew_ticks=2, max_position_market="100")
    portfolio.positions[YES] = 50 * SHARES
    actions = open_market(market, 400_000, 500_000)
    # Half the limit long: one tick lower, and the ask sells YES held.
    assert quoted(actions) == {(YES, "BUY", 430_000), (YES, "SELL", 450_000)}


def test_no_side_that_would_pass_the_position_limits() -> None:
    _, portfolio, market = quoter(max_position_market="100", skew_ticks=0)
    portfolio.positions[YES] = 100 * SHARES
    assert quoted(open_market(market, 400_000, 500_000)) == {(YES, "SELL", 460_000)}

    _, portfolio, market = quoter(max_position_total="20", skew_ticks=0)
    portfolio.positions[NO] = 30 * SHARES
    # Short YES (long NO) past the total: only the side that reduces it, selling the NO.
    assert quoted(open_market(market, 400_000, 500_000)) == {(NO, "SELL", 560_000)}


def test_narrow_spread_is_skipped() -> None:
    _, _, market = quoter(narrow_spread_ticks=2)
    assert open_market(market, 490_000, 500_000) == []


def test_replace_only_past_the_threshold_and_the_interval() -> None:
    _, portfolio, market = quoter(replace_threshold_ticks=2, min_replace_interval_ms=1_000)
    portfolio.accept(open_market(market, 400_000, 500_000))
    # Fair value up one tick: under the threshold, the quotes stay.
    assert market.delta(YES, ("SELL", 500_000, 0), ("SELL", 520_000, 100 * SHARES)) == []
    # Up three ticks: past it, replaced.
    actions = market.delta(YES, ("SELL", 520_000, 0), ("SELL", 560_000, 100 * SHARES))
    assert len(cancels(actions)) == 2
    portfolio.accept(actions)
    # Down again at once: inside the interval, nothing.
    market.advance(100)
    assert market.delta(YES, ("SELL", 560_000, 0), ("SELL", 500_000, 100 * SHARES)) == []
    market.advance(1_000)
    assert len(cancels(market.timer())) == 2


def test_cancel_budget_throttles_replaces() -> None:
    _, portfolio, market = quoter(cancels_per_second=1, cancel_burst=2)
    portfolio.accept(open_market(market, 400_000, 500_000))
    moves = [520_000, 560_000, 600_000]
    replaced = []
    for step, ask in enumerate(moves):
        previous = 500_000 if step == 0 else moves[step - 1]
        actions = market.delta(YES, ("SELL", previous, 0), ("SELL", ask, 100 * SHARES))
        portfolio.accept(actions)
        replaced.append(len(cancels(actions)))
    # Two tokens: the first move replaces both sides, then the budget is spent.
    assert replaced == [2, 0, 0]
    market.advance(1_000)
    assert len(cancels(market.timer())) == 1


def test_tick_size_change_reprices_on_the_new_grid_at_once() -> None:
    _, portfolio, market = quoter(min_replace_interval_ms=60_000, replace_threshold_ticks=50)
    portfolio.accept(open_market(market, 400_000, 500_000))
    market.tick_change(NO, 1_000)
    actions = market.tick_change(YES, 1_000)
    assert {c.reason for c in cancels(actions)} == {"pull.tick"}
    assert len(cancels(actions)) == 2
    # Mid 0.45, two new ticks wide.
    assert quoted(actions) == {(YES, "BUY", 449_000), (NO, "BUY", 549_000)}


def test_quotes_pulled_before_market_end() -> None:
    _, portfolio, market = quoter(pull_before_end_s=60)
    end_ns = market.now_ns + 120_000 * MS
    portfolio.accept(open_market(market, 400_000, 500_000, end_ns=end_ns))
    market.advance(59_000)
    assert market.timer() == []
    market.advance(2_000)
    actions = market.timer()
    assert {c.reason for c in cancels(actions)} == {"pull.end"}
    assert len(cancels(actions)) == 2
    assert places(actions) == []
    portfolio.accept(actions)
    assert places(market.delta(YES, ("SELL", 480_000, 10 * SHARES))) == []


def test_no_requote_right_after_a_stale_book() -> None:
    _, portfolio, market = quoter(stale_cooldown_ms=1_000)
    portfolio.accept(open_market(market, 400_000, 500_000))
    assert market.status(YES, "stale") == []
    market.advance(100)
    assert market.status(YES, "live") == []
    # Live again, but the runtime's cancels have not landed: nothing.
    assert market.timer() == []
    portfolio.orders.clear()
    assert market.timer() == []  # cooldown starts now
    market.advance(999)
    assert market.timer() == []
    market.advance(1)
    assert quoted(market.timer()) == {(YES, "BUY", 440_000), (NO, "BUY", 540_000)}


def test_a_placed_quote_is_not_placed_twice_before_it_shows() -> None:
    _, _, market = quoter(order_ack_timeout_ms=5_000)
    assert len(places(open_market(market, 400_000, 500_000))) == 2
    assert market.delta(YES, ("BUY", 300_000, 5 * SHARES)) == []
    market.advance(5_000)
    assert len(places(market.timer())) == 2


def test_auto_selection_takes_the_most_liquid_quotable_markets() -> None:
    portfolio = FakePortfolio()
    strategy = SpreadCapture(
        SpreadCaptureSettings(auto_select_count=1, fair_value="mid"), portfolio
    )
    market = Market(strategy)
    for name, liquidity, bid, ask in (
        ("0xthin", 5_000, 400_000, 500_000),
        ("0xdeep", 9_000, 400_000, 500_000),
        ("0xnarrow", 99_000, 490_000, 500_000),
    ):
        market.info(name, [(f"{name}y", "Yes"), (f"{name}n", "No")], liquidity=liquidity)
        market.snapshot(f"{name}y", [(bid, 100 * SHARES)], [(ask, 100 * SHARES)])
        market.snapshot(f"{name}n", [(MICROS - ask, 100 * SHARES)], [(MICROS - bid, 100 * SHARES)])
    actions = market.timer()
    market.advance(60_000)
    actions = market.timer()
    assert {p.asset_id for p in places(actions)} == {"0xdeepy", "0xdeepn"}


def test_the_timer_quotes_from_the_runtimes_view_before_any_book_hook() -> None:
    market = Market()  # books arrive while no hook runs (e.g. before the partition is held)
    open_market(market, 400_000, 500_000)
    strategy = SpreadCapture(SpreadCaptureSettings(**DEFAULTS), FakePortfolio())
    strategy.view = market.view  # what the runtime does before the first hook
    market.strategy = strategy

    assert quoted(market.timer()) == {(YES, "BUY", 440_000), (NO, "BUY", 540_000)}


@settings(max_examples=200, deadline=None)
@given(
    tick=st.sampled_from([10_000, 1_000, 100]),
    bid_ticks=st.integers(1, 900),
    width_ticks=st.integers(1, 60),
    position=st.integers(-150, 150),
    fair=st.sampled_from(["mid", "microprice"]),
    ask_depth=st.integers(1, 500),
)
def test_quotes_never_cross_and_stay_on_the_grid(
    tick: int, bid_ticks: int, width_ticks: int, position: int, fair: str, ask_depth: int
) -> None:
    bid = bid_ticks * tick
    ask = bid + width_ticks * tick
    if ask >= MICROS:
        return
    _, portfolio, market = quoter(fair_value=fair, skew_ticks=3, narrow_spread_ticks=1)
    portfolio.positions[YES if position > 0 else NO] = abs(position) * SHARES
    actions = open_market(market, bid, ask, tick=tick, depth=(100 * SHARES, ask_depth * SHARES))
    yes_prices: dict[str, int] = {}
    for place in places(actions):
        assert isinstance(place, Place)
        assert place.post_only
        assert place.price % tick == 0
        assert tick <= place.price <= MICROS - tick
        on_yes = place.asset_id == YES
        side = "bid" if on_yes == (place.side == "BUY") else "ask"
        yes_prices[side] = place.price if on_yes else MICROS - place.price
    if "bid" in yes_prices:
        assert yes_prices["bid"] < ask
    if "ask" in yes_prices:
        assert yes_prices["ask"] > bid
    if len(yes_prices) == 2:
        assert yes_prices["ask"] - yes_prices["bid"] >= 2 * tick
