"""The batch pull consumer reads sequence and delivery count straight from the ack subject."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from polybus.common.bus.nats_pull import NatsDelivery


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.T_MD.recorder.3.170017.9.1764400000123456789.42",
        "$JS.ACK.hub.ACCHASH.T_MD.recorder.3.170017.9.1764400000123456789.42.x1y2",
        "$JS.ACK.KV_T_HEALTH.recorder.1.5.5.1764400000123456789.0",
    ],
)
def test_sequence_and_delivery_count_match_nats_py_metadata(reply: str) -> None:
    message = Msg(None, subject="md.polymarket.1.delta.x", reply=reply)  # type: ignore[arg-type]
    delivery = NatsDelivery(message)
    assert delivery.stream_sequence == message.metadata.sequence.stream
    assert delivery.num_delivered == message.metadata.num_delivered
