"""Order entry has one model (exchange/server/order_model.py): the Python parser is built from
it, and the C gate, which takes plainly well-formed orders itself, is held to it here. Every
way to break the model (order_model.violations: each param missing, null, of each wrong type,
out of its bounds, outside its enum; an unknown key) goes through the gateway with the C gate
and with the Python path alone: the same reply (code and message), the same state, and none of
them reaches the core."""

from __future__ import annotations

import asyncio
import json

import pytest

from exchange.server import order_model as M
from exchange.server.protocol import AmendOrderParams, CancelOrderParams, PlaceOrderParams

from test_gate import HAVE_GATE, _run, _same

VALID = {
    "place_order": {"instrument": "CEA-2026", "side": "buy", "qty": 1, "price": "85.00"},
    "cancel_order": {"order_id": 41},
    "amend_order": {"client_order_id": "c1", "qty": 2},
}
CASES = [
    (method, what, params)
    for method, spec in M.ORDER_ENTRY.items()
    for what, params in M.violations(spec, VALID[method])
]


def _frames(method: str, params: dict) -> list:
    # session 0 is an authenticated firm (test_gate._run); one request, one tick
    return [[(0, json.dumps({"req_id": 7, "method": method, "params": params}))]]


def _reply(run: dict) -> dict:
    """The reply to the request among session 0's frames (server text frames: 0x81, length)."""
    data, k = b"".join(run["written"][0]), 0
    while k < len(data):
        n, k = data[k + 1], k + 2
        if n == 126:
            n, k = int.from_bytes(data[k : k + 2], "big"), k + 2
        msg, k = json.loads(data[k : k + n]), k + n
        if isinstance(msg, dict) and msg.get("req_id") == 7:
            return msg
    raise AssertionError(f"no reply in {data!r}")


@pytest.mark.parametrize("method,what,params", CASES, ids=[f"{m}: {w}" for m, w, _ in CASES])
def test_a_request_outside_the_model_is_refused_before_the_core(method, what, params):
    py = asyncio.run(_run(_frames(method, params), False, 10**6))
    r = _reply(py)
    assert r["ok"] is False and r["error"]["code"] == "INVALID_PARAMS", (what, r)
    name = "extra" if what == "an unknown key" else what.split(" ")[0]
    assert r["error"]["message"].startswith(f"{name}:"), (what, r)  # names the param
    assert py["metrics"]["commands"] == 0  # nothing went to the runner and the core


@pytest.mark.skipif(not HAVE_GATE, reason="exchange.server._accel is not built")
@pytest.mark.parametrize("method,what,params", CASES, ids=[f"{m}: {w}" for m, w, _ in CASES])
def test_the_c_gate_refuses_what_the_model_refuses_as_python_does(method, what, params):
    frames = _frames(method, params)
    c = asyncio.run(_run(frames, True, 10**6))
    py = asyncio.run(_run(frames, False, 10**6))
    _same(c, py)


@pytest.mark.skipif(not HAVE_GATE, reason="exchange.server._accel is not built")
@pytest.mark.parametrize("method", sorted(VALID))
def test_the_valid_requests_are_taken_alike(method):
    """The base of the violations is well-formed (so each case breaks one thing)."""
    frames = _frames(method, VALID[method])
    c = asyncio.run(_run(frames, True, 10**6))
    py = asyncio.run(_run(frames, False, 10**6))
    _same(c, py)
    if method == "place_order":
        assert _reply(py)["ok"] is True


def test_the_params_types_are_the_models():
    for td, spec in (
        (PlaceOrderParams, M.PLACE_ORDER),
        (CancelOrderParams, M.CANCEL_ORDER),
        (AmendOrderParams, M.AMEND_ORDER),
    ):
        assert list(td.__annotations__) == [p.name for p in spec]
        assert td.__required_keys__ == {p.name for p in spec if p.required}


def test_the_models_enums_are_the_cores():
    from exchange.core.commands import DAY, FOK, GTC, IOC, LIMIT, MARKET

    assert set(M.TIFS) == {GTC, DAY, IOC, FOK}
    assert set(M.ORDER_TYPES) == {LIMIT, MARKET}
    assert set(M.SIDES) == {"buy", "sell"}
