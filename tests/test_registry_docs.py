"""The worked removal example of docs/COMPLIANCE.md ("Emission categories and removals"), on
the demo market's FOREST-YN1 project, figure for figure."""

from __future__ import annotations

from exchange.app.config import load_settings
from exchange.core.events import CommandRejected
from exchange.app.engine import Sequencer
from exchange.app.market import genesis_commands
from exchange.registry.commands import ReportReversal, ReversalReported


def test_the_documented_reversals_of_forest_yn1():
    seq = Sequencer()
    seq.run(genesis_commands(load_settings()))
    ex = seq.ex
    reg = ex.modules["registry"]
    p = reg.projects["FOREST-YN1"]["vintages"]["2026"]
    assert (p["net_removal"], p["buffer"]) == (8_200, 1_640)
    assert reg.holdings("@buffer") == {"RMN-2026": ["CEX/FOREST-YN1/2026/1-1640"]}
    assert reg.holdings("POWER1")["RMN-2026"] == ["CEX/FOREST-YN1/2026/1641-8200"]

    evs = seq(ReportReversal(project_id="FOREST-YN1", qty=2_000, cause="fire"))
    [rep] = [e for e in evs if type(e) is ReversalReported]
    assert (rep.from_buffer, rep.from_project, rep.uncovered) == (1_640, 360, 0)
    assert reg.lookup("CEX/FOREST-YN1/2026/1641-2000")["retired_units"] == 360
    assert reg.holdings("POWER1")["RMN-2026"] == ["CEX/FOREST-YN1/2026/2001-8200"]

    evs = seq(ReportReversal(project_id="FOREST-YN1", qty=7_000, cause="fire"))
    assert not [e for e in evs if type(e) is CommandRejected]
    [rep] = [e for e in evs if type(e) is ReversalReported]
    assert (rep.from_buffer, rep.from_project, rep.uncovered) == (0, 6_200, 800)
    proj = reg.projects["FOREST-YN1"]
    assert (proj["reversed"], proj["from_buffer"], proj["from_project"], proj["uncovered"]) == (
        9_000,
        1_640,
        6_560,
        800,
    )
    assert reg.buffer["natural"] == [1_640, 1_640]
    reg.check()
    ex.check_invariants()
