"""The venue's taker fee (VENUE §6.5), in exact integer micro-units.

Polymarket charges takers only ("makers are never charged fees") at match time, by a
per-market schedule (Gamma ``feeSchedule.rate`` / ``exponent``, clob-markets ``fd.r`` /
``fd.e``, carried on :class:`~polybus.common.events.MarketInfo` as ``fee_rate`` in
micro-units and ``fee_exponent``)::

    fee = C x rate x (p x (1 - p)) ** exponent        C shares, p the trade price

The formula gives a pUSD amount (:func:`taker_fee_value`). The venue takes it from what the
taker receives: in **shares on a BUY** (the value divided by the price) and in **pUSD on a
SELL** (:func:`taker_fee`).

Rounding: the venue rounds fees to 5 decimals without saying which way. polybus rounds **up**
to the next 0.00001 (10 micro-units), so a paper or backtest result never pays less than the
venue would. A charged fee never exceeds what it is taken from (the shares bought, the pUSD
received); that bound only bites on dust trades at the extreme prices, where rounding up could
otherwise pass it. Everything is integer arithmetic on exact rationals: no floats.
"""

from __future__ import annotations

import msgspec

from polybus.common.events import MarketInfo, Side
from polybus.common.money import MICROS, notional

FEE_DECIMALS = 5
"""The venue rounds fees to 5 decimal places."""
FEE_QUANTUM = 10
"""One unit of the fee's last decimal (0.00001) in micro-units."""


class FeeSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """A market's taker fee schedule: ``rate`` in micro-units (0.07 -> 70_000), ``exponent``."""

    rate: int = 0
    exponent: int = 1

    @classmethod
    def of_market(cls, market: MarketInfo) -> FeeSchedule:
        """The schedule a :class:`MarketInfo` carries (fee-free markets have rate 0)."""
        return cls(rate=market.fee_rate, exponent=market.fee_exponent)


FEE_FREE = FeeSchedule()
"""No taker fee (most markets, and Geopolitics)."""


def _fee_fraction(price: int, size: int, schedule: FeeSchedule) -> tuple[int, int]:
    """The exact pUSD value of the fee in micro-units, as (numerator, denominator)."""
    if not 0 < price < MICROS:
        raise ValueError(f"fee price {price} is outside (0, 1) in micro-units")
    if size < 0:
        raise ValueError(f"fee size {size} is negative")
    if schedule.rate < 0 or schedule.exponent < 0:
        raise ValueError(f"fee schedule {schedule!r} has a negative rate or exponent")
    # (size/M) x (rate/M) x (p(M-p)/M^2)^e whole pUSD, times M for micro-units.
    exponent = schedule.exponent
    numerator = size * schedule.rate * (price * (MICROS - price)) ** exponent
    denominator = MICROS ** (1 + 2 * exponent)
    return numerator, denominator


def _round_up_to_quantum(numerator: int, denominator: int) -> int:
    return -(-numerator // (denominator * FEE_QUANTUM)) * FEE_QUANTUM


def taker_fee_value(price: int, size: int, schedule: FeeSchedule) -> int:
    """The taker fee's pUSD value in micro-units for ``size`` shares at ``price``.

    ``C x rate x (p(1-p))^exponent`` exactly, rounded up to 5 decimals. Use it to compare
    costs (a strategy's edge); :func:`taker_fee` is what the venue actually takes.
    """
    return _round_up_to_quantum(*_fee_fraction(price, size, schedule))


def taker_fee(side: Side, price: int, size: int, schedule: FeeSchedule) -> int:
    """The taker fee as the venue takes it, in micro-units: shares on a BUY, pUSD on a SELL.

    A BUY's fee is its pUSD value divided by the price (the shares worth that much), rounded
    up to 5 decimals once, from the exact value; at most ``size``. A SELL's fee is
    :func:`taker_fee_value`, at most the pUSD the sale brings (``notional(price, size)``).
    """
    numerator, denominator = _fee_fraction(price, size, schedule)
    if side == "BUY":
        return min(_round_up_to_quantum(numerator * MICROS, denominator * price), size)
    return min(_round_up_to_quantum(numerator, denominator), notional(price, size))
