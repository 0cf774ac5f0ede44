"""Out of the box: `polybus up --config config/sim.toml`, as shipped, trades on paper by itself.

The checked-in file is copied into a fresh work directory with only its ports changed (free
ones, so the test runs beside anything else); within the wait below PostgreSQL holds intents
of both strategies (complete-set buys and quotes), the executor's order events and paper fills.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from polybus.common.infra import free_port
from tests.helpers import eventually, start_up, stop

REPO = Path(__file__).resolve().parents[2]
SIM_CONFIG = REPO / "config" / "sim.toml"
SIM_DEFAULT_PORT = 8080
WAIT_S = 90
"""The issue promises a minute; this allows for a loaded 2-core test machine."""


def shipped_config_on_free_ports(workdir: Path) -> tuple[Path, int]:
    """config/sim.toml with every fixed port replaced; returns the copy and PostgreSQL's port."""
    text = SIM_CONFIG.read_text()
    sim_port, postgres_port = free_port(), free_port()
    text = text.replace(f"127.0.0.1:{SIM_DEFAULT_PORT}", f"127.0.0.1:{sim_port}")
    text = re.sub(r"^(\w*metrics_port) = \d+", r"\1 = 0", text, flags=re.MULTILINE)
    ports = {
        "port": sim_port,
        "postgres_port": postgres_port,
        "nats_port": free_port(),
        "nats_monitor_port": free_port(),
    }
    for key, port in ports.items():
        text, count = re.subn(rf"^{key} = \d+", f"{key} = {port}", text, flags=re.MULTILINE)
        assert count == 1, f"config/sim.toml has no single {key} line to rewrite"
    assert str(SIM_DEFAULT_PORT) not in text
    config = workdir / "polybus.toml"
    config.write_text(text)
    return config, postgres_port


def test_the_shipped_sim_config_runs_both_strategies_against_mispricings_on_paper() -> None:
    config = tomllib.loads(SIM_CONFIG.read_text())
    assert config["venue"] == "sim"
    assert config["executor"]["mode"] == "paper"
    assert config["sim"]["mispricing_interval_s"] > 0
    assert {"dutch_book", "spread_capture"} <= set(config["strategy"])


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_polybus_up_with_the_sim_config_trades_on_paper_within_the_wait(
    workdir: Path,
) -> None:
    config, postgres_port = shipped_config_on_free_ports(workdir)
    started = time.monotonic()
    up = await start_up(config, workdir)
    seen: dict[str, float] = {}
    try:
        database: asyncpg.Connection | None = None

        async def trading_recorded() -> bool:
            nonlocal database
            if database is None:
                try:
                    database = await asyncpg.connect(
                        f"postgresql://postgres@127.0.0.1:{postgres_port}/polybus"
                    )
                except (OSError, asyncpg.PostgresError):
                    return False  # PostgreSQL still starting, or the schema not there yet
            try:
                counts = {
                    "dutch_book intents": await database.fetchval(
                        "SELECT count(*) FROM intents WHERE strategy_id = 'dutch_book'"
                        " AND reason LIKE 'complete_set.%'"
                    ),
                    "spread_capture quotes": await database.fetchval(
                        "SELECT count(*) FROM intents WHERE strategy_id = 'spread_capture'"
                        " AND reason LIKE 'quote.%'"
                    ),
                    "order events": await database.fetchval("SELECT count(*) FROM order_events"),
                    "paper fills": await database.fetchval("SELECT count(*) FROM fills"),
                }
            except asyncpg.UndefinedTableError:
                return False  # the migrations have not run yet
            for what, count in counts.items():
                if count and what not in seen:
                    seen[what] = time.monotonic() - started
            return len(seen) == len(counts)

        try:
            await eventually(
                trading_recorded,
                WAIT_S,
                "intents of both strategies, order events and a paper fill in PostgreSQL",
                poll=0.5,
            )
        except AssertionError:
            print_missing_strategy_log(workdir / "up.log", seen)
            raise
        finally:
            print("first seen after start (s):", {k: round(v, 1) for k, v in seen.items()})
            if database is not None:
                await database.close()
    finally:
        code = await stop(up)
    assert code == 0


def print_missing_strategy_log(log: Path, seen: dict[str, float]) -> None:
    """What the strategies that recorded nothing said: which events, and their last lines."""
    for strategy in ("dutch_book", "spread_capture"):
        if any(what.startswith(strategy) for what in seen):
            continue
        lines = [line for line in log.read_text().splitlines() if f"strategy-{strategy}" in line]
        print(f"strategy-{strategy}: {len(lines)} log lines; events:")
        print(Counter(re.sub(r'.*"event": "([^"]*)".*', r"\1", line) for line in lines))
        print("\n".join(lines[-30:]))
