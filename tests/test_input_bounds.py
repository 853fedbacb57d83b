"""Out-of-range numbers at the boundary: every integer and decimal a client sends over HTTP or
the websocket is range-checked before it becomes a command, so no request can reach the journal
with a number it cannot encode (which used to stop the runner: /readyz 503 for good), and no
decimal string is big enough to stall the event loop while it is parsed."""

from __future__ import annotations

import time

import aiohttp
import orjson
import pytest

from exchange.client import ExchangeClient
from test_compliance import business_hash
from test_server import OPERATOR, POWER, CEMENT, I, op, running_server

VERIFIER = "verifier-demo-key"


async def readyz(srv) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(srv.http + "/readyz") as r:
            return r.status


async def ws_call(srv, key, method, params) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {key}"}) as ws:
            await ws.send_str(
                orjson.dumps({"req_id": 1, "method": method, "params": params}).decode()
            )
            while True:
                r = orjson.loads((await ws.receive(timeout=5)).data)
                if r.get("req_id") == 1:
                    return r


BIG = 99999999999999999999  # over 64 bits
U64 = 2**64 - 1  # orjson reads it; no int64 column can hold it

HTTP_REQUESTS = [
    ("PUT", f"/compliance/periods/{BIG}/cap", {"cap_pct": "5"}, OPERATOR),
    ("PUT", "/compliance/periods/2026/cap", {"cap_pct": "1E+20000"}, OPERATOR),
    ("PUT", "/compliance/periods/2026/cap", {"cap_pct": "5", "effective": "0001-01-01"}, OPERATOR),
    ("PUT", "/compliance/periods/2026/cap", {"cap_pct": "5", "effective": "99999-01-01"}, OPERATOR),
    (
        "PUT",
        "/compliance/periods/2026/cap",
        {"cap_pct": "5", "sub_caps_pct": {"CCER": "1E+99"}},
        OPERATOR,
    ),
    ("POST", f"/compliance/submissions/POWER1/{BIG}/verify", {}, VERIFIER),
    ("POST", f"/compliance/submissions/POWER1/{BIG}/reject", {"reason": "x"}, VERIFIER),
    ("POST", f"/compliance/periods/{BIG}/deadline", {}, OPERATOR),
    ("POST", f"/compliance/periods/{BIG}/cap/what-if", {"cap_pct": "5"}, OPERATOR),
    ("GET", f"/rules/allocations/{BIG}", None, OPERATOR),
    ("GET", f"/rules/allocations/{BIG}/POWER1", None, OPERATOR),
    ("POST", "/compliance/submissions", {"period": U64, "firm_id": "POWER1"}, OPERATOR),
    (
        "POST",
        "/compliance/submissions",
        {"period": 2026, "fuels": {"coal": U64}, "firm_id": "POWER1"},
        OPERATOR,
    ),
    (
        "POST",
        "/compliance/submissions",
        {"period": 2026, "output": U64, "firm_id": "POWER1"},
        OPERATOR,
    ),
    (
        "POST",
        "/compliance/submissions",
        {"period": 2026, "process_emissions": U64, "firm_id": "POWER1"},
        OPERATOR,
    ),
    (
        "POST",
        "/compliance/surrenders",
        {"period": 2026, "instrument": I, "qty": U64, "firm_id": "POWER1"},
        OPERATOR,
    ),
    ("POST", "/issuance", {"account": "SME1", "instrument": I, "qty": U64}, OPERATOR),
    (
        "POST",
        "/transfers",
        {"from_account": "POWER1", "to_account": "SME1", "instrument": I, "qty": U64},
        OPERATOR,
    ),
    ("POST", "/instruments", {"symbol": "X-1", "vintage": U64}, OPERATOR),
    ("POST", "/segments", {"name": "big", "max_order_qty": U64}, OPERATOR),
    ("POST", "/segments", {"name": "big", "tick": "9999999999999999.00"}, OPERATOR),
    (
        "POST",
        "/supply-chains",
        {"chain_id": "c9", "members": [{"firm": "SME1", "tier": U64}]},
        OPERATOR,
    ),
    (
        "POST",
        "/compliance/sme-fund/applications",
        {
            "period": 2026,
            "amount": "10",
            "project": "p",
            "sme": "SME1",
            "verified_abatement_t": 2**62,
        },
        OPERATOR,
    ),
    (
        "POST",
        "/compliance/sme-fund/applications",
        {
            "period": 10**12,
            "amount": "10",
            "project": "p",
            "sme": "SME1",
            "verified_abatement_t": 1,
        },
        OPERATOR,
    ),
    ("POST", "/compliance/sme-fund/deposits", {"amount": "10", "period": 10**12}, OPERATOR),
    (
        "PUT",
        "/compliance/sme-fund/params",
        {"penalty_to_fund_pct": "1E+99", "auction_to_fund_pct": "0"},
        OPERATOR,
    ),
    ("POST", f"/compliance/sme-fund/applications/{BIG}/approve", {}, OPERATOR),
    (
        "POST",
        "/sub-quotas",
        {"parent": "STEEL1", "sme": "SME1", "instrument": I, "qty": U64, "revenue_share": "0"},
        OPERATOR,
    ),
]


async def test_out_of_range_numbers_get_4xx_and_leave_the_server_ready(tmp_path):
    async with running_server(tmp_path) as srv:
        ex = srv.st.exchange
        hash0 = business_hash(ex)  # rejected commands still advance last_seq
        for method, path, body, key in HTTP_REQUESTS:
            st, js = await op(srv, method, path, body, key=key)
            assert 400 <= st < 500, (method, path, body, st, js)
            assert js["ok"] is False and js["error"]["code"] in (
                "INVALID_PARAMS",
                "QUANTITY_LIMIT",
                "UNKNOWN_PERIOD",
                "BAD_JSON",
            ), (path, js)
            assert await readyz(srv) == 200, (method, path, body, js)
        for method, params in [
            ("place_order", {"instrument": I, "side": "buy", "qty": U64, "price": "85.00"}),
            ("place_order", {"instrument": I, "side": "buy", "qty": 2**63, "price": "85.00"}),
            ("amend_order", {"order_id": U64, "qty": U64}),
            ("cancel_order", {"order_id": U64}),
            ("submit_activity_data", {"period": U64}),
            ("submit_activity_data", {"period": 2026, "fuels": {"coal": U64}}),
            ("surrender", {"period": 2026, "instrument": I, "qty": U64}),
            ("compliance_statement", {"period": U64}),
        ]:
            r = await ws_call(srv, POWER, method, params)
            assert r["ok"] is False, (method, params, r)
            assert await readyz(srv) == 200, (method, params, r)
        assert business_hash(ex) == hash0
        # and the market still takes orders
        async with ExchangeClient(srv.ws_url, CEMENT) as c:
            await c.place_order(I, "buy", 1, "80.00", client_order_id="after-1")
        assert await readyz(srv) == 200


@pytest.mark.parametrize("text", ["1E+999990", "9" * 100_000, "1e-999999", "-1E+999999999"])
async def test_huge_decimals_answer_fast(tmp_path, text):
    async with running_server(tmp_path) as srv:
        t0 = time.monotonic()
        st, js = await op(srv, "POST", "/compliance/periods/2026/cap/what-if", {"cap_pct": text})
        assert 400 <= st < 500, js
        st2, js2 = await op(srv, "POST", "/deposits", {"account": "SME1", "amount": text})
        assert 400 <= st2 < 500, js2
        assert time.monotonic() - t0 < 0.5
        assert await readyz(srv) == 200


async def test_huge_issuance_is_refused_and_the_firm_still_reads(tmp_path):
    """Issuing 2^63 t twice used to be accepted; GET /firms/SME1 then answered 500."""
    async with running_server(tmp_path) as srv:
        for qty in (2**63, 2**63):
            st, js = await op(
                srv, "POST", "/issuance", {"account": "SME1", "instrument": I, "qty": qty}
            )
            assert st == 422 and js["error"]["code"] == "INVALID_PARAMS", js
        for qty in (2**62, 2**62):
            st, js = await op(
                srv, "POST", "/issuance", {"account": "SME1", "instrument": I, "qty": qty}
            )
            assert st == 400 and js["error"]["code"] == "QUANTITY_LIMIT", js
        st, js = await op(srv, "GET", "/firms/SME1")
        assert st == 200, js
        assert await readyz(srv) == 200


async def test_activity_data_that_overflows_emissions_is_refused(tmp_path):
    """Fuel use is multiplied by carbon coefficients into emissions and obligations: inputs
    within 64 bits could still make those overflow the snapshot's integers."""
    async with running_server(tmp_path) as srv:
        for body in (
            {"period": 2026, "fuels": {"coal": 2**62}, "firm_id": "POWER1"},
            {"period": 2026, "process_emissions": 2**62, "firm_id": "POWER1"},
            {"period": 2026, "output": 2**62, "firm_id": "POWER1"},
        ):
            st, js = await op(srv, "POST", "/compliance/submissions", body)
            assert st == 422 and js["error"]["code"] == "INVALID_PARAMS", (body, js)
        r = await ws_call(srv, POWER, "surrender", {"period": 2026, "instrument": I, "qty": 2**62})
        assert r["ok"] is False and r["error"]["code"] == "INVALID_PARAMS", r
        orjson.dumps(srv.st.exchange.to_state())
        assert await readyz(srv) == 200


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/rules/benchmarks", {"product": "power", "intensity": "1E+999990"}),
        ("POST", "/rules/benchmarks", {"product": "power", "intensity": "9" * 100_000}),
        (
            "POST",
            "/rules/assessments",
            {
                "firm_id": "POWER1",
                "technology": "0.5",
                "efficiency": "0.5",
                "hist_intensity": "1E+999990",
            },
        ),
        ("POST", "/rules/params", {"phi_max": "1E+999990"}),
        (
            "POST",
            "/rules/splits/preview",
            {
                "parent": "STEEL1",
                "instrument": I,
                "amount": 10,
                "smes": ["SME1"],
                "revenue_share": "1E-999990",
            },
        ),
        (
            "PUT",
            "/compliance/sme-fund/params",
            {"penalty_to_fund_pct": "1E+999990", "auction_to_fund_pct": "0"},
        ),
    ],
)
async def test_huge_decimals_elsewhere_answer_fast(tmp_path, method, path, body):
    """Every decimal parser has the guard: the rules' ratios and the SME fund's shares too."""
    async with running_server(tmp_path) as srv:
        t0 = time.monotonic()
        st, js = await op(srv, method, path, body)
        assert 400 <= st < 500, js
        assert time.monotonic() - t0 < 0.5
        assert await readyz(srv) == 200


@pytest.mark.parametrize(
    "path,body",
    [
        (
            "/rules/output-history",
            {"firm_id": "POWER1", "rows": [{"period": 2025, "output": 2**62}]},
        ),
        (
            "/rules/output-history",
            {"firm_id": "POWER1", "rows": [{"period": 2025, "output": 1, "emissions": 2**62}]},
        ),
        ("/rules/output-history", {"firm_id": "POWER1", "rows": [{"period": 10**12, "output": 1}]}),
        (
            "/rules/input-use",
            {"firm_id": "POWER1", "period": 2026, "inputs": [{"product": "steel", "qty": 2**62}]},
        ),
        ("/rules/params", {"cap_tonnes": 2**62}),
        (
            "/rules/splits/preview",
            {"parent": "STEEL1", "instrument": I, "amount": 2**62, "smes": ["SME1"]},
        ),
        ("/rules/allocation-runs", {"period": 10**12, "step": "pre_allocate"}),
    ],
)
async def test_rules_inputs_within_the_quantity_limit(tmp_path, path, body):
    """Output, emissions and input use are multiplied into allocations the rules issue: they
    stay within the core's quantity limit (10^15), periods within 9 digits."""
    async with running_server(tmp_path) as srv:
        ex = srv.st.exchange
        before = business_hash(ex)
        st, js = await op(srv, "POST", path, body)
        assert st == 422 and js["error"]["code"] == "INVALID_PARAMS", js
        assert business_hash(ex) == before
