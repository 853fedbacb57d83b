"""The power sector supplies the other sectors' electricity: clean generation by its merit
order against fossil's cost with carbon, the balance each period, and the generators'
emissions counted where generated and shown as the consumers' indirect emissions."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import numpy as np
import pytest

from exchange.sim.runner import run_scenario
from exchange.sim.scenario import ScenarioError, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
GRID = tomllib.loads((ROOT / "config" / "scenarios" / "power_grid.toml").read_text())


@pytest.fixture(scope="module")
def runs():
    out = {}
    for red in (0.05, 0.15):
        data = copy.deepcopy(GRID)
        data["allocation"]["reduction"] = red
        out[red] = run_scenario(parse_scenario(data), periods=3)
    return out


def test_demand_supply_and_the_clean_share_by_merit_order(runs):
    res = runs[0.15]
    cfg = res.scenario.power
    rec, sec = res.records, np.array(res.sector)
    use = {s.name: s.electricity_use for s in res.scenario.sectors}
    gen = sec == "power"
    ef = 21.25 * cfg.tariff / 1e4
    for t, row in enumerate(res.period_rows):
        demand = sum(use[s] * rec["output"][t, sec == s].sum() for s in use)
        assert row["power_demand_mwh"] == pytest.approx(demand, abs=0.1)
        # a fixed proportional cap: a MWh brings no free allowances, fossil's marginal cost
        # is fossil_cost + p x EF, and clean runs where it is cheaper
        p = res.extra["expected_price"][t]
        cap = cfg.clean_capacity * (1 + cfg.clean_capacity_growth) ** t
        frac = np.clip(
            (cfg.fossil_cost + p * ef - cfg.clean_cost_min)
            / (cfg.clean_cost_max - cfg.clean_cost_min),
            0,
            1,
        )
        assert row["clean_mwh"] == pytest.approx(min(demand, cap * frac), abs=0.1)
        # fossil generation is the generators' output; supply meets demand up to rounding
        fossil = rec["output"][t, gen].sum() * 1e4 / cfg.tariff
        assert row["fossil_mwh"] == pytest.approx(fossil, abs=0.1)
        assert abs(row["power_balance_mwh"]) <= gen.sum() * 0.5 * 1e4 / cfg.tariff
        assert row["clean_share"] == pytest.approx(
            row["clean_mwh"] / (row["clean_mwh"] + fossil), abs=1e-6
        )
        # the generators' emissions, counted once, reappear as the consumers' indirect ones
        ind = res.extra["indirect_emissions"][t]
        assert ind[gen].sum() == 0
        assert ind.sum() == pytest.approx(rec["emissions"][t, gen].sum(), rel=1e-9)
        assert row["power_emissions"] == rec["emissions"][t, gen].sum()
        assert row["close_price"] == pytest.approx(row["least_cost_price"], rel=0.02)


def test_a_tighter_cap_raises_the_price_and_the_clean_share(runs):
    loose, tight = runs[0.05], runs[0.15]
    for a, b in zip(loose.period_rows, tight.period_rows):
        assert b["expected_price"] > a["expected_price"]
        assert b["clean_share"] > a["clean_share"]
        assert b["power_emissions"] < a["power_emissions"]
    e = tight.summary["electricity"]
    assert e["clean_share_last"] > e["clean_share_first"]


@pytest.mark.parametrize(
    "change, expect",
    [
        (lambda d: d["power"].update(sector="nuclear"), "unknown sector 'nuclear'"),
        (lambda d: d["sectors"][0].update(margin=0.1), "its output follows demand"),
        (lambda d: d["power"].update(clean_cost_max=100.0), "clean_cost_max must exceed"),
    ],
)
def test_bad_power_sections_fail_before_running(change, expect):
    data = copy.deepcopy(GRID)
    change(data)
    with pytest.raises(ScenarioError, match=expect):
        parse_scenario(data)
