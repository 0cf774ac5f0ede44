"""Fencing by lease (DESIGN §5): an intent made under a partition lease is taken only while that
lease is the partition's current one, so a replica that lost a partition (paused, cut off,
replaced) cannot trade it, whatever reaches the executor late.

An intent carries the token of its replica's lease (``lease_revision``; 0: made without one, not
fenced). The authority is the partition's key in the ``LEASES`` bucket: its token now.
:class:`LeaseFence` keeps the tokens it has seen from a watch of the strategies' keys, so the
common case (the intent's token is the one the executor saw renewed moments ago) costs no
round trip. Anything else is asked of the server before it is refused or taken:

- a token that differs from the one seen (a new holder the watch has not delivered yet, or a
  stale replica) is checked with a direct read of the key;
- a token seen longer ago than ``trust_s`` is read again. Holders renew every TTL/4, so with the
  watch working every live lease is refreshed well inside ``trust_s`` (TTL/2); a lease that stops
  being renewed (its holder died, the watch stopped after a NATS restart) is read from the server
  until the watch is back, and once the key expired the intent is refused.

What remains is the watch's delivery delay (milliseconds on one host) during which an old
holder's intent could still match the token seen; the old holder itself stops making intents a
safety margin (TTL/4) before its key can expire, so such an intent was made while it held the
lease. docs/executor.md, "Fencing".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats.errors
import structlog
from nats.js.kv import KeyValue

from polybus.common.events import OrderIntent
from polybus.common.leases import (
    LeaseStore,
    StoredEntry,
    current_token,
    partition_key,
    strategy_group,
)

_log = structlog.get_logger("polybus.executor.fencing")

WATCHED_KEYS = "strategy.>"
RETRY_DELAY_S = 1.0
READ_TIMEOUT_S = 1.0


class LeaseFence:
    """The current lease token of every strategy partition, as the executor decides by it."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        trust_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._trust_s = store.ttl_s / 2 if trust_s is None else trust_s
        self._clock = clock
        self._seen: dict[str, tuple[int, float]] = {}
        """Partition key -> (token, when seen on this clock)."""
        self.reads = 0
        """Direct reads of a key (the watch did not settle the question)."""

    def observe(self, entry: StoredEntry) -> None:
        """A partition key's value as the watch (or a read) delivered it."""
        self._seen[entry.key] = (current_token(entry), self._clock())

    def forget(self, key: str) -> None:
        """The key was deleted (a clean release) or purged."""
        self._seen.pop(key, None)

    async def current(self, intent: OrderIntent) -> int | None:
        """The token of the lease on ``intent``'s partition now (None: nobody holds it, or the
        bucket could not be read)."""
        key = partition_key(strategy_group(intent.strategy_id), intent.partition)
        seen = self._seen.get(key)
        if (
            seen is not None
            and seen[0] == intent.lease_revision
            and self._clock() - seen[1] < self._trust_s
        ):
            return seen[0]
        self.reads += 1
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                entry = await self._store.get(key)
        except (TimeoutError, OSError, nats.errors.Error) as error:
            _log.warning("fence.read_failed", key=key, error=repr(error))
            return None
        if entry is None:
            self.forget(key)
            return None
        self.observe(entry)
        return current_token(entry)

    async def follow(self, kv: KeyValue) -> None:
        """Watch every strategy's partition keys until cancelled; restart the watch if it ends
        or fails (NATS restarted). Until it is back, decisions fall back to direct reads."""
        while True:
            try:
                await self._watch(kv)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning("fence.watch_failed", error=repr(error), retry_in_s=RETRY_DELAY_S)
            await asyncio.sleep(RETRY_DELAY_S)

    async def _watch(self, kv: KeyValue) -> None:
        watcher = await kv.watch(WATCHED_KEYS)
        try:
            async for entry in watcher:
                if entry is None or ".partition." not in entry.key:
                    continue  # the end of the initial values, or a membership key
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self.forget(entry.key)
                else:
                    self.observe(StoredEntry(entry.key, entry.value, entry.revision or 0))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
