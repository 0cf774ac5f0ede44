-- The executor's additive event fields and the market facts it trades by (issue 9): every
-- field of an event has a column, so nothing a service publishes is lost. Defaults equal the
-- events' own defaults, so rows recorded before the fields existed read back as they were.

-- OrderIntent: the partition and lease revision it was made under (fencing, DESIGN §5).
ALTER TABLE intents
    ADD COLUMN partition       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lease_revision  BIGINT NOT NULL DEFAULT 0;

-- OrderEvent: the human-readable detail of its reason code.
ALTER TABLE order_events
    ADD COLUMN detail          TEXT   NOT NULL DEFAULT '';

-- PositionSnapshot: provisional figures, fees, the mark and the unrealised PnL.
ALTER TABLE positions
    ADD COLUMN provisional_average_price  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN provisional_realized_pnl   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN fees                       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN mark_price                 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN unrealized_pnl             BIGINT NOT NULL DEFAULT 0;

-- MarketInfo: the exchange its orders are signed for, and the neg-risk event's completeness.
ALTER TABLE markets
    ADD COLUMN exchange_version       TEXT    NOT NULL DEFAULT '2',
    ADD COLUMN neg_risk_augmented     BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN neg_risk_market_count  INTEGER NOT NULL DEFAULT 0;
