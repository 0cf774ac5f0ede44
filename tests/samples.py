"""Synthetic events for the recorder's tests and benchmark: every type, and a market-data load.

Test data, not product: it lives with the tests; ``python -m bench.recorder`` (run from the
repository's root) imports it from here too.

Ids look like the venue's (77-digit token ids, 0x-prefixed 64-hex condition ids), so row sizes
and the disk figures of the benchmark are realistic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    DeadLetter,
    Event,
    Fill,
    Level,
    LevelChange,
    MarketDataEvent,
    MarketInfo,
    MarketResolved,
    OrderEvent,
    OrderIntent,
    Outcome,
    PositionSnapshot,
    RiskEvent,
    ServiceHealth,
    TickSizeChanged,
    Trade,
)
from polybus.common.subjects import Subjects, partition_of

BASE_NS = 1_764_400_000_123_456_789
"""2025-11-29T07:06:40.123456789Z: nanoseconds that do not round to microseconds."""


def token_id(n: int) -> str:
    """A venue-like outcome token id (a 77-digit decimal)."""
    return str(
        71_321_045_679_252_212_594_626_385_532_706_912_750_332_728_571_942_532_289_631_379_312_455_583_992
        + n
    )


def condition_id(n: int) -> str:
    return f"0x{n:064x}"


def one_of_each(n: int = 0) -> list[Event]:
    """One event of every type, with every field set to a non-default value."""
    asset, other, market = token_id(2 * n), token_id(2 * n + 1), condition_id(n)
    ts = BASE_NS + n * 1_000_000_000
    envelope: dict[str, Any] = {"correlation_id": f"corr-{n}", "causation_id": f"cause-{n}"}
    md: dict[str, Any] = {"asset_id": asset, "condition_id": market, "epoch": 3, **envelope}
    return [
        MarketInfo(
            event_id=f"market:{market}:{n}",
            ts_event=ts,
            ts_init=ts + 11,
            condition_id=market,
            question="Will it rain in Lisbon on 1 December?",
            slug=f"rain-lisbon-{n}",
            outcomes=(
                Outcome(token_id=asset, outcome="Yes"),
                Outcome(token_id=other, outcome="No"),
            ),
            tick_size=10_000,
            min_order_size=5_000_000,
            neg_risk=True,
            neg_risk_market_id=f"0xneg{n}",
            fee_rate=70_000,
            fee_exponent=2,
            end_date_ns=1_767_225_600_000_000_000,
            active=False,
            closed=True,
            volume_24h=123_456_789,
            liquidity=987_654_321,
            **envelope,
        ),
        BookSnapshot(
            event_id=f"book:{asset}:3:1",
            ts_event=ts + 1,
            ts_init=ts + 12,
            seq=1,
            bids=(Level(480_000, 1_500_000), Level(470_000, 22_000_000)),
            asks=(Level(520_000, 3_000_000),),
            tick_size=10_000,
            min_order_size=5_000_000,
            venue_hash="0xabc123",
            **md,
        ),
        BookDelta(
            event_id=f"delta:{asset}:3:2",
            ts_event=ts + 2,
            ts_init=ts + 13,
            seq=2,
            changes=(
                LevelChange("SELL", 510_000, 4_000_000),
                LevelChange("BUY", 480_000, 0),
                LevelChange("BUY", 490_000, 7_250_000),
            ),
            best_bid=490_000,
            best_ask=510_000,
            **md,
        ),
        BookDelta(
            event_id=f"delta:{asset}:3:3",
            ts_event=ts + 3,
            ts_init=ts + 14,
            seq=3,
            changes=(),
            best_bid=None,
            best_ask=None,
            **md,
        ),
        Trade(
            event_id=f"trade:{asset}:{ts + 4}",
            ts_event=ts + 4,
            ts_init=ts + 15,
            seq=0,
            price=510_000,
            size=2_500_000,
            side="SELL",
            fee_rate_bps=25,
            **md,
        ),
        TickSizeChanged(
            event_id=f"tick:{asset}:3:4",
            ts_event=ts + 5,
            ts_init=ts + 16,
            seq=4,
            old_tick_size=10_000,
            new_tick_size=1_000,
            **md,
        ),
        BookStatus(
            event_id=f"status:{asset}:3:5",
            ts_event=ts + 6,
            ts_init=ts + 17,
            seq=5,
            status="stale",
            reason="silent_stall",
            **md,
        ),
        MarketResolved(
            event_id=f"resolved:{market}",
            ts_event=ts + 7,
            ts_init=ts + 18,
            condition_id=market,
            winning_asset_id=asset,
            winning_outcome="Yes",
            **envelope,
        ),
        OrderIntent(
            event_id=f"intent:s1:{n}",
            ts_event=ts + 8,
            ts_init=ts + 19,
            intent_id=f"i-{n}",
            strategy_id="spread",
            action="replace",
            condition_id=market,
            asset_id=asset,
            side="SELL",
            price=530_000,
            size=10_000_000,
            time_in_force="GTD",
            post_only=True,
            expires_at_ns=ts + 60_000_000_000,
            target_intent_id=f"i-{n - 1}",
            reason="requote",
            **envelope,
        ),
        OrderEvent(
            event_id=f"order:i-{n}:accepted",
            ts_event=ts + 9,
            ts_init=ts + 20,
            order_id=f"i-{n}",
            strategy_id="spread",
            condition_id=market,
            asset_id=asset,
            status="partially_filled",
            venue_order_id="0xorder",
            side="SELL",
            price=530_000,
            size=10_000_000,
            filled_size=2_000_000,
            reason="matched",
            **envelope,
        ),
        Fill(
            event_id=f"fill:t-{n}:MINED",
            ts_event=ts + 10,
            ts_init=ts + 21,
            fill_id=f"t-{n}",
            order_id=f"i-{n}",
            strategy_id="spread",
            condition_id=market,
            asset_id=asset,
            side="SELL",
            price=530_000,
            size=2_000_000,
            fee=14_000,
            liquidity="maker",
            settlement="MINED",
            venue_order_id="0xorder",
            **envelope,
        ),
        PositionSnapshot(
            event_id=f"position:spread:{asset}:{n}",
            ts_event=ts + 11,
            ts_init=ts + 22,
            strategy_id="spread",
            condition_id=market,
            asset_id=asset,
            size=-2_000_000,
            provisional_size=-4_000_000,
            average_price=530_000,
            realized_pnl=-1_234,
            **envelope,
        ),
        RiskEvent(
            event_id=f"risk:spread:{n}",
            ts_event=ts + 12,
            ts_init=ts + 23,
            strategy_id="spread",
            kind="limit_hit",
            limit="max_position",
            detail="position 2000000 > 1000000",
            condition_id=market,
            **envelope,
        ),
        ServiceHealth(
            event_id=f"health:ingest:a:{ts}",
            ts_event=ts + 13,
            ts_init=ts + 24,
            service="ingest",
            instance="a",
            status="degraded",
            detail="ws 2/3 connected",
            version="0.1.0",
            pid=4242,
            started_ns=ts - 1_000,
            **envelope,
        ),
        DeadLetter(
            event_id=f"dlq:ingest:{n}",
            ts_event=ts + 14,
            ts_init=ts + 25,
            source="ingest",
            reason="unknown event_type",
            raw='{"event_type":"new_thing"}',
            subject="venue.ws",
            **envelope,
        ),
    ]


def subject_for(subjects: Subjects, event: Event, partitions: int = 16) -> str:
    """The subject an event of this type is published on (DESIGN §4)."""
    if isinstance(event, MarketDataEvent):
        part = partition_of(event.condition_id, partitions)
        kind = {
            BookSnapshot: "book",
            BookDelta: "delta",
            Trade: "trade",
            TickSizeChanged: "status",
            BookStatus: "status",
        }[type(event)]
        return subjects.market_data(part, kind, event.asset_id)  # type: ignore[arg-type]
    if isinstance(event, MarketInfo | MarketResolved):
        return subjects.market(partition_of(event.condition_id, partitions), event.condition_id)
    if isinstance(event, OrderIntent):
        return subjects.intent(event.strategy_id, event.condition_id)
    if isinstance(event, OrderEvent):
        return subjects.execution(event.strategy_id, "order", event.condition_id)
    if isinstance(event, Fill):
        return subjects.execution(event.strategy_id, "fill", event.condition_id)
    if isinstance(event, PositionSnapshot):
        return subjects.execution(event.strategy_id, "position", event.condition_id)
    if isinstance(event, RiskEvent):
        return subjects.execution(event.strategy_id, "risk", event.condition_id or "all")
    if isinstance(event, DeadLetter):
        return subjects.dead_letter(event.source)
    raise ValueError(f"no subject for {type(event).__name__} (health goes to the KV bucket)")


def market_data(count: int, *, assets: int = 50, seed: int = 7) -> Iterator[MarketDataEvent]:
    """A market-data load like the venue's: a snapshot per asset, then mostly one- or two-level
    deltas, some trades and the odd status change; seq +1 per asset for book events."""
    rng = random.Random(seed)
    seqs = [0] * assets
    ts = BASE_NS
    for n in range(count):
        ts += rng.randrange(1_000, 200_000)
        index = n % assets if n < assets else rng.randrange(assets)
        asset = token_id(index)
        market = condition_id(index // 2)
        common: dict[str, Any] = {
            "asset_id": asset,
            "condition_id": market,
            "epoch": 1,
            "ts_event": ts,
        }
        roll = rng.random()
        if n < assets:
            seqs[index] += 1
            yield BookSnapshot(
                event_id=f"book:{asset}:1:{seqs[index]}",
                ts_init=ts + 50_000,
                seq=seqs[index],
                bids=tuple(Level(490_000 - 10_000 * i, 1_000_000 * (i + 1)) for i in range(20)),
                asks=tuple(Level(510_000 + 10_000 * i, 1_000_000 * (i + 1)) for i in range(20)),
                tick_size=10_000,
                **common,
            )
        elif roll < 0.90:
            seqs[index] += 1
            changes = tuple(
                LevelChange(
                    "BUY" if rng.random() < 0.5 else "SELL",
                    rng.randrange(1, 100) * 10_000,
                    rng.randrange(0, 500) * 1_000_000,
                )
                for _ in range(1 if rng.random() < 0.7 else 2)
            )
            yield BookDelta(
                event_id=f"delta:{asset}:1:{seqs[index]}",
                ts_init=ts + 50_000,
                seq=seqs[index],
                changes=changes,
                best_bid=490_000,
                best_ask=510_000,
                **common,
            )
        elif roll < 0.99:
            yield Trade(
                event_id=f"trade:{asset}:{ts}",
                ts_init=ts + 50_000,
                seq=seqs[index],
                price=rng.randrange(1, 100) * 10_000,
                size=rng.randrange(1, 1000) * 1_000_000,
                side="BUY" if rng.random() < 0.5 else "SELL",
                **common,
            )
        else:
            seqs[index] += 1
            yield BookStatus(
                event_id=f"status:{asset}:1:{seqs[index]}",
                ts_init=ts + 50_000,
                seq=seqs[index],
                status="live",
                reason="snapshot",
                **common,
            )
