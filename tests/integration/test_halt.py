"""`polybus halt` / `polybus resume` as an operator runs them, and a halt that survives a NATS
restart: the state is in the HALT bucket (file storage), not only in a message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import Level, RiskEvent
from polybus.common.halt import HALT_BUCKET, decode_halt, halt_key
from polybus.common.infra import RunningProcess, free_port
from polybus.common.infra.nats_server import nats_server_spec
from polybus.common.money import MICROS
from polybus.common.streams import load_definitions
from polybus.common.subjects import Namespace
from tests.conftest import STREAMS_FILE
from tests.helpers import polybus
from tests.integration.test_executor_service import (
    STRATEGY,
    Execution,
    executor_running,
    intent,
    publish_market,
    write_config,
)

pytestmark = pytest.mark.timeout(120)


class RestartableNats:
    """A nats-server of this test alone, on a fixed port, restartable over the same store."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: RunningProcess | None = None

    def start(self) -> None:
        spec = nats_server_spec(
            store_dir=self.store / "js",
            port=self.port,
            monitor_port=free_port(),
            log_file=self.store / "log",
        )
        self.process = RunningProcess(spec)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[RestartableNats]:
    server = RestartableNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


async def test_halt_and_resume_commands_survive_a_nats_restart(
    own_nats: RestartableNats, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    namespace = Namespace(subject_prefix=f"h{token}", stream_prefix=f"H{token}_")
    bus = await NatsBus.connect(own_nats.url, name="test-halt", namespace=namespace)
    await bus.apply(load_definitions(STREAMS_FILE))
    config = write_config(tmp_path / "halt.toml", own_nats.url, bus)
    await bus.drain()

    code, out = await polybus(
        "halt", "--strategy", STRATEGY, "--reason", "drill", "--config", str(config.path),
        cwd=tmp_path,
    )  # fmt: skip
    assert (code, out.strip()) == (0, f"halted: strategy {STRATEGY}")

    own_nats.stop()
    own_nats.start()
    bus = await NatsBus.connect(own_nats.url, name="test-halt", namespace=namespace)
    try:
        bucket = await bus.js.key_value(namespace.bucket(HALT_BUCKET))
        state = decode_halt((await bucket.get(halt_key(STRATEGY))).value or b"")
        assert state is not None
        assert (state.halted, state.reason, state.by) == (True, "drill", "operator")
        execution = Execution(bus)
        await bus.subscribe(namespace.subjects.execution_all(), execution.receive)
        await publish_market(
            bus, bids=[Level(390_000, 100 * MICROS)], asks=[Level(410_000, 100 * MICROS)]
        )
        refused = intent(price=380_000)
        accepted = intent(price=370_000)
        async with executor_running(config):
            await execution.send(refused)
            assert (await execution.status(refused.intent_id, "rejected")).reason == "halted"
            code, out = await polybus(
                "resume", "--strategy", STRATEGY, "--config", str(config.path), cwd=tmp_path
            )
            assert (code, out.strip()) == (0, f"resumed: strategy {STRATEGY}")
            await execution.wait_for(
                "the resume",
                lambda: any(e.kind == "resume" for e in execution.of_type(RiskEvent)),
            )
            await execution.send(accepted)
            await execution.status(accepted.intent_id, "accepted")
        history = await bucket.history(halt_key(STRATEGY))
        assert [decode_halt(entry.value or b"").halted for entry in history] == [True, False]  # type: ignore[union-attr]
    finally:
        await bus.drain()


async def test_halt_refuses_a_bad_strategy_id_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[bus]\nurl = "nats://127.0.0.1:1"\n')
    code, _ = await polybus("halt", "--strategy", "a.b", "--config", str(config), cwd=tmp_path)
    assert code == 2
