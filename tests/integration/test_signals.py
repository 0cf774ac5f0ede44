"""SIGTERM/SIGINT stop every process within 2 s with exit 0 at any moment (DESIGN §10): while it
connects to a NATS that is not there, while it waits for PostgreSQL, while ``up`` starts its
servers, and while it works through a backlog."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.infra import free_port, port_open
from polybus.common.streams import Definitions
from tests.conftest import STREAMS_FILE, NatsServerInfo
from tests.helpers import eventually
from tests.integration.test_up import write_config
from tests.samples import market_data, subject_for

STOP_BUDGET_S = 2.0


class Process:
    """``polybus ARGS`` as a child whose stderr (its JSON logs) goes to a file we can watch."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, *args: str, cwd: Path) -> Process:
        log = cwd / f"{args[0]}-{free_port()}.log"
        with log.open("ab") as output:  # the child keeps its own descriptor
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "polybus.common.cli", *args,
                cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=output,
            )  # fmt: skip
        return cls(process, log)

    async def logged(self, event: str, times: int = 1, timeout: float = 60) -> None:
        """Wait until the process (and its children) logged ``event`` ``times`` times."""
        await eventually(
            lambda: self.log.read_text().count(f'"event": "{event}"') >= times,
            timeout,
            f"log event {event} x{times}",
        )

    async def stop(self, signum: signal.Signals) -> tuple[int, float]:
        """Send ``signum``; returns the exit code and the seconds until the process was gone."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.process.send_signal(signum)
        try:
            code = await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"still running 30 s after {signum.name}") from None
        return code, loop.time() - started

    def report(self) -> str:
        return self.log.read_text()[-3000:]


def unreachable_config(tmp_path: Path, extra: str = "") -> Path:
    """Every service's ports free; NATS and PostgreSQL on ports nothing listens on."""
    path = tmp_path / "unreachable.toml"
    path.write_text(
        f'venue = "sim"\n[bus]\nurl = "nats://127.0.0.1:{free_port()}"\n'
        f'streams_file = "{STREAMS_FILE}"\n'
        f'[database]\nurl = "postgresql://postgres@127.0.0.1:{free_port()}/polybus"\n'
        '[log]\nformat = "json"\n'
        "[sim]\nmetrics_port = 0\nport = 0\n[ingest]\nmetrics_port = 0\n"
        "[recorder]\nmetrics_port = 0\n" + extra
    )
    return path


@pytest.mark.parametrize(
    ("service", "signum"),
    [
        ("sim", signal.SIGTERM),
        ("sim", signal.SIGINT),
        ("ingest", signal.SIGTERM),
        ("ingest", signal.SIGINT),
        ("recorder", signal.SIGTERM),
    ],
)
async def test_a_service_connecting_to_an_absent_nats_stops_on_a_signal(
    service: str, signum: signal.Signals, tmp_path: Path
) -> None:
    config = unreachable_config(tmp_path)
    process = await Process.start(service, "--config", str(config), cwd=tmp_path)
    await process.logged("nats.error")  # a connect attempt failed: it is in the retry loop
    code, seconds = await process.stop(signum)
    print(f"{service} {signum.name} while connecting: exit {code} after {seconds:.3f}s")
    assert code == 0, process.report()
    assert seconds < STOP_BUDGET_S
    assert '"event": "service.stopped"' in process.log.read_text()


async def test_the_recorder_waiting_for_postgresql_stops_on_sigterm(
    nats_server: NatsServerInfo, bus: NatsBus, definitions: Definitions, tmp_path: Path
) -> None:
    await bus.apply(definitions)
    config = tmp_path / "recorder.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
        f'[database]\nurl = "postgresql://postgres@127.0.0.1:{free_port()}/polybus"\n'
        '[log]\nformat = "json"\n[recorder]\nmetrics_port = 0\n'
    )
    process = await Process.start("recorder", "--config", str(config), cwd=tmp_path)
    await process.logged("recorder.migrate_waiting")
    code, seconds = await process.stop(signal.SIGTERM)
    print(f"recorder SIGTERM while waiting for PostgreSQL: exit {code} after {seconds:.3f}s")
    assert code == 0, process.report()
    assert seconds < STOP_BUDGET_S


async def test_the_recorder_under_load_stops_on_sigterm(
    nats_server: NatsServerInfo,
    bus: NatsBus,
    definitions: Definitions,
    database_url: str,
    tmp_path: Path,
) -> None:
    await bus.apply(definitions)
    for event in market_data(20_000):
        await bus.publish(subject_for(bus.namespace.subjects, event), event, msg_id=event.event_id)
    await bus.flush()
    config = tmp_path / "recorder.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
        f'[database]\nurl = "{database_url}"\n'
        '[log]\nformat = "json"\n[recorder]\nmetrics_port = 0\n'
    )
    process = await Process.start("recorder", "--config", str(config), cwd=tmp_path)
    await process.logged("recorder.running")
    md = bus.namespace.stream("MD")

    async def recording() -> bool:
        info = await bus.js.consumer_info(md, "recorder")
        return (info.delivered.stream_seq or 0) > 0

    await eventually(recording, 30, "the recorder to take batches from the backlog")
    code, seconds = await process.stop(signal.SIGTERM)
    info = await bus.js.consumer_info(md, "recorder")
    print(f"recorder SIGTERM under load: exit {code} after {seconds:.3f}s, {info.num_pending} left")
    assert code == 0, process.report()
    assert seconds < STOP_BUDGET_S


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_up_stops_on_sigterm_while_its_servers_start(workdir: Path) -> None:
    config, nats_port, postgres_port = write_config(workdir)
    process = await Process.start("up", "--config", str(config), cwd=workdir)
    # NATS is up; PostgreSQL is being initialised (initdb) or started.
    await process.logged("up.nats_ready")
    code, seconds = await process.stop(signal.SIGTERM)
    print(f"up SIGTERM while starting servers: exit {code} after {seconds:.3f}s")
    assert code == 0, process.report()
    assert seconds < STOP_BUDGET_S
    assert not port_open("127.0.0.1", nats_port)
    assert not port_open("127.0.0.1", postgres_port)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_up_with_its_services_running_stops_on_sigint(workdir: Path) -> None:
    config, _, _ = write_config(workdir)
    # The simulator's fixed ports could be taken on a test machine: give it free ones.
    text = config.read_text().replace(
        "[sim]\nenabled = false", f"[sim]\nport = {free_port()}\nmetrics_port = 0"
    )
    config.write_text(text)
    process = await Process.start("up", "--config", str(config), cwd=workdir)
    await process.logged("up.running")
    await process.logged("service.started", times=2)  # the supervisor's, then the simulator's
    code, seconds = await process.stop(signal.SIGINT)
    print(f"up SIGINT with the simulator running: exit {code} after {seconds:.3f}s")
    assert code == 0, process.report()
    assert seconds < STOP_BUDGET_S


# A stop signal while the `polybus` command is still importing the CLI: the import hook below
# sends it at exactly that moment (the first import of typer), so the test is deterministic.
_SIGNAL_DURING_IMPORT = """
import os, signal, sys
class SignalOnTyperImport:
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.{signal})
        return None
sys.meta_path.insert(0, SignalOnTyperImport())
sys.argv = ["polybus", "status"]
from polybus.common.signals import main
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_while_the_command_still_loads_exits_0(signum: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SIGNAL_DURING_IMPORT.format(signal=signum.name),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, stderr.decode()) == (0, "")
    assert stdout == b""  # it stopped before the command ran
