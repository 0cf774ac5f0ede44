"""Config: TOML into frozen Structs, unknown keys rejected, secrets kept secret."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polybus.common.cli import app
from polybus.common.config import (
    BUILTIN_STREAMS_FILE,
    REDACTED,
    ConfigError,
    Secret,
    ServiceSettings,
    load_config,
    redact_url,
)
from polybus.common.plugins import discover_plugins, section_types
from tests.helpers import write_secrets

REPO = Path(__file__).resolve().parents[2]
PRIVATE_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


class ExampleSettings(ServiceSettings, frozen=True):
    depth: int = 10


@pytest.mark.parametrize("name", ["default.toml", "sim.toml"])
def test_checked_in_configs_are_valid(name: str) -> None:
    # Service sections ([ingest], [sim], ...) are validated by the installed plugins' Structs.
    config = load_config(REPO / "config" / name, section_types(discover_plugins()))
    assert config.deployment.bus.partitions == 16
    assert config.uses_embedded_nats()
    assert config.uses_embedded_postgres()
    # They name no streams file: the definitions built into polybus, wherever the config is.
    assert Path(config.deployment.bus.streams_file) == BUILTIN_STREAMS_FILE
    assert (REPO / "config" / "streams.toml").resolve() == BUILTIN_STREAMS_FILE


def test_service_sections_are_validated_by_their_own_struct(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[example]\ndepth = 3\n")
    config = load_config(path, {"example": ExampleSettings})
    assert config.section("example", ExampleSettings).depth == 3
    assert config.section("missing", ExampleSettings) == ExampleSettings()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[bus]\npartitons = 8\n", "bus.partitons = 8: Object contains unknown field"),
        ("[bus]\npartitions = 'many'\n", "bus.partitions = 'many': Expected `int`"),
        ("[bus]\npartitions = 0\n", "bus.partitions = 0: Expected `int` >= 1"),
        ("venue = 'kalshi'\n", "venue = 'kalshi'"),
        ("colour = 'blue'\n", "colour = 'blue': unknown key"),
        ("[example]\ndepth = -1.5\n", "example.depth = -1.5: Expected `int`"),
        ("[example]\nextra = true\n", "example.extra = True: Object contains unknown field"),
        ("[bus\n", "is not valid TOML"),
    ],
)
def test_a_bad_key_is_named_with_its_value(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as error:
        load_config(path, {"example": ExampleSettings})
    assert fragment in str(error.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", {})


def test_secrets_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    write_secrets(tmp_path / "s.toml", f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n', 0o644)
    path = write(tmp_path / "c.toml", 'secrets_file = "s.toml"\n')
    with pytest.raises(ConfigError, match="accessible by group/others") as error:
        load_config(path, {})
    assert PRIVATE_KEY not in str(error.value)


def test_secrets_are_loaded_and_never_shown(tmp_path: Path) -> None:
    write_secrets(
        tmp_path / "s.toml",
        f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n[database]\npassword = "hunter2"\n',
        0o600,
    )
    path = write(tmp_path / "c.toml", 'secrets_file = "s.toml"\n')
    config = load_config(path, {})
    key = config.secrets.polymarket.private_key
    assert key is not None
    assert key.reveal() == PRIVATE_KEY
    dumps = [
        repr(config),
        str(config),
        repr(config.secrets),
        json.dumps(config.effective()),
        f"{key}",
        repr(key),
    ]
    for text in dumps:
        assert PRIVATE_KEY not in text
        assert "hunter2" not in text
    assert config.effective()["secrets"]["polymarket"]["private_key"] == REDACTED


@pytest.mark.parametrize("section", ["bus", "database"])
def test_a_password_in_a_url_is_refused_without_echoing_it(tmp_path: Path, section: str) -> None:
    path = write(tmp_path / "c.toml", f'[{section}]\nurl = "nats://u:hunter2@db:5432/x"\n')
    with pytest.raises(ConfigError, match=f"{section}.url = .*secrets file") as error:
        load_config(path, {})
    assert "hunter2" not in str(error.value)


def test_a_secret_cannot_be_pickled_out() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret("x"))


def test_invalid_secrets_toml_does_not_quote_the_line(tmp_path: Path) -> None:
    write_secrets(tmp_path / "s.toml", f'[polymarket]\nprivate_key = "{PRIVATE_KEY}\n', 0o600)
    path = write(tmp_path / "c.toml", 'secrets_file = "s.toml"\n')
    with pytest.raises(ConfigError, match="not valid TOML") as error:
        load_config(path, {})
    assert PRIVATE_KEY not in str(error.value)


def test_a_bad_secret_value_names_the_key_but_not_the_value(tmp_path: Path) -> None:
    write_secrets(tmp_path / "s.toml", "[polymarket]\nprivate_key = 12345678\n", 0o600)
    path = write(tmp_path / "c.toml", 'secrets_file = "s.toml"\n')
    with pytest.raises(ConfigError, match=r"polymarket\.private_key") as error:
        load_config(path, {})
    assert "12345678" not in str(error.value)


def test_redact_url() -> None:
    assert (
        redact_url("nats://a:b@h:4222,nats://h2:4222")
        == f"nats://a:{REDACTED}@h:4222,nats://h2:4222"
    )
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("") == ""


def test_config_check_prints_the_effective_config_and_exits_0(tmp_path: Path) -> None:
    write_secrets(tmp_path / "s.toml", f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n', 0o600)
    path = write(tmp_path / "c.toml", 'secrets_file = "s.toml"\n[bus]\npartitions = 8\n')
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    effective = json.loads(result.output)
    assert effective["bus"]["partitions"] == 8
    assert effective["secrets"]["polymarket"]["private_key"] == REDACTED
    assert PRIVATE_KEY not in result.output


def test_config_check_exits_2_naming_the_bad_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[embedded]\nnats_port = 70000\n")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "embedded.nats_port = 70000" in result.output


def test_a_secret_hash_reveals_nothing_about_its_value() -> None:
    # Equal secrets still hash alike (sets and frozen config Structs keep working).
    assert hash(Secret("hunter2")) == hash(Secret("hunter2"))
    assert hash(Secret("hunter2")) == hash(Secret("correct horse"))
    assert hash(Secret("hunter2")) != hash("hunter2")
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_a_config_without_a_streams_file_works_from_anywhere(tmp_path: Path) -> None:
    copy = write(tmp_path / "mine.toml", (REPO / "config" / "sim.toml").read_text())
    config = load_config(copy, section_types(discover_plugins()))
    assert Path(config.deployment.bus.streams_file) == BUILTIN_STREAMS_FILE
    assert BUILTIN_STREAMS_FILE.is_file()


def test_a_config_naming_its_own_streams_file_resolves_it_beside_the_config(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "c.toml", '[bus]\nstreams_file = "mine/streams.toml"\n')
    config = load_config(path, {})
    assert config.deployment.bus.streams_file == str(tmp_path / "mine" / "streams.toml")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[bus]\npartitions = 0\n", ("c.toml", "bus.partitions = 0")),
        ('[bus]\nsubject_prefix = "a b"\n', ("c.toml", "bus.subject_prefix = 'a b'")),
        ('[bus]\nstream_prefix = "a.b"\n', ("c.toml", "bus.stream_prefix = 'a.b'")),
        ('secrets_file = "absent.toml"\n', ("c.toml", "secrets_file", "absent.toml")),
    ],
)
def test_every_config_error_names_the_file_and_the_key(
    tmp_path: Path, text: str, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path / "c.toml", text), {})
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
