"""The venue's user WebSocket (VENUE §4.4): our order changes and fills as the venue pushes them.

One connection per API key. The first frame authenticates with the key's L2 credentials and
names the markets (condition ids; none: every market of the key). A text ``PING`` goes out
every ``ping_interval_s``; the venue answers ``PONG``.

- **Silence watchdog.** The user channel is quiet whenever our orders are, so data alone
  cannot tell a dead socket from a calm one: any frame counts as life, the ``PONG`` included,
  and a socket that sends nothing at all for ``silence_timeout_s`` (three missed PINGs by
  default, as the SDK judges it) is dropped and reconnected. A socket that answers PINGs yet
  withholds events (hazard H1) is caught by the executor's periodic reconciliation instead.
- **Reconnects** back off exponentially with jitter (stamina); a connection the venue answered
  on resets the backoff, so one drop after hours of service reconnects at once.
- **Gaps.** The venue never replays what a client missed. After every connect, once the
  venue answered a PING sent behind the authentication frame (so it is sending us the key's
  events), the first report is a :class:`~polybus.executor.venue.ReportsGap` whose
  ``since_ns`` reaches back to
  the last moment the previous socket was heard from, and further, to the match time of any
  trade still settling (its later statuses may have been sent while we were away), minus
  ``gap_margin_s`` for the venue's whole-second times and clock skew. The executor re-reads
  open orders and trades since then over REST.
- **Decoding** uses the shared wire structs; a frame is an object or an array, and each
  element is decoded alone, so a malformed or unknown one is logged, counted and skipped
  while its siblings are reported (hazard H9).
- **Secrets.** The credentials go into the first frame and nowhere else: not in a log line,
  not in an exception. The websockets library logs every frame it sends at DEBUG, the
  authentication frame included, so its logger here never goes below INFO.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import msgspec
import stamina
import structlog
from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from polybus.common.money import parse_price, parse_size
from polybus.common.polymarket.clob import PolymarketApiCredentials
from polybus.common.polymarket.user_channel import (
    PolymarketUserEvent,
    PolymarketUserOrder,
    PolymarketUserSubscription,
    PolymarketUserTrade,
)
from polybus.executor.venue import ReportsGap, VenueOrderUpdate, VenueReport, VenueTrade

_log = structlog.get_logger("polybus.executor.user_channel")

# Never DEBUG: websockets would log the authentication frame, secret and passphrase included.
_socket_logger = logging.getLogger("polybus.executor.user_channel.socket")
_socket_logger.setLevel(logging.INFO)

FRAMES = Counter("polybus_executor_user_frames", "User-channel frames received", ["kind"])
REJECTED = Counter(
    "polybus_executor_user_rejected",
    "User-channel frames or elements that could not be used",
    ["reason"],
)
RECONNECTS = Counter(
    "polybus_executor_user_reconnects", "User-channel reconnects, by cause", ["reason"]
)

PRODUCTION_USER_WS_URL = "wss://ws-subscriptions-clob.polymarket.com/ws/user"
PONG = "PONG"
_NANOS_PER_SECOND = 1_000_000_000
_MILLISECONDS_FROM = 10**11
"""A venue ``timestamp`` at least this large is milliseconds (VENUE §4.4: documented as ms,
the example is seconds; 10**11 s is the year 5138)."""
_SEEN_TRADES = 10_000
"""Fills remembered to drop a repeat (the same trade sent to us as taker and as maker)."""
_SETTLED = frozenset({"CONFIRMED", "FAILED"})

_frame_decoder = msgspec.json.Decoder(list[PolymarketUserEvent] | PolymarketUserEvent)
_element_decoder = msgspec.json.Decoder(PolymarketUserEvent)
_raw_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True, kw_only=True)
class UserChannelSettings:
    url: str = PRODUCTION_USER_WS_URL
    markets: tuple[str, ...] = ()
    """Condition ids to hear about; empty: every market of the key."""
    ping_interval_s: float = 10.0
    silence_timeout_s: float = 30.0
    """No frame at all (``PONG`` included) for this long: the socket is dead."""
    connect_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    gap_margin_s: float = 5.0
    """How much further back a gap reaches than we last heard the venue."""
    settling_horizon_s: float = 3600.0
    """A trade still settling after this long no longer stretches a gap back to its match
    (its final status was missed; the periodic reconciliation reads it)."""


class _Silent(Exception):
    """The socket sent nothing for the silence timeout."""


_RECONNECT_ON = (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, _Silent)


class PolymarketUserChannel:
    """The reports of one API key from the venue's user channel (:meth:`reports`)."""

    def __init__(
        self,
        credentials: PolymarketApiCredentials,
        settings: UserChannelSettings | None = None,
    ) -> None:
        self._credentials = credentials
        self._settings = settings or UserChannelSettings()
        self._heard_ns = 0
        """Wall-clock time of the last frame received on any socket."""
        self._settling: dict[str, int] = {}
        """Trades reported in a status that can still change: trade id -> match time (ns)."""
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.connects = 0
        self.rejected = 0
        """Frames or elements that were malformed or of an unknown kind."""

    def __repr__(self) -> str:
        return f"PolymarketUserChannel(url={self._settings.url!r})"

    async def reports(self) -> AsyncIterator[VenueReport]:
        """Connect, authenticate, report; reconnect forever (until the consumer stops).

        Each connection begins with a :class:`ReportsGap`, then the fills and order changes
        in the order the venue sent them."""
        settings = self._settings
        gap_reason = "connected"
        self._heard_ns = time.time_ns()
        while True:
            async for attempt in stamina.retry_context(
                on=_RECONNECT_ON,
                attempts=None,
                timeout=None,
                wait_initial=settings.reconnect_initial_s,
                wait_max=settings.reconnect_max_s,
                wait_jitter=settings.reconnect_initial_s,
            ):
                with attempt:
                    heard_before = self._heard_ns
                    gap = ReportsGap(since_ns=self._gap_start(), reason=gap_reason)
                    try:
                        async with self._connect() as connection:
                            async for report in self._read(connection, gap):
                                yield report
                    except _RECONNECT_ON as error:
                        reason = _cause(error)
                        RECONNECTS.labels(reason).inc()
                        _log.warning(
                            "user_channel.disconnected",
                            reason=reason,
                            error=f"{type(error).__name__}: {error}",
                        )
                        gap_reason = f"reconnected after {reason}"
                        if self._heard_ns == heard_before:
                            raise  # the venue never answered: back off
                    break  # the venue had answered: reconnect at once, backoff reset
            else:  # pragma: no cover - retries are unlimited
                return

    # -- one connection ----------------------------------------------------------------------
    def _connect(self) -> connect:
        settings = self._settings
        return connect(
            settings.url,
            open_timeout=settings.connect_timeout_s,
            ping_interval=None,  # the venue wants its own text PING
            close_timeout=1,
            max_size=2**22,
            compression=None,
            logger=_socket_logger,
        )

    def _subscription(self) -> str:
        markets = list(self._settings.markets) or None
        frame = PolymarketUserSubscription(auth=self._credentials, markets=markets, type="user")
        return _encoder.encode(frame).decode()

    async def _read(
        self, connection: ClientConnection, gap: ReportsGap
    ) -> AsyncIterator[VenueReport]:
        """Authenticate, then report what arrives. ``gap`` comes first, once the venue
        answered the PING sent right after the authentication frame: it handles a socket's
        frames in order, so from then on it sends us every event of the key."""
        settings = self._settings
        await connection.send(self._subscription())
        await connection.send("PING")
        loop = asyncio.get_running_loop()
        last_frame = loop.time()
        next_ping = last_frame + settings.ping_interval_s
        early: list[VenueReport] | None = []
        """Reports that arrived before the venue's first PONG (then None: it answered)."""
        while True:
            now = loop.time()
            if now - last_frame >= settings.silence_timeout_s:
                raise _Silent(f"no frame for {settings.silence_timeout_s} s")
            if now >= next_ping:
                await connection.send("PING")
                next_ping = now + settings.ping_interval_s
            wait = min(next_ping, last_frame + settings.silence_timeout_s) - now
            try:
                # websockets' recv is cancel-safe: a timeout loses no frame.
                async with asyncio.timeout(max(wait, 0.0)):
                    frame = await connection.recv()
            except TimeoutError:
                continue
            last_frame = loop.time()
            self._heard_ns = time.time_ns()
            if frame == PONG:
                FRAMES.labels("pong").inc()
                if early is not None:
                    self.connects += 1
                    _log.info("user_channel.connected", markets=len(settings.markets) or "all")
                    yield gap
                    for report in early:
                        yield report
                    early = None
                continue
            FRAMES.labels("data").inc()
            if early is not None:
                early.extend(self.decode(frame))
                continue
            for report in self.decode(frame):
                yield report

    def _gap_start(self) -> int:
        """Since when reports may be missing: the last frame heard, or the match of the
        oldest trade still settling, whichever is earlier, less the margin."""
        horizon = time.time_ns() - int(self._settings.settling_horizon_s * _NANOS_PER_SECOND)
        for trade_id in [t for t, matched in self._settling.items() if matched < horizon]:
            del self._settling[trade_id]
        start = min([self._heard_ns, *self._settling.values()])
        return max(start - int(self._settings.gap_margin_s * _NANOS_PER_SECOND), 0)

    # -- frames to reports -------------------------------------------------------------------
    def decode(self, frame: str | bytes) -> list[VenueReport]:
        """The reports in one frame (fills for our orders only); what cannot be used is
        logged and counted."""
        reports: list[VenueReport] = []
        for event in self._events(frame):
            try:
                if isinstance(event, PolymarketUserOrder):
                    update = self._order_update(event)
                    if update is not None:
                        reports.append(update)
                else:
                    reports.extend(self._trades(event))
            except ValueError as error:  # a number, side or fee rate that does not parse
                self._reject("invalid_field", str(error))
        return reports

    def _events(self, frame: str | bytes) -> list[PolymarketUserEvent]:
        try:
            decoded = _frame_decoder.decode(frame)
        except msgspec.ValidationError:
            pass  # one element does not fit: decode them one by one below
        except msgspec.DecodeError:
            self._reject("invalid_json", "")
            return []
        else:
            return decoded if isinstance(decoded, list) else [decoded]
        elements: list[msgspec.Raw | str | bytes]
        try:
            elements = list(_raw_array_decoder.decode(frame))
        except msgspec.ValidationError:
            elements = [frame]
        except msgspec.DecodeError:  # msgspec may see a misfit before a truncation
            self._reject("invalid_json", "")
            return []
        events: list[PolymarketUserEvent] = []
        for element in elements:
            try:
                events.append(_element_decoder.decode(element))
            except msgspec.ValidationError as error:
                reason = "unknown_event_type" if "event_type" in str(error) else "invalid_event"
                self._reject(reason, str(error))
            except msgspec.DecodeError:
                self._reject("invalid_json", "")
        return events

    def _reject(self, reason: str, detail: str) -> None:
        # ``detail`` is msgspec's or our parser's message: a field name or a number, never a
        # whole frame (the venue's frames are ours, but logs stay small).
        self.rejected += 1
        REJECTED.labels(reason).inc()
        _log.warning("user_channel.rejected", reason=reason, detail=detail[:200])

    def _order_update(self, event: PolymarketUserOrder) -> VenueOrderUpdate | None:
        status = _order_status(event)
        if status is None:
            self._reject("unknown_order_status", event.status)
            return None
        return VenueOrderUpdate(
            venue_order_id=event.id,
            condition_id=event.market,
            asset_id=event.asset_id,
            status=status,
            size_matched=parse_size(event.size_matched),
            at_ns=_venue_time_ns(event.timestamp) or time.time_ns(),
        )

    def _trades(self, event: PolymarketUserTrade) -> list[VenueTrade]:
        """Our fills in one trade event: the taker's order if it is ours, and each of our
        maker orders it filled."""
        key = self._credentials.api_key
        matched_at_ns = _venue_time_ns(event.matchtime)
        common = {
            "trade_id": event.id,
            "condition_id": event.market,
            "status": event.status,
            "matched_at_ns": matched_at_ns,
            "transaction_hash": event.transaction_hash,
        }
        fills: list[VenueTrade] = []
        taker_is_ours = event.owner == key or (
            event.trader_side == "TAKER" and event.trade_owner == key
        )
        if taker_is_ours:
            fills.append(
                VenueTrade(
                    venue_order_id=event.taker_order_id,
                    asset_id=event.asset_id,
                    side=_side(event.side),
                    price=parse_price(event.price),
                    size=parse_size(event.size),
                    liquidity="taker",
                    fee_rate_bps=_bps(event.fee_rate_bps),
                    **common,  # type: ignore[arg-type]
                )
            )
        fills.extend(
            VenueTrade(
                venue_order_id=maker.order_id,
                asset_id=maker.asset_id,
                side=_side(maker.side),
                price=parse_price(maker.price),
                size=parse_size(maker.matched_amount),
                liquidity="maker",
                fee_rate_bps=_bps(maker.fee_rate_bps),
                **common,  # type: ignore[arg-type]
            )
            for maker in event.maker_orders
            if maker.owner == key
        )
        if event.status in _SETTLED:
            self._settling.pop(event.id, None)
        elif fills:
            self._settling.setdefault(event.id, matched_at_ns or time.time_ns())
        return [fill for fill in fills if self._first_time(fill)]

    def _first_time(self, fill: VenueTrade) -> bool:
        """False for a fill already reported in this status (a trade of ours on both sides
        reaches us once as taker and once as maker)."""
        key = (fill.trade_id, fill.status, fill.venue_order_id)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > _SEEN_TRADES:
            self._seen.popitem(last=False)
        return True


OrderStatus = Literal["live", "partially_filled", "filled", "canceled", "expired"]


def _order_status(event: PolymarketUserOrder) -> OrderStatus | None:
    """Our state of an order from the venue's ``status`` (VENUE §3.5) and ``type``."""
    status = event.status.upper()
    if status == "CANCELED_EXPIRED_ORDER":
        return "expired"
    if status.startswith("CANCELED") or status in ("UNMATCHED", "INVALID"):
        return "canceled"
    if event.type.upper() == "CANCELLATION":
        return "canceled"
    if status == "MATCHED":
        return "filled"
    if status in ("LIVE", "DELAYED", ""):
        matched = parse_size(event.size_matched)
        if matched <= 0:
            return "live"
        return "filled" if matched >= parse_size(event.original_size) else "partially_filled"
    return None


def _side(text: str) -> Literal["BUY", "SELL"]:
    side = text.upper()
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side {text!r} is neither BUY nor SELL")
    return "BUY" if side == "BUY" else "SELL"


def _bps(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"fee rate {text!r} is not a whole number of basis points")
    return int(text)


def _venue_time_ns(text: str) -> int:
    """Unix ns of a venue time in seconds or milliseconds (0 when absent or not a number)."""
    if not text.isascii() or not text.isdigit():
        return 0
    value = int(text)
    if value >= _MILLISECONDS_FROM:
        return value * 1_000_000
    return value * _NANOS_PER_SECOND


def _cause(error: BaseException) -> str:
    if isinstance(error, _Silent):
        return "silence"
    if isinstance(error, ConnectionClosed):
        return "closed"
    if isinstance(error, InvalidHandshake):
        return "handshake"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "transport"
