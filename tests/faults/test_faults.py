"""DESIGN §10 against the running pipeline (see tests/faults/__init__.py for the full map).

Every scenario checks what a user would: rows in PostgreSQL, the streams' sequences in
JetStream, the pipeline's own CLI. They share one `polybus up` (tests/faults/conftest.py).
"""

from __future__ import annotations

import os
import signal
import time

import asyncpg
import pytest
from nats.js import JetStreamContext

from tests.faults.checks import (
    RESTART_S,
    assert_no_duplicates,
    assert_recorded_without_gaps,
    await_healthy,
    exec_stream,
    executor_counter,
    halt,
    heartbeating,
    kill_and_await_restart,
    kill_nats_server,
    last_seq,
    malformed_burst,
    markets_move,
    open_orders,
    resume,
    trading,
    venue_socket_fault,
    venue_window,
)
from tests.faults.pipeline import Pipeline
from tests.helpers import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]


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


# -- 3. NATS restarted: the embedded nats-server SIGKILLed, restarted from its store -----------
async def test_a_nats_restart_is_ridden_out_by_every_service_and_nothing_is_lost_or_doubled(
    pipeline: Pipeline, jetstream: JetStreamContext
) -> None:
    exec_name = await exec_stream(pipeline)
    intents_before = await last_seq(jetstream, pipeline.stream("INTENT"))
    recovered_s = await kill_nats_server(pipeline, jetstream)  # asserts: the same pids

    # The strategies publish intents again, and what every stream held is recorded. An ack the
    # killed server had not yet stored comes back as a redelivery after the consumer's ack
    # wait: a late row, never a lost one.
    async def intents_again() -> bool:
        return await last_seq(jetstream, pipeline.stream("INTENT")) > intents_before

    await eventually(intents_again, RESTART_S, "intents published after the restart", 0.5)
    ack_wait = (await jetstream.consumer_info(exec_name, "recorder")).config.ack_wait or 0
    within = RESTART_S + ack_wait
    ranges = [
        await assert_recorded_without_gaps(pipeline, jetstream, table, within)
        for table in ("book_deltas", "order_events", "intents")
    ]
    await assert_no_duplicates(pipeline)
    print(f"nats-server: services back after {recovered_s:.1f}s; covered {ranges}")


# -- 4. Halt and resume with orders open ---------------------------------------------------------
async def test_halt_cancels_open_orders_refuses_places_and_resume_trades_again(
    pipeline: Pipeline, jetstream: JetStreamContext
) -> None:
    await exec_stream(pipeline)
    database = await pipeline.database()
    resumed = False
    try:

        async def some_open() -> bool:
            return await open_orders(database) > 0

        await eventually(some_open, 90, "spread_capture's quotes open at the simulator", 0.5)
        halt_seq = await halt(pipeline, database)

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
        await resume(pipeline, database)
        resumed = True
        print(
            f"halt at EXEC {halt_seq}, executor restarted while halted after {restart_s:.1f}s,"
            f" {places} places since"
        )
    finally:
        await database.close()
        if not resumed:
            # The pipeline is shared: a failure here must not leave the next tests halted.
            await pipeline.cli("resume")


# -- 5. A burst of malformed frames from the venue -----------------------------------------------
async def test_a_burst_of_malformed_frames_is_dead_lettered_and_ingest_keeps_going(
    pipeline: Pipeline, jetstream: JetStreamContext
) -> None:
    dlq_before = (await jetstream.stream_info(pipeline.stream("DLQ"))).state.messages
    await malformed_burst(pipeline, jetstream)  # asserts: the same ingest, books flow on

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
    await await_healthy(pipeline)


# -- 6. The venue's market channel stalls silently, or drops every socket -----------------------
@pytest.mark.parametrize("fault", ["stall", "disconnect"])
async def test_a_venue_stall_or_disconnect_is_healed_and_the_stale_quotes_pulled(
    pipeline: Pipeline, jetstream: JetStreamContext, fault: str
) -> None:
    database = await pipeline.database()
    try:

        async def some_open() -> bool:
            return await open_orders(database) > 0

        await eventually(some_open, 90, "spread_capture's quotes open at the simulator", 0.5)
        intents_before = await last_seq(jetstream, pipeline.stream("INTENT"))
        ingest = pipeline.children()["ingest"]
        healed_s = await venue_socket_fault(pipeline, jetstream, fault)  # type: ignore[arg-type]
        assert pipeline.children()["ingest"] == ingest, "ingest restarted instead of healing"

        # While their books were stale the strategies pulled their quotes on them.
        async def pulled() -> bool:
            return bool(
                await database.fetchval(
                    "SELECT count(*) FROM intents WHERE action = 'cancel'"
                    " AND reason = 'book_untradeable' AND stream_seq > $1",
                    intents_before,
                )
            )

        await eventually(pulled, RESTART_S, "cancels of the quotes on stale books", 0.5)
        pulls = await database.fetchval(
            "SELECT count(*) FROM intents WHERE action = 'cancel'"
            " AND reason = 'book_untradeable' AND stream_seq > $1",
            intents_before,
        )
    finally:
        await database.close()
    await trading(pipeline, jetstream, await last_seq(jetstream, await exec_stream(pipeline)))
    await assert_no_duplicates(pipeline)
    print(f"{fault}: every book live again after {healed_s:.1f}s; {pulls} quotes pulled")


# -- 7. 425 / 503 / 429 at the venue's CLOB --------------------------------------------------
@pytest.mark.parametrize(
    ("window", "retry_reason"),
    [
        ("restart_425", "engine_restarting"),
        ("disabled_503", ""),
        ("rate_limit_429", "rate_limited"),
    ],
)
async def test_a_venue_window_is_waited_out_and_no_intent_is_placed_twice(
    pipeline: Pipeline, jetstream: JetStreamContext, window: str, retry_reason: str
) -> None:
    await exec_stream(pipeline)
    retries_before = await executor_counter(pipeline, "polybus_executor_venue_retries")
    recovered_s = await venue_window(pipeline, jetstream, window)  # type: ignore[arg-type]
    retries = await executor_counter(pipeline, "polybus_executor_venue_retries")
    grown = {reason: retries.get(reason, 0) - retries_before.get(reason, 0) for reason in retries}
    if retry_reason == "rate_limited":
        # Three 429s, each waited out once per Retry-After: never more retries than answers
        # (which requests meet them is timing: a heartbeat or a reconcile read is not retried).
        assert grown.get("rate_limited", 0) <= 3, grown
    elif retry_reason:
        # One retry per Retry-After (1 s granularity) over the 4 s window, per request in
        # flight: a hammering client would retry hundreds of times.
        assert 1 <= grown.get(retry_reason, 0) <= 40, grown
    else:
        # 503 trading disabled carries no Retry-After: refused, held a while, never retried.
        assert not any(grown.values()), grown
    await assert_no_duplicates(pipeline)
    await await_healthy(pipeline)
    print(f"{window}: orders accepted again {recovered_s:.1f}s after it began; retries {grown}")
