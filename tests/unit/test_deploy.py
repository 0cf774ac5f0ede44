"""deploy/compose.yaml: valid against the Compose Specification and true to the project."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml

from polybus.common.config import Deployment

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
SCHEMA = REPO / "tests" / "resources" / "schemas" / "compose-spec.json"
SCALABLE = ("ingest", "recorder")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    # The schema says draft-07 (its $schema URL lacks the trailing "#" jsonschema looks for).
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(compose)


def test_every_healthy_dependency_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_scalable_services_have_no_fixed_names_or_host_ports(compose: dict[str, Any]) -> None:
    for name in SCALABLE:
        service = compose["services"][name]
        assert "container_name" not in service
        assert "ports" not in service


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert ":" in image, f"{name} image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name} image {image!r} is not pinned"


def test_service_commands_name_a_valid_config_that_the_image_ships(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:1] != ["polybus"]:
            continue
        config = Path(command[command.index("--config") + 1])
        local = REPO / "config" / config.name
        assert config.parent == Path("/config"), name
        assert local.is_file(), f"{name} uses {config}, which config/ does not have"
        data = tomllib.loads(local.read_text())
        common = {k: v for k, v in data.items() if k in Deployment.__struct_fields__}
        deployment = msgspec.convert(common, Deployment)
        assert deployment.bus.url.startswith("nats://nats:")
        assert "timescaledb" in deployment.database.url


def test_prometheus_scrapes_every_scalable_service() -> None:
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert set(SCALABLE) <= jobs


def test_grafana_dashboard_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/polybus-overview.json").read_text())
    datasource = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text()
    )["datasources"][0]
    assert dashboard["panels"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}
    assert all(p["targets"][0]["expr"].count("polybus_") for p in dashboard["panels"])


def test_every_dashboard_metric_exists() -> None:
    import re

    from prometheus_client import REGISTRY

    import polybus.common.metrics
    import polybus.ingest.metrics
    import polybus.recorder.metrics  # noqa: F401 - registers the services' metrics

    known = {
        sample_name
        for metric in REGISTRY.collect()
        for sample_name in (metric.name, f"{metric.name}_total", f"{metric.name}_bucket")
    }
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/polybus-overview.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for name in re.findall(r"polybus_[a-z_]+", panel["targets"][0]["expr"])
    }
    assert used - known == set()


def test_every_secret_has_one_purpose(compose: dict[str, Any]) -> None:
    # Grafana's admin password is not the database's: leaking one must not give away the other.
    grafana = compose["services"]["grafana"]
    assert grafana["secrets"] == ["grafana_admin_password"]
    assert "grafana_admin_password" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    users = [
        name
        for name, s in compose["services"].items()
        if "postgres_password" in s.get("secrets", [])
    ]
    assert "grafana" not in users


def test_scaling_the_ingest_is_offered_only_where_its_instances_split_the_markets() -> None:
    # `--scale ingest=N` is safe because the compose config makes every ingest a lease member:
    # each market partition is followed by one of them at a time (tests/integration/
    # test_ingest_scale.py), over the LEASES bucket the streams file defines with a TTL.
    from polybus.common.config import BUILTIN_STREAMS_FILE
    from polybus.common.leases import LEASE_BUCKET
    from polybus.common.streams import load_definitions
    from polybus.ingest.config import IngestSettings

    for document in (REPO / "README.md", COMPOSE):
        assert "--scale ingest=" in document.read_text(), document
    data = tomllib.loads((REPO / "config" / "compose.toml").read_text())
    assert msgspec.convert(data["ingest"], IngestSettings).split_markets
    buckets = {b.name: b for b in load_definitions(BUILTIN_STREAMS_FILE).bucket}
    assert buckets[LEASE_BUCKET].ttl_s > 0
    assert buckets[LEASE_BUCKET].storage == "file"
