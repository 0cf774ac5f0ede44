"""The paper venue: our orders filled against the public book, conservatively, without I/O."""

from polybus.common.paper import (
    FAK_NOT_FILLED,
    FOK_NOT_FILLED,
    INVALID_EXPIRATION,
    INVALID_ORDER,
    MARKET_NOT_READY,
    POST_ONLY_CROSSES,
    POST_ONLY_TYPE,
    PaperFill,
    PaperMatcher,
    PaperOrder,
    PaperOrderUpdate,
)
from polybus.executor.paper.venue import (
    PaperVenue,
    PaperVenueTrade,
    paper_order_id,
)

__all__ = [
    "FAK_NOT_FILLED",
    "FOK_NOT_FILLED",
    "INVALID_EXPIRATION",
    "INVALID_ORDER",
    "MARKET_NOT_READY",
    "POST_ONLY_CROSSES",
    "POST_ONLY_TYPE",
    "PaperFill",
    "PaperMatcher",
    "PaperOrder",
    "PaperOrderUpdate",
    "PaperVenue",
    "PaperVenueTrade",
    "paper_order_id",
]
