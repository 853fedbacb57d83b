"""The order-state machine (exchange/core/orders.py) on both implementations.

The Python core changes a status only through ``orders.transition``, which refuses a move
outside ``ORDER_TRANSITIONS``. The compiled twin sets statuses itself (checking there would
cost the hot path), so here seeded streams - every time in force, market and post-only
orders, the three self-trade prevention policies, amends, cancels, band moves and ends of
day - run through the compiled path and the Python one, and every order's execution reports
are followed: the first says ``new`` (or ``rejected``, for an order that never got an id),
each later one is a move the table allows (a replace report keeps the status), nothing
follows a final status, and the two paths end in the same state.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from exchange.core import book as book_mod
from exchange.core import orders
from exchange.core.book import Order
from exchange.core.commands import (
    AddInstrument,
    AmendOrder,
    CancelAll,
    CancelOrder,
    DepositCash,
    EndOfDay,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    SetPriceBand,
)
from exchange.core.events import ExecutionReport
from exchange.core.exchange import AddSegment, Exchange
from exchange.core.orders import (
    INITIAL_STATUSES,
    ORDER_TRANSITIONS,
    IllegalTransition,
    OrderStatus,
    transition,
)

SYM = "CEA-2026"
FIRMS = {"A": "cancel_resting", "B": "cancel_incoming", "C": "cancel_both", "D": "cancel_resting"}


# =========================================================================== the table


def test_every_status_has_a_row_and_final_ones_lead_nowhere():
    assert set(ORDER_TRANSITIONS) == set(OrderStatus)
    finals = {s for s, nxt in ORDER_TRANSITIONS.items() if not nxt}
    assert finals == {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
    }
    for nxt in ORDER_TRANSITIONS.values():
        assert OrderStatus.NEW not in nxt and OrderStatus.REJECTED not in nxt


def test_transition_sets_the_plain_string_and_refuses_an_illegal_move():
    o = Order(1, "A", None, SYM, "main", "buy", 100, 10, "GTC")
    transition(o, OrderStatus.PARTIALLY_FILLED)
    assert o.status == "partially_filled" and type(o.status) is str
    transition(o, OrderStatus.FILLED)
    with pytest.raises(IllegalTransition, match="filled -> canceled"):
        transition(o, OrderStatus.CANCELED)
    assert o.status == "filled"
    with pytest.raises(IllegalTransition):
        transition(Order(2, "A", None, SYM, "main", "buy", 100, 10, "GTC"), OrderStatus.NEW)


def test_the_python_core_refuses_to_cancel_a_filled_order():
    """``_close`` goes through the table: a bug that would cancel a filled order raises
    instead of writing a second final status."""
    ex = Exchange(accelerate=False)
    o = Order(1, "A", None, SYM, "main", "buy", 100, 10, "GTC")
    transition(o, OrderStatus.FILLED)
    with pytest.raises(IllegalTransition):
        ex._close(o, ex.accounts["EXCHANGE"], OrderStatus.CANCELED, "CANCELED_BY_CLIENT", [])


def test_the_python_core_sets_a_status_only_through_transition():
    """Apart from an order's birth (``Order.__init__``) and a snapshot's restore
    (``Order.from_state``), no code in exchange/core assigns ``.status``: it calls
    ``orders.transition``."""
    core = Path(orders.__file__).parent
    allowed_in = {("book.py", "__init__"), ("book.py", "from_state"), ("orders.py", "transition")}
    found = []
    for path in sorted(core.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [node.target]
                    if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                    else []
                )
                for t in targets:
                    if isinstance(t, ast.Attribute) and t.attr == "status":
                        found.append((path.name, fn.name))
    assert found and set(found) <= allowed_in, sorted(set(found) - allowed_in)


# =========================================================================== the streams


class Core:
    def __init__(self, accelerate: bool):
        self.ex = Exchange(accelerate=accelerate)
        assert self.ex.accelerated is accelerate
        self.seq = 0

    def __call__(self, cmd) -> list:
        self.seq += 1
        was = book_mod.use_compiled(self.ex.accelerated)
        try:
            return self.ex.apply(cmd, self.seq, 1_000_000 * self.seq)
        finally:
            book_mod.use_compiled(was)


def setup(core: Core) -> None:
    core(AddSegment(name="main", tick=1, lot=1, max_order_qty=500, fee_bps=7))
    core(AddInstrument(symbol=SYM, kind="allowance", vintage=2026, reference_price=1_000))
    for firm, stp in FIRMS.items():
        core(RegisterFirm(firm_id=firm, stp_policy=stp))
        core(DepositCash(account=firm, amount=50_000_000))
        core(IssueUnits(account=firm, instrument=SYM, qty=20_000, ref="2026"))


def random_command(rng: random.Random, live: list[tuple[int, str]]):
    r = rng.random()
    firm = rng.choice(list(FIRMS))
    if live and r < 0.15:
        oid, owner = rng.choice(live)
        return CancelOrder(account=owner, order_id=oid)
    if live and r < 0.30:
        oid, owner = rng.choice(live)
        return AmendOrder(
            account=owner,
            order_id=oid,
            qty=rng.choice([None, rng.randint(1, 60)]),
            price=rng.choice([None, rng.randint(960, 1_040)]),
        )
    if r < 0.31:
        return EndOfDay()
    if r < 0.32:
        return SetPriceBand(instrument=SYM, band_bps=rng.choice([200, 500, 1_000]))
    if r < 0.33:
        return CancelAll(account=firm)
    otype = rng.choice(["limit"] * 9 + ["market"])
    tif = rng.choice(["GTC", "GTC", "GTC", "DAY", "IOC", "FOK"])
    post_only = otype == "limit" and tif in ("GTC", "DAY") and rng.random() < 0.1
    return PlaceOrder(
        account=firm,
        instrument=SYM,
        side=rng.choice(["buy", "sell"]),
        qty=rng.randint(1, 60),
        price=rng.randint(970, 1_030),
        order_type=otype,
        tif=tif,
        post_only=post_only,
    )


def check_reports(status: dict[int, str], events: list, seen: set[tuple[str, str]]) -> None:
    """Follow each order's reports through the table (``status``: order id -> last; the
    moves made go to ``seen``)."""
    for ev in events:
        if not isinstance(ev, ExecutionReport):
            continue
        new = ev.order_status
        assert type(new) is str, ev
        if ev.order_id == 0:  # refused before it got an id
            assert (ev.exec_type, new) == ("rejected", "rejected"), ev
            continue
        old = status.get(ev.order_id)
        if old is None:
            assert new in INITIAL_STATUSES and ev.exec_type == "new", ev
        elif ev.exec_type == "replaced":
            assert new == old and not orders.is_final(old), ev
        else:
            assert orders.allowed(old, new), f"{old} -> {new}: {ev}"
            seen.add((old, new))
        status[ev.order_id] = new


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("accelerate", [False, True])
def test_seeded_streams_change_statuses_only_along_the_table(seed, accelerate):
    if accelerate and Exchange(accelerate=True).accelerated is False:
        pytest.skip("the compiled core is not built")
    core = Core(accelerate)
    setup(core)
    rng = random.Random(seed)
    live: list[tuple[int, str]] = []
    status: dict[int, str] = {}
    seen: set[tuple[str, str]] = set()
    for _ in range(4_000):
        check_reports(status, core(random_command(rng, live)), seen)
        live = [
            (o.order_id, o.account) for a in core.ex.accounts.values() for o in a.orders.values()
        ]
        for oid, _owner in live:  # a live order's status is one that still works
            assert not orders.is_final(status[oid])
    core.ex.check_invariants()
    # the streams reach every move of the table
    moves = {(a.value, b.value) for a, nxt in ORDER_TRANSITIONS.items() for b in nxt}
    assert moves <= seen, sorted(moves - seen)


@pytest.mark.parametrize("seed", [4, 5])
def test_compiled_and_python_paths_end_in_the_same_state(seed):
    if Exchange(accelerate=True).accelerated is False:
        pytest.skip("the compiled core is not built")
    ref, acc = Core(False), Core(True)
    setup(ref)
    setup(acc)
    rng = random.Random(seed)
    live: list[tuple[int, str]] = []
    for _ in range(3_000):
        cmd = random_command(rng, live)
        r = ref(cmd)
        a = acc(type(cmd)(**{f: getattr(cmd, f) for f in cmd._FIELDS}))
        assert r == a
        live = [
            (o.order_id, o.account) for a_ in ref.ex.accounts.values() for o in a_.orders.values()
        ]
    assert ref.ex.state_hash() == acc.ex.state_hash()
