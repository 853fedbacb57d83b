"""One set of units for people (exchange/present.py, docs/PROTOCOL.md "Units").

Everything a person or a client reads shows CNY decimal strings, tonnes, percentages and ISO-8601
times with the zone's offset; fen, basis points, ppm and nanoseconds stay inside the core and the
journal. These tests walk every HTTP route's JSON over a served demo market on loopback (after
commands that fill the compliance, rules, registry and fund read sides), and read the CLI's
output and the cap error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from fractions import Fraction
from pathlib import Path

import pytest

from exchange import present as P
from exchange.core.units import UnitError

ROOT = Path(__file__).resolve().parent.parent
OP = "operator-demo-key"
VERIFIER = "verifier-demo-key"
BAD_SUFFIXES = ("_fen", "_bps", "_ppm", "_ts", "_ns", "_exact")
NS_SIZED = 10**15  # no count, quantity or id of the demo market comes near: a time in ns
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d:\d\d$")


# ------------------------------------------------------------------------- the module
def test_present_renames_by_suffix_and_converts():
    out = P.present(
        {
            "average_price_fen": 8540,
            "cash_fen": 997436719,
            "deadline_ts": 1830211200000000000,
            "cap_bps": 500,
            "sub_caps_bps": {"PHCER": 250},
            "phi_ppm": 1_000_000,
            "emissions_t_co2_exact": "493416000000/3000000",
            "qty": 1500,
            "rows": [{"ts": 0, "limit_fen": None}],
        }
    )
    assert out == {
        "average_price": "85.40",
        "cash": "9974367.19",
        "deadline_at": "2027-12-31T08:00:00+08:00",
        "cap_pct": "5.00",
        "sub_caps_pct": {"PHCER": "2.50"},
        "phi": "1.000000",
        "emissions_t_co2": "164472.000000",
        "qty": 1500,
        "rows": [{"at": "1970-01-01T08:00:00+08:00", "limit": None}],
    }


def test_present_keeps_the_authors_form_and_refuses_two_keys_that_would_be_one():
    assert P.present({"share_ppm": 300_000, "share": "0.3"}) == {"share": "0.3"}
    with pytest.raises(P.PresentError):
        P.present({"close_ts": 1, "close_ns": 1})


def test_exact_fractions_round_half_even_to_six_places():
    assert P.exact("1/3") == "0.333333"
    assert P.exact(Fraction(5, 2_000_000)) == "0.000002"  # 2.5e-6: half to even
    assert P.exact(Fraction(7, 2_000_000)) == "0.000004"
    assert P.exact("-5/2") == "-2.500000"


def test_ratios_fixed_by_the_suffix_rule_shortest_where_a_view_writes_them():
    assert [P.ratio(p) for p in (1_000_000, 350_000, -500_000)] == [
        "1.000000",
        "0.350000",
        "-0.500000",
    ]
    assert [P.ratio_text(p) for p in (1_000_000, 700_000, 1_067_777, 1_200 * 10**6, -500_000)] == [
        "1",
        "0.7",
        "1.067777",
        "1200",
        "-0.5",
    ]


def test_times_parse_back_and_need_a_zone():
    ns = P.parse_time("2027-12-31T00:00:00+08:00")
    assert P.time_iso(ns) == "2027-12-31T00:00:00+08:00"
    assert P.parse_time("2027-12-30T16:00:00Z") == ns
    assert P.parse_time("2027-12-31") == ns  # midnight in the market's zone
    with pytest.raises(UnitError):
        P.parse_time("2027-12-31T00:00:00")


def test_cli_text_is_never_a_python_repr():
    assert P.text({"PHCER": 50}) == "PHCER=50"
    assert P.text((("STEEL1", 766800), ("SME1", 1789200))) == "STEEL1: 766800, SME1: 1789200"


def test_a_share_refusal_speaks_percent():
    from exchange.compliance.fund import ConfigureSmeFund
    from test_compliance import base_market

    m = base_market()
    r = m.rejects(ConfigureSmeFund(penalty_to_fund_bps=10_001), "BAD_PARAMETER")
    assert "100.01 %" in r.message and "bps" not in r.message


# ------------------------------------------------------------------------- a served market
class Served:
    """``python -m exchange serve`` on a free loopback port with a fresh data directory."""

    def __init__(self, data_dir: Path):
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = data_dir.parent / "server.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
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
                    str(data_dir),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.port = 0
        end = time.monotonic() + 60
        while time.monotonic() < end and self.proc.poll() is None:
            m = re.search(r"^listening on [\d.]+:(\d+)", self.log.read_text(), re.M)
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.1)
        if not self.port:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log.read_text()[-4000:])
        self.base = f"http://127.0.0.1:{self.port}/api/v1"

    def call(self, method: str, path: str, body=None, key: str = OP):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("units") / "data")
    yield s
    s.stop()


def _core_units(value, path: str = "") -> list[str]:
    """Where a JSON value still speaks the core's units: a key with a core suffix, or an
    integer the size of a time in ns."""
    bad = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and k.endswith(BAD_SUFFIXES):
                bad.append(f"{path}.{k}")
            bad += _core_units(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad += _core_units(v, f"{path}[{i}]")
    elif type(value) is int and abs(value) >= NS_SIZED:
        bad.append(f"{path} = {value}")
    return bad


def _times(value, out: list) -> list:
    if isinstance(value, dict):
        for k, v in value.items():
            if (k == "at" or k.endswith("_at")) and isinstance(v, str):
                out.append(v)
            _times(v, out)
    elif isinstance(value, list):
        for v in value:
            _times(v, out)
    return out


# commands that fill the read sides before the walk (each must succeed)
SETUP = [
    ("PUT", "/instruments/CEA-2026/band", {"band_pct": "10"}),
    ("POST", "/segments", {"name": "pilot", "tick": "0.05", "fee_pct": "0.05"}),
    ("POST", "/deposits", {"account": "SME1", "amount": "1000.00"}),
    (
        "POST",
        "/sub-quotas",
        {
            "parent": "STEEL1",
            "sme": "SME1",
            "instrument": "CEA-2026",
            "qty": 100,
            "revenue_share": "0.3",
        },
    ),
    (
        "PUT",
        "/compliance/periods/2026/cap",
        {"cap_pct": "5", "sub_caps_pct": {"PHCER": "2"}, "effective": "2099-01-01"},
    ),
    (
        "PUT",
        "/compliance/sme-fund/params",
        {
            "penalty_to_fund_pct": "30",
            "auction_to_fund_pct": "0",
            "sme_period_limit": "50000.00",
            "period_limit": None,
        },
    ),
    ("POST", "/compliance/sme-fund/deposits", {"amount": "100000.00", "ref": "budget"}),
    (
        "POST",
        "/compliance/sme-fund/applications",
        {
            "period": 2026,
            "amount": "1000.00",
            "project": "kiln",
            "sme": "SME1",
            "verified_abatement_t": 10,
        },
    ),
    ("POST", "/compliance/periods/2026/cap/what-if", {"cap_pct": "8"}),
]

# values for the path parameters of the GET routes
PATH_VALUES = {
    "firm_id": "STEEL1",
    "period": "2026",
    "instrument": "CEA-2026",
    "segment": "main",
    "symbol": "CEA-2026",
    "chain_id": "steel",
    "application_id": "1",
    "offset_type": "PHCER",
}


def test_every_route_answers_in_units_for_people(served):
    results = []
    for method, path, body in SETUP:
        status, raw = served.call(method, path, body)
        assert status < 300, (path, status, raw[:400])
        results.append((f"{method} {path}", json.loads(raw)))
    status, raw = served.call("GET", "/openapi.json")
    doc = json.loads(raw)
    # ids the market made: a key's, a carbon-inclusive batch's (when the demo has one)
    values = dict(PATH_VALUES)
    values["key_id"] = json.loads(served.call("GET", "/api-keys")[1])["keys"][0]["key_id"]
    status, raw = served.call("GET", "/registry/batches")
    batches = json.loads(raw).get("batches") if status == 200 else None
    if batches:
        values["batch_id"] = batches[0]["batch_id"]
    walked, failed = 0, []
    for path, ops in doc["paths"].items():
        if "get" not in ops or path.endswith("/openapi.json"):
            continue
        rel = path[len("/api/v1") :]
        names = re.findall(r"\{(\w+)\}", rel)
        if any(n not in values for n in names):
            # an id the walk cannot know (a key, a batch, a project): its list route is walked
            continue
        url = rel
        for n in names:
            url = url.replace("{" + n + "}", values[n])
        status, raw = served.call("GET", url)
        if status >= 500:
            failed.append(url)
        if status == 200:
            walked += 1
            results.append(("GET " + url, json.loads(raw)))
    assert failed == []
    assert walked >= 30
    bad = {where: _core_units(r) for where, r in results if _core_units(r)}
    assert bad == {}
    segments = dict(results)["GET /segments"]["segments"]
    pilot = next(x for x in segments if x["name"] == "pilot")
    assert (pilot["tick"], pilot["fee_pct"]) == ("0.05", "0.05")  # in as out
    times = [t for _, r in results for t in _times(r, [])]
    assert times and all(ISO.match(t) for t in times), [t for t in times if not ISO.match(t)]


def test_command_results_carry_cny_and_iso_times(served):
    status, raw = served.call("POST", "/deposits", {"account": "SME2", "amount": "12.34"})
    assert status == 200
    events = json.loads(raw)["events"]
    posting = next(e for e in events if e["type"] == "posting")
    assert posting["amount"] == "12.34"


def test_statement_csv_has_no_core_units(served):
    status, raw = served.call("GET", "/compliance/statements/STEEL1/2026?format=csv")
    assert status == 200
    fields = [line.split(",", 1)[0] for line in raw.decode().splitlines()[1:]]
    assert not [f for f in fields if re.search(r"_(fen|bps|ppm|ts|ns|exact)(\W|$)", f)]
    status, raw = served.call("GET", "/compliance/periods/2026/summary?format=csv")
    head = raw.decode().splitlines()[0]
    assert "_fen" not in head and "penalty" in head


# ------------------------------------------------------------------------- the command line
def test_cli_output_has_no_reprs_bps_or_ns(capsys):
    from exchange.cli import main

    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "proceeds split STEEL1 7668.00, SME1 17892.00" in out
    for args in (
        ["report", "firm", "STEEL1", "--period", "2026", "--demo"],
        ["report", "compliance", "--period", "2026", "--demo"],
        ["report", "what-if", "--period", "2026", "--cap-pct", "3", "--demo"],
    ):
        assert main(args) == 0
        out += capsys.readouterr().out
    assert "offset cap 5 %, PHCER 2 %" in out
    assert "{'" not in out and "((" not in out and "bps" not in out
    assert not re.search(r"\d{16,}", out)  # no time in ns
    assert (
        main(
            [
                "report",
                "what-if",
                "--period",
                "2026",
                "--cap-pct",
                "3",
                "--demo",
                "--format",
                "json",
            ]
        )
        == 0
    )
    wi = json.loads(capsys.readouterr().out)
    assert _core_units(wi) == [] and ISO.match(wi["as_of_at"])


def test_events_go_to_people_and_back():
    """A client that rebuilds the core's events from command results (the networked
    simulation) gets them back exactly, times to the microsecond."""
    from exchange.core.events import (
        BookUpdate,
        DayEnded,
        ExecutionReport,
        MarketState,
        Posting,
        SubQuotaCreated,
        Trade,
        encode_event,
    )

    ts = 1_795_378_000_123_456_000
    evs = [
        ExecutionReport(
            "CEMENT1",
            6,
            "c-1",
            "CEA-2026",
            "main",
            "buy",
            "trade",
            "partially_filled",
            8540,
            1500,
            1000,
            8540,
            1000,
            500,
            None,
            1,
            4270,
            "taker",
            ts,
        ),
        Trade(
            1,
            "CEA-2026",
            "sme",
            8520,
            300,
            "POWER1",
            "SME1",
            7,
            8,
            "buy",
            0,
            0,
            (("STEEL1", 766800), ("SME1", 1789200)),
            ts,
        ),
        Posting("CNY", "@bank", "SME1", 1234, "deposit"),
        Posting("CEA-2026", "STEEL1", "SME1", 501, "sub_quota:3"),
        MarketState("CEA-2026", False, 8500, 500),
        DayEnded(3, (("CEA-2026", 8506),), 2),
        BookUpdate("CEA-2026", "main", 5, (("sell", 8540, 0), ("buy", 8540, 500))),
        SubQuotaCreated(3, "STEEL1", "SME1", "CEA-2026", 501, 600_000, "bank", "parent"),
    ]
    for ev in evs:
        shown = P.present_event(encode_event(ev))
        assert _core_units(shown) == [], shown
        back = type(ev)(**P.event_fields_from_people(shown, ev._FIELDS))
        # (JSON has no tuples: compare as JSON)
        assert json.loads(json.dumps(encode_event(back))) == json.loads(
            json.dumps(encode_event(ev))
        ), (shown, back)


def test_data_keys_are_never_renamed():
    # an instrument, a firm id: data, whatever it ends with
    assert P.present({"holdings": {"CEA-2026": 5, "FIRM_ts": 3}, "cash_fen": 100}) == {
        "holdings": {"CEA-2026": 5, "FIRM_ts": 3},
        "cash": "1.00",
    }
