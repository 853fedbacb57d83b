"""Buffer accounting of removal credits under any sequence of issuances, trades, transfers,
resting orders, voluntary retirements and reversals (hypothesis).

After every step: for each removal type the buffer pool ``@buffer`` holds exactly what was
contributed less what reversals cancelled from it, never below zero (counted here from the
events, independently of the registry's own counters); the registry's serials agree with the
core (``RegistryModule.check``) and the ledger balances (``check_invariants``); a refused
command changes nothing. At the end, replaying the command log into a fresh exchange gives the
same ``state_hash``, and so does a snapshot round trip, which still passes ``check``.
"""
from __future__ import annotations

from hypothesis import event, given
from hypothesis import strategies as st

from exchange.core.commands import PlaceOrder, TransferUnits
from exchange.core.events import CommandRejected, Trade
from exchange.engine import build_exchange
from exchange.registry.commands import (
    ConfigureRegistry, RegisterRemovalProject, RemovalVerified, ReportReversal, RetireCredits,
    ReversalReported, VerifyRemoval,
)
from exchange.registry.module import BUFFER
from helpers import streams_settings
from test_registry import PRICE, Reg, of, stable_hash

FIRMS = ("A", "B", "C")
# project -> (removal type, owner)
PROJECTS = {"N1": ("natural", "A"), "N2": ("natural", "B"), "E1": ("engineered", "A"),
            "E2": ("engineered", "C")}
OTYPE = {"natural": "RMN", "engineered": "RME"}
VINTAGES = (2026, 2027)
SYMS = tuple(f"{o}-{v}" for o in ("RMN", "RME") for v in VINTAGES)

tonnes = st.integers(0, 3_000)
ops = st.one_of(
    st.tuples(st.just("verify"), st.sampled_from(sorted(PROJECTS)), st.sampled_from(VINTAGES),
              tonnes, st.integers(0, 500), st.integers(0, 1_500)),
    st.tuples(st.just("trade"), st.sampled_from(SYMS), st.sampled_from(FIRMS),
              st.sampled_from(FIRMS), st.integers(1, 2_000)),
    st.tuples(st.just("transfer"), st.sampled_from(SYMS), st.sampled_from(FIRMS),
              st.sampled_from(FIRMS), st.integers(1, 2_000)),
    st.tuples(st.just("rest"), st.sampled_from(SYMS), st.sampled_from(FIRMS),
              st.integers(1, 500)),
    st.tuples(st.just("retire"), st.sampled_from(SYMS), st.sampled_from(FIRMS),
              st.integers(1, 300)),
    st.tuples(st.just("reverse"), st.sampled_from(sorted(PROJECTS)), st.integers(1, 3_000)),
)


def pool(m: Reg, rtype: str) -> int:
    return sum(m.units(BUFFER, f"{OTYPE[rtype]}-{v}") for v in VINTAGES)


def free(m: Reg, firm: str, sym: str) -> int:
    h = m.ex.accounts[firm].holdings.get(sym)
    return h.available if h is not None else 0


def project_units(m: Reg, project: str, firm: str, syms=SYMS) -> int:
    """Units of ``project``'s serials ``firm`` holds (in orders or not)."""
    reg = m.reg
    return sum(hi - lo + 1 for sym in syms
               for b, lo, hi in reg.owned.get(firm, {}).get(sym, [])
               if reg.blocks[b][1] == project and reg.blocks[b][0] == reg.params["issuer"])


# every project's first vintage verified up front, so most sequences have credits to move
first_verifications = st.lists(
    st.tuples(st.just("verify"), st.sampled_from(sorted(PROJECTS)), st.just(2026), tonnes,
              st.integers(0, 500), st.integers(0, 1_500)), min_size=4, max_size=4)


@streams_settings(100)
@given(bps=st.integers(0, 10_000), first=first_verifications,
       rest=st.lists(ops, min_size=1, max_size=30))
def test_buffer_accounting_under_any_sequence(bps, first, rest):
    steps = [(op[0], pid) + op[2:] for op, pid in zip(first, sorted(PROJECTS))] + rest
    m = Reg(configure=False, mrv=False)
    m.ok(ConfigureRegistry(buffer_bps=bps))
    for pid, (rtype, owner) in sorted(PROJECTS.items()):
        m.ok(RegisterRemovalProject(project_id=pid, removal_type=rtype, owner=owner))
    contributed = {"natural": 0, "engineered": 0}
    cancelled = {"natural": 0, "engineered": 0}
    verified: set = set()
    for op in steps:
        kind = op[0]
        if kind == "verify":
            _, pid, vintage, gross, own, base = op
            before = stable_hash(m.ex)
            evs = m.seq(VerifyRemoval(project_id=pid, vintage=vintage, verifier="V1",
                                      gross_removal=gross, project_emissions=own,
                                      baseline_removal=base))
            if (pid, vintage) in verified:
                assert [e.code for e in of(evs, CommandRejected)] == ["DOUBLE_COUNTED"]
                assert stable_hash(m.ex) == before, "a refused command changed the market"
            else:
                verified.add((pid, vintage))
                rv = of(evs, RemovalVerified)[0]
                net = max(0, gross - own - base)
                assert rv.net_removal == net
                assert rv.buffer == -(-net * bps // 10_000)  # rounded up
                assert rv.buffer + rv.issued_to_owner == net
                contributed[PROJECTS[pid][0]] += rv.buffer
        elif kind in ("trade", "transfer"):
            _, sym, src, dst, qty = op
            qty = min(qty, free(m, src, sym))
            if src == dst or not qty:
                continue
            if kind == "transfer":
                m.ok(TransferUnits(from_account=src, to_account=dst, instrument=sym, qty=qty))
            else:
                m.ok(PlaceOrder(account=src, instrument=sym, side="sell", price=PRICE, qty=qty))
                evs = m.ok(PlaceOrder(account=dst, instrument=sym, side="buy", price=PRICE,
                                      qty=qty))
                assert sum(t.qty for t in of(evs, Trade)) == qty
                event("trade")
        elif kind == "rest":  # a sell order resting above every bid: reserves units
            _, sym, firm, qty = op
            qty = min(qty, free(m, firm, sym))
            if qty:
                m.ok(PlaceOrder(account=firm, instrument=sym, side="sell",
                                price=PRICE + 200, qty=qty))
        elif kind == "retire":
            _, sym, firm, qty = op
            qty = min(qty, free(m, firm, sym))
            if qty:
                m.ok(RetireCredits(account=firm, instrument=sym, qty=qty))
        else:
            _, pid, qty = op
            rtype, owner = PROJECTS[pid]
            in_pool = pool(m, rtype)
            with_owner = project_units(m, pid, owner)
            # what the owner can lose: per vintage, oldest first, the project's credits it
            # holds, but never units reserved by its open orders
            left = qty - min(qty, in_pool)
            takeable = 0
            for v in VINTAGES:
                sym = f"{OTYPE[rtype]}-{v}"
                q = min(left, free(m, owner, sym), project_units(m, pid, owner, (sym,)))
                takeable += q
                left -= q
            others = {f: project_units(m, pid, f) for f in FIRMS if f != owner}
            evs = m.ok(ReportReversal(project_id=pid, qty=qty, cause="fire"))
            rr = of(evs, ReversalReported)[0]
            # the pool first, then the project's credits still with its owner (free ones)
            assert rr.from_buffer == min(qty, in_pool)
            assert rr.from_project == takeable
            assert rr.uncovered == left
            assert rr.from_buffer + rr.from_project + rr.uncovered == qty
            assert project_units(m, pid, owner) == with_owner - rr.from_project
            if rr.from_project:
                assert rr.from_buffer == in_pool  # the pool was used up first
            # never the credits the owner sold or gave away
            assert others == {f: project_units(m, pid, f) for f in FIRMS if f != owner}
            cancelled[rtype] += rr.from_buffer
            event(f"reversal: buffer {bool(rr.from_buffer)}, project {bool(rr.from_project)}, "
                  f"uncovered {bool(rr.uncovered)}")
        for rtype in ("natural", "engineered"):
            assert pool(m, rtype) == contributed[rtype] - cancelled[rtype] >= 0
            assert m.reg.buffer[rtype] == [contributed[rtype], cancelled[rtype]]
        m.check()
    # replay and snapshot round trip
    ex2 = build_exchange()
    for c in m.seq.log:
        ex2.apply(c)
    assert ex2.state_hash() == m.ex.state_hash()
    ex3 = build_exchange()
    ex3.restore(m.ex.snapshot())
    assert ex3.state_hash() == m.ex.state_hash()
    ex3.modules["registry"].check()
    ex3.check_invariants()
