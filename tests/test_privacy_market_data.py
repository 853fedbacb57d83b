"""Public market data carries no firm identifiers; a firm sees its own executions without the
counterparty (docs/PRIVACY.md). One firm listens on a real websocket on loopback to every
channel it may subscribe to while other firms trade with it and with each other; every frame
it receives, and every market-data HTTP answer, is scanned for another firm's id, name or key.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from exchange.client import ExchangeClient
from test_server import CEMENT, POWER, STEEL, I, running_server

# everything that names a firm other than the listener, POWER1
OTHERS = [
    "CEMENT1",
    "STEEL1",
    "SME1",
    "SME2",
    "Conch Demo Cement",
    "Baowu Demo Steel",
    "Demo Castings SME",
    "Demo Packaging SME",
    "demo-key-cement1",
    "demo-key-steel1",
    "demo-key-sme1",
    "demo-key-sme2",
]
CHANNELS = [
    "executions",
    "balances",
    f"book:{I}:main",
    f"book:{I}:sme",
    f"trades:{I}",
    f"ticker:{I}",
    "trades:CCER-2026",
    "ticker:PHCER-2026",
]


def leaks(text: str) -> list[str]:
    return [w for w in OTHERS if w in text]


async def test_public_feeds_and_own_executions_name_no_other_firm(tmp_path):
    async with running_server(tmp_path, book_push_interval_ms=0) as srv:
        frames: list[str] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:

            async def request(req_id, method, params=None):
                await ws.send_str(
                    orjson.dumps(
                        {"req_id": req_id, "method": method, "params": params or {}}
                    ).decode()
                )
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    frames.append(msg.data)
                    data = orjson.loads(msg.data)
                    if isinstance(data, dict) and data.get("req_id") == req_id:
                        assert data["ok"], data
                        return data["result"]

            await request(1, "auth", {"api_key": POWER})
            for n, ch in enumerate(CHANNELS, start=2):
                await request(n, "subscribe", {"channel": ch})

            # CEMENT1 lifts POWER1's resting 1,000 t ask (demo order) and STEEL1 hits
            # CEMENT1's bid: one trade with POWER1 as counterparty, one between others
            async with (
                ExchangeClient(srv.ws_url, CEMENT) as cement,
                ExchangeClient(srv.ws_url, STEEL) as steel,
            ):
                await cement.place_order(I, "buy", 1_000, "85.40", client_order_id="c-1")
                await steel.place_order(I, "sell", 100, "84.90", client_order_id="s-1")
                await cement.place_order(I, "buy", 10, "84.00", client_order_id="c-2")

            trades = 0
            execs = 0
            loop = asyncio.get_running_loop()
            end = loop.time() + 5
            while (trades < 2 or execs < 1) and loop.time() < end:
                try:
                    msg = await asyncio.wait_for(ws.receive(), max(0.05, end - loop.time()))
                except asyncio.TimeoutError:
                    break
                frames.append(msg.data)
                for m in (lambda d: d if isinstance(d, list) else [d])(orjson.loads(msg.data)):
                    if m.get("channel") == f"trades:{I}":
                        trades += 1
                    elif m.get("channel") == "executions" and m["data"]["exec_type"] == "trade":
                        execs += 1
                        assert m["data"]["account"] == "POWER1"
            # a little longer for the tick's ticker and balances pushes
            try:
                while True:
                    frames.append((await asyncio.wait_for(ws.receive(), 0.3)).data)
            except asyncio.TimeoutError:
                pass
        assert trades == 2 and execs == 1, (trades, execs)
        text = "\n".join(frames)
        assert '"channel":"ticker:' in text and '"channel":"book:' in text
        assert leaks(text) == [], leaks(text)

        # the market-data HTTP routes: public ones without a key, the book with a firm's
        async with aiohttp.ClientSession() as http:
            for path, key in (
                ("/instruments", None),
                ("/segments", None),
                (f"/market/candles/{I}", None),
                (f"/market/trades/{I}", None),
                ("/trades", None),
                (f"/market/bars/{I}", None),
                (f"/market/bars/{I}?segment=sme", None),
                (f"/books/{I}/main", POWER),
                ("/dashboard/compliance-periods", POWER),
            ):
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                async with http.get(srv.http + "/api/v1" + path, headers=headers) as r:
                    body = await r.text()
                    assert r.status == 200, (path, r.status, body)
                    assert leaks(body) == [] and "POWER1" not in body, (path, leaks(body))
            async with http.get(srv.http + f"/api/v1/market/trades/{I}") as r:
                recent = (await r.json())["trades"]
            assert len(recent) == 2
            assert all(
                set(t) == {"trade_id", "instrument", "segment", "price", "qty", "aggressor", "at"}
                for t in recent
            )
