"""The dead-man-switch heartbeat on a clock the test moves: nothing before arm, the id chain,
a refused id retried at once, a missed beat lost, and the two-step way back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from polybus.executor.heartbeat import Heartbeat
from polybus.executor.venue import HeartbeatRejected, VenueUnavailable

INTERVAL_S = 5.0


class SteppedClock:
    """Monotonic time that moves only on :meth:`advance`; a sleep ends when time reaches it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.loop_task: asyncio.Task[object] | None = None
        """The heartbeat loop (its pauses, not its sends' watchdogs, mark a finished beat)."""
        self._sleepers: list[tuple[float, asyncio.Future[None], asyncio.Task[object] | None]] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, wake, asyncio.current_task())
        self._sleepers.append(entry)
        try:
            await wake
        finally:
            self._sleepers.remove(entry)

    @property
    def sleeping(self) -> int:
        return len(self._sleepers)

    def sleeps_in(self, task: asyncio.Task[object] | None) -> bool:
        """Whether ``task`` itself waits in a sleep (the loop's pause, not a send's watchdog)."""
        return any(sleeper is task for _, _, sleeper in self._sleepers)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, wake, _ in self._sleepers:
            if due <= self.now and not wake.done():
                wake.set_result(None)


class ChainVenue:
    """The venue's heartbeat endpoint: each accepted id yields the next; a wrong one is refused
    with the expected id. ``fail``/``hang`` make the next sends fail or wait for ``release``."""

    def __init__(self) -> None:
        self.expected = ""
        self.sent: list[str] = []
        self.fail = 0
        self.hang = False
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self._issued = 0

    async def heartbeat(self, previous_id: str) -> str:
        self.sent.append(previous_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hang:
                await self.release.wait()
            if self.fail:
                self.fail -= 1
                raise VenueUnavailable("timeout", "no answer")
            if previous_id != self.expected:
                raise HeartbeatRejected(self.expected)
            self._issued += 1
            self.expected = f"hb-{self._issued}"
            return self.expected
        finally:
            self.in_flight -= 1


class Service:
    """What the executor service does with the callbacks: it records them."""

    def __init__(self) -> None:
        self.lost: list[str] = []
        self.restores: list[int] = []


async def until(predicate: Callable[[], bool]) -> None:
    """Let the other tasks run until ``predicate`` holds. ``sleep(0)`` only yields: nothing here
    waits on real time (the state is spread over the fakes, so there is no single event)."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0)


@asynccontextmanager
async def running(
    venue: ChainVenue, clock: SteppedClock, service: Service
) -> AsyncIterator[Heartbeat]:
    heartbeat = Heartbeat(
        venue,
        INTERVAL_S,
        clock,
        on_lost=service.lost.append,
        on_restored=service.restores.append,
    )
    task = asyncio.create_task(heartbeat.run())
    clock.loop_task = task
    try:
        yield heartbeat
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def next_beat(venue: ChainVenue, clock: SteppedClock, seconds: float = INTERVAL_S) -> None:
    """Move time by ``seconds`` from the loop's pause and wait for the beat to finish."""
    loop_task = clock.loop_task
    sent = len(venue.sent)
    await until(lambda: clock.sleeps_in(loop_task))
    clock.advance(seconds)
    await until(lambda: len(venue.sent) > sent and clock.sleeps_in(loop_task))


async def test_nothing_is_sent_until_armed_then_the_id_chain_is_followed() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    async with running(venue, clock, service) as heartbeat:
        for _ in range(3):
            await asyncio.sleep(0)
            clock.advance(60)
        assert venue.sent == []
        heartbeat.arm()
        heartbeat.arm()
        await until(lambda: heartbeat.accepted == 1)
        await next_beat(venue, clock)
        await next_beat(venue, clock)
        assert venue.sent == ["", "hb-1", "hb-2"]
        assert heartbeat.heartbeat_id == "hb-3"
        assert heartbeat.healthy
    assert service.lost == []


async def test_beats_follow_the_interval() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    async with running(venue, clock, service) as heartbeat:
        heartbeat.arm()
        await until(lambda: heartbeat.accepted == 1)
        await until(lambda: clock.sleeping > 0)
        clock.advance(INTERVAL_S - 0.5)
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(venue.sent) == 1
        clock.advance(0.5)
        await until(lambda: heartbeat.accepted == 2)


async def test_a_refused_id_is_lost_and_the_expected_id_sent_at_once() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    async with running(venue, clock, service) as heartbeat:
        heartbeat.arm()
        await until(lambda: heartbeat.accepted == 1)
        venue.expected = ""  # the venue's switch fired and started over
        await next_beat(venue, clock)
        assert venue.sent == ["", "hb-1", ""]
        assert service.lost == ["rejected"]
        assert not heartbeat.healthy
        [generation] = service.restores  # the fresh accepted heartbeat offers the restore
        assert heartbeat.restored(generation)
        assert heartbeat.healthy


async def test_a_failed_send_is_lost_retried_soon_and_restored_after_the_reconcile() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    async with running(venue, clock, service) as heartbeat:
        heartbeat.arm()
        await until(lambda: heartbeat.accepted == 1)
        venue.fail = 1
        await next_beat(venue, clock)
        assert service.lost == ["venue_unavailable"]
        assert service.restores == []
        await next_beat(venue, clock, seconds=1.0)  # the retry comes before the interval
        assert venue.sent == ["", "hb-1", "hb-1"]
        [generation] = service.restores
        assert not heartbeat.healthy  # not before the service reconciled
        await next_beat(venue, clock)
        assert service.restores == [generation]  # offered once per loss
        assert heartbeat.restored(generation)
        assert heartbeat.healthy
        assert service.lost == ["venue_unavailable"]


async def test_a_send_still_waiting_at_the_deadline_is_lost_and_not_doubled() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    async with running(venue, clock, service) as heartbeat:
        heartbeat.arm()
        await until(lambda: heartbeat.accepted == 1)
        venue.hang = True
        await until(lambda: clock.sleeping > 0)
        clock.advance(INTERVAL_S)
        await until(lambda: venue.in_flight == 1)
        clock.advance(4.5)
        for _ in range(10):
            await asyncio.sleep(0)
        assert service.lost == []
        clock.advance(0.5)  # 10 s since the last accepted heartbeat
        await until(lambda: service.lost == ["deadline_passed"])
        clock.advance(30)
        for _ in range(10):
            await asyncio.sleep(0)
        assert venue.most_in_flight == 1  # no second send while one is waiting
        venue.hang = False
        venue.release.set()
        await until(lambda: len(service.restores) == 1)
        assert heartbeat.restored(service.restores[0])


async def test_a_heartbeat_accepted_past_the_deadline_is_a_loss() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    async with running(venue, clock, service) as heartbeat:
        heartbeat.arm()
        await until(lambda: heartbeat.accepted == 1)
        await next_beat(venue, clock, seconds=12.0)  # the loop itself was held up
        assert service.lost == ["deadline_passed"]
        assert len(service.restores) == 1
        assert not heartbeat.healthy


async def test_a_loss_during_the_reconcile_voids_that_restore() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    async with running(venue, clock, service) as heartbeat:
        heartbeat.arm()
        await until(lambda: heartbeat.accepted == 1)
        venue.fail = 1
        await next_beat(venue, clock)
        await next_beat(venue, clock, seconds=1.0)
        [first] = service.restores
        venue.fail = 1  # lost again while the service reconciles
        await next_beat(venue, clock)
        assert not heartbeat.restored(first)
        assert not heartbeat.healthy
        await next_beat(venue, clock, seconds=1.0)
        second = service.restores[-1]
        assert second != first
        assert heartbeat.restored(second)
        assert service.lost == ["venue_unavailable"]  # one incident, one report


async def test_cancelling_the_loop_stops_it_at_once_even_mid_send() -> None:
    venue, clock, service = ChainVenue(), SteppedClock(), Service()
    heartbeat = Heartbeat(venue, INTERVAL_S, clock, service.lost.append, service.restores.append)
    venue.hang = True
    task = asyncio.create_task(heartbeat.run())
    heartbeat.arm()
    await until(lambda: venue.in_flight == 1)
    task.cancel()
    async with asyncio.timeout(1):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert venue.in_flight == 0  # the send was cancelled too, not left behind


def test_an_interval_at_or_past_the_deadline_is_refused() -> None:
    service = Service()
    with pytest.raises(ValueError, match="under 10"):
        Heartbeat(ChainVenue(), 10.0, SteppedClock(), service.lost.append, service.restores.append)
