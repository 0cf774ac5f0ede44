"""Settlement of simulated trades (VENUE.md §3.5, §8): each goes MATCHED → MINED → CONFIRMED
after the configured delays, or MATCHED → FAILED (on demand through the faults, or with the
configured probability), or through RETRYING (the transaction reverted and is resubmitted, a
fault) to MINED → CONFIRMED or to FAILED. A FAILED trade's fill is undone: collateral, shares
and the taker's fee go back.

The delays run on the event loop's own time, not the simulator's :class:`~polybus.sim.clock.
Clock`: they are chain latency, which tests wait out by awaiting the trade events.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import time
from collections.abc import Callable

from polybus.sim.balances import Balances
from polybus.sim.clock import Clock
from polybus.sim.config import SimSettings
from polybus.sim.faults import Faults
from polybus.sim.orders import Trade


class Settlement:
    def __init__(
        self,
        settings: SimSettings,
        faults: Faults,
        balances: Balances,
        clock: Clock,
        on_status: Callable[[Trade], None],
    ) -> None:
        """``on_status(trade)`` is told after each status change (the user channel)."""
        self._settings = settings
        self._faults = faults
        self._balances = balances
        self._clock = clock
        self._on_status = on_status
        self._due: list[tuple[float, int, Trade, str]] = []
        self._sequence = itertools.count()
        self._wake = asyncio.Event()
        self._rng = hashlib.sha256(f"{settings.seed}:settlement".encode()).digest()

    def _will_fail(self) -> bool:
        if self._faults.failed_settlements > 0:
            self._faults.failed_settlements -= 1
            return True
        probability = self._settings.settlement_failure_probability
        if not probability:
            return False
        self._rng = hashlib.sha256(self._rng).digest()
        return int.from_bytes(self._rng[:8], "big") / 2**64 < probability

    def _statuses(self) -> tuple[str, ...]:
        """The statuses a new trade will go through after MATCHED."""
        retry = self._faults.take_retrying_settlement()
        if retry == "CONFIRMED":
            return ("RETRYING", "MINED", "CONFIRMED")
        if retry == "FAILED":
            return ("RETRYING", "FAILED")
        return ("FAILED",) if self._will_fail() else ("MINED", "CONFIRMED")

    def schedule(self, trade: Trade) -> None:
        """Decide the trade's fate and queue its status changes."""
        statuses = self._statuses()
        trade.fails = statuses[-1] == "FAILED"
        due = time.monotonic()
        for status in statuses:
            step = "settlement_confirmed_ms" if status == "CONFIRMED" else "settlement_mined_ms"
            due += getattr(self._settings, step) / 1000
            heapq.heappush(self._due, (due, next(self._sequence), trade, status))
        self._wake.set()

    def clear(self) -> None:
        self._due.clear()

    async def run(self) -> None:
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._due[0][0] - time.monotonic()
            if due > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(due):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            _, _, trade, status = heapq.heappop(self._due)
            self._settle(trade, status)

    def _settle(self, trade: Trade, status: str) -> None:
        trade.status = status
        trade.last_update = int(self._clock.time())
        if status in ("MINED", "RETRYING"):
            # Each broadcast is a new transaction: a resubmitted one has another hash.
            trade.attempts += 1
            text = f"tx:{trade.id}" + (f":{trade.attempts}" if trade.attempts > 1 else "")
            trade.transaction_hash = "0x" + hashlib.sha256(text.encode()).hexdigest()
        if status == "FAILED":
            self._revert(trade)
        self._on_status(trade)

    def _revert(self, trade: Trade) -> None:
        """A failed settlement: the fill did not happen, balances and the fee go back."""
        if trade.taker is not None:
            taker = trade.taker
            self._balances.apply(
                taker.maker_address, taker.asset_id, taker.side, trade.size, trade.price, sign=-1
            )
            self._balances.charge_fee(taker.maker_address, taker.asset_id, taker.side, -trade.fee)
        maker = trade.maker.order
        if maker is not None:
            self._balances.apply(
                maker.maker_address, maker.asset_id, maker.side, trade.size, maker.price, sign=-1
            )
