"""report.md says what an analyst must not take at face value: warnings at the top, costs on
the same allocation path, trends against the policy's goal; and it is reproducible."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from exchange.sim.report import findings, trends, write_report
from exchange.sim.runner import run_scenario
from exchange.sim.scenario import parse_scenario

SAVING = "saving vs no trade on the same allocation path"


def _healthy() -> dict:
    """Linear MACs, a fixed cap 10 % below business-as-usual and offsets cheaper than the
    allowance price: the market finds the least-cost price and clears every period."""
    return {
        "scenario": {"name": "healthy", "periods": 2, "seed": 3},
        "market": {
            "initial_price": 50.0,
            "rounds_per_period": 10,
            "settlement_rounds": 1,
            "levels": 7,
        },
        "allocation": {"mode": "fixed", "pre_ratio": 1.0, "reduction": 0.1},
        "offsets": {"enabled": True, "cap": 0.05, "price": 30.0},
        "rules": {"update_factors": False, "update_benchmarks": False},
        "sectors": [
            {
                "name": "industry",
                "intensity": 2.0,
                "firms": 12,
                "output_mean": 5000,
                "output_growth": 0.0,
                "output_growth_sd": 0.0,
                "mac": {
                    "kind": "linear",
                    "full_abatement_cost": 800.0,
                    "max_abatement_share": 0.9,
                    "dispersion": 0.5,
                },
            }
        ],
    }


def _over_allocated() -> dict:
    """Listed firms whose fixed allocation exceeds their baseline emissions."""
    firms = [
        {
            "id": f"F{i}",
            "sector": "industry",
            "baseline_emissions": 10_000 + 2_000 * i,
            "allocation": 10_500 + 2_000 * i,
            "mac": {
                "kind": "linear",
                "slope": 0.002 * (i + 1),
                "max_abatement_share": 0.9,
                "dispersion": 0.0,
            },
        }
        for i in range(6)
    ]
    return {
        "scenario": {
            "name": "over",
            "periods": 2,
            "seed": 1,
            "description": "Every firm is given more than it emits.",
        },
        "market": {"initial_price": 40.0, "rounds_per_period": 6, "settlement_rounds": 1},
        "allocation": {"mode": "fixed", "pre_ratio": 1.0},
        "offsets": {"enabled": False},
        "rules": {"update_factors": False, "update_benchmarks": False},
        "sectors": [
            {"name": "industry", "intensity": 2.0, "mac": {"kind": "linear", "slope": 0.01}}
        ],
        "firms": firms,
    }


@pytest.fixture(scope="module")
def healthy():
    return run_scenario(parse_scenario(_healthy()))


@pytest.fixture(scope="module")
def healthy_md(healthy, tmp_path_factory):
    out = tmp_path_factory.mktemp("healthy")
    write_report(healthy, out)
    return (out / "report.md").read_text()


def _head(md: str) -> list[str]:
    """The report's paragraphs between the title (and description) and the first section."""
    body = md.split("\n## ", 1)[0]
    return [p for p in body.split("\n\n")[1:] if p.strip()]


def test_over_allocation_gets_the_bau_warning(tmp_path):
    res = run_scenario(parse_scenario(_over_allocated()))
    assert all(p["allocation"] >= p["baseline_emissions"] for p in res.period_rows)
    write_report(res, tmp_path)
    md = (tmp_path / "report.md").read_text()
    head = _head(md)
    # the warnings come first, right under the title and description, before anything else
    assert head[0] == "Every firm is given more than it emits."
    assert head[1].startswith(
        "**Warning:** allocation at or above business-as-usual "
        "emissions in 2026, 2027: nothing needs abating, the price "
        "collapses"
    )
    assert "No warnings" not in md
    # nothing is traded, the price falls limit-down day after day and never clears
    warnings = [p for p in head if p.startswith("**Warning:**")]
    assert any("limit-locked trading days" in w and "2026: days" in w for w in warnings)
    assert any("the last period (2027) ended" in w for w in warnings)
    assert md.index("**Warning:**") < md.index("## Summary")


def test_healthy_run_has_no_warnings(healthy, healthy_md):
    rows = healthy.period_rows
    # the premise: the market met the least-cost price and cleared
    assert all(p["cleared"] and not p["limit_locked_days"] for p in rows)
    assert abs(rows[-1]["close_price"] / rows[-1]["least_cost_price"] - 1) < 0.05
    head = _head(healthy_md)
    assert head[0].startswith(
        "No warnings: checked allocation and allowances available vs business-as-usual emissions"
    )
    assert "**Warning:**" not in healthy_md
    assert findings(healthy)[0] == []
    assert "No trend against the policy's goal" in healthy_md


def test_saving_is_on_compliance_cost_and_the_cost_columns_are_shown(healthy, healthy_md):
    s = healthy.summary
    # offsets were bought, so compliance cost and abatement cost differ
    assert s["total_offset_cost"] > 0
    saving = (1 - s["total_compliance_cost"] / s["no_trade_compliance_cost"]) * 100
    on_abatement = (1 - s["total_abatement_cost"] / s["no_trade_abatement_cost"]) * 100
    assert f"{saving:.1f}" != f"{on_abatement:.1f}"
    m = re.search(rf"\*\*{SAVING}: ([0-9.]+) %", healthy_md)
    assert m and m.group(1) == f"{saving:.1f}"
    assert f"| {SAVING} | {saving:.1f} % |" in healthy_md
    # the summary table: abatement, offsets and total for market, least-cost and no trade
    assert (
        "| CNY, all periods | market | least-cost | no trade (same allocation path) |" in healthy_md
    )
    lc_o = sum(p["least_cost_offset_cost"] for p in healthy.period_rows)
    nt_o = sum(p["no_trade_offset_cost"] for p in healthy.period_rows)
    assert (
        f"| offset spending | {s['total_offset_cost']:,.0f} | {lc_o:,.0f} | {nt_o:,.0f} |"
    ) in healthy_md
    assert (
        f"| **total compliance cost** (abatement + offsets) | "
        f"{s['total_compliance_cost']:,.0f} | {s['least_cost_compliance_cost']:,.0f} | "
        f"{s['no_trade_compliance_cost']:,.0f} |"
    ) in healthy_md
    assert "| abatement cost | " in healthy_md and "| total vs least-cost | " in healthy_md
    # per period: close, least-cost and analytic price, trading and limit-locked days,
    # compliance cost against least-cost
    assert (
        "| period | close | least-cost p | analytic p* | close vs least-cost | VWAP | "
        "volume t | trading days | limit-locked days | cleared |"
    ) in healthy_md
    assert "| compliance cost | least-cost compliance | vs least-cost |" in healthy_md


def test_floating_allocation_total_is_flagged(tmp_path):
    d = {
        "scenario": {"name": "floating", "periods": 2, "seed": 4},
        "market": {"initial_price": 40.0, "rounds_per_period": 4, "settlement_rounds": 1},
        "rules": {"allocation_total": "floating"},
        "offsets": {"enabled": False},
        "sectors": [
            {
                "name": "steel",
                "intensity": 2.0,
                "firms": 10,
                "output_mean": 5000,
                "mac": {"kind": "linear", "full_abatement_cost": 800.0, "max_abatement_share": 0.5},
            }
        ],
    }
    res = run_scenario(parse_scenario(d))
    assert res.summary["allocation_total"] == "floating"
    write_report(res, tmp_path)
    head = _head((tmp_path / "report.md").read_text())
    line = next(p for p in head if "allocation total moves with φ" in p)
    assert line.startswith(
        "**Warning:** the allocation total moves with φ (opt-in): allocation was "
    )
    assert "t vs the benchmark total " in line


def _tweaked(res, **rows):
    r = copy.copy(res)
    r.period_rows = [dict(p) for p in res.period_rows]
    r.records = {k: v.copy() for k, v in res.records.items()}
    for k, vals in rows.items():
        for p, v in zip(r.period_rows, vals):
            p[k] = v
    return r


def test_trends_against_the_policy_goal(healthy):
    assert trends(healthy)[0] == []
    # the price halves while emissions rise
    p0 = healthy.period_rows[0]["close_price"]
    e0 = healthy.period_rows[0]["emissions"]
    r = _tweaked(healthy, close_price=[p0, p0 * 0.5], emissions=[e0, e0 + 1000])
    assert any(t.startswith("the price fell 50.0 %") for t in trends(r)[0])
    # ... but not when emissions fall with it
    r = _tweaked(healthy, close_price=[p0, p0 * 0.5], emissions=[e0, e0 - 1000])
    assert not any("price fell" in t for t in trends(r)[0])
    # a sector's verified intensity rises
    r = _tweaked(healthy)
    r.records["emissions"][-1] *= 1.02
    assert any(
        t.startswith("intensity of industry rose 2.0 %") and "against the policy's goal" in t
        for t in trends(r)[0]
    )
    # allocation factors at their bounds: 3 of 12 firms (25 %)
    r = _tweaked(healthy)
    rules = healthy.scenario.rules
    r.records["phi"][-1, :2] = rules.phi_max
    r.records["phi"][-1, 2] = rules.phi_min
    line = next(t for t in trends(r)[0] if "bounds" in t)
    assert "2 of 12 firms at φ_max" in line and "1 at φ_min" in line
    r.records["phi"][-1, :] = 1.0
    r.records["phi"][-1, 0] = rules.phi_max  # 1 of 12: under 10 %
    assert not any("bounds" in t for t in trends(r)[0])


def test_close_price_far_from_least_cost_and_price_cap_are_flagged(healthy):
    lc = healthy.period_rows[-1]["least_cost_price"]
    r = _tweaked(healthy, close_price=[healthy.period_rows[0]["close_price"], lc * 1.08])
    assert any(w.startswith("the final close price") and "+8.00 %" in w for w in findings(r)[0])
    r = _tweaked(healthy, price_at_cap=[False, True])
    assert any("reached the cap" in w for w in findings(r)[0])


def test_report_is_reproducible(healthy, tmp_path):
    again = run_scenario(parse_scenario(_healthy()))
    write_report(healthy, tmp_path / "a", command="python -m exchange simulate x")
    write_report(again, tmp_path / "b", command="python -m exchange simulate x")
    a = (tmp_path / "a" / "report.md").read_text()
    assert a == (tmp_path / "b" / "report.md").read_text()
    assert "run time" not in a
    for png in ("price_path.png", "emissions_vs_allocation.png", "compliance_cost.png"):
        assert np.array_equal(
            np.frombuffer((tmp_path / "a" / png).read_bytes(), dtype=np.uint8),
            np.frombuffer((tmp_path / "b" / png).read_bytes(), dtype=np.uint8),
        ), png
