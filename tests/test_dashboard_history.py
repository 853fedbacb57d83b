"""The dashboard's history in a real browser (Playwright, Debian's chromium; the helpers and the
browser fixtures of tests/test_dashboard.py):

* recent trades and a firm's executions survive a server restart on the same data directory
  (the server stops with a final snapshot, so the restart skips those events: the page shows
  them only because the history is read back from the journal);
* the market view is per board: the selected board's ticker, daily candles, 1-minute bars and
  trades - the SME board's trade is not on the main board and the reverse;
* a new market's first trade draws one candle mid-chart on a readable axis;
* an SME's view says what its sub-quota is (grant, parent, revenue share, what reverts); a firm
  whose product has no benchmark shows its factor as not assessed.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import subprocess

import pytest

from test_dashboard import (  # noqa: F401  (browser, chromium_path, page: fixtures)
    ROOT,
    browser,
    chromium_path,
    http,
    page,
    place,
    shot,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow
SYM = "CEA-2026"


def _launch(data) -> dict:
    """``serve`` on a data directory that has a market already: no seeding."""
    proc = subprocess.Popen(
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"},
    )
    lines, port = [], None
    deadline = time.monotonic() + 60
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
        pytest.fail("server did not restart:\n" + "".join(lines)[-3000:])
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return {
        "base": f"http://127.0.0.1:{port}",
        "ws": f"ws://127.0.0.1:{port}/ws",
        "proc": proc,
        "data": data,
        "output": lines,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A served market with history (test_dashboard's four seeded days of CEA-2026 on main),
    a trade on the SME board, then stopped and started again on the same data directory."""
    data = tmp_path_factory.mktemp("history-data")
    first = start_server(
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
    # POWER1 buys 30 t of SME1's resting offer on the SME board (the demo book: 85.20)
    (fill,) = place(
        first,
        "demo-key-power1",
        dict(
            instrument=SYM,
            segment="sme",
            side="buy",
            qty=30,
            price="85.20",
            tif="IOC",
            client_order_id="h-sme-1",
        ),
    )
    assert fill["cum_qty"] == 30, fill
    status, before = http(first["base"], "GET", f"/trades?instrument={SYM}", key=None)
    assert status == 200 and len(before["trades"]) == 17, before
    assert stop_server(first) == 0
    info = _launch(data)
    status, after = http(info["base"], "GET", f"/trades?instrument={SYM}", key=None)
    assert status == 200 and after["trades"] == before["trades"]
    info["trades_before"] = before["trades"]
    yield info
    stop_server(info)


def _board(pg, sym: str, seg: str) -> None:
    pg.click(f'#instrument-chips button[data-instrument="{sym}"]')
    pg.click(f'#segment-chips button[data-segment="{seg}"]')


def test_trades_and_blotter_survive_a_restart_and_the_market_view_is_per_board(page, server):  # noqa: F811  (page: test_dashboard's fixture)
    from playwright.sync_api import expect

    # main board (the default): the 16 seeded trades, from before the restart; not the SME one
    expect(page.locator("#trades-meta")).to_have_text(f"{SYM} · main board")
    expect(page.locator("#trades-body tr")).to_have_count(16)
    expect(page.locator("#trades-body tr").first).to_contain_text("85.28")
    expect(page.locator("#trades-body td", has_text=re.compile(r"^sme$"))).to_have_count(0)
    expect(page.locator("#chart-meta")).to_contain_text("main board · trading day 3")
    # the daily candles (4 days) and today's 1-minute bars, rebuilt from the journal
    expect(page.locator("#chart")).to_have_attribute("data-candles", "4")
    expect(page.locator("#chart")).to_have_attribute("data-last", "85.28")
    expect(page.locator("#chart-intraday")).not_to_have_attribute("data-candles", "0")
    expect(page.locator("#chart-intraday")).to_have_attribute("data-last", "85.28")
    # the SME board: its own trade, its own candle, bars and (signed in) ticker
    page.fill("#market-key", "demo-key-steel1")
    page.click("#market-key-form button[type=submit]")
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "online")
    expect(page.locator("#tk-last")).to_have_text("85.28")
    _board(page, SYM, "sme")
    expect(page.locator("#ticker")).to_have_attribute("data-board", f"{SYM}@sme")
    expect(page.locator("#tk-last")).to_have_text("85.20")
    expect(page.locator("#tk-vol")).to_have_text("30")
    expect(page.locator("#trades-meta")).to_have_text(f"{SYM} · sme board")
    expect(page.locator("#trades-body tr")).to_have_count(1)
    expect(page.locator("#trades-body tr").first).to_contain_text("85.20")
    expect(page.locator("#chart-meta")).to_contain_text("sme board")
    expect(page.locator("#chart")).to_have_attribute("data-candles", "1")
    expect(page.locator("#chart")).to_have_attribute("data-last", "85.20")
    expect(page.locator("#chart-intraday")).to_have_attribute("data-last", "85.20")
    # a live trade on the SME board shows there and not on main
    place(
        server,
        "demo-key-cement1",
        dict(
            instrument=SYM,
            segment="sme",
            side="buy",
            qty=5,
            price="85.20",
            tif="IOC",
            client_order_id="h-sme-2",
        ),
    )
    expect(page.locator("#trades-body tr")).to_have_count(2)
    expect(page.locator("#tk-vol")).to_have_text("35")
    _board(page, SYM, "main")
    expect(page.locator("#ticker")).to_have_attribute("data-board", SYM)
    expect(page.locator("#tk-last")).to_have_text("85.28")
    expect(page.locator("#trades-body tr")).to_have_count(16)
    shot(page, "market-history")

    # the buyer's blotter: its 16 seeded buys, from before the restart, newest first
    page.click("#tab-firm")
    page.fill("#firm-key", "demo-key-cement1")
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("CEMENT1")
    rows = page.locator("#executions tbody tr")
    expect(rows).to_have_count(17)  # and the SME-board buy just now
    expect(rows.first).to_contain_text("CEA-2026 · sme")
    expect(rows.nth(1)).to_contain_text("85.28")
    expect(rows.nth(1)).to_contain_text("BUY")
    expect(page.locator("#executions-meta")).to_contain_text("last 5 trading days")
    # its order history too: every report, from the first seeded order on (day 0)
    hist = page.locator("#order-history tbody tr")
    expect(hist.first).to_contain_text("h-sme-2")
    expect(hist.first).to_contain_text("trade")
    expect(page.locator("#order-history td", has_text=re.compile(r"^seed-b-1$"))).to_have_count(
        2
    )  # its "new" and its fill
    # the server's own record agrees
    status, ex = http(server["base"], "GET", "/firms/CEMENT1/executions", key="demo-key-cement1")
    assert status == 200 and len(ex["executions"]) == 17
    assert all("counterparty" not in e and "STEEL1" not in str(e) for e in ex["executions"])
    shot(page, "firm-blotter")


def test_a_new_markets_first_candle(page, server):  # noqa: F811
    from playwright.sync_api import expect

    _board(page, "CCER-2026", "main")
    expect(page.locator("#chart-meta")).to_contain_text("CCER-2026 · main board")
    expect(page.locator("#chart")).to_have_attribute("data-candles", "0")
    expect(page.locator("#chart-intraday")).to_have_attribute("data-candles", "0")
    place(
        server,
        "demo-key-power1",
        dict(
            instrument="CCER-2026", side="sell", qty=10, price="60.10", client_order_id="h-ccer-s"
        ),
    )
    place(
        server,
        "demo-key-cement1",
        dict(
            instrument="CCER-2026",
            side="buy",
            qty=10,
            price="60.10",
            tif="IOC",
            client_order_id="h-ccer-b",
        ),
    )
    # the page is not signed in: the chart follows at its next refresh; reselect to reload
    _board(page, "CCER-2026", "main")
    for chart in ("#chart", "#chart-intraday"):
        expect(page.locator(chart)).to_have_attribute("data-candles", "1")
        expect(page.locator(chart)).to_have_attribute("data-last", "60.10")
    # one price: the axis spans about 1 % either side of it (and the reference line, 60.00),
    # never below zero, so the candle sits inside it
    lo, hi = (float(x) for x in page.locator("#chart").get_attribute("data-axis").split("-"))
    assert 0 <= lo < 60.00 and 60.10 < hi and hi - lo < 3, (lo, hi)
    lo, hi = (
        float(x) for x in page.locator("#chart-intraday").get_attribute("data-axis").split("-")
    )
    assert 0 <= lo < 60.10 < hi and hi - lo < 3, (lo, hi)


def test_sme_sees_its_sub_quota_and_an_unassessed_factor(page, server):  # noqa: F811
    from playwright.sync_api import expect

    page.click("#tab-firm")
    page.fill("#firm-key", "demo-key-sme1")
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("SME1")
    # castings has no benchmark: SME1 is not assessed, and no default factor is shown for it
    phi = page.locator("#firm-phi")
    expect(phi).to_have_text("allocation factor not assessed · no benchmark for castings")
    expect(phi).to_have_attribute("data-assessed", "false")
    # its sub-quota in words: the genesis lot from STEEL1, 70 % revenue share, reverts; 30 t
    # of it sold on the SME board before the restart
    lot = page.locator('#firm-sq-summary li[data-lot="1"]')
    status, mine = http(server["base"], "GET", "/rules/sub-quotas/SME1", key="demo-key-sme1")
    assert status == 200
    held = [q["held"] for q in mine["received"] if q["lot_id"] == 1][0]
    assert held <= 3_000 - 30  # 30 t sold before the restart (and 5 t if the first test ran)
    expect(lot).to_have_text(
        "Lot #1: 3,000 t of CEA-2026 granted by STEEL1 for 2026 · you keep 70 % of each "
        "sale's net proceeds, STEEL1 gets 30 % · at the end of 2026 what is left unsold and "
        f"unsurrendered ({held:,} t now) reverts to STEEL1."
    )
    # a covered firm never assessed keeps the initial factor, said as such
    page.click("#firm-signout")
    page.fill("#firm-key", "demo-key-power1")
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("POWER1")
    expect(phi).to_have_text(re.compile(r"^allocation factor φ 1\.0000 · initial$"))
