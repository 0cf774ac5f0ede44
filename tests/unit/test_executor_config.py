"""Executor settings: paper by default, risk limits as exact decimal amounts, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from polybus.common.config import ConfigError, load_config
from polybus.common.money import MICROS
from polybus.executor.config import ExecutorSettings, RiskLimits

SECOND = 1_000_000_000


def load(tmp_path: Path, text: str) -> ExecutorSettings:
    path = tmp_path / "executor.toml"
    path.write_text(text)
    return load_config(path, {"executor": ExecutorSettings}).section("executor", ExecutorSettings)


def test_defaults_are_paper_with_conservative_limits() -> None:
    settings = ExecutorSettings()
    assert settings.mode == "paper"
    assert settings.cancel_unknown_orders_on_reconcile
    limits = settings.risk.limits_for("any")
    assert limits.max_order_notional == 250 * MICROS
    assert limits.max_open_orders == 50
    assert limits.max_intent_age_ns == 5 * SECOND
    assert settings.risk.account_limits() == RiskLimits()


def test_amounts_are_decimal_strings_converted_exactly(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
[executor]
mode = "live"
venue_heartbeat_interval_s = 4

[executor.risk.strategy]
max_order_notional = "12.345678"
max_position_market_shares = "100"
daily_loss_stop = "0.000001"
max_intent_age_s = 0.5

[executor.risk.strategies.dutch]
max_order_notional = "unlimited"
max_open_orders = 3

[executor.risk.account]
max_notional_per_minute = "1000"
reject_burst_count = 20
reject_burst_window_s = 60
""",
    )
    assert settings.mode == "live"
    default = settings.risk.limits_for("spread")
    assert default.max_order_notional == 12_345_678
    assert default.max_position_market_shares == 100 * MICROS
    assert default.daily_loss_stop == 1
    assert default.max_intent_age_ns == SECOND // 2
    assert default.max_open_orders is None
    dutch = settings.risk.limits_for("dutch")
    assert dutch.max_order_notional is None
    assert dutch.max_open_orders == 3
    assert dutch.max_position_market_shares == 100 * MICROS  # inherited
    account = settings.risk.account_limits()
    assert account.max_notional_per_minute == 1000 * MICROS
    assert (account.reject_burst_count, account.reject_burst_window_ns) == (20, 60 * SECOND)


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("executor.risk.strategy", 'max_order_notional = "1e3"', "max_order_notional"),
        ("executor.risk.strategy", 'max_order_notional = "-1"', "max_order_notional"),
        ("executor.risk.strategy", 'max_order_notional = "0.1234567"', "max_order_notional"),
        ("executor.risk.strategy", "max_order_notional = 10.5", "max_order_notional"),
        ("executor.risk.strategy", "max_open_orders = -1", "max_open_orders"),
        ("executor.risk.strategy", "max_notional = 1", "max_notional"),
        ("executor.risk.strategies.mm", "daily_loss = 1", "daily_loss"),
        ("executor", 'mode = "real"', "mode"),
        ("executor", "venue_heartbeat_interval_s = 10", "venue_heartbeat_interval_s"),
    ],
)
def test_a_bad_value_fails_at_load_naming_its_key(
    tmp_path: Path, table: str, line: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        load(tmp_path, f"[{table}]\n{line}\n")
