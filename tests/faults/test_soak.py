"""A short seeded soak (bench/soak.py) as CI runs it: random faults for two minutes on the whole
system, then its invariants; the soak exits 0 only if it recovered from every fault and every
invariant holds (every MD/EXEC/INTENT sequence recorded, no duplicate row, no intent placed
twice, every service healthy)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
MINUTES = 2
SEED = 3
"""Any seed: every kind of fault comes up once before any twice, as time allows."""


async def test_a_short_seeded_soak_survives_every_fault_it_injects(tmp_path: Path) -> None:
    summary_file = tmp_path / "soak.json"
    soak = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.soak", "--minutes", str(MINUTES), "--seed", str(SEED),
        "--json", str(summary_file), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await soak.communicate()
    finally:
        if soak.returncode is None:  # the test timed out: the soak stops what it started
            soak.send_signal(signal.SIGTERM)
            await soak.wait()
    printed = output.decode()
    print(printed[-6000:])
    assert soak.returncode == 0, printed[-4000:]
    summary = json.loads(summary_file.read_text())
    assert summary["verdict"] == "survived"
    survived = summary["faults"]
    assert sum(figures["count"] for figures in survived.values()) >= 4, survived
    assert set(summary["invariants"].values()) == {"ok"}, summary["invariants"]
    assert len(summary["invariants"]) == 5, summary["invariants"]
