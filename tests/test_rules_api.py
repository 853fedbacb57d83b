"""Rules admin API and websocket methods against the real server (loopback, SQLite journal)."""

from __future__ import annotations

import aiohttp

from exchange.client import ExchangeClient, ExchangeError

from test_server import CEMENT, OPERATOR, POWER, SME1, STEEL, op, running_server

SME2 = "demo-key-sme2"
VERIFIER = "verifier-demo-key"


async def test_rules_endpoints_and_factor_history(tmp_path):
    async with running_server(tmp_path) as srv:
        st, body = await op(srv, "GET", "/rules/params")
        assert st == 200 and body["params"]["pre_ratio"] == "0.7"
        assert body["params"]["coupling_weights"] == "edges"
        assert (body["params"]["allocation_total"], body["params"]["cap_tonnes"]) == (
            "intensity",
            0,
        )
        # the OpenAPI document describes the new parameters
        st, doc = await op(srv, "GET", "/openapi.json", key=None)
        props = doc["components"]["schemas"]["ParamsBody"]["properties"]
        assert "allocation_total" in props and "cap_tonnes" in props
        st, body = await op(srv, "GET", "/rules/benchmarks")
        assert body["crude_steel"]["intensity"] == "1.8"

        st, body = await op(
            srv,
            "POST",
            "/rules/output-history",
            {"firm_id": "STEEL1", "rows": [{"period": 2025, "output": 10000, "emissions": 17000}]},
        )
        assert st == 200, body
        st, body = await op(
            srv,
            "POST",
            "/rules/assessments",
            {
                "firm_id": "STEEL1",
                "technology": "0.8",
                "efficiency": "0.6",
                "hist_intensity": "1.7",
            },
        )
        assert st == 200, body
        assert body["events"][0]["phi_after"] == "1.067777"
        st, body = await op(srv, "POST", "/rules/params", {"kappa": "0.3"})
        assert st == 200 and body["events"][0]["effective_from"] == 0
        st, body = await op(srv, "POST", "/rules/params", {"phi_min": "abc"})
        assert st == 422 and body["error"]["code"] == "INVALID_PARAMS"

        st, body = await op(
            srv, "POST", "/rules/allocation-runs", {"period": 2026, "step": "pre_allocate"}
        )
        assert st == 200, body
        st, a = await op(srv, "GET", "/rules/allocations/2026/STEEL1")
        # only STEEL1 has a last output: T = 1.8 x 10,000 = 18,000, pre = 0.7 x T, all of it
        # its share whatever its phi; k_pre = 18,000 / (18,000 x 1.067777) = 0.936525
        assert st == 200 and a["pre_allocation"] == 12_600
        assert (a["allocation_total"], a["scale"], a["raw_allocation"]) == (
            "intensity",
            "0.936525",
            19_219,
        )
        # absolute needs a cap; bad values are refused; a valid change applies from 2027
        st, body = await op(srv, "POST", "/rules/params", {"allocation_total": "absolute"})
        assert st == 400 and body["error"]["code"] == "BAD_PARAMETER"
        st, body = await op(srv, "POST", "/rules/params", {"allocation_total": "pro_rata"})
        assert st == 422 and body["error"]["code"] == "INVALID_PARAMS"
        st, body = await op(srv, "POST", "/rules/params", {"cap_tonnes": -1})
        assert st == 422
        st, body = await op(srv, "POST", "/rules/params", {"cap_tonnes": "5000"})
        assert st == 422
        st, body = await op(
            srv, "POST", "/rules/params", {"allocation_total": "absolute", "cap_tonnes": 500_000}
        )
        assert st == 200 and body["events"][0]["effective_from"] == 2027
        st, body = await op(srv, "GET", "/rules/params")
        assert (body["params"]["allocation_total"], body["params"]["cap_tonnes"]) == (
            "absolute",
            500_000,
        )
        assert body["schedule"][0]["params"]["allocation_total"] == "intensity"
        st, body = await op(
            srv, "POST", "/rules/allocation-runs", {"period": 2026, "step": "pre_allocate"}
        )
        assert st == 400 and body["error"]["code"] == "PERIOD_ALREADY_OPEN"
        st, body = await op(srv, "GET", "/rules/allocations/2026")
        assert {x["firm_id"] for x in body["allocations"]} >= {"STEEL1", "POWER1", "CEMENT1"}
        st, body = await op(srv, "GET", "/rules/periods")
        p26 = body["periods"][0]
        assert {k: p26[k] for k in ("period", "state", "instrument", "responsibility")} == {
            "period": 2026,
            "state": "open",
            "instrument": "CEA-2026",
            "responsibility": {},
        }
        assert (
            p26["allocation"]["allocation_total"],
            p26["allocation"]["pre_basis"],
            p26["allocation"]["pre_total"],
            p26["allocation"]["pre_scale"],
            p26["allocation"]["total"],
        ) == ("intensity", 18_000, 12_600, "0.936525", None)

        st, body = await op(srv, "GET", "/rules/chains")
        chain = [c for c in body["chains"] if c["chain_id"] == "steelchain"][0]
        steel = [m for m in chain["members"] if m["firm_id"] == "STEEL1"][0]
        assert steel["tier"] == 0 and steel["phi"] == "1.067777"
        assert steel["coupling_weights"] == {"POWER1": "0.4", "SME1": "0.6"}
        st, body = await op(srv, "GET", "/rules/chains/nope")
        assert st == 404

        split = {
            "parent": "STEEL1",
            "instrument": "CEA-2026",
            "amount": 101,
            "smes": ["SME1"],
            "strategy": "equal",
            "revenue_share": "0.6",
            "chain_id": "steelchain",
        }
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
        assert st == 200 and body["phi"] == "1.067777"
        st, body = await op(srv, "GET", "/rules/factors/STEEL1", key=POWER)
        assert st == 403
        st, body = await op(srv, "POST", "/rules/params", {"kappa": "0.1"}, key=STEEL)
        assert st == 403

        async with ExchangeClient(srv.ws_url, STEEL) as c:
            h = await c.request("factor_history", {})
            assert h["firm_id"] == "STEEL1" and h["history"][0]["phi_after"] == "1.067777"
            a = await c.request("allocation", {"period": 2026})
            assert a["pre_allocation"] == 12_600 and a["scale"] == "0.936525"
            try:
                await c.request("allocation", {"period": "2026"})
                raise AssertionError("a string period must be refused")
            except ExchangeError as exc:
                assert exc.code == "INVALID_PARAMS"
    assert OPERATOR


SPLIT = {
    "parent": "STEEL1",
    "instrument": "CEA-2026",
    "amount": 1234,
    "smes": ["SME1"],
    "strategy": "equal",
    "revenue_share": "0.65",
    "surplus_rule": "bank",
    "shortfall_rule": "parent",
    "chain_id": "steelchain",
}


async def test_firm_sub_quotas_endpoint(tmp_path):
    """GET /rules/sub-quotas/{firm}: what an SME received and a core firm split out, with the
    terms; who may read it; its model in the OpenAPI document; the statement's form."""
    from exchange.rules.api import FirmSubQuotas, SubQuotaLots

    async with running_server(tmp_path) as srv:
        st, body = await op(srv, "POST", "/rules/splits", SPLIT)
        assert st == 200, body
        lot_id = [e for e in body["events"] if e["type"] == "sub_quota_created"][0]["lot_id"]
        created_seq = body["seq"]

        st, mine = await op(srv, "GET", "/rules/sub-quotas/SME1", key=SME1)
        assert st == 200, mine
        FirmSubQuotas.model_validate(mine)  # closed: an undescribed field fails here
        assert (mine["firm_id"], mine["size_class"], mine["split_out"]) == ("SME1", "sme", [])
        # the demo's genesis lot (3,000 t, 70 %, revert, parent) and the one just split
        assert [(q["parent"], q["granted"], q["revenue_share"]) for q in mine["received"]] == [
            ("STEEL1", 3000, "0.7"),
            ("STEEL1", 1234, "0.65"),
        ]
        assert mine["received"][1] == {
            "lot_id": lot_id,
            "period": 2026,
            "instrument": "CEA-2026",
            "parent": "STEEL1",
            "sme": "SME1",
            "chain_id": "steelchain",
            "granted": 1234,
            "held": 1234,
            "sold": 0,
            "revenue_share": "0.65",
            "surplus_rule": "bank",
            "shortfall_rule": "parent",
            "sme_proceeds": "0.00",
            "parent_proceeds": "0.00",
            "created_seq": created_seq,
            "settlement": None,
            "compliance": {},
        }
        # the core firm sees what it split out, to whom, with the same terms
        st, steel = await op(srv, "GET", "/rules/sub-quotas/STEEL1", key=STEEL)
        assert st == 200 and steel["received"] == []
        assert steel["split_out"] == mine["received"]
        st, cement = await op(srv, "GET", "/rules/sub-quotas/CEMENT1", key=CEMENT)
        assert [
            (q["sme"], q["granted"], q["surplus_rule"], q["shortfall_rule"])
            for q in cement["split_out"]
        ] == [("SME2", 2000, "bank", "sme")]
        # the operator reads any firm's; a verifier only the firms whose submissions it
        # verified or rejected (none yet); a firm only its own; nobody without a key
        st, body = await op(srv, "GET", "/rules/sub-quotas/SME1")
        assert st == 200 and body == mine
        st, body = await op(srv, "GET", "/rules/sub-quotas/SME1", key=VERIFIER)
        assert st == 403 and body["error"]["code"] == "FORBIDDEN"
        for key, firm in ((SME1, "STEEL1"), (STEEL, "SME1"), (SME2, "SME1")):
            st, body = await op(srv, "GET", f"/rules/sub-quotas/{firm}", key=key)
            assert st == 403 and body["error"]["code"] == "FORBIDDEN", (key, firm)
        st, body = await op(srv, "GET", "/rules/sub-quotas/SME1", key=None)
        assert st == 401 and body["error"]["code"] == "AUTH_FAILED"
        st, body = await op(srv, "GET", "/rules/sub-quotas/NOPE")
        assert st == 404 and body["error"]["code"] == "UNKNOWN_ACCOUNT"
        # a system account's id is no firm id (the path parameter's pattern refuses it)
        st, body = await op(srv, "GET", "/rules/sub-quotas/@sme_fund")
        assert st == 422 and body["error"]["code"] == "INVALID_PARAMS"
        # ?period=: the lots of that period's allowance only
        st, body = await op(srv, "GET", "/rules/sub-quotas/SME1?period=2026", key=SME1)
        assert st == 200 and len(body["received"]) == 2
        st, body = await op(srv, "GET", "/rules/sub-quotas/SME1?period=2027", key=SME1)
        assert st == 200 and body["received"] == []
        st, body = await op(srv, "GET", "/rules/sub-quotas/SME1?period=x", key=SME1)
        assert st == 422 and body["error"]["code"] == "INVALID_PARAMS"
        # the operator's list has the same rows, in the same model
        st, every = await op(srv, "GET", "/rules/sub-quotas")
        SubQuotaLots.model_validate(every)
        assert [q for q in every["sub_quotas"] if q["sme"] == "SME1"] == mine["received"]
        st, body = await op(srv, "GET", "/rules/sub-quotas", key=SME1)
        assert st == 403

        # the period end: the settlement shows on the lot
        for step in ("pre_allocate", "settle_sub_quotas"):
            st, body = await op(
                srv, "POST", "/rules/allocation-runs", {"period": 2026, "step": step}
            )
            assert st == 200, body
        st, body = await op(srv, "GET", "/rules/sub-quotas/SME1", key=SME1)
        FirmSubQuotas.model_validate(body)
        assert [
            (q["settlement"]["period"], q["settlement"]["action"]) for q in body["received"]
        ] == [(2026, "revert"), (2026, "bank")]

        # the OpenAPI document: firm-readable, with its response model
        st, doc = await op(srv, "GET", "/openapi.json", key=None)
        get = doc["paths"]["/api/v1/rules/sub-quotas/{firm_id}"]["get"]
        assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/FirmSubQuotas"
        }
        assert set(get["x-roles"]) == {"operator", "verifier", "firm"}
        lst = doc["paths"]["/api/v1/rules/sub-quotas"]["get"]
        assert lst["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SubQuotaLots"
        }
        props = doc["components"]["schemas"]["SubQuotaLot"]["properties"]
        assert {
            "revenue_share",
            "surplus_rule",
            "shortfall_rule",
            "chain_id",
            "parent",
            "granted",
            "held",
            "sold",
            "settlement",
        } <= set(props)
        assert props["surplus_rule"]["enum"] == ["revert", "bank"]

        # the firm statement (HTTP form) has the same terms, in JSON and CSV
        st, stmt = await op(srv, "GET", "/compliance/statements/SME1/2026", key=SME1)
        assert st == 200, stmt
        q = [x for x in stmt["sub_quotas"] if x["lot_id"] == lot_id][0]
        assert {
            k: q[k]
            for k in (
                "role",
                "parent",
                "period",
                "chain_id",
                "granted",
                "revenue_share",
                "surplus_rule",
                "shortfall_rule",
            )
        } == {
            "role": "sme",
            "parent": "STEEL1",
            "period": 2026,
            "chain_id": "steelchain",
            "granted": 1234,
            "revenue_share": "0.65",
            "surplus_rule": "bank",
            "shortfall_rule": "parent",
        }
        assert q["settlement"]["action"] == "bank"
        async with aiohttp.ClientSession() as s:
            async with s.get(
                srv.http + "/api/v1/compliance/statements/STEEL1/2026?format=csv",
                headers={"Authorization": f"Bearer {STEEL}"},
            ) as r:
                csv_text = await r.text()
        st, steel_stmt = await op(srv, "GET", "/compliance/statements/STEEL1/2026", key=STEEL)
        i = [x["lot_id"] for x in steel_stmt["sub_quotas"]].index(lot_id)
        for line in (
            f"sub_quotas[{i}].role,parent",
            f"sub_quotas[{i}].sme,SME1",
            f"sub_quotas[{i}].revenue_share,0.65",
            f"sub_quotas[{i}].chain_id,steelchain",
            f"sub_quotas[{i}].settlement.action,bank",
        ):
            assert line in csv_text.splitlines(), line


def _doc_examples(path, section_start: str, section_end: str) -> list[dict]:
    """The request/response pairs of a doc section, marked ``<!-- doc-test: request METHOD PATH
    key=KEY -->`` and ``<!-- doc-test: response STATUS -->``, each followed by a ```json block
    (a GET request has none)."""
    import json
    import re

    text = path.read_text(encoding="utf-8")
    text = text[text.index(section_start) : text.index(section_end)]
    marker = re.compile(r"<!-- doc-test: (request (\w+) (\S+) key=(\S+)|response (\d+)) -->")
    block = re.compile(r"```json\n(.*?)\n```", re.S)
    out, pos = [], 0
    while (m := marker.search(text, pos)) is not None:
        pos = m.end()
        if m.group(2):
            ex = {"method": m.group(2), "path": m.group(3), "key": m.group(4), "body": None}
            if ex["method"] != "GET":
                b = block.search(text, pos)
                ex["body"] = json.loads(b.group(1))
                pos = b.end()
            out.append(ex)
        else:
            b = block.search(text, pos)
            out[-1]["status"] = int(m.group(5))
            out[-1]["response"] = json.loads(b.group(1))
            pos = b.end()
    return out


def _seqs_out(x, seen: list):
    """Sequence numbers depend on the demo's genesis: set them aside (checked to be ints)."""
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if k in ("seq", "created_seq"):
                assert type(v) is int, (k, v)
                seen.append(v)
                out[k] = "<seq>"
            else:
                out[k] = _seqs_out(v, seen)
        return out
    if isinstance(x, list):
        return [_seqs_out(v, seen) for v in x]
    return x


async def test_rules_md_worked_split_example(tmp_path):
    """docs/RULES.md section 6, the worked split through the operator API: every request sent
    to a real server on loopback, every response equal to the one in the document."""
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "RULES.md"
    examples = _doc_examples(doc, "## 6. SME sub-quotas", "## 7. ")
    assert [(e["method"], e["path"]) for e in examples] == [
        ("POST", "/supply-chains"),
        ("POST", "/rules/splits/preview"),
        ("POST", "/rules/splits"),
        ("GET", "/rules/sub-quotas/SME2"),
    ]
    async with running_server(tmp_path) as srv:
        got_seqs, want_seqs = [], []
        for ex in examples:
            st, body = await op(srv, ex["method"], ex["path"], ex["body"], key=ex["key"])
            assert st == ex["status"], (ex["path"], body)
            assert _seqs_out(body, got_seqs) == _seqs_out(ex["response"], want_seqs), ex["path"]
        # the split's seq is the new lot's created_seq, in the server as in the document
        assert got_seqs[1] == got_seqs[-1] and want_seqs[1] == want_seqs[-1]
