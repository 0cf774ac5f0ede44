"""Several processes of one service under `polybus up`: their names, arguments and settings."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from polybus.common.config import Config, load_config
from polybus.common.plugins import discover_plugins, section_types
from polybus.common.runtime import default_instance, replica_settings
from polybus.ingest.config import IngestSettings
from polybus.ingest.plugin import instances as ingest_instances
from polybus.strategy.config import StrategyServiceSettings
from polybus.strategy.plugin import instances as strategy_instances


def test_replicas_on_one_host_have_their_own_instance_names() -> None:
    # Without a configured instance every replica used the host name: one HEALTH key for all,
    # so `status` showed a dead replica as alive while another one beat.
    unset = StrategyServiceSettings()
    host = default_instance()
    names = [replica_settings(unset, k, metrics_port=0).instance for k in range(3)]
    assert names == [host, f"{host}-1", f"{host}-2"]
    named = IngestSettings(instance="ing", metrics_port=9101)
    assert [replica_settings(named, k, metrics_port=0).instance for k in (0, 2)] == [
        "ing",
        "ing-2",
    ]
    assert replica_settings(named, 2, metrics_port=0).metrics_port == 0


def _config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "polybus.toml"
    path.write_text(text)
    return load_config(path, section_types(discover_plugins()))


def test_one_ingest_is_the_child_ingest_and_several_are_ingest_k_given_their_replica(
    tmp_path: Path,
) -> None:
    assert ingest_instances(_config(tmp_path, "")) == [("ingest", [])]
    config = _config(tmp_path, "[ingest]\ninstances = 3\n")
    assert ingest_instances(config) == [
        ("ingest-0", ["--replica", "0"]),
        ("ingest-1", ["--replica", "1"]),
        ("ingest-2", ["--replica", "2"]),
    ]


def test_several_ingest_instances_split_the_markets_without_being_told() -> None:
    # Two ingests that both followed every market would publish every book twice, under two
    # epochs: more than one instance always leases the partitions.
    assert not IngestSettings().splits_markets
    assert IngestSettings(split_markets=True).splits_markets
    assert IngestSettings(instances=2).splits_markets


def test_an_instance_count_out_of_range_is_refused() -> None:
    for bad in (0, 65):
        with pytest.raises(msgspec.ValidationError, match="instances"):
            msgspec.convert({"instances": bad}, IngestSettings)


def test_strategy_replicas_are_children_strategy_name_k(tmp_path: Path) -> None:
    config = _config(tmp_path, "[strategy.spread_capture]\nreplicas = 2\n")
    assert strategy_instances(config) == [
        ("strategy-spread_capture-0", ["--name", "spread_capture", "--replica", "0"]),
        ("strategy-spread_capture-1", ["--name", "spread_capture", "--replica", "1"]),
    ]
