"""Rules admin API and websocket methods against the real server (loopback, SQLite journal)."""
from __future__ import annotations

from exchange.client import ExchangeClient, ExchangeError

from test_server import OPERATOR, POWER, STEEL, op, running_server


async def test_rules_endpoints_and_factor_history(tmp_path):
    async with running_server(tmp_path) as srv:
        st, body = await op(srv, "GET", "/rules/params")
        assert st == 200 and body["params"]["pre_ratio"] == "0.7"
        assert body["params"]["coupling_weights"] == "edges"
        assert (body["params"]["allocation_total"], body["params"]["cap_tonnes"]) == (
            "intensity", 0)
        # the OpenAPI document describes the new parameters
        st, doc = await op(srv, "GET", "/openapi.json", key=None)
        props = doc["components"]["schemas"]["ParamsBody"]["properties"]
        assert "allocation_total" in props and "cap_tonnes" in props
        st, body = await op(srv, "GET", "/rules/benchmarks")
        assert body["crude_steel"]["intensity"] == "1.8"

        st, body = await op(srv, "POST", "/rules/output-history",
                            {"firm_id": "STEEL1", "rows": [{"period": 2025, "output": 10000,
                                                            "emissions": 17000}]})
        assert st == 200, body
        st, body = await op(srv, "POST", "/rules/assessments",
                            {"firm_id": "STEEL1", "technology": "0.8", "efficiency": "0.6",
                             "hist_intensity": "1.7"})
        assert st == 200, body
        assert body["events"][0]["phi_after_ppm"] == 1_067_777
        st, body = await op(srv, "POST", "/rules/params", {"kappa": "0.3"})
        assert st == 200 and body["events"][0]["effective_from"] == 0
        st, body = await op(srv, "POST", "/rules/params", {"phi_min": "abc"})
        assert st == 422 and body["error"]["code"] == "INVALID_PARAMS"

        st, body = await op(srv, "POST", "/rules/allocation-runs",
                            {"period": 2026, "step": "pre_allocate"})
        assert st == 200, body
        st, a = await op(srv, "GET", "/rules/allocations/2026/STEEL1")
        # only STEEL1 has a last output: T = 1.8 x 10,000 = 18,000, pre = 0.7 x T, all of it
        # its share whatever its phi; k_pre = 18,000 / (18,000 x 1.067777) = 0.936525
        assert st == 200 and a["pre_allocation"] == 12_600
        assert (a["allocation_total"], a["scale_ppm"], a["raw_allocation"]) == (
            "intensity", 936_525, 19_219)
        # absolute needs a cap; bad values are refused; a valid change applies from 2027
        st, body = await op(srv, "POST", "/rules/params", {"allocation_total": "absolute"})
        assert st == 400 and body["error"]["code"] == "BAD_PARAMETER"
        st, body = await op(srv, "POST", "/rules/params", {"allocation_total": "pro_rata"})
        assert st == 422 and body["error"]["code"] == "INVALID_PARAMS"
        st, body = await op(srv, "POST", "/rules/params", {"cap_tonnes": -1})
        assert st == 422
        st, body = await op(srv, "POST", "/rules/params", {"cap_tonnes": "5000"})
        assert st == 422
        st, body = await op(srv, "POST", "/rules/params",
                            {"allocation_total": "absolute", "cap_tonnes": 500_000})
        assert st == 200 and body["events"][0]["effective_from"] == 2027
        st, body = await op(srv, "GET", "/rules/params")
        assert (body["params"]["allocation_total"], body["params"]["cap_tonnes"]) == (
            "absolute", 500_000)
        assert body["schedule"][0]["params"]["allocation_total"] == "intensity"
        st, body = await op(srv, "POST", "/rules/allocation-runs",
                            {"period": 2026, "step": "pre_allocate"})
        assert st == 400 and body["error"]["code"] == "PERIOD_ALREADY_OPEN"
        st, body = await op(srv, "GET", "/rules/allocations/2026")
        assert {x["firm_id"] for x in body["allocations"]} >= {"STEEL1", "POWER1", "CEMENT1"}
        st, body = await op(srv, "GET", "/rules/periods")
        p26 = body["periods"][0]
        assert {k: p26[k] for k in ("period", "state", "instrument", "responsibility")} == {
            "period": 2026, "state": "open", "instrument": "CEA-2026", "responsibility": {}}
        assert (p26["allocation"]["allocation_total"], p26["allocation"]["pre_basis"],
                p26["allocation"]["pre_total"], p26["allocation"]["pre_scale_ppm"],
                p26["allocation"]["total"]) == ("intensity", 18_000, 12_600, 936_525, None)

        st, body = await op(srv, "GET", "/rules/chains")
        chain = [c for c in body["chains"] if c["chain_id"] == "steelchain"][0]
        steel = [m for m in chain["members"] if m["firm_id"] == "STEEL1"][0]
        assert steel["tier"] == 0 and steel["phi"] == "1.067777"
        assert steel["coupling_weights"] == {"POWER1": "0.4", "SME1": "0.6"}
        st, body = await op(srv, "GET", "/rules/chains/nope")
        assert st == 404

        split = {"parent": "STEEL1", "instrument": "CEA-2026", "amount": 101,
                 "smes": ["SME1"], "strategy": "equal", "revenue_share": "0.6",
                 "chain_id": "steelchain"}
        st, body = await op(srv, "POST", "/rules/splits/preview", split)
        assert st == 200 and body["parts"] == [{"sme": "SME1", "qty": 101, "weight": "1"}]
        st, body = await op(srv, "POST", "/rules/splits", split)
        assert st == 200, body
        assert body["events"][0]["type"] == "sub_quotas_split"
        st, body = await op(srv, "POST", "/rules/splits", dict(split, amount=10**8))
        assert st == 400 and body["error"]["code"] == "INSUFFICIENT_HOLDINGS"
        st, body = await op(srv, "POST", "/rules/splits", dict(split, smes=["CEMENT1"]))
        assert st == 400 and body["error"]["code"] == "NOT_AN_SME"
        st, body = await op(srv, "GET", "/rules/sub-quotas")
        assert any(q["sme"] == "SME1" and q["granted"] == 101 for q in body["sub_quotas"])

        # factor history: operator, the firm itself, not another firm
        st, body = await op(srv, "GET", "/rules/factors/STEEL1")
        assert st == 200 and body["history"][0]["reason"] == "assessment"
        st, body = await op(srv, "GET", "/rules/factors/STEEL1", key=STEEL)
        assert st == 200 and body["phi_ppm"] == 1_067_777
        st, body = await op(srv, "GET", "/rules/factors/STEEL1", key=POWER)
        assert st == 403
        st, body = await op(srv, "POST", "/rules/params", {"kappa": "0.1"}, key=STEEL)
        assert st == 403

        async with ExchangeClient(srv.ws_url, STEEL) as c:
            h = await c.request("factor_history", {})
            assert h["firm_id"] == "STEEL1" and h["history"][0]["phi_after_ppm"] == 1_067_777
            a = await c.request("allocation", {"period": 2026})
            assert a["pre_allocation"] == 12_600 and a["scale_ppm"] == 936_525
            try:
                await c.request("allocation", {"period": "2026"})
                raise AssertionError("a string period must be refused")
            except ExchangeError as exc:
                assert exc.code == "INVALID_PARAMS"
    assert OPERATOR
