"""Backtests: the same strategy class and runtime as live, on recorded market data, a simulated
clock and the paper fill model (``polybus backtest``)."""

from polybus.strategy.backtest.driver import Backtest, BacktestResult, Sample, mark_of, marked_pnl
from polybus.strategy.backtest.report import BacktestReport, build_report

__all__ = [
    "Backtest",
    "BacktestReport",
    "BacktestResult",
    "Sample",
    "build_report",
    "mark_of",
    "marked_pnl",
]
