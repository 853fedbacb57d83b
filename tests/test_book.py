"""Unit tests of the order book alone (exchange.core.book): price-time priority, levels,
cancel by id, reduce in place, self-trade prevention inside the matcher, L2 changes, state."""

from __future__ import annotations

import pytest

from exchange.core.book import (
    BUY,
    SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_INCOMING,
    STP_CANCEL_RESTING,
    Order,
    OrderBook,
)

_next = iter(range(1, 10**9))


def mk(side, price, qty, account="A", oid=None):
    oid = next(_next) if oid is None else oid
    return Order(oid, account, None, "CEA-2026", "main", side, price, qty, "GTC", seq=oid)


def rest(book, side, price, qty, account="A"):
    o = mk(side, price, qty, account)
    book.add(o)
    return o


def take(book, side, price, qty, account="T", stp=STP_CANCEL_RESTING):
    """Match an incoming order the way the core does; returns (order, fills, stp_cancels,
    killed)."""
    o = mk(side, price, qty, account)
    fills, cancels = [], []
    killed = book.match(o, price, stp, fills, cancels)
    for _m, q, _p in fills:
        o.leaves -= q
        o.cum_qty += q
    return o, fills, cancels, killed


def test_empty_book():
    b = OrderBook()
    assert b.best_bid() is None and b.best_ask() is None
    assert b.depth() == {"bids": [], "asks": []}
    assert not b.crosses(BUY, None) and not b.crosses(SELL, 1)


def test_best_prices_and_depth_sorted_best_first():
    b = OrderBook()
    for p in (100, 102, 101):
        rest(b, BUY, p, 5)
    for p in (105, 103, 104, 103):
        rest(b, SELL, p, 2)
    assert b.best_bid() == 102 and b.best_ask() == 103
    assert b.depth() == {
        "bids": [[102, 5], [101, 5], [100, 5]],
        "asks": [[103, 4], [104, 2], [105, 2]],
    }
    assert b.depth(1) == {"bids": [[102, 5]], "asks": [[103, 4]]}
    assert b.level_qty(SELL, 103) == 4 and b.level_qty(BUY, 999) == 0


def test_crosses():
    b = OrderBook()
    rest(b, BUY, 100, 1)
    rest(b, SELL, 102, 1)
    assert b.crosses(BUY, 102) and b.crosses(BUY, 103) and not b.crosses(BUY, 101)
    assert b.crosses(SELL, 100) and b.crosses(SELL, 99) and not b.crosses(SELL, 101)
    assert b.crosses(BUY, None) and b.crosses(SELL, None)


def test_price_priority_then_time_priority():
    b = OrderBook()
    a1 = rest(b, SELL, 101, 3, "M1")
    a2 = rest(b, SELL, 100, 3, "M2")
    a3 = rest(b, SELL, 100, 3, "M3")
    _, fills, _, _ = take(b, BUY, 101, 8)
    # best price first (100), FIFO within it (a2 before a3), then 101
    assert [(m.order_id, q, p) for m, q, p in fills] == [
        (a2.order_id, 3, 100),
        (a3.order_id, 3, 100),
        (a1.order_id, 2, 101),
    ]
    assert a1.leaves == 1 and a1.cum_qty == 2
    assert b.depth() == {"bids": [], "asks": [[101, 1]]}
    assert set(b.orders) == {a1.order_id}


def test_trade_at_maker_price_and_limit_respected():
    b = OrderBook()
    rest(b, BUY, 100, 5, "M")
    rest(b, BUY, 98, 5, "M")
    o, fills, _, _ = take(b, SELL, 99, 20)
    assert [(q, p) for _, q, p in fills] == [(5, 100)]  # 98 is below the limit
    assert o.leaves == 15
    assert b.best_bid() == 98


def test_market_sweep_with_no_limit():
    b = OrderBook()
    for p in (100, 101, 102):
        rest(b, SELL, p, 1, "M")
    o = mk(BUY, None, 10, "T")
    fills = []
    b.match(o, None, STP_CANCEL_RESTING, fills, [])
    assert [p for _, _, p in fills] == [100, 101, 102]
    assert not b.asks


def test_partially_filled_maker_keeps_its_place():
    b = OrderBook()
    first = rest(b, SELL, 100, 10, "M1")
    second = rest(b, SELL, 100, 10, "M2")
    take(b, BUY, 100, 4)
    _, fills, _, _ = take(b, BUY, 100, 7)
    assert [(m.order_id, q) for m, q, _ in fills] == [(first.order_id, 6), (second.order_id, 1)]
    assert b.level_qty(SELL, 100) == 9


def test_remove_from_middle_of_level_keeps_fifo_of_the_rest():
    b = OrderBook()
    os_ = [rest(b, BUY, 100, i + 1, f"M{i}") for i in range(4)]
    removed = b.remove(os_[1].order_id)
    assert removed is os_[1]
    assert b.level_qty(BUY, 100) == 1 + 3 + 4
    _, fills, _, _ = take(b, SELL, 100, 100)
    assert [m.order_id for m, _, _ in fills] == [os_[0].order_id, os_[2].order_id, os_[3].order_id]
    with pytest.raises(KeyError):
        b.remove(os_[1].order_id)


def test_level_is_a_linked_fifo_that_unlinks_what_leaves():
    """A level is head..tail through the orders' prev/next; an order that leaves it (cancel
    from the front, middle or back, or a full fill) keeps no links, so it holds nothing."""
    b = OrderBook()
    os_ = [rest(b, SELL, 100, 1, f"M{i}") for i in range(5)]
    lv = b.asks[100]
    assert lv.head is os_[0] and lv.tail is os_[4] and list(lv) == os_ and len(lv) == 5
    assert [o.prev for o in os_] == [None] + os_[:4] and [o.next for o in os_] == os_[1:] + [None]
    for i in (2, 4, 0):  # middle, back, front
        b.remove(os_[i].order_id)
        assert os_[i].prev is None and os_[i].next is None
    assert list(lv) == [os_[1], os_[3]] and lv.head is os_[1] and lv.tail is os_[3]
    assert os_[1].prev is None and os_[1].next is os_[3] and os_[3].prev is os_[1]
    _, fills, _, _ = take(b, BUY, 100, 1)  # fills the head, which leaves the level
    assert fills[0][0] is os_[1] and os_[1].next is None and lv.head is lv.tail is os_[3]
    assert os_[3].prev is None and os_[3].next is None and len(lv) == 1


def test_a_dropped_book_unlinks_its_resting_orders():
    """Resting orders link to each other (a reference cycle), and the compiled core makes
    orders outside the cyclic GC; a book that goes away unlinks them (OrderBook.__del__)."""
    import sys

    b = OrderBook()
    os_ = [rest(b, side, 100 if side == BUY else 101, 1) for side in (BUY, SELL) for _ in range(3)]
    held = os_[1]
    del b, os_
    assert held.prev is None and held.next is None
    assert sys.getrefcount(held) == 2  # this name and getrefcount's argument


def test_remove_last_order_deletes_level():
    b = OrderBook()
    o = rest(b, SELL, 100, 1)
    b.remove(o.order_id)
    assert not b.asks and b.best_ask() is None and not b.orders


def test_reduce_keeps_time_priority():
    b = OrderBook()
    first = rest(b, BUY, 100, 10, "M1")
    second = rest(b, BUY, 100, 10, "M2")
    b.reduce(first, 3)
    assert first.leaves == 3 and b.level_qty(BUY, 100) == 13
    _, fills, _, _ = take(b, SELL, 100, 5)
    assert [(m.order_id, q) for m, q, _ in fills] == [(first.order_id, 3), (second.order_id, 2)]


def test_stp_cancel_resting_skips_own_and_continues():
    b = OrderBook()
    own = rest(b, SELL, 100, 5, "T")
    other = rest(b, SELL, 100, 5, "M")
    o, fills, cancels, killed = take(b, BUY, 100, 5, "T", STP_CANCEL_RESTING)
    assert not killed
    assert cancels == [own]
    assert [(m.order_id, q) for m, q, _ in fills] == [(other.order_id, 5)]
    assert not b.orders and not b.asks


def test_stp_cancel_incoming_stops_before_own_order():
    b = OrderBook()
    other = rest(b, SELL, 100, 2, "M")
    own = rest(b, SELL, 100, 5, "T")
    rest(b, SELL, 100, 5, "M")
    o, fills, cancels, killed = take(b, BUY, 100, 10, "T", STP_CANCEL_INCOMING)
    assert killed and cancels == []
    assert [(m.order_id, q) for m, q, _ in fills] == [(other.order_id, 2)]
    assert own.order_id in b.orders and b.level_qty(SELL, 100) == 10


def test_stp_cancel_both():
    b = OrderBook()
    own = rest(b, SELL, 100, 5, "T")
    rest(b, SELL, 100, 5, "M")
    o, fills, cancels, killed = take(b, BUY, 100, 10, "T", STP_CANCEL_BOTH)
    assert killed and cancels == [own] and fills == []
    assert own.order_id not in b.orders and b.level_qty(SELL, 100) == 5


@pytest.mark.parametrize(
    "stp,expect",
    [
        (STP_CANCEL_RESTING, 7),  # own order skipped
        (STP_CANCEL_INCOMING, 2),  # counting stops at the own order
        (STP_CANCEL_BOTH, 2),
    ],
)
def test_fillable_matches_stp_policy(stp, expect):
    b = OrderBook()
    rest(b, SELL, 100, 2, "M")
    rest(b, SELL, 100, 5, "T")
    rest(b, SELL, 101, 5, "M")
    rest(b, SELL, 105, 50, "M")
    assert b.fillable(BUY, 101, "T", stp, 100) == expect


def test_fillable_stops_at_need_and_limit():
    b = OrderBook()
    rest(b, BUY, 100, 5, "M")
    rest(b, BUY, 99, 5, "M")
    assert b.fillable(SELL, 100, "T", STP_CANCEL_RESTING, 100) == 5
    assert b.fillable(SELL, 99, "T", STP_CANCEL_RESTING, 6) >= 6
    assert b.fillable(SELL, None, "T", STP_CANCEL_RESTING, 100) == 10


def test_drain_changes_reports_new_level_qty_and_zero_for_removed():
    b = OrderBook()
    rest(b, BUY, 100, 5, "M")
    rest(b, SELL, 101, 3, "M")
    b.drain_changes()
    take(b, BUY, 101, 3)
    rest(b, BUY, 100, 2, "M")
    ch = dict(((s, p), q) for s, p, q in b.drain_changes())
    assert ch == {("sell", 101): 0, ("buy", 100): 7}
    assert b.drain_changes() == ()


def test_state_round_trip_preserves_priority():
    b = OrderBook("CEA-2026", "main")
    rest(b, BUY, 100, 5, "A")
    x = rest(b, BUY, 100, 6, "B")
    rest(b, SELL, 102, 7, "C")
    take(b, SELL, 100, 2)
    state = b.to_state()
    c = OrderBook("CEA-2026", "main")
    loaded = c.load_state(state)
    assert [o.order_id for o in loaded] == [o.order_id for o in b.iter_orders()]
    assert c.depth() == b.depth() and c.to_state() == state
    _, fills, _, _ = take(c, SELL, 100, 10)
    assert [q for _, q, _ in fills] == [3, 6] and fills[1][0].order_id == x.order_id


def test_iter_orders_bids_then_asks_best_first_fifo():
    b = OrderBook()
    a = rest(b, BUY, 99, 1)
    c = rest(b, BUY, 100, 1)
    d = rest(b, BUY, 100, 1)
    e = rest(b, SELL, 103, 1)
    f = rest(b, SELL, 101, 1)
    assert [o.order_id for o in b.iter_orders()] == [
        c.order_id,
        d.order_id,
        a.order_id,
        f.order_id,
        e.order_id,
    ]


def test_first_key_pins_sortedcontainers_internals():
    """book.first_key reads SortedDict internals (``_list._lists[0][0]``) on the hot path; pin it
    against the public ``keys()[0]`` through inserts and deletes that split and merge the
    internal sublists (load factor 1,000)."""
    import random

    from sortedcontainers import SortedDict

    import exchange.core.book as bookmod

    first_key = getattr(bookmod, "first_key", None)
    if first_key is None:
        pytest.skip("book.first_key not present")
    rng = random.Random(3)
    sd = SortedDict()
    split = False
    for phase_delete in (0.1, 0.7):  # grow to several sublists, then shrink (merges)
        for i in range(5_000):
            if sd and rng.random() < phase_delete:
                k = sd.keys()[0] if rng.random() < 0.3 else sd.keys()[rng.randrange(len(sd))]
                del sd[k]
            else:
                sd[rng.randint(-50_000, 50_000)] = i
            if sd:
                assert first_key(sd) == sd.keys()[0]
            split = split or len(sd._list._lists) > 1
    assert split


def test_stp_cancel_both_removes_emptied_level():
    """Regression: under cancel_both an emptied level stayed in the SortedDict (best_bid showed
    it, and the next order reaching it raised StopIteration out of the core)."""
    b = OrderBook()
    rest(b, BUY, 100, 5, "T")
    rest(b, BUY, 99, 5, "M")
    _, fills, cancels, killed = take(b, SELL, 100, 5, "T", STP_CANCEL_BOTH)
    assert killed and len(cancels) == 1 and fills == []
    assert b.best_bid() == 99
    assert b.depth()["bids"] == [[99, 5]]
    _, fills, _, _ = take(b, SELL, 99, 5, "M2")  # crashes with StopIteration today
    assert [q for _, q, _ in fills] == [5]


# ------------------------------------------------------------------ compiled methods
# exchange/core/_accel.c installs OrderBook.add/remove/crosses/match in C where the extension is
# built; book.PY_METHODS keeps the Python functions (the reference). Same operations, two
# books, one per implementation: everything observable must agree after every step.

from hypothesis import given, settings, strategies as st  # noqa: E402

from exchange.core import book as book_mod  # noqa: E402

needs_compiled = pytest.mark.skipif(
    not book_mod.COMPILED_METHODS, reason="exchange.core._accel is not built (no compiler)"
)


def _snapshot(b: OrderBook):
    levels = [
        (k, lv.qty, [(o.order_id, o.leaves, o.cum_qty) for o in lv])
        for side in (b.bids, b.asks)
        for k, lv in side.items()
    ]
    for side in (b.bids, b.asks):  # the queue's links agree both ways
        for lv in side.values():
            back = []
            o = lv.tail
            while o is not None:
                back.append(o)
                o = o.prev
            assert back[::-1] == list(lv) and lv.head.prev is None
    for side in (b.bids, b.asks):
        side._list._check()  # sortedcontainers' own consistency check
        assert list(side.keys()) == sorted(side.keys())
    return levels, sorted(b.orders), list(b.changes)


class _Pair:
    """The same book twice: compiled methods on one, PY_METHODS on the other."""

    def __init__(self, load=None):
        self.c, self.p = OrderBook(), OrderBook()
        if load is not None:  # a small sublist load: the public SortedList paths
            for b in (self.c, self.p):
                b.bids._reset(load)
                b.asks._reset(load)
        self.live: list[int] = []
        self.oid = 0

    def both(self, name, *args_for):
        """Call ``name`` on both books; args_for(book) gives each one its own arguments."""
        out = []
        for b, fn in (
            (self.c, getattr(self.c, name)),
            (self.p, lambda *a, b=None, _n=name: book_mod.PY_METHODS[_n](self.p, *a)),
        ):
            args = args_for[0](b) if args_for else ()
            try:
                out.append(("ok", fn(*args)))
            except Exception as e:  # noqa: BLE001 - the same exception type is the contract
                out.append(("raised", type(e)))
        return out

    def check(self):
        assert _snapshot(self.c) == _snapshot(self.p)


def _order(oid, side, price, qty, account):
    return Order(oid, account, None, "CEA-2026", "main", side, price, qty, "GTC", seq=oid)


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from([BUY, SELL]),
            st.integers(95, 105),
            st.sampled_from([1, 2, 5, 10, 2**40, 2**70]),
            st.sampled_from("ABC"),
        ),
        st.tuples(
            st.just("match"),
            st.sampled_from([BUY, SELL]),
            st.one_of(st.none(), st.integers(90, 110)),
            st.integers(1, 40),
            st.sampled_from("ABCT"),
            st.sampled_from([STP_CANCEL_RESTING, STP_CANCEL_INCOMING, STP_CANCEL_BOTH]),
        ),
        st.tuples(st.just("remove"), st.integers(0, 60)),
        st.tuples(
            st.just("crosses"),
            st.sampled_from([BUY, SELL]),
            st.one_of(st.none(), st.integers(90, 110), st.just(2**70)),
        ),
    ),
    max_size=60,
)


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(ops=ops, load=st.sampled_from([None, 4]))
def test_compiled_book_methods_agree_with_the_python_ones(ops, load):
    pr = _Pair(load)
    for op in ops:
        if op[0] == "add":
            _, side, price, qty, acct = op
            pr.oid += 1
            oid = pr.oid
            r = pr.both("add", lambda b: (_order(oid, side, price, qty, acct),))
            assert r[0] == r[1]
            pr.live.append(oid)
        elif op[0] == "match":
            _, side, limit, qty, acct, stp = op
            pr.oid += 1
            oid = pr.oid
            seen = []

            def args(b):
                fills, cancels = [], []
                seen.append((fills, cancels))
                return (_order(oid, side, limit or 100, qty, acct), limit, stp, fills, cancels)

            r = pr.both("match", args)
            assert r[0] == r[1]
            (fc, cc), (fp, cp) = seen
            assert [(m.order_id, q, px) for m, q, px in fc] == [
                (m.order_id, q, px) for m, q, px in fp
            ]
            assert [m.order_id for m in cc] == [m.order_id for m in cp]
        elif op[0] == "remove":
            i = op[1]
            oid = pr.live[i % len(pr.live)] if pr.live and i < 50 else 10**6 + i
            r = pr.both("remove", lambda b: (oid,))
            assert [x[0] for x in r] == [r[1][0]] * 2
            if r[0][0] == "ok":
                assert r[0][1].order_id == r[1][1].order_id == oid
            else:
                assert r[0] == r[1] == ("raised", KeyError)
        else:
            _, side, price = op
            r = pr.both("crosses", lambda b: (side, price))
            assert r[0] == r[1]
        pr.check()


@needs_compiled
def test_compiled_methods_are_installed_and_can_be_switched_off():
    assert OrderBook.__dict__["match"] is book_mod.COMPILED_METHODS["match"]
    was = book_mod.use_compiled(False)
    try:
        assert was is True
        assert OrderBook.__dict__["match"] is book_mod.PY_METHODS["match"]
        test_stp_cancel_both()  # the Python methods still pass the unit tests
    finally:
        book_mod.use_compiled(True)
    assert OrderBook.__dict__["add"] is book_mod.COMPILED_METHODS["add"]
