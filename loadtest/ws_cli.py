"""The ``run``, ``sweep`` and ``memory`` subcommands."""

from __future__ import annotations

import os
import platform
import sys
import time

from .ws_run import ladder_run, log, one_line, run_step, sustained, write_json
from .ws_target import Target

# the first rungs; a sweep climbs on from the last (``--climb``) until the target saturates
DEFAULT_RATES = [1000, 5000, 10000, 20000, 30000, 40000, 50000]
DEFAULT_ECHO_RATES = [10000, 30000, 60000, 90000, 120000]


def _env() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _ladder_kw(a) -> dict:
    return {"climb": a.climb, "max_rate": a.max_rate}


def _step_kw(a) -> dict:
    return {
        "procs": a.procs,
        "batch": a.batch,
        "drain": a.drain,
        "seed": a.seed,
        "subscribe": [] if a.no_exec else ["executions"],
    }


def cmd_run(a) -> int:
    kind = "echo" if a.echo else "exchange"
    with Target(
        kind, url=a.url, config=a.config, operator_key=a.operator_key, keep_dir=a.keep
    ) as t:
        keys = t.provision(a.firms)
        s = run_step(t, keys, a.rate, a.duration, **_step_kw(a))
        s["sustained"] = sustained(s)
        s["target"] = kind
        s["environment"] = _env()
        s["command"] = "python -m loadtest " + " ".join(sys.argv[1:])
    log(one_line(s))
    write_json(a.json, s)
    if not a.json:
        import json

        print(json.dumps(s, indent=2))
    return 0


def _rates(text: str | None, default: list[int]) -> list[float]:
    if not text:
        return [float(r) for r in default]
    return [float(x) for x in text.split(",") if x.strip()]


def cmd_sweep(a) -> int:
    from .ws_report import write_report

    env = _env()
    kw = _step_kw(a)
    out = {
        "command": "python -m loadtest " + " ".join(sys.argv[1:]),
        "environment": env,
        "duration_seconds": a.duration,
        "firms": a.firms,
        "generator_procs": a.procs,
        "climb": a.climb,
    }
    echo_steps: list[dict] = []
    if not a.skip_echo:
        with Target("echo") as t:
            keys = t.provision(a.firms)
            echo_steps = ladder_run(
                t, keys, _rates(a.echo_rates, DEFAULT_ECHO_RATES), a.duration, **_ladder_kw(a), **kw
            )
    with Target(
        "exchange", url=a.url, config=a.config, operator_key=a.operator_key, keep_dir=a.keep
    ) as t:
        keys = t.provision(a.firms)
        steps = ladder_run(
            t, keys, _rates(a.rates, DEFAULT_RATES), a.duration, **_ladder_kw(a), **kw
        )
    out["steps"] = steps
    out["echo_steps"] = echo_steps
    # served, not achieved: past saturation the exchange answers some requests at once with
    # OVERLOADED, and those replies are not throughput (the echo serves every request)
    out["saturation_rate"] = max(
        (s.get("served_rate", s["achieved_rate"]) for s in steps), default=0.0
    )
    out["echo_ceiling_rate"] = max((s["achieved_rate"] for s in echo_steps), default=None)
    out["ratio_to_echo"] = (
        round(out["saturation_rate"] / out["echo_ceiling_rate"], 3)
        if out["echo_ceiling_rate"]
        else None
    )
    ok10 = [s["offered_rate"] for s in steps if sustained(s, p99_ms=10.0)]
    out["max_sustained_rate_p99_10ms"] = max(ok10, default=0.0)
    out["max_sustained_rate"] = max((s["offered_rate"] for s in steps if sustained(s)), default=0.0)
    out["targets"] = {
        "sustain_20000_p99_10ms": out["max_sustained_rate_p99_10ms"] >= 20000,
        "saturation_ge_half_echo": (out["ratio_to_echo"] or 0) >= 0.5,
    }
    base = os.path.splitext(a.json)[0] if a.json else "loadtest-sweep"
    report = a.report or base + ".md"
    plot = a.plot or base + ".png"
    write_report(out, report, plot)
    out["report"] = report
    out["plot"] = plot
    write_json(a.json, out)
    log(
        f"saturation {out['saturation_rate']:.0f}/s, echo ceiling {out['echo_ceiling_rate']}, "
        f"ratio {out['ratio_to_echo']}; report {report}"
    )
    return 0


def cmd_memory(a) -> int:
    """``clients`` passive connections subscribed to one book while orders flow."""
    with Target(
        "exchange", url=a.url, config=a.config, operator_key=a.operator_key, keep_dir=a.keep
    ) as t:
        keys = t.provision(a.firms)
        from .ws_target import proc_status

        idle_kb = proc_status(t.pid).get("VmRSS") if t.pid else None
        per = max(1, a.clients // max(a.client_procs, 1))
        passive = []
        for w in range(a.client_procs):
            n = per if w < a.client_procs - 1 else a.clients - per * (a.client_procs - 1)
            passive.append(
                {
                    "url": t.ws_url,
                    "api_keys": [keys[(w * per + i) % len(keys)] for i in range(n)],
                    "rate": 0,
                    "duration": a.duration,
                    "worker_id": 100 + w,
                    "passive": True,
                    "subscribe": [a.channel],
                    "drain": a.drain,
                    "batch": a.batch,
                    "stall": a.stall,
                }
            )
        s = run_step(
            t, keys, a.rate, a.duration, extra_workers=passive, sample_rss=True, **_step_kw(a)
        )
        s["sustained"] = sustained(s)
        p = s.pop("passive", [])
        rss = s.get("server_rss_samples_kb", [])
        s["memory"] = {
            "clients": a.clients,
            "channel": a.channel,
            "stalled_clients": a.stall,
            "clients_connected": sum(x.get("connections", 0) for x in p),
            "clients_closed_by_server": sum(x.get("closed", 0) for x in p),
            "server_slow_consumer_disconnects": s.get("server_metrics_delta", {}).get(
                "ws_slow_consumer_disconnects_total"
            ),
            "close_codes": sorted({c for x in p for c in x.get("close_codes", [])}),
            "push_frames_received": sum(x.get("frames", 0) for x in p),
            "push_messages_received": sum(x.get("pushes", 0) for x in p),
            "subscriber_cpu_seconds": round(sum(x.get("cpu_seconds", 0) for x in p), 2),
            "subscriber_connect_seconds": max(
                (x.get("connect_seconds", 0) for x in p), default=None
            ),
            "server_peak_rss_mb": s.get("server_rss_mb", {}).get("peak_hwm"),
            "server_rss_before_clients_mb": round(idle_kb / 1024, 1) if idle_kb else None,
            "server_rss_with_clients_idle_mb": s.get("server_rss_mb", {}).get("before"),
            "server_rss_first_mb": round(rss[0][1] / 1024, 1) if rss else None,
            "server_rss_last_mb": round(rss[-1][1] / 1024, 1) if rss else None,
            "server_rss_max_sampled_mb": round(max(v for _, v in rss) / 1024, 1) if rss else None,
        }
        s["environment"] = _env()
        s["command"] = "python -m loadtest " + " ".join(sys.argv[1:])
    log(one_line(s))
    log(f"memory: {s['memory']}")
    write_json(a.json, s)
    return 0
