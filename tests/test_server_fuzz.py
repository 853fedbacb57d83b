"""Hypothesis-generated bad frames: every one gets an error reply, the connection stays open,
the server stays up and the core's state hash does not move."""

from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from test_server import OPERATOR, POWER, running_server

MAX_FRAME = 2048

# -------------------------------------------------------------------------- strategies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=12,
)
not_str = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
not_int = st.text(max_size=8) | st.floats() | st.booleans() | st.lists(st.integers(), max_size=2)
not_price = not_str.filter(lambda v: v is not None) | st.sampled_from(
    ["", "abc", "1.234", "-", "NaN", "Infinity", "1e400", "85,50", " "]
)

VALID_ORDER = {"instrument": "CEA-2026", "side": "sell", "qty": 1, "price": "86.00"}


@st.composite
def corrupted_order(draw):
    p = dict(VALID_ORDER)
    field = draw(
        st.sampled_from(
            ["instrument", "side", "qty", "price", "extra", "tif", "post_only", "client_order_id"]
        )
    )
    if field == "instrument":
        p["instrument"] = draw(not_str.filter(lambda v: v is not None))
    elif field == "side":
        p["side"] = draw(
            st.text(max_size=6).filter(lambda s: s not in ("buy", "sell"))
            | not_str.filter(lambda v: v is not None)
        )
    elif field == "qty":
        p["qty"] = draw(not_int | st.none())
    elif field == "price":
        p["price"] = draw(not_price)
    elif field == "tif":
        p["tif"] = draw(st.text(max_size=4).filter(lambda s: s not in ("GTC", "DAY", "IOC", "FOK")))
    elif field == "post_only":
        p["post_only"] = draw(st.text(max_size=3) | st.integers() | st.none())
    elif field == "client_order_id":
        p["client_order_id"] = draw(st.integers() | st.just("") | st.text(min_size=65, max_size=70))
    else:
        p[
            draw(
                st.text(min_size=1, max_size=8).filter(
                    lambda k: (
                        k not in VALID_ORDER
                        and k
                        not in ("segment", "order_type", "tif", "post_only", "client_order_id")
                    )
                )
            )
        ] = 1
    return p


@st.composite
def bad_request(draw):
    kind = draw(st.sampled_from(["order", "cancel", "amend", "method", "envelope", "sub"]))
    req_id = draw(st.integers(min_value=1, max_value=2**40))
    if kind == "order":
        return {"req_id": req_id, "method": "place_order", "params": draw(corrupted_order())}
    if kind == "cancel":
        return {
            "req_id": req_id,
            "method": "cancel_order",
            "params": draw(
                st.just({})
                | st.fixed_dictionaries({"order_id": not_int})
                | st.fixed_dictionaries({"client_order_id": not_str})
            ),
        }
    if kind == "amend":
        return {
            "req_id": req_id,
            "method": "amend_order",
            "params": {"order_id": 1, "qty": draw(not_int.filter(lambda v: v is not None))},
        }
    if kind == "method":
        return {
            "req_id": req_id,
            "method": draw(
                st.text(max_size=12).filter(
                    lambda m: m not in ("ping", "auth", "open_orders", "subscribe")
                )
            ),
        }
    if kind == "sub":
        return {
            "req_id": req_id,
            "method": "subscribe",
            "params": {
                "channel": draw(
                    st.text(min_size=1, max_size=20).filter(
                        lambda c: c not in ("executions", "balances")
                    )
                )
            },
        }
    env = draw(json_values)
    if isinstance(env, dict) and env.get("method") in (
        "place_order",
        "cancel_order",
        "amend_order",
        "cancel_all",
    ):
        env["method"] = "nope"
    return env


frames = st.one_of(
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.binary(max_size=100).map(lambda b: ("binary", b)),
    bad_request().map(lambda r: ("text", json.dumps(r))),
    st.lists(bad_request(), min_size=1, max_size=5).map(lambda rs: ("text", json.dumps(rs))),
    st.integers(MAX_FRAME + 1, 2 * MAX_FRAME).map(lambda n: ("text", "[" + " " * n + "]")),
)


# -------------------------------------------------------------------------- server in a thread


class ThreadServer:
    def __init__(self, tmp_path):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._cm = running_server(tmp_path, max_frame_bytes=MAX_FRAME)
        self.srv = asyncio.run_coroutine_threadsafe(self._cm.__aenter__(), self.loop).result(30)

    def close(self):
        asyncio.run_coroutine_threadsafe(self._cm.__aexit__(None, None, None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def thread_server(tmp_path_factory):
    ts = ThreadServer(tmp_path_factory.mktemp("fuzz"))
    yield ts.srv
    ts.close()


async def state_hash(srv) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(
            srv.http + "/api/v1/state", headers={"Authorization": f"Bearer {OPERATOR}"}
        ) as r:
            return (await r.json())["state_hash"]


class FuzzClient:
    """One authenticated websocket, driven from a loop in its own thread across examples."""

    def __init__(self, srv):
        self.srv = srv
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._open())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _open(self):
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(
            self.srv.ws_url, headers={"Authorization": f"Bearer {POWER}"}
        )

    async def _close(self):
        await self.ws.close()
        await self.http.close()

    def close(self):
        self.call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def send(self, batch) -> list:
        ws = self.ws
        for kind, data in batch:
            if kind == "binary":
                await ws.send_bytes(data)
            else:
                await ws.send_str(data)
        await ws.send_str('{"req_id": -1, "method": "ping"}')
        replies = []
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg, batch)
            r = orjson.loads(msg.data)
            if r.get("req_id") == -1:
                assert r["ok"] is True
                return replies
            replies.append(r)


@pytest.fixture(scope="module")
def fuzz(thread_server):
    before = asyncio.run(state_hash(thread_server))
    c = FuzzClient(thread_server)
    yield c
    assert not c.ws.closed
    c.close()
    assert asyncio.run(state_hash(thread_server)) == before


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(frames, min_size=1, max_size=6))
def test_bad_frames_leave_server_up_and_state_unchanged(thread_server, fuzz, batch):
    ex = thread_server.st.exchange
    seq = ex.last_seq
    replies = fuzz.call(fuzz.send(batch))
    assert replies, batch
    for r in replies:
        if r.get("ok"):  # only harmless requests can succeed (ping, open_orders, ...)
            continue
        assert r["ok"] is False and r["error"]["code"].isupper(), r
    assert not fuzz.ws.closed
    assert ex.last_seq == seq  # nothing reached the core (the full hash is checked at the end)


def test_limits_that_close_the_connection(thread_server):
    """A frame over 4x max_frame_bytes, or invalid UTF-8 in a text frame, closes that socket
    (1009 / 1007): the server and the state are untouched."""

    async def run():
        before = await state_hash(thread_server)
        async with aiohttp.ClientSession() as s:
            for payload, opcode in (
                (b"[" + b" " * (5 * MAX_FRAME) + b"]", aiohttp.WSMsgType.TEXT),
                (b'{"req_id": 1, "method": "\xff"}', aiohttp.WSMsgType.TEXT),
            ):
                ws = await s.ws_connect(thread_server.ws_url)
                await ws.send_frame(payload, opcode)
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                ), msg
                assert ws.close_code in (1007, 1009)
                await ws.close()
            ws = await s.ws_connect(thread_server.ws_url)
            await ws.send_str('{"req_id": 7, "method": "ping"}')
            assert orjson.loads((await ws.receive()).data)["ok"] is True
            await ws.close()
        assert await state_hash(thread_server) == before

    asyncio.run(run())


# ------------------------------------------------- order entry validators: fast path = pydantic
def _param_values(valid):
    """A key's value: absent (None returned as a marker), one of ``valid``, or anything."""
    return st.sampled_from([_ABSENT]) | st.sampled_from(valid) | json_values


_ABSENT = object()
_PRICES_OK = ["86.00", "85.1", "0.01", "999999999999999.99", "1", "86.001", "1e3", None]


@st.composite
def order_params(draw, fields):
    p = {}
    for key, valid in fields.items():
        v = draw(_param_values(valid))
        if v is not _ABSENT:
            p[key] = v
    if draw(st.integers(0, 9)) == 0:
        p[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return p


_PLACE_FIELDS = {
    "instrument": ["CEA-2026", "", "x" * 64, "x" * 65],
    "side": ["buy", "sell", "BUY"],
    "qty": [1, 0, -5, 10**12, True, 1.0],
    "segment": ["main", "sme", ""],
    "price": _PRICES_OK,
    "order_type": ["limit", "market", "stop"],
    "tif": ["GTC", "DAY", "IOC", "FOK", "gtc"],
    "post_only": [True, False, 0],
    "client_order_id": ["c-1", "", "x" * 64, "x" * 65, None],
}
_REF_FIELDS = {
    "order_id": [1, 0, None, True, "1"],
    "client_order_id": ["c-1", "", "x" * 64, "x" * 65, None],
}
_AMEND_FIELDS = dict(_REF_FIELDS, qty=[1, 0, None, True, 2.5], price=_PRICES_OK)


def _outcome(fn, p):
    from pydantic import ValidationError

    try:
        return fn(p)
    except (ValidationError, TypeError, ValueError) as e:
        return type(e).__name__


def _check_fast_equals_pydantic(p, fast, model, cls):
    from pydantic import TypeAdapter

    slow = TypeAdapter(model).validator.validate_python
    want = _outcome(lambda q: cls(account=None, **slow(q)), p)  # (parses and caches prices)
    got = _outcome(fast, p)
    assert got == want, (p, got, want)


@settings(max_examples=400, deadline=None)
@given(order_params(_PLACE_FIELDS))
def test_place_order_fast_validator_agrees_with_the_model(p):
    from exchange.core.commands import PlaceOrder
    from exchange.server.protocol import PlaceOrderParams, validate_place_order

    _check_fast_equals_pydantic(p, validate_place_order, PlaceOrderParams, PlaceOrder)


@settings(max_examples=300, deadline=None)
@given(order_params(_REF_FIELDS))
def test_cancel_order_fast_validator_agrees_with_the_model(p):
    from exchange.core.commands import CancelOrder
    from exchange.server.protocol import CancelOrderParams, validate_cancel_order

    _check_fast_equals_pydantic(p, validate_cancel_order, CancelOrderParams, CancelOrder)


@settings(max_examples=300, deadline=None)
@given(order_params(_AMEND_FIELDS))
def test_amend_order_fast_validator_agrees_with_the_model(p):
    from exchange.core.commands import AmendOrder
    from exchange.server.protocol import AmendOrderParams, validate_amend_order

    _check_fast_equals_pydantic(p, validate_amend_order, AmendOrderParams, AmendOrder)


def test_order_entry_fast_paths_are_taken(monkeypatch):
    """The load test's requests take the hand-checked paths (the agreement tests above would
    pass vacuously if everything fell through to pydantic)."""
    from exchange.server import protocol as P

    P.validate_place_order(
        {"instrument": "CEA-2026", "side": "buy", "qty": 1, "price": "85.55"}
    )  # parses and caches the price
    for name in ("_place_slow", "_cancel_slow", "_amend_slow"):
        monkeypatch.setattr(P, name, None)  # calling it would fail
    c = P.validate_place_order(
        {
            "instrument": "CEA-2026",
            "segment": "main",
            "side": "buy",
            "qty": 3,
            "price": "85.55",
            "tif": "IOC",
            "client_order_id": "w0-1",
        }
    )
    assert (
        c.instrument,
        c.side,
        c.qty,
        c.price,
        c.tif,
        c.client_order_id,
        c.order_type,
        c.post_only,
    ) == ("CEA-2026", "buy", 3, 8555, "IOC", "w0-1", "limit", False)
    c = P.validate_cancel_order({"client_order_id": "w0-1"})
    assert (c.order_id, c.client_order_id) == (None, "w0-1")
    assert P.validate_cancel_order({"order_id": 7}).order_id == 7
    c = P.validate_amend_order({"client_order_id": "w0-1", "qty": 2})
    assert (c.client_order_id, c.qty, c.price) == ("w0-1", 2, None)
    c = P.validate_amend_order({"client_order_id": "w0-1", "price": "85.55"})
    assert (c.qty, c.price) == (None, 8555)
