"""Which markets the ingest follows: explicit lists plus discovery from Gamma, as MarketInfo.

Explicit condition ids, slugs and token ids are looked up on Gamma; discovery takes active,
order-book-enabled, open markets, filters them by tag and end date, ranks them by 24 h volume
or liquidity and keeps the top N. Markets that are closed, archived or not on the book are
never selected, so a refresh drops them (their books close, their sockets unsubscribe).

Gamma's numbers become micro-units by :func:`polybus.common.money.decimal_micros`'s one rule:
a tick size, minimum order size or fee rate that is not exact to the micro-unit is refused,
and so is its market (a warning ``markets.refused`` names it and the value); only volume and
liquidity, which merely rank markets, are rounded, toward zero. A market whose Gamma
``version`` is not one the executor can sign for is refused the same way.

A neg-risk market's event size (``neg_risk_market_count``) needs the event's markets, which
``/markets`` does not embed: the selected markets' events are read from ``GET /events`` in
batches. If that fails the count stays 0 (unknown, which strategies treat as incomplete) and
the selection goes on: market data must not wait for a figure only some strategies use.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import httpx
import msgspec
import structlog

from polybus.common.events import ExchangeVersion, MarketInfo, Outcome
from polybus.common.money import FixedPointError, decimal_micros, decimal_tick_size
from polybus.ingest.config import IngestSettings
from polybus.ingest.gamma import GammaClient, GammaEvent, GammaMarket

_log = structlog.get_logger("polybus.ingest.markets")
_DAY_NS = 86_400 * 1_000_000_000
_EXPLICIT_BATCH = 50
_EXCHANGE_VERSIONS: dict[str, ExchangeVersion] = {"": "2", "v1": "2", "v2": "3"}
"""Gamma ``version`` -> EIP-712 exchange domain (VENUE §0, §5.3). Objects from before Protocol
V2 carry no ``version``: they are CTF markets."""


class UnsupportedMarket(ValueError):
    """A market the executor could not trade correctly (an exchange version it cannot sign)."""


def _exact(value: Decimal | None, what: str) -> int:
    """A fact the books and orders depend on: exact, or the market is refused."""
    return 0 if value is None else decimal_micros(value, what=what, minimum=0)


def _figure(value: Decimal | None) -> int:
    """A figure that only ranks markets: rounded toward zero; absent or not finite is 0."""
    if value is None or not value.is_finite():
        return 0
    return decimal_micros(value, round_down=True)


def _end_ns(text: str) -> int:
    if not text:
        return 0
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return 0


def tradable(market: GammaMarket) -> bool:
    """On the CLOB, open, and with one token per outcome."""
    tokens = market.token_ids()
    return (
        market.enable_order_book
        and market.active
        and not market.closed
        and not market.archived
        and market.accepting_orders is not False
        and bool(market.condition_id)
        and len(tokens) >= 2
        and len(tokens) == len(market.outcome_names())
    )


def market_info(market: GammaMarket, now_ns: int, *, event_market_count: int = 0) -> MarketInfo:
    """Gamma's market as a polybus MarketInfo (fixed-point; event id from the content).
    ``event_market_count``: the open markets of its neg-risk event (0: unknown).

    Raises :class:`FixedPointError` for a tick size, minimum size or fee rate that is not an
    exact micro-unit value (or not one of the venue's tick sizes), :class:`UnsupportedMarket`
    for an unknown ``version``."""
    fee = market.fee_schedule
    tick = market.order_price_min_tick_size
    exchange_version = _EXCHANGE_VERSIONS.get(market.version)
    if exchange_version is None:
        raise UnsupportedMarket(f"Gamma version {market.version!r} is not v1 or v2")
    event = market.neg_risk_event()
    fields = {
        "condition_id": market.condition_id,
        "question": market.question,
        "slug": market.slug,
        "outcomes": tuple(
            Outcome(token_id=token, outcome=name)
            for token, name in zip(market.token_ids(), market.outcome_names(), strict=False)
        ),
        "tick_size": 0 if tick is None else decimal_tick_size(tick),
        "min_order_size": _exact(market.order_min_size, "orderMinSize"),
        "neg_risk": market.neg_risk,
        "neg_risk_market_id": market.group_id(),
        "fee_rate": _exact(fee.rate, "feeSchedule.rate")
        if fee is not None and market.fees_enabled is not False
        else 0,
        "fee_exponent": int(fee.exponent) if fee is not None and fee.exponent is not None else 1,
        "end_date_ns": _end_ns(market.end_date),
        "active": market.active,
        "closed": market.closed,
        "volume_24h": _figure(market.volume24hr),
        "liquidity": _figure(market.liquidity_num),
        "neg_risk_augmented": event is not None and event.neg_risk_augmented,
        "neg_risk_market_count": event_market_count if event is not None else 0,
        "exchange_version": exchange_version,
    }
    # The same facts give the same id, so a re-publication (or a second instance) dedups.
    digest = hashlib.blake2b(msgspec.json.encode(fields), digest_size=8).hexdigest()
    return MarketInfo(
        event_id=f"pm.market.{market.condition_id}.{digest}",
        ts_event=now_ns,
        ts_init=now_ns,
        **fields,  # type: ignore[arg-type]
    )


class MarketSelector:
    """Runs the selection the settings describe."""

    def __init__(self, settings: IngestSettings, gamma: GammaClient) -> None:
        self.settings = settings
        self.gamma = gamma

    async def select(self) -> list[MarketInfo]:
        """The markets to follow now, explicit ones first, then the discovered top N."""
        now_ns = time.time_ns()
        chosen: dict[str, GammaMarket] = {}
        for market in await self._explicit():
            if tradable(market):
                chosen.setdefault(market.condition_id, market)
        if self.settings.discover and self.settings.discover_top_n:
            for market in await self._discover(now_ns):
                chosen.setdefault(market.condition_id, market)
        sizes = await self._event_sizes(list(chosen.values()))
        infos = []
        for market in chosen.values():
            event = market.neg_risk_event()
            try:
                infos.append(
                    market_info(
                        market,
                        now_ns,
                        event_market_count=sizes.get(event.id, 0) if event is not None else 0,
                    )
                )
            except (FixedPointError, UnsupportedMarket) as error:
                # Rounding a tick or a minimum size would misprice orders and break the
                # venue hash; the market is left out, loudly.
                _log.warning("markets.refused", condition_id=market.condition_id, error=str(error))
        return infos

    async def _event_sizes(self, markets: list[GammaMarket]) -> dict[str, int]:
        """Open markets per neg-risk event id of ``markets`` (events Gamma did not return
        are left out)."""
        wanted = sorted({e.id for m in markets if (e := m.neg_risk_event()) is not None and e.id})
        events: list[GammaEvent] = []
        try:
            for start in range(0, len(wanted), _EXPLICIT_BATCH):
                ids = wanted[start : start + _EXPLICIT_BATCH]
                events.extend(await self.gamma.events({"id": ids, "limit": len(ids)}))
        except (httpx.HTTPError, msgspec.DecodeError) as error:
            _log.warning("markets.event_sizes_failed", events=len(wanted), error=repr(error))
            return {}
        asked = set(wanted)
        return {event.id: event.open_market_count() for event in events if event.id in asked}

    async def _explicit(self) -> list[GammaMarket]:
        settings = self.settings
        found: list[GammaMarket] = []
        lookups: list[tuple[str, tuple[str, ...], Callable[[GammaMarket, set[str]], bool]]] = [
            ("condition_ids", settings.condition_ids, lambda m, v: m.condition_id in v),
            ("slug", settings.slugs, lambda m, v: m.slug in v),
            ("clob_token_ids", settings.token_ids, lambda m, v: bool(set(m.token_ids()) & v)),
        ]
        for key, values, matches in lookups:
            for start in range(0, len(values), _EXPLICIT_BATCH):
                wanted = set(values[start : start + _EXPLICIT_BATCH])
                markets = await self.gamma.markets({key: sorted(wanted), "limit": len(wanted) * 4})
                # Filter here too: an older Gamma (or a double) may ignore a filter.
                found.extend(m for m in markets if matches(m, wanted))
        return found

    async def _discover(self, now_ns: int) -> list[GammaMarket]:
        settings = self.settings
        order = "volume24hr" if settings.discover_rank_by == "volume_24h" else "liquidityNum"
        candidates = await self.gamma.active_markets(
            order=order,
            page_size=settings.discover_page_size,
            max_pages=settings.discover_max_pages,
        )
        tags = {tag.lower() for tag in settings.discover_tags}
        earliest = now_ns + int(settings.discover_end_after_days * _DAY_NS)
        latest = now_ns + int(settings.discover_end_before_days * _DAY_NS)
        kept = []
        for market in candidates:
            if not tradable(market):
                continue
            if tags and not tags & market.tag_names():
                continue
            end = _end_ns(market.end_date)
            if settings.discover_end_after_days and end and end < earliest:
                continue
            if settings.discover_end_before_days and (not end or end > latest):
                continue
            kept.append(market)

        def rank(market: GammaMarket) -> Decimal:
            value = (
                market.volume24hr
                if settings.discover_rank_by == "volume_24h"
                else market.liquidity_num
            )
            return value if value is not None and value.is_finite() else Decimal(0)

        kept.sort(key=rank, reverse=True)
        return kept[: settings.discover_top_n]
