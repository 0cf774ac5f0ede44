"""The live venue: Polymarket's CLOB through the official SDK (``polymarket-client``, pinned).

Create-then-post only: orders are signed with ``create_limit_order`` / ``create_market_order``
and sent with ``post_orders``; ``place_*`` is never called, because on an allowance rejection
it sends on-chain approvals by itself (VENUE §2.3). The SDK's one trade-polling path
(``wait_for_order_fill_settlement``, 0.25 s polls for up to 30 s — hazard H24) is never called
either: in 0.14.0 ``post_order(s)`` sends one request and returns, and fills come from the user
channel and :meth:`PolymarketLiveVenue.trades`.

Before every request the signer's token bucket is charged (VENUE §6.2), so the executor waits
instead of drawing 429s. When the venue says it did not take a request (425 engine restart,
429 rate limit) the *same* signed orders are posted again after the venue's ``Retry-After``
(or a jittered exponential backoff), within a time budget; a signed order posted twice is at
worst refused as a duplicate. Anything that may have reached the engine unanswered is
``unknown`` and is never posted again. Prices and sizes become the SDK's decimal strings
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import structlog
from polymarket import AsyncSecureClient
from polymarket.environments import PRODUCTION, Environment
from polymarket.errors import OrderHeartbeatMismatchError, PolymarketError
from polymarket.models.clob.order_response import AcceptedOrder, OrderResponse
from polymarket.models.clob.orders import MarketOrderType, SignedOrder

from polybus.common.money import decimal_micros, format_micros, notional
from polybus.common.polymarket.clob import PolymarketApiCredentials
from polybus.executor import metrics
from polybus.executor.live.client import (
    LiveAccount,
    SdkMarkets,
    api_key_of,
    create_client,
    exchange_version_of,
    order_hash,
)
from polybus.executor.live.errors import (
    Classified,
    cancel_refusal,
    classify_request_error,
    reason_for_message,
    reason_for_rejected_order,
    restriction_for_reason,
)
from polybus.executor.live.limits import (
    Backoff,
    Clock,
    SignerLimits,
    SystemClock,
    TierName,
    TokenBucket,
)
from polybus.executor.live.user_channel import PolymarketUserChannel, UserChannelSettings
from polybus.executor.venue import (
    MAX_CANCEL_BATCH,
    MAX_SUBMIT_BATCH,
    CancelResult,
    HeartbeatRejected,
    Restriction,
    SubmitAccepted,
    SubmitRejected,
    SubmitResult,
    SubmitUnknown,
    VenueOpenOrder,
    VenueOrder,
    VenueReport,
    VenueRestriction,
    VenueTrade,
    VenueUnavailable,
)

_log = structlog.get_logger("polybus.executor.live")

T = TypeVar("T")

GTD_THRESHOLD_S = 60
"""The venue's security threshold: a GTD order lives until ``expiration - 60 s`` (VENUE §3.6),
so our expiry time goes out one minute later."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS_PER_SECOND = 1_000_000_000


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LiveVenueSettings:
    request_timeout_s: float = 5.0
    """One request's bound; past it the outcome is unknown."""
    retry_budget_s: float = 30.0
    """How long a request the venue did not take (425, 429) is retried before it is refused
    (a quote held through a 90 s engine restart would be stale anyway)."""
    restriction_hold_s: float = 5.0
    """How long a restricted mode without ``Retry-After`` is assumed to last before the venue
    is asked again."""
    backoff: Backoff = dataclasses.field(default_factory=Backoff)


class PolymarketLiveVenue:
    """:class:`~polybus.executor.venue.Venue` over an authenticated SDK client."""

    def __init__(
        self,
        client: AsyncSecureClient,
        *,
        limits: SignerLimits | None = None,
        clock: Clock | None = None,
        settings: LiveVenueSettings | None = None,
        rng: random.Random | None = None,
        user_channel: UserChannelSettings | None = None,
    ) -> None:
        self._client = client
        self._clock = clock or SystemClock()
        self._limits = limits or SignerLimits("standard", self._clock)
        self._settings = settings or LiveVenueSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._markets = SdkMarkets(client)
        self._owner = api_key_of(client)
        self._restriction: VenueRestriction | None = None
        self._user_channel_settings = user_channel or UserChannelSettings()

    @classmethod
    async def connect(
        cls,
        account: LiveAccount,
        environment: Environment = PRODUCTION,
        *,
        tier: TierName = "standard",
        clock: Clock | None = None,
        settings: LiveVenueSettings | None = None,
        user_channel: UserChannelSettings | None = None,
    ) -> PolymarketLiveVenue:
        """Build the SDK client for ``account`` and the adapter owning it (:meth:`aclose`)."""
        clock = clock or SystemClock()
        client = await create_client(account, environment)
        return cls(
            client,
            limits=SignerLimits(tier, clock),
            clock=clock,
            settings=settings,
            user_channel=user_channel,
        )

    async def aclose(self) -> None:
        await self._client.close()

    @property
    def client(self) -> AsyncSecureClient:
        return self._client

    @property
    def restriction(self) -> VenueRestriction | None:
        current = self._restriction
        if current is not None and current.until_s <= self._clock.monotonic():
            self._restriction = current = None
        return current

    # -- orders ------------------------------------------------------------------------------
    async def submit(self, orders: Sequence[VenueOrder]) -> list[SubmitResult]:
        results: list[SubmitResult | None] = [None] * len(orders)
        pending: list[tuple[int, VenueOrder, SignedOrder]] = []
        for index, order in enumerate(orders):
            signed = self._refused_by_restriction(order) or await self._sign(order)
            if isinstance(signed, SubmitRejected):
                results[index] = signed
            else:
                pending.append((index, order, signed))
        for start in range(0, len(pending), MAX_SUBMIT_BATCH):
            batch = pending[start : start + MAX_SUBMIT_BATCH]
            answers = await self._post([(order, signed) for _, order, signed in batch])
            for (index, _, _), answer in zip(batch, answers, strict=True):
                results[index] = answer
        return [result for result in results if result is not None]

    def _refused_by_restriction(self, order: VenueOrder) -> SubmitRejected | None:
        """Do not ask while the venue said it would refuse (no hammering, VENUE §7)."""
        current = self.restriction
        if current is None or (current.mode == "post_only_mode" and order.post_only):
            return None
        if current.mode == "engine_restarting":
            return None  # the post retries it within the budget
        return SubmitRejected(
            client_order_id=order.client_order_id,
            reason=current.mode,
            message=current.message,
            retry_after_s=max(current.until_s - self._clock.monotonic(), 0.0),
        )

    async def _sign(self, order: VenueOrder) -> SignedOrder | SubmitRejected:
        def refused(reason: str, message: str) -> SubmitRejected:
            return SubmitRejected(
                client_order_id=order.client_order_id,
                reason=reason,  # type: ignore[arg-type]  # one of VenueRejectReason
                message=message,
            )

        if exchange_version_of(order.asset_id) != order.exchange_version:
            return refused(
                "exchange_version_mismatch",
                f"asset is signed in domain {exchange_version_of(order.asset_id)}",
            )
        if order.post_only and order.time_in_force in ("FOK", "FAK"):
            return refused("post_only_order_type", "only GTC and GTD orders can be post-only")
        self._markets.prime(order)
        price = format_micros(order.price)
        try:
            if order.time_in_force in ("GTC", "GTD"):
                return await self._client.create_limit_order(
                    asset_id=order.asset_id,
                    price=price,
                    size=format_micros(order.size),
                    side=order.side,
                    post_only=order.post_only,
                    expiration=self._expiration(order),
                )
            market_type: MarketOrderType = "FOK" if order.time_in_force == "FOK" else "FAK"
            if order.side == "BUY":
                return await self._client.create_market_order(
                    asset_id=order.asset_id,
                    side="BUY",
                    amount=format_micros(notional(order.price, order.size)),
                    max_price=price,
                    order_type=market_type,
                )
            return await self._client.create_market_order(
                asset_id=order.asset_id,
                side="SELL",
                shares=format_micros(order.size),
                min_price=price,
                order_type=market_type,
            )
        except (PolymarketError, ValueError) as error:
            # Nothing was sent: the SDK refused the inputs or could not fetch what it needed.
            reason = reason_for_message(str(error))
            return refused("signing_failed" if reason == "venue_rejected" else reason, str(error))

    def _expiration(self, order: VenueOrder) -> int | None:
        if order.time_in_force != "GTD":
            return None
        if order.expires_at_ns <= 0:
            # The SDK would silently make it a GTC; a GTD without an end is a caller's bug.
            raise ValueError("invalid expiration: a GTD order needs expires_at_ns")
        return math.ceil(order.expires_at_ns / _NANOS_PER_SECOND) + GTD_THRESHOLD_S

    async def _post(self, batch: list[tuple[VenueOrder, SignedOrder]]) -> list[SubmitResult]:
        signed = [order for _, order in batch]
        answer = await self._call(
            lambda: self._client.post_orders(signed), bucket=self._limits.orders, cost=len(signed)
        )
        if not isinstance(answer, Classified):
            return [
                self._result(order, response)
                for (order, _), response in zip(batch, answer, strict=True)
            ]
        if answer.kind == "unknown":
            _log.warning("order.submit_unknown", reason=answer.reason, orders=len(batch))
            return [
                SubmitUnknown(
                    client_order_id=order.client_order_id,
                    reason=answer.reason,  # type: ignore[arg-type]  # an UnknownReason
                    message=answer.message,
                    venue_order_id=order_hash(self._client, signed_order, neg_risk=order.neg_risk),
                )
                for order, signed_order in batch
            ]
        return [
            SubmitRejected(
                client_order_id=order.client_order_id,
                reason=answer.reason,  # type: ignore[arg-type]  # a VenueRejectReason
                message=answer.message,
                retry_after_s=answer.retry_after_s or 0.0,
            )
            for order, _ in batch
        ]

    def _result(self, order: VenueOrder, response: OrderResponse) -> SubmitResult:
        if isinstance(response, AcceptedOrder):
            return SubmitAccepted(
                client_order_id=order.client_order_id,
                venue_order_id=response.order_id,
                venue_status=response.status,
                making_amount=_micros(response.making_amount, "making amount"),
                taking_amount=_micros(response.taking_amount, "taking amount"),
                trade_ids=response.trade_ids,
            )
        reason = reason_for_rejected_order(response.code, response.message)
        restriction = restriction_for_reason(reason)
        if restriction is not None:
            self._restrict(restriction, response.message, None)
        return SubmitRejected(
            client_order_id=order.client_order_id, reason=reason, message=response.message
        )

    # -- cancels -----------------------------------------------------------------------------
    async def cancel(self, venue_order_ids: Sequence[str]) -> list[CancelResult]:
        ids = list(dict.fromkeys(venue_order_ids))
        # A request costing more than the cancel burst can never pass: split to fit it.
        chunk = min(MAX_CANCEL_BATCH, self._limits.cancel_chunk)
        results: list[CancelResult] = []
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            answer = await self._call(
                lambda part=part: self._client.cancel_orders(order_ids=part),  # type: ignore[misc]
                bucket=self._limits.cancels,
                cost=len(part),
            )
            results.extend(_cancel_results(part, answer))
        return results

    async def cancel_all(self) -> list[CancelResult]:
        answer = await self._call(self._client.cancel_all, bucket=self._limits.cancels, cost=1)
        if isinstance(answer, Classified):
            return [_cancel_failure("", answer)]
        # Charged after the fact, one token per order canceled (VENUE §6.2).
        self._limits.cancels.charge(len(answer.canceled))
        return _cancel_results(list(answer.canceled) + list(answer.not_canceled), answer)

    # -- queries and heartbeat ---------------------------------------------------------------
    async def open_orders(self) -> list[VenueOpenOrder]:
        async def read() -> list[VenueOpenOrder]:
            return [
                VenueOpenOrder(
                    venue_order_id=order.id,
                    status=order.status,
                    condition_id=order.condition_id,
                    asset_id=order.asset_id,
                    side=order.side,
                    price=_micros(order.price, "price"),
                    original_size=_micros(order.original_size, "original size"),
                    size_matched=_micros(order.size_matched, "size matched"),
                    order_type=order.order_type,
                    created_at_ns=_nanos(order.created_at),
                    expires_at_ns=_nanos(order.expires_at) if order.expires_at else 0,
                )
                async for order in self._client.list_open_orders().iter_items()
            ]

        return _or_raise(await self._call(read))

    async def trades(self, after_ns: int = 0) -> list[VenueTrade]:
        after = str(after_ns // _NANOS_PER_SECOND) if after_ns > 0 else None

        async def read() -> list[VenueTrade]:
            ours: list[VenueTrade] = []
            async for trade in self._client.list_account_trades(after=after).iter_items():
                common = {
                    "trade_id": trade.id,
                    "condition_id": trade.condition_id,
                    "asset_id": trade.asset_id,
                    "status": trade.status,
                    "fee_rate_bps": int(trade.fee_rate_bps),
                    "matched_at_ns": _nanos(trade.matched_at),
                    "transaction_hash": trade.transaction_hash or "",
                }
                if trade.trader_side == "TAKER" and trade.owner == self._owner:
                    ours.append(
                        VenueTrade(
                            venue_order_id=trade.taker_order_id,
                            side=trade.side,
                            price=_micros(trade.price, "price"),
                            size=_micros(trade.size, "size"),
                            liquidity="taker",
                            **common,  # type: ignore[arg-type]
                        )
                    )
                ours.extend(
                    VenueTrade(
                        venue_order_id=maker.order_id,
                        side=maker.side,
                        price=_micros(maker.price, "price"),
                        size=_micros(maker.matched_amount, "matched amount"),
                        liquidity="maker",
                        **common,  # type: ignore[arg-type]
                    )
                    for maker in trade.maker_orders
                    if maker.owner == self._owner
                )
            return ours

        return _or_raise(await self._call(read))

    async def heartbeat(self, previous_id: str) -> str:
        async def send() -> str:
            return (await self._client.send_order_heartbeat(heartbeat_id=previous_id)).heartbeat_id

        try:
            answer = await self._call(send, retry=False)
        except OrderHeartbeatMismatchError as error:
            raise HeartbeatRejected(error.heartbeat_id) from None
        return _or_raise(answer)

    # -- pushed reports --------------------------------------------------------------------------
    def reports(self) -> AsyncIterator[VenueReport]:
        """The user channel of this client's API key (:mod:`.user_channel`)."""
        credentials = self._client.credentials
        channel = PolymarketUserChannel(
            PolymarketApiCredentials(
                api_key=credentials.key,
                secret=credentials.secret,
                passphrase=credentials.passphrase,
            ),
            self._user_channel_settings,
        )
        return channel.reports()

    # -- one request -------------------------------------------------------------------------
    async def _call(
        self,
        request: Callable[[], Awaitable[T]],
        *,
        bucket: TokenBucket | None = None,
        cost: int = 0,
        retry: bool = True,
    ) -> T | Classified:
        """``request`` under the token bucket and a timeout; a 425/429 is retried after the
        venue's ``Retry-After`` (jittered) while the budget lasts, anything else classified."""
        deadline = self._clock.monotonic() + self._settings.retry_budget_s
        attempt = 0
        while True:
            if bucket is not None:
                started = self._clock.monotonic()
                await bucket.take(cost)
                name = "order" if bucket is self._limits.orders else "cancel"
                metrics.throttle_wait(name, self._clock.monotonic() - started)
            try:
                async with asyncio.timeout(self._settings.request_timeout_s):
                    return await request()
            except OrderHeartbeatMismatchError:
                raise
            except (PolymarketError, TimeoutError) as error:
                answer = classify_request_error(error)
            if answer.restriction is not None:
                self._restrict(answer.restriction, answer.message, answer.retry_after_s)
            if not retry or answer.kind != "retry":
                return answer
            delay = self._settings.backoff.delay_s(attempt, answer.retry_after_s, self._rng)
            if self._clock.monotonic() + delay > deadline:
                _log.warning("venue.retry_budget_spent", reason=answer.reason, attempts=attempt)
                return dataclasses.replace(answer, kind="rejected")
            _log.info("venue.retry", reason=answer.reason, delay_s=round(delay, 3))
            metrics.VENUE_RETRIES.labels(answer.reason).inc()
            attempt += 1
            await self._clock.sleep(delay)
            if answer.restriction == "engine_restarting":
                self._restriction = None  # ask again: the restart may be over

    def _restrict(self, mode: Restriction, message: str, retry_after_s: float | None) -> None:
        hold = retry_after_s if retry_after_s else self._settings.restriction_hold_s
        self._restriction = VenueRestriction(
            mode=mode, until_s=self._clock.monotonic() + hold, message=message
        )
        _log.warning("venue.restricted", mode=mode, hold_s=hold)


def _cancel_results(ids: Sequence[str], answer: object) -> list[CancelResult]:
    if isinstance(answer, Classified):
        return [_cancel_failure(order_id, answer) for order_id in ids]
    canceled = set(getattr(answer, "canceled", ()))
    not_canceled: dict[str, str] = dict(getattr(answer, "not_canceled", {}))
    results = []
    for order_id in ids:
        if order_id in canceled:
            results.append(CancelResult(venue_order_id=order_id, outcome="canceled"))
        elif order_id in not_canceled:
            message = not_canceled[order_id]
            results.append(
                CancelResult(
                    venue_order_id=order_id,
                    outcome="not_canceled",
                    reason=cancel_refusal(message),
                    message=message,
                )
            )
        else:
            results.append(
                CancelResult(
                    venue_order_id=order_id, outcome="unknown", reason="unexpected_response"
                )
            )
    return results


def _cancel_failure(order_id: str, answer: Classified) -> CancelResult:
    reason: str
    if answer.kind == "unknown":
        reason = answer.reason
        outcome = "unknown"
    else:
        reason = answer.restriction or (
            "rate_limited" if answer.reason == "rate_limited" else "cancel_refused"
        )
        outcome = "not_canceled"
    return CancelResult(
        venue_order_id=order_id,
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        message=answer.message,
    )


def _or_raise(answer: T | Classified) -> T:
    if isinstance(answer, Classified):
        raise VenueUnavailable(answer.reason, answer.message)
    return answer


def _micros(value: Decimal, what: str) -> int:
    return decimal_micros(value, what=what)


def _nanos(moment: datetime) -> int:
    """Unix ns of an aware datetime, exactly (microsecond precision)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000
