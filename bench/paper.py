"""Paper matching throughput, beside a bare OrderBook.apply_delta loop in the same run.

    uv run python -m bench.paper [--orders 100000] [--updates 200000] [--resting 10]

Against one asset's 20-level book (20 bids 0.30-0.49, 20 asks 0.51-0.70, 0.01 tick):

- submit, passive: a GTC bid that rests (no cross), then its cancel;
- submit, marketable: a FAK BUY sweeping three ask levels with the crypto fee (a fresh matcher
  per order, so what it took never exhausts the book; the construction is included);
- book updates: BookDelta (one level each) applied to the book, then ``on_book`` checking
  ``--resting`` resting orders (queues, crossing), beside the same deltas through
  ``apply_delta`` alone;
- trade prints through ``on_trade`` with the same resting orders.
No I/O; one process, one core.
"""

from __future__ import annotations

import argparse
import time

from polybus.common.book import OrderBook
from polybus.common.events import BookDelta, LevelChange, Side, Trade
from polybus.common.fees import FeeSchedule
from polybus.common.money import MICROS
from polybus.executor.paper import PaperMatcher, PaperOrder

TICK = 10_000
CRYPTO = FeeSchedule(rate=70_000, exponent=1)


def _book() -> OrderBook:
    book = OrderBook()
    book.replace(
        ((300_000 + n * TICK, (100 + n) * MICROS) for n in range(20)),
        ((510_000 + n * TICK, (100 + n) * MICROS) for n in range(20)),
    )
    return book


def _deltas(count: int) -> list[BookDelta]:
    """One-level changes at every level of both sides, sizes cycling, never crossing."""
    deltas = []
    for n in range(count):
        side: Side = "BUY" if n % 2 else "SELL"
        level = (n // 2) % 20
        price = (300_000 if side == "BUY" else 510_000) + level * TICK
        size = (50 + (n * 7919) % 200) * MICROS
        deltas.append(
            BookDelta(
                event_id=str(n),
                ts_event=n,
                ts_init=n,
                asset_id="a",
                condition_id="c",
                seq=n,
                epoch=0,
                changes=(LevelChange(side, price, size),),
                best_bid=None,
                best_ask=None,
            )
        )
    return deltas


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_passive(orders: int) -> float:
    matcher, book = PaperMatcher(CRYPTO), _book()
    placed = [
        PaperOrder(order_id=f"p{n}", side="BUY", price=300_000 + (n % 20) * TICK, size=MICROS)
        for n in range(orders)
    ]
    start = time.perf_counter()
    for paper in placed:
        matcher.submit(paper, book, 1)
        matcher.cancel(paper.order_id)
    return _rate(orders, time.perf_counter() - start)


def bench_marketable(orders: int) -> float:
    book = _book()
    # 100 + 101 shares at the first two asks, 5 at the third.
    size = 206 * MICROS
    placed = [
        PaperOrder(order_id=f"m{n}", side="BUY", price=540_000, size=size, time_in_force="FAK")
        for n in range(orders)
    ]
    start = time.perf_counter()
    for paper in placed:
        update = PaperMatcher(CRYPTO).submit(paper, book, 1)
    elapsed = time.perf_counter() - start
    assert len(update.fills) == 3, update
    return _rate(orders, elapsed)


def _with_resting(resting: int) -> tuple[PaperMatcher, OrderBook]:
    matcher, book = PaperMatcher(CRYPTO), _book()
    for n in range(resting):
        side: Side = "BUY" if n % 2 else "SELL"
        price = (300_000 + (19 - n % 20) * TICK) if side == "BUY" else 510_000 + (n % 20) * TICK
        paper = PaperOrder(order_id=f"r{n}", side=side, price=price, size=10**9 * MICROS)
        matcher.submit(paper, book, 0)
    return matcher, book


def bench_updates(updates: int, resting: int) -> tuple[float, float]:
    deltas = _deltas(updates)
    bare = _book()
    start = time.perf_counter()
    for delta in deltas:
        bare.apply_delta(delta)
    bare_rate = _rate(updates, time.perf_counter() - start)

    matcher, book = _with_resting(resting)
    start = time.perf_counter()
    for number, delta in enumerate(deltas):
        book.apply_delta(delta)
        matcher.on_book(book, number)
    return bare_rate, _rate(updates, time.perf_counter() - start)


def bench_trades(updates: int, resting: int) -> float:
    matcher, _ = _with_resting(resting)
    trades = [
        Trade(
            event_id=str(n),
            ts_event=n,
            ts_init=n,
            asset_id="a",
            condition_id="c",
            seq=n,
            epoch=0,
            price=(300_000 + (n % 20) * TICK) if n % 2 else 510_000 + (n % 20) * TICK,
            size=MICROS,
            side="SELL" if n % 2 else "BUY",
        )
        for n in range(updates)
    ]
    start = time.perf_counter()
    for number, trade in enumerate(trades):
        matcher.on_trade(trade, number)
    return _rate(updates, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--resting", type=int, default=10)
    args = parser.parse_args()
    bare, checked = bench_updates(args.updates, args.resting)
    figures = {
        "submit, passive GTC + cancel (orders/s)": bench_passive(args.orders),
        "submit, marketable FAK sweeping 3 levels (orders/s)": bench_marketable(args.orders),
        "book updates, bare OrderBook.apply_delta (updates/s)": bare,
        f"book updates, apply_delta + on_book, {args.resting} resting (updates/s)": checked,
        f"trade prints, on_trade, {args.resting} resting (trades/s)": bench_trades(
            args.updates, args.resting
        ),
    }
    for key, value in figures.items():
        print(f"{key:<66} {value:>12,.0f}")


if __name__ == "__main__":
    main()
