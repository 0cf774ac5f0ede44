"""Settings of the [ingest] section of a deployment file."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from polybus.common.config import Port, PositiveSeconds, ServiceSettings

NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class IngestSettings(ServiceSettings, frozen=True):
    """Where the venue is, which markets to follow, and how books are checked and healed."""

    metrics_port: Port = 9101

    # -- venue endpoints (the live venue by default; config/sim.toml points at the simulator)
    market_ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    clob_url: str = "https://clob.polymarket.com"
    gamma_url: str = "https://gamma-api.polymarket.com"

    # -- market selection: explicit lists, and/or discovery from Gamma
    condition_ids: tuple[str, ...] = ()
    slugs: tuple[str, ...] = ()
    token_ids: tuple[str, ...] = ()
    """Explicit token ids; their whole market (every outcome) is subscribed."""
    discover: bool = True
    """Add the top ``discover_top_n`` active, order-book-enabled markets from Gamma."""
    discover_top_n: Annotated[int, msgspec.Meta(ge=0)] = 50
    discover_rank_by: Literal["volume_24h", "liquidity"] = "volume_24h"
    discover_tags: tuple[str, ...] = ()
    """Keep only markets carrying one of these tag slugs or labels (empty: any)."""
    discover_end_after_days: NonNegativeSeconds = 0.0
    """Skip markets ending sooner than this many days from now (0: no limit)."""
    discover_end_before_days: NonNegativeSeconds = 0.0
    """Skip markets ending later than this many days from now (0: no limit)."""
    discover_page_size: Annotated[int, msgspec.Meta(ge=1, le=500)] = 500
    discover_max_pages: PositiveInt = 20
    refresh_interval_s: PositiveSeconds = 300.0
    """Re-run the selection (new markets subscribed, closed/resolved ones dropped)."""
    new_market_refresh_delay_s: NonNegativeSeconds = 5.0
    """After a ``new_market`` event, refresh once this long later (several coalesce)."""

    # -- several ingests: split the markets
    instances: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    """How many ingest processes ``polybus up`` starts (children ``ingest-<k>``, each
    ``polybus ingest --replica k``); more than one splits the markets (``split_markets`` is
    implied). Ingest k > 0 serves ``/metrics`` on a free port, which ``polybus status`` shows."""
    split_markets: bool = False
    """Split the market partitions with the other ingests of this deployment through leases in
    the LEASES bucket (docs/architecture.md, "Leases"): each follows only the markets of the
    partitions it holds, so every market is ingested by exactly one of them at a time. Set it
    wherever more than one ingest may run (compose: ``--scale ingest=N``)."""
    lease_group: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = (
        "ingest"
    )
    """The ingests that split one market selection (all of them run the same selection)."""

    # -- connections
    max_assets_per_socket: Annotated[int, msgspec.Meta(ge=1, le=500)] = 200
    subscribe_chunk: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    ping_interval_s: PositiveSeconds = 10.0
    stall_timeout_s: PositiveSeconds = 30.0
    """Socket watchdog: no data frame (PONGs do not count) for this long -> reconnect."""
    reconnect_initial_s: PositiveSeconds = 0.5
    reconnect_max_s: PositiveSeconds = 30.0
    connect_timeout_s: PositiveSeconds = 10.0

    # -- books: checks, resync and snapshots
    first_snapshot_timeout_s: PositiveSeconds = 30.0
    """Per asset: no snapshot this long after (re)subscribing -> re-subscribe it."""
    resubscribe_attempts: Annotated[int, msgspec.Meta(ge=0)] = 3
    """Re-subscriptions of one asset before it is seeded from REST ``/book``."""
    batch_quiet_s: NonNegativeSeconds = 0.5
    """A batch (an asset's entries with one venue timestamp) may span several frames; it ends
    at the asset's next timestamp or next other event, or once no entry came for this long
    (checked on the ``tick_interval_s`` timer). Its checks run then; see docs/ingest.md."""
    mismatch_grace_s: NonNegativeSeconds = 1.0
    """A failed check that is not yet conclusive (a ``best_bid_ask`` that may precede its
    batch, a batch cut short by a snapshot) waits this long before the book is declared stale."""
    crossed_grace_s: NonNegativeSeconds = 5.0
    """The venue's book can be crossed for a few messages; longer than this -> resync."""
    hash_check_interval_s: NonNegativeSeconds = 0.0
    """Recompute the venue's book hash at most this often per asset; 0 (the default): after
    every batch. The book keeps its hash inputs encoded, so a hash is one join and one SHA-1 of
    the book (a few µs); a positive value samples it, for a machine that cannot afford that
    (the best bid/ask check runs on every batch regardless); see docs/ingest.md."""
    snapshot_interval_s: NonNegativeSeconds = 60.0
    """Publish a BookSnapshot of every live book this often (0: only on venue snapshots)."""
    publish_backlog_max: Annotated[int, msgspec.Meta(ge=0)] = 50_000
    """Events waiting to go to NATS past which the socket readers stop reading until half of
    them have gone (the venue's socket buffers meanwhile): memory stays bounded under a flood
    and nothing is dropped. 0: no bound."""
    delta_buffer_max: PositiveInt = 10_000
    """Deltas kept per resyncing asset for replay past a REST seed; older ones are dropped."""
    http_timeout_s: PositiveSeconds = 10.0
    rest_concurrency: PositiveInt = 8
    tick_interval_s: PositiveSeconds = 0.25
    """How often timers (grace, snapshot deadlines, periodic snapshots, metrics) run."""

    @property
    def splits_markets(self) -> bool:
        """Whether this ingest leases its partitions (explicitly, or one of several under up)."""
        return self.split_markets or self.instances > 1
