"""The venue's taker fee: exact integers, rounded up to 5 decimals, shares on BUY, pUSD on SELL."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polybus.common.events import MarketInfo, Outcome
from polybus.common.fees import (
    FEE_FREE,
    FEE_QUANTUM,
    FeeSchedule,
    taker_fee,
    taker_fee_value,
)
from polybus.common.money import MICROS, notional

CRYPTO = FeeSchedule(rate=70_000, exponent=1)  # 0.07


def _exact_value(price: int, size: int, schedule: FeeSchedule) -> Fraction:
    """The formula in whole pUSD, computed independently with fractions, back to micro-units."""
    p = Fraction(price, MICROS)
    shares = Fraction(size, MICROS)
    rate = Fraction(schedule.rate, MICROS)
    return shares * rate * (p * (1 - p)) ** schedule.exponent * MICROS


def test_the_docs_formula_at_one_half() -> None:
    # 100 shares x 0.07 x 0.5 x 0.5 = 1.75 pUSD; a BUY pays it as 1.75 / 0.5 = 3.5 shares.
    assert taker_fee_value(500_000, 100 * MICROS, CRYPTO) == 1_750_000
    assert taker_fee("SELL", 500_000, 100 * MICROS, CRYPTO) == 1_750_000
    assert taker_fee("BUY", 500_000, 100 * MICROS, CRYPTO) == 3_500_000


def test_the_exponent_raises_the_price_term() -> None:
    # 10 x 0.25 x (0.3 x 0.7)^2 = 10 x 0.25 x 0.0441 = 0.11025 pUSD; as shares / 0.3 = 0.3675.
    quadratic = FeeSchedule(rate=250_000, exponent=2)
    assert taker_fee_value(300_000, 10 * MICROS, quadratic) == 110_250
    assert taker_fee("SELL", 300_000, 10 * MICROS, quadratic) == 110_250
    assert taker_fee("BUY", 300_000, 10 * MICROS, quadratic) == 367_500


def test_fees_round_up_to_five_decimals() -> None:
    # 1.5 x 0.07 x 0.333 x 0.667 = 0.023321655 pUSD -> 0.02333 (up, not to nearest 0.02332).
    assert taker_fee_value(333_000, 1_500_000, CRYPTO) == 23_330
    assert taker_fee("SELL", 333_000, 1_500_000, CRYPTO) == 23_330
    # As shares: 1.5 x 0.07 x 0.667 = 0.070035 -> 0.07004, rounded once from the exact value.
    assert taker_fee("BUY", 333_000, 1_500_000, CRYPTO) == 70_040


def test_a_fee_never_exceeds_the_proceeds_it_comes_from() -> None:
    # 1.01 shares sold at 0.0001 bring 0.000101 pUSD; at rate 1 the formula gives
    # 0.000100989..., which rounds up to 0.00011 - more than the sale brings.
    whole_rate = FeeSchedule(rate=MICROS, exponent=1)
    assert taker_fee_value(100, 1_010_000, whole_rate) == 110
    assert taker_fee("SELL", 100, 1_010_000, whole_rate) == 101


def test_a_fee_free_market_charges_nothing() -> None:
    assert taker_fee("BUY", 500_000, 100 * MICROS, FEE_FREE) == 0
    assert taker_fee("SELL", 500_000, 100 * MICROS, FEE_FREE) == 0


def test_the_schedule_comes_from_market_info() -> None:
    market = MarketInfo(
        event_id="m",
        ts_event=0,
        ts_init=0,
        condition_id="0xc",
        question="q",
        slug="s",
        outcomes=(Outcome(token_id="1", outcome="Yes"),),
        tick_size=10_000,
        min_order_size=5 * MICROS,
        fee_rate=30_000,
        fee_exponent=2,
    )
    assert FeeSchedule.of_market(market) == FeeSchedule(rate=30_000, exponent=2)


@pytest.mark.parametrize(
    ("price", "size", "schedule"),
    [
        (0, MICROS, CRYPTO),
        (MICROS, MICROS, CRYPTO),
        (500_000, -1, CRYPTO),
        (500_000, MICROS, FeeSchedule(rate=-1)),
        (500_000, MICROS, FeeSchedule(rate=1, exponent=-1)),
    ],
)
def test_impossible_inputs_are_refused(price: int, size: int, schedule: FeeSchedule) -> None:
    with pytest.raises(ValueError, match="fee"):
        taker_fee("BUY", price, size, schedule)


prices = st.integers(min_value=1, max_value=MICROS - 1)
sizes = st.integers(min_value=0, max_value=10**9 * MICROS)
schedules = st.builds(
    FeeSchedule,
    rate=st.integers(min_value=0, max_value=MICROS),
    exponent=st.integers(min_value=0, max_value=3),
)


@given(prices, sizes, schedules)
def test_the_value_is_the_exact_formula_rounded_up(
    price: int, size: int, schedule: FeeSchedule
) -> None:
    value = taker_fee_value(price, size, schedule)
    exact = _exact_value(price, size, schedule)
    assert value % FEE_QUANTUM == 0
    assert exact <= value < exact + FEE_QUANTUM


@given(prices, sizes, schedules)
def test_a_charged_fee_lies_between_zero_and_the_proceeds(
    price: int, size: int, schedule: FeeSchedule
) -> None:
    sell_fee = taker_fee("SELL", price, size, schedule)
    buy_fee = taker_fee("BUY", price, size, schedule)
    assert 0 <= sell_fee <= notional(price, size)
    assert 0 <= buy_fee <= size
    # Unless capped, the shares a BUY gives up are worth at least the formula's fee.
    if buy_fee < size:
        assert Fraction(buy_fee * price, MICROS) >= _exact_value(price, size, schedule)


@given(prices, sizes, st.integers(min_value=0, max_value=MICROS))
def test_with_exponent_one_the_value_is_symmetric_in_the_price(
    price: int, size: int, rate: int
) -> None:
    schedule = FeeSchedule(rate=rate, exponent=1)
    assert taker_fee_value(price, size, schedule) == taker_fee_value(MICROS - price, size, schedule)
