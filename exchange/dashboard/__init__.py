"""The web dashboard (issue 9): a static console served by the exchange's aiohttp application.

    from exchange.dashboard import setup
    setup(app)          # called once from exchange.server.app.create_app

Routes it adds to the application:

* ``GET /``            the console (``static/index.html``): Market, Operator and Firm views;
* ``GET /ui/...``      its JavaScript modules, stylesheet and icon (no CDN, no build step);
* ``GET /api/v1/market/candles/{instrument}`` (registered in :mod:`exchange.dashboard.api`
  through the operator API's route registry): daily open/high/low/close for the price chart.

The browser talks to the same public interfaces as any other client: the websocket protocol
(``/ws``, docs/PROTOCOL.md) for market data and a firm's orders, and the operator HTTP API
(``/api/v1``) with ``Authorization: Bearer <key>`` for the operator's actions. The dashboard
holds no market state of its own except the candle read model (:mod:`.candles`).
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .candles import CandleStore

STATIC_DIR = Path(__file__).parent / "static"
CANDLES_KEY = web.AppKey("dashboard_candles", CandleStore)

# The page may load only its own scripts and styles and talk only to its own origin.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={
        "Cache-Control": "no-cache", "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


def setup(app: web.Application) -> None:
    """Add the dashboard's routes and its candle read model to the server application."""
    from ..server.app import STATE_KEY

    app.router.add_get("/", _index)
    app.router.add_static("/ui/", STATIC_DIR, append_version=False)
    st = app[STATE_KEY]
    path = None if st.in_memory or st.data_dir is None else Path(st.data_dir) / "candles.json"
    store = app[CANDLES_KEY] = CandleStore(path)

    async def on_startup(app: web.Application) -> None:  # after the server's: state is ready
        store.load()
        store.seed(st.exchange)
        st.runner.add_listener(store.on_commit)

    async def on_cleanup(app: web.Application) -> None:
        store.save()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
