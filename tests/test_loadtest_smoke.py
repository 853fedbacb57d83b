"""Smoke runs of the websocket load test against a real server (a subprocess on a free loopback
port, durable SQLite journal in a temp dir). They check that the load test runs end to end and
writes well-formed reports; they assert no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAT_KEYS = {"p50", "p90", "p99", "p999", "max"}


def _run(args: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    p = subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def _check_step(s: dict, exchange: bool) -> None:
    for k in (
        "offered_rate",
        "achieved_rate",
        "ack_latency_ms",
        "exec_latency_ms",
        "errors",
        "rejects",
        "sent",
        "acked",
        "errors_by_code",
    ):
        assert k in s, k
    assert LAT_KEYS <= set(s["ack_latency_ms"])
    assert LAT_KEYS <= set(s["exec_latency_ms"])
    assert isinstance(s["errors"], int)
    assert s["sent"] > 0 and s["acked"] > 0
    assert s["ack_latency_ms"]["p50"] is not None
    assert s["ack_latency_ms"]["p50"] <= s["ack_latency_ms"]["p99"] <= s["ack_latency_ms"]["max"]
    # the timeline: one worst latency per 100 ms of the schedule; its worst is the step's
    # worst (the histogram rounds to 3 significant digits)
    tl = s["ack_timeline_max_ms"]
    assert tl["bucket_s"] == 0.1
    assert len(tl["max"]) == int(s["duration_seconds"] / 0.1) + 1
    assert max(tl["max"]) == pytest.approx(s["ack_latency_ms"]["max"], rel=0.01)
    if exchange:
        # the orders reached the core: execution reports came back, and every request was
        # answered with a reply (an order the exchange refuses is a reject, not an error)
        assert s["exec_reports"] > 0
        assert s["exec_latency_ms"]["count"] > 0
        assert s["errors_by_code"].get("INVALID_PARAMS", 0) == 0
        assert s["errors_by_code"].get("NOT_AUTHENTICATED", 0) == 0


@pytest.mark.slow
def test_run_against_served_exchange(tmp_path):
    out = tmp_path / "run.json"
    _run(
        [
            "run",
            "--rate",
            "300",
            "--duration",
            "3",
            "--firms",
            "4",
            "--drain",
            "10",
            "--json",
            str(out),
        ]
    )
    s = json.loads(out.read_text())
    _check_step(s, exchange=True)
    assert s["offered_rate"] == 300
    assert s["target"] == "exchange"
    assert "server_cpu_seconds" in s and "server_rss_mb" in s
    # every place_order the generator sent became an order in the core (none was answered
    # from the idempotency window, e.g. because of a repeated client_order_id)
    placed = s["by_method"]["place_order"] + s["by_method"]["place_order_crossing"]
    if s["errors"] == 0:
        assert s["server_metrics_delta"]["orders_total"] == placed


@pytest.mark.slow
def test_sweep_writes_report_and_plot(tmp_path):
    out = tmp_path / "sweep.json"
    # one listed rate, then the climb (x1.5) while sustained, up to --max-rate
    _run(
        [
            "sweep",
            "--rates",
            "200",
            "--echo-rates",
            "200",
            "--climb",
            "1.5",
            "--max-rate",
            "300",
            "--duration",
            "2",
            "--firms",
            "3",
            "--drain",
            "10",
            "--json",
            str(out),
        ]
    )
    r = json.loads(out.read_text())
    for k in ("saturation_rate", "echo_ceiling_rate", "ratio_to_echo", "steps", "echo_steps"):
        assert k in r, k
    assert [s["offered_rate"] for s in r["steps"]] == [200, 300]
    assert [s["offered_rate"] for s in r["echo_steps"]] == [200, 300]
    for s in r["steps"]:
        _check_step(s, exchange=True)
    for s in r["echo_steps"]:
        _check_step(s, exchange=False)
    assert r["saturation_rate"] == max(s["served_rate"] for s in r["steps"])
    assert 0 <= r["ratio_to_echo"]
    md = Path(r["report"]).read_text()
    assert "| offered /s |" in md and "Echo baseline" in md
    png = Path(r["plot"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_engine_benchmark_engines_do_the_generators_work():
    """``python -m loadtest.engine`` in process on a small stream: book-only and the full core
    must produce the fills, traded quantity and resting orders of the generator's own matcher
    (``bench`` exits otherwise), and the core's state hash is the same in every repetition."""
    from loadtest.engine import bench

    out = bench(3000, seed=5, repeat=2, peers=False, log=lambda *a: None)
    assert out["commands"] == 3000
    assert out["book_only_cmds_per_s"] > 0 and out["full_core_cmds_per_s"] > 0
    assert out["stream"]["fills"] > 0 and out["stream"]["resting_at_end"] > 0
    assert len(out["state_hash"]) == 64
