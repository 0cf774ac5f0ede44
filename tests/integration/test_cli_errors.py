"""Every command, given a bad argument or a bad file, says so in one line with its exit code.

README: 0 ok, 1 runtime failure (a server that cannot be reached), 2 bad usage or an invalid
config. Each case runs the installed ``polybus`` console script as an operator would and checks
the code, that stderr is exactly one line naming the problem (stdout empty), and that there is
no traceback.

The cases are one table, :data:`CASES`, by command; :func:`test_every_command_has_a_bad_input_case`
enumerates the commands of the real app (with every service's plugin loaded), so a new command
fails the suite until it has its cases here. Each case is its own interpreter, seconds of
imports: the module starts them two at a time (:func:`outcomes`), and each test waits for its own.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer._click import Command

from polybus.common.cli import with_plugins
from tests.conftest import REPO

POLYBUS = Path(sys.executable).with_name("polybus")
RESOURCES = REPO / "tests" / "resources" / "polymarket"
BURST = RESOURCES / "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"
PARALLEL_CASES = 2
"""The machine may have two cores, shared: more interpreters at once only queue for them."""
CASE_TIMEOUT_S = 45.0

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


def dead_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POLYBUS), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].strip(), result.stderr
    assert result.returncode == code, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# -- the table ---------------------------------------------------------------------------------
DEAD = "{dead}"
"""Replaced, in a case's arguments, files and fragments, by a loopback port nobody listens on."""

# A config whose NATS, PostgreSQL, Gamma and CLOB all point at ports nobody listens on.
DOWN = (
    f'[bus]\nurl = "nats://127.0.0.1:{DEAD}"\n'
    f'[database]\nurl = "postgresql://polybus@127.0.0.1:{DEAD}/polybus"\n'
    f'[ingest]\ngamma_url = "http://127.0.0.1:{DEAD}"\nclob_url = "http://127.0.0.1:{DEAD}"\n'
    f'market_ws_url = "ws://127.0.0.1:{DEAD}"\n'
)
NO_NATS = f"cannot reach NATS at nats://127.0.0.1:{DEAD} within 1s"
KEY = '[polymarket]\nprivate_key = "0x' + "b8" * 32 + '"\n'

# Config problems, reachable from every command that reads one: file -> (text, fragment).
BAD_CONFIGS: dict[str, tuple[str | None, str]] = {
    "missing.toml": (None, "cannot read config file"),
    "partitions.toml": ("[bus]\npartitions = 0\n", "bus.partitions = 0"),
    "typo.toml": ("[bus]\npartitons = 8\n", "bus.partitons"),
    "syntax.toml": ("[bus\n", "is not valid TOML"),
    "streams.toml": ('[bus]\nstreams_file = "nope.toml"\n', "bus.streams_file"),
    "prefix.toml": ('[bus]\nsubject_prefix = "a b"\n', "bus.subject_prefix"),
    "keyfile.toml": ('secrets_file = "absent.toml"\n', "secrets_file"),
}


@dataclass(frozen=True)
class Case:
    """``polybus <args>``, run in a directory holding ``files`` (mode 0600) and an empty
    ``config/default.toml``, exits ``code`` with one line on stderr holding ``fragments``."""

    args: tuple[str, ...]
    code: int
    fragments: tuple[str, ...]
    files: tuple[tuple[str, str | bytes], ...] = ()
    directories: tuple[str, ...] = ()
    id: str = field(default="", compare=False)


def row(
    *args: str,
    code: int = 2,
    says: tuple[str, ...] | str = (),
    files: Mapping[str, str | bytes] | None = None,
    directories: tuple[str, ...] = (),
) -> Case:
    fragments = (says,) if isinstance(says, str) else says
    return Case(
        args, code, fragments, tuple((files or {}).items()), directories,
        id=" ".join(repr(arg) if not arg or " " in arg else arg for arg in args),
    )  # fmt: skip


def bad_config(*args: str, name: str) -> Case:
    """``polybus <args> --config <name>`` with one of the :data:`BAD_CONFIGS`."""
    text, fragment = BAD_CONFIGS[name]
    return row(
        *args, "--config", name, says=("config error", name, fragment),
        files={} if text is None else {name: text},
    )  # fmt: skip


def down(*args: str, says: tuple[str, ...] | str) -> Case:
    """``polybus <args> --config down.toml``: every server it names is not there (exit 1)."""
    return row(*args, "--config", "down.toml", code=1, says=says, files={"down.toml": DOWN})


def nats_down(*args: str) -> Case:
    """A one-shot command gives up on NATS after its --connect-timeout, naming the server.

    Its line says it tried for the 1 s given, and it ends (before :data:`CASE_TIMEOUT_S`). A
    tighter bound on the clock would measure the machine: with other test runs sharing its two
    cores, an interpreter took over 20 s to start and give up.
    """
    return down(*args, "--connect-timeout", "1s", says=NO_NATS)


LIVE_NO_SECRETS = {"live.toml": '[executor]\nmode = "live"\n'}
LIVE_NO_KEY = {
    "live.toml": 'secrets_file = "secrets.toml"\n[executor]\nmode = "live"\n',
    "secrets.toml": "[polymarket]\n",
}
NO_KEY = {"nokey.toml": 'secrets_file = "secrets.toml"\n', "secrets.toml": "[polymarket]\n"}
VENUE_DOWN = {
    "venue.toml": 'secrets_file = "secrets.toml"\n[executor]\n'
    f'clob_url = "http://127.0.0.1:{DEAD}"\nsignature_type = "EOA"\n',
    "secrets.toml": KEY,
}
NOT_FRAMES = {"c.jsonl": "hello\nworld\n"}

# Every command (and group) of ``polybus`` -> the bad inputs an operator types, and what they get.
# A group's own case is a subcommand that does not exist (without any, a group shows its help).
# fmt: off
CASES: dict[str, list[Case]] = {
    "polybus": [
        row("nosuch", says="No such command"),
        row("--bogus", says="No such option: --bogus"),
    ],
    "polybus up": [
        bad_config("up", name="streams.toml"),
        row("up", "--live", says=("--live given", 'mode = "paper"')),
        row("up", "--live", "--config", "live.toml", files=LIVE_NO_SECRETS,
            says="live trading needs secrets_file"),
    ],
    "polybus halt": [
        row("halt", "--strategy", "a b", says="bad --strategy"),
        row("halt", "--connect-timeout", "soon", says="--connect-timeout"),
        bad_config("halt", name="typo.toml"),
        nats_down("halt", "--reason", "test"),
    ],
    "polybus resume": [
        row("resume", "--strategy", "a.b", says="bad --strategy"),
        bad_config("resume", name="syntax.toml"),
        nats_down("resume"),
    ],
    "polybus status": [
        bad_config("status", name="partitions.toml"),
        row("status", "--watch", "--json", says="give --watch or --json, not both"),
        row("status", "--connect-timeout", "0", says="--connect-timeout"),
    ],
    "polybus top": [
        row("top", "--window", "soon", says="bad --window: 'soon'"),
        row("top", "--limit", "0", says="--limit"),
        bad_config("top", name="missing.toml"),
        nats_down("top"),
    ],
    "polybus book": [
        row("book", says="Missing argument 'asset'"),
        row("book", "a.b", says="bad ASSET"),
        row("book", "md.>", says="bad ASSET"),
        row("book", "x", "--depth", "0", says="--depth"),
        bad_config("book", "x", name="syntax.toml"),
        nats_down("book", "x", "--once"),
    ],
    "polybus streams": [row("streams", "nosuch", says="No such command")],
    "polybus streams apply": [
        bad_config("streams", "apply", name="streams.toml"),
        nats_down("streams", "apply"),
        row("streams", "apply", "--config", "c.toml", "--connect-timeout", "1", code=1,
            files={"c.toml": f'[bus]\nurl = "nats://polybus@127.0.0.1:{DEAD}"\n'},
            says=("cannot reach NATS", "nats://polybus@127.0.0.1")),
    ],
    "polybus tail": [
        bad_config("tail", "md.>", name="syntax.toml"),
        row("tail", "md.>", "--count", "-1", says="--count"),
        row("tail", "md.>", "--connect-timeout", "soon", says="--connect-timeout"),
        row("tail", "md.>", "--since", "soon", says="bad --since"),
        row("tail", "md.>", "--json", "--raw", says="give --json or --raw, not both"),
        row("tail", "", says=("bad subject", "empty")),
        row("tail", "foo bar", says=("bad subject", "whitespace")),
        row("tail", "a..b", says=("bad subject", "empty token")),
        row("tail", "a.>.b", says=("bad subject", "'>' is allowed only as the last token")),
        row("tail", "md.trade*", says=("bad subject", "token 'trade*'")),
        nats_down("tail", "md.>"),
    ],
    "polybus replay": [
        row("replay", says="give either a capture FILE or --from-db"),
        row("replay", "--from-db", says="exactly one of --market and --asset"),
        bad_config("replay", "--from-db", "--asset", "1", name="typo.toml"),
        row("replay", "--from-db", "--asset", "1", "--start", "soon", "--end", "x",
            says="time 'soon'"),
        row("replay", "nope.jsonl", says="No such file"),
        row("replay", ".", says="Is a directory"),
        row("replay", "file", files={"file": bytes(range(256)) * 8},
            says="lines are not frames (the first is line 1)"),
        row("replay", "file", files={"file": "hello\nworld\n"},
            says="2 of 2 lines are not frames (the first is line 1)"),
        row("replay", "file", files={"file": ""}, says="the file is empty"),
        row("replay", "file", files={"file": b"\x1f\x8bnot really gzip"},
            says="not a readable gzip file"),
        down("replay", "--from-db", "--asset", "1", "--start", "2026-01-01",
             "--end", "2026-01-02", says="replay failed"),
    ],
    "polybus config": [row("config", "nosuch", says="No such command")],
    "polybus config check": [
        row("config", "check", says="Missing argument 'file'"),
        row("config", "check", "missing.toml", says=("config error", "cannot read config file")),
        row("config", "check", ".", says="Is a directory"),
        row("config", "check", "binary.toml", files={"binary.toml": bytes(range(256))},
            says="not UTF-8"),
    ],
    "polybus sim": [bad_config("sim", name="keyfile.toml")],
    "polybus sim-fault": [
        row("sim-fault", says="Missing argument 'name'"),
        row("sim-fault", "stall", "--set", "novalue", says="is not KEY=VALUE"),
        row("sim-fault", "stall", "--url", "nope", says="--url"),
        row("sim-fault", "stall", "--url", f"http://127.0.0.1:{DEAD}", code=1,
            says=f"cannot reach the simulator at http://127.0.0.1:{DEAD}"),
    ],
    "polybus sim-capture": [
        row("sim-capture", ".", says="is a directory"),
        row("sim-capture", "no/such/dir/c.jsonl", says="does not exist"),
        row("sim-capture", "c.jsonl", "--binary-markets", "0", says="nothing to simulate"),
    ],
    "polybus recorder": [bad_config("recorder", name="prefix.toml")],
    "polybus ingest": [bad_config("ingest", name="typo.toml")],
    "polybus markets": [
        bad_config("markets", name="missing.toml"),
        down("markets", says="market selection failed"),
    ],
    "polybus record": [
        row("record", says="Missing option '--out'"),
        bad_config("record", "--out", "c.jsonl", name="partitions.toml"),
        row("record", "--out", "x.jsonl", "--duration", "-1", says="--duration"),
        row("record", "--out", "x.jsonl", "--rotate-mb", "-1", says="--rotate-mb"),
        row("record", "--out", ".", says="is a directory"),
    ],
    "polybus executor": [
        row("executor", "--bogus", says="No such option: --bogus"),
        bad_config("executor", name="syntax.toml"),
        row("executor", "--config", "typo.toml", files={"typo.toml": '[executor]\nmdoe = "live"\n'},
            says=("config error", "executor.mdoe")),
        row("executor", "--live", says=("--live given", 'mode = "paper", not "live"')),
        row("executor", "--live", "--config", "live.toml", files=LIVE_NO_SECRETS,
            says="live trading needs secrets_file naming the Polymarket private key"),
        row("executor", "--live", "--config", "live.toml", files=LIVE_NO_KEY,
            says="live trading needs [polymarket] private_key"),
    ],
    "polybus strategy": [
        row("strategy", says="Missing option '--name'"),
        row("strategy", "--name", "nosuch", says="--name nosuch: no such strategy installed"),
        row("strategy", "--name", "dutch_book", "--replica", "-1", says="--replica"),
        bad_config("strategy", "--name", "dutch_book", name="missing.toml"),
        row("strategy", "--name", "dutch_book", "--config", "typo.toml",
            files={"typo.toml": "[strategy.dutch_book]\nbogus = 1\n"},
            says=("config error", "strategy.dutch_book.bogus")),
    ],
    "polybus account": [
        row("account", "nosuch", says="No such command"),
        row("account", says="account: the config names no secrets_file"),
        row("account", "--config", "nokey.toml", files=NO_KEY,
            says="account: the secrets file has no [polymarket] private_key"),
        bad_config("account", "--json", name="syntax.toml"),
        bad_config("account", name="keyfile.toml"),
    ],
    "polybus account derive-keys": [
        row("account", "derive-keys", says="derive-keys: the config names no secrets_file"),
        row("account", "derive-keys", "--config", "nokey.toml", files=NO_KEY,
            says="derive-keys: the secrets file has no [polymarket] private_key"),
        bad_config("account", "derive-keys", name="missing.toml"),
        row("account", "derive-keys", "--config", "venue.toml", files=VENUE_DOWN, code=1,
            says=f"derive-keys: venue http://127.0.0.1:{DEAD} unreachable"),
    ],
    "polybus backtest": [
        row("backtest", says="Missing option '--strategy'"),
        row("backtest", "--strategy", "dutch_book", says="give either --capture FILE or --from-db"),
        row("backtest", "--strategy", "nosuch", "--capture", "c.jsonl", files=NOT_FRAMES,
            says="--strategy nosuch: no such strategy (installed: "),
        row("backtest", "--strategy", "dutch_book", "--capture", "missing.jsonl",
            says="backtest: missing.jsonl: no such file"),
        row("backtest", "--strategy", "dutch_book", "--capture", "d", directories=("d",),
            says="is a directory"),
        row("backtest", "--strategy", "dutch_book", "--capture", "c.jsonl", files=NOT_FRAMES,
            says=("neither polybus events nor a capture", "2 of 2 lines are not frames")),
        row("backtest", "--strategy", "dutch_book", "--capture", "c.jsonl",
            "--start", "2026-01-01", files=NOT_FRAMES,
            says="--market, --asset, --start and --end go with --from-db"),
        row("backtest", "--strategy", "dutch_book", "--from-db", "--asset", "1",
            "--start", "soon", "--end", "2026-01-02", says="time 'soon'"),
        row("backtest", "--strategy", "dutch_book", "--from-db", "--asset", "1",
            "--start", "2026-01-01", "--end", "later", says="time 'later'"),
        bad_config("backtest", "--strategy", "dutch_book", "--capture", "c.jsonl",
                   name="syntax.toml"),
        down("backtest", "--strategy", "dutch_book", "--from-db", "--asset", "1",
             "--start", "2026-01-01", "--end", "2026-01-02", says="failed"),
    ],
    "polybus db": [row("db", "nosuch", says="No such command")],
    "polybus db migrate": [
        bad_config("db", "migrate", name="keyfile.toml"),
        down("db", "migrate", says="database postgresql://polybus@"),
    ],
    "polybus db prune": [
        row("db", "prune", says="Missing option '--older-than'"),
        row("db", "prune", "--older-than", "3x", says="duration '3x'"),
        down("db", "prune", "--older-than", "30d", says="database postgresql://polybus@"),
    ],
    "polybus db snapshot": [
        row("db", "snapshot", "--asset", "1", says="Missing option '--at'"),
        row("db", "snapshot", "--asset", "1", "--at", "yesterday", says="time 'yesterday'"),
        down("db", "snapshot", "--asset", "1", "--at", "2026-01-01T00:00:00Z", says="database"),
    ],
}
# fmt: on
ALL_CASES = [pytest.param(c, id=c.id) for cases in CASES.values() for c in cases]


def command_paths(command: Command, path: str) -> Iterator[str]:
    """``path`` and the paths of every (sub)command under it."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, f"{path} {name}")


def test_every_command_has_a_bad_input_case() -> None:
    commands = set(command_paths(typer.main.get_command(with_plugins()), "polybus"))
    assert {"polybus executor", "polybus account derive-keys", "polybus db prune"} <= commands

    assert sorted(commands - CASES.keys()) == [], "commands without a case in CASES"
    assert sorted(CASES.keys() - commands) == [], "cases of commands polybus does not have"
    every = [each for cases in CASES.values() for each in cases]
    assert len(set(every)) == len(every), "a case is in the table twice"
    for command, cases in CASES.items():
        words = command.split()[1:]
        assert cases, command
        for each in cases:
            # The case runs the command it is filed under (a group's case may name a missing
            # subcommand; a bad config is passed to the command itself).
            assert list(each.args[: len(words)]) == words, (command, each.args)


# -- running the table, two cases at a time -----------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    result: subprocess.CompletedProcess[str]
    port: int


def run_case(each: Case, directory: Path) -> Outcome:
    port = dead_port()
    (directory / "config").mkdir()
    (directory / "config" / "default.toml").write_text("")
    for name in each.directories:
        (directory / name).mkdir()
    for name, content in each.files:
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace(DEAD, str(port)))
        path.chmod(0o600)  # a secrets file must not be readable by others
    args = [arg.replace(DEAD, str(port)) for arg in each.args]
    return Outcome(run(*args, cwd=directory, timeout=CASE_TIMEOUT_S), port)


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Case, Future[Outcome]]]:
    """Every selected case of the table, started in the order the tests will ask for them."""
    selected: list[Case] = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and "case" in params:
            selected.append(params["case"])
    with ThreadPoolExecutor(PARALLEL_CASES, thread_name_prefix="polybus-case") as pool:
        futures = {
            each: pool.submit(run_case, each, tmp_path_factory.mktemp("case")) for each in selected
        }
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("case", ALL_CASES)
def test_bad_input_is_one_line_with_its_exit_code(
    case: Case, outcomes: dict[Case, Future[Outcome]]
) -> None:
    outcome = outcomes[case].result(timeout=CASE_TIMEOUT_S + 5)
    fragments = [fragment.replace(DEAD, str(outcome.port)) for fragment in case.fragments]
    assert_one_line(outcome.result, case.code, *fragments)
    assert outcome.result.stdout == ""


# -- what a table row cannot say ----------------------------------------------------------------
def test_config_check_validates_the_files_the_config_names(tmp_path: Path) -> None:
    (tmp_path / "streams.toml").write_text('[[stream]]\nname = "X"\nsubjects = ["a..b"]\n')
    (tmp_path / "c.toml").write_text(
        'secrets_file = "secrets.toml"\n[bus]\nstreams_file = "streams.toml"\n'
    )
    (tmp_path / "secrets.toml").write_text('[database]\npassword = "hunter2"\n')
    (tmp_path / "secrets.toml").chmod(0o644)
    exposed = run("config", "check", "c.toml", cwd=tmp_path)
    assert_one_line(exposed, 2, "secrets_file", "chmod 600")
    (tmp_path / "secrets.toml").chmod(0o600)
    bad_streams = run("config", "check", "c.toml", cwd=tmp_path)
    assert_one_line(bad_streams, 2, "bus.streams_file", "'a..b'", "empty token")
    assert "hunter2" not in bad_streams.stderr + bad_streams.stdout


def test_a_copied_config_uses_the_built_in_streams_definitions(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_bytes((REPO / "config" / "sim.toml").read_bytes())
    result = run("config", "check", "mine.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    streams_file = Path(json.loads(result.stdout)["bus"]["streams_file"])
    assert streams_file.resolve() == (REPO / "config" / "streams.toml").resolve()


def test_status_reports_unreachable_servers_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "down.toml"
    config.write_text(DOWN.replace(DEAD, str(dead_port())))
    result = run(
        "status", "--json", "--config", str(config), "--connect-timeout", "1", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr == ""  # no warning per connection attempt
    status = json.loads(result.stdout)
    assert not status["nats"]["reachable"]
    assert status["nats"]["error"]
    assert not status["postgres"]["reachable"]


def burst_lines() -> list[str]:
    return [json.dumps(event) for event in json.loads(BURST.read_bytes())]


def test_replay_names_the_lines_that_are_not_frames_and_still_reports(tmp_path: Path) -> None:
    lines = burst_lines()
    lines.insert(3, "this is not a frame")
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    result = run("replay", "mixed.jsonl", "--json", cwd=tmp_path)
    assert_one_line(result, 1, "warning", f"1 of {len(lines)} lines", "line 4")
    assert len(result.stdout.splitlines()) == 2  # both assets of the recording


def test_replay_of_a_cut_gzip_reports_the_frames_before_the_cut(tmp_path: Path) -> None:
    whole = gzip.compress(("\n".join(burst_lines() * 20) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    result = run("replay", "cut.jsonl.gz", "--json", cwd=tmp_path)
    assert_one_line(result, 1, "warning", "the compressed data ends early")
    assert len(result.stdout.splitlines()) == 2
    (tmp_path / "whole.jsonl.gz").write_bytes(whole)
    complete = run("replay", "whole.jsonl.gz", "--json", cwd=tmp_path)
    assert complete.returncode == 0, complete.stderr
    assert complete.stderr == ""
