"""Complete sets: the groups of outcome tokens of which exactly one pays 1 pUSD at resolution.

A binary market's two tokens are one. A neg-risk event's YES tokens, one per market, are one
too, but only when the set really is complete:

- an **augmented** event (Gamma ``negRiskAugmented``) also has placeholder outcomes and an
  "Other" outcome whose meaning changes as placeholders are named (VENUE §3.6: trade only the
  named outcomes). Its named outcomes' YES asks summing below 1 is the probability the
  placeholders carry, not an arbitrage: such an event never forms a set;
- every market of the event must be known. The ingest follows markets one by one, so a
  view may hold three of an event's ten markets, whose YES asks also sum below 1. The event's
  size comes from ``MarketInfo.neg_risk_market_count``; while it is unknown (0) the event forms
  a set only if the strategy is told to trust the markets it sees (``require_event_size``
  off, for deployments that follow whole events, like the simulator's).
"""

from __future__ import annotations

from dataclasses import dataclass

from polybus.common.book_view import BookView
from polybus.common.events import MarketInfo


@dataclass(frozen=True, slots=True)
class CompleteSet:
    """Tokens of which exactly one pays 1 at resolution, with the market of each (its fees)."""

    key: str
    """The condition id of a binary market, or the neg-risk event id."""
    assets: tuple[str, ...]
    markets: tuple[MarketInfo, ...]


def binary_set(market: MarketInfo) -> CompleteSet | None:
    """A two-outcome market's tokens, or None for any other shape."""
    if len(market.outcomes) != 2:
        return None
    return CompleteSet(
        key=market.condition_id,
        assets=tuple(outcome.token_id for outcome in market.outcomes),
        markets=(market, market),
    )


def yes_token(market: MarketInfo) -> str | None:
    """The token of a market's "Yes" outcome (a neg-risk market's share of its event)."""
    for outcome in market.outcomes:
        if outcome.outcome.strip().lower() == "yes":
            return outcome.token_id
    return None


class EventIndex:
    """The markets of each neg-risk event the view knows, by event id.

    Rebuilt from the view's markets on :meth:`refresh` (the strategy's timer) and whenever an
    event is asked for that the index does not hold: scanning thousands of markets on every book
    event would cost more than the arbitrage it finds.
    """

    def __init__(self) -> None:
        self._members: dict[str, tuple[str, ...]] = {}

    def refresh(self, view: BookView) -> None:
        members: dict[str, list[str]] = {}
        for market in view.markets():
            if market.neg_risk and market.neg_risk_market_id:
                members.setdefault(market.neg_risk_market_id, []).append(market.condition_id)
        self._members = {event: tuple(ids) for event, ids in members.items()}

    def members(self, view: BookView, market: MarketInfo) -> tuple[str, ...]:
        event = market.neg_risk_market_id
        found = self._members.get(event, ())
        if market.condition_id not in found:
            self.refresh(view)
            found = self._members.get(event, ())
        return found


def event_set(
    view: BookView, market: MarketInfo, index: EventIndex, *, require_event_size: bool
) -> CompleteSet | None:
    """The YES tokens of the neg-risk event ``market`` belongs to, if they form a complete set."""
    if not market.neg_risk or not market.neg_risk_market_id:
        return None
    markets: list[MarketInfo] = []
    for condition_id in index.members(view, market):
        member = view.market(condition_id)
        if member is None or member.neg_risk_augmented or member.closed or not member.active:
            return None
        markets.append(member)
    if not markets:
        return None
    expected = max(member.neg_risk_market_count for member in markets)
    if (expected or require_event_size) and len(markets) != expected:
        return None
    tokens = [yes_token(member) for member in markets]
    assets = tuple(token for token in tokens if token is not None)
    if len(assets) != len(markets) or len(assets) < 2:
        return None
    return CompleteSet(key=market.neg_risk_market_id, assets=assets, markets=tuple(markets))
