"""Every command, given a bad argument or a bad file, says so in one line with its exit code.

README: 0 ok, 1 runtime failure (a server that cannot be reached), 2 bad usage or an invalid
config. Each case runs the installed ``polybus`` console script as an operator would and checks
the code, that stderr is exactly one line naming the problem, and that there is no traceback.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

POLYBUS = Path(sys.executable).with_name("polybus")
RESOURCES = REPO / "tests" / "resources" / "polymarket"
BURST = RESOURCES / "nautilus_ws_book_plus_price_change_crossing_burst_2026-09-29.json"

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
    assert result.returncode == code, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def down(tmp_path: Path) -> Path:
    """A config whose NATS, PostgreSQL, Gamma and CLOB all point at ports nobody listens on."""
    port = dead_port()
    config = tmp_path / "down.toml"
    config.write_text(
        f'[bus]\nurl = "nats://127.0.0.1:{port}"\n'
        f'[database]\nurl = "postgresql://polybus@127.0.0.1:{port}/polybus"\n'
        f'[ingest]\ngamma_url = "http://127.0.0.1:{port}"\nclob_url = "http://127.0.0.1:{port}"\n'
        f'market_ws_url = "ws://127.0.0.1:{port}"\n'
    )
    return config


# -- config problems, reachable from every command that reads one -----------------------------
BAD_CONFIGS = {
    "missing.toml": (None, "cannot read config file"),
    "partitions.toml": ("[bus]\npartitions = 0\n", "bus.partitions = 0"),
    "typo.toml": ("[bus]\npartitons = 8\n", "bus.partitons"),
    "syntax.toml": ("[bus\n", "is not valid TOML"),
    "streams.toml": ('[bus]\nstreams_file = "nope.toml"\n', "bus.streams_file"),
    "prefix.toml": ('[bus]\nsubject_prefix = "a b"\n', "bus.subject_prefix"),
    "secrets.toml": ('secrets_file = "absent.toml"\n', "secrets_file"),
}


# Each command meets a different kind of bad config; together they cover every kind.
@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["config", "check"], "missing.toml"),
        (["up", "--config"], "streams.toml"),
        (["status", "--config"], "partitions.toml"),
        (["streams", "apply", "--config"], "streams.toml"),
        (["tail", "md.>", "--config"], "syntax.toml"),
        (["sim", "--config"], "secrets.toml"),
        (["ingest", "--config"], "typo.toml"),
        (["recorder", "--config"], "prefix.toml"),
        (["markets", "--config"], "missing.toml"),
        (["record", "--out", "c.jsonl", "--config"], "partitions.toml"),
        (["db", "migrate", "--config"], "secrets.toml"),
        (["replay", "--from-db", "--asset", "1", "--config"], "typo.toml"),
    ],
    ids=lambda value: (
        " ".join(part for part in value if not part.startswith("-"))
        if isinstance(value, list)
        else value
    ),
)
def test_a_bad_config_is_one_line_naming_file_and_key(
    tmp_path: Path, command: list[str], name: str
) -> None:
    text, fragment = BAD_CONFIGS[name]
    if text is not None:
        (tmp_path / name).write_text(text)
    assert_one_line(run(*command, name, cwd=tmp_path), 2, "config error", name, fragment)


def test_a_config_directory_or_undecodable_file_is_one_line(tmp_path: Path) -> None:
    assert_one_line(run("config", "check", str(tmp_path), cwd=tmp_path), 2, "Is a directory")
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    assert_one_line(run("config", "check", "binary.toml", cwd=tmp_path), 2, "not UTF-8")


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


# -- usage errors are one line too, not click's usage box -------------------------------------
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["nosuch"], "No such command"),
        (["db", "prune"], "Missing option '--older-than'"),
        (["db", "prune", "--older-than", "3x"], "duration '3x'"),
        (["db", "snapshot", "--asset", "1", "--at", "yesterday"], "time 'yesterday'"),
        (["replay", "--from-db", "--asset", "1", "--start", "soon", "--end", "x"], "time 'soon'"),
        (["replay", "--from-db"], "exactly one of --market and --asset"),
        (["replay"], "give either a capture FILE or --from-db"),
        (["tail", "md.>", "--count", "-1"], "--count"),
        (["tail", "md.>", "--connect-timeout", "soon"], "--connect-timeout"),
        (["record", "--out", "x.jsonl", "--duration", "-1"], "--duration"),
        (["record", "--out", "."], "is a directory"),
        (["sim-fault", "stall", "--set", "novalue"], "is not KEY=VALUE"),
        (["sim-fault", "stall", "--url", "nope"], "--url"),
        (["sim-capture", "."], "is a directory"),
        (["sim-capture", "no/such/dir/c.jsonl"], "does not exist"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    # A valid default config where the commands look for it, so that only the argument is bad.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "default.toml").write_text("")
    assert_one_line(run(*args, cwd=tmp_path), 2, fragment)


@pytest.mark.parametrize(
    ("subject", "fragment"),
    [
        ("", "empty"),
        ("foo bar", "whitespace"),
        ("a..b", "empty token"),
        ("a.>.b", "'>' is allowed only as the last token"),
        ("md.trade*", "token 'trade*'"),
    ],
)
def test_tail_refuses_a_malformed_subject(tmp_path: Path, subject: str, fragment: str) -> None:
    assert_one_line(run("tail", subject, cwd=tmp_path), 2, "bad subject", fragment)


# -- servers that are not there: one-shot commands give up, naming the server ------------------
@pytest.mark.parametrize(
    "command",
    [["tail", "md.>"], ["streams", "apply"]],
    ids=["tail", "streams apply"],
)
def test_one_shot_commands_give_up_on_an_unreachable_nats(
    tmp_path: Path, down: Path, command: list[str]
) -> None:
    started = time.monotonic()
    result = run(*command, "--config", str(down), "--connect-timeout", "1s", cwd=tmp_path)
    elapsed = time.monotonic() - started
    url = down.read_text().split('"')[1]
    assert_one_line(result, 1, "cannot reach NATS", url, "within 1s")
    assert elapsed < 10  # bounded by the flag (plus interpreter start), not forever


def test_an_unreachable_nats_url_is_shown_without_its_password(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[bus]\nurl = "nats://polybus@127.0.0.1:{dead_port()}"\n')
    result = run(
        "streams", "apply", "--config", str(config), "--connect-timeout", "1", cwd=tmp_path
    )
    assert_one_line(result, 1, "cannot reach NATS", "nats://polybus@127.0.0.1")


def test_status_reports_unreachable_servers_and_exits_1(tmp_path: Path, down: Path) -> None:
    result = run("status", "--json", "--config", str(down), "--connect-timeout", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr == ""  # no warning per connection attempt
    status = json.loads(result.stdout)
    assert not status["nats"]["reachable"]
    assert status["nats"]["error"]
    assert not status["postgres"]["reachable"]


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["db", "migrate"], "database postgresql://polybus@"),
        (["db", "prune", "--older-than", "30d"], "database postgresql://polybus@"),
        (["db", "snapshot", "--asset", "1", "--at", "2026-01-01T00:00:00Z"], "database"),
        (
            ["replay", "--from-db", "--asset", "1", "--start", "2026-01-01", "--end", "2026-01-02"],
            "replay failed",
        ),
        (["markets"], "market selection failed"),
    ],
    ids=["db migrate", "db prune", "db snapshot", "replay --from-db", "markets"],
)
def test_an_unreachable_server_is_one_line_and_exit_1(
    tmp_path: Path, down: Path, command: list[str], fragment: str
) -> None:
    assert_one_line(run(*command, "--config", str(down), cwd=tmp_path), 1, fragment)


def test_sim_fault_on_an_absent_simulator(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{dead_port()}"
    result = run("sim-fault", "stall", "--url", url, cwd=tmp_path)
    assert_one_line(result, 1, "cannot reach the simulator", url)


# -- replay of files that are not captures ----------------------------------------------------
def burst_lines() -> list[str]:
    return [json.dumps(event) for event in json.loads(BURST.read_bytes())]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (bytes(range(256)) * 8, "lines are not frames (the first is line 1)"),
        (b"hello\nworld\n", "2 of 2 lines are not frames (the first is line 1)"),
        (b"", "the file is empty"),
        (b"\x1f\x8bnot really gzip", "not a readable gzip file"),
    ],
    ids=["random bytes", "text", "empty", "bad gzip header"],
)
def test_replay_of_something_that_is_not_a_capture_exits_2(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    (tmp_path / "file").write_bytes(content)
    assert_one_line(run("replay", "file", cwd=tmp_path), 2, fragment)


def test_replay_of_a_missing_file_or_a_directory_exits_2(tmp_path: Path) -> None:
    assert_one_line(run("replay", "nope.jsonl", cwd=tmp_path), 2, "No such file")
    assert_one_line(run("replay", ".", cwd=tmp_path), 2, "Is a directory")


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
