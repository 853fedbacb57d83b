"""Bounded clients: the server's memory and descriptors stay bounded whatever its clients do -
clients that never read, idle or half-open connections, floods of requests or failed logins.
Real servers on loopback, real sockets."""
from __future__ import annotations

import asyncio

import aiohttp

from exchange.client import ExchangeClient

from test_server import I, POWER, STEEL, eventually, running_server


async def _deep_book(c: ExchangeClient, levels: int = 150) -> None:
    """Resting sells on many levels, so that a book snapshot is a few kB."""
    res = await c.send_batch([("place_order", {
        "instrument": I, "side": "sell", "qty": 1, "price": f"{86 + i / 100:.2f}"})
        for i in range(levels)])
    assert all(isinstance(r, dict) for r in res)


async def test_total_send_queue_memory_is_bounded_and_released(tmp_path):
    limit = 3 << 20
    async with running_server(tmp_path, send_queue_max=1_000_000,
                              send_queue_total_max_bytes=limit) as srv:
        gw = srv.st.gateway
        async with ExchangeClient(srv.ws_url, POWER) as fast:
            await _deep_book(fast)
            sub = '{"req_id":1,"method":"subscribe","params":{"channel":"book:%s:main"}}' % I
            frame = "[" + ",".join([sub] * 100) + "]"  # ~300 kB of replies
            async with aiohttp.ClientSession() as http:
                # clients that send requests but never read their sockets
                readers = [await http.ws_connect(srv.ws_url, headers={
                    "Authorization": f"Bearer {STEEL}"}) for _ in range(8)]
                seen = []
                for _ in range(200):
                    for ws in readers:
                        if not ws.closed:
                            await ws.send_str(frame)
                    await asyncio.sleep(0.01)
                    seen.append(gw.queued_bytes)
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
            assert await eventually(lambda: gw.queued_bytes == 0 and not gw._backlog, 5.0)
            status, text = await _get(srv, "/metrics")
            assert "exchange_ws_send_queue_bytes 0" in text


async def _get(srv, path: str, headers: dict | None = None):
    async with aiohttp.ClientSession() as s:
        async with s.get(srv.http + path, headers=headers or {}) as r:
            return r.status, await r.text()
