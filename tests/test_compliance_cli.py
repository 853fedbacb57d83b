"""``python -m exchange report ...`` reads the compliance state from the journal (snapshot +
replay) and prints the same figures the in-process read functions give."""
from __future__ import annotations

import asyncio
import json

from exchange.cli import main
from exchange.compliance import reports as R
from exchange.compliance.scenario import demo_period
from exchange.engine import build_exchange
from exchange.journal import CoreRunner, open_journal


def _journal_of(seq, path: str, snapshot_at: int) -> None:
    """Journal the scripted period's commands with their original timestamps."""
    async def go():
        box = [0]
        runner = CoreRunner(build_exchange(), open_journal(path), clock=lambda: box[0])
        await runner.start()
        for i, cmd in enumerate(seq.log, 1):
            box[0] = cmd.ts
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
    assert main(["report", "compliance", "--period", "2026", "--journal", path,
                 "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = json.loads(json.dumps(R.compliance_summary(ex, 2026)))
    assert got == want
    assert got["counts"] == {"compliant": 3, "non_compliant": 2}
    # STEEL1: 122,900 t, 118,180 surrendered; 50,000.00 + 4,720 x 85.37 x 3 CNY
    steel = {r["firm_id"]: r for r in got["firms"]}["STEEL1"]
    assert (steel["shortfall"], steel["penalty_fen"]) == (4_720, 125_883_920)
    assert main(["report", "firm", "STEEL1", "--period", "2026", "--journal", path,
                 "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "settlement.penalty,125883920" in out and "settlement.status,non_compliant" in out
    assert main(["report", "firm", "STEEL1", "--period", "2026", "--journal", path]) == 0
    assert "status: non_compliant" in capsys.readouterr().out
    assert main(["report", "what-if", "--period", "2026", "--journal", path,
                 "--cap-pct", "1", "--format", "json"]) == 0
    wi = json.loads(capsys.readouterr().out)
    assert wi["firms_exceeding"] == ["POWER1", "STEEL1"]
    assert main(["report", "firm", "NOPE", "--period", "2026", "--journal", path]) == 2


def test_demo_flag_runs_without_a_journal(capsys):
    assert main(["report", "compliance", "--period", "2026", "--demo"]) == 0
    assert "STEEL1" in capsys.readouterr().out
