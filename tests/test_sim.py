"""Simulation: analytic equilibrium, conservation, reproducibility, scenario validation, outputs."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from exchange.cli import main as cli_main
from exchange.sim.agents import Curves, abatement_at, abatement_cost, build_population, mac_at
from exchange.sim.equilibrium import OffsetRule, OffsetType, cover
from exchange.sim.runner import run_scenario
from exchange.sim.scenario import ScenarioError, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SCEN = ROOT / "config" / "scenarios"

SMALL = """
[scenario]
name = "small"
periods = 2
seed = 3

[market]
initial_price = 50.0
rounds_per_period = 6
settlement_rounds = 1
use_sme_board = true

[offsets]
enabled = true
cap = 0.05
price = 45.0

[[sectors]]
name = "steel"
intensity = 2.0
firms = 6
output_mean = 5000
mac = { kind = "piecewise", points = [[0.0, 0.0], [0.05, 40.0], [0.2, 300.0]] }

[[sectors]]
name = "parts"
intensity = 0.5
output_mean = 2000
mac = { kind = "linear", full_abatement_cost = 800.0, max_abatement_share = 0.5 }

[[chains]]
id = "C"
core_sector = "steel"
tiers = [{ tier = 1, firms = 2, sector = "parts" },
         { tier = 2, firms = 3, sector = "parts", size_class = "sme", output_scale = 0.3 }]
split_strategy = "by_output"
revenue_share = 0.6
shortfall_rule = "parent"
"""


@pytest.fixture(scope="module")
def analytic():
    return run_scenario(load_scenario(SCEN / "analytic.toml"), periods=2)


def test_analytic_price_and_cost_match_the_closed_form(analytic):
    rec = analytic.records
    for t, row in enumerate(analytic.period_rows):
        # independent of the simulation's own bookkeeping: c_i from each firm's cost and
        # abatement (C = c a^2 / 2), R from baseline minus allocation
        a = rec["abatement"][t]
        c = 2 * rec["abatement_cost"][t] / a**2
        R = rec["baseline_emissions"][t].sum() - rec["allocation"][t].sum()
        p_star = R / np.sum(1 / c)
        assert row["analytic_price"] == pytest.approx(p_star, rel=1e-6)
        assert abs(row["close_price"] / p_star - 1) < 0.05
        least = np.sum(p_star**2 / (2 * c))  # sum c_i (p*/c_i)^2 / 2
        assert abs(rec["abatement_cost"][t].sum() / least - 1) < 0.05
        assert rec["abatement_cost"][t].sum() < rec["no_trade_abatement_cost"][t].sum()
        # every firm abates to (nearly) the same marginal cost: the least-cost condition
        assert np.all(np.abs(c * a / p_star - 1) < 0.05)
    s = analytic.summary
    assert abs(s["final_price"] / s["analytic_price"] - 1) < 0.05
    assert s["total_abatement_cost"] < s["no_trade_abatement_cost"]
    assert s["total_shortfall"] == 0


def test_net_bought_equals_net_sold_every_period(analytic):
    res = run_scenario(parse_scenario(_toml(SMALL)))
    for r in (analytic, res):
        rec = r.records
        for t in range(r.periods):
            assert rec["net_bought"][t].sum() == 0
            assert rec["bought"][t].sum() == rec["sold"][t].sum()
            assert r.period_rows[t]["net_bought_sum"] == 0
        assert r.summary["conservation_ok"]
    # SMEs held sub-quotas, and offsets never exceeded the cap of the obligation
    rec = res.records
    assert rec["sub_quota_in"].sum() > 0
    assert np.all(rec["offsets_used"] <= np.floor(rec["obligation"] * 0.05))
    assert res.summary["order_rejects"] == 0


def test_positions_read_from_events_match_the_ledger():
    """The simulation tracks holdings only from the events it gets back (Posting, Trade);
    at the end they equal the core's ledger for every firm and instrument."""
    from exchange.sim.runner import Simulation

    sim = Simulation(parse_scenario(_toml(SMALL)), periods=2)
    sim.run()
    ex = sim.gw.exchange
    for sym, held in sim.market.hold.items():
        for i, fid in enumerate(sim.pop.ids):
            h = ex.accounts[fid].holdings.get(sym)
            assert held[i] == (h.total if h else 0), (sym, fid)


def test_same_seed_same_run_and_other_seed_differs():
    sc = load_scenario(SCEN / "three_sectors.toml")
    a = run_scenario(sc, seed=9, periods=2)
    b = run_scenario(sc, seed=9, periods=2)
    c = run_scenario(sc, seed=10, periods=2)
    assert a.state_hash == b.state_hash

    def strip(s):
        return {k: v for k, v in s.items() if k not in ("runtime_s", "phase_seconds")}

    assert strip(a.summary) == strip(b.summary)
    for k in a.records:
        np.testing.assert_array_equal(a.records[k], b.records[k])
    assert a.state_hash != c.state_hash


@pytest.mark.parametrize(
    "text, expect",
    [
        ("[scenario]\nname='x'\n", "sectors: Field required"),
        (SMALL.replace("intensity = 2.0", "intensity = -2.0"), "sectors[0].intensity"),
        (SMALL.replace('core_sector = "steel"', 'core_sector = "stele"'), "unknown sector 'stele'"),
        (SMALL.replace("[market]", "[market]\nrounds = 3"), "market.rounds: unknown key"),
        (
            SMALL.replace('split_strategy = "by_output"', 'split_strategy = "random"'),
            "chains[0].split_strategy",
        ),
        (
            SMALL.replace("[0.05, 40.0], [0.2, 300.0]", "[0.05, 40.0], [0.04, 300.0]"),
            "shares must strictly increase",
        ),
    ],
)
def test_bad_scenario_gives_a_clear_error(tmp_path, text, expect):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert expect in str(e.value)
    assert str(p) in str(e.value)


def test_cli_bad_scenario_exits_2(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[scenario\nname=")
    assert cli_main(["simulate", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert cli_main(["simulate", str(tmp_path / "missing.toml"), "--out", "x"]) == 2


def test_small_run_writes_all_outputs(tmp_path):
    scen = tmp_path / "small.toml"
    scen.write_text(SMALL)
    out = tmp_path / "out"
    assert (
        cli_main(
            ["simulate", str(scen), "--out", str(out), "--seed", "4", "--periods", "1", "--quiet"]
        )
        == 0
    )
    for f in (
        "report.md",
        "summary.json",
        "firms.csv",
        "periods.csv",
        "rounds.csv",
        "price_path.png",
        "emissions_vs_allocation.png",
        "intensity_by_sector.png",
        "allocation_factors.png",
        "sme_revenue_by_strategy.png",
        "smes.csv",
    ):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    s = json.loads((out / "summary.json").read_text())
    for k in (
        "periods",
        "mean_price",
        "final_price",
        "total_emissions",
        "total_allocation",
        "total_abatement_cost",
        "no_trade_abatement_cost",
        "offset_share_used",
    ):
        assert k in s
    assert s["periods"] == 1 and s["seed"] == 4
    rows = list(csv.DictReader(open(out / "firms.csv")))
    assert len(rows) == s["firms"]
    net = defaultdict(int)
    for r in rows:
        net[r["period"]] += int(r["net_bought"])
    assert set(net.values()) == {0}
    md = (out / "report.md").read_text()
    assert "### By split strategy" in md and "| by_abatement_potential |" in md
    smes = list(csv.DictReader(open(out / "smes.csv")))
    assert len(smes) == 3 and {r["strategy"] for r in smes} == {"by_output"}


def test_compare_mode(tmp_path):
    scen = tmp_path / "small.toml"
    scen.write_text(SMALL)
    out = tmp_path / "cmp"
    assert (
        cli_main(
            [
                "simulate",
                "--compare",
                str(scen),
                "--vary",
                "offset_cap=0,0.1",
                "--periods",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    rows = json.loads((out / "compare.json").read_text())
    assert [r["variant"] for r in rows] == ["offset_cap=0", "offset_cap=0.1"]
    assert rows[0]["offset_share_used"] == 0
    assert (out / "compare.png").stat().st_size > 0 and (out / "compare.md").is_file()
    assert (
        cli_main(
            [
                "simulate",
                "--compare",
                str(scen),
                "--vary",
                "offsets.cap=2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )


def test_mac_curves_inverse_and_integral():
    sc = parse_scenario(_toml(SMALL))
    pop = build_population(sc, np.random.default_rng(1))
    base = pop.intensity * pop.output
    cv = Curves.for_period(pop, base)
    for p in (0.0, 10.0, 40.0, 120.0, 1e4):
        a = abatement_at(cv, p)
        assert np.all(a >= 0) and np.all(a <= cv.a_max + 1e-9)
        inside = (a > 0) & (a < cv.a_max)
        np.testing.assert_allclose(mac_at(cv, a)[inside], p, rtol=1e-9)
    x = 0.37 * cv.a_max
    ks = np.linspace(0, 1, 2001)
    vals = np.stack([mac_at(cv, k * x) for k in ks], axis=1)
    trap = getattr(np, "trapezoid", None) or np.trapz
    numeric = trap(vals, ks[None, :] * x[:, None], axis=1)
    np.testing.assert_allclose(abatement_cost(cv, x), numeric, rtol=1e-4)
    # covering a gap of 50 t with 950 t held and a 5 % offset cap at 45 CNY/t: offsets fill
    # at most 5 % of verified emissions (950 + o), abatement the rest
    rule = OffsetRule(cap=0.05, types=[OffsetType("CCER", 45.0, 0.05)])
    held = np.full(pop.n, 950.0)
    a, o = cover(cv, rule, held + 50.0, held)
    o = o[:, 0]
    assert np.all(np.minimum(a, cv.a_max) + o <= 50.0 + 1e-9)
    assert np.all(o <= np.floor(0.05 * (held + o)))
    cheap = abatement_at(cv, 45.0) >= 50.0  # abating all 50 t costs less than an offset
    assert np.all(o[cheap] == 0) and np.all(o[~cheap] > 0)


def _toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_networked_mode_matches_in_process(tmp_path):
    """The same scenario through a running server (operator HTTP API + one websocket session
    per firm) gives the same market as in process."""
    import re
    import subprocess
    import sys
    import time

    # a production start (--no-demo) has no API key: the first start builds the market, then
    # `keys create` makes the operator and verifier keys the simulation drives it with
    data = tmp_path / "data"
    serve = [
        sys.executable,
        "-m",
        "exchange",
        "serve",
        "--port",
        "0",
        "--no-demo",
        "--data-dir",
        str(data),
    ]
    keys = {}
    for role, label in (("operator", "sim"), ("verifier", "VERIFIER1")):
        if role == "operator":  # the first start (genesis) must come before any key
            first = subprocess.Popen(
                serve, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for line in first.stdout:
                if line.startswith("listening on"):
                    break
            first.terminate()
            assert first.wait(timeout=20) == 0
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "exchange",
                "keys",
                "create",
                "--role",
                role,
                "--label",
                label,
                "--data-dir",
                str(data),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        keys[role] = r.stdout.strip().splitlines()[-1]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(serve, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        port = None
        for _ in range(200):
            m = re.search(r"listening on [\d.]+:(\d+)", log.read_text())
            if m:
                port = int(m.group(1))
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert port, log.read_text()
        from exchange.sim.networked import NetworkedGateway

        sc = parse_scenario(_toml(SMALL.replace("use_sme_board = true", "")))
        gw = NetworkedGateway(
            f"http://127.0.0.1:{port}", operator_key=keys["operator"], verifier_key=keys["verifier"]
        )
        try:
            net = run_scenario(sc, periods=1, gateway=gw)
        finally:
            gw.close()
        local = run_scenario(sc, periods=1)
        for k in (
            "final_price",
            "mean_price",
            "volume",
            "trades",
            "total_emissions",
            "total_allocation",
            "total_abatement_cost",
            "conservation_ok",
        ):
            assert net.summary[k] == local.summary[k], k
        assert net.summary["gateway"] == "networked"
        assert "configure_compliance_period" in net.summary["skipped_commands"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_mac_functions_properties():
    """For random piecewise-linear curves: a(p) is non-decreasing in p, MAC(a(p)) = p inside
    the curve, the cost is the integral (convex: cost(a) <= a x MAC(a))."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    seg = st.tuples(st.floats(0.01, 0.3), st.floats(0.0, 200.0))

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(st.lists(seg, min_size=1, max_size=4), min_size=1, max_size=6),
        st.floats(0.0, 900.0),
        st.floats(0.0, 900.0),
    )
    def check(curves, p1, p2):
        K = max(len(c) for c in curves) + 1
        a = np.zeros((len(curves), K))
        m = np.zeros((len(curves), K))
        for i, c in enumerate(curves):
            xs, ms = [0.0], [0.0]
            for dx, dm in c:
                xs.append(xs[-1] + dx * 1000)
                ms.append(ms[-1] + dm)
            xs += [xs[-1]] * (K - len(xs))
            ms += [ms[-1]] * (K - len(ms))
            a[i], m[i] = xs, ms
        cv = Curves(a, m)
        lo, hi = sorted((p1, p2))
        alo, ahi = abatement_at(cv, lo), abatement_at(cv, hi)
        assert np.all(alo <= ahi + 1e-9)
        inside = (ahi > 1e-9) & (ahi < cv.a_max - 1e-9)
        np.testing.assert_allclose(mac_at(cv, ahi)[inside], hi, rtol=1e-7, atol=1e-7)
        c = abatement_cost(cv, ahi)
        assert np.all(c >= -1e-9) and np.all(c <= ahi * mac_at(cv, ahi) + 1e-6)

    check()
