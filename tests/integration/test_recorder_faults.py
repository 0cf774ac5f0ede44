"""The recorder under failure: SIGKILL mid-way through 100,000 events, PostgreSQL stopped for
10 s under load. Both end with exactly one row per event: 0 missing by stream sequence, 0
duplicates."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.infra import ProcessSpec, RunningProcess, free_port
from polybus.common.infra.postgres import SUPERUSER, ensure_database, postgres_spec
from polybus.common.streams import Definitions, load_definitions
from polybus.recorder.config import RecorderSettings
from polybus.recorder.migrations import migrate
from polybus.recorder.tables import MARKET_DATA_TABLES
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually
from tests.integration.test_recorder_roundtrip import run_recorder
from tests.samples import market_data, subject_for

pytestmark = pytest.mark.slow

ALL_MARKET_DATA = " UNION ALL ".join(
    f"SELECT event_id, stream_seq FROM {table.name}" for table in MARKET_DATA_TABLES
)


def fast_redelivery_streams(tmp_path: Path) -> Path:
    """The checked-in streams file with a short ack wait, so a killed recorder's unacked
    messages come back within seconds instead of a minute."""
    path = tmp_path / "streams.toml"
    path.write_text(STREAMS_FILE.read_text().replace("ack_wait_s = 60", "ack_wait_s = 3"))
    return path


async def recorded(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval(f"SELECT count(*) FROM ({ALL_MARKET_DATA}) AS md"))


async def assert_exactly_once(connection: asyncpg.Connection, published: int) -> None:
    rows = await connection.fetch(ALL_MARKET_DATA)
    sequences = sorted(r["stream_seq"] for r in rows)
    missing = sorted(set(range(1, published + 1)) - set(sequences))
    assert missing == [], f"{len(missing)} stream sequences missing, first {missing[:10]}"
    assert len(rows) == published, f"{len(rows) - published} duplicate rows"
    assert len({r["event_id"] for r in rows}) == published


async def publish_market_data(bus: NatsBus, count: int) -> None:
    subjects = bus.namespace.subjects
    for event in market_data(count, assets=200):
        await bus.publish(subject_for(subjects, event), event, msg_id=event.event_id)
    await bus.flush()


async def stream_holds(bus: NatsBus, count: int) -> bool:
    return (await bus.js.stream_info(bus.namespace.stream("MD"))).state.messages == count


async def recorded_at_least(connection: asyncpg.Connection, count: int) -> bool:
    return await recorded(connection) >= count


def start_recorder(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "polybus.common.cli", "recorder", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.timeout(150)
async def test_sigkill_mid_way_through_100k_events_then_restart_records_each_exactly_once(
    bus: NatsBus, nats_server: NatsServerInfo, database_url: str, tmp_path: Path
) -> None:
    total = 100_000
    streams = fast_redelivery_streams(tmp_path)
    await bus.apply(load_definitions(streams))
    connection = await asyncpg.connect(database_url)
    await migrate(connection)
    await publish_market_data(bus, total)
    await eventually(lambda: stream_holds(bus, total), 30, "all events in MD")
    config = tmp_path / "recorder.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{streams}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
        f'[database]\nurl = "{database_url}"\n'
        '[log]\nlevel = "info"\nformat = "json"\n'
        "[recorder]\nmetrics_port = 0\nbatch_max_events = 2000\n"
    )
    log = tmp_path / "recorder.log"
    recorder = start_recorder(config, log)
    try:
        await eventually(lambda: recorded_at_least(connection, 10_000), 60, "10,000 rows")
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(10)
        killed_at = await recorded(connection)
        assert killed_at < total, "the recorder finished before it could be killed mid-way"

        recorder = start_recorder(config, log)
        await eventually(lambda: recorded_at_least(connection, total), 90, "every event")
        await eventually(lambda: consumer_idle(bus), 30, "the MD consumer to have nothing pending")
        await assert_exactly_once(connection, total)
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait(20) == 0, log.read_text()[-3000:]
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(10)
        await connection.close()


async def consumer_idle(bus: NatsBus) -> bool:
    info = await bus.js.consumer_info(bus.namespace.stream("MD"), "recorder")
    return (info.num_pending or 0) == 0 and (info.num_ack_pending or 0) == 0


@pytest.fixture
def own_postgres() -> Iterator[ProcessSpec]:
    """A PostgreSQL this test may stop and start (the session's must stay up)."""
    # pytest's temp dirs are 0700; the server may run as another user (see conftest).
    base = Path(tempfile.mkdtemp(prefix="polybus-pg-outage-"))
    base.chmod(0o755)
    yield postgres_spec(
        data_dir=base / "data", port=free_port(), log_file=base / "log", durable=False
    )
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(120)
async def test_postgres_stopped_for_10s_under_load_loses_nothing_and_catches_up(
    bus: NatsBus,
    definitions: Definitions,
    own_postgres: ProcessSpec,
) -> None:
    spec = own_postgres
    port = int(spec.argv[spec.argv.index("-p") + 1])
    server = await asyncio.to_thread(RunningProcess, spec)
    await ensure_database("127.0.0.1", port, "polybus")
    url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/polybus"
    connection = await asyncpg.connect(url)
    await migrate(connection)
    await connection.close()
    await bus.apply(definitions)
    settings = RecorderSettings(
        batch_max_delay_s=0.01,
        fetch_timeout_s=0.2,
        backoff_initial_s=0.1,
        backoff_max_s=1.0,
        write_timeout_s=3,
    )
    stop, loops, tasks = await run_recorder(bus, definitions, url, settings)
    md_loop = next(loop for loop in loops if loop.label == "MD")
    rate, seconds = 2000, 16  # events/s, and the load lasts through the whole outage
    published = 0

    async def load() -> None:
        nonlocal published
        subjects = bus.namespace.subjects
        started = time.monotonic()
        for event in market_data(rate * seconds, assets=100):
            await bus.publish(subject_for(subjects, event), event, msg_id=event.event_id)
            published += 1
            if published % 100 == 0:
                await bus.flush()
                ahead = published / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await bus.flush()

    publisher = asyncio.create_task(load())
    try:
        await eventually(lambda: published >= rate * 2, 10, "two seconds of load")
        await asyncio.to_thread(server.stop)
        await eventually(
            lambda: md_loop.unavailable_since is not None, 10, "the recorder to notice"
        )
        floor_at_outage = (
            await bus.js.consumer_info(bus.namespace.stream("MD"), "recorder")
        ).ack_floor.stream_seq
        # The outage itself: nothing to wait for, it just lasts 10 s while the load goes on.
        await asyncio.sleep(10)
        during = await bus.js.consumer_info(bus.namespace.stream("MD"), "recorder")
        assert during.ack_floor.stream_seq == floor_at_outage, "acked while the database was down"
        assert (during.num_pending or 0) + (during.num_ack_pending or 0) > 0
        server = await asyncio.to_thread(RunningProcess, spec)
        await publisher
        connection = await asyncpg.connect(url)
        await eventually(lambda: recorded_at_least(connection, published), 30, "catch-up")
        await eventually(lambda: consumer_idle(bus), 30, "nothing pending")
        await assert_exactly_once(connection, published)
        assert md_loop.unavailable_since is None
        await connection.close()
    finally:
        publisher.cancel()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(server.stop)
