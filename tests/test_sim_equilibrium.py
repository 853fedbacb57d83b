"""The simulated market against closed-form equilibria.

Each scenario has linear MACs ``MAC_i(a) = c_i a`` (``c_i = F_i / E0_i``, F log-uniform), a
fixed cap ``A = (1 - r) sum E0`` and an offset rule; the expected equilibrium is computed here
from the scenario's inputs alone, independently of the simulation's own solver:

* no offsets:                       p* = R / sum 1/c_i
* one offset type at price p_o < p* with cap s (room = s x verified emissions):
      m* = (R - s E0) / ((1 - s) sum 1/c_i),   p* = (m* - s p_o) / (1 - s)
  (a tonne emitted needs 1 - s allowances and adds s of offset room, so firms abate to
  m* = (1 - s) p* + s p_o; offsets used = s (E0 - m* sum 1/c));
* offsets dearer than the no-offset price: unused, p* as without offsets.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from exchange.sim.agents import Curves, build_population
from exchange.sim.equilibrium import OffsetRule, OffsetType, closed_form, least_cost
from exchange.sim.runner import run_scenario
from exchange.sim.scenario import parse_scenario


def firms(n: int, seed: int, f_lo: float = 100.0, f_hi: float = 10_000.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    e0 = rng.uniform(5_000, 50_000, n)
    full = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), n))  # MAC at 100 % abatement
    return [
        dict(
            id=f"F{i:04d}",
            sector="ind",
            baseline_emissions=float(e0[i]),
            mac=dict(kind="linear", full_abatement_cost=float(full[i]), max_abatement_share=0.9),
        )
        for i in range(n)
    ]


def expected(
    fs: list[dict], reduction: float, cap: float = 0.0, p_off: float | None = None
) -> dict:
    e0 = np.array([f["baseline_emissions"] for f in fs])
    c = np.array([f["mac"]["full_abatement_cost"] for f in fs]) / e0
    inv = np.sum(1 / c)
    E0 = e0.sum()
    A = np.floor(e0 * (1 - reduction)).sum()
    R = E0 - A
    p0 = R / inv
    if p_off is None or cap == 0 or p_off >= p0:
        return dict(price=p0, mac=p0, offsets=0.0, cost=np.sum(c * (p0 / c) ** 2 / 2))
    mac = (R - cap * E0) / ((1 - cap) * inv)
    p = (mac - cap * p_off) / (1 - cap)
    assert p > p_off, "the test scenario must leave offsets cheaper than allowances"
    offsets = cap * (E0 - mac * inv)
    return dict(
        price=p, mac=mac, offsets=offsets, cost=np.sum(c * (mac / c) ** 2 / 2) + p_off * offsets
    )


def scenario(fs, reduction=0.10, offsets=None, initial_price=None, periods=3, seed=1):
    exp = expected(
        fs,
        reduction,
        **(
            {}
            if not offsets or not offsets.get("enabled")
            else dict(cap=offsets["cap"], p_off=offsets["price"])
        ),
    )
    return parse_scenario(
        {
            "scenario": {"name": "closed_form", "periods": periods, "seed": seed},
            "market": {
                "initial_price": initial_price or round(exp["price"] * 0.9, 2),
                "fee_bps": 0,
                "rounds_per_period": 20,
                "settlement_rounds": 1,
                "levels": 7,
            },
            "allocation": {"mode": "fixed", "pre_ratio": 1.0, "reduction": reduction},
            "offsets": offsets or {"enabled": False},
            "sectors": [{"name": "ind", "intensity": 1.0, "mac": {"kind": "linear", "slope": 1.0}}],
            "firms": fs,
        }
    ), exp


def check(res, exp, *, band_walk: bool = False) -> None:
    rows = res.period_rows
    reached = False
    for row in rows:
        # the simulation's own closed form and its numerical least-cost solver
        assert row["analytic_price"] == pytest.approx(exp["price"], rel=0.005)
        assert row["least_cost_price"] == pytest.approx(exp["price"], rel=0.005)
        assert row["least_cost_compliance_cost"] == pytest.approx(exp["cost"], rel=0.01)
        assert row["least_cost_offsets_used"] == pytest.approx(exp["offsets"], rel=0.001, abs=1)
        # the market: within 2 % once the band has reached the equilibrium
        reached = reached or row["cleared"]
        if reached:
            assert abs(row["close_price"] / exp["price"] - 1) < 0.02, row
        # offsets: the cap's room is used when offsets are cheaper, never more
        assert row["offsets_used"] <= exp["offsets"] + 1
        assert row["offsets_used"] == pytest.approx(exp["offsets"], rel=0.002, abs=1)
        # conservation and the cap
        assert row["net_bought_sum"] == 0
        assert row["allocation"] == row["allocation_target"]
        assert row["shortfall"] == 0
    assert abs(rows[-1]["close_price"] / exp["price"] - 1) < 0.01
    assert rows[-1]["compliance_cost"] == pytest.approx(exp["cost"], rel=0.01)
    if band_walk:
        assert rows[0]["limit_locked_days"] + rows[0]["trading_days"] > 1
        assert not rows[0]["cleared"] or rows[0]["trading_days"] > 3


def test_a_no_offsets_slopes_spread_100x():
    fs = firms(40, seed=11, f_lo=100.0, f_hi=10_000.0)
    sc, exp = scenario(fs)
    check(run_scenario(sc), exp)


def test_b_cheap_offsets_binding_cap():
    fs = firms(40, seed=12)
    sc, exp = scenario(fs, reduction=0.12, offsets={"enabled": True, "cap": 0.05, "price": 20.0})
    assert exp["offsets"] > 0 and exp["price"] > 20.0
    res = run_scenario(sc)
    check(res, exp)
    # the old error: pricing offset room on baseline emissions lands 5-12 % off
    wrong = expected(fs, 0.12)["price"]
    assert abs(res.period_rows[-1]["close_price"] / wrong - 1) > 0.05


def test_c_offsets_dearer_than_the_price_stay_unused():
    fs = firms(40, seed=13)
    p0 = expected(fs, 0.10)["price"]
    sc, exp = scenario(fs, offsets={"enabled": True, "cap": 0.05, "price": round(p0 * 1.5, 2)})
    res = run_scenario(sc)
    check(res, exp)
    assert all(r["offsets_used"] == 0 for r in res.period_rows)


def test_d_five_hundred_firms():
    fs = firms(500, seed=14)
    sc, exp = scenario(fs, offsets={"enabled": True, "cap": 0.05, "price": 15.0}, periods=2)
    check(run_scenario(sc), exp)


def test_e_band_must_walk_from_a_price_far_from_the_equilibrium():
    fs = firms(40, seed=15)
    p = expected(fs, 0.10)["price"]
    sc, exp = scenario(fs, initial_price=round(p * 0.6, 2))  # 40 % below p*
    res = run_scenario(sc)
    first = [r for r in res.rounds if r["period"] == 1 and r["phase"] == "trading"]
    # the band (+-10 %) walked: the reference rose day after day past the start's band
    assert first[-1]["reference"] > p * 0.6 * 1.3
    check(res, exp, band_walk=True)


def test_least_cost_solver_corner_at_the_offset_price():
    """Offsets so plentiful that using all their room would overshoot: the price sits at the
    offset price and offsets are used only as far as the cap's need requires."""
    fs = firms(30, seed=16)
    e0 = np.array([f["baseline_emissions"] for f in fs])
    c = np.array([f["mac"]["full_abatement_cost"] for f in fs]) / e0
    p_off = 0.5 * expected(fs, 0.08)["price"]
    sc = parse_scenario(
        {
            "scenario": {"name": "x"},
            "sectors": [{"name": "ind", "intensity": 1.0, "mac": {"kind": "linear", "slope": 1.0}}],
            "firms": fs,
            "allocation": {"mode": "fixed"},
        }
    )
    pop = build_population(sc, np.random.default_rng(0))
    cv = Curves.for_period(pop, e0)
    A = float(np.floor(e0 * 0.92).sum())
    rule = OffsetRule(cap=0.5, types=[OffsetType("CCER", p_off, 0.5)])
    eq = least_cost(cv, rule, e0, A, 1000.0)
    assert eq.corner == "offset_price" and eq.price == pytest.approx(p_off)
    used = (e0.sum() - A) - p_off * np.sum(1 / c)
    assert eq.offsets_used == pytest.approx(used, rel=1e-6)
    cf = closed_form(cv, rule, e0, A)
    assert cf["price"] == pytest.approx(p_off) and cf["offsets_used"] == pytest.approx(used)


def _intensity_scenario(kappa: float, total: str = "intensity"):
    return parse_scenario(
        {
            "scenario": {"name": "cap", "periods": 4, "seed": 21, "sme_strategy_comparison": False},
            "market": {"initial_price": 50.0, "benchmark_stringency": 0.1},
            "rules": {
                "kappa": kappa,
                "kappa_max": 0.2,
                "max_step": 0.1,
                "alpha_up": 2.0,
                "allocation_total": total,
            },
            "offsets": {"enabled": True, "cap": 0.05, "price": 20.0},
            "sectors": [
                {
                    "name": "steel",
                    "intensity": 2.0,
                    "firms": 12,
                    "intensity_dispersion": 0.3,
                    "mac": {
                        "kind": "linear",
                        "full_abatement_cost": 600.0,
                        "max_abatement_share": 0.6,
                    },
                },
                {
                    "name": "parts",
                    "intensity": 0.5,
                    "firms": 6,
                    "mac": {
                        "kind": "linear",
                        "full_abatement_cost": 900.0,
                        "max_abatement_share": 0.6,
                    },
                },
            ],
            "chains": [
                {
                    "id": "C",
                    "core_sector": "steel",
                    "tiers": [{"tier": 1, "firms": 3, "sector": "parts"}],
                }
            ],
        }
    )


def test_phi_and_coupling_move_allowances_never_create_them():
    """Intensity mode: every period's allocation is exactly sum B x Y, however far phi and the
    supply-chain coupling move; so the coupling strength does not move the price."""
    runs = {k: run_scenario(_intensity_scenario(k)) for k in (0.0, 0.5)}
    for res in runs.values():
        phi = res.records["phi"]
        assert phi[-1].max() > 1.15 and phi[-1].min() < 0.9  # phi did move, both ways
        for row in res.period_rows:
            assert row["allocation"] == row["allocation_target"]
            assert row["net_bought_sum"] == 0
            assert abs(row["close_price"] / row["least_cost_price"] - 1) < 0.02
    # coupling redistributes between partners: allocations differ, totals and prices do not
    a0, a5 = (runs[k].records["allocation"] for k in (0.0, 0.5))
    assert (a0 != a5).any()
    assert list(a0.sum(axis=1)) == list(a5.sum(axis=1))
    p0, p5 = (runs[k].period_rows[-1]["close_price"] for k in (0.0, 0.5))
    assert abs(p0 / p5 - 1) < 0.01


def test_floating_total_is_an_opt_in_that_moves_the_cap():
    res = run_scenario(_intensity_scenario(0.5, total="floating"))
    last = res.period_rows[-1]
    assert res.summary["allocation_total"] == "floating"
    assert last["allocation"] != last["allocation_target"]


def test_sub_quotas_are_carved_from_the_core_firm_inside_the_cap(tmp_path):
    """SMEs' sub-quotas come out of the core firm's allocation: the period's issuance is
    exactly sum B x Y of the covered firms, and every sub-quota tonne left a core firm."""
    from exchange.sim.report import sme_rows, write_report

    data = _intensity_scenario(0.2).model_dump(mode="json")
    data["chains"][0]["tiers"].append(
        {"tier": 2, "firms": 4, "sector": "parts", "size_class": "sme", "output_scale": 0.3}
    )
    data["chains"][0]["split_strategy"] = "equal"
    res = run_scenario(parse_scenario(data))
    rec = res.records
    for t, row in enumerate(res.period_rows):
        assert row["allocation"] == row["allocation_target"]  # nothing issued on top
        assert rec["sub_quota_in"][t].sum() > 0
        assert rec["sub_quota_in"][t].sum() == rec["sub_quota_out"][t].sum()
        sme = np.array([s == "sme" for s in res.size_class])
        assert rec["allocation"][t][sme].sum() == 0  # SMEs get no allocation
    write_report(res, tmp_path)
    rows = sme_rows(res)
    assert (tmp_path / "smes.csv").read_text().splitlines()[0].split(",")[:4] == [
        "period",
        "year",
        "sme",
        "chain",
    ]
    assert len(rows) == 4 * res.periods
    for r in rows:  # the scheme's and the direct allocation's net cost side by side
        assert r["benefit_vs_direct"] == pytest.approx(
            r["direct_net_cost"] - r["net_cost"], abs=0.02
        )


def test_sme_fund_grants_lower_smes_net_cost_by_what_they_received():
    """A regulator's budget in the SME fund: SMEs that abated apply per tonne, grants are paid
    while the fund lasts, and each SME's net cost falls by exactly its grants."""
    data = _intensity_scenario(0.2).model_dump(mode="json")
    data["chains"][0]["tiers"].append(
        {"tier": 2, "firms": 4, "sector": "parts", "size_class": "sme", "output_scale": 0.3}
    )
    runs = {}
    for budget in (0.0, 5_000.0):
        d = copy.deepcopy(data)
        d["sme_fund"] = {
            "budget_per_period": budget,
            "grant_per_tonne": 40.0,
            "sme_period_limit": 2_000.0,
        }
        runs[budget] = run_scenario(parse_scenario(d))
    without, with_fund = runs[0.0].records, runs[5_000.0].records
    sme = np.array([s == "sme" for s in runs[0.0].size_class])
    grants = with_fund["fund_grants"]
    assert without["fund_grants"].sum() == 0
    assert grants[:, sme].sum() > 0 and grants[:, ~sme].sum() == 0
    assert (grants[:, sme] <= 2_000.0).all()  # the per-SME limit
    # never more than the fund holds: what is not granted stays in it for later periods
    paid = np.cumsum(grants.sum(axis=1))
    assert (paid <= 5_000.0 * np.arange(1, len(paid) + 1) + 1e-9).all()
    # the fund does not touch the market: same trades, same costs, less net cost
    np.testing.assert_allclose(with_fund["abatement_cost"], without["abatement_cost"])
    np.testing.assert_allclose(with_fund["net_cost"], without["net_cost"] - grants)


def test_shipped_supply_chain_smes_has_smes_better_off_than_direct_allocation():
    """In the shipped scenario, SMEs that emit less than their sub-quota end better off than
    under direct allocation for at least one split strategy, and the report says why."""
    from exchange.sim.report import sme_stats
    from exchange.sim.scenario import load_scenario

    path = (
        Path(__file__).resolve().parent.parent / "config" / "scenarios" / "supply_chain_smes.toml"
    )
    res = run_scenario(load_scenario(path))  # shipped strategy
    st = sme_stats(res)
    assert st["sme_winners_with_surplus"] > 0
    assert st["sme_gain_share"] > 0  # the core firms shared their coupling gain
    assert all(r["allocation"] == r["allocation_target"] for r in res.period_rows)
