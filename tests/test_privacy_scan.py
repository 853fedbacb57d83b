"""No personal data reaches the journal, the snapshots or the logs (docs/PRIVACY.md).

A platform holds rows naming people (names, phone numbers, e-mails, its own user ids). It
builds a batch with the client library (``exchange.client.build_batch``: keyed action ids,
personal fields dropped) and submits it to a real server with a SQLite journal on loopback
(through the gateway's command path, as the HTTP route does);
the same batch again (refused as double counted: the refusal travels through the logs and the
journal too). Then a snapshot, a stop (final snapshot), and a scan of every file in the data
directory and of everything logged for each raw identifier in the usual spellings: as typed,
digits only, without the country code, lower and upper case, JSON-escaped, and its plain
unkeyed SHA-256 (the classic "anonymisation" that anyone can reverse by trying numbers).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets

import pytest
from aiohttp.test_utils import TestServer

from exchange.client import build_batch, hash_action_id
from exchange.config import load_settings
from exchange.registry.commands import (
    ConfigureRegistry, RegisterPlatform, SetConversionFactor, SubmitActionBatch,
)
from exchange.server.app import STATE_KEY, create_app
from exchange.server.protocol import ProtocolError

PLATFORM = "GREENAPP"
PLATFORM_KEY = secrets.token_bytes(32)  # held by the platform only

ROWS = [
    {"name": "张伟", "phone": "+86 138 0013 8000", "email": "wei.zhang@example.com",
     "user_id": "wx-oA1b2C3d4E5f", "action_type": "bus_ride", "quantity": 12,
     "date": "2026-03-01"},
    {"name": "李娜", "phone": "+86 139 1111 2222", "email": "Na.Li@Example.com",
     "user_id": "wx-oZ9y8X7w6V5u", "action_type": "bike_trip", "quantity": 30,
     "date": "2026-03-02"},
    {"name": "Zoé Martin", "phone": "+33 6 12 34 56 78", "email": "zoe.martin@example.fr",
     "user_id": "wx-oQ1w2E3r4T5y", "action_type": "bus_ride", "quantity": 7,
     "date": "2026-04-11"},
]


def spellings(raw: str) -> set[str]:
    """A raw identifier and the forms it is commonly stored in."""
    out = {raw, raw.lower(), raw.upper(), raw.replace(" ", ""),
           json.dumps(raw)[1:-1],  # JSON-escaped (\\u5f20\\u4f1f)
           hashlib.sha256(raw.encode()).hexdigest(), hashlib.md5(raw.encode()).hexdigest()}
    digits = re.sub(r"\D", "", raw)
    if len(digits) >= 7:  # a phone number: digits only, and without the country code
        out |= {digits, digits[2:], "+" + digits, hashlib.sha256(digits.encode()).hexdigest()}
    for part in raw.split():  # a given name or family name alone
        if len(part) >= 3 and not part.isdigit() and not part.startswith("+"):
            out.add(part)
    return {s for s in out if len(s) >= 3}


PERSONAL = sorted({s for r in ROWS for f in ("name", "phone", "email", "user_id")
                   for s in spellings(r[f])})


def scan(blob: bytes) -> list[str]:
    low = blob.lower()
    return [s for s in PERSONAL if s.encode("utf-8").lower() in low]


async def test_no_raw_identifier_in_journal_snapshots_or_logs(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    s = load_settings()
    app = create_app(s, data)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    st = app[STATE_KEY]
    try:
        gw, ex = st.gateway, st.exchange
        # the registry and the platform (genesis may already have configured the registry)
        reg = ex.modules["registry"]
        if reg.params is None:
            await gw.submit_checked(ConfigureRegistry())
        if PLATFORM not in reg.platforms:
            await gw.submit_checked(RegisterPlatform(platform_id=PLATFORM, name="Green App"))
        for at, unit, g in (("bus_ride", "km", 60), ("bike_trip", "km", 110)):
            await gw.submit_checked(SetConversionFactor(action_type=at, unit=unit,
                                                        g_co2e_per_unit=g))

        body = build_batch(PLATFORM_KEY, ROWS, 2026, platform_id=PLATFORM)
        assert scan(json.dumps(body, ensure_ascii=False).encode()) == []
        # an action id is the keyed hash of the action's identity: person, type, day
        assert [r[0] for r in body["records"]] == [
            hash_action_id(PLATFORM_KEY, "\x1f".join(
                (r["user_id"], r["action_type"], str(r["date"]), ""))) for r in ROWS]
        cmd = SubmitActionBatch(platform_id=body["platform_id"], vintage=body["vintage"],
                                records=tuple(tuple(r) for r in body["records"]))
        await gw.submit_checked(cmd)
        assert len(reg.batches) >= 1
        # the same actions again: refused (double counted), and the refusal names no one
        with pytest.raises(ProtocolError) as e:
            await gw.submit_checked(SubmitActionBatch(
                platform_id=PLATFORM, vintage=2026,
                records=tuple(tuple(r) for r in body["records"])))
        assert e.value.code == "DOUBLE_COUNTED" and scan(str(e.value).encode()) == []

        await st.runner.snapshot()
    finally:
        await srv.close()  # stops the runner: flush and a final snapshot

    files = sorted(p for p in data.rglob("*") if p.is_file())
    assert any(p.name.startswith("journal") for p in files), files
    found = {str(p.relative_to(data)): scan(p.read_bytes()) for p in files}
    assert {k: v for k, v in found.items() if v} == {}
    # the journal did get the batch: its action ids are there
    journal = b"".join(p.read_bytes() for p in files if p.name.startswith("journal"))
    assert body["records"][0][0].encode() in journal

    out, err = capfd.readouterr()
    logged = "\n".join([caplog.text, out, err] + [
        str(r.args) for r in caplog.records if r.args]).encode()
    assert scan(logged) == []
