"""The executor's side of the halt switch.

It follows the ``HALT`` bucket with :class:`polybus.common.halt.HaltFollower` (shared with the
strategies): every scope's state is applied before the first intent, then every change.

The executor also writes the bucket itself: a venue-reject breaker that opens halts its
strategy through the same switch (:func:`trip`), so it survives a restart and ``polybus
resume`` lifts it like any halt.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from polybus.common.halt import HaltFollower, set_halt
from polybus.common.subjects import Namespace

__all__ = ["HaltFollower", "trip"]


async def trip(js: JetStreamContext, namespace: Namespace, strategy_id: str, reason: str) -> None:
    """Halt ``strategy_id`` (``""``: everything) from inside the executor, durably."""
    await set_halt(
        js, namespace, halted=True, strategy_id=strategy_id or None, reason=reason, by="executor"
    )
