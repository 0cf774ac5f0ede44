-- requires: timescaledb >= 2.13
--
-- TimescaleDB: hypertables on event time, compression segmented by asset (market data) or
-- strategy (orders), retention policies, and 1-minute continuous aggregates. Applied only when
-- the server offers (and preloads) TimescaleDB; on plain PostgreSQL the runner skips it and
-- applies it later, on the first migrate that finds the extension. The core schema (0001) is
-- unchanged by it: every query, the recorder and `polybus db prune` work either way.
--
-- by_range() needs TimescaleDB 2.13+. Every unique index of a hypertable must contain the
-- partition column: the core primary keys are (event_key, ts_event) for that reason.
-- migrate_data moves rows recorded before the extension appeared into chunks.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- The convenience views of 0001 select from tables converted below; they are set aside while
-- the tables change shape and recreated, unchanged, at the end.
DROP VIEW markets_latest;
DROP VIEW fills_latest;
DROP VIEW positions_latest;

-- Market data: one-day chunks (busy assets write thousands of rows a minute), compressed after
-- a day, segmented by asset (the filter of nearly every query), dropped after 30 days. No
-- default ts_event index: the primary key (asset_id, ts_event, …) and the BRIN index serve the
-- reads, and every index costs on each of the many inserts.
SELECT create_hypertable('book_snapshots', by_range('ts_event', INTERVAL '1 day'), create_default_indexes => false, migrate_data => true);
SELECT create_hypertable('book_deltas', by_range('ts_event', INTERVAL '1 day'), create_default_indexes => false, migrate_data => true);
SELECT create_hypertable('trades', by_range('ts_event', INTERVAL '1 day'), create_default_indexes => false, migrate_data => true);
SELECT create_hypertable('tick_size_changes', by_range('ts_event', INTERVAL '7 days'), create_default_indexes => false, migrate_data => true);
SELECT create_hypertable('book_status', by_range('ts_event', INTERVAL '7 days'), create_default_indexes => false, migrate_data => true);

ALTER TABLE book_snapshots SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id', timescaledb.compress_orderby = 'ts_event DESC');
ALTER TABLE book_deltas SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id', timescaledb.compress_orderby = 'ts_event DESC');
ALTER TABLE trades SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id', timescaledb.compress_orderby = 'ts_event DESC');
ALTER TABLE tick_size_changes SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id', timescaledb.compress_orderby = 'ts_event DESC');
ALTER TABLE book_status SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id', timescaledb.compress_orderby = 'ts_event DESC');

SELECT add_compression_policy('book_snapshots', INTERVAL '1 day');
SELECT add_compression_policy('book_deltas', INTERVAL '1 day');
SELECT add_compression_policy('trades', INTERVAL '1 day');
SELECT add_compression_policy('tick_size_changes', INTERVAL '7 days');
SELECT add_compression_policy('book_status', INTERVAL '7 days');

SELECT add_retention_policy('book_snapshots', INTERVAL '30 days');
SELECT add_retention_policy('book_deltas', INTERVAL '30 days');
SELECT add_retention_policy('trades', INTERVAL '30 days');
SELECT add_retention_policy('tick_size_changes', INTERVAL '30 days');
SELECT add_retention_policy('book_status', INTERVAL '30 days');

-- Orders are the trading record: hypertables and compression, but no retention policy.
SELECT create_hypertable('intents', by_range('ts_event', INTERVAL '7 days'), migrate_data => true);
SELECT create_hypertable('order_events', by_range('ts_event', INTERVAL '7 days'), migrate_data => true);
SELECT create_hypertable('fills', by_range('ts_event', INTERVAL '7 days'), migrate_data => true);
SELECT create_hypertable('positions', by_range('ts_event', INTERVAL '7 days'), migrate_data => true);
SELECT create_hypertable('risk_events', by_range('ts_event', INTERVAL '30 days'), migrate_data => true);

ALTER TABLE intents SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy_id', timescaledb.compress_orderby = 'ts_event DESC');
ALTER TABLE order_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy_id', timescaledb.compress_orderby = 'ts_event DESC');
ALTER TABLE fills SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy_id', timescaledb.compress_orderby = 'ts_event DESC');
ALTER TABLE positions SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy_id', timescaledb.compress_orderby = 'ts_event DESC');

SELECT add_compression_policy('intents', INTERVAL '30 days');
SELECT add_compression_policy('order_events', INTERVAL '30 days');
SELECT add_compression_policy('fills', INTERVAL '30 days');
SELECT add_compression_policy('positions', INTERVAL '30 days');

-- Heartbeats and dead letters: operational history, kept for a while.
SELECT create_hypertable('service_health', by_range('ts_event', INTERVAL '1 day'), migrate_data => true);
SELECT create_hypertable('dead_letters', by_range('ts_event', INTERVAL '7 days'), migrate_data => true);
ALTER TABLE service_health SET (timescaledb.compress, timescaledb.compress_segmentby = 'service', timescaledb.compress_orderby = 'ts_event DESC');
SELECT add_compression_policy('service_health', INTERVAL '1 day');
SELECT add_retention_policy('service_health', INTERVAL '30 days');
SELECT add_retention_policy('dead_letters', INTERVAL '90 days');

-- 1-minute OHLCV per asset from public trades. WITH NO DATA: the policy fills it (and a
-- continuous aggregate cannot be materialized inside the migration's transaction).
CREATE MATERIALIZED VIEW trades_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts_event) AS bucket,
       asset_id,
       first(price, ts_event) AS open,
       max(price)             AS high,
       min(price)             AS low,
       last(price, ts_event)  AS close,
       sum(size)              AS volume,
       count(*)               AS trades
FROM trades
GROUP BY bucket, asset_id
WITH NO DATA;

-- 1-minute top of book per asset: the best bid/ask after each delta (open, high, low, close).
CREATE MATERIALIZED VIEW top_of_book_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts_event) AS bucket,
       asset_id,
       first(best_bid, ts_event) AS open_bid,
       max(best_bid)             AS high_bid,
       min(best_bid)             AS low_bid,
       last(best_bid, ts_event)  AS close_bid,
       first(best_ask, ts_event) AS open_ask,
       max(best_ask)             AS high_ask,
       min(best_ask)             AS low_ask,
       last(best_ask, ts_event)  AS close_ask,
       count(*)                  AS updates
FROM book_deltas
GROUP BY bucket, asset_id
WITH NO DATA;

-- start_offset stays inside the raw data's 30-day retention, as TimescaleDB requires.
SELECT add_continuous_aggregate_policy('trades_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('top_of_book_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');

CREATE VIEW markets_latest AS
SELECT DISTINCT ON (condition_id) *
FROM markets
ORDER BY condition_id, ts_event DESC, ts_init_ns DESC;

CREATE VIEW fills_latest AS
SELECT DISTINCT ON (fill_id) *
FROM fills
ORDER BY fill_id, ts_event DESC, ts_init_ns DESC;

CREATE VIEW positions_latest AS
SELECT DISTINCT ON (strategy_id, asset_id) *
FROM positions
ORDER BY strategy_id, asset_id, ts_event DESC, ts_init_ns DESC;
