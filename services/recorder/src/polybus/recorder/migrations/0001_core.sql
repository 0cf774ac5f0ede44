-- polybus event store, core schema: works on plain PostgreSQL (>= 13).
--
-- One table per event kind. Every event row carries:
--   event_key    md5(event_id) as a UUID: the idempotency key. A 16-byte key keeps the primary
--                key index small (event ids of market data embed 77-digit asset ids).
--   event_id     the event's id, verbatim (deterministic at the source).
--   ts_event     venue/fact time as TIMESTAMPTZ (microseconds): the time column of queries,
--                of retention and of TimescaleDB's hypertables.
--   ts_event_ns, ts_init_ns   the exact nanosecond timestamps of the event.
--   stream, stream_seq        where the recorder read it (JetStream stream and sequence), so
--                gaps and duplicates can be checked by sequence.
-- The primary key is (event_key, ts_event): TimescaleDB requires the partition column in every
-- unique index, and an event's ts_event is as deterministic as its id. Per-asset market data
-- leads its key with asset_id, (asset_id, ts_event, event_key): the one index then serves both
-- idempotency and the per-asset time-range reads of replay and `db snapshot` (a second
-- (asset_id, ts_event) index would cost as much again on every insert).
-- Prices, sizes and money are BIGINT micro-units (0.53 -> 530000), never floats.

-- ---------------------------------------------------------------------------------------------
-- Market data (stream MD)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE book_snapshots (
    event_key       UUID        NOT NULL,
    ts_event        TIMESTAMPTZ NOT NULL,
    ts_event_ns     BIGINT      NOT NULL,
    ts_init_ns      BIGINT      NOT NULL,
    stream_seq      BIGINT      NOT NULL,
    seq             BIGINT      NOT NULL,
    epoch           BIGINT      NOT NULL,
    tick_size       BIGINT      NOT NULL,
    min_order_size  BIGINT      NOT NULL,
    part            SMALLINT,
    event_id        TEXT        NOT NULL,
    correlation_id  TEXT        NOT NULL,
    causation_id    TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    asset_id        TEXT        NOT NULL,
    condition_id    TEXT        NOT NULL,
    venue_hash      TEXT        NOT NULL,
    -- Levels best first as parallel arrays: bid_prices[i] pairs with bid_sizes[i].
    bid_prices      BIGINT[]    NOT NULL,
    bid_sizes       BIGINT[]    NOT NULL,
    ask_prices      BIGINT[]    NOT NULL,
    ask_sizes       BIGINT[]    NOT NULL,
    PRIMARY KEY (asset_id, ts_event, event_key)
);
CREATE INDEX book_snapshots_condition_time ON book_snapshots (condition_id, ts_event);

CREATE TABLE book_deltas (
    event_key       UUID        NOT NULL,
    ts_event        TIMESTAMPTZ NOT NULL,
    ts_event_ns     BIGINT      NOT NULL,
    ts_init_ns      BIGINT      NOT NULL,
    stream_seq      BIGINT      NOT NULL,
    seq             BIGINT      NOT NULL,
    epoch           BIGINT      NOT NULL,
    best_bid        BIGINT,
    best_ask        BIGINT,
    part            SMALLINT,
    event_id        TEXT        NOT NULL,
    correlation_id  TEXT        NOT NULL,
    causation_id    TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    asset_id        TEXT        NOT NULL,
    condition_id    TEXT        NOT NULL,
    -- The changed levels in venue order: change_sides[i] is 'B' (bid) or 'S' (ask) for
    -- change_prices[i] / change_sizes[i] (a size of 0 removes the level).
    change_sides    TEXT        NOT NULL,
    change_prices   BIGINT[]    NOT NULL,
    change_sizes    BIGINT[]    NOT NULL,
    PRIMARY KEY (asset_id, ts_event, event_key)
);

CREATE TABLE trades (
    event_key       UUID        NOT NULL,
    ts_event        TIMESTAMPTZ NOT NULL,
    ts_event_ns     BIGINT      NOT NULL,
    ts_init_ns      BIGINT      NOT NULL,
    stream_seq      BIGINT      NOT NULL,
    seq             BIGINT      NOT NULL,
    epoch           BIGINT      NOT NULL,
    price           BIGINT      NOT NULL,
    size            BIGINT      NOT NULL,
    fee_rate_bps    BIGINT      NOT NULL,
    part            SMALLINT,
    event_id        TEXT        NOT NULL,
    correlation_id  TEXT        NOT NULL,
    causation_id    TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    asset_id        TEXT        NOT NULL,
    condition_id    TEXT        NOT NULL,
    side            TEXT        NOT NULL,
    PRIMARY KEY (asset_id, ts_event, event_key)
);

CREATE TABLE tick_size_changes (
    event_key       UUID        NOT NULL,
    ts_event        TIMESTAMPTZ NOT NULL,
    ts_event_ns     BIGINT      NOT NULL,
    ts_init_ns      BIGINT      NOT NULL,
    stream_seq      BIGINT      NOT NULL,
    seq             BIGINT      NOT NULL,
    epoch           BIGINT      NOT NULL,
    old_tick_size   BIGINT      NOT NULL,
    new_tick_size   BIGINT      NOT NULL,
    part            SMALLINT,
    event_id        TEXT        NOT NULL,
    correlation_id  TEXT        NOT NULL,
    causation_id    TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    asset_id        TEXT        NOT NULL,
    condition_id    TEXT        NOT NULL,
    PRIMARY KEY (asset_id, ts_event, event_key)
);

CREATE TABLE book_status (
    event_key       UUID        NOT NULL,
    ts_event        TIMESTAMPTZ NOT NULL,
    ts_event_ns     BIGINT      NOT NULL,
    ts_init_ns      BIGINT      NOT NULL,
    stream_seq      BIGINT      NOT NULL,
    seq             BIGINT      NOT NULL,
    epoch           BIGINT      NOT NULL,
    part            SMALLINT,
    event_id        TEXT        NOT NULL,
    correlation_id  TEXT        NOT NULL,
    causation_id    TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    asset_id        TEXT        NOT NULL,
    condition_id    TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    reason          TEXT        NOT NULL,
    PRIMARY KEY (asset_id, ts_event, event_key)
);

-- Every MarketInfo as it was published (history); outcomes as parallel arrays in venue order.
CREATE TABLE markets (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    tick_size           BIGINT      NOT NULL,
    min_order_size      BIGINT      NOT NULL,
    fee_rate            BIGINT      NOT NULL,
    end_date            TIMESTAMPTZ,
    end_date_ns         BIGINT      NOT NULL,
    volume_24h          BIGINT      NOT NULL,
    liquidity           BIGINT      NOT NULL,
    fee_exponent        INTEGER     NOT NULL,
    part                SMALLINT,
    neg_risk            BOOLEAN     NOT NULL,
    active              BOOLEAN     NOT NULL,
    closed              BOOLEAN     NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    condition_id        TEXT        NOT NULL,
    question            TEXT        NOT NULL,
    slug                TEXT        NOT NULL,
    neg_risk_market_id  TEXT        NOT NULL,
    outcome_names       TEXT[]      NOT NULL,
    outcome_token_ids   TEXT[]      NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX markets_condition_time ON markets (condition_id, ts_event);

-- Token -> market, filled from every recorded MarketInfo (a token's market never changes).
CREATE TABLE outcomes (
    token_id        TEXT        PRIMARY KEY,
    condition_id    TEXT        NOT NULL,
    outcome         TEXT        NOT NULL,
    outcome_index   INTEGER     NOT NULL,
    first_seen      TIMESTAMPTZ NOT NULL
);
CREATE INDEX outcomes_condition ON outcomes (condition_id);

CREATE TABLE market_resolutions (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    part                SMALLINT,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    condition_id        TEXT        NOT NULL,
    winning_asset_id    TEXT        NOT NULL,
    winning_outcome     TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX market_resolutions_condition ON market_resolutions (condition_id);

-- Time-range scans (prune, replay windows across assets) on append-only tables: a BRIN index
-- costs a few kilobytes where a b-tree would cost as much as the table's key column.
CREATE INDEX book_snapshots_time_brin ON book_snapshots USING brin (ts_event);
CREATE INDEX book_deltas_time_brin ON book_deltas USING brin (ts_event);
CREATE INDEX trades_time_brin ON trades USING brin (ts_event);
CREATE INDEX tick_size_changes_time_brin ON tick_size_changes USING brin (ts_event);
CREATE INDEX book_status_time_brin ON book_status USING brin (ts_event);

-- ---------------------------------------------------------------------------------------------
-- Orders (streams INTENT and EXEC)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE intents (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    price               BIGINT      NOT NULL,
    size                BIGINT      NOT NULL,
    expires_at_ns       BIGINT      NOT NULL,
    post_only           BOOLEAN     NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    intent_id           TEXT        NOT NULL,
    strategy_id         TEXT        NOT NULL,
    action              TEXT        NOT NULL,
    condition_id        TEXT        NOT NULL,
    asset_id            TEXT        NOT NULL,
    side                TEXT        NOT NULL,
    time_in_force       TEXT        NOT NULL,
    target_intent_id    TEXT        NOT NULL,
    reason              TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX intents_intent ON intents (intent_id);
CREATE INDEX intents_strategy_time ON intents (strategy_id, ts_event);

CREATE TABLE order_events (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    price               BIGINT      NOT NULL,
    size                BIGINT      NOT NULL,
    filled_size         BIGINT      NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    order_id            TEXT        NOT NULL,
    strategy_id         TEXT        NOT NULL,
    condition_id        TEXT        NOT NULL,
    asset_id            TEXT        NOT NULL,
    status              TEXT        NOT NULL,
    venue_order_id      TEXT        NOT NULL,
    side                TEXT        NOT NULL,
    reason              TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX order_events_order_time ON order_events (order_id, ts_event);
CREATE INDEX order_events_strategy_time ON order_events (strategy_id, ts_event);

-- A fill is re-published on every settlement status change: one row per publication, so the
-- settlement history is kept; fills_latest has the current status of each fill.
CREATE TABLE fills (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    price               BIGINT      NOT NULL,
    size                BIGINT      NOT NULL,
    fee                 BIGINT      NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    fill_id             TEXT        NOT NULL,
    order_id            TEXT        NOT NULL,
    strategy_id         TEXT        NOT NULL,
    condition_id        TEXT        NOT NULL,
    asset_id            TEXT        NOT NULL,
    side                TEXT        NOT NULL,
    liquidity           TEXT        NOT NULL,
    settlement          TEXT        NOT NULL,
    venue_order_id      TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX fills_fill_time ON fills (fill_id, ts_event);
CREATE INDEX fills_order ON fills (order_id);
CREATE INDEX fills_strategy_time ON fills (strategy_id, ts_event);

CREATE VIEW fills_latest AS
SELECT DISTINCT ON (fill_id) *
FROM fills
ORDER BY fill_id, ts_event DESC, ts_init_ns DESC;

CREATE TABLE positions (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    size                BIGINT      NOT NULL,
    provisional_size    BIGINT      NOT NULL,
    average_price       BIGINT      NOT NULL,
    realized_pnl        BIGINT      NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    strategy_id         TEXT        NOT NULL,
    condition_id        TEXT        NOT NULL,
    asset_id            TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX positions_strategy_asset_time ON positions (strategy_id, asset_id, ts_event);

CREATE TABLE risk_events (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    strategy_id         TEXT        NOT NULL,
    kind                TEXT        NOT NULL,
    limit_name          TEXT        NOT NULL,
    detail              TEXT        NOT NULL,
    condition_id        TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX risk_events_strategy_time ON risk_events (strategy_id, ts_event);

-- ---------------------------------------------------------------------------------------------
-- Operations: heartbeats, control commands, dead letters
-- ---------------------------------------------------------------------------------------------

CREATE TABLE service_health (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    started_ns          BIGINT      NOT NULL,
    pid                 INTEGER     NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    service             TEXT        NOT NULL,
    instance            TEXT        NOT NULL,
    status              TEXT        NOT NULL,
    detail              TEXT        NOT NULL,
    version             TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX service_health_service_time ON service_health (service, instance, ts_event);
CREATE INDEX service_health_time_brin ON service_health USING brin (ts_event);

-- DeadLetter events other services published on the DLQ stream.
CREATE TABLE dead_letters (
    event_key           UUID        NOT NULL,
    ts_event            TIMESTAMPTZ NOT NULL,
    ts_event_ns         BIGINT      NOT NULL,
    ts_init_ns          BIGINT      NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    event_id            TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    causation_id        TEXT        NOT NULL,
    stream              TEXT        NOT NULL,
    source              TEXT        NOT NULL,
    reason              TEXT        NOT NULL,
    raw                 TEXT        NOT NULL,
    subject             TEXT        NOT NULL,
    PRIMARY KEY (event_key, ts_event)
);
CREATE INDEX dead_letters_source_time ON dead_letters (source, ts_event);

-- Operator commands from the CTL stream, verbatim: an audit log of halts, resumes and config
-- changes. Keyed by stream sequence (a command carries no event id of its own).
CREATE TABLE control_messages (
    stream              TEXT        NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL,
    subject             TEXT        NOT NULL,
    verb                TEXT        NOT NULL,
    headers             JSONB       NOT NULL,
    payload             BYTEA       NOT NULL,
    PRIMARY KEY (stream, stream_seq)
);
CREATE INDEX control_messages_time ON control_messages (received_at);

-- Messages the recorder could not decode or store: subject and raw bytes, acked so the stream
-- keeps flowing. Keyed by stream sequence: a redelivery of the same message is not a new row.
CREATE TABLE undecodable_messages (
    stream              TEXT        NOT NULL,
    stream_seq          BIGINT      NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL,
    subject             TEXT        NOT NULL,
    error               TEXT        NOT NULL,
    headers             JSONB       NOT NULL,
    raw                 BYTEA       NOT NULL,
    PRIMARY KEY (stream, stream_seq)
);
CREATE INDEX undecodable_messages_time ON undecodable_messages (received_at);

-- ---------------------------------------------------------------------------------------------
-- Convenience views
-- ---------------------------------------------------------------------------------------------

CREATE VIEW markets_latest AS
SELECT DISTINCT ON (condition_id) *
FROM markets
ORDER BY condition_id, ts_event DESC, ts_init_ns DESC;

CREATE VIEW positions_latest AS
SELECT DISTINCT ON (strategy_id, asset_id) *
FROM positions
ORDER BY strategy_id, asset_id, ts_event DESC, ts_init_ns DESC;
