"""The SME fund through the served API: the real server (SQLite journal) on a free loopback
port, the demo market of config/default.toml ([compliance.sme_fund]: 30 % of penalties,
200,000.00 CNY per SME and period, 1,000,000.00 per period). Grants go through the HTTP flow;
a penalty collected at the deadline feeds the fund; the public statement, the OpenAPI document,
the firm statement; a restart replays the journal to the same state. Figures hand-computed."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestServer

from exchange.compliance.fund import FUND_ACCOUNT
from exchange.compliance.fund_api import FundStatement
from exchange.app.server import STATE_KEY, create_app

from test_compliance import business_hash
from test_compliance_api import (
    CEMENT,
    OPERATOR,
    SME1,
    STEEL,
    VERIFIER,
    call,
    ok,
    refused,
    settings_due_in,
)

DEADLINE_IN = 3.0  # seconds after start
F = "/compliance/sme-fund"


async def start(s, data_dir):
    app = create_app(s, data_dir)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    srv.http = f"http://127.0.0.1:{srv.port}"
    srv.st = app[STATE_KEY]
    return srv


async def test_sme_fund_through_the_served_api(tmp_path):
    s = settings_due_in(DEADLINE_IN)
    srv = await start(s, tmp_path / "data")
    t_start = time.monotonic()
    try:
        ex = srv.st.exchange
        # ---- the public statement: no key needed; the genesis configured the fund -----------
        sm = await ok(srv, "GET", F, key=None)
        FundStatement.model_validate(sm)
        assert sm["configured"] and sm["balance"] == "0.00"
        assert (
            sm["params"]["penalty_to_fund_pct"],
            sm["params"]["sme_period_limit"],
            sm["params"]["period_limit"],
        ) == ("30.00", "200000.00", "1000000.00")
        # ---- the OpenAPI document describes the endpoints and their models -----------------
        doc = await ok(srv, "GET", "/openapi.json", key=None)
        get = doc["paths"]["/api/v1" + F]["get"]
        assert "security" not in get  # public
        assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/FundStatement"
        }
        for path, method, body in (
            (F + "/params", "put", "FundParamsBody"),
            (F + "/deposits", "post", "FundDepositBody"),
            (F + "/applications", "post", "GrantApplicationBody"),
            (F + "/applications/{application_id}/reject", "post", "GrantRejectBody"),
        ):
            op = doc["paths"]["/api/v1" + path][method]
            assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/" + body
            )
        for path in ("/approve", "/disburse"):
            assert "post" in doc["paths"]["/api/v1" + F + "/applications/{application_id}" + path]
        schemas = doc["components"]["schemas"]
        assert {"FundStatement", "GrantApplication", "FundParams"} <= set(schemas)
        assert "balance" in schemas["FundStatement"]["properties"]
        assert "balance_fen" not in schemas["FundStatement"]["properties"]
        # ---- the regulator's budget ----------------------------------------------------------
        await refused(srv, "POST", F + "/deposits", {"amount": "1.00"}, SME1, 403, "FORBIDDEN")
        await refused(
            srv, "POST", F + "/deposits", {"amount": "1.001"}, OPERATOR, 422, "INVALID_PARAMS"
        )
        await refused(
            srv,
            "POST",
            F + "/deposits",
            {"amount": "1.00", "period": 1999},
            OPERATOR,
            400,
            "UNKNOWN_PERIOD",
        )
        d = await ok(
            srv,
            "POST",
            F + "/deposits",
            {"amount": "100000.00", "period": 2026, "ref": "MEE budget 2026"},
        )
        assert [e["type"] for e in d["events"]] == ["posting", "sme_fund_inflow"]
        assert d["events"][1]["balance"] == "100000.00"
        # ---- an SME applies for itself; a large firm may not; nobody for someone else -------
        app = {
            "period": 2026,
            "amount": "80000.00",
            "project": "waste-heat recovery",
            "verified_abatement_t": 120,
        }
        r = await ok(srv, "POST", F + "/applications", app, SME1)
        assert r["events"][0]["type"] == "grant_applied"
        assert r["events"][0]["application_id"] == 1 and r["events"][0]["applicant"] == "SME1"
        await refused(srv, "POST", F + "/applications", app, STEEL, 400, "NOT_AN_SME")
        await refused(
            srv, "POST", F + "/applications", {**app, "sme": "SME2"}, SME1, 403, "FORBIDDEN"
        )
        # the body is well-formed (sme is optional in it); an operator key must name the SME
        await refused(srv, "POST", F + "/applications", app, OPERATOR, 400, "BAD_PARAMETER")
        await refused(
            srv,
            "POST",
            F + "/applications",
            {**app, "verified_abatement_t": 0},
            SME1,
            422,
            "INVALID_PARAMS",
        )
        await refused(srv, "POST", F + "/applications", app, VERIFIER, 403, "FORBIDDEN")
        # ---- approval and payment are the operator's ----------------------------------------
        await refused(srv, "POST", F + "/applications/1/approve", {}, SME1, 403, "FORBIDDEN")
        await refused(
            srv, "POST", F + "/applications/1/disburse", {}, OPERATOR, 400, "GRANT_NOT_APPROVED"
        )
        await refused(
            srv, "POST", F + "/applications/x/approve", {}, OPERATOR, 422, "INVALID_PARAMS"
        )
        await refused(
            srv,
            "POST",
            F + "/applications/9/approve",
            {},
            OPERATOR,
            400,
            "UNKNOWN_GRANT_APPLICATION",
        )
        r = await ok(srv, "POST", F + "/applications/1/approve", {})
        assert r["events"][0]["operator"] == "demo operator"
        cash0 = ex.accounts["SME1"].cash
        r = await ok(srv, "POST", F + "/applications/1/disburse", {})
        assert [e["type"] for e in r["events"]] == ["posting", "grant_disbursed"]
        assert ex.accounts["SME1"].cash == cash0 + 8_000_000
        assert r["events"][1]["fund_balance"] == "20000.00"  # 100,000.00 - 80,000.00
        # ---- the fund's balance, then the limit per SME and period (200,000.00) -------------
        await ok(
            srv,
            "POST",
            F + "/applications",
            {**app, "amount": "150000.00", "project": "heat pump"},
            SME1,
        )
        await ok(srv, "POST", F + "/applications/2/approve", {})
        await refused(
            srv, "POST", F + "/applications/2/disburse", {}, OPERATOR, 400, "SME_FUND_INSUFFICIENT"
        )  # 150,000.00 > 20,000.00
        await ok(srv, "POST", F + "/deposits", {"amount": "500000.00", "period": 2026})
        await refused(
            srv,
            "POST",
            F + "/applications/2/disburse",
            {},
            OPERATOR,
            400,
            "GRANT_SME_LIMIT_EXCEEDED",
        )  # 80,000 + 150,000 > 200,000
        await refused(
            srv,
            "POST",
            F + "/applications/2/reject",
            {"reason": ""},
            OPERATOR,
            422,
            "INVALID_PARAMS",
        )
        await ok(
            srv,
            "POST",
            F + "/applications/2/reject",
            {"reason": "over the limit per SME and period"},
        )
        # ---- the operator applies for SME2; a lower period limit stops its payment ----------
        r = await ok(
            srv,
            "POST",
            F + "/applications",
            {**app, "sme": "SME2", "amount": "30000.00", "project": "kiln insulation"},
        )
        assert r["events"][0]["applicant"] == "operator:demo operator"
        await refused(
            srv,
            "PUT",
            F + "/params",
            {"penalty_to_fund_pct": "30"},
            OPERATOR,
            422,
            "INVALID_PARAMS",
        )  # all four, every time
        params = {
            "penalty_to_fund_pct": "30",
            "auction_to_fund_pct": "10",
            "sme_period_limit": "200000.00",
            "period_limit": "100000.00",
        }
        await refused(srv, "PUT", F + "/params", params, SME1, 403, "FORBIDDEN")
        # a share over 100 % is outside the documented pattern of a percentage
        await refused(
            srv,
            "PUT",
            F + "/params",
            {**params, "penalty_to_fund_pct": "101"},
            OPERATOR,
            422,
            "INVALID_PARAMS",
        )
        await refused(
            srv,
            "PUT",
            F + "/params",
            {**params, "penalty_to_fund_pct": "x"},
            OPERATOR,
            422,
            "INVALID_PARAMS",
        )
        r = await ok(srv, "PUT", F + "/params", params)
        assert r["events"][0]["period_limit"] == "100000.00"
        await ok(srv, "POST", F + "/applications/3/approve", {})
        await refused(
            srv,
            "POST",
            F + "/applications/3/disburse",
            {},
            OPERATOR,
            400,
            "GRANT_PERIOD_LIMIT_EXCEEDED",
        )  # 80,000 + 30,000 > 100,000
        # ---- lists: a firm sees its own ------------------------------------------------------
        mine = await ok(srv, "GET", F + "/applications", key=SME1)
        assert [(a["application_id"], a["status"]) for a in mine["applications"]] == [
            (1, "disbursed"),
            (2, "rejected"),
        ]
        await refused(srv, "GET", F + "/applications?sme=SME2", None, SME1, 403, "FORBIDDEN")
        rej = await ok(srv, "GET", F + "/applications?status=rejected")
        assert [a["reason"] for a in rej["applications"]] == ["over the limit per SME and period"]
        await refused(
            srv, "GET", F + "/applications?status=lost", None, OPERATOR, 422, "INVALID_PARAMS"
        )
        # ---- the deadline: CEMENT1 surrendered nothing for its 15,558 t ----------------------
        await ok(
            srv,
            "POST",
            "/compliance/submissions",
            {"period": 2026, "fuels": {"oil": 5_000, "natural_gas": 3_000}},
            CEMENT,
        )
        await ok(
            srv,
            "POST",
            "/compliance/submissions/CEMENT1/2026/verify",
            {"verifier": "VERIFIER1"},
            VERIFIER,
        )
        await asyncio.sleep(max(0.0, DEADLINE_IN + 0.2 - (time.monotonic() - t_start)))
        bank0 = ex.accounts["@bank"].cash
        d = await ok(srv, "POST", "/compliance/periods/2026/deadline", {})
        # no trade: the average price is CEA-2026's reference, 85.00; 50,000.00 + 15,558 t x
        # 85.00 x 3 = 4,017,290.00 CNY, paid in full; 30 % = 1,205,187.00 to the fund
        inflow = next(e for e in d["events"] if e["type"] == "sme_fund_inflow")
        assert (inflow["gross"], inflow["amount"], inflow["ref"]) == (
            "4017290.00",
            "1205187.00",
            "CEMENT1",
        )
        assert ex.accounts["@bank"].cash - bank0 == 401_729_000 - 120_518_700
        # ---- the public statement ---------------------------------------------------------------
        sm = await ok(srv, "GET", F + "?period=2026", key=None)
        FundStatement.model_validate(sm)
        # 100,000 + 500,000 + 1,205,187 in; 80,000 out
        assert sm["inflows"]["by_source"] == {
            "penalty": "1205187.00",
            "auction": "0.00",
            "budget": "600000.00",
        }
        assert sm["grants"]["by_sme"][0]["sme"] == "SME1"
        assert sm["grants"]["paid"][0]["project"] == "waste-heat recovery"
        # 1,805,187.00 in less 80,000.00 out
        assert sm["balance"] == "1725187.00" and ex.accounts[FUND_ACCOUNT].cash == 172_518_700
        assert sm["balance_check"]["ok"]
        assert sm["applications"] == {"pending": 0, "approved": 1, "rejected": 1, "disbursed": 1}
        await refused(srv, "GET", F + "?period=x", None, None, 422, "INVALID_PARAMS")
        # ---- the firm statements ------------------------------------------------------------
        st1 = await ok(srv, "GET", "/compliance/statements/SME1/2026", key=SME1)
        assert st1["sme_fund"]["received"] == "80000.00"
        assert [a["project"] for a in st1["sme_fund"]["applications"]] == [
            "waste-heat recovery",
            "heat pump",
        ]
        stc = await ok(srv, "GET", "/compliance/statements/CEMENT1/2026", key=CEMENT)
        assert stc["sme_fund"]["penalty_to_fund"] == "1205187.00"
        ex.check_invariants()
        want = business_hash(ex)
    finally:
        await srv.close()
    # ---- a restart replays the journal to the same fund ------------------------------------
    srv = await start(s, tmp_path / "data")
    try:
        # (the server journals a snapshot marker on stop: the envelope moves on, nothing else)
        assert business_hash(srv.st.exchange) == want
        sm2 = await ok(srv, "GET", F + "?period=2026", key=None)
        assert (sm2["balance"], sm2["grants"]["total"]) == ("1725187.00", "80000.00")
        status, _ = await call(srv, "GET", F + "/applications", key=None)
        assert status == 401
    finally:
        await srv.close()
