"""Positions and PnL: exact integers, idempotent per fill and status, FAILED reverses."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from polybus.common.events import Fill, SettlementStatus, Side
from polybus.common.fees import FeeSchedule, taker_fee
from polybus.common.money import MICROS, notional
from polybus.common.positions import Holding, PositionBook

prices = st.integers(min_value=1, max_value=MICROS - 1)
sizes = st.integers(min_value=1, max_value=10**6 * MICROS)

FillTerms = tuple[Side, int, int, int]
"""side, price, size, fee (shares on a BUY, pUSD on a SELL, as ``Fill.fee``)."""


@st.composite
def fill_terms(draw: st.DrawFn) -> FillTerms:
    side: Side = draw(st.sampled_from(["BUY", "SELL"]))
    price, size = draw(prices), draw(sizes)
    # A fee never exceeds what it is taken from: the shares bought, the pUSD received.
    ceiling = size if side == "BUY" else notional(price, size)
    return side, price, size, draw(st.integers(min_value=0, max_value=ceiling))


def micro_pusd(value: Fraction) -> Fraction:
    return value * MICROS


def whole(micros: int) -> Fraction:
    return Fraction(micros, MICROS)


def fill(
    fill_id: str,
    side: Side,
    price: int,
    size: int,
    settlement: SettlementStatus = "MATCHED",
    fee: int = 0,
) -> Fill:
    return Fill(
        event_id=f"{fill_id}.{settlement}",
        ts_event=1,
        ts_init=1,
        fill_id=fill_id,
        order_id=f"o-{fill_id}",
        strategy_id="mm",
        condition_id="0xc",
        asset_id="yes",
        side=side,
        price=price,
        size=size,
        fee=fee,
        settlement=settlement,
    )


@given(buy=prices, sell=prices, size=sizes, data=st.data())
def test_buy_then_sell_everything_held_is_flat_with_exact_realised_pnl(
    buy: int, sell: int, size: int, data: st.DataObject
) -> None:
    share_fee = data.draw(st.integers(min_value=0, max_value=size - 1), label="share_fee")
    held = size - share_fee
    pusd_fee = data.draw(st.integers(min_value=0, max_value=notional(sell, held)), label="fee")
    book = PositionBook()
    bought = book.on_fill(fill("t1", "BUY", buy, size, "CONFIRMED", share_fee))
    assert bought is not None
    assert bought.snapshot(1).size == held  # what the venue shows: the fee shares are gone
    position = book.on_fill(fill("t2", "SELL", sell, held, "CONFIRMED", pusd_fee))
    assert position is not None
    snapshot = position.snapshot(1)
    assert (snapshot.size, snapshot.provisional_size) == (0, 0)
    assert snapshot.average_price == 0
    # Paid buy x size pUSD, got sell x held less the pUSD fee: each fee counted once.
    exact = whole(sell) * whole(held) - whole(buy) * whole(size) - whole(pusd_fee)
    assert snapshot.realized_pnl == math.floor(micro_pusd(exact))
    assert snapshot.provisional_realized_pnl == snapshot.realized_pnl
    assert snapshot.fees == pusd_fee + math.ceil(whole(share_fee) * buy)


@given(fills=st.lists(fill_terms(), min_size=1, max_size=8), mark=prices)
def test_realised_plus_unrealised_is_the_exact_pnl_rounded_down(
    fills: list[FillTerms], mark: int
) -> None:
    book = PositionBook()
    shares, value = 0, Fraction(0)
    for index, (side, price, size, fee) in enumerate(fills):
        book.on_fill(fill(f"t{index}", side, price, size, "CONFIRMED", fee))
        if side == "BUY":
            shares += size - fee
            value -= whole(price) * whole(size)
        else:
            shares -= size
            value += whole(price) * whole(size) - whole(fee)
    position = book.get("mm", "yes")
    assert position is not None
    snapshot = position.snapshot(1, mark=mark)
    assert snapshot.size == shares
    exact = micro_pusd(value + whole(mark) * whole(shares))
    total = snapshot.realized_pnl + snapshot.unrealized_pnl
    # Two values each rounded down by under a micro-pUSD: never above the exact figure.
    assert exact - 2 < total <= exact


@given(fills=st.lists(fill_terms(), min_size=1, max_size=8), failed=st.data())
def test_a_failed_fill_restores_the_state_without_it(
    fills: list[FillTerms], failed: st.DataObject
) -> None:
    victim = failed.draw(st.integers(min_value=0, max_value=len(fills) - 1))
    with_failure, without = PositionBook(), PositionBook()
    for index, (side, price, size, fee) in enumerate(fills):
        with_failure.on_fill(fill(f"t{index}", side, price, size, fee=fee))
        if index != victim:
            without.on_fill(fill(f"t{index}", side, price, size, fee=fee))
    side, price, size, fee = fills[victim]
    with_failure.on_fill(fill(f"t{victim}", side, price, size, "FAILED", fee))
    expected = without.get("mm", "yes")
    actual = with_failure.get("mm", "yes")
    assert actual is not None
    expected_snapshot = expected.snapshot(1, mark=500_000) if expected else None
    actual_snapshot = actual.snapshot(1, mark=500_000)
    if expected_snapshot is None:
        assert (actual_snapshot.provisional_size, actual_snapshot.fees) == (0, 0)
        assert actual_snapshot.provisional_realized_pnl == 0
    else:
        assert actual_snapshot == expected_snapshot


@given(fills=st.lists(fill_terms(), max_size=8))
def test_the_same_fill_and_status_twice_changes_nothing(fills: list[FillTerms]) -> None:
    once, twice = PositionBook(), PositionBook()
    for index, (side, price, size, fee) in enumerate(fills):
        for status in ("MATCHED", "MINED", "CONFIRMED"):
            event = fill(f"t{index}", side, price, size, status, fee)
            once.on_fill(event)
            twice.on_fill(event)
            assert twice.on_fill(event) is None
    assert [p.snapshot(1) for p in once.positions()] == [p.snapshot(1) for p in twice.positions()]


def test_matched_is_provisional_until_confirmed() -> None:
    book = PositionBook()
    book.on_fill(fill("t1", "BUY", 400_000, 10 * MICROS))
    position = book.get("mm", "yes")
    assert position is not None
    assert (position.snapshot(1).size, position.snapshot(1).provisional_size) == (0, 10 * MICROS)
    book.on_fill(fill("t1", "BUY", 400_000, 10 * MICROS, "MINED"))
    assert position.snapshot(1).size == 0
    book.on_fill(fill("t1", "BUY", 400_000, 10 * MICROS, "CONFIRMED"))
    snapshot = position.snapshot(1)
    assert (snapshot.size, snapshot.provisional_size) == (10 * MICROS, 10 * MICROS)
    assert snapshot.average_price == 400_000


def test_statuses_after_a_final_one_are_ignored() -> None:
    book = PositionBook()
    book.on_fill(fill("t1", "BUY", 400_000, MICROS, "CONFIRMED"))
    assert book.on_fill(fill("t1", "BUY", 400_000, MICROS, "FAILED")) is None
    assert book.on_fill(fill("t2", "BUY", 400_000, MICROS, "FAILED")) is None
    assert book.on_fill(fill("t2", "BUY", 400_000, MICROS, "MATCHED")) is None
    position = book.get("mm", "yes")
    assert position is not None
    assert position.snapshot(1).provisional_size == MICROS


def test_a_partial_close_rounds_against_us_and_the_full_close_realises_the_rest() -> None:
    holding = Holding()
    # 3 shares for 1 pUSD: the average is 0.333333... a share.
    holding.apply("BUY", 333_333, 2 * MICROS, 0)
    holding.apply("BUY", 333_334, MICROS, 0)
    holding.apply("SELL", 500_000, MICROS, 0)
    assert holding.realized_pnl == 166_666  # 0.5 - 0.333334 (cost share rounded up)
    assert holding.average_price == 333_334  # 0.666666666666 pUSD / 2 shares, rounded up
    holding.apply("SELL", 500_000, 2 * MICROS, 0)
    assert holding.size == 0
    assert holding.cost == 0
    assert holding.realized_pnl == 500_000  # 1.5 - 1.0 exactly


def test_unrealised_pnl_and_a_flip_from_long_to_short() -> None:
    holding = Holding()
    holding.apply("BUY", 400_000, 10 * MICROS, 0)
    assert holding.unrealized_pnl(450_000) == 500_000
    holding.apply("SELL", 500_000, 15 * MICROS, 20_000)
    assert holding.size == -5 * MICROS
    assert holding.average_price == 500_000
    assert holding.realized_pnl == 1_000_000 - 20_000
    assert holding.unrealized_pnl(600_000) == -500_000
    assert holding.cost_notional() == 2_500_000


def test_a_taker_round_trip_pays_the_venue_fee_in_shares_then_in_pusd() -> None:
    crypto = FeeSchedule(rate=70_000, exponent=1)
    book = PositionBook()
    # 10 x 0.07 x 0.4 x 0.6 = 0.168 pUSD, taken as 0.42 shares of the 10 bought at 0.40.
    buy_fee = taker_fee("BUY", 400_000, 10 * MICROS, crypto)
    assert buy_fee == 420_000
    position = book.on_fill(fill("t1", "BUY", 400_000, 10 * MICROS, "CONFIRMED", buy_fee))
    assert position is not None
    snapshot = position.snapshot(1, mark=400_000)
    assert snapshot.size == 9_580_000
    assert snapshot.average_price == 400_000
    assert snapshot.realized_pnl == -168_000  # the 0.42 shares given up, at their cost
    assert snapshot.fees == 168_000
    assert snapshot.unrealized_pnl == 0
    # 9.58 x 0.07 x 0.5 x 0.5 = 0.16765 pUSD out of the 4.79 the sale brings.
    sell_fee = taker_fee("SELL", 500_000, 9_580_000, crypto)
    assert sell_fee == 167_650
    book.on_fill(fill("t2", "SELL", 500_000, 9_580_000, "CONFIRMED", sell_fee))
    snapshot = position.snapshot(2)
    assert snapshot.size == 0
    assert snapshot.realized_pnl == 4_790_000 - 4_000_000 - 167_650
    assert snapshot.fees == 168_000 + 167_650


def test_a_position_snapshot_round_trips_through_the_codec() -> None:
    book = PositionBook()
    position = book.on_fill(fill("t1", "BUY", 400_000, MICROS, "CONFIRMED", 1_000))
    assert position is not None
    snapshot = position.snapshot(7, mark=410_000)
    assert snapshot.size == MICROS - 1_000
    assert snapshot.unrealized_pnl == 9_990  # 0.999 shares up 0.01
    assert snapshot.fees == 400  # 0.001 shares at 0.40
    assert msgspec.json.decode(msgspec.json.encode(snapshot), type=type(snapshot)) == snapshot


@given(
    fills=st.lists(fill_terms(), max_size=8),
    order=st.randoms(use_true_random=False),
)
def test_confirmations_in_any_order_give_the_arrival_order_fold(
    fills: list[FillTerms], order: random.Random
) -> None:
    book, reference = PositionBook(), Holding()
    for index, (side, price, size, fee) in enumerate(fills):
        book.on_fill(fill(f"t{index}", side, price, size, fee=fee))
        reference.apply(side, price, size, fee)
    confirming = list(enumerate(fills))
    order.shuffle(confirming)
    for index, (side, price, size, fee) in confirming:
        book.on_fill(fill(f"t{index}", side, price, size, "CONFIRMED", fee))
    position = book.get("mm", "yes")
    if position is not None:
        assert position.confirmed == reference
        assert position.provisional == reference
