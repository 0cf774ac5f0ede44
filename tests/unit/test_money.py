"""Fixed-point money: exact parsing of venue decimal strings, and back."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polybus.common.money import (
    MICROS,
    SIZE_MAX,
    FixedPointError,
    decimal_micros,
    format_micros,
    notional,
    parse_micros,
    parse_price,
    parse_size,
    parse_tick_size,
    tick_decimals,
)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        (".48", 480_000),
        ("0.5", 500_000),
        ("219.217767", 219_217_767),
        ("1", 1_000_000),
        ("0", 0),
        ("0.001", 1_000),
        ("220045", 220_045_000_000),
        ("3793.8", 3_793_800_000),
        ("0.620", 620_000),
        ("5.", 5_000_000),
        ("0.1000000000", 100_000),
    ],
)
def test_venue_strings_parse_exactly(text: str, micros: int) -> None:
    assert parse_micros(text) == micros


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "abc",
        "1e-3",
        "1,5",
        " 1",
        "1 ",
        "0x10",
        "1_000",
        "NaN",
        "inf",
        "--1",
        "1.2.3",
        "٣",
        "+1",
        "0.0000001",
    ],
)
def test_malformed_input_raises_an_error_naming_the_value(text: str) -> None:
    with pytest.raises(FixedPointError) as error:
        parse_micros(text, what="size")
    assert repr(text) in str(error.value)
    assert "size" in str(error.value)


def test_non_string_input_is_refused() -> None:
    with pytest.raises(FixedPointError, match="decimal string"):
        parse_micros(0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["1.01", "-0.01", "2"])
def test_prices_outside_zero_to_one_are_out_of_range(text: str) -> None:
    with pytest.raises(FixedPointError, match=rf"price '{text}' is out of range"):
        parse_price(text)


def test_negative_sizes_are_out_of_range() -> None:
    with pytest.raises(FixedPointError, match="out of range"):
        parse_size("-5")


def test_absurd_sizes_are_out_of_range() -> None:
    with pytest.raises(FixedPointError, match="out of range"):
        parse_size("1" + "0" * 14)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (480_000, "0.48"),
        (220_045_000_000, "220045"),
        (3_793_800_000, "3793.8"),
        (0, "0"),
        (1_000_000, "1"),
        (-1_500_000, "-1.5"),
        (1, "0.000001"),
    ],
)
def test_formatting_matches_the_venue(micros: int, text: str) -> None:
    assert format_micros(micros) == text


def test_minimum_decimals_pads_like_last_trade_price() -> None:
    assert format_micros(620_000, min_decimals=3) == "0.620"
    assert format_micros(1_000_000, min_decimals=2) == "1.00"


def test_format_refuses_non_integers() -> None:
    with pytest.raises(FixedPointError):
        format_micros(0.5)  # type: ignore[arg-type]
    with pytest.raises(FixedPointError):
        format_micros(True)


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_format_then_parse_round_trips(micros: int) -> None:
    assert parse_micros(format_micros(micros)) == micros


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_parse_agrees_with_decimal(value: Decimal) -> None:
    text = format(value, "f")
    assert parse_micros(text) == int(value * MICROS)
    assert Decimal(format_micros(parse_micros(text))) == value


@given(st.integers(min_value=0, max_value=MICROS))
def test_every_price_round_trips(micros: int) -> None:
    assert parse_price(format_micros(micros)) == micros


@given(st.integers(min_value=0, max_value=SIZE_MAX))
def test_every_size_round_trips(micros: int) -> None:
    assert parse_size(format_micros(micros)) == micros


@pytest.mark.parametrize(
    ("text", "tick", "decimals"),
    [
        ("0.1", 100_000, 1),
        ("0.01", 10_000, 2),
        ("0.005", 5_000, 3),
        ("0.0025", 2_500, 4),
        ("0.001", 1_000, 3),
        ("0.0001", 100, 4),
    ],
)
def test_tick_sizes(text: str, tick: int, decimals: int) -> None:
    assert parse_tick_size(text) == tick
    assert tick_decimals(tick) == decimals


def test_unknown_tick_size_is_refused() -> None:
    with pytest.raises(FixedPointError, match="not one of the venue's tick sizes"):
        parse_tick_size("0.02")


def test_notional_is_exact_and_rounds_down() -> None:
    assert notional(500_000, 10_000_000) == 5_000_000  # 10 shares @ 0.50 = 5 pUSD
    assert notional(333_333, 3_000_000) == 999_999
    assert notional(-333_333, 3_000_000) == -999_999


# -- Decimals (Gamma's JSON numbers) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("0.01", 10_000),
        ("0.001", 1_000),
        ("5", 5_000_000),
        ("1E+1", 10_000_000),
        ("2.5E-3", 2_500),
        ("0.0000010", 1),
        ("-0.5", -500_000),
    ],
)
def test_decimals_convert_exactly(value: str, micros: int) -> None:
    assert decimal_micros(Decimal(value)) == micros


@pytest.mark.parametrize("value", ["0.0000001", "0.00999999999", "1E-7", "NaN", "Infinity"])
def test_sub_micro_or_non_finite_decimals_are_refused_by_default(value: str) -> None:
    with pytest.raises(FixedPointError, match="tick size"):
        decimal_micros(Decimal(value), what="tick size")


def test_informational_decimals_round_toward_zero_when_asked() -> None:
    assert decimal_micros(Decimal("1234.5678919"), round_down=True) == 1_234_567_891
    assert decimal_micros(Decimal("-0.0000019"), round_down=True) == -1


def test_decimal_range_is_checked() -> None:
    with pytest.raises(FixedPointError, match="out of range"):
        decimal_micros(Decimal("-1"), what="min size", minimum=0)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6, max_value=10**9))
def test_decimals_agree_with_the_string_parser(value: Decimal) -> None:
    assert decimal_micros(value) == parse_micros(f"{value:f}")
