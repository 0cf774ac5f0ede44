"""The backtest's report: PnL, fills, fees, inventory over time and drawdown; text, JSON, PNG.

Amounts are micro-units (DESIGN §2) in the JSON, decimals in the text. PnL is marked at the
end at each book's mid (rounded down), else its last trade print, else at cost
(:func:`~polybus.strategy.backtest.driver.mark_of`). ``total_pnl`` is exact (one rounding,
down): the fills' cash flows plus the open shares at the mark. ``realized_pnl`` is the
positions' (``polybus.common.positions``: each rounded down, fees included) and
``unrealized_pnl`` the rest, so the two always add up to the total.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import msgspec

from polybus.common.events import Side
from polybus.common.money import format_micros
from polybus.common.positions import Position
from polybus.strategy.backtest.driver import BacktestResult, Sample, marked_pnl

MARK_METHOD = "mid, else last trade, else cost"
MAX_SERIES_POINTS = 1_000
"""The sampled series in a report is thinned to this many points (drawdown uses them all)."""
PLOT_INSTALL_HINT = (
    "--plot needs matplotlib, an optional extra: install it with "
    "`uv sync --extra plot` (or `pip install 'polybus-strategy[plot]'`)"
)


class ReportFill(msgspec.Struct, frozen=True, kw_only=True):
    ts_ns: int
    fill_id: str
    order_id: str
    asset_id: str
    side: Side
    price: int
    size: int
    fee: int
    """As ``Fill.fee``: shares on a BUY (kept by the venue), pUSD on a SELL."""
    liquidity: str


class ReportSample(msgspec.Struct, frozen=True, kw_only=True):
    ts_ns: int
    pnl: int
    inventory: dict[str, int]


class BacktestReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``polybus backtest --json`` prints (one JSON object)."""

    strategy_id: str
    events: int
    start_ns: int
    end_ns: int
    intents: int
    rejected_orders: int
    fill_count: int
    fees: int
    """The fees' pUSD value (a BUY's share fee at its fill price, rounded up)."""
    realized_pnl: int
    unrealized_pnl: int
    total_pnl: int
    max_drawdown: int
    """The largest fall of the sampled total PnL from an earlier peak (0 at the start)."""
    mark_method: str
    marks: dict[str, int]
    positions: dict[str, int]
    """Signed shares held at the end, per asset traded."""
    risk_events: list[str]
    fills: list[ReportFill]
    samples: list[ReportSample]


def build_report(result: BacktestResult) -> BacktestReport:
    positions = list(result.positions.positions(result.strategy_id))
    marks = dict(sorted(result.marks.items()))
    total = marked_pnl(positions, marks.get)
    realized = sum(position.provisional.realized_pnl for position in positions)
    return BacktestReport(
        strategy_id=result.strategy_id,
        events=result.events,
        start_ns=result.first_ns,
        end_ns=result.last_ns,
        intents=result.intents,
        rejected_orders=result.rejected,
        fill_count=len(result.fills),
        fees=sum(position.provisional.fees for position in positions),
        realized_pnl=realized,
        unrealized_pnl=total - realized,
        total_pnl=total,
        max_drawdown=max_drawdown(result.samples),
        mark_method=MARK_METHOD,
        marks=marks,
        positions={p.asset_id: p.provisional.size for p in sorted(positions, key=_asset_of)},
        risk_events=[f"{e.kind}:{e.limit}:{e.detail}" for e in result.risk_events],
        fills=[
            ReportFill(
                ts_ns=fill.ts_event,
                fill_id=fill.fill_id,
                order_id=fill.order_id,
                asset_id=fill.asset_id,
                side=fill.side,
                price=fill.price,
                size=fill.size,
                fee=fill.fee,
                liquidity=fill.liquidity,
            )
            for fill in result.fills
        ],
        samples=[_sample(sample) for sample in _thinned(result.samples)],
    )


def _asset_of(position: Position) -> str:
    return position.asset_id


def max_drawdown(samples: list[Sample]) -> int:
    peak = 0
    deepest = 0
    for sample in samples:
        peak = max(peak, sample.pnl)
        deepest = max(deepest, peak - sample.pnl)
    return deepest


def _thinned(samples: list[Sample]) -> list[Sample]:
    if len(samples) <= MAX_SERIES_POINTS:
        return samples
    step = -(-len(samples) // MAX_SERIES_POINTS)
    kept = samples[::step]
    return kept if kept[-1] is samples[-1] else [*kept, samples[-1]]


def _sample(sample: Sample) -> ReportSample:
    return ReportSample(ts_ns=sample.ts_ns, pnl=sample.pnl, inventory=dict(sample.inventory))


def to_json(report: BacktestReport) -> bytes:
    return msgspec.json.encode(report)


def to_text(report: BacktestReport) -> str:
    """The report for a person: a few lines, amounts in pUSD and shares."""
    seconds = (report.end_ns - report.start_ns) / 1e9
    lines = [
        f"backtest {report.strategy_id}: {report.events} events over {seconds:.1f} s",
        f"intents {report.intents}, orders rejected {report.rejected_orders}, "
        f"fills {report.fill_count}, fees {format_micros(report.fees)} pUSD",
        f"PnL total {format_micros(report.total_pnl)} = realised "
        f"{format_micros(report.realized_pnl)} + unrealised "
        f"{format_micros(report.unrealized_pnl)} pUSD (marked at {report.mark_method})",
        f"max drawdown {format_micros(report.max_drawdown)} pUSD "
        f"(sampled {len(report.samples)} times)",
    ]
    for asset_id, size in report.positions.items():
        mark = report.marks.get(asset_id)
        shown = format_micros(mark) if mark is not None else "cost"
        lines.append(f"  position {asset_id}: {format_micros(size)} shares, marked at {shown}")
    lines += [f"  risk event {event}" for event in report.risk_events]
    return "\n".join(lines) + "\n"


class PlotUnavailable(Exception):
    """matplotlib is not installed (it is the optional ``plot`` extra)."""


def check_plot_available() -> None:
    # Optional: only ``--plot`` needs matplotlib, so it is looked for, not imported, up front.
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable(PLOT_INSTALL_HINT)


def write_plot(report: BacktestReport, path: Path) -> None:
    """A PNG of total PnL and inventory per asset over the sampled times."""
    check_plot_available()
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # no display: a file only
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    origin = report.start_ns
    times = [(sample.ts_ns - origin) / 1e9 for sample in report.samples]
    figure, (pnl_axes, inventory_axes) = pyplot.subplots(2, 1, sharex=True, figsize=(9, 6))
    pnl_axes.plot(times, [sample.pnl / 1e6 for sample in report.samples], color="tab:blue")
    pnl_axes.set_ylabel("PnL (pUSD)")
    pnl_axes.set_title(f"backtest {report.strategy_id}")
    for asset_id in report.positions:
        shares = [sample.inventory.get(asset_id, 0) / 1e6 for sample in report.samples]
        inventory_axes.step(times, shares, where="post", label=asset_id[:16])
    inventory_axes.set_ylabel("shares")
    inventory_axes.set_xlabel("seconds from the first event")
    if report.positions:
        inventory_axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)
