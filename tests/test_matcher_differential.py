"""Differential test of the matcher against a small, obviously-correct reference matcher.

The reference keeps every resting order in ONE Python list and answers every question by a
linear scan: the best maker is the order with the best price, then the earliest priority stamp.
It implements the same rules as the core (price-time priority, trade at the maker's price, the
three self-trade prevention policies, FOK = fill completely or not at all, market orders
bounded by their protection price, post-only refused when it would cross, an amend that
re-prices or enlarges loses priority, a decrease keeps it).

Random streams run through both, compared fill by fill (maker order id, quantity, price), with
the self-trade cancels, and the whole book (every order in priority order with its leaves)
after every command: first against ``OrderBook`` alone, then against the full ``Exchange``.
"""

from __future__ import annotations

import bisect
import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.book import Order, OrderBook
from exchange.core.commands import AmendOrder, CancelOrder, PlaceOrder
from exchange.core.events import ExecutionReport, Trade

from helpers import CEA, Market


# =========================================================================== the reference


class RefOrder:
    def __init__(self, oid, account, side, price, qty, prio):
        self.oid, self.account, self.side, self.price = oid, account, side, price
        self.qty, self.leaves, self.prio = qty, qty, prio

    def __repr__(self):
        return f"R({self.oid},{self.account},{self.side},{self.price},{self.leaves},{self.prio})"


class RefBook:
    """A list of resting orders and linear scans. Nothing clever."""

    def __init__(self):
        self.resting: list[RefOrder] = []
        self.clock = 0

    def stamp(self) -> int:
        self.clock += 1
        return self.clock

    @staticmethod
    def _crosses(side, limit, maker_price) -> bool:
        if limit is None:
            return True
        return maker_price <= limit if side == "buy" else maker_price >= limit

    def best_maker(self, side, limit):
        best = None
        for o in self.resting:
            if o.side == side or not self._crosses(side, limit, o.price):
                continue
            if best is None:
                best = o
                continue
            better_price = o.price < best.price if side == "buy" else o.price > best.price
            if better_price or (o.price == best.price and o.prio < best.prio):
                best = o
        return best

    def match(self, side, limit, qty, account, stp):
        """Returns (fills [(maker oid, q, price)], stp_cancelled [oid], killed, left)."""
        fills, cancelled, killed, left = [], [], False, qty
        while left:
            m = self.best_maker(side, limit)
            if m is None:
                break
            if m.account == account:
                if stp == "cancel_incoming":
                    killed = True
                    break
                self.resting.remove(m)
                cancelled.append(m.oid)
                if stp == "cancel_both":
                    killed = True
                    break
                continue
            q = min(left, m.leaves)
            m.leaves -= q
            left -= q
            fills.append((m.oid, q, m.price))
            if m.leaves == 0:
                self.resting.remove(m)
        return fills, cancelled, killed, left

    def fillable(self, side, limit, qty, account, stp) -> bool:
        trial = copy.deepcopy(self)
        fills, _, _, _ = trial.match(side, limit, qty, account, stp)
        return sum(q for _, q, _ in fills) >= qty

    def crosses(self, side, limit) -> bool:
        return self.best_maker(side, limit) is not None

    def rest(self, oid, account, side, price, qty, leaves=None, prio=None):
        o = RefOrder(oid, account, side, price, qty, self.stamp() if prio is None else prio)
        if leaves is not None:
            o.leaves = leaves
        self.resting.append(o)
        return o

    def find(self, oid):
        for o in self.resting:
            if o.oid == oid:
                return o
        return None

    def view(self):
        """Every resting order in priority order: bids best first, then asks best first."""
        bids = sorted(
            (o for o in self.resting if o.side == "buy"), key=lambda o: (-o.price, o.prio)
        )
        asks = sorted(
            (o for o in self.resting if o.side == "sell"), key=lambda o: (o.price, o.prio)
        )
        return [(o.oid, o.side, o.price, o.leaves) for o in bids + asks]


POLICIES = ["cancel_resting", "cancel_incoming", "cancel_both"]


# =========================================================================== book alone


def book_view(b: OrderBook):
    return [(o.order_id, o.side, o.price, o.leaves) for o in b.iter_orders()]


def run_book_stream(ops):
    book, ref = OrderBook(CEA, "main"), RefBook()
    next_id = 0
    for op in ops:
        kind = op[0]
        if kind == "add":
            _, acct, side, price, qty, market, stp = op
            next_id += 1
            limit = None if market else price
            o = Order(next_id, acct, None, CEA, "main", side, limit, qty, "GTC", seq=next_id)
            fills, cancels = [], []
            killed = book.match(o, limit, stp, fills, cancels)
            got = [(m.order_id, q, p) for m, q, p in fills]
            for _m, q, _p in fills:
                o.leaves -= q
                o.cum_qty += q
            rf, rc, rk, left = ref.match(side, limit, qty, acct, stp)
            assert got == rf, f"fills differ on {op}"
            assert [m.order_id for m in cancels] == rc
            assert killed == rk and o.leaves == left
            for m, _q, _p in fills:  # makers' own bookkeeping
                assert m.cum_qty + m.leaves == m.qty
            if left and not killed and not market:
                book.add(o)
                ref.rest(next_id, acct, side, price, qty, leaves=left)
        elif kind == "cancel":
            live = [o.oid for o in ref.resting]
            if not live:
                continue
            oid = live[op[1] % len(live)]
            assert book.remove(oid).order_id == oid
            ref.resting.remove(ref.find(oid))
        elif kind == "reduce":
            live = [o for o in ref.resting if o.leaves > 1]
            if not live:
                continue
            r = live[op[1] % len(live)]
            new_leaves = 1 + op[2] % (r.leaves - 1)
            bo = book.orders[r.oid]
            book.reduce(bo, new_leaves)
            bo.qty = bo.cum_qty + new_leaves  # as the core's amend does
            r.leaves = new_leaves  # keeps its priority
        assert book_view(book) == ref.view(), f"books differ after {op}"
        d = book.depth(10_000)
        levels = {}
        for oid, side, price, leaves in ref.view():
            levels[(side, price)] = levels.get((side, price), 0) + leaves
        assert {("buy", p): q for p, q in d["bids"]} | {
            ("sell", p): q for p, q in d["asks"]
        } == levels
        bb, ba = book.best_bid(), book.best_ask()
        assert bb is None or ba is None or bb < ba
    return book, ref


book_op = st.one_of(
    st.tuples(
        st.just("add"),
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from(["buy", "sell"]),
        st.integers(95, 105),
        st.integers(1, 12),
        st.sampled_from([False] * 9 + [True]),
        st.sampled_from(POLICIES),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 10**6)),
    st.tuples(st.just("reduce"), st.integers(0, 10**6), st.integers(0, 10**6)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(book_op, min_size=1, max_size=120))
def test_book_matches_reference(ops):
    run_book_stream(ops)


@pytest.mark.parametrize("seed", [1, 2])
def test_book_matches_reference_long_stream(seed):
    """A long seeded stream: deep levels, many partial fills, sweeps across levels."""
    rng = random.Random(seed)
    ops = []
    for _ in range(3_000):
        r = rng.random()
        if r < 0.25:
            ops.append(("cancel", rng.randrange(10**6)))
        elif r < 0.3:
            ops.append(("reduce", rng.randrange(10**6), rng.randrange(10**6)))
        else:
            side = rng.choice(["buy", "sell"])
            # mostly passive (the book grows deep), about one in six crosses the spread
            price = rng.randint(88, 101) if side == "buy" else rng.randint(99, 112)
            ops.append(
                (
                    "add",
                    rng.choice("ABCDE"),
                    side,
                    price,
                    rng.randint(1, 30),
                    rng.random() < 0.02,
                    rng.choice(POLICIES),
                )
            )
    book, ref = run_book_stream(ops)
    assert len(book.orders) == len(ref.resting) > 50


# =========================================================================== full core

FIRMS = ["A", "B", "C", "D"]


def core_market(policies):
    m = Market(main_fee_bps=5)
    for f, pol in zip(FIRMS, policies):
        m.firm(f, cash=10**12, units=10**6, stp=pol)
    return m


def run_core_stream(policies, ops):
    m, ref = core_market(policies), RefBook()
    stp = dict(zip(FIRMS, policies))
    lo, hi = m.ex.instruments[CEA].band()
    for op in ops:
        kind = op[0]
        if kind == "place":
            _, acct, side, price, qty, tif, post_only = op
            market = tif == "MKT"
            cmd = PlaceOrder(
                account=acct,
                instrument=CEA,
                side=side,
                qty=qty,
                price=None if market else price,
                order_type="market" if market else "limit",
                tif="IOC" if market else tif,
                post_only=post_only and not market and tif in ("GTC", "DAY"),
            )
            evs = m.apply(cmd)
            limit = (hi if side == "buy" else lo) if market else price
            # the reference decides acceptance by its own rules
            if cmd.post_only and ref.crosses(side, limit):
                exp_reject = "POST_ONLY_WOULD_CROSS"
            elif cmd.tif == "FOK" and not ref.fillable(side, limit, qty, acct, stp[acct]):
                exp_reject = "FOK_NOT_FILLED"
            else:
                exp_reject = None
            ers = [e for e in evs if isinstance(e, ExecutionReport)]
            if exp_reject:
                assert [(e.exec_type, e.reason) for e in ers] == [("rejected", exp_reject)], op
                continue
            oid = ers[0].order_id
            assert ers[0].exec_type == "new"
            fills, cancels, killed, left = ref.match(side, limit, qty, acct, stp[acct])
            got = [
                ((t.sell_order_id if side == "buy" else t.buy_order_id), t.qty, t.price)
                for t in evs
                if isinstance(t, Trade)
            ]
            assert got == fills, f"fills differ on {op}"
            got_cx = [e.order_id for e in ers if e.exec_type == "canceled" and e.order_id != oid]
            assert got_cx == cancels, op
            if left and not killed and tif in ("GTC", "DAY"):
                ref.rest(oid, acct, side, price, qty, leaves=left)
        elif kind == "cancel":
            if not ref.resting:
                continue
            o = ref.resting[op[1] % len(ref.resting)]
            evs = m.apply(CancelOrder(account=o.account, order_id=o.oid))
            assert [e.exec_type for e in evs if isinstance(e, ExecutionReport)] == ["canceled"]
            ref.resting.remove(o)
        elif kind == "amend":
            if not ref.resting:
                continue
            o = ref.resting[op[1] % len(ref.resting)]
            dq, dp = op[2], op[3]
            core_o = m.ex.accounts[o.account].orders[o.oid]
            new_qty = max(core_o.cum_qty + 1, o.qty + dq)
            new_price = o.price + dp
            if new_qty == o.qty and new_price == o.price:
                continue
            cum_before = core_o.cum_qty  # the core updates its order in place
            evs = m.apply(
                AmendOrder(account=o.account, order_id=o.oid, qty=new_qty, price=new_price)
            )
            if core_o.post_only and new_price != o.price and ref.crosses(o.side, new_price):
                assert [getattr(e, "code", None) for e in evs] == ["POST_ONLY_WOULD_CROSS"], op
                assert book_view(m.book()) == ref.view()
                continue
            assert [e.exec_type for e in evs if isinstance(e, ExecutionReport)][0] == "replaced"
            new_leaves = new_qty - cum_before
            if new_price == o.price and new_qty < o.qty:
                o.qty, o.leaves = new_qty, new_leaves  # keeps priority
                assert not [e for e in evs if isinstance(e, Trade)]
            else:
                ref.resting.remove(o)
                fills, cancels, killed, left = ref.match(
                    o.side, new_price, new_leaves, o.account, stp[o.account]
                )
                got = [
                    ((t.sell_order_id if o.side == "buy" else t.buy_order_id), t.qty, t.price)
                    for t in evs
                    if isinstance(t, Trade)
                ]
                assert got == fills, f"amend fills differ on {op}"
                if left and not killed:
                    ref.rest(o.oid, o.account, o.side, new_price, new_qty, leaves=left)
        book = m.book()
        assert book_view(book) == ref.view(), f"books differ after {op}"
    m.ex.check_invariants()
    return m, ref


core_op = st.one_of(
    st.tuples(
        st.just("place"),
        st.sampled_from(FIRMS),
        st.sampled_from(["buy", "sell"]),
        st.integers(8_495, 8_505),
        st.integers(1, 15),
        st.sampled_from(["GTC"] * 5 + ["DAY", "IOC", "FOK", "MKT"]),
        st.sampled_from([False] * 6 + [True]),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 10**6)),
    st.tuples(
        st.just("amend"),
        st.integers(0, 10**6),
        st.sampled_from([-3, -1, 0, 2]),
        st.sampled_from([0, 0, -1, 1]),
    ),
)


@settings(max_examples=100, deadline=None)
@given(
    policies=st.lists(st.sampled_from(POLICIES), min_size=4, max_size=4),
    ops=st.lists(core_op, min_size=1, max_size=80),
)
def test_core_matches_reference(policies, ops):
    run_core_stream(policies, ops)


def test_core_matches_reference_long_stream():
    rng = random.Random(11)
    ops = []
    for _ in range(2_000):
        r = rng.random()
        if r < 0.2:
            ops.append(("cancel", rng.randrange(10**6)))
        elif r < 0.3:
            ops.append(
                (
                    "amend",
                    rng.randrange(10**6),
                    rng.choice([-3, -1, 0, 2]),
                    rng.choice([0, 0, -1, 1]),
                )
            )
        else:
            side = rng.choice(["buy", "sell"])
            price = rng.randint(8_480, 8_503) if side == "buy" else rng.randint(8_497, 8_520)
            ops.append(
                (
                    "place",
                    rng.choice(FIRMS),
                    side,
                    price,
                    rng.randint(1, 40),
                    rng.choice(["GTC"] * 6 + ["DAY", "IOC", "FOK", "MKT"]),
                    rng.random() < 0.1,
                )
            )
    policies = [POLICIES[i % len(POLICIES)] for i in range(len(FIRMS))]
    m, ref = run_core_stream(policies, ops)
    assert len(ref.resting) > 30


# =========================================================================== benchmark stream


def test_benchmark_stream_agrees_with_its_generator_and_the_reference():
    """loadtest.streams tracks live orders with its own heap matcher: the full core (every
    command accepted, no self-trade), the book alone and the list reference must all see the
    same fills on that stream, and the stream must be the same for the same seed."""
    from loadtest.streams import ADD, core_commands, generate, market_setup_commands

    from exchange.app.engine import Sequencer, build_exchange

    stream = generate(3_000, seed=5, depth_ticks=40)
    assert generate(3_000, seed=5, depth_ticks=40).ops == stream.ops
    assert generate(3_000, seed=6, depth_ticks=40).ops != stream.ops
    seqr = Sequencer(build_exchange())
    seqr.run(market_setup_commands(stream))
    ex = seqr.ex
    fills = traded = 0
    for cmd, seq, ts in core_commands(stream, first_seq=ex.last_seq + 1, first_ts=ex.now + 1):
        for ev in ex.apply(cmd, seq, ts):
            assert not (isinstance(ev, ExecutionReport) and ev.exec_type == "rejected"), ev
            assert getattr(ev, "TYPE", "") != "command_rejected", ev
            if isinstance(ev, Trade):
                fills += 1
                traded += ev.qty
    assert (fills, traded) == (stream.expected_fills, stream.expected_traded_qty) != (0, 0)
    assert sum(len(b.orders) for b in ex.books.values()) == stream.expected_resting
    ex.check_invariants()
    # the same stream through the book alone and the reference, fill by fill
    book, ref = OrderBook(CEA, "main"), RefBook()
    for op in stream.ops:
        if op[0] != ADD:
            book.remove(op[1])
            ref.resting.remove(ref.find(op[1]))
            continue
        _, oid, side, price, qty, acct = op
        o = Order(oid, acct, None, CEA, "main", side, price, qty, "GTC", seq=oid)
        got: list = []
        book.match(o, price, "cancel_resting", got, [])
        rf, _, _, left = ref.match(side, price, qty, acct, "cancel_resting")
        assert [(m.order_id, q, p) for m, q, p in got] == rf
        o.leaves, o.cum_qty = left, qty - left
        if left:
            book.add(o)
            ref.rest(oid, acct, side, price, qty, leaves=left)
    assert book_view(book) == ref.view()


# =========================================================================== thousands of levels


class BisectRef:
    """A second plain reference for books far too deep for linear scans: each side one sorted
    Python list of (price key, priority, order id), kept with bisect; best = element 0."""

    def __init__(self):
        self.side = {"buy": [], "sell": []}
        self.orders: dict[int, list] = {}  # oid -> [side, price, leaves, prio]

    @staticmethod
    def key(side, price):
        return -price if side == "buy" else price

    def match(self, side, price, qty):
        opp_side = "sell" if side == "buy" else "buy"
        opp = self.side[opp_side]
        fills = []
        while qty and opp:
            k, _prio, oid = opp[0]
            mp = -k if opp_side == "buy" else k
            if (side == "buy" and mp > price) or (side == "sell" and mp < price):
                break
            o = self.orders[oid]
            q = min(qty, o[2])
            o[2] -= q
            qty -= q
            fills.append((oid, q, mp))
            if not o[2]:
                opp.pop(0)
                del self.orders[oid]
        return fills, qty

    def rest(self, oid, side, price, leaves, prio):
        bisect.insort(self.side[side], (self.key(side, price), prio, oid))
        self.orders[oid] = [side, price, leaves, prio]

    def cancel(self, oid):
        side, price, _leaves, prio = self.orders.pop(oid)
        lst = self.side[side]
        lst.pop(bisect.bisect_left(lst, (self.key(side, price), prio, oid)))

    def view(self):
        return [
            (oid, s, self.orders[oid][1], self.orders[oid][2])
            for s in ("buy", "sell")
            for _k, _p, oid in self.side[s]
        ]


def test_book_with_thousands_of_levels_matches_reference():
    """Over 1,000 price levels a side (the SortedDict splits its key list into several
    sublists), levels opened and closed deep in the book and at the top, sweeps across many
    levels: fills compared on every command, the whole book at checkpoints."""
    rng = random.Random(21)
    book, ref = OrderBook(CEA, "main"), BisectRef()
    live: list[int] = []
    max_levels = max_sublists = 0
    for oid in range(1, 12_001):
        r = rng.random()
        if r < 0.2 and live:
            victim = live.pop(rng.randrange(len(live)))
            if victim in ref.orders:
                book.remove(victim)
                ref.cancel(victim)
        side = rng.choice(["buy", "sell"])
        if r > 0.97:  # a sweep through many levels
            price = rng.randint(4_000, 6_000)
            qty = rng.randint(200, 3_000)
        else:
            price = rng.randint(1, 4_990) if side == "buy" else rng.randint(5_010, 10_000)
            qty = rng.randint(1, 20)
        o = Order(oid, f"F{oid}", None, CEA, "main", side, price, qty, "GTC", seq=oid)
        got: list = []
        book.match(o, price, "cancel_resting", got, [])
        rf, left = ref.match(side, price, qty)
        assert [(m.order_id, q, p) for m, q, p in got] == rf, oid
        o.leaves, o.cum_qty = left, qty - left
        if left:
            book.add(o)
            ref.rest(oid, side, price, left, oid)
            live.append(oid)
        assert book.best_bid() == (-ref.side["buy"][0][0] if ref.side["buy"] else None)
        assert book.best_ask() == (ref.side["sell"][0][0] if ref.side["sell"] else None)
        max_levels = max(max_levels, len(book.bids), len(book.asks))
        max_sublists = max(max_sublists, len(book.bids._list._lists), len(book.asks._list._lists))
        if oid % 2_000 == 0:
            assert book_view(book) == ref.view()
    assert book_view(book) == ref.view()
    assert max_levels > 2_000
    assert max_sublists > 1  # book.py's one-sublist fast path and its fallback both ran
