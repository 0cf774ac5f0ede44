"""JetStream streams, durable consumers and KV buckets, from checked-in config.

``streams.toml`` beside this module (:data:`~polybus.common.config.BUILTIN_STREAMS_FILE`,
linked from ``config/streams.toml``) is the one place they are defined; a deployment may name
its own file in ``bus.streams_file``. :func:`apply` creates what is
missing and updates what differs, idempotently: a second run changes nothing and says so.
Subjects in the file are relative; a :class:`~polybus.common.subjects.Namespace` adds the
deployment's subject and stream prefixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from polybus.common.config import ConfigError, ConfigStruct, convert_section, read_toml
from polybus.common.subjects import Namespace, check_subject_pattern

NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]
Limit = Annotated[int, msgspec.Meta(ge=-1)]
Replicas = Annotated[int, msgspec.Meta(ge=1, le=5)]


class StreamDefinition(ConfigStruct, frozen=True):
    name: str
    subjects: tuple[str, ...]
    description: str = ""
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    max_age_s: NonNegativeSeconds = 0
    """0 = unlimited."""
    max_bytes: Limit = -1
    max_msgs: Limit = -1
    max_msgs_per_subject: Limit = -1
    duplicate_window_s: NonNegativeSeconds = 120
    discard: Literal["old", "new"] = "old"
    replicas: Replicas = 1


class ConsumerDefinition(ConfigStruct, frozen=True):
    durable: str
    stream: str = ""
    bucket: str = ""
    """Read a KV bucket's underlying stream (``KV_<bucket>``) instead of ``stream``: exactly one
    of the two is set. Such a consumer takes no ``filter_subjects``."""
    description: str = ""
    filter_subjects: tuple[str, ...] = ()
    deliver_policy: Literal["all", "new", "last", "last_per_subject"] = "all"
    ack_wait_s: Annotated[float, msgspec.Meta(gt=0)] = 30
    max_deliver: Limit = -1
    max_ack_pending: Annotated[int, msgspec.Meta(ge=1)] = 1000

    def server_stream(self, namespace: Namespace) -> str:
        """The server-side name of the stream this consumer reads."""
        return (
            namespace.bucket_stream(self.bucket) if self.bucket else namespace.stream(self.stream)
        )


class BucketDefinition(ConfigStruct, frozen=True):
    name: str
    description: str = ""
    history: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    ttl_s: NonNegativeSeconds = 0
    storage: Literal["file", "memory"] = "file"
    replicas: Replicas = 1


class Definitions(ConfigStruct, frozen=True):
    base: str = ""
    """Another streams file (relative to this one) whose definitions this file starts from:
    its entries come first, this file's are added after them."""
    replicas: Annotated[int, msgspec.Meta(ge=0, le=5)] = 0
    """Every stream and bucket at this many replicas, overriding their own ``replicas``
    (0 = each keeps its own). With ``base``, a cluster runs the shipped definitions at R3 from a
    two-line file: ``base = "streams.toml"`` and ``replicas = 3``."""
    stream: tuple[StreamDefinition, ...] = ()
    consumer: tuple[ConsumerDefinition, ...] = ()
    bucket: tuple[BucketDefinition, ...] = ()

    def stream_named(self, name: str) -> StreamDefinition:
        for stream in self.stream:
            if stream.name == name:
                return stream
        raise KeyError(f"no stream {name!r} is defined")

    def consumer_named(self, stream: str, durable: str) -> ConsumerDefinition:
        for consumer in self.consumer:
            if consumer.stream == stream and consumer.durable == durable:
                return consumer
        raise KeyError(f"no consumer {durable!r} on stream {stream!r} is defined")


def load_definitions(path: Path) -> Definitions:
    """Read and validate a streams file; a consumer must name a defined stream.

    Every problem is a :class:`ConfigError` naming the file and the entry. A file naming a
    ``base`` starts from that file's definitions; a top-level ``replicas`` sets every stream's
    and bucket's replica count.
    """
    return _load(path, ())


def _load(path: Path, seen: tuple[Path, ...]) -> Definitions:
    raw = read_toml(path, "streams file")
    try:
        definitions = convert_section(raw, Definitions)
        if definitions.base:
            base_path = (path.parent / definitions.base).resolve()
            if base_path in seen or base_path == path.resolve():
                raise ConfigError(f"base {definitions.base!r} includes itself")
            base = _load(base_path, (*seen, path.resolve()))
            definitions = msgspec.structs.replace(
                definitions,
                base="",
                replicas=definitions.replicas or base.replicas,
                stream=base.stream + definitions.stream,
                consumer=base.consumer + definitions.consumer,
                bucket=base.bucket + definitions.bucket,
            )
        if definitions.replicas:
            definitions = _with_replicas(definitions, definitions.replicas)
        _check(definitions)
    except ConfigError as error:
        raise ConfigError(f"streams file {path}: {error}") from None
    return definitions


def _with_replicas(definitions: Definitions, replicas: int) -> Definitions:
    return msgspec.structs.replace(
        definitions,
        stream=tuple(msgspec.structs.replace(s, replicas=replicas) for s in definitions.stream),
        bucket=tuple(msgspec.structs.replace(b, replicas=replicas) for b in definitions.bucket),
    )


def _check(definitions: Definitions) -> None:
    for kind, names in (
        ("stream", [s.name for s in definitions.stream]),
        ("bucket", [b.name for b in definitions.bucket]),
    ):
        for name in {n for n in names if names.count(n) > 1}:
            raise ConfigError(f"{kind} {name!r} is defined twice")
    _check_subjects(definitions)
    _check_consumers(definitions)


def _check_subjects(definitions: Definitions) -> None:
    for stream in definitions.stream:
        for subject in stream.subjects:
            try:
                check_subject_pattern(subject)
            except ValueError as error:
                raise ConfigError(f"stream {stream.name!r}: {error}") from None
    for consumer in definitions.consumer:
        for subject in consumer.filter_subjects:
            try:
                check_subject_pattern(subject)
            except ValueError as error:
                raise ConfigError(f"consumer {consumer.durable!r}: {error}") from None


def _check_consumers(definitions: Definitions) -> None:
    names = {stream.name for stream in definitions.stream}
    buckets = {bucket.name for bucket in definitions.bucket}
    for consumer in definitions.consumer:
        if bool(consumer.stream) == bool(consumer.bucket):
            raise ConfigError(
                f"consumer {consumer.durable!r} must name exactly one of stream and bucket"
            )
        if consumer.bucket:
            if consumer.bucket not in buckets:
                raise ConfigError(
                    f"consumer {consumer.durable!r} names undefined bucket {consumer.bucket!r}"
                )
            if consumer.filter_subjects:
                raise ConfigError(
                    f"consumer {consumer.durable!r} on bucket {consumer.bucket!r} "
                    "cannot filter subjects"
                )
        elif consumer.stream not in names:
            raise ConfigError(
                f"consumer {consumer.durable!r} names undefined stream {consumer.stream!r}"
            )


Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Change:
    kind: Literal["stream", "consumer", "bucket"]
    name: str
    action: Action
    differences: tuple[str, ...] = ()

    def describe(self) -> str:
        detail = f" ({', '.join(self.differences)})" if self.differences else ""
        return f"{self.kind} {self.name}: {self.action}{detail}"


def stream_config(definition: StreamDefinition, namespace: Namespace) -> api.StreamConfig:
    subjects = namespace.subjects
    return api.StreamConfig(
        name=namespace.stream(definition.name),
        description=definition.description or None,
        subjects=[subjects.stream_subjects(s) for s in definition.subjects],
        retention=api.RetentionPolicy(definition.retention),
        storage=api.StorageType(definition.storage),
        max_age=definition.max_age_s,
        max_bytes=definition.max_bytes,
        max_msgs=definition.max_msgs,
        max_msgs_per_subject=definition.max_msgs_per_subject,
        duplicate_window=definition.duplicate_window_s,
        discard=api.DiscardPolicy(definition.discard),
        num_replicas=definition.replicas,
    )


def consumer_config(definition: ConsumerDefinition, namespace: Namespace) -> api.ConsumerConfig:
    subjects = [namespace.subjects.stream_subjects(s) for s in definition.filter_subjects]
    return api.ConsumerConfig(
        durable_name=definition.durable,
        name=definition.durable,
        description=definition.description or None,
        deliver_policy=api.DeliverPolicy(definition.deliver_policy),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=definition.ack_wait_s,
        max_deliver=definition.max_deliver,
        max_ack_pending=definition.max_ack_pending,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
    )


def _same(desired: Any, actual: Any) -> bool:
    if isinstance(desired, float) or isinstance(actual, float):
        return math.isclose(float(desired or 0), float(actual or 0), abs_tol=1e-6)
    return bool(desired == actual)


def _differences(desired: Any, actual: Any, fields: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        name for name in fields if not _same(getattr(desired, name), getattr(actual, name))
    )


_STREAM_FIELDS = (
    "subjects",
    "description",
    "retention",
    "max_age",
    "max_bytes",
    "max_msgs",
    "max_msgs_per_subject",
    "duplicate_window",
    "discard",
    "num_replicas",
)
_CONSUMER_FIELDS = (
    "description",
    "deliver_policy",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
    "filter_subject",
    "filter_subjects",
)


async def _apply_stream(js: JetStreamContext, config: api.StreamConfig) -> Change:
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return Change("stream", config.name, "created")
    if info.config.storage != config.storage:
        raise ConfigError(
            f"stream {config.name} exists with storage {info.config.storage}; "
            "storage cannot change in place (delete the stream to recreate it)"
        )
    differences = _differences(config, info.config, _STREAM_FIELDS)
    if not differences:
        return Change("stream", config.name, "unchanged")
    await js.update_stream(config)
    return Change("stream", config.name, "updated", differences)


async def _apply_consumer(js: JetStreamContext, stream: str, config: api.ConsumerConfig) -> Change:
    assert config.durable_name is not None
    label = f"{stream}/{config.durable_name}"
    try:
        info = await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, config)
        return Change("consumer", label, "created")
    differences = _differences(config, info.config, _CONSUMER_FIELDS)
    if not differences:
        return Change("consumer", label, "unchanged")
    # Re-creating a durable with the same name updates its config on the server (2.10+).
    await js.add_consumer(stream, config)
    return Change("consumer", label, "updated", differences)


async def _apply_bucket(
    js: JetStreamContext, definition: BucketDefinition, namespace: Namespace
) -> Change:
    bucket = namespace.bucket(definition.name)
    config = api.KeyValueConfig(
        bucket=bucket,
        description=definition.description or None,
        history=definition.history,
        ttl=definition.ttl_s or None,
        storage=api.StorageType(definition.storage),
        replicas=definition.replicas,
    )
    try:
        info = await js.stream_info(f"KV_{bucket}")
    except NotFoundError:
        await js.create_key_value(config)
        return Change("bucket", bucket, "created")
    actual = info.config
    differences = tuple(
        name
        for name, desired, current in (
            ("history", definition.history, actual.max_msgs_per_subject),
            ("ttl", definition.ttl_s, actual.max_age or 0),
            ("description", definition.description or None, actual.description),
            ("num_replicas", definition.replicas, actual.num_replicas or 1),
        )
        if not _same(desired, current)
    )
    if not differences:
        return Change("bucket", bucket, "unchanged")
    # A KV bucket is a stream: update the stream's limits in place.
    actual.max_msgs_per_subject = definition.history
    actual.max_age = definition.ttl_s
    actual.description = definition.description or None
    actual.num_replicas = definition.replicas
    await js.update_stream(actual)
    return Change("bucket", bucket, "updated", differences)


async def apply(
    js: JetStreamContext, definitions: Definitions, namespace: Namespace
) -> list[Change]:
    """Create or update every stream, consumer and bucket; return what happened to each."""
    changes = [
        await _apply_stream(js, stream_config(stream, namespace)) for stream in definitions.stream
    ]
    changes += [
        await _apply_consumer(
            js, consumer.server_stream(namespace), consumer_config(consumer, namespace)
        )
        for consumer in definitions.consumer
        if not consumer.bucket
    ]
    changes += [await _apply_bucket(js, bucket, namespace) for bucket in definitions.bucket]
    # A consumer on a bucket's stream needs the bucket first.
    changes += [
        await _apply_consumer(
            js, consumer.server_stream(namespace), consumer_config(consumer, namespace)
        )
        for consumer in definitions.consumer
        if consumer.bucket
    ]
    return changes
