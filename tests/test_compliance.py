"""Compliance: MRV, surrender with offset caps, runtime cap changes, deadline
processing, statements. Every figure is checked against numbers computed by hand in the
comments; every bad input is rejected with its code and leaves the market unchanged.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from exchange.compliance import reports as R
from exchange.compliance.commands import (
    ConfigureCompliance,
    ConfigureCompliancePeriod,
    ProcessComplianceDeadline,
    RegisterVerifier,
    RejectSubmission,
    SetOffsetCap,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from exchange.compliance.config import ComplianceConfig, compliance_commands, to_ns
from exchange.compliance import mrv
from exchange.core.commands import (
    AddInstrument,
    CreateSubQuota,
    DepositCash,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    RegisterSupplyChain,
)
from exchange.core.events import CommandRejected, Trade
from exchange.core.exchange import AddSegment
from exchange.app.engine import Sequencer, build_exchange

T2026 = to_ns("2026-01-01")
T2027 = to_ns("2027-01-01")
DEADLINE = to_ns("2027-06-30")
DAY = 86_400 * 10**9
HOUR = 3_600 * 10**9


def business_hash(ex) -> str:
    """state_hash without the envelope (last_seq, now), which every command advances."""
    s = ex.to_state()
    s.pop("last_seq")
    s.pop("now")
    return hashlib.sha256(json.dumps(s, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class M:
    """A small compliance market driven through the Sequencer with explicit timestamps."""

    def __init__(self, banking: bool = True, rules: bool = True):
        self.seq = Sequencer(build_exchange(), start_ts=T2026)
        self.ex = self.seq.ex
        if not rules:
            self.ex.modules.pop("rules", None)
        self.ts = T2026

    def at(self, ts: int):
        assert ts >= self.ts
        self.ts = ts
        return self

    def __call__(self, cmd, ts: int | None = None) -> list:
        if ts is not None:
            self.at(ts)
        self.ts += 1000
        return self.seq(cmd, ts=self.ts)

    def ok(self, cmd, ts: int | None = None) -> list:
        evs = self(cmd, ts)
        rej = [e for e in evs if isinstance(e, CommandRejected)]
        assert not rej, rej
        return evs

    def rejects(self, cmd, code: str, ts: int | None = None) -> CommandRejected:
        before = business_hash(self.ex)
        evs = self(cmd, ts)
        assert len(evs) == 1 and isinstance(evs[0], CommandRejected), evs
        assert evs[0].code == code, evs[0]
        assert evs[0].message
        assert business_hash(self.ex) == before, "a rejected command changed the market"
        self.ex.check_invariants()
        return evs[0]

    def units(self, firm, sym) -> int:
        h = self.ex.accounts[firm].holdings.get(sym)
        return h.total if h else 0

    def cash(self, firm) -> int:
        return self.ex.accounts[firm].cash

    @property
    def comp(self):
        return self.ex.modules["compliance"]


def base_market(banking: bool = True, rules: bool = True) -> M:
    m = M(banking, rules)
    m.ok(AddSegment(name="main", fee_bps=5, access="all"))
    m.ok(AddSegment(name="sme", fee_bps=0, access="sme_sell_any_buy"))
    m.ok(AddSegment(name="chain", fee_bps=0, access="members"))
    for sym, kind, vintage, otype, ref in (
        ("CEA-2025", "allowance", 2025, None, 8200),
        ("CEA-2026", "allowance", 2026, None, 8500),
        ("CEA-2027", "allowance", 2027, None, 8600),
        ("CCER-2026", "offset", 2026, "CCER", 6000),
        ("CCER-2027", "offset", 2027, "CCER", 6000),
        ("PHCER-2026", "offset", 2026, "PHCER", 3000),
        ("VER-2026", "offset", 2026, "VER", 2000),
    ):
        m.ok(
            AddInstrument(
                symbol=sym, kind=kind, vintage=vintage, offset_type=otype, reference_price=ref
            )
        )
    m.ok(
        ConfigureCompliance(
            carbon_coefficients_ppm=(("coal", 747_600), ("natural_gas", 443_500), ("oil", 582_500)),
            co2_per_c=(44, 12),
            offset_types=("CCER", "PHCER"),
            banking=banking,
            penalty_mode="both",
            penalty_fixed_fine=5_000_000,
            penalty_multiple_ppm=3_000_000,
            late_fine=1_000_000,
        )
    )
    m.ok(
        ConfigureCompliancePeriod(
            period=2026,
            start_ts=T2026,
            deadline_ts=DEADLINE,
            offset_cap_bps=500,
            offset_sub_caps_bps=(("PHCER", 200),),
        )
    )
    m.ok(
        ConfigureCompliancePeriod(
            period=2027, start_ts=T2027, deadline_ts=to_ns("2028-06-30"), offset_cap_bps=500
        )
    )
    m.ok(RegisterVerifier(verifier="V1", name="China Quality Certification"))
    return m


def firm(
    m: M, firm_id: str, cash: int = 0, size_class: str = "large", product: str = "", **units
) -> None:
    m.ok(RegisterFirm(firm_id=firm_id, size_class=size_class, product=product))
    if cash:
        m.ok(DepositCash(account=firm_id, amount=cash))
    for sym, q in units.items():
        sym = sym.replace("_", "-")
        kind = m.ex.instruments[sym].kind
        m.ok(
            IssueUnits(
                account=firm_id,
                instrument=sym,
                qty=q,
                source="allocation" if kind == "allowance" else "offset_project",
                ref="2026" if kind == "allowance" else "proj-1",
            )
        )


# =========================================================================== unit: formulas
def test_emissions_formula_hand_computed():
    coef = {"coal": 747_600, "oil": 582_500, "natural_gas": 443_500, "x": 1_500_000}
    c = (44, 12)
    # 10,000 tce coal x 0.7476 = 7,476 t C x 44/12 = 27,412 t CO2 exactly
    assert mrv.fuel_emissions([("coal", 10_000)], coef, c) == 27_412
    # oil 5,000 x 0.5825 = 2,912.5; gas 3,000 x 0.4435 = 1,330.5; 4,243 t C x 44/12
    # = 15,557.67 -> 15,558
    assert mrv.fuel_emissions([("oil", 5_000), ("natural_gas", 3_000)], coef, c) == 15_558
    # 1,000 tce coal -> 747.6 t C -> 2,741.2 -> 2,741
    assert mrv.fuel_emissions([("coal", 1_000)], coef, c) == 2_741
    # 1 tce at 1.5 t C -> 5.5 t CO2 -> half up -> 6 (rounded once, on the exact total)
    assert mrv.fuel_emissions([("x", 1)], coef, c) == 6
    assert mrv.fuel_emissions([("x", 1), ("x", 1)], coef, c) == 11
    assert mrv.emissions([("coal", 10_000)], 500, coef, c) == (27_412, 27_912)
    # caps floor: 5 % of 27,912 = 1,395.6 -> 1,395; 2 % -> 558.24 -> 558
    assert mrv.cap_qty(27_912, 500) == 1_395 and mrv.cap_qty(27_912, 200) == 558
    # penalty both: 50,000.00 CNY + 558 t x 85.15 x 3
    assert mrv.penalty("both", 558, 5_000_000, 3_000_000, 8_515) == 5_000_000 + 14_254_110
    assert mrv.penalty("fixed", 558, 5_000_000, 3_000_000, 8_515) == 5_000_000
    assert mrv.penalty("multiple", 558, 5_000_000, 3_000_000, 8_515) == 14_254_110
    assert mrv.penalty("greater", 10, 5_000_000, 3_000_000, 8_515) == 5_000_000
    assert mrv.penalty("both", 0, 5_000_000, 3_000_000, 8_515) == 0


def test_config_defaults_become_integer_commands():
    cfg = ComplianceConfig(
        offset_sub_caps_pct={"PHCER": "2"},
        verifiers=["V1"],
        periods=[{"period": 2026, "start": "2026-01-01", "deadline": "2027-12-31"}],
    )
    cmds = compliance_commands(cfg, ["V1", "V2"])
    c0 = cmds[0]
    assert dict(c0.carbon_coefficients_ppm) == {
        "coal": 747_600,
        "oil": 582_500,
        "natural_gas": 443_500,
    }
    assert c0.co2_per_c == (11, 3)  # 44/12 reduced: same exact ratio
    assert c0.penalty_fixed_fine == 5_000_000 and c0.penalty_multiple_ppm == 3_000_000
    p = cmds[1]
    assert p.offset_cap_bps == 500 and p.offset_sub_caps_bps == (("PHCER", 200),)
    assert p.start_ts == T2026 and p.deadline_ts == to_ns("2027-12-31")
    assert [c.verifier for c in cmds[2:]] == ["V1", "V2"]
    with pytest.raises(ValueError):
        ComplianceConfig(offset_cap_pct="101")


def test_default_toml_loads_and_genesis_configures_compliance():
    from exchange.app.config import load_settings
    from exchange.app.market import genesis_commands

    s = load_settings()
    seq = Sequencer()
    seq.run(genesis_commands(s))
    comp = seq.ex.modules["compliance"]
    assert comp.params["coefficients_ppm"] == {
        "coal": 747_600,
        "natural_gas": 443_500,
        "oil": 582_500,
    }
    assert comp.cap_at(2026, seq.ex.now) == (500, {"PHCER": 200, "RME": 300, "RMN": 300})
    assert "VERIFIER1" in comp.verifiers
    seq.ex.check_invariants()


# =========================================================================== the whole period
def run_period(rules: bool = True) -> tuple[M, dict]:
    """Allocate, trade, submit and verify, surrender (offsets below, at and over the cap), a
    cap change in the middle of the period, deadline, next period's deduction."""
    m = base_market(rules=rules)
    ex = m.ex
    ids = {}
    # ---- firms and allocation -------------------------------------------------------------
    # A: cement; allocated 25,000 CEA-2026 (plus banked 2025 and offsets)
    firm(
        m,
        "A",
        cash=50_000_000,
        CEA_2026=25_000,
        CEA_2025=600,
        CEA_2027=100,
        CCER_2026=2_000,
        PHCER_2026=1_000,
        CCER_2027=50,
        VER_2026=10,
    )
    # B: a power plant allocated by the rules module (benchmark 0.8 t/MWh, 2025 output 20,000)
    firm(m, "B", cash=100_000_000, product="electricity")
    firm(m, "C", cash=10_000_000, CEA_2026=3_000, CCER_2026=200)
    firm(m, "P", cash=10_000_000, CEA_2026=10_000)
    for s in ("S", "S2", "S3"):
        firm(m, s, cash=1_000_000, size_class="sme")
    m.ok(
        RegisterSupplyChain(
            chain_id="pc",
            members=(("P", 0), ("S", 1), ("S2", 1), ("S3", 1)),
            edges=(("S", "P", 500_000), ("S2", "P", 300_000), ("S3", "P", 200_000)),
        )
    )
    for sme, q, share, surplus, short in (
        ("S", 3_000, 700_000, "revert", "parent"),
        ("S2", 1_000, 500_000, "bank", "sme"),
        ("S3", 500, 500_000, "revert", "sme"),
    ):
        evs = m.ok(
            CreateSubQuota(
                parent="P",
                sme=sme,
                instrument="CEA-2026",
                qty=q,
                revenue_share_ppm=share,
                surplus_rule=surplus,
                shortfall_rule=short,
                chain_id="pc",
            )
        )
        ids[sme] = evs[-1].lot_id
    if rules:
        from exchange.rules.commands import PreAllocate, SetBenchmark, SetOutputHistory

        m.ok(SetBenchmark(product="electricity", intensity_ppm=800_000))
        m.ok(SetOutputHistory(firm_id="B", rows=((2025, 20_000),)))
        m.ok(PreAllocate(period=2026), ts=T2026 + DAY)
        # pre-allocation = 70 % x 0.8 x 20,000 x phi 1 = 11,200
        assert m.units("B", "CEA-2026") == 11_200
    else:
        m.ok(IssueUnits(account="B", instrument="CEA-2026", qty=16_000, ref="2026"))
    # ---- trading in the period --------------------------------------------------------------
    m.at(T2026 + 100 * DAY)
    m.ok(PlaceOrder(account="B", instrument="CEA-2026", side="sell", price=8_500, qty=1_000))
    evs = m.ok(PlaceOrder(account="A", instrument="CEA-2026", side="buy", price=8_500, qty=1_000))
    assert [t.qty for t in evs if isinstance(t, Trade)] == [1_000]
    m.ok(PlaceOrder(account="C", instrument="CEA-2026", side="sell", price=8_600, qty=200))
    m.ok(PlaceOrder(account="A", instrument="CEA-2026", side="buy", price=8_600, qty=200))
    # S sells 100 t of its sub-quota on the SME board (no fee): 850,000 fen, 70 % to S
    m.ok(
        PlaceOrder(
            account="S", instrument="CEA-2026", segment="sme", side="sell", price=8_500, qty=100
        )
    )
    evs = m.ok(
        PlaceOrder(
            account="A", instrument="CEA-2026", segment="sme", side="buy", price=8_500, qty=100
        )
    )
    t = [e for e in evs if isinstance(e, Trade)][0]
    assert dict(t.proceeds_split) == {"P": 255_000, "S": 595_000}
    # fees 5 bps: 8,500,000 -> 4,250 each side; 1,720,000 -> 860 each side
    assert m.cash("A") == 50_000_000 - 8_504_250 - 1_720_860 - 850_000 == 38_924_890
    assert m.cash("B") == 100_000_000 + 8_500_000 - 4_250 == 108_495_750
    assert m.cash("C") == 10_000_000 + 1_720_000 - 860 == 11_719_140
    assert m.cash("S") == 1_595_000 and m.cash("P") == 10_255_000
    assert m.units("A", "CEA-2026") == 26_300
    # ---- MRV -------------------------------------------------------------------------------
    m.at(T2027 + 30 * DAY)
    m.ok(
        SubmitActivityData(
            firm_id="A",
            period=2026,
            fuels=(("coal", 10_000),),
            process_emissions=500,
            output=100_000,
        )
    )
    m.ok(
        SubmitActivityData(
            firm_id="B", period=2026, fuels=(("oil", 5_000), ("natural_gas", 3_000)), output=20_000
        )
    )
    m.ok(SubmitActivityData(firm_id="C", period=2026, fuels=(("coal", 1_000),), output=5_000))
    m.ok(SubmitActivityData(firm_id="S", period=2026, process_emissions=3_500, output=900))
    m.ok(SubmitActivityData(firm_id="S2", period=2026, process_emissions=400, output=100))
    m.ok(SubmitActivityData(firm_id="P", period=2026, fuels=(("coal", 2_000),), output=10))
    # a non-verifier cannot verify; a reject needs a reason
    m.rejects(VerifyEmissions(firm_id="A", period=2026, verifier="A"), "NOT_A_VERIFIER")
    m.rejects(
        RejectSubmission(firm_id="P", period=2026, verifier="V1", reason=" "), "REASON_REQUIRED"
    )
    evs = m.ok(
        RejectSubmission(
            firm_id="P", period=2026, verifier="V1", reason="meter calibration certificate missing"
        )
    )
    m.rejects(VerifyEmissions(firm_id="P", period=2026, verifier="V1"), "NO_SUBMISSION")
    m.ok(SubmitActivityData(firm_id="P", period=2026, fuels=(("coal", 2_001),), output=10))
    for f in ("A", "B", "C", "S", "S2"):
        evs = m.ok(VerifyEmissions(firm_id=f, period=2026, verifier="V1"))
    assert m.comp.obligation("A", 2026) == 27_912
    assert m.comp.obligation("B", 2026) == 15_558
    assert m.comp.obligation("C", 2026) == 2_741
    assert m.comp.obligation("S", 2026) == 3_500
    assert m.comp.obligation("S2", 2026) == 400
    if rules:
        # true-up to verified output: 0.8 x 20,000 = 16,000 -> +4,800
        assert m.units("B", "CEA-2026") == 11_200 - 1_000 + 4_800 == 15_000
    # a second submission for a verified period
    m.rejects(
        SubmitActivityData(firm_id="A", period=2026, fuels=(("coal", 1),)), "ALREADY_VERIFIED"
    )
    # ---- surrenders (A: cap 5 % = 1,395 t, PHCER sub-cap 2 % = 558 t) ------------------------
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2027", qty=100),
        "INELIGIBLE_VINTAGE",
    )
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2027", qty=50),
        "INELIGIBLE_VINTAGE",
    )
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="VER-2026", qty=10),
        "INELIGIBLE_OFFSET_TYPE",
    )
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2025", qty=601),
        "INSUFFICIENT_HOLDINGS",
    )
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="PHCER-2026", qty=500))  # below
    r = m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="PHCER-2026", qty=59),
        "OFFSET_SUBCAP_EXCEEDED",
    )
    assert "sub-cap of 2 % allows 558 t" in r.message and "bps" not in r.message
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="PHCER-2026", qty=58))  # at sub
    r = m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2026", qty=838),
        "OFFSET_CAP_EXCEEDED",
    )  # over: 558 + 838 = 1,396 > 1,395
    assert "the cap of 5 % of" in r.message and "bps" not in r.message
    evs = m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2026", qty=837))
    assert evs[-1].offsets == 1_395 and evs[-1].cap_bps == 500  # at the cap
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2026", qty=1),
        "OFFSET_CAP_EXCEEDED",
    )
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2025", qty=600))
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=25_917))
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=1), "EXCEEDS_OBLIGATION"
    )
    # B surrenders 15,000 of 15,558: 558 t short
    m.ok(SurrenderUnits(firm_id="B", period=2026, instrument="CEA-2026", qty=15_000))
    # ---- a cap change in the middle of the period -------------------------------------------
    # C: 2,741 t, cap 5 % = 137 t; it uses 100 t of CCER under the 5 % cap
    evs = m.ok(SurrenderUnits(firm_id="C", period=2026, instrument="CCER-2026", qty=100))
    assert evs[-1].cap_bps == 500
    m.rejects(SetOffsetCap(period=2026, cap_bps=10_001), "CAP_OUT_OF_RANGE")
    m.rejects(SetOffsetCap(period=2026, cap_bps=-1), "CAP_OUT_OF_RANGE")
    m.rejects(
        SetOffsetCap(period=2026, cap_bps=100, sub_caps_bps=(("PHCER", 150),)), "CAP_OUT_OF_RANGE"
    )
    m.rejects(
        SetOffsetCap(period=2026, cap_bps=100, effective_ts=m.ts - HOUR), "CAP_EFFECTIVE_IN_PAST"
    )
    before = business_hash(ex)
    wi = R.what_if_cap(ex, 2026, 100, {"PHCER": 50})
    assert business_hash(ex) == before  # the what-if changes nothing
    ids["what_if"] = wi
    m.ok(SetOffsetCap(period=2026, cap_bps=100, sub_caps_bps=(("PHCER", 50),), operator="ops1"))
    # C's 100 t made under 5 % stand; the new cap (1 % of 2,741 = 27 t) stops any more
    m.rejects(
        SurrenderUnits(firm_id="C", period=2026, instrument="CCER-2026", qty=1),
        "OFFSET_CAP_EXCEEDED",
    )
    # ---- deadline -------------------------------------------------------------------------
    m.rejects(ProcessComplianceDeadline(period=2026), "DEADLINE_NOT_REACHED")
    # C completes after the deadline: late
    m.ok(
        SurrenderUnits(firm_id="C", period=2026, instrument="CEA-2026", qty=2_641),
        ts=DEADLINE + HOUR,
    )
    ids["deadline_events"] = m.ok(
        ProcessComplianceDeadline(period=2026, operator="ops1"), ts=DEADLINE + DAY
    )
    m.rejects(
        SurrenderUnits(firm_id="B", period=2026, instrument="CEA-2026", qty=1), "PERIOD_CLOSED"
    )
    ex.check_invariants()
    return m, ids


@pytest.fixture(scope="module")
def period_run():
    return run_period()


def test_whole_period_figures(period_run):
    m, ids = period_run
    ex, comp = m.ex, m.comp
    st = {f: comp.record(f, 2026)["settlement"] for f in ("A", "B", "C", "S", "S2", "P")}
    assert {f: s["status"] for f, s in st.items()} == {
        "A": "compliant",
        "B": "non_compliant",
        "C": "late",
        "S": "compliant",
        "S2": "compliant",
        "P": "unverified",
    }
    # average price of the period's allowance trades:
    # (1,000 x 85.00 + 200 x 86.00 + 100 x 85.00) / 1,300 = 11,070,000 / 1,300 = 8,515.38
    assert comp.periods[2026]["average_price"] == 8_515
    # B: 558 t short -> 50,000.00 + 558 x 85.15 x 3 = 50,000.00 + 142,541.10 CNY
    assert st["B"]["shortfall"] == 558
    assert st["B"]["penalty"] == 19_254_110 == st["B"]["penalty_paid"]
    assert m.cash("B") == 108_495_750 - 19_254_110 == 89_241_640
    assert st["B"]["deduction"] == 558
    # C: met the obligation after the deadline -> late fine 10,000.00 CNY, no deduction
    assert st["C"]["shortfall"] == 0 and st["C"]["penalty"] == 1_000_000
    assert m.cash("C") == 11_719_140 - 1_000_000
    assert st["A"]["penalty"] == 0 and m.cash("A") == 38_924_890
    # SME sub-quotas: S's 2,900 t left in its sub-quota are surrendered, the parent covers
    # the remaining 600 t (shortfall_rule parent); S2 uses 400 t of its 1,000 t sub-quota
    s_rec = comp.record("S", 2026)
    assert [(x[2], x[5], x[6]) for x in s_rec["surrenders"]] == [
        ("CEA-2026", 2_900, "sub_quota"),
        ("CEA-2026", 600, "parent:P"),
    ]
    assert comp.record("S2", 2026)["surrendered"] == 400
    assert ex.sub_quotas[ids["S"]]["held"] == 0 and ex.sub_quotas[ids["S2"]]["held"] == 600
    assert m.units("P", "CEA-2026") == 10_000 - 4_500 - 600 == 4_900
    # retired = everything surrendered: A 27,912 + B 15,000 + C 2,741 + S 3,500 + S2 400
    assert -ex.accounts["@issuer"].holdings["CEA-2026"].total - sum(
        a.holdings["CEA-2026"].total
        for a in ex.accounts.values()
        if not a.system and "CEA-2026" in a.holdings
    ) == (25_917 + 15_000 + 2_641 + 3_500 + 400)
    done = ids["deadline_events"][-1]
    assert (done.compliant, done.late, done.non_compliant, done.unverified) == (3, 1, 1, 1)


def test_cap_change_never_rewrites_and_what_if(period_run):
    m, ids = period_run
    comp = m.comp
    c = comp.record("C", 2026)
    # the 100 t made under the 5 % cap keep their record
    assert [(x[2], x[5], x[7]) for x in c["surrenders"]] == [
        ("CCER-2026", 100, 500),
        ("CEA-2026", 2_641, 100),
    ]
    assert c["offsets"] == 100
    wi = ids["what_if"]
    by = {f["firm_id"]: f for f in wi["firms"]}
    # C: 1 % of 2,741 = 27 t; 100 t surrendered (73 over) + 100 t CCER still held
    assert by["C"]["proposed_cap_qty"] == 27 and by["C"]["current_cap_qty"] == 137
    assert (by["C"]["exceeds_by"], by["C"]["surrendered_over"], by["C"]["holdings_over"]) == (
        173,
        73,
        100,
    )
    # A: 1 % of 27,912 = 279 t; 1,395 surrendered + 1,163 CCER + 442 PHCER held
    assert by["A"]["proposed_cap_qty"] == 279
    assert (by["A"]["exceeds_by"], by["A"]["surrendered_over"]) == (2_721, 1_116)
    # PHCER sub-cap 0.5 % = 139 t: 558 used + 442 held -> 861 over
    assert by["A"]["by_type"]["PHCER"] == {
        "proposed_sub_cap_qty": 139,
        "surrendered": 558,
        "held": 442,
        "exceeds_by": 861,
        "surrendered_over": 419,
    }
    assert not by["B"]["exceeds"] and not by["S"]["exceeds"]
    # P's resubmission is pending: coal 2,001 tce -> 1,495.9476 t C -> 5,485.14 -> 5,485 t,
    # a provisional obligation
    assert by["P"]["provisional"] and by["P"]["obligation"] == 5_485
    assert not by["A"]["provisional"]
    assert wi["firms_exceeding"] == ["A", "C"]


def test_next_period_deduction_through_rules(period_run):
    m, _ = period_run
    from exchange.rules.commands import PreAllocate, SettleAllocations, SettleSubQuotas

    rules = m.ex.modules["rules"]
    assert rules.allocation("B", 2027)["deduction"] == 558
    m.ok(PreAllocate(period=2027))
    # 2027 pre-allocation: 70 % x 0.8 x 20,000 (verified 2026 output) x phi 1 = 11,200 - 558
    assert m.units("B", "CEA-2027") == 11_200 - 558 == 10_642
    # sub-quota surplus at period end is the rules module's: S3's 500 t revert to P,
    # S2's 600 t stay banked with S2
    m.ok(SettleSubQuotas(period=2026))
    assert m.units("P", "CEA-2026") == 4_900 + 500
    assert m.units("S2", "CEA-2026") == 600
    m.ok(SettleAllocations(period=2027))
    m.ex.check_invariants()


def test_without_rules_module_surplus_settles_at_deadline():
    m, ids = run_period(rules=False)
    assert m.units("P", "CEA-2026") == 4_900 + 500  # S3's surplus reverted at the deadline
    assert m.units("S2", "CEA-2026") == 600  # banked
    assert m.comp.record("B", 2026)["settlement"]["deduction"] == 558
    m.ex.check_invariants()


def test_statement_and_summary(period_run):
    m, _ = period_run
    st = R.firm_statement(m.ex, "A", 2026)
    assert st["status"] == "compliant"
    assert st["submission"]["fuel_emissions"] == 27_412 and st["obligation"]["total"] == 27_912
    assert st["surrendered"] == {
        "allowances": 26_517,
        "offsets": 1_395,
        "total": 27_912,
        "offsets_by_type": {"CCER": 837, "PHCER": 558},
    }
    assert st["trades"] == [
        {
            "instrument": "CEA-2026",
            "bought": 1_300,
            "buy_notional_fen": 11_070_000,
            "sold": 0,
            "sell_notional_fen": 0,
            "trades": 3,
            "fees_fen": 5_110,
        }
    ]
    assert st["holdings"]["CEA-2026"]["total"] == 383
    b = R.firm_statement(m.ex, "B", 2026)
    assert b["allocation"]["pre_allocation"] == 11_200 and b["allocation"]["true_up"] == 4_800
    assert b["settlement"]["penalty"] == 19_254_110
    assert b["next_period_allocation"]["deduction"] == 558
    s = R.firm_statement(m.ex, "S", 2026)
    assert s["sub_quotas"][0]["compliance"] == {
        "covered_by_parent": 600,
        "settled_period": 2026,
        "surrendered": 2_900,
    }
    csv_text = R.statement_csv(b)
    assert "settlement.penalty,192541.10" in csv_text  # CSV: CNY, as the JSON answer
    assert "_fen," not in csv_text and "_bps" not in csv_text and "_ts," not in csv_text
    assert R.statement_text(b)
    sm = R.compliance_summary(m.ex, 2026)
    assert sm["counts"] == {
        "compliant": 3,
        "late": 1,
        "non_compliant": 1,
        "unverified": 1,
        "not_reported": 1,
    }
    assert sm["totals"]["shortfall"] == 558 and sm["totals"]["penalty_fen"] == 20_254_110
    assert sm["totals"]["obligation"] == 27_912 + 15_558 + 2_741 + 3_500 + 400
    assert [c["cap_bps"] for c in sm["cap_history"]] == [500, 100]
    lines = R.summary_csv(sm).splitlines()
    assert lines[0].startswith("firm_id,") and lines[-1].startswith("TOTAL,")
    assert "penalty,penalty_paid" in lines[0] and ",202541.10," in lines[-1]
    assert R.summary_text(sm)


def test_replay_gives_the_same_state(period_run):
    m, _ = period_run
    ex2 = build_exchange()
    for cmd, seq, ts in m.seq.log:
        ex2.apply(cmd, seq, ts)
    assert ex2.state_hash() == m.ex.state_hash()
    ex3 = build_exchange()
    ex3.restore(m.ex.snapshot())
    assert ex3.state_hash() == m.ex.state_hash()


# =========================================================================== focused cases
def test_future_effective_cap_applies_only_after_it():
    m = base_market()
    firm(m, "A", CEA_2026=3_000, CCER_2026=500)
    m.ok(SubmitActivityData(firm_id="A", period=2026, fuels=(("coal", 1_000),)))
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    eff = m.ts + DAY
    m.ok(SetOffsetCap(period=2026, cap_bps=1_000, effective_ts=eff))  # 10 % from tomorrow
    # today the 5 % cap (137 t of 2,741) still holds
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2026", qty=138),
        "OFFSET_CAP_EXCEEDED",
    )
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2026", qty=137))
    # from the effective time: 10 % = 274 t
    evs = m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2026", qty=137), ts=eff)
    assert evs[-1].cap_bps == 1_000 and evs[-1].offsets == 274
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CCER-2026", qty=1),
        "OFFSET_CAP_EXCEEDED",
    )


def test_bad_input_codes():
    m = base_market()
    firm(m, "A", CEA_2026=100)
    m.rejects(SubmitActivityData(firm_id="A", period=2026, fuels=(("peat", 10),)), "UNKNOWN_FUEL")
    m.rejects(
        SubmitActivityData(firm_id="A", period=2026, fuels=(("coal", -1),)), "BAD_ACTIVITY_DATA"
    )
    m.rejects(
        SubmitActivityData(firm_id="A", period=2026, fuels=(("coal", 1.5),)), "BAD_ACTIVITY_DATA"
    )
    m.rejects(SubmitActivityData(firm_id="A", period=1999), "UNKNOWN_PERIOD")
    m.rejects(SubmitActivityData(firm_id="NOPE", period=2026), "UNKNOWN_ACCOUNT")
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=10), "NO_OBLIGATION"
    )
    m.rejects(VerifyEmissions(firm_id="A", period=2026, verifier="V1"), "NO_SUBMISSION")
    m.rejects(RegisterVerifier(verifier="V1"), "DUPLICATE_VERIFIER")
    m.ok(SubmitActivityData(firm_id="A", period=2026, process_emissions=50))
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=0), "BAD_QUANTITY"
    )
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="NOPE", qty=1), "UNKNOWN_INSTRUMENT"
    )
    m.rejects(VerifyEmissions(firm_id="A", period=2026, verifier="V1"), "ALREADY_VERIFIED")
    # units reserved by a resting sell order cannot be surrendered
    m.ok(PlaceOrder(account="A", instrument="CEA-2026", side="sell", price=8_500, qty=80))
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=21),
        "INSUFFICIENT_HOLDINGS",
    )
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=20))
    m.ex.check_invariants()


def test_no_banking_restricts_vintages_and_expires_surplus():
    m = base_market(banking=False)
    firm(m, "A", CEA_2026=1_000, CEA_2025=100)
    m.ok(SubmitActivityData(firm_id="A", period=2026, process_emissions=900))
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2025", qty=100),
        "INELIGIBLE_VINTAGE",
    )
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=900))
    m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
    # without banking the 100 t CEA-2026 and the 100 t CEA-2025 left over expire
    assert m.units("A", "CEA-2026") == 0 and m.units("A", "CEA-2025") == 0
    assert m.comp.record("A", 2026)["settlement"]["status"] == "compliant"
    m.ex.check_invariants()


def test_penalty_larger_than_free_cash_is_partly_outstanding():
    m = base_market()
    firm(m, "A", cash=1_000_000, CEA_2026=10)
    m.ok(SubmitActivityData(firm_id="A", period=2026, process_emissions=100))
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=10))
    m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
    s = m.comp.record("A", 2026)["settlement"]
    # no trades in 2026: the penalty price is CEA-2026's reference price, 85.00
    # 50,000.00 + 90 t x 85.00 x 3 = 50,000.00 + 22,950.00 CNY
    assert s["average_price"] == 8_500 and s["penalty"] == 7_295_000
    assert s["penalty_paid"] == 1_000_000 and s["penalty_outstanding"] == 6_295_000
    assert m.cash("A") == 0
    m.ex.check_invariants()


def test_statement_carries_the_factor_history_with_its_terms(period_run):
    """After the rules close 2026, B's statement explains its allocation factor: verified
    intensity 15,558 / 20,000 = 0.7779 t/MWh against the 0.8 benchmark, gap
    g = 1 - 0.7779 / 0.8 = 0.027625, phi = 1 x (1 + 0.5 x g) = 1.0138125."""
    m, _ = period_run
    from exchange.rules.commands import ClosePeriod

    m.ok(ClosePeriod(period=2026))
    st = R.firm_statement(m.ex, "B", 2026)
    assert len(st["factor_history"]) == 1
    h = st["factor_history"][0]
    assert h["period"] == 2026
    assert h["phi_after_ppm"] == 1_013_812  # 1.0138125 rounded toward the previous value
    assert h["inputs"]["intensity_ppm"] == 777_900 and h["inputs"]["benchmark_ppm"] == 800_000
    assert h["terms"]["gap_ppm"] == 27_625
    assert "phi_after,1.013812" in R.statement_csv(st).replace("factor_history[0].", "")
    m.ex.check_invariants()
