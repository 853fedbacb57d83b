"""No personal data reaches the journal, the snapshots or the logs (docs/PRIVACY.md).

A platform holds rows naming people (names, phone numbers, e-mails, its own user ids). It
builds a batch with the client library (``exchange.client.build_batch``: keyed action ids,
personal fields dropped) and submits it with ``PlatformClient`` over HTTP to a real server
with a SQLite journal on loopback (``POST /api/v1/registry/batches``, the demo platform's
key); the same batch again (refused as double counted) and a bad one (unknown action type);
a verifier approves the first, and the batch views and the public totals are read. Then a
snapshot, a stop (final snapshot), and a scan of every file in the data directory, of every
HTTP answer and of everything logged for each raw identifier in the usual spellings: as typed,
digits only, without the country code, lower and upper case, JSON-escaped, and its plain
unkeyed SHA-256 or MD5 (the classic "anonymisation" anyone can reverse by trying numbers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exchange.client import ExchangeError, PlatformClient, build_batch, hash_action_id
from exchange.app.config import load_settings
from exchange.app.server import STATE_KEY, create_app

PLATFORM = "GREENWAY"  # the demo market's platform and its API key
PLATFORM_API_KEY = "platform-demo-key"
OPERATOR, VERIFIER = "operator-demo-key", "verifier-demo-key"
PLATFORM_KEY = secrets.token_bytes(32)  # the hashing key: the platforms', never the exchange's

ROWS = [
    {
        "name": "张伟",
        "phone": "+86 138 0013 8000",
        "email": "wei.zhang@example.com",
        "user_id": "wx-oA1b2C3d4E5f",
        "action_type": "metro_trip_km",
        "quantity": 12,
        "date": "2026-03-01",
    },
    {
        "name": "李娜",
        "phone": "+86 139 1111 2222",
        "email": "Na.Li@Example.com",
        "user_id": "wx-oZ9y8X7w6V5u",
        "action_type": "bike_share_km",
        "quantity": 30,
        "date": "2026-03-02",
    },
    {
        "name": "Zoé Martin",
        "phone": "+33 6 12 34 56 78",
        "email": "zoe.martin@example.fr",
        "user_id": "wx-oQ1w2E3r4T5y",
        "action_type": "metro_trip_km",
        "quantity": 7,
        "date": "2026-04-11",
    },
]


def spellings(raw: str) -> set[str]:
    """A raw identifier and the forms it is commonly stored in."""
    out = {
        raw,
        raw.lower(),
        raw.upper(),
        raw.replace(" ", ""),
        json.dumps(raw)[1:-1],  # JSON-escaped (\\u5f20\\u4f1f)
        hashlib.sha256(raw.encode()).hexdigest(),
        hashlib.md5(raw.encode()).hexdigest(),
    }
    digits = re.sub(r"\D", "", raw)
    if len(digits) >= 7:  # a phone number: digits only, and without the country code
        out |= {digits, digits[2:], "+" + digits, hashlib.sha256(digits.encode()).hexdigest()}
    for part in raw.split():  # a given name or family name alone
        if len(part) >= 3 and not part.isdigit() and not part.startswith("+"):
            out.add(part)
    return {s for s in out if len(s) >= 3}


PERSONAL = sorted(
    {s for r in ROWS for f in ("name", "phone", "email", "user_id") for s in spellings(r[f])}
)


def scan(blob: bytes) -> list[str]:
    low = blob.lower()
    return [s for s in PERSONAL if s.encode("utf-8").lower() in low]


async def http(srv_url, method, path, body=None, key=OPERATOR):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, srv_url + "/api/v1" + path, json=body, headers=headers) as r:
            return r.status, await r.text()


async def test_no_raw_identifier_in_journal_snapshots_or_logs(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    app = create_app(load_settings(), data)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    url = f"http://127.0.0.1:{srv.port}"
    st = app[STATE_KEY]
    answers: list[str] = []  # every HTTP answer, scanned too
    try:
        body = build_batch(PLATFORM_KEY, ROWS, 2026, platform_id=PLATFORM)
        assert scan(json.dumps(body, ensure_ascii=False).encode()) == []
        # an action id is the keyed hash of the action's identity: person, type, day
        assert [r[0] for r in body["records"]] == [
            hash_action_id(
                PLATFORM_KEY, "\x1f".join((r["user_id"], r["action_type"], str(r["date"]), ""))
            )
            for r in ROWS
        ]

        async with PlatformClient(url, PLATFORM_API_KEY) as pc:
            result = await pc.submit_batch(body)
            answers.append(json.dumps(result, ensure_ascii=False))
            batch_id = next(
                e["batch_id"] for e in result["events"] if e["type"] == "action_batch_submitted"
            )
            # the same actions again: refused as double counted, naming no one
            with pytest.raises(ExchangeError) as e:
                await pc.submit_batch(body)
            assert e.value.code == "DOUBLE_COUNTED"
            answers.append(str(e.value))
            # a bad batch (an action type the table does not have): a clear error, no one named
            bad = build_batch(PLATFORM_KEY, [dict(ROWS[0], action_type="teleport")], 2026)
            with pytest.raises(ExchangeError) as e:
                await pc.submit_batch(bad)
            assert e.value.code == "UNKNOWN_ACTION_TYPE"
            answers.append(str(e.value))
        # a verifier approves: credits with serials to the platform; the public totals
        st_, text = await http(url, "POST", f"/registry/batches/{batch_id}/approve", {}, VERIFIER)
        assert st_ == 200, text
        for path, key in (
            ("/registry/batches", OPERATOR),
            (f"/registry/batches/{batch_id}", PLATFORM_API_KEY),
            ("/registry/carbon-inclusive/totals", None),
        ):
            st_, text = await http(url, "GET", path, key=key)
            assert st_ == 200, (path, text)
            answers.append(text)
        await st.runner.snapshot()
    finally:
        await srv.close()  # stops the runner: flush and a final snapshot

    assert scan("\n".join(answers).encode()) == []
    files = sorted(p for p in data.rglob("*") if p.is_file())
    assert any(p.name.startswith("journal") for p in files), files
    found = {str(p.relative_to(data)): scan(p.read_bytes()) for p in files}
    assert {k: v for k, v in found.items() if v} == {}
    # the journal did get the batch: its action ids are there
    journal = b"".join(p.read_bytes() for p in files if p.name.startswith("journal"))
    assert body["records"][0][0].encode() in journal

    out, err = capfd.readouterr()
    logged = "\n".join(
        [caplog.text, out, err] + [str(r.args) for r in caplog.records if r.args]
    ).encode()
    assert caplog.records  # the server did log (start-up, the journal): there was a log to scan
    assert scan(logged) == []
