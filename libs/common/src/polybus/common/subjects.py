"""Every NATS subject polybus uses, and the partition function (DESIGN §4).

Subjects go broad to narrow and carry routing dimensions only::

    md.polymarket.<part>.book.<asset_id>        BookSnapshot
    md.polymarket.<part>.delta.<asset_id>       BookDelta
    md.polymarket.<part>.status.<asset_id>      BookStatus, TickSizeChanged
    md.polymarket.<part>.trade.<asset_id>       Trade
    md.polymarket.<part>.market.<condition_id>  MarketInfo, MarketResolved
    md.snapshot.<asset_id>                      snapshot request/reply (outside the MD stream)
    intent.<strategy_id>.<condition_id>         OrderIntent
    exec.<strategy_id>.<kind>.<condition_id>    OrderEvent, Fill, PositionSnapshot, RiskEvent
    ctl.<verb>                                  halt / resume / config
    dlq.<source>                                DeadLetter

A :class:`Subjects` carries an optional prefix (a leading token such as ``replay`` or a test's
unique namespace) so that a whole deployment can be moved aside without touching its code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

VENUE = "polymarket"

MarketDataKind = Literal["book", "delta", "status", "trade", "market"]
ExecutionKind = Literal["order", "fill", "position", "risk"]

_FORBIDDEN_IN_TOKEN = frozenset(".*> ")


def _token(value: str, what: str) -> str:
    # An id from the venue ends up inside a subject; a dot or wildcard in it would silently
    # route the message elsewhere, and a control character could inject protocol lines. Refuse
    # both here: this check is why the bus may skip nats-py's per-publish subject regex.
    if (
        not value
        or not value.isascii()
        or not value.isprintable()
        or not _FORBIDDEN_IN_TOKEN.isdisjoint(value)
    ):
        raise ValueError(f"{what} {value!r} is not a valid NATS subject token")
    return value


def check_subject_pattern(subject: str) -> str:
    """Return ``subject`` if it is a valid subject or wildcard pattern, else raise ValueError.

    Operator input (``polybus tail``, streams files) passes through here, because the bus skips
    nats-py's own check: every token follows the builders' token rule, except that ``*`` may
    stand for one token and ``>`` for the rest as the last token. The message names the problem.
    """
    if not subject:
        raise ValueError("the subject is empty")
    if subject != subject.strip() or " " in subject or "\t" in subject:
        raise ValueError(f"subject {subject!r} contains whitespace")
    tokens = subject.split(".")
    for index, piece in enumerate(tokens):
        if not piece:
            raise ValueError(
                f"subject {subject!r} has an empty token (two dots, or a dot at an end)"
            )
        if piece == "*":
            continue
        if piece == ">":
            if index != len(tokens) - 1:
                raise ValueError(f"subject {subject!r}: '>' is allowed only as the last token")
            continue
        try:
            _token(piece, "token")
        except ValueError:
            raise ValueError(
                f"subject {subject!r}: token {piece!r} is not valid (a wildcard must be a whole "
                "token; control and non-ASCII characters are not allowed)"
            ) from None
    return subject


def partition_of(group_key: str, partitions: int) -> int:
    """The partition (0..partitions-1) of a market's group key.

    The group key is the neg-risk event id for neg-risk markets, else the condition id, so all
    outcomes of one event share a partition. Stable across processes, machines and Python
    versions: the first 8 bytes of BLAKE2b-64 of the UTF-8 key, big-endian, modulo P (never
    the built-in ``hash()``, which is salted per process).
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    digest = hashlib.blake2b(group_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def market_partition(condition_id: str, neg_risk_market_id: str, partitions: int) -> int:
    """The partition of a market: by its neg-risk group when it has one, else by its condition
    id (DESIGN §4). The one rule the ingest publishes by and the strategies own markets by."""
    return partition_of(neg_risk_market_id or condition_id, partitions)


@dataclass(frozen=True, slots=True)
class Subjects:
    """Builds subjects and wildcards, optionally under a prefix token (``""`` = none)."""

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix:
            for token in self.prefix.split("."):
                _token(token, "subject prefix token")

    def _join(self, *tokens: str) -> str:
        subject = ".".join(tokens)
        return f"{self.prefix}.{subject}" if self.prefix else subject

    # -- market data -------------------------------------------------------------------------
    def market_data(self, part: int, kind: MarketDataKind, key: str) -> str:
        """``md.polymarket.<part>.<kind>.<asset_id | condition_id>``."""
        return self._join("md", VENUE, str(part), kind, _token(key, f"{kind} key"))

    def book(self, part: int, asset_id: str) -> str:
        return self.market_data(part, "book", asset_id)

    def delta(self, part: int, asset_id: str) -> str:
        return self.market_data(part, "delta", asset_id)

    def status(self, part: int, asset_id: str) -> str:
        return self.market_data(part, "status", asset_id)

    def trade(self, part: int, asset_id: str) -> str:
        return self.market_data(part, "trade", asset_id)

    def market(self, part: int, condition_id: str) -> str:
        return self.market_data(part, "market", condition_id)

    def market_data_all(self) -> str:
        """Every market-data subject (what the MD stream captures)."""
        return self._join("md", VENUE, ">")

    def market_data_partition(self, part: int) -> str:
        return self._join("md", VENUE, str(part), ">")

    def market_data_kind(self, kind: MarketDataKind, part: int | None = None) -> str:
        return self._join("md", VENUE, "*" if part is None else str(part), kind, "*")

    def snapshot_request(self, asset_id: str) -> str:
        """Request/reply endpoint for a fresh snapshot (not captured by any stream)."""
        return self._join("md", "snapshot", _token(asset_id, "asset id"))

    def snapshot_request_all(self) -> str:
        return self._join("md", "snapshot", "*")

    # -- orders ------------------------------------------------------------------------------
    def intent(self, strategy_id: str, condition_id: str) -> str:
        return self._join(
            "intent", _token(strategy_id, "strategy id"), _token(condition_id, "condition id")
        )

    def intent_all(self, strategy_id: str | None = None) -> str:
        return (
            self._join("intent", ">")
            if strategy_id is None
            else self._join("intent", _token(strategy_id, "strategy id"), "*")
        )

    def execution(self, strategy_id: str, kind: ExecutionKind, condition_id: str) -> str:
        return self._join(
            "exec",
            _token(strategy_id, "strategy id"),
            kind,
            _token(condition_id, "condition id"),
        )

    def execution_all(self, strategy_id: str | None = None) -> str:
        return (
            self._join("exec", ">")
            if strategy_id is None
            else self._join("exec", _token(strategy_id, "strategy id"), ">")
        )

    # -- control and diagnostics -------------------------------------------------------------
    def control(self, verb: str) -> str:
        return self._join("ctl", _token(verb, "control verb"))

    def control_all(self) -> str:
        return self._join("ctl", ">")

    def dead_letter(self, source: str) -> str:
        return self._join("dlq", _token(source, "dead-letter source"))

    def dead_letter_all(self) -> str:
        return self._join("dlq", ">")

    def stream_subjects(self, relative: str) -> str:
        """A stream-definition subject (``md.polymarket.>``) under this prefix."""
        return self._join(relative)


@dataclass(frozen=True, slots=True)
class Namespace:
    """Where a deployment lives on a NATS server: its subject prefix and stream-name prefix.

    Tests give every test its own namespace, so many share one server without seeing each
    other's subjects, streams, consumers or KV buckets.
    """

    subject_prefix: str = ""
    stream_prefix: str = ""

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    def stream(self, name: str) -> str:
        """The server-side name of a logical stream (``MD`` -> ``<prefix>MD``)."""
        return f"{self.stream_prefix}{name}"

    def bucket(self, name: str) -> str:
        """The server-side name of a logical KV bucket."""
        return f"{self.stream_prefix}{name}"

    def bucket_stream(self, name: str) -> str:
        """The server-side name of the stream that holds a logical KV bucket (``KV_<bucket>``)."""
        return f"KV_{self.bucket(name)}"
