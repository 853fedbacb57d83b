"""MRV by emission category: energy (fuels and electricity bought), process, natural.

Every figure is hand-computed in the comments; the worked example of docs/COMPLIANCE.md is read
from the document and checked here. The obligation counts the covered categories only
(``covered_categories``, default energy + process), the rest is verified and reported; old
commands, journals and snapshots without the new fields give the same state as before.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from pathlib import Path

import pytest

from exchange.cli import main
from exchange.compliance import mrv
from exchange.present import present
from exchange.compliance import reports as R
from exchange.compliance.commands import (
    ActivityDataSubmitted,
    ConfigureCompliance,
    EmissionsVerified,
    ProcessComplianceDeadline,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from exchange.compliance.config import ComplianceConfig, compliance_commands
from exchange.app.config import load_settings
from exchange.core.commands import decode_command, encode_command
from exchange.core.events import EVENT_TYPES, encode_event
from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, open_journal

from test_compliance import DEADLINE, base_market, firm
from test_server import OPERATOR, POWER, op, running_server
from test_input_bounds import U64, ws_call

ROOT = Path(__file__).resolve().parent.parent
COEF = {"coal": 747_600, "natural_gas": 443_500, "oil": 582_500}
GRID = 570_300  # 0.5703 t CO2/MWh
NEW_COMMAND_FIELDS = {
    "submit_activity_data": ("electricity_mwh", "natural_emissions"),
    "configure_compliance": ("grid_factor_ppm", "covered_categories"),
}

# coal 10,000 tce: 10,000 x 0.7476 = 7,476 t C x 44/12 = 27,412 t CO2
# electricity 12,345 MWh x 0.5703 = 7,040.3535 -> 7,040 t CO2
# energy 34,452; process 500; natural 1,250; total 36,202; energy + process 34,952
ROW1 = dict(
    fuels=(("coal", 10_000),),
    electricity_mwh=12_345,
    process_emissions=500,
    natural_emissions=1_250,
    output=100_000,
)


def covered_market(covered=("energy", "process"), grid=GRID):
    """test_compliance's market, with the compliance parameters issued again with the given
    covered categories and grid factor (a later configure_compliance replaces the first)."""
    m = base_market()
    m.ok(_configure(covered, grid))
    firm(m, "A", cash=10**9, CEA_2026=40_000)
    firm(m, "FARM", size_class="sme", CEA_2026=5_000)
    return m


def _configure(covered, grid=GRID) -> ConfigureCompliance:
    return ConfigureCompliance(
        carbon_coefficients_ppm=tuple(sorted(COEF.items())),
        co2_per_c=(44, 12),
        offset_types=("CCER", "PHCER"),
        banking=True,
        penalty_mode="both",
        penalty_fixed_fine=5_000_000,
        penalty_multiple_ppm=3_000_000,
        late_fine=1_000_000,
        grid_factor_ppm=grid,
        covered_categories=tuple(covered),
    )


# =========================================================================== arithmetic
def test_category_arithmetic_hand_computed():
    c = (44, 12)
    assert mrv.electricity_emissions(12_345, GRID) == 7_040  # 7,040.3535
    assert mrv.electricity_emissions(1_000, GRID) == 570  # 570.3
    assert mrv.electricity_emissions(5_000, GRID) == 2_852  # 2,851.5: half rounds up
    assert mrv.electricity_emissions(1, 500_000) == 1  # 0.5 -> 1
    assert mrv.electricity_emissions(1, 499_999) == 0
    assert mrv.electricity_emissions(0, GRID) == 0
    by = mrv.category_emissions([("coal", 10_000)], 12_345, 500, 1_250, COEF, c, GRID)
    assert by == {
        "fuels": 27_412,
        "electricity": 7_040,
        "energy": 34_452,
        "process": 500,
        "natural": 1_250,
        "total": 36_202,
    }
    assert mrv.covered_emissions(by, mrv.DEFAULT_COVERED) == 34_952
    assert mrv.covered_emissions(by, mrv.CATEGORIES) == 36_202
    assert mrv.covered_emissions(by, ("natural",)) == 1_250
    # fuels are still rounded once over their exact sum, separately from electricity: 1 tce of
    # coal is 2.7412 t, 1 MWh 0.5703 t; each part rounds on its own (3 + 1), the parts add up
    by = mrv.category_emissions([("coal", 1)], 1, 0, 0, COEF, c, GRID)
    assert (by["fuels"], by["electricity"], by["energy"]) == (3, 1, 4)
    # today's figures are unchanged: no electricity, no natural emissions
    assert mrv.emissions([("coal", 10_000)], 500, COEF, c) == (27_412, 27_912)


def _doc_rows():
    text = (ROOT / "docs" / "COMPLIANCE.md").read_text()
    block = text.split("<!-- mrv-categories-example -->")[1].split(
        "<!-- /mrv-categories-example -->"
    )[0]
    rows = [ln for ln in block.strip().splitlines()[2:] if ln.startswith("|")]
    assert len(rows) == 4
    for ln in rows:
        cells = [x.strip().strip("*").replace(",", "") for x in ln.strip("|").split("|")]
        yield cells[0], [int(x) for x in cells[1:]]


def _activity(text: str) -> dict:
    """'coal 10000 tce; electricity 12345 MWh; process 500 t; natural 1250 t' -> fields."""
    out = {"fuels": [], "electricity_mwh": 0, "process_emissions": 0, "natural_emissions": 0}
    for part in text.split(";"):
        name, qty, unit = re.fullmatch(r"\s*(\w+) (\d+) (tce|MWh|t)\s*", part).groups()
        if unit == "tce":
            out["fuels"].append((name, int(qty)))
        elif name == "electricity":
            out["electricity_mwh"] = int(qty)
        else:
            out[f"{name}_emissions"] = int(qty)
    out["fuels"] = tuple(sorted(out["fuels"]))
    return out


def test_worked_example_in_the_docs():
    """Each row of the table in docs/COMPLIANCE.md, through the arithmetic and through the core
    under both rules: the default (energy + process) and all three categories covered."""
    for activity, want in _doc_rows():
        a = _activity(activity)
        by = mrv.category_emissions(
            a["fuels"],
            a["electricity_mwh"],
            a["process_emissions"],
            a["natural_emissions"],
            COEF,
            (44, 12),
            GRID,
        )
        got = [
            by["fuels"],
            by["electricity"],
            by["energy"],
            by["process"],
            by["natural"],
            by["total"],
            mrv.covered_emissions(by, mrv.DEFAULT_COVERED),
            mrv.covered_emissions(by, mrv.CATEGORIES),
        ]
        assert got == want, activity
        for covered, obligation in ((mrv.DEFAULT_COVERED, want[6]), (mrv.CATEGORIES, want[7])):
            m = covered_market(covered)
            m.ok(SubmitActivityData(firm_id="A", period=2026, **a))
            m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
            assert m.comp.obligation("A", 2026) == obligation, (activity, covered)


# =========================================================================== the core
def test_submission_records_each_category_and_the_obligation_sums_the_covered():
    m = covered_market()
    evs = m.ok(SubmitActivityData(firm_id="A", period=2026, **ROW1))
    sub = [e for e in evs if isinstance(e, ActivityDataSubmitted)][0]
    assert (
        sub.fuel_emissions,
        sub.electricity_mwh,
        sub.electricity_emissions,
        sub.energy_emissions,
        sub.process_emissions,
        sub.natural_emissions,
        sub.emissions,
        sub.covered_categories,
        sub.covered_emissions,
    ) == (27_412, 12_345, 7_040, 34_452, 500, 1_250, 36_202, ("energy", "process"), 34_952)
    rec = m.comp.record("A", 2026)
    assert (rec["emissions"], rec["covered_emissions"], rec["grid_factor_ppm"]) == (
        36_202,
        34_952,
        GRID,
    )
    assert m.comp.obligation("A", 2026) == 0  # pending: no obligation yet
    evs = m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    ver = [e for e in evs if isinstance(e, EmissionsVerified)][0]
    assert (
        ver.emissions,
        ver.obligation,
        ver.fuel_emissions,
        ver.electricity_emissions,
        ver.energy_emissions,
        ver.process_emissions,
        ver.natural_emissions,
        ver.covered_categories,
        ver.covered_emissions,
    ) == (36_202, 34_952, 27_412, 7_040, 34_452, 500, 1_250, ("energy", "process"), 34_952)
    assert m.comp.obligation("A", 2026) == 34_952
    # the natural 1,250 t create no obligation: surrendering past 34,952 t is refused
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=34_952))
    m.rejects(
        SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=1), "EXCEEDS_OBLIGATION"
    )
    # the rules module was told the covered emissions (the scope of the allocation)
    assert m.ex.modules["rules"].verified[2026]["A"] == [34_952, 100_000]
    m.ex.check_invariants()


@pytest.mark.parametrize(
    "covered,obligation",
    [
        (("energy", "process"), 34_952),  # the default: today's rule
        (("energy", "process", "natural"), 36_202),
        (("energy",), 34_452),
        (("process", "natural"), 1_750),
        (("natural",), 1_250),
    ],
)
def test_covered_categories_change_the_obligation(covered, obligation):
    m = covered_market(covered)
    m.ok(SubmitActivityData(firm_id="A", period=2026, **ROW1))
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    assert m.comp.obligation("A", 2026) == obligation
    st = R.firm_statement(m.ex, "A", 2026)
    b = st["emissions_by_category"]
    assert [b[c]["covered"] for c in mrv.CATEGORIES] == [c in covered for c in mrv.CATEGORIES]
    assert (b["total"], b["covered_total"], b["not_covered_total"]) == (
        36_202,
        obligation,
        36_202 - obligation,
    )
    assert st["obligation"]["verified_emissions"] == st["obligation"]["total"] == obligation


def test_natural_emissions_alone_make_an_obligation_only_where_covered():
    """A farm (natural 4,000 t) owes nothing by default, 4,000 t where natural is covered; an
    uncovered firm with nothing to surrender is compliant at the deadline."""
    for covered, owed, status in (
        (mrv.DEFAULT_COVERED, 0, "compliant"),
        (mrv.CATEGORIES, 4_000, "non_compliant"),
    ):
        m = covered_market(covered)
        m.ok(SubmitActivityData(firm_id="FARM", period=2026, natural_emissions=4_000))
        m.ok(VerifyEmissions(firm_id="FARM", period=2026, verifier="V1"))
        assert m.comp.obligation("FARM", 2026) == owed
        m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
        st = R.firm_statement(m.ex, "FARM", 2026)
        assert st["status"] == status and st["settlement"]["shortfall"] == owed
        assert st["emissions_by_category"]["natural"] == {"emissions": 4_000, "covered": owed > 0}


def test_a_later_rule_never_rewrites_a_submission_already_made():
    """The covered categories and the grid factor in force at submission stay with it."""
    m = covered_market()
    m.ok(SubmitActivityData(firm_id="A", period=2026, **ROW1))
    m.ok(_configure(mrv.CATEGORIES, grid=600_000))
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    assert m.comp.obligation("A", 2026) == 34_952
    # a new submission (FARM) is made under the new rule: 5,000 MWh x 0.6 = 3,000 t, natural
    # covered
    m.ok(
        SubmitActivityData(firm_id="FARM", period=2026, electricity_mwh=5_000, natural_emissions=10)
    )
    m.ok(VerifyEmissions(firm_id="FARM", period=2026, verifier="V1"))
    assert m.comp.obligation("FARM", 2026) == 3_010


def test_defaults_keep_todays_obligations():
    """A submission without the new fields is today's: coal 10,000 tce + 500 t = 27,912 t."""
    m = covered_market()
    evs = m.ok(
        SubmitActivityData(
            firm_id="A", period=2026, fuels=(("coal", 10_000),), process_emissions=500
        )
    )
    sub = evs[0]
    assert (
        sub.emissions,
        sub.covered_emissions,
        sub.electricity_emissions,
        sub.natural_emissions,
    ) == (27_912, 27_912, 0, 0)
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    assert m.comp.obligation("A", 2026) == 27_912
    # an event without the new fields (as an older server sent it) still decodes
    d = encode_event(sub)
    old = {
        k: d[k]
        for k in (
            "firm_id",
            "period",
            "version",
            "fuel_emissions",
            "process_emissions",
            "emissions",
            "output",
        )
    }
    assert EVENT_TYPES["activity_data_submitted"](**old).covered_categories == ()
    old = {
        "firm_id": "A",
        "period": 2026,
        "verifier": "V1",
        "emissions": 27_912,
        "obligation": 27_912,
    }
    assert EVENT_TYPES["emissions_verified"](**old).natural_emissions == 0


def test_bad_category_data_and_parameters_are_refused():
    m = covered_market()
    for kw in (
        {"electricity_mwh": -1},
        {"natural_emissions": -5},
        {"electricity_mwh": "10"},
        {"natural_emissions": 1.5},
        {"electricity_mwh": True},
    ):
        m.rejects(SubmitActivityData(firm_id="A", period=2026, **kw), "BAD_ACTIVITY_DATA")
    for covered in ((), ("energy", "energy"), ("scope3",), "energy"):
        m.rejects(_configure(covered), "BAD_PARAMETER")
    m.rejects(_configure(mrv.DEFAULT_COVERED, grid=-1), "BAD_PARAMETER")
    m.rejects(_configure(mrv.DEFAULT_COVERED, grid=10_000_001), "BAD_PARAMETER")
    m.ok(_configure(mrv.DEFAULT_COVERED, grid=10_000_000))
    m.rejects(_configure(mrv.DEFAULT_COVERED, grid="0.5703"), "BAD_PARAMETER")


# =========================================================================== config
def test_config_grid_factor_and_covered_categories():
    s = load_settings()
    cfg = s.compliance
    assert (cfg.grid_factor_t_per_mwh, cfg.covered_categories) == ("0.5703", ["energy", "process"])
    c = compliance_commands(cfg)[0]
    assert (c.grid_factor_ppm, c.covered_categories) == (570_300, ("energy", "process"))
    # listed in any order, kept in one canonical order
    c = compliance_commands(ComplianceConfig(covered_categories=["natural", "energy"]))[0]
    assert c.covered_categories == ("energy", "natural")
    c = compliance_commands(ComplianceConfig(grid_factor_t_per_mwh="0.000001"))[0]
    assert c.grid_factor_ppm == 1
    for bad in (
        {"grid_factor_t_per_mwh": "0.12345678"},
        {"grid_factor_t_per_mwh": "-0.5"},
        {"grid_factor_t_per_mwh": "1E+9999"},
        {"grid_factor_t_per_mwh": "abc"},
        {"grid_factor_t_per_mwh": "10.000001"},
        {"covered_categories": []},
        {"covered_categories": ["energy", "energy"]},
        {"covered_categories": ["indirect"]},
    ):
        with pytest.raises(ValueError):
            ComplianceConfig(**bad)


# =========================================================================== replay, snapshots
def _strip_new_fields(cmd):
    """The command as a journal written before emission categories holds it."""
    d = encode_command(cmd)
    for f in NEW_COMMAND_FIELDS.get(d["type"], ()):
        d.pop(f)
    return decode_command(d)


def _old_snapshot(state: dict) -> dict:
    """A state as a snapshot from before emission categories holds it."""
    s = copy.deepcopy(state)
    comp = s["modules"]["compliance"]
    for k in ("grid_factor_ppm", "covered_categories"):
        comp["params"].pop(k)
    for periods in comp["records"].values():
        for r in periods.values():
            for k in (
                "electricity_mwh",
                "grid_factor_ppm",
                "electricity_emissions",
                "natural_emissions",
                "covered_categories",
                "covered_emissions",
            ):
                r.pop(k)
    return s


def _todays_period():
    """A period with today's inputs only (fuels, process), a rejection, a rules true-up that
    adds obligation, surrenders and the deadline."""
    m = base_market()
    firm(m, "A", cash=10**9, CEA_2026=30_000)
    firm(m, "B", cash=10**9, CEA_2026=1_000)
    firm(m, "C")
    m.ok(
        SubmitActivityData(
            firm_id="A", period=2026, fuels=(("coal", 10_000),), process_emissions=500, output=1_000
        )
    )
    m.ok(
        SubmitActivityData(firm_id="B", period=2026, fuels=(("oil", 5_000), ("natural_gas", 3_000)))
    )
    m.ok(SubmitActivityData(firm_id="C", period=2026, process_emissions=40))
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    m.ok(VerifyEmissions(firm_id="B", period=2026, verifier="V1"))
    m.ok(SurrenderUnits(firm_id="A", period=2026, instrument="CEA-2026", qty=27_912))
    m.comp.add_obligation("C", 2027, 5)  # a record made without a submission
    return m


def test_old_journal_and_old_snapshot_give_the_same_state():
    m = _todays_period()
    log = list(m.seq.log)
    # today's inputs give today's obligations
    assert (m.comp.obligation("A", 2026), m.comp.obligation("B", 2026)) == (27_912, 15_558)
    # an old journal (commands without the new fields) replays to the same state
    old = build_exchange()
    for cmd, seq, ts in log:
        old.apply(_strip_new_fields(cmd), seq, ts)
    old.modules["compliance"].add_obligation("C", 2027, 5)
    assert old.state_hash() == m.ex.state_hash()
    # an old snapshot (records and parameters without the new keys) loads to the same state
    snap = build_exchange()
    snap.load_state(json.loads(json.dumps(_old_snapshot(m.ex.to_state()))))
    assert snap.state_hash() == m.ex.state_hash()
    # ... and the market goes on from it the same way: the deadline, on both
    later = ProcessComplianceDeadline(period=2026)
    seq = m.ex.last_seq + 1
    assert [encode_event(e) for e in snap.apply(later, seq, DEADLINE)] == [
        encode_event(e) for e in m.ex.apply(later, seq, DEADLINE)
    ]
    assert snap.state_hash() == m.ex.state_hash()


def test_snapshot_and_replay_round_trip_with_categories():
    """A state with every category: a snapshot taken half-way plus the rest of the log gives
    the state hash of the whole log, in process and through the SQLite journal."""
    m = covered_market(mrv.CATEGORIES)
    firm(m, "B", cash=10**9, CEA_2026=3_000)
    m.ok(SubmitActivityData(firm_id="A", period=2026, **ROW1))
    half = m.ex.snapshot()
    cut = len(m.seq.log)
    m.ok(
        SubmitActivityData(
            firm_id="B",
            period=2026,
            electricity_mwh=5_000,
            natural_emissions=7,
            fuels=(("coal", 1_000),),
        )
    )
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    m.ok(VerifyEmissions(firm_id="B", period=2026, verifier="V1"))
    m.ok(SurrenderUnits(firm_id="B", period=2026, instrument="CEA-2026", qty=3_000))
    m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
    assert m.comp.obligation("B", 2026) == 2_741 + 2_852 + 7
    ex = build_exchange()
    ex.restore(half)
    for cmd, seq, ts in m.seq.log[cut:]:
        ex.apply(decode_command(json.loads(json.dumps(encode_command(cmd)))), seq, ts)
    assert ex.state_hash() == m.ex.state_hash()
    full = build_exchange()
    for cmd, seq, ts in m.seq.log:
        full.apply(decode_command(json.loads(json.dumps(encode_command(cmd)))), seq, ts)
    assert full.state_hash() == m.ex.state_hash()


# =========================================================================== statements, reports
def _categories_period():
    m = covered_market()
    m.ok(SubmitActivityData(firm_id="A", period=2026, **ROW1))
    m.ok(
        SubmitActivityData(
            firm_id="FARM", period=2026, natural_emissions=4_000, electricity_mwh=5_000
        )
    )
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    m.ok(VerifyEmissions(firm_id="FARM", period=2026, verifier="V1"))
    return m


def test_statement_shows_the_breakdown():
    m = _categories_period()
    st = R.firm_statement(m.ex, "A", 2026)
    assert st["emissions_by_category"] == {
        "energy": {
            "emissions": 34_452,
            "covered": True,
            "fuels": 27_412,
            "electricity": 7_040,
            "electricity_mwh": 12_345,
        },
        "process": {"emissions": 500, "covered": True},
        "natural": {"emissions": 1_250, "covered": False},
        "total": 36_202,
        "covered_total": 34_952,
        "not_covered_total": 1_250,
        "covered_categories": ["energy", "process"],
        "verified": True,
    }
    sub = st["submission"]
    assert (
        sub["electricity_mwh"],
        sub["grid_factor_t_co2_per_mwh"],
        sub["electricity_emissions_t_co2_exact"],
        sub["electricity_emissions"],
        sub["natural_emissions"],
        sub["emissions"],
        sub["covered_emissions"],
    ) == (12_345, "0.5703", "7040353500/1000000", 7_040, 1_250, 36_202, 34_952)
    assert st["obligation"] == {
        "verified_emissions": 34_952,
        "added_by_rules": 0,
        "total": 34_952,
        "covered_categories": ["energy", "process"],
    }
    text = R.statement_text(st)
    for line in (
        "electricity       12345 MWh x 0.5703 t CO2/MWh",
        "energy       34452 t (fuels 27412 + electricity 7040)  covered",
        "process        500 t  covered",
        "natural       1250 t  not covered",
        "total        36202 t CO2e; covered 34952 t, not covered 1250 t",
        "Obligation: 34952 t (verified 34952 in energy + process",
    ):
        assert line in text, (line, text)
    csv = R.statement_csv(st)
    assert "emissions_by_category.natural.covered,False" in csv
    assert "emissions_by_category.energy.electricity,7040" in csv
    # a firm without a record: zeros, labelled with the market's covered categories
    firm(m, "D")
    b = R.firm_statement(m.ex, "D", 2026)["emissions_by_category"]
    assert (b["total"], b["energy"]["covered"], b["natural"]["covered"], b["verified"]) == (
        0,
        True,
        False,
        False,
    )


def test_summary_and_report_show_the_breakdown(capsys, tmp_path):
    m = _categories_period()
    sm = R.compliance_summary(m.ex, 2026)
    rows = {r["firm_id"]: r for r in sm["firms"]}
    a, farm = rows["A"], rows["FARM"]
    assert (
        a["energy_fuels"],
        a["energy_electricity"],
        a["energy"],
        a["process"],
        a["natural"],
        a["emissions"],
        a["covered_emissions"],
        a["obligation"],
    ) == (27_412, 7_040, 34_452, 500, 1_250, 36_202, 34_952, 34_952)
    # FARM: 5,000 MWh -> 2,852 t (2,851.5, half up); natural 4,000 not covered
    assert (farm["energy"], farm["natural"], farm["emissions"], farm["obligation"]) == (
        2_852,
        4_000,
        6_852,
        2_852,
    )
    t = sm["totals"]
    assert (t["energy"], t["natural"], t["emissions"], t["covered_emissions"], t["obligation"]) == (
        37_304,
        5_250,
        43_054,
        37_804,
        37_804,
    )
    assert sm["covered_categories"] == ["energy", "process"]
    assert sm["grid_factor_t_co2_per_mwh"] == "0.5703"
    csv = R.summary_csv(sm).splitlines()
    assert csv[0].startswith(
        "firm_id,size_class,submission,emissions,energy_fuels,"
        "energy_electricity,energy,process,natural,covered_emissions,"
        "obligation"
    )
    assert csv[-1].startswith("TOTAL,,,43054,27412,9892,37304,500,5250,37804,37804")
    text = R.summary_text(sm)
    assert "covered: energy, process" in text
    assert re.search(r"A +27412 +7040 +34452 +500 +1250 +36202 +34952", text), text
    assert re.search(r"TOTAL +27412 +9892 +37304 +500 +5250 +43054 +37804", text), text
    # the CLI reads the same from the journal (snapshot half-way, then replay)
    path = str(tmp_path / "journal.sqlite")
    _journal(m.seq.log, path, snapshot_at=len(m.seq.log) - 2)
    assert (
        main(["report", "compliance", "--period", "2026", "--journal", path, "--format", "json"])
        == 0
    )
    # (in units for people, as the API answers: penalties in CNY, times ISO-8601)
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(present(sm)))
    assert main(["report", "compliance", "--period", "2026", "--journal", path]) == 0
    assert "Verified emissions by category" in capsys.readouterr().out
    assert main(["report", "firm", "A", "--period", "2026", "--journal", path]) == 0
    assert "natural       1250 t  not covered" in capsys.readouterr().out


def _journal(log, path: str, snapshot_at: int) -> None:
    async def go():
        box = [0]
        runner = CoreRunner(build_exchange(), open_journal(path), clock=lambda: box[0])
        await runner.start()
        for i, (cmd, _seq, ts) in enumerate(log, 1):
            box[0] = ts
            await runner.submit(cmd)
            if i == snapshot_at:
                await runner.snapshot()
        await runner.stop(snapshot=False)

    asyncio.run(go())


# =========================================================================== the served API
async def test_api_accepts_and_bounds_the_new_fields(tmp_path):
    async with running_server(tmp_path) as srv:
        sub = "/compliance/submissions"
        # POWER1 over HTTP: coal 10,000 tce, 12,345 MWh, process 500, natural 1,250
        st, js = await op(
            srv,
            "POST",
            sub,
            {
                "period": 2026,
                "fuels": {"coal": 10_000},
                "electricity_mwh": 12_345,
                "process_emissions": 500,
                "natural_emissions": 1_250,
                "output": 100,
            },
            POWER,
        )
        assert st == 200, js
        ev = js["events"][0]
        assert (
            ev["electricity_emissions"],
            ev["natural_emissions"],
            ev["emissions"],
            ev["covered_emissions"],
        ) == (7_040, 1_250, 36_202, 34_952)
        # out of range, or not an integer: 422 before anything is journaled
        for body in (
            {"electricity_mwh": U64},
            {"natural_emissions": 2**62},
            {"electricity_mwh": "5"},
            {"natural_emissions": 1.5},
            {"electricity_mwh": 10**15 + 1},
        ):
            st, js = await op(srv, "POST", sub, {"period": 2026, "firm_id": "CEMENT1", **body})
            assert st == 422 and js["error"]["code"] == "INVALID_PARAMS", (body, js)
        # the sign is the core's: BAD_ACTIVITY_DATA
        st, js = await op(
            srv, "POST", sub, {"period": 2026, "firm_id": "CEMENT1", "electricity_mwh": -1}
        )
        assert st == 400 and js["error"]["code"] == "BAD_ACTIVITY_DATA", js
        # an operator acting for a firm; the verifier queue shows the breakdown
        st, js = await op(
            srv,
            "POST",
            sub,
            {
                "period": 2026,
                "firm_id": "CEMENT1",
                "natural_emissions": 4_000,
                "electricity_mwh": 5_000,
            },
        )
        assert st == 200, js
        st, q = await op(
            srv, "GET", "/compliance/periods/2026/submissions", key="verifier-demo-key"
        )
        cement = {x["firm_id"]: x for x in q["submissions"]}["CEMENT1"]
        assert (
            cement["electricity_emissions"],
            cement["natural_emissions"],
            cement["emissions"],
            cement["covered_emissions"],
        ) == (2_852, 4_000, 6_852, 2_852)
        assert cement["by_category"]["natural"] == {"emissions": 4_000, "covered": False}
        # the websocket method takes the new fields too, with the same bounds
        r = await ws_call(
            srv,
            "demo-key-steel1",
            "submit_activity_data",
            {"period": 2026, "electricity_mwh": 1_000, "natural_emissions": 3},
        )
        assert r["ok"] is True, r
        ev = r["result"]["events"][0]
        assert (ev["electricity_emissions"], ev["emissions"], ev["covered_emissions"]) == (
            570,
            573,
            570,
        )
        r = await ws_call(
            srv,
            "demo-key-steel1",
            "submit_activity_data",
            {"period": 2026, "natural_emissions": U64},
        )
        assert r["ok"] is False and r["error"]["code"] == "INVALID_PARAMS", r
        # verify POWER1; its statement over HTTP shows the breakdown
        st, js = await op(
            srv,
            "POST",
            "/compliance/submissions/POWER1/2026/verify",
            {"verifier": "VERIFIER1"},
            "verifier-demo-key",
        )
        assert st == 200, js
        st, sm = await op(srv, "GET", "/compliance/statements/POWER1/2026", key=POWER)
        assert st == 200
        b = sm["emissions_by_category"]
        assert (
            b["energy"]["fuels"],
            b["energy"]["electricity"],
            b["process"]["emissions"],
            b["natural"],
            b["covered_total"],
        ) == (27_412, 7_040, 500, {"emissions": 1_250, "covered": False}, 34_952)
        assert sm["obligation"]["total"] == 34_952
        st, summ = await op(srv, "GET", "/compliance/periods/2026/summary", key=OPERATOR)
        assert {r["firm_id"]: r["natural"] for r in summ["firms"]}["POWER1"] == 1_250
        # the OpenAPI document describes the new fields
        st, doc = await op(srv, "GET", "/openapi.json", key=None)
        assert "electricity_mwh" in json.dumps(doc) and "natural_emissions" in json.dumps(doc)
