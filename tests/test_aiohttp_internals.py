"""The gateway's one use of aiohttp's private API, the direct text-frame path
(exchange/server/framing.py), is checked against the installed aiohttp: an upgrade that
changes it fails here, by name and version, instead of silently costing the order path its
speed. Without the path every connection takes aiohttp's public one, which must serve."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from exchange.client import ExchangeClient
from exchange.server import framing

from test_server import I, POWER, running_server


def test_the_direct_paths_aiohttp_internals_are_there():
    problem = framing.aiohttp_direct_problem()
    assert problem is None, problem
    assert framing.DIRECT, framing.DIRECT_PROBLEM


def test_a_changed_internal_is_named_with_the_aiohttp_version(monkeypatch):
    """What the check reports when aiohttp changes under it (so the failure above says what
    to update)."""
    monkeypatch.setattr(web.WebSocketResponse, "_post_start", lambda self, req, proto, writer: None)
    problem = framing.aiohttp_direct_problem()
    assert problem is not None
    assert f"aiohttp {aiohttp.__version__}" in problem
    assert "_post_start" in problem and "(request, protocol, writer)" in problem

    monkeypatch.delattr(web.WebSocketResponse, "_handle_ping_pong_exception")
    monkeypatch.setattr(framing, "_DirectReader", None)
    problem = framing.aiohttp_direct_problem()
    assert "_handle_ping_pong_exception is gone" in problem
    assert "has no WebSocketReader" in problem

    def broken(*a, **kw):
        raise TypeError("a changed constructor")

    monkeypatch.setattr(web.WebSocketResponse, "__init__", broken)
    problem = framing.aiohttp_direct_problem()  # reported, not raised: the server still starts
    assert f"aiohttp {aiohttp.__version__}: probing its internals raised TypeError" in problem


async def test_without_the_direct_path_aiohttps_public_one_serves(monkeypatch, tmp_path):
    """DIRECT off (what a changed aiohttp gives): a plain WebSocketResponse with aiohttp's
    own heartbeat; orders, replies and pushes as on the direct path."""
    monkeypatch.setattr(framing, "DIRECT", False)
    async with running_server(tmp_path) as server:
        gw = server.st.gateway
        async with ExchangeClient(server.ws_url, POWER) as c:
            assert (await c.ping())["pong"]
            [s] = gw.sessions
            assert s.ws.direct is False  # frames in through aiohttp's queue and `async for`
            assert s.ws.hb == gw.cfg.heartbeat_seconds
            await c.subscribe("executions")
            r = await c.place_order(I, "sell", 1, "86.00")
            assert r["order_status"] == "new"
            _ch, _seq, data = await c.next_push("executions")
            assert data["order_id"] == r["order_id"]


@pytest.fixture(autouse=True)
def _direct_restored():
    yield
    assert framing.DIRECT is (framing.DIRECT_PROBLEM is None)
