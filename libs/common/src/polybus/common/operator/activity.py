"""What the streams and KV buckets say about trading, for ``polybus status`` and ``top``.

- Books by state: the MD stream's last message per status subject (one per asset: cheap).
- Positions and PnL: the latest ``PositionSnapshot`` per strategy and asset on EXEC. A
  position subject is per market, not per asset, so last-per-subject would lose the other
  outcome; the position subjects are read whole instead (they change only on fills).
- Rejects and risk events: EXEC's order and risk subjects in a recent window.
- Halts (``HALT``) and lease holders (``LEASES``), from their buckets.
- ``top``: per asset, resyncs, time spent not live and rejects in a recent window.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict

import msgspec
from nats.js.errors import BucketNotFoundError, NoKeysError

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import (
    BookStatus,
    DecodeError,
    OrderEvent,
    PositionSnapshot,
    RiskEvent,
    execution_decoder,
    market_data_decoder,
)
from polybus.common.halt import HaltState, halt_bucket, read_halts
from polybus.common.leases import LEASE_BUCKET, decode_record
from polybus.common.operator.stream_reader import read_stream
from polybus.common.operator.tail_format import MarketNames

_STATUS_SUBJECTS = "md.polymarket.*.status.*"
_ORDER_SUBJECTS = "exec.*.order.*"
_RISK_SUBJECTS = "exec.*.risk.*"
_POSITION_SUBJECTS = "exec.*.position.*"


class PositionRow(msgspec.Struct, kw_only=True):
    """A strategy's position in one asset; sizes and money in micro-units."""

    strategy_id: str
    asset_id: str
    market: str
    size: int
    average_price: int
    realized_pnl: int
    unrealized_pnl: int
    fees: int


class StrategyPnl(msgspec.Struct, kw_only=True):
    strategy_id: str
    realized_pnl: int
    unrealized_pnl: int
    fees: int


class LeaseOwner(msgspec.Struct, kw_only=True):
    group: str
    holder: str
    partitions: list[int]


class Trading(msgspec.Struct, kw_only=True):
    """The trading side of ``polybus status``."""

    books_by_state: dict[str, int] = msgspec.field(default_factory=dict)
    halts: list[HaltState] = msgspec.field(default_factory=list)
    leases: list[LeaseOwner] = msgspec.field(default_factory=list)
    positions: list[PositionRow] = msgspec.field(default_factory=list)
    pnl: list[StrategyPnl] = msgspec.field(default_factory=list)
    rejects_by_reason: dict[str, int] = msgspec.field(default_factory=dict)
    """Rejected orders in the recent window, by reason code."""
    risk_events_by_limit: dict[str, int] = msgspec.field(default_factory=dict)
    """Risk events in the recent window (limits hit, rate limits, cancel throttles), by limit."""
    window_s: float = 0.0


class AssetActivity(msgspec.Struct, kw_only=True):
    """One asset's trouble in the window of ``polybus top``."""

    asset_id: str
    market: str
    state: str
    resyncs: int = 0
    stale_transitions: int = 0
    not_live_s: float = 0.0
    """Time in the window its book was not live (stale, resyncing, closed)."""
    rejects: int = 0

    @property
    def score(self) -> tuple[float, ...]:
        return (self.resyncs + self.stale_transitions + self.rejects, self.not_live_s)


async def latest_book_states(bus: NatsBus) -> dict[str, BookStatus]:
    subject = bus.namespace.subjects.stream_subjects(_STATUS_SUBJECTS)
    states: dict[str, BookStatus] = {}
    with contextlib.suppress(TimeoutError):
        for message in await bus.last_per_subject("MD", [subject]):
            with contextlib.suppress(DecodeError):
                event = market_data_decoder.decode(message.data)
                if isinstance(event, BookStatus):
                    states[event.asset_id] = event
    return states


async def _halts(bus: NatsBus) -> list[HaltState]:
    try:
        return sorted(
            await read_halts(await halt_bucket(bus.js, bus.namespace)),
            key=lambda state: state.strategy_id,
        )
    except BucketNotFoundError:
        return []


async def _leases(bus: NatsBus) -> list[LeaseOwner]:
    try:
        bucket = await bus.js.key_value(bus.namespace.bucket(LEASE_BUCKET))
        keys = await bucket.keys()
    except (BucketNotFoundError, NoKeysError):
        return []
    owned: dict[tuple[str, str], list[int]] = defaultdict(list)
    for key in keys:
        group, _, partition = key.rpartition(".partition.")
        if not group or not partition.isdigit():
            continue
        with contextlib.suppress(Exception):
            entry = await bucket.get(key)
            record = decode_record(entry.value or b"")
            if record is not None:
                owned[group, record.holder].append(int(partition))
    return [
        LeaseOwner(group=group, holder=holder, partitions=sorted(partitions))
        for (group, holder), partitions in sorted(owned.items())
    ]


async def _positions(bus: NatsBus, names: MarketNames) -> list[PositionRow]:
    latest: dict[tuple[str, str], PositionSnapshot] = {}
    async for message in read_stream(bus.nc, bus.namespace, "EXEC", [_POSITION_SUBJECTS]):
        with contextlib.suppress(DecodeError):
            event = execution_decoder.decode(message.data)
            if isinstance(event, PositionSnapshot):
                latest[event.strategy_id, event.asset_id] = event
    return [
        PositionRow(
            strategy_id=position.strategy_id,
            asset_id=position.asset_id,
            market=names.asset(position.asset_id),
            size=position.provisional_size,
            average_price=position.provisional_average_price,
            realized_pnl=position.provisional_realized_pnl,
            unrealized_pnl=position.unrealized_pnl,
            fees=position.fees,
        )
        for _, position in sorted(latest.items())
    ]


def _pnl(positions: list[PositionRow]) -> list[StrategyPnl]:
    totals: dict[str, StrategyPnl] = {}
    for row in positions:
        total = totals.setdefault(
            row.strategy_id,
            StrategyPnl(strategy_id=row.strategy_id, realized_pnl=0, unrealized_pnl=0, fees=0),
        )
        total.realized_pnl += row.realized_pnl
        total.unrealized_pnl += row.unrealized_pnl
        total.fees += row.fees
    return sorted(totals.values(), key=lambda total: total.strategy_id)


async def _recent_execution(
    bus: NatsBus, since_ns: int
) -> tuple[list[OrderEvent], list[RiskEvent]]:
    rejected: list[OrderEvent] = []
    risks: list[RiskEvent] = []
    async for message in read_stream(
        bus.nc, bus.namespace, "EXEC", [_ORDER_SUBJECTS, _RISK_SUBJECTS], since_ns=since_ns
    ):
        with contextlib.suppress(DecodeError):
            event = execution_decoder.decode(message.data)
            if isinstance(event, OrderEvent) and event.status == "rejected":
                rejected.append(event)
            elif isinstance(event, RiskEvent):
                risks.append(event)
    return rejected, risks


async def collect_trading(bus: NatsBus, names: MarketNames, *, window_s: float) -> Trading:
    """Everything :class:`Trading` holds, read from the bus now."""
    states = await latest_book_states(bus)
    rejected, risks = await _recent_execution(bus, time.time_ns() - int(window_s * 1e9))
    positions = await _positions(bus, names)
    return Trading(
        books_by_state=dict(sorted(Counter(s.status for s in states.values()).items())),
        halts=await _halts(bus),
        leases=await _leases(bus),
        positions=positions,
        pnl=_pnl(positions),
        rejects_by_reason=dict(sorted(Counter(event.reason for event in rejected).items())),
        risk_events_by_limit=dict(
            sorted(Counter(event.limit or event.kind for event in risks).items())
        ),
        window_s=window_s,
    )


async def collect_top(
    bus: NatsBus, names: MarketNames, *, window_s: float, limit: int
) -> list[AssetActivity]:
    """The ``limit`` assets with the most resyncs, stale turns and rejects in the window
    (then the longest time not live), worst first."""
    now = time.time_ns()
    since = now - int(window_s * 1e9)
    activity: dict[str, AssetActivity] = {}
    went_down: dict[str, int] = {}

    def asset(asset_id: str) -> AssetActivity:
        if asset_id not in activity:
            activity[asset_id] = AssetActivity(
                asset_id=asset_id, market=names.asset(asset_id), state="unknown"
            )
        return activity[asset_id]

    async for message in read_stream(
        bus.nc, bus.namespace, "MD", [_STATUS_SUBJECTS], since_ns=since
    ):
        with contextlib.suppress(DecodeError):
            event = market_data_decoder.decode(message.data)
            if not isinstance(event, BookStatus):
                continue
            row = asset(event.asset_id)
            at = event.ts_init or event.ts_event
            if event.status == "live":
                row.not_live_s += (at - went_down.pop(event.asset_id, at)) / 1e9
            else:
                went_down.setdefault(event.asset_id, at)
                row.resyncs += event.status == "resyncing"
                row.stale_transitions += event.status == "stale"
            row.state = event.status
    for asset_id, down_at in went_down.items():
        activity[asset_id].not_live_s += (now - down_at) / 1e9
    rejected, _ = await _recent_execution(bus, since)
    for order in rejected:
        if order.asset_id:  # a malformed intent's rejection may name no asset
            asset(order.asset_id).rejects += 1
    for row in activity.values():
        row.not_live_s = round(row.not_live_s, 3)
    troubled = [row for row in activity.values() if any(row.score)]
    return sorted(troubled, key=lambda row: row.score, reverse=True)[:limit]
