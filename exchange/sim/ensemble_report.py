"""Outputs of a many-seed run and of a sweep: bands (p05-p50-p95 over seeds) everywhere.

Many seeds (``--seeds N``): ``summary.json`` (the cell's aggregate, :func:`ensemble.aggregate`),
``seeds.csv`` (one row per seed), ``report.md`` and the plots with bands. Sweep (``--vary``,
one or more, a grid): ``compare.md``, ``compare.csv``, ``compare.json``, ``compare.png`` and
``compare_price.png``, and ``cells/<cell>/summary.json`` + ``seeds.csv`` per cell.

Everything written here is a function of the task results ordered by cell and seed: no clock,
no host, no order of arrival, so the files are the same bytes however the tasks ran. Wall
times go to ``timings.json`` only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .ensemble import (
    HEADLINE,
    PERIOD_SERIES,
    SME_HEADLINE,
    bands_overlap,
    paired_difference,
    seed_rows,
    supply_headline,
)
from .html import write_html
from .report import _num, _plt, _save, _table, _write_dicts


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_num) + "\n")


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "—"
    if unit == "share":
        return f"{v * 100:.2f} %"
    if unit in ("CNY/t",):
        return f"{v:,.2f}"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.4g}"


def band_text(d: dict, key: str, unit: str = "") -> str:
    """'p50 [p05 – p95]'."""
    if d.get(f"{key}_p50") is None:
        return "—"
    return (
        f"{fmt(d[f'{key}_p50'], unit)} [{fmt(d[f'{key}_p05'], unit)} – "
        f"{fmt(d[f'{key}_p95'], unit)}]"
    )


def _headline(agg: dict) -> list[tuple[str, str, str]]:
    return [h for h in HEADLINE + SME_HEADLINE if f"{h[0]}_p50" in agg] + supply_headline(agg)


# ---------------------------------------------------------------------- many seeds
def write_ensemble(
    agg: dict,
    runs: list[dict],
    out: Path,
    description: str = "",
    command: str = "",
    timings: dict | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _dump(out / "summary.json", agg)
    _write_dicts(out / "seeds.csv", seed_rows(runs))
    if timings is not None:
        _dump(out / "timings.json", timings)
    plot_price_bands(
        [("", agg)],
        out / "price_path.png",
        f"{agg['scenario']}: close price over {agg['runs']} seeds",
    )
    plot_quantity_bands(agg, out / "emissions_vs_allocation.png")
    plot_cost_bands(agg, out / "compliance_cost.png")
    plot_sectors(agg, out / "sectors.png")
    n = agg["runs"]
    md = [f"# Simulation report: {agg['scenario']}, {n} seeds", ""]
    if description:
        md += [description, ""]
    md += _warnings_md(agg)
    md += [
        f"{agg['firms']:,} firms, {agg['periods']} periods, {n} seeds "
        f"({_seed_list(agg['seeds'])}; `seeds.csv` has each seed's figures and core state "
        f"hash, and `--seed S` reruns one of them alone). Every figure is shown as its "
        f"median over the seeds with the 5th–95th percentile band: **p50 [p05 – p95]** "
        f"({agg['percentiles']}"
        + (
            "; with fewer than 20 seeds the band is close to the range of the seeds"
            if n < 20
            else ""
        )
        + ").",
        "",
    ]
    if command:
        md += [f"Reproduce: `{command}`", ""]
    md += [
        "## Summary",
        "",
        _table(
            ["figure", "unit", "p05", "p50 (median)", "p95"],
            [
                [
                    label,
                    "%" if unit == "share" else unit,
                    fmt(agg[f"{k}_p05"], unit),
                    fmt(agg[f"{k}_p50"], unit),
                    fmt(agg[f"{k}_p95"], unit),
                ]
                for k, label, unit in _headline(agg)
            ],
        ),
        "",
        f"Σ ΔQ = 0 (bought = sold) every period of every seed: "
        f"{'yes' if agg['conservation_ok'] else '**NO**'}.",
        "",
        "## By period",
        "",
    ]
    series = [(k, lab, u) for k, lab, u in PERIOD_SERIES if f"{k}_p50" in agg["by_period"][0]]
    md += [
        _table(
            ["period"] + [f"{lab} ({'%' if u == 'share' else u})" for _, lab, u in series],
            [
                [str(p["year"])] + [band_text(p, k, u) for k, _, u in series]
                for p in agg["by_period"]
            ],
        ),
        "",
        "![price path](price_path.png)",
        "",
        "Close price and least-cost price per period: the line is the median over seeds, "
        "the shaded band the 5th–95th percentile. Price axis from zero.",
        "",
        "![emissions vs allocation](emissions_vs_allocation.png)",
        "",
        "![compliance cost](compliance_cost.png)",
        "",
    ]
    md += sector_md(agg)
    md += [
        "## Files",
        "",
        "- `summary.json` — `<figure>_p05/_p50/_p95` for every headline figure, "
        "`<series>_<year>_p..` per period, `by_period`, `by_sector`, warnings with the seeds "
        "they occur in, each seed's state hash",
        "- `seeds.csv` — one row per seed",
        "- `timings.json` — wall times (the only file "
        "that differs between two runs of the same command)",
        "- PNG plots referenced above",
        "- `report.html` — this report as one self-contained page (plots embedded)",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    write_html(out)


def _seed_list(seeds: list[int]) -> str:
    if len(seeds) <= 6:
        return "seeds " + ", ".join(map(str, seeds))
    return f"seeds {seeds[0]}, {seeds[1]}, … {seeds[-1]}"


def _warnings_md(agg: dict) -> list[str]:
    if not agg["warnings"]:
        return [
            f"No warnings in any of the {agg['runs']} seeds (each seed's report checks "
            f"the allocation against business-as-usual, clearing and limit-locked days, "
            f"the allocation total, close vs least-cost price, the price cap, shortfalls "
            f"and Σ ΔQ = 0).",
            "",
        ]
    md = []
    for w in sorted(agg["warnings"], key=lambda w: -w["runs"]):
        md += [
            f"**Warning ({w['runs']} of {agg['runs']} seeds):** {w['example']} "
            f"(seed {w['example_seed']}; in seeds {_seed_list(w['seeds'])[6:]}).",
            "",
        ]
    return md


def sector_md(agg: dict) -> list[str]:
    years = agg["years"]
    md = [
        "## Output, intensity and emissions by sector",
        "",
        "Sums over each sector's firms, p50 [p05 – p95] over seeds. Output in 10,000 CNY; "
        "intensity = Σ verified emissions / Σ output (t CO2e per 10,000 CNY); *output vs "
        "trend* is output against what the same firms would have produced without the "
        "supply response (0 % when the scenario has none).",
        "",
    ]
    rows = []
    power = any("indirect_emissions" in d for d in agg["by_sector"].values())
    for name, d in agg["by_sector"].items():
        for t, y in enumerate(years):
            o, tr = d["output"][t], d["trend_output"][t]
            cut = (o["p50"] / tr["p50"] - 1) if tr["p50"] else 0.0
            rows.append(
                [name, str(y), _b(o), f"{cut * 100:+.2f} %", _b(d["emissions"][t])]
                + ([_b(d["indirect_emissions"][t])] if power else [])
                + [_b(d["intensity"][t], 4), _b(d["allocation"][t])]
            )
    md += [
        _table(
            ["sector", "period", "output", "output vs trend (p50)", "emissions t"]
            + (["indirect (electricity) t"] if power else [])
            + ["intensity", "allocation t"],
            rows,
        ),
        "",
        "![sectors](sectors.png)",
        "",
    ]
    if power:
        md += [
            "Indirect emissions: the sector's electricity × the grid factor (the "
            "generators' verified emissions per MWh consumed), counted once, at the "
            "generators; the clean share of supply per period is in the table above.",
            "",
        ]
    return md


def _b(b: dict, digits: int = 0) -> str:
    if b["p50"] is None:
        return "—"

    def f(v):
        return f"{v:,.{digits}f}"

    return f"{f(b['p50'])} [{f(b['p05'])} – {f(b['p95'])}]"


# ---------------------------------------------------------------------- plots
def _band_plot(ax, x, rows, key, label, color, scale=1.0, dx=0.0, ls="-"):
    lo = np.array([_nan(r[f"{key}_p05"]) for r in rows]) * scale
    mid = np.array([_nan(r[f"{key}_p50"]) for r in rows]) * scale
    hi = np.array([_nan(r[f"{key}_p95"]) for r in rows]) * scale
    x = np.asarray(x, dtype=float) + dx
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    ax.plot(x, mid, ls, marker="o", ms=4, color=color, label=f"{label} (median, p05–p95)")
    ax.errorbar(
        x, mid, yerr=[mid - lo, hi - mid], fmt="none", color=color, alpha=0.6, capsize=3, lw=0.9
    )


def _nan(v):
    return np.nan if v is None else v


def plot_price_bands(cells: list[tuple[str, dict]], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    years = cells[0][1]["years"]
    for k, (label, agg) in enumerate(cells):
        c = colors[k % len(colors)]
        dx = (k - (len(cells) - 1) / 2) * 0.04 if len(cells) > 1 else 0.0
        _band_plot(ax, years, agg["by_period"], "price", label or "close price", c, dx=dx)
        if len(cells) == 1:
            # set a little apart sideways: the two coincide when the market clears
            _band_plot(
                ax,
                years,
                agg["by_period"],
                "least_cost_price",
                "least-cost price",
                "tab:green",
                ls="--",
                dx=0.06,
            )
    ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.15)
    ax.set_xticks(years)
    ax.set_xlabel("period (series set a little apart sideways)")
    ax.set_ylabel("CNY / t")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(cells) > 4 else 1)
    _save(fig, path)


def plot_quantity_bands(agg: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.6))
    rows, years = agg["by_period"], agg["years"]
    for key, label, color, dx in (
        ("baseline_emissions", "business-as-usual", "0.45", 0.0),
        ("emissions", "verified emissions", "tab:blue", -0.06),
        ("allocation", "allocation issued", "tab:orange", 0.06),
    ):
        _band_plot(ax, years, rows, key, label, color, scale=1e-3, dx=dx)
    ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.1)
    ax.set_xticks(years)
    ax.set_ylabel("kt CO2e")
    ax.set_xlabel("period (series set a little apart sideways)")
    ax.set_title(f"Emissions against allocation, {agg['runs']} seeds (axis from zero)")
    ax.legend(fontsize=7.5, loc="lower left")
    _save(fig, path)


def plot_cost_bands(agg: dict, path: Path) -> None:
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4))
    rows, years = agg["by_period"], agg["years"]
    _band_plot(ax, years, rows, "compliance_cost", "compliance cost", "tab:blue", scale=1e-6)
    _band_plot(
        ax, years, rows, "abatement_cost", "abatement cost", "tab:purple", scale=1e-6, dx=0.05
    )
    ax.set_ylabel("million CNY")
    ax.set_title("Compliance cost by period")
    _band_plot(bx, years, rows, "offset_share", "offsets / obligation", "tab:green", scale=100)
    bx.set_ylabel("%")
    bx.set_title("Offset share of verified obligations")
    for a in (ax, bx):
        a.set_ylim(0, max(a.get_ylim()[1], 1e-9) * 1.1)
        a.set_xticks(years)
        a.legend(fontsize=7.5, loc="lower left")
    _save(fig, path)


def plot_sectors(agg: dict, path: Path) -> None:
    plt = _plt()
    sectors = list(agg["by_sector"])
    years = agg["years"]
    fig, axes = plt.subplots(3, len(sectors), figsize=(3.8 * len(sectors), 8.4), squeeze=False)
    for k, name in enumerate(sectors):
        d = agg["by_sector"][name]
        for r, (key, label, scale) in enumerate(
            (
                ("output", "output, M CNY", 1e-2),
                ("emissions", "emissions, kt", 1e-3),
                ("intensity", "t CO2e / 10,000 CNY", 1.0),
            )
        ):
            ax = axes[r][k]
            rows = [{f"v_{q}": b[q] for q in ("p05", "p50", "p95")} for b in d[key]]
            _band_plot(ax, years, rows, "v", key, "tab:blue", scale=scale)
            if key == "output" and any(
                b["p50"] != o["p50"] for b, o in zip(d["trend_output"], d["output"])
            ):
                rows = [{f"v_{q}": b[q] for q in ("p05", "p50", "p95")} for b in d["trend_output"]]
                _band_plot(
                    ax, years, rows, "v", "trend (no supply response)", "0.5", scale=scale, ls="--"
                )
            ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.1)
            ax.set_xticks(years)
            ax.tick_params(axis="x", labelrotation=45)
            ax.set_ylabel(label)
            if r == 0:
                ax.set_title(name)
                ax.legend(fontsize=6.5, loc="lower left")
    fig.suptitle(
        "Output, emissions and intensity by sector (median and p05–p95 over seeds; axes from zero)"
    )
    _save(fig, path)


# ---------------------------------------------------------------------- sweeps
COMPARE_FIGURES = [
    "final_price",
    "total_compliance_cost",
    "total_emissions",
    "offset_share_used",
    "total_abatement_cost",
    "sme_net_cost",
    "sme_benefit_vs_direct",
]


def write_sweep(
    cells: list,
    aggs: list[dict],
    runs: list[list[dict]],
    out: Path,
    keys: list[str],
    command: str = "",
    timings: dict | None = None,
) -> None:
    """cells, aggs and runs in grid order; the first cell is the reference."""
    out.mkdir(parents=True, exist_ok=True)
    for cell, agg, rr in zip(cells, aggs, runs):
        d = out / "cells" / cell.label
        d.mkdir(parents=True, exist_ok=True)
        _dump(d / "summary.json", agg)
        _write_dicts(d / "seeds.csv", seed_rows(rr))
    if timings is not None:
        _dump(out / "timings.json", timings)
    figs = [
        (k, lab, u)
        for k, lab, u in HEADLINE + SME_HEADLINE
        if k in COMPARE_FIGURES and f"{k}_p50" in aggs[0]
    ]
    figs.sort(key=lambda h: COMPARE_FIGURES.index(h[0]))
    # the supply response's output cuts, where every cell has them
    figs += [
        h
        for h in supply_headline(aggs[0])
        if h[0] != "output_vs_trend" and all(f"{h[0]}_p50" in a for a in aggs)
    ]
    ref = runs[0]
    rows = []
    for cell, agg, rr in zip(cells, aggs, runs):
        row = {"cell": cell.label}
        row.update({k: cell.params[k] for k in keys})
        row["seeds"] = agg["runs"]
        for k, _, _ in figs:
            for q in ("p05", "p50", "p95"):
                row[f"{k}_{q}"] = agg[f"{k}_{q}"]
        for k, _, _ in figs:
            d = paired_difference(ref, rr, k)
            for q in ("p05", "p50", "p95"):
                row[f"{k}_diff_{q}"] = d[q]
            row[f"{k}_exceeds_noise"] = d["exceeds_noise"]
            row[f"{k}_bands_overlap"] = bands_overlap(aggs[0], agg, k)
        rows.append(row)
    _dump(
        out / "compare.json",
        {
            "keys": keys,
            "reference": cells[0].label,
            "seeds": aggs[0]["seeds"],
            "rule": NOISE_RULE,
            "cells": rows,
        },
    )
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: _num(v) for k, v in r.items()} for r in rows)
    n = aggs[0]["runs"]
    md = [f"# Sweep: {' × '.join(keys)} ({len(cells)} cells × {n} seeds)", ""]
    if command:
        md += [f"Reproduce: `{command}`", ""]
    common = all(a["seeds"] == aggs[0]["seeds"] for a in aggs)
    md += [
        (
            f"Every cell runs the same {n} seeds ({_seed_list(aggs[0]['seeds'])}): common "
            f"random numbers, so a difference between two cells is the parameter's, seed by "
            f"seed."
            if common
            else f"Each cell runs its own {n} seed(s) (the sweep varies the seed), so cells share "
            f"no seed and there are no paired differences: compare their bands."
        )
        + " Figures: median over seeds [5th – 95th percentile].",
        "",
        "## Cells",
        "",
        _table(
            ["cell"] + [f"{lab} ({'%' if u == 'share' else u})" for _, lab, u in figs],
            [[c.label] + [band_text(a, k, u) for k, _, u in figs] for c, a in zip(cells, aggs)],
        ),
        "",
        f"## Differences from the reference cell `{cells[0].label}`",
        "",
        NOISE_RULE,
        "",
        _table(
            ["cell"] + [lab for _, lab, _ in figs],
            [[r["cell"]] + [_diff_text(r, k, u) for k, _, u in figs] for r in rows[1:]],
        )
        if len(rows) > 1
        else "(one cell only)",
        "",
        "**bold ✱**: larger than the seed noise by the paired rule; ◇: the cells' own "
        "p05–p95 bands do not even overlap (a stricter test).",
        "",
    ]
    warn = [(c.label, w) for c, a in zip(cells, aggs) for w in a["warnings"]]
    if warn:
        md += (
            ["## Warnings", ""]
            + [f"- `{lab}` ({w['runs']} of {n} seeds): {w['example']}" for lab, w in warn]
            + [""]
        )
    md += [
        "![cells](compare.png)",
        "",
        "Each cell's median (dot) and 5th–95th percentile band (bar); a filled dot differs "
        "from the reference cell by more than the seed noise. Axes from zero.",
        "",
        "![price paths](compare_price.png)",
        "",
    ]
    (out / "compare.md").write_text("\n".join(md))
    plot_compare(cells, aggs, rows, figs, out / "compare.png")
    plot_price_bands(
        [(c.label, a) for c, a in zip(cells, aggs)],
        out / "compare_price.png",
        f"Close price by cell, median and p05–p95 over {n} seeds",
    )
    write_html(out, "compare.md", "compare.html")


NOISE_RULE = (
    "Rule: a cell's figure differs from the reference cell's by more than the seed "
    "noise when the 5th–95th percentile band of the **per-seed difference** (cell "
    "minus reference, the same seed in both) lies entirely above or entirely below "
    "zero. Shown as median difference [p05 – p95]."
)


def _diff_text(r: dict, k: str, unit: str) -> str:
    if r.get(f"{k}_diff_p50") is None:
        return "—"
    t = (
        f"{fmt(r[f'{k}_diff_p50'], unit)} [{fmt(r[f'{k}_diff_p05'], unit)} – "
        f"{fmt(r[f'{k}_diff_p95'], unit)}]"
    )
    if r[f"{k}_exceeds_noise"]:
        t = f"**{t} ✱**"
    if r[f"{k}_bands_overlap"] is False:
        t += " ◇"
    return t


def plot_compare(cells, aggs, rows, figs, path: Path) -> None:
    plt = _plt()
    k = len(figs)
    cols = min(k, 3)
    nr = (k + cols - 1) // cols
    fig, axes = plt.subplots(nr, cols, figsize=(5.2 * cols, 3.6 * nr + 0.8), squeeze=False)
    x = np.arange(len(cells))
    names = [c.label.replace(",", "\n") for c in cells]
    for j, (key, label, unit) in enumerate(figs):
        ax = axes[j // cols][j % cols]
        scale = (
            100.0
            if unit == "share"
            else (1e-6 if unit == "CNY" else (1e-3 if unit == "t" else 1.0))
        )
        su = {100.0: "%", 1e-6: "M CNY", 1e-3: "kt"}.get(scale, unit)
        mid = np.array([_nan(a[f"{key}_p50"]) for a in aggs]) * scale
        lo = np.array([_nan(a[f"{key}_p05"]) for a in aggs]) * scale
        hi = np.array([_nan(a[f"{key}_p95"]) for a in aggs]) * scale
        ax.errorbar(
            x, mid, yerr=[mid - lo, hi - mid], fmt="none", color="tab:blue", capsize=4, lw=1.4
        )
        filled = np.array([i == 0 or rows[i][f"{key}_exceeds_noise"] for i in range(len(cells))])
        ax.plot(x[filled], mid[filled], "o", color="tab:blue", ms=7)
        ax.plot(x[~filled], mid[~filled], "o", mfc="white", color="tab:blue", ms=7)
        ax.plot(x[:1], mid[:1], "s", color="black", ms=5, label="reference cell")
        lo_all = np.nanmin(lo) if np.isfinite(lo).any() else 0.0
        top = np.nanmax(hi) if np.isfinite(hi).any() else 1.0
        if lo_all >= 0:
            ax.set_ylim(0, max(top, 1e-9) * 1.1)
        else:
            ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(x, names, fontsize=7)
        ax.set_xlim(-0.5, len(cells) - 0.5)
        ax.set_title(f"{label}, {su}", fontsize=9.5)
    for j in range(k, nr * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        "Cells of the sweep: median and p05–p95 over seeds (filled: differs from "
        "the reference by more than the seed noise)",
        fontsize=10,
    )
    _save(fig, path)
