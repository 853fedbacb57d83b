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
        return int(f) if f.is_integer() and abs(f) < 2**53 else round(f, 6)
    return v


def write_summary(res: RunResult, out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(res.summary, indent=2, default=_num) + "\n")


def write_firms_csv(res: RunResult, out: Path) -> None:
    rec = res.records
    cols = [rec[k] for k in RECORD_FIELDS]
    year0 = res.scenario.scenario.start_year
    with open(out / "firms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ("period", "year", "firm_id", "sector", "size_class", "chain", "tier") + RECORD_FIELDS
        )
        for t in range(res.periods):
            rows = np.stack([c[t] for c in cols], axis=1)
            ints = np.all(rows == np.round(rows), axis=0)
            for i, fid in enumerate(res.ids):
                vals = [
                    int(v) if ints[j] else ("" if v != v else round(float(v), 4))
                    for j, v in enumerate(rows[i])
                ]
                w.writerow(
                    [
                        t + 1,
                        year0 + t,
                        fid,
                        res.sector[i],
                        res.size_class[i],
                        res.chain[i],
                        res.tier[i] if res.tier[i] >= 0 else "",
                    ]
                    + vals
                )


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


# ---------------------------------------------------------------------- checks
# Thresholds of the warnings and trends: a report that says "no warnings" must say what it
# checked against, so they live here by name.
PRICE_GAP = 0.05  # close price vs least-cost price
PRICE_FALL = 0.30  # price fall over the run that, with rising emissions, is a trend
BOUND_SHARE = 0.10  # share of firms at phi_min / phi_max that counts as piling up
TOTAL_TOL = 0.001  # rules' allocation vs the intensity total, beyond per-firm rounding
INTENSITY_NOISE = 0.001  # whole-tonne emissions and offset lots move intensity by less


def _years(rows: list[dict]) -> str:
    return ", ".join(str(p["year"]) for p in rows)


def _pct(a: float, b: float) -> str:
    if not b:
        return "n/a"
    d = (a / b - 1) * 100
    return "0.00 %" if abs(d) < 0.005 else f"{d:+.2f} %"


def _ranges(days: list[int]) -> str:
    """[2, 3, 4, 7] -> '2–4, 7'."""
    out, i = [], 0
    while i < len(days):
        j = i
        while j + 1 < len(days) and days[j + 1] == days[j] + 1:
            j += 1
        out.append(str(days[i]) if i == j else f"{days[i]}–{days[j]}")
        i = j + 1
    return ", ".join(out)


def locked_days(res: RunResult) -> dict[int, list[tuple[int, str]]]:
    """Per period, the trading days (round numbers) that ended limit-locked, with direction."""
    out: dict[int, list[tuple[int, str]]] = {p["period"]: [] for p in res.period_rows}
    for r in res.rounds:
        if r.get("phase", "trading") == "trading" and r.get("limit_locked"):
            out.setdefault(r["period"], []).append((int(r["round"]), str(r["limit_locked"])))
    return out


def _last_day_locked(res: RunResult, period: int) -> str:
    days = [
        r for r in res.rounds if r["period"] == period and r.get("phase", "trading") == "trading"
    ]
    return str(days[-1].get("limit_locked") or "") if days else ""


def _covered(res: RunResult) -> np.ndarray:
    rec = res.records
    return (rec["pre_allocation"].sum(axis=0) + rec["true_up"].sum(axis=0)) != 0


def _issued_before_deductions(res: RunResult) -> np.ndarray:
    """Per period, the allocation issued (SME sub-quota pools included, as in the target)
    plus what was deducted for last period's shortfalls: the quantity the period total
    allocation_target fixes."""
    rec = res.records
    return rec["allocation"].sum(axis=1) + rec["deduction"].sum(axis=1)


def findings(res: RunResult) -> tuple[list[str], list[str]]:
    """(warnings, what was checked): the conditions under which the run's prices and costs
    must not be read at face value."""
    rows, s, sc = res.period_rows, res.summary, res.scenario
    warn: list[str] = []
    checked: list[str] = []

    # (a) nothing to abate: the price has nothing to find but zero
    checked.append("allocation and allowances available vs business-as-usual emissions")
    over = [
        p
        for p in rows
        if p["allocation"] >= p["baseline_emissions"]
        or p["allowances_available"] >= p["baseline_emissions"]
    ]
    if over:
        worst_a = max(p["allocation"] / max(p["baseline_emissions"], 1e-9) for p in over)
        worst_h = max(p["allowances_available"] / max(p["baseline_emissions"], 1e-9) for p in over)
        line = (
            f"allocation at or above business-as-usual emissions in {_years(over)}: "
            f"nothing needs abating, the price collapses (allocation up to "
            f"{(worst_a - 1) * 100:+.1f} % vs BAU, allowances available incl. bank up to "
            f"{(worst_h - 1) * 100:+.1f} %)."
        )
        neg = [p for p in over if p.get("analytic_price") is not None and p["analytic_price"] < 0]
        if neg:
            line += (
                f" The closed form p* = R / Σ(1/c) is negative there ({_years(neg)}: "
                f"R < 0) and does not apply; the least-cost price is 0."
            )
        warn.append(line)

    # (b) prices that are not clearing prices
    checked.append("clearing and limit-locked trading days")
    last = rows[-1]
    last_lock = _last_day_locked(res, last["period"])
    if not last["cleared"] or last_lock:
        why = []
        if last_lock:
            why.append(f"limit-locked {last_lock} on its last trading day")
        if not last["cleared"]:
            why.append("not cleared")
        warn.append(
            f"the last period ({last['year']}) ended {' and '.join(why)}: its close "
            f"price {last['close_price']:.2f} CNY/t is the edge of the band or of "
            f"the bid grid, not a market-clearing price."
        )
    earlier = [p for p in rows[:-1] if not p["cleared"]]
    if earlier:
        warn.append(
            f"the market had not cleared by the last trading day of "
            f"{_years(earlier)}: those close prices are not clearing prices."
        )
    locks = locked_days(res)
    if any(locks.values()) or any(p["limit_locked_days"] for p in rows):
        parts = []
        for p in rows:
            d = locks.get(p["period"], [])
            if d:
                dirs = "/".join(sorted({x for _, x in d}))
                parts.append(
                    f"{p['year']}: day{'s' if len(d) > 1 else ''} "
                    f"{_ranges([k for k, _ in d])} ({dirs}) of {p['trading_days']}"
                )
            elif p["limit_locked_days"]:
                parts.append(f"{p['year']}: {p['limit_locked_days']} day(s)")
        warn.append(
            f"limit-locked trading days ({s.get('limit_locked_days', 0)} in all): "
            + "; ".join(parts)
            + "."
        )

    # (c) the allocation total: an explicit opt-in, or a promise the rules did not keep
    mode = s.get("allocation_total", "fixed")
    checked.append(f"the allocation total ({mode})")
    if mode in ("intensity", "floating"):
        issued = _issued_before_deductions(res)
        target = np.array([p["allocation_target"] for p in rows], dtype=float)
        tot_i, tot_t = float(issued.sum()), float(target.sum())
        if mode == "floating":
            warn.append(
                f"the allocation total moves with φ (opt-in): allocation was "
                f"{tot_i:,.0f} t vs the benchmark total {tot_t:,.0f} t "
                f"({_pct(tot_i, tot_t)}) over the run, {_pct(issued[-1], target[-1])} "
                f"in {rows[-1]['year']}."
            )
        else:
            slack = np.maximum(TOTAL_TOL * target, float(_covered(res).sum()))
            off = [p for p, i, t, sl in zip(rows, issued, target, slack) if abs(i - t) > sl]
            if off:
                worst = max(
                    off,
                    key=lambda p: abs(issued[p["period"] - 1] / max(p["allocation_target"], 1) - 1),
                )
                k = worst["period"] - 1
                warn.append(
                    f"the rules did not hold the intensity total Σ benchmark × output in "
                    f"{_years(off)}: they issued {issued[k]:,.0f} t vs {target[k]:,.0f} t "
                    f"({_pct(issued[k], target[k])}) in {worst['year']}, {tot_i:,.0f} t vs "
                    f"{tot_t:,.0f} t over the run. Firms planned their abatement, and "
                    f"the least-cost and no-trade figures were computed, on the total: the "
                    f"difference ends up banked or short."
                )

    # (d) the market's price against the least-cost price
    checked.append(f"close vs least-cost price (± {PRICE_GAP * 100:.0f} %)")
    gaps = []
    for p in rows:
        lc = p["least_cost_price"]
        if (lc > 0 and abs(p["close_price"] / lc - 1) > PRICE_GAP) or (
            lc <= 0 and p["close_price"] > 0.01
        ):
            gaps.append(p)
    if gaps and gaps[-1] is last:
        lc = last["least_cost_price"]
        more = [p for p in gaps if p is not last]
        warn.append(
            f"the final close price {last['close_price']:.2f} CNY/t differs from the "
            f"least-cost price {lc:.2f} CNY/t "
            + (
                f"by {_pct(last['close_price'], lc)}"
                if lc > 0
                else "(at a least-cost price of 0 any positive price is too high)"
            )
            + (f"; also more than {PRICE_GAP * 100:.0f} % apart in {_years(more)}" if more else "")
            + "."
        )
    elif gaps:
        warn.append(
            f"the close price was more than {PRICE_GAP * 100:.0f} % from the "
            f"least-cost price in {_years(gaps)} (the final period is within)."
        )

    # (e) the cap: agents bid no higher, so the price says nothing above it
    checked.append(f"the price cap ({sc.market.price_cap:,.0f} CNY/t)")
    cap = [p for p in rows if p.get("price_at_cap")]
    if cap:
        warn.append(
            f"the price reached the cap of {sc.market.price_cap:,.2f} CNY/t in "
            f"{_years(cap)}: demand above the cap is not priced."
        )

    # (f) firms that ended short, and what it cost them
    checked.append("shortfalls and penalties")
    short = [p for p in rows if p["shortfall"] > 0]
    if short:
        mx = int(res.records["shortfall"].max())
        warn.append(
            f"{sum(p['non_compliant'] for p in short):,} firm-periods ended short of "
            f"allowances in {_years(short)}: {s['total_shortfall']:,} t in all "
            f"(largest single shortfall {mx:,} t), penalties "
            f"{s['total_penalties']:,.0f} CNY (not part of the compliance cost)."
        )

    checked.append("Σ ΔQ = 0")
    if not s.get("conservation_ok", True):
        warn.append("bought ≠ sold in some period (Σ ΔQ ≠ 0): the trade records are inconsistent.")
    if s.get("skipped_commands") or s.get("tolerated_rejects"):
        n = sum(s.get("skipped_commands", {}).values()) + sum(
            s.get("tolerated_rejects", {}).values()
        )
        warn.append(
            f"{n:,} commands were skipped or refused by the server and tolerated "
            f"(see summary.json): the run is not the in-process run."
        )
    return warn, checked


def trends(res: RunResult) -> tuple[list[str], list[str]]:
    """(trends against the policy's goal, what was checked)."""
    rows, rec, sc = res.period_rows, res.records, res.scenario
    out: list[str] = []
    checked: list[str] = []
    if res.periods < 2:
        return out, ["nothing: a single period has no trend"]
    y0, y1 = rows[0]["year"], rows[-1]["year"]

    checked.append(
        f"output-weighted verified intensity by sector (rise > {INTENSITY_NOISE * 100:g} %)"
    )
    sec = np.array(res.sector)
    for s_name, vals in sector_intensity(res).items():
        a, b = vals[0], vals[-1]
        if a > 0 and b > a * (1 + INTENSITY_NOISE):
            sel = sec == s_name
            bau = [
                float(
                    rec["baseline_emissions"][t, sel].sum()
                    / max(rec["output"][t, sel].sum(), 1e-12)
                )
                for t in (0, -1)
            ]
            out.append(
                f"intensity of {s_name} rose {(b / a - 1) * 100:.1f} % from {y0} to {y1} "
                f"({a:.4f} → {b:.4f} t CO2e per 10,000 CNY), against the policy's "
                f"goal (its business-as-usual intensity moved {_pct(bau[1], bau[0])})."
            )

    checked.append(f"allocation factors at φ_min / φ_max (> {BOUND_SHARE * 100:.0f} % of firms)")
    cov = _covered(res)
    phi = rec["phi"][-1, cov] if cov.any() else rec["phi"][-1]
    r = sc.rules
    n_lo = int(np.sum(np.abs(phi - r.phi_min) < 1e-6))
    n_hi = int(np.sum(np.abs(phi - r.phi_max) < 1e-6))
    if phi.size and (n_lo + n_hi) / phi.size > BOUND_SHARE:
        # firms one step from a bound reach it next period unless their gap turns
        step = max(r.max_step, 1e-6)
        near = int(
            np.sum(
                ((phi < r.phi_min * (1 + step)) | (phi > r.phi_max * (1 - step)))
                & (np.abs(phi - r.phi_min) >= 1e-6)
                & (np.abs(phi - r.phi_max) >= 1e-6)
            )
        )
        out.append(
            f"allocation factors pile at their bounds in {y1}: {n_hi} of {phi.size} "
            f"firms at φ_max {r.phi_max:g} and {n_lo} at φ_min {r.phi_min:g} "
            f"({(n_lo + n_hi) / phi.size * 100:.0f} %), {near} more within one step "
            f"({r.max_step:g}) of a bound; the bounds, not the benchmark gap, set "
            f"their allocation."
        )

    checked.append(f"price falling > {PRICE_FALL * 100:.0f} % while emissions rise")
    p0, p1 = rows[0]["close_price"], rows[-1]["close_price"]
    e0, e1 = rows[0]["emissions"], rows[-1]["emissions"]
    if p0 > 0 and p1 < p0 * (1 - PRICE_FALL) and e1 > e0:
        lc0, lc1 = rows[0]["least_cost_price"], rows[-1]["least_cost_price"]
        r0, r1 = rows[0]["required_reduction"], rows[-1]["required_reduction"]
        out.append(
            f"the price fell {(1 - p1 / p0) * 100:.1f} % ({p0:.2f} → {p1:.2f} CNY/t) "
            f"from {y0} to {y1} while verified emissions rose "
            f"{(e1 / e0 - 1) * 100:.1f} %; the least-cost price "
            f"moved {lc0:.2f} → {lc1:.2f} CNY/t as the required reduction (BAU − "
            f"allowances) went from {r0:,.0f} to {r1:,.0f} t: the allocation loosens "
            f"against business-as-usual, against the policy's goal."
        )
    return out, checked


# ---------------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    """Every plot of a report: laid out, written at one resolution, and released."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def _zero_floor(ax) -> None:
    lo, hi = ax.get_ylim()
    ax.set_ylim(0, max(hi, 1e-9))


def _period_spans(res: RunResult) -> list[tuple[dict, int, int]]:
    """(period row, first round, last round) on the x axis of the price path (1-based)."""
    spans, start = [], 1
    for p in res.period_rows:
        n = sum(1 for r in res.rounds if r["period"] == p["period"])
        spans.append((p, start, start + n - 1))
        start += n
    return spans


def _step(spans, key) -> tuple[list[float], list[float]]:
    xs = [a - 0.5 for _, a, _ in spans] + [spans[-1][2] + 0.5]
    ys = [float(p[key]) for p, _, _ in spans]
    return xs, ys + ys[-1:]


def plot_price_path(res: RunResult, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    x = np.arange(1, len(res.rounds) + 1)
    ind = np.array([r["indicative"] for r in res.rounds], dtype=float)
    vw = [r["vwap"] if r["vwap"] is not None else np.nan for r in res.rounds]
    spans = _period_spans(res)
    for p, a, b in spans:
        settle = [k for k in range(a, b + 1) if res.rounds[k - 1].get("phase") == "settlement"]
        if settle:
            ax.axvspan(
                settle[0] - 0.5,
                settle[-1] + 0.5,
                color="0.93",
                lw=0,
                label="settlement rounds" if p is spans[0][0] else None,
            )
        ax.axvline(b + 0.5, color="0.8", lw=0.8)
    ax.plot(x, ind, "-", color="tab:blue", lw=1.4, label="indicative clearing price (call)")
    ax.plot(x, vw, "o", ms=3, color="tab:orange", label="VWAP of the round's trades")
    xs, ys = _step(spans, "least_cost_price")
    ax.step(
        xs,
        ys,
        where="post",
        color="tab:green",
        lw=2.2,
        alpha=0.85,
        label="least-cost price (same allocation path)",
    )
    if all(p.get("analytic_price") is not None for p in res.period_rows):
        xs, ys = _step(spans, "analytic_price")
        ax.step(
            xs, ys, where="post", color="black", lw=1.2, ls=":", label="analytic p* = R / Σ(1/c)"
        )
    close_x = []
    for p, a, b in spans:
        days = [k for k in range(a, b + 1) if res.rounds[k - 1].get("phase") != "settlement"]
        close_x.append(days[-1] if days else b)
    ax.plot(
        close_x,
        [p["close_price"] for p, _, _ in spans],
        "D",
        ms=6,
        mfc="none",
        color="tab:red",
        label="period close",
    )
    lk = [k for k in x if res.rounds[k - 1].get("limit_locked")]
    if lk:
        ax.plot(lk, ind[np.array(lk) - 1], "x", ms=7, color="crimson", label="limit-locked day")
    for p, a, b in spans:
        ax.text(
            (a + b) / 2,
            0.02,
            str(p["year"]),
            transform=ax.get_xaxis_transform(),
            ha="center",
            fontsize=8,
            color="0.4",
        )
    # from zero, with headroom above the prices for the legend
    ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.3)
    ax.set_xlim(0.5, len(res.rounds) + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trading round (periods separated by grey lines; settlement rounds shaded)")
    ax.set_ylabel("CNY / t")
    ax.set_title(f"{res.scenario.scenario.name}: allowance price path")
    ax.legend(fontsize=7.5, loc="upper center", ncol=3, framealpha=0.9)
    _save(fig, path)


def plot_emissions_vs_allocation(res: RunResult, path: Path) -> None:
    plt = _plt()
    rec = res.records
    rows = res.period_rows
    years = [p["year"] for p in rows]
    # each series its own dash and marker, the markers a little apart sideways: series that
    # coincide by construction (emissions = holdings, allocation = target) stay visible
    series = [
        (
            "business-as-usual (no abatement)",
            [p["baseline_emissions"] for p in rows],
            0.0,
            dict(color="0.45", ls="--", lw=1.6, marker=""),
        ),
        (
            "verified emissions",
            [p["emissions"] for p in rows],
            -0.09,
            dict(color="tab:blue", ls="-", lw=2.2, marker="o", ms=8, mfc="none", mew=1.6),
        ),
        (
            "allocation target (period total)",
            [p["allocation_target"] for p in rows],
            -0.03,
            dict(color="tab:purple", ls=":", lw=2.0, marker="s", ms=7, mfc="none", mew=1.4),
        ),
        (
            "allocation issued",
            [p["allocation"] for p in rows],
            0.03,
            dict(color="tab:orange", ls="-", lw=1.0, marker="x", ms=7, mew=1.6),
        ),
        (
            "allocation + offsets used",
            list(rec["allocation"].sum(axis=1) + rec["offsets_used"].sum(axis=1)),
            0.09,
            dict(color="tab:green", ls="-.", lw=1.0, marker="+", ms=9, mew=1.4),
        ),
    ]
    from matplotlib.lines import Line2D

    x = np.asarray(years, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for k, ax in enumerate(axes):
        for label, vals, dx, st in series:
            v = np.asarray(vals, dtype=float) / 1e3
            line = {kk: vv for kk, vv in st.items() if kk in ("color", "ls", "lw")}
            ax.plot(x, v, **line)
            if st["marker"]:
                ax.plot(
                    x + dx,
                    v,
                    ls="none",
                    **{kk: vv for kk, vv in st.items() if kk not in ("ls", "lw")},
                )
        ax.set_xticks(years)
        ax.set_xlabel("period (markers set a little apart sideways)")
        if k == 0:
            _zero_floor(ax)
            ax.set_ylabel("kt CO2e")
            ax.set_title("Emissions against allocation")
        else:
            ax.set_ylabel("kt CO2e (zoomed)")
            ax.set_title("the same, zoomed (axis does not start at zero)")
    handles = [Line2D([], [], **st) for _, _, _, st in series]
    axes[0].legend(handles, [s[0] for s in series], fontsize=7.5, loc="lower left", framealpha=0.9)
    _save(fig, path)


def plot_compliance_cost(res: RunResult, path: Path) -> None:
    plt = _plt()
    rows = res.period_rows
    years = [p["year"] for p in rows]
    x = np.arange(len(rows))
    w = 0.27
    fig, ax = plt.subplots(figsize=(9, 4.4))
    for dx, pre, label, color in (
        (-w, "", "market", "tab:blue"),
        (0.0, "least_cost_", "least-cost", "tab:green"),
        (w, "no_trade_", "no trade (same allocation path)", "0.55"),
    ):
        ab = np.array([p[f"{pre}abatement_cost"] for p in rows]) / 1e6
        of = np.array([p[f"{pre}offset_cost"] for p in rows]) / 1e6
        ax.bar(x + dx, ab, w, color=color, label=f"{label}: abatement")
        ax.bar(
            x + dx, of, w, bottom=ab, color=color, alpha=0.45, hatch="//", label=f"{label}: offsets"
        )
    ax.set_xticks(x, [str(y) for y in years])
    _zero_floor(ax)
    if not any(p["no_trade_compliance_cost"] or p["compliance_cost"] for p in rows):
        ax.text(
            0.5,
            0.5,
            "no compliance cost in any period: nothing needed abating",
            transform=ax.transAxes,
            ha="center",
            color="0.4",
        )
    ax.set_ylabel("million CNY")
    ax.set_title("Compliance cost (abatement + offsets) by period")
    ax.legend(fontsize=7, ncol=3)
    _save(fig, path)


def sector_intensity(res: RunResult) -> dict[str, list[float]]:
    """Output-weighted verified intensity per sector and period (Σ emissions / Σ output)."""
    rec = res.records
    sectors = sorted(set(res.sector))
    sec = np.array(res.sector)
    out = {}
    for s in sectors:
        sel = sec == s
        out[s] = [
            float(rec["emissions"][t, sel].sum() / max(rec["output"][t, sel].sum(), 1e-12))
            for t in range(res.periods)
        ]
    return out


def plot_intensity(res: RunResult, path: Path) -> None:
    plt = _plt()
    rec = res.records
    years = [p["year"] for p in res.period_rows]
    inten = sector_intensity(res)
    sec = np.array(res.sector)
    fig, axes = plt.subplots(2, len(inten), figsize=(3.8 * len(inten), 6.6), squeeze=False)
    for k, (s, vals) in enumerate(inten.items()):
        sel = sec == s
        bau = [
            float(rec["baseline_emissions"][t, sel].sum() / max(rec["output"][t, sel].sum(), 1e-12))
            for t in range(res.periods)
        ]
        b = rec["benchmark"][:, sel]
        bench = np.nanmean(b, axis=1) if b.size and not np.all(np.isnan(b)) else None
        top, bot = axes[0][k], axes[1][k]
        for ax, f in (
            (top, lambda v: np.asarray(v, dtype=float)),
            (bot, lambda v: (np.asarray(v, dtype=float) / v[0] - 1) * 100),
        ):
            ax.plot(years, f(vals), "o-", label="verified (output-weighted)")
            ax.plot(years, f(bau), "--", color="0.5", label="business-as-usual")
            if bench is not None:
                ax.plot(years, f(bench), "s:", mfc="none", label="benchmark (mean)")
            ax.set_xticks(years)
            ax.tick_params(axis="x", labelrotation=45)
        top.set_title(s)
        _zero_floor(top)
        top.set_ylabel("t CO2e per 10,000 CNY")
        bot.axhline(0, color="0.7", lw=0.8)
        bot.set_ylabel(f"change vs {years[0]}, %")
        top.legend(fontsize=7, loc="lower left")
    fig.suptitle("Emission intensity by sector: level (from zero) and change")
    _save(fig, path)


def plot_factors(res: RunResult, path: Path) -> None:
    plt = _plt()
    rec = res.records
    covered = _covered(res)
    r = res.scenario.rules
    fig, ax = plt.subplots(figsize=(8.5, 4))
    first, last = rec["phi"][0, covered], rec["phi"][-1, covered]
    lo = min(first.min(initial=1), last.min(initial=1), r.phi_min)
    hi = max(first.max(initial=1), last.max(initial=1), r.phi_max)
    bins = np.linspace(lo - 0.01, hi + 0.01, 30)
    ax.hist(first, bins=bins, alpha=0.5, label=f"period 1 (n={covered.sum()})")
    ax.hist(last, bins=bins, alpha=0.5, label=f"period {res.periods}")
    for v, name, ha in ((r.phi_min, "φ_min", "left"), (r.phi_max, "φ_max", "right")):
        ax.axvline(v, color="crimson", ls="--", lw=1)
        ax.text(
            v,
            0.97,
            f" {name} {v:g} ",
            transform=ax.get_xaxis_transform(),
            fontsize=8,
            color="crimson",
            va="top",
            ha=ha,
        )
    ax.set_xlabel("allocation factor φ")
    ax.set_ylabel("firms")
    ax.set_title("Distribution of allocation factors")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_sme_strategies(strategies: dict[str, dict], path: Path) -> None:
    """Left: SMEs' total net cost in the scheme and allocated directly, per strategy. Right:
    each SME's benefit against direct allocation (winners above zero, losers below)."""
    plt = _plt()
    names = list(strategies)
    x = np.arange(len(names))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4))
    ax.bar(
        x - 0.2,
        [strategies[k]["sme_net_cost"] / 1e3 for k in names],
        0.4,
        label="net cost with sub-quotas",
    )
    ax.bar(
        x + 0.2,
        [strategies[k]["sme_direct_net_cost"] / 1e3 for k in names],
        0.4,
        label="net cost if allocated directly",
    )
    ax.set_xticks(x, names, rotation=15, fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("thousand CNY (all SMEs, all periods)")
    ax.set_title("SMEs' net compliance cost by split strategy")
    ax.legend(fontsize=8)
    rng = np.random.default_rng(0)  # jitter only; the same picture every run
    for k, name in enumerate(names):
        b = np.asarray(strategies[name]["sme_benefits"]) / 1e3
        jit = k + rng.uniform(-0.15, 0.15, len(b))
        bx.scatter(
            jit[b > 0], b[b > 0], s=14, color="tab:green", label="winner" if k == 0 else None
        )
        bx.scatter(jit[b <= 0], b[b <= 0], s=14, color="tab:red", label="loser" if k == 0 else None)
    bx.axhline(0, color="black", lw=0.8)
    bx.set_xticks(x, names, rotation=15, fontsize=8)
    bx.set_ylabel("thousand CNY, direct minus scheme")
    bx.set_title("Each SME's benefit against direct allocation")
    bx.legend(fontsize=8)
    _save(fig, path)


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


def _chain_smes(res: RunResult) -> np.ndarray:
    return np.array([s == "sme" for s in res.size_class]) & np.array([c != "" for c in res.chain])


def sme_rows(res: RunResult) -> list[dict]:
    """One row per chain SME and period: what the scheme gave and cost it, and what the same
    SME would have paid allocated directly (its sector's benchmark x output, the same price).
    net cost = abatement + offsets + penalties - trading cash - gain share - fund grants;
    benefit = direct - scheme."""
    rec, sme = res.records, _chain_smes(res)
    strategy = {c.id: c.split_strategy for c in res.scenario.chains}
    out = []
    for t, p in enumerate(res.period_rows):
        for i in np.nonzero(sme)[0]:
            chain = res.chain[i]
            spec = next((v for k, v in strategy.items() if chain.startswith(k)), "")
            net, direct = float(rec["net_cost"][t, i]), float(rec["direct_net_cost"][t, i])
            out.append(
                {
                    "period": p["period"],
                    "year": p["year"],
                    "sme": res.ids[i],
                    "chain": chain,
                    "strategy": spec,
                    "sub_quota": int(rec["sub_quota_in"][t, i]),
                    "emissions": int(rec["emissions"][t, i]),
                    "surplus": int(rec["sub_quota_in"][t, i] - rec["emissions"][t, i]),
                    "abatement_cost": round(float(rec["abatement_cost"][t, i]), 2),
                    "offset_cost": round(float(rec["offset_cost"][t, i]), 2),
                    "trading_cash": round(float(rec["trade_cash"][t, i]), 2),
                    "penalty": round(float(rec["penalty"][t, i]), 2),
                    "gain_share": round(float(rec["gain_share"][t, i]), 2),
                    "fund_grants": round(float(rec["fund_grants"][t, i]), 2),
                    "net_cost": round(net, 2),
                    "direct_allocation": int(rec["direct_allocation"][t, i]),
                    "direct_net_cost": round(direct, 2),
                    "benefit_vs_direct": round(direct - net, 2),
                }
            )
    return out


def sme_stats(res: RunResult) -> dict:
    sme = _chain_smes(res)
    rec = res.records
    net = rec["net_cost"][:, sme].sum(axis=0)
    direct = rec["direct_net_cost"][:, sme].sum(axis=0) if sme.any() else np.zeros(0)
    benefit = direct - net  # per SME over the run
    surplus = (rec["sub_quota_in"][:, sme] > rec["emissions"][:, sme]).any(axis=0)
    return {
        "sme_revenue": float(rec["sme_revenue"][:, sme].sum()),
        "sme_penalties": float(rec["penalty"][:, sme].sum()),
        "sme_shortfall": int(rec["shortfall"][:, sme].sum()),
        "sme_sub_quota": int(rec["sub_quota_in"][:, sme].sum()),
        "sme_direct_allocation": int(np.nan_to_num(rec["direct_allocation"][:, sme]).sum()),
        "sme_abatement_cost": float(rec["abatement_cost"][:, sme].sum()),
        "sme_fund_grants": float(rec["fund_grants"][:, sme].sum()),
        "sme_gain_share": float(rec["gain_share"][:, sme].sum()),
        "sme_net_cost": float(net.sum()),
        "sme_direct_net_cost": float(direct.sum()),
        "sme_benefit_vs_direct": float(benefit.sum()),
        "sme_winners": int((benefit > 0).sum()),
        "sme_winners_with_surplus": int(((benefit > 0) & surplus).sum()),
        "sme_benefits": [round(float(b), 2) for b in benefit],
        "smes": int(sme.sum()),
    }


def _sme_section(res: RunResult, strategies: dict[str, dict] | None) -> list[str]:
    st = sme_stats(res)
    md = [
        "## SMEs",
        "",
        "Each chain's core firm carves the SMEs' sub-quotas out of its own allocation (no new "
        "issuance). An SME's *net cost* is abatement + offsets + penalties − cash from "
        "trading − SME fund grants; *direct* is the same SME allocated its sector's "
        "benchmark × output and trading at the same price. Benefit = direct − scheme "
        "(`smes.csv` per SME and period).",
        "",
        _table(
            ["", "this run"],
            [
                ["SMEs", st["smes"]],
                ["sub-quota received (t)", st["sme_sub_quota"]],
                ["direct allocation instead (t)", st["sme_direct_allocation"]],
                ["gain share received from core firms (CNY)", st["sme_gain_share"]],
                ["SME fund grants received (CNY)", st["sme_fund_grants"]],
                ["net cost with sub-quotas (CNY)", st["sme_net_cost"]],
                ["net cost if allocated directly (CNY)", st["sme_direct_net_cost"]],
                ["SMEs better off than direct", f"{st['sme_winners']} of {st['smes']}"],
            ],
        ),
        "",
    ]
    if strategies:
        ranked = sorted(strategies.items(), key=lambda kv: -kv[1]["sme_benefit_vs_direct"])
        md += [
            "### By split strategy",
            "",
            "The scenario rerun once per strategy (same seed), best for SMEs first:",
            "",
            _table(
                [
                    "strategy",
                    "sub-quota (t)",
                    "direct allocation (t)",
                    "net cost (CNY)",
                    "direct net cost (CNY)",
                    "benefit (CNY)",
                    "winners",
                    "sales (CNY)",
                    "penalties (CNY)",
                    "final price",
                ],
                [
                    [
                        k,
                        v["sme_sub_quota"],
                        v["sme_direct_allocation"],
                        v["sme_net_cost"],
                        v["sme_direct_net_cost"],
                        v["sme_benefit_vs_direct"],
                        f"{v['sme_winners']} of {v['smes']}",
                        v["sme_revenue"],
                        v["sme_penalties"],
                        v["final_price"],
                    ]
                    for k, v in ranked
                ],
            ),
            "",
        ]
        why = []
        for k, v in ranked:
            gap = v["sme_sub_quota"] - v["sme_direct_allocation"]
            why.append(
                f"- **{k}**: SMEs received {v['sme_sub_quota']:,} t against "
                f"{v['sme_direct_allocation']:,} t of direct allocation ({gap:+,} t); "
                f"{v['sme_winners']} of "
                f"{v['smes']} SMEs end better off, {v['sme_winners_with_surplus']} of them "
                f"with a surplus they could sell."
            )
        md += (
            [
                "Why they rank so: the pool is about the same size under every strategy (the "
                "core firm carves the same share out of its allocation), so a strategy decides "
                "*which* SMEs get it. An SME whose share covers its emissions after abating to "
                "the price keeps and sells the rest and gains; one whose share falls short "
                "buys at the price; surplus left unsold reverts to the core firm when the "
                "terms say so.",
                "",
            ]
            + why
            + ["", "![SMEs by strategy](sme_revenue_by_strategy.png)", ""]
        )
    return md


def _sector_section(res: RunResult) -> list[str]:
    """Output, intensity and emissions by sector and period; with a supply response, output
    against its trend and the price firms decided output at."""
    from .ensemble import sector_table

    years = [p["year"] for p in res.period_rows]
    tab = sector_table(res)
    responds = "supply_response" in res.summary
    power = "electricity" in res.summary
    rows = []
    for name, d in tab.items():
        for t, y in enumerate(years):
            r = [name, str(y), _t(d["output"][t])]
            if responds or power:
                r.append(_pct(d["output"][t], d["trend_output"][t]))
            r += [_t(d["emissions"][t])]
            if power:
                r.append(_t(d["indirect_emissions"][t]))
            r += [f"{d['intensity'][t]:.4f}", _t(d["allocation"][t]), _t(d["net_cost"][t])]
            rows.append(r)
    md = [
        "## Output, intensity and emissions by sector",
        "",
        "Sums over each sector's firms: output in 10,000 CNY, verified emissions in t, "
        "intensity = Σ emissions / Σ output (t CO2e per 10,000 CNY), allocation received "
        "(sub-quotas included), net compliance cost (abatement + offsets + penalties − "
        "trading cash − gain share − grants, CNY).",
        "",
        _table(
            ["sector", "period", "output"]
            + (["output vs trend"] if responds or power else [])
            + ["emissions t"]
            + (["indirect (electricity) t"] if power else [])
            + ["intensity", "allocation t", "net cost CNY"],
            rows,
        ),
        "",
    ]
    if power:
        md += _electricity_section(res)
    if responds:
        sr = res.summary["supply_response"]
        sc = res.scenario
        params = "; ".join(
            f"{s.name}: margin {s.margin:g}, elasticity {s.supply_elasticity:g}, "
            f"largest cut {s.max_output_cut:g}"
            for s in sc.sectors
            if s.margin is not None
        )
        md += [
            f"**Supply response** ({params}): each firm decides its output at the price "
            "the period is expected to clear at (p̂: "
            + ", ".join(f"{p['year']} {p['expected_price']:.2f}" for p in res.period_rows)
            + " CNY/t), cutting it where its carbon cost per unit of output exceeds its "
            "margin. Output against trend over the run: "
            + ", ".join(f"{k} {v * 100:+.2f} %" for k, v in sr["by_sector"].items())
            + " (docs/SIMULATION.md, 'Supply response').",
            "",
        ]
    return md


def _electricity_section(res: RunResult) -> list[str]:
    cfg = res.scenario.power
    rows = [
        [
            str(p["year"]),
            _t(p["power_demand_mwh"]),
            _t(p["clean_mwh"]),
            _t(p["fossil_mwh"]),
            f"{p['clean_share'] * 100:.2f} %",
            f"{p['power_balance_mwh']:+,.1f}",
            f"{p['expected_price']:.2f}",
            f"{p['fossil_cost_with_carbon']:.2f}",
            _t(p["power_emissions"]),
            f"{p['grid_factor']:.4f}",
        ]
        for p in res.period_rows
    ]
    return [
        "## Electricity",
        "",
        f"The `{cfg.sector}` sector generates the other sectors' electricity (MWh = electricity "
        f"use × output). Clean generation runs every MWh cheaper than fossil generation's "
        f"marginal cost with carbon, {cfg.fossil_cost:g} CNY/MWh + p̂ × (emission factor − "
        f"free allowances per MWh), along a supply curve from {cfg.clean_cost_min:g} to "
        f"{cfg.clean_cost_max:g} CNY/MWh over a capacity of {cfg.clean_capacity:,.0f} MWh "
        f"(+{cfg.clean_capacity_growth * 100:g} % a period); fossil generators supply the rest "
        f"at {cfg.tariff:g} CNY/MWh. Their emissions are counted where generated (the "
        f"`{cfg.sector}` row above) and shown as each consumer's *indirect* emissions (its MWh × "
        f"the grid factor, the generators' verified emissions per MWh consumed); the totals "
        f"count them once. Balance = clean + fossil − demand: the rounding of generation to "
        f"whole units of output.",
        "",
        _table(
            [
                "period",
                "demand MWh",
                "clean MWh",
                "fossil MWh",
                "clean share",
                "balance MWh",
                "p̂ CNY/t",
                "fossil cost with carbon CNY/MWh",
                "generators' emissions t",
                "grid factor t/MWh",
            ],
            rows,
        ),
        "",
    ]


def _t(v: float) -> str:
    return f"{v:,.0f}"


SAVING_LABEL = "saving vs no trade on the same allocation path"


def _saving(cost: float, no_trade: float) -> str:
    """What trading saved on compliance cost, as a share of the no-trade cost."""
    return f"{(1 - cost / no_trade) * 100:.1f} %" if no_trade else "n/a"


def _cost_section(res: RunResult) -> list[str]:
    s, rows = res.summary, res.period_rows
    mk_a, mk_o = s["total_abatement_cost"], s["total_offset_cost"]
    lc_a = s["least_cost_abatement_cost"]
    lc_o = float(sum(p["least_cost_offset_cost"] for p in rows))
    nt_a = s["no_trade_abatement_cost"]
    nt_o = float(sum(p["no_trade_offset_cost"] for p in rows))
    mk, lc, nt = (
        s["total_compliance_cost"],
        s["least_cost_compliance_cost"],
        s["no_trade_compliance_cost"],
    )
    saving = (
        f"{_saving(mk, nt)} ({_t(nt - mk)} CNY)" if nt else "n/a (no-trade compliance cost is 0)"
    )
    table = _table(
        ["CNY, all periods", "market", "least-cost", "no trade (same allocation path)"],
        [
            ["abatement cost", _t(mk_a), _t(lc_a), _t(nt_a)],
            ["offset spending", _t(mk_o), _t(lc_o), _t(nt_o)],
            ["**total compliance cost** (abatement + offsets)", _t(mk), _t(lc), _t(nt)],
            ["total vs least-cost", _pct(mk, lc), "—", _pct(nt, lc)],
        ],
    )
    return [
        "## Compliance cost",
        "",
        "Compliance cost is abatement cost plus offset spending. Both counterfactuals "
        "keep the run's allocation path — every firm's allocation, sub-quotas and bank in "
        "each period — and the offset rule: *least-cost* is the cheapest way the firms "
        "together could have met it, *no trade* has each firm meet its own holdings "
        "alone. Penalties are transfers, not counted here "
        f"({s['total_penalties']:,.0f} CNY in this run).",
        "",
        table,
        "",
        f"- **{SAVING_LABEL}: {saving}**",
        f"- market total vs least-cost: {_pct(mk, lc)}",
        "",
        "![compliance cost](compliance_cost.png)",
        "",
    ]


def write_report(
    res: RunResult, out: Path, strategies: dict[str, dict] | None = None, command: str = ""
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_summary(res, out)
    write_firms_csv(res, out)
    smes = sme_rows(res)
    if smes:
        _write_dicts(out / "smes.csv", smes)
    _write_dicts(out / "periods.csv", res.period_rows)
    _write_dicts(out / "rounds.csv", res.rounds)
    plot_price_path(res, out / "price_path.png")
    plot_emissions_vs_allocation(res, out / "emissions_vs_allocation.png")
    plot_compliance_cost(res, out / "compliance_cost.png")
    plot_intensity(res, out / "intensity_by_sector.png")
    plot_factors(res, out / "allocation_factors.png")
    if strategies:
        plot_sme_strategies(strategies, out / "sme_revenue_by_strategy.png")
    s = res.summary
    sc = res.scenario
    rows = res.period_rows
    md = [f"# Simulation report: {sc.scenario.name}", ""]
    if sc.scenario.description:
        md += [sc.scenario.description, ""]
    warn, checked = findings(res)
    if warn:
        for w in warn:
            md += [f"**Warning:** {w}", ""]
    else:
        md += [f"No warnings: checked {', '.join(checked)}.", ""]
    # no run time or clock here: the same command gives the same report.md (the timings
    # are in summary.json)
    md += (
        [
            f"{s['firms']:,} firms, {s['periods']} periods, seed {s['seed']}; "
            f"{s['commands']:,} commands through the exchange core, {s['trades']:,} trades, "
            f"{s['volume']:,} t traded; allocation total: {s.get('allocation_total', '?')}"
            + (f"; state hash `{s['state_hash'][:16]}`" if s.get("state_hash") else "")
            + ".",
        ]
        + ([f"Reproduce: `{command}`"] if command else [])
        + ["", "## Summary", ""]
    )
    srows = [
        [
            "mean price (CNY/t, volume-weighted)",
            s["mean_price"] if s["mean_price"] is not None else "— (no trades)",
        ],
        ["final close price (CNY/t, last call)", s["final_price"]],
        ["final least-cost price (CNY/t)", s["final_least_cost_price"]],
        ["final close vs least-cost price", _pct(s["final_price"], s["final_least_cost_price"])],
    ]
    if s.get("analytic_price") is not None:
        ap = s["analytic_price"]
        srows += [
            ["analytic price p* = R / Σ(1/c_i) (CNY/t)", ap],
            [
                "final close vs p*",
                _pct(s["final_price"], ap) if ap > 0 else "n/a (p* ≤ 0: nothing to abate)",
            ],
        ]
    srows += [
        ["business-as-usual emissions (t)", _t(s["total_baseline_emissions"])],
        ["total verified emissions (t)", s["total_emissions"]],
        ["total allocation (t)", s["total_allocation"]],
        ["total abatement (t)", _t(s["total_abatement"])],
        ["total compliance cost (CNY, abatement + offsets)", _t(s["total_compliance_cost"])],
        ["least-cost compliance cost (CNY)", _t(s["least_cost_compliance_cost"])],
        ["market vs least-cost", _pct(s["total_compliance_cost"], s["least_cost_compliance_cost"])],
        [SAVING_LABEL, _saving(s["total_compliance_cost"], s["no_trade_compliance_cost"])],
        ["offset share of obligations", f"{s['offset_share_used'] * 100:.2f} %"],
        ["penalties (CNY)", _t(s["total_penalties"])],
        ["shortfall (t)", s["total_shortfall"]],
        ["limit-locked trading days", s.get("limit_locked_days", 0)],
        ["SME sales revenue (CNY)", _t(s["sme_revenue"])],
        ["Σ ΔQ = 0 every period (bought = sold)", "yes" if s["conservation_ok"] else "NO"],
    ]
    md += [_table(["measure", "value"], srows), ""]

    tr, tr_checked = trends(res)
    md += ["## Trends", ""]
    if tr:
        md += [f"- {x}" for x in tr]
    else:
        md += [f"No trend against the policy's goal: checked {', '.join(tr_checked)}."]
    md += [""]
    md += _cost_section(res)

    # by period: prices and trading, then quantities, then costs
    has_ap = any(p.get("analytic_price") is not None for p in rows)
    corner = any(p.get("least_cost_corner") for p in rows)
    prow = []
    for p in rows:
        lc = p["least_cost_price"]
        r = [
            str(p["year"]),
            f"{p['close_price']:.2f}",
            f"{lc:.2f}" + ("*" if p.get("least_cost_corner") else ""),
        ]
        if has_ap:
            ap = p.get("analytic_price")
            r.append("—" if ap is None else f"{ap:.2f}")
        r += [
            _pct(p["close_price"], lc) if lc > 0 else "n/a (least-cost 0)",
            f"{p['vwap']:.2f}" if p["volume"] else "— (no trades)",
            p["volume"],
            p["trading_days"],
            p["limit_locked_days"],
            "yes" if p["cleared"] else "**no**",
        ]
        prow.append(r)
    md += [
        "## By period",
        "",
        "### Prices and trading",
        "",
        _table(
            ["period", "close", "least-cost p"]
            + (["analytic p*"] if has_ap else [])
            + [
                "close vs least-cost",
                "VWAP",
                "volume t",
                "trading days",
                "limit-locked days",
                "cleared",
            ],
            prow,
        ),
        "",
    ]
    if corner:
        md += [
            "\\* the least-cost price sits at an offset price (a corner: offsets partly used).",
            "",
        ]
    qrow = [
        [
            str(p["year"]),
            _t(p["baseline_emissions"]),
            p["allocation_target"],
            p["allocation"],
            _t(p["allowances_available"]),
            p["emissions"],
            _t(p["abatement"]),
            p["offsets_used"],
            p["shortfall"],
            p["non_compliant"],
            p["net_bought_sum"],
        ]
        for p in rows
    ]
    md += [
        "### Quantities",
        "",
        _table(
            [
                "period",
                "BAU t",
                "allocation target t",
                "allocation t",
                "allowances available t",
                "emissions t",
                "abatement t",
                "offsets t",
                "shortfall t",
                "non-compliant",
                "Σ ΔQ",
            ],
            qrow,
        ),
        "",
        "Allowances available: the allocation the firms planned on, with sub-quotas and "
        "the bank — the quantity both counterfactuals use.",
        "",
    ]
    crow = [
        [
            str(p["year"]),
            _t(p["abatement_cost"]),
            _t(p["offset_cost"]),
            _t(p["compliance_cost"]),
            _t(p["least_cost_compliance_cost"]),
            _pct(p["compliance_cost"], p["least_cost_compliance_cost"]),
            _t(p["no_trade_compliance_cost"]),
            _saving(p["compliance_cost"], p["no_trade_compliance_cost"]),
            _t(p["penalties"]),
        ]
        for p in rows
    ]
    md += [
        "### Costs (CNY)",
        "",
        _table(
            [
                "period",
                "abatement",
                "offsets",
                "compliance cost",
                "least-cost compliance",
                "vs least-cost",
                "no-trade compliance",
                "saving vs no trade",
                "penalties",
            ],
            crow,
        ),
        "",
        "![price path](price_path.png)",
        "",
        "The least-cost price (green steps) is the price at which the period's allowances "
        "would clear at least cost; the market's call price should meet it by the period "
        "close (red diamond). Price axis from zero.",
        "",
        "![emissions vs allocation](emissions_vs_allocation.png)",
        "",
        "Business-as-usual (grey dashes), verified emissions (blue rings), the allocation "
        "target (purple dotted squares) and the allocation issued (orange crosses). Some "
        "coincide by construction — verified emissions equal the allowances held when every "
        "firm abates exactly to its holdings; the allocation equals its target under a "
        "fixed cap — so each has its own dash and marker, and the markers of a period are "
        "set a little apart sideways: markers at one height are series with the same "
        "value. Left from zero; right zoomed (its axis does not start at zero).",
        "",
    ]
    inten = sector_intensity(res)
    years = [p["year"] for p in rows]
    md += [
        "## Intensity by sector",
        "",
        "Output-weighted verified intensity (t CO2e per 10,000 CNY):",
        "",
        _table(
            ["sector"] + [str(y) for y in years] + [f"{years[0]}→{years[-1]}"],
            [
                [k] + [f"{v:.4f}" for v in vals] + [_pct(vals[-1], vals[0])]
                for k, vals in inten.items()
            ],
        ),
        "",
        "![intensity by sector](intensity_by_sector.png)",
        "",
    ]
    md += _sector_section(res)
    md += ["## Allocation factors", ""]
    rec = res.records
    covered = _covered(res)
    r = sc.rules
    frows = []
    for t, p in enumerate(rows):
        ph = rec["phi"][t, covered] if covered.any() else rec["phi"][t]
        frows.append(
            [
                str(p["year"]),
                f"{ph.mean():.4f}",
                f"{ph.min():.4f}",
                f"{ph.max():.4f}",
                int((ph > 1).sum()),
                int((ph < 1).sum()),
                int(np.sum(np.abs(ph - r.phi_min) < 1e-6)),
                int(np.sum(np.abs(ph - r.phi_max) < 1e-6)),
            ]
        )
    md += [
        "φ of firms allocated by the rules, at the start of each period (it changes at "
        "ClosePeriod from the verified gap to the benchmark and the supply-chain coupling):",
        "",
        _table(
            [
                "period",
                "mean φ",
                "min",
                "max",
                "φ > 1",
                "φ < 1",
                f"at φ_min {r.phi_min:g}",
                f"at φ_max {r.phi_max:g}",
            ],
            frows,
        ),
        "",
        "![allocation factors](allocation_factors.png)",
        "",
    ]
    if smes:
        md += _sme_section(res, strategies)
    md += [
        "## Files",
        "",
        "- `summary.json` — headline figures, a per-period breakdown and the run's timings",
        "- `firms.csv` — one row per firm and period",
        "- `smes.csv` — one row per chain SME and period: sub-quota, emissions, costs, "
        "trading cash, net cost and the same SME's net cost under direct allocation"
        if smes
        else "",
        "- `periods.csv`, `rounds.csv` — per period and per trading round",
        "- PNG plots referenced above",
        "- `report.html` — this report as one self-contained page (plots embedded)",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    from .html import write_html

    write_html(out)
