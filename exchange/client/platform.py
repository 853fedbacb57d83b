"""The platform side of carbon-inclusive issuance: pseudonymous action ids, batches, upload.

A carbon-inclusive platform (an app that records people's low-carbon actions: bus rides, bike
trips, recycling) submits batches of those actions to the exchange's registry. The registry
must be able to tell that two records are the same action - on this platform or on another one
- so one action is never credited twice, and must learn nothing else about the person. So the
person's identity never leaves the platform: each record carries an *action id*, a keyed hash
of the action's identity (the person, the action type, the day, and the platform's own
reference of the action when it has one) under a key the platforms hold and the exchange does
not::

    action_id = HMAC-SHA256(key, PREFIX + NFC(person US action_type US date US action_ref))

* ``PREFIX`` (:data:`ACTION_ID_PREFIX`) separates this use of the key from any other use of
  it: a digest made for another purpose with the same key never equals an action id.
* NFC normalisation makes the same name typed on two keyboards (a precomposed "é" or "e" plus a
  combining accent) one identifier. Nothing else is changed (no case folding, no trimming).
* The key is the carbon-inclusive scheme's: every accredited platform holds it (so the same
  action recorded by two platforms hashes to the same id and the second claim is refused as
  ``DOUBLE_COUNTED``); the exchange never does, so nobody there can test a guessed phone number
  or name against an action id. A platform outside any scheme uses a key of its own.
* One record is one person's actions of one type on one day (rows of the same identity are
  summed): the day is the unit a person's action is credited in.

:func:`build_batch` turns the platform's own rows - which may hold a name, a phone number, an
e-mail, a user id - into the registry's batch body, keeping only ``[action_id, action_type,
quantity, date]``; every other field is dropped, and error messages name a row by its index,
never by its content. :class:`PlatformClient` posts a batch to
``POST /api/v1/registry/batches`` with the platform's API key.

    from exchange.client import PlatformClient, build_batch

    body = build_batch(key, rows, 2026, platform_id="GREENAPP")   # no personal data in it
    async with PlatformClient("http://127.0.0.1:8080", "platform-api-key") as pc:
        result = await pc.submit_batch(body)

docs/PRIVACY.md describes what the exchange stores and who may read it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
import unicodedata
from typing import Any, Iterable, Mapping

import aiohttp

__all__ = [
    "ACTION_ID_PREFIX",
    "MIN_KEY_BYTES",
    "hash_action_id",
    "build_batch",
    "PlatformClient",
    "BATCHES_PATH",
]

#: Domain separation: the bytes hashed are this prefix followed by the NFC-normalised UTF-8
#: raw identifier. Versioned, so a later scheme gives different ids on purpose.
ACTION_ID_PREFIX = b"carbon-exchange/carbon-inclusive/action-id/v1\x00"

#: A shorter platform key could be found by trying keys against a known person's action id.
MIN_KEY_BYTES = 16

BATCHES_PATH = "/api/v1/registry/batches"

US = "\x1f"  # unit separator between the parts of an action's identity

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def hash_action_id(key: bytes, raw_identifier: str) -> str:
    """The pseudonymous action id of a person on a platform: HMAC-SHA256 under the platform's
    ``key`` of :data:`ACTION_ID_PREFIX` + the NFC-normalised UTF-8 ``raw_identifier``, as 64
    lower-case hex digits. Deterministic: the same person on the same platform always gets the
    same id; another key gives an unrelated one."""
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError("the platform key is bytes (e.g. secrets.token_bytes(32))")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the platform key must be at least {MIN_KEY_BYTES} bytes")
    if not isinstance(raw_identifier, str):
        raise TypeError("the raw identifier is a str")
    if not raw_identifier:
        raise ValueError("the raw identifier is empty")
    msg = ACTION_ID_PREFIX + unicodedata.normalize("NFC", raw_identifier).encode("utf-8")
    return hmac.new(bytes(key), msg, hashlib.sha256).hexdigest()


def _date_text(v: Any, i: int) -> str:
    if isinstance(v, _dt.datetime):  # a datetime is a date too: take its calendar day
        return v.date().isoformat()
    if isinstance(v, _dt.date):
        return v.isoformat()
    if isinstance(v, str) and _DATE_RE.fullmatch(v):
        try:
            _dt.date.fromisoformat(v)
        except ValueError:
            pass
        else:
            return v
    raise ValueError(f"row {i}: date is not a date or a YYYY-MM-DD string")


def build_batch(
    key: bytes,
    rows: Iterable[Mapping[str, Any]],
    vintage: int,
    *,
    platform_id: str | None = None,
    id_field: str = "user_id",
    action_type_field: str = "action_type",
    quantity_field: str = "quantity",
    date_field: str = "date",
    ref_field: str | None = "action_ref",
) -> dict:
    """The registry's batch body from the platform's own rows.

    Each row is a mapping holding at least ``id_field`` (the person's raw identifier, e.g. the
    scheme's citizen id or a phone number), the action type, the quantity (a whole number of
    the action type's unit) and the date (a :class:`datetime.date` or ``"YYYY-MM-DD"``), and
    optionally ``ref_field`` (the action's own reference, e.g. a ticket number). Rows with the
    same person, type, day and reference are one action: their quantities are summed into one
    record. Every other field of a row (a name, an e-mail, ...) is dropped. The result::

        {"platform_id": ..., "vintage": 2026,
         "records": [[action_id, action_type, quantity, "YYYY-MM-DD"], ...]}

    (``platform_id`` only when given.) Business checks (known action type, date inside the
    vintage, ...) are the registry's; a malformed row raises :class:`ValueError` naming its
    index only, so a log of the error holds no personal data."""
    if isinstance(vintage, bool) or not isinstance(vintage, int):
        raise TypeError("vintage is an int, e.g. 2026")
    records: list = []
    index: dict[str, int] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {i}: a row is a mapping of field -> value")
        for f in (id_field, action_type_field, quantity_field, date_field):
            if f not in row:
                raise ValueError(f"row {i}: no field {f!r}")
        raw = row[id_field]
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)  # a numeric user id hashes as its decimal text
        if not isinstance(raw, str) or not raw:
            raise ValueError(f"row {i}: {id_field!r} is not a non-empty string")
        action_type = row[action_type_field]
        if not isinstance(action_type, str) or not action_type:
            raise ValueError(f"row {i}: {action_type_field!r} is not a non-empty string")
        qty = row[quantity_field]
        if isinstance(qty, bool) or not isinstance(qty, int):
            raise ValueError(f"row {i}: {quantity_field!r} is not a whole number")
        day = _date_text(row[date_field], i)
        ref = row.get(ref_field, "") if ref_field else ""
        if not isinstance(ref, str):
            ref = str(ref)
        ident = US.join((raw, action_type, day, ref))
        at = index.get(ident)
        if at is None:
            index[ident] = len(records)
            records.append([hash_action_id(key, ident), action_type, qty, day])
        else:
            records[at][2] += qty
    body: dict = {"vintage": vintage, "records": records}
    if platform_id is not None:
        body = {"platform_id": platform_id, **body}
    return body


class PlatformClient:
    """Posts batches to the registry over HTTP with the platform's API key.

        async with PlatformClient("http://127.0.0.1:8080", api_key) as pc:
            result = await pc.submit_batch(build_batch(key, rows, 2026, platform_id="P1"))

    An error reply raises :class:`~exchange.client.ExchangeError` with its stable code and
    the HTTP status as ``status``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "PlatformClient":
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call to ``/api/v1``-relative or absolute ``path``; the decoded result."""
        from . import ExchangeError

        own = self._session is None
        session = self._session or aiohttp.ClientSession(timeout=self.timeout)
        try:
            url = self.base_url + (path if path.startswith("/api/") else "/api/v1" + path)
            async with session.request(
                method, url, json=body, headers={"Authorization": f"Bearer {self.api_key}"}
            ) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    err = (data or {}).get("error") or {} if isinstance(data, dict) else {}
                    e = ExchangeError(err.get("code", f"HTTP_{r.status}"), err.get("message", ""))
                    e.status = r.status
                    raise e
                return data
        finally:
            if own:
                await session.close()

    async def submit_batch(self, body: dict) -> Any:
        """``POST /api/v1/registry/batches`` with a body from :func:`build_batch`."""
        return await self.request("POST", BATCHES_PATH, body)
