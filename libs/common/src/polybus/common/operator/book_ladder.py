"""``polybus book``: one asset's ladder in the terminal, with our working orders marked.

The book comes from a :class:`~polybus.common.book_view.BookFeed` on the asset's partition
only (warm start from the MD stream, then live). Our orders come from EXEC's order events:
the stream's history first, then live ones, the latest event per order deciding whether it
still works (submitted, accepted, partially filled or unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from polybus.common.book_view import AssetBook, BookFeed, BookView
from polybus.common.bus import Message
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import (
    DecodeError,
    MarketInfo,
    OrderEvent,
    execution_decoder,
    market_data_decoder,
)
from polybus.common.money import format_micros
from polybus.common.operator.stream_reader import read_stream
from polybus.common.subjects import check_subject_pattern

WORKING = frozenset({"submitted", "accepted", "partially_filled", "unknown"})
ORDER_SUBJECTS = "exec.*.order.*"


class UnknownAsset(ValueError):
    """The asset id or slug names nothing the MD stream knows."""


@dataclass(frozen=True, slots=True)
class Target:
    asset_id: str
    outcome: str
    market: MarketInfo | None
    partition: int | None
    """The market's partition (None: unknown, follow them all)."""


def check_target(value: str) -> None:
    """Raise ValueError unless ``value`` can be an asset id or a slug (one subject token)."""
    check_subject_pattern(value)
    if "." in value or value in ("*", ">"):
        raise ValueError(f"{value!r} is not an asset id or a slug")


def resolve(target: str, outcome: str, markets: list[tuple[MarketInfo, int]]) -> Target:
    """The asset ``target`` names: a token id, or a market slug with its ``outcome``.

    ``markets`` are the MD stream's MarketInfo with the partition of their subject.
    """
    for market, part in markets:
        for entry in market.outcomes:
            if entry.token_id == target:
                return Target(entry.token_id, entry.outcome, market, part)
        if market.slug == target:
            for entry in market.outcomes:
                if entry.outcome.upper() == outcome.upper():
                    return Target(entry.token_id, entry.outcome, market, part)
            known = "/".join(entry.outcome for entry in market.outcomes)
            raise UnknownAsset(f"market {target!r} has no outcome {outcome!r} (it has {known})")
    if target.isdigit():
        return Target(target, "", None, None)
    raise UnknownAsset(f"no market with slug or asset id {target!r} in the MD stream")


@dataclass(slots=True)
class WorkingOrders:
    """Our orders in one asset that still work, from their latest order event."""

    asset_id: str
    latest: dict[str, OrderEvent] = field(default_factory=dict)

    def on_message(self, message: Message) -> None:
        with contextlib.suppress(DecodeError):
            event = execution_decoder.decode(message.data)
            if isinstance(event, OrderEvent) and event.asset_id == self.asset_id:
                self.latest[event.order_id] = event

    def at(self, side: str, price: int) -> list[OrderEvent]:
        return [
            order
            for order in self.latest.values()
            if order.status in WORKING and order.side == side and order.price == price
        ]

    def working(self) -> list[OrderEvent]:
        return [order for order in self.latest.values() if order.status in WORKING]


def _ours(orders: list[OrderEvent]) -> str:
    return " ".join(
        f"◀ {order.strategy_id} {format_micros(order.size - order.filled_size)}" for order in orders
    )


def render_ladder(
    target: Target, book: AssetBook | None, orders: WorkingOrders, *, depth: int, now_ns: int
) -> Group:
    """The header (market, state, age, last trade) and ``depth`` levels a side: bids left,
    asks right, best first, our working orders beside their price."""
    name = (
        f'"{target.market.question}" {target.outcome.upper()}'
        if target.market is not None
        else target.asset_id
    )
    if book is None:
        return Group(Text(f"{name}  no book yet"))
    age = f"{(now_ns - book.updated_ns) / 1e9:.1f}s" if book.updated_ns else "-"
    trade = book.last_trade
    last = (
        f"{trade.side} {format_micros(trade.size)} @ {format_micros(trade.price)}"
        if trade is not None
        else "-"
    )
    header = Text(
        f"{name}  {book.state.value.upper()}  age {age}  last trade {last}  "
        f"tick {format_micros(book.tick_size) if book.tick_size else '-'}"
    )
    ladder = Table("ours", "bid size", "bid", "ask", "ask size", "ours")
    bids = book.book.bid_levels()[:depth]
    asks = book.book.ask_levels()[:depth]
    for index in range(max(len(bids), len(asks))):
        bid = bids[index] if index < len(bids) else None
        ask = asks[index] if index < len(asks) else None
        ladder.add_row(
            _ours(orders.at("BUY", bid[0])) if bid else "",
            format_micros(bid[1]) if bid else "",
            format_micros(bid[0]) if bid else "",
            format_micros(ask[0]) if ask else "",
            format_micros(ask[1]) if ask else "",
            _ours(orders.at("SELL", ask[0])) if ask else "",
        )
    shown = {(price, "BUY") for price, _ in bids} | {(price, "SELL") for price, _ in asks}
    away = [order for order in orders.working() if (order.price, order.side) not in shown]
    parts: list[Text | Table] = [header, Text(f"asset {target.asset_id}"), ladder]
    if away:
        parts.append(
            Text(
                "ours off the ladder: "
                + ", ".join(
                    f"{order.strategy_id} {order.side} "
                    f"{format_micros(order.size - order.filled_size)} @ "
                    f"{format_micros(order.price)}"
                    for order in away
                )
            )
        )
    return Group(*parts)


async def stream_markets(bus: NatsBus) -> list[tuple[MarketInfo, int]]:
    """Every market the MD stream holds a MarketInfo for, with its subject's partition."""
    subject = bus.namespace.subjects.market_data_kind("market")
    markets = []
    for message in await bus.last_per_subject("MD", [subject]):
        with contextlib.suppress(DecodeError, ValueError):
            event = market_data_decoder.decode(message.data)
            # <prefix...>.md.polymarket.<part>.market.<condition_id>
            part = int(message.subject.rsplit(".", 3)[1])
            if isinstance(event, MarketInfo):
                markets.append((event, part))
    return markets


async def show_book(
    bus: NatsBus,
    target: Target,
    *,
    depth: int,
    once: bool,
    console: Console,
    ready_timeout_s: float = 10.0,
    refresh_s: float = 0.25,
) -> bool:
    """Print the ladder once (when the book is live, or after ``ready_timeout_s`` as it is) or
    refresh it in place until cancelled. Returns whether the asset had a book."""
    orders = WorkingOrders(target.asset_id)

    async def on_order(message: Message) -> None:
        orders.on_message(message)

    order_subject = bus.namespace.subjects.stream_subjects(ORDER_SUBJECTS)
    subscription = await bus.subscribe(order_subject, on_order)
    tradeable = asyncio.Event()

    def on_book(view: BookView, asset_id: str) -> None:
        if asset_id == target.asset_id and view.tradeable(asset_id):
            tradeable.set()

    feed = BookFeed(
        bus,
        partitions=None if target.partition is None else [target.partition],
        on_book=on_book,
        on_state=lambda view, asset_id, _state: on_book(view, asset_id),
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            feed_task = tasks.create_task(feed.run(), name="book.feed")
            async for message in read_stream(bus.nc, bus.namespace, "EXEC", [ORDER_SUBJECTS]):
                orders.on_message(message)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ready_timeout_s):
                    await feed.ready.wait()
                    await tradeable.wait()

            def frame() -> Group:
                return render_ladder(
                    target,
                    feed.view.asset(target.asset_id),
                    orders,
                    depth=depth,
                    now_ns=time.time_ns(),
                )

            if once:
                console.print(frame())
            else:
                with Live(frame(), console=console, auto_refresh=False) as live:
                    while True:
                        await asyncio.sleep(refresh_s)
                        live.update(frame(), refresh=True)
            feed_task.cancel()
    finally:
        await subscription.unsubscribe()
    return feed.view.asset(target.asset_id) is not None
