"""The web dashboard in a real browser: Playwright for Python driving Debian's chromium
against the real server (``python -m exchange serve`` on a free loopback port, its own data
directory). Skipped with a clear reason when chromium or Playwright is missing, a failure with
REQUIRE_SERVICES=1. Screenshots of each view go to ``artifacts/screenshots/``.

The checks go through the server's own state (operator API), not only the DOM:

* orders placed with :mod:`exchange.client` appear in the depth view;
* a firm places an order from the page and it rests in the book; it cancels it from the page;
* a server error (a price outside the band) is shown in words;
* an operator previews an offset cap change, applies it, and the new cap is in force.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services import unavailable

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
OPERATOR_KEY = "operator-demo-key"
VERIFIER_KEY = "verifier-demo-key"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ helpers
def http(base: str, method: str, path: str, body=None, key: str | None = OPERATOR_KEY):
    req = urllib.request.Request(
        base + "/api/v1" + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
    )
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def run_async(coro):
    """Run a coroutine on a fresh loop in a worker thread (Playwright's sync API owns this one)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


async def _orders(ws_url: str, key: str, orders: list[dict]) -> list[dict]:
    from exchange.client import ExchangeClient

    out = []
    async with ExchangeClient(ws_url, key) as c:
        for o in orders:
            out.append(await c.place_order(**o))
    return out


def place(server, key: str, *orders: dict) -> list[dict]:
    return run_async(_orders(server["ws"], key, list(orders)))


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        unavailable("chromium", "no `chromium` on PATH (install it: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        unavailable("playwright", f"the playwright Python package is not installed ({e})")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("dashboard-data")
    info = start_server(
        [
            sys.executable,
            "-m",
            "exchange",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(data),
        ],
        cwd=ROOT,
        data=data,
    )
    yield info
    stop_server(info)


def start_server(cmd: list[str], cwd, data, env: dict | None = None) -> dict:
    """Start a server with ``cmd`` (which prints "listening on HOST:PORT"), seed its trading
    history (:func:`_seed_history`) and return what the tests use. Also used on an installed
    wheel by tests/test_packaging.py."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    port = None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines)[-3000:])
    # keep draining the server's output so it never blocks on a full pipe
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    info = {
        "base": base,
        "ws": f"ws://127.0.0.1:{port}/ws",
        "proc": proc,
        "data": data,
        "output": lines,
    }
    _seed_history(info)
    return info


def stop_server(info: dict) -> int | None:
    """SIGTERM (the graceful stop), then kill if it hangs; the exit code."""
    proc = info["proc"]
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def _seed_history(server) -> None:
    """A few trading days of CEA-2026 so the chart has candles: STEEL1 sells, CEMENT1 buys IOC
    at the same price (inside the demo book's 84.90 / 85.40 spread), then end of day."""
    days = [
        ["85.10", "85.30", "85.00", "85.20"],
        ["85.20", "85.35", "85.05", "85.30"],
        ["85.25", "85.10", "85.38", "85.15"],
        ["85.15", "85.32", "84.96", "85.28"],
    ]
    n = 0
    for d, prices in enumerate(days):
        for p in prices:
            n += 1
            qty = 100 + 37 * n
            place(
                server,
                "demo-key-steel1",
                dict(
                    instrument="CEA-2026",
                    side="sell",
                    qty=qty,
                    price=p,
                    client_order_id=f"seed-s-{n}",
                ),
            )
            place(
                server,
                "demo-key-cement1",
                dict(
                    instrument="CEA-2026",
                    side="buy",
                    qty=qty,
                    price=p,
                    tif="IOC",
                    client_order_id=f"seed-b-{n}",
                ),
            )
        if d < len(days) - 1:
            status, r = http(server["base"], "POST", "/end-of-day", {})
            assert status == 200, r
    # verified emissions for 2026, so the offset-cap what-if has obligations to weigh:
    # POWER1 50,000 t (holds 5,000 t CCER, 6,560 t RMN), CEMENT1 30,000 t (no offsets)
    for firm, emissions, output in (("POWER1", 50_000, 60_000), ("CEMENT1", 30_000, 35_000)):
        status, r = http(
            server["base"],
            "POST",
            "/compliance/submissions",
            {"period": 2026, "firm_id": firm, "process_emissions": emissions, "output": output},
        )
        assert status == 200, r
        status, r = http(
            server["base"],
            "POST",
            f"/compliance/submissions/{firm}/2026/verify",
            {"verifier": "VERIFIER1"},
            key=VERIFIER_KEY,
        )
        assert status == 200, r


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1480, "height": 940}, device_scale_factor=1)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server["base"] + "/")
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    # notifications would cover the view
    pg.evaluate("document.getElementById('toasts').replaceChildren()")
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# ------------------------------------------------------------------ tests
def test_page_served_with_assets(server):
    with urllib.request.urlopen(server["base"] + "/") as r:
        html = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert '<script type="module" src="/ui/js/app.js">' in html
    for asset in re.findall(r'(?:src|href)="(/ui/[^"]+)"', html):
        with urllib.request.urlopen(server["base"] + asset) as r:
            assert r.status == 200, asset
    status, body = http(server["base"], "GET", "/market/candles/CEA-2026", key=None)
    assert status == 200
    assert len(body["candles"]) == 4 and body["candles"][0]["open"] == "85.10"
    assert body["candles"][0]["high"] == "85.30" and body["candles"][0]["low"] == "85.00"
    assert body["candles"][0]["close"] == "85.20" and body["candles"][0]["closed"] is True


def test_market_view_shows_client_orders_in_depth(page, server):
    from playwright.sync_api import expect

    # without a key: public data (recent trades, chart) and a prompt for live depth
    expect(page.locator("#market-signin")).to_be_visible()
    expect(page.locator("#trades-body tr")).to_have_count(16)
    expect(page.locator("#depth-body")).to_contain_text("Sign in to see live depth")
    page.fill("#market-key", "demo-key-power1")
    page.click("#market-key-form button[type=submit]")
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "online")
    # the demo book's resting orders are there
    expect(page.locator('#depth-body td[data-side="ask"][data-price="85.40"]')).to_be_visible()
    # trades from before the page opened are listed (the seeded history: 16 trades)
    expect(page.locator("#trades-body tr")).to_have_count(16)
    # orders placed through exchange.client appear in the depth view, live
    place(
        server,
        "demo-key-steel1",
        dict(instrument="CEA-2026", side="buy", qty=777, price="84.20", client_order_id="d-1"),
        dict(instrument="CEA-2026", side="buy", qty=223, price="84.20", client_order_id="d-2"),
    )
    place(
        server,
        "demo-key-power1",
        dict(instrument="CEA-2026", side="sell", qty=450, price="86.10", client_order_id="d-3"),
    )
    bid = page.locator('#depth-body td[data-side="bid"][data-price="84.20"]')
    expect(bid).to_have_attribute("data-qty", "1000")
    expect(page.locator('#depth-body td[data-side="ask"][data-price="86.10"]')).to_have_attribute(
        "data-qty", "450"
    )
    # ... consistent with the server's book
    status, book = http(server["base"], "GET", "/books/CEA-2026/main")
    assert status == 200 and ["84.20", 1000] in book["bids"] and ["86.10", 450] in book["asks"]
    # a book update that skips a sequence number is a gap: the page resubscribes and rebuilds
    # the book from a fresh snapshot (the bogus level of the gapped update never shows)
    page.evaluate("""() => {
        const c = window.cx.market.client, b = c.books.get('book:CEA-2026:main').book;
        c._onPush('book:CEA-2026:main', b.seq + 3, {changes: [['buy', '10.00', 5]]});
    }""")
    expect(page.locator("#depth-meta")).to_contain_text("1 resync(s)")
    expect(page.locator('#depth-body td[data-price="10.00"]')).to_have_count(0)
    expect(bid).to_have_attribute("data-qty", "1000")
    # a trade shows in recent trades and the other books are listed
    place(
        server,
        "demo-key-cement1",
        dict(
            instrument="CEA-2026",
            side="buy",
            qty=50,
            price="85.40",
            tif="IOC",
            client_order_id="d-4",
        ),
    )
    expect(page.locator("#trades-body tr").first).to_contain_text("85.40")
    expect(page.locator('#books-body tr[data-book="CCER-2026:main"]')).to_be_visible()
    expect(page.locator("#chart-meta")).to_contain_text("trading day 3")
    page.wait_for_timeout(150)
    shot(page, "market")


def test_firm_places_and_cancels_order_from_page(page, server):
    from playwright.sync_api import expect

    page.click("#tab-firm")
    # a wrong key is an error in words
    page.fill("#firm-key", "no-such-key")
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-signin-error")).to_contain_text("AUTH_FAILED")
    page.fill("#firm-key", "demo-key-power1")
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("POWER1")
    expect(page.locator('#holdings tr[data-instrument="CCER-2026"]')).to_contain_text("5,000")
    expect(page.locator("#ticket-quote .q.ask")).to_contain_text("85.40")
    expect(page.locator('#firm-compliance tr[data-period="2026"] td')).to_have_text(
        ["2026", "open", "E 0 · P 50,000 · N 0*", "50,000", "0", "0", "2,500", "50,000", "48,000"]
    )
    # the emissions by category: natural is reported, not covered (marked, muted)
    expect(
        page.locator(
            '#firm-compliance tr[data-period="2026"] td.categories span[data-category="natural"]'
        )
    ).to_have_attribute("data-covered", "false")
    expect(page.locator("#firm-phi")).to_contain_text("allocation factor φ 1.0000")

    page.select_option("#ord-instrument", "CEA-2026")
    page.select_option("#ord-segment", "main")
    page.check("#side-buy", force=True)
    page.fill("#ord-qty", "123")
    page.fill("#ord-price", "83.70")
    page.click("#ord-submit")
    ok = page.locator("#order-ok")
    expect(ok).to_contain_text("new")
    order_id = int(ok.get_attribute("data-order-id"))
    row = page.locator(f'#open-orders tr[data-order-id="{order_id}"]')
    expect(row).to_contain_text("83.70")
    # it rests in the book: the server's state, not only the page
    status, firm = http(server["base"], "GET", "/firms/POWER1")
    assert status == 200
    mine = [o for o in firm["open_orders"] if o["order_id"] == order_id]
    assert mine and mine[0]["price"] == "83.70" and mine[0]["leaves_qty"] == 123
    status, book = http(server["base"], "GET", "/books/CEA-2026/main")
    assert ["83.70", 123] in book["bids"]
    # cash reserved for it shows in the balances
    expect(page.locator("#bal-cash-res")).not_to_have_text("0.00")
    # a server reject is shown in words (price outside the band)
    page.fill("#ord-qty", "10")
    page.fill("#ord-price", "200.00")
    page.click("#ord-submit")
    expect(page.locator("#order-error")).to_contain_text("Order rejected")
    expect(page.locator("#order-error")).to_contain_text("BAND")
    expect(page.locator(".toast.error").first).to_be_visible()
    expect(page.locator("#executions tbody tr").first).to_be_visible()
    shot(page, "firm")

    page.click(f'#open-orders tr[data-order-id="{order_id}"] button')
    expect(row).to_have_count(0)
    status, firm = http(server["base"], "GET", "/firms/POWER1")
    assert order_id not in [o["order_id"] for o in firm["open_orders"]]


def test_operator_previews_and_applies_offset_cap(page, server):
    from playwright.sync_api import expect

    page.click("#tab-operator")
    page.fill("#operator-key", "demo-key-power1")
    page.click("#operator-key-form button[type=submit]")
    expect(page.locator("#operator-signin-error")).to_contain_text("FORBIDDEN")
    page.fill("#operator-key", OPERATOR_KEY)
    page.click("#operator-key-form button[type=submit]")
    expect(page.locator("#operator-main")).to_be_visible()
    expect(page.locator('#op-instruments tr[data-instrument="CEA-2026"]')).to_be_visible()
    expect(page.locator('#op-firms tr[data-firm="POWER1"]')).to_be_visible()
    expect(page.locator('#op-firms tr[data-firm="POWER1"] td.categories')).to_have_text(
        "E 0 · P 50,000 · N 0*"
    )

    expect(page.locator('#cap-table tr[data-period="2026"]')).to_be_visible()
    status, before = http(server["base"], "GET", "/compliance/periods/2026/summary")
    assert status == 200 and before["offset_cap_pct"] == "5.00"
    page.select_option("#cap-period", "2026")
    page.fill("#cap-pct", "8")
    expect(page.locator("#cap-apply-btn")).to_be_disabled()
    page.click("#cap-preview-btn")
    expect(page.locator("#cap-preview")).to_be_visible()
    expect(page.locator("#cap-preview-head")).to_contain_text("5 % → 8 %")
    # POWER1: obligation 50,000 t, 8 % = 4,000 t; holds 5,000 t CCER and the demo removal
    # project's 6,560 t RMN = 11,560 t -> over by 7,560 t; RMN alone is over its 3 % sub-cap
    # (1,500 t) by 5,060 t
    power = page.locator('#cap-preview-table tr[data-firm="POWER1"]')
    expect(power.locator("td")).to_have_text(
        ["POWER1", "50,000", "2,500", "4,000", "0", "11,560", "7,560", "RMN over by 5,060 t"]
    )
    expect(page.locator("#cap-preview-head")).to_contain_text("1 firm(s) would exceed: POWER1")
    shot(page, "operator-cap-preview")
    # nothing changed yet
    status, still = http(server["base"], "GET", "/compliance/periods/2026/summary")
    assert still["offset_cap_pct"] == "5.00"
    expect(page.locator("#cap-apply-btn")).to_be_enabled()
    page.once("dialog", lambda d: d.accept())  # "1 firm(s) would exceed the new cap. Apply?"
    page.click("#cap-apply-btn")
    expect(page.locator("#cap-ok")).to_contain_text("set to 8 %")
    expect(page.locator('#cap-table tr[data-period="2026"] .cap-value')).to_have_text("8 %")
    status, after = http(server["base"], "GET", "/compliance/periods/2026/summary")
    assert status == 200 and after["offset_cap_pct"] == "8.00"
    status, cap = http(server["base"], "GET", "/compliance/periods/2026/cap")
    assert status == 200 and cap["cap_pct"] == "8.00" and cap["history"][-1]["cap_pct"] == "8.00"
    # a bad cap is refused by the server and explained
    page.fill("#cap-pct", "8")
    sub = page.locator('#cap-subcaps input[data-type="PHCER"]')
    sub.fill("9")
    page.click("#cap-preview-btn")
    expect(page.locator("#cap-error")).to_contain_text("Preview failed — CAP_OUT_OF_RANGE")

    # halt and resume one instrument from the page; the server agrees
    page.once("dialog", lambda d: d.accept())
    page.click('#op-instruments tr[data-instrument="CCER-2026"] button')
    expect(page.locator('#op-instruments tr[data-instrument="CCER-2026"] .badge')).to_have_text(
        "HALTED"
    )
    status, inst = http(server["base"], "GET", "/instruments", key=None)
    assert [i for i in inst["instruments"] if i["instrument"] == "CCER-2026"][0]["halted"]
    shot(page, "operator")
    page.click('#op-instruments tr[data-instrument="CCER-2026"] button')
    expect(page.locator('#op-instruments tr[data-instrument="CCER-2026"] .badge')).to_have_text(
        "TRADING"
    )


def test_revoked_key_is_reported_in_words(page, server):
    from playwright.sync_api import expect

    status, issued = http(
        server["base"],
        "POST",
        "/api-keys",
        {"role": "firm", "firm_id": "SME2", "label": "dashboard test"},
    )
    assert status == 201, issued
    page.click("#tab-firm")
    page.fill("#firm-key", issued["api_key"])
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("SME2")
    expect(page.locator("#firm-conn")).to_have_attribute("data-state", "online")
    status, _ = http(server["base"], "DELETE", f"/api-keys/{issued['key_id']}")
    assert status == 200
    # the server closes the session; the page says why, tries again, and says why that failed
    expect(page.locator(".toasts")).to_contain_text("KEY_REVOKED")
    expect(page.locator("#firm-conn")).to_have_attribute("data-state", "error", timeout=15_000)
    expect(page.locator(".toasts")).to_contain_text("AUTH_FAILED")


# ------------------------------------------------------------------ SME sub-quotas and the fund
SME_SPLIT = {
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


@pytest.fixture(scope="module")
def sme_setup(server):
    """Through the operator API: STEEL1 splits 1,234 t of CEA-2026 to SME1 (65 % revenue
    share, surplus banked, shortfall covered by the parent); the budget deposits 100,000.00
    into the SME fund; SME1 applies (with its own key) for 80,000.00, which is approved and
    paid, and for 30,000.00 more, which is rejected with a reason. Then SME1 sells 100 t of
    its older sub-quota on the SME board."""
    base = server["base"]
    status, r = http(base, "POST", "/rules/splits", SME_SPLIT)
    assert status == 200, r
    lot = [e for e in r["events"] if e["type"] == "sub_quota_created"][0]["lot_id"]
    f = "/compliance/sme-fund"
    status, r = http(
        base,
        "POST",
        f + "/deposits",
        {"amount": "100000.00", "period": 2026, "ref": "MEE budget 2026"},
    )
    assert status == 200, r
    ids = []
    for amount, project, tonnes in (
        ("80000.00", "waste-heat recovery", 120),
        ("30000.00", "kiln insulation", 45),
    ):
        status, r = http(
            base,
            "POST",
            f + "/applications",
            {"period": 2026, "amount": amount, "project": project, "verified_abatement_t": tonnes},
            key="demo-key-sme1",
        )
        assert status == 200, r
        ids.append(r["events"][0]["application_id"])
    paid, refused = ids
    # POWER1 buys 100 t of the demo's resting SME-board offer (SME1, 85.20, from its genesis
    # lot #1, no fee): of 8,520.00 the SME keeps 70 % = 5,964.00, STEEL1 gets 2,556.00
    (fill,) = place(
        server,
        "demo-key-power1",
        dict(
            instrument="CEA-2026",
            segment="sme",
            side="buy",
            qty=100,
            price="85.20",
            tif="IOC",
            client_order_id="sme-buy-1",
        ),
    )
    assert fill["cum_qty"] == 100, fill
    for path, body in (
        (f"/applications/{paid}/approve", {}),
        (f"/applications/{paid}/disburse", {}),
        (f"/applications/{refused}/reject", {"reason": "no verification report attached"}),
    ):
        status, r = http(base, "POST", f + path, body)
        assert status == 200, r
    return {"lot": lot, "paid": paid, "refused": refused}


def shot_of(locator, name: str) -> None:
    """A screenshot of one panel (the full page is long once the SME panels are in it)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    locator.page.evaluate("document.getElementById('toasts').replaceChildren()")
    locator.screenshot(path=str(SHOTS / f"{name}.png"))


def test_sme_sees_its_sub_quotas_and_grants_and_core_firm_what_it_split(page, server, sme_setup):
    from playwright.sync_api import expect

    lot, paid, refused = sme_setup["lot"], sme_setup["paid"], sme_setup["refused"]
    page.click("#tab-firm")
    page.fill("#firm-key", "demo-key-sme1")
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("SME1")
    # the sub-quota the operator just split, from STEEL1, with its terms in words
    row = page.locator(f'#firm-sq-received tr[data-lot="{lot}"] td')
    expect(row).to_have_text(
        [
            f"#{lot}",
            "2026",
            "CEA-2026",
            "STEEL1",
            "steelchain",
            "1,234",
            "1,234",
            "0",
            "SME 65 % · parent 35 %",
            "banked by SME",
            "parent covers",
            "—",
            "open",
        ]
    )
    # the demo's genesis lot: 3,000 t, 70 %, reverts; 100 t of it sold, the proceeds split
    expect(page.locator('#firm-sq-received tr[data-lot="1"] td')).to_have_text(
        [
            "#1",
            "2026",
            "CEA-2026",
            "STEEL1",
            "steelchain",
            "3,000",
            "2,900",
            "100",
            "SME 70 % · parent 30 %",
            "reverts to parent",
            "parent covers",
            "5,964.00 / 2,556.00",
            "open",
        ]
    )
    expect(page.locator("#firm-sq-meta")).to_have_text("received 4,234 t in 2 lot(s)")
    expect(page.locator("#firm-sq-split-box")).to_be_hidden()  # an SME split nothing out
    # the same figures on the server
    status, mine = http(server["base"], "GET", "/rules/sub-quotas/SME1", key="demo-key-sme1")
    assert status == 200
    assert [(q["lot_id"], q["granted"], q["revenue_share"]) for q in mine["received"]] == [
        (1, 3000, "0.7"),
        (lot, 1234, "0.65"),
    ]
    assert (mine["received"][0]["sme_proceeds"], mine["received"][0]["parent_proceeds"]) == (
        "5964.00",
        "2556.00",
    )
    # its grants: one paid, one rejected with the reason
    expect(page.locator("#firm-fund-panel")).to_be_visible()
    expect(page.locator(f'#firm-grants tr[data-application="{paid}"] td')).to_have_text(
        [
            f"#{paid}",
            "2026",
            "waste-heat recovery",
            "120",
            "80,000.00",
            "disbursed",
            re.compile(r"^\d{4}-\d\d-\d\d$"),
            re.compile(r"^paid \d{4}-\d\d-\d\d · seq \d+$"),
        ]
    )
    expect(page.locator(f'#firm-grants tr[data-application="{refused}"] td')).to_have_text(
        [
            f"#{refused}",
            "2026",
            "kiln insulation",
            "45",
            "30,000.00",
            "rejected",
            re.compile(r"^\d{4}-\d\d-\d\d$"),
            "rejected by demo operator: no verification report attached",
        ]
    )
    expect(page.locator("#firm-fund-meta")).to_have_text(
        "received 80,000.00 CNY for 2026 of 200,000.00 per period"
    )
    status, apps = http(
        server["base"], "GET", "/compliance/sme-fund/applications", key="demo-key-sme1"
    )
    assert status == 200 and [(a["application_id"], a["status"]) for a in apps["applications"]] == [
        (paid, "disbursed"),
        (refused, "rejected"),
    ]
    page.wait_for_timeout(150)
    shot(page, "firm-sme")
    shot_of(page.locator("#firm-sq-panel"), "firm-sme-sub-quotas")
    shot_of(page.locator("#firm-fund-panel"), "firm-sme-grants")
    # a sale while the page is open moves the holdings: the panel follows (refresh <= 5 s)
    place(
        server,
        "demo-key-power1",
        dict(
            instrument="CEA-2026",
            segment="sme",
            side="buy",
            qty=50,
            price="85.20",
            tif="IOC",
            client_order_id="sme-buy-2",
        ),
    )
    cells = page.locator('#firm-sq-received tr[data-lot="1"] td')
    expect(cells.nth(7)).to_have_text("150", timeout=15_000)
    expect(cells.nth(11)).to_have_text("8,946.00 / 3,834.00")

    # the core firm sees what it split out, to whom, on the same terms; no fund panel
    page.click("#firm-signout")
    page.fill("#firm-key", "demo-key-steel1")
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("STEEL1")
    expect(page.locator(f'#firm-sq-split tr[data-lot="{lot}"] td')).to_have_text(
        [
            f"#{lot}",
            "2026",
            "CEA-2026",
            "SME1",
            "steelchain",
            "1,234",
            "1,234",
            "0",
            "SME 65 % · parent 35 %",
            "banked by SME",
            "parent covers",
            "—",
            "open",
        ]
    )
    expect(page.locator('#firm-sq-split tr[data-lot="1"] td')).to_have_text(
        [
            "#1",
            "2026",
            "CEA-2026",
            "SME1",
            "steelchain",
            "3,000",
            "2,850",
            "150",
            "SME 70 % · parent 30 %",
            "reverts to parent",
            "parent covers",
            "8,946.00 / 3,834.00",
            "open",
        ]
    )
    expect(page.locator("#firm-sq-split tbody tr")).to_have_count(2)  # not CEMENT1's lot
    expect(page.locator("#firm-sq-received-box")).to_be_hidden()
    expect(page.locator("#firm-fund-panel")).to_be_hidden()
    expect(page.locator("#firm-sq-meta")).to_have_text("split out 4,234 t in 2 lot(s)")
    shot_of(page.locator("#firm-sq-panel"), "firm-core-sub-quotas")


def test_operator_sees_sme_fund_statement_and_sub_quotas(page, server, sme_setup):
    from playwright.sync_api import expect

    lot, paid = sme_setup["lot"], sme_setup["paid"]
    page.click("#tab-operator")
    page.fill("#operator-key", OPERATOR_KEY)
    page.click("#operator-key-form button[type=submit]")
    expect(page.locator("#operator-main")).to_be_visible()
    # the public statement: 100,000.00 from the budget, 80,000.00 paid, 20,000.00 left
    status, fund = http(server["base"], "GET", "/compliance/sme-fund", key=None)
    assert status == 200 and fund["balance"] == "20000.00"
    kpi = page.locator("#fund-kpis")
    expect(kpi.locator('[data-kpi="balance"] span')).to_have_text("20,000.00")
    expect(kpi.locator('[data-kpi="budget"] span')).to_have_text("100,000.00")
    expect(kpi.locator('[data-kpi="penalty"] span')).to_have_text("0.00")
    expect(kpi.locator('[data-kpi="grants"] span')).to_have_text("80,000.00 · 1")
    expect(kpi.locator('[data-kpi="applications"] span')).to_have_text(
        "0 pending · 0 approved · 1 rejected"
    )
    expect(page.locator("#fund-params")).to_contain_text(
        "30 % of each penalty · 10 % of auction proceeds · per SME and period 200,000.00 CNY"
        " · per period 1,000,000.00 CNY"
    )
    expect(page.locator('#fund-periods tr[data-period="2026"] td')).to_have_text(
        ["2026", "0.00", "100,000.00", "0.00", "100,000.00", "80,000.00 (1)"]
    )
    expect(page.locator(f'#fund-grants tr[data-application="{paid}"] td')).to_have_text(
        [
            f"#{paid}",
            "SME1",
            "2026",
            "waste-heat recovery",
            "120",
            "80,000.00",
            re.compile(r"^\d{4}-\d\d-\d\d · seq \d+$"),
        ]
    )
    expect(page.locator("#fund-grants tbody tr")).to_have_count(1)  # paid grants only
    # every lot, both sides and the terms
    expect(page.locator(f'#op-sq tr[data-lot="{lot}"] td')).to_have_text(
        [
            f"#{lot}",
            "2026",
            "CEA-2026",
            "STEEL1",
            "SME1",
            "steelchain",
            "1,234",
            "1,234",
            "0",
            "SME 65 % · parent 35 %",
            "banked by SME",
            "parent covers",
            "—",
            "open",
        ]
    )
    expect(page.locator('#op-sq tr[data-lot="2"] td').nth(4)).to_have_text("SME2")
    status, lots = http(server["base"], "GET", "/rules/sub-quotas")
    expect(page.locator("#op-sq tbody tr")).to_have_count(len(lots["sub_quotas"]))
    page.wait_for_timeout(150)
    shot_of(page.locator("#fund-panel"), "operator-sme-fund")
    shot_of(page.locator("#op-sq-panel"), "operator-sub-quotas")
