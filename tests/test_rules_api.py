"""Rules admin API and websocket methods against the real server (loopback, SQLite journal)."""
from __future__ import annotations

from exchange.client import ExchangeClient, ExchangeError

from test_server import OPERATOR, POWER, STEEL, op, running_server


async def test_rules_endpoints_and_factor_history(tmp_path):
    async with running_server(tmp_path) as srv:
        st, body = await op(srv, "GET", "/rules/params")
        assert st == 200 and body["params"]["pre_ratio"] == "0.7"
        assert body["params"]["coupling_weights"] == "edges"
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
        # 0.7 x 1.8 x 10,000 x 1.067777 = 13,453.99 -> 13,453
        assert st == 200 and a["pre_allocation"] == 13_453
        st, body = await op(srv, "POST", "/rules/allocation-runs",
                            {"period": 2026, "step": "pre_allocate"})
        assert st == 400 and body["error"]["code"] == "PERIOD_ALREADY_OPEN"
        st, body = await op(srv, "GET", "/rules/allocations/2026")
        assert {x["firm_id"] for x in body["allocations"]} >= {"STEEL1", "POWER1", "CEMENT1"}
        st, body = await op(srv, "GET", "/rules/periods")
        assert body["periods"][0] == {"period": 2026, "state": "open",
                                      "instrument": "CEA-2026", "responsibility": {}}

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
            assert a["pre_allocation"] == 13_453
            try:
                await c.request("allocation", {"period": "2026"})
                raise AssertionError("a string period must be refused")
            except ExchangeError as exc:
                assert exc.code == "INVALID_PARAMS"
    assert OPERATOR
