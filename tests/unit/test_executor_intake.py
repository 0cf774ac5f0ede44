"""Intake: bytes become an intent or the rejected OrderEvent answering them; claims are once."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from polybus.common.events import OrderEvent, OrderIntent, encode
from polybus.common.money import MICROS
from polybus.executor.intake import MemoryIntentRegistry, intent_key, read_intent

NOW = 1_790_000_000_000_000_000


def intent(**changes: Any) -> OrderIntent:
    fields: dict[str, Any] = {
        "event_id": "e1",
        "ts_event": NOW,
        "ts_init": NOW,
        "intent_id": "i1",
        "strategy_id": "mm",
        "action": "place",
        "condition_id": "0xc",
        "asset_id": "yes",
        "price": 450_000,
        "size": 10 * MICROS,
    }
    fields.update(changes)
    return OrderIntent(**fields)


def test_a_valid_intent_is_returned_as_decoded() -> None:
    assert read_intent(encode(intent()), NOW) == intent()


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[1,2]", b'{"type":"OrderIntent"}', b'{"type":"BookDelta"}', b"\xff\xfe"],
)
def test_malformed_bytes_are_a_rejection_never_an_exception(data: bytes) -> None:
    answer = read_intent(data, NOW)
    assert isinstance(answer, OrderEvent)
    assert (answer.status, answer.reason) == ("rejected", "malformed_intent")
    assert answer.detail
    assert answer.order_id.startswith("malformed.")
    assert read_intent(data, NOW).event_id == answer.event_id


def test_a_malformed_intent_that_names_itself_is_rejected_under_its_id() -> None:
    data = msgspec.json.decode(encode(intent()))
    data["size"] = "ten"
    answer = read_intent(msgspec.json.encode(data), NOW)
    assert isinstance(answer, OrderEvent)
    assert (answer.order_id, answer.strategy_id, answer.condition_id) == ("i1", "mm", "0xc")
    assert answer.reason == "malformed_intent"
    assert "size" in answer.detail


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"intent_id": ""}, "intent_id"),
        ({"strategy_id": ""}, "strategy_id"),
        ({"action": "cancel"}, "target_intent_id"),
        ({"action": "replace"}, "target_intent_id"),
        ({"size": 0}, "size"),
        ({"post_only": True, "time_in_force": "FOK"}, "post_only"),
        ({"time_in_force": "GTD"}, "expires_at_ns"),
    ],
)
def test_an_intent_that_cannot_be_acted_on_is_invalid(
    changes: dict[str, Any], problem: str
) -> None:
    answer = read_intent(encode(intent(**changes)), NOW)
    assert isinstance(answer, OrderEvent)
    assert (answer.status, answer.reason) == ("rejected", "invalid_intent")
    assert problem in answer.detail


def test_a_cancel_needs_no_price_or_size() -> None:
    cancel = intent(action="cancel", target_intent_id="i0", price=0, size=0)
    assert read_intent(encode(cancel), NOW) == cancel


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    answer = read_intent(data, NOW)
    assert isinstance(answer, OrderEvent | OrderIntent)


def test_keys_are_the_id_when_valid_and_a_hash_otherwise() -> None:
    assert intent_key("0a1b-2c.3d_4=") == "i.0a1b-2c.3d_4="
    for awkward in ("has space", "a..b", ".lead", "trail.", "*", ">", "ü", "x" * 201):
        key = intent_key(awkward)
        assert key.startswith("h.")
        assert len(key) == 66
    assert intent_key("has space") != intent_key("has  space")


async def test_the_memory_registry_claims_each_id_once() -> None:
    registry = MemoryIntentRegistry()
    assert await registry.claim("i1")
    assert not await registry.claim("i1")
    assert await registry.claim("i2")
