"""``python -m exchange simulate``: run a scenario, or compare variants of one.

    python -m exchange simulate three_sectors --out out/three [--seed N]
        [--periods K] [--networked URL]
    python -m exchange simulate --compare supply_chain_smes \\
        --vary split_strategy=equal,by_output,by_responsibility --out out/cmp
    python -m exchange simulate supply_chain_smes --seeds 32 --out out/bands \\
        [--workers N | --workers 0 | --scheduler tcp://HOST:8786]
    python -m exchange simulate offset_cap_sweep --seeds 16 \\
        --vary offset_cap=0,0.05,0.1 --vary market.fee_bps=0,20 --out out/grid

Many seeds and sweeps run as tasks on Dask (:mod:`exchange.sim.cluster`); ``--workers 0``
runs them one after another in this process, with the same output bytes.

A scenario is a TOML file's path, or the name of a shipped scenario (``config/scenarios/`` of
the repository, installed with the package: :func:`exchange.app.config.shipped_scenarios`).
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
import time
import tomllib
from pathlib import Path

from ..app.config import shipped_scenarios
from .scenario import SPLIT_STRATEGIES, ScenarioError, apply_override, parse_scenario


def _parse_value(v: str):
    lv = v.strip().lower()
    if lv in ("true", "false"):
        return lv == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v.strip()


def _parse_vary(spec: str) -> tuple[str, list]:
    if "=" not in spec:
        raise ScenarioError(f"--vary expects key=v1,v2,... (got {spec!r})")
    key, vals = spec.split("=", 1)
    values = [_parse_value(v) for v in vals.split(",") if v.strip()]
    if not key.strip() or not values:
        raise ScenarioError(f"--vary expects key=v1,v2,... (got {spec!r})")
    return key.strip(), values


def _load_raw(ref: str) -> tuple[dict, str]:
    """A scenario's TOML data and a name for it in messages: ``ref`` is a file's path, else the
    name of a shipped scenario (``three_sectors`` or ``three_sectors.toml``). A path wins over
    a shipped name, so an operator's own file is never shadowed."""
    p = Path(ref)
    if p.is_file():
        source, read = str(p), p.read_bytes
    else:
        shipped = shipped_scenarios()
        name = ref[: -len(".toml")] if ref.endswith(".toml") else ref
        if "/" in ref or "\\" in ref or name not in shipped:
            raise ScenarioError(
                f"scenario not found: {ref!r} is neither a file nor a shipped scenario "
                f"(shipped: {', '.join(shipped) or 'none'})"
            )
        source, read = f"{name} (shipped)", shipped[name].read_bytes
    try:
        return tomllib.loads(read().decode("utf-8")), source
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ScenarioError(f"bad scenario {source}: not valid TOML: {e}") from None


def _gateway(args):
    if args.networked:
        from .networked import NetworkedGateway

        try:
            return NetworkedGateway(
                args.networked,
                operator_key=args.operator_key,
                verifier_key=args.verifier_key,
                verifier_id=args.verifier_id or None,
            )
        except Exception as e:  # noqa: BLE001 - connection refused, bad key, ...
            raise ScenarioError(f"cannot reach the server at {args.networked}: {e}") from None
    return None


def run_one(args) -> int:
    from .report import sme_stats, write_report
    from .runner import run_scenario

    sc = parse_scenario(*_load_raw(args.scenario))
    out = Path(args.out)
    progress = not args.quiet
    gw = _gateway(args)
    try:
        res = run_scenario(sc, seed=args.seed, periods=args.periods, gateway=gw, progress=progress)
    finally:
        if gw is not None:
            gw.close()
    strategies = None
    has_smes = any(s == "sme" for s, c in zip(res.size_class, res.chain) if c)
    if has_smes and sc.scenario.sme_strategy_comparison and not args.networked:
        strategies = {}
        raw = sc.model_dump(mode="json")
        for strat in SPLIT_STRATEGIES:
            if all(c["split_strategy"] == strat for c in raw["chains"]):
                r = res
            else:
                v = parse_scenario(apply_override(copy.deepcopy(raw), "split_strategy", strat))
                r = run_scenario(
                    v,
                    seed=res.seed,
                    periods=args.periods,
                    progress=progress,
                    label=f"strategy {strat}",
                )
            strategies[strat] = dict(sme_stats(r), final_price=r.summary["final_price"])
    cmd = (
        "python -m exchange simulate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2 and sys.argv[1] == "simulate"
        else ""
    )
    write_report(res, out, strategies, command=cmd)
    s = res.summary
    print(
        f"{sc.scenario.name}: {s['firms']} firms x {s['periods']} periods, "
        f"{s['commands']:,} commands, {s['trades']:,} trades in {s['runtime_s']:.1f} s; "
        f"final price {s['final_price']:.2f} CNY/t"
        + f" (least-cost {s['final_least_cost_price']:.2f}"
        + (
            f", closed form {s['analytic_price']:.2f}"
            if s.get("analytic_price") is not None
            else ""
        )
        + ")"
        + f"; compliance cost (abatement + offsets) {s['total_compliance_cost']:,.0f} vs "
        f"least-cost {s['least_cost_compliance_cost']:,.0f} and no trade on the same "
        f"allocation {s['no_trade_compliance_cost']:,.0f} CNY"
    )
    print(f"wrote {out}/report.md, summary.json, firms.csv and plots")
    return 0


def _command() -> str:
    """The command that reproduces the outputs, without the options that only say where the
    runs went (--workers, --scheduler) or how they were shown (--quiet): the outputs do not
    depend on them, and the report must not either."""
    if not (len(sys.argv) > 2 and sys.argv[1] == "simulate"):
        return ""
    out, skip = [], False
    for a in sys.argv[2:]:
        if skip:
            skip = False
            continue
        if a in ("--workers", "--scheduler"):
            skip = True
            continue
        if a == "--quiet" or a.startswith(("--workers=", "--scheduler=")):
            continue
        out.append(a)
    return "python -m exchange simulate " + " ".join(shlex.quote(a) for a in out)


def _runner(args, n_tasks: int):
    """Where the runs go: Dask (a LocalCluster, or --scheduler's cluster), or this process
    for --workers 0, a single run, or when Dask is not installed (said on stderr)."""
    from .cluster import Runner, have_dask

    if args.scheduler:
        if not have_dask():
            raise ScenarioError(
                "--scheduler needs dask.distributed: pip install 'carbon-exchange[sim]'"
            )
        return Runner(scheduler=args.scheduler)
    workers = args.workers
    if workers == 0 or n_tasks <= 1:
        return Runner(workers=0)
    if not have_dask():
        print(
            "note: dask.distributed is not installed (pip install 'carbon-exchange[sim]'); "
            "running the seeds one after another in this process",
            file=sys.stderr,
        )
        return Runner(workers=0)
    from .cluster import default_workers

    return Runner(workers=min(workers or default_workers(), n_tasks))


def _task_key(raw: dict, periods, seed: int) -> str:
    """A key that names the computation (scenario data, periods, seed): two clients of a
    shared scheduler that submit the same key mean the same run."""
    import hashlib

    h = hashlib.sha256(json.dumps([raw, periods], sort_keys=True, default=str).encode())
    return f"sim-{h.hexdigest()[:16]}-{seed}"


def _run_cells(args, cells, seeds, label: str):
    """``seeds``: one list for every cell, or a list per cell."""
    from .ensemble import run_task

    per_cell = seeds if seeds and isinstance(seeds[0], list) else [seeds] * len(cells)
    tasks, keys = [], []
    for c, cs in zip(cells, per_cell):
        for s in cs:
            k = _task_key(c.raw, args.periods, s)
            keys.append(k)
            tasks.append((k, run_task, (c.raw, c.source, s, args.periods)))
    t0 = time.perf_counter()
    uniq = list({k: t for k, t in zip(keys, tasks)}.values())
    with _runner(args, len(uniq)) as r:
        results = r.run(uniq, progress=not args.quiet, label=label)
        where = r.where
    wall = time.perf_counter() - t0
    runs = []
    it = iter(keys)
    for cs in per_cell:
        runs.append([results[next(it)] for _ in cs])
    timings = {
        "where": where,
        "runs": len(uniq),
        "wall_s": round(wall, 3),
        "run_s_sum": round(sum(x["runtime_s"] for x in results.values()), 3),
    }
    return runs, timings


def _base_seed(args, raw, source) -> int:
    sc = parse_scenario(copy.deepcopy(raw), source)
    return sc.scenario.seed if args.seed is None else args.seed


def run_seeds(args) -> int:
    from .ensemble import Cell, aggregate, ensemble_seeds
    from .ensemble_report import write_ensemble

    raw, source = _load_raw(args.scenario)
    sc = parse_scenario(copy.deepcopy(raw), source)
    seeds = ensemble_seeds(_base_seed(args, raw, source), args.seeds)
    cell = Cell("", {}, raw, source)
    runs, timings = _run_cells(args, [cell], seeds, f"{sc.scenario.name} seeds")
    agg = aggregate(cell, runs[0], sc.scenario.name)
    out = Path(args.out)
    write_ensemble(agg, runs[0], out, sc.scenario.description, _command(), timings)
    print(
        f"{sc.scenario.name}: {len(seeds)} seeds ({timings['where']}) in "
        f"{timings['wall_s']:.1f} s; final price p50 {agg['final_price_p50']:.2f} "
        f"[p05 {agg['final_price_p05']:.2f} – p95 {agg['final_price_p95']:.2f}] CNY/t, "
        f"compliance cost p50 {agg['total_compliance_cost_p50']:,.0f} CNY"
    )
    print(f"wrote {out}/report.md, summary.json, seeds.csv and plots")
    return 0


def run_sweep(args) -> int:
    import itertools

    from .ensemble import Cell, aggregate, ensemble_seeds
    from .ensemble_report import write_sweep

    raw, source = _load_raw(args.compare or args.scenario)
    base = parse_scenario(copy.deepcopy(raw), source)
    axes = [_parse_vary(v) for v in args.vary]
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise ScenarioError(f"--vary names a key twice: {keys}")
    cells = []
    for combo in itertools.product(*[vals for _, vals in axes]):
        data = copy.deepcopy(raw)
        for k, v in zip(keys, combo):
            data = apply_override(data, k, v)
        label = ",".join(f"{k}={v}" for k, v in zip(keys, combo)).replace("/", "_")
        parse_scenario(copy.deepcopy(data), f"{source} with {label}")  # fail before running
        cells.append(Cell(label, dict(zip(keys, combo)), data, f"{source} with {label}"))
    if any(k in ("seed", "scenario.seed") for k in keys):
        # the seed is what the cells vary: each cell's ensemble starts from its own seed
        # (no common random numbers between such cells, so no paired differences)
        if args.seed is not None:
            raise ScenarioError("--seed and --vary seed=... both set the seed; give one")
        seeds = [
            ensemble_seeds(
                parse_scenario(copy.deepcopy(c.raw), c.source).scenario.seed, args.seeds or 1
            )
            for c in cells
        ]
    else:
        seeds = ensemble_seeds(_base_seed(args, raw, source), args.seeds or 1)
    runs, timings = _run_cells(args, cells, seeds, f"{len(cells)} cells x {args.seeds or 1} seeds")
    aggs = [aggregate(c, r, base.scenario.name) for c, r in zip(cells, runs)]
    out = Path(args.out)
    write_sweep(cells, aggs, runs, out, keys, _command(), timings)
    print(
        f"swept {' x '.join(keys)}: {len(cells)} cells x {args.seeds or 1} seeds "
        f"({timings['where']}) in {timings['wall_s']:.1f} s; wrote {out}/compare.md, "
        f"compare.csv, compare.json, compare.png"
    )
    return 0


def run_compare(args) -> int:
    from .report import sme_stats
    from .runner import run_scenario

    raw, source = _load_raw(args.compare)
    parse_scenario(copy.deepcopy(raw), source)  # the base must be valid
    if not args.vary:
        raise ScenarioError("--compare needs --vary key=v1,v2,...")
    key, values = _parse_vary(args.vary[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    results = {}
    for v in values:
        data = apply_override(copy.deepcopy(raw), key, v)
        sc = parse_scenario(data, f"{source} with {key}={v}")
        res = run_scenario(
            sc, seed=args.seed, periods=args.periods, progress=not args.quiet, label=f"{key}={v}"
        )
        s = res.summary
        row = {
            "variant": f"{key}={v}",
            key: v,
            "final_price": s["final_price"],
            "final_least_cost_price": s["final_least_cost_price"],
            "mean_price": s["mean_price"],
            "total_emissions": s["total_emissions"],
            "total_allocation": s["total_allocation"],
            "total_abatement_cost": s["total_abatement_cost"],
            "total_offset_cost": s["total_offset_cost"],
            "total_compliance_cost": s["total_compliance_cost"],
            "least_cost_compliance_cost": s["least_cost_compliance_cost"],
            "no_trade_compliance_cost": s["no_trade_compliance_cost"],
            "limit_locked_days": s["limit_locked_days"],
            "offset_share_used": s["offset_share_used"],
            "total_penalties": s["total_penalties"],
            "sme_revenue": s["sme_revenue"],
            "volume": s["volume"],
        }
        row.update(
            {k: v2 for k, v2 in sme_stats(res).items() if k not in ("sme_revenue", "sme_benefits")}
        )
        rows.append(row)
        results[str(v)] = res
        vdir = out / "variants" / f"{key}={v}"
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "summary.json").write_text(json.dumps(s, indent=2, default=float) + "\n")
    _write_compare(out, key, rows, results)
    print(
        f"compared {len(rows)} variants of {key}; wrote {out}/compare.md, compare.json, "
        f"compare.csv, compare.png"
    )
    return 0


def _write_compare(out: Path, key: str, rows: list[dict], results: dict) -> None:
    import csv

    import numpy as np

    from .report import _plt, _save, _table, plot_sme_strategies, sme_stats

    (out / "compare.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = [
        "final_price",
        "final_least_cost_price",
        "total_abatement_cost",
        "total_offset_cost",
        "total_compliance_cost",
        "least_cost_compliance_cost",
        "offset_share_used",
        "total_penalties",
        "sme_revenue",
        "total_emissions",
    ]
    md = [
        f"# Comparison: {key}",
        "",
        _table(
            ["variant"] + cols,
            [
                [r["variant"]]
                + [round(r[c] * 100, 3) if c == "offset_share_used" else r[c] for c in cols]
                for r in rows
            ],
        ),
        "",
        "(offset_share_used in %)",
        "",
        "![comparison](compare.png)",
        "",
    ]
    if any(r.get("smes") for r in rows):
        # the SMEs' side of each variant: their net cost with sub-quotas and allocated
        # directly (benefit = direct - scheme), and how many end better off
        sme_cols = [
            "sme_sub_quota",
            "sme_direct_allocation",
            "sme_net_cost",
            "sme_direct_net_cost",
            "sme_benefit_vs_direct",
            "sme_winners",
            "smes",
            "sme_gain_share",
            "sme_fund_grants",
            "sme_penalties",
        ]
        md += [
            "## SMEs",
            "",
            _table(
                ["variant"] + sme_cols, [[r["variant"]] + [r[c] for c in sme_cols] for r in rows]
            ),
            "",
            "Net cost = abatement + offsets + penalties - trading cash - gain share - "
            "fund grants; direct = the same SMEs allocated their sector's benchmark x "
            "output at the same price.",
            "",
            "![SMEs by variant](compare_smes.png)",
            "",
        ]
        plot_sme_strategies(
            {str(r[key]): sme_stats(results[str(r[key])]) for r in rows}, out / "compare_smes.png"
        )
    (out / "compare.md").write_text("\n".join(md))
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    names = [str(r[key]) for r in rows]
    x = np.arange(len(rows))
    middle = (
        ("sme_revenue", "SME revenue, k CNY")
        if any(r["sme_revenue"] for r in rows)
        else ("total_emissions", "verified emissions, Mt")
    )
    for ax, (c, label) in zip(
        axes[:3],
        [
            ("total_compliance_cost", "compliance cost (abatement + offsets), M CNY"),
            middle,
            ("offset_share_used", "offset share, %"),
        ],
    ):
        scale = {
            "total_compliance_cost": 1e-6,
            "sme_revenue": 1e-3,
            "offset_share_used": 100,
            "total_emissions": 1e-6,
        }[c]
        ax.bar(x, [r[c] * scale for r in rows])
        ax.set_xticks(x, names, rotation=20, fontsize=8)
        ax.set_title(label, fontsize=10)
    ax = axes[3]
    for name, res in results.items():
        ax.plot(
            [p["year"] for p in res.period_rows],
            [p["close_price"] for p in res.period_rows],
            "o-",
            label=name,
        )
    ax.set_title("closing price, CNY/t", fontsize=10)
    ax.set_xticks([p["year"] for p in next(iter(results.values())).period_rows])
    ax.legend(fontsize=7)
    fig.suptitle(f"Variants of {key}")
    _save(fig, out / "compare.png")


def main(args) -> int:
    t0 = time.perf_counter()
    if args.periods is not None and not 1 <= args.periods <= 1000:
        print("error: --periods must be between 1 and 1000", file=sys.stderr)
        return 2
    if args.seeds is not None and not 1 <= args.seeds <= 100_000:
        print("error: --seeds must be between 1 and 100000", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print("error: --workers must be >= 0 (0: in this process)", file=sys.stderr)
        return 2
    many = args.seeds is not None or args.scheduler or args.workers is not None
    if args.networked and (many or (args.vary and not args.compare)):
        print(
            "error: --networked runs one seed against one server; it does not combine "
            "with --seeds, --vary grids or --workers",
            file=sys.stderr,
        )
        return 2
    try:
        if args.compare or (args.vary and args.scenario):
            if args.compare and args.scenario:
                raise ScenarioError(
                    "give the scenario once: SCENARIO --vary ..., or --compare SCENARIO --vary ..."
                )
            if args.compare and args.vary and len(args.vary) == 1 and not many:
                rc = run_compare(args)  # one seed, one key: the original comparison
            else:
                if not args.vary:
                    raise ScenarioError("--compare needs --vary key=v1,v2,...")
                rc = run_sweep(args)
        elif args.scenario and args.seeds is not None:
            rc = run_seeds(args)
        elif args.scenario:
            rc = run_one(args)
        else:
            print(
                "simulate: give a SCENARIO (a .toml file or a shipped name: "
                f"{', '.join(shipped_scenarios())}), or --compare SCENARIO --vary k=v1,v2",
                file=sys.stderr,
            )
            return 2
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rc


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="multi-period agent-based simulation through the exchange core",
        description="Run a scenario (firms with marginal abatement cost curves trading "
        "allowances, MRV, allocation rules, compliance) and write report.md, "
        "summary.json, firms.csv and plots to --out.",
    )
    p.add_argument(
        "scenario",
        nargs="?",
        help="scenario file, or a shipped scenario's name (" + ", ".join(shipped_scenarios()) + ")",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: scenario's)")
    p.add_argument("--periods", type=int, default=None, help="override the number of periods")
    p.add_argument(
        "--networked",
        metavar="URL",
        default=None,
        help="drive a running server (http://HOST:PORT) instead of an in-process core",
    )
    p.add_argument(
        "--operator-key", default="operator-demo-key", help="operator API key for --networked"
    )
    p.add_argument(
        "--verifier-key",
        default="verifier-demo-key",
        help="verifier API key for --networked (MRV verification)",
    )
    p.add_argument(
        "--verifier-id",
        default="VERIFIER1",
        help="registered verifier id the verifications are made as (--networked)",
    )
    p.add_argument(
        "--compare",
        metavar="SCENARIO",
        default=None,
        help="compare variants of this scenario, a file or a shipped name (with --vary)",
    )
    p.add_argument(
        "--vary",
        metavar="KEY=V1,V2",
        default=None,
        action="append",
        help="scenario key and values, e.g. split_strategy=equal,by_output or "
        "offset_cap=0,0.05,0.1 (dotted paths like market.fee_bps work too); "
        "repeat it for a grid of every combination",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="run N seeds (the scenario's or --seed's first) and report the median "
        "and the 5th-95th percentile band of every figure",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Dask LocalCluster worker processes for --seeds / --vary (default: "
        "one per core; 0: run in this process, no Dask)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:8786",
        help="send the runs to an existing Dask cluster instead",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
