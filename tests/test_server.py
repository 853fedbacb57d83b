"""Integration tests: the real server (SQLite journal) on a free loopback port, real websocket
clients. The helpers here (``running_server``, ``op``) are reused by tests/test_server_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings, strategies as st

from exchange.client import ExchangeClient, ExchangeError
from exchange.app.config import load_settings
from exchange.app.server import STATE_KEY, create_app

OPERATOR = "operator-demo-key"
POWER, CEMENT, STEEL, SME1 = (
    "demo-key-power1",
    "demo-key-cement1",
    "demo-key-steel1",
    "demo-key-sme1",
)
I = "CEA-2026"


def settings_with(**server):
    s = load_settings()
    return s.model_copy(update={"server": s.server.model_copy(update=server)})


@contextlib.asynccontextmanager
async def running_server(tmp_path, **server):
    app = create_app(settings_with(**server), tmp_path / "data")
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    srv.ws_url = f"ws://127.0.0.1:{srv.port}/ws"
    srv.http = f"http://127.0.0.1:{srv.port}"
    srv.st = app[STATE_KEY]
    try:
        yield srv
    finally:
        await srv.close()


async def op(srv, method, path, body=None, key=OPERATOR):
    """An operator HTTP call: (status, json)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, srv.http + "/api/v1" + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def eventually(pred, timeout=3.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(0.01)
    return pred()


@pytest.fixture
async def server(tmp_path):
    async with running_server(tmp_path) as srv:
        yield srv


# ------------------------------------------------------------------------------ trading


async def test_two_firms_trade_and_see_reports_and_balances(server):
    url = server.ws_url
    async with (
        ExchangeClient(url, POWER) as seller,
        ExchangeClient(url, CEMENT) as buyer,
        ExchangeClient(url, STEEL) as watcher,
    ):
        for c in (seller, buyer):
            await c.subscribe("executions")
            await c.subscribe("balances")
        book = await watcher.subscribe_book(I, "main")
        await watcher.subscribe(f"trades:{I}")
        tick = await watcher.subscribe(f"ticker:{I}")
        assert tick["snapshot"]["instrument"] == I

        s = await seller.place_order(I, "sell", 300, "85.30", client_order_id="s-1")
        assert s["order_status"] == "new" and s["leaves_qty"] == 300
        b = await buyer.place_order(I, "buy", 200, "85.35", client_order_id="b-1")
        assert b["order_status"] == "filled" and b["cum_qty"] == 200

        # seller: new, then a maker fill at its own price
        _, _, new = await seller.next_push("executions")
        _, seq, fill = await seller.next_push("executions")
        assert (new["exec_type"], fill["exec_type"], fill["liquidity"]) == ("new", "trade", "maker")
        assert fill["last_qty"] == 200 and fill["last_px"] == "85.30" and seq == 2
        assert fill["account"] == "POWER1" and fill["order_status"] == "partially_filled"
        # buyer: new then taker fill
        reports = [await buyer.next_push("executions") for _ in range(2)]
        assert [r[2]["exec_type"] for r in reports] == ["new", "trade"]
        assert reports[1][2]["liquidity"] == "taker" and reports[1][2]["order_status"] == "filled"
        # balances reflect the fill (CEA holdings 48000 + 200 for the buyer)
        _, _, bal = await buyer.next_push("balances")
        assert bal["holdings"][I]["total"] == 48_200
        pushes = [await seller.next_push("balances") for _ in range(2)]  # after s-1, after fill
        assert [p[1] for p in pushes] == [1, 2] and pushes[1][2]["account"] == "POWER1"
        assert pushes[0][2]["holdings"][I]["reserved"] == 1000 + 2500 + 300
        assert pushes[1][2]["holdings"][I]["reserved"] == 1000 + 2500 + 100
        # public trade has no counterparties
        _, _, tr = await watcher.next_push(f"trades:{I}")
        assert tr["qty"] == 200 and tr["price"] == "85.30" and "buyer" not in tr
        _, _, t1 = await watcher.next_push(f"ticker:{I}")  # after s-1 rested
        assert t1["best_ask"] == "85.30" and t1["last"] is None
        _, _, t2 = await watcher.next_push(f"ticker:{I}")  # after the trade
        assert t2["last"] == "85.30" and t2["volume"] == 200 and t2["vwap"] == "85.30"
        # the third client's book matches the server's
        ex = server.st.exchange
        assert await eventually(lambda: book.book_seq == ex.books[(I, "main")].seq)
        status, srv_book = await op(server, "GET", f"/books/{I}/main")
        assert status == 200
        assert book.bids() == srv_book["bids"] and book.asks() == srv_book["asks"]
        assert book.asks()[0] == ["85.30", 100]
        ex.check_invariants()


async def test_place_order_is_idempotent_by_client_order_id(server):
    async with ExchangeClient(server.ws_url, POWER) as c:
        first = await c.place_order(I, "sell", 10, "86.00", client_order_id="idem-1")
        again = await c.place_order(I, "sell", 10, "86.00", client_order_id="idem-1")
        assert again["order_id"] == first["order_id"] and again["replayed"] is True
        # concurrent duplicates in one frame: one order
        res = await c.send_batch(
            [
                (
                    "place_order",
                    {
                        "instrument": I,
                        "side": "sell",
                        "qty": 5,
                        "price": "86.10",
                        "client_order_id": "idem-2",
                    },
                )
            ]
            * 3
        )
        assert len({r["order_id"] for r in res}) == 1
        # a rejected order's retry gets the same reject, not a second attempt
        for _ in range(2):
            with pytest.raises(ExchangeError) as e:
                await c.place_order(I, "sell", 10, "99.99", client_order_id="idem-3")
            assert e.value.code == "OUTSIDE_PRICE_BAND"
        # a filled order's retry does not trade again
        async with ExchangeClient(server.ws_url, CEMENT) as b:
            f1 = await b.place_order(I, "buy", 10, "86.00", client_order_id="idem-4")
            f2 = await b.place_order(I, "buy", 10, "86.00", client_order_id="idem-4")
            assert f1["order_status"] == "filled" and f2["order_id"] == f1["order_id"]
        ex = server.st.exchange
        coids = [o.client_order_id for o in ex.open_orders("POWER1")]
        assert coids.count("idem-1") == 1 and coids.count("idem-2") == 1
        assert server.st.gateway.metrics.trades == 1


async def test_cancel_amend_cancel_all(server):
    async with ExchangeClient(server.ws_url, CEMENT) as c:
        r = await c.place_order(I, "buy", 100, "84.00", client_order_id="a-1")
        a = await c.amend_order(client_order_id="a-1", qty=60)
        assert a["exec_type"] == "replaced" and a["leaves_qty"] == 60
        a = await c.amend_order(r["order_id"], price="84.10")
        assert a["price"] == "84.10"
        x = await c.cancel_order(r["order_id"])
        assert x["order_status"] == "canceled"
        with pytest.raises(ExchangeError) as e:
            await c.cancel_order(r["order_id"])
        assert e.value.code == "UNKNOWN_ORDER"
        await c.place_order(I, "buy", 1, "84.00")
        n = await c.cancel_all(I)
        assert n["canceled"] == 2  # the demo bid and the new one
        assert await c.open_orders() == []


async def test_firm_cannot_see_or_cancel_another_firms_order(server):
    async with (
        ExchangeClient(server.ws_url, POWER) as a,
        ExchangeClient(server.ws_url, CEMENT) as b,
    ):
        await a.subscribe("executions")
        r = await b.place_order(I, "buy", 10, "84.00", client_order_id="mine")
        with pytest.raises(ExchangeError) as e:
            await a.cancel_order(r["order_id"])
        assert e.value.code == "UNKNOWN_ORDER"
        with pytest.raises(ExchangeError) as e:
            await a.cancel_order(client_order_id="mine")
        assert e.value.code == "UNKNOWN_ORDER"
        with pytest.raises(ExchangeError) as e:
            await a.amend_order(r["order_id"], qty=5)
        assert e.value.code == "UNKNOWN_ORDER"
        await a.cancel_all()
        assert [o["order_id"] for o in await b.open_orders()][-1] == r["order_id"]
        assert all(o["order_id"] != r["order_id"] for o in await a.open_orders())
        await asyncio.sleep(0.05)
        assert all(d["account"] == "POWER1" for _, _, d in a.drain("executions"))
        # there is no parameter to name another account
        with pytest.raises(ExchangeError) as e:
            await a.request(
                "place_order",
                {"instrument": I, "side": "buy", "qty": 1, "price": "84.00", "account": "CEMENT1"},
            )
        assert e.value.code == "INVALID_PARAMS"


# ------------------------------------------------------------------------------ auth


async def test_auth_failures_and_roles(server):
    async with ExchangeClient(server.ws_url) as anon:
        with pytest.raises(ExchangeError) as e:
            await anon.place_order(I, "buy", 1, "85.00")
        assert e.value.code == "NOT_AUTHENTICATED"
        assert (await anon.ping())["pong"] is True
        with pytest.raises(ExchangeError) as e:
            await anon.request("auth", {"api_key": "wrong"})
        assert e.value.code == "AUTH_FAILED"
        await anon.request("auth", {"api_key": POWER})
        with pytest.raises(ExchangeError) as e:
            await anon.request("auth", {"api_key": POWER})
        assert e.value.code == "ALREADY_AUTHENTICATED"
    with pytest.raises(ExchangeError) as e:
        await ExchangeClient(server.ws_url, "nope", header_auth=True).connect()
    assert e.value.code == "AUTH_FAILED"
    async with ExchangeClient(server.ws_url, STEEL, header_auth=True) as h:
        assert (await h.open_orders())[0]["client_order_id"] == "demo-3"
    async with ExchangeClient(server.ws_url, OPERATOR) as o:
        with pytest.raises(ExchangeError) as e:
            await o.place_order(I, "buy", 1, "85.00")
        assert e.value.code == "FORBIDDEN"
        with pytest.raises(ExchangeError) as e:
            await o.subscribe("executions")
        assert e.value.code == "FORBIDDEN"
        assert (await o.subscribe(f"book:{I}:main"))["snapshot"]["asks"]
    # HTTP: no key, wrong role
    assert (await op(server, "GET", "/firms", key=None))[0] == 401
    status, body = await op(server, "GET", "/firms", key=POWER)
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"


async def test_issue_and_revoke_api_key_over_http(server):
    status, firm = await op(server, "POST", "/firms", {"firm_id": "NEWCO", "name": "New Co"})
    assert status == 200, firm
    assert (await op(server, "POST", "/deposits", {"account": "NEWCO", "amount": "1000.00"}))[
        0
    ] == 200
    status, k = await op(server, "POST", "/api-keys", {"role": "firm", "firm_id": "NEWCO"})
    assert status == 201 and k["api_key"]
    _, keys = await op(server, "GET", "/api-keys")
    assert k["api_key"] not in str(keys)  # never shown again
    ex = server.st.exchange
    assert k["api_key"] not in ex.snapshot().decode()
    async with ExchangeClient(server.ws_url, k["api_key"]) as c:
        r = await c.place_order(I, "buy", 1, "85.00")
        assert r["order_status"] == "new"
        status, _ = await op(server, "DELETE", f"/api-keys/{k['key_id']}")
        assert status == 200
        assert await eventually(lambda: not c.connected)
        assert c.close_code == 4003
    with pytest.raises(ExchangeError) as e:
        await ExchangeClient(server.ws_url, k["api_key"]).connect()
    assert e.value.code == "AUTH_FAILED"
    status, body = await op(server, "DELETE", f"/api-keys/{k['key_id']}")
    assert status == 404 and body["error"]["code"] == "UNKNOWN_KEY"


async def test_operator_api_validation_halt_and_openapi(server):
    status, body = await op(server, "POST", "/deposits", {"account": "POWER1", "amount": 5})
    assert status == 422 and body["error"]["code"] == "INVALID_PARAMS"
    status, body = await op(server, "POST", "/deposits", {"account": "NOBODY", "amount": "5.00"})
    assert status == 404 and body["error"]["code"] == "UNKNOWN_ACCOUNT"
    status, body = await op(
        server, "POST", "/issuance", {"account": "SME1", "instrument": I, "qty": 100}
    )
    assert status == 200 and body["events"][0]["type"] == "posting"
    status, _ = await op(server, "POST", "/halt", {"instrument": I})
    assert status == 200
    async with ExchangeClient(server.ws_url, POWER) as c:
        with pytest.raises(ExchangeError) as e:
            await c.place_order(I, "sell", 1, "85.00")
        assert e.value.code == "HALTED"
        await op(server, "POST", "/resume", {"instrument": I})
        assert (await c.place_order(I, "sell", 1, "86.00"))["order_status"] == "new"
    status, band = await op(server, "PUT", f"/instruments/{I}/band", {"band_pct": "5"})
    assert status == 200 and band["events"][0]["band_pct"] == "5.00"
    status, body = await op(server, "POST", "/end-of-day", {})
    assert status == 200 and body["events"][-1]["type"] == "day_ended"
    status, doc = await op(server, "GET", "/openapi.json", key=None)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert "/api/v1/api-keys" in doc["paths"] and "/api/v1/deposits" in doc["paths"]
    schema = doc["paths"]["/api/v1/deposits"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert schema["$ref"].split("/")[-1] in doc["components"]["schemas"]
    assert "ErrorBody" in doc["components"]["schemas"]
    status, st = await op(server, "GET", "/state")
    assert st["state_hash"] == server.st.exchange.state_hash()
    status, body = await op(server, "GET", "/no/such/thing")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, body = await op(server, "DELETE", "/firms")
    assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_health_ready_metrics(server):
    async with aiohttp.ClientSession() as s:
        async with s.get(server.http + "/healthz") as r:
            assert r.status == 200
        async with s.get(server.http + "/readyz") as r:
            assert r.status == 200 and (await r.json())["ok"]
        async with ExchangeClient(server.ws_url, POWER) as c:
            with pytest.raises(ExchangeError):
                await c.place_order(I, "sell", 10**6, "85.00")
            async with s.get(server.http + "/metrics") as r:
                text = await r.text()
    for name in (
        "exchange_orders_total",
        "exchange_trades_total",
        "exchange_journal_lag",
        "exchange_ws_connections",
        "exchange_rejects_total",
    ):
        assert f"# TYPE {name} " in text
    assert 'exchange_rejects_total{reason="OVER_MAX_ORDER_SIZE",source="core"} 1' in text
    assert "# TYPE exchange_snapshots_total counter" in text


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call on the event loop: what the watchdog is for


async def test_loop_watchdog_logs_a_stall_with_the_stack_holding_the_loop(caplog):
    from exchange.server.watchdog import LoopWatchdog

    wd = LoopWatchdog(threshold=0.05)
    wd.start()
    try:
        await asyncio.sleep(0.1)
        assert wd.stalls == 0  # an idle loop turns on time
        with caplog.at_level(logging.WARNING, logger="exchange.server.watchdog"):
            _hold_the_loop(0.3)
            await asyncio.sleep(0.1)  # the loop turns again: the stall is reported
    finally:
        wd.stop()
    assert wd.stalls == 1
    assert 0.2 <= wd.stall_seconds_max < 1.0
    assert "_hold_the_loop" in wd.last_stall["stack"]
    msgs = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    # one line with the figure and the place; the stack stays in last_stall
    assert len(msgs) == 1 and "_hold_the_loop" in msgs[0] and "\n" not in msgs[0]
    assert re.search(r"stalled for \d+ ms \(threshold 50 ms\)", msgs[0]), msgs[0]


async def test_loop_watchdog_warns_at_most_once_per_interval(caplog):
    from exchange.server.watchdog import LoopWatchdog

    wd = LoopWatchdog(threshold=0.03)
    wd.start()
    try:
        with caplog.at_level(logging.WARNING, logger="exchange.server.watchdog"):
            for _ in range(3):
                _hold_the_loop(0.1)
                await asyncio.sleep(0.05)
    finally:
        wd.stop()
    assert wd.stalls == 3  # every stall is counted ...
    msgs = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(msgs) == 1  # ... one is logged within log_every (5 s)


# ------------------------------------------------------------------------------ session options


async def test_cancel_on_disconnect(server):
    c = ExchangeClient(server.ws_url, POWER, cancel_on_disconnect=True)
    await c.connect()
    assert c.auth_result["cancel_on_disconnect"] is True
    r1 = await c.place_order(I, "sell", 10, "86.50")
    r2 = await c.place_order(I, "sell", 10, "86.60")
    await c.cancel_order(r2["order_id"])
    await c.close()
    ex = server.st.exchange
    live = lambda: {o.order_id for o in ex.open_orders("POWER1")}  # noqa: E731
    assert await eventually(lambda: r1["order_id"] not in live())
    assert {1, 2} <= live()  # the demo orders placed elsewhere stay


async def test_rate_limit(tmp_path):
    async with running_server(tmp_path, rate_limit_per_second=5, rate_limit_burst=5) as srv:
        async with ExchangeClient(srv.ws_url, POWER) as c:
            res = await c.send_batch([("ping", None)] * 12)
            codes = [getattr(r, "code", "ok") for r in res]
            assert codes[:4] == ["ok"] * 4 and "RATE_LIMITED" in codes  # auth took one
            await asyncio.sleep(0.5)
            assert (await c.ping())["pong"]  # refilled


async def test_overload_refuses_new_orders_with_one_reply_each(tmp_path):
    """Past max_commands_in_flight (applied, not yet durable) place_order and amend_order are
    refused with OVERLOADED before the core sees them; cancels pass; every request gets
    exactly one reply; once the journal has caught up orders are accepted again."""
    async with running_server(tmp_path, max_commands_in_flight=3) as srv:
        ex = srv.st.exchange
        async with ExchangeClient(srv.ws_url, POWER) as c:
            live = await c.place_order(
                instrument=I, side="sell", qty=1, price="86.50", client_order_id="keep"
            )
            seq = ex.last_seq
            # one frame: all of it is handled in one go, before any journal batch is durable
            reqs = [
                (
                    "place_order",
                    {
                        "instrument": I,
                        "side": "sell",
                        "qty": 1,
                        "price": "86.00",
                        "client_order_id": f"o{i}",
                    },
                )
                for i in range(6)
            ]
            reqs.append(("amend_order", {"order_id": live["order_id"], "qty": 1, "price": "86.40"}))
            reqs.append(("cancel_order", {"order_id": live["order_id"]}))
            res = await c.send_batch(reqs)
            assert len(res) == len(reqs)
            codes = [getattr(r, "code", "ok") for r in res]
            assert codes[:3] == ["ok"] * 3, codes
            assert codes[3:7] == ["OVERLOADED"] * 4, codes
            assert codes[7] == "ok" and res[7]["exec_type"] == "canceled"
            assert ex.last_seq == seq + 4  # 3 orders + the cancel reached the core
            assert srv.st.gateway.metrics.overloaded == 4
            assert srv.st.gateway.metrics.overloaded_by == {"in_flight": 4}
            # a refused client_order_id was not remembered: the retry is a new order
            again = await c.place_order(
                instrument=I, side="sell", qty=1, price="86.00", client_order_id="o4"
            )
            assert again["client_order_id"] == "o4" and "replayed" not in again
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.http + "/metrics") as r:
                assert 'exchange_overloaded_total{reason="in_flight"} 4' in await r.text()


async def test_book_updates_are_grouped_per_interval_and_complete(tmp_path):
    """server.book_push_interval_ms: updates are held back and sent together, yet each is its
    own message with seq = previous + 1 from the subscriber's snapshot on - also for a
    subscriber that joins while updates are held back; the reply does not wait for them."""
    async with running_server(tmp_path, book_push_interval_ms=300) as srv:
        ch = f"book:{I}:main"
        ex = srv.st.exchange
        async with (
            ExchangeClient(srv.ws_url, POWER) as trader,
            ExchangeClient(srv.ws_url, STEEL) as early,
            ExchangeClient(srv.ws_url, CEMENT) as late,
        ):
            snap_early = (await early.subscribe(ch))["seq"]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            res = await trader.send_batch(
                [
                    (
                        "place_order",
                        {"instrument": I, "side": "sell", "qty": 1, "price": f"{87 + i / 100:.2f}"},
                    )
                    for i in range(5)
                ]
            )
            assert all(isinstance(r, dict) for r in res)
            assert loop.time() - t0 < 0.25  # replies are not held back with the book
            assert ex.books[(I, "main")].seq == snap_early + 5
            snap_late = (await late.subscribe(ch))["seq"]  # while the 5 are held back
            res = await trader.send_batch(
                [
                    (
                        "place_order",
                        {"instrument": I, "side": "sell", "qty": 1, "price": f"{88 + i / 100:.2f}"},
                    )
                    for i in range(3)
                ]
            )
            last = ex.books[(I, "main")].seq
            for client, first in ((early, snap_early), (late, snap_late)):
                seqs = []
                while not seqs or seqs[-1] < last:
                    seqs.append((await client.next_push(ch, timeout=3))[1])
                assert seqs == list(range(first + 1, last + 1)), (first, seqs)
                assert client.books[ch].book_seq == last and client.resyncs == 0
            assert early.books[ch].asks() == late.books[ch].asks()


async def test_overload_when_the_connections_queue_is_long(server):
    """A connection whose client does not keep up (more than overload_send_queue messages
    waiting for its socket) gets OVERLOADED for new orders and amends, not for cancels."""
    from exchange.server.gateway import Session
    from exchange.server.protocol import ProtocolError

    gw = server.st.gateway
    s = Session(gw, ws=None)
    gw.authenticate(s, POWER)
    s.out = [b"{}"] * gw.cfg.overload_send_queue  # as if its socket were not drained
    with pytest.raises(ProtocolError) as e:
        gw.admit(s)
    assert e.value.code == "OVERLOADED"
    s.out = []
    gw.admit(s)  # accepted again once the queue drained


async def test_text_frames_take_the_direct_path(server, monkeypatch):
    """With this aiohttp the gateway's direct text-frame path is in use (a silent fallback to
    aiohttp's queue would cost CPU per request); the fallback still serves requests."""
    from exchange.server import framing as G

    gw = server.st.gateway
    async with ExchangeClient(server.ws_url, POWER) as c:
        assert (await c.ping())["pong"]
        assert [s.ws.direct for s in gw.sessions] == [True]
    monkeypatch.setattr(G, "DIRECT", False)
    async with ExchangeClient(server.ws_url, POWER) as c:
        assert (await c.ping())["pong"]
        assert [s.ws.direct for s in gw.sessions] == [False]
        r = await c.place_order(I, "sell", 1, "86.00")
        assert r["order_status"] == "new"


async def test_slow_consumer_is_disconnected(tmp_path):
    async with running_server(tmp_path, send_queue_max=200) as srv:
        async with ExchangeClient(srv.ws_url, POWER) as fast:
            # a deep book, so that each book snapshot is a few kB
            res = await fast.send_batch(
                [
                    (
                        "place_order",
                        {"instrument": I, "side": "sell", "qty": 1, "price": f"{86 + i / 100:.2f}"},
                    )
                    for i in range(150)
                ]
            )
            assert all(isinstance(r, dict) for r in res)
            # a client that sends requests but never reads its socket
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {STEEL}"})
                sub = '{"req_id":1,"method":"subscribe","params":{"channel":"book:%s:main"}}' % I
                gw = srv.st.gateway
                for _ in range(60):
                    await ws.send_str("[" + ",".join([sub] * 100) + "]")
                    await asyncio.sleep(0.005)
                    if gw.metrics.slow_consumer_disconnects:
                        break
                assert await eventually(lambda: gw.metrics.slow_consumer_disconnects == 1)
                assert await eventually(lambda: len(gw.sessions) == 1)
                await ws.close()
            assert (await fast.ping())["pong"]  # the server carries on


async def test_batch_mode_frames(server):
    async with ExchangeClient(server.ws_url, POWER, batch=True) as c:
        await c.subscribe("executions")
        res = await c.send_batch(
            [("place_order", {"instrument": I, "side": "sell", "qty": 1, "price": "86.00"})] * 10
        )
        assert len({r["order_id"] for r in res}) == 10
        assert server.st.gateway.metrics.frames_out < server.st.gateway.metrics.messages_out


def test_protocol_doc_lists_every_method_and_gateway_code():
    from pathlib import Path

    from exchange.server.protocol import METHODS

    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text()
    src = (Path(__file__).resolve().parent.parent / "exchange" / "core" / "errors.py").read_text()
    block = src.split("# " + "-" * 64 + " gateway")[1]
    block = block.split("# ----")[0]
    import re

    codes = re.findall(r'^[A-Z_]+ = "([A-Z_]+)"', block, re.M)
    assert len(codes) >= 20
    missing = [c for c in codes if f"`{c}`" not in doc]
    assert not missing, missing
    builtin = (
        "auth",
        "ping",
        "place_order",
        "cancel_order",
        "amend_order",
        "cancel_all",
        "open_orders",
        "subscribe",
        "unsubscribe",
    )
    assert set(builtin) <= set(METHODS)
    assert [m for m in builtin if f"`{m}`" not in doc] == []


async def test_heartbeat_closes_a_silent_peer(tmp_path):
    async with running_server(tmp_path, heartbeat_seconds=0.3) as srv:
        async with aiohttp.ClientSession() as http, ExchangeClient(srv.ws_url) as alive:
            silent = await http.ws_connect(srv.ws_url, autoping=False)
            kinds = []
            loop = asyncio.get_running_loop()
            end = loop.time() + 3
            while loop.time() < end:
                msg = await silent.receive(timeout=3)
                kinds.append(msg.type)
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    break
            assert aiohttp.WSMsgType.PING in kinds and kinds[-1] != aiohttp.WSMsgType.PING
            assert alive.connected and (await alive.ping())["pong"]  # it answers pings
            await silent.close()


async def test_shutdown_cancels_cancel_on_disconnect_orders(tmp_path):
    async with running_server(tmp_path) as srv:
        c = ExchangeClient(srv.ws_url, POWER, cancel_on_disconnect=True)
        await c.connect()
        keep = ExchangeClient(srv.ws_url, POWER)
        await keep.connect()
        r1 = await c.place_order(I, "sell", 10, "86.50")
        r2 = await keep.place_order(I, "sell", 10, "86.60")
        ex = srv.st.exchange
        await srv.st.gateway.shutdown()
        live = {o.order_id for o in ex.open_orders("POWER1")}
        assert r1["order_id"] not in live and r2["order_id"] in live
        assert await eventually(lambda: not c.connected and not keep.connected)
        assert c.close_code == 1001
        await c.close()
        await keep.close()


def test_openapi_document_is_closed_under_refs():
    from exchange.server.api import ROUTES, load_extensions, openapi

    load_extensions()
    doc = openapi()
    refs = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "$ref":
                    refs.append(v)
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    schemas = doc["components"]["schemas"]
    assert refs and all(r.split("/")[-1] in schemas for r in refs)
    ops = [(m.upper(), p) for p, item in doc["paths"].items() for m in item]
    for r in ROUTES:
        assert (r.method, "/api/v1" + r.path) in ops
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_journal_failure_turns_requests_away_and_readyz_red(server):
    from exchange.journal import RunnerFailed

    def refuse(cmd):
        raise RunnerFailed("journal write failed: disk full")

    runner = server.st.runner
    async with ExchangeClient(server.ws_url, POWER) as c:
        runner.submit_nowait = refuse
        try:
            with pytest.raises(ExchangeError) as e:
                await c.place_order(I, "sell", 1, "86.00")
            assert e.value.code == "SHUTTING_DOWN"
            status, body = await op(
                server, "POST", "/deposits", {"account": "POWER1", "amount": "1.00"}
            )
            assert status == 503 and body["error"]["code"] == "SHUTTING_DOWN"
            async with aiohttp.ClientSession() as s:
                async with s.get(server.http + "/readyz") as r:
                    assert r.status == 503
            assert (await c.ping())["pong"]  # the connection and the server stay up
        finally:
            del runner.submit_nowait


async def test_gateway_bench_loadmix_answers_everything():
    """The in-process benchmark of the load test's mix (exchange.app.bench, case loadmix)
    runs the real gateway path: every request is answered, execution reports are pushed."""
    from exchange.app import bench

    stats: dict = {}
    assert await bench._loadmix(400, warmup=200, stats=stats) > 0
    assert stats["messages_in"] == 600 and stats["queued"] == 0
    assert stats["gateway_errors"] == {} and stats["orders"] > 0 and stats["trades"] > 0
    assert stats["messages_out"] > 600 and stats["bytes_written"] > 0


def test_execution_report_bytes_are_wire_er():
    """The gateway formats execution reports from templates (head cached per order); the
    bytes are exactly orjson.dumps(wire_er(ev)), also for odd strings and empty fields."""
    import orjson

    from exchange.core.events import ExecutionReport
    from exchange.server.protocol import ER_BODY, ER_PUSH, er_head, er_tail_args, wire_er

    evs = [
        ExecutionReport("F1", 7, "c-1", I, "main", "buy", "new", "new", 8540, 10, 0, 0, 0, 10),
        ExecutionReport(
            "F1",
            7,
            "c-1",
            I,
            "main",
            "buy",
            "trade",
            "partially_filled",
            8540,
            10,
            4,
            8530,
            4,
            6,
            None,
            12,
            1706,
            "maker",
            1795378000000000001,
        ),
        ExecutionReport(
            'F"2',
            0,
            'q"\\\u00e9\u2028\x01',
            "X",
            "sme",
            "sell",
            "rejected",
            "rejected",
            None,
            5,
            0,
            0,
            0,
            0,
            "INSUFFICIENT_FUNDS",
        ),
        ExecutionReport(
            "F1",
            8,
            None,
            I,
            "main",
            "sell",
            "canceled",
            "canceled",
            1,
            3,
            0,
            0,
            0,
            0,
            "CANCELED_BY_CLIENT",
            0,
            0,
            None,
            5,
        ),
    ]
    for ev in evs:
        args = er_tail_args(ev, er_head(ev))
        assert ER_BODY % args == orjson.dumps(wire_er(ev))
        push = orjson.loads(ER_PUSH % ((3,) + args))
        assert push == {"channel": "executions", "seq": 3, "data": wire_er(ev)}


_ER_TEXT = st.one_of(
    st.none(), st.text(max_size=8), st.sampled_from(["new", "trade", "maker", "filled"])
)
_ER_INT = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-99999, max_value=99999),
)


@settings(max_examples=400, deadline=None)
@given(
    st.tuples(_ER_TEXT, _ER_TEXT),
    st.one_of(st.none(), _ER_INT),
    st.lists(_ER_INT, min_size=8, max_size=8),
    st.tuples(_ER_TEXT, _ER_TEXT),
    st.integers(min_value=0, max_value=2**40),
    st.sampled_from([None, "c-1", 'q"\u00e9']),
)
def test_executions_push_in_c_is_the_reference_bytes(strs, price, ints, rl, seq, coid):
    """er_push_c writes ER_PUSH's bytes from the report's slots, or leaves the report to the
    reference format (None) - never different bytes."""
    from exchange.core.events import ExecutionReport
    from exchange.server.protocol import ER_PUSH, er_head, er_push_c, er_tail_args

    qty, last_qty, last_px, cum, leaves, tid, fee, ts = ints
    ev = ExecutionReport(
        "F1",
        7,
        coid,
        I,
        "main",
        "buy",
        strs[0],
        strs[1],
        price,
        qty,
        last_qty,
        last_px,
        cum,
        leaves,
        rl[0],
        tid,
        fee,
        rl[1],
        ts,
    )
    head = er_head(ev)
    want = ER_PUSH % ((seq,) + er_tail_args(ev, head))
    got = er_push_c(seq, head, ev)
    if got is not None:
        assert got == want


def test_executions_push_in_c_takes_the_usual_reports():
    from exchange.server import protocol

    if protocol._c_er_push is None:  # the extension (exchange/server/_accel.c) is not built
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("exchange.server._accel is not built (REQUIRE_SERVICES=1)")
        pytest.skip("exchange.server._accel is not built (no C compiler at install time)")
    from exchange.core.events import ExecutionReport
    from exchange.server.protocol import ER_PUSH, er_head, er_push_c, er_tail_args

    evs = [
        ExecutionReport("F1", 7, "c-1", I, "main", "buy", "new", "new", 8540, 10, 0, 0, 0, 10),
        ExecutionReport(
            "F1",
            7,
            "c-1",
            I,
            "main",
            "buy",
            "trade",
            "partially_filled",
            8540,
            10,
            4,
            8530,
            4,
            6,
            None,
            12,
            1706,
            "maker",
            1795378000000000001,
        ),
        ExecutionReport(
            "F1",
            8,
            None,
            I,
            "main",
            "sell",
            "canceled",
            "canceled",
            1,
            3,
            0,
            0,
            0,
            0,
            "CANCELED_BY_CLIENT",
            0,
            0,
            None,
            5,
        ),
        ExecutionReport(
            "F1",
            0,
            None,
            I,
            "main",
            "sell",
            "rejected",
            "rejected",
            -5,
            3,
            0,
            0,
            0,
            0,
            "OUTSIDE_BAND",
            0,
            0,
            None,
            5,
        ),
    ]
    for ev in evs:
        head = er_head(ev)
        assert er_push_c(41, head, ev) == ER_PUSH % ((41,) + er_tail_args(ev, head))
    odd = ExecutionReport(
        "F1", 7, None, I, "main", "buy", "new", "new", 8540, 10, 0, 0, 0, 10, "caf\u00e9"
    )
    assert er_push_c(1, er_head(odd), odd) is None  # not plain: the reference formats it
    assert er_push_c(1, b"x", object()) is None


async def test_two_sessions_of_a_firm_get_the_same_execution_reports(server):
    async with ExchangeClient(server.ws_url, POWER) as a, ExchangeClient(server.ws_url, POWER) as b:
        await a.subscribe("executions")
        await b.subscribe("executions")
        await a.place_order(I, "sell", 2, "86.10", client_order_id="two-1")
        await a.cancel_order(client_order_id="two-1")
        got = []
        for c in (a, b):
            got.append([(await c.next_push("executions", timeout=3)) for _ in range(2)])
        assert got[0] == got[1]
        assert [r[2]["exec_type"] for r in got[0]] == ["new", "canceled"]
        assert [r[1] for r in got[0]] == [1, 2]
