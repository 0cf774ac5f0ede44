"""The trading halt every service obeys: its state in the ``HALT`` KV bucket, its commands on
``ctl.halt`` / ``ctl.resume`` (DESIGN §4, §10).

``polybus halt [--strategy ID] [--reason TEXT]`` and ``polybus resume [--strategy ID]`` write a
:class:`HaltState` under the scope's key and publish a ``RiskEvent`` on the control subject
(the CTL stream keeps the audit trail). The state is in KV, not only in a message, so a service
that starts later, or after NATS restarted, still finds it: it reads every key before it trades
(:func:`read_halts`) and then watches the bucket. The bucket keeps a history per key, so who
halted when stays visible (``nats kv history``).

Keys: ``all`` halts everything; ``strategy.<strategy_id>`` one strategy. A resume writes the key
again with ``halted = false`` (not a delete), so the history shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from polybus.common.bus import event_headers
from polybus.common.events import RiskEvent, encode
from polybus.common.subjects import Namespace, Subjects

_log = structlog.get_logger("polybus.halt")

HALT_BUCKET = "HALT"
ALL_KEY = "all"
_STRATEGY_PREFIX = "strategy."


class HaltState(msgspec.Struct, frozen=True, kw_only=True):
    """One scope's halt switch as stored in the bucket."""

    halted: bool
    strategy_id: str = ""
    """The strategy halted; ``""`` means every strategy (the account)."""
    reason: str = ""
    by: str = ""
    """Who set it: ``operator`` (the CLI) or the service that tripped it (``executor``)."""
    ts_ns: int = 0


_decoder = msgspec.json.Decoder(HaltState)
_encoder = msgspec.json.Encoder()


def halt_key(strategy_id: str | None) -> str:
    """The bucket key of a scope: ``all``, or ``strategy.<id>`` (the id must be a subject token)."""
    if not strategy_id:
        return ALL_KEY
    Subjects().intent_all(strategy_id)  # raises ValueError naming a bad id
    return f"{_STRATEGY_PREFIX}{strategy_id}"


def decode_halt(data: bytes) -> HaltState | None:
    """The state in a bucket value, or None if it is not one (never raises)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


async def halt_bucket(js: JetStreamContext, namespace: Namespace) -> KeyValue:
    return await js.key_value(namespace.bucket(HALT_BUCKET))


async def read_halts(bucket: KeyValue) -> list[HaltState]:
    """Every scope's current state (halted or not)."""
    try:
        keys = await bucket.keys()
    except NoKeysError:
        return []
    states = []
    for key in keys:
        try:
            entry = await bucket.get(key)
        except KeyNotFoundError:
            continue
        state = decode_halt(entry.value or b"")
        if state is not None:
            states.append(state)
    return states


def control_event(state: HaltState) -> RiskEvent:
    """The ``RiskEvent`` published on ``ctl.halt`` / ``ctl.resume`` for a state change."""
    kind: Literal["halt", "resume"] = "halt" if state.halted else "resume"
    return RiskEvent(
        event_id=f"ctl.{kind}.{state.strategy_id or 'all'}.{state.ts_ns}",
        ts_event=state.ts_ns,
        ts_init=state.ts_ns,
        strategy_id=state.strategy_id,
        kind=kind,
        limit="halted",
        detail=state.reason,
    )


async def set_halt(
    js: JetStreamContext,
    namespace: Namespace,
    *,
    halted: bool,
    strategy_id: str | None,
    reason: str = "",
    by: str = "operator",
) -> HaltState:
    """Write a scope's state into the bucket, then publish it on the control subject."""
    key = halt_key(strategy_id)
    state = HaltState(
        halted=halted, strategy_id=strategy_id or "", reason=reason, by=by, ts_ns=time.time_ns()
    )
    bucket = await halt_bucket(js, namespace)
    await bucket.put(key, _encoder.encode(state))
    event = control_event(state)
    subject = namespace.subjects.control(event.kind)
    await js.publish(subject, encode(event), headers=event_headers(event, event.event_id))
    return state


HaltCallback = Callable[[HaltState], Awaitable[None]]
RETRY_DELAY_S = 1.0


class HaltFollower:
    """Applies the bucket's halt states through ``on_change``, each change once.

    :meth:`load` reads every scope's current state (call it before the first intent), then
    :meth:`run` watches the bucket. The watch is an ordered consumer; if it ends or fails (NATS
    restarted, the bucket was recreated) it starts again from the current values, and a state
    already applied is not applied twice. The executor and every strategy use it.
    """

    def __init__(self, js: JetStreamContext, namespace: Namespace, on_change: HaltCallback) -> None:
        self._js = js
        self._namespace = namespace
        self._on_change = on_change
        self._applied: dict[str, HaltState] = {}

    def halted(self) -> list[HaltState]:
        """The scopes halted now."""
        return [state for state in self._applied.values() if state.halted]

    async def load(self) -> None:
        """Apply every scope's current state (before the first intent)."""
        bucket = await halt_bucket(self._js, self._namespace)
        for state in await read_halts(bucket):
            await self._apply(state)

    async def run(self) -> None:
        """Follow the bucket until cancelled."""
        while True:
            try:
                await self._watch(await halt_bucket(self._js, self._namespace))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning("halt.watch_failed", error=repr(error), retry_in_s=RETRY_DELAY_S)
            await asyncio.sleep(RETRY_DELAY_S)

    async def _watch(self, bucket: KeyValue) -> None:
        watcher = await bucket.watchall()
        try:
            async for entry in watcher:
                if entry is None or entry.value is None:
                    continue  # the end of the initial values, or a deleted key
                state = decode_halt(entry.value)
                if state is None:
                    _log.warning("halt.undecodable", key=entry.key)
                    continue
                await self._apply(state)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _apply(self, state: HaltState) -> None:
        scope = state.strategy_id
        if self._applied.get(scope) == state:
            return
        previous = self._applied.get(scope)
        self._applied[scope] = state
        if previous is None and not state.halted:
            return  # a scope that was never halted here has nothing to resume
        await self._on_change(state)
