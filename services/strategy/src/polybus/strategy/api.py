"""The strategy API: a plain Python class, no NATS in it.

A strategy reacts to books, fills and time and answers with *actions*; the runtime (live on the
bus, on a store replay, or in a backtest with a simulated clock) turns them into
``OrderIntent``s, tracks what they became, and hands the results back. The same class therefore
runs live, replayed and backtested::

    class Example(Strategy):
        name = "example"

        def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
            book = view.book(asset_id)
            if book is None or book.best_bid is None or self.portfolio.working(asset_id):
                return ()
            return (Place(asset_id=asset_id, side="BUY", price=book.best_bid, size=MICROS),)

Money is micro-units (DESIGN §2). Hooks are called only for assets whose book is tradeable
(``view.tradeable``), except :meth:`Strategy.on_untradeable`; the runtime itself cancels a
strategy's working orders on an asset that turns untradeable, on halt and on losing a partition.
Besides orders a hook may return a :class:`Report`: something the operator must hear about
(a one-legged fill and what was done about it), published as a ``RiskEvent``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import msgspec

from polybus.common.book_view import BookView
from polybus.common.events import Fill, RiskKind, Side, TimeInForce


@dataclass(frozen=True, slots=True, kw_only=True)
class Place:
    """Place an order: becomes an ``OrderIntent`` with action ``place``."""

    asset_id: str
    side: Side
    price: int
    size: int
    time_in_force: TimeInForce = "GTC"
    post_only: bool = False
    expires_at_ns: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Cancel a working order, named by the intent id that placed it."""

    order_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Tell the operator: becomes a ``RiskEvent`` of this strategy on
    ``exec.<strategy_id>.risk.<condition_id>``, stored by the EXEC stream like the intents."""

    kind: RiskKind
    detail: str
    """What happened, for a person; no secrets (it ends up in logs and the database)."""
    condition_id: str = ""
    limit: str = ""
    """A stable code to filter on: the limit concerned, or the outcome (``one_legged``)."""


Action = Place | Cancel | Report


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkingOrder:
    """An order of this strategy the executor has not finished with (from EXEC)."""

    order_id: str
    asset_id: str
    condition_id: str
    side: Side
    price: int
    size: int
    filled_size: int
    status: str
    """The last ``OrderEvent`` status: submitted, accepted, partially_filled or unknown."""


class Portfolio(Protocol):
    """What the strategy holds and has working, rebuilt from the EXEC stream by the runtime."""

    def position(self, asset_id: str) -> int:
        """Signed shares held (provisional: matched fills count), micro-units."""
        ...

    def working(self, asset_id: str | None = None) -> Sequence[WorkingOrder]:
        """Working orders, of one asset or all."""
        ...

    def realized_pnl(self) -> int:
        """Realised PnL of the strategy so far, pUSD micro-units."""
        ...


class Strategy:
    """Subclass it, set ``name`` (the strategy id on the bus) and override the hooks you need.

    ``settings_type`` is the strategy's config section (``[strategy.<name>]``), decoded and
    validated like every polybus config Struct; the instance gets it as ``self.settings``.
    ``self.portfolio`` is what the strategy holds. ``self.view`` is the runtime's book view,
    set before the first hook is called (the same object ``on_book`` receives), so
    ``on_fill`` and ``on_timer`` can read books too; until then it is an empty view.
    """

    name: ClassVar[str]
    settings_type: ClassVar[type[msgspec.Struct]] = msgspec.Struct

    def __init__(self, settings: msgspec.Struct, portfolio: Portfolio) -> None:
        self.settings = settings
        self.portfolio = portfolio
        self.view = BookView()

    def on_book(self, view: BookView, asset_id: str) -> Iterable[Action]:
        """The book of ``asset_id`` changed (it is tradeable)."""
        return ()

    def on_fill(self, fill: Fill) -> Iterable[Action]:
        """One of this strategy's orders was filled (again on each settlement status)."""
        return ()

    def on_timer(self, now_ns: int) -> Iterable[Action]:
        """Called on the runtime's timer (live: every ``timer_interval_s``; backtest: on the
        simulated clock)."""
        return ()

    def on_untradeable(self, view: BookView, asset_id: str) -> Iterable[Action]:
        """The book of ``asset_id`` went stale, resyncing or closed. The runtime cancels the
        working orders there already; return anything else to do (e.g. hedge elsewhere)."""
        return ()
