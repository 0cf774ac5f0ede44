"""The write path: durable pull consumers → batches → the store → acks.

One loop per stream. Each pulls a batch (bounded by ``batch_max_events`` and
``batch_max_delay_s``), decodes it into rows, writes the rows in one idempotent transaction and
only then acks every message of the batch. While a batch is written the next one is fetched,
and no more than that: backpressure is the durable consumer's pending count on the server, not
a buffer here.

- The database is unreachable: the same batch is retried with exponential backoff, nothing is
  acked, and the held messages are kept from redelivery with ``in_progress``; afterwards the
  consumer catches up from where it stopped.
- A message does not decode (or the database refuses its row): it is stored verbatim in
  ``undecodable_messages`` with its subject, headers and the reason, and acked with its batch,
  so it never blocks the stream.
- A message is delivered again (the recorder died between commit and ack): its row is already
  there and the insert skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import structlog

from polybus.common.bus import Bus, Delivery, PullConsumer
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import DecodeError, decode
from polybus.common.streams import ConsumerDefinition
from polybus.common.subjects import Namespace
from polybus.recorder import metrics
from polybus.recorder.config import RecorderSettings
from polybus.recorder.store import Batch, RowsRejected, Store, StoreUnavailable
from polybus.recorder.tables import (
    CONTROL_MESSAGES,
    TABLE_FOR_TYPE,
    UNDECODABLE_MESSAGES,
    Row,
    Source,
    Table,
)

_log = structlog.get_logger("polybus.recorder")

_KV_OPERATION = "KV-Operation"
"""Header of a KV delete/purge marker: no value, nothing to record."""

_headers_encoder = msgspec.json.Encoder()


class StopRequested(Exception):
    """The service is stopping while a batch could not be committed; it stays unacked."""


@dataclass(slots=True)
class _Entry:
    delivery: Delivery
    table: Table
    row: Row


def _text(value: str) -> str:
    # PostgreSQL text and JSONB cannot hold NUL; a dead letter must always be storable.
    return value.replace("\x00", "\\0")


def _headers_json(delivery: Delivery) -> str:
    headers = {_text(key): _text(value) for key, value in delivery.headers.items()}
    return _headers_encoder.encode(headers).decode()


def undecodable_row(delivery: Delivery, source: Source, error: str) -> Row:
    return (
        source.stream,
        source.stream_seq,
        datetime.now(UTC),
        source.subject,
        _text(error),
        _headers_json(delivery),
        bytes(delivery.data),
    )


def _bare_dead_letter(row: Row) -> Row:
    """The dead letter reduced to what any database takes: no headers, a fixed reason."""
    stream, sequence, received, subject, _, _, raw = row
    return (stream, sequence, received, subject, "unstorable: see raw", "{}", raw)


def control_row(delivery: Delivery, source: Source) -> Row:
    return (
        source.stream,
        source.stream_seq,
        datetime.now(UTC),
        source.subject,
        source.subject.rsplit(".", 1)[-1],
        _headers_json(delivery),
        bytes(delivery.data),
    )


class ConsumerLoop:
    """Records one stream: fetch, decode, write, ack, until stopped."""

    def __init__(
        self,
        *,
        label: str,
        stream: str,
        consumer: PullConsumer,
        store: Store,
        settings: RecorderSettings,
        stop: asyncio.Event,
        raw: bool = False,
        ack_wait_s: float = 30.0,
    ) -> None:
        self.label = label
        """The logical stream (MD, EXEC, …, HEALTH): logs and metric labels."""
        self.stream = stream
        """The server-side stream name, stored in every row beside the sequence."""
        self.consumer = consumer
        self.store = store
        self.settings = settings
        self.stop = stop
        self.raw = raw
        """Store messages verbatim (the CTL audit log) instead of decoding events."""
        self.ack_wait_s = ack_wait_s
        self.unavailable_since: float | None = None
        self._flush = metrics.FLUSH_SECONDS.labels(label)
        self._batch_size = metrics.BATCH_EVENTS.labels(label)
        self._acked = metrics.EVENTS_ACKED.labels(label)
        self._redelivered = metrics.REDELIVERIES.labels(label)
        self._database_up = metrics.DATABASE_UP.labels(label)
        self._next: asyncio.Future[list[Delivery]] | None = None

    # -- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Record until stopped. While one batch is being written, the next one is fetched:
        the database and this process then work at the same time. At most two batches are
        in hand, and neither is acked before its own commit."""
        _log.info("recorder.consumer_started", stream=self.stream, consumer=self.consumer.name)
        unacked: list[Delivery] = []
        try:
            unacked = await self.fetch_batch()
            while not self.stop.is_set():
                if not unacked:
                    unacked = await self.fetch_batch()
                    continue
                self._next = asyncio.ensure_future(self.fetch_batch())
                await self.record(unacked)
                unacked = []
                unacked = await self._next
                self._next = None
        except StopRequested:
            pass
        finally:
            await self._hand_back(unacked)
            close = getattr(self.consumer, "close", None)
            if close is not None:
                await close()
            await self.store.close()
            _log.info("recorder.consumer_stopped", stream=self.stream)

    async def _hand_back(self, unacked: list[Delivery]) -> None:
        """On stop, nak what was fetched but not committed: another replica (or this one after a
        restart) gets it at once instead of after the ack wait."""
        fetching, self._next = self._next, None
        if fetching is not None:
            if not fetching.done():
                fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                unacked = unacked + await fetching
        for delivery in unacked:
            with contextlib.suppress(Exception):
                await delivery.nak()

    async def fetch_batch(self) -> list[Delivery]:
        """Up to ``batch_max_events`` messages, waiting at most ``batch_max_delay_s`` for more
        once the first arrived."""
        settings = self.settings
        deliveries = await self.consumer.fetch(settings.batch_max_events, settings.fetch_timeout_s)
        if not deliveries or settings.batch_max_delay_s <= 0:
            return deliveries
        deadline = time.monotonic() + settings.batch_max_delay_s
        while len(deliveries) < settings.batch_max_events and not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                break
            more = await self.consumer.fetch(settings.batch_max_events - len(deliveries), remaining)
            if not more:
                break
            deliveries.extend(more)
        return deliveries

    async def record(self, deliveries: Sequence[Delivery]) -> None:
        """Write one batch (retrying until it is committed), then ack all of it."""
        entries = self.entries(deliveries)
        started = time.perf_counter()
        inserted = await self._commit(entries)
        self._flush.observe(time.perf_counter() - started)
        self._batch_size.observe(len(deliveries))
        staged: dict[str, int] = defaultdict(int)
        for entry in entries:
            staged[entry.table.name] += 1
        for table, count in staged.items():
            new = inserted.get(table, 0)
            metrics.ROWS_WRITTEN.labels(table).inc(new)
            if count > new:
                metrics.DUPLICATE_ROWS.labels(table).inc(count - new)
        acked = 0
        for delivery in deliveries:
            try:
                await delivery.ack()
            except Exception as error:
                # The rows are committed: a lost ack only means a redelivery, which dedups.
                _log.warning("recorder.ack_failed", stream=self.stream, error=repr(error))
                break
            acked += 1
        self._acked.inc(acked)

    # -- decoding ------------------------------------------------------------------------------
    def entries(self, deliveries: Sequence[Delivery]) -> list[_Entry]:
        entries: list[_Entry] = []
        for delivery in deliveries:
            if delivery.num_delivered > 1:
                self._redelivered.inc()
            source = Source(self.stream, delivery.stream_sequence, delivery.subject)
            if self.raw:
                entries.append(_Entry(delivery, CONTROL_MESSAGES, control_row(delivery, source)))
                continue
            if delivery.headers.get(_KV_OPERATION):
                continue
            try:
                event = decode(delivery.data)
                table = TABLE_FOR_TYPE[type(event)]
                row = table.row(event, source)
            except (DecodeError, KeyError, ValueError) as error:
                metrics.DEAD_LETTERS.labels(self.label, "undecodable").inc()
                _log.warning(
                    "recorder.undecodable",
                    stream=self.stream,
                    stream_seq=source.stream_seq,
                    subject=source.subject,
                    error=str(error),
                )
                row = undecodable_row(delivery, source, f"undecodable: {error}")
                entries.append(_Entry(delivery, UNDECODABLE_MESSAGES, row))
                continue
            entries.append(_Entry(delivery, table, row))
        return entries

    # -- writing -------------------------------------------------------------------------------
    @staticmethod
    def _batch(entries: Sequence[_Entry]) -> Batch:
        batch: dict[Table, list[Row]] = {}
        for entry in entries:
            batch.setdefault(entry.table, []).append(entry.row)
        return batch

    async def _commit(self, entries: list[_Entry]) -> dict[str, int]:
        """Write until committed; back off while the store is unavailable."""
        attempt = 0
        last_touch = time.monotonic()
        while True:
            try:
                try:
                    inserted = await self.store.write(self._batch(entries))
                except RowsRejected:
                    inserted = await self._isolate_rejected(entries)
            except StoreUnavailable as error:
                attempt += 1
                metrics.WRITE_FAILURES.labels(self.label).inc()
                self._database_up.set(0)
                if self.unavailable_since is None:
                    self.unavailable_since = time.monotonic()
                    _log.warning(
                        "recorder.database_unavailable", stream=self.stream, error=str(error)
                    )
                delay = min(
                    self.settings.backoff_max_s,
                    self.settings.backoff_initial_s * 2 ** min(attempt - 1, 30),
                )
                # Full jitter on the upper half: instances do not retry in lockstep.
                delay *= 0.5 + random.random() / 2  # noqa: S311 - not cryptographic
                if time.monotonic() - last_touch > self.ack_wait_s / 3:
                    await self._keep_alive(entries)
                    last_touch = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    raise StopRequested from None
                continue
            if self.unavailable_since is not None:
                _log.info(
                    "recorder.database_available",
                    stream=self.stream,
                    outage_s=round(time.monotonic() - self.unavailable_since, 3),
                    attempts=attempt,
                )
                self.unavailable_since = None
            self._database_up.set(1)
            return inserted

    async def _keep_alive(self, entries: Sequence[_Entry]) -> None:
        """Tell the server the held messages (and a prefetched batch) are still being worked
        on, so they are not redelivered while the database is away."""
        held = [entry.delivery for entry in entries]
        if self._next is not None and self._next.done() and not self._next.cancelled():
            with contextlib.suppress(Exception):
                held += self._next.result()
        for delivery in held:
            with contextlib.suppress(Exception):
                await delivery.in_progress()

    async def _isolate_rejected(self, entries: list[_Entry]) -> dict[str, int]:
        """The store refused the batch: write row by row; a refused row becomes a dead letter.

        Rare (a value PostgreSQL cannot hold, like a NUL character in a text), so simple beats
        fast here. A StoreUnavailable propagates and the whole batch is retried; rows written
        before it are then skipped as duplicates.
        """
        inserted: dict[str, int] = defaultdict(int)
        for index, entry in enumerate(entries):
            try:
                written = await self.store.write({entry.table: [entry.row]})
            except RowsRejected as error:
                source = Source(self.stream, entry.delivery.stream_sequence, entry.delivery.subject)
                metrics.DEAD_LETTERS.labels(self.label, "rejected").inc()
                _log.warning(
                    "recorder.row_rejected",
                    stream=self.stream,
                    stream_seq=source.stream_seq,
                    subject=source.subject,
                    table=entry.table.name,
                    error=str(error),
                )
                if entry.table is UNDECODABLE_MESSAGES:
                    row = _bare_dead_letter(entry.row)
                else:
                    row = undecodable_row(entry.delivery, source, f"rejected by the store: {error}")
                entries[index] = _Entry(entry.delivery, UNDECODABLE_MESSAGES, row)
                try:
                    written = await self.store.write({UNDECODABLE_MESSAGES: [row]})
                except RowsRejected:
                    written = await self.store.write(
                        {UNDECODABLE_MESSAGES: [_bare_dead_letter(row)]}
                    )
            for table, count in written.items():
                inserted[table] += count
        return dict(inserted)


def build_loop(
    bus: Bus,
    namespace: Namespace,
    definition: ConsumerDefinition,
    store: Store,
    settings: RecorderSettings,
    stop: asyncio.Event,
) -> ConsumerLoop | None:
    """The loop for one consumer definition; None if this bus cannot serve it (no KV twin)."""
    consumer: PullConsumer
    label = definition.bucket or definition.stream
    if definition.bucket:
        if not isinstance(bus, NatsBus):
            return None  # the in-memory twin has no KV buckets
        consumer = bus.bucket_consumer(definition.bucket, definition.durable)
    else:
        consumer = bus.pull_consumer(definition.stream, definition.durable)
    return ConsumerLoop(
        label=label,
        stream=definition.server_stream(namespace),
        consumer=consumer,
        store=store,
        settings=settings,
        stop=stop,
        raw=label in settings.verbatim_streams,
        ack_wait_s=definition.ack_wait_s,
    )


def build_loops(
    bus: Bus,
    namespace: Namespace,
    definitions: Sequence[ConsumerDefinition],
    settings: RecorderSettings,
    stop: asyncio.Event,
    store_factory: Callable[[], Store],
) -> list[ConsumerLoop]:
    """A loop (with its own store connection) for each definition this bus can serve."""
    loops = []
    for definition in definitions:
        loop = build_loop(bus, namespace, definition, store_factory(), settings, stop)
        if loop is not None:
            loops.append(loop)
    return loops
