"""A smoke-sized run of the market-data soak (``python -m loadtest mdsoak``): its own
three-node NATS cluster, a leader, two market-data gateways, 200 subscribers in two client
processes, 5 s of orders. Every subscriber must receive every book update and trade in
order; the report must carry the per-gateway peak RSS. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.nats_cluster import nats_server_binary
from services import unavailable

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mdsoak_smoke(tmp_path):
    if nats_server_binary() is None:
        unavailable("nats-server", "the binary is not installed (apt-get install nats-server)")
    out = tmp_path / "mdsoak.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "mdsoak",
            "--subscribers",
            "200",
            "--gateways",
            "2",
            "--duration",
            "5",
            "--drain",
            "30",
            "--json",
            str(out),
        ],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert r["ok"] is True
    assert r["subscribed"] == r["complete"] == 200 and r["gaps"] == 0
    assert r["orders_acked"] > 0 and r["trades"] > 0 and r["final_book_seq"] > 0
    # every subscriber got every update: the book's since its snapshot, and every trade
    per = r["per_process"]
    assert sum(x["messages"] for x in per) >= 200 * r["trades"]
    assert set(r["gateway_peak_rss_mib"]) == {"g0", "g1"}
    assert all(v and v > 0 for v in r["gateway_peak_rss_mib"].values())
