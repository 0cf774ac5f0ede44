"""Soak: the whole system under random faults for a while, then its invariants (DESIGN §10).

    uv run --locked python -m bench.soak --minutes 30 [--seed 7] [--json FILE]

Runs ``polybus up --live`` on a copy of config/sim.toml on free ports, the executor trading
live against the built-in simulator: the same system as the fault tests
(tests/faults/pipeline.py), with the same faults and recovery checks (tests/faults/checks.py).
For ``--minutes`` it injects one fault after another, each drawn from a seeded shuffle of every
kind (so every kind comes up before any comes twice, and the same seed gives the same
sequence): SIGKILL of a random service (the supervisor restarts it), SIGKILL of nats-server (the
services reconnect, the same pids) or of PostgreSQL, a silent stall or an abrupt disconnect of
the venue's market sockets, a burst of malformed frames, halt then resume, and 425, 503 and
429 windows at the venue's CLOB. After each it waits until the system is moving again (the
recovery time) and `polybus status` is healthy.

At the end it checks the invariants: every MD, EXEC and INTENT sequence has its row in
PostgreSQL, no event is recorded twice, no intent is placed as two orders, every service is
running and healthy. It prints a table (fault, count, recovery p50 and max) and exits 0, or 1
naming the broken invariant (with the tail of `up`'s log); Ctrl-C or SIGTERM stops everything it
started (exit 130). Loopback only. CI runs a short one: tests/faults/test_soak.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from rich.console import Console
from rich.table import Table

from tests.faults.checks import (
    RESTART_S,
    assert_no_duplicates,
    assert_recorded_without_gaps,
    await_healthy,
    exec_stream,
    halt_then_resume,
    kill_nats_server,
    kill_postgres,
    kill_service,
    malformed_burst,
    venue_socket_fault,
    venue_window,
)
from tests.faults.pipeline import SERVICES, Pipeline, running_pipeline

KILLABLE = sorted(SERVICES - {"sim"})
"""The polybus services; the simulator is the venue (its faults are the venue's own)."""
Fault = Callable[[Pipeline, JetStreamContext, random.Random], Awaitable[float]]


def _kill_service(pipeline: Pipeline, jetstream: JetStreamContext, rng: random.Random) -> Any:
    return kill_service(pipeline, jetstream, rng.choice(KILLABLE))


FAULTS: dict[str, Fault] = {
    "SIGKILL a service": _kill_service,
    "SIGKILL nats-server": lambda p, js, _: kill_nats_server(p, js),
    "SIGKILL postgres": lambda p, js, _: kill_postgres(p, js),
    "venue stall": lambda p, js, _: venue_socket_fault(p, js, "stall"),
    "venue disconnect": lambda p, js, _: venue_socket_fault(p, js, "disconnect"),
    "malformed-frame burst": lambda p, js, _: malformed_burst(p, js),
    "halt then resume": lambda p, js, _: halt_then_resume(p, js),
    "venue 425 window": lambda p, js, _: venue_window(p, js, "restart_425"),
    "venue 503 window": lambda p, js, _: venue_window(p, js, "disabled_503"),
    "venue 429 burst": lambda p, js, _: venue_window(p, js, "rate_limit_429"),
}


class InvariantBroken(Exception):
    """What the soak found broken: the invariant's name and what was seen."""


@dataclass
class Survived:
    recoveries: dict[str, list[float]] = field(default_factory=dict)
    sequence: list[str] = field(default_factory=list)
    invariants: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "faults": {
                name: {
                    "count": len(times),
                    "recovery_p50_s": round(statistics.median(times), 1),
                    "recovery_max_s": round(max(times), 1),
                }
                for name, times in self.recoveries.items()
            },
            "sequence": self.sequence,
            "invariants": self.invariants,
        }


def schedule(seed: int) -> Callable[[], str]:
    """The next fault's name: rounds of a seeded shuffle of every kind."""
    rng = random.Random(seed)
    pending: list[str] = []

    def next_fault() -> str:
        if not pending:
            pending.extend(rng.sample(sorted(FAULTS), len(FAULTS)))
        return pending.pop(0)

    return next_fault


async def _check(survived: Survived, name: str, check: Awaitable[object]) -> None:
    try:
        await check
    except AssertionError as error:
        survived.invariants[name] = f"BROKEN: {error}"
        raise InvariantBroken(f"{name}: {error}") from None
    survived.invariants[name] = "ok"


async def soak(minutes: float, seed: int, survived: Survived) -> None:
    rng = random.Random(seed)
    next_fault = schedule(seed)
    async with running_pipeline("polybus-soak-") as pipeline, pipeline.jetstream() as jetstream:
        await exec_stream(pipeline)  # trading before the first fault
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            name = next_fault()
            label = f"{name} #{len(survived.recoveries.get(name, [])) + 1}"
            print(f"[{time.strftime('%H:%M:%S')}] {label}", flush=True)
            survived.sequence.append(name)
            try:
                recovery_s = await FAULTS[name](pipeline, jetstream, rng)
                survived.recoveries.setdefault(name, []).append(recovery_s)
                await await_healthy(pipeline, RESTART_S)
            except AssertionError as error:
                survived.invariants[f"recovery from {label}"] = f"BROKEN: {error}"
                raise InvariantBroken(f"recovery from {label}: {error}") from None
        # An ack lost with a killed recorder or nats-server comes back after the consumer's
        # ack wait: a late row, not a lost one.
        exec_name = await exec_stream(pipeline)
        ack_wait = (await jetstream.consumer_info(exec_name, "recorder")).config.ack_wait or 0
        for table, stream in (
            ("book_deltas", "MD"),
            ("order_events", "EXEC"),
            ("intents", "INTENT"),
        ):
            await _check(
                survived,
                f"every {stream} sequence recorded",
                assert_recorded_without_gaps(pipeline, jetstream, table, RESTART_S + ack_wait),
            )
        await _check(
            survived, "no duplicate row, no intent placed twice", assert_no_duplicates(pipeline)
        )
        await _check(survived, "every service healthy", _all_healthy(pipeline))


async def _all_healthy(pipeline: Pipeline) -> None:
    missing = sorted(SERVICES - set(pipeline.children()))
    assert not missing, f"not running: {missing}"
    await await_healthy(pipeline, RESTART_S)


def report(survived: Survived, minutes: float, seed: int) -> None:
    table = Table(title=f"soak: {minutes:g} min, seed {seed}")
    for column in ("fault", "count", "recovery p50 s", "recovery max s"):
        table.add_column(column, justify="left" if column == "fault" else "right")
    for name, figures in sorted(survived.summary()["faults"].items()):
        table.add_row(
            name,
            str(figures["count"]),
            f"{figures['recovery_p50_s']:.1f}",
            f"{figures['recovery_max_s']:.1f}",
        )
    console = Console(width=100)
    console.print(table)
    for name, outcome in survived.invariants.items():
        console.print(f"{name}: {outcome}", highlight=False, markup=False)


async def _stoppable(minutes: float, seed: int, survived: Survived) -> None:
    """The soak; SIGTERM cancels it as Ctrl-C does, so its cleanup (stopping `up`) runs."""
    task = asyncio.ensure_future(soak(minutes, seed, survived))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long to inject faults")
    parser.add_argument("--seed", type=int, default=1, help="the fault sequence (default 1)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    arguments = parser.parse_args()
    if arguments.minutes <= 0:
        parser.error("--minutes must be positive")
    survived = Survived()
    code, verdict = 0, "survived"
    try:
        asyncio.run(_stoppable(arguments.minutes, arguments.seed, survived))
    except KeyboardInterrupt:
        code, verdict = 130, "interrupted: everything it started is stopped"
    except InvariantBroken as error:
        code, verdict = 1, f"broken invariant: {error}"
    except Exception as error:  # any other failure: reported, with the table so far
        code, verdict = 1, f"failed: {error!r}"
    report(survived, arguments.minutes, arguments.seed)
    if arguments.json:
        summary = survived.summary() | {"exit": code, "verdict": verdict}
        arguments.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(verdict[:4000], file=sys.stderr if code else sys.stdout)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
