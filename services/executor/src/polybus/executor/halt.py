"""The executor's side of the halt switch: follow the ``HALT`` bucket, act on every change.

:class:`HaltFollower` reads every scope's state before the executor takes its first intent
(:meth:`HaltFollower.load`), then watches the bucket (:meth:`HaltFollower.run`) and calls
``on_change`` for each new state. The watch is an ordered consumer; if it ends or fails (NATS
restarted, the bucket was recreated) it starts again from the current values, and a state it
has already applied is not applied twice.

The executor also writes the bucket itself: a venue-reject breaker that opens halts its
strategy through the same switch (:func:`trip`), so it survives a restart and ``polybus
resume`` lifts it like any halt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from polybus.common.halt import HaltState, decode_halt, halt_bucket, read_halts, set_halt
from polybus.common.subjects import Namespace

_log = structlog.get_logger("polybus.executor.halt")

HaltCallback = Callable[[HaltState], Awaitable[None]]
RETRY_DELAY_S = 1.0


class HaltFollower:
    """Applies the bucket's halt states through ``on_change``, each change once."""

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


async def trip(js: JetStreamContext, namespace: Namespace, strategy_id: str, reason: str) -> None:
    """Halt ``strategy_id`` (``""``: everything) from inside the executor, durably."""
    await set_halt(
        js, namespace, halted=True, strategy_id=strategy_id or None, reason=reason, by="executor"
    )
