"""The baseline: a bare aiohttp websocket server that decodes each message and acknowledges it.

It speaks the exchange's envelope (``{"req_id", "ok": true, "result": {}}`` for every request)
and nothing else: no validation, no journal, no matching, no pushes. Whatever rate it carries
with the same generator, the same schedule and the same machine is the ceiling for any aiohttp
websocket server here; the exchange's saturation rate is reported as a ratio to it.

It runs the way the exchange runs: one process, aiohttp, uvloop when installed, orjson.

    python -m loadtest echo --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import orjson
from aiohttp import WSMsgType, web

_loads = orjson.loads
_dumps = orjson.dumps


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    send = ws.send_str
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            try:
                req = _loads(msg.data)
                rid = req["req_id"]
                reply = {"req_id": rid, "ok": True, "result": {}}
            except Exception:
                reply = {
                    "req_id": None,
                    "ok": False,
                    "error": {"code": "BAD_JSON", "message": "not a JSON envelope"},
                }
            await send(_dumps(reply).decode())
        elif msg.type == WSMsgType.ERROR:
            break
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    return app


def serve(host: str, port: int, use_uvloop: bool = True) -> None:
    if use_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass

    async def main():
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=2048)
        await site.start()
        print(f"echo server on ws://{host}:{port}/ws pid {os.getpid()}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def register(sub) -> None:
    p = sub.add_parser("echo", help="run the bare aiohttp echo baseline server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--no-uvloop", action="store_true")
    p.set_defaults(func=lambda a: serve(a.host, a.port, not a.no_uvloop))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    s = ap.add_subparsers()
    register(s)
    args = ap.parse_args(["echo"] + __import__("sys").argv[1:])
    args.func(args)
