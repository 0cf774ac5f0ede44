"""The secret guard (tests/secret_guard.py) finds a leaked secret in captured output, in a
failure report and in the files a run leaves, in every form it could leak in, and does not
fire on a redacted ``Secret`` or on a secrets file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import REDACTED, Secret
from polybus.common.events import DeadLetter
from polybus.sim.auth import ApiKeys
from tests.helpers import eventually
from tests.integration.test_bus_contract import DEFINITIONS, work
from tests.secret_guard import REGISTRY, SecretRegistry, session_stores

REPO = Path(__file__).resolve().parents[2]
# Distinct from every secret the rest of the suite uses, and never given to Secret() in this
# process: files below hold them on purpose, and the guard of this run must not know them.
KEY = "0x" + "5e" * 32
API_SECRET = base64.urlsafe_b64encode(bytes(range(100, 132))).decode()
PASSPHRASE = "a1b2c3d4" * 8


@pytest.fixture
def registry() -> SecretRegistry:
    registry = SecretRegistry(key=b"k" * 32)
    registry.learn(KEY, "the test")
    registry.learn(API_SECRET, "the test")
    return registry


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"order.signed key={KEY}", KEY),
        (f"key {KEY[2:]}", KEY),
        (f"KEY {KEY[2:].upper()}", KEY),
        (f"key {KEY[2:10].upper()}{KEY[10:]}", KEY),
        (f'{{"secret": "{API_SECRET}"}}', API_SECRET),
        (f"secret={API_SECRET.rstrip('=')}.", API_SECRET),
        (f"standard alphabet {API_SECRET.translate(str.maketrans('-_', '+/'))}", API_SECRET),
        (f"decoded {bytes(range(100, 132)).hex()}", API_SECRET),
    ],
)
def test_a_secret_in_any_of_its_forms_is_found(
    registry: SecretRegistry, text: str, secret: str
) -> None:
    (found,) = registry.find(text)
    assert found.origin == "the test"
    assert found.fingerprint == registry.fingerprint(secret)


def test_redacted_views_short_values_and_the_marker_are_not_hits(registry: SecretRegistry) -> None:
    secret = Secret("not-in-any-file-" + "7" * 16)
    registry.learn(secret.reveal(), "the test")
    registry.learn("hunter2", "too short")
    registry.learn(REDACTED, "the marker")
    assert registry.find(f"{secret!r} {secret} {REDACTED} {{'password': Secret(...)}}") == []
    assert registry.find("hunter2 is a fine password") == []
    assert len(registry) == 3


def test_a_message_never_shows_the_secret(registry: SecretRegistry) -> None:
    (found,) = registry.find(f"key={KEY}")
    assert KEY not in str(found)
    assert KEY[2:] not in str(found)
    assert registry.redact(f"key={KEY} and {KEY[2:]}") == (
        f"key=0x<secret {found.fingerprint}> and <secret {found.fingerprint}>"
    )
    # Fingerprints are keyed per run, so one cannot be checked against a guessed value.
    assert SecretRegistry(key=b"x" * 32).fingerprint(KEY) != found.fingerprint


def test_a_leaked_file_is_found_and_secrets_files_are_not(
    registry: SecretRegistry, tmp_path: Path
) -> None:
    (tmp_path / "nats" / "js").mkdir(parents=True)
    leak = tmp_path / "nats" / "js" / "1.blk"
    leak.write_bytes(b"\x00\x17" + f'{{"auth": {{"secret": "{API_SECRET}"}}}}'.encode() + b"\xff")
    (tmp_path / "service.log").write_text("sim.started url=http://127.0.0.1:1\n")
    written = tmp_path / "mine.toml"
    written.write_text(f'[polymarket]\nprivate_key = "{KEY}"\n')
    registry.learn_secrets_file(written, "the test")
    derived = tmp_path / "secrets.toml"  # what a subprocess wrote: private, named so
    derived.write_text(f'[polymarket]\napi_passphrase = "{PASSPHRASE}"\n')
    derived.chmod(0o600)
    public = tmp_path / "secrets-copy.toml"
    public.write_text(f'private_key = "{KEY}"\n')
    public.chmod(0o644)

    hits = registry.scan_tree(tmp_path)

    assert sorted((hit.path.name, hit.secret.fingerprint) for hit in hits) == sorted(
        [
            ("1.blk", registry.fingerprint(API_SECRET)),
            ("secrets-copy.toml", registry.fingerprint(KEY)),
        ]
    )
    # The subprocess's secrets file taught the guard its values.
    assert registry.find(PASSPHRASE)


def test_the_run_learns_every_secret_and_api_credential_created_in_it() -> None:
    value = "created-by-this-test-" + "9" * 12
    Secret(value)
    assert REGISTRY.find(f"log line {value}")
    key = ApiKeys(seed=987_654).derive("0x" + "12" * 20, 0)
    assert REGISTRY.find(key.secret)
    assert REGISTRY.find(key.passphrase)
    assert not REGISTRY.find(key.key)  # the API key names the account; it is not secret alone


async def test_an_event_on_the_bus_is_found_in_the_jetstream_store(
    registry: SecretRegistry, bus: NatsBus, request: pytest.FixtureRequest
) -> None:
    if os.environ.get("POLYBUS_TEST_NATS_URL"):
        pytest.skip("the NATS server is not the fixtures' own: its store is elsewhere")
    # This test's own registry: the run's guard must not fail it for the event.
    await bus.apply(DEFINITIONS)
    leak = DeadLetter(
        event_id="e1", ts_event=1, ts_init=1, source="test", reason="r", raw=f"frame {KEY}"
    )
    await bus.publish_persistent(work(bus), leak, msg_id="m1")
    (store,) = session_stores(request.config)

    def found() -> bool:
        return any(
            bus.namespace.stream("WORK") in str(hit.path) for hit in registry.scan_tree(store)
        )

    await eventually(found, 10, "the event in the stream's files")


INNER = """
import pytest

from polybus.common.config import Secret

VALUE = "inner-run-secret-" + "4" * 16


def test_prints_the_secret():
    print("order.signed", Secret(VALUE).reveal())


def test_shows_only_redacted_views():
    import logging

    secret = Secret(VALUE)
    print(repr(secret), secret)
    logging.getLogger("x").warning("secret is %s", secret)


def test_fails_with_the_secret_in_its_assertion():
    assert Secret(VALUE).reveal() == "something else"


def test_writes_the_secret_into_its_log_file(tmp_path):
    Secret(VALUE)
    (tmp_path / "service.log").write_text(f"debug frame {VALUE[-20:]} {VALUE}")


def test_publishes_the_secret_on_the_bus(tmp_path_factory):
    Secret(VALUE)
    (tmp_path_factory.mktemp("nats") / "1.blk").write_text(f"msg.executions {{'{VALUE}'}}")


def test_leaves_the_secret_in_a_session_directory(tmp_path_factory):
    Secret(VALUE)
    (tmp_path_factory.mktemp("service") / "store.blk").write_text(VALUE)
"""


@pytest.mark.timeout(120)
def test_the_plugin_fails_the_leaking_tests_and_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    value = "inner-run-secret-" + "4" * 16

    result = pytester.runpytest_subprocess("-p", "tests.secret_guard", "-p", "no:cacheprovider")

    output = result.stdout.str() + result.stderr.str()
    assert value not in output
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=4, failed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "secret guard: test_inner.py::test_writes_the_secret_into_its_log_file left a "
            "secret in */service.log: fingerprint *",
            "secret guard: test_inner.py::test_publishes_the_secret_on_the_bus left a secret "
            "in */nats0/1.blk: fingerprint *",
            "secret guard: test_inner.py::test_prints_the_secret shows a secret in "
            "Captured stdout call: fingerprint * (learned from Secret() during "
            "test_inner.py::test_prints_the_secret)",
            "secret guard: test_inner.py::test_fails_with_the_secret_in_its_assertion shows a "
            "secret in its failure report: fingerprint *",
            "secret guard: */store.blk shows a secret: fingerprint *",
            "secret guard: 1 secrets, basetemp scanned in *s, 1 leaks",
        ],
        consecutive=False,
    )
    assert "<secret " in output  # the failing assertion's report is printed redacted
