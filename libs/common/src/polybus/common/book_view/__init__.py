"""The consumer-side book view: every followed asset's verified book, from the bus.

One implementation for the paper executor and every strategy. :class:`BookView` is the pure
core (events in, books and their state out, no I/O: a replay or a backtest drives it
directly); :class:`BookFeed` keeps one current from NATS (warm start from the MD stream, live
events, rebuilds from the ingest's snapshot endpoint when events were lost).

Reading::

    view.tradeable(asset_id)   # LIVE: complete, in sequence, trusted by the ingest
    view.book(asset_id)        # OrderBook (micro-unit prices and sizes)
    view.tick(asset_id), view.min_size(asset_id), view.market(condition_id)

See docs/architecture.md, "Consumer-side book view".
"""

from polybus.common.book_view.core import (
    Applied,
    AssetBook,
    AssetState,
    BookView,
    BookViewStats,
)
from polybus.common.book_view.feed import BookFeed, BookFeedStats

__all__ = [
    "Applied",
    "AssetBook",
    "AssetState",
    "BookFeed",
    "BookFeedStats",
    "BookView",
    "BookViewStats",
]
