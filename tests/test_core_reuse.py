"""What the compiled core (``exchange/core/_accel.c``; ADR 0007, ADR 0013) must keep true about
memory now that it uses only CPython's public API: ``Order`` and the events are allocated and
freed by CPython itself (no free list behind a replaced ``tp_dealloc``), and every balance or
quantity update makes a new int (no int is overwritten in place).

What must hold: an object's slot values are released when it dies, the class's reference count
does not drift, a subclass (with its own slots and ``__dict__``) is freed without leaking
either, the objects the core hands out are fresh (no value of an earlier object shows through),
and every int someone else holds keeps its value.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import importlib
import random
import sys

import pytest

from exchange.core import book as book_mod
from exchange.core.commands import CancelOrder, PlaceOrder
from exchange.core.events import BookUpdate, CommandRejected, ExecutionReport, Trade
from exchange.app.engine import Sequencer, build_exchange

try:
    _accel = importlib.import_module("exchange.core._accel")
except ImportError:
    _accel = None

POOLED = [book_mod.Order, ExecutionReport, Trade, BookUpdate, CommandRejected]
pytestmark = pytest.mark.skipif(_accel is None, reason="exchange.core._accel is not built")

N = 2_000


def _blank(cls):
    return object.__new__(cls)


def _fill(obj, value, cls=None):
    for name in (cls or type(obj)).__slots__:
        setattr(obj, name, value)


@pytest.mark.parametrize("cls", POOLED, ids=lambda c: c.__name__)
def test_dealloc_releases_every_slot_value_and_keeps_the_class_count(cls):
    sentinel = object()
    # warm: allocator caches settle, so the counts below do not move by what they take in
    for _ in range(N):
        _fill(_blank(cls), sentinel)
    gc.collect()
    before_sentinel = sys.getrefcount(sentinel)
    before_cls = sys.getrefcount(cls)
    objs = [_blank(cls) for _ in range(N)]
    for o in objs:
        _fill(o, sentinel)
    assert sys.getrefcount(sentinel) == before_sentinel + N * len(cls.__slots__)
    del objs, o
    assert sys.getrefcount(sentinel) == before_sentinel
    assert sys.getrefcount(cls) == before_cls


@pytest.mark.parametrize("cls", POOLED, ids=lambda c: c.__name__)
def test_a_subclass_with_a_dict_is_freed_through_the_same_function(cls):
    sub = type("Sub" + cls.__name__, (cls,), {"__slots__": ("extra", "__dict__")})
    sentinel = object()
    before_sentinel = sys.getrefcount(sentinel)
    before_cls, before_sub = sys.getrefcount(cls), sys.getrefcount(sub)
    for _ in range(N):
        o = _blank(sub)
        _fill(o, sentinel, cls)  # the base class's slots
        o.extra = sentinel
        o.note = sentinel  # in __dict__
    del o
    assert sys.getrefcount(sentinel) == before_sentinel
    assert sys.getrefcount(cls) == before_cls
    assert sys.getrefcount(sub) == before_sub


def _tp_dealloc(cls) -> int:
    """The class's tp_dealloc pointer (PyTypeObject: refcnt, type, size, name, basicsize,
    itemsize, then tp_dealloc)."""
    return ctypes.c_void_p.from_address(id(cls) + 6 * ctypes.sizeof(ctypes.c_void_p)).value


def test_the_classes_keep_cpythons_dealloc():
    """Nothing replaces a class's tp_dealloc: once the extension is set up, Order and the
    events are freed by the same function as any slotted class."""
    if sys.implementation.name != "cpython":
        pytest.skip("reads a CPython type object")
    plain = type("Plain", (), {"__slots__": ("a",)})
    assert {_tp_dealloc(cls) for cls in POOLED} == {_tp_dealloc(plain)}


def _market(accelerate: bool) -> Sequencer:
    from exchange.app.config import load_settings
    from exchange.core.commands import DepositCash, IssueUnits, RegisterFirm, SetPriceBand
    from exchange.app.market import market_commands

    seqr = Sequencer(build_exchange(accelerate=accelerate))
    seqr.run(
        market_commands(load_settings())
        + [
            SetPriceBand(instrument="CEA-2026", reference_price=5000),
            RegisterFirm(firm_id="A"),
            RegisterFirm(firm_id="B"),
            DepositCash(account="A", amount=10**12),
            DepositCash(account="B", amount=10**12),
            IssueUnits(account="B", instrument="CEA-2026", qty=10**6),
        ]
    )
    return seqr


def test_reports_handed_out_again_carry_no_earlier_value():
    """Objects freed from Python with a marker in every slot come before; the compiled
    core's events afterwards (resting, crossing, cancelled, an unknown order's cancel) equal
    the pure-Python core's, field by field, and none holds the marker."""
    junk = ("junk",)
    fast, slow = _market(True), _market(False)
    assert fast.ex.accelerated and not slow.ex.accelerated
    for _ in range(3):
        for cls in POOLED:
            objs = [_blank(cls) for _ in range(300)]
            for o in objs:
                _fill(o, junk)
            del objs
        cmds = []
        for i in range(40):
            cmds.append(
                PlaceOrder(
                    account="B", instrument="CEA-2026", side="sell", price=5000 + i % 5, qty=10
                )
            )
            cmds.append(
                PlaceOrder(account="A", instrument="CEA-2026", side="buy", price=5002, qty=7)
            )
        got = [fast.run(cmds), slow.run(cmds)]
        live = sorted(fast.ex.accounts["A"].orders)[:5] + [10**9]
        for k, s in enumerate((fast, slow)):
            got[k] += s.run([CancelOrder(account="A", order_id=oid) for oid in live])
        assert got[0] == got[1]
        assert any(type(ev) is Trade for ev in got[0])
        assert any(type(ev) is CommandRejected for ev in got[0])
        for ev in got[0]:
            assert junk not in [getattr(ev, f) for f in type(ev).__slots__]
        assert fast.ex.state_hash() == slow.ex.state_hash()


def _ints(ex) -> list:
    """Every int the core may update, with a reference held here."""
    out = []
    for a in ex.accounts.values():
        out += [a.cash, a.cash_reserved]
        for h in a.holdings.values():
            out += [h.total, h.reserved]
        for o in a.orders.values():
            out += [o.leaves, o.cum_qty, o.reserved]
    for b in ex.books.values():
        out.append(b.seq)
        for side in (b.bids, b.asks):
            out += [lv.qty for lv in side.values()]
        out += [
            v
            for v in (b.day_volume, b.day_notional, b.day_trades, b.last, b.day_high, b.day_low)
            if type(v) is int
        ]
    return out


def test_an_int_someone_holds_is_never_changed():
    """Before each command, hold every balance, reservation, order quantity, level quantity
    and book sequence; after it, each held object still has the value it had. The values the
    exchange ends with equal the pure-Python core's."""
    fast, slow = _market(True), _market(False)
    rng = random.Random(7)
    for n in range(400):
        r = rng.random()
        acct = rng.choice("AB")
        if r < 0.75:
            cmd = PlaceOrder(
                account=acct,
                instrument="CEA-2026",
                side="buy" if acct == "A" else "sell",
                price=rng.randint(4990, 5010),
                qty=rng.randint(1, 40),
            )
        else:
            live = sorted(fast.ex.accounts[acct].orders)
            cmd = CancelOrder(account=acct, order_id=rng.choice(live) if live else 1)
        held = _ints(fast.ex)
        values = [int(str(v)) for v in held]
        got = fast(cmd)
        assert slow(copy.copy(cmd)) == got
        assert [int(str(v)) for v in held] == values, n
        del held, got
    assert fast.ex.state_hash() == slow.ex.state_hash()


def test_the_instrument_and_rules_lookups_follow_changes():
    """The compiled core looks the instrument and segment rules up on every order. Redefining the
    segment, or halting and re-banding the instrument, between two
    orders must show in the second, exactly as in the pure-Python core."""
    from exchange.core.commands import Halt, Resume, SetPriceBand
    from exchange.core.exchange import AddSegment

    fast, slow = _market(True), _market(False)
    order = dict(account="A", instrument="CEA-2026", side="buy", price=5000, qty=15)
    steps = [
        [PlaceOrder(**order)],  # accepted: lot 1
        [
            AddSegment(name="main", tick=1, lot=10, max_order_qty=99_999, fee_bps=5),
            PlaceOrder(**order),
        ],  # BAD_LOT now
        [PlaceOrder(**{**order, "qty": 20})],  # accepted with the new rules
        [
            SetPriceBand(instrument="CEA-2026", reference_price=9000),
            PlaceOrder(**{**order, "qty": 20}),
        ],  # outside the new band
        [Halt(instrument="CEA-2026"), PlaceOrder(**{**order, "qty": 20, "price": 9000})],
        [Resume(instrument="CEA-2026"), PlaceOrder(**{**order, "qty": 20, "price": 9000})],
    ]
    outcome = []
    for cmds in steps:
        got = fast.run(cmds)
        assert got == slow.run([copy.copy(c) for c in cmds])
        er = [ev for ev in got if isinstance(ev, ExecutionReport)][-1]
        outcome.append((er.exec_type, er.reason))
    assert outcome == [
        ("new", None),
        ("rejected", "BAD_LOT"),
        ("new", None),
        ("rejected", "OUTSIDE_PRICE_BAND"),
        ("rejected", "HALTED"),
        ("new", None),
    ]
    # the same dicts changed in place (as a module or an operator tool might)
    from exchange.core.exchange import SegmentRules

    for s in (fast, slow):
        s.ex._rules["main"] = SegmentRules("main", 1, 7, 99_999, 5, "all")
    got = fast.run([PlaceOrder(**{**order, "qty": 20, "price": 9000})])
    assert got == slow.run([PlaceOrder(**{**order, "qty": 20, "price": 9000})])
    assert [ev.reason for ev in got if isinstance(ev, ExecutionReport)] == ["BAD_LOT"]
    assert fast.ex.state_hash() == slow.ex.state_hash()


def test_a_long_chain_of_orders_is_freed_without_deep_recursion():
    """Orders link to each other (prev/next). Freeing the head of a chain of 300,000 frees
    them all; CPython's subtype_dealloc does it through its "trashcan", iteratively (a C stack
    overflow otherwise)."""
    head = None
    for _ in range(300_000):
        o = _blank(book_mod.Order)
        o.next = head
        head = o
    sentinel = object()
    o.prev = sentinel  # the head of the chain, the last made
    before = sys.getrefcount(sentinel)
    del head, o
    assert sys.getrefcount(sentinel) == before - 1
