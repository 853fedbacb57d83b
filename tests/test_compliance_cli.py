"""``python -m exchange report ...`` reads the compliance state from the journal (snapshot +
replay) and prints the same figures the in-process read functions give."""

from __future__ import annotations

import asyncio
import json
import re

from exchange.cli import main
from exchange.present import present
from exchange.compliance import reports as R
from exchange.app.compliance_demo import demo_period
from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, open_journal


def _journal_of(seq, path: str, snapshot_at: int) -> None:
    """Journal the scripted period's commands with their original timestamps."""

    async def go():
        box = [0]
        runner = CoreRunner(build_exchange(), open_journal(path), clock=lambda: box[0])
        await runner.start()
        for i, (cmd, _seq, ts) in enumerate(seq.log, 1):
            box[0] = ts
            await runner.submit(cmd)
            if i == snapshot_at:
                await runner.snapshot()
        await runner.stop(snapshot=False)

    asyncio.run(go())


def test_reports_from_the_journal_equal_the_live_state(tmp_path, capsys):
    seq = demo_period(sequencer=True)
    path = str(tmp_path / "journal.sqlite")
    _journal_of(seq, path, snapshot_at=len(seq.log) // 2)
    ex = seq.ex
    assert (
        main(["report", "compliance", "--period", "2026", "--journal", path, "--format", "json"])
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    want = json.loads(json.dumps(present(R.compliance_summary(ex, 2026))))
    assert got == want
    assert got["counts"] == {"compliant": 3, "non_compliant": 2}
    # STEEL1: 122,900 t, 118,180 surrendered; 50,000.00 + 4,720 x 85.39 x 3 CNY (the average
    # of the main board's trades: 1,000 t @ 85.40, 800 @ 85.50, 200 @ 84.90)
    steel = {r["firm_id"]: r for r in got["firms"]}["STEEL1"]
    assert (steel["shortfall"], steel["penalty"]) == (4_720, "1259122.40")
    assert (
        main(["report", "firm", "STEEL1", "--period", "2026", "--journal", path, "--format", "csv"])
        == 0
    )
    out = capsys.readouterr().out
    assert "settlement.penalty,1259122.40" in out and "settlement.status,non_compliant" in out
    assert main(["report", "firm", "STEEL1", "--period", "2026", "--journal", path]) == 0
    assert "status: non_compliant" in capsys.readouterr().out
    assert (
        main(
            [
                "report",
                "what-if",
                "--period",
                "2026",
                "--journal",
                path,
                "--cap-pct",
                "1",
                "--format",
                "json",
            ]
        )
        == 0
    )
    wi = json.loads(capsys.readouterr().out)
    assert wi["firms_exceeding"] == ["POWER1", "STEEL1"]
    assert (wi["proposed_cap_pct"], wi["current_cap_pct"]) == ("1.00", "5.00")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+08:00", wi["as_of_at"])
    assert main(["report", "firm", "NOPE", "--period", "2026", "--journal", path]) == 2


def test_demo_flag_runs_without_a_journal(capsys):
    assert main(["report", "compliance", "--period", "2026", "--demo"]) == 0
    assert "STEEL1" in capsys.readouterr().out


def test_firm_statement_shows_sub_quota_terms_and_grants(capsys):
    """The SME's and its core firm's statements carry the sub-quota terms, the period-end
    settlement and the SME fund's grants, in JSON, CSV, text and through ``report firm``."""
    from exchange.core.events import CommandRejected
    from exchange.rules.commands import PreAllocate, SettleSubQuotas

    seq = demo_period(sequencer=True)
    # the scripted period never opened 2026 in the rules module; settling needs it open
    for cmd in (PreAllocate(period=2026), SettleSubQuotas(period=2026)):
        assert not [e for e in seq(cmd) if isinstance(e, CommandRejected)]
    ex = seq.ex
    sme = R.firm_statement(ex, "SME1", 2026)
    # 300 t sold on the SME board at 85.20 (no fee): 2,556,000 fen, 70 % to the SME
    lot = {k: v for k, v in sme["sub_quotas"][0].items() if k != "created_seq"}
    assert lot == {
        "lot_id": 1,
        "role": "sme",
        "parent": "STEEL1",
        "sme": "SME1",
        "instrument": "CEA-2026",
        "period": 2026,
        "chain_id": "steelchain",
        "granted": 3000,
        "held": 200,
        "sold": 300,
        "revenue_share": "0.7",
        "revenue_share_ppm": 700_000,
        "surplus_rule": "revert",
        "shortfall_rule": "parent",
        "sme_proceeds_fen": 1_789_200,
        "parent_proceeds_fen": 766_800,
        # its last 200 t rest in a sell order: nothing free to revert
        "settlement": {
            "period": 2026,
            "surplus": 0,
            "action": "revert",
            "moved": 0,
            "reserved_left": 200,
        },
        "compliance": {"settled_period": 2026, "surrendered": 2500},
    }
    assert type(sme["sub_quotas"][0]["created_seq"]) is int
    assert [
        (a["project"], a["status"], a["amount_fen"]) for a in sme["sme_fund"]["applications"]
    ] == [("waste-heat recovery", "disbursed", 8_000_000)]
    assert sme["sme_fund"]["received_fen"] == 8_000_000
    # the core firm's statement: the same lot, split out
    steel = R.firm_statement(ex, "STEEL1", 2026)
    assert [
        (q["lot_id"], q["role"], q["sme"], q["revenue_share"]) for q in steel["sub_quotas"]
    ] == [(1, "parent", "SME1", "0.7")]
    text = R.statement_text(sme)
    for line in (
        "  Sub-quota #1 received from STEEL1 in chain steelchain: CEA-2026 granted 3000 t, "
        "held 200 t, sold 300 t",
        "    terms: SME keeps 70 % of proceeds (parent 30 %); surplus reverts to the parent; "
        "shortfall covered by the parent",
        "    proceeds: SME 17892.00 CNY, parent 7668.00 CNY",
        "    at the deadline: surrendered 2500 t",
        "    period end 2026: surplus 0 t reverted, 200 t in orders left",
        "  SME fund grant #1 disbursed: 80000.00 CNY for 'waste-heat recovery' (120 t abated)",
        "  SME fund: received 80000.00 CNY in grants for 2026",
    ):
        assert line in text.splitlines(), line
    assert (
        "  Sub-quota #1 split to SME1 in chain steelchain: CEA-2026 granted 3000 t, held "
        "200 t, sold 300 t" in R.statement_text(steel).splitlines()
    )
    sme2 = R.statement_text(R.firm_statement(ex, "SME2", 2026))
    assert (
        "    terms: SME keeps 50 % of proceeds (parent 50 %); surplus stays banked with the "
        "SME; shortfall borne by the SME"
    ) in sme2.splitlines()
    assert (
        "  SME fund grant #2 pending: 50000.00 CNY for 'kiln insulation' (60 t abated)"
        in sme2.splitlines()
    )
    rows = R.statement_csv(sme).splitlines()
    for row in (
        "sub_quotas[0].revenue_share,0.7",
        "sub_quotas[0].chain_id,steelchain",
        "sub_quotas[0].surplus_rule,revert",
        "sub_quotas[0].shortfall_rule,parent",
        "sub_quotas[0].settlement.reserved_left,200",
        "sme_fund.applications[0].project,waste-heat recovery",
        "sme_fund.received,80000.00",
    ):
        assert row in rows, row
    # the command line (--demo: the same scripted period, without the settlement)
    assert main(["report", "firm", "SME1", "--period", "2026", "--demo"]) == 0
    out = capsys.readouterr().out
    assert "Sub-quota #1 received from STEEL1 in chain steelchain" in out
    assert "SME fund grant #1 disbursed: 80000.00 CNY" in out
