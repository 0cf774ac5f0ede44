"""Scripted market data for strategy tests: a real BookView fed ingest-shaped events, a
Portfolio the test controls, and a driver that calls the hooks the way the runtime does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from polybus.common.book_view import Applied, BookView
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    Fill,
    Level,
    LevelChange,
    MarketDataStreamEvent,
    MarketInfo,
    Outcome,
    Side,
    TickSizeChanged,
)
from polybus.strategy.api import Action, Cancel, Place, Report, Strategy, WorkingOrder

EPOCH = 1_700_000_000_000_000_000
START_NS = 1_800_000_000_000_000_000
MS = 1_000_000
SHARES = 1_000_000


@dataclass
class FakePortfolio:
    """Positions and working orders as the test sets them (the runtime rebuilds them from EXEC)."""

    positions: dict[str, int] = field(default_factory=dict)
    orders: list[WorkingOrder] = field(default_factory=list)
    condition_of: dict[str, str] = field(default_factory=dict)
    _next_id: int = 0

    def position(self, asset_id: str) -> int:
        return self.positions.get(asset_id, 0)

    def working(self, asset_id: str | None = None) -> Sequence[WorkingOrder]:
        return [o for o in self.orders if asset_id is None or o.asset_id == asset_id]

    def realized_pnl(self) -> int:
        return 0

    def accept(self, actions: Iterable[Action]) -> list[WorkingOrder]:
        """Act as the executor would for resting orders: places rest, cancels remove."""
        accepted = []
        for action in actions:
            if isinstance(action, Cancel):
                self.orders = [o for o in self.orders if o.order_id != action.order_id]
                continue
            if isinstance(action, Report):
                continue
            self._next_id += 1
            order = WorkingOrder(
                order_id=f"o{self._next_id}",
                asset_id=action.asset_id,
                condition_id=self.condition_of.get(action.asset_id, ""),
                side=action.side,
                price=action.price,
                size=action.size,
                filled_size=0,
                status="accepted",
            )
            self.orders.append(order)
            accepted.append(order)
        return accepted


class Market:
    """Drives a BookView like the ingest and calls a strategy's hooks like the runtime."""

    def __init__(self, strategy: Strategy | None = None) -> None:
        self.view = BookView()
        self.strategy = strategy
        if strategy is not None:
            strategy.view = self.view  # as the runtime does before the first hook
        self.now_ns = START_NS
        self._seq: dict[str, int] = {}
        self._condition: dict[str, str] = {}

    def advance(self, ms: int) -> None:
        self.now_ns += ms * MS

    def info(
        self,
        condition_id: str,
        tokens: Sequence[tuple[str, str]],
        *,
        tick: int = 10_000,
        min_size: int = 5 * SHARES,
        fee_rate: int = 0,
        neg_risk_id: str = "",
        market_count: int = 0,
        augmented: bool = False,
        end_ns: int = 0,
        liquidity: int = 0,
    ) -> MarketInfo:
        for token, _ in tokens:
            self._condition[token] = condition_id
        info = MarketInfo(
            event_id=f"m.{condition_id}.{self.now_ns}",
            ts_event=self.now_ns,
            ts_init=self.now_ns,
            condition_id=condition_id,
            question=condition_id,
            slug=condition_id,
            outcomes=tuple(Outcome(token_id=t, outcome=name) for t, name in tokens),
            tick_size=tick,
            min_order_size=min_size,
            neg_risk=bool(neg_risk_id),
            neg_risk_market_id=neg_risk_id,
            fee_rate=fee_rate,
            end_date_ns=end_ns,
            liquidity=liquidity,
            neg_risk_augmented=augmented,
            neg_risk_market_count=market_count,
        )
        self.view.apply(info)
        return info

    def _envelope(self, asset_id: str) -> dict[str, object]:
        seq = self._seq.get(asset_id, 0) + 1
        self._seq[asset_id] = seq
        return {
            "event_id": f"e.{asset_id}.{seq}",
            "ts_event": self.now_ns,
            "ts_init": self.now_ns,
            "asset_id": asset_id,
            "condition_id": self._condition[asset_id],
            "seq": seq,
            "epoch": EPOCH,
        }

    def snapshot(
        self,
        asset_id: str,
        bids: Sequence[tuple[int, int]],
        asks: Sequence[tuple[int, int]],
        *,
        tick: int = 10_000,
        min_size: int = 5 * SHARES,
    ) -> list[Action]:
        return self.publish(
            BookSnapshot(
                **self._envelope(asset_id),  # type: ignore[arg-type]
                bids=tuple(Level(p, s) for p, s in sorted(bids, reverse=True)),
                asks=tuple(Level(p, s) for p, s in sorted(asks)),
                tick_size=tick,
                min_order_size=min_size,
            )
        )

    def delta(self, asset_id: str, *changes: tuple[Side, int, int]) -> list[Action]:
        book = self.view.book(asset_id)
        assert book is not None
        preview = {("BUY", p): s for p, s in book.bids.items()}
        preview.update({("SELL", p): s for p, s in book.asks.items()})
        preview.update({(side, p): s for side, p, s in changes})
        bids = [p for (side, p), s in preview.items() if side == "BUY" and s]
        asks = [p for (side, p), s in preview.items() if side == "SELL" and s]
        return self.publish(
            BookDelta(
                **self._envelope(asset_id),  # type: ignore[arg-type]
                changes=tuple(LevelChange(side, p, s) for side, p, s in changes),
                best_bid=max(bids, default=None),
                best_ask=min(asks, default=None),
            )
        )

    def status(self, asset_id: str, status: str) -> list[Action]:
        return self.publish(
            BookStatus(**self._envelope(asset_id), status=status, reason="test")  # type: ignore[arg-type]
        )

    def tick_change(self, asset_id: str, new_tick: int) -> list[Action]:
        old = self.view.tick(asset_id)
        return self.publish(
            TickSizeChanged(
                **self._envelope(asset_id),  # type: ignore[arg-type]
                old_tick_size=old,
                new_tick_size=new_tick,
            )
        )

    def publish(self, event: MarketDataStreamEvent) -> list[Action]:
        applied = self.view.apply(event)
        assert applied in (Applied.UPDATED, Applied.STATE_CHANGED, Applied.UNCHANGED), applied
        if self.strategy is None or not isinstance(
            event, BookSnapshot | BookDelta | BookStatus | TickSizeChanged
        ):
            return []
        if self.view.tradeable(event.asset_id):
            return list(self.strategy.on_book(self.view, event.asset_id))
        return list(self.strategy.on_untradeable(self.view, event.asset_id))

    def timer(self) -> list[Action]:
        assert self.strategy is not None
        return list(self.strategy.on_timer(self.now_ns))

    def fill(
        self,
        place: Place,
        size: int | None = None,
        *,
        fill_id: str = "",
        settlement: str = "MATCHED",
    ) -> list[Action]:
        """A fill of ``place`` (all of it unless ``size``) reported back to the strategy."""
        assert self.strategy is not None
        fill = Fill(
            event_id=f"f.{fill_id or place.asset_id}.{settlement}",
            ts_event=self.now_ns,
            ts_init=self.now_ns,
            fill_id=fill_id or f"t.{place.asset_id}.{self.now_ns}",
            order_id="",
            strategy_id=self.strategy.name,
            condition_id=self._condition[place.asset_id],
            asset_id=place.asset_id,
            side=place.side,
            price=place.price,
            size=place.size if size is None else size,
            settlement=settlement,  # type: ignore[arg-type]
        )
        return list(self.strategy.on_fill(fill))


def places(actions: Iterable[Action]) -> list[Place]:
    return [a for a in actions if isinstance(a, Place)]


def cancels(actions: Iterable[Action]) -> list[Cancel]:
    return [a for a in actions if isinstance(a, Cancel)]


def reports(actions: Iterable[Action]) -> list[Report]:
    return [a for a in actions if isinstance(a, Report)]
