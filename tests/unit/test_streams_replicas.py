"""Replica counts in a streams file: per bucket, and for everything at once via `base`."""

from __future__ import annotations

from pathlib import Path

import pytest

from polybus.common.config import ConfigError
from polybus.common.streams import load_definitions

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "streams.toml"
CLUSTER = REPO / "config" / "streams.cluster.toml"


def test_a_bucket_takes_replicas_like_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[bucket]]\nname = "B"\nreplicas = 3\n[[bucket]]\nname = "C"\n')
    buckets = load_definitions(path).bucket
    assert [(b.name, b.replicas) for b in buckets] == [("B", 3), ("C", 1)]


@pytest.mark.parametrize("replicas", [0, 6])
def test_bucket_replicas_out_of_range_is_refused(tmp_path: Path, replicas: int) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f'[[bucket]]\nname = "B"\nreplicas = {replicas}\n')
    with pytest.raises(ConfigError, match="replicas"):
        load_definitions(path)


def test_the_cluster_file_is_the_shipped_definitions_at_r3() -> None:
    shipped = load_definitions(SHIPPED)
    cluster = load_definitions(CLUSTER)
    assert shipped.stream
    assert shipped.bucket
    assert {s.replicas for s in shipped.stream} | {b.replicas for b in shipped.bucket} == {1}
    assert {s.replicas for s in cluster.stream} | {b.replicas for b in cluster.bucket} == {3}
    assert [s.name for s in cluster.stream] == [s.name for s in shipped.stream]
    assert [b.name for b in cluster.bucket] == [b.name for b in shipped.bucket]
    assert cluster.consumer == shipped.consumer
    # Everything but the replica count is the shipped definition itself.
    for mine, theirs in zip(cluster.stream, shipped.stream, strict=True):
        assert mine.subjects == theirs.subjects
        assert mine.max_bytes == theirs.max_bytes


def test_a_base_file_adds_its_own_entries_after_the_base(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text('[[stream]]\nname = "A"\nsubjects = ["a.>"]\n')
    (tmp_path / "s.toml").write_text(
        'base = "base.toml"\n[[stream]]\nname = "B"\nsubjects = ["b.>"]\nreplicas = 2\n'
    )
    streams = load_definitions(tmp_path / "s.toml").stream
    assert [(s.name, s.replicas) for s in streams] == [("A", 1), ("B", 2)]


def test_a_name_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text('[[stream]]\nname = "A"\nsubjects = ["a.>"]\n')
    (tmp_path / "s.toml").write_text(
        'base = "base.toml"\n[[stream]]\nname = "A"\nsubjects = ["b.>"]\n'
    )
    with pytest.raises(ConfigError, match="stream 'A' is defined twice"):
        load_definitions(tmp_path / "s.toml")


def test_a_base_that_includes_itself_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ConfigError, match="includes itself"):
        load_definitions(tmp_path / "a.toml")


def test_a_missing_base_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('base = "nope.toml"\nreplicas = 3\n')
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_definitions(tmp_path / "s.toml")
