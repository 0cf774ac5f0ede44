"""Settings of the [sim] section of a deployment file.

Everything the simulator generates (market ids, token ids, initial books, order flow) derives
from ``seed``; two simulators with the same settings serve the same markets and books.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from polybus.common.config import ConfigStruct, Port, ServiceSettings

NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]

RateLimitTier = Literal[
    "standard", "copper", "bronze", "silver", "gold", "platinum", "diamond", "elite"
]


class StartupFaults(ConfigStruct, frozen=True):
    """Faults switched on from the start (the CLI's ``--config`` way to inject them)."""

    post_only_s: NonNegativeFloat = 0.0
    """Start in post-only mode for this long (503 ``post_only_mode`` for other orders)."""
    cancel_only_s: NonNegativeFloat = 0.0
    restart_s: NonNegativeFloat = 0.0
    """Start inside a matching-engine restart window (425 on order endpoints)."""
    slow_response_ms: NonNegativeInt = 0
    """Delay every HTTP response by this much."""


class SimSettings(ServiceSettings, frozen=True):
    """The simulator: one HTTP port serving CLOB REST, both WebSockets, Gamma and ``/admin``."""

    metrics_port: Port = 9103
    host: str = "127.0.0.1"
    port: Port = 8080
    """0 picks a free port (tests); ``polybus up`` uses the fixed default."""
    connect_bus: bool = True
    """Connect to NATS like every service (health heartbeat, ``nats micro ls``). False runs the
    simulator alone, with no NATS at all (a laptop on a train)."""

    # -- the market universe ---------------------------------------------------------------
    seed: int = 1
    binary_markets: Annotated[int, msgspec.Meta(ge=0, le=2500)] = 50
    neg_risk_events: Annotated[int, msgspec.Meta(ge=0, le=500)] = 5
    outcomes_per_event: Annotated[int, msgspec.Meta(ge=2, le=30)] = 4
    """Each neg-risk outcome is a binary market of its own (2 tokens)."""
    min_order_size: Annotated[int, msgspec.Meta(ge=1)] = 5
    """Shares (whole numbers) for every market."""
    protocol_v2_markets: Annotated[int, msgspec.Meta(ge=0, le=500)] = 0
    """Binary Protocol V2 markets (position ids, ExchangeV3, EIP-712 domain "3") after the
    CTF markets and the neg-risk events; Gamma says ``"version": "v2"`` for them."""

    # -- order flow ------------------------------------------------------------------------
    flow: bool = True
    """Generate order flow from the start (``pause_flow``/``/admin/flow/pause`` stop it)."""
    changes_per_second: NonNegativeFloat = 200.0
    """Level changes per second across all markets; each is one ``price_change`` message with
    two entries (the token and its mirror)."""
    flow_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    """One batch (one timestamp) per interval."""
    trade_probability: Probability = 0.06
    """Share of flow actions that are marketable orders (trades, re-sent books)."""
    max_events_per_frame: Annotated[int, msgspec.Meta(ge=1)] = 500
    """Events that arrive together are sent as one JSON array of at most this many."""
    mispricing_interval_s: NonNegativeFloat = 0.0
    """Every so often make a neg-risk event's YES asks sum below 1 (0 = never)."""
    mispricing_duration_ms: Annotated[int, msgspec.Meta(ge=1)] = 300
    mispricing_edge: Annotated[int, msgspec.Meta(gt=0, lt=500_000)] = 20_000
    """Micro-units: the YES asks of an event sum to 1 - edge (0.02 = 20_000)."""
    tick_size_changes: bool = True
    """Switch a market to tick 0.001 when its book trades beyond 0.04/0.96."""
    custom_feature_interval_s: NonNegativeFloat = 0.0
    """Every so often create a market (``new_market``) and resolve one (``market_resolved``)."""

    # -- market WebSocket ------------------------------------------------------------------
    subscribe_timeout_s: PositiveFloat = 10.0
    """A market/user socket that has not subscribed by then is closed."""
    max_pending_events: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    """A subscriber this far behind is disconnected (the venue drops slow readers too)."""

    # -- capture replay --------------------------------------------------------------------
    capture_file: str = ""
    """JSONL capture served verbatim to every market subscriber instead of simulated data."""
    capture_pace: Literal["recorded", "max"] = "recorded"

    # -- trading ---------------------------------------------------------------------------
    starting_collateral: Annotated[int, msgspec.Meta(ge=0)] = 1_000_000
    """pUSD (whole units) every new account starts with."""
    starting_shares: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    """Shares of every token every new account starts with (so SELLs work)."""
    rate_limit_tier: RateLimitTier = "standard"
    heartbeat_timeout_s: PositiveFloat = 10.0
    """All of an API key's orders are canceled this long after its last accepted heartbeat."""
    post_only_after_restart_s: NonNegativeFloat = 120.0
    settlement_mined_ms: NonNegativeInt = 300
    settlement_confirmed_ms: NonNegativeInt = 1_000
    settlement_failure_probability: Probability = 0.0
    taker_fee_bps: Annotated[int, msgspec.Meta(ge=0, le=2500)] = 0
    """Every market's taker fee rate in basis points (700 = 0.07), charged by the venue's rule
    (:mod:`polybus.common.fees`): shares x rate x (p x (1 - p)) ** exponent."""
    taker_fee_exponent: Annotated[int, msgspec.Meta(ge=0, le=4)] = 1
    query_page_size: Annotated[int, msgspec.Meta(ge=1, le=500)] = 500
    """Items per page of ``/data/orders`` and ``/data/trades`` (the venue's is 500)."""

    startup_faults: StartupFaults = StartupFaults()
