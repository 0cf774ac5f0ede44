"""Deployment configuration (DESIGN §6): one TOML file decoded into frozen Structs.

Unknown keys are rejected with the key's name; the secrets live in a separate TOML file whose
path the config names (``secrets_file``), which must not be group/world readable. Secret values
are :class:`Secret` objects whose ``repr``/``str`` are redacted, so no config dump, log line or
exception ever shows one.

A deployment file has the common sections below, and one section per service (``[ingest]``,
``[recorder]``, …) whose Struct the service itself declares (see :mod:`polybus.common.plugins`).
Relative file names (``secrets_file``, ``bus.streams_file``) are resolved against the config
file's directory; ``embedded.var_dir`` against the working directory (``./var``). A config that
names no streams file uses the definitions shipped inside this package
(:data:`BUILTIN_STREAMS_FILE`), so a deployment file works wherever it is copied.

Every problem is a :class:`ConfigError` whose message is one line naming the file and the key.
"""

from __future__ import annotations

import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec

from polybus.common.subjects import Namespace, Subjects

REDACTED = "**********"

BUILTIN_STREAMS_FILE = Path(__file__).with_name("streams.toml")
"""The streams, consumers and KV buckets polybus ships (``config/streams.toml`` links here)."""


class Secret:
    """A secret string. Only :meth:`reveal` returns the value; every other view is redacted."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        # Equal secrets must hash alike, and a hash of the value would let anyone who sees it
        # test guesses offline: every secret hashes the same (nothing keys on them in bulk).
        return hash(Secret)

    def __reduce__(self) -> Any:
        # Pickling (e.g. into a multiprocessing queue) would copy the secret out verbatim.
        raise TypeError("secrets cannot be pickled")


class ConfigError(Exception):
    """The config (or secrets) file is missing, unreadable or invalid. Exit code 2."""


class ConfigStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base for every config section: frozen, keyword-only, unknown keys rejected."""


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]


class BusConfig(ConfigStruct, frozen=True):
    url: str = ""
    """nats:// URL(s), comma separated. Empty: use the embedded nats-server."""
    subject_prefix: str = ""
    """A leading subject token for the whole deployment (``""`` = none)."""
    stream_prefix: str = ""
    """Prepended to every stream, consumer and KV bucket name (isolates test runs)."""
    partitions: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16
    """P: market data, intents and executions are split into this many partitions by market
    (the subject's partition token); replicas and ingests split the partitions by lease."""
    streams_file: str = ""
    """The streams definitions; empty: the ones built into polybus (:data:`BUILTIN_STREAMS_FILE`).
    A loaded :class:`Config` always holds the absolute path of the file in use."""
    ping_interval_s: PositiveSeconds = 5.0
    """How often a NATS connection pings the server (whole seconds; three unanswered: reconnect)."""
    connect_timeout_s: PositiveSeconds = 5.0
    """How long a NATS connection attempt may take."""


class DatabaseConfig(ConfigStruct, frozen=True):
    url: str = ""
    """postgresql:// URL without the password (that is in the secrets file). Empty: embedded."""


class EmbeddedConfig(ConfigStruct, frozen=True):
    """Where ``polybus up`` runs its own nats-server and PostgreSQL when no URL is configured."""

    var_dir: str = "var"
    """Their data: JetStream in ``<var_dir>/nats``, PostgreSQL in ``<var_dir>/pg`` (kept across
    restarts; relative to the working directory)."""
    host: str = "127.0.0.1"
    """The address both servers listen on (loopback: nothing is reachable from outside)."""
    nats_port: Port = 4222
    nats_monitor_port: Port = 8222
    """nats-server's HTTP monitoring (``/healthz``, ``/varz``, ``/jsz``)."""
    postgres_port: Port = 54329
    postgres_database: str = "polybus"
    """The database ``polybus up`` creates and the services use."""


class LogConfig(ConfigStruct, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """The least severe log level written."""
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: console renderer on a TTY, JSON otherwise."""


class ServiceSettings(ConfigStruct, frozen=True):
    """Settings every service section has; a service's own Struct extends this."""

    instance: str = ""
    """Instance name for logs, metrics and the NATS connection; empty: the host name."""
    metrics_host: str = "127.0.0.1"
    """The address ``/metrics`` and ``/healthz`` listen on (``0.0.0.0`` for Prometheus in a
    container)."""
    metrics_port: Port = 0
    """``/metrics`` and ``/healthz``; 0 picks a free port."""
    heartbeat_interval_s: PositiveSeconds = 5.0
    """How often the service writes its ``ServiceHealth`` to the ``HEALTH`` bucket."""
    enabled: bool = True
    """Whether ``polybus up`` starts this service."""


class SupervisorSettings(ServiceSettings, frozen=True):
    restart_backoff_initial_s: PositiveSeconds = 0.5
    """A crashed child is restarted after this long, doubling on each crash in a row…"""
    restart_backoff_max_s: PositiveSeconds = 30.0
    """…up to this (reset after a minute of uptime)."""
    stop_timeout_s: PositiveSeconds = 15.0
    """On stop, how long a child may take to exit after SIGTERM before it is killed."""


class Deployment(ConfigStruct, frozen=True):
    """The common part of a deployment file."""

    venue: Literal["polymarket", "sim"] = "polymarket"
    """``sim``: ``polybus up`` also runs the built-in simulator (``[sim]``), which the
    services' URLs then point at (``config/sim.toml``)."""
    secrets_file: str = ""
    """The secrets file (see below), relative to this file's directory; empty: no secrets."""
    bus: BusConfig = BusConfig()
    database: DatabaseConfig = DatabaseConfig()
    embedded: EmbeddedConfig = EmbeddedConfig()
    log: LogConfig = LogConfig()
    supervisor: SupervisorSettings = SupervisorSettings()


class PolymarketSecrets(ConfigStruct, frozen=True):
    private_key: Secret | None = None
    api_key: Secret | None = None
    api_secret: Secret | None = None
    api_passphrase: Secret | None = None


class PasswordSecrets(ConfigStruct, frozen=True):
    user: str = ""
    password: Secret | None = None
    token: Secret | None = None


class Secrets(ConfigStruct, frozen=True):
    polymarket: PolymarketSecrets = PolymarketSecrets()
    database: PasswordSecrets = PasswordSecrets()
    nats: PasswordSecrets = PasswordSecrets()


S = TypeVar("S", bound=msgspec.Struct)


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret:
        if isinstance(obj, str):
            return Secret(obj)
        # msgspec turns a TypeError into a ValidationError that names the key.
        raise TypeError("Expected a string")
    raise NotImplementedError


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return REDACTED
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_ERROR_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<name>[^`]+)`")


def _lookup(data: Any, path: list[str | int]) -> Any:
    for key in path:
        data = data[key]
    return data


def _describe(error: msgspec.ValidationError, data: Any, section: str, show_value: bool) -> str:
    """Turn msgspec's message into one that names the key and (outside secrets) its value."""
    match = _ERROR_PATH.match(str(error))
    assert match is not None
    message, raw_path = match["message"], match["path"] or ""
    path: list[str | int] = [
        name or int(index) for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", raw_path)
    ]
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown:
        path.append(unknown["name"])
    key = ".".join([section, *(str(p) for p in path)] if section else [str(p) for p in path])
    if not show_value:
        return f"{key}: {message}"
    try:
        value = _lookup(data, path)
    except (KeyError, IndexError, TypeError):
        return f"{key}: {message}"
    return f"{key} = {value!r}: {message}"


def convert_section(data: Any, type_: type[S], *, section: str = "", secret: bool = False) -> S:
    """Validate one decoded TOML table against a config Struct; errors name the key and value."""
    try:
        return msgspec.convert(data, type_, dec_hook=_dec_hook)
    except msgspec.ValidationError as error:
        raise ConfigError(_describe(error, data, section, show_value=not secret)) from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{what} {path} is not valid TOML: {error}") from None


def load_secrets(path: Path) -> Secrets:
    """Load the secrets file, refusing one that group or others may read."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"cannot read secrets file {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"secrets file {path} is accessible by group/others "
            f"(mode {stat.filemode(mode)}); run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read secrets file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"secrets file {path} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        # The decoder's message quotes the offending line, which may hold a secret.
        raise ConfigError(f"secrets file {path} is not valid TOML") from None
    try:
        return convert_section(data, Secrets, secret=True)
    except ConfigError as error:
        raise ConfigError(f"secrets file {path}: {error}") from None


@dataclass(frozen=True)
class Config:
    """A loaded deployment: the common sections, the secrets and each service's section."""

    path: Path
    deployment: Deployment
    secrets: Secrets = field(repr=False)
    sections: Mapping[str, msgspec.Struct]

    def section(self, name: str, type_: type[S]) -> S:
        value = self.sections.get(name)
        if value is None:
            return type_()
        if not isinstance(value, type_):
            raise TypeError(f"section [{name}] is {type(value).__name__}, not {type_.__name__}")
        return value

    def resolve(self, relative: str) -> Path:
        """A file named in the config, resolved against the config file's directory."""
        return (self.path.parent / relative).resolve()

    def var_dir(self) -> Path:
        return Path(self.deployment.embedded.var_dir).resolve()

    def nats_url(self) -> str:
        embedded = self.deployment.embedded
        return self.deployment.bus.url or f"nats://{embedded.host}:{embedded.nats_port}"

    def database_url(self) -> str:
        embedded = self.deployment.embedded
        return self.deployment.database.url or (
            f"postgresql://postgres@{embedded.host}:{embedded.postgres_port}/"
            f"{embedded.postgres_database}"
        )

    def namespace(self) -> Namespace:
        bus = self.deployment.bus
        return Namespace(bus.subject_prefix, bus.stream_prefix)

    def uses_embedded_nats(self) -> bool:
        return not self.deployment.bus.url

    def uses_embedded_postgres(self) -> bool:
        return not self.deployment.database.url

    def effective(self) -> dict[str, Any]:
        """The effective config as plain data, secrets redacted (for ``config check``)."""
        data: dict[str, Any] = msgspec.to_builtins(self.deployment, enc_hook=_enc_hook)
        data["bus"]["url"] = redact_url(self.deployment.bus.url)
        data["database"]["url"] = redact_url(self.deployment.database.url)
        for name, section in sorted(self.sections.items()):
            data[name] = msgspec.to_builtins(section, enc_hook=_enc_hook)
        data["secrets"] = msgspec.to_builtins(self.secrets, enc_hook=_enc_hook)
        data["effective_urls"] = {
            "nats": redact_url(self.nats_url()),
            "database": redact_url(self.database_url()),
        }
        return data


def load_config(path: Path | str, section_types: Mapping[str, type[msgspec.Struct]]) -> Config:
    """Load and validate a deployment file and the secrets file it names.

    ``section_types`` maps each installed service's section name to its settings Struct; a
    section no installed service declares is an unknown key.
    """
    path = Path(path)
    raw = read_toml(path, "config file")
    try:
        deployment, sections = _decode(raw, section_types)
    except ConfigError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    path = path.resolve()
    secrets = Secrets()
    if deployment.secrets_file:
        try:
            secrets = load_secrets(path.parent / deployment.secrets_file)
        except ConfigError as error:
            raise ConfigError(f"config file {path}: secrets_file: {error}") from None
    streams_file = (
        (path.parent / deployment.bus.streams_file).resolve()
        if deployment.bus.streams_file
        else BUILTIN_STREAMS_FILE
    )
    deployment = msgspec.structs.replace(
        deployment, bus=msgspec.structs.replace(deployment.bus, streams_file=str(streams_file))
    )
    return Config(path=path, deployment=deployment, secrets=secrets, sections=sections)


def _decode(
    raw: dict[str, Any], section_types: Mapping[str, type[msgspec.Struct]]
) -> tuple[Deployment, dict[str, msgspec.Struct]]:
    common_fields = set(Deployment.__struct_fields__)
    sections: dict[str, msgspec.Struct] = {}
    common: dict[str, Any] = {}
    for key, value in raw.items():
        if key in common_fields:
            common[key] = value
        elif key in section_types:
            sections[key] = convert_section(value, section_types[key], section=key)
        else:
            known = ", ".join(sorted(common_fields | set(section_types)))
            raise ConfigError(f"{key} = {value!r}: unknown key (known: {known})")
    deployment = convert_section(common, Deployment)
    bus = deployment.bus
    for key, url in (("bus.url", bus.url), ("database.url", deployment.database.url)):
        if redact_url(url) != url:
            raise ConfigError(
                f"{key} = {redact_url(url)!r}: a password does not belong in the config file; "
                "put it in the secrets file"
            )
    # Checked here so that a bad prefix fails at load naming its key, not deep in a service.
    try:
        Subjects(bus.subject_prefix)
    except ValueError as error:
        raise ConfigError(f"bus.subject_prefix = {bus.subject_prefix!r}: {error}") from None
    if not _FORBIDDEN_IN_NAME.isdisjoint(bus.stream_prefix) or not bus.stream_prefix.isprintable():
        raise ConfigError(
            f"bus.stream_prefix = {bus.stream_prefix!r}: a stream name cannot contain "
            "'.', '*', '>', '/', '\\' or whitespace"
        )
    return deployment, sections


_FORBIDDEN_IN_NAME = frozenset(".*>/\\ \t")


def redact_url(url: str) -> str:
    """Hide the password of a URL (or of several, comma-separated): ``nats://u:**@host``."""
    if not url:
        return url
    redacted = []
    for part in url.split(","):
        pieces = urlsplit(part.strip())
        if pieces.password is None:
            redacted.append(part.strip())
            continue
        host = pieces.hostname or ""
        if pieces.port is not None:
            host = f"{host}:{pieces.port}"
        netloc = f"{pieces.username or ''}:{REDACTED}@{host}"
        redacted.append(urlunsplit(pieces._replace(netloc=netloc)))
    return ",".join(redacted)
