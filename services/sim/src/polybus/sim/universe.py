"""The simulated market universe: binary markets and neg-risk events, derived from a seed.

Ids look like the venue's: condition, question and neg-risk market ids are ``0x`` + 64 hex,
token ids are 77-digit decimal strings, Gamma ids small decimal strings. A Protocol V2 market
has the venue's structured ids instead: its condition id is a 31-byte market id (module byte
``0x01``, bits 32..95 zero) padded with ``00``, and its outcomes are position ids, the market id
shifted left a byte plus the outcome index (so the 64 bits at 40..103 are zero, which is how
the SDK tells a position id from a CTF token id). Each is a hash of the
seed and the market's position, so a seed always yields the same universe (and a new market
created later gets ids nobody else has).
"""

from __future__ import annotations

import hashlib
import random
import re
from datetime import UTC, datetime, timedelta

import msgspec

from polybus.common.money import MICROS

_YES_NO = ("Yes", "No")
_BASE_DATE = datetime(2027, 1, 1, tzinfo=UTC)
_TOPICS = (
    "Bitcoin above {n}k on {date}",
    "Ethereum above {n}00 on {date}",
    "Fed cuts rates by {date}",
    "Team {n} wins the final",
    "Inflation below {n}.0% in {date}",
    "Candidate {n} leads the polls on {date}",
    "Storm {n} makes landfall by {date}",
    "Film {n} tops the box office on {date}",
)


class SimToken(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    outcome: str


class SimEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A Gamma event: one binary market, or the outcomes of a neg-risk event."""

    id: str
    slug: str
    ticker: str
    title: str
    neg_risk: bool
    neg_risk_market_id: str
    condition_ids: tuple[str, ...]


class SimMarket(msgspec.Struct, frozen=True, kw_only=True):
    """One market (condition) with its two tokens, YES first. Prices and sizes are micros.

    :meth:`polybus.sim.server.Simulator.markets` returns these with the current
    ``tick_size``/``active``/``closed`` state.
    """

    gamma_id: str
    condition_id: str
    question_id: str
    question: str
    slug: str
    description: str
    tokens: tuple[SimToken, SimToken]
    tick_size: int
    min_order_size: int
    neg_risk: bool
    neg_risk_market_id: str
    event_id: str
    group_item_title: str
    start_date: str
    end_date: str
    fee_rate: int
    """Taker fee rate in micro-units (0.07 -> 70_000), as MarketInfo carries it."""
    fee_exponent: int
    volume: int
    liquidity: int
    initial_price: int
    """The YES fair price the initial book is built around."""
    active: bool = True
    closed: bool = False
    winner: str = ""
    """The winning token id once resolved."""
    protocol_v2: bool = False
    """Outcomes are position ids traded on ExchangeV3 (Gamma ``version`` "v2")."""

    @property
    def yes(self) -> str:
        return self.tokens[0].token_id

    @property
    def no(self) -> str:
        return self.tokens[1].token_id


class Universe(msgspec.Struct, kw_only=True):
    markets: list[SimMarket]
    events: list[SimEvent]


def seeded_random(*parts: object) -> random.Random:
    """A generator for simulation (not secrets), seeded from the settings' seed and a purpose:
    each purpose gets its own stream, so adding draws to one does not shift another."""
    return random.Random(":".join(str(part) for part in parts))  # noqa: S311


def _digest(seed: int, *parts: object) -> bytes:
    text = ":".join(str(part) for part in (seed, *parts))
    return hashlib.sha256(text.encode()).digest()


def hex_id(seed: int, *parts: object) -> str:
    """``0x`` + 64 hex characters."""
    return "0x" + _digest(seed, *parts).hex()


def token_id(seed: int, *parts: object) -> str:
    """A 77-digit decimal string (a uint256 below 10**77, like the venue's token ids)."""
    value = int.from_bytes(_digest(seed, "token", *parts), "big")
    return str(10**76 + value % (9 * 10**76))


_BINARY_MODULE = 0x01


def protocol_v2_ids(seed: int, *parts: object) -> tuple[str, str, str]:
    """(condition id, YES position id, NO position id) of a Protocol V2 binary market."""
    digest = _digest(seed, "protocol-v2", *parts)
    high, low = int.from_bytes(digest[:18], "big"), int.from_bytes(digest[18:22], "big")
    market_id = (_BINARY_MODULE << 240) | (high << 96) | low
    condition_id = "0x" + f"{market_id:062x}" + "00"
    return condition_id, str(market_id << 8), str((market_id << 8) | 1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fair_price(rng: random.Random) -> int:
    """A YES fair price: mostly mid-range, some near the extremes (where ticks change)."""
    roll = rng.random()
    if roll < 0.06:
        value = rng.uniform(0.015, 0.05)
    elif roll < 0.12:
        value = rng.uniform(0.95, 0.985)
    else:
        value = rng.betavariate(2.0, 2.0) * 0.8 + 0.1
    return round(value * 1000) * 1000


def _initial_tick(rng: random.Random, fair: int) -> int:
    if fair < 40_000 or fair > 960_000 or rng.random() < 0.15:
        return 1_000
    return 10_000


class _Builder:
    def __init__(
        self, seed: int, min_order_size: int, fee_rate: int = 0, fee_exponent: int = 1
    ) -> None:
        self.seed = seed
        self.min_order_size = min_order_size * MICROS
        self.fee_rate = fee_rate
        self.fee_exponent = fee_exponent
        self.rng = seeded_random(seed, "universe")
        self.markets: list[SimMarket] = []
        self.events: list[SimEvent] = []

    def market(
        self,
        *,
        index: int,
        question: str,
        fair: int,
        event_id: str,
        neg_risk_market_id: str = "",
        group_item_title: str = "",
        protocol_v2: bool = False,
    ) -> SimMarket:
        rng, seed = self.rng, self.seed
        condition_id = hex_id(seed, "condition", index)
        yes_id, no_id = token_id(seed, index, 0), token_id(seed, index, 1)
        if protocol_v2:
            condition_id, yes_id, no_id = protocol_v2_ids(seed, index)
        start = _BASE_DATE - timedelta(days=rng.randint(1, 60))
        end = _BASE_DATE + timedelta(days=rng.randint(1, 365), hours=rng.randint(0, 23))
        # As the venue's: lower-case letters, digits and single hyphens (no "?" or "$").
        words = question.lower().replace("%", "pct").replace(".", "")
        slug = re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:60].rstrip("-")
        return SimMarket(
            gamma_id=str(1_000_000 + index),
            condition_id=condition_id,
            question_id=hex_id(seed, "question", index),
            question=question,
            slug=f"{slug}-{index}",
            description=f'This simulated market resolves to "Yes" if {question.lower()}.',
            tokens=(
                SimToken(token_id=yes_id, outcome=_YES_NO[0]),
                SimToken(token_id=no_id, outcome=_YES_NO[1]),
            ),
            tick_size=_initial_tick(rng, fair),
            min_order_size=self.min_order_size,
            neg_risk=bool(neg_risk_market_id),
            neg_risk_market_id=neg_risk_market_id,
            event_id=event_id,
            group_item_title=group_item_title,
            start_date=_iso(start),
            end_date=_iso(end),
            fee_rate=self.fee_rate,
            fee_exponent=self.fee_exponent,
            volume=int(rng.lognormvariate(11, 2)) * MICROS,
            liquidity=int(rng.lognormvariate(10, 1.5)) * MICROS,
            initial_price=fair,
            protocol_v2=protocol_v2,
        )

    def question(self, index: int) -> str:
        template = _TOPICS[index % len(_TOPICS)]
        date = (_BASE_DATE + timedelta(days=index % 365)).strftime("%B %d")
        return template.format(n=index % 97 + 3, date=date)

    def binary(self, index: int, *, protocol_v2: bool = False) -> None:
        event_id = str(100_000 + index)
        market = self.market(
            index=index,
            question=self.question(index),
            fair=_fair_price(self.rng),
            event_id=event_id,
            protocol_v2=protocol_v2,
        )
        self.markets.append(market)
        self.events.append(
            SimEvent(
                id=event_id,
                slug=market.slug,
                ticker=market.slug,
                title=market.question,
                neg_risk=False,
                neg_risk_market_id="",
                condition_ids=(market.condition_id,),
            )
        )

    def neg_risk_event(self, event_index: int, first_market_index: int, outcomes: int) -> None:
        rng = self.rng
        event_id = str(200_000 + event_index)
        neg_risk_market_id = hex_id(self.seed, "neg-risk", event_index)
        weights = [rng.gammavariate(1.2, 1.0) for _ in range(outcomes)]
        total = sum(weights)
        title = f"Who wins contest {event_index + 1}?"
        condition_ids = []
        for offset, weight in enumerate(weights):
            fair = min(max(round(weight / total * 1000) * 1000, 5_000), 985_000)
            name = f"Contender {chr(ord('A') + offset % 26)}{offset // 26 or ''}"
            market = self.market(
                index=first_market_index + offset,
                question=f"Will {name} win contest {event_index + 1}?",
                fair=fair,
                event_id=event_id,
                neg_risk_market_id=neg_risk_market_id,
                group_item_title=name,
            )
            self.markets.append(market)
            condition_ids.append(market.condition_id)
        slug = f"who-wins-contest-{event_index + 1}"
        self.events.append(
            SimEvent(
                id=event_id,
                slug=slug,
                ticker=slug,
                title=title,
                neg_risk=True,
                neg_risk_market_id=neg_risk_market_id,
                condition_ids=tuple(condition_ids),
            )
        )


def build_universe(
    *,
    seed: int,
    binary_markets: int,
    neg_risk_events: int,
    outcomes_per_event: int,
    min_order_size: int,
    fee_rate: int = 0,
    fee_exponent: int = 1,
    protocol_v2_markets: int = 0,
) -> Universe:
    """The markets and events of a seed: binary markets first, then neg-risk outcomes, then
    the Protocol V2 binary markets. ``fee_rate`` (micro-units) and ``fee_exponent`` are every
    market's taker fee schedule."""
    builder = _Builder(seed, min_order_size, fee_rate, fee_exponent)
    for index in range(binary_markets):
        builder.binary(index)
    next_index = binary_markets
    for event_index in range(neg_risk_events):
        builder.neg_risk_event(event_index, next_index, outcomes_per_event)
        next_index += outcomes_per_event
    for index in range(next_index, next_index + protocol_v2_markets):
        builder.binary(index, protocol_v2=True)
    return Universe(markets=builder.markets, events=builder.events)


def new_market(
    seed: int, index: int, min_order_size: int, fee_rate: int = 0, fee_exponent: int = 1
) -> tuple[SimMarket, SimEvent]:
    """A market created after start (``new_market``), with ids derived from its index."""
    builder = _Builder(seed + 7919 * (index + 1), min_order_size, fee_rate, fee_exponent)
    builder.binary(index)
    return builder.markets[0], builder.events[0]
