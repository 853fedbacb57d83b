"""Which node serves the dashboard, and which node leads (``GET /api/v1/node``, the top bar).

A single server on SQLite says so; on a JetStream journal with ``serve --standby`` the
leader names itself, and after it is SIGKILLed the standby that took the lease does. The
lease's view of a node that lost it (``stepping_down``) is checked against a real lease
bucket. Real processes, a real NATS server, Debian's chromium (test_dashboard's fixtures).
"""

from __future__ import annotations

import signal
import uuid

import pytest

from test_dashboard import (  # noqa: F401  (browser, chromium_path, page, server: fixtures)
    browser,
    chromium_path,
    http,
    page,
    run_async,
    server,
)
from test_journal_nats_failover import Node, _drop

pytestmark = pytest.mark.slow


def _top_bar(browser, port: int) -> str:  # noqa: F811
    from playwright.sync_api import expect

    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(f"http://127.0.0.1:{port}/")
        el = pg.locator("#node-role")
        expect(el).not_to_have_text("—", timeout=15_000)
        assert not errors, errors
        return el.inner_text() + " | " + (el.get_attribute("title") or "")
    finally:
        ctx.close()


def test_a_single_node_says_so(page, server):  # noqa: F811
    from playwright.sync_api import expect

    status, body = http(server["base"], "GET", "/node", key=None)  # public: no firm data
    assert status == 200, body
    assert body["role"] == "single" and body["journal"] == "sqlite" and body["leader"] is None
    expect(page.locator("#node-role")).to_have_text(
        f"node {body['node_id']} · single node · SQLite"
    )
    assert page.locator("#node-role").get_attribute("data-role") == "single"


def test_the_leader_and_then_its_successor_name_themselves(tmp_path, nats_url, browser):  # noqa: F811
    url = f"{nats_url}/node_{uuid.uuid4().hex[:12]}"
    nodes: list[Node] = []
    try:
        a = Node(tmp_path, url, "a")
        nodes.append(a)
        a.wait_for("took the leader lease")
        pa = a.port
        b = Node(tmp_path, url, "b")
        nodes.append(b)
        m = b.wait_for(r"waiting for the leader lease.*answering NOT_LEADER on [\d.]+:(\d+)")
        standby_port = int(m.group(1))

        status, body = http(f"http://127.0.0.1:{pa}", "GET", "/node", key=None)
        assert status == 200, body
        assert body["role"] == "leader" and body["journal"] == "nats"
        assert body["leader"]["node_id"] == "a"
        assert body["leader"]["address"] == f"ws://127.0.0.1:{pa}/ws"
        assert body["lease_readable"] is True and body["leader"]["revision"] > 0
        # a standby serves no page: every HTTP request is NOT_LEADER naming the leader
        status, body = http(f"http://127.0.0.1:{standby_port}", "GET", "/node", key=None)
        assert status == 503 and body["error"]["code"] == "NOT_LEADER", body

        text = _top_bar(browser, pa)
        assert text.startswith("node a · leader · JetStream"), text
        assert f"leader a at ws://127.0.0.1:{pa}/ws" in text, text

        a.signal(signal.SIGKILL)
        b.wait_for("took the leader lease", timeout=90)
        pb = int(b.wait_for(r"listening on [\d.]+:(\d+)", timeout=90).group(1))
        text = _top_bar(browser, pb)
        assert text.startswith("node b · leader · JetStream"), text
    finally:
        for n in nodes:
            n.stop()
        run_async(_drop(url))  # Playwright's sync API owns this thread's loop


def test_a_node_whose_lease_another_holds_is_stepping_down(nats_url):
    from exchange.journal.lease import LeaderLease
    from exchange.server.node import NodeStatus

    url = f"{nats_url}/node_{uuid.uuid4().hex[:12]}"

    async def run():
        holder = LeaderLease(url, node="x", address="ws://10.0.0.1:8765/ws", ttl=5)
        other = LeaderLease(url, node="y", ttl=5)
        await holder.open()
        await other.open()
        try:
            assert await holder.acquire()
            assert not await other.acquire()  # x holds it
            seen = await NodeStatus("y", "nats", lease=other).describe()
            mine = await NodeStatus("x", "nats", lease=holder).describe()
            single = await NodeStatus("z", "sqlite").describe()
        finally:
            await holder.close()
            await other.close()
            await _drop(url)
        return seen, mine, single

    seen, mine, single = run_async(run())  # the module's browser holds this thread's loop
    assert seen["role"] == "stepping_down"
    assert seen["leader"]["node_id"] == "x" and seen["leader"]["address"] == "ws://10.0.0.1:8765/ws"
    assert mine["role"] == "leader" and mine["leader"]["node_id"] == "x"
    assert 0 <= mine["leader"]["renewed_s_ago"] < 5
    assert single == {"node_id": "z", "journal": "sqlite", "role": "single", "leader": None}
