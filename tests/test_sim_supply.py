"""The economy responds: output answers the carbon price where it exceeds the margin, and a
fixed cap can be cut proportionally or by the same intensity percentage in every sector."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import numpy as np
import pytest

from exchange.sim.runner import run_scenario
from exchange.sim.scenario import ScenarioError, apply_override, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = tomllib.loads((ROOT / "config" / "scenarios" / "supply_response.toml").read_text())


def _identical(margin: float, cut: str = "proportional") -> dict:
    """Identical firms with a linear MAC and no offsets: the carbon cost per unit of output
    has a closed form."""
    same = {"output_dispersion": 0.0, "intensity_dispersion": 0.0, "output_growth_sd": 0.0}
    return {
        "scenario": {"name": "identical", "periods": 2, "seed": 1},
        "market": {"initial_price": 60.0, "rounds_per_period": 8, "settlement_rounds": 1},
        "allocation": {"mode": "fixed", "pre_ratio": 1.0, "reduction": 0.15, "sector_cut": cut},
        "offsets": {"enabled": False},
        "sectors": [
            {
                "name": "heavy",
                "intensity": 10.0,
                "firms": 6,
                "output_mean": 2000,
                "output_growth": 0.0,
                "margin": margin,
                "supply_elasticity": 0.8,
                "max_output_cut": 0.6,
                **same,
                "mac": {
                    "kind": "linear",
                    "full_abatement_cost": 400.0,
                    "max_abatement_share": 0.9,
                    "dispersion": 0.0,
                },
            },
            {
                "name": "light",
                "intensity": 0.5,
                "firms": 6,
                "output_mean": 20000,
                "output_growth": 0.05,
                **same,
                "mac": {
                    "kind": "linear",
                    "full_abatement_cost": 300.0,
                    "max_abatement_share": 0.9,
                    "dispersion": 0.0,
                },
            },
        ],
    }


def test_carbon_cost_per_output_and_the_cut_have_their_closed_form():
    res = run_scenario(parse_scenario(_identical(0.04)))
    rec, cc, trend = res.records, res.extra["carbon_cost_per_output"], res.extra["trend_output"]
    heavy = np.array(res.sector) == "heavy"
    for t, row in enumerate(res.period_rows):
        p = res.extra["expected_price"][t]
        assert row["expected_price"] == round(p, 4)
        # linear MAC, slope F / E0: a = p E0 / F, cost p^2 E0 / (2F), allowances E0 - a; per
        # unit of output (E0 = I Y): I p (1 - p / (2F)); a fixed proportional cap gives
        # nothing per extra unit of output
        intensity = rec["baseline_emissions"][t, heavy] / rec["output"][t, heavy]
        c = intensity * p * (1 - p / (2 * 400.0))
        np.testing.assert_allclose(cc[t, heavy], c, rtol=1e-9)
        cut = min(0.6, 0.8 * max(0.0, c[0] - 400.0) / 400.0)
        assert cut > 0.01, "the margin binds in this scenario"
        np.testing.assert_array_equal(
            rec["output"][t, heavy], np.round(trend[t, heavy] * (1 - cut))
        )
        # the light sector has no margin: no response
        assert np.all(np.isnan(cc[t, ~heavy]))
        np.testing.assert_array_equal(rec["output"][t, ~heavy], trend[t, ~heavy])
        # firms decided at the price the period cleared at
        assert row["expected_price"] == pytest.approx(row["least_cost_price"], rel=0.01)
        assert row["close_price"] == pytest.approx(row["least_cost_price"], rel=0.02)
    assert res.summary["supply_response"]["by_sector"]["heavy"] < -0.01


def test_a_wide_margin_leaves_output_on_trend_and_no_margin_changes_nothing():
    wide = run_scenario(parse_scenario(_identical(0.5)))
    np.testing.assert_array_equal(wide.records["output"], wide.extra["trend_output"])
    assert wide.summary["supply_response"]["output_vs_trend"] == 0
    data = _identical(0.04)
    del data["sectors"][0]["margin"]
    plain = run_scenario(parse_scenario(data))
    assert "supply_response" not in plain.summary
    assert "expected_price" not in plain.period_rows[0]
    assert wide.summary["total_emissions"] == plain.summary["total_emissions"]


@pytest.fixture(scope="module")
def cuts():
    out = {}
    for cut in ("proportional", "equal_intensity"):
        data = apply_override(copy.deepcopy(SHIPPED), "sector_cut", cut)
        out[cut] = run_scenario(parse_scenario(data), periods=3)
    return out


def test_equal_intensity_cut_divides_the_same_total_by_intensity_times_output(cuts):
    prop, eq = cuts["proportional"], cuts["equal_intensity"]
    for t in range(prop.periods):
        a_p, a_e = prop.records["allocation"][t], eq.records["allocation"][t]
        assert a_p.sum() == a_e.sum()  # the same cap
        # every firm's allowed intensity is its period-1 intensity cut by the same share
        i1 = eq.records["baseline_emissions"][0] / eq.records["output"][0]
        allowed = a_e / (i1 * eq.records["output"][t])
        assert allowed.max() - allowed.min() < 0.001
        assert 0 < 1 - allowed.mean() < 0.5
    # proportional: the allocation follows period-1 emissions, the same every period
    np.testing.assert_array_equal(prop.records["allocation"][0], prop.records["allocation"][-1])


def test_the_proportional_cut_restrains_heavy_output_and_the_price(cuts):
    prop, eq = cuts["proportional"], cuts["equal_intensity"]
    sp, se = prop.summary["supply_response"], eq.summary["supply_response"]
    # under the proportional cut a unit of output brings no allowances: the heavy sector's
    # carbon cost at the margin is the full price, so its output falls below trend
    assert sp["by_sector"]["heavy_industry"] < se["by_sector"]["heavy_industry"] - 0.01
    assert sp["by_sector"]["services"] == se["by_sector"]["services"] == 0
    assert prop.summary["final_price"] < eq.summary["final_price"]


def test_sector_cut_belongs_to_a_fixed_cap():
    data = copy.deepcopy(SHIPPED)
    data["allocation"].update(mode="intensity", sector_cut="equal_intensity")
    with pytest.raises(ScenarioError, match="sector_cut applies to mode"):
        parse_scenario(data)
