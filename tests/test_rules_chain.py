"""Responsibility along the supply chain (seed 003), end to end: beta and each firm's
responsibility against an independent linear-algebra solution on random chains with cycles,
the gap against beta_p (a producer below its product's average gains, one above loses), final
consumers bearing the average of what they buy, the exact non-productivity check, malformed
chain files, the CLI, and the worked example of docs/RULES.md §5."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction as Fr
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from exchange.core.commands import AddInstrument, RegisterFirm
from exchange.core.events import CommandRejected
from exchange.core.exchange import Exchange
from exchange.core.units import PPM, ppm_half_even
from exchange.app.engine import Sequencer
from exchange.rules import RulesModule
from exchange.rules import formulas as F
from exchange.rules.api import responsibility_view
from exchange.rules.chain import ChainError, parse_chain, render_text, responsibility
from exchange.rules.commands import (
    ClosePeriod,
    PreAllocate,
    RecordVerified,
    SetBenchmark,
    SetInputUse,
)
from exchange.rules.events import FactorChanged, PeriodClosed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "chains" / "example_chain.toml"


# ============================================================================ random chains


def random_chain(rng: np.random.Generator) -> list[dict]:
    """Firms making products p0..pn (1-3 each), inputs of any product including their own and
    products upstream and downstream (cycles), at most 0.9/n units of each per unit made so the
    network is productive; some final consumers (output 0) and an input nobody makes."""
    n = int(rng.integers(2, 8))
    names = [f"p{k}" for k in range(n)]
    firms = []
    for p in names:
        for k in range(int(rng.integers(1, 4))):
            out = int(rng.integers(100, 100_000))
            inputs = {
                i: int(rng.integers(0, int(out * 0.9 / n) + 1)) for i in names if rng.random() < 0.5
            }
            if rng.random() < 0.2:
                inputs["imported"] = int(rng.integers(1, 1_000))
            firms.append(
                {
                    "id": f"{p}-{k}",
                    "product": p,
                    "output": out,
                    "direct_emissions": int(rng.integers(0, 3 * out)),
                    "inputs": inputs,
                }
            )
    for k in range(int(rng.integers(0, 3))):
        firms.append(
            {
                "id": f"consumer-{k}",
                "output": 0,
                "direct_emissions": int(rng.integers(0, 1_000)),
                "inputs": {i: int(rng.integers(1, 5_000)) for i in names if rng.random() < 0.6},
            }
        )
    return firms


def numpy_solution(firms: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """(I - A) beta = c with numpy.linalg.solve, A and c built here from the firms (not by
    the rules' formulas); then R_f = E_f + sum_i in_fi beta_i."""
    products = sorted({f["product"] for f in firms if f["output"] > 0})
    idx = {p: k for k, p in enumerate(products)}
    n = len(products)
    y = np.zeros(n)
    e = np.zeros(n)
    use = np.zeros((n, n))
    for f in firms:
        if f["output"] > 0:
            k = idx[f["product"]]
            y[k] += f["output"]
            e[k] += f["direct_emissions"]
            for i, q in f["inputs"].items():
                if i in idx:
                    use[k, idx[i]] += q
    a = use / y[:, None]
    beta = np.linalg.solve(np.eye(n) - a, e / y)
    b = {p: float(beta[idx[p]]) for p in products}
    resp = {
        f["id"]: f["direct_emissions"] + sum(q * b.get(i, 0.0) for i, q in f["inputs"].items())
        for f in firms
    }
    return b, resp


@pytest.mark.parametrize("seed", range(16))
def test_beta_and_responsibility_equal_numpy_solve(seed):
    firms = random_chain(np.random.default_rng(1000 + seed))
    res = responsibility(parse_chain({"firms": firms, "outside": ["imported"]}))
    beta, resp = numpy_solution(firms)
    got = {p["product"]: p["beta_ppm"] for p in res["products"]}
    assert set(got) == set(beta)
    for p, b in beta.items():
        # beta is quantized to the nearest ppm: within 0.5 ppm (+ the iteration's 1e-12)
        assert abs(got[p] / PPM - b) <= 0.6e-6 * max(1.0, abs(b)), (p, got[p], b)
    for row in res["firms"]:
        f = next(x for x in firms if x["id"] == row["id"])
        # R uses the ppm betas: off by at most 0.6 ppm x the quantity of inputs
        slack = 0.6e-6 * max(1.0, max(beta.values())) * sum(f["inputs"].values()) + 1e-6
        assert abs(row["responsibility_ppm"] / PPM - resp[row["id"]]) <= slack, row["id"]
    # an input nobody makes is counted 0 and reported, with who uses it
    imported = [f["id"] for f in firms if "imported" in f["inputs"]]
    assert [o["used_by"] for o in res["outside_inputs"]] == ([imported] if imported else [])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_engine_close_equals_the_chain_tool_and_numpy(seed):
    """The rules module at a close and the chain tool give the same betas and responsibilities
    (one set of formulas), and both equal numpy's solution."""
    firms = random_chain(np.random.default_rng(seed))
    res = responsibility(parse_chain({"firms": firms, "outside": ["imported"]}))
    ex = Exchange(modules=(RulesModule,))
    seq = Sequencer(ex)
    run = [AddInstrument(symbol="CEA-2026", vintage=2026, reference_price=8500)]
    run += [RegisterFirm(firm_id=f["id"], product=f.get("product", "")) for f in firms]
    run += [
        SetInputUse(firm_id=f["id"], period=2026, inputs=tuple(f["inputs"].items()))
        for f in firms
        if f["inputs"]
    ]
    run += [
        RecordVerified(
            firm_id=f["id"], period=2026, emissions=f["direct_emissions"], output=f["output"]
        )
        for f in firms
    ]
    evs = []
    for c in run + [PreAllocate(period=2026), ClosePeriod(period=2026)]:
        evs.extend(seq(c))
    assert not [e for e in evs if isinstance(e, CommandRejected)]
    pc = [e for e in evs if isinstance(e, PeriodClosed)][0]
    if any(f["inputs"] for f in firms):
        assert pc.responsibility == {p["product"]: p["beta_ppm"] for p in res["products"]}
    else:  # no input data at all: the close computes no factors (nothing is embodied)
        assert pc.responsibility == {}
    rules = ex.modules["rules"]
    for row in res["firms"]:
        fr = rules.responsibility(row["id"])
        assert fr["responsibility_ppm"] == row["responsibility_ppm"], row["id"]
        assert fr["intensity_ppm"] == row["intensity_ppm"]
    beta, _ = numpy_solution(firms)
    for p, b in beta.items() if pc.responsibility else ():
        assert abs(pc.responsibility[p] / PPM - b) <= 0.6e-6 * max(1.0, b)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_below_the_product_average_gains_above_loses(seed):
    """Random chains, every producer reporting (an empty record when it used nothing): each
    producer's gap is against beta_p, its sign is that of beta_p - I_f, phi moves that way, and
    a product's output-weighted gaps sum to zero (up to beta's ppm)."""
    firms = [f for f in random_chain(np.random.default_rng(seed)) if f["output"] > 0]
    ex = Exchange(modules=(RulesModule,))
    seq = Sequencer(ex)
    products = sorted({f["product"] for f in firms})
    run = [AddInstrument(symbol="CEA-2026", vintage=2026, reference_price=8500)]
    run += [SetBenchmark(product=p, intensity_ppm=1_000_000) for p in products]
    run += [RegisterFirm(firm_id=f["id"], product=f["product"]) for f in firms]
    run += [PreAllocate(period=2026)]
    run += [
        SetInputUse(firm_id=f["id"], period=2026, inputs=tuple(f["inputs"].items())) for f in firms
    ]
    run += [
        RecordVerified(
            firm_id=f["id"], period=2026, emissions=f["direct_emissions"], output=f["output"]
        )
        for f in firms
    ]
    evs = []
    for c in run + [ClosePeriod(period=2026)]:
        evs.extend(seq(c))
    assert not [e for e in evs if isinstance(e, CommandRejected)]
    beta = [e for e in evs if isinstance(e, PeriodClosed)][0].responsibility
    fc = {e.firm_id: e for e in evs if isinstance(e, FactorChanged)}
    weighted: dict[str, int] = {}
    for f in firms:
        e = fc[f["id"]]
        p = f["product"]
        if not any(x["inputs"] for x in firms if x["product"] == p) or beta[p] == 0:
            assert e.inputs["reference"] == "benchmark"
            continue
        assert (e.inputs["reference"], e.inputs["reference_ppm"]) == ("responsibility", beta[p])
        g = e.terms["gap_ppm"]
        i = Fr(e.inputs["intensity_ppm"], PPM)
        b = Fr(beta[p], PPM)
        if abs(i - b) > 3 * b / PPM + Fr(1, PPM):  # clear of the ppm roundings
            assert (g > 0) == (i < b)
            assert (e.phi_after_ppm > e.phi_before_ppm) == (
                g > 0
            ) or e.phi_after_ppm == e.phi_before_ppm
        weighted[p] = weighted.get(p, 0) + f["output"] * g
    for p, w in weighted.items():
        y = sum(f["output"] for f in firms if f["product"] == p)
        # exact beta would give 0; beta to the ppm moves sum R_f / sum Y by up to 1e-6 t/unit
        # (its own rounding and its inputs'), that is 1e-6 / beta of each gap, plus the gaps'
        # own rounding to the ppm
        assert abs(w) <= y * (1 + 2 * PPM / beta[p]), (p, w, y)


# ============================================================================ non-productive


def _spectral_radius(products, a) -> float:
    idx = {p: k for k, p in enumerate(products)}
    m = np.zeros((len(products), len(products)))
    for p, row in a.items():
        for i, v in row.items():
            m[idx[p], idx[i]] = float(v)
    return float(max(abs(np.linalg.eigvals(m)))) if len(products) else 0.0


@pytest.mark.parametrize("seed", range(40))
def test_non_productive_check_agrees_with_the_spectral_radius(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    names = [f"p{k}" for k in range(n)]
    scale = float(rng.choice([0.3, 0.8, 1.2, 2.0]))
    producers = {
        p: [
            (
                1,
                100,
                {
                    i: int(rng.integers(0, int(100 * scale / n) + 2))
                    for i in names
                    if rng.random() < 0.5
                },
            )
        ]
        for p in names
    }
    products, _, a = F.responsibility_system(producers)
    rho = _spectral_radius(products, a)
    if abs(rho - 1) < 1e-9:
        pytest.skip("on the boundary")
    bad = F.non_productive(products, a)
    assert bool(bad) == (rho > 1), (rho, bad)
    if bad:
        with pytest.raises(F.Diverges) as exc:
            F.responsibility_factors(producers)
        assert exc.value.products == tuple(bad)
    else:
        F.responsibility_factors(producers)


def test_non_productive_names_only_the_cycle():
    # a <-> b take 1.2 units of each other per unit: no finite beta; c only uses a; d is fine
    producers = {
        "a": [(1, 10, {"b": 12})],
        "b": [(1, 10, {"a": 12})],
        "c": [(1, 10, {"a": 1})],
        "d": [(5, 10, {"d": 5})],
    }
    with pytest.raises(F.Diverges) as exc:
        F.responsibility_factors(producers)
    assert exc.value.products == ("a", "b")
    assert "non-productive network: a, b" in str(exc.value)


def test_singular_system_is_non_productive():
    # power takes exactly one unit of itself per unit (through steel): I - A is singular
    producers = {"power": [(1, 10, {"steel": 20})], "steel": [(1, 10, {"power": 5})]}
    products, _, a = F.responsibility_system(producers)
    assert abs(np.linalg.det(np.eye(2) - np.array([[0, 2], [0.5, 0]]))) < 1e-12
    assert F.non_productive(products, a) == ["power", "steel"]
    # a product that is its own input, one for one
    assert F.non_productive(*F.responsibility_system({"x": [(1, 4, {"x": 4})]})[::2]) == ["x"]


# ============================================================================ malformed chains

GOOD = {"id": "M", "product": "steel", "direct_emissions": 10, "output": 10, "inputs": {}}


@pytest.mark.parametrize(
    "firm, field",
    [
        (dict(GOOD, output=-5), "firms[0] (M).output: must be a whole number >= 0, got -5"),
        (dict(GOOD, direct_emissions=-1), "firms[0] (M).direct_emissions"),
        (dict(GOOD, output=1.5), "firms[0] (M).output"),
        (dict(GOOD, output=True), "firms[0] (M).output"),
        (dict(GOOD, output="10"), "firms[0] (M).output"),
        ({k: v for k, v in GOOD.items() if k != "output"}, "firms[0] (M).output: missing"),
        (dict(GOOD, inputs={"ore": -3}), "firms[0] (M).inputs.ore"),
        (dict(GOOD, inputs=[1, 2]), "firms[0] (M).inputs"),
        (dict(GOOD, product=""), "firms[0] (M).product: needed when output > 0"),
        (dict(GOOD, outptu=3), "firms[0] (M).outptu: unknown field"),
        (dict(GOOD, id=""), "firms[0].id"),
    ],
)
def test_malformed_chain_names_the_field(firm, field):
    with pytest.raises(ChainError) as exc:
        parse_chain({"firms": [firm]})
    assert str(exc.value).startswith(field), str(exc.value)


def test_malformed_chain_top_level_and_duplicates():
    with pytest.raises(ChainError, match=r"^firms: needs at least one"):
        parse_chain({})
    with pytest.raises(ChainError, match=r"^firm: unknown key"):
        parse_chain({"firm": [GOOD]})
    with pytest.raises(ChainError, match=r"^firms\[1\] \(M\)\.id: duplicate"):
        parse_chain({"firms": [GOOD, GOOD]})


def test_non_productive_chain_is_an_error_naming_the_products():
    firms = [
        dict(GOOD, id="A", product="a", inputs={"b": 12}),
        dict(GOOD, id="B", product="b", inputs={"a": 12}),
    ]
    with pytest.raises(ChainError, match="non-productive network: a, b"):
        responsibility(parse_chain({"firms": firms}))


def test_input_nobody_makes_counts_zero_and_is_reported():
    firms = [
        dict(GOOD, inputs={"diesel": 7, "steel": 1}),
        {"id": "C", "direct_emissions": 0, "output": 0, "inputs": {"diesel": 3}},
    ]
    # undeclared, a product nobody makes is an error naming the field (usually a typo)
    with pytest.raises(ChainError, match=r"firms\[0\] \(M\)\.inputs\.diesel: nobody in "):
        parse_chain({"firms": firms})
    res = responsibility(parse_chain({"firms": firms, "outside": ["diesel"]}))
    assert res["outside_inputs"] == [{"product": "diesel", "quantity": 10, "used_by": ["M", "C"]}]
    m = res["firms"][0]
    assert m["outside_inputs"] == ["diesel"]
    assert m["embodied_ppm"] == m["responsibility_ppm"] - 10 * PPM
    assert "outside the chain (nobody in it makes it, counted 0): diesel" in render_text(res)


# ============================================================================ the worked example
# docs/RULES.md §5: power P1; steel S1 (below the average), S2 (above it); a final consumer C

WORKED = [
    {
        "id": "P1",
        "product": "power",
        "direct_emissions": 500,
        "output": 1_000,
        "inputs": {"steel": 200},
    },
    {
        "id": "S1",
        "product": "steel",
        "direct_emissions": 800,
        "output": 500,
        "inputs": {"power": 200},
    },
    {
        "id": "S2",
        "product": "steel",
        "direct_emissions": 1_200,
        "output": 500,
        "inputs": {"power": 300},
    },
    {
        "id": "C",
        "direct_emissions": 100,
        "output": 0,
        "inputs": {"steel": 400, "power": 100, "cement": 50},
    },
]


def test_worked_example_chain_tool():
    res = responsibility(parse_chain({"firms": WORKED, "outside": ["cement"]}))
    # beta_power = (500 + 200 beta_steel) / 1,000, beta_steel = (2,000 + 500 beta_power) / 1,000
    assert {p["product"]: p["beta"] for p in res["products"]} == {"power": "1", "steel": "2.5"}
    rows = {r["id"]: r for r in res["firms"]}
    assert {k: r["responsibility_t"] for k, r in rows.items()} == {
        "P1": "1000",
        "S1": "1000",
        "S2": "1500",
        "C": "1200",
    }
    assert (rows["S1"]["gap"], rows["S2"]["gap"]) == ("0.2", "-0.2")
    assert (rows["S1"]["excess_t"], rows["S2"]["excess_t"]) == ("-250", "250")
    assert rows["C"]["role"] == "final consumer" and rows["C"]["outside_inputs"] == ["cement"]
    assert res["balance"] == {
        "direct_emissions_t": "2600",
        "final_consumers_t": "1200",
        "not_used_in_chain_t": "1400",
        "rounding_t": "0",
    }


class Market:
    def __init__(self):
        self.ex = Exchange(modules=(RulesModule,))
        self.seq = Sequencer(self.ex)
        self.rules: RulesModule = self.ex.modules["rules"]
        self.ok(
            AddInstrument(symbol="CEA-2026", vintage=2026, reference_price=8500),
            SetBenchmark(product="steel", intensity_ppm=2_200_000),
            SetBenchmark(product="power", intensity_ppm=600_000),
            *[RegisterFirm(firm_id=f["id"], product=f.get("product", "")) for f in WORKED],
            PreAllocate(period=2026),
        )

    def ok(self, *cmds) -> list:
        out = []
        for c in cmds:
            evs = self.seq(c)
            assert not [e for e in evs if isinstance(e, CommandRejected)], evs
            out.extend(evs)
        return out

    def close(self, with_inputs: bool = True) -> dict:
        cmds = [
            RecordVerified(
                firm_id=f["id"], period=2026, emissions=f["direct_emissions"], output=f["output"]
            )
            for f in WORKED
        ]
        if with_inputs:
            cmds += [
                SetInputUse(firm_id=f["id"], period=2026, inputs=tuple(f["inputs"].items()))
                for f in WORKED
            ]
        evs = self.ok(*cmds, ClosePeriod(period=2026))
        return {e.firm_id: e for e in evs if isinstance(e, FactorChanged)}


def test_worked_example_gap_against_beta_p():
    m = Market()
    fc = m.close()
    s1, s2 = fc["S1"], fc["S2"]
    # S1: I = (800 + 200 x 1.0) / 500 = 2.0 against beta_steel 2.5: g = +0.2, gains
    assert (s1.inputs["reference"], s1.inputs["reference_ppm"]) == ("responsibility", 2_500_000)
    assert s1.inputs["intensity_ppm"] == 2_000_000 and s1.terms["gap_ppm"] == 200_000
    assert s1.phi_after_ppm > s1.phi_before_ppm
    # S2: I = (1,200 + 300) / 500 = 3.0: g = -0.2, loses
    assert s2.terms["gap_ppm"] == -200_000 and s2.phi_after_ppm < s2.phi_before_ppm
    # the benchmark is still reported, and P1 (sole power producer) is its product's average
    assert s1.inputs["benchmark_ppm"] == 2_200_000
    assert fc["P1"].inputs["reference_ppm"] == 1_000_000 and fc["P1"].terms["gap_ppm"] == 0
    # the gaps balance within a product, weighted by output
    assert 500 * s1.terms["gap_ppm"] + 500 * s2.terms["gap_ppm"] == 0
    # C makes nothing: no gap, no factor change, but it answers for what it bought
    assert "C" not in fc
    view = responsibility_view(m.rules, "C")
    assert (view["responsibility_t"], view["embodied_t"], view["intensity"]) == (
        "1200",
        "1100",
        None,
    )
    assert view["outside_inputs"] == ["cement"] and view["verified"] is True
    assert responsibility_view(m.rules, "S2")["responsibility_t"] == "1500"


def test_without_input_data_the_gap_is_against_the_benchmark():
    m = Market()
    fc = m.close(with_inputs=False)
    s1 = fc["S1"]
    # direct intensity 800 / 500 = 1.6 against B = 2.2, as before supply-chain data
    assert (s1.inputs["reference"], s1.inputs["reference_ppm"]) == ("benchmark", 2_200_000)
    assert s1.terms["gap_ppm"] == ppm_half_even(1 - Fr(16, 22))
    assert m.rules.responsibility("C")["responsibility_ppm"] == 100 * PPM


def test_partial_input_data_compares_direct_intensity_with_the_benchmark():
    """S2 does not report what it buys: beta_steel would set S1 (inputs declared) against S2
    (none), and reward not declaring. Steel then falls back to direct intensity against B;
    power (every producer reported) stays on beta_power."""
    m = Market()
    evs = m.ok(
        *[
            RecordVerified(
                firm_id=f["id"], period=2026, emissions=f["direct_emissions"], output=f["output"]
            )
            for f in WORKED
        ],
        *[
            SetInputUse(firm_id=f["id"], period=2026, inputs=tuple(f["inputs"].items()))
            for f in WORKED
            if f["id"] != "S2"
        ],
        ClosePeriod(period=2026),
    )
    fc = {e.firm_id: e for e in evs if isinstance(e, FactorChanged)}
    s1 = fc["S1"]
    assert (s1.inputs["reference"], s1.inputs["reference_ppm"]) == ("benchmark", 2_200_000)
    assert s1.inputs["intensity_ppm"] == 1_600_000  # 800 / 500, not (800 + embodied) / 500
    assert s1.inputs["embodied_ppm"] > 0  # still computed and shown
    assert fc["P1"].inputs["reference"] == "responsibility"
    # S2 then declares it used nothing it reports: an empty record is a report, steel is whole
    m = Market()
    evs = m.ok(
        *[
            RecordVerified(
                firm_id=f["id"], period=2026, emissions=f["direct_emissions"], output=f["output"]
            )
            for f in WORKED
        ],
        *[
            SetInputUse(
                firm_id=f["id"],
                period=2026,
                inputs=() if f["id"] == "S2" else tuple(f["inputs"].items()),
            )
            for f in WORKED
        ],
        ClosePeriod(period=2026),
    )
    fc = {e.firm_id: e for e in evs if isinstance(e, FactorChanged)}
    assert fc["S1"].inputs["reference"] == fc["S2"].inputs["reference"] == "responsibility"


def test_consumer_with_input_use_but_no_verification_bears_its_inputs():
    m = Market()
    m.ok(
        SetInputUse(firm_id="C", period=2026, inputs=(("steel", 400), ("power", 100))),
        *[
            SetInputUse(firm_id=f["id"], period=2026, inputs=tuple(f["inputs"].items()))
            for f in WORKED[:3]
        ],
        *[
            RecordVerified(
                firm_id=f["id"], period=2026, emissions=f["direct_emissions"], output=f["output"]
            )
            for f in WORKED[:3]
        ],
        ClosePeriod(period=2026),
    )
    fr = m.rules.responsibility("C")
    assert (fr["verified"], fr["emissions"], fr["responsibility_ppm"]) == (False, 0, 1_100 * PPM)


def test_state_from_before_keeps_its_responsibility_records():
    m = Market()
    m.close()
    state = m.rules.to_state()
    state["firm_resp"] = {"S1": [2026, 2_000_000, 500, 1_000 * PPM]}  # the old layout
    m.rules.load_state(state)
    assert m.rules.split_weight("S1", "responsibility") == 1_000


# ============================================================================ CLI


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exchange", "rules", "responsibility", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_json_on_the_example_chain():
    r = _cli(str(EXAMPLE), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {p["product"] for p in out["products"]} == {"power", "ore", "steel", "cars"}
    rows = {f["id"]: f for f in out["firms"]}
    assert rows["FLEET"]["role"] == "final consumer"
    assert [o["product"] for o in out["outside_inputs"]] == ["diesel"]
    # the same numbers as the library, which the numpy tests hold to linear algebra
    import tomllib

    firms = tomllib.loads(EXAMPLE.read_text())["firms"]
    beta, resp = numpy_solution([dict(f, inputs=f.get("inputs", {})) for f in firms])
    for p in out["products"]:
        # the JSON speaks decimals, as the API: beta to the ppm, no *_ppm integer
        assert "beta_ppm" not in p
        assert abs(float(p["beta"]) - beta[p["product"]]) <= 0.6e-6 * max(1, beta[p["product"]])
    for fid, r_t in resp.items():
        assert abs(float(rows[fid]["responsibility_t"]) - r_t) < 0.05, fid


def test_cli_table_and_errors(tmp_path):
    r = _cli(str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "beta t/unit" in r.stdout and "FLEET" in r.stdout and "final consumer" in r.stdout
    assert "diesel" in r.stdout and "balance: direct emissions" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[firms]]\nid = "X"\nproduct = "a"\ndirect_emissions = 1\noutput = -4\n')
    r = _cli(str(bad), "--json")
    assert r.returncode == 2 and "firms[0] (X).output" in r.stderr and not r.stdout
    loop = tmp_path / "loop.toml"
    loop.write_text(
        '[[firms]]\nid = "A"\nproduct = "a"\ndirect_emissions = 1\noutput = 1\n'
        'inputs = { b = 2 }\n[[firms]]\nid = "B"\nproduct = "b"\n'
        "direct_emissions = 1\noutput = 1\ninputs = { a = 1 }\n"
    )
    r = _cli(str(loop))
    assert r.returncode == 2 and "non-productive network: a, b" in r.stderr
    r = _cli(str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


# ============================================================================ HTTP


async def test_responsibility_endpoints(tmp_path):
    from test_server import POWER, STEEL, op, running_server

    async with running_server(tmp_path) as srv:
        st, body = await op(
            srv,
            "POST",
            "/rules/input-use",
            {"firm_id": "STEEL1", "period": 2026, "inputs": [{"product": "power", "qty": 10}]},
        )
        assert st == 200, body
        st, body = await op(srv, "GET", "/rules/responsibility")
        assert st == 200 and body == {"firms": []}  # nothing closed yet
        st, body = await op(srv, "GET", "/rules/responsibility/STEEL1", key=STEEL)
        assert st == 200 and body == {"firm_id": "STEEL1", "period": None, "responsibility_t": None}
        st, body = await op(srv, "GET", "/rules/responsibility/STEEL1", key=POWER)
        assert st == 403
        st, body = await op(srv, "GET", "/rules/responsibility/NOPE")
        assert st == 404
        st, body = await op(srv, "GET", "/rules/responsibility", key=STEEL)
        assert st == 403  # every firm's: operators and verifiers only
