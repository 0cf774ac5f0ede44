"""One human line per event for ``polybus tail``: time, type and the facts that matter.

Prices and sizes print as decimals (:func:`~polybus.common.money.format_micros`); an asset is
named by its market's question and outcome once a ``MarketInfo`` for it went by (or was read
from the MD stream at start), else by its id. Times are UTC, to the millisecond: the venue's
clock and every log line are UTC too.
"""

from __future__ import annotations

import datetime

from polybus.common.events import (
    AnyEvent,
    BookDelta,
    BookSnapshot,
    BookStatus,
    DeadLetter,
    Fill,
    MarketDataStreamEvent,
    MarketInfo,
    MarketResolved,
    OrderEvent,
    OrderIntent,
    PositionSnapshot,
    RiskEvent,
    ServiceHealth,
    TickSizeChanged,
    Trade,
    type_name,
)
from polybus.common.money import format_micros

RAW_PREVIEW = 120
"""Characters of a dead letter's raw input shown on its line (``--raw`` prints all of it)."""


class MarketNames:
    """The question and outcome of each asset seen in a ``MarketInfo`` (the latest wins)."""

    def __init__(self) -> None:
        self._markets: dict[str, MarketInfo] = {}
        self._outcome_of: dict[str, tuple[str, str]] = {}

    def learn(self, market: MarketInfo) -> None:
        self._markets[market.condition_id] = market
        for outcome in market.outcomes:
            self._outcome_of[outcome.token_id] = (market.condition_id, outcome.outcome)

    def market(self, condition_id: str) -> MarketInfo | None:
        return self._markets.get(condition_id)

    def markets(self) -> list[MarketInfo]:
        return list(self._markets.values())

    def asset(self, asset_id: str) -> str:
        """``"Will X?" YES``, or the asset id when its market is not known."""
        known = self._outcome_of.get(asset_id)
        if known is None:
            return asset_id
        condition_id, outcome = known
        return f'"{self._markets[condition_id].question}" {outcome.upper()}'

    def condition(self, condition_id: str) -> str:
        market = self._markets.get(condition_id)
        return f'"{market.question}"' if market is not None else condition_id


def clock(ts_ns: int) -> str:
    """``HH:MM:SS.mmm`` (UTC) of a timestamp in ns since the epoch."""
    moment = datetime.datetime.fromtimestamp(ts_ns / 1e9, tz=datetime.UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _best(price: int | None) -> str:
    return "-" if price is None else format_micros(price)


def _quantity(side: str, size: int, price: int) -> str:
    return f"{side} {format_micros(size)} @ {format_micros(price)}"


def describe(event: AnyEvent, names: MarketNames) -> str:
    """The event's line without its time: ``Fill dutch_book BUY 12.5 @ 0.53 "Will X?" YES …``.

    Learns market names from a ``MarketInfo`` first, so the line of the MarketInfo itself and
    every later one use them.
    """
    if isinstance(event, MarketInfo):
        names.learn(event)
    return f"{type_name(event)} {_facts(event, names)}".rstrip()


def line(event: AnyEvent, names: MarketNames) -> str:
    """The whole line: time, then :func:`describe`."""
    return f"{clock(event.ts_event or event.ts_init)} {describe(event, names)}"


def _facts(event: AnyEvent, names: MarketNames) -> str:
    if isinstance(event, OrderIntent | OrderEvent | Fill | PositionSnapshot | RiskEvent):
        return _order_facts(event, names)
    if isinstance(event, ServiceHealth):
        return f"{event.service} {event.instance} {event.status} {event.detail}"
    if isinstance(event, DeadLetter):
        raw = event.raw if len(event.raw) <= RAW_PREVIEW else event.raw[:RAW_PREVIEW] + "…"
        return f"{event.source} {event.reason} {raw!r}"
    return _market_facts(event, names)


def _market_facts(event: MarketDataStreamEvent, names: MarketNames) -> str:
    match event:
        case BookSnapshot():
            best_bid = event.bids[0].price if event.bids else None
            best_ask = event.asks[0].price if event.asks else None
            return (
                f"{names.asset(event.asset_id)} {_best(best_bid)} / {_best(best_ask)} "
                f"({len(event.bids)} bids, {len(event.asks)} asks) seq {event.epoch}/{event.seq}"
            )
        case BookDelta():
            changes = ", ".join(
                f"{change.side} {format_micros(change.price)} x {format_micros(change.size)}"
                for change in event.changes
            )
            return (
                f"{names.asset(event.asset_id)} {changes} -> "
                f"{_best(event.best_bid)} / {_best(event.best_ask)}"
            )
        case Trade():
            return f"{_quantity(event.side, event.size, event.price)} {names.asset(event.asset_id)}"
        case TickSizeChanged():
            return (
                f"{names.asset(event.asset_id)} tick {format_micros(event.old_tick_size)} -> "
                f"{format_micros(event.new_tick_size)}"
            )
        case BookStatus():
            return f"{names.asset(event.asset_id)} {event.status.upper()} ({event.reason})"
        case MarketInfo():
            outcomes = "/".join(outcome.outcome for outcome in event.outcomes)
            return (
                f'"{event.question}" {event.slug} {outcomes} tick {format_micros(event.tick_size)}'
                f" min {format_micros(event.min_order_size)}" + (" closed" if event.closed else "")
            )
        case MarketResolved():
            return f"{names.condition(event.condition_id)} won by {event.winning_outcome}"
    return ""


def _order_facts(
    event: OrderIntent | OrderEvent | Fill | PositionSnapshot | RiskEvent, names: MarketNames
) -> str:
    match event:
        case OrderIntent():
            what = (
                _quantity(event.side, event.size, event.price)
                if event.action != "cancel"
                else f"of {event.target_intent_id}"
            )
            return (
                f"{event.strategy_id} {event.action} {what} {names.asset(event.asset_id)} "
                f"{event.time_in_force}{' post-only' if event.post_only else ''} {event.intent_id}"
            )
        case OrderEvent():
            reason = f" ({event.reason}{': ' + event.detail if event.detail else ''})"
            return (
                f"{event.strategy_id} {_quantity(event.side, event.size, event.price)} "
                f"{names.asset(event.asset_id)} {event.status.upper()} filled "
                f"{format_micros(event.filled_size)} {event.order_id}"
                + (reason if event.reason else "")
            )
        case Fill():
            return (
                f"{event.strategy_id} {_quantity(event.side, event.size, event.price)} "
                f"{names.asset(event.asset_id)} {event.settlement} {event.liquidity}"
                + (f" fee {format_micros(event.fee)}" if event.fee else "")
            )
        case PositionSnapshot():
            return (
                f"{event.strategy_id} {names.asset(event.asset_id)} size "
                f"{format_micros(event.provisional_size)} avg "
                f"{format_micros(event.provisional_average_price)} realized "
                f"{format_micros(event.provisional_realized_pnl)} unrealized "
                f"{format_micros(event.unrealized_pnl)}"
            )
    return " ".join(
        part for part in (event.strategy_id or "all", event.kind, event.limit, event.detail) if part
    )
