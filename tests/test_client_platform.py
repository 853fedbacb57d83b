"""The platform-side client library: keyed action ids and batches without personal data."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import unicodedata

import pytest

from exchange.client import PlatformClient, build_batch, hash_action_id
from exchange.client.platform import ACTION_ID_PREFIX

KEY_A = b"platform-A-secret-key-0123456789"
KEY_B = b"platform-B-secret-key-0123456789"

ROWS = [
    {
        "name": "张伟",
        "phone": "+86 138 0013 8000",
        "email": "wei.zhang@example.com",
        "user_id": "u-1001",
        "action_type": "bus_ride",
        "quantity": 12,
        "date": "2026-03-01",
    },
    {
        "name": "李娜",
        "phone": "+86 139 1111 2222",
        "email": "na.li@example.com",
        "user_id": "u-1002",
        "action_type": "bike_trip",
        "quantity": 3,
        "date": dt.date(2026, 3, 2),
    },
    {
        "name": "张伟",
        "phone": "+86 138 0013 8000",
        "email": "wei.zhang@example.com",
        "user_id": "u-1001",
        "action_type": "recycling",
        "quantity": 5,
        "date": "2026-03-03",
    },
]
PERSONAL = [
    "张伟",
    "李娜",
    "+86 138 0013 8000",
    "8613800138000",
    "13800138000",
    "wei.zhang@example.com",
    "na.li@example.com",
    "u-1001",
    "u-1002",
]


def test_action_id_is_hmac_sha256_of_prefix_and_nfc_identifier():
    expected = hmac.new(KEY_A, ACTION_ID_PREFIX + "u-1001".encode(), hashlib.sha256).hexdigest()
    assert hash_action_id(KEY_A, "u-1001") == expected
    assert len(expected) == 64 and expected == expected.lower()
    # deterministic
    assert hash_action_id(KEY_A, "u-1001") == hash_action_id(KEY_A, "u-1001")
    # not the plain HMAC of the identifier: the prefix separates this use of the key
    assert expected != hmac.new(KEY_A, b"u-1001", hashlib.sha256).hexdigest()


def test_nfc_normalisation_makes_one_identifier_of_two_spellings():
    composed, decomposed = "Zoé", "Zoe\u0301"
    assert composed != decomposed
    assert unicodedata.normalize("NFC", decomposed) == composed
    assert hash_action_id(KEY_A, composed) == hash_action_id(KEY_A, decomposed)
    # nothing else is normalised: the platform picks a stable identifier
    assert hash_action_id(KEY_A, "zoé") != hash_action_id(KEY_A, composed)


def ident(person, action_type, day, ref=""):
    return "\x1f".join((person, action_type, day, ref))


def test_one_action_one_id_on_every_platform_holding_the_key():
    a1 = build_batch(KEY_A, ROWS, 2026)["records"]
    a2 = build_batch(KEY_A, list(reversed(ROWS)), 2026)["records"]
    b = build_batch(KEY_B, ROWS, 2026)["records"]
    # an action is the person, its type and its day: the same person's two actions differ
    assert a1[0][0] != a1[2][0] and a1[0][0] != a1[1][0]
    # the same action recorded in another batch (or by another platform with the scheme key)
    # gets the same id, so the registry refuses the second claim
    assert a1[0][0] == a2[2][0]
    assert {r[0] for r in a1}.isdisjoint({r[0] for r in b})  # a key outside the scheme


def test_rows_of_one_action_are_one_record_with_the_quantities_summed():
    rows = [dict(ROWS[0]), dict(ROWS[0], quantity=8), dict(ROWS[0], action_ref="T-2")]
    recs = build_batch(KEY_A, rows, 2026)["records"]
    assert recs == [
        [
            hash_action_id(KEY_A, ident("u-1001", "bus_ride", "2026-03-01")),
            "bus_ride",
            20,
            "2026-03-01",
        ],
        [
            hash_action_id(KEY_A, ident("u-1001", "bus_ride", "2026-03-01", "T-2")),
            "bus_ride",
            12,
            "2026-03-01",
        ],
    ]


def test_build_batch_keeps_only_the_hashed_id_type_quantity_and_date():
    body = build_batch(KEY_A, ROWS, 2026, platform_id="GREENAPP")
    assert list(body) == ["platform_id", "vintage", "records"]
    assert body["platform_id"] == "GREENAPP" and body["vintage"] == 2026
    assert body["records"] == [
        [
            hash_action_id(KEY_A, ident("u-1001", "bus_ride", "2026-03-01")),
            "bus_ride",
            12,
            "2026-03-01",
        ],
        [
            hash_action_id(KEY_A, ident("u-1002", "bike_trip", "2026-03-02")),
            "bike_trip",
            3,
            "2026-03-02",
        ],
        [
            hash_action_id(KEY_A, ident("u-1001", "recycling", "2026-03-03")),
            "recycling",
            5,
            "2026-03-03",
        ],
    ]
    text = json.dumps(body, ensure_ascii=False)
    for raw in PERSONAL:
        assert raw not in text
    assert "platform_id" not in build_batch(KEY_A, ROWS, 2026)


def test_build_batch_can_hash_another_identifier_field():
    body = build_batch(KEY_A, ROWS[:1], 2026, id_field="phone")
    assert body["records"][0][0] == hash_action_id(
        KEY_A, ident("+86 138 0013 8000", "bus_ride", "2026-03-01")
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"action_type": "bus_ride", "quantity": 1, "date": "2026-01-01"}, "no field 'user_id'"),
        (
            {"user_id": "", "action_type": "bus_ride", "quantity": 1, "date": "2026-01-01"},
            "not a non-empty string",
        ),
        (
            {"user_id": "x", "action_type": "bus_ride", "quantity": 1.5, "date": "2026-01-01"},
            "not a whole number",
        ),
        (
            {"user_id": "x", "action_type": "bus_ride", "quantity": 1, "date": "2026-02-30"},
            "not a date",
        ),
        (
            {"user_id": "x", "action_type": "", "quantity": 1, "date": "2026-01-01"},
            "not a non-empty string",
        ),
    ],
)
def test_malformed_rows_are_refused_by_index_without_their_content(bad, message):
    bad = {"name": "张伟", "phone": "+86 138 0013 8000", **bad}
    with pytest.raises(ValueError) as e:
        build_batch(KEY_A, [ROWS[0], bad], 2026)
    assert "row 1" in str(e.value) and message in str(e.value)
    for raw in ("张伟", "+86 138 0013 8000"):
        assert raw not in str(e.value)


def test_keys_too_short_or_not_bytes_are_refused():
    with pytest.raises(ValueError):
        hash_action_id(b"short", "u-1")
    with pytest.raises(TypeError):
        hash_action_id("a text key is not a key", "u-1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hash_action_id(KEY_A, "")


async def test_platform_client_posts_the_batch_with_its_key():
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    seen = []

    async def batches(request):
        seen.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({"seq": 7, "events": []})

    async def refuse(request):
        return web.json_response(
            {"ok": False, "error": {"code": "UNKNOWN_ACTION_TYPE", "message": "no such type"}},
            status=400,
        )

    app = web.Application()
    app.router.add_post("/api/v1/registry/batches", batches)
    app.router.add_post("/api/v1/registry/refuse", refuse)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        body = build_batch(KEY_A, ROWS, 2026, platform_id="GREENAPP")
        async with PlatformClient(f"http://127.0.0.1:{srv.port}", "plat-key") as pc:
            assert await pc.submit_batch(body) == {"seq": 7, "events": []}
            from exchange.client import ExchangeError

            with pytest.raises(ExchangeError) as e:
                await pc.request("POST", "/registry/refuse", {})
            assert e.value.code == "UNKNOWN_ACTION_TYPE" and e.value.status == 400
        assert seen == [("Bearer plat-key", body)]
    finally:
        await srv.close()
