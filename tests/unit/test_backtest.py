"""The backtest on scripted market data: deterministic, its PnL is the sum of its fills
(recomputed here from the fills alone), and dutch_book buys both legs of a real mispricing at
the prices shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from polybus.common.events import MarketDataStreamEvent, MarketInfo
from polybus.common.money import MICROS
from polybus.strategy.backtest import Backtest, BacktestReport, build_report
from polybus.strategy.backtest.report import to_json, write_plot
from polybus.strategy.strategies import DutchBook, DutchBookSettings
from tests.unit.strategy_scripts import SHARES, Market

YES, NO = "y1", "n1"
CONDITION = "0xbin"
FEE_RATE = 70_000  # 0.07: the taker fee takes some of the edge, not all of it
SECOND_NS = 1_000_000_000


class RecordedMarket(Market):
    """The scripted market, keeping every event it made, as the recorder would."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[MarketDataStreamEvent] = []

    def info(self, *args: object, **kwargs: object) -> MarketInfo:
        info = super().info(*args, **kwargs)  # type: ignore[arg-type]
        self.events.append(info)
        return info

    def publish(self, event: MarketDataStreamEvent) -> list[object]:  # type: ignore[override]
        self.events.append(event)
        return super().publish(event)  # type: ignore[return-value]


def mispriced_market() -> RecordedMarket:
    """YES asks 0.45 (100 shown) and NO asks 0.50 (40 shown): a set costs 0.95 plus fees, under
    1 - one tick. Afterwards the books move, so the held sets are marked at new mids."""
    market = RecordedMarket()
    market.info(CONDITION, [(YES, "Yes"), (NO, "No")], fee_rate=FEE_RATE)
    market.snapshot(YES, [(400_000, 100 * SHARES)], [(450_000, 100 * SHARES)])
    market.snapshot(NO, [(450_000, 100 * SHARES)], [(500_000, 40 * SHARES)])
    for step in range(1, 6):
        market.advance(700)
        market.delta(YES, ("BUY", 400_000 + step * 10_000, 10 * SHARES))
        market.delta(NO, ("SELL", 500_000, 0), ("SELL", 540_000, 30 * SHARES))
    return market


def run(events: list[MarketDataStreamEvent]) -> BacktestReport:
    engine = Backtest(DutchBook, DutchBookSettings(), timer_interval_ns=SECOND_NS)
    return build_report(engine.run(events))


def test_dutch_book_buys_both_legs_at_the_shown_prices() -> None:
    report = run(mispriced_market().events)

    assert [(f.asset_id, f.side, f.price, f.size, f.liquidity) for f in report.fills] == [
        (YES, "BUY", 450_000, 40 * SHARES, "taker"),
        (NO, "BUY", 500_000, 40 * SHARES, "taker"),
    ]
    assert all(fill.fee > 0 for fill in report.fills)  # a taker on a fee market pays shares
    assert report.fees > 0
    assert report.rejected_orders == 0


def test_pnl_equals_the_sum_of_the_fills() -> None:
    market = mispriced_market()
    report = run(market.events)
    # The end marks, from the last books: mids rounded down.
    marks = {}
    for asset_id in (YES, NO):
        book = market.view.book(asset_id)
        assert book is not None
        assert book.best_bid is not None
        assert book.best_ask is not None
        marks[asset_id] = (book.best_bid + book.best_ask) // 2

    cash = 0  # micro-units squared: price x size, exact
    shares: dict[str, int] = {}
    for fill in report.fills:
        if fill.side == "BUY":
            cash -= fill.price * fill.size
            shares[fill.asset_id] = shares.get(fill.asset_id, 0) + fill.size - fill.fee
        else:
            cash += fill.price * fill.size - fill.fee * MICROS
            shares[fill.asset_id] = shares.get(fill.asset_id, 0) - fill.size
    expected = (cash + sum(marks[a] * size for a, size in shares.items())) // MICROS

    assert report.fills  # the check means something only with fills
    assert report.marks == marks
    assert report.positions == shares
    assert report.total_pnl == expected
    assert report.realized_pnl + report.unrealized_pnl == report.total_pnl


def test_same_input_same_report() -> None:
    events = mispriced_market().events

    first, second = to_json(run(events)), to_json(run(events))

    assert first == second
    assert b'"fill_count":2' in first


def test_inventory_is_sampled_on_the_simulated_clock_and_drawdown_follows_the_marks() -> None:
    report = run(mispriced_market().events)

    times = [sample.ts_ns for sample in report.samples]
    assert times == sorted(times)
    assert len(times) >= 3  # 3.5 s of events, a sample per simulated second and one at the end
    assert report.samples[-1].inventory == report.positions
    assert report.max_drawdown >= 0
    assert report.samples[-1].pnl == report.total_pnl


def test_no_mispricing_no_trade() -> None:
    market = RecordedMarket()
    market.info(CONDITION, [(YES, "Yes"), (NO, "No")], fee_rate=FEE_RATE)
    market.snapshot(YES, [(400_000, 100 * SHARES)], [(500_000, 100 * SHARES)])
    market.snapshot(NO, [(450_000, 100 * SHARES)], [(510_000, 100 * SHARES)])

    report = run(market.events)

    assert report.fills == []
    assert report.total_pnl == report.realized_pnl == report.unrealized_pnl == 0


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional plot extra")
    path = tmp_path / "backtest.png"

    write_plot(run(mispriced_market().events), path)

    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
