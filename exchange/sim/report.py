"""Outputs of a run: summary.json, firms.csv, periods.csv, rounds.csv, PNG plots, report.md."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .runner import RECORD_FIELDS, RunResult


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _num(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 2 ** 53 else round(f, 6)
    return v


def write_summary(res: RunResult, out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(res.summary, indent=2, default=_num) + "\n")


def write_firms_csv(res: RunResult, out: Path) -> None:
    rec = res.records
    cols = [rec[k] for k in RECORD_FIELDS]
    year0 = res.scenario.scenario.start_year
    with open(out / "firms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("period", "year", "firm_id", "sector", "size_class", "chain", "tier")
                   + RECORD_FIELDS)
        for t in range(res.periods):
            rows = np.stack([c[t] for c in cols], axis=1)
            ints = np.all(rows == np.round(rows), axis=0)
            for i, fid in enumerate(res.ids):
                vals = [int(v) if ints[j] else ("" if v != v else round(float(v), 4))
                        for j, v in enumerate(rows[i])]
                w.writerow([t + 1, year0 + t, fid, res.sector[i], res.size_class[i],
                            res.chain[i], res.tier[i] if res.tier[i] >= 0 else ""] + vals)


def _write_dicts(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _num(v) for k, v in r.items()})


# ---------------------------------------------------------------------- plots
def plot_price_path(res: RunResult, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(1, len(res.rounds) + 1)
    ind = [r["indicative"] for r in res.rounds]
    vw = [r["vwap"] if r["vwap"] is not None else np.nan for r in res.rounds]
    ax.plot(x, ind, "-", color="tab:blue", label="indicative clearing price (call)")
    ax.plot(x, vw, "o", ms=3, color="tab:orange", label="VWAP of the round's trades")
    start = 1
    for p in res.period_rows:
        n = sum(1 for r in res.rounds if r["period"] == p["period"])
        end = start + n - 1
        ax.hlines(p["least_cost_price"], start, end, colors="tab:green", linestyles="--",
                  label="least-cost price" if start == 1 else None)
        if p.get("analytic_price"):
            ax.hlines(p["analytic_price"], start, end, colors="black", linestyles=":",
                      label="analytic p* = R / sum(1/c)" if start == 1 else None)
        ax.axvline(end + 0.5, color="0.85", lw=0.8)
        start = end + 1
    ax.set_xlabel("trading round (periods separated by grey lines)")
    ax.set_ylabel("CNY / t")
    ax.set_title(f"{res.scenario.scenario.name}: allowance price path")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_emissions_vs_allocation(res: RunResult, path: Path) -> None:
    plt = _plt()
    rec = res.records
    years = [p["year"] for p in res.period_rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(years, rec["baseline_emissions"].sum(axis=1) / 1e3, "--", color="0.5",
            label="baseline (no abatement)")
    ax.plot(years, rec["emissions"].sum(axis=1) / 1e3, "o-", label="verified emissions")
    ax.plot(years, rec["allocation"].sum(axis=1) / 1e3, "s-", label="allocation")
    ax.plot(years, (rec["allocation"].sum(axis=1) + rec["offsets_used"].sum(axis=1)) / 1e3,
            ":", label="allocation + offsets used")
    ax.set_xlabel("period")
    ax.set_ylabel("kt CO2e")
    ax.set_xticks(years)
    ax.set_title("Emissions against allocation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sector_intensity(res: RunResult) -> dict[str, list[float]]:
    rec = res.records
    sectors = sorted(set(res.sector))
    sec = np.array(res.sector)
    out = {}
    for s in sectors:
        sel = sec == s
        out[s] = [float(rec["emissions"][t, sel].sum() / max(rec["output"][t, sel].sum(), 1e-12))
                  for t in range(res.periods)]
    return out


def plot_intensity(res: RunResult, path: Path) -> None:
    plt = _plt()
    rec = res.records
    years = [p["year"] for p in res.period_rows]
    inten = sector_intensity(res)
    sec = np.array(res.sector)
    fig, axes = plt.subplots(1, len(inten), figsize=(3.6 * len(inten), 3.8), squeeze=False)
    for ax, (s, vals) in zip(axes[0], inten.items()):
        ax.plot(years, vals, "o-", label="verified (output-weighted)")
        b = rec["benchmark"][:, sec == s]
        if b.size and not np.all(np.isnan(b)):
            ax.plot(years, np.nanmean(b, axis=1), "--", label="benchmark")
        ax.set_title(s)
        ax.set_xticks(years)
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_ylabel("t CO2e per 10,000 CNY")
        ax.legend(fontsize=7)
    fig.suptitle("Emission intensity by sector")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_factors(res: RunResult, path: Path) -> None:
    plt = _plt()
    rec = res.records
    covered = rec["pre_allocation"].sum(axis=0) + rec["true_up"].sum(axis=0) > 0
    fig, ax = plt.subplots(figsize=(7, 4))
    first, last = rec["phi"][0, covered], rec["phi"][-1, covered]
    bins = np.linspace(min(first.min(initial=1), last.min(initial=1)) - 0.01,
                       max(first.max(initial=1), last.max(initial=1)) + 0.01, 30)
    ax.hist(first, bins=bins, alpha=0.5, label=f"period 1 (n={covered.sum()})")
    ax.hist(last, bins=bins, alpha=0.5, label=f"period {res.periods}")
    ax.set_xlabel("allocation factor phi")
    ax.set_ylabel("firms")
    ax.set_title("Distribution of allocation factors")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sme_strategies(strategies: dict[str, dict], path: Path) -> None:
    plt = _plt()
    names = list(strategies)
    rev = [strategies[k]["sme_revenue"] / 1e3 for k in names]
    pen = [strategies[k]["sme_penalties"] / 1e3 for k in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.bar(x - 0.2, rev, 0.4, label="SME sales revenue (their share)")
    ax.bar(x + 0.2, pen, 0.4, label="SME penalties")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("thousand CNY")
    ax.set_title("SME revenue by sub-quota split strategy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- report.md
def _table(headers: list[str], rows: list[list]) -> str:
    def f(v):
        if isinstance(v, float):
            return f"{v:,.2f}"
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(f(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def sme_stats(res: RunResult) -> dict:
    sme = np.array([s == "sme" for s in res.size_class]) & np.array([c != "" for c in res.chain])
    rec = res.records
    return {"sme_revenue": float(rec["sme_revenue"][:, sme].sum()),
            "sme_penalties": float(rec["penalty"][:, sme].sum()),
            "sme_shortfall": int(rec["shortfall"][:, sme].sum()),
            "sme_sub_quota": int(rec["sub_quota_in"][:, sme].sum()),
            "sme_abatement_cost": float(rec["abatement_cost"][:, sme].sum()),
            "smes": int(sme.sum())}


def write_report(res: RunResult, out: Path, strategies: dict[str, dict] | None = None,
                 command: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_summary(res, out)
    write_firms_csv(res, out)
    _write_dicts(out / "periods.csv", res.period_rows)
    _write_dicts(out / "rounds.csv", res.rounds)
    plot_price_path(res, out / "price_path.png")
    plot_emissions_vs_allocation(res, out / "emissions_vs_allocation.png")
    plot_intensity(res, out / "intensity_by_sector.png")
    plot_factors(res, out / "allocation_factors.png")
    if strategies:
        plot_sme_strategies(strategies, out / "sme_revenue_by_strategy.png")
    s = res.summary
    sc = res.scenario
    md = [f"# Simulation report: {sc.scenario.name}", ""]
    if sc.scenario.description:
        md += [sc.scenario.description, ""]
    md += [f"{s['firms']:,} firms, {s['periods']} periods, seed {s['seed']}; "
           f"{s['commands']:,} commands through the exchange core, {s['trades']:,} trades, "
           f"{s['volume']:,} t traded; run time {s['runtime_s']:.1f} s.",
           f"Reproduce: `{command}`" if command else "", "", "## Summary", ""]
    rows = [["mean price (CNY/t, volume-weighted)", s["mean_price"] or 0.0],
            ["final price (CNY/t, last call)", s["final_price"]]]
    if s.get("analytic_price") is not None:
        ap = s["analytic_price"]
        rows += [["analytic price p* = R / Σ(1/c_i) (CNY/t)", ap],
                 ["final price vs p*", f"{(s['final_price'] / ap - 1) * 100:+.3f} %"]]
    rows += [["total verified emissions (t)", s["total_emissions"]],
             ["total allocation (t)", s["total_allocation"]],
             ["total abatement (t)", s["total_abatement"]],
             ["total abatement cost (CNY)", s["total_abatement_cost"]],
             ["least-cost abatement cost (CNY)", s["least_cost_abatement_cost"]]]
    if s["least_cost_abatement_cost"]:
        rows.append(["abatement cost vs least-cost", f"{(s['total_abatement_cost'] / s['least_cost_abatement_cost'] - 1) * 100:+.3f} %"])
    rows.append(["no-trade abatement cost (CNY)", s["no_trade_abatement_cost"]])
    if s["no_trade_abatement_cost"]:
        rows.append(["saving from trading vs no trade", f"{(1 - s['total_abatement_cost'] / s['no_trade_abatement_cost']) * 100:.1f} %"])
    rows += [["offset share of obligations", f"{s['offset_share_used'] * 100:.2f} %"],
             ["penalties (CNY)", s["total_penalties"]],
             ["shortfall (t)", s["total_shortfall"]],
             ["SME sales revenue (CNY)", s["sme_revenue"]],
             ["Σ ΔQ = 0 every period (bought = sold)", "yes" if s["conservation_ok"] else "NO"]]
    md += [_table(["measure", "value"], rows), "", "## By period", ""]
    prow = []
    for p in res.period_rows:
        prow.append([str(p["year"]), p["close_price"], p["least_cost_price"], p["vwap"], p["volume"],
                     p["emissions"], p["allocation"], p["abatement_cost"],
                     p["no_trade_abatement_cost"], p["offsets_used"], p["shortfall"],
                     p["non_compliant"], p["net_bought_sum"]])
    md += [_table(["period", "close", "least-cost p", "VWAP", "volume t", "emissions t",
                   "allocation t", "abatement cost", "no-trade cost", "offsets t",
                   "shortfall t", "non-compliant", "Σ ΔQ"], prow), "",
           "![price path](price_path.png)", "",
           "![emissions vs allocation](emissions_vs_allocation.png)", "",
           "## Intensity by sector", ""]
    inten = sector_intensity(res)
    years = [p["year"] for p in res.period_rows]
    md += [_table(["sector"] + [str(y) for y in years],
                  [[k] + [f"{v:.4f}" for v in vals] for k, vals in inten.items()]), "",
           "![intensity by sector](intensity_by_sector.png)", "",
           "## Allocation factors", ""]
    rec = res.records
    covered = (rec["pre_allocation"].sum(axis=0) + rec["true_up"].sum(axis=0)) != 0
    frows = []
    for t, p in enumerate(res.period_rows):
        ph = rec["phi"][t, covered] if covered.any() else rec["phi"][t]
        frows.append([str(p["year"]), f"{ph.mean():.4f}", f"{ph.min():.4f}",
                      f"{ph.max():.4f}", int((ph > 1).sum()), int((ph < 1).sum())])
    md += ["φ of firms allocated by the rules, at the start of each period (it changes at "
           "ClosePeriod from the verified gap to the benchmark and the supply-chain coupling):",
           "", _table(["period", "mean φ", "min", "max", "φ > 1", "φ < 1"], frows), "",
           "![allocation factors](allocation_factors.png)", ""]
    if strategies:
        md += ["## SME revenue by split strategy", "",
               "The scenario rerun once per sub-quota split strategy (same seed):", "",
               _table(["strategy", "SME revenue (CNY)", "SME penalties (CNY)",
                       "SME shortfall (t)", "sub-quota granted (t)", "final price"],
                      [[k, v["sme_revenue"], v["sme_penalties"], v["sme_shortfall"],
                        v["sme_sub_quota"], v["final_price"]] for k, v in strategies.items()]),
               "", "![SME revenue by strategy](sme_revenue_by_strategy.png)", ""]
    md += ["## Files", "",
           "- `summary.json` — headline figures and a per-period breakdown",
           "- `firms.csv` — one row per firm and period",
           "- `periods.csv`, `rounds.csv` — per period and per trading round",
           "- PNG plots referenced above", ""]
    (out / "report.md").write_text("\n".join(md))
