"""Paper fills: our orders against the public book and trade prints, conservatively."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from polybus.common.book import OrderBook
from polybus.common.events import OrderIntent, Side, TimeInForce, Trade
from polybus.common.fees import FeeSchedule, taker_fee, taker_fee_value
from polybus.common.money import MICROS
from polybus.common.paper import DUPLICATE_ORDER
from polybus.executor.paper import (
    FAK_NOT_FILLED,
    FOK_NOT_FILLED,
    INVALID_EXPIRATION,
    INVALID_ORDER,
    POST_ONLY_CROSSES,
    POST_ONLY_TYPE,
    PaperFill,
    PaperMatcher,
    PaperOrder,
)

SHARE = MICROS
CRYPTO = FeeSchedule(rate=70_000, exponent=1)


def book(bids: Iterable[tuple[int, int]] = (), asks: Iterable[tuple[int, int]] = ()) -> OrderBook:
    result = OrderBook()
    result.replace(bids, asks)
    return result


def trade(price: int, size: int, side: Side) -> Trade:
    return Trade(
        event_id="t",
        ts_event=0,
        ts_init=0,
        asset_id="a",
        condition_id="c",
        seq=0,
        epoch=0,
        price=price,
        size=size,
        side=side,
    )


def order(
    order_id: str,
    side: Side,
    price: int,
    size: int,
    time_in_force: TimeInForce = "GTC",
    *,
    post_only: bool = False,
    expires_at_ns: int = 0,
) -> PaperOrder:
    return PaperOrder(
        order_id=order_id,
        side=side,
        price=price,
        size=size,
        time_in_force=time_in_force,
        post_only=post_only,
        expires_at_ns=expires_at_ns,
    )


def sizes(fills: Iterable[PaperFill]) -> list[tuple[int, int]]:
    return [(fill.price, fill.size) for fill in fills]


# -- a new order that crosses ------------------------------------------------------------------
def test_a_crossing_limit_order_takes_level_by_level_and_rests_the_rest() -> None:
    matcher = PaperMatcher()
    shown = book(asks=[(500_000, 10 * SHARE), (510_000, 5 * SHARE), (530_000, 100 * SHARE)])

    update = matcher.submit(order("o1", "BUY", 510_000, 20 * SHARE), shown, now_ns=1)

    assert update.status == "partially_filled"
    assert sizes(update.fills) == [(500_000, 10 * SHARE), (510_000, 5 * SHARE)]
    assert [fill.liquidity for fill in update.fills] == ["taker", "taker"]
    assert [fill.leaves for fill in update.fills] == [10 * SHARE, 5 * SHARE]
    assert [fill.fill_id for fill in update.fills] == ["o1:1", "o1:2"]
    assert update.filled_size == 15 * SHARE
    assert update.open_size == matcher.open_size("o1") == 5 * SHARE


def test_a_sell_takes_the_bids_best_first() -> None:
    matcher = PaperMatcher()
    shown = book(bids=[(480_000, 3 * SHARE), (490_000, 2 * SHARE), (470_000, 9 * SHARE)])

    update = matcher.submit(order("s1", "SELL", 480_000, 5 * SHARE), shown, now_ns=1)

    assert update.status == "filled"
    assert sizes(update.fills) == [(490_000, 2 * SHARE), (480_000, 3 * SHARE)]
    assert matcher.open_size("s1") == 0


def test_taker_fills_carry_the_market_fee_and_maker_fills_none() -> None:
    matcher = PaperMatcher(CRYPTO)
    shown = book(bids=[(400_000, 10 * SHARE)], asks=[(600_000, 10 * SHARE)])

    buy = matcher.submit(order("b", "BUY", 600_000, 10 * SHARE), shown, now_ns=1).fills[0]
    sell = matcher.submit(order("s", "SELL", 400_000, 10 * SHARE), shown, now_ns=1).fills[0]

    # 10 x 0.07 x 0.6 x 0.4 = 0.168 pUSD; a BUY gives it up as 0.168 / 0.6 = 0.28 shares.
    assert (buy.fee_value, buy.fee_shares) == (168_000, 280_000)
    assert buy.fee_shares == taker_fee("BUY", 600_000, 10 * SHARE, CRYPTO)
    assert (sell.fee_value, sell.fee_shares) == (168_000, 0)
    assert sell.fee_value == taker_fee_value(400_000, 10 * SHARE, CRYPTO)

    matcher.submit(order("m", "BUY", 500_000, 10 * SHARE), shown, now_ns=2)
    maker = matcher.on_trade(trade(490_000, 10 * SHARE, "SELL"), now_ns=3)
    assert [(fill.liquidity, fill.fee_value, fill.fee_shares) for fill in maker] == [
        ("maker", 0, 0)
    ]


def test_fak_takes_what_is_shown_and_cancels_the_rest() -> None:
    matcher = PaperMatcher()
    shown = book(asks=[(500_000, 4 * SHARE), (520_000, 50 * SHARE)])

    update = matcher.submit(order("f", "BUY", 500_000, 10 * SHARE, "FAK"), shown, now_ns=1)

    assert update.status == "canceled"
    assert sizes(update.fills) == [(500_000, 4 * SHARE)]
    assert update.open_size == matcher.open_size("f") == 0


def test_fak_with_nothing_to_take_is_rejected_like_the_venue() -> None:
    update = PaperMatcher().submit(
        order("f", "BUY", 490_000, SHARE, "FAK"), book(asks=[(500_000, SHARE)]), now_ns=1
    )
    assert (update.status, update.reason, update.fills) == ("rejected", FAK_NOT_FILLED, ())


def test_fok_fills_entirely_from_visible_depth_or_not_at_all() -> None:
    matcher = PaperMatcher()
    shown = book(asks=[(500_000, 4 * SHARE), (510_000, 4 * SHARE)])

    short = matcher.submit(order("k1", "BUY", 510_000, 9 * SHARE, "FOK"), shown, now_ns=1)
    assert (short.status, short.reason, short.fills) == ("rejected", FOK_NOT_FILLED, ())
    assert matcher.taken("SELL", 500_000) == 0

    whole = matcher.submit(order("k2", "BUY", 510_000, 8 * SHARE, "FOK"), shown, now_ns=1)
    assert whole.status == "filled"
    assert sizes(whole.fills) == [(500_000, 4 * SHARE), (510_000, 4 * SHARE)]


def test_post_only_that_would_cross_is_rejected() -> None:
    matcher = PaperMatcher()
    shown = book(bids=[(480_000, SHARE)], asks=[(500_000, SHARE)])

    crossing = matcher.submit(order("p1", "BUY", 500_000, SHARE, post_only=True), shown, 1)
    resting = matcher.submit(order("p2", "SELL", 490_000, SHARE, post_only=True), shown, 1)
    fok = matcher.submit(order("p3", "BUY", 400_000, SHARE, "FOK", post_only=True), shown, 1)

    assert (crossing.status, crossing.reason) == ("rejected", POST_ONLY_CROSSES)
    assert (resting.status, resting.open_size) == ("accepted", SHARE)
    assert (fok.status, fok.reason) == ("rejected", POST_ONLY_TYPE)


def test_invalid_expired_and_duplicate_orders_are_rejected() -> None:
    matcher = PaperMatcher()
    shown = book()
    assert matcher.submit(order("z", "BUY", 0, SHARE), shown, 1).reason == INVALID_ORDER
    assert matcher.submit(order("n", "BUY", 500_000, 0), shown, 1).reason == INVALID_ORDER
    late = order("g", "BUY", 500_000, SHARE, "GTD", expires_at_ns=10)
    assert matcher.submit(late, shown, now_ns=10).reason == INVALID_EXPIRATION
    assert matcher.submit(order("d", "BUY", 500_000, SHARE), shown, 1).status == "accepted"
    assert matcher.submit(order("d", "BUY", 500_000, SHARE), shown, 1).reason == DUPLICATE_ORDER


# -- our own fills use up what we took ---------------------------------------------------------
def test_a_second_order_cannot_take_the_size_the_first_took() -> None:
    matcher = PaperMatcher()
    shown = book(asks=[(500_000, 10 * SHARE), (510_000, 10 * SHARE)])

    matcher.submit(order("a", "BUY", 500_000, 6 * SHARE), shown, now_ns=1)
    second = matcher.submit(order("b", "BUY", 510_000, 10 * SHARE), shown, now_ns=1)

    assert sizes(second.fills) == [(500_000, 4 * SHARE), (510_000, 6 * SHARE)]
    fok = matcher.submit(order("c", "BUY", 510_000, 5 * SHARE, "FOK"), shown, now_ns=1)
    assert fok.reason == FOK_NOT_FILLED


def test_what_we_took_is_forgotten_once_the_level_empties() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("a", "BUY", 500_000, 10 * SHARE), book(asks=[(500_000, 10 * SHARE)]), 1)

    still_shown = book(asks=[(500_000, 12 * SHARE)])
    matcher.on_book(still_shown, now_ns=2)
    assert matcher.available(still_shown, "SELL", 500_000) == 2 * SHARE

    matcher.on_book(book(), now_ns=3)
    refilled = book(asks=[(500_000, 12 * SHARE)])
    matcher.on_book(refilled, now_ns=4)
    assert matcher.available(refilled, "SELL", 500_000) == 12 * SHARE


# -- a resting order and its queue -------------------------------------------------------------
def test_trades_at_its_price_eat_the_queue_ahead_first() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), book(bids=[(480_000, 100 * SHARE)]), 1)
    assert matcher.queue_ahead("r") == 100 * SHARE

    assert matcher.on_trade(trade(480_000, 60 * SHARE, "SELL"), now_ns=2) == []
    assert matcher.queue_ahead("r") == 40 * SHARE

    fills = matcher.on_trade(trade(480_000, 45 * SHARE, "SELL"), now_ns=3)
    assert [(f.price, f.size, f.liquidity, f.leaves) for f in fills] == [
        (480_000, 5 * SHARE, "maker", 5 * SHARE)
    ]
    assert fills[0].fill_id == "r:1"


def test_a_trade_at_its_price_by_a_taker_on_its_own_side_does_nothing() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), book(), 1)
    assert matcher.on_trade(trade(480_000, 60 * SHARE, "BUY"), now_ns=2) == []
    assert matcher.open_size("r") == 10 * SHARE


def test_level_shrinks_are_cancels_behind_unless_below_the_queue_ahead() -> None:
    matcher = PaperMatcher(trade_pairing_window_ns=0)
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), book(bids=[(480_000, 100 * SHARE)]), 1)

    matcher.on_book(book(bids=[(480_000, 150 * SHARE)]), now_ns=2)  # joined behind us
    matcher.on_book(book(bids=[(480_000, 120 * SHARE)]), now_ns=3)  # cancels behind us
    assert matcher.queue_ahead("r") == 100 * SHARE
    matcher.on_book(book(bids=[(480_000, 30 * SHARE)]), now_ns=4)
    assert matcher.queue_ahead("r") == 30 * SHARE


def test_a_shrink_and_its_trade_print_are_not_counted_twice() -> None:
    # The venue may send a match's price_change before its last_trade_price.
    matcher = PaperMatcher(trade_pairing_window_ns=1_000)
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), book(bids=[(480_000, 100 * SHARE)]), 0)

    matcher.on_book(book(bids=[(480_000, 70 * SHARE)]), now_ns=100)
    assert matcher.on_trade(trade(480_000, 30 * SHARE, "SELL"), now_ns=200) == []
    assert matcher.queue_ahead("r") == 70 * SHARE

    fills = matcher.on_trade(trade(480_000, 75 * SHARE, "SELL"), now_ns=300)
    assert sizes(fills) == [(480_000, 5 * SHARE)]


def test_a_shrink_long_before_a_trade_does_not_explain_it() -> None:
    matcher = PaperMatcher(trade_pairing_window_ns=1_000)
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), book(bids=[(480_000, 100 * SHARE)]), 0)

    matcher.on_book(book(bids=[(480_000, 70 * SHARE)]), now_ns=100)
    fills = matcher.on_trade(trade(480_000, 75 * SHARE, "SELL"), now_ns=5_000)
    assert sizes(fills) == [(480_000, 5 * SHARE)]


def test_a_trade_through_its_price_fills_it_up_to_the_traded_size() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), book(bids=[(480_000, 100 * SHARE)]), 1)

    # Whatever side the feed reports: a print below our bid means our bid was passed.
    fills = matcher.on_trade(trade(470_000, 4 * SHARE, "BUY"), now_ns=2)

    assert [(f.price, f.size, f.liquidity) for f in fills] == [(480_000, 4 * SHARE, "maker")]
    assert matcher.queue_ahead("r") == 0
    assert sizes(matcher.on_trade(trade(480_000, 9 * SHARE, "SELL"), now_ns=3)) == [
        (480_000, 6 * SHARE)
    ]
    assert matcher.open_size("r") == 0


def test_the_other_side_crossing_its_price_fills_it_once() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), book(asks=[(500_000, SHARE)]), 1)

    crossed = book(asks=[(470_000, 6 * SHARE), (490_000, SHARE)])
    fills = matcher.on_book(crossed, now_ns=2)
    assert [(f.price, f.size, f.liquidity) for f in fills] == [(480_000, 6 * SHARE, "maker")]
    assert matcher.on_book(crossed, now_ns=3) == []

    grown = book(asks=[(470_000, 20 * SHARE)])  # new liquidity beside what we used
    assert sizes(matcher.on_book(grown, now_ns=4)) == [(480_000, 4 * SHARE)]
    assert matcher.open_size("r") == 0


def test_a_crossing_fills_only_beyond_the_visible_orders_ahead() -> None:
    matcher = PaperMatcher()
    shown = book(bids=[(480_000, 5 * SHARE)], asks=[(500_000, SHARE)])
    matcher.submit(order("r", "BUY", 480_000, 10 * SHARE), shown, 1)

    locked = book(bids=[(490_000, 2 * SHARE), (480_000, 5 * SHARE)], asks=[(480_000, 8 * SHARE)])
    assert sizes(matcher.on_book(locked, now_ns=2)) == [(480_000, SHARE)]


def test_own_orders_at_one_price_queue_in_arrival_order() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("o1", "BUY", 480_000, 10 * SHARE), book(bids=[(480_000, 10 * SHARE)]), 1)
    matcher.submit(order("o2", "BUY", 480_000, 10 * SHARE), book(bids=[(480_000, 20 * SHARE)]), 2)
    # Queue: 10 public, o1, 10 public, o2.
    first = matcher.on_trade(trade(480_000, 15 * SHARE, "SELL"), now_ns=3)
    second = matcher.on_trade(trade(480_000, 15 * SHARE, "SELL"), now_ns=4)
    third = matcher.on_trade(trade(480_000, 3 * SHARE, "SELL"), now_ns=5)

    assert [(f.order_id, f.size) for f in first] == [("o1", 5 * SHARE)]
    assert [(f.order_id, f.size) for f in second] == [("o1", 5 * SHARE)]
    assert [(f.order_id, f.size) for f in third] == [("o2", 3 * SHARE)]


def test_a_through_print_is_shared_best_price_first() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("low", "BUY", 470_000, 10 * SHARE), book(), 1)
    matcher.submit(order("high", "BUY", 480_000, 10 * SHARE), book(), 2)

    fills = matcher.on_trade(trade(460_000, 12 * SHARE, "SELL"), now_ns=3)

    assert [(f.order_id, f.size) for f in fills] == [("high", 10 * SHARE), ("low", 2 * SHARE)]


# -- expiry and cancel -------------------------------------------------------------------------
def test_gtd_orders_expire_on_the_clock_passed_in() -> None:
    matcher = PaperMatcher()
    gtd = order("g", "BUY", 480_000, 10 * SHARE, "GTD", expires_at_ns=1_000)
    assert matcher.submit(gtd, book(), now_ns=1).status == "accepted"

    assert matcher.expire(now_ns=999) == []
    assert matcher.on_trade(trade(470_000, SHARE, "SELL"), now_ns=999)[0].size == SHARE
    assert matcher.on_trade(trade(470_000, SHARE, "SELL"), now_ns=1_000) == []

    expired = matcher.expire(now_ns=1_000)
    assert [(u.order_id, u.status, u.filled_size) for u in expired] == [("g", "expired", SHARE)]
    assert matcher.open_size("g") == 0


def test_cancel_removes_a_resting_order_once() -> None:
    matcher = PaperMatcher()
    matcher.submit(order("c", "SELL", 520_000, 10 * SHARE), book(), now_ns=1)

    update = matcher.cancel("c")
    assert update is not None
    assert (update.status, update.filled_size, update.open_size) == ("canceled", 0, 0)
    assert matcher.cancel("c") is None
    assert matcher.cancel("never") is None
    assert matcher.on_trade(trade(530_000, SHARE, "BUY"), now_ns=2) == []


def test_an_order_comes_from_a_place_intent() -> None:
    intent = OrderIntent(
        event_id="e",
        ts_event=0,
        ts_init=0,
        intent_id="i-1",
        strategy_id="s",
        action="place",
        condition_id="c",
        asset_id="a",
        side="SELL",
        price=550_000,
        size=7 * SHARE,
        time_in_force="GTD",
        post_only=True,
        expires_at_ns=99,
    )
    assert PaperOrder.from_intent(intent) == order(
        "i-1", "SELL", 550_000, 7 * SHARE, "GTD", post_only=True, expires_at_ns=99
    )


# -- properties --------------------------------------------------------------------------------
TICK = 10_000
ticks = st.integers(min_value=1, max_value=99).map(lambda n: n * TICK)
shares = st.integers(min_value=1, max_value=50).map(lambda n: n * SHARE)
levels = st.dictionaries(ticks, shares, max_size=12)
OrderSpec = tuple[Side, int, int, TimeInForce, bool]
orders: st.SearchStrategy[OrderSpec] = st.tuples(
    st.sampled_from(["BUY", "SELL"]),
    ticks,
    shares,
    st.sampled_from(["GTC", "GTD", "FOK", "FAK"]),
    st.booleans(),
)


@st.composite
def one_sided_books(draw: st.DrawFn) -> OrderBook:
    # A real book is not crossed: bids below asks.
    split = draw(st.integers(min_value=2, max_value=98)) * TICK
    bids = {p: s for p, s in draw(levels).items() if p < split}
    asks = {p: s for p, s in draw(levels).items() if p >= split}
    return book(bids.items(), asks.items())


@settings(max_examples=300)
@given(one_sided_books(), st.lists(orders, max_size=12))
def test_taker_fills_never_beat_what_the_book_showed(
    shown: OrderBook, submissions: list[OrderSpec]
) -> None:
    matcher = PaperMatcher(CRYPTO)
    used: dict[tuple[str, int], int] = {}
    for number, (side, price, size, time_in_force, post_only) in enumerate(submissions):
        placed = order(
            f"o{number}", side, price, size, time_in_force, post_only=post_only, expires_at_ns=9
        )
        update = matcher.submit(placed, shown, now_ns=1)
        filled = sum(fill.size for fill in update.fills)
        assert filled == update.filled_size <= size
        if time_in_force == "FOK":
            assert filled in (0, size)
            assert update.status in ("filled", "rejected")
        for fill in update.fills:
            assert fill.liquidity == "taker"
            assert fill.size > 0
            assert fill.price <= price if side == "BUY" else fill.price >= price
            book_side: Side = "SELL" if side == "BUY" else "BUY"
            before = used.get((book_side, fill.price), 0)
            assert fill.size <= shown.size_at(book_side, fill.price) - before
            used[(book_side, fill.price)] = before + fill.size


events = st.one_of(
    orders,
    one_sided_books(),
    st.builds(trade, ticks, shares, st.sampled_from(["BUY", "SELL"])),
)


@settings(max_examples=300)
@given(one_sided_books(), st.lists(events, max_size=25))
def test_no_order_fills_beyond_its_size_or_its_limit(
    first: OrderBook, script: list[OrderSpec | OrderBook | Trade]
) -> None:
    matcher = PaperMatcher(CRYPTO)
    current = first
    placed: dict[str, PaperOrder] = {}
    filled: dict[str, int] = {}
    for now_ns, event in enumerate(script, start=1):
        fills: list[PaperFill]
        if isinstance(event, OrderBook):
            current = event
            fills = matcher.on_book(current, now_ns)
        elif isinstance(event, Trade):
            fills = matcher.on_trade(event, now_ns)
        else:
            side, price, size, time_in_force, post_only = event
            paper = order(
                f"o{now_ns}",
                side,
                price,
                size,
                time_in_force,
                post_only=post_only,
                expires_at_ns=now_ns + 5,
            )
            placed[paper.order_id] = paper
            fills = list(matcher.submit(paper, current, now_ns).fills)
        for fill in fills:
            mine = placed[fill.order_id]
            filled[fill.order_id] = filled.get(fill.order_id, 0) + fill.size
            assert fill.size > 0
            assert filled[fill.order_id] <= mine.size
            assert fill.leaves == mine.size - filled[fill.order_id]
            assert fill.price <= mine.price if mine.side == "BUY" else fill.price >= mine.price
            if fill.liquidity == "maker":
                assert (fill.price, fill.fee_value, fill.fee_shares) == (mine.price, 0, 0)


def test_the_same_inputs_give_the_same_outputs() -> None:
    def run() -> list[object]:
        matcher = PaperMatcher(CRYPTO)
        shown = book(bids=[(480_000, 20 * SHARE)], asks=[(500_000, 5 * SHARE)])
        out: list[object] = [
            matcher.submit(order("a", "BUY", 500_000, 8 * SHARE), shown, 1),
            matcher.submit(
                order("b", "SELL", 520_000, 8 * SHARE, "GTD", expires_at_ns=50), shown, 2
            ),
        ]
        out += matcher.on_trade(trade(530_000, 3 * SHARE, "BUY"), 3)
        out += matcher.on_book(book(bids=[(520_000, 9 * SHARE)], asks=[(540_000, SHARE)]), 4)
        out += matcher.expire(60)
        return out

    assert run() == run()
