"""A book at a point in time: the nearest earlier snapshot plus the deltas after it.

The ingest numbers every book event of an asset (snapshot, delta, status) with ``seq`` within an
``epoch``; the rebuild applies the epoch's deltas after the snapshot in ``seq`` order up to the
requested time and reports any sequence numbers missing from the store (the book may then be
wrong, and says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from polybus.common.book import OrderBook
from polybus.common.events import BookDelta, BookSnapshot
from polybus.recorder.tables import BOOK_DELTAS, BOOK_SNAPSHOTS, nanoseconds


@dataclass
class RebuiltBook:
    snapshot: BookSnapshot
    """The recorded snapshot the rebuild started from."""
    book: BookSnapshot
    """The rebuilt book: the snapshot's fields with the levels and ``seq`` after the deltas."""
    deltas_applied: int
    missing_seqs: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing_seqs


_SNAPSHOT_SQL = (
    f"{BOOK_SNAPSHOTS.query} WHERE a.token_id = $1 AND t.ts_event <= $2 "
    "ORDER BY t.ts_event DESC, t.seq DESC LIMIT 1"
)
_DELTAS_SQL = (
    f"{BOOK_DELTAS.query} WHERE a.token_id = $1 AND t.ts_event >= $2 AND t.ts_event <= $3 "
    "AND t.epoch = $4 AND t.seq > $5 ORDER BY t.seq"
)
# Status and tick-size events share the book's sequence numbers: they count for gap detection.
_OTHER_SEQS_SQL = """
WITH asset AS (SELECT asset_id FROM assets WHERE token_id = $1)
SELECT seq FROM book_status
WHERE asset_id IN (SELECT asset_id FROM asset)
  AND ts_event >= $2 AND ts_event <= $3 AND epoch = $4 AND seq > $5
UNION
SELECT seq FROM tick_size_changes
WHERE asset_id IN (SELECT asset_id FROM asset)
  AND ts_event >= $2 AND ts_event <= $3 AND epoch = $4 AND seq > $5
"""


async def book_at(
    connection: asyncpg.Connection, asset_id: str, at: datetime
) -> RebuiltBook | None:
    """The asset's book as of ``at`` (inclusive), or None if no snapshot was recorded before."""
    record = await connection.fetchrow(_SNAPSHOT_SQL, asset_id, at)
    if record is None:
        return None
    snapshot = BOOK_SNAPSHOTS.event(record)
    assert isinstance(snapshot, BookSnapshot)
    since = record["ts_event"]
    arguments = (asset_id, since, at, snapshot.epoch, snapshot.seq)
    deltas = [BOOK_DELTAS.event(r) for r in await connection.fetch(_DELTAS_SQL, *arguments)]
    seen = {delta.seq for delta in deltas if isinstance(delta, BookDelta)}
    seen.update(r["seq"] for r in await connection.fetch(_OTHER_SEQS_SQL, *arguments))
    book = OrderBook()
    book.apply_snapshot(snapshot)
    last_seq = snapshot.seq
    for delta in deltas:
        assert isinstance(delta, BookDelta)
        book.apply_delta(delta)
    if seen:
        last_seq = max(seen)
    missing = sorted(set(range(snapshot.seq + 1, last_seq + 1)) - seen)
    bids, asks = book.levels()
    now = time.time_ns()
    rebuilt = BookSnapshot(
        event_id=f"rebuilt:{asset_id}:{snapshot.epoch}:{last_seq}",
        ts_event=nanoseconds(at),
        ts_init=now,
        asset_id=asset_id,
        condition_id=snapshot.condition_id,
        seq=last_seq,
        epoch=snapshot.epoch,
        bids=bids,
        asks=asks,
        tick_size=snapshot.tick_size,
        min_order_size=snapshot.min_order_size,
        causation_id=snapshot.event_id,
    )
    return RebuiltBook(
        snapshot=snapshot, book=rebuilt, deltas_applied=len(deltas), missing_seqs=missing
    )
