"""The credit registry in the web dashboard, in a real browser (Debian's chromium driven by
Playwright, against the real server: the fixtures of tests/test_dashboard.py).

Each test gets a server of its own (the demo market, with the history test_dashboard seeds):
the firm's test needs POWER1's credits as the demo issues them, the operator's test reverses
part of them, and neither should depend on which runs first.

* Operator: FOREST-YN1 as verified at genesis (gross 12,000 − own 800 − baseline 3,000 = net
  8,200; buffer 1,640), the natural buffer pool, the conversion table, a platform batch and the
  suppressed totals; the public lookup of a retired serial names its beneficiary; a reversal of
  2,000 t reported from the page cancels the pool's 1,640 t and 360 t of the project's own
  credits (the server agrees); errors in words.
* Firm: POWER1 sees its serials oldest first, retires 10 t by serial, and retiring the same
  serial again is refused as DOUBLE_COUNTED, in words; a serial it does not hold is
  SERIAL_NOT_HELD.
"""

from __future__ import annotations

import re
import sys

import pytest

from test_dashboard import (  # noqa: F401  (fixtures: pytest finds them by name)
    OPERATOR_KEY,
    ROOT,
    VERIFIER_KEY,
    browser,
    chromium_path,
    http,
    page,
    shot,
    shot_of,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

POWER_KEY = "demo-key-power1"
CCER = "DEMO/POWER1-CCER-2026/2026/1-5000"
FOREST = "CEX/FOREST-YN1/2026/1641-8200"


@pytest.fixture
def server(tmp_path):
    """A fresh served exchange per test (overrides test_dashboard's module-wide one)."""
    data = tmp_path / "data"
    data.mkdir()
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


def panel_shot(locator, name: str) -> None:
    """A screenshot of one panel, without the sticky top bar over its upper edge."""
    pg = locator.page
    pg.evaluate("document.querySelector('.topbar').style.position = 'static'")
    locator.scroll_into_view_if_needed()
    shot_of(locator, name)
    pg.evaluate("document.querySelector('.topbar').style.position = ''")


def sign_in_operator(pg):
    from playwright.sync_api import expect

    pg.click("#tab-operator")
    pg.fill("#operator-key", OPERATOR_KEY)
    pg.click("#operator-key-form button[type=submit]")
    expect(pg.locator("#operator-main")).to_be_visible()


def test_operator_sees_projects_pools_batches_and_reports_a_reversal(page, server):
    from playwright.sync_api import expect

    base = server["base"]
    # set up through the public interfaces: a retirement to look up, a platform batch
    # (12,000 metro km x 72 g + 4,000 bike km x 90 g + 1,000 kWh x 310 g = 1.534 t -> 1 t)
    status, r = http(
        base,
        "POST",
        "/registry/retirements",
        {
            "instrument": "CCER-2026",
            "qty": 10,
            "serials": ["DEMO/POWER1-CCER-2026/2026/4991-5000"],
            "beneficiary": "Yunnan Air passengers",
            "reason": "2026 flights",
        },
        key=POWER_KEY,
    )
    assert status == 200, r
    records = [
        [f"{i:02x}" * 32, at, q, d]
        for i, (at, q, d) in enumerate(
            [
                ("metro_trip_km", 12_000, "2026-03-01"),
                ("bike_share_km", 4_000, "2026-03-02"),
                ("ev_charging_kwh", 1_000, "2026-03-02"),
            ],
            start=1,
        )
    ]
    status, r = http(
        base,
        "POST",
        "/registry/batches",
        {"vintage": 2026, "records": records},
        key="platform-demo-key",
    )
    assert status == 200, r
    batch = r["events"][0]["batch_id"]
    status, r = http(base, "POST", f"/registry/batches/{batch}/approve", {}, key=VERIFIER_KEY)
    assert status == 200, r

    page.on("dialog", lambda d: d.accept())  # "Report a reversal of 2,000 t ...?"
    sign_in_operator(page)
    # FOREST-YN1 as verified at genesis, in tonnes
    forest = page.locator('#reg-projects tr[data-project="FOREST-YN1"][data-vintage="2026"] td')
    expect(forest).to_have_text(
        [
            "FOREST-YN1",
            "natural sinks",
            "POWER1",
            "2026",
            "12,000",
            "− 800",
            "− 3,000",
            "8,200",
            "1,640",
            "6,560",
            "CEX/FOREST-YN1/2026/1-8200",
            "0",
            "0",
            "0",
            "0",
        ]
    )
    expect(forest.nth(3)).to_have_attribute(
        "title", re.compile(r"^verified \d{4}-\d\d-\d\d by VERIFIER1 \(seq \d+\)$")
    )
    expect(page.locator('#reg-buffer tr[data-type="natural"] td')).to_have_text(
        ["natural sinks", "RMN", "1,640", "0", "1,640"]
    )
    expect(page.locator('#reg-buffer tr[data-type="engineered"] td')).to_have_text(
        ["engineered capture and storage", "RME", "0", "0", "0"]
    )
    expect(page.locator("#reg-buffer-meta")).to_have_text(
        "20 % of every removal issuance goes to the pool"
    )
    # the conversion table, the batch, and its totals suppressed (one platform of at least 3)
    expect(page.locator('#reg-table tr[data-action="metro_trip_km"] td')).to_have_text(
        ["metro_trip_km", "km", "0.000072", re.compile(r"^\d+$")]
    )
    expect(page.locator(f'#reg-batches tr[data-batch="{batch}"] td')).to_have_text(
        [
            batch,
            "GREENWAY",
            "2026",
            "3",
            "1.534",
            "1",
            "approved",
            f"GREENWAY/{batch}/2026/1",
            re.compile(r"^submitted \d{4}-\d\d-\d\d · approved by VERIFIER1 · \d{4}-\d\d-\d\d$"),
        ]
    )
    for at in ("metro_trip_km", "bike_share_km", "ev_charging_kwh"):
        row = page.locator(f'#reg-totals tr[data-action="{at}"]')
        expect(row).to_have_attribute("data-suppressed", "true")
        expect(row).to_contain_text("suppressed — fewer than 3 platforms contributed")
    # nothing raw on screen: no ns timestamps, no grams, no bps
    text = page.locator("#registry-panel").inner_text()
    assert not re.search(r"\d{16,}", text), "a raw ns timestamp is on screen"

    # the public lookup of a retired serial: for whom, why
    page.fill("#reg-serial", "DEMO/POWER1-CCER-2026/2026/4991-5000")
    page.click("#reg-serial-form button[type=submit]")
    expect(page.locator("#reg-serial-head")).to_contain_text("retired")
    expect(page.locator("#reg-serial-head")).to_contain_text("10 issued · 10 retired · 0 live")
    ret = page.locator("#reg-serial-table tr.retirement td")
    expect(ret).to_have_text(
        [
            re.compile("DEMO/POWER1-CCER-2026/2026/4991-5000$"),
            "retired",
            "",
            "10",
            "Yunnan Air passengers",
            "voluntary retirement: 2026 flights",
            "—",
            re.compile(r"^\d{4}-\d\d-\d\d · seq \d+$"),
        ]
    )
    panel_shot(page.locator("#registry-panel"), "operator-registry-lookup")
    # a live serial, one never issued, and one that is not a serial: each said in words
    page.fill("#reg-serial", "DEMO/POWER1-CCER-2026/2026/1-100")
    page.click("#reg-serial-form button[type=submit]")
    expect(page.locator("#reg-serial-head")).to_contain_text("issued, none retired")
    page.fill("#reg-serial", "CCER/NOPE/2026/1-5")
    page.click("#reg-serial-form button[type=submit]")
    expect(page.locator("#reg-serial-head")).to_contain_text("never issued")
    page.fill("#reg-serial", "not-a-serial")
    page.click("#reg-serial-form button[type=submit]")
    expect(page.locator("#reg-serial-error")).to_contain_text(
        "Lookup of not-a-serial failed — INVALID_PARAMS"
    )

    # a fire at FOREST-YN1: 2,000 t reversed, the pool's 1,640 t first, then 360 t of POWER1's
    page.select_option("#reg-rev-project", "FOREST-YN1")
    page.fill("#reg-rev-qty", "2000")
    page.fill("#reg-rev-cause", "forest fire")
    page.click("#reg-reversal-form button[type=submit]")
    expect(page.locator("#reg-rev-ok")).to_contain_text(
        "Reversal of 2,000 t at FOREST-YN1: 1,640 t cancelled from the buffer pool, 360 t from "
        "the project's own credits, 0 t uncovered"
    )
    expect(page.locator('#reg-buffer tr[data-type="natural"] td')).to_have_text(
        ["natural sinks", "RMN", "1,640", "1,640", "0"]
    )
    cells = page.locator('#reg-projects tr[data-project="FOREST-YN1"][data-vintage="2026"]')
    expect(cells.locator("td.reversed")).to_have_text("2,000")
    expect(cells.locator("td.from-pool")).to_have_text("1,640")
    expect(cells.locator("td.from-own")).to_have_text("360")
    expect(cells.locator("td.uncovered")).to_have_text("0")
    # ... and so says the server
    status, buf = http(base, "GET", "/registry/buffer", key=None)
    assert buf["pools"]["natural"] == {
        "offset_type": "RMN",
        "contributed": 1640,
        "cancelled": 1640,
        "held": 0,
    }
    status, mine = http(base, "GET", "/registry/holdings/POWER1", key=POWER_KEY)
    assert mine["serials"]["RMN-2026"] == ["CEX/FOREST-YN1/2026/2001-8200"]
    status, proj = http(base, "GET", "/registry/removal-projects")
    assert (
        proj["projects"]["FOREST-YN1"]["reversed"],
        proj["projects"]["FOREST-YN1"]["uncovered"],
    ) == (2000, 0)
    # the cancelled serials are public: the project's own ones, for the reversal
    page.fill("#reg-serial", "CEX/FOREST-YN1/2026/1641-2000")
    page.click("#reg-serial-form button[type=submit]")
    expect(page.locator("#reg-serial-table tr.retirement td.beneficiary")).to_have_text("POWER1")
    expect(page.locator("#reg-serial-table tr.retirement td.reason")).to_have_text(
        "cancelled for a reversal at FOREST-YN1 (forest fire)"
    )

    # operator actions the server refuses are explained; the one it accepts is confirmed
    page.fill("#reg-rev-qty", "10")
    page.fill("#reg-rev-cause", " ")
    page.click("#reg-reversal-form button[type=submit]")
    expect(page.locator("#reg-rev-error")).to_contain_text("REASON_REQUIRED")
    page.fill("#reg-class-type", "CCER")
    page.click("#reg-class-form button[type=submit]")
    expect(page.locator("#reg-class-error")).to_contain_text(
        "Declaring CCER refused — BAD_PARAMETER: only carbon-inclusive credits (PHCER)"
    )
    page.fill("#reg-class-type", "PHCER")
    page.select_option("#reg-class-value", "true")
    page.click("#reg-class-form button[type=submit]")
    expect(page.locator("#reg-class-ok")).to_contain_text(
        "PHCER declared CCER-equivalent: it counts for compliance within its sub-cap"
    )
    page.wait_for_timeout(150)
    panel_shot(page.locator("#registry-panel"), "operator-registry")
    page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar stays on top
    shot(page, "operator-registry-page")


def test_firm_sees_its_serials_and_retires_by_serial(page, server):
    from playwright.sync_api import expect

    base = server["base"]
    page.on("dialog", lambda d: d.accept())  # "Retire 10 t of CCER-2026 ...?"
    page.click("#tab-firm")
    page.fill("#firm-key", POWER_KEY)
    page.click("#firm-key-form button[type=submit]")
    expect(page.locator("#firm-whoami")).to_have_text("POWER1")
    expect(page.locator("#firm-credits-panel")).to_be_visible()
    # its credits by serial, oldest first, in tonnes
    expect(page.locator(f'#firm-credits tr[data-serial="{CCER}"] td')).to_have_text(
        ["CCER-2026", CCER, "DEMO · POWER1-CCER-2026", "2026", "5,000", "Use"]
    )
    expect(page.locator(f'#firm-credits tr[data-serial="{FOREST}"] td')).to_have_text(
        ["RMN-2026", FOREST, "CEX · FOREST-YN1", "2026", "6,560", "Use"]
    )
    assert page.locator("#firm-credits tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.serial)"
    ) == [CCER, FOREST]
    expect(page.locator("#firm-credits-meta")).to_have_text(
        "11,560 t in 2 serial block(s), oldest first"
    )
    panel_shot(page.locator("#firm-credits-panel"), "firm-credits")

    # retire 10 t by serial: naming the serial fills in the quantity
    page.select_option("#retire-instrument", "CCER-2026")
    page.fill("#retire-serials", "DEMO/POWER1-CCER-2026/2026/1-10")
    expect(page.locator("#retire-qty")).to_have_value("10")
    page.fill("#retire-beneficiary", "Demo Air passengers")
    page.fill("#retire-reason", "2026 business travel")
    page.click("#retire-submit")
    expect(page.locator("#retire-ok")).to_contain_text(
        "Retired 10 t of CCER-2026: DEMO/POWER1-CCER-2026/2026/1-10 for Demo Air passengers"
    )
    rest = "DEMO/POWER1-CCER-2026/2026/11-5000"
    expect(page.locator(f'#firm-credits tr[data-serial="{rest}"] td').nth(4)).to_have_text("4,990")
    status, mine = http(base, "GET", "/registry/holdings/POWER1", key=POWER_KEY)
    assert mine["serials"]["CCER-2026"] == [rest]
    status, look = http(
        base, "GET", "/registry/serials?serial=DEMO/POWER1-CCER-2026/2026/1-10", key=None
    )
    assert look["retired_units"] == 10
    assert look["blocks"][0]["retirements"][0]["beneficiary"] == "Demo Air passengers"

    # the same serial again: double counting, refused and said in words
    page.fill("#retire-serials", "DEMO/POWER1-CCER-2026/2026/1-10")
    page.click("#retire-submit")
    err = page.locator("#retire-error")
    expect(err).to_contain_text(
        "Retirement refused — DOUBLE_COUNTED: "
        "DEMO/POWER1-CCER-2026/2026/1-10 is already retired "
        "(for Demo Air passengers"
    )
    expect(err.locator(".hint")).to_have_text(
        "Already retired or issued: a credit unit counts once, so it cannot be retired again."
    )
    expect(page.locator(".toast.error").first).to_contain_text("DOUBLE_COUNTED")
    panel_shot(page.locator("#firm-credits-panel"), "firm-credits-double-counted")
    # the buffer pool's serials are not POWER1's to retire
    page.select_option("#retire-instrument", "RMN-2026")
    page.fill("#retire-serials", "CEX/FOREST-YN1/2026/1-5")
    page.click("#retire-submit")
    expect(err).to_contain_text("SERIAL_NOT_HELD: POWER1 does not hold CEX/FOREST-YN1/2026/1-5")
    expect(err.locator(".hint")).to_contain_text("Your firm does not hold these serials")
    status, again = http(base, "GET", "/registry/holdings/POWER1", key=POWER_KEY)
    assert again["serials"] == {"CCER-2026": [rest], "RMN-2026": [FOREST]}
    page.wait_for_timeout(150)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar stays on top
    shot(page, "firm-registry")
