"""The book view's core apply rate, beside a bare OrderBook.apply_delta loop in the same run.

    uv run python bench/book_view.py [--assets 200] [--events 300000] [--rounds 5]

Builds a scripted stream as the ingest numbers it (a snapshot per asset, then deltas of 1-3
level changes round-robin over the assets, each with the asset's next ``seq``), decoded
events in memory, no I/O. Measures events/s through ``BookView.apply`` (sequence check, book
update, bookkeeping) and through a bare loop of ``OrderBook.apply_delta`` on the same deltas
(a dict lookup of the book and the levels, nothing else). Best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import random
import time

from polybus.common.book import OrderBook
from polybus.common.book_view import BookView
from polybus.common.events import BookDelta, BookSnapshot, Level, LevelChange

EPOCH = 1_700_000_000_000_000_000


def script(assets: int, events: int, seed: int = 7) -> tuple[list[BookSnapshot], list[BookDelta]]:
    rng = random.Random(seed)
    ids = [f"{10**20 + n}" for n in range(assets)]
    snapshots = [
        BookSnapshot(
            event_id=f"s.{asset}",
            ts_event=1,
            ts_init=1,
            asset_id=asset,
            condition_id="0xc",
            seq=1,
            epoch=EPOCH,
            bids=tuple(Level(500_000 - 10_000 * i, 1_000_000) for i in range(1, 20)),
            asks=tuple(Level(500_000 + 10_000 * i, 1_000_000) for i in range(1, 20)),
            tick_size=10_000,
        )
        for asset in ids
    ]
    seqs = dict.fromkeys(ids, 1)
    deltas = []
    for n in range(events):
        asset = ids[n % assets]
        seqs[asset] += 1
        changes = tuple(
            LevelChange(
                "BUY" if rng.random() < 0.5 else "SELL",
                10_000 * rng.randint(1, 99),
                rng.choice((0, 1_000_000, 2_500_000, 10_000_000)),
            )
            for _ in range(rng.randint(1, 3))
        )
        deltas.append(
            BookDelta(
                event_id=f"d.{n}",
                ts_event=n,
                ts_init=n,
                asset_id=asset,
                condition_id="0xc",
                seq=seqs[asset],
                epoch=EPOCH,
                changes=changes,
                best_bid=None,
                best_ask=None,
            )
        )
    return snapshots, deltas


def through_view(snapshots: list[BookSnapshot], deltas: list[BookDelta]) -> float:
    view = BookView()
    for snapshot in snapshots:
        view.apply(snapshot)
    apply = view.apply
    started = time.perf_counter()
    for delta in deltas:
        apply(delta)
    elapsed = time.perf_counter() - started
    assert view.stats.gaps == 0
    return len(deltas) / elapsed


def bare(snapshots: list[BookSnapshot], deltas: list[BookDelta]) -> float:
    books: dict[str, OrderBook] = {}
    for snapshot in snapshots:
        book = books[snapshot.asset_id] = OrderBook()
        book.apply_snapshot(snapshot)
    started = time.perf_counter()
    for delta in deltas:
        books[delta.asset_id].apply_delta(delta)
    return len(deltas) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    snapshots, deltas = script(args.assets, args.events)
    view_rate = max(through_view(snapshots, deltas) for _ in range(args.rounds))
    bare_rate = max(bare(snapshots, deltas) for _ in range(args.rounds))
    print(f"events: {len(deltas):,} deltas over {args.assets} assets, best of {args.rounds}")
    print(f"BookView.apply           {view_rate:12,.0f} events/s")
    print(f"bare OrderBook.apply_delta {bare_rate:10,.0f} events/s")
    print(f"view / bare              {view_rate / bare_rate:12.2f}")


if __name__ == "__main__":
    main()
