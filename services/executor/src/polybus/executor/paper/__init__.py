"""The paper venue: our orders filled against the public book, conservatively, without I/O."""

from polybus.executor.paper.matching import (
    FAK_NOT_FILLED,
    FOK_NOT_FILLED,
    INVALID_EXPIRATION,
    INVALID_ORDER,
    POST_ONLY_CROSSES,
    POST_ONLY_TYPE,
    PaperFill,
    PaperMatcher,
    PaperOrder,
    PaperOrderUpdate,
)

__all__ = [
    "FAK_NOT_FILLED",
    "FOK_NOT_FILLED",
    "INVALID_EXPIRATION",
    "INVALID_ORDER",
    "POST_ONLY_CROSSES",
    "POST_ONLY_TYPE",
    "PaperFill",
    "PaperMatcher",
    "PaperOrder",
    "PaperOrderUpdate",
]
