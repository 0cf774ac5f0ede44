"""The event tables: how each event becomes a row, and how that row becomes the same event again.

One table per event type (``migrations/0001_core.sql``). A table's ``columns`` name the values
of a row (:meth:`EventTable.row`), in order; ``stage_columns`` are what the recorder COPYs into
its staging table. While inserting, PostgreSQL computes the idempotency key ``event_key``
(``md5(event_id)::uuid``) and the ``ts_event`` TIMESTAMPTZ of queries (from ``ts_event_ns``, to
the microsecond), so the recorder builds neither per row. Most events are flat: their fields map
one to one onto columns (``ts_event``/``ts_init`` become the exact ``ts_event_ns``/``ts_init_ns``).
Books store their levels as parallel BIGINT arrays, markets their outcomes as parallel TEXT
arrays.

Per-asset market data (:class:`MarketDataTable`) is keyed by the asset dictionary
(``migrations/0004_asset_dictionary.sql``): its rows begin with the event's ``token_id`` (the
event's ``asset_id``) and ``condition_id``, which the store replaces by the pair's integer
``asset_id`` before the COPY; readers join ``assets`` back (:attr:`EventTable.query`).

:meth:`EventTable.event` is the inverse of :meth:`EventTable.row`: every field is stored, so an
event read back is equal to the one recorded (tested for every type).
"""

from __future__ import annotations

import functools
import operator
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

_TS_EVENT = "timestamptz 'epoch' + ts_event_ns / 1000 * interval '1 microsecond'"
"""``ts_event`` from ``ts_event_ns``, exact to the microsecond (what :func:`timestamp` gives)."""


class EventTable:
    """A table holding one event type, one row per event (flat: a column per field)."""

    name: str
    event_type: type[Event]
    columns: tuple[str, ...]
    after_insert: ClassVar[str] = ""
    """SQL run after the insert in the same transaction; it may read ``{stage}``."""
    uses_assets: ClassVar[bool] = False
    """Rows begin with (token_id, condition_id), stored as the asset dictionary's key."""

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
            "stream",
            "stream_seq",
            *(("part",) if self.partitioned else ()),
            *(_RENAMED.get(f, f) for f in self._fields),
        )

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("event_key",)

    @property
    def stage_columns(self) -> tuple[str, ...]:
        """The columns of the staging table, in row order (as the store COPYs them)."""
        return self.columns

    @property
    def query(self) -> str:
        """``SELECT`` of every stored column (as ``t``) that :meth:`event` reads back."""
        return f"SELECT t.* FROM {self.name} AS t"  # noqa: S608 - our own names

    def row(self, event: Any, source: Source) -> Row:
        if self.partitioned:
            return (
                source.stream,
                source.stream_seq,
                partition_of_subject(source.subject),
                *msgspec.structs.astuple(event),
            )
        return (source.stream, source.stream_seq, *msgspec.structs.astuple(event))

    def event(self, record: RecordLike) -> Event:
        return self.event_type(**{f: record[_RENAMED.get(f, f)] for f in self._fields})

    def insert_sql(self, stage: str) -> str:
        columns = ", ".join(self.stage_columns)
        return (
            f"INSERT INTO {self.name} (event_key, ts_event, {columns}) "  # noqa: S608 - our own names
            f"SELECT md5(event_id)::uuid, {_TS_EVENT}, {columns} FROM {stage} "
            "ON CONFLICT DO NOTHING"
        )


_ENVELOPE = ("event_id", "ts_event_ns", "ts_init_ns", "correlation_id", "causation_id")
_ASSET = ("token_id", "condition_id")
_SOURCE = ("stream", "stream_seq", "part")
_MARKET_DATA = ("seq", "epoch")


def _require_fields(event_type: type[Event], stored: tuple[str, ...]) -> None:
    """A table that lays out its columns by hand names the fields it stores; a field added
    to the event and not here fails at import instead of vanishing from every row."""
    missing = set(event_type.__struct_fields__) - set(stored)
    if missing:
        raise TypeError(f"{event_type.__name__} fields without a column: {sorted(missing)}")


class MarketDataTable(EventTable):
    """Per-asset market data, keyed by the asset dictionary.

    A row is ``(token_id, condition_id, stream, stream_seq, part, <envelope>, seq, epoch, …)``;
    the store stages ``(asset_id, stream, …)``, the pair replaced by its integer key.
    """

    uses_assets = True
    _QUERY = (
        "SELECT t.*, a.token_id, a.condition_id FROM {name} AS t JOIN assets AS a USING (asset_id)"
    )

    def __init__(self, name: str, event_type: type[MarketDataEvent]) -> None:
        super().__init__(name, event_type)
        fields = event_type.__struct_fields__
        own = tuple(f for f in fields if f not in MarketDataEvent.__struct_fields__)
        self.columns = (*_ASSET, *_SOURCE, *_ENVELOPE, *_MARKET_DATA, *own)
        # Flat types: the event's tuple (astuple order) picked into the row's order in C.
        order = ("event_id", "ts_event", "ts_init", "correlation_id", "causation_id",
                 *_MARKET_DATA, *own)  # fmt: skip
        self._pick = operator.itemgetter(*(fields.index(f) for f in order))
        self._asset_index = (fields.index("asset_id"), fields.index("condition_id"))

    @property
    def stage_columns(self) -> tuple[str, ...]:
        return ("asset_id", *self.columns[len(_ASSET) :])

    @property
    def query(self) -> str:
        return self._QUERY.format(name=self.name)

    def row(self, event: Any, source: Source) -> Row:
        values = msgspec.structs.astuple(event)
        token, condition = self._asset_index
        return (
            values[token],
            values[condition],
            source.stream,
            source.stream_seq,
            partition_of_subject(source.subject),
            *self._pick(values),
        )

    def event(self, record: RecordLike) -> Event:
        event_type: Any = self.event_type
        return event_type(  # type: ignore[no-any-return]
            asset_id=record["token_id"],
            condition_id=record["condition_id"],
            **{f: record[_RENAMED.get(f, f)] for f in self._fields if f not in _FROM_ASSETS},
        )


_FROM_ASSETS = frozenset(("asset_id", "condition_id"))


class BookSnapshotTable(MarketDataTable):
    def __init__(self) -> None:
        super().__init__("book_snapshots", BookSnapshot)
        _require_fields(
            BookSnapshot,
            ("asset_id", "condition_id", "event_id", "ts_event", "ts_init", "correlation_id",
             "causation_id", *_MARKET_DATA, "tick_size", "min_order_size", "venue_hash", "bids",
             "asks"),
        )  # fmt: skip
        self.columns = (
            *_ASSET,
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
            e.asset_id,
            e.condition_id,
            source.stream,
            source.stream_seq,
            partition_of_subject(source.subject),
            e.event_id,
            e.ts_event,
            e.ts_init,
            e.correlation_id,
            e.causation_id,
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
            asset_id=record["token_id"],
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


class BookDeltaTable(MarketDataTable):
    def __init__(self) -> None:
        super().__init__("book_deltas", BookDelta)
        _require_fields(
            BookDelta,
            ("asset_id", "condition_id", "event_id", "ts_event", "ts_init", "correlation_id",
             "causation_id", *_MARKET_DATA, "best_bid", "best_ask", "changes"),
        )  # fmt: skip
        self.columns = (
            *_ASSET,
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
        changes = e.changes
        if len(changes) == 1:
            # Most deltas change one level: no lists to grow, no join.
            [change] = changes
            sides, prices, sizes = change.side[0], [change.price], [change.size]
        else:
            sides = "".join([change.side[0] for change in changes])  # "B"(UY) / "S"(ELL)
            prices = [change.price for change in changes]
            sizes = [change.size for change in changes]
        return (
            e.asset_id,
            e.condition_id,
            source.stream,
            source.stream_seq,
            partition_of_subject(source.subject),
            e.event_id,
            e.ts_event,
            e.ts_init,
            e.correlation_id,
            e.causation_id,
            e.seq,
            e.epoch,
            e.best_bid,
            e.best_ask,
            sides,
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
            asset_id=record["token_id"],
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
        "SELECT o.token_id, s.condition_id, o.outcome, o.ordinal - 1, "
        "timestamptz 'epoch' + s.ts_event_ns / 1000 * interval '1 microsecond' "
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

    uses_assets = False

    def __init__(self, name: str, columns: tuple[str, ...]) -> None:
        self.name = name
        self.columns = columns
        self.stage_columns = columns
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
TRADES = MarketDataTable("trades", Trade)
TICK_SIZE_CHANGES = MarketDataTable("tick_size_changes", TickSizeChanged)
BOOK_STATUS = MarketDataTable("book_status", BookStatus)
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
