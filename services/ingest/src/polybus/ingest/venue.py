"""Polymarket's market-channel frames in, typed venue events out (no polybus events here).

A frame is one event object or a JSON array of them. The fast path decodes the whole frame
with the typed union in one call; if that fails (an unknown ``event_type``, a malformed
element), the frame is split into raw elements and each is decoded alone, so one bad element
is rejected with its raw text while its siblings are still processed (VENUE §9 H9).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from polybus.common.polymarket.market_channel import PolymarketMarketEvent

_frame_decoder = msgspec.json.Decoder(list[PolymarketMarketEvent] | PolymarketMarketEvent)
_element_decoder = msgspec.json.Decoder(PolymarketMarketEvent)
_raw_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])

PONG = "PONG"
"""The venue's answer to our text ``PING``: not JSON, not data."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame or element that could not be decoded: its raw text and a bounded reason."""

    raw: str
    reason: str
    """``invalid_json`` | ``unknown_event_type`` | ``invalid_event``"""


def _reason(error: msgspec.ValidationError) -> str:
    message = str(error)
    if "event_type" in message:
        return "unknown_event_type"
    return "invalid_event"


def _text(raw: bytes | str | msgspec.Raw) -> str:
    data = bytes(raw) if isinstance(raw, msgspec.Raw) else raw
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def decode_frame(frame: bytes | str) -> tuple[list[PolymarketMarketEvent], list[Rejected]]:
    """Decode one frame into venue events, and the elements that could not be decoded."""
    try:
        decoded = _frame_decoder.decode(frame)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        return [], [Rejected(_text(frame), "invalid_json")]
    else:
        return (decoded if isinstance(decoded, list) else [decoded]), []

    # The slow path: JSON whose content does not fit. Split arrays into elements.
    elements: list[msgspec.Raw | bytes | str]
    try:
        elements = list(_raw_array_decoder.decode(frame))
    except msgspec.ValidationError:
        elements = [frame]  # an object (or a scalar): one element
    except msgspec.DecodeError:
        return [], [Rejected(_text(frame), "invalid_json")]
    events: list[PolymarketMarketEvent] = []
    rejected: list[Rejected] = []
    for element in elements:
        try:
            events.append(_element_decoder.decode(element))
        except msgspec.ValidationError as error:
            rejected.append(Rejected(_text(element), _reason(error)))
        except msgspec.DecodeError:
            rejected.append(Rejected(_text(element), "invalid_json"))
    return events, rejected


def raw_elements(frame: bytes | str) -> list[str]:
    """The raw text of each element of a frame (one for an object frame), for dead letters."""
    try:
        return [_text(element) for element in _raw_array_decoder.decode(frame)]
    except msgspec.ValidationError:
        return [_text(frame)]
    except msgspec.DecodeError:
        return [_text(frame)]
