"""Faults on demand: the venue's failure modes, switched on by tests, ``/admin`` or config.

Socket faults act on open WebSockets (``socket_id`` None = all of the channel): a silent stall
(data stops, ``PONG`` continues), an abrupt disconnect (TCP abort, no close frame), a dropped
``price_change`` (the next one touching an asset is never sent), a crossed-book burst, an
array frame with a malformed or unknown element next to a valid ``book``, and a tick-size
change. HTTP faults act on CLOB REST (never on ``/admin``): a matching-engine restart window
(425 on order endpoints, then post-only mode), post-only / cancel-only / trading-disabled modes
(503 with the venue's bodies), a burst of 429s with ``Retry-After``, and slow responses.
Settlement faults make the next trades end FAILED instead of CONFIRMED, or go through
RETRYING first (then CONFIRMED or FAILED). A taker delay holds a market's marketable orders
(``delayed``) for a while before they match. A lost order response accepts the next order(s)
and then holds the HTTP response past any client timeout, or drops the connection, so the
client cannot know the outcome (VENUE.md §9 H14).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiohttp import web

from polybus.common.money import TICK_SIZES
from polybus.sim.clock import Clock
from polybus.sim.exchange import Exchange
from polybus.sim.http_util import error_response
from polybus.sim.injections import Injections
from polybus.sim.market_ws import MarketHub, SocketRegistry, WholeFrame

_log = structlog.get_logger("polybus.sim.faults")

RESTARTING_BODY = "service not ready"
POST_ONLY_BODY = "post-only mode: only post-only orders and cancels are allowed"
CANCEL_ONLY_BODY = (
    "Trading is currently cancel-only. New orders are not accepted, but cancels are allowed."
)
DISABLED_BODY = "Trading is currently disabled. Check polymarket.com for updates"
RATE_LIMITED_BODY = "Too Many Requests"

OrderKind = Literal["order", "post_only_order", "cancel"]
FrameKind = Literal["malformed", "unknown", "invalid_json"]
SettlementEnd = Literal["CONFIRMED", "FAILED"]
LostResponseMode = Literal["hold", "drop"]


@dataclass(frozen=True)
class LostResponse:
    """How an accepted order's response is lost: held ``hold_s`` (then sent, to nobody), or
    the connection dropped without an answer."""

    mode: LostResponseMode
    hold_s: float


@dataclass
class _Window:
    until: float = 0.0

    def active(self, now: float) -> bool:
        return now < self.until

    def remaining(self, now: float) -> int:
        return max(math.ceil(self.until - now), 1)


class Faults:
    """The fault switches. The same operations back ``POST /admin/faults/<name>``."""

    def __init__(
        self,
        *,
        exchange: Exchange,
        registry: SocketRegistry,
        market_hub: MarketHub,
        injections: Injections,
        post_only_after_restart_s: float,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._exchange = exchange
        self._registry = registry
        self._market_hub = market_hub
        self._injections = injections
        self._post_only_after_restart_s = post_only_after_restart_s
        self._restart = _Window()
        self._post_only = _Window()
        self._cancel_only = _Window()
        self._disabled = _Window()
        self._rate_limited_requests = 0
        self._rate_limit_retry_after_s = 1
        self._slow_ms = 0
        self._slow_until = math.inf
        self._slow_requests: int | None = None
        self.failed_settlements = 0
        """Trades still to fail (the settlement lifecycle takes them)."""
        self._retrying_settlements: list[SettlementEnd] = []
        self._lost_responses: list[LostResponse] = []

    # -- sockets -------------------------------------------------------------------------------
    def stall(self, socket_id: int | None = None, channel: str = "market") -> list[int]:
        """Silent stall: the socket keeps answering ``PING`` but gets no more data."""
        sockets = self._registry.select(channel, socket_id)
        for socket in sockets:
            socket.stalled = True
        _log.info("fault.stall", sockets=[s.id for s in sockets])
        return [socket.id for socket in sockets]

    def unstall(self, socket_id: int | None = None, channel: str = "all") -> list[int]:
        sockets = self._registry.select(channel, socket_id)
        for socket in sockets:
            socket.stalled = False
        return [socket.id for socket in sockets]

    def disconnect(self, socket_id: int | None = None, channel: str = "all") -> list[int]:
        """Abrupt disconnect: the TCP connection is aborted without a close frame."""
        sockets = self._registry.select(channel, socket_id)
        for socket in sockets:
            socket.abort()
        _log.info("fault.disconnect", sockets=[s.id for s in sockets])
        return [socket.id for socket in sockets]

    def drop_next_price_change(self, asset_id: str) -> None:
        """The next ``price_change`` touching ``asset_id`` is not sent to anyone (a gap)."""
        if asset_id not in self._exchange.tokens:
            raise KeyError(asset_id)
        self._market_hub.drop_next.add(asset_id)

    def crossed_burst(self, condition_id: str = "", duration_ms: int = 300) -> str:
        """A burst of price changes that leaves the book crossed for ``duration_ms``."""
        state = (
            self._exchange.markets[condition_id]
            if condition_id
            else next(
                s
                for s in self._exchange.markets.values()
                if not s.info.closed and s.book.bid_prices
            )
        )
        self._injections.crossed(state.book, duration_ms=duration_ms)
        return state.info.condition_id

    def inject_frame(
        self, kind: FrameKind = "malformed", socket_id: int | None = None
    ) -> list[int]:
        """Send subscribed market sockets an array with a valid ``book`` of one of their
        assets next to a malformed element (or an unknown event type), or a non-JSON frame."""
        sent = []
        for socket in self._registry.select("market", socket_id):
            assets = [a for a in socket.assets if a in self._exchange.tokens]
            if not assets:
                continue
            asset = sorted(assets)[0]
            book, _ = self._exchange.tokens[asset]
            valid = self._exchange.snapshot_frame(asset)
            if kind == "malformed":
                bad = (
                    b'{"event_type":"price_change","market":"'
                    + book.condition_id.encode()
                    + b'","price_changes":"not-a-list","timestamp":17}'
                )
            elif kind == "unknown":
                bad = (
                    b'{"event_type":"sim_unknown_event","market":"'
                    + book.condition_id.encode()
                    + b'","asset_id":"'
                    + asset.encode()
                    + b'","timestamp":"'
                    + book.timestamp.encode()
                    + b'"}'
                )
            else:
                socket.push(WholeFrame(b'[{"event_type":"book","market":'))
                sent.append(socket.id)
                continue
            socket.push(WholeFrame(b"[" + bad + b"," + valid + b"]"))
            sent.append(socket.id)
        self._registry.wake(self._registry.select("market", socket_id))
        return sent

    def change_tick(self, asset_or_condition_id: str, tick_size: int) -> None:
        """Change a market's tick size (``tick_size_change`` on both tokens)."""
        if tick_size not in TICK_SIZES:
            raise ValueError(f"{tick_size} is not one of the venue's tick sizes")
        if asset_or_condition_id in self._exchange.tokens:
            book = self._exchange.tokens[asset_or_condition_id][0]
        else:
            book = self._exchange.markets[asset_or_condition_id].book
        self._exchange.change_tick(book, tick_size)

    # -- HTTP ----------------------------------------------------------------------------------
    def restart(self, duration_s: float = 90.0, post_only_s: float | None = None) -> None:
        """Matching-engine restart: order endpoints answer 425, then post-only mode."""
        now = self._clock.monotonic()
        self._restart.until = now + duration_s
        after = self._post_only_after_restart_s if post_only_s is None else post_only_s
        self._post_only.until = max(self._post_only.until, now + duration_s + after)

    def post_only(self, duration_s: float = 120.0) -> None:
        self._post_only.until = self._clock.monotonic() + duration_s

    def cancel_only(self, duration_s: float = 60.0) -> None:
        self._cancel_only.until = self._clock.monotonic() + duration_s

    def trading_disabled(self, duration_s: float = 60.0) -> None:
        self._disabled.until = self._clock.monotonic() + duration_s

    def rate_limit_burst(self, count: int = 5, retry_after_s: int = 1) -> None:
        """The next ``count`` CLOB requests get 429 with ``Retry-After``."""
        self._rate_limited_requests = count
        self._rate_limit_retry_after_s = retry_after_s

    def slow_responses(
        self, delay_ms: int, *, count: int | None = None, duration_s: float | None = None
    ) -> None:
        """Delay CLOB/Gamma responses by ``delay_ms`` (for ``count`` requests or a while)."""
        self._slow_ms = delay_ms
        self._slow_requests = count
        self._slow_until = math.inf if duration_s is None else self._clock.monotonic() + duration_s

    def fail_next_settlements(self, count: int = 1) -> None:
        """The next ``count`` trades go MATCHED → FAILED instead of MINED → CONFIRMED."""
        self.failed_settlements += count

    def retry_next_settlements(self, count: int = 1, then: SettlementEnd = "CONFIRMED") -> None:
        """The next ``count`` trades go MATCHED → RETRYING (the transaction reverted and is
        resubmitted), then MINED → CONFIRMED (``then`` "CONFIRMED") or FAILED."""
        if then not in ("CONFIRMED", "FAILED"):
            raise ValueError(f"a retried settlement ends CONFIRMED or FAILED, not {then!r}")
        self._retrying_settlements.extend([then] * count)

    def take_retrying_settlement(self) -> SettlementEnd | None:
        """How the next trade's retried settlement ends, if it is to be retried."""
        return self._retrying_settlements.pop(0) if self._retrying_settlements else None

    def taker_delay(self, condition_id: str, delay_ms: int = 250) -> None:
        """Hold the market's marketable orders ``delay_ms`` before matching them: ``POST
        /order`` answers ``delayed`` and the order matches (or rests) after the window, as
        on markets with a taker delay (clob-markets ``itode``). 0 lifts it."""
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        self._exchange.markets[condition_id.lower()].taker_delay_ms = delay_ms

    def lose_order_responses(
        self, count: int = 1, *, mode: LostResponseMode = "hold", hold_s: float = 30.0
    ) -> None:
        """The next ``count`` ``POST /order``/``/orders`` requests are executed (the orders
        are accepted, match and rest as usual), then the response is held ``hold_s`` before
        it is sent (``mode`` "hold": the client times out first) or the connection is
        closed without one (``mode`` "drop")."""
        if mode not in ("hold", "drop"):
            raise ValueError(f"mode is 'hold' or 'drop', not {mode!r}")
        if hold_s < 0:
            raise ValueError("hold_s must not be negative")
        self._lost_responses.extend([LostResponse(mode, hold_s)] * count)

    def take_lost_response(self) -> LostResponse | None:
        return self._lost_responses.pop(0) if self._lost_responses else None

    def clear(self) -> None:
        """Every fault off (stalls lifted; sockets already dropped stay dropped; taker delays
        stay until set to 0)."""
        for window in (self._restart, self._post_only, self._cancel_only, self._disabled):
            window.until = 0.0
        self._rate_limited_requests = 0
        self._slow_ms = 0
        self._slow_requests = None
        self.failed_settlements = 0
        self._retrying_settlements.clear()
        self._lost_responses.clear()
        self._market_hub.drop_next.clear()
        self.unstall()

    def status(self) -> dict[str, Any]:
        now = self._clock.monotonic()
        return {
            "restarting": self._restart.active(now),
            "post_only": self._post_only.active(now),
            "cancel_only": self._cancel_only.active(now),
            "trading_disabled": self._disabled.active(now),
            "rate_limited_requests": self._rate_limited_requests,
            "slow_response_ms": self._slow_ms if self._slow_active(now) else 0,
            "failed_settlements": self.failed_settlements,
            "retrying_settlements": list(self._retrying_settlements),
            "lost_order_responses": len(self._lost_responses),
            "taker_delays_ms": {
                condition_id: state.taker_delay_ms
                for condition_id, state in self._exchange.markets.items()
                if state.taker_delay_ms
            },
            "stalled_sockets": [s.id for s in self._registry.sockets.values() if s.stalled],
            "dropping_price_change_for": sorted(self._market_hub.drop_next),
        }

    # -- what the HTTP layer asks ------------------------------------------------------------
    def order_gate(self, kind: OrderKind) -> web.Response | None:
        """The restriction an order endpoint is under, as the venue's response (or None)."""
        now = self._clock.monotonic()
        if self._restart.active(now):
            return error_response(
                425,
                RESTARTING_BODY,
                headers={"Retry-After": str(self._restart.remaining(now))},
            )
        if self._disabled.active(now):
            return error_response(503, DISABLED_BODY)
        if kind == "cancel":
            return None
        if self._cancel_only.active(now):
            return error_response(503, CANCEL_ONLY_BODY)
        if kind == "order" and self._post_only.active(now):
            return self.post_only_response(now)
        return None

    def post_only_active(self) -> bool:
        return self._post_only.active(self._clock.monotonic())

    def post_only_response(self, now: float | None = None) -> web.Response:
        now = self._clock.monotonic() if now is None else now
        remaining = self._post_only.remaining(now)
        return error_response(
            503,
            POST_ONLY_BODY,
            headers={"Retry-After": str(remaining)},
            code="post_only_mode",
            retry_after_seconds=remaining,
        )

    def _slow_active(self, now: float) -> bool:
        return bool(self._slow_ms) and now < self._slow_until and self._slow_requests != 0

    def http_delay_s(self) -> float:
        """How long to hold the next response (and count it)."""
        if not self._slow_active(self._clock.monotonic()):
            return 0.0
        if self._slow_requests is not None:
            self._slow_requests -= 1
        return self._slow_ms / 1000

    def take_rate_limited(self) -> web.Response | None:
        if self._rate_limited_requests <= 0:
            return None
        self._rate_limited_requests -= 1
        retry = str(self._rate_limit_retry_after_s)
        return error_response(429, RATE_LIMITED_BODY, headers={"Retry-After": retry})
