"""Who may read a firm's records, over real HTTP (docs/PRIVACY.md, "Access matrix").

A firm's statements, submissions, allocation, factor history, responsibility, sub-quotas and
balances are for the firm itself, its verifier (the verifier that verified or rejected its
submission) and operators. Every firm-specific GET route is tried with each kind of caller;
the table below is the expected status, and a new ``{firm_id}`` route must be added to it.
"""

from __future__ import annotations

import aiohttp

from exchange.server.api import ROUTES
from test_server import OPERATOR, POWER, CEMENT, running_server

VERIFIER = "verifier-demo-key"  # acts as VERIFIER1, which verifies POWER1 below
FIRM = "POWER1"

# caller -> key; OTHER_VERIFIER is issued in the test (a verifier that never saw POWER1)
CALLERS = ("own", "other_firm", "verifier", "other_verifier", "platform", "operator", "none")

# route (path with POWER1 / period 2026) -> expected status per caller, in CALLERS order
MATRIX = {
    "/firms/{firm_id}": ("/firms/POWER1", (200, 403, 200, 403, 403, 200, 401)),
    "/compliance/statements/{firm_id}/{period}": (
        "/compliance/statements/POWER1/2026",
        (200, 403, 200, 403, 403, 200, 401),
    ),
    "/rules/allocations/{period}/{firm_id}": (
        "/rules/allocations/2026/POWER1",
        (200, 403, 200, 403, 403, 200, 401),
    ),
    "/rules/sub-quotas/{firm_id}": (
        "/rules/sub-quotas/POWER1",
        (200, 403, 200, 403, 403, 200, 401),
    ),
    "/rules/factors/{firm_id}": ("/rules/factors/POWER1", (200, 403, 200, 403, 403, 200, 401)),
    "/rules/responsibility/{firm_id}": (
        "/rules/responsibility/POWER1",
        (200, 403, 200, 403, 403, 200, 401),
    ),
    "/registry/holdings/{firm_id}": (
        "/registry/holdings/POWER1",
        (200, 403, 200, 403, 403, 200, 401),
    ),
    # a firm's blotter (its executions): the firm, its verifier and operators
    "/firms/{firm_id}/executions": (
        "/firms/POWER1/executions",
        (200, 403, 200, 403, 403, 200, 401),
    ),
    "/firms/{firm_id}/orders": ("/firms/POWER1/orders", (200, 403, 200, 403, 403, 200, 401)),
    # grant applications are the SME's and the fund's business: no verifier reads them
    "/compliance/sme-fund/applications?sme={firm_id}": (
        "/compliance/sme-fund/applications?sme=POWER1",
        (200, 403, 403, 403, 403, 200, 401),
    ),
}


async def call(srv, method, path, body=None, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, srv.http + "/api/v1" + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def ok(srv, method, path, body=None, key=OPERATOR):
    st, js = await call(srv, method, path, body, key)
    assert st in (200, 201), (method, path, st, js)
    return js


def test_every_firm_specific_get_route_is_in_the_matrix():
    from exchange.server.api import load_extensions

    load_extensions()
    firm_routes = {r.path for r in ROUTES if r.method == "GET" and "{firm_id}" in r.path}
    covered = {p.split("?")[0] for p in MATRIX}
    assert firm_routes <= covered, (
        f"firm-specific GET routes missing from MATRIX: {sorted(firm_routes - covered)}"
    )


async def test_access_matrix_over_http(tmp_path):
    async with running_server(tmp_path) as srv:
        other_verifier = (
            await ok(srv, "POST", "/api-keys", {"role": "verifier", "label": "VERIFIER2"})
        )["api_key"]
        keys = {
            "own": POWER,
            "other_firm": CEMENT,
            "verifier": VERIFIER,
            "other_verifier": other_verifier,
            "platform": "platform-demo-key",
            "operator": OPERATOR,
            "none": None,
        }
        # POWER1 and CEMENT1 submit; VERIFIER1 verifies POWER1's: it is POWER1's verifier
        await ok(
            srv,
            "POST",
            "/compliance/submissions",
            {"period": 2026, "fuels": {"coal": 1_000}, "output": 10},
            POWER,
        )
        await ok(
            srv,
            "POST",
            "/compliance/submissions",
            {"period": 2026, "fuels": {"coal": 500}, "output": 5},
            CEMENT,
        )
        await ok(srv, "POST", "/compliance/submissions/POWER1/2026/verify", {}, VERIFIER)

        got = {}
        for route, (path, _) in MATRIX.items():
            got[route] = tuple([(await call(srv, "GET", path, key=keys[c]))[0] for c in CALLERS])
        assert got == {route: want for route, (_, want) in MATRIX.items()}

        # a refusal says nothing about the other firm's records
        st, js = await call(srv, "GET", "/compliance/statements/POWER1/2026", key=CEMENT)
        assert st == 403 and js["error"]["code"] == "FORBIDDEN"
        assert "27" not in js["error"]["message"]  # no figure of POWER1's statement
        st, js = await call(srv, "GET", "/compliance/statements/NOSUCHFIRM/2026", key=CEMENT)
        assert st == 403  # the same answer for a firm that does not exist

        # the verifier queue: pending submissions no verifier took yet are every verifier's;
        # what VERIFIER1 verified is VERIFIER1's (and the operator's) only
        q1 = await ok(srv, "GET", "/compliance/periods/2026/submissions", key=VERIFIER)
        q2 = await ok(srv, "GET", "/compliance/periods/2026/submissions", key=other_verifier)
        qo = await ok(srv, "GET", "/compliance/periods/2026/submissions", key=OPERATOR)
        assert {s["firm_id"] for s in q1["submissions"]} == {"POWER1", "CEMENT1"}
        assert {s["firm_id"] for s in q2["submissions"]} == {"CEMENT1"}
        assert {s["firm_id"] for s in qo["submissions"]} == {"POWER1", "CEMENT1"}
        st, _ = await call(srv, "GET", "/compliance/periods/2026/submissions", key=POWER)
        assert st == 403

        # lists of every firm: a verifier sees the firms it verified, a firm none
        for path in ("/rules/responsibility", "/rules/sub-quotas", "/rules/allocations/2026"):
            st, _ = await call(srv, "GET", path, key=POWER)
            assert st == 403, path
            _, body = await call(srv, "GET", path, key=other_verifier)
            text = str(body)
            for firm in ("POWER1", "CEMENT1", "STEEL1", "SME1", "SME2"):
                assert firm not in text, (path, firm)

        # supply chains are their members' business: CEMENT1 sees cementchain only, and not
        # SME2's allocation factor (that firm's record); VERIFIER1 the chain of POWER1
        _, chains = await call(srv, "GET", "/rules/chains", key=CEMENT)
        assert [ch["chain_id"] for ch in chains["chains"]] == ["cementchain"]
        assert {m["firm_id"]: m["phi"] is None for m in chains["chains"][0]["members"]} == {
            "CEMENT1": False,
            "SME2": True,
        }
        _, chains = await call(srv, "GET", "/rules/chains", key=VERIFIER)
        assert [ch["chain_id"] for ch in chains["chains"]] == ["steelchain"]
        _, chains = await call(srv, "GET", "/rules/chains", key=other_verifier)
        assert chains["chains"] == []
        assert (await call(srv, "GET", "/rules/chains/steelchain", key=CEMENT))[0] == 403
        assert (await call(srv, "GET", "/rules/chains/cementchain", key=CEMENT))[0] == 200
        assert (await call(srv, "GET", "/rules/chains/steelchain", key=POWER))[0] == 200
        _, chains = await call(srv, "GET", "/rules/chains", key=OPERATOR)
        assert len(chains["chains"]) == 2
        assert all(m["phi"] is not None for ch in chains["chains"] for m in ch["members"])
