"""Benchmarks of many-seed simulation on Dask: the speed-up of a second worker, and a
1,000-run sweep that loses a worker and still completes.

    .venv/bin/python loadtest/sim_seeds.py speedup [--seeds 32] [--repeats 3]
        [--scenario supply_chain_smes] [--json out/sim_seeds_speedup.json]
    .venv/bin/python loadtest/sim_seeds.py sweep [--runs 1000] [--firms 100] [--periods 10]
        [--kill-at 0.3] [--json out/sim_seeds_sweep.json]

``speedup``: the same 32 runs (``run_task``, the CLI's task) on a one-worker and a two-worker
``LocalCluster``, started once each and warmed up (every worker has imported the simulation
before the clock starts), timed from the first submit to the last result, alternating
1, 2, 1, 2, ... so a change in the machine's load hits both; the ratio of each pair and their
median are printed, with the load average. Also the serial time in this process.

``sweep``: ``--runs`` scenario runs of ``--firms`` firms x ``--periods`` periods (the scale
benchmark's three-sector scenario, a grid of offset caps x seeds) on a two-worker
LocalCluster through the CLI's runner (at most 4 x workers tasks in flight); when
``--kill-at`` of the runs have come back, one worker that is running a task is killed with
SIGKILL. Prints the runs completed (must equal ``--runs``), the keys that were on the killed
worker, the wall time and the peak memory of the scheduler's process (sampled every 0.2 s;
the LocalCluster's scheduler lives in this process) and the most tasks the scheduler held.

Figures, not timed tests: docs/BENCHMARKS.md (Simulation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange.sim.cli import _load_raw, _task_key  # noqa: E402
from exchange.sim.cluster import Runner, local_cluster, wait_workers  # noqa: E402
from exchange.sim.ensemble import Cell, aggregate, ensemble_seeds, run_task  # noqa: E402


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _timed(client, tasks) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = Runner(client=client).run(tasks, progress=False)
    return time.perf_counter() - t0, res


def speedup(a) -> dict:
    from dask.distributed import Client

    raw, source = _load_raw(a.scenario)
    seeds = ensemble_seeds(11, a.seeds)
    tasks = [(_task_key(raw, None, s), run_task, (raw, source, s, None)) for s in seeds]
    clusters = {}
    for w in (1, 2):
        c = local_cluster(w)
        cl = Client(c)
        wait_workers(cl, w)
        # warm-up: every worker imports the simulation and runs one short task
        cl.gather(
            [
                cl.submit(
                    run_task, raw, source, 1, 1, key=f"warm-{w}-{i}", pure=False, workers=[addr]
                )
                for i, addr in enumerate(cl.nthreads())
            ]
        )
        clusters[w] = (c, cl)
    rows = []
    same = True
    bands = None
    for r in range(a.repeats):
        load0 = _load()
        c0 = time.process_time()
        t1, r1 = _timed(clusters[1][1], [(f"r{r}-{k}", f, x) for k, f, x in tasks])
        t2, r2 = _timed(clusters[2][1], [(f"r{r}-{k}", f, x) for k, f, x in tasks])
        # the same figures from both clusters, seed by seed
        same = same and all(
            r1[f"r{r}-{k}"] | {"runtime_s": 0} == r2[f"r{r}-{k}"] | {"runtime_s": 0}
            for k, _, _ in tasks
        )
        rows.append(
            {
                "repeat": r + 1,
                "one_worker_s": round(t1, 2),
                "two_workers_s": round(t2, 2),
                "ratio": round(t1 / t2, 3),
                "run_s_sum_one": round(sum(v["runtime_s"] for v in r1.values()), 2),
                "run_s_sum_two": round(sum(v["runtime_s"] for v in r2.values()), 2),
                "client_cpu_s": round(time.process_time() - c0, 2),
                "load_before": load0,
                "load_after": _load(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if bands is None:
            agg = aggregate(
                Cell("", {}, raw, source), [r1[f"r{r}-{k}"] for k, _, _ in tasks], a.scenario
            )
            bands = {
                k: agg[k]
                for k in agg
                if k.endswith(("_p05", "_p50", "_p95"))
                and k.startswith(
                    (
                        "final_price",
                        "final_least_cost_price",
                        "total_compliance_cost",
                        "offset_share_used",
                        "sme_benefit_vs_direct",
                        "sme_winners",
                    )
                )
            }
    for c, cl in clusters.values():
        cl.close()
        c.close()
    t0 = time.perf_counter()
    for _, f, x in tasks[: a.serial]:
        f(*x)
    serial = (time.perf_counter() - t0) / max(a.serial, 1) * len(tasks) if a.serial else None
    return {
        "benchmark": "sim_seeds_speedup",
        "scenario": a.scenario,
        "seeds": a.seeds,
        "repeats": rows,
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "median_one_worker_s": statistics.median(r["one_worker_s"] for r in rows),
        "median_two_workers_s": statistics.median(r["two_workers_s"] for r in rows),
        "serial_in_process_s_estimate": round(serial, 2) if serial else None,
        "same_results_both_clusters": same,
        "bands": bands,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def sweep(a) -> dict:
    from dask.distributed import Client

    import psutil

    from loadtest.sim_scale import scale_scenario

    caps = [round(0.01 * k, 2) for k in range(10)]
    per_cap = max(1, a.runs // len(caps))
    seeds = ensemble_seeds(1, per_cap)
    tasks = []
    for cap in caps:
        raw = scale_scenario(a.firms, a.periods, 1)
        raw["offsets"]["cap"] = cap
        for s in seeds:
            tasks.append((_task_key(raw, None, s), run_task, (raw, f"cap {cap}", s, None)))
    tasks = tasks[: a.runs]
    cluster = local_cluster(2)
    client = Client(cluster)
    wait_workers(client, 2)
    me = psutil.Process()
    peak = {"rss": me.memory_info().rss, "tasks": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], me.memory_info().rss)
            try:
                n = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
                peak["tasks"] = max(peak["tasks"], n)
            except Exception:  # noqa: BLE001 - the scheduler busy with a lost worker
                pass
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    done = {"n": 0}
    killed: dict = {}
    kill_after = int(a.kill_at * len(tasks))

    def on_result(key, _):
        done["n"] += 1
        if killed or done["n"] < kill_after:
            return
        busy = {w: ks for w, ks in client.processing().items() if ks}
        if not busy:
            return
        w = sorted(busy)[0]
        pid = client.run(os.getpid, workers=[w])[w]
        killed.update(
            worker=w,
            pid=pid,
            keys=list(busy[w]),
            after_results=done["n"],
            at_s=round(time.perf_counter() - t0, 1),
        )
        os.kill(pid, signal.SIGKILL)
        print(
            f"killed worker {w} (pid {pid}) running {busy[w]} after {done['n']} results", flush=True
        )

    rss0 = me.memory_info().rss
    t0 = time.perf_counter()
    results = Runner(client=client).run(
        tasks, progress=not a.quiet, label="sweep", on_result=on_result
    )
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    client.close()
    cluster.close()
    lost = [k for k, _, _ in tasks if k not in results]
    return {
        "benchmark": "sim_seeds_sweep",
        "runs": len(tasks),
        "completed": len(results),
        "lost": len(lost),
        "firms": a.firms,
        "periods": a.periods,
        "cells": len(caps),
        "seeds_per_cell": per_cap,
        "wall_s": round(wall, 1),
        "runs_per_s": round(len(results) / wall, 2),
        "killed": killed,
        "scheduler_process_rss_start_mb": round(rss0 / 2**20, 1),
        "scheduler_process_rss_peak_mb": round(peak["rss"] / 2**20, 1),
        "scheduler_tasks_peak": peak["tasks"],
        "load_after": _load(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speedup")
    s.add_argument("--scenario", default="supply_chain_smes")
    s.add_argument("--seeds", type=int, default=32)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--serial", type=int, default=4, help="runs timed in process (x seeds/N)")
    s.add_argument("--json", default="out/sim_seeds_speedup.json")
    w = sub.add_parser("sweep")
    w.add_argument("--runs", type=int, default=1000)
    w.add_argument("--firms", type=int, default=100)
    w.add_argument("--periods", type=int, default=10)
    w.add_argument("--kill-at", type=float, default=0.3)
    w.add_argument("--quiet", action="store_true")
    w.add_argument("--json", default="out/sim_seeds_sweep.json")
    a = ap.parse_args(argv)
    fig = speedup(a) if a.what == "speedup" else sweep(a)
    print(json.dumps(fig, indent=2))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
