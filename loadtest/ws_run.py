"""Orchestration: one offered rate (``run``), a ladder of rates (``sweep``), the memory test.

Each step starts ``procs`` generator processes (``python -m loadtest _worker``), splits the
firms' connections and the rate between them, releases them at one start time, and merges
their HdrHistograms. The server's CPU seconds and RSS are read from /proc for the step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from .ws_hist import merge, summary_ms
from .ws_target import (
    REPO,
    Target,
    child_env,
    proc_cpu_seconds,
    proc_descendants,
    proc_status,
    proc_tree_cpu_seconds,
)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _spawn_worker(spec: dict) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "_worker"],
        cwd=str(REPO),
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    p.stdin.write(json.dumps(spec) + "\n")
    p.stdin.flush()
    return p


def _read_line(p: subprocess.Popen, prefix: str, timeout: float) -> str:
    """Read ``p``'s stdout until a line starting with ``prefix`` (bounded in time)."""
    result: list[str] = []

    def reader():
        for line in p.stdout:
            if line.startswith(prefix):
                result.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise RuntimeError(
            f"worker gave no {prefix!r} line within {timeout:.0f}s (exit code {p.poll()})"
        )
    return result[0]


class RssSampler(threading.Thread):
    """Samples the server's VmRSS every ``every`` seconds while a step runs."""

    def __init__(self, pid: int | None, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self._halt.is_set() and self.pid:
            st = proc_status(self.pid)
            if "VmRSS" in st:
                self.samples.append((round(time.monotonic() - t0, 1), st["VmRSS"]))
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join(5)


def run_step(
    target: Target,
    keys: list[str],
    rate: float,
    duration: float,
    procs: int = 1,
    mix: dict | None = None,
    subscribe: list[str] | None = None,
    batch: bool = False,
    drain: float = 5.0,
    seed: int = 1,
    extra_workers: list[dict] | None = None,
    sample_rss: bool = False,
) -> dict:
    """Offer ``rate`` orders/s for ``duration`` s from ``len(keys)`` connections."""
    procs = max(1, min(procs, len(keys)))
    run_tag = os.urandom(3).hex()  # unique client_order_ids per step (see ws_worker)
    per = [keys[w::procs] for w in range(procs)]
    specs = []
    for w in range(procs):
        specs.append(
            {
                "url": target.ws_url,
                "api_keys": per[w],
                "rate": rate / procs,
                "duration": duration,
                "worker_id": w,
                "seed": seed,
                "mix": mix or {},
                "subscribe": subscribe if subscribe is not None else ["executions"],
                "batch": batch,
                "drain": drain,
                "run_tag": run_tag,
            }
        )
    workers = [_spawn_worker(s) for s in specs]
    passive = [_spawn_worker(s) for s in (extra_workers or [])]
    try:
        for p in workers + passive:
            _read_line(p, "READY", 180)
        m0 = target.metrics()
        cpu0 = proc_cpu_seconds(target.pid) if target.pid else None
        tree0 = proc_tree_cpu_seconds(target.pid) if target.pid else None
        rss0 = proc_status(target.pid) if target.pid else {}
        sampler = RssSampler(target.pid) if sample_rss else None
        if sampler:
            sampler.start()
        t0 = time.monotonic() + 0.5
        for w, p in enumerate(workers):
            # interleave the workers' schedules: worker w sends at t0 + w/rate + k*procs/rate
            p.stdin.write(f"START {t0 + w / rate!r}\n")
            p.stdin.flush()
        for p in passive:
            p.stdin.write(f"START {t0!r}\n")
            p.stdin.flush()
        results = []
        for p in workers:
            line = _read_line(p, "RESULT ", duration + drain + 120)
            results.append(json.loads(line[len("RESULT ") :]))
        cpu1 = proc_cpu_seconds(target.pid) if target.pid else None
        tree1 = proc_tree_cpu_seconds(target.pid) if target.pid else None
        kids = proc_descendants(target.pid) if target.pid else []
        kids_rss = {k: proc_status(k) for k in kids}
        passive_results = []
        for p in passive:
            line = _read_line(p, "RESULT ", duration + drain + 120)
            passive_results.append(json.loads(line[len("RESULT ") :]))
        if sampler:
            sampler.stop()
        rss1 = proc_status(target.pid) if target.pid else {}
    finally:
        for p in workers + passive:
            try:
                p.stdin.close()
            except Exception:
                pass
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    m1 = target.metrics()
    bad = [r["error"] for r in results + passive_results if "error" in r]
    if bad:
        raise RuntimeError("worker failed: " + "; ".join(bad))
    out = aggregate(rate, duration, results)
    if cpu0 is not None and cpu1 is not None:
        span = max(out["elapsed_seconds"], 1e-9)
        out["server_cpu_seconds"] = round(cpu1 - cpu0, 2)
        out["server_cpu_util"] = round((cpu1 - cpu0) / span, 3)
        out["server_cpu_us_per_order"] = round((cpu1 - cpu0) / max(out["acked"], 1) * 1e6, 1)
        if tree0 is not None and tree1 is not None and kids:
            # with its child processes (the SQLite journal's writer process)
            out["server_tree_cpu_util"] = round((tree1 - tree0) / span, 3)
            out["server_tree_cpu_us_per_order"] = round(
                (tree1 - tree0) / max(out["acked"], 1) * 1e6, 1
            )
            out["server_children_rss_mb"] = {
                str(k): round(v.get("VmHWM", 0) / 1024, 1) for k, v in kids_rss.items()
            }
    if rss1:
        out["server_rss_mb"] = {
            "before": round(rss0.get("VmRSS", 0) / 1024, 1),
            "after": round(rss1.get("VmRSS", 0) / 1024, 1),
            "peak_hwm": round(rss1.get("VmHWM", 0) / 1024, 1),
        }
    if sampler:
        out["server_rss_samples_kb"] = sampler.samples
    if m0 and m1:
        keep = (
            "exchange_ws_messages_in_total",
            "exchange_ws_messages_out_total",
            "exchange_ws_frames_out_total",
            "exchange_ws_writes_total",
            "exchange_ws_slow_consumer_disconnects_total",
            "exchange_commands_total",
            "exchange_orders_total",
            "exchange_trades_total",
            "exchange_rejects_total",
            "exchange_overloaded_total",
            "exchange_snapshots_total",
            "exchange_loop_stalls_total",
        )
        # OVERLOADED by the bound that refused it (journal_lag, in_flight, send_queue)
        keep += tuple(k for k in m1 if k.startswith("exchange_overloaded_total{"))
        out["server_metrics_delta"] = {
            k.replace("exchange_", ""): m1[k] - m0.get(k, 0) for k in keep if k in m1
        }
    if passive_results:
        out["passive"] = passive_results
    return out


def aggregate(rate: float, duration: float, results: list[dict]) -> dict:
    def tot(k):
        return sum(r.get(k, 0) or 0 for r in results)

    errors: dict[str, int] = {}
    rejects: dict[str, int] = {}
    by_method: dict[str, int] = {}
    for r in results:
        for src, dst in (
            (r["errors"], errors),
            (r["rejects"], rejects),
            (r["by_method"], by_method),
        ):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
    acked = tot("acked")
    last = max((r["last_ack_offset"] or 0) for r in results)
    send_end = max(r["send_end_offset"] for r in results)
    elapsed = max(last, send_end, 1e-9)
    ack = merge([r["ack_lat_us"] for r in results])
    exe = merge([r["exec_lat_us"] for r in results])
    lag = merge([r["send_lag_us"] for r in results])
    gen_cpu = tot("cpu_seconds")
    # the workers' schedules interleave over the same span: the step's worst latency per
    # bucket is the worst of any worker's
    lines = [r.get("ack_timeline_max_us") or [] for r in results]
    timeline = [max(v) / 1000 for v in zip(*lines)] if lines and all(lines) else []
    return {
        "offered_rate": rate,
        "duration_seconds": duration,
        "achieved_rate": round(acked / elapsed, 1),
        "ok_rate": round(tot("ok") / elapsed, 1),
        # handled by the exchange: accepted or refused on business grounds (rejects), not
        # turned away by the gateway (OVERLOADED, ...) - the throughput that counts
        "served_rate": round((tot("ok") + sum(rejects.values())) / elapsed, 1),
        "elapsed_seconds": round(elapsed, 3),
        "scheduled": tot("scheduled"),
        "sent": tot("sent"),
        "acked": acked,
        "ok": tot("ok"),
        "exec_reports": tot("exec_reports"),
        "pushes": tot("pushes"),
        "ack_latency_ms": summary_ms(ack),
        "exec_latency_ms": summary_ms(exe),
        "send_lag_ms": summary_ms(lag),
        # worst ack latency (ms) of the requests due in each 100 ms of the schedule
        "ack_timeline_max_ms": {"bucket_s": 0.1, "max": timeline},
        "errors": sum(errors.values()),
        "errors_by_code": errors,
        "rejects": sum(rejects.values()),
        "rejects_by_code": rejects,
        "by_method": by_method,
        "connections": tot("connections"),
        "generator_procs": len(results),
        "generator_cpu_seconds": round(gen_cpu, 2),
        "generator_cpu_us_per_order": round(gen_cpu / max(tot("sent"), 1) * 1e6, 1),
        "closed_connections": tot("closed"),
    }


def sustained(step: dict, p99_ms: float | None = None) -> bool:
    """The step carried its offered rate: >= 95 % achieved, no unanswered requests and (when
    ``p99_ms`` is given) p99 acknowledgement latency within it."""
    ok = (
        step["achieved_rate"] >= 0.95 * step["offered_rate"]
        and step["errors_by_code"].get("NO_REPLY", 0) == 0
        and step["errors"] <= 0.001 * max(step["scheduled"], 1)
    )
    if ok and p99_ms is not None:
        p99 = step["ack_latency_ms"]["p99"]
        ok = p99 is not None and p99 <= p99_ms
    return ok


def one_line(s: dict) -> str:
    a = s["ack_latency_ms"]
    return (
        f"offered {s['offered_rate']:>8.0f}/s achieved {s['achieved_rate']:>8.0f}/s "
        f"ack p50 {a['p50']} p99 {a['p99']} p99.9 {a['p999']} max {a['max']} ms "
        f"errors {s['errors']} rejects {s['rejects']} "
        f"srv cpu {s.get('server_cpu_util', '-')} gen cpu {s['generator_cpu_us_per_order']}"
        f" us/order"
    )


def wait_idle(
    pid: int | None, below: float = 0.15, window: float = 0.5, timeout: float = 60.0
) -> float:
    """Wait until the server's CPU use over ``window`` s drops below ``below`` cores (an
    overloaded step leaves a backlog the server works off after the generator stops), at most
    ``timeout`` s. Returns the seconds waited."""
    if not pid:
        return 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        c0 = proc_cpu_seconds(pid)
        time.sleep(window)
        c1 = proc_cpu_seconds(pid)
        if c0 is None or c1 is None or (c1 - c0) / window < below:
            break
    return round(time.monotonic() - t0, 1)


def ladder_run(
    target: Target,
    keys: list[str],
    rates: list[float],
    duration: float,
    stop_after: int = 2,
    climb: float = 0.0,
    max_rate: float = 1e6,
    **kw,
) -> list[dict]:
    """Run the rates in order; stop after ``stop_after`` consecutive unsustained steps. With
    ``climb`` > 1, a ladder whose last step was still sustained goes on, each step ``climb``
    times the one before (up to ``max_rate``), until that happens: the top of a fixed ladder
    is not the saturation of a server that carried it. Before each step, wait until the
    server is idle (an overloaded step leaves a backlog)."""
    steps = []
    misses = 0
    todo = list(rates)
    while todo:
        r = todo.pop(0)
        waited = wait_idle(target.pid)
        if waited > 1:
            log(f"[{target.kind}] waited {waited}s for the server to go idle")
        log(f"[{target.kind}] offering {r:.0f}/s for {duration:.0f}s ...")
        s = run_step(target, keys, r, duration, **kw)
        s["sustained"] = sustained(s)
        log(f"[{target.kind}] " + one_line(s))
        steps.append(s)
        misses = 0 if s["sustained"] else misses + 1
        if misses >= stop_after:
            break
        if not todo and climb > 1 and r * climb <= max_rate:
            todo.append(float(round(r * climb)))  # on until stop_after misses
    return steps


def write_json(path: str | None, obj: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
