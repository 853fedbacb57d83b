"""The credit registry through the served API: the real server (SQLite journal) on a loopback
port, the demo market's registry (CCER serials per firm, the GREENWAY platform, the verified
FOREST-YN1 removal project), a platform batch built with ``exchange.client`` from rows that hold
names and phone numbers, verification, retirement by serial, the public serial lookup, the
four forms of double counting, and a restart that rebuilds the same state from the journal.
"""

from __future__ import annotations

from aiohttp.test_utils import TestServer

from exchange.client import ExchangeError, PlatformClient, build_batch
from exchange.app.config import load_settings
from exchange.app.server import STATE_KEY, create_app

from test_compliance import business_hash
from test_compliance_api import call, ok

OPERATOR = "operator-demo-key"
VERIFIER = "verifier-demo-key"
PLATFORM = "platform-demo-key"
POWER = "demo-key-power1"
SCHEME_KEY = b"greenway-scheme-key-0123456789ab"

ROWS = [  # the platform's own rows: personal data that must never leave it
    {
        "name": "张伟",
        "phone": "+86 138 0013 8000",
        "user_id": "u-1001",
        "action_type": "metro_trip_km",
        "quantity": 12_000,
        "date": "2026-03-01",
    },
    {
        "name": "李娜",
        "phone": "+86 139 1111 2222",
        "user_id": "u-1002",
        "action_type": "bike_share_km",
        "quantity": 4_000,
        "date": "2026-03-02",
    },
    {
        "name": "张伟",
        "phone": "+86 138 0013 8000",
        "user_id": "u-1001",
        "action_type": "ev_charging_kwh",
        "quantity": 1_000,
        "date": "2026-03-02",
    },
]
# 12,000 km x 72 g + 4,000 km x 90 g + 1,000 kWh x 310 g = 864,000 + 360,000 + 310,000 g
# = 1,534,000 g = 1.534 t -> 1 t issued (never more than the reduction)


async def refused(srv, method, path, body, key, status, code):
    st, js = await call(srv, method, path, body, key)
    assert (st, js["error"]["code"]) == (status, code), (path, st, js)
    return js["error"]["message"]


async def start(data):
    app = create_app(load_settings(), data)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    srv.http = f"http://127.0.0.1:{srv.port}"
    srv.st = app[STATE_KEY]
    return srv


async def test_registry_through_the_served_api(tmp_path):
    data = tmp_path / "data"
    srv = await start(data)
    try:
        ex = srv.st.exchange
        reg = ex.modules["registry"]
        # ---- genesis: POWER1's CCER carry serials; the removal project issued net of its
        # own emissions and baseline, 20 % of it to the buffer pool
        js = await ok(srv, "GET", "/registry/holdings/POWER1", key=POWER)
        assert js["serials"]["CCER-2026"] == ["DEMO/POWER1-CCER-2026/2026/1-5000"]
        # 12,000 - 800 - 3,000 = 8,200 net; buffer ceil(8,200 x 20 %) = 1,640
        assert js["serials"]["RMN-2026"] == ["CEX/FOREST-YN1/2026/1641-8200"]
        buf = await ok(srv, "GET", "/registry/buffer", key=None)
        assert buf["pools"]["natural"] == {
            "offset_type": "RMN",
            "contributed": 1640,
            "cancelled": 0,
            "held": 1640,
        }

        # ---- a carbon-inclusive batch from the platform: hashed ids only
        body = build_batch(SCHEME_KEY, ROWS, 2026)
        async with PlatformClient(srv.http, PLATFORM) as pc:
            res = await pc.submit_batch(body)
        bid = next(e["batch_id"] for e in res["events"] if e["type"] == "action_batch_submitted")
        assert bid == "GREENWAY-000001"
        b = await ok(srv, "GET", f"/registry/batches/{bid}", key=PLATFORM)
        assert (b["status"], b["records"], b["reduction_g"], b["reduction_t"]) == (
            "pending",
            3,
            1_534_000,
            1,
        )
        assert b["reduction_t_co2e"] == "1.534"
        # the platform cannot approve its own batch; a firm cannot submit one
        await refused(
            srv, "POST", f"/registry/batches/{bid}/approve", {}, PLATFORM, 403, "FORBIDDEN"
        )
        await refused(srv, "POST", "/registry/batches", body, POWER, 403, "FORBIDDEN")
        # double counting (2): the same actions again, from the platform or anyone
        async with PlatformClient(srv.http, PLATFORM) as pc:
            try:
                await pc.submit_batch(body)
                raise AssertionError("a batch of claimed actions was accepted")
            except ExchangeError as e:
                assert e.code == "DOUBLE_COUNTED" and bid in str(e)
        js = await ok(srv, "POST", f"/registry/batches/{bid}/approve", {}, VERIFIER)
        assert [e["serial"] for e in js["events"] if e["type"] == "credits_issued"] == [
            "GREENWAY/GREENWAY-000001/2026/1"
        ]
        assert reg.holdings("GREENWAY") == {"PHCER-2026": ["GREENWAY/GREENWAY-000001/2026/1"]}

        # ---- double counting (1): an overlapping issuance
        issue = {
            "account": "CEMENT1",
            "instrument": "CCER-2026",
            "issuer": "DEMO",
            "project": "POWER1-CCER-2026",
            "first": 4990,
            "last": 6000,
        }
        msg = await refused(
            srv, "POST", "/registry/credits", issue, OPERATOR, 400, "DOUBLE_COUNTED"
        )
        assert "DEMO/POWER1-CCER-2026/2026/1-5000" in msg
        issue.update(first=5001, last=6000)
        await ok(srv, "POST", "/registry/credits", issue)

        # ---- double counting (3): an import the source registry has not cancelled
        imp = {
            "registry": "GD-PHCER",
            "account": "STEEL1",
            "instrument": "PHCER-2026",
            "issuer": "GDEX",
            "project": "GZ-2026-07",
            "first": 1,
            "last": 300,
        }
        await refused(srv, "POST", "/registry/imports", imp, OPERATOR, 400, "DOUBLE_COUNTED")
        await ok(
            srv,
            "POST",
            "/registry/external-cancellations",
            {
                "registry": "GD-PHCER",
                "issuer": "GDEX",
                "project": "GZ-2026-07",
                "vintage": 2026,
                "first": 1,
                "last": 300,
                "reference": "GD-CXL-0042",
            },
        )
        await ok(srv, "POST", "/registry/imports", imp)
        await refused(srv, "POST", "/registry/imports", imp, OPERATOR, 400, "DOUBLE_COUNTED")

        # ---- double counting (4): a unit retired twice
        ret = {
            "instrument": "CCER-2026",
            "qty": 10,
            "serials": ["DEMO/POWER1-CCER-2026/2026/101-110"],
            "beneficiary": "POWER1",
        }
        await ok(srv, "POST", "/registry/retirements", ret, POWER)
        ret["serials"] = ["DEMO/POWER1-CCER-2026/2026/105-114"]
        msg = await refused(srv, "POST", "/registry/retirements", ret, POWER, 400, "DOUBLE_COUNTED")
        assert "DEMO/POWER1-CCER-2026/2026/105-110 is already retired" in msg
        # the public lookup: retired, for whom, and the units around it are not
        look = await ok(
            srv, "GET", "/registry/serials?serial=DEMO/POWER1-CCER-2026/2026/100-111", key=None
        )
        assert (look["issued_units"], look["retired_units"]) == (12, 10)
        [r] = look["blocks"][0]["retirements"]
        assert (r["serial"], r["beneficiary"], r["period"]) == (
            "DEMO/POWER1-CCER-2026/2026/101-110",
            "POWER1",
            None,
        )
        st, _ = await call(srv, "GET", "/registry/serials?serial=not-a-serial", key=None)
        assert st == 422

        assert await ok(srv, "GET", "/registry/offset-classes", key=None) == {
            "carbon_inclusive_type": "PHCER",
            "ccer_equivalent": True,
        }
        # ---- carbon-inclusive totals: one platform only, so suppressed
        tot = await ok(srv, "GET", "/registry/carbon-inclusive/totals", key=None)
        assert tot["action_types"]["metro_trip_km"] == {"suppressed": True}
        state = (business_hash(ex), reg.to_state())
        reg.check()
        ex.check_invariants()
    finally:
        await srv.close()

    # ---- a restart rebuilds the same registry from the journal (and its snapshot)
    srv = await start(data)
    try:
        ex = srv.st.exchange
        assert (business_hash(ex), ex.modules["registry"].to_state()) == state
        srv.st.exchange.modules["registry"].check()
    finally:
        await srv.close()


async def test_operator_registers_a_platform_and_issues_its_key(tmp_path):
    srv = await start(tmp_path / "data")
    try:
        keys = "/api-keys"
        # a platform key names a registered platform: not any firm, not an unknown id
        st, js = await call(srv, "POST", keys, {"role": "platform", "firm_id": "NEWAPP"})
        assert (st, js["error"]["code"]) == (404, "UNKNOWN_ACCOUNT"), js
        st, js = await call(srv, "POST", keys, {"role": "platform", "firm_id": "POWER1"})
        assert (st, js["error"]["code"]) == (404, "UNKNOWN_PLATFORM"), js
        st, _ = await call(srv, "POST", keys, {"role": "platform"})
        assert st == 422
        await ok(srv, "POST", "/registry/platforms", {"platform_id": "NEWAPP", "name": "New App"})
        st, js = await call(
            srv,
            "POST",
            keys,
            {"role": "platform", "firm_id": "NEWAPP", "label": "NewApp production"},
        )
        assert st == 201 and js["role"] == "platform" and js["firm_id"] == "NEWAPP", js
        body = build_batch(SCHEME_KEY, ROWS[:1], 2026)
        async with PlatformClient(srv.http, js["api_key"]) as pc:
            res = await pc.submit_batch(body)
        assert [e["batch_id"] for e in res["events"] if e["type"] == "action_batch_submitted"] == [
            "NEWAPP-000001"
        ]
        # a platform key reads its own batches only, and acts for no other platform
        assert [
            b["batch_id"]
            for b in (await ok(srv, "GET", "/registry/batches", key=js["api_key"]))["batches"]
        ] == ["NEWAPP-000001"]
        body["platform_id"] = "GREENWAY"
        await refused(srv, "POST", "/registry/batches", body, js["api_key"], 403, "FORBIDDEN")
    finally:
        await srv.close()
