"""Keeps a :class:`~polybus.common.book_view.core.BookView` current from the bus.

:class:`BookFeed` subscribes to the market data of some partitions (or all), warm-starts from
the MD stream's latest message per subject (the latest snapshot of every book, status, trade
and MarketInfo), then applies live events as they come. When the view reports lost events it
asks the ingest's snapshot endpoint (``md.snapshot.<asset_id>``) for the asset's current book,
falling back to the latest snapshot in the stream, and retries while the asset still waits.

The caller owns its lifetime (STYLE §5): run :meth:`BookFeed.run` as one of its tasks and
cancel it to stop; it unsubscribes on the way out. :attr:`BookFeed.ready` is set once the warm
start is applied and the rebuilds it asked for are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from polybus.common.book_view.core import Applied, AssetState, BookView
from polybus.common.bus import Bus, Message
from polybus.common.events import (
    BookSnapshot,
    BookStatus,
    DecodeError,
    MarketDataStreamEvent,
    MarketInfo,
    MarketResolved,
    Trade,
    market_data_decoder,
)
from polybus.common.subjects import MarketDataKind

_log = structlog.get_logger("polybus.book_view")

BookCallback = Callable[[BookView, str], Awaitable[None] | None]
"""``on_book(view, asset_id)``: the asset's book (or its tick) changed."""
StateCallback = Callable[[BookView, str, AssetState], Awaitable[None] | None]
"""``on_state(view, asset_id, state)``: the asset's state changed (tradeable or not)."""
TradeCallback = Callable[[BookView, Trade], Awaitable[None] | None]
"""``on_trade(view, trade)``: a public trade printed."""

_WARM_START_KINDS: tuple[MarketDataKind, ...] = ("market", "book", "status", "delta", "trade")
"""What a warm start reads per subject: the latest delta and status tell whether the latest
snapshot is still current (their ``seq`` is not past it) or the book needs a fresh one."""


@dataclass(slots=True)
class BookFeedStats:
    messages: int = 0
    decode_errors: int = 0
    warm_start_messages: int = 0
    snapshot_requests: int = 0
    snapshot_request_failures: int = 0
    stream_fallbacks: int = 0
    callback_failures: int = 0


class BookFeed:
    """A :class:`BookView` fed from the bus: warm start, live events, rebuilds on lost events.

    ``partitions`` limits it to those market partitions (None: all). Callbacks may be plain or
    async functions; they run one at a time, in event order, after the view applied the event.
    """

    def __init__(
        self,
        bus: Bus,
        view: BookView | None = None,
        *,
        partitions: Iterable[int] | None = None,
        on_book: BookCallback | None = None,
        on_state: StateCallback | None = None,
        on_trade: TradeCallback | None = None,
        stream: str = "MD",
        request_timeout_s: float = 1.0,
        retry_interval_s: float = 1.0,
        warm_start_timeout_s: float = 10.0,
    ) -> None:
        self.bus = bus
        self.view = view if view is not None else BookView()
        self.partitions = None if partitions is None else sorted(set(partitions))
        self.on_book = on_book
        self.on_state = on_state
        self.on_trade = on_trade
        self.stream = stream
        self.request_timeout_s = request_timeout_s
        self.retry_interval_s = retry_interval_s
        self.warm_start_timeout_s = warm_start_timeout_s
        self.ready = asyncio.Event()
        self.stats = BookFeedStats()
        self._subjects = bus.namespace.subjects
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._partition_of: dict[str, int] = {}
        self._reported: dict[str, AssetState] = {}
        self._rebuilding: dict[str, asyncio.Task[None]] = {}
        self._tasks: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Follow market data until cancelled."""
        subjects = self._subjects
        patterns = (
            [subjects.market_data_all()]
            if self.partitions is None
            else [subjects.market_data_partition(part) for part in self.partitions]
        )
        subscriptions = []
        try:
            # Subscribe before reading the stream, so nothing published in between is missed;
            # what both deliver is recognised by its seq and ignored the second time. One at a
            # time, so the ones made are unsubscribed if a later one fails.
            for pattern in patterns:
                subscriptions.append(await self.bus.subscribe(pattern, self._receive))  # noqa: PERF401
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._warm_start()
                if self._rebuilding:
                    await asyncio.wait(list(self._rebuilding.values()))
                self.ready.set()
                tasks.create_task(self._retry_rebuilds(), name="book_view.retry")
                await self._apply_live()
        finally:
            self._tasks = None
            for subscription in subscriptions:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _receive(self, message: Message) -> None:
        self._inbox.put_nowait(message)

    async def _apply_live(self) -> None:
        inbox = self._inbox
        while True:
            message = await inbox.get()
            await self._handle(message)

    async def _warm_start(self) -> None:
        subjects = self._subjects
        parts: list[int | None] = list(self.partitions) if self.partitions is not None else [None]
        filters = [
            subjects.market_data_kind(kind, part) for part in parts for kind in _WARM_START_KINDS
        ]
        try:
            messages = await self.bus.last_per_subject(
                self.stream, filters, timeout=self.warm_start_timeout_s
            )
        except TimeoutError:
            # Live events still build every book: each asset's first event asks for a snapshot.
            _log.warning("book_view.warm_start_failed", stream=self.stream, error="timeout")
            return
        self.stats.warm_start_messages = len(messages)
        # Snapshots first: the stream order would put an asset's old "live" status before its
        # latest snapshot, and a view with no book yet would take that for lost events.
        messages.sort(key=lambda message: message.subject.rsplit(".", 3)[2] != "book")
        for message in messages:
            await self._handle(message)
        _log.info("book_view.warm_started", messages=len(messages), assets=len(self._reported))

    async def _handle(self, message: Message) -> None:
        self.stats.messages += 1
        try:
            event = market_data_decoder.decode(message.data)
        except DecodeError:
            self.stats.decode_errors += 1
            _log.warning("book_view.undecodable", subject=message.subject)
            return
        if isinstance(event, MarketInfo | MarketResolved):
            self.view.apply(event)
            return
        asset_id = event.asset_id
        if asset_id not in self._partition_of:
            # <prefix...>.md.polymarket.<part>.<kind>.<asset_id>: the stream fallback needs it.
            self._partition_of[asset_id] = int(message.subject.rsplit(".", 3)[1])
        await self._react(asset_id, event, self.view.apply(event))

    async def _react(self, asset_id: str, event: MarketDataStreamEvent, applied: Applied) -> None:
        if applied is Applied.UPDATED:
            if isinstance(event, Trade):
                if self.on_trade is not None:
                    await self._call(self.on_trade, self.view, event)
            elif self.on_book is not None:
                await self._call(self.on_book, self.view, asset_id)
            return
        if applied is Applied.NEEDS_REBUILD:
            self._start_rebuild(asset_id)
        elif applied is not Applied.STATE_CHANGED:
            return
        state = self.view.state(asset_id)
        if self._reported.get(asset_id, AssetState.NEEDS_SNAPSHOT) is not state:
            self._reported[asset_id] = state
            if self.on_state is not None:
                await self._call(self.on_state, self.view, asset_id, state)
        if applied is Applied.STATE_CHANGED and self.on_book is not None:
            await self._call(self.on_book, self.view, asset_id)

    async def _call(self, callback: Callable[..., Awaitable[None] | None], *args: object) -> None:
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            # The user's code failing must not stop the books from being kept.
            self.stats.callback_failures += 1
            _log.exception("book_view.callback_failed", callback=getattr(callback, "__name__", ""))

    # -- rebuilds ----------------------------------------------------------------------------
    def _start_rebuild(self, asset_id: str) -> None:
        if asset_id in self._rebuilding or self._tasks is None:
            return
        self._rebuilding[asset_id] = self._tasks.create_task(
            self._rebuild(asset_id), name=f"book_view.rebuild.{asset_id}"
        )

    async def _rebuild(self, asset_id: str) -> None:
        try:
            reply = await self._request_snapshot(asset_id)
            if reply is not None:
                await self._react(asset_id, reply, self.view.apply_snapshot_reply(reply))
            asset = self.view.asset(asset_id)
            if asset is not None and asset.rebuild_requested:
                await self._snapshot_from_stream(asset_id)
        finally:
            del self._rebuilding[asset_id]

    async def _request_snapshot(self, asset_id: str) -> BookSnapshot | BookStatus | None:
        self.stats.snapshot_requests += 1
        try:
            answer = await self.bus.request(
                self._subjects.snapshot_request(asset_id), b"", timeout=self.request_timeout_s
            )
            reply = market_data_decoder.decode(answer.data)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # No responder, a timeout, a dropped connection, a garbled answer: the stream may
            # still hold a newer snapshot, and the retry loop asks again after that.
            self.stats.snapshot_request_failures += 1
            _log.warning(
                "book_view.snapshot_request_failed", asset_id=asset_id, error=type(error).__name__
            )
            return None
        if isinstance(reply, BookSnapshot | BookStatus) and reply.asset_id == asset_id:
            return reply
        self.stats.snapshot_request_failures += 1
        return None

    async def _snapshot_from_stream(self, asset_id: str) -> None:
        part = self._partition_of.get(asset_id)
        if part is None:
            return
        self.stats.stream_fallbacks += 1
        try:
            messages = await self.bus.last_per_subject(
                self.stream, [self._subjects.book(part, asset_id)], timeout=self.request_timeout_s
            )
        except TimeoutError:
            return
        for message in messages:
            await self._handle(message)

    async def _retry_rebuilds(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval_s)
            for asset_id in self.view.rebuilds_pending():
                self._start_rebuild(asset_id)
