"""The SME fund (exchange/compliance/fund.py): penalties shared with the fund, budget deposits,
the grant flow with its limits, the public statement, firm statements, replay. Every figure is
hand-computed in the comments; every refused command must leave the market unchanged (M.rejects
compares the whole state without the envelope)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from exchange.compliance import reports as R
from exchange.compliance.commands import (
    ConfigureCompliancePeriod,
    ProcessComplianceDeadline,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from exchange.compliance.config import ComplianceConfig, compliance_commands, to_ns
from exchange.compliance.fund import (
    FUND_ACCOUNT,
    ApplyForGrant,
    ApproveGrant,
    ConfigureSmeFund,
    DisburseGrant,
    FundDeposit,
    GrantDisbursed,
    RejectGrant,
    SmeFundInflow,
    fund_statement,
)
from exchange.compliance.fund_api import FundStatement, statement_for_people
from exchange.app.config import load_settings
from exchange.core.accounts import BANK, CASH
from exchange.core.commands import (
    AddInstrument,
    DepositCash,
    RegisterFirm,
    WithdrawCash,
    decode_command,
    encode_command,
)
from exchange.core.events import CommandRejected, Posting
from exchange.app.engine import build_exchange

from test_compliance import DEADLINE, T2027, base_market, business_hash, firm

CNY = 100  # fen


def fund_cash(ex) -> int:
    a = ex.accounts.get(FUND_ACCOUNT)
    return a.cash if a is not None else 0


def replayed(m):
    """The sequencer's log, through the journal's encoding, applied to a fresh exchange."""
    ex = build_exchange()
    if "rules" not in m.ex.modules:
        ex.modules.pop("rules")
    for c, seq, ts in m.seq.log:
        ex.apply(decode_command(encode_command(c)), seq, ts)
    return ex


def short_firm(m, firm_id="L", surrender=2_183, cash=1_000_000 * CNY):
    """A large firm with 2,741 t verified (coal 1,000 tce x 0.7476 x 44/12 = 2,741.2) that
    surrenders ``surrender`` t of CEA-2026."""
    firm(m, firm_id, cash=cash, CEA_2026=surrender)
    m.ok(SubmitActivityData(firm_id=firm_id, period=2026, fuels=(("coal", 1_000),)))
    m.ok(VerifyEmissions(firm_id=firm_id, period=2026, verifier="V1"))
    m.ok(SurrenderUnits(firm_id=firm_id, period=2026, instrument="CEA-2026", qty=surrender))


# =========================================================================== without a fund
def test_without_a_fund_penalties_go_to_the_bank_and_the_state_has_no_fund():
    m = base_market()
    short_firm(m)
    assert m.ex.to_state()["modules"]["sme_fund"] is None
    assert FUND_ACCOUNT not in m.ex.accounts
    m.rejects(FundDeposit(amount=100, period=2026), "SME_FUND_NOT_CONFIGURED")
    firm(m, "S1", size_class="sme")
    m.rejects(
        ApplyForGrant(sme="S1", period=2026, amount=100, project="p", verified_abatement_t=1),
        "SME_FUND_NOT_CONFIGURED",
    )
    m.rejects(DisburseGrant(application_id=1), "SME_FUND_NOT_CONFIGURED")
    evs = m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
    # 558 t short: 50,000.00 + 558 x 85.00 (CEA-2026's reference, no trades) x 3 = 192,290.00
    assert [(e.debit, e.credit, e.amount) for e in evs if isinstance(e, Posting)] == [
        ("L", BANK, 19_229_000)
    ]
    assert fund_statement(m.ex)["balance_check"]["ok"]
    m.ex.check_invariants()


# =========================================================================== the worked example
def test_worked_example_penalty_share_deposit_grants_limits_statement():
    """docs/COMPLIANCE.md, "The SME fund": the same figures."""
    m = base_market()
    m.ok(
        ConfigureSmeFund(
            penalty_to_fund_bps=3_000,
            sme_period_limit=100_000 * CNY,
            period_limit=150_000 * CNY,
            operator="ops",
        )
    )
    assert m.ex.accounts[FUND_ACCOUNT].system
    short_firm(m)
    firm(m, "S1", size_class="sme")
    firm(m, "S2", size_class="sme")
    # ---- the deadline: L is 558 t short; penalty 192,290.00 CNY, 30 % to the fund
    evs = m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
    posts = [
        (e.debit, e.credit, e.amount, e.reason)
        for e in evs
        if isinstance(e, Posting) and e.asset == CASH
    ]
    # 19,229,000 x 3,000 / 10,000 = 5,768,700 fen to the fund; 13,460,300 to the bank
    assert posts == [
        ("L", BANK, 13_460_300, "penalty:2026"),
        ("L", FUND_ACCOUNT, 5_768_700, "sme_fund:penalty:2026"),
    ]
    inflow = next(e for e in evs if isinstance(e, SmeFundInflow))
    assert (
        inflow.source,
        inflow.period,
        inflow.amount,
        inflow.gross,
        inflow.share_bps,
        inflow.ref,
        inflow.balance,
    ) == ("penalty", 2026, 5_768_700, 19_229_000, 3_000, "L", 5_768_700)
    settled = R.firm_statement(m.ex, "L", 2026)
    assert settled["settlement"]["penalty_paid"] == 19_229_000  # the firm pays the same
    assert settled["sme_fund"]["penalty_to_fund_fen"] == 5_768_700
    # ---- the regulator's budget: 100,000.00 CNY from outside (@bank)
    evs = m.ok(FundDeposit(amount=100_000 * CNY, period=2026, ref="budget-2026"))
    assert evs[0] == Posting(CASH, BANK, FUND_ACCOUNT, 10_000_000, "sme_fund:budget:2026")
    assert fund_cash(m.ex) == 15_768_700
    # ---- applications: SMEs only
    m.rejects(
        ApplyForGrant(sme="L", period=2026, amount=1, project="p", verified_abatement_t=1),
        "NOT_AN_SME",
    )
    m.rejects(
        ApplyForGrant(sme="NOPE", period=2026, amount=1, project="p", verified_abatement_t=1),
        "UNKNOWN_ACCOUNT",
    )
    m.rejects(
        ApplyForGrant(sme=FUND_ACCOUNT, period=2026, amount=1, project="p", verified_abatement_t=1),
        "SYSTEM_ACCOUNT",
    )
    m.rejects(
        ApplyForGrant(sme="S1", period=1999, amount=1, project="p", verified_abatement_t=1),
        "UNKNOWN_PERIOD",
    )
    m.rejects(
        ApplyForGrant(sme="S1", period=2026, amount=0, project="p", verified_abatement_t=1),
        "BAD_AMOUNT",
    )
    m.rejects(
        ApplyForGrant(sme="S1", period=2026, amount=1, project="p", verified_abatement_t=0),
        "BAD_QUANTITY",
    )
    m.rejects(
        ApplyForGrant(sme="S1", period=2026, amount=1, project=" ", verified_abatement_t=1),
        "BAD_PARAMETER",
    )
    m.ok(
        ApplyForGrant(
            sme="S1",
            period=2026,
            amount=80_000 * CNY,
            project="waste-heat recovery on the cupola",
            verified_abatement_t=120,
        )
    )
    m.rejects(DisburseGrant(application_id=1), "GRANT_NOT_APPROVED")
    m.rejects(ApproveGrant(application_id=1, operator=""), "BAD_PARAMETER")
    m.rejects(ApproveGrant(application_id=9, operator="ops"), "UNKNOWN_GRANT_APPLICATION")
    m.ok(ApproveGrant(application_id=1, operator="ops"))
    m.rejects(ApproveGrant(application_id=1, operator="ops"), "GRANT_NOT_PENDING")
    s1_cash = m.cash("S1")
    evs = m.ok(DisburseGrant(application_id=1, operator="ops"))
    assert evs[0] == Posting(CASH, FUND_ACCOUNT, "S1", 8_000_000, "sme_grant:1")
    assert evs[1] == GrantDisbursed(
        1,
        "S1",
        2026,
        8_000_000,
        "waste-heat recovery on the cupola",
        7_768_700,
        8_000_000,
        8_000_000,
    )
    assert m.cash("S1") == s1_cash + 8_000_000
    m.rejects(DisburseGrant(application_id=1), "GRANT_NOT_APPROVED")  # paid once only
    # ---- the limit per SME and period: 80,000 + 30,000 > 100,000
    m.ok(
        ApplyForGrant(
            sme="S1",
            period=2026,
            amount=30_000 * CNY,
            project="VFDs on fans",
            verified_abatement_t=40,
            applicant="operator:ops",
        )
    )
    m.ok(ApproveGrant(application_id=2, operator="ops"))
    m.rejects(DisburseGrant(application_id=2), "GRANT_SME_LIMIT_EXCEEDED")
    # ---- the period limit: 80,000 + 75,000 > 150,000 (S2's own 75,000 is within 100,000)
    m.ok(
        ApplyForGrant(
            sme="S2",
            period=2026,
            amount=75_000 * CNY,
            project="kiln insulation",
            verified_abatement_t=90,
        )
    )
    m.ok(ApproveGrant(application_id=3, operator="ops"))
    m.rejects(DisburseGrant(application_id=3), "GRANT_PERIOD_LIMIT_EXCEEDED")
    # the operator raises the period limit: from now on, 200,000.00
    m.ok(
        ConfigureSmeFund(
            penalty_to_fund_bps=3_000,
            sme_period_limit=100_000 * CNY,
            period_limit=200_000 * CNY,
            operator="ops",
        )
    )
    m.ok(DisburseGrant(application_id=3))
    assert fund_cash(m.ex) == 268_700  # 15,768,700 - 8,000,000 - 7,500,000
    # ---- the fund's balance: 5,000.00 > 2,687.00
    m.ok(
        ApplyForGrant(
            sme="S2",
            period=2026,
            amount=5_000 * CNY,
            project="LED lighting",
            verified_abatement_t=3,
        )
    )
    m.ok(ApproveGrant(application_id=4, operator="ops"))
    m.rejects(DisburseGrant(application_id=4), "SME_FUND_INSUFFICIENT")
    m.rejects(RejectGrant(application_id=4, reason=" "), "REASON_REQUIRED")
    m.ok(RejectGrant(application_id=4, reason="the fund cannot pay it this period", operator="ops"))
    m.ok(RejectGrant(application_id=2, reason="over the limit per SME", operator="ops"))
    m.rejects(RejectGrant(application_id=2, reason="again"), "GRANT_CLOSED")
    m.rejects(RejectGrant(application_id=1, reason="too late"), "GRANT_CLOSED")
    m.rejects(DisburseGrant(application_id=4), "GRANT_NOT_APPROVED")
    # ---- a lower limit is not retroactive: S1 keeps its 80,000.00 received under 100,000.00
    m.ok(
        ConfigureSmeFund(
            penalty_to_fund_bps=3_000,
            sme_period_limit=50_000 * CNY,
            period_limit=200_000 * CNY,
            operator="ops",
        )
    )
    assert m.cash("S1") == s1_cash + 8_000_000
    # ---- the public statement
    sm = fund_statement(m.ex)
    # the OpenAPI model describes every field of what the server answers
    people = FundStatement.model_validate(statement_for_people(sm))
    assert people.balance == "2687.00" and people.inflows.by_source["budget"] == "100000.00"
    assert sm["balance_fen"] == 268_700 == fund_cash(m.ex)
    assert sm["inflows"]["by_source"] == {"penalty": 5_768_700, "auction": 0, "budget": 10_000_000}
    assert sm["inflows"]["by_period"] == [
        {
            "period": 2026,
            "total_fen": 15_768_700,
            "penalty": 5_768_700,
            "auction": 0,
            "budget": 10_000_000,
        }
    ]
    assert [(e["source"], e["ref"]) for e in sm["inflows"]["entries"]] == [
        ("penalty", "L"),
        ("budget", "budget-2026"),
    ]
    assert sm["grants"]["total_fen"] == 15_500_000 and sm["grants"]["count"] == 2
    assert [
        (s["sme"], s["total_fen"], s["verified_abatement_t"]) for s in sm["grants"]["by_sme"]
    ] == [("S1", 8_000_000, 120), ("S2", 7_500_000, 90)]
    assert sm["grants"]["by_period"] == [
        {
            "period": 2026,
            "total_fen": 15_500_000,
            "grants": 2,
            "verified_abatement_t": 210,
            "limit_fen": 20_000_000,
        }
    ]
    assert [(g["application_id"], g["project"]) for g in sm["grants"]["paid"]] == [
        (1, "waste-heat recovery on the cupola"),
        (3, "kiln insulation"),
    ]
    assert sm["applications"] == {"pending": 0, "approved": 0, "rejected": 2, "disbursed": 2}
    assert sm["balance_check"] == {
        "inflows_fen": 15_768_700,
        "grants_fen": 15_500_000,
        "balance_fen": 268_700,
        "ok": True,
    }
    assert [p["sme_period_limit_fen"] for p in sm["params_history"]] == [
        10_000_000,
        10_000_000,
        5_000_000,
    ]
    assert fund_statement(m.ex, period=2027)["grants"]["count"] == 0
    # ---- the SME's firm statement lists its grants
    st1 = R.firm_statement(m.ex, "S1", 2026)["sme_fund"]
    assert st1["received_fen"] == 8_000_000
    assert [(a["application_id"], a["status"], a["applicant"]) for a in st1["applications"]] == [
        (1, "disbursed", "S1"),
        (2, "rejected", "operator:ops"),
    ]
    assert st1["applications"][1]["reason"] == "over the limit per SME"
    assert "SME fund grant #1 disbursed: 80000.00 CNY" in R.statement_text(
        R.firm_statement(m.ex, "S1", 2026)
    )
    assert "sme_fund.received,80000.00" in R.statement_csv(R.firm_statement(m.ex, "S1", 2026))
    # ---- the ledger, the journal
    m.ex.check_invariants()
    assert sum(a.cash for a in m.ex.accounts.values()) == 0
    assert replayed(m).state_hash() == m.ex.state_hash()
    ex2 = build_exchange()
    ex2.restore(m.ex.snapshot())
    assert ex2.state_hash() == m.ex.state_hash()
    assert fund_statement(ex2) == sm


def test_share_rounds_down_and_a_new_share_is_not_retroactive():
    m = base_market()
    m.ok(ConfigureSmeFund(penalty_to_fund_bps=3_333))
    short_firm(m)
    m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
    # 19,229,000 x 0.3333 = 6,409,025.7 -> 6,409,025 to the fund; the bank gets the rest
    assert fund_cash(m.ex) == 6_409_025
    m.ok(ConfigureSmeFund(penalty_to_fund_bps=10_000))
    # the 2026 penalty stays as it was collected
    assert fund_statement(m.ex)["inflows"]["entries"][0]["share_bps"] == 3_333
    assert fund_cash(m.ex) == 6_409_025
    # 2027: the same firm, 2,741 t, nothing surrendered -> all of a penalty to the fund
    m.ok(SubmitActivityData(firm_id="L", period=2027, fuels=(("coal", 1_000),)))
    m.ok(VerifyEmissions(firm_id="L", period=2027, verifier="V1"))
    m.ok(ProcessComplianceDeadline(period=2027), ts=to_ns("2028-06-30"))
    paid = R.firm_statement(m.ex, "L", 2027)["settlement"]["penalty_paid"]
    assert paid > 0 and fund_cash(m.ex) == 6_409_025 + paid
    assert fund_statement(m.ex, period=2027)["inflows"]["by_source"]["penalty"] == paid
    m.ex.check_invariants()
    assert replayed(m).state_hash() == m.ex.state_hash()


def test_bad_parameters_and_the_fund_account_is_out_of_reach():
    m = base_market()
    for bad in (
        dict(penalty_to_fund_bps=10_001),
        dict(penalty_to_fund_bps=-1),
        dict(auction_to_fund_bps="10"),
        dict(sme_period_limit=-1),
        dict(period_limit=1.5),
        dict(penalty_to_fund_bps=True),
        dict(operator=5),
    ):
        m.rejects(ConfigureSmeFund(**bad), "BAD_PARAMETER")
    m.ok(ConfigureSmeFund(penalty_to_fund_bps=10_000, auction_to_fund_bps=0))
    m.rejects(FundDeposit(amount=0, period=2026), "BAD_AMOUNT")
    m.rejects(FundDeposit(amount="5", period=2026), "BAD_AMOUNT")
    m.rejects(FundDeposit(amount=5, period=1999), "UNKNOWN_PERIOD")
    m.rejects(FundDeposit(amount=5, period=2026, ref=["x"]), "BAD_PARAMETER")
    # the period defaults to the one the command's time falls in
    evs = m.ok(FundDeposit(amount=5, ref="b"))
    assert evs[-1].period == 2026
    # core commands cannot touch the fund: it moves by the fund's own commands only
    m.rejects(DepositCash(account=FUND_ACCOUNT, amount=5), "SYSTEM_ACCOUNT")
    m.rejects(WithdrawCash(account=FUND_ACCOUNT, amount=5), "SYSTEM_ACCOUNT")
    m.rejects(RegisterFirm(firm_id=FUND_ACCOUNT), "DUPLICATE_ACCOUNT")
    for junk in (None, "1", 1.0, [1], True):
        m.rejects(ApproveGrant(application_id=junk, operator="o"), "UNKNOWN_GRANT_APPLICATION")
    m.rejects(
        ApplyForGrant(sme=["S"], period=2026, amount=1, project="p", verified_abatement_t=1),
        "UNKNOWN_ACCOUNT",
    )
    m.ex.check_invariants()


def test_the_fund_from_the_config_file():
    cfg = load_settings().compliance
    # config/default.toml: 30 % of penalties, 10 % of auction proceeds, 200,000.00 per SME and
    # period, 1,000,000.00 per period
    cmd = next(c for c in compliance_commands(cfg) if isinstance(c, ConfigureSmeFund))
    assert (
        cmd.penalty_to_fund_bps,
        cmd.auction_to_fund_bps,
        cmd.sme_period_limit,
        cmd.period_limit,
    ) == (3_000, 1_000, 20_000_000, 100_000_000)
    none = ComplianceConfig.model_validate({"sme_fund": {"penalty_to_fund_pct": "12.5"}})
    cmd = next(c for c in compliance_commands(none) if isinstance(c, ConfigureSmeFund))
    assert (cmd.penalty_to_fund_bps, cmd.sme_period_limit, cmd.period_limit) == (1_250, None, None)
    assert not any(isinstance(c, ConfigureSmeFund) for c in compliance_commands(ComplianceConfig()))
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ComplianceConfig.model_validate({"sme_fund": {"penalty_to_fund_pct": "101"}})
    with pytest.raises(ValidationError):
        ComplianceConfig.model_validate({"sme_fund": {"sme_period_limit": "1.001"}})


# =========================================================================== property
EXTRA_PERIODS = (2028, 2029, 2030, 2031, 2032, 2033)
FIXED_FINE, MULTIPLE = 5_000_000, 3  # base_market's penalty: 50,000.00 + shortfall x avg x 3


def _market_bytes() -> bytes:
    m = base_market()
    for i, p in enumerate(EXTRA_PERIODS):
        m.ok(
            AddInstrument(
                symbol=f"CEA-{p}", kind="allowance", vintage=p, reference_price=8_501 + 7 * i
            )
        )
        m.ok(
            ConfigureCompliancePeriod(
                period=p, start_ts=T2027 + (p - 2027) * 10**17, deadline_ts=None
            )
        )
    firm(m, "L", cash=30_000_000)
    firm(m, "S1", size_class="sme")
    firm(m, "S2", size_class="sme")
    return m.ex.snapshot()


SNAP = _market_bytes()
REF = {p: 8_501 + 7 * i for i, p in enumerate(EXTRA_PERIODS)}

ids = st.integers(0, 4)
limits = st.one_of(st.none(), st.integers(0, 3_000_000), st.just(-1))
steps = st.one_of(
    st.tuples(
        st.just("configure"),
        st.sampled_from([0, 1, 2_500, 3_333, 10_000, 10_001, -1]),
        st.sampled_from([0, 1_000]),
        limits,
        limits,
    ),
    st.tuples(
        st.just("deposit"),
        st.sampled_from([-5, 0, 1, 333_333, 2_000_000, 5_000_000]),
        st.sampled_from([2026, 2027, 1999, None]),
    ),
    st.tuples(
        st.just("apply"),
        st.sampled_from(["S1", "S2", "L", "NOPE"]),
        st.sampled_from([2026, 2027, 1999]),
        st.sampled_from([-1, 0, 1, 99_999, 500_000, 1_500_000]),
        st.sampled_from([0, 1, 250]),
    ),
    st.tuples(st.just("approve"), ids),
    st.tuples(st.just("reject"), ids, st.sampled_from(["", "no verified abatement"])),
    st.tuples(st.just("disburse"), ids),
    st.tuples(st.just("penalty"), st.integers(1, 400)),
    # an application and then steps on it: so approvals, rejections, payments and the limits
    # and balance they meet are common, not a matter of guessing the next application's id
    st.tuples(
        st.just("life"),
        st.sampled_from(["S1", "S2", "L"]),
        st.sampled_from([2026, 2027]),
        st.sampled_from([1, 99_999, 500_000, 1_500_000]),
        st.one_of(
            st.just(("approve", "disburse")),
            st.just(("approve", "disburse", "reject")),
            st.lists(
                st.sampled_from(["approve", "reject", "disburse"]), min_size=1, max_size=4
            ).map(tuple),
        ),
    ),
)
good_limits = st.one_of(
    st.sampled_from([None, 0, 100_000, 600_000, 2_000_000]), st.integers(0, 3_000_000)
)
configure_first = st.tuples(
    st.just("configure"),
    st.sampled_from([0, 2_500, 3_333, 10_000]),
    st.just(0),
    good_limits,
    good_limits,
)


class Model:
    """What the fund must do, written independently of fund.py: the expected reject code of
    every command and the expected balance."""

    def __init__(self, l_cash):
        self.params = None
        self.balance = self.inflows = self.grants = 0
        self.apps: dict[int, list] = {}  # id -> [sme, period, amount, status]
        self.got: dict[tuple, int] = {}
        self.period_got: dict[int, int] = {}
        self.l_cash = l_cash
        self.periods = list(EXTRA_PERIODS)

    def expect(self, step):
        kind = step[0]
        if kind == "configure":
            _, p, a, sl, pl = step
            if not 0 <= p <= 10_000 or (sl is not None and sl < 0) or (pl is not None and pl < 0):
                return "BAD_PARAMETER", None
            return None, lambda: setattr(self, "params", (p, a, sl, pl))
        if self.params is None and kind != "penalty":
            return "SME_FUND_NOT_CONFIGURED", None
        if kind == "deposit":
            _, amount, period = step
            if amount <= 0:
                return "BAD_AMOUNT", None
            if period == 1999:
                return "UNKNOWN_PERIOD", None

            def do():
                self.balance += amount
                self.inflows += amount

            return None, do
        if kind == "apply":
            _, sme, period, amount, abated = step
            if sme == "NOPE":
                return "UNKNOWN_ACCOUNT", None
            if sme == "L":
                return "NOT_AN_SME", None
            if period == 1999:
                return "UNKNOWN_PERIOD", None
            if amount <= 0:
                return "BAD_AMOUNT", None
            if abated <= 0:
                return "BAD_QUANTITY", None
            return None, lambda: self.apps.__setitem__(
                len(self.apps) + 1, [sme, period, amount, "pending"]
            )
        app = self.apps.get(step[1])
        if app is None:
            return "UNKNOWN_GRANT_APPLICATION", None
        if kind == "approve":
            if app[3] != "pending":
                return "GRANT_NOT_PENDING", None
            return None, lambda: app.__setitem__(3, "approved")
        if kind == "reject":
            if not step[2]:
                return "REASON_REQUIRED", None
            if app[3] not in ("pending", "approved"):
                return "GRANT_CLOSED", None
            return None, lambda: app.__setitem__(3, "rejected")
        assert kind == "disburse"
        sme, period, amount, status = app
        if status != "approved":
            return "GRANT_NOT_APPROVED", None
        if amount > self.balance:
            return "SME_FUND_INSUFFICIENT", None
        _, _, sl, pl = self.params
        got = self.got.get((sme, period), 0)
        if sl is not None and got + amount > sl:
            return "GRANT_SME_LIMIT_EXCEEDED", None
        if pl is not None and self.period_got.get(period, 0) + amount > pl:
            return "GRANT_PERIOD_LIMIT_EXCEEDED", None

        def pay():
            app[3] = "disbursed"
            self.got[(sme, period)] = got + amount
            self.period_got[period] = self.period_got.get(period, 0) + amount
            self.balance -= amount
            self.grants += amount

        return None, pay


GIVEN = dict(
    first=st.one_of(st.none(), configure_first, configure_first, configure_first),
    budget=st.sampled_from([0, 1, 700_000, 4_000_000, 10_000_000]),
    rest=st.lists(steps, min_size=1, max_size=30),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**GIVEN)
def test_balance_is_inflows_minus_grants_after_any_sequence(first, budget, rest):
    # mostly a configured fund with some money in it, so that grants get paid and limits bite
    seq = ([first, ("deposit", budget, 2026)] if first else []) + rest
    ex = build_exchange()
    ex.restore(SNAP)
    fund = ex.modules["sme_fund"]
    model = Model(ex.accounts["L"].cash)
    n, ts = ex.last_seq, ex.now
    log = []
    outcomes: dict[tuple, int] = {}  # (command, expected code): read by a coverage check

    def run(cmd):
        nonlocal n, ts
        n += 1
        ts += 1
        log.append((cmd, n, ts))
        return ex.apply(cmd, n, ts)

    def one(step):
        kind = step[0]
        code, effect = model.expect(step)
        cmd = {
            "configure": lambda: ConfigureSmeFund(
                penalty_to_fund_bps=step[1],
                auction_to_fund_bps=step[2],
                sme_period_limit=step[3],
                period_limit=step[4],
                operator="ops",
            ),
            "deposit": lambda: FundDeposit(amount=step[1], period=step[2], ref="budget"),
            "apply": lambda: ApplyForGrant(
                sme=step[1],
                period=step[2],
                amount=step[3],
                project="heat pump",
                verified_abatement_t=step[4],
            ),
            "approve": lambda: ApproveGrant(application_id=step[1], operator="ops"),
            "reject": lambda: RejectGrant(application_id=step[1], reason=step[2]),
            "disburse": lambda: DisburseGrant(application_id=step[1]),
        }[kind]()
        before = business_hash(ex)
        evs = run(cmd)
        rejected = [e.code for e in evs if isinstance(e, CommandRejected)]
        if code is None:
            assert not rejected, (step, evs)
            effect()
        else:
            assert rejected == [code], (step, evs)
            assert business_hash(ex) == before
        outcomes[(kind, code)] = outcomes.get((kind, code), 0) + 1
        return code

    for step in seq:
        kind = step[0]
        if kind == "life":
            if one(("apply",) + step[1:4] + (7,)) is None:
                app_id = len(model.apps)
                for action in step[4]:
                    one(
                        (action, app_id)
                        + (("no verified abatement",) if action == "reject" else ())
                    )
        elif kind == "penalty":
            if not model.periods:
                continue
            p = model.periods.pop(0)
            run(SubmitActivityData(firm_id="L", period=p, process_emissions=step[1]))
            run(VerifyEmissions(firm_id="L", period=p, verifier="V1"))
            evs = run(ProcessComplianceDeadline(period=p))
            assert not any(isinstance(e, CommandRejected) for e in evs), evs
            # the penalty, computed here: 50,000.00 + shortfall x CEA-p's reference x 3,
            # paid out of L's cash as far as it goes; the fund's part rounded down
            pen = FIXED_FINE + step[1] * REF[p] * MULTIPLE
            paid = min(pen, model.l_cash)
            model.l_cash -= paid
            share = model.params[0] if model.params else 0
            model.balance += paid * share // 10_000
            model.inflows += paid * share // 10_000
        else:
            one(step)
        # the identity, three ways: the ledger account, the module's statement, the model
        assert fund_cash(ex) == model.balance >= 0
        sm = fund_statement(ex)
        assert sm["balance_fen"] == sm["inflows"]["total_fen"] - sm["grants"]["total_fen"]
        assert (sm["inflows"]["total_fen"], sm["grants"]["total_fen"]) == (
            model.inflows,
            model.grants,
        )
        assert sm["balance_check"]["ok"]
        assert ex.accounts["L"].cash == model.l_cash
        ex.check_invariants()
    # limits held for every SME and period, under the limits in effect when each was paid
    assert sum(fund.period_disbursed.values()) == model.grants
    assert {(s, p): v for s, ps in fund.disbursed.items() for p, v in ps.items()} == model.got
    # replay: the same commands on the same start give the same state
    ex2 = build_exchange()
    ex2.restore(SNAP)
    for c, seq, ts in log:
        ex2.apply(decode_command(encode_command(c)), seq, ts)
    assert ex2.state_hash() == ex.state_hash()
    OUTCOMES.update({k: OUTCOMES.get(k, 0) + v for k, v in outcomes.items()})


OUTCOMES: dict[tuple, int] = {}


def test_the_property_reaches_every_outcome():
    """The sequences the property draws must reach each accept and each reject of the grant
    flow, or it proves little. Checked on a derandomized run of it (the same examples every
    time, so this cannot flake), while the property itself explores anew on every run."""
    OUTCOMES.clear()
    inner = test_balance_is_inflows_minus_grants_after_any_sequence.hypothesis.inner_test
    settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )(given(**GIVEN)(inner))()
    want = {
        ("disburse", None),
        ("disburse", "SME_FUND_INSUFFICIENT"),
        ("disburse", "GRANT_SME_LIMIT_EXCEEDED"),
        ("disburse", "GRANT_PERIOD_LIMIT_EXCEEDED"),
        ("disburse", "GRANT_NOT_APPROVED"),
        ("apply", "NOT_AN_SME"),
        ("approve", None),
        ("approve", "GRANT_NOT_PENDING"),
        ("reject", None),
        ("reject", "GRANT_CLOSED"),
        ("deposit", None),
        ("configure", "BAD_PARAMETER"),
    }
    assert want <= set(OUTCOMES), sorted(want - set(OUTCOMES), key=str)
