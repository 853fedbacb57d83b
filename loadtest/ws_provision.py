"""Create funded firms for the load through the operator HTTP API (``/api/v1``).

Per firm: ``POST /firms`` (register), ``POST /deposits`` (cash), ``POST /issuance``
(allowances of the load's instrument), ``POST /api-keys`` (a firm key, returned once). Firm ids
carry a random tag so a running server can be provisioned again without clashes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .ws_target import http_json

PREFIX = "/api/v1"


class ProvisionError(RuntimeError):
    pass


def _call(base: str, token: str, method: str, path: str, body: dict) -> dict:
    status, res = http_json(method, base + PREFIX + path, body, token=token, timeout=30)
    if status >= 300:
        raise ProvisionError(f"{method} {path} {body} -> {status} {res}")
    return res or {}


def provision_firms(
    target,
    n: int,
    cash: str = "100000000.00",
    units: int = 10_000_000,
    instrument: str = "CEA-2026",
    threads: int = 4,
) -> list[str]:
    base = target.http_base
    tok = target.operator_key
    tag = os.urandom(3).hex().upper()

    def one(i: int) -> str:
        fid = f"LT{tag}{i:04d}"
        _call(
            base,
            tok,
            "POST",
            "/firms",
            {
                "firm_id": fid,
                "name": f"Load test firm {i}",
                "sector": "power",
                "size_class": "large",
            },
        )
        _call(base, tok, "POST", "/deposits", {"account": fid, "amount": cash})
        _call(
            base,
            tok,
            "POST",
            "/issuance",
            {
                "account": fid,
                "instrument": instrument,
                "qty": units,
                "source": "allocation",
                "ref": "loadtest",
            },
        )
        res = _call(
            base, tok, "POST", "/api-keys", {"role": "firm", "firm_id": fid, "label": "loadtest"}
        )
        return res["api_key"]

    with ThreadPoolExecutor(max(1, min(threads, n))) as pool:
        return list(pool.map(one, range(n)))
