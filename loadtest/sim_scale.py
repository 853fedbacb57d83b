"""Scale benchmark of the simulation: N firms x K periods through the real exchange core.

    .venv/bin/python loadtest/sim_scale.py [--firms 10000] [--periods 10] [--seed 1]
        [--json out.json] [--out DIR]

Builds a three-sector scenario of ``--firms`` firms (industry, agriculture, services; a share
of them SMEs, some in supply chains with sub-quotas), runs it in process — every allocation,
order, MRV submission, verification, surrender and deadline is a command through
``Sequencer`` into ``build_exchange()`` with the rules and compliance modules — and prints the
wall time, commands, orders and trades. Not a timed test; the figure goes to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange.sim.runner import run_scenario  # noqa: E402
from exchange.sim.scenario import parse_scenario  # noqa: E402


def scale_scenario(firms: int, periods: int, seed: int) -> dict:
    chains = max(1, firms // 500)  # ~3 % of firms sit in supply chains
    per_chain = 1 + 4 + 10
    rest = firms - chains * per_chain
    ind, agr = int(rest * 0.4), int(rest * 0.3)
    srv = rest - ind - agr
    return {
        "scenario": {
            "name": f"scale_{firms}",
            "periods": periods,
            "seed": seed,
            "sme_strategy_comparison": False,
            "intensity_unit": "t_c",
        },
        # the default trading settings (levels, days, widths): no coarse grid
        "market": {"initial_price": 40.0, "fee_bps": 5, "benchmark_stringency": 0.12},
        "allocation": {"mode": "intensity", "pre_ratio": 0.7},
        "offsets": {"enabled": True, "cap": 0.05, "price": 30.0},
        "sectors": [
            {
                "name": "industry",
                "intensity": 1.977,
                "firms": ind,
                "output_mean": 50000,
                "output_growth": 0.02,
                "mac": {
                    "kind": "piecewise",
                    "points": [[0.0, 0.0], [0.05, 30.0], [0.15, 120.0], [0.30, 400.0]],
                },
            },
            {
                "name": "agriculture",
                "intensity": 0.074,
                "firms": agr,
                "sme_share": 0.3,
                "output_mean": 20000,
                "output_growth": 0.03,
                "mac": {"kind": "linear", "full_abatement_cost": 900.0, "max_abatement_share": 0.5},
            },
            {
                "name": "services",
                "intensity": 0.027,
                "firms": srv,
                "sme_share": 0.5,
                "output_mean": 30000,
                "output_growth": 0.06,
                "mac": {"kind": "piecewise", "points": [[0.0, 5.0], [0.10, 40.0], [0.25, 200.0]]},
            },
        ],
        "chains": [
            {
                "id": "SC",
                "count": chains,
                "core_sector": "industry",
                "tiers": [
                    {"tier": 1, "firms": 4, "sector": "industry", "output_scale": 0.5},
                    {
                        "tier": 2,
                        "firms": 10,
                        "sector": "services",
                        "size_class": "sme",
                        "output_scale": 0.2,
                    },
                ],
                "split_strategy": "by_output",
                "revenue_share": 0.6,
            }
        ],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--firms", type=int, default=10_000)
    ap.add_argument("--periods", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the figures as JSON here")
    ap.add_argument("--out", default=None, help="also write the full report to this dir")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--verify",
        action="store_true",
        help="also check the core's invariants and hash its state at the end",
    )
    a = ap.parse_args(argv)
    sc = parse_scenario(scale_scenario(a.firms, a.periods, a.seed), "scale scenario")
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = run_scenario(sc, progress=not a.quiet, label=f"{a.firms} firms", verify_state=a.verify)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    s = res.summary
    orders = sum(r["orders"] for r in res.rounds)
    fig = {
        "benchmark": "sim_scale",
        "firms": s["firms"],
        "periods": s["periods"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "load_avg_1m": round(__import__("os").getloadavg()[0], 2),
        "commands": s["commands"],
        "orders": orders,
        "trades": s["trades"],
        "volume_t": s["volume"],
        "commands_per_s": round(s["commands"] / wall),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "final_price": s["final_price"],
        "least_cost_price_last": res.period_rows[-1]["least_cost_price"],
        "final_price_vs_least_cost": round(
            s["final_price"] / res.period_rows[-1]["least_cost_price"] - 1, 5
        ),
        "compliance_cost_vs_least_cost": round(
            s["total_compliance_cost"] / s["least_cost_compliance_cost"] - 1, 5
        )
        if s["least_cost_compliance_cost"]
        else None,
        "trading_days": [r["trading_days"] for r in res.period_rows],
        "conservation_ok": s["conservation_ok"],
        "phase_seconds": s["phase_seconds"],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(fig, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2) + "\n")
    if a.out:
        from exchange.sim.report import write_report

        write_report(res, Path(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
