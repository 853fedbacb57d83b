"""The credit registry, in process against the deterministic core: double counting in each of
its four forms, serials following every move of a credit, removals with a buffer pool, bad
carbon-inclusive batches, and carbon-inclusive issuance through to a compliance surrender.

Every figure is worked out by hand in the comments. Every refused command is checked to
change nothing: the canonical state (``Exchange.to_state`` without the envelope ``last_seq`` /
``now``, which every command advances, accepted or not) hashes the same before and after, and
the registry still agrees with the core (``RegistryModule.check``).
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from exchange.compliance.commands import (
    ConfigureCompliance,
    ConfigureCompliancePeriod,
    RegisterVerifier,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from exchange.compliance.config import to_ns
from exchange.core.commands import (
    AddInstrument,
    DepositCash,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    TransferUnits,
)
from exchange.core.events import CommandRejected, Posting, Trade
from exchange.core.exchange import AddSegment
from exchange.app.engine import Sequencer, build_exchange
from exchange.registry.commands import (
    ActionBatchDecided,
    ActionBatchSubmitted,
    ApproveActionBatch,
    ConfigureRegistry,
    CreditsIssued,
    CreditsRetired,
    DeclareOffsetClass,
    ImportCredits,
    IssueCredits,
    RecordExternalCancellation,
    RegisterPlatform,
    RegisterRemovalProject,
    RejectActionBatch,
    RemovalVerified,
    ReportReversal,
    RetireCredits,
    ReversalReported,
    SetConversionFactor,
    SubmitActionBatch,
    VerifyRemoval,
)
from exchange.registry.module import BUFFER

T2026 = to_ns("2026-01-01")
T2027 = to_ns("2027-01-01")
DEADLINE = to_ns("2027-06-30")
DAY = 86_400 * 10**9
PRICE = 5_000  # fen, the reference price of every credit instrument here
INSTRUMENTS = (
    ("CEA-2026", "allowance", 2026, None),
    ("CCER-2026", "offset", 2026, "CCER"),
    ("CCER-2027", "offset", 2027, "CCER"),
    ("PHCER-2026", "offset", 2026, "PHCER"),
    ("RMN-2026", "offset", 2026, "RMN"),
    ("RMN-2027", "offset", 2027, "RMN"),
    ("RME-2026", "offset", 2026, "RME"),
    ("RME-2027", "offset", 2027, "RME"),
)


def stable_hash(ex) -> str:
    """state_hash without the envelope (last_seq, now): equal before and after a refusal."""
    s = ex.to_state()
    s.pop("last_seq")
    s.pop("now")
    return hashlib.sha256(json.dumps(s, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def aid(n) -> str:
    """A platform-side action id: 64 lowercase hex digits (as the HMAC the platform sends)."""
    return hashlib.sha256(f"action-{n}".encode()).hexdigest()


class Reg:
    """A small market with compliance and the registry, driven through the Sequencer."""

    def __init__(self, *, legacy: tuple = (), configure: bool = True, mrv: bool = True):
        self.seq = Sequencer(build_exchange(), start_ts=T2026)
        self.ex = self.seq.ex
        self.ok(AddSegment(name="main", fee_bps=0, access="all"))
        for sym, kind, vintage, otype in INSTRUMENTS:
            self.ok(
                AddInstrument(
                    symbol=sym, kind=kind, vintage=vintage, offset_type=otype, reference_price=PRICE
                )
            )
        for f in ("A", "B", "C"):
            self.ok(RegisterFirm(firm_id=f))
            self.ok(DepositCash(account=f, amount=10**10))
        self.ok(
            ConfigureCompliance(
                carbon_coefficients_ppm=(("coal", 747_600),),
                offset_types=("CCER", "PHCER", "RMN", "RME"),
            )
        )
        # cap 10 % of the obligation, carbon-inclusive credits at most 2 % of it
        self.ok(
            ConfigureCompliancePeriod(
                period=2026,
                start_ts=T2026,
                deadline_ts=DEADLINE,
                offset_cap_bps=1000,
                offset_sub_caps_bps=(("PHCER", 200),),
            )
        )
        self.ok(RegisterVerifier(verifier="V1", name="Verifier One"))
        for firm, sym, qty in legacy:  # credits issued before the registry existed
            self.ok(IssueUnits(account=firm, instrument=sym, qty=qty, source="offset_project"))
        if configure:
            self.ok(ConfigureRegistry())
        if mrv:
            # obligations of 10,000 t each: offset cap 1,000 t, PHCER sub-cap 200 t
            self.seq.ts = max(self.seq.ts, T2027 + 30 * DAY)
            for f in ("A", "B", "C"):
                self.ok(
                    SubmitActivityData(
                        firm_id=f, period=2026, process_emissions=10_000, output=1_000
                    )
                )
                self.ok(VerifyEmissions(firm_id=f, period=2026, verifier="V1"))
                assert self.comp.obligation(f, 2026) == 10_000

    # ------------------------------------------------------------------ driving
    @property
    def reg(self):
        return self.ex.modules["registry"]

    @property
    def comp(self):
        return self.ex.modules["compliance"]

    def check(self) -> None:
        self.reg.check()
        self.ex.check_invariants()

    def ok(self, cmd) -> list:
        evs = self.seq(cmd)
        rej = [e for e in evs if isinstance(e, CommandRejected)]
        assert not rej, rej
        if "registry" in self.ex.modules:
            self.check()
        return evs

    def rejects(self, cmd, code: str, *needles: str) -> str:
        """``cmd`` is refused with ``code``, a message holding every needle, and no change."""
        before = stable_hash(self.ex)
        evs = self.seq(cmd)
        assert len(evs) == 1 and isinstance(evs[0], CommandRejected), evs
        assert evs[0].code == code, evs[0]
        for n in needles:
            assert n in evs[0].message, (n, evs[0].message)
        assert stable_hash(self.ex) == before, "a refused command changed the market"
        self.check()
        return evs[0].message

    def units(self, firm: str, sym: str) -> int:
        h = self.ex.accounts[firm].holdings.get(sym)
        return h.total if h is not None else 0

    def serials(self, firm: str, sym: str) -> list[str]:
        return self.reg.holdings(firm, sym).get(sym, [])

    def trade(self, seller: str, buyer: str, sym: str, qty: int) -> Trade:
        self.ok(PlaceOrder(account=seller, instrument=sym, side="sell", price=PRICE, qty=qty))
        evs = self.ok(PlaceOrder(account=buyer, instrument=sym, side="buy", price=PRICE, qty=qty))
        trades = [e for e in evs if isinstance(e, Trade)]
        assert [(t.seller, t.buyer, t.qty) for t in trades] == [(seller, buyer, qty)]
        return trades[0]

    def issue(self, firm: str, sym: str, issuer: str, project: str, first: int, last: int) -> list:
        return self.ok(
            IssueCredits(
                account=firm, instrument=sym, issuer=issuer, project=project, first=first, last=last
            )
        )

    def platform(self, pid: str) -> None:
        self.ok(RegisterPlatform(platform_id=pid, name=f"platform {pid}"))


def of(evs, cls) -> list:
    return [e for e in evs if isinstance(e, cls)]


def retired_for(lookup: dict) -> list[tuple]:
    return [
        (r["serial"], r["beneficiary"], r["reason"], r["period"])
        for b in lookup["blocks"]
        for r in b["retirements"]
    ]


# ================================================================ 1. double counting
def test_double_counting_issuance_overlap():
    m = Reg(mrv=False)
    evs = m.issue("A", "CCER-2026", "CCER", "P1", 1, 500)
    assert [(e.serial, e.account, e.qty, e.origin) for e in of(evs, CreditsIssued)] == [
        ("CCER/P1/2026/1-500", "A", 500, "ccer")
    ]
    # partly overlapping, inside, a single unit, spanning two blocks: all refused, naming both
    m.rejects(
        IssueCredits(
            account="B", instrument="CCER-2026", issuer="CCER", project="P1", first=400, last=600
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/400-600",
        "CCER/P1/2026/1-500",
    )
    m.rejects(
        IssueCredits(
            account="A", instrument="CCER-2026", issuer="CCER", project="P1", first=500, last=500
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/500 ",
        "CCER/P1/2026/1-500",
    )
    m.rejects(
        IssueCredits(
            account="C", instrument="CCER-2026", issuer="CCER", project="P1", first=10, last=20
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/10-20",
        "CCER/P1/2026/1-500",
    )
    m.issue("A", "CCER-2026", "CCER", "P1", 501, 600)  # adjacent: no unit shared
    m.rejects(
        IssueCredits(
            account="A", instrument="CCER-2026", issuer="CCER", project="P1", first=1, last=10_000
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/1-500",
        "CCER/P1/2026/501-600",
    )
    # the same numbers of another project, vintage or issuer are other units
    m.issue("B", "CCER-2026", "CCER", "P2", 1, 500)
    m.issue("B", "CCER-2027", "CCER", "P1", 1, 500)
    m.issue("B", "CCER-2026", "VCS", "P1", 1, 500)
    # removal credits are never issued by hand (only by a verification)
    m.rejects(
        IssueCredits(
            account="B", instrument="RMN-2026", issuer="CCER", project="P1", first=1, last=1
        ),
        "BAD_PARAMETER",
        "issued by a verified removal",
    )
    # a vintage is the instrument's: P1 2026 numbers through another 2026 instrument clash
    m.ok(
        RecordExternalCancellation(
            registry="X", issuer="CCER", project="P1", vintage=2026, first=1, last=1
        )
    )
    m.rejects(
        ImportCredits(
            registry="X",
            account="B",
            instrument="RMN-2026",
            issuer="CCER",
            project="P1",
            first=1,
            last=1,
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/1-500",
    )
    assert m.units("A", "CCER-2026") == 600 and m.units("B", "CCER-2026") == 1_000
    # two issuances, two blocks: serials of different blocks never merge
    assert m.serials("A", "CCER-2026") == ["CCER/P1/2026/1-500", "CCER/P1/2026/501-600"]
    assert m.reg.lookup("CCER/P1/2026/1-600")["issued_units"] == 600
    # bad ranges are not double counting but still refused cleanly
    m.rejects(
        IssueCredits(
            account="A", instrument="CCER-2026", issuer="CCER", project="P3", first=10, last=9
        ),
        "BAD_PARAMETER",
    )
    m.rejects(
        IssueCredits(
            account="A", instrument="CEA-2026", issuer="CCER", project="P3", first=1, last=9
        ),
        "BAD_PARAMETER",
    )


def test_double_counting_removal_and_batch_serials_cannot_be_squatted():
    """Serials of the registry's own issuance (removals under its issuer code, batches under a
    platform's id) are issued by verification and approval only: an issue_credits naming them
    would be the same units twice, before or after."""
    m = Reg(mrv=False)
    m.ok(RegisterRemovalProject(project_id="FOREST1", removal_type="natural", owner="A"))
    m.ok(VerifyRemoval(project_id="FOREST1", vintage=2026, verifier="V1", gross_removal=100))
    m.rejects(
        IssueCredits(
            account="B", instrument="RMN-2026", issuer="CEX", project="FOREST1", first=50, last=60
        ),
        "BAD_PARAMETER",
        "issued by a verified removal",
    )
    m.ok(
        RecordExternalCancellation(
            registry="X", issuer="CEX", project="FOREST1", vintage=2026, first=50, last=60
        )
    )
    m.rejects(
        ImportCredits(
            registry="X",
            account="B",
            instrument="RMN-2026",
            issuer="CEX",
            project="FOREST1",
            first=50,
            last=60,
        ),
        "DOUBLE_COUNTED",
        "CEX/FOREST1/2026/1-",
    )
    m.platform("PLAT1")
    m.ok(SetConversionFactor(action_type="metro", unit="km", g_co2e_per_unit=1_000_000))
    m.ok(
        SubmitActionBatch(
            platform_id="PLAT1", vintage=2026, records=((aid(1), "metro", 5, "2026-03-01"),)
        )
    )
    # issued by hand first, approval would issue the same units again: refused
    m.rejects(
        IssueCredits(
            account="B",
            instrument="PHCER-2026",
            issuer="PLAT1",
            project="PLAT1-000001",
            first=1,
            last=5,
        ),
        "BAD_PARAMETER",
        "approved carbon-inclusive batch",
    )
    m.rejects(
        IssueCredits(
            account="B",
            instrument="CCER-2026",
            issuer="PLAT1",
            project="PLAT1-000001",
            first=1,
            last=5,
        ),
        "BAD_PARAMETER",
        "PLAT1",
    )
    m.rejects(
        IssueCredits(
            account="B", instrument="CCER-2026", issuer="CEX", project="FOREST9", first=1, last=5
        ),
        "BAD_PARAMETER",
        "CEX",
    )
    # nor may a platform take an issuer's name (its batches' serials would be theirs)
    m.issue("A", "CCER-2026", "CCER", "P1", 1, 10)
    m.rejects(RegisterPlatform(platform_id="CCER"), "BAD_PARAMETER", "CCER")
    m.rejects(RegisterPlatform(platform_id="CEX"), "BAD_PARAMETER", "CEX")
    # units imported under a batch's serials (another registry cancelled them): approval
    # refuses to issue them a second time, naming both
    m.ok(
        RecordExternalCancellation(
            registry="OTHER",
            issuer="PLAT1",
            project="PLAT1-000001",
            vintage=2026,
            first=4,
            last=4,
            reference="X-1",
        )
    )
    m.ok(
        ImportCredits(
            registry="OTHER",
            account="B",
            instrument="PHCER-2026",
            issuer="PLAT1",
            project="PLAT1-000001",
            first=4,
            last=4,
        )
    )
    m.rejects(
        ApproveActionBatch(batch_id="PLAT1-000001", verifier="V1"),
        "DOUBLE_COUNTED",
        "PLAT1/PLAT1-000001/2026/1-5",
        "PLAT1/PLAT1-000001/2026/4",
    )
    assert m.units("PLAT1", "PHCER-2026") == 0
    # the next batch is free of it
    m.ok(
        SubmitActionBatch(
            platform_id="PLAT1", vintage=2026, records=((aid(2), "metro", 3, "2026-03-01"),)
        )
    )
    evs = m.ok(ApproveActionBatch(batch_id="PLAT1-000002", verifier="V1"))
    assert of(evs, ActionBatchDecided)[0].serial == "PLAT1/PLAT1-000002/2026/1-3"
    assert m.serials("PLAT1", "PHCER-2026") == ["PLAT1/PLAT1-000002/2026/1-3"]


def test_double_counting_claimed_action_ids():
    m = Reg(mrv=False)
    m.platform("PLAT1")
    m.platform("PLAT2")
    m.ok(SetConversionFactor(action_type="metro", unit="km", g_co2e_per_unit=500_000))
    rec = lambda n, q=4: (aid(n), "metro", q, "2026-05-0%d" % (1 + n % 9))  # noqa: E731
    evs = m.ok(SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=(rec(1), rec(2))))
    # 2 x 4 km x 500,000 g = 4,000,000 g = 4 t
    assert of(evs, ActionBatchSubmitted) == [
        ActionBatchSubmitted("PLAT1-000001", "PLAT1", 2026, 2, 4, 1)
    ]
    # pending: by another platform, by the same platform, alone or amid fresh ids
    # another platform's claim: refused without naming that platform (every platform holds
    # the scheme key: a prober must not learn which app a person used)
    msg = m.rejects(
        SubmitActionBatch(platform_id="PLAT2", vintage=2026, records=(rec(2),)),
        "DOUBLE_COUNTED",
        aid(2)[:12],
        "another platform",
    )
    assert "PLAT1" not in msg
    m.rejects(
        SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=(rec(3), rec(1), rec(4))),
        "DOUBLE_COUNTED",
        "record 1",
        aid(1)[:12],
        "PLAT1-000001",
    )
    # approved: the message names the serials the action was issued as
    m.ok(ApproveActionBatch(batch_id="PLAT1-000001", verifier="V1"))
    m.rejects(
        SubmitActionBatch(platform_id="PLAT2", vintage=2026, records=(rec(1),)),
        "DOUBLE_COUNTED",
        "another platform",
    )
    m.rejects(
        SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=(rec(2),)),
        "DOUBLE_COUNTED",
        "PLAT1/PLAT1-000001/2026/1-4",
    )
    # twice within one batch
    m.rejects(
        SubmitActionBatch(platform_id="PLAT2", vintage=2026, records=(rec(5), rec(6), rec(5))),
        "DOUBLE_COUNTED",
        "record 2",
        aid(5)[:12],
        "twice",
    )
    # a rejected batch frees its actions: they may be claimed again (corrected), once
    m.ok(SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=(rec(7), rec(8))))
    m.rejects(
        SubmitActionBatch(platform_id="PLAT2", vintage=2026, records=(rec(7),)),
        "DOUBLE_COUNTED",
        "another platform",
    )
    m.ok(RejectActionBatch(batch_id="PLAT1-000002", verifier="V1", reason="meter readings missing"))
    evs = m.ok(SubmitActionBatch(platform_id="PLAT2", vintage=2026, records=(rec(7, 2), rec(8, 2))))
    assert of(evs, ActionBatchSubmitted)[0].batch_id == "PLAT2-000001"
    assert of(evs, ActionBatchSubmitted)[0].reduction_t == 2  # 4 km x 0.5 t
    m.rejects(
        SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=(rec(8),)),
        "DOUBLE_COUNTED",
        "another platform",
    )
    m.rejects(
        SubmitActionBatch(platform_id="PLAT2", vintage=2026, records=(rec(8),)),
        "DOUBLE_COUNTED",
        "your batch PLAT2-000001",
        "(pending)",
    )
    assert m.reg.batches["PLAT1-000002"]["status"] == "rejected"
    assert sorted(m.reg.claimed) == sorted(aid(n) for n in (1, 2, 7, 8))
    # after a snapshot round trip the claims are the same (they are derived from batches)
    ex2 = build_exchange()
    ex2.restore(m.ex.snapshot())
    assert ex2.modules["registry"].claimed == m.reg.claimed


def test_double_counting_imports():
    m = Reg(mrv=False)
    imp = lambda first, last, registry="VERRA", sym="CCER-2026": ImportCredits(  # noqa: E731
        registry=registry,
        account="A",
        instrument=sym,
        issuer="VCS",
        project="V9",
        first=first,
        last=last,
    )
    # nothing reported cancelled
    m.rejects(imp(1, 100), "DOUBLE_COUNTED", "VERRA", "VCS/V9/2026/1-100", "cancelled")
    # partly covered: 1-60 cancelled, 61-100 still live there
    m.ok(
        RecordExternalCancellation(
            registry="VERRA",
            issuer="VCS",
            project="V9",
            vintage=2026,
            first=1,
            last=60,
            reference="VERRA-C-1",
        )
    )
    m.rejects(imp(1, 100), "DOUBLE_COUNTED", "VCS/V9/2026/1-100")
    m.rejects(imp(50, 61), "DOUBLE_COUNTED", "VCS/V9/2026/50-61")
    # 61-100 cancelled, but by another registry: not a cancellation VERRA made
    m.ok(
        RecordExternalCancellation(
            registry="GOLD",
            issuer="VCS",
            project="V9",
            vintage=2026,
            first=61,
            last=100,
            reference="GS-7",
        )
    )
    m.rejects(imp(1, 100), "DOUBLE_COUNTED", "VERRA", "VCS/V9/2026/1-100")
    # another vintage of the same numbers was not cancelled
    m.rejects(imp(1, 60, sym="CCER-2027"), "DOUBLE_COUNTED", "VCS/V9/2027/1-60")
    # fully covered by two touching cancellations: imported under the original serials
    m.ok(
        RecordExternalCancellation(
            registry="VERRA",
            issuer="VCS",
            project="V9",
            vintage=2026,
            first=61,
            last=100,
            reference="VERRA-C-2",
        )
    )
    evs = m.ok(imp(1, 100))
    assert [(e.serial, e.account, e.qty, e.origin) for e in of(evs, CreditsIssued)] == [
        ("VCS/V9/2026/1-100", "A", 100, "import")
    ]
    assert m.units("A", "CCER-2026") == 100
    assert m.serials("A", "CCER-2026") == ["VCS/V9/2026/1-100"]
    assert m.reg.lookup("VCS/V9/2026/7")["blocks"][0]["origin"] == "import"
    # a second import of the same cancelled units, whole or in part, from either registry
    m.rejects(imp(1, 100), "DOUBLE_COUNTED", "VCS/V9/2026/1-100")
    m.rejects(imp(60, 60), "DOUBLE_COUNTED", "VCS/V9/2026/1-100")
    m.rejects(imp(61, 100, registry="GOLD"), "DOUBLE_COUNTED", "VCS/V9/2026/1-100")
    # nor issued here natively under the same serials
    m.rejects(
        IssueCredits(
            account="B", instrument="CCER-2026", issuer="VCS", project="V9", first=90, last=110
        ),
        "DOUBLE_COUNTED",
        "VCS/V9/2026/1-100",
    )
    assert m.units("A", "CCER-2026") == 100 and m.units("B", "CCER-2026") == 0


def test_double_counting_second_retirement():
    m = Reg()
    m.issue("A", "CCER-2026", "CCER", "P1", 1, 500)
    evs = m.ok(
        RetireCredits(
            account="A",
            instrument="CCER-2026",
            qty=10,
            serials=("CCER/P1/2026/1-10",),
            beneficiary="Airline X",
            reason="flight offsets",
        )
    )
    assert of(evs, CreditsRetired) == [
        CreditsRetired(
            "CCER/P1/2026/1-10", "CCER-2026", "A", "Airline X", 10, "voluntary:flight offsets", None
        )
    ]
    assert of(evs, Posting)[0].amount == 10 and m.units("A", "CCER-2026") == 490
    # a voluntary retirement naming a unit already retired, whole or overlapping
    m.rejects(
        RetireCredits(account="A", instrument="CCER-2026", qty=10, serials=("CCER/P1/2026/1-10",)),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/1-10",
        "already retired",
        "Airline X",
    )
    m.rejects(
        RetireCredits(account="A", instrument="CCER-2026", qty=10, serials=("CCER/P1/2026/5-14",)),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/5-10",
        "already retired",
    )
    m.rejects(
        RetireCredits(
            account="A",
            instrument="CCER-2026",
            qty=2,
            serials=("CCER/P1/2026/11", "CCER/P1/2026/10"),
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/10",
    )
    # the same unit named twice in one command is one unit, not two
    m.rejects(
        RetireCredits(
            account="A",
            instrument="CCER-2026",
            qty=20,
            serials=("CCER/P1/2026/20-29", "CCER/P1/2026/25-34"),
        ),
        "DOUBLE_COUNTED",
        "named twice",
    )
    # a compliance surrender naming retired serials
    m.rejects(
        SurrenderUnits(
            firm_id="A", period=2026, instrument="CCER-2026", qty=10, serials=("CCER/P1/2026/1-10",)
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/1-10",
        "already retired",
    )
    evs = m.ok(
        SurrenderUnits(
            firm_id="A",
            period=2026,
            instrument="CCER-2026",
            qty=5,
            serials=("CCER/P1/2026/100-104",),
        )
    )
    assert of(evs, CreditsRetired) == [
        CreditsRetired("CCER/P1/2026/100-104", "CCER-2026", "A", "A", 5, "surrender:2026", 2026)
    ]
    m.rejects(
        SurrenderUnits(
            firm_id="A",
            period=2026,
            instrument="CCER-2026",
            qty=5,
            serials=("CCER/P1/2026/100-104",),
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/100-104",
        "surrender:2026",
    )
    m.rejects(
        RetireCredits(
            account="A", instrument="CCER-2026", qty=3, serials=("CCER/P1/2026/102-104",)
        ),
        "DOUBLE_COUNTED",
        "CCER/P1/2026/102-104",
    )
    assert m.comp.record("A", 2026)["surrendered"] == 5
    assert m.units("A", "CCER-2026") == 485
    look = m.reg.lookup("CCER/P1/2026/1-500")
    assert look["issued_units"] == 500 and look["retired_units"] == 15


# ================================================================ 2. following serials
def test_legacy_serials_and_plain_issuance_refused():
    m = Reg(
        legacy=(("B", "CCER-2026", 50), ("A", "CCER-2026", 100), ("A", "RMN-2026", 7)), mrv=False
    )
    # one LEGACY block per instrument, holders in account order
    assert m.serials("A", "CCER-2026") == ["LEGACY/CCER-2026/2026/1-100"]
    assert m.serials("B", "CCER-2026") == ["LEGACY/CCER-2026/2026/101-150"]
    assert m.serials("A", "RMN-2026") == ["LEGACY/RMN-2026/2026/1-7"]
    assert m.reg.lookup("LEGACY/CCER-2026/2026/1-150")["blocks"][0]["origin"] == "legacy"
    m.rejects(
        IssueUnits(account="A", instrument="CCER-2026", qty=10), "SERIALS_REQUIRED", "CCER-2026"
    )
    m.rejects(IssueUnits(account="A", instrument="PHCER-2026", qty=10), "SERIALS_REQUIRED")
    m.ok(IssueUnits(account="A", instrument="CEA-2026", qty=10))  # allowances have none
    # LEGACY is reserved: no one issues under it
    m.rejects(
        IssueCredits(
            account="A",
            instrument="CCER-2026",
            issuer="LEGACY",
            project="CCER-2026",
            first=151,
            last=160,
        ),
        "BAD_PARAMETER",
        "LEGACY",
    )


def test_serials_follow_trades_transfers_surrenders():
    m = Reg(legacy=(("A", "CCER-2026", 100),))
    m.issue("A", "CCER-2026", "CCER", "P1", 1, 500)
    m.issue("A", "CCER-2026", "CCER", "P2", 1, 300)
    assert m.serials("A", "CCER-2026") == [
        "LEGACY/CCER-2026/2026/1-100",
        "CCER/P1/2026/1-500",
        "CCER/P2/2026/1-300",
    ]
    # a trade of 150: the seller's oldest serials go to the buyer
    m.trade("A", "B", "CCER-2026", 150)
    assert m.serials("B", "CCER-2026") == ["LEGACY/CCER-2026/2026/1-100", "CCER/P1/2026/1-50"]
    assert m.serials("A", "CCER-2026") == ["CCER/P1/2026/51-500", "CCER/P2/2026/1-300"]
    # a transfer of 120 from B to C: again oldest first
    m.ok(TransferUnits(from_account="B", to_account="C", instrument="CCER-2026", qty=120))
    assert m.serials("C", "CCER-2026") == ["LEGACY/CCER-2026/2026/1-100", "CCER/P1/2026/1-20"]
    assert m.serials("B", "CCER-2026") == ["CCER/P1/2026/21-50"]
    # C sells 30 back to A: A's pieces merge where they meet
    m.trade("C", "A", "CCER-2026", 30)
    assert m.serials("A", "CCER-2026") == [
        "LEGACY/CCER-2026/2026/1-30",
        "CCER/P1/2026/51-500",
        "CCER/P2/2026/1-300",
    ]
    # a surrender without serials retires the oldest; with serials, exactly those
    evs = m.ok(SurrenderUnits(firm_id="C", period=2026, instrument="CCER-2026", qty=25))
    assert [(e.serial, e.beneficiary, e.period) for e in of(evs, CreditsRetired)] == [
        ("LEGACY/CCER-2026/2026/31-55", "C", 2026)
    ]
    evs = m.ok(
        SurrenderUnits(
            firm_id="A",
            period=2026,
            instrument="CCER-2026",
            qty=30,
            serials=("CCER/P2/2026/291-300", "CCER/P1/2026/101-120"),
        )
    )
    assert [e.serial for e in of(evs, CreditsRetired)] == [
        "CCER/P1/2026/101-120",
        "CCER/P2/2026/291-300",
    ]
    assert m.serials("A", "CCER-2026") == [
        "LEGACY/CCER-2026/2026/1-30",
        "CCER/P1/2026/51-100",
        "CCER/P1/2026/121-500",
        "CCER/P2/2026/1-290",
    ]
    assert m.serials("C", "CCER-2026") == ["LEGACY/CCER-2026/2026/56-100", "CCER/P1/2026/1-20"]
    # A: 100 + 500 + 300 - 150 + 30 - 30 = 750; C: 120 - 30 - 25 = 65
    assert m.units("C", "CCER-2026") == 65 and m.units("A", "CCER-2026") == 750
    # a serial not held, never issued, or of another instrument
    m.rejects(
        SurrenderUnits(
            firm_id="B", period=2026, instrument="CCER-2026", qty=5, serials=("CCER/P1/2026/1-5",)
        ),
        "SERIAL_NOT_HELD",
        "B",
    )
    m.rejects(
        SurrenderUnits(
            firm_id="A",
            period=2026,
            instrument="CCER-2026",
            qty=5,
            serials=("CCER/P1/2026/498-502",),
        ),
        "UNKNOWN_SERIAL",
    )
    m.rejects(
        SurrenderUnits(
            firm_id="A", period=2026, instrument="CCER-2026", qty=4, serials=("CCER/P1/2026/51-55",)
        ),
        "BAD_QUANTITY",
    )
    m.ok(
        RecordExternalCancellation(
            registry="VERRA", issuer="VCS", project="R1", vintage=2026, first=1, last=5
        )
    )
    m.ok(
        ImportCredits(
            registry="VERRA",
            account="A",
            instrument="RMN-2026",
            issuer="VCS",
            project="R1",
            first=1,
            last=5,
        )
    )
    m.rejects(
        SurrenderUnits(
            firm_id="A", period=2026, instrument="CCER-2026", qty=5, serials=("VCS/R1/2026/1-5",)
        ),
        "UNKNOWN_SERIAL",
        "not CCER-2026",
    )
    m.ok(IssueUnits(account="A", instrument="CEA-2026", qty=10))
    m.rejects(
        SurrenderUnits(
            firm_id="A", period=2026, instrument="CEA-2026", qty=1, serials=("CCER/P1/2026/51",)
        ),
        "BAD_SERIAL",
    )
    # the public lookup: retired, for whom, which period; and not retired
    look = m.reg.lookup("LEGACY/CCER-2026/2026/31-55")
    assert (look["issued_units"], look["retired_units"]) == (25, 25)
    assert retired_for(look) == [("LEGACY/CCER-2026/2026/31-55", "C", "surrender:2026", 2026)]
    look = m.reg.lookup("CCER/P1/2026/95-125")
    assert (look["units"], look["issued_units"], look["retired_units"]) == (31, 31, 20)
    assert retired_for(look) == [("CCER/P1/2026/101-120", "A", "surrender:2026", 2026)]
    look = m.reg.lookup("CCER/P1/2026/51-100")
    assert (look["issued_units"], look["retired_units"], retired_for(look)) == (50, 0, [])
    look = m.reg.lookup("CCER/P9/2026/1-10")
    assert (look["issued_units"], look["blocks"]) == (0, [])
    with pytest.raises(Exception) as ei:
        m.reg.lookup("CCER/P1/2026/10-1")
    assert getattr(ei.value, "code", "") == "BAD_SERIAL"
    rec = m.comp.record("A", 2026)
    assert rec["offsets"] == 30 and m.comp.record("C", 2026)["offsets"] == 25
    # replay and a snapshot round trip reproduce the registry
    ex2 = build_exchange()
    for c, seq, ts in m.seq.log:
        ex2.apply(c, seq, ts)
    assert ex2.state_hash() == m.ex.state_hash()
    ex3 = build_exchange()
    ex3.restore(m.ex.snapshot())
    assert ex3.state_hash() == m.ex.state_hash()
    ex3.modules["registry"].check()
    assert ex3.modules["registry"].holdings("A") == m.reg.holdings("A")


def test_voluntary_retirement_oldest_first_for_the_account():
    m = Reg()
    m.issue("A", "CCER-2026", "CCER", "P1", 1, 40)
    evs = m.ok(RetireCredits(account="A", instrument="CCER-2026", qty=15))
    assert [(e.serial, e.beneficiary, e.reason, e.period) for e in of(evs, CreditsRetired)] == [
        ("CCER/P1/2026/1-15", "A", "voluntary", None)
    ]
    assert retired_for(m.reg.lookup("CCER/P1/2026/1-15")) == [
        ("CCER/P1/2026/1-15", "A", "voluntary", None)
    ]
    m.rejects(RetireCredits(account="A", instrument="CCER-2026", qty=26), "INSUFFICIENT_HOLDINGS")
    m.rejects(RetireCredits(account="A", instrument="CEA-2026", qty=1), "BAD_PARAMETER")


# ================================================================ 3. removals
def test_removal_net_issuance_and_buffer_worked_example():
    m = Reg(mrv=False)
    m.ok(RegisterRemovalProject(project_id="FOREST1", removal_type="natural", owner="A"))
    m.ok(RegisterRemovalProject(project_id="DAC1", removal_type="engineered", owner="B"))
    m.ok(RegisterRemovalProject(project_id="BARE", removal_type="natural", owner="C"))
    # gross 1,000 - own emissions 100 - baseline 200 = 700 net; 20 % buffer = 140; owner 560
    evs = m.ok(
        VerifyRemoval(
            project_id="FOREST1",
            vintage=2026,
            verifier="V1",
            gross_removal=1000,
            project_emissions=100,
            baseline_removal=200,
        )
    )
    assert of(evs, RemovalVerified) == [
        RemovalVerified("FOREST1", 2026, 1000, 100, 200, 700, 140, 560)
    ]
    assert [(e.serial, e.account, e.qty) for e in of(evs, CreditsIssued)] == [
        ("CEX/FOREST1/2026/1-140", BUFFER, 140),
        ("CEX/FOREST1/2026/141-700", "A", 560),
    ]
    assert m.units(BUFFER, "RMN-2026") == 140 and m.units("A", "RMN-2026") == 560
    assert m.reg.buffer["natural"] == [140, 0]
    # net 7, 2,000 bps: 1.4 rounds up to 2 for the buffer, 5 to the owner
    evs = m.ok(VerifyRemoval(project_id="DAC1", vintage=2026, verifier="V1", gross_removal=7))
    assert of(evs, RemovalVerified)[0].buffer == 2
    assert of(evs, RemovalVerified)[0].issued_to_owner == 5
    assert m.units(BUFFER, "RME-2026") == 2 and m.units("B", "RME-2026") == 5
    assert m.serials("B", "RME-2026") == ["CEX/DAC1/2026/3-7"]
    assert m.reg.buffer == {"engineered": [2, 0], "natural": [140, 0]}
    # a second verification of the same project and vintage is the same removal twice
    m.rejects(
        VerifyRemoval(project_id="FOREST1", vintage=2026, verifier="V1", gross_removal=50),
        "DOUBLE_COUNTED",
        "CEX/FOREST1/2026/1-700",
    )
    # the next vintage is a new removal
    evs = m.ok(
        VerifyRemoval(
            project_id="FOREST1", vintage=2027, verifier="V1", gross_removal=10, baseline_removal=5
        )
    )
    rv = of(evs, RemovalVerified)[0]
    assert (rv.net_removal, rv.buffer, rv.issued_to_owner) == (5, 1, 4)  # buffer ceil(1.0)
    # net <= 0 issues nothing (and still uses up the vintage)
    hold = stable_hash(m.ex)
    evs = m.ok(
        VerifyRemoval(
            project_id="BARE",
            vintage=2026,
            verifier="V1",
            gross_removal=100,
            project_emissions=60,
            baseline_removal=50,
        )
    )
    assert of(evs, RemovalVerified) == [RemovalVerified("BARE", 2026, 100, 60, 50, 0, 0, 0)]
    assert not of(evs, CreditsIssued) and not of(evs, Posting)
    assert m.units("C", "RMN-2026") == 0 and m.reg.buffer["natural"] == [141, 0]
    assert stable_hash(m.ex) != hold  # the verification itself is on record
    m.rejects(
        VerifyRemoval(project_id="BARE", vintage=2026, verifier="V1", gross_removal=500),
        "DOUBLE_COUNTED",
        "BARE",
    )
    # who may verify, and for what
    m.rejects(
        VerifyRemoval(project_id="BARE", vintage=2027, verifier="A", gross_removal=5),
        "NOT_A_VERIFIER",
    )
    m.rejects(
        VerifyRemoval(project_id="BARE", vintage=2028, verifier="V1", gross_removal=5),
        "UNKNOWN_INSTRUMENT",
    )
    m.rejects(
        VerifyRemoval(project_id="NOPE", vintage=2026, verifier="V1", gross_removal=5),
        "UNKNOWN_PROJECT",
    )
    m.rejects(
        VerifyRemoval(project_id="BARE", vintage=2027, verifier="V1", gross_removal=-5),
        "BAD_PARAMETER",
    )
    m.rejects(IssueUnits(account="A", instrument="RMN-2026", qty=1), "SERIALS_REQUIRED")


def test_reversal_buffer_first_then_project_with_owner():
    m = Reg(mrv=False)
    for pid, rtype, owner in (
        ("FOREST1", "natural", "A"),
        ("FOREST2", "natural", "A"),
        ("DAC1", "engineered", "A"),
    ):
        m.ok(RegisterRemovalProject(project_id=pid, removal_type=rtype, owner=owner))
    m.ok(VerifyRemoval(project_id="FOREST1", vintage=2026, verifier="V1", gross_removal=700))
    m.ok(VerifyRemoval(project_id="FOREST2", vintage=2026, verifier="V1", gross_removal=500))
    m.ok(VerifyRemoval(project_id="DAC1", vintage=2026, verifier="V1", gross_removal=100))
    # natural pool 140 + 100 = 240; A: FOREST1 141-700 (560), FOREST2 101-500 (400)
    assert m.units(BUFFER, "RMN-2026") == 240 and m.units("A", "RMN-2026") == 960
    # A sells 200 (FOREST1 141-340, its oldest) to B
    m.trade("A", "B", "RMN-2026", 200)
    assert m.serials("B", "RMN-2026") == ["CEX/FOREST1/2026/141-340"]
    # a small reversal: the pool covers it all, oldest pool serials first
    evs = m.ok(ReportReversal(project_id="FOREST1", qty=50, cause="pest", reporter="V1"))
    assert of(evs, ReversalReported) == [ReversalReported("FOREST1", 50, "pest", 50, 0, 0)]
    assert [(e.serial, e.account) for e in of(evs, CreditsRetired)] == [
        ("CEX/FOREST1/2026/1-50", BUFFER)
    ]
    assert m.reg.buffer["natural"] == [240, 50] and m.units(BUFFER, "RMN-2026") == 190
    # a fire: 1,000 t. Pool 190 (FOREST1 51-140, FOREST2 1-100), then FOREST1 still with A
    # (341-700 = 360), not FOREST2's credits, not what A sold to B: 1,000 - 190 - 360 = 450
    # uncovered
    evs = m.ok(ReportReversal(project_id="FOREST1", qty=1000, cause="fire"))
    assert of(evs, ReversalReported) == [ReversalReported("FOREST1", 1000, "fire", 190, 360, 450)]
    assert sorted((e.serial, e.account, e.qty) for e in of(evs, CreditsRetired)) == [
        ("CEX/FOREST1/2026/341-700", "A", 360),
        ("CEX/FOREST1/2026/51-140", BUFFER, 90),
        ("CEX/FOREST2/2026/1-100", BUFFER, 100),
    ]
    assert m.units(BUFFER, "RMN-2026") == 0 and m.reg.buffer["natural"] == [240, 240]
    assert m.serials("A", "RMN-2026") == ["CEX/FOREST2/2026/101-500"]
    assert m.serials("B", "RMN-2026") == ["CEX/FOREST1/2026/141-340"]
    assert m.units("A", "RME-2026") == 80 and m.units(BUFFER, "RME-2026") == 20  # untouched
    assert m.reg.buffer["engineered"] == [20, 0]
    proj = m.reg.projects["FOREST1"]
    assert (proj["reversed"], proj["uncovered"]) == (1050, 450)
    look = m.reg.lookup("CEX/FOREST1/2026/341-700")
    assert retired_for(look) == [("CEX/FOREST1/2026/341-700", "A", "reversal:FOREST1:fire", None)]
    # cancelled by the reversal, so never retired again
    m.rejects(
        RetireCredits(
            account="A", instrument="RMN-2026", qty=10, serials=("CEX/FOREST1/2026/691-700",)
        ),
        "DOUBLE_COUNTED",
        "CEX/FOREST1/2026/691-700",
        "reversal:FOREST1:fire",
    )
    # a reversal with nothing left to cancel records all of it as uncovered
    evs = m.ok(ReportReversal(project_id="FOREST1", qty=5, cause="leakage"))
    assert of(evs, ReversalReported) == [ReversalReported("FOREST1", 5, "leakage", 0, 0, 5)]
    # the owner's credits reserved in a sell order are not taken from under the order
    m.ok(VerifyRemoval(project_id="FOREST2", vintage=2027, verifier="V1", gross_removal=10))
    m.ok(PlaceOrder(account="A", instrument="RMN-2026", side="sell", price=PRICE, qty=350))
    evs = m.ok(ReportReversal(project_id="FOREST2", qty=100, cause="storm"))
    # pool: 2 t of FOREST2 2027 (RMN-2027); then A's free FOREST2 2026: 400 - 350 = 50 t;
    # then A's FOREST2 2027 (8 t); 100 - 2 - 50 - 8 = 40 uncovered
    rr = of(evs, ReversalReported)[0]
    assert (rr.from_buffer, rr.from_project, rr.uncovered) == (2, 58, 40)
    assert m.units("A", "RMN-2026") == 350
    assert m.ex.accounts["A"].holdings["RMN-2026"].reserved == 350
    m.rejects(ReportReversal(project_id="FOREST2", qty=0, cause="x"), "BAD_QUANTITY")
    m.rejects(ReportReversal(project_id="FOREST2", qty=1, cause=""), "REASON_REQUIRED")
    m.rejects(ReportReversal(project_id="NOPE", qty=1, cause="fire"), "UNKNOWN_PROJECT")


# ================================================================ 5. bad batches
def _batch_market() -> Reg:
    m = Reg(mrv=False)
    m.platform("PLAT1")
    m.ok(SetConversionFactor(action_type="metro", unit="km", g_co2e_per_unit=50_000))
    return m


@pytest.mark.parametrize(
    "records, code, needle",
    [
        (((aid(1), "teleport", 3, "2026-03-01"),), "UNKNOWN_ACTION_TYPE", "teleport"),
        (((aid(1), "metro", -3, "2026-03-01"),), "BAD_BATCH", "-3"),
        (((aid(1), "metro", 0, "2026-03-01"),), "BAD_BATCH", "quantity"),
        (((aid(1), "metro", 2.5, "2026-03-01"),), "BAD_BATCH", "quantity"),
        (((aid(1), "metro", True, "2026-03-01"),), "BAD_BATCH", "quantity"),
        (((aid(1), "metro", 10**9 + 1, "2026-03-01"),), "BAD_BATCH", "quantity"),
        (((aid(1), "metro", 3, "2025-12-31"),), "BAD_BATCH", "vintage 2026"),
        (((aid(1), "metro", 3, "2027-01-01"),), "BAD_BATCH", "vintage 2026"),
        (((aid(1), "metro", 3, "2026-02-30"),), "BAD_BATCH", "not a date"),
        (((aid(1), "metro", 3, "2026-3-1"),), "BAD_BATCH", "2026-3-1"),
        (((aid(1), "metro", 3, "2026-03- 1"),), "BAD_BATCH", "2026-03- 1"),
        (((aid(1), "metro", 3, "2026-+3-01"),), "BAD_BATCH", "date"),
        (((aid(1), "metro", 3, "2026-\u0660\u0663-01"),), "BAD_BATCH", "date"),
        (((aid(1), "metro", 3, "01/03/2026"),), "BAD_BATCH", "01/03/2026"),
        (((aid(1), "metro", 3, 20260301),), "BAD_BATCH", "date"),
        # the privacy guard: only a keyed hash, never a phone number, name or raw id
        ((("13800138000", "metro", 3, "2026-03-01"),), "BAD_BATCH", "64 lowercase hex"),
        ((("Zhang San", "metro", 3, "2026-03-01"),), "BAD_BATCH", "64 lowercase hex"),
        (((aid(1).upper(), "metro", 3, "2026-03-01"),), "BAD_BATCH", "64 lowercase hex"),
        (((aid(1)[:63], "metro", 3, "2026-03-01"),), "BAD_BATCH", "64 lowercase hex"),
        (((aid(1) + "\n", "metro", 3, "2026-03-01"),), "BAD_BATCH", "64 lowercase hex"),
        (((b"\x00" * 32, "metro", 3, "2026-03-01"),), "BAD_BATCH", "64 lowercase hex"),
        # the wrong shape
        (((aid(1), "metro", 3),), "BAD_BATCH", "expected"),
        (((aid(1), "metro", 3, "2026-03-01", "Zhang San"),), "BAD_BATCH", "expected"),
        (
            ({"action_id": aid(1), "type": "metro", "qty": 3, "date": "2026-03-01"},),
            "BAD_BATCH",
            "expected",
        ),
        ((aid(1),), "BAD_BATCH", "expected"),
        ((), "BAD_BATCH", "at least one"),
        ("not a list", "BAD_BATCH", "at least one"),
    ],
)
def test_bad_batch_is_refused_and_changes_nothing(records, code, needle):
    m = _batch_market()
    # a good record first: nothing of a batch with one bad record is kept
    good = (aid(99), "metro", 40, "2026-03-01")
    recs = ((good,) + tuple(records)) if isinstance(records, tuple) and records else records
    msg = m.rejects(
        SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=recs), code, needle
    )
    if isinstance(records, tuple) and records:
        assert "record 1" in msg
    assert "13800138000" not in msg and "Zhang San" not in msg  # never echoed back
    assert m.reg.batches == {} and m.reg.claimed == {}
    # and the good record alone goes through afterwards
    evs = m.ok(SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=(good,)))
    assert of(evs, ActionBatchSubmitted)[0].reduction_t == 2  # 40 km x 50,000 g = 2 t


def test_bad_batch_envelope():
    m = _batch_market()
    rec = (aid(1), "metro", 3, "2026-03-01")
    m.rejects(
        SubmitActionBatch(platform_id="NOPE", vintage=2026, records=(rec,)),
        "UNKNOWN_PLATFORM",
        "NOPE",
    )
    m.rejects(
        SubmitActionBatch(platform_id="A", vintage=2026, records=(rec,)), "UNKNOWN_PLATFORM"
    )  # a firm is not a platform
    m.rejects(
        SubmitActionBatch(platform_id="PLAT1", vintage=2029, records=(rec,)),
        "UNKNOWN_INSTRUMENT",
        "2029",
    )
    m.rejects(SubmitActionBatch(platform_id="PLAT1", vintage=0, records=(rec,)), "BAD_BATCH")
    m.rejects(SubmitActionBatch(platform_id="PLAT1", vintage="2026", records=(rec,)), "BAD_BATCH")
    m.rejects(ApproveActionBatch(batch_id="PLAT1-000001", verifier="V1"), "UNKNOWN_BATCH")


def test_batch_of_a_million_and_one_records():
    m = _batch_market()
    rec = (aid(1), "metro", 3, "2026-03-01")
    records = (rec,) * 1_000_001  # one tuple object, a million and one references
    t0 = time.perf_counter()
    m.rejects(
        SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=records),
        "BAD_BATCH",
        "at most 1,000,000 records",
        "1,000,001",
        "split",
    )
    assert time.perf_counter() - t0 < 5
    assert m.reg.batches == {} and m.reg.claimed == {}


# ================================================================ 6. carbon-inclusive
def test_carbon_inclusive_issuance_and_compliance_eligibility():
    m = Reg()
    m.platform("PLAT1")
    evs = m.ok(SetConversionFactor(action_type="metro", unit="km", g_co2e_per_unit=40_000))
    assert evs[0].version == 1
    evs = m.ok(SetConversionFactor(action_type="metro", unit="km", g_co2e_per_unit=50_000))
    assert evs[0].version == 2 and m.reg.table["metro"] == ["km", 50_000, 2]
    m.ok(SetConversionFactor(action_type="bike", unit="km", g_co2e_per_unit=21_000))
    assert m.reg.table_version == 3
    # 50,000 g x (30,000 + 15,500) km = 2,275,000,000 g; 21,000 g x 9,999 km = 209,979,000 g;
    # together 2,484,979,000 g = 2,484.979 t -> 2,484 t (never more than the reduction)
    recs = (
        (aid(1), "metro", 30_000, "2026-01-01"),
        (aid(2), "bike", 9_999, "2026-12-31"),
        (aid(3), "metro", 15_500, "2026-06-15"),
    )
    evs = m.ok(SubmitActionBatch(platform_id="PLAT1", vintage=2026, records=recs))
    assert of(evs, ActionBatchSubmitted) == [
        ActionBatchSubmitted("PLAT1-000001", "PLAT1", 2026, 3, 2_484, 3)
    ]
    batch = m.reg.batches["PLAT1-000001"]
    assert batch["reduction_g"] == 2_484_979_000 and batch["table_version"] == 3
    assert batch["totals"] == {"bike": [1, 9_999, 209_979_000], "metro": [2, 45_500, 2_275_000_000]}
    # a later table change does not re-price a batch already submitted
    m.ok(SetConversionFactor(action_type="metro", unit="km", g_co2e_per_unit=99_000))
    assert m.reg.batches["PLAT1-000001"]["table_version"] == 3
    # only a registered verifier approves; the platform and a firm are not verifiers
    for who in ("PLAT1", "A", ""):
        m.rejects(ApproveActionBatch(batch_id="PLAT1-000001", verifier=who), "NOT_A_VERIFIER")
        m.rejects(
            RejectActionBatch(batch_id="PLAT1-000001", verifier=who, reason="no"), "NOT_A_VERIFIER"
        )
    assert m.units("PLAT1", "PHCER-2026") == 0
    evs = m.ok(ApproveActionBatch(batch_id="PLAT1-000001", verifier="V1"))
    assert of(evs, ActionBatchDecided) == [
        ActionBatchDecided(
            "PLAT1-000001", "approved", "V1", 2_484, "PLAT1/PLAT1-000001/2026/1-2484"
        )
    ]
    assert [(e.serial, e.account, e.qty, e.origin) for e in of(evs, CreditsIssued)] == [
        ("PLAT1/PLAT1-000001/2026/1-2484", "PLAT1", 2_484, "carbon_inclusive")
    ]
    assert m.units("PLAT1", "PHCER-2026") == 2_484
    m.rejects(ApproveActionBatch(batch_id="PLAT1-000001", verifier="V1"), "BATCH_NOT_PENDING")
    m.rejects(
        RejectActionBatch(batch_id="PLAT1-000001", verifier="V1", reason="late"),
        "BATCH_NOT_PENDING",
    )
    tot = m.reg.totals_by_action_type()
    assert (tot["metro"]["g_co2e"], tot["bike"]["quantity"]) == (2_275_000_000, 9_999)
    # PHCER for compliance: not before it is declared CCER-equivalent
    m.trade("PLAT1", "A", "PHCER-2026", 300)
    assert m.serials("A", "PHCER-2026") == ["PLAT1/PLAT1-000001/2026/1-300"]
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="PHCER-2026", qty=100),
        "INELIGIBLE_OFFSET_TYPE",
        "PHCER",
    )
    m.rejects(DeclareOffsetClass(offset_type="CCER", ccer_equivalent=True), "BAD_PARAMETER")
    m.ok(DeclareOffsetClass(offset_type="PHCER", ccer_equivalent=True, operator="ops"))
    evs = m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="PHCER-2026", qty=150))
    assert [(e.serial, e.period) for e in of(evs, CreditsRetired)] == [
        ("PLAT1/PLAT1-000001/2026/1-150", 2026)
    ]
    # the PHCER sub-cap, 2 % of 10,000 t = 200 t, still holds
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="PHCER-2026", qty=51),
        "OFFSET_SUBCAP_EXCEEDED",
    )
    m.ok(
        SurrenderUnits(
            firm_id="A",
            period=2026,
            instrument="PHCER-2026",
            qty=50,
            serials=("PLAT1/PLAT1-000001/2026/251-300",),
        )
    )
    assert m.comp.record("A", 2026)["offsets_by_type"] == {"PHCER": 200}
    look = m.reg.lookup("PLAT1/PLAT1-000001/2026/1-300")
    assert look["retired_units"] == 200
    assert {r["period"] for b in look["blocks"] for r in b["retirements"]} == {2026}
    # withdrawn again: refused again
    m.ok(DeclareOffsetClass(offset_type="PHCER", ccer_equivalent=False))
    m.rejects(
        SurrenderUnits(firm_id="B", period=2026, instrument="PHCER-2026", qty=1),
        "INELIGIBLE_OFFSET_TYPE",
    )
    # a batch with too small a reduction is approved with nothing to issue
    evs = m.ok(
        SubmitActionBatch(
            platform_id="PLAT1", vintage=2026, records=((aid(9), "bike", 47, "2026-02-02"),)
        )
    )
    assert of(evs, ActionBatchSubmitted)[0].reduction_t == 0  # 987,000 g < 1 t
    evs = m.ok(ApproveActionBatch(batch_id="PLAT1-000002", verifier="V1"))
    ad = of(evs, ActionBatchDecided)[0]
    assert (ad.issued, ad.serial) == (0, "") and not of(evs, CreditsIssued)


def test_registry_not_configured():
    m = Reg(configure=False, mrv=False)
    m.rejects(
        IssueCredits(
            account="A", instrument="CCER-2026", issuer="CCER", project="P1", first=1, last=5
        ),
        "REGISTRY_NOT_CONFIGURED",
    )
    m.ok(IssueUnits(account="A", instrument="CCER-2026", qty=5))  # the old way, until then
    m.ok(ConfigureRegistry())
    m.rejects(ConfigureRegistry(), "BAD_PARAMETER", "configured")
    assert m.serials("A", "CCER-2026") == ["LEGACY/CCER-2026/2026/1-5"]


def test_legacy_is_reserved_everywhere():
    """LEGACY serials are the units outstanding when the registry was configured: nothing
    issued, imported or approved later may appear as one."""
    m = Reg(mrv=False)  # no legacy block exists here
    m.ok(
        RecordExternalCancellation(
            registry="OTHER",
            issuer="LEGACY",
            project="CCER-2026",
            vintage=2026,
            first=1,
            last=10,
            reference="X-9",
        )
    )
    m.rejects(
        ImportCredits(
            registry="OTHER",
            account="A",
            instrument="CCER-2026",
            issuer="LEGACY",
            project="CCER-2026",
            first=1,
            last=10,
        ),
        "BAD_PARAMETER",
        "LEGACY",
    )
    m.rejects(RegisterPlatform(platform_id="LEGACY"), "BAD_PARAMETER", "LEGACY")
    assert m.reg.blocks == []


@pytest.mark.parametrize(
    "kw, needle",
    [
        # one offset type for both pools: each pool would count the other's contributions, and a
        # reversal of one type would cancel the other's buffer credits
        ({"removal_types": (("natural", "RMN"), ("engineered", "RMN"))}, "RMN"),
        ({"removal_types": (("natural", "RMN"), ("natural", "RMX"))}, "natural"),
        ({"removal_types": (("natural", "PHCER"),)}, "PHCER"),
        ({"removal_types": (("forest", "RMN"),)}, "natural"),
        ({"buffer_bps": 10_001}, "buffer_bps"),
        ({"issuer": "A/B"}, "issuer"),
    ],
)
def test_configure_registry_refuses_mixed_pools(kw, needle):
    m = Reg(configure=False, mrv=False)
    m.rejects(ConfigureRegistry(**kw), "BAD_PARAMETER", needle)
    assert m.reg.params is None
