"""Bounded clients: the server's memory and descriptors stay bounded whatever its clients do -
clients that never read, idle or half-open connections, floods of requests or failed logins.
Real servers on loopback, real sockets."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from exchange.client import ExchangeClient

from test_server import I, OPERATOR, POWER, STEEL, eventually, running_server


async def _deep_book(c: ExchangeClient, levels: int = 150) -> None:
    """Resting sells on many levels, so that a book snapshot is a few kB."""
    res = await c.send_batch(
        [
            (
                "place_order",
                {"instrument": I, "side": "sell", "qty": 1, "price": f"{86 + i / 100:.2f}"},
            )
            for i in range(levels)
        ]
    )
    assert all(isinstance(r, dict) for r in res)


async def test_total_send_queue_memory_is_bounded_and_released(tmp_path):
    limit = 3 << 20
    async with running_server(
        tmp_path, send_queue_max=1_000_000, send_queue_total_max_bytes=limit
    ) as srv:
        gw = srv.st.gateway
        async with ExchangeClient(srv.ws_url, POWER) as fast:
            await _deep_book(fast)
            sub = '{"req_id":1,"method":"subscribe","params":{"channel":"book:%s:main"}}' % I
            frame = "[" + ",".join([sub] * 100) + "]"  # ~300 kB of replies
            async with aiohttp.ClientSession() as http:
                # clients that send requests but never read their sockets
                readers = [
                    await http.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {STEEL}"})
                    for _ in range(8)
                ]
                seen = []
                for _ in range(200):
                    for ws in readers:
                        if not ws.closed:
                            await ws.send_str(frame)
                    await asyncio.sleep(0.01)
                    seen.append(gw.queued_bytes + gw.big_bytes)
                    if gw.metrics.send_queue_total_disconnects >= 3:
                        break
                # the largest queues were closed: each connection alone is far under its own
                # bound (send_queue_max), only the total passed
                assert gw.metrics.send_queue_total_disconnects >= 3
                assert max(seen) <= limit
                assert max(seen) > limit // 4  # the gauge did see the backlog
                assert (await fast.ping())["pong"]  # the server carries on
                status, text = await _get(srv, "/metrics")
                assert f"exchange_ws_send_queue_bytes_limit {limit}" in text
                assert "exchange_ws_send_queue_total_disconnects_total " in text
                for ws in readers:
                    await ws.close()
            # released on disconnect: nothing is held for the closed connections
            assert await eventually(lambda: len(gw.sessions) == 1, 5.0)
            assert await eventually(
                lambda: gw.queued_bytes == 0 and not gw._backlog and gw.big_bytes == 0, 5.0
            )
            status, text = await _get(srv, "/metrics")
            assert "exchange_ws_send_queue_bytes 0" in text


async def test_the_total_bound_acts_within_one_turn_of_the_event_loop(tmp_path):
    """Big replies queued while one frame is answered (a thousand book snapshots, ~3 MB) are
    counted as they are queued: the connection is closed mid-frame, not after the turn."""
    limit = 1 << 20
    async with running_server(
        tmp_path, send_queue_max=1_000_000, send_queue_total_max_bytes=limit
    ) as srv:
        gw = srv.st.gateway
        async with ExchangeClient(srv.ws_url, POWER) as fast:
            await _deep_book(fast)
            before = gw.metrics.messages_in
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {STEEL}"})
                sub = '{"req_id":1,"method":"subscribe","params":{"channel":"book:%s:main"}}' % I
                await ws.send_str("[" + ",".join([sub] * 1000) + "]")
                assert await eventually(lambda: gw.metrics.send_queue_total_disconnects == 1)
                assert gw.metrics.messages_in - before < 1000  # the rest was not answered
                assert await eventually(lambda: gw.big_bytes == 0)
            assert (await fast.ping())["pong"]


async def _get(srv, path: str, headers: dict | None = None):
    async with aiohttp.ClientSession() as s:
        async with s.get(srv.http + path, headers=headers or {}) as r:
            return r.status, await r.text()


# ------------------------------------------------------------------ websocket clients


async def _closed_with(ws, timeout: float = 3.0):
    """The close code and reason the server sent, reading past any replies."""
    replies = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            return (
                msg.data if msg.type == aiohttp.WSMsgType.CLOSE else ws.close_code,
                msg.extra,
                replies,
            )
        if msg.type == aiohttp.WSMsgType.TEXT:
            replies.append(json.loads(msg.data))


async def test_unauthenticated_connection_is_closed_after_the_auth_timeout(tmp_path):
    async with running_server(tmp_path, auth_timeout_seconds=0.3) as srv:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_str('{"req_id":1,"method":"ping"}')  # talking is not enough
            code, reason, replies = await _closed_with(ws)
            assert code == 4001 and "NOT_AUTHENTICATED" in reason
            assert replies[0]["result"]["pong"]


async def test_failed_authentications_close_the_connection(tmp_path):
    async with running_server(tmp_path, max_auth_failures=3) as srv:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(srv.ws_url)
            # guessing keys, many per frame: three answers, then the connection is closed
            await ws.send_str(
                json.dumps(
                    [
                        {"req_id": i, "method": "auth", "params": {"api_key": f"guess-{i}"}}
                        for i in range(1000)
                    ]
                )
            )
            code, reason, replies = await _closed_with(ws)
            assert code == 4001 and "AUTH_FAILED" in reason and "3 failed" in reason
            assert [r["error"]["code"] for r in replies] == ["AUTH_FAILED"] * 3
            # a good key on a fresh connection still works
        async with ExchangeClient(srv.ws_url, POWER) as c:
            assert (await c.ping())["pong"]


async def test_connections_per_api_key_are_capped(tmp_path):
    async with running_server(tmp_path, max_connections_per_key=2) as srv:
        gw = srv.st.gateway
        async with ExchangeClient(srv.ws_url, POWER), ExchangeClient(srv.ws_url, POWER):
            async with aiohttp.ClientSession() as http:
                # the key on the handshake: refused before the upgrade
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await http.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {POWER}"})
                assert e.value.status == 429
                # the auth method: the error, then close 4029
                ws = await http.ws_connect(srv.ws_url)
                await ws.send_str(
                    json.dumps({"req_id": 7, "method": "auth", "params": {"api_key": POWER}})
                )
                code, reason, replies = await _closed_with(ws)
                assert code == 4029 and "TOO_MANY_CONNECTIONS" in reason
                assert replies == [
                    {
                        "req_id": 7,
                        "ok": False,
                        "error": {
                            "code": "TOO_MANY_CONNECTIONS",
                            "message": "the API key has 2 connections open",
                        },
                    }
                ]
            async with ExchangeClient(srv.ws_url, STEEL) as other:  # another key: fine
                assert (await other.ping())["pong"]
        assert await eventually(lambda: not gw.key_sessions)
        async with ExchangeClient(srv.ws_url, POWER) as c:  # room again
            assert (await c.ping())["pong"]


async def test_the_rate_limit_is_per_key_across_its_connections(tmp_path):
    """Eight connections of one key get what one would (they got eight times that)."""
    async with running_server(tmp_path, rate_limit_per_second=50, rate_limit_burst=50) as srv:
        clients = [ExchangeClient(srv.ws_url, POWER) for _ in range(8)]
        for c in clients:
            await c.connect()
        try:
            res = await asyncio.gather(*(c.send_batch([("ping", None)] * 40) for c in clients))
            ok = sum(1 for rs in res for r in rs if isinstance(r, dict))
            limited = sum(1 for rs in res for r in rs if getattr(r, "code", None) == "RATE_LIMITED")
            assert ok + limited == 8 * 40
            # the key's burst, and what refilled meanwhile (at 50/s), no more
            assert 50 <= ok <= 50 + 8 + 50 * 1.0, ok
            async with ExchangeClient(srv.ws_url, STEEL) as other:  # other keys unaffected
                assert (
                    len(
                        [
                            r
                            for r in await other.send_batch([("ping", None)] * 40)
                            if isinstance(r, dict)
                        ]
                    )
                    == 40
                )
        finally:
            for c in clients:
                await c.close()


# ------------------------------------------------------------------ HTTP rate limits


async def test_operator_api_is_rate_limited_per_key_and_per_ip(tmp_path):
    async with running_server(
        tmp_path, http_rate_limit_per_key=2, http_rate_limit_burst=5, http_rate_limit_per_ip=3
    ) as srv:
        url = srv.http + "/api/v1/state"
        auth = {"Authorization": f"Bearer {OPERATOR}"}
        async with aiohttp.ClientSession() as http:  # from 127.0.0.1: exempt by address
            statuses = []
            for _ in range(8):
                async with http.get(url, headers=auth) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        retry = int(r.headers["Retry-After"])
                        body = await r.json()
            assert statuses[:5] == [200] * 5 and 429 in statuses
            assert retry >= 1 and body["error"]["code"] == "RATE_LIMITED"
            # another key has its own bucket; health and metrics are not limited
            async with http.get(url, headers={"Authorization": "Bearer verifier-demo-key"}) as r:
                assert r.status != 429
            async with http.get(srv.http + "/readyz") as r:
                assert r.status == 200
        # per address: from 127.0.0.2, with no key or a bad one, six (burst) then 429
        conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=conn) as http:
            statuses = []
            for i in range(10):
                async with http.get(url, headers={"Authorization": f"Bearer guess-{i}"}) as r:
                    statuses.append(r.status)
            assert statuses[:6] == [401] * 6 and statuses[6:] == [429] * 4


# ------------------------------------------------------------------ connections


async def _raw(host_from: str, port: int):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(host_from, 0))


async def test_connections_per_ip_are_capped_with_429(tmp_path):
    async with running_server(tmp_path, max_connections_per_ip=5) as srv:
        srv.st.guard.install(srv.runner.server)
        conns = [await _raw("127.0.0.2", srv.port) for _ in range(8)]
        refused = 0
        for r, w in conns[5:]:
            head = await asyncio.wait_for(r.read(4096), 3)
            assert head.startswith(b"HTTP/1.1 429 ") and b"TOO_MANY_CONNECTIONS" in head
            refused += 1
        assert refused == 3 and srv.st.guard.refused_per_ip == 3
        # another address (and loopback, exempt) is not affected
        async with ExchangeClient(srv.ws_url, POWER) as c:
            assert (await c.ping())["pong"]
        for _r, w in conns:
            w.close()
        # closed connections leave the count: room again
        assert await eventually(lambda: "127.0.0.2" not in srv.st.guard.by_ip)
        r, w = await _raw("127.0.0.2", srv.port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(r.read(4096), 3)).startswith(b"HTTP/1.1 200 ")
        w.close()


def test_idle_and_half_open_connections_cannot_exhaust_descriptors(tmp_path):
    """Slowloris, scaled down: a server with 160 descriptors, 200 connections that never
    finish (or never start) a request head - more than it has descriptors for - then ten real
    clients. They connect and trade; the idle ones are aborted, oldest first, to make room, and
    the rest when the handshake timeout passes. (Before: the accept loop met EMFILE and no new
    client got in until aiohttp's 75 s keep-alive timeout freed descriptors.)"""
    import os
    import re
    import resource
    import signal
    import subprocess
    import sys
    import time

    from exchange.app.config import default_config_text
    from test_server_restart import ROOT

    cfg = tmp_path / "server.toml"
    cfg.write_text(default_config_text() + "\n[server]\nhandshake_timeout_seconds = 4.0\n")

    def limit_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exchange",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(cfg),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=limit_fds,
    )
    try:
        port, out = 0, []
        end = time.monotonic() + 30
        while time.monotonic() < end and not port:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            m = re.match(r"listening on [\d.]+:(\d+)", line)
            port = int(m.group(1)) if m else 0
        assert port, "".join(out)

        async def attack_then_trade():
            idle = []
            for i in range(200):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                if i % 2:  # half-open: a request head that never ends
                    w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                idle.append((r, w))
            await asyncio.sleep(0.2)
            url = f"ws://127.0.0.1:{port}/ws"
            clients = []
            for key in (POWER, STEEL) * 5:
                c = ExchangeClient(url, key)
                await asyncio.wait_for(c.connect(), 5)
                clients.append(c)
            assert all([(await asyncio.wait_for(c.ping(), 5))["pong"] for c in clients])
            r = await clients[0].place_order(I, "sell", 1, "86.00")
            assert r["order_status"] == "new"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    metrics = await resp.text()
            evicted = int(
                re.search(
                    r'exchange_connections_refused_total\{reason="evicted"\} '
                    r"(\d+)",
                    metrics,
                ).group(1)
            )
            assert evicted >= 200 - 96 - 20, metrics  # the descriptor limit less the reserve
            # the handshake timeout takes the rest: every idle connection is closed
            closed = 0
            for r, w in idle:
                try:
                    closed += await asyncio.wait_for(r.read(1), 8) == b""
                except ConnectionError:
                    closed += 1
                w.close()
            assert closed == 200
            assert (await clients[1].ping())["pong"]  # real clients stay
            for c in clients:
                await c.close()

        asyncio.run(attack_then_trade())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
