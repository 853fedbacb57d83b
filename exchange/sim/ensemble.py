"""Many seeds and sweeps: every (cell, seed) run is one pure task, its figures aggregated.

A *task* is ``run_task(raw, source, seed, periods)``: it parses the scenario's TOML data, runs
it through the exchange core exactly as a one-seed run does, and returns a small dict of
figures (no arrays of firms): the headline scalars, the per-period series, output, emissions
and intensity by sector, the report's warnings and the core's state hash. Nothing in it reads
a clock or a global, so the same (scenario, seed) gives the same dict in any process: the
aggregate written from the dicts, ordered by cell and seed (never by arrival), is the same
bytes whether the tasks ran here one after another or as tasks on a Dask cluster
(:mod:`exchange.sim.cluster`).

Aggregation is per figure over the seeds of a cell: the 5th, 50th and 95th percentiles,
numpy's default (linear interpolation between order statistics, Hyndman & Fan type 7), keys
``<figure>_p05``, ``<figure>_p50``, ``<figure>_p95``. A figure that is undefined in a seed
(no trades: no mean price) is left out of that seed's sample; ``<figure>_n`` then says how
many seeds it rests on.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np

PCTS = (5, 50, 95)

# headline scalars of a run: (key, label for report tables, unit)
HEADLINE: list[tuple[str, str, str]] = [
    ("final_price", "final close price", "CNY/t"),
    ("final_least_cost_price", "final least-cost price", "CNY/t"),
    ("mean_price", "mean price (volume-weighted)", "CNY/t"),
    ("total_emissions", "verified emissions, all periods", "t"),
    ("total_abatement", "abatement, all periods", "t"),
    ("total_abatement_cost", "abatement cost", "CNY"),
    ("total_offset_cost", "offset spending", "CNY"),
    ("total_compliance_cost", "compliance cost (abatement + offsets)", "CNY"),
    ("least_cost_compliance_cost", "least-cost compliance cost", "CNY"),
    ("no_trade_compliance_cost", "no-trade compliance cost", "CNY"),
    ("offset_share_used", "offset share of obligations", "share"),
    ("total_penalties", "penalties", "CNY"),
    ("total_shortfall", "shortfall", "t"),
    ("volume", "volume traded", "t"),
    ("limit_locked_days", "limit-locked trading days", "days"),
    ("clean_share_last", "clean share of electricity, last period", "share"),
    ("power_emissions", "power sector's emissions, all periods", "t"),
]
SME_HEADLINE: list[tuple[str, str, str]] = [
    ("sme_net_cost", "SME net cost (scheme)", "CNY"),
    ("sme_direct_net_cost", "SME net cost if allocated directly", "CNY"),
    ("sme_benefit_vs_direct", "SME benefit vs direct allocation", "CNY"),
    ("sme_winners", "SMEs better off than direct", "SMEs"),
    ("sme_revenue", "SME sales revenue", "CNY"),
]
# per-period series: (key in the task's "periods", label, unit)
PERIOD_SERIES: list[tuple[str, str, str]] = [
    ("price", "close price", "CNY/t"),
    ("least_cost_price", "least-cost price", "CNY/t"),
    ("baseline_emissions", "business-as-usual emissions", "t"),
    ("emissions", "verified emissions", "t"),
    ("allocation", "allocation issued", "t"),
    ("abatement_cost", "abatement cost", "CNY"),
    ("compliance_cost", "compliance cost", "CNY"),
    ("offset_share", "offset share of obligations", "share"),
    ("sme_net_cost", "SME net cost", "CNY"),
    ("clean_share", "clean share of electricity", "share"),
]
SECTOR_SERIES = ("output", "trend_output", "emissions", "intensity", "allocation", "net_cost")


# ---------------------------------------------------------------------- seeds
def ensemble_seeds(base: int, n: int) -> list[int]:
    """The seeds of an n-seed ensemble: the scenario's (or ``--seed``'s) seed first, so the
    first member is the one-seed run, then seeds drawn from ``SeedSequence(base)`` children
    (32-bit). A run with seed s also draws from s + 7 (growth) and s + 1,000,003 (order
    arrival); a child whose three streams meet another member's is skipped, so no two
    members share a random stream (consecutive seeds would: s + 7 is another member)."""
    if base < 0:
        raise ValueError("seeds are non-negative")
    seeds: list[int] = []
    used: set[int] = set()
    k = 0
    while len(seeds) < n:
        s = (
            base
            if k == 0
            else int(
                np.random.SeedSequence(entropy=base, spawn_key=(k,)).generate_state(1, np.uint32)[0]
            )
        )
        k += 1
        streams = {s, s + 7, s + 1_000_003}
        if streams & used:
            continue
        used |= streams
        seeds.append(s)
    return seeds


# ---------------------------------------------------------------------- the task
def run_task(raw: dict, source: str, seed: int, periods: int | None = None) -> dict:
    """One run, reduced to the figures the ensemble reports. Pure: the same arguments give
    the same dict in any process (runtime_s aside, which only goes to timings.json)."""
    from .report import findings, sme_stats
    from .runner import run_scenario
    from .scenario import parse_scenario

    sc = parse_scenario(copy.deepcopy(raw), source)
    res = run_scenario(sc, seed=seed, periods=periods)
    return reduce_run(res, sme_stats(res), findings(res)[0])


def reduce_run(res, sme: dict, warnings: list[str]) -> dict:
    s, rows, rec = res.summary, res.period_rows, res.records
    has_smes = sme["smes"] > 0
    scalars = {k: s.get(k) for k, _, _ in HEADLINE if k in s}
    if has_smes:
        scalars.update({k: sme[k] for k, _, _ in SME_HEADLINE})
    sr = s.get("supply_response")
    if sr:
        scalars["output_vs_trend"] = sr["output_vs_trend"]
        scalars.update({f"output_vs_trend_{k}": v for k, v in sr["by_sector"].items()})
    sme_mask = np.array([z == "sme" for z in res.size_class]) & np.array(
        [c != "" for c in res.chain]
    )
    periods = {
        "price": [p["close_price"] for p in rows],
        "least_cost_price": [p["least_cost_price"] for p in rows],
        "baseline_emissions": [p["baseline_emissions"] for p in rows],
        "emissions": [p["emissions"] for p in rows],
        "allocation": [p["allocation"] for p in rows],
        "abatement_cost": [p["abatement_cost"] for p in rows],
        "compliance_cost": [p["compliance_cost"] for p in rows],
        "offset_share": [
            p["offsets_used"] / p["emissions"] if p["emissions"] else 0.0 for p in rows
        ],
    }
    if has_smes:
        periods["sme_net_cost"] = [
            float(rec["net_cost"][t, sme_mask].sum()) for t in range(res.periods)
        ]
    if "electricity" in s:
        periods["clean_share"] = [p["clean_share"] for p in rows]
        scalars["clean_share_last"] = s["electricity"]["clean_share_last"]
        scalars["power_emissions"] = s["electricity"]["power_emissions"]
    return {
        "seed": res.seed,
        "firms": s["firms"],
        "years": [p["year"] for p in rows],
        "scalars": _clean(scalars),
        "periods": _clean(periods),
        "sectors": _clean(sector_table(res)),
        "warnings": list(warnings),
        "state_hash": s.get("state_hash", ""),
        "conservation_ok": s["conservation_ok"],
        "runtime_s": s["runtime_s"],
    }


def sector_table(res) -> dict[str, dict[str, list[float]]]:
    """Per sector and period: output (10,000 CNY), the output it would have had without the
    supply response (trend_output), verified emissions (t), intensity Σ E / Σ Y (t CO2e per
    10,000 CNY), allocation received (t, sub-quotas included) and net compliance cost (CNY)."""
    rec = res.records
    sec = np.array(res.sector)
    trend = res.extra.get("trend_output", rec["output"])
    alloc = rec["allocation"] + rec["sub_quota_in"] - rec["sub_quota_out"]
    out = {}
    for name in sorted(set(res.sector)):
        sel = sec == name
        y = rec["output"][:, sel].sum(axis=1)
        e = rec["emissions"][:, sel].sum(axis=1)
        out[name] = {
            "output": y.tolist(),
            "trend_output": trend[:, sel].sum(axis=1).tolist(),
            "emissions": e.tolist(),
            "intensity": (e / np.maximum(y, 1e-12)).tolist(),
            "allocation": alloc[:, sel].sum(axis=1).tolist(),
            "net_cost": rec["net_cost"][:, sel].sum(axis=1).tolist(),
        }
        if "indirect_emissions" in res.extra:
            out[name]["indirect_emissions"] = (
                res.extra["indirect_emissions"][:, sel].sum(axis=1).tolist()
            )
    return out


def _clean(v):
    """Plain Python numbers (floats rounded to 9 significant digits) for JSON and pickling:
    the aggregate must not depend on numpy scalar types."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if f != f:
            return None
        return float(f"{f:.9g}")
    return v


# ---------------------------------------------------------------------- aggregation
def band(values) -> dict[str, float | None]:
    """p05, p50, p95 (numpy's linear interpolation) of the values that are defined."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"p05": None, "p50": None, "p95": None, "n": 0}
    q = np.percentile(v, PCTS)
    return {"p05": _clean(q[0]), "p50": _clean(q[1]), "p95": _clean(q[2]), "n": int(len(v))}


def _warning_kind(text: str) -> str:
    """A warning's kind: its text with the numbers and years taken out (a list of years is
    one placeholder), so the same warning with other figures in another seed counts once."""
    k = re.sub(r"[−+-]?\d[\d,.]*\s*%?", "#", text)
    return re.sub(r"#(?:[\s,–-]*#)+", "#", k)


def supply_headline(keys) -> list[tuple[str, str, str]]:
    """Figures of the supply response present in a result (scalars or an aggregate's keys):
    output against trend over all sectors and per sector."""
    names = sorted(
        {
            k[:-4] if k.endswith(("_p05", "_p50", "_p95")) else k
            for k in keys
            if k.startswith("output_vs_trend")
        }
    )
    return [
        (
            k,
            "output vs trend"
            + (f", {k[len('output_vs_trend_') :]}" if k != "output_vs_trend" else " (all sectors)"),
            "share",
        )
        for k in names
    ]


@dataclass
class Cell:
    """One cell of a sweep (or the single cell of a many-seed run)."""

    label: str  # "offset_cap=0.05,split_strategy=equal" ("" = base)
    params: dict  # the --vary values of this cell
    raw: dict  # the scenario's data with those values applied
    source: str


def aggregate(cell: Cell, runs: list[dict], scenario_name: str) -> dict:
    """summary.json of a cell: bands of every figure over its seeds (runs in seed order)."""
    runs = sorted(runs, key=lambda r: r["seed"])
    first = runs[0]
    years = first["years"]
    out: dict = {
        "scenario": scenario_name,
        "cell": cell.label,
        "params": cell.params,
        "runs": len(runs),
        "seeds": [r["seed"] for r in runs],
        "periods": len(years),
        "years": years,
        "firms": first["firms"],
        "percentiles": "p05/p50/p95 over seeds, numpy linear interpolation (Hyndman-Fan type 7)",
    }
    for key in first["scalars"]:
        b = band(r["scalars"].get(key) for r in runs)
        for q in ("p05", "p50", "p95"):
            out[f"{key}_{q}"] = b[q]
        if b["n"] != len(runs):
            out[f"{key}_n"] = b["n"]
    by_period = []
    for t, y in enumerate(years):
        row: dict = {"period": t + 1, "year": y}
        for key in first["periods"]:
            b = band(r["periods"][key][t] for r in runs)
            for q in ("p05", "p50", "p95"):
                row[f"{key}_{q}"] = b[q]
            # flat keys too: price_2026_p50 ...
            for q in ("p05", "p50", "p95"):
                out[f"{key}_{y}_{q}"] = b[q]
        by_period.append(row)
    out["by_period"] = by_period
    by_sector = {}
    for name in first["sectors"]:
        d = {}
        for key in first["sectors"][name]:
            d[key] = [band(r["sectors"][name][key][t] for r in runs) for t in range(len(years))]
        by_sector[name] = d
    out["by_sector"] = by_sector
    kinds: dict[str, dict] = {}
    for r in runs:
        for w in r["warnings"]:
            k = _warning_kind(w)
            if k not in kinds:
                kinds[k] = {"seeds": [], "example": w, "example_seed": r["seed"]}
            if r["seed"] not in kinds[k]["seeds"]:
                kinds[k]["seeds"].append(r["seed"])
    out["warnings"] = [
        {
            "runs": len(v["seeds"]),
            "seeds": v["seeds"],
            "example_seed": v["example_seed"],
            "example": v["example"],
        }
        for v in kinds.values()
    ]
    out["conservation_ok"] = all(r["conservation_ok"] for r in runs)
    out["state_hashes"] = {str(r["seed"]): r["state_hash"] for r in runs}
    return out


def seed_rows(runs: list[dict]) -> list[dict]:
    """seeds.csv: one row per seed with its headline figures and state hash."""
    rows = []
    for r in sorted(runs, key=lambda r: r["seed"]):
        row = {"seed": r["seed"]}
        row.update(r["scalars"])
        row["warnings"] = len(r["warnings"])
        row["state_hash"] = r["state_hash"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- sweep comparison
def paired_difference(ref: list[dict], other: list[dict], key: str) -> dict:
    """The cell's figure minus the reference cell's, seed by seed (both cells run the same
    seeds: common random numbers), and its band. The difference is larger than the seed
    noise when its p05-p95 band lies entirely on one side of zero."""
    a = {r["seed"]: r["scalars"].get(key) for r in ref}
    d = [
        o["scalars"].get(key) - a[o["seed"]]
        for o in other
        if o["scalars"].get(key) is not None and a.get(o["seed"]) is not None
    ]
    b = band(d)
    b["exceeds_noise"] = bool(b["n"] and (b["p05"] > 0 or b["p95"] < 0))
    return b


def bands_overlap(x: dict, y: dict, key: str) -> bool | None:
    lo1, hi1, lo2, hi2 = (
        x.get(f"{key}_p05"),
        x.get(f"{key}_p95"),
        y.get(f"{key}_p05"),
        y.get(f"{key}_p95"),
    )
    if None in (lo1, hi1, lo2, hi2):
        return None
    return not (hi1 < lo2 or hi2 < lo1)
