"""The event tables: how each event becomes a row, and how that row becomes the same event again.

One table per event type (``migrations/0001_core.sql``). A table's ``columns`` are what the
recorder COPYs into its staging table, in row order; the idempotency key ``event_key`` is
computed by PostgreSQL from ``event_id`` (``md5(event_id)::uuid``) while inserting. Most events
are flat: their fields map one to one onto columns (``ts_event``/``ts_init`` become the exact
``ts_event_ns``/``ts_init_ns``, plus a ``ts_event`` TIMESTAMPTZ for queries). Books store their
levels as parallel BIGINT arrays, markets their outcomes as parallel TEXT arrays.

:meth:`EventTable.event` is the inverse of :meth:`EventTable.row`: every field is stored, so an
event read back is equal to the one recorded (tested for every type).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

import msgspec

from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    DeadLetter,
    Event,
    Fill,
    Level,
    LevelChange,
    MarketDataEvent,
    MarketInfo,
    MarketResolved,
    OrderEvent,
    OrderIntent,
    Outcome,
    PositionSnapshot,
    RiskEvent,
    ServiceHealth,
    TickSizeChanged,
    Trade,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMALLINT_MAX = 32767

Row = tuple[Any, ...]


class RecordLike(Protocol):
    """A row read back: an asyncpg ``Record`` or a plain dict of column -> value."""

    def __getitem__(self, key: str, /) -> Any: ...


def timestamp(ns: int) -> datetime:
    """Nanoseconds since the epoch as a UTC datetime (microsecond precision, exact)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def nanoseconds(moment: datetime) -> int:
    """A datetime as nanoseconds since the epoch (exact to the microsecond)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@dataclass(frozen=True, slots=True)
class Source:
    """Where the recorder read a message: stream (server-side name), sequence, subject."""

    stream: str
    stream_seq: int
    subject: str


@functools.lru_cache(maxsize=65536)
def partition_of_subject(subject: str) -> int | None:
    """The ``<part>`` token of ``[prefix.]md.polymarket.<part>.<kind>.<key>``, if it is one."""
    tokens = subject.rsplit(".", 3)
    if len(tokens) < 4 or not tokens[1].isdigit():
        return None
    part = int(tokens[1])
    return part if part <= _SMALLINT_MAX else None


_RENAMED = {"ts_event": "ts_event_ns", "ts_init": "ts_init_ns", "limit": "limit_name"}


class EventTable:
    """A table holding one event type, one row per event (flat: a column per field)."""

    name: str
    event_type: type[Event]
    columns: tuple[str, ...]
    after_insert: ClassVar[str] = ""
    """SQL run after the insert in the same transaction; it may read ``{stage}``."""

    def __init__(
        self, name: str, event_type: type[Event], *, partitioned: bool | None = None
    ) -> None:
        self.name = name
        self.event_type = event_type
        self._fields = event_type.__struct_fields__
        self.partitioned = (
            issubclass(event_type, MarketDataEvent) if partitioned is None else partitioned
        )
        """Published on a market-data subject: the row keeps the subject's partition."""
        self.columns = (
            "ts_event",
            "stream",
            "stream_seq",
            *(("part",) if self.partitioned else ()),
            *(_RENAMED.get(f, f) for f in self._fields),
        )

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("event_key",)

    def row(self, event: Any, source: Source) -> Row:
        if self.partitioned:
            return (
                timestamp(event.ts_event),
                source.stream,
                source.stream_seq,
                partition_of_subject(source.subject),
                *msgspec.structs.astuple(event),
            )
        return (
            timestamp(event.ts_event),
            source.stream,
            source.stream_seq,
            *msgspec.structs.astuple(event),
        )

    def event(self, record: RecordLike) -> Event:
        return self.event_type(**{f: record[_RENAMED.get(f, f)] for f in self._fields})

    def insert_sql(self, stage: str) -> str:
        columns = ", ".join(self.columns)
        return (
            f"INSERT INTO {self.name} (event_key, {columns}) "  # noqa: S608 - our own names
            f"SELECT md5(event_id)::uuid, {columns} FROM {stage} ON CONFLICT DO NOTHING"
        )


_ENVELOPE = ("event_id", "ts_event_ns", "ts_init_ns", "correlation_id", "causation_id")
_MARKET_DATA = ("asset_id", "condition_id", "seq", "epoch")
_SOURCE = ("ts_event", "stream", "stream_seq", "part")


def _require_fields(event_type: type[Event], stored: tuple[str, ...]) -> None:
    """A table that lays out its columns by hand names the fields it stores; a field added
    to the event and not here fails at import instead of vanishing from every row."""
    missing = set(event_type.__struct_fields__) - set(stored)
    if missing:
        raise TypeError(f"{event_type.__name__} fields without a column: {sorted(missing)}")


class BookSnapshotTable(EventTable):
    def __init__(self) -> None:
        super().__init__("book_snapshots", BookSnapshot)
        _require_fields(
            BookSnapshot,
            ("event_id", "ts_event", "ts_init", "correlation_id", "causation_id",
             *_MARKET_DATA, "tick_size", "min_order_size", "venue_hash", "bids", "asks"),
        )  # fmt: skip
        self.columns = (
            *_SOURCE,
            *_ENVELOPE,
            *_MARKET_DATA,
            "tick_size",
            "min_order_size",
            "venue_hash",
            "bid_prices",
            "bid_sizes",
            "ask_prices",
            "ask_sizes",
        )

    def row(self, event: Any, source: Source) -> Row:
        e: BookSnapshot = event
        return (
            timestamp(e.ts_event),
            source.stream,
            source.stream_seq,
            partition_of_subject(source.subject),
            e.event_id,
            e.ts_event,
            e.ts_init,
            e.correlation_id,
            e.causation_id,
            e.asset_id,
            e.condition_id,
            e.seq,
            e.epoch,
            e.tick_size,
            e.min_order_size,
            e.venue_hash,
            [level.price for level in e.bids],
            [level.size for level in e.bids],
            [level.price for level in e.asks],
            [level.size for level in e.asks],
        )

    def event(self, record: RecordLike) -> Event:
        return BookSnapshot(
            event_id=record["event_id"],
            ts_event=record["ts_event_ns"],
            ts_init=record["ts_init_ns"],
            correlation_id=record["correlation_id"],
            causation_id=record["causation_id"],
            asset_id=record["asset_id"],
            condition_id=record["condition_id"],
            seq=record["seq"],
            epoch=record["epoch"],
            bids=tuple(map(Level, record["bid_prices"], record["bid_sizes"])),
            asks=tuple(map(Level, record["ask_prices"], record["ask_sizes"])),
            tick_size=record["tick_size"],
            min_order_size=record["min_order_size"],
            venue_hash=record["venue_hash"],
        )


_LETTER_SIDE: dict[str, Any] = {"B": "BUY", "S": "SELL"}


class BookDeltaTable(EventTable):
    def __init__(self) -> None:
        super().__init__("book_deltas", BookDelta)
        _require_fields(
            BookDelta,
            ("event_id", "ts_event", "ts_init", "correlation_id", "causation_id",
             *_MARKET_DATA, "best_bid", "best_ask", "changes"),
        )  # fmt: skip
        self.columns = (
            *_SOURCE,
            *_ENVELOPE,
            *_MARKET_DATA,
            "best_bid",
            "best_ask",
            "change_sides",
            "change_prices",
            "change_sizes",
        )

    def row(self, event: Any, source: Source) -> Row:
        e: BookDelta = event
        sides, prices, sizes = [], [], []
        for change in e.changes:
            sides.append(change.side[0])  # "B"(UY) / "S"(ELL)
            prices.append(change.price)
            sizes.append(change.size)
        return (
            timestamp(e.ts_event),
            source.stream,
            source.stream_seq,
            partition_of_subject(source.subject),
            e.event_id,
            e.ts_event,
            e.ts_init,
            e.correlation_id,
            e.causation_id,
            e.asset_id,
            e.condition_id,
            e.seq,
            e.epoch,
            e.best_bid,
            e.best_ask,
            "".join(sides),
            prices,
            sizes,
        )

    def event(self, record: RecordLike) -> Event:
        return BookDelta(
            event_id=record["event_id"],
            ts_event=record["ts_event_ns"],
            ts_init=record["ts_init_ns"],
            correlation_id=record["correlation_id"],
            causation_id=record["causation_id"],
            asset_id=record["asset_id"],
            condition_id=record["condition_id"],
            seq=record["seq"],
            epoch=record["epoch"],
            changes=tuple(
                LevelChange(_LETTER_SIDE[side], price, size)
                for side, price, size in zip(
                    record["change_sides"],
                    record["change_prices"],
                    record["change_sizes"],
                    strict=True,
                )
            ),
            best_bid=record["best_bid"],
            best_ask=record["best_ask"],
        )


class MarketTable(EventTable):
    after_insert = (
        "INSERT INTO outcomes (token_id, condition_id, outcome, outcome_index, first_seen) "
        "SELECT o.token_id, s.condition_id, o.outcome, o.ordinal - 1, s.ts_event "
        "FROM {stage} AS s, "
        "unnest(s.outcome_token_ids, s.outcome_names) WITH ORDINALITY "
        "AS o(token_id, outcome, ordinal) "
        "ON CONFLICT (token_id) DO NOTHING"
    )

    _PLAIN = tuple(
        name
        for name in MarketInfo.__struct_fields__
        if name not in Event.__struct_fields__ and name != "outcomes"
    )
    """Every field but the envelope and the outcomes, derived so a new field gets its column
    (a missing column fails the insert loudly instead of dropping the field)."""

    def __init__(self) -> None:
        super().__init__("markets", MarketInfo)
        self.columns = (
            *_SOURCE,
            *_ENVELOPE,
            *self._PLAIN,
            "end_date",
            "outcome_names",
            "outcome_token_ids",
        )

    def row(self, event: Any, source: Source) -> Row:
        e: MarketInfo = event
        return (
            timestamp(e.ts_event),
            source.stream,
            source.stream_seq,
            partition_of_subject(source.subject),
            e.event_id,
            e.ts_event,
            e.ts_init,
            e.correlation_id,
            e.causation_id,
            *(getattr(e, name) for name in self._PLAIN),
            timestamp(e.end_date_ns) if e.end_date_ns else None,
            [outcome.outcome for outcome in e.outcomes],
            [outcome.token_id for outcome in e.outcomes],
        )

    def event(self, record: RecordLike) -> Event:
        return MarketInfo(
            event_id=record["event_id"],
            ts_event=record["ts_event_ns"],
            ts_init=record["ts_init_ns"],
            correlation_id=record["correlation_id"],
            causation_id=record["causation_id"],
            outcomes=tuple(
                Outcome(token_id=token_id, outcome=outcome)
                for token_id, outcome in zip(
                    record["outcome_token_ids"], record["outcome_names"], strict=True
                )
            ),
            **{name: record[name] for name in self._PLAIN},
        )


class RawTable:
    """A table of verbatim bus messages keyed by (stream, stream_seq): no event to decode."""

    def __init__(self, name: str, columns: tuple[str, ...]) -> None:
        self.name = name
        self.columns = columns
        self.after_insert = ""

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("stream", "stream_seq")

    def insert_sql(self, stage: str) -> str:
        columns = ", ".join(self.columns)
        return (
            f"INSERT INTO {self.name} ({columns}) "  # noqa: S608 - our own names
            f"SELECT {columns} FROM {stage} ON CONFLICT DO NOTHING"
        )


BOOK_SNAPSHOTS = BookSnapshotTable()
BOOK_DELTAS = BookDeltaTable()
TRADES = EventTable("trades", Trade)
TICK_SIZE_CHANGES = EventTable("tick_size_changes", TickSizeChanged)
BOOK_STATUS = EventTable("book_status", BookStatus)
MARKETS = MarketTable()
MARKET_RESOLUTIONS = EventTable("market_resolutions", MarketResolved, partitioned=True)
INTENTS = EventTable("intents", OrderIntent)
ORDER_EVENTS = EventTable("order_events", OrderEvent)
FILLS = EventTable("fills", Fill)
POSITIONS = EventTable("positions", PositionSnapshot)
RISK_EVENTS = EventTable("risk_events", RiskEvent)
SERVICE_HEALTH = EventTable("service_health", ServiceHealth)
DEAD_LETTERS = EventTable("dead_letters", DeadLetter)

CONTROL_MESSAGES = RawTable(
    "control_messages",
    ("stream", "stream_seq", "received_at", "subject", "verb", "headers", "payload"),
)
UNDECODABLE_MESSAGES = RawTable(
    "undecodable_messages",
    ("stream", "stream_seq", "received_at", "subject", "error", "headers", "raw"),
)

EVENT_TABLES: tuple[EventTable, ...] = (
    BOOK_SNAPSHOTS,
    BOOK_DELTAS,
    TRADES,
    TICK_SIZE_CHANGES,
    BOOK_STATUS,
    MARKETS,
    MARKET_RESOLUTIONS,
    INTENTS,
    ORDER_EVENTS,
    FILLS,
    POSITIONS,
    RISK_EVENTS,
    SERVICE_HEALTH,
    DEAD_LETTERS,
)
TABLE_FOR_TYPE: dict[type[Event], EventTable] = {t.event_type: t for t in EVENT_TABLES}

MARKET_DATA_TABLES: tuple[EventTable, ...] = (
    BOOK_SNAPSHOTS,
    BOOK_DELTAS,
    TRADES,
    TICK_SIZE_CHANGES,
    BOOK_STATUS,
)
"""Per-asset market data: what replay and ``db snapshot`` read."""

Table = EventTable | RawTable
ALL_TABLES: tuple[Table, ...] = (*EVENT_TABLES, CONTROL_MESSAGES, UNDECODABLE_MESSAGES)
