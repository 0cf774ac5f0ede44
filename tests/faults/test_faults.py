"""DESIGN §10 against the running pipeline (see tests/faults/__init__.py for the full map).

Every scenario checks what a user would: rows in PostgreSQL, the streams' sequences in
JetStream, the pipeline's own CLI. They share one `polybus up` (tests/faults/conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import time

import aiohttp
import asyncpg
import pytest
from nats.js import JetStreamContext

from tests.faults.conftest import Pipeline
from tests.helpers import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]

RESTART_S = 45
"""A killed child is back (the supervisor's backoff) and caught up within this, on 2 cores."""


async def _recorded_tables(database: asyncpg.Connection) -> list[str]:
    rows = await database.fetch(
        "SELECT table_name FROM information_schema.columns"
        " WHERE column_name = 'stream_seq' AND table_schema = 'public'"
    )
    return sorted(row["table_name"] for row in rows)


async def _stream_name(database: asyncpg.Connection, table: str) -> str:
    name = await database.fetchval(f"SELECT stream FROM {table} LIMIT 1")
    assert isinstance(name, str), f"nothing recorded in {table} yet"
    return name


async def missing_sequences(
    database: asyncpg.Connection, stream: str, first: int, last: int, limit: int = 20
) -> list[int]:
    """The first ``limit`` sequences in first..last of ``stream`` that no table holds a row
    for."""
    tables = await _recorded_tables(database)
    union = " UNION ALL ".join(
        f"SELECT stream_seq FROM {table} WHERE stream = $1 AND stream_seq BETWEEN $2 AND $3"
        for table in tables
    )
    rows = await database.fetch(
        f"SELECT s FROM generate_series($2::bigint, $3::bigint) AS s"
        f" WHERE s NOT IN ({union}) ORDER BY s LIMIT $4",
        stream,
        first,
        last,
        limit,
    )
    return [row["s"] for row in rows]


async def assert_recorded_without_gaps(
    pipeline: Pipeline, jetstream: JetStreamContext, table: str, within: float = RESTART_S
) -> dict[str, int]:
    """The recorder's rows cover every sequence of the stream ``table`` is fed from, from its
    first message up to its last one now, within ``within`` s; returns the range."""
    database = await pipeline.database()
    try:
        stream = await _stream_name(database, table)
        # From 1: nothing ages out within the test, and INTENT (interest retention) drops what
        # every consumer acked, so its first sequence says nothing about what was recorded.
        first, last = 1, await last_seq(jetstream, stream)
        missing: list[int] = []

        async def covered() -> bool:
            nonlocal missing
            missing = await missing_sequences(database, stream, first, last)
            return not missing

        try:
            await eventually(covered, within, f"rows for {stream} {first}..{last}", 1.0)
        except AssertionError as error:
            raise AssertionError(f"{error}; still missing (first 20): {missing}") from None
        return {"stream": stream, "first": first, "last": last}  # type: ignore[dict-item]
    finally:
        await database.close()


async def assert_no_duplicates(pipeline: Pipeline) -> None:
    """No event recorded twice (a republished event gets a new sequence, so this is by
    event_id), and no intent placed as two orders: at most one ``submitted``/``accepted``
    event of each status per order id (the order id is the intent id that placed it)."""
    database = await pipeline.database()
    try:
        for table in ("intents", "order_events"):
            doubled = await database.fetch(
                f"SELECT event_id, count(*) AS n FROM {table}"
                " GROUP BY event_id HAVING count(*) > 1 LIMIT 5"
            )
            assert not doubled, f"{table}: events recorded twice: {[dict(r) for r in doubled]}"
        doubled = await database.fetch(
            "SELECT order_id, status, count(*) AS n FROM order_events"
            " WHERE status IN ('submitted', 'accepted') GROUP BY order_id, status"
            " HAVING count(*) > 1 LIMIT 5"
        )
        assert not doubled, f"intents placed more than once: {[dict(r) for r in doubled]}"
    finally:
        await database.close()


async def last_seq(jetstream: JetStreamContext, stream: str) -> int:
    return (await jetstream.stream_info(stream)).state.last_seq


async def kill_and_await_restart(pipeline: Pipeline, name: str) -> float:
    """SIGKILL child ``name``; returns the seconds until the supervisor's new one runs."""
    old = pipeline.children()[name]
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    await eventually(
        lambda: pipeline.children().get(name) not in (None, old),
        RESTART_S,
        f"the supervisor to restart {name}",
        0.1,
    )
    return time.monotonic() - killed


async def trading(pipeline: Pipeline, jetstream: JetStreamContext, after: int) -> None:
    """EXEC grows past ``after``: the executor publishes order events again."""
    database = await pipeline.database()
    try:
        stream = await _stream_name(database, "order_events")
    finally:
        await database.close()

    async def grew() -> bool:
        return await last_seq(jetstream, stream) > after

    await eventually(grew, RESTART_S, f"{stream} to grow past {after}", 0.5)


async def exec_stream(pipeline: Pipeline) -> str:
    database = await pipeline.database()
    try:

        async def any_order() -> bool:
            return bool(await database.fetchval("SELECT count(*) FROM order_events"))

        await eventually(any_order, 90, "the first order event in PostgreSQL", 0.5)
        return await _stream_name(database, "order_events")
    finally:
        await database.close()


# -- 1. SIGKILL of each service under load, the supervisor restarts it -------------------------
@pytest.mark.parametrize(
    "name", ["ingest", "recorder", "executor", "strategy.dutch_book", "strategy.spread_capture"]
)
async def test_a_killed_service_is_restarted_and_nothing_is_lost_or_doubled(
    pipeline: Pipeline, jetstream: JetStreamContext, name: str
) -> None:
    exec_name = await exec_stream(pipeline)
    before = await last_seq(jetstream, exec_name)
    restart_s = await kill_and_await_restart(pipeline, name)
    await trading(pipeline, jetstream, before)
    within = RESTART_S
    if name == "recorder":
        # What the killed recorder had fetched but not committed is redelivered only once its
        # consumers' ack wait (60 s) has passed since the fetch.
        within += (await jetstream.consumer_info(exec_name, "recorder")).config.ack_wait or 0
    ranges = [
        await assert_recorded_without_gaps(pipeline, jetstream, table, within)
        for table in ("book_deltas", "order_events", "intents")
    ]
    await assert_no_duplicates(pipeline)
    print(f"{name}: restarted after {restart_s:.1f}s; covered {ranges}")


# -- 2. PostgreSQL killed, restarted by the supervisor ------------------------------------------
async def test_postgres_down_the_executor_keeps_trading_and_the_recorder_catches_up(
    pipeline: Pipeline, jetstream: JetStreamContext
) -> None:
    exec_name = await exec_stream(pipeline)
    before = await last_seq(jetstream, exec_name)
    killed = time.monotonic()
    seen: set[int] = set()

    async def traded_while_down() -> bool:
        """Kill every postgres the supervisor starts until EXEC has grown meanwhile."""
        pid = pipeline.children().get("postgres")
        if pid is not None and pid not in seen:
            os.kill(pid, signal.SIGKILL)
            seen.add(pid)
        return await last_seq(jetstream, exec_name) >= before + 3

    await eventually(traded_while_down, RESTART_S, "EXEC events while PostgreSQL is down", 0.05)
    during = await last_seq(jetstream, exec_name) - before

    async def reachable() -> bool:
        try:
            await (await pipeline.database()).close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    await eventually(reachable, RESTART_S, "PostgreSQL accepting connections again", 0.1)
    down_s = time.monotonic() - killed
    await trading(pipeline, jetstream, before)
    ranges = [
        await assert_recorded_without_gaps(pipeline, jetstream, table)
        for table in ("book_deltas", "order_events", "intents")
    ]
    await assert_no_duplicates(pipeline)
    print(
        f"postgres down {down_s:.1f}s ({len(seen)} kills); {during} EXEC events meanwhile;"
        f" covered {ranges}"
    )


async def markets_move(pipeline: Pipeline, jetstream: JetStreamContext, count: int) -> None:
    """Wait until ``count`` more market data messages went over MD."""
    start = await last_seq(jetstream, pipeline.stream("MD"))

    async def moved() -> bool:
        return await last_seq(jetstream, pipeline.stream("MD")) >= start + count

    await eventually(moved, RESTART_S, f"{count} more MD messages", 0.2)


async def heartbeating(pipeline: Pipeline, service: str, pid: int) -> None:
    """`polybus status --json` shows a live heartbeat of ``service`` from process ``pid`` (its
    status may be degraded: a halted executor or strategy is not healthy)."""

    async def live() -> bool:
        _, out = await pipeline.cli("status", "--json")
        return any(
            entry["service"] == service and entry["pid"] == pid and entry["status"] != "down"
            for entry in json.loads(out)["services"]
        )

    await eventually(live, RESTART_S, f"a heartbeat of {service} from pid {pid}", 0.5)


# -- 3. Halt and resume with orders open ---------------------------------------------------------
OPEN = "('submitted', 'accepted', 'partially_filled')"


async def open_orders(database: asyncpg.Connection) -> int:
    count = await database.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT ON (order_id) order_id, status FROM order_events"
        " ORDER BY order_id, stream_seq DESC) AS latest WHERE status IN " + OPEN
    )
    assert isinstance(count, int)
    return count


async def test_halt_cancels_open_orders_refuses_places_and_resume_trades_again(
    pipeline: Pipeline, jetstream: JetStreamContext
) -> None:
    await exec_stream(pipeline)
    database = await pipeline.database()
    try:

        async def some_open() -> bool:
            return await open_orders(database) > 0

        await eventually(some_open, 90, "spread_capture's quotes open on paper", 0.5)
        code, out = await pipeline.cli("halt", "--reason", "fault test")
        assert code == 0, out
        halted_at = await database.fetchval("SELECT coalesce(max(stream_seq), 0) FROM order_events")

        async def halt_recorded() -> bool:
            return bool(
                await database.fetchval(
                    "SELECT count(*) FROM risk_events WHERE kind = 'halt' AND stream_seq > $1",
                    0,
                )
            )

        await eventually(halt_recorded, RESTART_S, "the executor's halt risk event", 0.5)
        halt_seq = await database.fetchval(
            "SELECT max(stream_seq) FROM risk_events WHERE kind = 'halt'"
        )

        async def all_canceled() -> bool:
            return await open_orders(database) == 0

        await eventually(all_canceled, RESTART_S, "every open order canceled after halt", 0.5)

        # The strategies follow the halt too and stop placing; what they still send is refused.
        # While halted the markets keep moving (a live strategy would quote on them), and a
        # restarted executor still holds the halt (it persists in the HALT bucket).
        intents_at_halt = await last_seq(jetstream, pipeline.stream("INTENT"))
        await markets_move(pipeline, jetstream, 300)
        restart_s = await kill_and_await_restart(pipeline, "executor")
        await heartbeating(pipeline, "executor", pipeline.children()["executor"])
        await markets_move(pipeline, jetstream, 300)
        places = await database.fetchval(
            "SELECT count(*) FROM intents WHERE action = 'place' AND stream_seq > $1",
            intents_at_halt,
        )
        accepted = await database.fetch(
            "SELECT order_id, status, stream_seq FROM order_events WHERE stream_seq > $1"
            " AND status IN ('submitted', 'accepted') ORDER BY stream_seq LIMIT 5",
            halt_seq,
        )
        assert not accepted, f"orders taken while halted: {[dict(r) for r in accepted]}"
        code, out = await pipeline.cli("resume")
        assert code == 0, out
        resumed_from = await database.fetchval("SELECT max(stream_seq) FROM order_events")

        async def accepting_again() -> bool:
            return bool(
                await database.fetchval(
                    "SELECT count(*) FROM order_events WHERE status IN ('submitted', 'accepted')"
                    " AND stream_seq > $1",
                    resumed_from,
                )
            )

        await eventually(accepting_again, 90, "an order accepted after resume", 0.5)
        print(
            f"halt: last order event before {halted_at}, halt at EXEC {halt_seq},"
            f" executor restarted while halted after {restart_s:.1f}s, {places} places since"
        )
    finally:
        await database.close()


# -- 4. A burst of malformed frames from the venue -----------------------------------------------
async def test_a_burst_of_malformed_frames_is_dead_lettered_and_ingest_keeps_going(
    pipeline: Pipeline, jetstream: JetStreamContext
) -> None:
    sim_url = pipeline.sim_url()
    ingest = pipeline.children()["ingest"]
    dlq_before = (await jetstream.stream_info(pipeline.stream("DLQ"))).state.messages
    async with aiohttp.ClientSession() as session:
        for kind in ["malformed", "unknown", "invalid_json"] * 10:
            async with session.post(
                f"{sim_url}/admin/faults/inject_frame", json={"kind": kind}
            ) as response:
                assert response.status == 200, await response.text()

    # A dead letter's id is the digest of its input, so a frame sent again is one letter: one
    # per kind (the simulator's frames of a kind are the same bytes for the same asset).
    async def dead_lettered() -> bool:
        state = (await jetstream.stream_info(pipeline.stream("DLQ"))).state
        return state.messages >= dlq_before + 3

    await eventually(dead_lettered, RESTART_S, "a dead letter per kind on dlq.>", 0.5)
    database = await pipeline.database()
    try:

        async def recorded() -> bool:
            reasons = await database.fetchval("SELECT count(DISTINCT raw) FROM dead_letters")
            return isinstance(reasons, int) and reasons >= 3

        await eventually(recorded, RESTART_S, "the dead letters in PostgreSQL", 0.5)
        letters = [
            dict(row)
            for row in await database.fetch(
                "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason ORDER BY reason"
            )
        ]
    finally:
        await database.close()
    print(f"dead letters by reason: {letters}")
    assert pipeline.children().get("ingest") == ingest, "ingest restarted: it crashed"
    database = await pipeline.database()
    try:
        since = await database.fetchval("SELECT max(stream_seq) FROM book_snapshots")

        async def books_flow() -> bool:
            return bool(
                await database.fetchval(
                    "SELECT count(*) FROM book_deltas WHERE stream_seq > $1", since
                )
            )

        await eventually(books_flow, RESTART_S, "book deltas after the burst", 0.5)
    finally:
        await database.close()
    # Healthy again within a heartbeat: a service's last one may predate the previous test's
    # resume (a halted executor or strategy reports itself unhealthy until its next one).
    outputs: list[str] = []

    async def healthy() -> bool:
        code, out = await pipeline.cli("status", "--json")
        outputs.append(out)
        return code == 0

    try:
        await eventually(healthy, 30, "polybus status healthy after the burst", 1.0)
    except AssertionError as error:
        raise AssertionError(f"{error}; last status: {outputs[-1] if outputs else ''}") from None
