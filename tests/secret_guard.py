"""A pytest plugin: no secret in any log line or event, checked over the whole test run.

It learns every secret value of the run: each :class:`~polybus.common.config.Secret` built in
the test process (module constants, configs and secrets files loaded in-process), the API
secret and passphrase the in-process simulator issues, every secrets file written through
:func:`tests.helpers.write_secrets`, every file a subprocess left that looks like a secrets file
(mode 0600, ``secret`` in its name) and whatever a test hands to :func:`register_secret`.
Values shorter than :data:`MIN_LENGTH` are ignored, so the guard cannot fire on common words.

It looks for them in any case and, for a base64 value, in either alphabet, with or without
padding and ``0x``, and as its decoded bytes (raw and hex):

- after each test phase, in the report's captured stdout/stderr/log sections and its longrepr:
  a hit fails that test, naming the section and the secret's fingerprint;
- at the end of each test, before the fixtures delete anything, in the files of its
  ``tmp_path`` and ``workdir`` (service logs, subprocess output) and in the session NATS
  server's JetStream store files the test changed (its events, before the ``bus`` fixture
  deletes its streams): a hit fails the test's teardown;
- at the end of the session, in every file under the session's basetemp (what is left of the
  JetStream store, session fixtures' files): a hit fails the session.

Files meant to hold secrets (those written through the helper, and mode-0600 files named
``*secret*``) are not searched. A message never shows a secret: a fingerprint (HMAC-SHA256 under
a key drawn per session, so it cannot be used to test guesses) and where the value was learned
say which one; sections that show a secret are redacted before pytest prints them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stat
import time
import tomllib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polybus.common.config import REDACTED, Secret
from polybus.sim.auth import ApiKey, ApiKeys

MIN_LENGTH = 8
"""Shorter values are not looked for: they would match ordinary words."""
NOT_SECRET_KEYS = frozenset({"user"})
"""Keys of a secrets file whose values are not secret (``[database] user``)."""
_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")
_BASE64 = re.compile(r"[A-Za-z0-9_\-+/]+={0,2}")


@dataclass(frozen=True)
class Learned:
    """What a message may say about a secret: its fingerprint and where it was learned."""

    fingerprint: str
    origin: str

    def __str__(self) -> str:
        return f"fingerprint {self.fingerprint} (learned from {self.origin})"


@dataclass(frozen=True)
class FileHit:
    path: Path
    secret: Learned


_NORMAL = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ+/", b"abcdefghijklmnopqrstuvwxyz-_")
"""Text is searched lower-cased and in the URL-safe base64 alphabet, so one search finds the
upper- and lower-case hex of a value and both base64 alphabets."""


def normalize(data: bytes) -> bytes:
    return data.translate(_NORMAL)


def search_forms(value: str) -> tuple[set[bytes], set[bytes]]:
    """What to look for: forms in normalized text (a hex value without ``0x``, a base64 value
    without padding and its decoded bytes' hex; each also finds the longer forms that contain
    it) and raw bytes (a base64 value's decoded bytes, for binary stores)."""
    core = value
    raw = b""
    if hex_match := _HEX.fullmatch(value):
        core = hex_match[1]
    elif _BASE64.fullmatch(value):
        core = value.rstrip("=")
        try:
            decoded = base64.urlsafe_b64decode(
                core.translate(str.maketrans("+/", "-_")) + "=" * (-len(core) % 4)
            )
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) >= 2 * MIN_LENGTH:  # shorter random bytes could occur in a binary store
            raw = decoded
    normal = {normalize(form) for form in (core.encode(), raw.hex().encode())}
    return (
        {form for form in normal if len(form) >= MIN_LENGTH},
        {raw} if raw else set(),
    )


class SecretRegistry:
    """The secret values of a run, and the searches for them."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        self._normal: dict[bytes, Learned] = {}
        self._raw: dict[bytes, Learned] = {}
        self._learned: set[str] = set()
        self._exempt: set[Path] = set()

    def fingerprint(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:12]

    def learn(self, value: str, origin: str) -> None:
        if len(value) < MIN_LENGTH or value == REDACTED or value in self._learned:
            return
        self._learned.add(value)
        learned = Learned(self.fingerprint(value), origin)
        normal, raw = search_forms(value)
        for needle in normal:
            self._normal.setdefault(needle, learned)
        for needle in raw:
            self._raw.setdefault(needle, learned)

    def __len__(self) -> int:
        return len(self._learned)

    # -- secrets files -----------------------------------------------------------------------
    def learn_secrets_file(self, path: Path, origin: str) -> None:
        """Exempt ``path`` from the file scans and learn the values it holds (if it parses)."""
        self._exempt.add(path.resolve())
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return
        for value in _secret_values(data):
            self.learn(value, f"{origin} {path}")

    def is_secrets_file(self, path: Path, mode: int) -> bool:
        private = not mode & (stat.S_IRWXG | stat.S_IRWXO)
        return path in self._exempt or (private and "secret" in path.name.lower())

    # -- searches ----------------------------------------------------------------------------
    def find(self, data: str | bytes) -> list[Learned]:
        """The distinct secrets ``data`` shows."""
        if not data:
            return []
        haystack = data.encode(errors="surrogateescape") if isinstance(data, str) else data
        normal = normalize(haystack)
        found: dict[str, Learned] = {}
        for needles, text in ((self._normal, normal), (self._raw, haystack)):
            for needle, learned in needles.items():
                if learned.fingerprint not in found and needle in text:
                    found[learned.fingerprint] = learned
        return list(found.values())

    def redact(self, text: str) -> str:
        """``text`` with every form of every secret replaced by ``<secret fingerprint>``."""
        for needle in sorted(self._normal, key=len, reverse=True):
            pattern = _pattern(needle)
            mark = f"<secret {self._normal[needle].fingerprint}>"
            text = pattern.sub(mark, text)
        return text

    def scan_tree(self, root: Path, *, since: float = 0.0) -> list[FileHit]:
        """Every file under ``root`` (symbolic links not followed) modified at ``since`` or
        later that shows a secret, secrets files excepted (and learned first)."""
        files: list[Path] = []
        for path, status in _walk(root):
            if self.is_secrets_file(path, status.st_mode):
                self.learn_secrets_file(path, "a secrets file found at")
            elif status.st_mtime >= since:
                files.append(path)
        hits = []
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:  # removed meanwhile, or not ours to read
                continue
            hits += [FileHit(path, learned) for learned in self.find(data)]
        return hits


def _pattern(needle: bytes) -> re.Pattern[str]:
    alternatives = {"-": "[-+]", "_": "[_/]"}
    form = needle.decode(errors="surrogateescape")
    return re.compile("".join(alternatives.get(c, re.escape(c)) for c in form), re.IGNORECASE)


def _secret_values(data: Any, key: str = "") -> Iterator[str]:
    if isinstance(data, dict):
        for name, value in data.items():
            yield from _secret_values(value, name)
    elif isinstance(data, list):
        for value in data:
            yield from _secret_values(value, key)
    elif isinstance(data, str) and key not in NOT_SECRET_KEYS:
        yield data


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name).resolve()
            try:
                status = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                yield path, status


REGISTRY = SecretRegistry()
"""The registry of this test run."""
_where = "collection"
"""The test running now, for :attr:`Learned.origin`."""


def register_secret(value: str) -> None:
    """Have the guard look for ``value`` too (e.g. one only a subprocess sees)."""
    REGISTRY.learn(value, f"register_secret() during {_where}")


def register_secrets_file(path: Path) -> None:
    """``path`` holds secrets: learn them, and do not count the file itself as a leak."""
    REGISTRY.learn_secrets_file(path, f"write_secrets() during {_where}:")


# -- hooks -----------------------------------------------------------------------------------
_LEAKS = pytest.StashKey[list[FileHit]]()
_STARTED = pytest.StashKey[float]()
_reported: set[FileHit] = set()
"""Leaks a test already failed for; the session scan does not list them again."""
_session_scan: tuple[list[FileHit], float] | None = None
"""The basetemp scan's leaks and duration, for the terminal summary."""
_restore: list[Callable[[], None]] = []


def _wrap(owner: type, name: str, after: Callable[..., None]) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        after(result, *args, **kwargs)
        return result

    setattr(owner, name, wrapped)
    _restore.append(lambda: setattr(owner, name, original))


def _learn_secret(_: None, secret: Secret, value: str) -> None:
    REGISTRY.learn(value, f"Secret() during {_where}")


def _learn_api_key(key: ApiKey, *_: Any) -> None:
    REGISTRY.learn(key.secret, f"a simulator's API secret during {_where}")
    REGISTRY.learn(key.passphrase, f"a simulator's API passphrase during {_where}")


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: test modules build secrets at import time.
    _wrap(Secret, "__init__", _learn_secret)
    _wrap(ApiKeys, "_derive", _learn_api_key)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _restore:
        _restore.pop()()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _where
    _where = item.nodeid
    # A second early: file times may be coarser than the clock.
    item.stash[_STARTED] = time.time() - 1.0
    try:
        return (yield)
    finally:
        _where = "collection"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    # Before the fixtures' finalizers: ``workdir`` is deleted by its own, and the ``bus``
    # fixture deletes the test's streams (their files in the NATS store) by its own.
    hits = [hit for root in _test_directories(item) for hit in REGISTRY.scan_tree(root)]
    since = item.stash.get(_STARTED, 0.0)
    hits += [
        hit for root in session_stores(item.config) for hit in REGISTRY.scan_tree(root, since=since)
    ]
    item.stash[_LEAKS] = [hit for hit in dict.fromkeys(hits) if hit not in _reported]
    _reported.update(hits)
    return (yield)


def _test_directories(item: pytest.Item) -> Iterable[Path]:
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    for name in ("tmp_path", "workdir"):
        path = funcargs.get(name)
        if isinstance(path, Path) and path.is_dir():
            yield path


def _basetemp(config: pytest.Config) -> Path | None:
    # Only the tmpdir plugin's factory knows it; getbasetemp() would create one when no test
    # asked for it.
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp: Path | None = getattr(factory, "_basetemp", None)
    return basetemp if basetemp is not None and basetemp.is_dir() else None


def session_stores(config: pytest.Config) -> Iterable[Path]:
    """The session NATS server's store (``tests/conftest.py``: ``mktemp("nats")``)."""
    basetemp = _basetemp(config)
    if basetemp is not None:
        yield from (path for path in basetemp.glob("nats*") if not path.is_symlink())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    problems = [
        f"secret guard: {item.nodeid} shows a secret in {title}: {learned}"
        for title, content in report.sections
        if title.endswith(f" {report.when}")
        for learned in REGISTRY.find(content)
    ]
    problems += [
        f"secret guard: {item.nodeid} shows a secret in its failure report: {learned}"
        for learned in REGISTRY.find(report.longreprtext)
    ]
    if report.when == "teardown":
        problems += [
            f"secret guard: {item.nodeid} left a secret in {hit.path}: {hit.secret}"
            for hit in item.stash.get(_LEAKS, [])
        ]
    if problems:
        earlier = REGISTRY.redact(report.longreprtext) if report.failed else ""
        report.outcome = "failed"
        report.longrepr = "\n".join([earlier, *problems]).strip()
    report.sections = [(title, REGISTRY.redact(content)) for title, content in report.sections]
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # tryfirst: before the tmpdir plugin may delete the basetemp. Session fixtures (the NATS
    # server) have stopped by now, so the stores are complete.
    global _session_scan
    basetemp = _basetemp(session.config)
    if basetemp is None:
        return
    started = time.monotonic()
    hits = [hit for hit in REGISTRY.scan_tree(basetemp) if hit not in _reported]
    _session_scan = (hits, time.monotonic() - started)
    if hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _session_scan is None:
        return
    hits, seconds = _session_scan
    if hits:
        terminalreporter.section("secret guard", red=True)
        for hit in hits:
            terminalreporter.write_line(f"secret guard: {hit.path} shows a secret: {hit.secret}")
    terminalreporter.write_line(
        f"secret guard: {len(REGISTRY)} secrets, basetemp scanned in {seconds:.2f}s, "
        f"{len(hits)} leaks"
    )
