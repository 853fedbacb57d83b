"""exchange.core.book used on its own, as a small order-book library: place (limit, IOC),
cancel, replace, best bid/ask, depth at a price, self-trade prevention as a parameter, and an
unknown id as a result. No exchange, no accounts: only the book."""

from __future__ import annotations

import random

import pytest

from exchange.core import book as book_mod
from exchange.core.book import Order, OrderBook
from exchange.core.orders import StpPolicy

SYM = "CEA-2026"


@pytest.fixture(autouse=True, params=["python", "compiled"])
def book_methods(request):
    """Every test on the Python primitives and, where the extension is built, on the
    compiled ones the library then calls."""
    if request.param == "compiled" and not book_mod.COMPILED_METHODS:
        pytest.skip("the compiled book is not built")
    was = book_mod.use_compiled(request.param == "compiled")
    yield
    book_mod.use_compiled(was)


def order(oid: int, side: str, price: int, qty: int, account: str = "A") -> Order:
    return Order(oid, account, None, SYM, "main", side, price, qty, "GTC", seq=oid)


def test_an_empty_book_has_no_best_prices_and_no_depth():
    b = OrderBook(SYM)
    assert b.best_bid() is None and b.best_ask() is None
    assert b.depth_at("buy", 100) == 0


def test_place_rests_a_limit_order_and_reports_its_level():
    b = OrderBook(SYM)
    r = b.place(order(1, "buy", 100, 5))
    assert r.rested and r.fills == () and r.stp_canceled == ()
    assert r.changes == (("buy", 100, 5),)
    r = b.place(order(2, "buy", 100, 3))
    assert r.changes == (("buy", 100, 8),)
    assert (b.best_bid(), b.best_ask(), b.depth_at("buy", 100)) == (100, None, 8)
    assert b.changes == []  # the library's calls return their changes instead


def test_place_matches_at_the_makers_price_in_time_priority_and_updates_both_sides():
    b = OrderBook(SYM)
    m1, m2, m3 = (
        order(1, "sell", 101, 4, "M"),
        order(2, "sell", 101, 4, "N"),
        order(3, "sell", 102, 10, "M"),
    )
    for m in (m1, m2, m3):
        b.place(m)
    taker = order(4, "buy", 102, 10, "T")
    r = b.place(taker)
    assert [(f.maker.order_id, f.qty, f.price) for f in r.fills] == [
        (1, 4, 101),
        (2, 4, 101),
        (3, 2, 102),
    ]
    assert r.changes == (("sell", 101, 0), ("sell", 102, 8))
    assert not r.rested
    assert (taker.leaves, taker.cum_qty, taker.status) == (0, 10, "filled")
    assert (m1.status, m2.status, m3.status) == ("filled", "filled", "partially_filled")
    assert (m3.leaves, m3.cum_qty) == (8, 2)
    assert b.best_ask() == 102 and b.depth_at("sell", 101) == 0


def test_a_limit_order_rests_its_rest_and_an_ioc_order_cancels_it():
    b = OrderBook(SYM)
    b.place(order(1, "sell", 100, 3, "M"))
    b.place(order(2, "sell", 100, 3, "M"))
    gtc = order(3, "buy", 100, 8, "T")
    r = b.place(gtc)
    assert r.rested and gtc.status == "partially_filled" and gtc.leaves == 2
    assert r.changes == (("sell", 100, 0), ("buy", 100, 2))
    assert b.best_bid() == 100 and 3 in b.orders
    ioc = order(4, "sell", 90, 5, "U")
    r = b.place(ioc, ioc=True)
    assert [(f.maker.order_id, f.qty) for f in r.fills] == [(3, 2)]
    assert not r.rested and ioc.status == "canceled" and ioc.leaves == 3
    assert 4 not in b.orders and b.best_bid() is None


def test_without_self_trade_prevention_an_account_trades_with_itself():
    b = OrderBook(SYM)
    b.place(order(1, "sell", 100, 5, "A"))
    r = b.place(order(2, "buy", 100, 5, "A"))  # stp=None: the default
    assert [(f.maker.order_id, f.qty) for f in r.fills] == [(1, 5)]


@pytest.mark.parametrize(
    "stp, fills, canceled, rested, taker_status",
    [
        (StpPolicy.CANCEL_RESTING, [(2, 3)], [1], False, "filled"),
        (StpPolicy.CANCEL_INCOMING, [], [], False, "canceled"),
        (StpPolicy.CANCEL_BOTH, [], [1], False, "canceled"),
    ],
)
def test_self_trade_prevention_is_a_parameter(stp, fills, canceled, rested, taker_status):
    b = OrderBook(SYM)
    b.place(order(1, "sell", 100, 5, "A"))
    b.place(order(2, "sell", 100, 5, "B"))
    taker = order(3, "buy", 100, 3, "A")
    r = b.place(taker, stp=stp.value)
    assert [(f.maker.order_id, f.qty) for f in r.fills] == fills
    assert [o.order_id for o in r.stp_canceled] == canceled
    assert r.rested is rested and taker.status == taker_status
    for o in r.stp_canceled:
        assert o.status == "canceled" and o.order_id not in b.orders


def test_cancel_takes_a_resting_order_out_and_an_unknown_id_is_a_result():
    b = OrderBook(SYM)
    o = order(1, "buy", 100, 5)
    b.place(o)
    b.place(order(2, "buy", 99, 5))
    missing = b.cancel(42)
    assert not missing.found and missing.order is None and missing.changes == ()
    r = b.cancel(1)
    assert r.found and r.order is o and o.status == "canceled"
    assert r.changes == (("buy", 100, 0),)
    assert b.best_bid() == 99
    assert not b.cancel(1).found  # already gone


def test_replace_down_in_place_keeps_priority_and_a_new_price_loses_it():
    b = OrderBook(SYM)
    first, second = order(1, "buy", 100, 10, "A"), order(2, "buy", 100, 10, "B")
    b.place(first)
    b.place(second)
    r = b.replace(1, qty=6)
    assert r.found and r.placed is None and r.changes == (("buy", 100, 16),)
    assert [o.order_id for o in b.bids[-100]] == [1, 2] and first.leaves == 6
    r = b.replace(1, qty=8)  # larger: to the back of the queue
    assert [o.order_id for o in b.bids[-100]] == [2, 1]
    assert r.changes == (("buy", 100, 10), ("buy", 100, 18))
    b.place(order(3, "sell", 105, 4, "C"))
    r = b.replace(2, price=105)  # re-priced through the matcher: it trades
    assert r.placed is not None and [(f.maker.order_id, f.qty) for f in r.placed.fills] == [(3, 4)]
    assert second.status == "partially_filled" and second.leaves == 6 and b.best_bid() == 105
    assert not b.replace(99, qty=1).found


def test_replace_below_the_filled_quantity_is_refused():
    b = OrderBook(SYM)
    o = order(1, "buy", 100, 10)
    b.place(o)
    b.place(order(2, "sell", 100, 4, "B"))
    with pytest.raises(ValueError, match="does not exceed the filled 4"):
        b.replace(1, qty=4)
    assert o.leaves == 6  # unchanged


def test_a_random_stream_keeps_the_book_consistent_with_its_results():
    """Depth from the results' L2 changes equals the book's own, and every live order is
    resting with leaves = qty - cum_qty."""
    rng = random.Random(7)
    b = OrderBook(SYM)
    depth: dict[tuple[str, int], int] = {}
    live: dict[int, Order] = {}
    for oid in range(1, 3_000):
        roll = rng.random()
        if live and roll < 0.2:
            changes = b.cancel(rng.choice(list(live))).changes
        elif live and roll < 0.3:
            victim = live[rng.choice(list(live))]
            changes = b.replace(
                victim.order_id,
                qty=victim.cum_qty + rng.randint(1, 20),
                price=rng.choice([None, rng.randint(95, 105)]),
            ).changes
        else:
            o = order(
                oid,
                rng.choice(["buy", "sell"]),
                rng.randint(95, 105),
                rng.randint(1, 20),
                rng.choice("ABC"),
            )
            changes = b.place(
                o, ioc=rng.random() < 0.1, stp=rng.choice([None, "cancel_resting", "cancel_both"])
            ).changes
        for side, price, qty in changes:
            depth[(side, price)] = qty
        live = {o.order_id: o for o in b.orders.values()}
    for (side, price), qty in depth.items():
        assert b.depth_at(side, price) == qty
    for o in live.values():
        assert o.leaves == o.qty - o.cum_qty > 0 and o.status in ("new", "partially_filled")
    bid, ask = b.best_bid(), b.best_ask()
    assert bid is None or ask is None or bid < ask
    assert b.changes == []
