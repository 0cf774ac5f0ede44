"""docs/operations.md: its Prometheus alert rules read only metrics and labels polybus exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import polybus.common.metrics
import polybus.executor.metrics
import polybus.ingest.metrics
import polybus.recorder.metrics
import polybus.strategy.metrics  # noqa: F401 - registers the services' metrics

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"
MARK = "<!-- alert-rules -->"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus adds to every scraped series (deploy/prometheus.yml)."""
EXPRESSION = re.compile(r"\b(polybus_[a-z_]+)(?:\{([^}]*)\})?")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Every series name the services export (as Prometheus sees it) -> its label names."""
    names: dict[str, set[str]] = {}
    for collector, metric_names in list(REGISTRY._collector_to_names.items()):
        labels = set(getattr(collector, "_labelnames", ()))
        for metric in collector.collect():
            if not metric.name.startswith("polybus_") or metric.name not in metric_names:
                continue
            for suffix in SUFFIXES[metric.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                names[metric.name + suffix] = labels | extra
    return names


def rules() -> list[dict[str, Any]]:
    text = DOC.read_text(encoding="utf-8")
    assert MARK in text, f"docs/operations.md has no {MARK}"
    match = re.match(r"\s*```yaml\n(.*?)^```", text.split(MARK, 1)[1], re.DOTALL | re.MULTILINE)
    assert match, f"no ```yaml block right after {MARK}"
    document = yaml.safe_load(match[1])
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_alert_rules_are_prometheus_rule_groups() -> None:
    found = rules()
    assert len(found) >= 20
    names = [rule["alert"] for rule in found]
    assert len(set(names)) == len(names), "two alerts with one name"
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["expr"], rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_reads_exported_metrics_and_their_labels(rule: dict[str, Any]) -> None:
    known = exported()
    expr = rule["expr"]
    used = EXPRESSION.findall(expr)
    assert used or "up{" in expr, f"{expr!r} reads no polybus metric"
    labels = set(TARGET_LABELS)
    for name, selector in used:
        assert name in known, f"{name} is not exported (counters end in _total)"
        labels |= known[name]
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
            assert label in known[name] | TARGET_LABELS, f"{name} has no label {label}"
    for grouping in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            assert label in labels, f"{rule['alert']} groups by {label}, which no series has"


def test_a_wrong_metric_name_would_be_caught() -> None:
    known = exported()
    assert "polybus_executor_rejects_total" in known
    assert "polybus_executor_rejects" not in known  # a counter is read with its _total
    assert known["polybus_ingest_lag_seconds_bucket"] >= {"le"}
    assert known["polybus_executor_halted"] == {"strategy", "switch"}
