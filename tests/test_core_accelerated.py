"""The core's order handling in C (``exchange.core._accel``, installed by
``Exchange(accelerate=True)``) against the pure-Python reference (``accelerate=False``):
command by command, the same events (compared field by field *and type by type*), the same
trades seen by trade listeners, the same state hash, the same exceptions; at the end the same
``to_state()``.

Two exchanges get an identical market (segments main/lots/sme/chain with non-zero fees and a
tick and a lot above 1, two allowances and an offset, firms under each self-trade prevention
policy, an SME holding sub-quota lots of two parents besides an allocation lot, a supply chain,
a compliance period so the compliance module's trade listener works), then the same random
command stream: orders of every kind, good and bad, crossing and resting, cancels and amends of
ids that exist, operator commands in between. Plain tests cover the envelope (sequence check,
unknown commands), numbers beyond 64 bits, trade listeners, ``emit_book_updates=False``,
snapshot restore and exceptions that escape ``apply``.

The reference runs on the Python OrderBook methods (``exchange.core.book.use_compiled(False)``
around each of its steps), the accelerated exchange on the compiled ones, so nothing compiled
is on both sides. Outside the tests of odd inputs the reference must not raise at all (two
identical exceptions are not agreement).
"""

from __future__ import annotations

import copy
import importlib
import os
import random
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core import book as book_mod
from exchange.compliance.commands import ConfigureCompliance, ConfigureCompliancePeriod
from exchange.core.commands import (
    AddInstrument,
    AmendOrder,
    CancelAll,
    CancelOrder,
    CreateSubQuota,
    DepositCash,
    EndOfDay,
    Halt,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    RegisterSupplyChain,
    Resume,
    SetFirmTrading,
    SetPriceBand,
    SnapshotMarker,
    TransferUnits,
    WithdrawCash,
)
from exchange.core.events import ExecutionReport
from exchange.core.exchange import AddSegment, SequenceError
from exchange.app.engine import Sequencer, build_exchange
from helpers import streams_settings

try:
    importlib.import_module("exchange.core._accel")
    HAVE_C = True
except ImportError:
    HAVE_C = False
if not HAVE_C and os.environ.get("REQUIRE_SERVICES") == "1":
    # The extension is built by `pip install -e .` wherever a C compiler is (dev.py test does
    # that); CI requires it, like it requires its services.
    raise RuntimeError(
        "exchange.core._accel is not built (REQUIRE_SERVICES=1): "
        "reinstall with a C compiler: pip install -e ."
    )
needs_c = pytest.mark.skipif(
    not HAVE_C,
    reason="exchange.core._accel is not built (no C "
    "compiler at install time): nothing to compare the reference with",
)

CEA = "CEA-2026"
CEA27 = "CEA-2027"
CCER = "CCER-2026"
T0 = 1_767_225_600_000_000_000  # the Sequencer's default start
FIRMS = ["A", "B", "C", "S", "T", "D"]
STP = {
    "A": "cancel_resting",
    "B": "cancel_incoming",
    "C": "cancel_both",
    "S": "cancel_resting",
    "T": "cancel_both",
    "D": "cancel_incoming",
}
SME = {"S", "T"}
# accounts that may not place orders: system accounts, unknown ones, a firm that may not trade
BAD_ACCOUNTS = ["EXCHANGE", "@bank", "@issuer", "@retired", "nobody", "", None, "Z"]


class MyInt(int):
    """An int subclass: the core takes exact ints only (``type(x) is int``)."""

    def __repr__(self):
        return f"MyInt({int(self)})"


# =========================================================================== the harness


def make(accelerate: bool, **kw):
    ex = build_exchange(accelerate=accelerate, **kw)
    assert ex.accelerated is accelerate, "the exchange under test is not the one asked for"
    return ex


def same(a, b) -> bool:
    """Equal and of the same types all the way down (``==`` alone takes 1 == 1.0 == True)."""
    if type(a) is not type(b):
        return False
    fields = getattr(type(a), "_FIELDS", None)
    if fields is not None and hasattr(type(a), "TYPE") and not isinstance(a, type):
        return all(same(getattr(a, f), getattr(b, f)) for f in fields)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def outcome(fn):
    """('ok', value) or ('raised', exception type, message)."""
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - every exception must be the same on both sides
        return ("raised", type(e), str(e))


# Where the extension also compiles OrderBook's methods (installed on the class, so for every
# exchange), the reference must run on the Python ones: exchange.core.book.use_compiled.
_use_compiled = getattr(book_mod, "use_compiled", None)


@contextmanager
def book_methods(ex):
    """The OrderBook methods that go with ``ex``: the Python reference for the reference
    exchange, the compiled ones (where built) for the accelerated one."""
    if _use_compiled is None:
        yield
        return
    before = _use_compiled(bool(ex.accelerated))
    try:
        yield
    finally:
        _use_compiled(before)


def on(ex, fn):
    """outcome(fn) with ``ex``'s book methods."""
    with book_methods(ex):
        return outcome(fn)


class Duo:
    """The reference and the accelerated exchange, fed the same commands in lockstep."""

    def __init__(self, *, emit_book_updates: bool = True, listen: bool = True):
        self.hash_every = 1  # compare state hashes after every n-th command (1: each)
        self.may_raise = False  # may the reference raise out of apply (odd inputs)?
        self.ref = Sequencer(make(False, emit_book_updates=emit_book_updates))
        self.acc = Sequencer(make(True, emit_book_updates=emit_book_updates))
        self.heard: dict[str, list] = {"ref": [], "acc": []}
        if listen:
            self.ref.ex.trade_listeners.append(self.heard["ref"].append)
            self.acc.ex.trade_listeners.append(self.heard["acc"].append)
        self.history: list = []  # (seq, repr(cmd)) of everything applied, for failure reports
        self.acc_events: list = []  # the accelerated side's events per command (replay check)
        self.ids: list[tuple[int, str]] = []  # (order id, account) of every accepted order
        self.n_setup = 0  # commands of the market setup (left out of failure reports)

    def trace(self) -> str:
        rows = self.history[self.n_setup :]
        head = f"  ({self.n_setup} setup commands)\n" if self.n_setup else ""
        return head + "\n".join(f"  seq {s}: {r}" for s, r in rows)

    def apply(self, build, may_raise: bool = False) -> list:
        """Apply ``build()`` (called once per side: two equal but distinct command objects)
        to both and check they agree. Returns the reference's events."""
        c_ref, c_acc = build(), build()
        self.history.append((self.ref.ex.last_seq + 1, _repr(c_ref)))
        n_ref, n_acc = len(self.heard["ref"]), len(self.heard["acc"])
        r = on(self.ref.ex, lambda: self.ref(c_ref))
        a = on(self.acc.ex, lambda: self.acc(c_acc))
        where = f"\ncommand stream:\n{self.trace()}"
        if not (may_raise or self.may_raise):
            assert r[0] == "ok", f"the reference raised {r!r}{where}"
        if r[0] == "raised" or a[0] == "raised":
            assert r == a, f"reference {r!r}\naccelerated {a!r}{where}"
        else:
            assert type(a[1]) is list, f"accelerated apply returned {type(a[1])}{where}"
            assert r[1] == a[1] and same(r[1], a[1]), (
                f"events differ\nreference:   {r[1]!r}\naccelerated: {a[1]!r}{where}"
            )
        heard_r, heard_a = self.heard["ref"][n_ref:], self.heard["acc"][n_acc:]
        assert same(heard_r, heard_a), (
            f"trade listeners heard\nreference:   {heard_r!r}\naccelerated: {heard_a!r}{where}"
        )
        if len(self.history) % self.hash_every == 0:
            self.check_state(where)
        events = r[1] if r[0] == "ok" else []
        self.acc_events.append(a[1] if a[0] == "ok" else a)
        for e in events:
            if isinstance(e, ExecutionReport) and e.exec_type == "new":
                self.ids.append((e.order_id, e.account))
        return events

    def check_state(self, where: str = "") -> None:
        assert self.ref.ex.state_hash() == self.acc.ex.state_hash(), (
            f"state differs after the last command{where}\n{state_diff(self.ref.ex, self.acc.ex)}"
        )
        assert self.ref.ex.accounts["EXCHANGE"].cash == self.acc.ex.accounts["EXCHANGE"].cash

    def run(self, *cmds) -> list:
        """Apply ready-made commands (each is copied for the accelerated side)."""
        out = []
        for c in cmds:
            out.extend(self.apply(_copier(c)))
        return out

    def finish(self) -> None:
        s_ref, s_acc = self.ref.ex.to_state(), self.acc.ex.to_state()
        assert s_ref == s_acc, f"to_state differs\n{state_diff(self.ref.ex, self.acc.ex)}"
        assert self.ref.ex.snapshot() == self.acc.ex.snapshot()


def _repr(c) -> str:
    try:
        return repr(c)
    except AttributeError:  # a command with a field deleted
        fields = getattr(c, "_FIELDS", ()) + ("seq", "ts")
        return (
            f"{type(c).__name__}("
            + ", ".join(
                f"{f}={getattr(c, f)!r}" if hasattr(c, f) else f"{f}=<unset>" for f in fields
            )
            + ")"
        )


def _copier(c):
    first = [True]

    def build():
        if first[0]:
            first[0] = False
            return c
        return copy.copy(c)

    return build


def state_diff(ex1, ex2) -> str:
    s1, s2 = ex1.to_state(), ex2.to_state()
    out = []
    for k in s1:
        if s1[k] != s2.get(k):
            out.append(f"{k}:\n  reference:   {s1[k]!r:.3000}\n  accelerated: {s2.get(k)!r:.3000}")
    return "\n".join(out) or "(to_state equal; the snapshots differ in types or order)"


def setup_market(duo: Duo) -> None:
    """Segments, instruments, firms (every STP policy), a chain, cash, units, sub-quota lots,
    a compliance period (so the compliance module's trade listener records every trade)."""
    cmds = [
        AddSegment(name="main", tick=5, lot=1, max_order_qty=1_000, fee_bps=5, access="all"),
        AddSegment(name="lots", tick=1, lot=10, max_order_qty=100_000, fee_bps=30, access="all"),
        AddSegment(
            name="sme", tick=1, lot=1, max_order_qty=20_000, fee_bps=0, access="sme_sell_any_buy"
        ),
        AddSegment(name="chain", tick=1, lot=1, max_order_qty=99_999, fee_bps=2, access="members"),
        AddInstrument(symbol=CEA, kind="allowance", vintage=2026, reference_price=8_500),
        AddInstrument(symbol=CEA27, kind="allowance", vintage=2027, reference_price=9_003),
        AddInstrument(
            symbol=CCER, kind="offset", vintage=2026, offset_type="CCER", reference_price=0
        ),  # no reference price: no band
        ConfigureCompliance(carbon_coefficients_ppm=(("coal", 747_600),)),
        ConfigureCompliancePeriod(period=2026, start_ts=0, offset_cap_bps=500),
    ]
    for f in FIRMS:
        cmds.append(
            RegisterFirm(firm_id=f, size_class="sme" if f in SME else "large", stp_policy=STP[f])
        )
    cmds.append(RegisterFirm(firm_id="Z", stp_policy="cancel_both", can_trade=False))
    for f in FIRMS + ["Z"]:
        cmds.append(DepositCash(account=f, amount=200_000_000))
        for sym in (CEA, CEA27, CCER):
            if f != "T":  # T's CEA units are all sub-quota
                cmds.append(IssueUnits(account=f, instrument=sym, qty=3_000, ref="2026"))
    cmds += [
        RegisterSupplyChain(
            chain_id="sc",
            members=(("D", 0), ("S", 1), ("A", 1), ("T", 1)),
            edges=(("S", "D", 400_000), ("A", "D", 300_000), ("T", "D", 300_000)),
        ),
        # S: an allocation lot first, then sub-quota lots of two parents; T: sub-quota only
        CreateSubQuota(
            parent="D", sme="S", instrument=CEA, qty=150, revenue_share_ppm=600_000, chain_id="sc"
        ),
        CreateSubQuota(
            parent="A", sme="S", instrument=CEA, qty=70, revenue_share_ppm=333_333, chain_id="sc"
        ),
        CreateSubQuota(
            parent="D", sme="T", instrument=CEA, qty=400, revenue_share_ppm=0, chain_id="sc"
        ),
        CreateSubQuota(
            parent="A", sme="T", instrument=CEA, qty=90, revenue_share_ppm=1_000_000, chain_id="sc"
        ),
        CreateSubQuota(
            parent="D", sme="S", instrument=CEA27, qty=500, revenue_share_ppm=250_000, chain_id="sc"
        ),
    ]
    # order 1 rests for good (C's far bid in CCER): CancelOrder(order_id=True) names it
    cmds.append(PlaceOrder(account="C", instrument=CCER, side="buy", qty=1, price=5))
    # S sells its 3,000 allocation tonnes of CEA first: a resting bid takes them, so later
    # sales by S take sub-quota lots
    cmds += [
        PlaceOrder(
            account="B",
            instrument=CEA,
            side="buy",
            qty=2_990 // 10 * 10,
            price=8_500,
            segment="lots",
        ),
        PlaceOrder(
            account="S",
            instrument=CEA,
            side="sell",
            qty=2_990 // 10 * 10,
            price=8_500,
            segment="lots",
        ),
    ]
    duo.run(*cmds)
    duo.n_setup = len(duo.history)


def new_duo(**kw) -> Duo:
    duo = Duo(**kw)
    setup_market(duo)
    return duo


# =========================================================================== strategies

acct_s = st.sampled_from(FIRMS * 5 + BAD_ACCOUNTS)
firm_s = st.sampled_from(FIRMS)
instr_s = st.sampled_from([CEA] * 8 + [CEA27] * 3 + [CCER, "NOPE", None])
seg_s = st.sampled_from(
    ["main"] * 10
    + ["lots"] * 3
    + ["sme", "sme", "chain:sc", "chain:sc", "chain:nope", "nosuch", None]
)
side_s = st.sampled_from(["buy", "sell"] * 8 + ["BUY", "hold", None])
BAD_QTY = [
    0,
    -5,
    1_001,
    15,
    2**31,
    2**31 - 1,
    2**62,
    2**63,
    2**63 - 1,
    2**64,
    -(2**63),
    True,
    False,
    5.0,
    "5",
    None,
    MyInt(5),
]
qty_s = st.one_of(
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 30).map(lambda q: q * 10),  # good in "lots"
    st.integers(40, 1_000),
    st.sampled_from(BAD_QTY),
)
# a price is ("rel", k): k ticks of 5 from the instrument's current reference price (rounded
# down to the tick), or ("abs", v); ("edge", name): a band edge or just outside it
price_s = st.one_of(
    st.tuples(st.just("rel"), st.integers(-6, 6)),
    st.tuples(st.just("rel"), st.integers(-6, 6)),
    st.tuples(st.just("rel"), st.integers(-6, 6)),
    st.tuples(st.just("off"), st.integers(-6, 6)),  # rel + 1: off the tick of main
    st.tuples(st.just("edge"), st.sampled_from(["lo", "hi", "lo-1", "hi+1"])),
    st.tuples(
        st.just("abs"),
        st.sampled_from(
            [None, 0, -5, 8_500.0, "8500", True, 2**31, 2**62, 2**63, 2**64, MyInt(8_500)]
        ),
    ),
)
otype_s = st.sampled_from(["limit"] * 8 + ["market"] * 2 + ["stop"])
tif_s = st.sampled_from(["GTC"] * 6 + ["DAY"] * 2 + ["IOC", "FOK", "gtc", None])
post_s = st.sampled_from([False] * 10 + [True] * 3 + [1, 0, "x", None])
coid_s = st.sampled_from([None] * 8 + ["c1", "c2", "c3", "c4", "c5", 7])

# mostly orders that pass every check (so books fill up, cross and self-trade), some wild ones
good_place = st.tuples(
    st.just("place"),
    st.sampled_from(["A", "B", "C", "S", "T", "D"]),
    st.sampled_from([CEA] * 5 + [CEA27]),
    st.sampled_from(["main"] * 10 + ["lots"] * 2 + ["sme", "chain:sc"]),
    st.sampled_from(["buy", "sell"]),
    st.one_of(
        st.tuples(st.just("lots"), st.integers(1, 30)),
        st.tuples(st.just("lots"), st.integers(1, 30)),
        st.tuples(st.just("lots"), st.integers(30, 300)),
    ),
    st.tuples(st.just("rel"), st.integers(-5, 5)),
    st.sampled_from(["limit"] * 10 + ["market"]),
    st.sampled_from(["GTC"] * 6 + ["DAY"] * 2 + ["IOC", "FOK"]),
    st.sampled_from([False] * 8 + [True]),
    st.sampled_from([None] * 8 + ["c1", "c2", "c3", "c4", "c5", 7]),
)
wild_place = st.tuples(
    st.just("place"), acct_s, instr_s, seg_s, side_s, qty_s, price_s, otype_s, tif_s, post_s, coid_s
)
place_op = st.one_of(good_place, good_place, good_place, wild_place)
# order ids: an index into the ids seen so far (most recent first is index 0)
id_index = st.one_of(st.integers(0, 3), st.integers(0, 10**6))  # recent ids more often
cancel_op = st.tuples(
    st.just("cancel"),
    id_index,
    st.sampled_from(["owner"] * 6 + ["other", "bad"]),
    st.sampled_from(
        ["id"] * 6
        + ["coid"] * 3
        + ["unknown", "none", "both", "true", "str", "float", "huge", "neg"]
    ),
    coid_s,
)
amend_op = st.tuples(
    st.just("amend"),
    id_index,
    st.sampled_from(["owner"] * 6 + ["other"]),
    st.booleans(),  # by client order id
    st.sampled_from([None, None, -5, -1, 0, 1, 7, 40, 2_000, "x"]),
    st.sampled_from([None, None, -10, -5, 0, 5, 10, 1, 2_000, "x"]),
)
other_ops = [
    (
        6,
        st.tuples(
            st.just("cancel_all"),
            acct_s,
            st.sampled_from([None, None, CEA, CEA27, "NOPE"]),
            st.sampled_from([None, None, "main", "lots", "sme"]),
        ),
    ),
    (1, st.tuples(st.just("halt"), st.sampled_from(["market", "instr", "book", "book2", "bad"]))),
    (3, st.tuples(st.just("resume"), st.sampled_from(["market", "instr", "book", "book2", "bad"]))),
    (
        3,
        st.tuples(
            st.just("band"),
            st.sampled_from([CEA, CEA27, CCER, "NOPE"]),
            st.sampled_from([None, 8_480, 8_500, 8_520, 9_003, 0, -1]),
            st.sampled_from([None, 10, 50, 1_000, 0, 10_001]),
        ),
    ),
    (2, st.tuples(st.just("eod"))),
    (
        4,
        st.tuples(
            st.just("deposit"),
            acct_s,
            st.one_of(
                st.integers(1, 10**8),
                st.sampled_from([0, -1, 2**63, 2**63 - 1, 2**64 + 3, 5.0, None]),
            ),
        ),
    ),
    (
        4,
        st.tuples(
            st.just("withdraw"),
            acct_s,
            st.one_of(
                st.integers(1, 10**8),
                st.integers(10**8, 3 * 10**8),
                st.sampled_from([0, -1, 2**64, 5.0]),
            ),
        ),
    ),
    (2, st.tuples(st.just("trading"), st.sampled_from(FIRMS + ["Z"]), st.booleans())),
    (
        2,
        st.tuples(
            st.just("transfer"),
            firm_s,
            firm_s,
            st.sampled_from([CEA, CEA27]),
            st.sampled_from([1, 10, 500, 10**6, 0]),
        ),
    ),
    (
        2,
        st.tuples(
            st.just("issue"),
            acct_s,
            st.sampled_from([CEA, CEA27, CCER]),
            st.sampled_from([1, 100, 2**40]),
        ),
    ),
    (
        2,
        st.tuples(
            st.just("subquota"),
            st.sampled_from(["A", "D", "B"]),
            st.sampled_from(["S", "T", "C"]),
            st.sampled_from([CEA, CEA27]),
            st.sampled_from([1, 5, 40]),
            st.sampled_from([0, 500_000, 1_000_000]),
        ),
    ),
    (
        1,
        st.tuples(
            st.just("segment"),
            st.sampled_from(["main", "lots"]),
            st.sampled_from([0, 5, 30, 10_000]),
        ),
    ),
    (
        1,
        st.tuples(
            st.just("firm"),
            st.sampled_from(["N1", "N2", "A"]),
            st.sampled_from(["cancel_resting", "cancel_incoming", "cancel_both"]),
        ),
    ),
    (1, st.tuples(st.just("instrument"), st.sampled_from(["NEW-1", "NEW-2", CEA]))),
    (1, st.tuples(st.just("chain"), st.sampled_from(["c2", "sc"]))),
    (1, st.tuples(st.just("marker"))),
    (1, st.tuples(st.just("unknown"))),
]
PLACE_WEIGHT = 80
CANCEL_WEIGHT = 14
AMEND_WEIGHT = 8


def _pick(r: int):
    if r < PLACE_WEIGHT:
        return place_op
    r -= PLACE_WEIGHT
    if r < CANCEL_WEIGHT:
        return cancel_op
    r -= CANCEL_WEIGHT
    if r < AMEND_WEIGHT:
        return amend_op
    r -= AMEND_WEIGHT
    for w, strat in other_ops:
        if r < w:
            return strat
        r -= w
    return place_op


op_s = st.integers(
    0, PLACE_WEIGHT + CANCEL_WEIGHT + AMEND_WEIGHT + sum(w for w, _ in other_ops) - 1
).flatmap(_pick)


def streams(op, chunks: int = 10, per_chunk: int = 30):
    """Lists of ``op``, about 30 long on average (a flat st.lists averages ~5 unless given a
    min_size, and a min_size stops shrinking a failure to its few commands that matter)."""
    return st.lists(st.lists(op, min_size=1, max_size=per_chunk), max_size=chunks).map(
        lambda ls: [o for chunk in ls for o in chunk]
    )


class Unknown:
    """Not a command the core knows (no TYPE either)."""

    def __repr__(self):
        return "Unknown()"


def _other_firm(f):
    return FIRMS[(FIRMS.index(f) + 1) % len(FIRMS)] if f in FIRMS else "A"


def _resolve_qty(ex, segment, q):
    """("lots", n): n lots of the segment (n tonnes where the segment is unknown)."""
    if isinstance(q, tuple):
        rules = ex._rules.get(segment) if isinstance(segment, str) else None
        return q[1] * (rules.lot if rules is not None else 1)
    return q


def _resolve_price(ex, instrument, p):
    kind, v = p
    ins = ex.instruments.get(instrument) if isinstance(instrument, str) else None
    ref = ins.reference_price if ins is not None and ins.reference_price > 0 else 8_500
    base = ref - ref % 5
    if kind == "rel":
        return base + 5 * v
    if kind == "off":
        return base + 5 * v + 1
    if kind == "edge":
        lo, hi = (ins.band_lo, ins.band_hi) if ins is not None else (7_650, 9_350)
        return {"lo": lo, "hi": hi, "lo-1": lo - 1, "hi+1": hi + 1}[v]
    return v


def command_for(duo: Duo, o: tuple):
    """A builder for the command of abstract op ``o`` (None: nothing to do), resolved against
    the reference exchange's current state (which the accelerated one equals)."""
    ex = duo.ref.ex
    kind = o[0]
    if kind == "place":
        _, acct, instr, seg, side, qty, price, otype, tif, post_only, coid = o
        px = _resolve_price(ex, instr, price)  # None: a market order without protection
        qty = _resolve_qty(ex, seg, qty)
        return lambda: PlaceOrder(
            account=acct,
            instrument=instr,
            segment=seg,
            side=side,
            qty=qty,
            price=px,
            order_type=otype,
            tif=tif,
            post_only=post_only,
            client_order_id=coid,
        )
    if kind == "cancel":
        _, idx, who, how, coid = o
        if duo.ids:
            oid, owner = duo.ids[-1 - idx % len(duo.ids)]
        else:
            oid, owner = 1, "A"
        if how == "true":  # True == 1: order 1, C's (see setup_market)
            oid, owner = 1, "C"
        acct = {"owner": owner, "other": _other_firm(owner), "bad": "@bank"}[who]
        kw = {
            "id": dict(order_id=oid),
            "coid": dict(client_order_id=coid),
            "unknown": dict(order_id=10**6 + idx),
            "none": {},
            "both": dict(order_id=oid, client_order_id=coid),
            "true": dict(order_id=True),
            "str": dict(order_id=str(oid)),
            "float": dict(order_id=float(oid)),
            "huge": dict(order_id=2**64 + oid),
            "neg": dict(order_id=-oid),
        }[how]
        return lambda: CancelOrder(account=acct, **kw)
    if kind == "amend":
        _, idx, who, by_coid, dq, dp = o
        if not duo.ids:
            return None
        oid, owner = duo.ids[-1 - idx % len(duo.ids)]
        acct = owner if who == "owner" else _other_firm(owner)
        live = ex.accounts[owner].orders.get(oid)
        qty = price = None
        if dq is not None:
            qty = dq if isinstance(dq, str) else max(1, (live.qty if live else 10) + dq)
        if dp is not None:
            price = dp if isinstance(dp, str) else (live.price if live else 8_500) + dp
        if by_coid and live is not None and live.client_order_id is not None:
            ref_kw = dict(client_order_id=live.client_order_id)
        else:
            ref_kw = dict(order_id=oid)
        return lambda: AmendOrder(account=acct, qty=qty, price=price, **ref_kw)
    if kind == "cancel_all":
        _, acct, instr, seg = o
        return lambda: CancelAll(account=acct, instrument=instr, segment=seg)
    if kind in ("halt", "resume"):
        cls = Halt if kind == "halt" else Resume
        scope = {
            "market": {},
            "instr": dict(instrument=CEA),
            "book": dict(instrument=CEA, segment="main"),
            "book2": dict(instrument=CEA27, segment="lots"),
            "bad": dict(instrument=CEA, segment="nosuch"),
        }[o[1]]
        return lambda: cls(**scope)
    if kind == "band":
        _, instr, ref, bps = o
        return lambda: SetPriceBand(instrument=instr, reference_price=ref, band_bps=bps)
    if kind == "eod":
        return EndOfDay
    if kind == "deposit":
        return lambda: DepositCash(account=o[1], amount=o[2])
    if kind == "withdraw":
        return lambda: WithdrawCash(account=o[1], amount=o[2])
    if kind == "trading":
        return lambda: SetFirmTrading(firm_id=o[1], can_trade=o[2])
    if kind == "transfer":
        return lambda: TransferUnits(from_account=o[1], to_account=o[2], instrument=o[3], qty=o[4])
    if kind == "issue":
        return lambda: IssueUnits(account=o[1], instrument=o[2], qty=o[3], ref="x")
    if kind == "subquota":
        return lambda: CreateSubQuota(
            parent=o[1], sme=o[2], instrument=o[3], qty=o[4], revenue_share_ppm=o[5], chain_id="sc"
        )
    if kind == "segment":
        name, fee = o[1], o[2]
        if name == "main":
            return lambda: AddSegment(
                name="main", tick=5, lot=1, max_order_qty=1_000, fee_bps=fee, access="all"
            )
        return lambda: AddSegment(
            name="lots", tick=1, lot=10, max_order_qty=100_000, fee_bps=fee, access="all"
        )
    if kind == "firm":
        return lambda: RegisterFirm(firm_id=o[1], stp_policy=o[2])
    if kind == "instrument":
        return lambda: AddInstrument(
            symbol=o[1], kind="allowance", vintage=2026, reference_price=8_500
        )
    if kind == "chain":
        return lambda: RegisterSupplyChain(
            chain_id=o[1], members=(("B", 0), ("C", 1)), edges=(("C", "B", 1_000_000),)
        )
    if kind == "marker":
        return SnapshotMarker
    if kind == "unknown":
        return Unknown
    raise AssertionError(kind)


def run_ops(duo: Duo, ops) -> None:
    for o in ops:
        build = command_for(duo, o)
        if build is not None:
            duo.apply(build)


def replay_accelerated(duo: Duo, **kw) -> None:
    """The same commands on a fresh accelerated exchange: the same events, the same hash."""
    ex = make(True, **kw)
    # the very command objects applied before: the envelope was never written onto them
    for i, (c, seq, ts) in enumerate(duo.acc.log):
        got = on(ex, lambda: ex.apply(c, seq, ts))
        want = duo.acc_events[i]
        if got[0] == "ok":
            assert same(got[1], want), f"replay differs at seq {seq}: {got[1]!r} != {want!r}"
        else:
            assert got == want
    assert ex.state_hash() == duo.acc.ex.state_hash()


# =========================================================================== the flag


def test_accelerate_false_is_the_python_reference():
    ex = build_exchange(accelerate=False)
    assert ex.accelerated is False
    if not HAVE_C:
        assert build_exchange().accelerated is False
        assert build_exchange(accelerate=True).accelerated is False


@needs_c
def test_accelerated_by_default_when_the_extension_is_built():
    assert build_exchange().accelerated is True
    assert build_exchange(accelerate=True).accelerated is True
    assert build_exchange(accelerate=True, emit_book_updates=False).accelerated is True


@needs_c
def test_resting_orders_made_in_c_are_freed_with_their_exchange():
    """The C core makes orders outside the cyclic GC, and resting orders link to each other
    (prev/next): dropping the exchange must still free them (OrderBook.__del__ unlinks)."""
    import gc
    import sys

    duo = new_duo()
    ex = duo.acc.ex
    for px in (8_400, 8_400, 8_400, 8_395):
        duo.run(PlaceOrder(account="A", instrument=CEA, side="buy", qty=3, price=px))
    book = ex.books[(CEA, "main")]
    held = book.bids[-8_400].head.next  # a middle order: linked both ways
    assert not gc.is_tracked(held), "not an order made by the C core"
    assert held.prev is not None and held.next is not None
    del duo, ex, book
    gc.collect()
    assert held.prev is None and held.next is None
    assert sys.getrefcount(held) == 2  # this name and getrefcount's argument


# =========================================================================== random streams


@needs_c
@streams_settings(120)
@given(ops=streams(op_s))
def test_random_streams_agree_command_by_command(ops):
    duo = new_duo()
    run_ops(duo, ops)
    duo.finish()
    replay_accelerated(duo)


@needs_c
@streams_settings(40)
@given(ops=streams(op_s, 6))
def test_random_streams_agree_without_book_updates(ops):
    duo = new_duo(emit_book_updates=False)
    run_ops(duo, ops)
    duo.finish()
    replay_accelerated(duo, emit_book_updates=False)


# orders only, few prices, three firms: deep books, sweeps, partial fills, self-trades
dense_place = st.tuples(
    st.just("place"),
    st.sampled_from(["A", "B", "C", "S", "T"]),
    st.just(CEA),
    st.sampled_from(["main"] * 4 + ["lots"]),
    st.sampled_from(["buy", "sell"]),
    st.one_of(st.integers(1, 25), st.integers(1, 10).map(lambda q: q * 10), st.integers(50, 300)),
    st.tuples(st.just("rel"), st.integers(-3, 3)),
    st.sampled_from(["limit"] * 9 + ["market"]),
    st.sampled_from(["GTC"] * 5 + ["DAY", "IOC", "FOK"]),
    st.sampled_from([False] * 6 + [True]),
    st.sampled_from([None] * 4 + ["c1", "c2"]),
)
dense_op = st.one_of(dense_place, dense_place, dense_place, cancel_op, amend_op)


@needs_c
@streams_settings(80)
@given(ops=streams(dense_op))
def test_dense_books_sweeps_and_self_trades_agree(ops):
    duo = new_duo()
    run_ops(duo, ops)
    duo.finish()


@needs_c
@streams_settings(30)
@given(ops=streams(op_s, 6), split=st.floats(0, 1))
def test_restore_mid_stream_then_continue_agrees(ops, split):
    """load_state replaces every account, book and order object: the accelerated path must
    work on the new ones (restored into the exchange that ran the first part, and into a
    fresh one)."""
    duo = new_duo()
    k = int(split * len(ops))
    run_ops(duo, ops[:k])
    data = duo.ref.ex.snapshot()
    with book_methods(duo.acc.ex):
        duo.acc.ex.restore(data)
        fresh = make(True)
        fresh.restore(data)
    for ex in (duo.acc.ex, fresh):
        assert ex.accelerated is True
        assert ex.snapshot() == data
    with book_methods(duo.ref.ex):
        duo.ref.ex.restore(data)
    run_ops(duo, ops[k:])
    duo.finish()
    # the fresh restored exchange, fed what came after the snapshot, ends the same
    tail = [(c, seq, ts) for c, seq, ts in duo.acc.log if seq > fresh.last_seq]
    with book_methods(fresh):
        for c, seq, ts in tail:
            fresh.apply(c, seq, ts)
    assert fresh.state_hash() == duo.acc.ex.state_hash()


# =========================================================================== the envelope


@needs_c
def test_stale_sequence_numbers_raise_and_change_nothing():
    duo = new_duo()
    run_ops(duo, [("place", "A", CEA, "main", "buy", 5, ("rel", 0), "limit", "GTC", False, "c1")])
    last = duo.ref.ex.last_seq
    before = duo.ref.ex.state_hash()
    assert duo.acc.ex.state_hash() == before
    for seq in (last, last - 1, 0, -1):
        for make_cmd in (
            lambda: PlaceOrder(account="B", instrument=CEA, side="sell", qty=5, price=8_500),
            lambda: PlaceOrder(account="nobody", instrument=CEA, side="sell", qty=5, price=8_500),
            lambda: CancelOrder(account="A", client_order_id="c1"),
            lambda: DepositCash(account="A", amount=5),
            Unknown,
        ):
            results = []
            for ex in (duo.ref.ex, duo.acc.ex):
                c = make_cmd()
                results.append(on(ex, lambda: ex.apply(c, seq, T0 + 10**15)))
            assert results[0][:2] == ("raised", SequenceError), results[0]
            assert results[0] == results[1]
            for ex in (duo.ref.ex, duo.acc.ex):
                assert ex.last_seq == last
                assert ex.state_hash() == before
    # and the stream goes on normally afterwards
    run_ops(duo, [("place", "B", CEA, "main", "sell", 5, ("rel", 0), "limit", "GTC", False, None)])
    duo.finish()


@needs_c
@pytest.mark.parametrize("seq", [2**31, 2**32 + 1, 2**63 - 1, 2**63, 2**64 + 5, 10**30])
def test_huge_sequence_numbers_and_timestamps(seq):
    duo = new_duo()
    for ts in (T0 + 1, 2**63 - 1, 2**63, 2**64 + 7):
        for make_cmd in (
            lambda: PlaceOrder(account="A", instrument=CEA, side="buy", qty=5, price=8_500),
            lambda: PlaceOrder(account="B", instrument=CEA, side="sell", qty=3, price=8_500),
            lambda: CancelOrder(account="A", order_id=duo.ids[-1][0] if duo.ids else 1),
        ):
            seq += 1
            results = []
            for ex in (duo.ref.ex, duo.acc.ex):
                c = make_cmd()
                results.append(on(ex, lambda: ex.apply(c, seq, ts)))
            assert results[0][0] == "ok", results[0]
            assert results[1][0] == "ok", results[1]
            assert same(results[0][1], results[1][1]), results
            for e in results[0][1]:
                if isinstance(e, ExecutionReport) and e.exec_type == "new":
                    duo.ids.append((e.order_id, e.account))
            assert duo.ref.ex.state_hash() == duo.acc.ex.state_hash()
    duo.finish()


@needs_c
@pytest.mark.parametrize(
    "seq_fn",
    [
        lambda last: last + 0.5,
        lambda last: float(last + 1),
        lambda last: True,
        lambda last: None,
        lambda last: str(last + 1),
        lambda last: MyInt(last + 1),
    ],
    ids=["float-half", "float-whole", "bool", "none", "str", "int-subclass"],
)
def test_sequence_numbers_of_other_types(seq_fn):
    """Not what a sequencer sends, but apply must behave as the reference does (accept what it
    accepts, raise the same exception otherwise)."""
    duo = new_duo()
    for make_cmd in (
        lambda: PlaceOrder(account="A", instrument=CEA, side="buy", qty=5, price=8_500),
        lambda: CancelOrder(account="A", order_id=1),
    ):
        last = duo.ref.ex.last_seq
        results = []
        for ex in (duo.ref.ex, duo.acc.ex):
            c = make_cmd()
            results.append(on(ex, lambda: ex.apply(c, seq_fn(last), T0 + 10**15)))
        if results[0][0] == "ok":
            assert results[1][0] == "ok", results
            assert same(results[0][1], results[1][1]), results
        else:
            assert results[0] == results[1]
        assert same(duo.ref.ex.last_seq, duo.acc.ex.last_seq)
        assert duo.ref.ex.state_hash() == duo.acc.ex.state_hash()


@needs_c
def test_unknown_commands_are_rejected_alike():
    class Mystery:  # has a TYPE, is not registered
        TYPE = "mystery"

    class MyPlace(PlaceOrder):  # a subclass is not the class: the handlers are keyed by type
        pass

    class MyCancel(CancelOrder):
        pass

    duo = new_duo()
    run_ops(duo, [("place", "A", CEA, "main", "buy", 5, ("rel", 0), "limit", "GTC", False, "c1")])
    oid = duo.ids[-1][0]
    for build in (
        Unknown,
        Mystery,
        lambda: MyPlace(account="B", instrument=CEA, side="sell", qty=5, price=8_500),
        lambda: MyPlace(account="nobody", instrument=CEA, side="sell", qty=5, price=8_500),
        lambda: MyCancel(account="A", order_id=oid),
    ):
        evs = duo.apply(build)
        assert len(evs) == 1 and evs[0].TYPE == "command_rejected"
        assert evs[0].code == "UNKNOWN_COMMAND"
    assert duo.ref.ex.accounts["A"].orders  # the order still rests
    duo.finish()


# =========================================================================== big numbers

BIG_SYMS = {"H31": 2**31, "H32": 2**32, "H62": 2**62, "H63": 2**63, "H64": 2**64, "NOREF": 0}
# a price each instrument accepts that the C path takes (< 2**31, inside the band)
C_PRICE = {"H31": 2_000_000_000, "NOREF": 100, CEA: 8_500}
HUGE_FIRMS = ("X", "Y", "W")  # balances far beyond 64 bits: their orders go to Python
PLAIN_FIRMS = ("M", "N")  # int64 balances: their plain limit orders take the C path


def setup_big(duo: Duo) -> None:
    cmds = [
        AddSegment(name="main", tick=1, lot=1, max_order_qty=2**80, fee_bps=7, access="all"),
        AddSegment(name="nofee", tick=1, lot=1, max_order_qty=2**200, fee_bps=0, access="all"),
    ]
    for sym, ref in BIG_SYMS.items():
        cmds.append(AddInstrument(symbol=sym, kind="allowance", vintage=2026, reference_price=ref))
    cmds.append(AddInstrument(symbol=CEA, kind="allowance", vintage=2026, reference_price=8_500))
    for f, stp in (
        ("X", "cancel_resting"),
        ("Y", "cancel_incoming"),
        ("W", "cancel_both"),
        ("M", "cancel_resting"),
        ("N", "cancel_both"),
    ):
        huge = f in HUGE_FIRMS
        cmds.append(RegisterFirm(firm_id=f, stp_policy=stp))
        cmds.append(DepositCash(account=f, amount=2**300 if huge else 10**15))
        for sym in list(BIG_SYMS) + [CEA]:
            cmds.append(
                IssueUnits(account=f, instrument=sym, qty=2**200 if huge else 10**9, ref="big")
            )
    duo.run(*cmds)
    duo.n_setup = len(duo.history)


def _near(v):
    return st.sampled_from([v - 1, v, v + 1, v - 1000, v + 1000]) if v else st.integers(1, 9)


big_price = st.one_of(
    *[_near(v) for v in (2**31, 2**32, 2**62, 2**63, 2**64)],
    st.integers(1, 10**4),
    st.sampled_from([None, 2**100]),
)
big_qty = st.one_of(
    st.integers(1, 50),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 2**70]),
)
big_op = st.one_of(
    st.tuples(
        st.just("place"),
        st.sampled_from(HUGE_FIRMS),
        st.sampled_from(list(BIG_SYMS) + [CEA]),
        st.sampled_from(["main", "nofee"]),
        st.sampled_from(["buy", "sell"]),
        big_qty,
        big_price,
        st.sampled_from(["limit"] * 4 + ["market"]),
        st.sampled_from(["GTC", "GTC", "DAY", "IOC", "FOK"]),
        st.booleans(),
        st.sampled_from([None, "k"]),
    ),
    # plain orders (the C path) in the same books, next to the huge ones
    st.tuples(
        st.just("place"),
        st.sampled_from(PLAIN_FIRMS),
        st.sampled_from(list(C_PRICE)),
        st.sampled_from(["main", "nofee"]),
        st.sampled_from(["buy", "sell"]),
        st.integers(1, 50),
        st.tuples(st.just("c"), st.integers(-3, 3)),
        st.just("limit"),
        st.sampled_from(["GTC", "DAY"]),
        st.booleans(),
        st.sampled_from([None, "k"]),
    ),
    st.tuples(
        st.just("place"),
        st.sampled_from(HUGE_FIRMS),
        st.sampled_from(list(C_PRICE)),
        st.sampled_from(["main", "nofee"]),
        st.sampled_from(["buy", "sell"]),
        big_qty,
        st.tuples(st.just("c"), st.integers(-3, 3)),
        st.just("limit"),
        st.sampled_from(["GTC", "DAY", "IOC"]),
        st.just(False),
        st.just(None),
    ),
    st.tuples(st.just("cancel"), id_index, st.just("owner"), st.just("id"), st.none()),
    st.tuples(
        st.just("amend"),
        id_index,
        st.just("owner"),
        st.just(False),
        st.sampled_from([None, 1, 2**63, -1]),
        st.sampled_from([None, 1, 2**62, -1]),
    ),
    st.tuples(
        st.just("bigband"),
        st.sampled_from(list(BIG_SYMS)),
        st.sampled_from([None, 0, 2**31, 2**62, 2**63, 2**64 + 1]),
        st.sampled_from([None, 0, 1, 1_000, 10_000]),
    ),
    st.tuples(
        st.just("withdraw"),
        st.sampled_from(HUGE_FIRMS + PLAIN_FIRMS),
        st.sampled_from([1, 2**63, 2**99, 2**100 - 1, 10**14]),
    ),
    st.tuples(st.just("eod")),
)


def run_big(duo: Duo, ops) -> None:
    for o in ops:
        if o[0] == "place":
            _, acct, sym, seg, side, qty, price, otype, tif, post, coid = o
            if otype == "market" and price == 2**100:
                price = None
            if isinstance(price, tuple):
                price = C_PRICE[sym] + price[1]
            duo.apply(
                lambda: PlaceOrder(
                    account=acct,
                    instrument=sym,
                    segment=seg,
                    side=side,
                    qty=qty,
                    price=price,
                    order_type=otype,
                    tif=tif,
                    post_only=post,
                    client_order_id=coid,
                )
            )
        elif o[0] == "bigband":
            _, sym, ref, bps = o
            duo.apply(lambda: SetPriceBand(instrument=sym, reference_price=ref, band_bps=bps))
        else:
            build = command_for(duo, o)
            if build is not None:
                duo.apply(build)


@needs_c
@streams_settings(60)
@given(ops=streams(big_op, 6, 15))
def test_prices_quantities_and_cash_beyond_64_bits_agree(ops):
    duo = Duo()
    setup_big(duo)
    run_big(duo, ops)
    duo.finish()


@needs_c
@pytest.mark.parametrize(
    "sym,price",
    [
        ("H31", 2**31),
        ("H31", 2**31 - 1),
        ("H32", 2**32),
        ("H62", 2**62),
        ("H62", 2**62 + 1),
        ("H63", 2**63 - 1),
        ("H63", 2**63),
        ("H64", 2**64),
        ("NOREF", 2**62 + 1),
        ("NOREF", 2**63 + 5),
    ],
)
@pytest.mark.parametrize("qty", [1, 3, 2**31, 2**33])
def test_big_crossing_trades_agree(sym, price, qty):
    """Deterministic: rest, cross (partial then full), cancel, at huge prices/quantities."""
    duo = Duo()
    setup_big(duo)
    for seg in ("main", "nofee"):
        duo.run(
            PlaceOrder(account="X", instrument=sym, segment=seg, side="sell", qty=qty, price=price),
            PlaceOrder(
                account="X", instrument=sym, segment=seg, side="sell", qty=qty, price=price + 1
            ),
            PlaceOrder(
                account="Y", instrument=sym, segment=seg, side="buy", qty=qty + 1, price=price + 1
            ),
            PlaceOrder(
                account="W",
                instrument=sym,
                segment=seg,
                side="buy",
                qty=2 * qty,
                price=price + 1,
                tif="IOC",
            ),
            PlaceOrder(account="Y", instrument=sym, segment=seg, side="buy", qty=qty, price=price),
            PlaceOrder(
                account="X",
                instrument=sym,
                segment=seg,
                side="sell",
                qty=2 * qty,
                price=price,
                tif="FOK",
            ),
            PlaceOrder(
                account="X",
                instrument=sym,
                segment=seg,
                side="sell",
                qty=qty,
                price=None,
                order_type="market",
            ),
            CancelAll(account="Y"),
            CancelAll(account="X"),
        )
    duo.finish()


def _po(account, side, qty, price, sym=CEA, seg="nofee", **kw):
    return PlaceOrder(
        account=account, instrument=sym, segment=seg, side=side, qty=qty, price=price, **kw
    )


# Plain orders (int64 balances, prices and quantities under 2**31: the C path takes them)
# meeting what only the Python path can have made: resting orders, price levels, day
# statistics and lots beyond 64 (or 127) bits.
HUGE_NEIGHBOURS = {
    # a plain order rests at a level whose quantity is 2**63 or more
    "rest-at-level-over-int64": [_po("X", "sell", 2**63, 9_000), _po("M", "sell", 5, 9_000)],
    # ... or just under it: the new level quantity does not fit int64
    "rest-at-level-near-int64-max": [
        _po("X", "sell", 2**63 - 1, 9_000),
        _po("M", "sell", 5, 9_000),
    ],
    "rest-bid-at-level-near-int64-max": [
        _po("X", "buy", 2**63 - 3, 8_000),
        _po("M", "buy", 5, 8_000),
    ],
    # a plain order crosses a resting order of 2**63 or more
    "cross-maker-over-int64": [_po("X", "sell", 2**64, 9_000), _po("M", "buy", 5, 9_000)],
    "cross-bid-maker-over-int64": [_po("X", "buy", 2**63 + 1, 8_000), _po("M", "sell", 5, 8_000)],
    # ... a level of two makers that sums to 2**63
    "cross-level-over-int64": [
        _po("X", "sell", 2**62, 9_000),
        _po("Y", "sell", 2**62, 9_000),
        _po("M", "buy", 5, 9_000),
    ],
    # ... a maker just under 2**63 (fits): partial fill, then self-trade prevention on it
    "cross-maker-near-int64-max": [
        _po("X", "sell", 2**63 - 1, 9_000),
        _po("M", "buy", 5, 9_000),
        _po("M", "sell", 7, 9_001),
        _po("M", "buy", 9, 9_001),
    ],
    # ... a maker whose reservation is over 2**94 (a bid of 2**63 - 1 at 8,000)
    "cross-maker-with-huge-reservation": [
        _po("X", "buy", 2**63 - 1, 8_000, seg="main"),
        _po("M", "sell", 5, 8_000, seg="main"),
    ],
    # the day's notional / high of the instrument are over 2**127 (a trade at 2**128 with
    # no price band), then a plain trade the same day
    "day-stats-over-int128": [
        _po("X", "sell", 1, 2**128, sym="NOREF"),
        _po("Y", "buy", 1, 2**128, sym="NOREF"),
        _po("M", "sell", 5, 100, sym="NOREF"),
        _po("N", "buy", 5, 100, sym="NOREF"),
    ],
    # ... just under 2**127: the plain trade's notional takes the sum over it
    "day-notional-near-int128-max": [
        _po("X", "sell", 1, 2**127 - 100, sym="NOREF"),
        _po("Y", "buy", 1, 2**127 - 100, sym="NOREF"),
        _po("M", "sell", 5, 100, sym="NOREF"),
        _po("N", "buy", 5, 100, sym="NOREF"),
    ],
    # the buyer's purchase lot is 2**127 (bought through Python), then it buys plainly
    "purchase-lot-over-int127": [
        DepositCash(account="N", amount=2**127),
        _po("X", "sell", 2**127, 1, sym="NOREF"),
        _po("N", "buy", 2**127, 1, sym="NOREF"),
        _po("X", "sell", 5, 1, sym="NOREF"),
        _po("N", "buy", 5, 1, sym="NOREF"),
    ],
    # the seller's and the exchange's cash, the seller's units over int64 (slot arithmetic)
    "counterparties-over-int64": [
        _po("X", "sell", 5, 9_000, seg="main"),
        _po("M", "buy", 5, 9_000, seg="main"),
        _po("Y", "buy", 5, 9_000, seg="main"),
        _po("M", "sell", 5, 9_000, seg="main"),
    ],
}


@needs_c
@pytest.mark.parametrize("name", sorted(HUGE_NEIGHBOURS))
def test_plain_orders_next_to_numbers_beyond_int64(name):
    duo = Duo()
    setup_big(duo)
    duo.run(*HUGE_NEIGHBOURS[name])
    # and the market goes on: the plain firms trade and cancel in the same book
    duo.run(
        _po("M", "sell", 3, 9_002),
        _po("N", "buy", 4, 9_002),
        CancelAll(account="M"),
        CancelAll(account="N"),
        CancelAll(account="X"),
        EndOfDay(),
    )
    duo.finish()


@needs_c
def test_thousands_of_price_levels():
    """More than 2,000 levels on a side: the SortedList splits into several sublists, where
    the C path leaves the single-sublist fast path (CCER has no band, main's tick is 5)."""
    rnd = random.Random(2026)
    duo = new_duo()
    duo.hash_every = 250
    cmds = []
    for i in range(2_300):
        seller = "ABC"[i % 3]
        cmds.append(
            PlaceOrder(
                account=seller,
                instrument=CCER,
                side="sell",
                qty=1,
                price=5 * (rnd.randrange(40, 6_000)),
            )
        )
    duo.run(*cmds)
    duo.check_state()
    for _ in range(400):
        r = rnd.random()
        if r < 0.4 and duo.ids:
            oid, owner = duo.ids[-1 - rnd.randrange(min(len(duo.ids), 2_000))]
            duo.run(CancelOrder(account=owner, order_id=oid))
        elif r < 0.7:
            duo.run(
                PlaceOrder(
                    account=rnd.choice("ABCD"),
                    instrument=CCER,
                    side=rnd.choice(["buy", "sell"]),
                    qty=rnd.randint(1, 3),
                    price=5 * rnd.randrange(40, 6_000),
                )
            )
        else:  # a sweep through many levels
            duo.run(
                PlaceOrder(
                    account=rnd.choice("ABD"),
                    instrument=CCER,
                    side="buy",
                    qty=rnd.randint(5, 60),
                    price=5 * rnd.randrange(200, 3_000),
                )
            )
    duo.check_state()
    duo.finish()


@needs_c
@pytest.mark.parametrize("amount", [2**63 - 1, 2**63, 2**64 + 1, 10**30])
def test_cash_above_64_bits_then_trading_agrees(amount):
    duo = new_duo()
    duo.run(DepositCash(account="A", amount=amount), DepositCash(account="B", amount=amount))
    ops = [
        ("place", "B", CEA, "main", "sell", 20, ("rel", 1), "limit", "GTC", False, "s1"),
        ("place", "B", CEA, "main", "sell", 20, ("rel", 2), "limit", "DAY", False, None),
        ("place", "A", CEA, "main", "buy", 30, ("rel", 2), "limit", "GTC", False, "b1"),
        ("place", "A", CEA, "main", "buy", 10, ("rel", -1), "limit", "GTC", False, "b2"),
        ("place", "B", CEA, "main", "sell", 25, ("rel", -2), "limit", "GTC", False, None),
        ("place", "A", CEA, "lots", "buy", 100, ("rel", 0), "limit", "GTC", False, None),
        ("place", "C", CEA, "lots", "sell", 50, ("rel", 0), "limit", "GTC", False, None),
        ("place", "A", CEA, "main", "buy", 10, ("abs", None), "market", "IOC", False, None),
        ("cancel", 0, "owner", "id", None),
        ("cancel", 1, "owner", "coid", "b2"),
        ("withdraw", "A", amount - 1),
        ("place", "A", CEA, "main", "buy", 1_000, ("rel", 0), "limit", "GTC", False, None),
        ("eod",),
    ]
    run_ops(duo, ops)
    duo.finish()


# =========================================================================== listeners


@needs_c
def test_trade_listeners_hear_the_same_trades_in_the_same_order():
    duo = new_duo()  # a listener on each since construction (plus compliance's)
    ops = [
        ("place", "A", CEA, "main", "sell", 10, ("rel", 1), "limit", "GTC", False, None),
        ("place", "B", CEA, "main", "sell", 10, ("rel", 2), "limit", "GTC", False, None),
        ("place", "S", CEA, "main", "sell", 30, ("rel", 2), "limit", "GTC", False, None),
    ]
    run_ops(duo, ops)
    late = {"ref": [], "acc": []}
    duo.ref.ex.trade_listeners.append(late["ref"].append)  # appended after orders rested
    duo.acc.ex.trade_listeners.append(late["acc"].append)
    run_ops(
        duo,
        [
            ("place", "C", CEA, "main", "buy", 45, ("rel", 3), "limit", "GTC", False, None),
            ("place", "T", CEA, "main", "sell", 25, ("rel", 0), "limit", "GTC", False, None),
        ],
    )
    assert late["ref"] and same(late["ref"], late["acc"])
    assert [t.trade_id for t in duo.heard["ref"]] == sorted(t.trade_id for t in duo.heard["ref"])
    assert any(t.proceeds_split for t in duo.heard["acc"])  # sub-quota lots were sold
    # removed listeners hear nothing more; compliance's record is in the state hash
    duo.ref.ex.trade_listeners.remove(late["ref"].append)
    duo.acc.ex.trade_listeners.remove(late["acc"].append)
    n = len(late["ref"])
    run_ops(duo, [("place", "A", CEA, "main", "buy", 5, ("rel", 6), "limit", "GTC", False, None)])
    assert len(late["ref"]) == n and len(late["acc"]) == n
    assert duo.ref.ex.modules["compliance"].trades == duo.acc.ex.modules["compliance"].trades
    assert duo.ref.ex.modules["compliance"].trades
    duo.finish()


@needs_c
def test_trade_listener_list_replaced():
    """``ex.trade_listeners`` is a plain attribute: a new list takes effect."""
    duo = new_duo()
    got = {"ref": [], "acc": []}
    duo.ref.ex.trade_listeners = [got["ref"].append]
    duo.acc.ex.trade_listeners = [got["acc"].append]
    run_ops(
        duo,
        [
            ("place", "A", CEA, "main", "sell", 10, ("rel", 1), "limit", "GTC", False, None),
            ("place", "B", CEA, "main", "buy", 10, ("rel", 1), "limit", "GTC", False, None),
        ],
    )
    assert got["ref"] and same(got["ref"], got["acc"])
    duo.finish()


@needs_c
def test_a_listener_that_raises_escapes_alike():
    duo = new_duo()

    def boom(t):
        raise RuntimeError(f"listener saw trade {t.trade_id}")

    duo.ref.ex.trade_listeners.append(boom)
    duo.acc.ex.trade_listeners.append(boom)
    duo.may_raise = True
    run_ops(
        duo,
        [
            ("place", "A", CEA, "main", "sell", 10, ("rel", 1), "limit", "GTC", False, None),
            ("place", "B", CEA, "main", "buy", 4, ("rel", 1), "limit", "GTC", False, None),
        ],
    )  # Duo.apply: the same exception from both, the same state after
    # the book keeps the L2 changes of the interrupted command: the next update carries them
    duo.ref.ex.trade_listeners.remove(boom)
    duo.acc.ex.trade_listeners.remove(boom)
    run_ops(
        duo,
        [
            ("place", "C", CEA, "main", "sell", 3, ("rel", 4), "limit", "GTC", False, None),
            ("place", "B", CEA, "main", "buy", 2, ("rel", 1), "limit", "GTC", False, None),
            ("cancel", 0, "owner", "id", None),
        ],
    )
    duo.finish()


@needs_c  # the duo: the reference path beside the compiled one
def test_trade_listeners_run_once_the_command_is_applied():
    """A buy that sweeps two resting sells: each listener call already sees the whole command
    applied (both trades numbered, the buyer's order done), on both paths alike, in the order
    the trades settled. Called from inside the settlement loop, the first call saw only the
    first trade."""
    duo = new_duo()
    seen: dict[str, list] = {"ref": [], "acc": []}
    for name, seqr in (("ref", duo.ref), ("acc", duo.acc)):
        ex = seqr.ex

        def look(t, ex=ex, out=seen[name]):
            buyer = ex.accounts[t.buyer]
            out.append(
                (
                    t.trade_id,
                    t.qty,
                    ex.next_trade_id,
                    sorted(o.status for o in buyer.orders.values()),
                )
            )

        ex.trade_listeners.append(look)
    run_ops(
        duo,
        [
            ("place", "A", CEA, "main", "sell", 3, ("rel", 1), "limit", "GTC", False, None),
            ("place", "C", CEA, "main", "sell", 4, ("rel", 2), "limit", "GTC", False, None),
            ("place", "B", CEA, "main", "buy", 7, ("rel", 2), "limit", "GTC", False, None),
        ],
    )
    duo.finish()
    assert seen["ref"] == seen["acc"]
    (t1, q1, next1, live1), (t2, q2, next2, live2) = seen["ref"]
    assert (q1, q2) == (3, 4) and t2 == t1 + 1
    assert next1 == next2 == t2 + 1  # the second trade was settled before the first was heard
    assert live1 == live2 == []  # the buy order is filled and gone when the first is heard


@needs_c
def test_emit_book_updates_toggled_after_construction():
    duo = new_duo()
    ops = [
        ("place", "A", CEA, "main", "sell", 10, ("rel", 1), "limit", "GTC", False, None),
        ("place", "B", CEA, "main", "buy", 4, ("rel", 1), "limit", "GTC", False, None),
        ("cancel", 1, "owner", "id", None),
    ]
    duo.ref.ex.emit_book_updates = duo.acc.ex.emit_book_updates = False
    run_ops(duo, ops)
    duo.ref.ex.emit_book_updates = duo.acc.ex.emit_book_updates = True
    run_ops(duo, ops)
    duo.finish()


# =========================================================================== odd inputs


@needs_c
@pytest.mark.parametrize(
    "field,value",
    [
        ("account", {"x": 1}),
        ("account", ["A"]),
        ("account", ("A",)),
        ("client_order_id", {"x": 1}),
        ("client_order_id", ["c"]),
        ("instrument", {"x": 1}),
        ("segment", ["main"]),
        ("side", ["buy"]),
        ("tif", {"GTC": 1}),
        ("order_type", ["limit"]),
        ("post_only", [1]),
        ("price", [8_500]),
        ("qty", [5]),
    ],
)
def test_unhashable_or_odd_order_fields_behave_alike(field, value):
    """Values a JSON decoder can produce (a dict, a list, a tuple): a reject or the same
    exception out of apply, and the same state after it."""
    duo = new_duo()
    duo.may_raise = True
    run_ops(duo, [("place", "B", CEA, "main", "sell", 10, ("rel", 0), "limit", "GTC", False, None)])
    kw = dict(
        account="A",
        instrument=CEA,
        segment="main",
        side="buy",
        qty=5,
        price=8_500,
        client_order_id="q",
    )
    kw[field] = value
    duo.apply(lambda: PlaceOrder(**kw))
    kw2 = dict(account="A", order_id=duo.ids[-1][0], client_order_id=None)
    if field in kw2:
        kw2[field] = value
    duo.apply(lambda: CancelOrder(**kw2))
    duo.apply(lambda: CancelOrder(account="B", order_id=[duo.ids[-1][0]]))
    duo.apply(lambda: CancelOrder(account="B", order_id=None, client_order_id={"x": 1}))
    duo.finish()


@needs_c
@pytest.mark.parametrize(
    "field",
    [
        "account",
        "instrument",
        "segment",
        "side",
        "qty",
        "price",
        "order_type",
        "tif",
        "post_only",
        "client_order_id",
    ],
)
def test_a_command_missing_a_field_behaves_alike(field):
    """A slot left unset (AttributeError in the reference) is handed over, not misread."""
    duo = new_duo()

    def place():
        c = PlaceOrder(account="A", instrument=CEA, side="buy", qty=5, price=8_500)
        delattr(c, field)
        return c

    def cancel():
        c = CancelOrder(account="A", order_id=duo.ids[-1][0])
        if hasattr(CancelOrder, field):
            delattr(c, field)
        return c

    run_ops(duo, [("place", "A", CEA, "main", "buy", 5, ("rel", 0), "limit", "GTC", False, None)])
    duo.may_raise = True
    duo.apply(place)
    duo.apply(cancel)
    duo.finish()
