"""Subjects and the partition function."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polybus.common.subjects import Namespace, Subjects, check_subject_pattern, partition_of

ASSET = "76670567130917723816490572615540605537878462672464291990940067659127658071111"
CONDITION = "0x285746de0e4f751fd4dc8f9dc2cecd0101ba9ad0096a43145ed9643b09514f01"


def test_market_data_subjects() -> None:
    subjects = Subjects()
    assert subjects.book(3, ASSET) == f"md.polymarket.3.book.{ASSET}"
    assert subjects.delta(3, ASSET) == f"md.polymarket.3.delta.{ASSET}"
    assert subjects.status(3, ASSET) == f"md.polymarket.3.status.{ASSET}"
    assert subjects.trade(3, ASSET) == f"md.polymarket.3.trade.{ASSET}"
    assert subjects.market(3, CONDITION) == f"md.polymarket.3.market.{CONDITION}"
    assert subjects.market_data_all() == "md.polymarket.>"
    assert subjects.market_data_partition(3) == "md.polymarket.3.>"
    assert subjects.market_data_kind("book") == "md.polymarket.*.book.*"
    assert subjects.snapshot_request(ASSET) == f"md.snapshot.{ASSET}"


def test_order_and_control_subjects() -> None:
    subjects = Subjects()
    assert subjects.intent("mm", CONDITION) == f"intent.mm.{CONDITION}"
    assert subjects.execution("mm", "fill", CONDITION) == f"exec.mm.fill.{CONDITION}"
    assert subjects.execution_all("mm") == "exec.mm.>"
    assert subjects.control("halt") == "ctl.halt"
    assert subjects.dead_letter("ingest") == "dlq.ingest"


def test_a_prefix_moves_every_subject_aside() -> None:
    subjects = Subjects("replay")
    assert subjects.book(0, ASSET) == f"replay.md.polymarket.0.book.{ASSET}"
    assert subjects.stream_subjects("md.polymarket.>") == "replay.md.polymarket.>"


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "a b", "a\r\nPUB x", "a\x00b", "é"])
def test_ids_that_would_break_routing_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid NATS subject token"):
        Subjects().book(0, bad)


def test_namespace_prefixes_streams_and_buckets() -> None:
    namespace = Namespace("t1", "T1_")
    assert namespace.stream("MD") == "T1_MD"
    assert namespace.bucket("HEALTH") == "T1_HEALTH"
    assert namespace.subjects.control("halt") == "t1.ctl.halt"


def test_partition_has_fixed_known_values() -> None:
    # Fixed vectors: changing the hash would move every market to another partition.
    assert partition_of(CONDITION, 16) == 14
    assert (
        partition_of("0x311d0c4b6671ab54af4970c06fcf58662516f5168997bdda209ec3db5aa6b0c1", 16) == 2
    )


def test_partition_is_stable_across_processes() -> None:
    # A fresh interpreter has a different hash() salt; the partition must not change.
    code = (
        f"from polybus.common.subjects import partition_of; print(partition_of({CONDITION!r}, 16))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert int(out.stdout) == partition_of(CONDITION, 16)


@given(st.text(), st.integers(min_value=1, max_value=4096))
def test_partition_is_in_range(key: str, partitions: int) -> None:
    assert 0 <= partition_of(key, partitions) < partitions


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="partitions"):
        partition_of("x", 0)


@pytest.mark.parametrize(
    "pattern", ["md.polymarket.*.trade.>", ">", "*", "ctl.halt", f"md.polymarket.3.book.{ASSET}"]
)
def test_valid_patterns_pass_unchanged(pattern: str) -> None:
    assert check_subject_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "empty"),
        ("foo bar", "whitespace"),  # nats-py would subscribe to foo in queue group bar
        (" md.>", "whitespace"),
        ("a..b", "empty token"),  # the server would refuse it and the client reconnect forever
        ("a.", "empty token"),
        ("a.>.b", "'>' is allowed only as the last token"),
        ("md.trade*", "token 'trade*'"),
        ("md.\r\nPUB", "token"),  # a control character could inject a protocol line
        ("md.é", "token"),
    ],
)
def test_malformed_patterns_are_refused_naming_the_problem(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"subject|empty") as raised:
        check_subject_pattern(pattern)
    assert problem in str(raised.value)


@given(st.lists(st.sampled_from(["md", "polymarket", "7", "*", "book"]), min_size=1, max_size=6))
def test_every_subject_the_builders_make_is_a_valid_pattern(tokens: list[str]) -> None:
    assert check_subject_pattern(".".join(tokens))
    assert check_subject_pattern(Subjects("pre").market_data_kind("trade"))
