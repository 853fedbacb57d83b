"""Published aggregates are suppressed below ``[privacy] min_contributors`` (exchange/privacy.py,
docs/PRIVACY.md): the helper itself, and the statistics the rules API shows to firms."""

from __future__ import annotations

import contextlib

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exchange.app.config import load_settings
from exchange.privacy import DEFAULT_MIN_CONTRIBUTORS, min_contributors, suppress
from exchange.app.server import STATE_KEY, create_app
from test_server import CEMENT, OPERATOR, POWER, STEEL

VERIFIER = "verifier-demo-key"


# ------------------------------------------------------------------ the helper


def test_groups_below_the_minimum_are_suppressed_without_figures():
    groups = {
        "bus_ride": {"t_co2e": 120, "contributors": {"P1", "P2", "P3"}},
        "bike_trip": {"t_co2e": 40, "contributors": ["P1", "P2", "P2"]},  # 2 distinct
        "ferry": {"t_co2e": 9, "contributors": 5},
    }
    out = suppress(groups, 3, complementary=False)
    assert out == {
        "bus_ride": {"t_co2e": 120, "contributors": 3, "suppressed": False},
        "bike_trip": {"suppressed": True},
        "ferry": {"t_co2e": 9, "contributors": 5, "suppressed": False},
    }
    assert groups["bike_trip"]["contributors"] == ["P1", "P2", "P2"]  # input untouched


def test_a_lone_suppressed_group_takes_the_smallest_other_with_it():
    # with only bike_trip hidden, total - bus_ride - ferry would give it away
    groups = {
        "bus_ride": {"t": 120, "contributors": 4},
        "bike_trip": {"t": 40, "contributors": 1},
        "ferry": {"t": 9, "contributors": 3},
    }
    out = suppress(groups, 3)
    assert out["bike_trip"] == {"suppressed": True} and out["ferry"] == {"suppressed": True}
    assert out["bus_ride"]["suppressed"] is False
    # two groups suppressed already hide each other: nothing more
    groups["ferry"]["contributors"] = 2
    out = suppress(groups, 3)
    assert [k for k, g in out.items() if g["suppressed"]] == ["bike_trip", "ferry"]


def test_empty_groups_and_a_minimum_of_one_suppress_nothing():
    assert suppress({"a": {"t": 0, "contributors": 0}}, 3) == {
        "a": {"t": 0, "contributors": 0, "suppressed": False}
    }
    assert suppress({"a": {"t": 5, "contributors": 1}}, 1)["a"]["suppressed"] is False
    assert suppress({}, 3) == {}
    with pytest.raises(TypeError):
        suppress({"a": {"contributors": True}}, 3)


def test_the_minimum_comes_from_the_settings():
    s = load_settings()
    assert min_contributors(s) == s.privacy.min_contributors == DEFAULT_MIN_CONTRIBUTORS == 3
    s5 = s.model_copy(update={"privacy": s.privacy.model_copy(update={"min_contributors": 5})})
    assert min_contributors(s5) == 5
    assert min_contributors(object()) == DEFAULT_MIN_CONTRIBUTORS


# ------------------------------------------------------------------ over HTTP


@contextlib.asynccontextmanager
async def served(tmp_path, k: int):
    s = load_settings()
    s = s.model_copy(update={"privacy": s.privacy.model_copy(update={"min_contributors": k})})
    app = create_app(s, tmp_path / f"data-{k}")
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    srv.http = f"http://127.0.0.1:{srv.port}"
    srv.st = app[STATE_KEY]
    try:
        yield srv
    finally:
        await srv.close()


async def call(srv, method, path, body=None, key=OPERATOR):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, srv.http + "/api/v1" + path, json=body, headers=headers) as r:
            js = await r.json(content_type=None)
            assert r.status in (200, 201), (method, path, r.status, js)
            return js


async def close_a_period(srv):
    """Three firms, one per product, verified; the period closed: each benchmark moves by a
    gradient step on its one firm's intensity."""
    await call(srv, "POST", "/rules/allocation-runs", {"period": 2026, "step": "pre_allocate"})
    # supply-chain data, so each product gets a responsibility factor
    for firm, inputs in (
        ("CEMENT1", [{"product": "electricity", "qty": 1_000}]),
        ("STEEL1", [{"product": "electricity", "qty": 2_000}, {"product": "clinker", "qty": 100}]),
    ):
        await call(
            srv, "POST", "/rules/input-use", {"firm_id": firm, "period": 2026, "inputs": inputs}
        )
    for key, firm, coal, output in (
        (POWER, "POWER1", 1_000, 3_000),
        (CEMENT, "CEMENT1", 500, 2_000),
        (STEEL, "STEEL1", 800, 1_500),
    ):
        await call(
            srv,
            "POST",
            "/compliance/submissions",
            {"period": 2026, "fuels": {"coal": coal}, "output": output},
            key,
        )
        await call(srv, "POST", f"/compliance/submissions/{firm}/2026/verify", {}, VERIFIER)
    await call(srv, "POST", "/rules/allocation-runs", {"period": 2026, "step": "close_period"})


async def test_benchmark_inputs_and_product_statistics_suppressed_for_firms(tmp_path):
    async with served(tmp_path, 3) as srv:
        await close_a_period(srv)
        op = await call(srv, "GET", "/rules/benchmarks")
        steps = [h for v in op.values() for h in v["history"] if h.get("inputs")]
        assert steps and all(h["inputs"]["firms"] == 1 for h in steps)
        assert all("weighted_intensity" in h["inputs"] for h in steps)
        firm = await call(srv, "GET", "/rules/benchmarks", key=CEMENT)
        for p, v in firm.items():
            assert v["intensity"] == op[p]["intensity"]  # the benchmark is public
            for h in v["history"]:
                if h.get("inputs"):
                    assert h["inputs"] == {"suppressed": True} == h["terms"]
                    assert "weighted_intensity" not in str(h)
        # a product's responsibility factor is its producers' statistic: one each here
        op_p = (await call(srv, "GET", "/rules/periods"))["periods"][0]
        firm_p = (await call(srv, "GET", "/rules/periods", key=CEMENT))["periods"][0]
        assert op_p["responsibility"] and all(
            isinstance(v, str) for v in op_p["responsibility"].values()
        )
        assert set(firm_p["responsibility"]) == set(op_p["responsibility"])
        assert all(v == {"suppressed": True} for v in firm_p["responsibility"].values())
        # the period's totals: three verified firms share it, as many as the minimum
        assert firm_p["allocation"] == op_p["allocation"]


async def test_a_minimum_of_one_publishes_everything(tmp_path):
    async with served(tmp_path, 1) as srv:
        await close_a_period(srv)
        assert await call(srv, "GET", "/rules/benchmarks", key=CEMENT) == await call(
            srv, "GET", "/rules/benchmarks"
        )
        assert await call(srv, "GET", "/rules/periods", key=CEMENT) == await call(
            srv, "GET", "/rules/periods"
        )
