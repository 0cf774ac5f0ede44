"""docs/configuration.md is generated from the config Structs and committed: it cannot drift."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import msgspec

from polybus.common.config import BusConfig, Secrets
from polybus.common.config_docs import COMMAND, render
from polybus.common.plugins import discover_plugins

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"


def test_the_committed_reference_is_what_the_structs_generate() -> None:
    expected, committed = render(), DOC.read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            "docs/configuration.md (committed)",
            "generated from the Structs",
            n=1,
        )
    )
    assert not diff, f"docs/configuration.md is out of date: run {COMMAND}\n{diff[:4000]}"


def rows(text: str, section: str) -> dict[str, list[str]]:
    """The table under the heading of ``section``: key -> [type, default, description]."""
    match = re.search(rf"^#+ {re.escape(section)}\n(.*?)(?=^#|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no section {section}"
    found = {}
    for line in match[1].splitlines():
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        if len(cells) == 4 and cells[0].strip().startswith("`"):
            found[cells[0].strip().strip("`")] = [cell.strip() for cell in cells[1:]]
    return found


def test_every_key_of_every_section_is_there_with_its_type_default_and_docstring() -> None:
    text = render()
    bus = rows(text, "`[bus]`")
    assert set(bus) == set(BusConfig.__struct_fields__)
    assert bus["partitions"][:2] == ["int (≥ 1, ≤ 4096)", "`16`"]
    assert bus["url"][2] == "nats:// URL(s), comma separated. Empty: use the embedded nats-server."
    for name, plugin in discover_plugins().items():
        table = rows(text, f"`[{name}]`")
        scalar = {
            field.name
            for field in msgspec.structs.fields(plugin.settings_type)
            if not isinstance(field.default, msgspec.Struct) and field.default is not None
        }
        assert scalar <= set(table), f"[{name}] lacks {sorted(scalar - set(table))}"
        assert table["metrics_port"][1] == f"`{plugin.settings_type().metrics_port}`"
    # A nested table takes its defaults from the default instance, not from its class.
    assert rows(text, "`[executor.risk.strategy]`")["max_order_notional"][1] == '`"250"`'
    assert rows(text, "`[executor.risk.account]`")["max_order_notional"][1] == "unset"
    assert "`[executor.risk.strategies.<key>]`" in text
    assert set(rows(text, "`[polymarket]`")) == set(Secrets().polymarket.__struct_fields__)
    assert rows(text, "`[polymarket]`")["private_key"][:2] == ["secret str", "unset"]


def test_a_strategy_table_has_its_own_settings_and_the_runtime_keys() -> None:
    table = rows(render(), "`[strategy.dutch_book]`")
    assert {"min_edge_ticks", "replicas", "enabled", "metrics_port"} <= set(table)
    assert table["one_legged_policy"][0] == '"hedge" \\| "unwind"'
