"""Intake: each intent is handled exactly once, and a bad one is answered, never raised.

The INTENT stream's duplicate window (minutes) stops a strategy's retried publish, but not a
redelivery after the executor crashed mid-batch, nor an intent republished later. So the
executor claims every intent id in its own durable state before acting on it:
:class:`IntentRegistry` ``claim(intent_id)`` is True the first time ever, False after. The
real one, :class:`KvIntentRegistry`, is a JetStream KV bucket (``EXEC_INTENTS`` in
config/streams.toml) written with a create-only put, which the server refuses when the key
exists: an atomic claim even between two executors or connections. :class:`MemoryIntentRegistry`
is its in-memory twin for unit tests.

An intent is claimed *before* it is submitted, so a crash between the claim and the venue's
answer never leads to a second order: the intent is not retried, and the order it may have made
is found by reconciliation (DESIGN §10: never resubmitted blindly).

:func:`read_intent` decodes an intent from the bytes on the stream; malformed bytes or an
intent that cannot be acted on become a rejected ``OrderEvent`` saying why.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Protocol

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from polybus.common.events import OrderEvent, OrderIntent, intent_decoder
from polybus.executor.orders import reject_intent, rejection

INTENTS_BUCKET = "EXEC_INTENTS"
"""The KV bucket of claimed intent ids (config/streams.toml)."""

_PLAIN_KEY = re.compile(r"[-_=A-Za-z0-9]+(?:\.[-_=A-Za-z0-9]+)*")
_MAX_PLAIN_KEY = 200


class IntentRegistry(Protocol):
    """The intent ids this executor has ever taken on."""

    async def claim(self, intent_id: str) -> bool:
        """True the first time ``intent_id`` is claimed (ever, by anyone); False after."""
        ...


def intent_key(intent_id: str) -> str:
    """The KV key of an intent id: the id itself when it is a valid key, else its SHA-256.

    The two forms get distinct prefixes so a raw id can never collide with another's hash.
    """
    if len(intent_id) <= _MAX_PLAIN_KEY and _PLAIN_KEY.fullmatch(intent_id):
        return f"i.{intent_id}"
    return f"h.{hashlib.sha256(intent_id.encode()).hexdigest()}"


class KvIntentRegistry:
    """Claims in a JetStream KV bucket; the value is the claim time (ns), for operators."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket

    async def claim(self, intent_id: str) -> bool:
        try:
            await self._bucket.create(intent_key(intent_id), str(time.time_ns()).encode())
        except KeyWrongLastSequenceError:
            return False
        return True


class MemoryIntentRegistry:
    """The in-memory twin of :class:`KvIntentRegistry`."""

    def __init__(self) -> None:
        self.claimed: set[str] = set()

    async def claim(self, intent_id: str) -> bool:
        key = intent_key(intent_id)
        if key in self.claimed:
            return False
        self.claimed.add(key)
        return True


class _Identity(msgspec.Struct):
    """The fields a rejection names, read leniently from an intent that did not decode."""

    intent_id: str = ""
    strategy_id: str = ""
    condition_id: str = ""
    asset_id: str = ""


_identity_decoder = msgspec.json.Decoder(_Identity)


def read_intent(data: bytes, now_ns: int) -> OrderIntent | OrderEvent:
    """The intent in ``data``, or the rejected ``OrderEvent`` that answers it.

    Never raises: bytes that are not an intent give reason ``malformed_intent`` (with the
    decoder's message), an intent that cannot be acted on ``invalid_intent``.
    """
    try:
        intent = intent_decoder.decode(data)
    except msgspec.DecodeError as error:
        return _malformed(data, str(error), now_ns)
    problem = intent_problem(intent)
    if problem:
        return reject_intent(intent, "invalid_intent", problem, now_ns)
    return intent


def intent_problem(intent: OrderIntent) -> str:
    """Why an intent cannot be acted on at all (before any risk check), or ``""``."""
    for name in ("intent_id", "strategy_id", "condition_id", "asset_id"):
        if not getattr(intent, name):
            return f"{name} is empty"
    if intent.action in ("cancel", "replace") and not intent.target_intent_id:
        return f"a {intent.action} needs target_intent_id"
    if intent.action == "cancel":
        return ""
    if intent.size <= 0:
        return f"size {intent.size} is not positive"
    if intent.post_only and intent.time_in_force in ("FOK", "FAK"):
        return f"post_only cannot be {intent.time_in_force} (only GTC/GTD rest)"
    if intent.time_in_force == "GTD" and intent.expires_at_ns <= 0:
        return "a GTD order needs expires_at_ns"
    return ""


def _malformed(data: bytes, problem: str, now_ns: int) -> OrderEvent:
    try:
        identity = _identity_decoder.decode(data)
    except msgspec.DecodeError:
        identity = _Identity()
    # Without an intent id the rejection is named after the bytes, so a redelivery of the
    # same garbage gives the same event id (and EXEC drops the duplicate).
    order_id = identity.intent_id or f"malformed.{hashlib.sha256(data).hexdigest()[:32]}"
    return rejection(
        order_id=order_id,
        strategy_id=identity.strategy_id,
        condition_id=identity.condition_id,
        asset_id=identity.asset_id,
        reason="malformed_intent",
        detail=problem,
        now_ns=now_ns,
    )
