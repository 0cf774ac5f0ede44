"""The order-safety heartbeat (VENUE.md §3.4): the first accepted ``POST /v1/heartbeats`` arms
a dead-man switch for the API key; each accepted send returns the id for the next one and
pushes the deadline ``heartbeat_timeout_s`` ahead; a key whose deadline passes loses every open
order. A stale id is refused with the id the venue expects and does not refresh the deadline.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog

from polybus.common.polymarket.clob import PolymarketHeartbeat, PolymarketHeartbeatRejection
from polybus.sim.auth import ApiKey, ApiKeys
from polybus.sim.clock import Clock

_log = structlog.get_logger("polybus.sim.heartbeats")

INVALID_HEARTBEAT = "Invalid Heartbeat ID"


class Heartbeats:
    def __init__(
        self,
        api_keys: ApiKeys,
        clock: Clock,
        *,
        timeout_s: float,
        cancel_all_of: Callable[[ApiKey], int],
    ) -> None:
        """``cancel_all_of(key)`` cancels a key's open orders and says how many."""
        self._api_keys = api_keys
        self._clock = clock
        self._timeout_s = timeout_s
        self._cancel_all_of = cancel_all_of

    def beat(
        self, key: ApiKey, heartbeat_id: str
    ) -> PolymarketHeartbeat | PolymarketHeartbeatRejection:
        if heartbeat_id != key.heartbeat_id:
            # py-clob-client reads "error", the official SDK "error_msg"; both are here.
            return PolymarketHeartbeatRejection(
                error=INVALID_HEARTBEAT, error_msg=INVALID_HEARTBEAT, heartbeat_id=key.heartbeat_id
            )
        key.heartbeat_id = str(uuid.uuid4())
        key.heartbeat_deadline = self._clock.monotonic() + self._timeout_s
        return PolymarketHeartbeat(heartbeat_id=key.heartbeat_id)

    def expire(self) -> None:
        """Fire the switch of every key whose deadline has passed (it then starts over)."""
        now = self._clock.monotonic()
        for key in list(self._api_keys.by_key.values()):
            if key.heartbeat_deadline is not None and now >= key.heartbeat_deadline:
                canceled = self._cancel_all_of(key)
                _log.info("heartbeat.expired", address=key.address, canceled=canceled)
                key.heartbeat_deadline = None
                key.heartbeat_id = ""
