"""The events on the bus (DESIGN §3): frozen, keyword-only msgspec Structs with a ``type`` tag.

Every event carries the envelope (``event_id``, ``ts_event``, ``ts_init``, ``correlation_id``,
``causation_id``); market-data events add ``asset_id``, ``condition_id``, ``seq`` and ``epoch``.
Prices and sizes are micro-unit ints (:mod:`polybus.common.money`); timestamps are ns since the
epoch. Wire structs evolve additively: new fields get defaults, unknown fields are ignored.

Each stream has one union (``MarketDataEvent``, ``IntentEvent``, ``ExecutionEvent``, …) and one
decoder built once; :func:`encode` and :func:`decode` are the shared codecs.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """The envelope every event carries. The ``type`` tag is the class name."""

    event_id: str
    ts_event: int
    """Venue time (or the time the fact happened), ns since the epoch."""
    ts_init: int
    """Local time when this event was created, ns since the epoch."""
    correlation_id: str = ""
    causation_id: str = ""


class MarketDataEvent(Event, frozen=True, kw_only=True):
    """Market data about one asset (outcome token)."""

    asset_id: str
    condition_id: str
    seq: int
    """+1 per book event of this asset within an ``epoch`` (snapshot, delta, status)."""
    epoch: int
    """A new epoch starts when an ingest instance starts or a book is rebuilt from scratch."""


class Level(msgspec.Struct, frozen=True, array_like=True):
    """One price level: encoded as ``[price, size]`` in micro-units."""

    price: int
    size: int


Side = Literal["BUY", "SELL"]
"""BUY is the bid side of a book / a buy order; SELL the ask side / a sell order."""


class BookSnapshot(MarketDataEvent, frozen=True, kw_only=True):
    """The full L2 book of one asset. Levels are best first: bids descending, asks ascending."""

    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    tick_size: int
    min_order_size: int = 0
    venue_hash: str = ""


class LevelChange(msgspec.Struct, frozen=True, array_like=True):
    """A level's new absolute size (0 removes it): ``[side, price, size]``."""

    side: Side
    price: int
    size: int


class BookDelta(MarketDataEvent, frozen=True, kw_only=True):
    """The levels one venue batch changed, and the book's best bid/ask after it."""

    changes: tuple[LevelChange, ...]
    best_bid: int | None
    best_ask: int | None


class Trade(MarketDataEvent, frozen=True, kw_only=True):
    """A public trade print (the venue's ``last_trade_price``); ``side`` is the taker's."""

    price: int
    size: int
    side: Side
    fee_rate_bps: int = 0


class TickSizeChanged(MarketDataEvent, frozen=True, kw_only=True):
    """The asset's tick size changed; orders on the old grid are rejected from now on."""

    old_tick_size: int
    new_tick_size: int


BookState = Literal["live", "stale", "resyncing", "closed"]


class BookStatus(MarketDataEvent, frozen=True, kw_only=True):
    """A transition of the book's state, with the reason (``snapshot``, ``bbo_mismatch``, …)."""

    status: BookState
    reason: str


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    outcome: str


ExchangeVersion = Literal["2", "3"]
"""The EIP-712 exchange domain a market's orders are signed in (VENUE §0, §2.1): ``"2"``
CTFExchangeV2 (CTF markets, token ids), ``"3"`` ExchangeV3 (Protocol V2 markets, position ids)."""


class MarketInfo(Event, frozen=True, kw_only=True):
    """A market's static facts, from Gamma: outcomes and tokens, tick, minimum size, fees."""

    condition_id: str
    question: str
    slug: str
    outcomes: tuple[Outcome, ...]
    tick_size: int
    min_order_size: int
    neg_risk: bool = False
    neg_risk_market_id: str = ""
    """The neg-risk event id; all outcomes of one event share a partition."""
    fee_rate: int = 0
    """Taker fee rate in micro-units (0.07 -> 70_000)."""
    fee_exponent: int = 1
    end_date_ns: int = 0
    active: bool = True
    closed: bool = False
    volume_24h: int = 0
    liquidity: int = 0
    neg_risk_augmented: bool = False
    """The neg-risk event is augmented (Gamma ``negRiskAugmented``): it has placeholder and
    "Other" outcomes, so its named outcomes are not a complete set (VENUE §3.6)."""
    neg_risk_market_count: int = 0
    """How many markets the neg-risk event has (Gamma's event ``markets``); 0 when unknown."""
    exchange_version: ExchangeVersion = "2"
    """Which exchange its orders go to, from Gamma's ``version`` (``"v1"`` -> ``"2"``,
    ``"v2"`` -> ``"3"``); the executor signs every order of the market in this domain."""


class MarketResolved(Event, frozen=True, kw_only=True):
    condition_id: str
    winning_asset_id: str
    winning_outcome: str


TimeInForce = Literal["GTC", "GTD", "FOK", "FAK"]
IntentAction = Literal["place", "cancel", "replace"]


class OrderIntent(Event, frozen=True, kw_only=True):
    """A strategy's wish; the executor turns it into venue orders after its risk checks.

    ``intent_id`` is the client order id and the ``Nats-Msg-Id``. ``cancel``/``replace`` name
    the order they act on in ``target_intent_id``.
    """

    intent_id: str
    strategy_id: str
    action: IntentAction
    condition_id: str
    asset_id: str
    side: Side = "BUY"
    price: int = 0
    size: int = 0
    time_in_force: TimeInForce = "GTC"
    post_only: bool = False
    expires_at_ns: int = 0
    target_intent_id: str = ""
    reason: str = ""
    partition: int = 0
    """The partition of the market's group key (DESIGN §4) the strategy drove it under."""
    lease_revision: int = 0
    """The revision of the strategy replica's partition lease when it made this intent; the
    executor refuses an intent whose revision is no longer current (fencing, DESIGN §5).
    0: made without a lease (a single replica), not fenced."""


OrderStatus = Literal[
    "submitted",
    "accepted",
    "rejected",
    "partially_filled",
    "filled",
    "canceled",
    "expired",
    "unknown",
]


class OrderEvent(Event, frozen=True, kw_only=True):
    """Every state change of an order."""

    order_id: str
    """The client order id (the intent id that placed it)."""
    strategy_id: str
    condition_id: str
    asset_id: str
    status: OrderStatus
    venue_order_id: str = ""
    side: Side = "BUY"
    price: int = 0
    size: int = 0
    filled_size: int = 0
    reason: str = ""
    """For ``rejected``: a stable code (:data:`RejectReason` for the executor's own refusals,
    ``venue_rejected`` for the venue's); for other states a short cause."""
    detail: str = ""
    """Human-readable detail of ``reason`` (the venue's message, the limit and the value)."""


RejectReason = Literal[
    "malformed_intent",
    "invalid_intent",
    "unknown_market",
    "unknown_order",
    "price_out_of_range",
    "off_tick",
    "below_min_size",
    "intent_too_old",
    "book_not_live",
    "max_order_notional",
    "max_notional_per_minute",
    "max_open_orders",
    "max_position_market",
    "max_position_total",
    "loss_stop",
    "halted",
    "breaker_open",
    "stale_lease",
    "venue_rejected",
]
"""Why an order was rejected: the stable codes of ``OrderEvent.reason`` (docs/executor.md)."""


SettlementStatus = Literal["MATCHED", "MINED", "CONFIRMED", "RETRYING", "FAILED"]


class Fill(Event, frozen=True, kw_only=True):
    """A (part) execution of one of our orders, with the venue's settlement status."""

    fill_id: str
    """The venue trade id; a fill is re-published on every settlement status change."""
    order_id: str
    strategy_id: str
    condition_id: str
    asset_id: str
    side: Side
    price: int
    size: int
    fee: int = 0
    """Micro-units of the asset the venue takes the fee in (VENUE §6.5), as it reports it:
    shares on a BUY (the venue keeps them: ``size - fee`` shares arrive), pUSD on a SELL
    (taken from the proceeds); 0 for a maker fill."""
    liquidity: Literal["maker", "taker"] = "taker"
    settlement: SettlementStatus = "MATCHED"
    venue_order_id: str = ""


class PositionSnapshot(Event, frozen=True, kw_only=True):
    strategy_id: str
    condition_id: str
    asset_id: str
    size: int
    """Signed shares in micro-units, from CONFIRMED fills."""
    provisional_size: int = 0
    """Signed shares including fills that are matched but not yet confirmed."""
    average_price: int = 0
    realized_pnl: int = 0
    """pUSD micro-units from CONFIRMED fills, fees included."""
    provisional_average_price: int = 0
    provisional_realized_pnl: int = 0
    """As ``average_price``/``realized_pnl``, including matched but unconfirmed fills."""
    fees: int = 0
    """The pUSD value of the fees on the counted (not FAILED) fills (a BUY's share fee valued
    at its fill price), micro-units."""
    mark_price: int = 0
    unrealized_pnl: int = 0
    """The provisional position valued at ``mark_price`` against its cost (0 without a mark)."""


RiskKind = Literal["limit_hit", "halt", "resume", "one_legged", "venue_mismatch"]
"""What a :class:`RiskEvent` reports:

- ``limit_hit``: the executor refused an intent at a configured limit or switch;
- ``halt`` / ``resume``: trading was switched off or on again;
- ``one_legged``: a complete-set attempt filled unevenly; ``limit`` says what its policy made
  of it (a strategy's ``Report``);
- ``venue_mismatch``: reconciliation found venue orders or trades this executor did not know.
"""


class RiskEvent(Event, frozen=True, kw_only=True):
    strategy_id: str
    kind: RiskKind
    limit: str = ""
    """The limit or switch concerned (a :data:`RejectReason` code such as ``breaker_open``)."""
    detail: str = ""
    condition_id: str = ""


HealthStatus = Literal["starting", "healthy", "degraded", "stopping"]


class ServiceHealth(Event, frozen=True, kw_only=True):
    """A service's heartbeat: written to the health KV bucket and read by ``polybus status``."""

    service: str
    instance: str
    status: HealthStatus
    detail: str = ""
    version: str = ""
    pid: int = 0
    started_ns: int = 0


class DeadLetter(Event, frozen=True, kw_only=True):
    """Input a service could not process, kept verbatim so nothing is lost."""

    source: str
    reason: str
    raw: str
    subject: str = ""


MarketDataStreamEvent: TypeAlias = (
    BookSnapshot | BookDelta | Trade | TickSizeChanged | BookStatus | MarketInfo | MarketResolved
)
IntentStreamEvent: TypeAlias = OrderIntent
ExecutionStreamEvent: TypeAlias = OrderEvent | Fill | PositionSnapshot | RiskEvent
AnyEvent: TypeAlias = (
    MarketDataStreamEvent | IntentStreamEvent | ExecutionStreamEvent | ServiceHealth | DeadLetter
)

_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder(AnyEvent)
market_data_decoder = msgspec.json.Decoder(MarketDataStreamEvent)
intent_decoder = msgspec.json.Decoder(IntentStreamEvent)
execution_decoder = msgspec.json.Decoder(ExecutionStreamEvent)
health_decoder = msgspec.json.Decoder(ServiceHealth)
dead_letter_decoder = msgspec.json.Decoder(DeadLetter)

DecodeError = msgspec.DecodeError
"""Raised by the decoders on malformed bytes or a payload that does not fit the union."""


def encode(event: Event) -> bytes:
    """Encode any event as compact JSON (readable in ``nats sub``)."""
    return _encoder.encode(event)


def decode(data: bytes | str) -> AnyEvent:
    """Decode any polybus event by its ``type`` tag."""
    event: AnyEvent = _any_decoder.decode(data)
    return event


def type_name(event: Event) -> str:
    """The event's stable ``type`` tag (also sent as the ``Polybus-Type`` header)."""
    return type(event).__name__
