"""Many seeds and sweeps: bands over seeds, a grid of cells, and the same bytes whether the
runs went through this process or through a Dask cluster — also when a worker dies mid-run."""

from __future__ import annotations

import csv
import json
import os
import signal
import tomllib
from pathlib import Path

import numpy as np
import pytest

from exchange.cli import main as cli_main
from exchange.sim import cli as sim_cli
from exchange.sim.ensemble import band, ensemble_seeds
from exchange.sim.runner import run_scenario
from exchange.sim.scenario import parse_scenario

SMALL = """
[scenario]
name = "small"
periods = 2
seed = 3

[market]
initial_price = 40.0
rounds_per_period = 6
settlement_rounds = 1
benchmark_stringency = 0.15

[offsets]
enabled = true
cap = 0.05
price = 45.0

[[sectors]]
name = "steel"
intensity = 2.0
firms = 6
output_mean = 5000
mac = { kind = "piecewise", points = [[0.0, 0.0], [0.05, 40.0], [0.2, 300.0]] }

[[sectors]]
name = "parts"
intensity = 0.5
output_mean = 2000
mac = { kind = "linear", full_abatement_cost = 800.0, max_abatement_share = 0.5 }

[[chains]]
id = "C"
core_sector = "steel"
tiers = [{ tier = 1, firms = 2, sector = "parts" },
         { tier = 2, firms = 3, sector = "parts", size_class = "sme", output_scale = 0.3 }]
split_strategy = "by_output"
"""

# the Dask runs: the shipped chain scenario, two periods (about half a second a run)
DASK_ARGS = ["simulate", "supply_chain_smes", "--seeds", "4", "--periods", "2", "--quiet"]
SAME_BYTES = (
    "summary.json",
    "seeds.csv",
    "report.md",
    "report.html",
    "price_path.png",
    "emissions_vs_allocation.png",
    "compliance_cost.png",
    "sectors.png",
)


@pytest.fixture
def small(tmp_path) -> Path:
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


def test_seeds_start_with_the_base_and_share_no_random_stream():
    s = ensemble_seeds(11, 40)
    assert s[0] == 11 and len(set(s)) == 40
    streams = [x + d for x in s for d in (0, 7, 1_000_003)]
    assert len(set(streams)) == len(streams)
    assert ensemble_seeds(11, 40) == s and ensemble_seeds(12, 3) != s[:3]


def test_the_same_warning_with_other_figures_counts_once():
    from exchange.sim.ensemble import _warning_kind

    a = "2 firm-periods ended short of allowances in 2029: 2 t in all, penalties 562 CNY"
    b = "3 firm-periods ended short of allowances in 2026, 2028: 5 t in all, penalties 36 CNY"
    assert _warning_kind(a) == _warning_kind(b)
    assert _warning_kind(a) != _warning_kind("the price reached the cap of 1,000 CNY/t in 2027")


def test_band_is_numpy_percentiles_of_the_defined_values():
    b = band([3.0, None, 1.0, 2.0, 10.0])
    q = np.percentile([1.0, 2.0, 3.0, 10.0], [5, 50, 95])
    assert (b["p05"], b["p50"], b["p95"], b["n"]) == (
        pytest.approx(q[0]),
        q[1],
        pytest.approx(q[2]),
        4,
    )
    assert band([None])["p50"] is None


def test_many_seeds_report_bands_of_every_headline_figure(small, tmp_path):
    out = tmp_path / "bands"
    assert (
        cli_main(
            ["simulate", str(small), "--seeds", "3", "--workers", "0", "--out", str(out), "--quiet"]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["runs"] == 3 and s["seeds"][0] == 3
    for fig in (
        "final_price",
        "total_emissions",
        "total_abatement_cost",
        "offset_share_used",
        "sme_net_cost",
        "price_2026",
        "price_2027",
        "emissions_2027",
    ):
        lo, mid, hi = (s[f"{fig}_{q}"] for q in ("p05", "p50", "p95"))
        assert lo <= mid <= hi, fig
    # the median is the seeds' median, read back from seeds.csv
    rows = list(csv.DictReader(open(out / "seeds.csv")))
    assert [int(r["seed"]) for r in rows] == sorted(s["seeds"])
    prices = [float(r["final_price"]) for r in rows]
    assert s["final_price_p50"] == pytest.approx(float(np.median(prices)), rel=1e-8)
    assert s["final_price_p05"] < s["final_price_p95"]  # the seeds do differ
    assert set(s["by_sector"]) == {"steel", "parts"}
    md = (out / "report.md").read_text()
    assert "p50 [p05 – p95]" in md and "| final close price | CNY/t |" in md
    assert "## Output, intensity and emissions by sector" in md
    assert "--workers" not in md and "--quiet" not in md
    # report.html: one page, the plots inside it, nothing fetched
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == md.count("![")
    assert "http" not in page.replace('lang="en"', "") and "<table>" in page
    for f in SAME_BYTES + ("timings.json",):
        assert (out / f).stat().st_size > 0, f
    # the ensemble's first member is the one-seed run
    one = run_scenario(parse_scenario(tomllib.loads(SMALL)))
    assert one.seed == 3 and one.state_hash == s["state_hashes"]["3"]


def test_sweep_grid_with_bands_and_the_noise_rule(small, tmp_path):
    out = tmp_path / "grid"
    assert (
        cli_main(
            [
                "simulate",
                str(small),
                "--seeds",
                "3",
                "--periods",
                "1",
                "--workers",
                "0",
                "--vary",
                "offset_cap=0,0.1",
                "--vary",
                "split_strategy=equal,by_output",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [r["cell"] for r in rows] == [
        "offset_cap=0,split_strategy=equal",
        "offset_cap=0,split_strategy=by_output",
        "offset_cap=0.1,split_strategy=equal",
        "offset_cap=0.1,split_strategy=by_output",
    ]
    for r in rows:
        assert (
            float(r["final_price_p05"])
            <= float(r["final_price_p50"])
            <= float(r["final_price_p95"])
        )
    # the reference cell differs from itself by nothing
    assert (
        float(rows[0]["final_price_diff_p50"]) == 0
        and rows[0]["final_price_exceeds_noise"] == "False"
    )
    # offsets at 45 CNY/t inside a 10 % cap: used where the cap allows, never without it
    cmp = json.loads((out / "compare.json").read_text())
    assert cmp["cells"][0]["offset_share_used_p95"] == 0
    md = (out / "compare.md").read_text()
    assert "per-seed difference" in md and "## Cells" in md
    for c in cmp["cells"]:
        assert (out / "cells" / c["cell"] / "summary.json").is_file()
    assert (out / "compare.png").stat().st_size > 0
    assert 'src="data:image/png;base64,' in (out / "compare.html").read_text()
    assert (out / "compare_price.png").stat().st_size > 0
    assert (
        cli_main(
            [
                "simulate",
                str(small),
                "--vary",
                "offset_cap=0",
                "--vary",
                "offset_cap=1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    # varying the seed itself: each cell starts its ensemble from its own seed
    out2 = tmp_path / "by_seed"
    assert (
        cli_main(
            [
                "simulate",
                str(small),
                "--periods",
                "1",
                "--workers",
                "0",
                "--vary",
                "seed=3,4",
                "--out",
                str(out2),
                "--quiet",
            ]
        )
        == 0
    )
    by_seed = json.loads((out2 / "compare.json").read_text())["cells"]
    assert [
        json.loads((out2 / "cells" / c["cell"] / "summary.json").read_text())["seeds"]
        for c in by_seed
    ] == [[3], [4]]
    assert "no paired differences" in (out2 / "compare.md").read_text()


# ---------------------------------------------------------------------- Dask
dd = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client():
    from exchange.sim.cluster import local_cluster

    cluster = local_cluster(2)
    c = dd.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inproc")
    assert cli_main(DASK_ARGS + ["--workers", "0", "--out", str(out)]) == 0
    return out


def _same_files(a: Path, b: Path) -> None:
    for f in SAME_BYTES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_two_worker_cluster_and_in_process_give_the_same_bytes(
    client, in_process, tmp_path, monkeypatch
):
    from exchange.sim.cluster import Runner

    monkeypatch.setattr(sim_cli, "_runner", lambda args, n: Runner(client=client))
    out = tmp_path / "dask"
    assert cli_main(DASK_ARGS + ["--out", str(out)]) == 0
    _same_files(in_process, out)
    t = json.loads((out / "timings.json").read_text())
    assert t["where"].startswith("dask") and t["runs"] == 4


def test_a_worker_killed_mid_run_has_its_tasks_rerun(client, in_process, tmp_path, monkeypatch):
    from exchange.sim.cluster import Runner, wait_workers

    wait_workers(client, 2)
    killed: dict = {}

    class KillOnce(Runner):
        def run(self, tasks, **kw):
            def on_result(key, _):
                if killed:
                    return
                # a worker that is running a task right now
                busy = {w: ks for w, ks in client.processing().items() if ks}
                if not busy:
                    return
                w = sorted(busy)[0]
                pid = client.run(os.getpid, workers=[w])[w]
                killed.update(worker=w, keys=list(busy[w]), pid=pid)
                os.kill(pid, signal.SIGKILL)

            return super().run(tasks, on_result=on_result, **kw)

    monkeypatch.setattr(sim_cli, "_runner", lambda args, n: KillOnce(client=client))
    out = tmp_path / "killed"
    assert cli_main(DASK_ARGS + ["--out", str(out)]) == 0
    assert killed, "no worker was busy when the first result came back"
    _same_files(in_process, out)
    wait_workers(client, 2)  # the nanny restarted it
    assert killed["pid"] not in client.run(os.getpid).values()
