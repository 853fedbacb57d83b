"""One scripted compliance period on the demo market (``report ... --demo``, docs examples).

Everything goes through ordinary commands on a :class:`~exchange.app.engine.Sequencer`, with
timestamps inside the period: the demo market of ``config/default.toml`` trades in 2026, the firms
submit activity data in February 2027, the verifier verifies, the firms surrender, the
operator runs deadline processing after the 2026 deadline, and the SME fund (fed by the
penalties) pays SME1 a grant while SME2's application is still pending.
"""

from __future__ import annotations

from .config import load_settings
from ..core.commands import EndOfDay, PlaceOrder
from ..core.events import CommandRejected
from .engine import Sequencer
from .market import genesis_commands
from ..compliance.commands import (
    ProcessComplianceDeadline,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from ..compliance.config import to_ns
from ..compliance.fund import ApplyForGrant, ApproveGrant, DisburseGrant

# (firm, fuels, process emissions, output, surrenders ((instrument, qty), ...))
DEMO_SUBMISSIONS = (
    # 70,000 tce coal x 0.7476 x 44/12 = 191,884 t
    (
        "POWER1",
        (("coal", 70_000),),
        0,
        10_000,
        (("CCER-2026", 5_000), ("CEA-2025", 20_000), ("CEA-2026", 166_884)),
    ),
    # 15,000 tce coal -> 41,118 t + 8,000 t process = 49,118 t
    ("CEMENT1", (("coal", 15_000),), 8_000, 1_000, (("CEA-2026", 49_118),)),
    # coal 40,000 + gas 2,000 tce -> 30,791 t C -> 112,900 t + 10,000 t process = 122,900 t;
    # surrenders 2,000 PHCER + 116,180 CEA-2026: 4,720 t short
    (
        "STEEL1",
        (("coal", 40_000), ("natural_gas", 2_000)),
        10_000,
        100,
        (("PHCER-2026", 2_000), ("CEA-2026", 116_180)),
    ),
    # SMEs: covered from their sub-quotas at the deadline
    ("SME1", (), 2_500, 50, ()),
    ("SME2", (), 2_400, 40, ()),
)


def demo_period(config: str | None = None, period: int = 2026, sequencer: bool = False):
    """Build the demo market and run one compliance period through it; return the exchange
    (or, with ``sequencer``, the :class:`Sequencer` whose ``log`` holds every command)."""
    settings = load_settings(config)
    seq = Sequencer(start_ts=to_ns(f"{period}-01-01"))
    ok = _checked(seq)
    for c in genesis_commands(settings):
        ok(c)
    for cmd in (
        PlaceOrder(
            account="CEMENT1",
            instrument=f"CEA-{period}",
            side="buy",
            price=8_550,
            qty=1_800,
            client_order_id="c-1",
        ),
        PlaceOrder(
            account="STEEL1",
            instrument=f"CEA-{period}",
            side="sell",
            price=8_480,
            qty=1_000,
            client_order_id="s-1",
        ),
        PlaceOrder(
            account="POWER1",
            instrument=f"CEA-{period}",
            segment="sme",
            side="buy",
            price=8_520,
            qty=300,
            client_order_id="p-1",
        ),
        EndOfDay(),
    ):
        ok(cmd)
    verifier = sorted(seq.ex.modules["compliance"].verifiers)[0]
    seq.ts = max(seq.ts, to_ns(f"{period + 1}-02-01"))
    for firm, fuels, process, output, _ in DEMO_SUBMISSIONS:
        ok(
            SubmitActivityData(
                firm_id=firm, period=period, fuels=fuels, process_emissions=process, output=output
            )
        )
    for firm, *_ in DEMO_SUBMISSIONS:
        ok(VerifyEmissions(firm_id=firm, period=period, verifier=verifier))
    for firm, *_, surrenders in DEMO_SUBMISSIONS:
        for sym, q in surrenders:
            ok(SurrenderUnits(firm_id=firm, period=period, instrument=sym, qty=q))
    deadline = seq.ex.modules["compliance"].periods[period]["deadline_ts"] or seq.ts
    seq.ts = max(seq.ts, deadline)
    ok(ProcessComplianceDeadline(period=period, operator="demo"))
    if "sme_fund" in seq.ex.modules and seq.ex.modules["sme_fund"].configured:
        # the penalties fed the SME fund: one grant paid, one application still pending, so
        # the SMEs' statements show the fund's side too
        app_id = ok(
            ApplyForGrant(
                sme="SME1",
                period=period,
                amount=8_000_000,
                project="waste-heat recovery",
                verified_abatement_t=120,
            )
        )[0].application_id
        ok(ApproveGrant(application_id=app_id, operator="demo"))
        ok(DisburseGrant(application_id=app_id, operator="demo"))
        ok(
            ApplyForGrant(
                sme="SME2",
                period=period,
                amount=5_000_000,
                project="kiln insulation",
                verified_abatement_t=60,
            )
        )
    seq.ex.check_invariants()
    return seq if sequencer else seq.ex


def _checked(seq: Sequencer):
    def ok(cmd):
        evs = seq(cmd)
        rej = [e for e in evs if isinstance(e, CommandRejected)]
        if rej:
            raise RuntimeError(f"demo period: {cmd.TYPE} rejected: {rej[0].code} {rej[0].message}")
        return evs

    return ok
