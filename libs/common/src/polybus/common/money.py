"""Exact fixed-point money, prices and sizes (DESIGN §2).

Every price, size and notional in polybus is an ``int`` of micro-units (1e-6): a price of
0.53 is ``530_000``, 12.5 shares is ``12_500_000``, 1 pUSD is ``1_000_000``. Conversion from
and to the venue's decimal strings happens only here, at the venue boundary; a float never
carries money.
"""

from __future__ import annotations

from decimal import Decimal

MICROS = 1_000_000
"""Micro-units per whole unit (one share, one pUSD, a price of 1)."""

DECIMALS = 6

PRICE_MIN = 0
PRICE_MAX = MICROS
"""Prices of a binary outcome lie in [0, 1]."""

SIZE_MAX = 10**12 * MICROS
"""A trillion shares: far above any real level, low enough to catch garbage."""

TICK_SIZES = (100_000, 10_000, 5_000, 2_500, 1_000, 100)
"""The venue's tick sizes (0.1 … 0.0001) in micro-units."""


class FixedPointError(ValueError):
    """A decimal string or integer that is not a valid fixed-point quantity."""


def parse_micros(
    text: str,
    *,
    what: str = "value",
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Parse a plain decimal string (``"0.5"``, ``".48"``, ``"219.217767"``, ``"1"``) exactly.

    Accepts an optional leading ``-``, digits, and at most one ``.``; up to six decimal places
    (further digits are accepted only if they are zeros). Anything else - exponents, spaces,
    underscores, ``NaN``, non-ASCII digits - raises :class:`FixedPointError` naming the value.
    """
    if not isinstance(text, str):
        raise FixedPointError(f"{what} must be a decimal string, got {text!r}")
    negative = text.startswith("-")
    body = text[1:] if negative else text
    whole, _, frac = body.partition(".")
    # isdigit() alone admits non-ASCII digits that int() would happily convert.
    if (
        not body.isascii()
        or not (whole or frac)
        or (whole and not whole.isdigit())
        or (frac and not frac.isdigit())
    ):
        raise FixedPointError(f"{what} {text!r} is not a plain decimal number")
    if len(frac) > DECIMALS:
        if frac[DECIMALS:].strip("0"):
            raise FixedPointError(f"{what} {text!r} has more than {DECIMALS} decimal places")
        frac = frac[:DECIMALS]
    value = int(whole or "0") * MICROS + int(frac.ljust(DECIMALS, "0"))
    if negative:
        value = -value
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise FixedPointError(
            f"{what} {text!r} is out of range "
            f"[{format_micros(minimum) if minimum is not None else '-inf'}, "
            f"{format_micros(maximum) if maximum is not None else 'inf'}]"
        )
    return value


def parse_price(text: str) -> int:
    """Parse a venue price string into micro-units; it must lie in [0, 1]."""
    return parse_micros(text, what="price", minimum=PRICE_MIN, maximum=PRICE_MAX)


def parse_size(text: str) -> int:
    """Parse a venue size (shares or pUSD) into micro-units; it must be non-negative."""
    return parse_micros(text, what="size", minimum=0, maximum=SIZE_MAX)


def format_micros(value: int, *, min_decimals: int = 0) -> str:
    """Format micro-units the way the venue prints numbers: ``"0.48"``, ``"220045"``, ``"3793.8"``.

    Trailing zeros are dropped, down to ``min_decimals`` places (the venue prints a
    ``last_trade_price`` as ``"0.620"``).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise FixedPointError(f"fixed-point value must be an int, got {value!r}")
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), MICROS)
    frac_text = f"{frac:06d}".rstrip("0").ljust(min_decimals, "0")
    return f"{sign}{whole}.{frac_text}" if frac_text else f"{sign}{whole}"


def tick_decimals(tick: int) -> int:
    """Decimal places of a tick size in micro-units (10_000 -> 2, 1_000 -> 3, 2_500 -> 4)."""
    if tick <= 0 or tick > MICROS:
        raise FixedPointError(f"tick size {tick!r} is out of range (0, 1]")
    return len(format_micros(tick).partition(".")[2])


def parse_tick_size(text: str) -> int:
    """Parse a venue tick size (``"0.01"``); it must be one of the venue's tick sizes."""
    tick = parse_micros(text, what="tick size", minimum=1, maximum=MICROS)
    if tick not in TICK_SIZES:
        raise FixedPointError(f"tick size {text!r} is not one of the venue's tick sizes")
    return tick


def notional(price: int, size: int) -> int:
    """price x size in micro-units, rounded down (toward zero) to a whole micro-unit."""
    product = price * size
    return product // MICROS if product >= 0 else -((-product) // MICROS)


def decimal_micros(
    value: Decimal,
    *,
    what: str = "value",
    minimum: int | None = None,
    maximum: int | None = None,
    round_down: bool = False,
) -> int:
    """A ``Decimal`` (a JSON number read exactly, e.g. from Gamma) in micro-units.

    The rule is :func:`parse_micros`'s: a value with a non-zero digit past the sixth decimal
    place, or that is not finite, raises :class:`FixedPointError` naming it. Only figures
    that are informational (volume, liquidity) may pass ``round_down=True``: they are then
    rounded toward zero to a whole micro-unit, never to the nearest.
    """
    if not isinstance(value, Decimal) or not value.is_finite():
        raise FixedPointError(f"{what} {value!r} is not a finite decimal number")
    # From the digits, not Decimal arithmetic: that rounds to the context's 28 digits.
    negative, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    magnitude = int("".join(map(str, digits)) or "0")
    shift = exponent + DECIMALS
    # (int ** int is typed Any: a negative exponent would give a float; these never are.)
    micros: int
    if shift >= 0:
        scale: int = 10**shift
        micros = magnitude * scale
    else:
        divisor: int = 10**-shift
        micros, rest = divmod(magnitude, divisor)
        if rest and not round_down:
            raise FixedPointError(f"{what} {value} has more than {DECIMALS} decimal places")
    if negative:
        micros = -micros
    if (minimum is not None and micros < minimum) or (maximum is not None and micros > maximum):
        raise FixedPointError(
            f"{what} {value} is out of range "
            f"[{format_micros(minimum) if minimum is not None else '-inf'}, "
            f"{format_micros(maximum) if maximum is not None else 'inf'}]"
        )
    return micros


def decimal_tick_size(value: Decimal) -> int:
    """A tick size read as a ``Decimal`` (Gamma); like :func:`parse_tick_size`, it must be
    exactly one of the venue's tick sizes."""
    tick = decimal_micros(value, what="tick size", minimum=1, maximum=MICROS)
    if tick not in TICK_SIZES:
        raise FixedPointError(f"tick size {value} is not one of the venue's tick sizes")
    return tick
