"""The simulation feeds the chain's input use to the rules module: the close computes the
responsibility factors from it, and the ``by_responsibility`` split (the rules' strategy)
weighs an SME by what it answers for, which differs from its own emissions when it has
suppliers."""

from __future__ import annotations

import numpy as np
import pytest

from exchange.core.units import PPM
from exchange.rules import formulas as F
from exchange.sim.runner import Simulation
from exchange.sim.scenario import parse_scenario
from exchange.sim.split import split_weights


def _scenario(strategy: str) -> dict:
    parts_mac = {"kind": "linear", "full_abatement_cost": 800.0, "max_abatement_share": 0.5}
    return {
        "scenario": {"name": "resp", "periods": 3, "seed": 5},
        "market": {
            "initial_price": 50.0,
            "rounds_per_period": 4,
            "settlement_rounds": 1,
            "use_sme_board": True,
        },
        "sectors": [
            {
                "name": "steel",
                "intensity": 2.0,
                "firms": 4,
                "output_mean": 5000,
                "mac": {"kind": "piecewise", "points": [[0.0, 0.0], [0.05, 40.0], [0.2, 300.0]]},
            },
            {"name": "parts", "intensity": 0.5, "output_mean": 2000, "mac": parts_mac},
        ],
        "chains": [
            {
                "id": "C",
                "core_sector": "steel",
                "split_strategy": strategy,
                "shortfall_rule": "parent",
                "tiers": [
                    {"tier": 1, "firms": 2, "sector": "parts"},
                    {
                        "tier": 2,
                        "firms": 3,
                        "sector": "parts",
                        "size_class": "sme",
                        "output_scale": 0.3,
                    },
                    {
                        "tier": 3,
                        "firms": 3,
                        "sector": "parts",
                        "size_class": "sme",
                        "output_scale": 0.2,
                    },
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def runs():
    out = {}
    for s in ("by_baseline_emissions", "by_responsibility"):
        sim = Simulation(parse_scenario(_scenario(s)))
        out[s] = (sim, sim.run())
    return out


def ppm(x) -> int:
    return F.ppm_half_even(x)


def test_input_use_is_the_suppliers_output(runs):
    sim, res = runs["by_responsibility"]
    rules = sim.gw.exchange.modules["rules"]
    pop = sim.pop
    year = sim.sc.scenario.start_year + res.periods - 1
    output = res.records["output"][-1]
    expect: dict[str, dict[str, int]] = {}
    for s, c in pop.edges[0]:  # every supplier here has one customer
        q = expect.setdefault(pop.ids[c], {})
        q[sim._product(s)] = q.get(sim._product(s), 0) + int(output[s])
    got = {f: d[year] for f, d in rules.inputs.items() if year in d}
    assert got == expect
    assert set(rules.resp[year]) == {"steel", "parts", "parts:sme"}


def test_rules_responsibility_is_emissions_plus_what_inputs_embody(runs):
    sim, res = runs["by_responsibility"]
    rules = sim.gw.exchange.modules["rules"]
    year = sim.sc.scenario.start_year + res.periods - 1
    beta = rules.resp[year]
    for f, fr in rules.firm_resp.items():
        if fr["period"] != year:
            continue
        q = rules.inputs.get(f, {}).get(year, {})
        assert fr["responsibility_ppm"] == ppm(F.responsibility_tonnes(fr["emissions"], q, beta))
    tier = np.array(res.tier)
    sme = np.array([c == "sme" for c in res.size_class])
    for i in np.nonzero(sme & (tier == 2))[0]:  # tier-2 SMEs embody tier 3
        assert rules.responsibility(res.ids[i])["embodied_ppm"] > 0
    for i in np.nonzero(sme & (tier == 3))[0]:  # tier 3 has no suppliers
        fr = rules.responsibility(res.ids[i])
        assert fr["embodied_ppm"] == 0 and fr["responsibility_ppm"] == fr["emissions"] * PPM


def test_by_responsibility_differs_from_baseline_where_inputs_differ(runs):
    (_, base), (_, resp) = runs["by_baseline_emissions"], runs["by_responsibility"]
    tier = np.array(resp.tier)
    sme = np.array([c == "sme" for c in resp.size_class])
    qb, qr = base.records["sub_quota_in"], resp.records["sub_quota_in"]
    # period 1 has no close yet: both strategies weigh the SMEs' own emissions
    assert (qb[0] == qr[0]).all()
    # afterwards SMEs with suppliers (tier 2) weigh more, those without (tier 3) less
    t2, t3 = sme & (tier == 2), sme & (tier == 3)
    for t in range(1, resp.periods):
        assert qr[t][t2].sum() > qb[t][t2].sum() and qr[t][t3].sum() < qb[t][t3].sum()
        assert qr[t][sme].sum() == qb[t][sme].sum()  # the same pool, divided differently


def test_split_py_no_longer_computes_responsibility():
    with pytest.raises(ValueError, match="rules module"):
        split_weights(
            "by_responsibility",
            np.arange(2),
            None,
            output=None,
            baseline=None,
            curves=None,
            price=0.0,
            chain=0,
        )
