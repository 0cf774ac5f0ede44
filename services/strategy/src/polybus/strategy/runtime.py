"""The strategy runtime's pure core: events in, ``OrderIntent``s out. No I/O.

:class:`StrategyRuntime` sits between one :class:`~polybus.strategy.api.Strategy` and the bus.
The service (:mod:`polybus.strategy.service`) feeds it books, EXEC events, the timer, halts and
partition changes, and publishes the intents each call returns, in order. A backtest or a test
drives the same object with scripted events.

What the runtime decides, whatever the strategy says:

- hooks run only while not halted, and ``on_book`` only for a tradeable book of a held partition;
- a place is dropped (and logged) while halted, on an untradeable book, an unknown market or a
  partition not held; a cancel always goes out, once per order (taking risk off is always
  allowed, also by the executor), except the strategy's own cancel of an order in a partition
  not held: the portfolio shows every replica's orders, and another's are not this one's;
- an asset turning untradeable, a halt and a lost partition cancel the working orders concerned
  (those EXEC reports and the places still on their way) before anything else;
- a partition taken over has the working orders found there cancelled before anything new is
  placed there, and a working order of another replica that EXEC reports there later (its
  events reached this replica after the takeover) is cancelled as it is reported;
- every intent carries the market's ``partition`` and the ``lease_revision`` it was made under;
- a :class:`~polybus.strategy.api.Report` becomes a ``RiskEvent`` of the strategy, published
  in order with the intents (the calls return both: :data:`Outgoing`).

The strategy's ``view`` is set to the runtime's book view here, before any hook runs.

Intent ids (``intent_id`` = client order id = ``Nats-Msg-Id``) are
``<strategy_id>.<replica>.<incarnation>.<n>``: ``n`` counts from 1 within one process,
``incarnation`` is the process's start time in ns, raised above every incarnation found in the
strategy's EXEC history (:meth:`IntentIds.after`), so a restarted replica never reuses an id even
if the clock went back; ``replica`` tells replicas apart that start in the same nanosecond.
The executor claims every id forever, so a reused id would be an order silently never made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from polybus.common.book_view import BookView
from polybus.common.events import (
    ExecutionStreamEvent,
    Fill,
    OrderEvent,
    OrderIntent,
    RiskEvent,
)
from polybus.common.subjects import market_partition
from polybus.strategy import metrics
from polybus.strategy.api import Action, Cancel, Place, Report, Strategy, WorkingOrder
from polybus.strategy.portfolio import LivePortfolio

_log = structlog.get_logger("polybus.strategy.runtime")

Clock = Callable[[], int]
Outgoing = OrderIntent | RiskEvent
"""What the runtime hands the service to publish: intents, and the strategy's reports."""


@dataclass(slots=True)
class IntentIds:
    """Deterministic, never reused intent ids (see the module doc)."""

    strategy_id: str
    replica: str
    incarnation: int
    count: int = 0
    reports: int = 0

    def __post_init__(self) -> None:
        for piece in (self.strategy_id, self.replica):
            if not piece or "." in piece:
                raise ValueError(f"{piece!r}: an id part must be non-empty and without dots")

    @staticmethod
    def incarnation_of(strategy_id: str, order_id: str) -> int | None:
        """The incarnation in an id this runtime made for ``strategy_id``, else None."""
        parts = order_id.split(".")
        if len(parts) != 4 or parts[0] != strategy_id or not parts[2].isdigit():
            return None
        return int(parts[2])

    def after(self, order_id: str) -> None:
        """Move the incarnation past the one in ``order_id`` (an id seen in EXEC)."""
        seen = self.incarnation_of(self.strategy_id, order_id)
        if seen is not None and seen >= self.incarnation:
            self.incarnation = seen + 1
            self.count = 0
            self.reports = 0

    def mine(self, order_id: str) -> bool:
        """Whether ``order_id`` was made by this process (this replica, this incarnation)."""
        return order_id.startswith(f"{self.strategy_id}.{self.replica}.{self.incarnation}.")

    def next(self) -> str:
        self.count += 1
        return f"{self.strategy_id}.{self.replica}.{self.incarnation}.{self.count}"

    def next_report(self) -> str:
        """A report's event id: unique like the intent ids, never taken for an order id."""
        self.reports += 1
        return f"{self.strategy_id}.{self.replica}.{self.incarnation}.report.{self.reports}"


@dataclass(slots=True)
class RuntimeStats:
    intents: int = 0
    dropped_places: int = 0
    hook_failures: int = 0
    fills: int = 0
    reports: int = 0


@dataclass(slots=True)
class _Scope:
    """The switches of this runtime: halts by scope and the partitions held."""

    halts: dict[str, bool] = field(default_factory=dict)
    held: dict[int, int] = field(default_factory=dict)
    """Partition -> lease revision."""

    @property
    def halted(self) -> bool:
        return any(self.halts.values())


class StrategyRuntime:
    """One strategy's decisions turned into intents; every method returns what to publish."""

    def __init__(
        self,
        strategy: Strategy,
        portfolio: LivePortfolio,
        view: BookView,
        ids: IntentIds,
        *,
        partitions: int,
        clock: Clock,
    ) -> None:
        self.strategy = strategy
        strategy.view = view
        self.strategy_id = ids.strategy_id
        self.portfolio = portfolio
        self.view = view
        self.ids = ids
        self.partitions = partitions
        self.clock = clock
        self.stats = RuntimeStats()
        self._scope = _Scope()
        self._cancelling: set[str] = set()
        self._fills_seen: set[tuple[str, str]] = set()
        self._started = False

    # -- state -------------------------------------------------------------------------------
    @property
    def halted(self) -> bool:
        return self._scope.halted

    def held(self) -> Mapping[int, int]:
        return dict(self._scope.held)

    def restore(self, event: ExecutionStreamEvent) -> None:
        """Fold one past EXEC event in before the start: state only, no hook, no intent."""
        if isinstance(event, OrderEvent | Fill):
            self.ids.after(event.order_id)
        if isinstance(event, Fill):
            self._fills_seen.add((event.fill_id, event.settlement))
        self._fold(event)

    def start(self) -> None:
        """The rebuild is over: from now on EXEC events reach the strategy."""
        self._started = True

    # -- inputs ------------------------------------------------------------------------------
    def on_book(self, asset_id: str) -> list[Outgoing]:
        if self.halted or not self.view.tradeable(asset_id) or not self._holds_asset(asset_id):
            return []
        return self._run_hook(lambda: self.strategy.on_book(self.view, asset_id))

    def on_untradeable(self, asset_id: str) -> list[Outgoing]:
        """The asset's book went STALE, RESYNCING or CLOSED: cancel there, tell the strategy."""
        intents: list[Outgoing] = []
        intents += self._cancel_all(self.portfolio.working(asset_id), "book_untradeable")
        if not self.halted and self._holds_asset(asset_id):
            intents += self._run_hook(lambda: self.strategy.on_untradeable(self.view, asset_id))
        return intents

    def on_execution(self, event: ExecutionStreamEvent) -> list[Outgoing]:
        """One live EXEC event of this strategy."""
        self._fold(event)
        if not self._started:
            return []
        if isinstance(event, OrderEvent):
            return list(self._cancel_orphan(event.order_id))
        if not isinstance(event, Fill):
            return []
        key = (event.fill_id, event.settlement)
        if key in self._fills_seen:
            return []
        self._fills_seen.add(key)
        self.stats.fills += 1
        metrics.FILLS.labels(self.strategy_id).inc()
        if self.halted:
            return []
        return self._run_hook(lambda: self.strategy.on_fill(event))

    def on_timer(self, now_ns: int) -> list[Outgoing]:
        if self.halted:
            return []
        return self._run_hook(lambda: self.strategy.on_timer(now_ns))

    def set_halt(self, scope: str, halted: bool) -> list[OrderIntent]:
        """A halt switch of this strategy (``scope`` = its id) or of all (``""``) changed."""
        if scope not in ("", self.strategy_id):
            return []
        was = self.halted
        self._scope.halts[scope] = halted
        metrics.HALTED.labels(self.strategy_id).set(int(self.halted))
        if self.halted and not was:
            _log.info("strategy.halted", strategy_id=self.strategy_id, scope=scope or "all")
            return self._cancel_all(self.portfolio.working(), "halted")
        if was and not self.halted:
            _log.info("strategy.resumed", strategy_id=self.strategy_id)
        return []

    def on_partition_acquired(self, partition: int, revision: int) -> list[OrderIntent]:
        """Cancels for the working orders found in ``partition``: left by a replica that died
        holding it (or by this strategy before a restart), so nobody drives them. They go out
        before anything new there. A market whose ``MarketInfo`` is not in the view yet is
        placed by its own condition id (a neg-risk market's group is not known then)."""
        self._scope.held[partition] = revision
        metrics.holding(self.strategy_id, len(self._scope.held), "acquired")
        orders = [
            order
            for order in self.portfolio.working()
            if self.partition_of_market(order.condition_id) == partition
        ]
        return self._cancel_all(orders, "partition_inherited")

    def _cancel_orphan(self, order_id: str) -> list[OrderIntent]:
        """A working order made elsewhere, reported in a partition this replica holds: its
        maker died or gave the partition up, and EXEC told this replica only after it took the
        partition over (the scan on acquiring it missed the order). Nobody else drives it."""
        order = self.portfolio.order(order_id)
        if (
            order is None
            or self.ids.mine(order_id)
            or self.partition_of_market(order.condition_id) not in self._scope.held
        ):
            return []
        return self._cancel_all([order], "partition_inherited")

    def on_partition_lost(self, partition: int) -> list[OrderIntent]:
        """Cancels for every working order in ``partition``, made under its last revision; the
        caller publishes them before the lease is released (fencing, DESIGN §5)."""
        orders = [
            order
            for order in self.portfolio.working()
            if self.partition_of_market(order.condition_id) == partition
        ]
        intents = self._cancel_all(orders, "partition_lost")
        self._scope.held.pop(partition, None)
        metrics.holding(self.strategy_id, len(self._scope.held), "lost")
        return intents

    # -- partitions --------------------------------------------------------------------------
    def partition_of_market(self, condition_id: str) -> int:
        """The market's partition as the ingest computes it: its neg-risk group, else itself."""
        market = self.view.market(condition_id)
        group = market.neg_risk_market_id if market is not None else ""
        return market_partition(condition_id, group, self.partitions)

    def _holds_asset(self, asset_id: str) -> bool:
        asset = self.view.asset(asset_id)
        if asset is None or not asset.condition_id:
            return False
        return self.partition_of_market(asset.condition_id) in self._scope.held

    # -- actions to intents ------------------------------------------------------------------
    def _fold(self, event: ExecutionStreamEvent) -> None:
        self.portfolio.apply(event)
        if isinstance(event, OrderEvent) and self.portfolio.order(event.order_id) is None:
            self._cancelling.discard(event.order_id)

    def _run_hook(self, hook: Callable[[], Iterable[Action]]) -> list[Outgoing]:
        try:
            actions = list(hook())
        except Exception:
            # A bug in the strategy must not stop the runtime cancelling and following books.
            self.stats.hook_failures += 1
            metrics.HOOK_FAILURES.labels(self.strategy_id).inc()
            _log.exception("strategy.hook_failed", strategy_id=self.strategy_id)
            return []
        return self.intents_for(actions)

    def intents_for(self, actions: Iterable[Action]) -> list[Outgoing]:
        outgoing: list[Outgoing] = []
        for action in actions:
            if isinstance(action, Report):
                outgoing.append(self._report(action))
                continue
            intent = self._place(action) if isinstance(action, Place) else self._cancel(action)
            if intent is not None:
                outgoing.append(intent)
        return outgoing

    def _report(self, report: Report) -> RiskEvent:
        self.stats.reports += 1
        metrics.REPORTS.labels(self.strategy_id, report.kind).inc()
        now = self.clock()
        _log.info(
            "strategy.reported",
            strategy_id=self.strategy_id,
            kind=report.kind,
            limit=report.limit,
            condition_id=report.condition_id,
        )
        return RiskEvent(
            event_id=self.ids.next_report(),
            ts_event=now,
            ts_init=now,
            strategy_id=self.strategy_id,
            kind=report.kind,
            limit=report.limit,
            detail=report.detail,
            condition_id=report.condition_id,
        )

    def _place(self, place: Place) -> OrderIntent | None:
        asset = self.view.asset(place.asset_id)
        refusal = ""
        if self.halted:
            refusal = "halted"
        elif asset is None or not asset.condition_id:
            refusal = "unknown_asset"
        elif not asset.tradeable:
            refusal = "book_untradeable"
        if refusal or asset is None:
            self._drop(place, refusal)
            return None
        partition = self.partition_of_market(asset.condition_id)
        revision = self._scope.held.get(partition)
        if revision is None:
            self._drop(place, "partition_not_held")
            return None
        intent_id, now = self._next_id()
        intent = OrderIntent(
            event_id=intent_id,
            ts_event=now,
            ts_init=now,
            intent_id=intent_id,
            strategy_id=self.strategy_id,
            action="place",
            condition_id=asset.condition_id,
            asset_id=place.asset_id,
            side=place.side,
            price=place.price,
            size=place.size,
            time_in_force=place.time_in_force,
            post_only=place.post_only,
            expires_at_ns=place.expires_at_ns,
            reason=place.reason,
            partition=partition,
            lease_revision=revision,
        )
        self.portfolio.placed(intent)
        metrics.placed(intent, self.view)
        return intent

    def _drop(self, place: Place, refusal: str) -> None:
        self.stats.dropped_places += 1
        metrics.DROPPED_PLACES.labels(self.strategy_id, refusal).inc()
        # A strategy may keep acting on books of partitions another replica took (the view
        # keeps them); those drops are routine, counted, and only logged at debug.
        log = _log.debug if refusal == "partition_not_held" else _log.info
        log(
            "strategy.place_dropped",
            strategy_id=self.strategy_id,
            asset_id=place.asset_id,
            refusal=refusal,
        )

    def _cancel(self, cancel: Cancel) -> OrderIntent | None:
        order = self.portfolio.order(cancel.order_id)
        if order is None or cancel.order_id in self._cancelling:
            return None  # finished, unknown, or its cancel is already on its way
        if self.partition_of_market(order.condition_id) not in self._scope.held:
            # The portfolio holds every replica's orders (EXEC); one in a partition not held is
            # another replica's to drive, or its own already cancelled when the partition went.
            _log.info(
                "strategy.cancel_dropped",
                strategy_id=self.strategy_id,
                order_id=order.order_id,
                refusal="partition_not_held",
            )
            return None
        return self._cancel_order(order, cancel.reason)

    def _cancel_all(self, orders: Iterable[WorkingOrder], reason: str) -> list[OrderIntent]:
        return [
            self._cancel_order(order, reason)
            for order in list(orders)
            if order.order_id not in self._cancelling
        ]

    def _cancel_order(self, order: WorkingOrder, reason: str) -> OrderIntent:
        self._cancelling.add(order.order_id)
        metrics.INTENTS.labels(self.strategy_id, "cancel").inc()
        partition = self.partition_of_market(order.condition_id)
        intent_id, now = self._next_id()
        return OrderIntent(
            event_id=intent_id,
            ts_event=now,
            ts_init=now,
            intent_id=intent_id,
            strategy_id=self.strategy_id,
            action="cancel",
            condition_id=order.condition_id,
            asset_id=order.asset_id,
            side=order.side,
            target_intent_id=order.order_id,
            reason=reason,
            partition=partition,
            lease_revision=self._scope.held.get(partition, 0),
        )

    def _next_id(self) -> tuple[str, int]:
        self.stats.intents += 1
        return self.ids.next(), self.clock()
