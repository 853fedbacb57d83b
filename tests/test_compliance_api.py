"""Compliance end to end through the served API: the real server (SQLite journal) on a free
loopback port, firms trading over the websocket, MRV, surrenders, a cap change, the deadline
and the statements over HTTP. Figures are hand-computed in the comments.

The server stamps commands with the wall clock, so period 2026 gets a deadline a few seconds
after the test starts; one firm surrenders after it to be "late".
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import aiohttp

from exchange.client import ExchangeClient, ExchangeError
from exchange.compliance.config import CompliancePeriodConfig
from exchange.app.config import load_settings
from exchange.app.server import STATE_KEY, create_app
from aiohttp.test_utils import TestServer

from test_compliance import business_hash

OPERATOR = "operator-demo-key"
VERIFIER = "verifier-demo-key"
POWER, CEMENT, STEEL, SME1, SME2 = (
    "demo-key-power1",
    "demo-key-cement1",
    "demo-key-steel1",
    "demo-key-sme1",
    "demo-key-sme2",
)
DEADLINE_IN = 4.0  # seconds after start


def settings_due_in(seconds: float):
    """The demo market's settings with period 2026's deadline ``seconds`` from now (and 2027
    after it), so a test can run the deadline on a live server."""
    s = load_settings()
    deadline = datetime.fromtimestamp(time.time() + seconds, tz=timezone.utc)
    periods = [
        CompliancePeriodConfig(period=2026, start="2026-01-01", deadline=deadline.isoformat()),
        CompliancePeriodConfig(period=2027, start="2027-01-01"),
    ]
    return s.model_copy(update={"compliance": s.compliance.model_copy(update={"periods": periods})})


async def call(srv, method, path, body=None, key=OPERATOR, raw=False):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, srv.http + "/api/v1" + path, json=body, headers=headers) as r:
            if raw:
                return r.status, r.headers.get("Content-Type", ""), await r.text()
            return r.status, await r.json(content_type=None)


async def ok(srv, method, path, body=None, key=OPERATOR):
    status, js = await call(srv, method, path, body, key)
    assert status in (200, 201), (path, status, js)
    return js


async def refused(srv, method, path, body, key, status, code):
    ex = srv.st.exchange
    before = business_hash(ex)
    st, js = await call(srv, method, path, body, key)
    assert (st, js["error"]["code"]) == (status, code), (path, st, js)
    assert business_hash(ex) == before
    return js


async def test_compliance_period_through_the_served_api(tmp_path):
    s = settings_due_in(DEADLINE_IN)
    app = create_app(s, tmp_path / "data")
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    srv.http = f"http://127.0.0.1:{srv.port}"
    srv.st = app[STATE_KEY]
    t_start = time.monotonic()
    try:
        ex = srv.st.exchange
        # ---- trade over the websocket: CEMENT1 buys POWER1's resting 1,000 t @ 85.40 -----
        async with ExchangeClient(f"ws://127.0.0.1:{srv.port}/ws", CEMENT) as buyer:
            await buyer.place_order("CEA-2026", "buy", 1_000, "85.40", client_order_id="b-1")
        comp = ex.modules["compliance"]
        assert comp.volume[2026]["CEA-2026"] == [1_000, 8_540_000]
        # an ineligible vintage to try later
        await ok(
            srv,
            "POST",
            "/instruments",
            {"symbol": "CEA-2027", "vintage": 2027, "reference_price": "86.00"},
        )
        await ok(
            srv, "POST", "/issuance", {"account": "POWER1", "instrument": "CEA-2027", "qty": 100}
        )
        # ---- MRV ----------------------------------------------------------------------------
        sub = "/compliance/submissions"
        await ok(
            srv,
            "POST",
            sub,
            {"period": 2026, "fuels": {"coal": 10_000}, "process_emissions": 500, "output": 100},
            POWER,
        )
        await ok(
            srv,
            "POST",
            sub,
            {"period": 2026, "fuels": {"oil": 5_000, "natural_gas": 3_000}},
            CEMENT,
        )
        await ok(srv, "POST", sub, {"period": 2026, "fuels": {"coal": 1_000}}, STEEL)
        # SME1 does it over its websocket session
        async with ExchangeClient(f"ws://127.0.0.1:{srv.port}/ws", SME1) as sme:
            r = await sme.request(
                "submit_activity_data", {"period": 2026, "process_emissions": 2_500}
            )
            assert r["events"][0]["emissions"] == 2_500
            try:
                await sme.request("surrender", {"period": 2026, "instrument": "CEA-2026", "qty": 1})
                raise AssertionError("surrender before verification was accepted")
            except ExchangeError as e:
                assert e.code == "NO_OBLIGATION"
        await ok(srv, "POST", sub, {"period": 2026, "process_emissions": 2_399}, SME2)
        await refused(
            srv, "POST", sub, {"period": 2026, "fuels": {"peat": 1}}, STEEL, 400, "UNKNOWN_FUEL"
        )
        await refused(
            srv, "POST", sub, {"period": 2026, "firm_id": "STEEL1"}, POWER, 403, "FORBIDDEN"
        )
        q = await ok(srv, "GET", "/compliance/periods/2026/submissions", key=VERIFIER)
        assert {x["firm_id"]: x["emissions"] for x in q["submissions"]} == {
            "POWER1": 27_912,
            "CEMENT1": 15_558,
            "STEEL1": 2_741,
            "SME1": 2_500,
            "SME2": 2_399,
        }
        v = "/compliance/submissions/{}/2026/verify"
        # verification by a non-verifier: a firm key is refused by role; a verifier key may
        # not act as another verifier than the one its credential names
        await refused(srv, "POST", v.format("POWER1"), {}, POWER, 403, "FORBIDDEN")
        await refused(
            srv, "POST", v.format("POWER1"), {"verifier": "NOBODY"}, VERIFIER, 403, "FORBIDDEN"
        )
        await ok(
            srv,
            "POST",
            "/compliance/submissions/SME2/2026/reject",
            {"verifier": "VERIFIER1", "reason": "process emissions not metered"},
            VERIFIER,
        )
        await ok(srv, "POST", sub, {"period": 2026, "process_emissions": 2_400}, SME2)
        for f in ("POWER1", "CEMENT1", "STEEL1", "SME1", "SME2"):
            await ok(srv, "POST", v.format(f), {"verifier": "VERIFIER1"}, VERIFIER)
        # a second submission for a verified period
        await refused(
            srv, "POST", sub, {"period": 2026, "fuels": {"coal": 1}}, POWER, 400, "ALREADY_VERIFIED"
        )
        # ---- surrenders (POWER1: 27,912 t; cap 5 % = 1,395 t) -------------------------------
        sur = "/compliance/surrenders"
        await ok(
            srv, "POST", sur, {"period": 2026, "instrument": "CCER-2026", "qty": 1_000}, POWER
        )  # below the cap
        await refused(
            srv,
            "POST",
            sur,
            {"period": 2026, "instrument": "CCER-2026", "qty": 396},
            POWER,
            400,
            "OFFSET_CAP_EXCEEDED",
        )
        r = await ok(
            srv, "POST", sur, {"period": 2026, "instrument": "CCER-2026", "qty": 395}, POWER
        )  # at the cap
        assert r["events"][-1]["offsets"] == 1_395
        await refused(
            srv,
            "POST",
            sur,
            {"period": 2026, "instrument": "CEA-2027", "qty": 100},
            POWER,
            400,
            "INELIGIBLE_VINTAGE",
        )
        await refused(
            srv,
            "POST",
            sur,
            {"period": 2026, "instrument": "CCER-2026", "qty": 1},
            STEEL,
            400,
            "INSUFFICIENT_HOLDINGS",
        )
        await ok(srv, "POST", sur, {"period": 2026, "instrument": "CEA-2025", "qty": 20_000}, POWER)
        await ok(srv, "POST", sur, {"period": 2026, "instrument": "CEA-2026", "qty": 6_517}, POWER)
        await ok(
            srv, "POST", sur, {"period": 2026, "instrument": "CEA-2026", "qty": 15_000}, CEMENT
        )  # 558 t short
        # ---- cap change mid-period (STEEL1: 2,741 t; PHCER sub-cap 2 % = 54 t) -------------
        await ok(srv, "POST", sur, {"period": 2026, "instrument": "PHCER-2026", "qty": 50}, STEEL)
        cap = "/compliance/periods/2026/cap"
        # outside [0, 100]: refused by the documented pattern of a percentage
        await refused(srv, "PUT", cap, {"cap_pct": "101"}, OPERATOR, 422, "INVALID_PARAMS")
        await refused(srv, "PUT", cap, {"cap_pct": "-1"}, OPERATOR, 422, "INVALID_PARAMS")
        await refused(srv, "PUT", cap, {"cap_pct": "1"}, POWER, 403, "FORBIDDEN")
        wi = await ok(
            srv, "POST", cap + "/what-if", {"cap_pct": "1", "sub_caps_pct": {"PHCER": "0.5"}}
        )
        by = {f["firm_id"]: f for f in wi["firms"]}
        # STEEL1: 1 % = 27 t; 50 surrendered (23 over) + 1,950 PHCER held
        assert (
            by["STEEL1"]["proposed_cap_qty"],
            by["STEEL1"]["exceeds_by"],
            by["STEEL1"]["surrendered_over"],
            by["STEEL1"]["holdings_over"],
        ) == (27, 1_973, 23, 1_950)
        # POWER1: 1 % = 279 t; 1,395 surrendered + 3,605 CCER and 6,560 RMN (FOREST-YN1's
        # removal credits) held -> 11,281 over
        assert (by["POWER1"]["exceeds_by"], by["POWER1"]["surrendered_over"]) == (11_281, 1_116)
        assert wi["firms_exceeding"] == ["POWER1", "STEEL1"]
        await ok(srv, "PUT", cap, {"cap_pct": "1", "sub_caps_pct": {"PHCER": "0.5"}})
        c = await ok(srv, "GET", cap, key=STEEL)
        assert c["cap_pct"] == "1.00" and [h["cap_pct"] for h in c["history"]] == ["5.00", "1.00"]
        assert c["sub_caps_pct"] == {"PHCER": "0.50"}
        await refused(
            srv,
            "POST",
            sur,
            {"period": 2026, "instrument": "PHCER-2026", "qty": 1},
            STEEL,
            400,
            "OFFSET_CAP_EXCEEDED",
        )
        # a change scheduled ahead, by date: 2027's cap becomes 8 % from 1 March 2027
        await ok(
            srv, "PUT", "/compliance/periods/2027/cap", {"cap_pct": "8", "effective": "2027-03-01"}
        )
        c27 = await ok(srv, "GET", "/compliance/periods/2027/cap")
        assert c27["cap_pct"] == "5.00"  # not yet in effect
        # 2027-03-01 00:00 UTC (1,803,859,200 s), shown in the market's zone
        assert [(h["effective_at"], h["cap_pct"]) for h in c27["history"]][1] == (
            "2027-03-01T08:00:00+08:00",
            "8.00",
        )
        # ---- deadline ------------------------------------------------------------------------
        await refused(
            srv,
            "POST",
            "/compliance/periods/2026/deadline",
            {},
            OPERATOR,
            400,
            "DEADLINE_NOT_REACHED",
        )
        await asyncio.sleep(max(0.0, DEADLINE_IN + 0.2 - (time.monotonic() - t_start)))
        await ok(
            srv, "POST", sur, {"period": 2026, "instrument": "CEA-2026", "qty": 2_691}, STEEL
        )  # after the deadline: late
        d = await ok(srv, "POST", "/compliance/periods/2026/deadline", {})
        done = d["events"][-1]
        assert (done["compliant"], done["late"], done["non_compliant"]) == (2, 1, 2)
        assert done["average_price"] == "85.40"
        # ---- statements -----------------------------------------------------------------------
        st = await ok(srv, "GET", "/compliance/statements/CEMENT1/2026", key=CEMENT)
        # 50,000.00 CNY + 558 t x 85.40 x 3 = 50,000.00 + 142,959.60
        assert st["status"] == "non_compliant"
        assert st["settlement"]["shortfall"] == 558
        assert st["settlement"]["penalty"] == "192959.60" == st["settlement"]["penalty_paid"]
        assert st["next_period_allocation"]["deduction"] == 558
        assert st["trades"][0]["bought"] == 1_000
        await refused(
            srv, "GET", "/compliance/statements/POWER1/2026", None, CEMENT, 403, "FORBIDDEN"
        )
        sme2 = await ok(srv, "GET", "/compliance/statements/SME2/2026")
        # 2,000 t sub-quota surrendered for it, 400 t short; 50,000.00 + 400 x 85.40 x 3
        # = 152,480.00 CNY of which its 150,000.00 CNY cash pays 150,000.00
        assert sme2["surrendered"]["total"] == 2_000
        assert sme2["settlement"]["penalty"] == "152480.00"
        assert sme2["settlement"]["penalty_outstanding"] == "2480.00"
        steel = await ok(srv, "GET", "/compliance/statements/STEEL1/2026")
        assert steel["status"] == "late" and steel["settlement"]["penalty"] == "10000.00"
        assert [(x["qty"], x["cap_in_effect_pct"]) for x in steel["surrenders"]] == [
            (50, "5.00"),
            (2_691, "1.00"),
        ]
        status, ctype, text = await call(
            srv, "GET", "/compliance/statements/CEMENT1/2026?format=csv", key=OPERATOR, raw=True
        )
        assert status == 200 and ctype.startswith("text/csv")
        assert "settlement.penalty,192959.60" in text
        status, ctype, text = await call(
            srv, "GET", "/compliance/periods/2026/summary?format=csv", raw=True
        )
        rows = [line.split(",") for line in text.strip().splitlines()]
        assert rows[0][0] == "firm_id" and rows[-1][0] == "TOTAL"
        assert {r[0]: r[-1] for r in rows[1:-1]} == {
            "CEMENT1": "non_compliant",
            "POWER1": "compliant",
            "SME1": "compliant",
            "SME2": "non_compliant",
            "STEEL1": "late",
        }
        async with ExchangeClient(f"ws://127.0.0.1:{srv.port}/ws", SME1) as sme:
            st1 = await sme.request("compliance_statement", {"period": 2026})
        # SME1's 2,500 t came out of its sub-quota at the deadline
        assert st1["status"] == "compliant"
        assert [(x["qty"], x["by"]) for x in st1["surrenders"]] == [(2_500, "sub_quota")]
        # the websocket's statement is the HTTP one: units for people
        assert st1["deadline_at"].endswith("+08:00") and "deadline_ts" not in st1
        assert (
            st1["cash"]["cash"]
            == (await ok(srv, "GET", "/compliance/statements/SME1/2026"))["cash"]["cash"]
        )
        sm = await ok(srv, "GET", "/compliance/periods/2026/summary")
        assert sm["totals"]["shortfall"] == 958
        ex.check_invariants()
    finally:
        await srv.close()
