"""The operator view's offset-cap table in a real browser (Playwright, as tests/test_dashboard.py):
the cap in force, and each scheduled change with its effective time, who made it and its
journal seq - not today's cap beside the date of a pending change."""

from __future__ import annotations

from test_dashboard import (  # noqa: F401 - fixtures
    OPERATOR_KEY,
    browser,
    chromium_path,
    http,
    page,
    server,
)


def test_operator_sees_the_cap_in_force_and_each_scheduled_change(page, server):
    from playwright.sync_api import expect

    # two changes of 2027's cap ahead: 3 % from 1 June 2027, then 7 % from 1 July 2027
    seqs = []
    for pct, day in (("3", "2027-06-01"), ("7", "2027-07-01")):
        status, r = http(
            server["base"],
            "PUT",
            "/compliance/periods/2027/cap",
            {"cap_pct": pct, "effective": day},
        )
        assert status == 200, r
        seqs.append(r["seq"])
    page.click("#tab-operator")
    page.fill("#operator-key", OPERATOR_KEY)
    page.click("#operator-key-form button[type=submit]")
    expect(page.locator("#operator-main")).to_be_visible()
    now = page.locator('#cap-table tr.cap-in-force[data-period="2027"]')
    expect(now.locator(".cap-value")).to_have_text("5 %")  # still the configured cap
    expect(now.locator(".cap-when")).to_have_text("in force since the period opened")
    expect(now.locator(".cap-who")).to_have_text("config")
    sched = page.locator('#cap-table tr.cap-scheduled[data-schedule-period="2027"]')
    expect(sched).to_have_count(2)
    expect(sched.nth(0).locator(".cap-value")).to_have_text("3 %")
    # in the market's zone with its offset, as the API writes it (2027-06-01 is UTC midnight)
    expect(sched.nth(0).locator(".cap-when")).to_have_text("from 2027-06-01 08:00 +08:00")
    expect(sched.nth(0).locator(".cap-who")).to_have_text("demo operator")
    expect(sched.nth(0).locator(".cap-seq")).to_have_text(str(seqs[0]))
    expect(sched.nth(1).locator(".cap-value")).to_have_text("7 %")
    expect(sched.nth(1).locator(".cap-seq")).to_have_text(str(seqs[1]))
    # the pending change's date is never shown beside the cap in force
    expect(now).not_to_contain_text("2027-06-01")
