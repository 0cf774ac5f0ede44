"""DESIGN §10 past one machine: the pipeline on a 3-node NATS cluster, one node SIGKILLed.

Every stream and bucket is R3 (config/streams.cluster.toml). Under load, the node leading EXEC
(the stream the executor writes every order event to) is SIGKILLed and restarted from the
same store. What a user checks: every sequence of MD, INTENT and EXEC published before the kill
has its row in PostgreSQL, no intent became two orders, no service was restarted (the pids of
`up`'s children are the same), and EXEC keeps growing while the node is down and after.
"""

from __future__ import annotations

import time

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

from tests.cluster.conftest import Cluster
from tests.faults.checks import (
    assert_no_duplicates,
    exec_stream,
    last_seq,
    missing_sequences,
)
from tests.faults.pipeline import SERVICES, Pipeline
from tests.helpers import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240), pytest.mark.asyncio(loop_scope="module")]

STREAMS = {"MD": "book_deltas", "INTENT": "intents", "EXEC": "order_events"}
"""Stream -> the recorder's table for it."""
BUCKETS = ("KV_HEALTH", "KV_HALT", "KV_EXEC_INTENTS", "KV_LEASES")
UNANSWERED = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)
"""What a JetStream request gets while its server is gone or the stream elects a leader."""
GROW_S = 60
"""EXEC grows again within this (a new stream leader is elected in seconds; 2 shared cores)."""


async def test_a_killed_nats_node_loses_nothing_and_stops_nothing(
    cluster: Cluster, pipeline: Pipeline, client: Client
) -> None:
    jetstream = client.jetstream()
    for name in (*STREAMS, *BUCKETS):
        info = await jetstream.stream_info(name)
        assert info.config.num_replicas == 3, f"{name} is R{info.config.num_replicas}"
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2, f"{name} has no two followers"

    exec_name = await exec_stream(pipeline)
    start = await last_seq(jetstream, exec_name)
    await eventually(
        lambda: _grew(jetstream, exec_name, start), GROW_S, "EXEC to grow (trading)", 0.5
    )
    children = pipeline.children()
    assert set(children) >= SERVICES

    leader = await _leader(jetstream, exec_name)
    assert leader in {node.name for node in cluster.nodes}
    # Every sequence here was acknowledged to its publisher by a quorum of the three.
    before = {name: await last_seq(jetstream, name) for name in STREAMS}
    cluster.node(leader).kill()
    killed = time.monotonic()

    await eventually(
        lambda: _grew(jetstream, exec_name, before["EXEC"]),
        GROW_S,
        f"EXEC to grow past {before['EXEC']} with {leader} down",
        0.2,
    )
    down_s = time.monotonic() - killed
    new_leader = await _leader(jetstream, exec_name)
    assert new_leader != leader

    cluster.node(leader).start()
    await eventually(
        cluster.node(leader).healthy, GROW_S, f"{leader} back and current (/healthz)", 0.5
    )
    await cluster.formed()
    rejoined_s = time.monotonic() - killed
    after_restart = await last_seq(jetstream, exec_name)
    await eventually(
        lambda: _grew(jetstream, exec_name, after_restart),
        GROW_S,
        f"EXEC to grow past {after_restart} with {leader} back",
        0.5,
    )

    database = await pipeline.database()
    try:
        for name, last in before.items():
            missing = await missing_sequences(database, name, 1, last)
            assert not missing, f"{name}: acknowledged before the kill, not recorded: {missing}"
    finally:
        await database.close()
    await assert_no_duplicates(pipeline)
    now = pipeline.children()
    restarted = {
        name: (pid, now.get(name)) for name, pid in children.items() if now.get(name) != pid
    }
    assert not restarted, f"children restarted (name: old pid, new pid): {restarted}"
    print(
        f"killed {leader} (EXEC leader) at {before}; EXEC grew again after {down_s:.1f}s"
        f" under {new_leader}; {leader} current again after {rejoined_s:.1f}s"
    )


@pytest.mark.xfail(
    strict=False,
    reason="open: in 2 of 4 runs a few MD sequences (5507..5510 once), published while"
    " the killed node's streams changed leader, had no row after 45 s; likely the recorder's"
    " acks lost with the leader (redelivered after the 60 s ack wait, now awaited), to be"
    " confirmed over more runs",
)
@pytest.mark.timeout(400)  # up to three streams' ack waits
async def test_events_published_around_the_kill_are_recorded_too(
    pipeline: Pipeline, client: Client
) -> None:
    """After the kill test: every message the streams hold now, including those published
    during the leader change, has its row (the brief's guarantee covers only those before the
    kill). A sequence the stream does not hold is not a loss: it is told apart and counted."""
    jetstream = client.jetstream()
    database = await pipeline.database()
    try:
        for name in STREAMS:
            last = await last_seq(jetstream, name)
            held: list[int] = []
            absent: list[int] = []

            async def recorded(name: str = name, last: int = last) -> bool:
                nonlocal held, absent
                missing = await missing_sequences(database, name, 1, last, limit=100_000)
                presence = [(seq, await _in_stream(jetstream, name, seq)) for seq in missing]
                held = [seq for seq, present in presence if present]
                absent = [seq for seq, present in presence if not present]
                return not held

            # An ack sent to the killed leader is lost: what the recorder had fetched there
            # comes back once its consumer's ack wait has passed.
            ack_wait = (await jetstream.consumer_info(name, "recorder")).config.ack_wait or 0
            try:
                await eventually(
                    recorded, 45 + ack_wait, f"rows for every message {name} holds", 1.0
                )
            except AssertionError as error:
                raise AssertionError(
                    f"{error}: held by {name} without a row (first 20): {held[:20]};"
                    f" {len(absent)} sequences {name} does not hold: {absent[:20]}"
                ) from None
            state = (await jetstream.stream_info(name)).state
            print(
                f"{name}: 1..{last} recorded; {len(absent)} sequences not in the stream"
                f" {absent[:20]} (num_deleted {state.num_deleted})"
            )
    finally:
        await database.close()


async def _in_stream(jetstream: JetStreamContext, stream: str, seq: int) -> bool:
    try:
        await jetstream.get_msg(stream, seq)
    except NotFoundError:
        return False
    return True


async def _grew(jetstream: JetStreamContext, stream: str, after: int) -> bool:
    """False, not an error, while the stream has no leader to answer (an election)."""
    try:
        return await last_seq(jetstream, stream) > after
    except UNANSWERED:
        return False


async def _leader(jetstream: JetStreamContext, stream: str) -> str:
    leader = ""

    async def elected() -> bool:
        nonlocal leader
        try:
            info = await jetstream.stream_info(stream)
        except UNANSWERED:
            return False
        leader = info.cluster.leader if info.cluster and info.cluster.leader else ""
        return bool(leader)

    await eventually(elected, GROW_S, f"a leader of {stream}", 0.2)
    return leader
