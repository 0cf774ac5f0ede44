"""Settings of the [executor] section of a deployment file: mode, risk limits, venue safety.

Money and share amounts are written as decimal strings (``"250"``, ``"12.5"``) so the file reads
like the venue's numbers, and are converted exactly to micro-units (:mod:`polybus.common.money`)
by :meth:`RiskLimitSettings.resolve`; a float never carries money. A bad amount fails at load
time naming its key.

Limits come in three tables (docs/executor.md):

- ``[executor.risk.strategy]``: the limits every strategy gets on its own (omitted keys: no
  limit);
- ``[executor.risk.strategies.<strategy_id>]``: per-strategy overrides of that table (omitted
  keys: the default; ``"unlimited"`` lifts a default);
- ``[executor.risk.account]``: the same limits over all strategies together (the account).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from polybus.common.config import ConfigStruct, Port, PositiveSeconds, ServiceSettings
from polybus.common.money import parse_micros

UNLIMITED = "unlimited"

Amount = Annotated[str, msgspec.Meta(pattern=r"^(unlimited|[0-9]+(\.[0-9]{1,6})?)$")]
"""A non-negative decimal amount (pUSD or shares) with at most six places, or ``unlimited``."""
Count = Annotated[int, msgspec.Meta(ge=0)]
NANOS_PER_SECOND = 1_000_000_000


def _micros(text: str | None, key: str) -> int | None:
    if text is None or text == UNLIMITED:
        return None
    return parse_micros(text, what=key, minimum=0)


def _nanos(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * NANOS_PER_SECOND)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Resolved limits of one scope in micro-units and ns; ``None`` means no limit."""

    max_position_market_shares: int | None = None
    max_position_market_notional: int | None = None
    max_position_total_shares: int | None = None
    max_position_total_notional: int | None = None
    max_order_notional: int | None = None
    max_notional_per_minute: int | None = None
    max_open_orders: int | None = None
    max_intent_age_ns: int | None = None
    reject_burst_count: int | None = None
    reject_burst_window_ns: int | None = None
    daily_loss_stop: int | None = None


class RiskLimitSettings(ConfigStruct, frozen=True):
    """One table of risk limits as written in the config. Every key may be omitted."""

    max_position_market_shares: Amount | None = None
    """Shares held plus open buys, over the outcomes of one market (condition id)."""
    max_position_market_notional: Amount | None = None
    """pUSD at cost of the same: held shares at their average price plus open buys."""
    max_position_total_shares: Amount | None = None
    max_position_total_notional: Amount | None = None
    max_order_notional: Amount | None = None
    """price x size of one order, pUSD."""
    max_notional_per_minute: Amount | None = None
    """Notional of accepted orders in any rolling 60 s, pUSD."""
    max_open_orders: Count | None = None
    max_intent_age_s: PositiveSeconds | None = None
    """An intent created (``ts_init``) longer ago than this is refused."""
    reject_burst_count: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """This many venue rejects within ``reject_burst_window_s`` open the breaker (a halt)."""
    reject_burst_window_s: PositiveSeconds | None = None
    daily_loss_stop: Amount | None = None
    """Loss (realised + unrealised, fees included) since UTC midnight that halts until the
    next UTC midnight, pUSD."""

    def resolve(self, key: str) -> RiskLimits:
        """These limits in micro-units and ns (``key`` names the table in errors)."""
        return RiskLimits(
            max_position_market_shares=_micros(
                self.max_position_market_shares, f"{key}.max_position_market_shares"
            ),
            max_position_market_notional=_micros(
                self.max_position_market_notional, f"{key}.max_position_market_notional"
            ),
            max_position_total_shares=_micros(
                self.max_position_total_shares, f"{key}.max_position_total_shares"
            ),
            max_position_total_notional=_micros(
                self.max_position_total_notional, f"{key}.max_position_total_notional"
            ),
            max_order_notional=_micros(self.max_order_notional, f"{key}.max_order_notional"),
            max_notional_per_minute=_micros(
                self.max_notional_per_minute, f"{key}.max_notional_per_minute"
            ),
            max_open_orders=self.max_open_orders,
            max_intent_age_ns=_nanos(self.max_intent_age_s),
            reject_burst_count=self.reject_burst_count,
            reject_burst_window_ns=_nanos(self.reject_burst_window_s),
            daily_loss_stop=_micros(self.daily_loss_stop, f"{key}.daily_loss_stop"),
        )

    def over(self, default: RiskLimitSettings) -> RiskLimitSettings:
        """This table as overrides of ``default``: each key set here wins, the rest inherit."""
        merged = {
            name: getattr(self, name) if getattr(self, name) is not None else getattr(default, name)
            for name in self.__struct_fields__
        }
        return RiskLimitSettings(**merged)


DEFAULT_STRATEGY_LIMITS = RiskLimitSettings(
    max_position_market_shares="5000",
    max_position_market_notional="1000",
    max_position_total_shares="50000",
    max_position_total_notional="5000",
    max_order_notional="250",
    max_notional_per_minute="2500",
    max_open_orders=50,
    max_intent_age_s=5.0,
    reject_burst_count=5,
    reject_burst_window_s=10.0,
    daily_loss_stop="250",
)
"""Conservative defaults for paper trading a small account; a live deployment sets its own."""


class RiskSettings(ConfigStruct, frozen=True):
    strategy: RiskLimitSettings = DEFAULT_STRATEGY_LIMITS
    strategies: dict[str, RiskLimitSettings] = msgspec.field(default_factory=dict)
    account: RiskLimitSettings = RiskLimitSettings()

    def limits_for(self, strategy_id: str) -> RiskLimits:
        """The limits one strategy trades under: its overrides over the default table."""
        override = self.strategies.get(strategy_id)
        if override is None:
            return self.strategy.resolve("executor.risk.strategy")
        return override.over(self.strategy).resolve(f"executor.risk.strategies.{strategy_id}")

    def account_limits(self) -> RiskLimits:
        """The limits over all strategies together."""
        return self.account.resolve("executor.risk.account")


class ExecutorSettings(ServiceSettings, frozen=True):
    """The executor: one per trading account (the venue's limits and heartbeat are per key)."""

    metrics_port: Port = 9104
    mode: Literal["paper", "live"] = "paper"
    """``live`` also needs the secrets file and the ``--live`` flag."""
    clob_url: str = "https://clob.polymarket.com"
    wallet: str = ""
    """The address orders are made for (live); empty: the signer's own address (an EOA)."""
    signature_type: Literal["EOA", "POLY_PROXY", "GNOSIS_SAFE", "POLY_1271"] = "EOA"
    """How the wallet signs (VENUE §2.2); checked against what the SDK infers at start."""
    user_ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/user"
    venue_heartbeat_interval_s: Annotated[float, msgspec.Meta(gt=0, le=8)] = 5.0
    """The venue cancels every order of the key 10 s after its last heartbeat (VENUE §3.4)."""
    cancel_unknown_orders_on_reconcile: bool = True
    """Cancel open orders the venue has and this executor does not know (always reported)."""
    risk: RiskSettings = RiskSettings()
