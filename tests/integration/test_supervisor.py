"""The supervisor restarts crashed children with backoff and stops children newest first."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prometheus_client import REGISTRY

from polybus.common.infra import ProcessSpec
from polybus.common.infra.supervisor import Supervisor
from tests.helpers import eventually

# A child that records its start and its SIGTERM, then exits 0 on SIGTERM.
POLITE = """
import signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
log.write(f"start {sys.argv[2]}\\n")
def stop(*_):
    log.write(f"stop {sys.argv[2]}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""


def restarts_metric(child: str) -> float:
    value = REGISTRY.get_sample_value("polybus_supervisor_restarts_total", {"child": child})
    return value or 0.0


async def test_a_crashing_child_is_restarted_with_backoff_and_counted(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    crash = f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"
    before = restarts_metric("crasher")
    supervisor = Supervisor(backoff_initial_s=0.05, backoff_max_s=0.2, stop_timeout_s=2)
    await supervisor.start(
        ProcessSpec(name="crasher", argv=[sys.executable, "-c", crash]), wait_ready=False
    )
    await eventually(lambda: supervisor.restarts()["crasher"] >= 3, 20, "three restarts")
    await supervisor.shutdown()
    assert supervisor.restarts()["crasher"] >= 3
    assert len(marker.read_text()) >= 3  # it really ran again each time
    assert restarts_metric("crasher") - before >= 3


async def test_shutdown_stops_children_newest_first(tmp_path: Path) -> None:
    log = tmp_path / "log"
    supervisor = Supervisor(stop_timeout_s=5)
    for name in ("servers", "service-a", "service-b"):
        await supervisor.start(
            ProcessSpec(
                name=name,
                argv=[sys.executable, "-c", POLITE, str(log), name],
                ready=lambda name=name: (
                    f"start {name}" in (log.read_text() if log.exists() else "")
                ),
            )
        )
    assert all(pid is not None for pid in supervisor.running().values())
    await supervisor.shutdown()
    stops = [line for line in log.read_text().splitlines() if line.startswith("stop")]
    assert stops == ["stop service-b", "stop service-a", "stop servers"]
    assert supervisor.restarts() == {"servers": 0, "service-a": 0, "service-b": 0}


async def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    supervisor = Supervisor(stop_timeout_s=0.5)
    await supervisor.start(ProcessSpec(name="stubborn", argv=[sys.executable, "-c", stubborn]))
    started = asyncio.get_running_loop().time()
    await supervisor.shutdown()
    assert asyncio.get_running_loop().time() - started < 10
    assert supervisor.running() == {"stubborn": None}


# A child that takes its time to stop: logs the SIGTERM, then exits a second later.
SLOW_TO_STOP = """
import signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
log.write(f"start {sys.argv[2]}\\n")
def stop(*_):
    log.write(f"stop {sys.argv[2]}\\n")
    time.sleep(1.0)
    log.write(f"exit {sys.argv[2]}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""


async def test_services_stop_together_before_the_servers_they_use(tmp_path: Path) -> None:
    log = tmp_path / "log"

    def started(name: str) -> bool:
        return f"start {name}" in (log.read_text() if log.exists() else "")

    supervisor = Supervisor(stop_timeout_s=5)
    server = [sys.executable, "-c", POLITE, str(log), "server"]
    await supervisor.start(ProcessSpec(name="server", argv=server, ready=lambda: started("server")))
    for name in ("service-a", "service-b"):
        argv = [sys.executable, "-c", SLOW_TO_STOP, str(log), name]
        await supervisor.start(ProcessSpec(name=name, argv=argv), wait_ready=False)
    await eventually(lambda: started("service-a") and started("service-b"), 20, "services up")
    await supervisor.shutdown()
    lines = log.read_text().splitlines()
    events = [line for line in lines if not line.startswith("start")]
    # Both services were signalled before either finished stopping: they stopped at once,
    # so three slow services take one stop time, not three. The server went last.
    assert sorted(events[:2]) == ["stop service-a", "stop service-b"]
    assert sorted(events[2:4]) == ["exit service-a", "exit service-b"]
    assert events[4:] == ["stop server"]
