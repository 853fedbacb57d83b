"""Buffer accounting of removal credits under any sequence of issuances, trades, transfers,
resting orders, voluntary retirements and reversals (hypothesis).

After every step: for each removal type the buffer pool ``@buffer`` holds exactly what was
contributed less what reversals cancelled from it, never below zero (counted here from the
events, independently of the registry's own counters); the registry's serials agree with the
core (``RegistryModule.check``) and the ledger balances (``check_invariants``); a refused
command changes nothing. At the end, replaying the command log into a fresh exchange gives the
same ``state_hash``, and so does a snapshot round trip, which still passes ``check``.

Two more against models of their own: serials unit by unit (issuance, retirement by serial,
oldest-first moves), and carbon-inclusive batches (claimed action ids, reductions, approvals).
"""

from __future__ import annotations

import json

from hypothesis import event, given
from hypothesis import strategies as st

from exchange.compliance.commands import SurrenderUnits
from exchange.core.commands import PlaceOrder, TransferUnits, decode_command, encode_command
from exchange.core.events import CommandRejected, Trade
from exchange.app.engine import build_exchange
from exchange.registry.commands import (
    ConfigureRegistry,
    CreditsRetired,
    IssueCredits,
    RegisterRemovalProject,
    RemovalVerified,
    ReportReversal,
    RetireCredits,
    ReversalReported,
    VerifyRemoval,
)
from exchange.registry import serials as S
from exchange.registry.module import BUFFER
from helpers import streams_settings
from test_registry import PRICE, Reg, of, stable_hash

FIRMS = ("A", "B", "C")
# project -> (removal type, owner)
PROJECTS = {
    "N1": ("natural", "A"),
    "N2": ("natural", "B"),
    "E1": ("engineered", "A"),
    "E2": ("engineered", "C"),
}
OTYPE = {"natural": "RMN", "engineered": "RME"}
VINTAGES = (2026, 2027)
SYMS = tuple(f"{o}-{v}" for o in ("RMN", "RME") for v in VINTAGES)

tonnes = st.integers(0, 3_000)
ops = st.one_of(
    st.tuples(
        st.just("verify"),
        st.sampled_from(sorted(PROJECTS)),
        st.sampled_from(VINTAGES),
        tonnes,
        st.integers(0, 500),
        st.integers(0, 1_500),
    ),
    st.tuples(
        st.just("trade"),
        st.sampled_from(SYMS),
        st.sampled_from(FIRMS),
        st.sampled_from(FIRMS),
        st.integers(1, 2_000),
    ),
    st.tuples(
        st.just("transfer"),
        st.sampled_from(SYMS),
        st.sampled_from(FIRMS),
        st.sampled_from(FIRMS),
        st.integers(1, 2_000),
    ),
    st.tuples(st.just("rest"), st.sampled_from(SYMS), st.sampled_from(FIRMS), st.integers(1, 500)),
    st.tuples(
        st.just("retire"), st.sampled_from(SYMS), st.sampled_from(FIRMS), st.integers(1, 300)
    ),
    st.tuples(st.just("reverse"), st.sampled_from(sorted(PROJECTS)), st.integers(1, 3_000)),
)


def assert_replay_and_restart(m: Reg, split: int) -> None:
    """Replaying the command log (through JSON, as journaled) into a fresh exchange gives the
    same state hash; so does a snapshot round trip, and so does a restart from a snapshot
    taken part way (at ``split`` commands) that then applies the rest: state rebuilt on
    restore (indexes, claims, the registry's listeners on the core) works like the state it
    replaced."""
    log = m.seq.log
    want = m.ex.state_hash()
    ex2 = build_exchange()
    for c, seq, ts in log:  # as the journal keeps them: JSON, tuples become lists and back
        ex2.apply(decode_command(json.loads(json.dumps(encode_command(c)))), seq, ts)
    assert ex2.state_hash() == want
    ex3 = build_exchange()
    ex3.restore(m.ex.snapshot())
    assert ex3.state_hash() == want
    ex3.modules["registry"].check()
    ex3.check_invariants()
    k = split % (len(log) + 1)
    ex4 = build_exchange()
    for c, seq, ts in log[:k]:
        ex4.apply(c, seq, ts)
    ex5 = build_exchange()
    ex5.restore(ex4.snapshot())
    for c, seq, ts in log[k:]:
        ex5.apply(c, seq, ts)
    assert ex5.state_hash() == want
    ex5.modules["registry"].check()


def pool(m: Reg, rtype: str) -> int:
    return sum(m.units(BUFFER, f"{OTYPE[rtype]}-{v}") for v in VINTAGES)


def free(m: Reg, firm: str, sym: str) -> int:
    h = m.ex.accounts[firm].holdings.get(sym)
    return h.available if h is not None else 0


def project_units(m: Reg, project: str, firm: str, syms=SYMS) -> int:
    """Units of ``project``'s serials ``firm`` holds (in orders or not)."""
    reg = m.reg
    return sum(
        hi - lo + 1
        for sym in syms
        for b, lo, hi in reg.owned.get(firm, {}).get(sym, [])
        if reg.blocks[b][1] == project and reg.blocks[b][0] == reg.params["issuer"]
    )


# every project's first vintage verified up front, so most sequences have credits to move
first_verifications = st.lists(
    st.tuples(
        st.just("verify"),
        st.sampled_from(sorted(PROJECTS)),
        st.just(2026),
        tonnes,
        st.integers(0, 500),
        st.integers(0, 1_500),
    ),
    min_size=4,
    max_size=4,
)


@streams_settings(70)
@given(
    bps=st.integers(0, 10_000),
    first=first_verifications,
    rest=st.lists(ops, min_size=1, max_size=30),
    split=st.integers(0, 10**6),
)
def test_buffer_accounting_under_any_sequence(bps, first, rest, split):
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
            evs = m.seq(
                VerifyRemoval(
                    project_id=pid,
                    vintage=vintage,
                    verifier="V1",
                    gross_removal=gross,
                    project_emissions=own,
                    baseline_removal=base,
                )
            )
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
                evs = m.ok(
                    PlaceOrder(account=dst, instrument=sym, side="buy", price=PRICE, qty=qty)
                )
                assert sum(t.qty for t in of(evs, Trade)) == qty
                event("trade")
        elif kind == "rest":  # a sell order resting above every bid: reserves units
            _, sym, firm, qty = op
            qty = min(qty, free(m, firm, sym))
            if qty:
                m.ok(
                    PlaceOrder(
                        account=firm, instrument=sym, side="sell", price=PRICE + 200, qty=qty
                    )
                )
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
            event(
                f"reversal: buffer {bool(rr.from_buffer)}, project {bool(rr.from_project)}, "
                f"uncovered {bool(rr.uncovered)}"
            )
        for rtype in ("natural", "engineered"):
            assert pool(m, rtype) == contributed[rtype] - cancelled[rtype] >= 0
            assert m.reg.buffer[rtype] == [contributed[rtype], cancelled[rtype]]
        m.check()
    assert_replay_and_restart(m, split)


# ==================================================================== serials, unit by unit
KEYS = (("CCER", "P1"), ("CCER", "P2"), ("VCS", "P1"))
CREDITS = ("CCER-2026", "CCER-2027")
unit = st.integers(1, 60)
serial_ops = st.one_of(
    st.tuples(
        st.just("issue"),
        st.sampled_from(KEYS),
        st.sampled_from(CREDITS),
        unit,
        st.integers(1, 20),
        st.sampled_from(FIRMS),
    ),
    # a range starting at an issued unit (the idx-th), by its holder or another firm: most
    # such ranges are retirable, some run into units retired, held elsewhere or never issued
    st.tuples(
        st.just("retire"),
        st.integers(0, 10**6),
        st.integers(1, 10),
        st.sampled_from((None, None, None) + FIRMS),
        st.booleans(),
        st.sampled_from((False,) * 5 + (True,)),
    ),
    st.tuples(
        st.just("retire_any"),
        st.sampled_from(KEYS),
        st.sampled_from(CREDITS),
        unit,
        st.integers(1, 10),
        st.sampled_from(FIRMS),
        st.booleans(),
    ),
    st.tuples(
        st.just("trade"),
        st.sampled_from(CREDITS),
        st.sampled_from(FIRMS),
        st.sampled_from(FIRMS),
        st.integers(1, 40),
    ),
    st.tuples(
        st.just("transfer"),
        st.sampled_from(CREDITS),
        st.sampled_from(FIRMS),
        st.sampled_from(FIRMS),
        st.integers(1, 40),
    ),
    st.tuples(
        st.just("surrender"), st.sampled_from(CREDITS), st.sampled_from(FIRMS), st.integers(1, 20)
    ),
)


class UnitModel:
    """Every unit by itself: (issuer, project, vintage, n) -> [block, holder or None,
    retirement or None], blocks numbered in issuance order as the registry numbers them."""

    def __init__(self):
        self.units: dict[tuple, list] = {}
        self.blocks: list[tuple] = []  # (issuer, project, vintage, first, last, symbol)

    def held(self, firm: str, sym: str) -> list[tuple]:
        """``firm``'s units of ``sym``, oldest first (block, then unit number)."""
        return sorted(
            (u for u, (b, h, _) in self.units.items() if h == firm and self.blocks[b][5] == sym),
            key=lambda u: (self.units[u][0], u[3]),
        )

    def move_oldest(self, src: str, dst: str | None, sym: str, qty: int, why=None) -> None:
        for u in self.held(src, sym)[:qty]:
            self.units[u][1] = dst
            if dst is None:
                self.units[u][2] = why

    def serials(self, firm: str, sym: str) -> set[tuple]:
        return set(self.held(firm, sym))


def expand(serial_list: list[str]) -> set[tuple]:
    out = set()
    for s in serial_list:
        issuer, project, vintage, units = s.split("/")
        lo, _, hi = units.partition("-")
        out |= {(issuer, project, int(vintage), n) for n in range(int(lo), int(hi or lo) + 1)}
    return out


@streams_settings(50)
@given(steps=st.lists(serial_ops, min_size=1, max_size=40), split=st.integers(0, 10**6))
def test_serials_unit_by_unit_against_a_model(steps, split):
    """Issuance refused exactly when a unit was issued before; a retirement naming serials
    refused exactly when a unit is unknown, retired or not held, with that code; every trade,
    transfer and surrender moves the oldest units; each firm holds exactly the model's units."""
    m = Reg()
    model = UnitModel()
    vint = {s: int(s[-4:]) for s in CREDITS}
    for op in steps:
        kind = op[0]
        before = stable_hash(m.ex)
        if kind == "issue":
            _, (issuer, project), sym, first, n, firm = op
            us = [(issuer, project, vint[sym], k) for k in range(first, first + n)]
            evs = m.seq(
                IssueCredits(
                    account=firm,
                    instrument=sym,
                    issuer=issuer,
                    project=project,
                    first=first,
                    last=first + n - 1,
                )
            )
            event(f"issue: {'overlap' if any(u in model.units for u in us) else 'new'}")
            if any(u in model.units for u in us):
                assert [e.code for e in of(evs, CommandRejected)] == ["DOUBLE_COUNTED"]
                assert stable_hash(m.ex) == before
            else:
                assert not of(evs, CommandRejected), evs
                model.blocks.append((issuer, project, vint[sym], first, first + n - 1, sym))
                for u in us:
                    model.units[u] = [len(model.blocks) - 1, firm, None]
        elif kind in ("retire", "retire_any"):
            if kind == "retire":
                if not model.units:
                    continue
                _, idx, n, firm, surrender, other_sym = op
                u = sorted(model.units)[idx % len(model.units)]
                (issuer, project, _, first), (b, holder, _) = u, model.units[u]
                sym = model.blocks[b][5]
                if other_sym:
                    sym = CREDITS[1 - CREDITS.index(sym)]
                firm = firm or holder or FIRMS[idx % 3]
                if n <= 8:  # mostly inside the block; else it may run past its end
                    n = min(n, model.blocks[b][4] - first + 1)
            else:
                _, (issuer, project), sym, first, n, firm, surrender = op
            us = [(issuer, project, vint[sym], k) for k in range(first, first + n)]
            serial = f"{issuer}/{project}/{vint[sym]}/{first}-{first + n - 1}"
            cmd = (
                SurrenderUnits(firm_id=firm, period=2026, instrument=sym, qty=n, serials=(serial,))
                if surrender and sym == "CCER-2026"
                else RetireCredits(account=firm, instrument=sym, qty=n, serials=(serial,))
            )
            n_free = free(m, firm, sym)
            evs = m.seq(cmd)
            # the registry reads a serial block by block (oldest first): the first block
            # with a unit of another instrument, retired, or not held gives the code
            want = None
            if isinstance(cmd, SurrenderUnits) and n > n_free:
                want = "INSUFFICIENT_HOLDINGS"  # compliance checks the holding first
            elif any(u not in model.units for u in us):
                want = "UNKNOWN_SERIAL"
            else:
                for b in sorted({model.units[u][0] for u in us}):
                    mine = [model.units[u] for u in us if model.units[u][0] == b]
                    if model.blocks[b][5] != sym:
                        want = "UNKNOWN_SERIAL"
                    elif any(r is not None for _, _, r in mine):
                        want = "DOUBLE_COUNTED"
                    elif any(h != firm for _, h, _ in mine):
                        want = "SERIAL_NOT_HELD"
                    if want:
                        break
            event(f"{type(cmd).__name__} by serial: {want or 'accepted'}")
            if want:
                assert [e.code for e in of(evs, CommandRejected)] == [want], (want, evs)
                assert stable_hash(m.ex) == before
            else:
                assert not of(evs, CommandRejected), evs
                why = "surrender:2026" if isinstance(cmd, SurrenderUnits) else "voluntary"
                for u in us:
                    model.units[u][1:] = [None, why]
                assert sum(e.qty for e in of(evs, CreditsRetired)) == n
        elif kind in ("trade", "transfer"):
            _, sym, src, dst, qty = op
            qty = min(qty, free(m, src, sym))
            if src == dst or not qty:
                continue
            if kind == "transfer":
                m.ok(TransferUnits(from_account=src, to_account=dst, instrument=sym, qty=qty))
            else:
                m.trade(src, dst, sym, qty)
            model.move_oldest(src, dst, sym, qty)
        else:
            _, sym, firm, qty = op
            qty = min(qty, free(m, firm, sym))
            if not qty or sym != "CCER-2026":
                continue
            evs = m.ok(SurrenderUnits(firm_id=firm, period=2026, instrument=sym, qty=qty))
            retired = expand([e.serial for e in of(evs, CreditsRetired)])
            assert retired == set(model.held(firm, sym)[:qty])
            model.move_oldest(firm, None, sym, qty, "surrender:2026")
        for firm in FIRMS:
            for sym in CREDITS:
                assert expand(m.serials(firm, sym)) == model.serials(firm, sym), (firm, sym)
        m.check()
    # the public lookup agrees unit by unit on what is retired, and why
    for issuer, project in KEYS:
        for sym in CREDITS:
            look = m.reg.lookup(f"{issuer}/{project}/{vint[sym]}/1-80")
            got = {}
            for b in look["blocks"]:
                for r in b["retirements"]:
                    for u in expand([r["serial"]]):
                        got[u] = r["reason"]
            want = {
                u: r
                for u, (_, _, r) in model.units.items()
                if r is not None and u[:3] == (issuer, project, vint[sym])
            }
            assert got == want
            assert look["issued_units"] == sum(
                1 for u in model.units if u[:3] == (issuer, project, vint[sym])
            )
    assert_replay_and_restart(m, split)


# ==================================================================== carbon-inclusive batches
ACTION_TYPES = ("metro", "bike", "bus")
PLATFORMS = ("PLAT1", "PLAT2")
record = st.tuples(
    st.integers(0, 11),
    st.sampled_from(ACTION_TYPES * 5 + ("teleport",)),
    st.integers(1, 5_000),
    st.integers(1, 365),
)
batch_ops = st.one_of(
    st.tuples(st.just("factor"), st.sampled_from(ACTION_TYPES), st.integers(0, 2_000_000)),
    st.tuples(
        st.just("submit"), st.sampled_from(PLATFORMS), st.lists(record, min_size=1, max_size=6)
    ),
    st.tuples(st.just("approve"), st.integers(0, 10**6), st.sampled_from(("V1", "V1", "A"))),
    st.tuples(st.just("reject"), st.integers(0, 10**6)),
)


@streams_settings(50)
@given(
    factors=st.lists(st.integers(0, 2_000_000), min_size=3, max_size=3),
    steps=st.lists(batch_ops, min_size=1, max_size=30),
    split=st.integers(0, 10**6),
)
def test_batches_against_a_model(factors, steps, split):
    """An action id is claimed by at most one pending or approved batch, across platforms;
    a batch is refused exactly when it names an id claimed (or twice) or an action type not
    in the table; a rejected batch frees its ids; an approved batch issues
    floor(sum(qty x g) / 10^6) t at the table version of its submission, under serials
    PLATFORM/BATCH/2026/1-N, to the platform."""
    import datetime

    from exchange.registry.commands import (
        ActionBatchDecided,
        ActionBatchSubmitted,
        ApproveActionBatch,
        RegisterPlatform,
        RejectActionBatch,
        SetConversionFactor,
        SubmitActionBatch,
    )

    m = Reg(mrv=False)
    for p in PLATFORMS:
        m.ok(RegisterPlatform(platform_id=p))
    table: dict[str, int] = {}
    version = 0
    claimed: dict[str, str] = {}
    batches: list[dict] = []  # in submission order
    counts = {p: 0 for p in PLATFORMS}
    issued = {p: 0 for p in PLATFORMS}
    day0 = datetime.date(2026, 1, 1)
    steps = [("factor", at, g) for at, g in zip(ACTION_TYPES, factors)] + steps
    for op in steps:
        kind = op[0]
        before = stable_hash(m.ex)
        if kind == "factor":
            _, at, g = op
            evs = m.ok(SetConversionFactor(action_type=at, unit="km", g_co2e_per_unit=g))
            version += 1
            table[at] = g
            assert evs[0].version == version
        elif kind == "submit":
            _, pid, recs = op
            records = tuple(
                (f"{i:064x}", at, q, str(day0 + datetime.timedelta(d - 1))) for i, at, q, d in recs
            )
            want = None
            seen: set = set()
            for aid_, at, _, _ in records:
                if at not in table:
                    want = "UNKNOWN_ACTION_TYPE"
                elif aid_ in claimed or aid_ in seen:
                    want = "DOUBLE_COUNTED"
                if want:
                    break
                seen.add(aid_)
            evs = m.seq(SubmitActionBatch(platform_id=pid, vintage=2026, records=records))
            event(f"submit: {want or 'accepted'}")
            if want:
                assert [e.code for e in of(evs, CommandRejected)] == [want], (want, evs)
                assert stable_hash(m.ex) == before
                continue
            counts[pid] += 1
            bid = f"{pid}-{counts[pid]:06d}"
            grams = sum(q * table[at] for _, at, q, _ in records)
            assert of(evs, ActionBatchSubmitted) == [
                ActionBatchSubmitted(bid, pid, 2026, len(records), grams // 10**6, version)
            ]
            batches.append(
                {
                    "id": bid,
                    "pid": pid,
                    "t": grams // 10**6,
                    "status": "pending",
                    "ids": [r[0] for r in records],
                }
            )
            for r in records:
                claimed[r[0]] = bid
        else:
            if not batches:
                continue
            b = batches[op[1] % len(batches)]
            if kind == "approve":
                cmd = ApproveActionBatch(batch_id=b["id"], verifier=op[2])
            else:
                cmd = RejectActionBatch(batch_id=b["id"], verifier="V1", reason="no evidence")
            evs = m.seq(cmd)
            want = (
                "BATCH_NOT_PENDING"
                if b["status"] != "pending"
                else "NOT_A_VERIFIER"
                if kind == "approve" and op[2] != "V1"
                else None
            )
            event(f"{kind}: {want or 'accepted'}")
            if want:
                assert [e.code for e in of(evs, CommandRejected)] == [want], (want, evs)
                assert stable_hash(m.ex) == before
                continue
            d = of(evs, ActionBatchDecided)[0]
            if kind == "approve":
                b["status"] = "approved"
                serial = S.fmt(b["pid"], b["id"], 2026, 1, b["t"]) if b["t"] else ""
                assert (d.status, d.issued, d.serial) == ("approved", b["t"], serial)
                issued[b["pid"]] += b["t"]
            else:
                b["status"] = "rejected"
                assert (d.status, d.issued) == ("rejected", 0)
                for i in b["ids"]:
                    del claimed[i]
        assert m.reg.claimed == claimed
        for p in PLATFORMS:
            assert m.units(p, "PHCER-2026") == issued[p]
            assert set(m.serials(p, "PHCER-2026")) == {
                S.fmt(p, b["id"], 2026, 1, b["t"])
                for b in batches
                if b["pid"] == p and b["status"] == "approved" and b["t"]
            }
        m.check()
    assert_replay_and_restart(m, split)
