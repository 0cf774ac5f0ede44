"""Events: frozen tagged Structs, one decoder per stream, additive evolution."""

from __future__ import annotations

import msgspec
import pytest

from polybus.common import events
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    DeadLetter,
    Fill,
    Level,
    LevelChange,
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

ENVELOPE = {
    "event_id": "e1",
    "ts_event": 1_790_658_661_234_000_000,
    "ts_init": 1_790_658_661_240_000_000,
    "correlation_id": "c1",
    "causation_id": "k1",
}
MD = {"asset_id": "7667", "condition_id": "0x2857", "seq": 3, "epoch": 1}

SAMPLES: list[events.Event] = [
    BookSnapshot(
        **ENVELOPE,
        **MD,
        bids=(Level(480_000, 30_000_000),),
        asks=(Level(520_000, 25_000_000),),
        tick_size=10_000,
        min_order_size=5_000_000,
        venue_hash="ab",
    ),
    BookDelta(
        **ENVELOPE, **MD, changes=(LevelChange("BUY", 490_000, 0),), best_bid=480_000, best_ask=None
    ),
    Trade(**ENVELOPE, **MD, price=456_000, size=219_217_767, side="BUY", fee_rate_bps=0),
    TickSizeChanged(**ENVELOPE, **MD, old_tick_size=10_000, new_tick_size=1_000),
    BookStatus(**ENVELOPE, **MD, status="stale", reason="bbo_mismatch"),
    MarketInfo(
        **ENVELOPE,
        condition_id="0x2857",
        question="Will it?",
        slug="will-it",
        outcomes=(Outcome(token_id="1", outcome="Yes"), Outcome(token_id="2", outcome="No")),
        tick_size=10_000,
        min_order_size=5_000_000,
        neg_risk=True,
        neg_risk_market_id="0xe1",
        fee_rate=70_000,
        end_date_ns=1,
    ),
    MarketResolved(**ENVELOPE, condition_id="0x2857", winning_asset_id="1", winning_outcome="Yes"),
    OrderIntent(
        **ENVELOPE,
        intent_id="i1",
        strategy_id="mm",
        action="place",
        condition_id="0x2857",
        asset_id="1",
        side="SELL",
        price=530_000,
        size=10_000_000,
        post_only=True,
    ),
    OrderEvent(
        **ENVELOPE,
        order_id="i1",
        strategy_id="mm",
        condition_id="0x2857",
        asset_id="1",
        status="accepted",
        venue_order_id="0xabc",
    ),
    Fill(
        **ENVELOPE,
        fill_id="t1",
        order_id="i1",
        strategy_id="mm",
        condition_id="0x2857",
        asset_id="1",
        side="BUY",
        price=530_000,
        size=5_000_000,
        settlement="CONFIRMED",
    ),
    PositionSnapshot(
        **ENVELOPE, strategy_id="mm", condition_id="0x2857", asset_id="1", size=5_000_000
    ),
    RiskEvent(**ENVELOPE, strategy_id="mm", kind="halt", detail="operator"),
    ServiceHealth(**ENVELOPE, service="ingest", instance="a", status="healthy"),
    DeadLetter(**ENVELOPE, source="ingest", reason="unknown event_type", raw='{"event_type":"x"}'),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_the_shared_codec(event: events.Event) -> None:
    data = events.encode(event)
    assert msgspec.json.decode(data)["type"] == type(event).__name__
    assert events.decode(data) == event


@pytest.mark.parametrize(
    ("decoder", "members"),
    [
        (
            events.market_data_decoder,
            (
                BookSnapshot,
                BookDelta,
                Trade,
                TickSizeChanged,
                BookStatus,
                MarketInfo,
                MarketResolved,
            ),
        ),
        (events.intent_decoder, (OrderIntent,)),
        (events.execution_decoder, (OrderEvent, Fill, PositionSnapshot, RiskEvent)),
    ],
)
def test_each_stream_decoder_takes_its_union_and_refuses_others(
    decoder: msgspec.json.Decoder, members: tuple[type, ...]
) -> None:
    for event in SAMPLES:
        if isinstance(event, members):
            assert decoder.decode(events.encode(event)) == event
        else:
            with pytest.raises(msgspec.ValidationError):
                decoder.decode(events.encode(event))


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SAMPLES[0].seq = 4  # type: ignore[misc]


def test_levels_are_compact_pairs_on_the_wire() -> None:
    data = msgspec.json.decode(events.encode(SAMPLES[0]))
    assert data["bids"] == [[480_000, 30_000_000]]
    assert data["asks"] == [[520_000, 25_000_000]]


def test_unknown_fields_are_ignored_so_wire_structs_can_grow() -> None:
    data = msgspec.json.decode(events.encode(SAMPLES[2]))
    data["added_in_a_later_version"] = {"x": 1}
    assert events.decode(msgspec.json.encode(data)) == SAMPLES[2]


def test_an_unknown_type_is_a_decode_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        events.decode(b'{"type":"NoSuchEvent","event_id":"x","ts_event":1,"ts_init":1}')


def test_executor_fields_are_additive_an_intent_without_them_is_unfenced() -> None:
    intent = next(e for e in SAMPLES if isinstance(e, OrderIntent))
    data = msgspec.json.decode(events.encode(intent))
    for added in ("partition", "lease_revision"):
        del data[added]
    decoded = events.intent_decoder.decode(msgspec.json.encode(data))
    assert decoded == intent
    assert (decoded.partition, decoded.lease_revision) == (0, 0)


def test_older_order_events_and_positions_decode_with_defaults_for_new_fields() -> None:
    order_event = next(e for e in SAMPLES if isinstance(e, OrderEvent))
    order = msgspec.json.decode(events.encode(order_event))
    del order["detail"]
    assert events.decode(msgspec.json.encode(order)) == order_event
    position_event = next(e for e in SAMPLES if isinstance(e, PositionSnapshot))
    position = msgspec.json.decode(events.encode(position_event))
    for added in (
        "provisional_average_price",
        "provisional_realized_pnl",
        "fees",
        "mark_price",
        "unrealized_pnl",
    ):
        del position[added]
    assert events.decode(msgspec.json.encode(position)) == position_event
