"""The architecture's import rules hold in the code, not only by convention (STYLE §12).

A service never imports another service, and ``polybus.common`` imports no service: shared code
moves to ``libs/common``. Services reach each other only through the bus and through
``polybus.services`` entry points. Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PARTS = {
    path.name: path
    for path in [REPO / "libs" / "common", *sorted((REPO / "services").iterdir())]
    if (path / "src" / "polybus").is_dir()
}


def imported_parts(source: str) -> set[str]:
    """The ``polybus.<part>`` names a module imports (absolute imports only: we use no others)."""
    parts: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "polybus":
                names = [f"polybus.{alias.name}" for alias in node.names]
        parts.update(name.split(".")[1] for name in names if name.startswith("polybus."))
    return parts


def test_every_part_is_found() -> None:
    assert {"common", "sim", "ingest", "recorder"} <= set(PARTS)


@pytest.mark.parametrize("part", sorted(PARTS))
def test_a_part_imports_only_itself_and_common(part: str) -> None:
    allowed = {"common", part} if part != "common" else {"common"}
    offenders = {
        f"{module.relative_to(REPO)} imports polybus.{name}"
        for module in (PARTS[part] / "src").rglob("*.py")
        for name in imported_parts(module.read_text(encoding="utf-8")) - allowed
    }
    assert offenders == set()


def test_the_rule_catches_a_cross_service_import() -> None:
    # The checker itself must be able to fail: each import form is seen.
    source = (
        "import polybus.sim.server\n"
        "from polybus.ingest import engine\n"
        "from polybus import recorder\n"
        "def later():\n    from polybus.executor.risk import gate\n"
    )
    assert imported_parts(source) == {"sim", "ingest", "recorder", "executor"}
