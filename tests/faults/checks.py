"""What a user checks after a fault, and the faults themselves, on the running pipeline.

Shared by tests/faults/test_faults.py and the soak (bench/soak.py): rows in PostgreSQL, the
streams' sequences in JetStream, `polybus status`, and the simulator's fault admin
(``POST /admin/faults/<name>``). Each fault returns the seconds until the system was back:
the service or server running again and the pipeline moving (orders, books) again.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Literal

import aiohttp
import asyncpg
import nats.errors
from nats.js import JetStreamContext
from prometheus_client.parser import text_string_to_metric_families

from polybus.common.operator.scrape import metrics_url
from tests.faults.pipeline import SERVICES, Pipeline
from tests.helpers import eventually

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


async def _seq_or_zero(jetstream: JetStreamContext, stream: str) -> int:
    """``last_seq``, or 0 while our own client is still reconnecting (a nats-server restart)."""
    try:
        return await last_seq(jetstream, stream)
    except (nats.errors.Error, TimeoutError, OSError):
        return 0


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
    """EXEC grows past ``after``: the executor publishes order events again (asked of NATS
    only: PostgreSQL may be down meanwhile)."""
    stream = pipeline.stream("EXEC")

    async def grew() -> bool:
        return await _seq_or_zero(jetstream, stream) > after

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


async def markets_move(pipeline: Pipeline, jetstream: JetStreamContext, count: int) -> None:
    """Wait until ``count`` more market data messages went over MD."""
    start = await last_seq(jetstream, pipeline.stream("MD"))

    async def moved() -> bool:
        return await _seq_or_zero(jetstream, pipeline.stream("MD")) >= start + count

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


OPEN = "('submitted', 'accepted', 'partially_filled')"


async def open_orders(database: asyncpg.Connection) -> int:
    count = await database.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT ON (order_id) order_id, status FROM order_events"
        " ORDER BY order_id, stream_seq DESC) AS latest WHERE status IN " + OPEN
    )
    assert isinstance(count, int)
    return count


async def _fetch_count(pipeline: Pipeline, query: str, *args: object) -> int:
    """One ``count(*)`` query on a fresh connection; -1 while PostgreSQL does not answer."""
    try:
        database = await pipeline.database()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return -1
    try:
        count = await database.fetchval(query, *args)
    finally:
        await database.close()
    assert isinstance(count, int)
    return count


async def books_flow(pipeline: Pipeline, after_md_seq: int, within: float = RESTART_S) -> None:
    """Book deltas past MD sequence ``after_md_seq`` are in PostgreSQL: ingest -> bus ->
    recorder moves again."""

    async def flowing() -> bool:
        return (
            await _fetch_count(
                pipeline, "SELECT count(*) FROM book_deltas WHERE stream_seq > $1", after_md_seq
            )
            > 0
        )

    await eventually(flowing, within, f"book deltas past MD {after_md_seq} in PostgreSQL", 0.5)


async def service_pids(pipeline: Pipeline) -> dict[str, int]:
    children = pipeline.children()
    return {name: children[name] for name in SERVICES}


async def reconnected(pipeline: Pipeline, pids: dict[str, int], since: float) -> None:
    """Every service in ``pids`` heartbeats again from the same process, a heartbeat newer
    than ``since`` (monotonic): each reconnected to NATS by itself."""
    late: list[str] = []

    async def all_beat() -> bool:
        _, status = await pipeline.status()
        fresh = {
            entry["pid"]
            for entry in status["services"]
            if entry["status"] != "down"
            and entry["last_heartbeat_age_s"] < time.monotonic() - since
        }
        late[:] = sorted(name for name, pid in pids.items() if pid not in fresh)
        return not late

    try:
        await eventually(all_beat, RESTART_S, "a heartbeat of every service since the fault", 1.0)
    except AssertionError as error:
        raise AssertionError(f"{error}; none yet from {late}") from None


async def await_healthy(pipeline: Pipeline, within: float = 30) -> None:
    """`polybus status` exits 0 (every instance healthy) within a heartbeat or two: a
    service's last one may predate a resume (a halted executor or strategy reports itself
    unhealthy until its next one)."""
    outputs: list[str] = []

    async def exits_zero() -> bool:
        code, out = await pipeline.cli("status", "--json")
        outputs.append(out)
        return code == 0

    try:
        await eventually(exits_zero, within, "polybus status healthy", 1.0)
    except AssertionError as error:
        raise AssertionError(f"{error}; last status: {outputs[-1] if outputs else ''}") from None


# -- the faults ----------------------------------------------------------------------------------
async def kill_service(pipeline: Pipeline, jetstream: JetStreamContext, name: str) -> float:
    """SIGKILL one service under load: the supervisor restarts it and EXEC grows again."""
    before = await last_seq(jetstream, await exec_stream(pipeline))
    killed = time.monotonic()
    await kill_and_await_restart(pipeline, name)
    await trading(pipeline, jetstream, before)
    return time.monotonic() - killed


async def kill_nats_server(pipeline: Pipeline, jetstream: JetStreamContext) -> float:
    """SIGKILL the embedded nats-server: the supervisor restarts it from its store, every
    service reconnects without being restarted (asserted: the same pids), and the pipeline
    moves again end to end (EXEC grows, book deltas reach PostgreSQL)."""
    pids = await service_pids(pipeline)
    exec_before = await last_seq(jetstream, await exec_stream(pipeline))
    md_before = await last_seq(jetstream, pipeline.stream("MD"))
    killed = time.monotonic()
    await kill_and_await_restart(pipeline, "nats-server")
    await reconnected(pipeline, pids, killed)
    await trading(pipeline, jetstream, exec_before)
    await books_flow(pipeline, md_before)
    recovered = time.monotonic() - killed
    now = await service_pids(pipeline)
    restarted = sorted(name for name in pids if now[name] != pids[name])
    assert not restarted, f"restarted instead of reconnecting: {restarted}"
    return recovered


async def kill_postgres(pipeline: Pipeline, jetstream: JetStreamContext) -> float:
    """SIGKILL PostgreSQL: the supervisor restarts it, the executor trades on meanwhile (it
    needs no database) and the recorder writes again."""
    exec_before = await last_seq(jetstream, await exec_stream(pipeline))
    md_before = await last_seq(jetstream, pipeline.stream("MD"))
    killed = time.monotonic()
    await kill_and_await_restart(pipeline, "postgres")
    await trading(pipeline, jetstream, exec_before)
    await books_flow(pipeline, md_before)
    return time.monotonic() - killed


SocketFault = Literal["stall", "disconnect"]
_BOOK_STATUS_REASON = {"stall": "socket_stall", "disconnect": "disconnect"}


async def venue_socket_fault(
    pipeline: Pipeline, jetstream: JetStreamContext, fault: SocketFault
) -> float:
    """Every market socket of the simulator stalls (PONGs only) or is cut (no close frame):
    the ingest marks the books stale with the reason, reconnects, resubscribes and every book
    is live again from a fresh snapshot; deltas flow into PostgreSQL again."""
    md_before = await last_seq(jetstream, pipeline.stream("MD"))
    await pipeline.sim_fault(fault, channel="market")
    started = time.monotonic()
    reason = _BOOK_STATUS_REASON[fault]

    async def seen() -> bool:
        return (
            await _fetch_count(
                pipeline,
                "SELECT count(*) FROM book_status WHERE stream_seq > $1"
                " AND status = 'stale' AND reason = $2",
                md_before,
                reason,
            )
            > 0
        )

    await eventually(seen, RESTART_S, f"books marked stale ({reason}) in PostgreSQL", 0.5)

    async def all_live_again() -> bool:
        not_live = await _fetch_count(
            pipeline,
            "SELECT count(*) FROM (SELECT DISTINCT ON (asset_id) asset_id, status"
            " FROM book_status WHERE stream_seq > $1 ORDER BY asset_id, stream_seq DESC)"
            " AS latest WHERE status <> 'live'",
            md_before,
        )
        return not_live == 0

    await eventually(all_live_again, RESTART_S, "every stale book live again", 0.5)
    live_at = await last_seq(jetstream, pipeline.stream("MD"))
    recovered = time.monotonic() - started
    if fault == "stall":
        await pipeline.sim_fault("unstall")  # the old sockets, should the ingest keep any
    await books_flow(pipeline, live_at)
    return recovered


async def malformed_burst(pipeline: Pipeline, jetstream: JetStreamContext) -> float:
    """30 bad frames (malformed, unknown, not JSON) on every market socket: the ingest stays
    the same process and books flow on."""
    ingest = pipeline.children()["ingest"]
    md_before = await last_seq(jetstream, pipeline.stream("MD"))
    started = time.monotonic()
    for kind in ["malformed", "unknown", "invalid_json"] * 10:
        await pipeline.sim_fault("inject_frame", kind=kind)
    await books_flow(pipeline, md_before)
    assert pipeline.children().get("ingest") == ingest, "ingest restarted: it crashed"
    return time.monotonic() - started


async def _latest_exec_seq(database: asyncpg.Connection) -> int:
    seq = await database.fetchval(
        "SELECT greatest((SELECT max(stream_seq) FROM order_events),"
        " (SELECT max(stream_seq) FROM risk_events), 0)"
    )
    assert isinstance(seq, int)
    return seq


async def halt(pipeline: Pipeline, database: asyncpg.Connection) -> int:
    """`polybus halt`: the executor records it and cancels every open order; returns the
    halt's EXEC sequence."""
    # Read before: the halt's risk event and the cancels after it may be recorded at once.
    since = await _latest_exec_seq(database)
    code, out = await pipeline.cli("halt", "--reason", "fault test")
    assert code == 0, out

    async def halt_recorded() -> bool:
        return bool(
            await database.fetchval(
                "SELECT count(*) FROM risk_events WHERE kind = 'halt' AND stream_seq > $1", since
            )
        )

    await eventually(halt_recorded, RESTART_S, "the executor's halt risk event", 0.5)
    halt_seq = await database.fetchval(
        "SELECT max(stream_seq) FROM risk_events WHERE kind = 'halt' AND stream_seq > $1", since
    )
    assert isinstance(halt_seq, int)

    async def all_canceled() -> bool:
        return await open_orders(database) == 0

    await eventually(all_canceled, RESTART_S, "every open order canceled after halt", 0.5)
    return halt_seq


async def resume(pipeline: Pipeline, database: asyncpg.Connection) -> None:
    """`polybus resume`: orders are accepted again."""
    code, out = await pipeline.cli("resume")
    assert code == 0, out
    resumed_from = await _latest_exec_seq(database)

    async def accepting_again() -> bool:
        return bool(
            await database.fetchval(
                "SELECT count(*) FROM order_events WHERE status IN ('submitted', 'accepted')"
                " AND stream_seq > $1",
                resumed_from,
            )
        )

    await eventually(accepting_again, 90, "an order accepted after resume", 0.5)


async def halt_then_resume(pipeline: Pipeline, jetstream: JetStreamContext) -> float:
    """Halt (open orders canceled), then resume: seconds from the halt to orders again."""
    database = await pipeline.database()
    try:
        started = time.monotonic()
        await halt(pipeline, database)
        await resume(pipeline, database)
        return time.monotonic() - started
    finally:
        await database.close()


# -- the venue's trading faults (the executor trades live against the simulator) ---------------
VenueWindow = Literal["restart_425", "disabled_503", "rate_limit_429"]
WINDOW_S = 4
"""How long a 425/503 window lasts (well inside the adapter's 30 s retry budget)."""


async def executor_counter(pipeline: Pipeline, name: str) -> dict[str, float]:
    """The executor's counter ``name`` (``polybus_executor_venue_retries``) by its ``reason``
    label, from the /metrics URL its heartbeat announces."""
    _, status = await pipeline.status()
    [url] = [
        metrics_url(entry["detail"])
        for entry in status["services"]
        if entry["service"] == "executor" and entry["pid"] == pipeline.children()["executor"]
    ]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    return {
        sample.labels.get("reason", ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == f"{name}_total"
    }


async def venue_window(pipeline: Pipeline, jetstream: JetStreamContext, kind: VenueWindow) -> float:
    """A 425 (engine restart), 503 (trading disabled) or 429 (rate limit) window at the
    simulator's CLOB: afterwards orders are accepted again. Seconds from the window's start
    to the first order accepted after its end."""
    database = await pipeline.database()
    try:
        if kind == "restart_425":
            await pipeline.sim_fault("restart", duration_s=WINDOW_S, post_only_s=0)
        elif kind == "disabled_503":
            await pipeline.sim_fault("trading_disabled", duration_s=WINDOW_S)
        else:
            await pipeline.sim_fault("rate_limit", count=3, retry_after_s=1)
        started = time.monotonic()
        switch = {
            "restart_425": "restarting",
            "disabled_503": "trading_disabled",
            "rate_limit_429": "rate_limited_requests",
        }[kind]

        async def over() -> bool:
            return not (await pipeline.sim_faults())[switch]

        await eventually(over, RESTART_S, f"the simulator's {switch} window to end", 0.2)
        after = await _latest_exec_seq(database)

        async def accepted() -> bool:
            return bool(
                await database.fetchval(
                    "SELECT count(*) FROM order_events WHERE status = 'accepted'"
                    " AND stream_seq > $1",
                    after,
                )
            )

        await eventually(accepted, RESTART_S, f"an order accepted after the {kind} window", 0.5)
        return time.monotonic() - started
    finally:
        await database.close()
