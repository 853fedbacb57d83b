"""The web dashboard: a static console served by the exchange's aiohttp application.

    from exchange.dashboard import setup
    setup(app)          # called once from exchange.app.server.create_app

Routes it adds to the application:

* ``GET /``            the console (``static/index.html``): Market, Operator and Firm views;
* ``GET /ui/...``      its JavaScript modules, stylesheet and icon (no CDN, no build step);
* ``GET /api/v1/market/candles/{instrument}``, ``/market/bars/{instrument}``, ``/trades``,
  ``/firms/{firm_id}/executions`` (registered in :mod:`exchange.dashboard.api` and
  :mod:`.history_api` through the operator API's route registry): daily and 1-minute
  open/high/low/close for the charts, public trades, a firm's blotter.

The browser talks to the same public interfaces as any other client: the websocket protocol
(``/ws``, docs/PROTOCOL.md) for market data and a firm's orders, and the operator HTTP API
(``/api/v1``) with ``Authorization: Bearer <key>`` for the operator's actions. The dashboard
holds no market state of its own except the history read model (:mod:`.history`), rebuilt
from the journal at each start and fed by the runner's committed commands after that.
"""

from __future__ import annotations

import hashlib
import mimetypes
from importlib import resources
from pathlib import Path

from aiohttp import web

from .history import MarketHistory

# Read through importlib.resources, not the file system, so an installed wheel, a zip and an
# editable install all serve the same files (aiohttp's add_static needs a real directory).
STATIC = resources.files(__package__).joinpath("static")
HISTORY_KEY = web.AppKey("dashboard_history", MarketHistory)

# The page may load only its own scripts and styles and talk only to its own origin.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


# Module scripts must come with a JavaScript type; the platform's mime.types is not relied on.
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


def _static_response(request: web.Request, parts: list[str], headers: dict) -> web.Response:
    if not parts or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
        raise web.HTTPNotFound()
    node = STATIC.joinpath(*parts)
    if not node.is_file():
        raise web.HTTPNotFound()
    body = node.read_bytes()
    etag = hashlib.sha1(body).hexdigest()[:20]
    # no-cache: the browser revalidates (a 304 while the file is unchanged), so an upgraded
    # package is picked up on the next load
    headers = {
        **headers,
        "ETag": f'"{etag}"',
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    suffix = Path(parts[-1]).suffix.lower()
    ctype = _TYPES.get(suffix) or mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    charset = (
        "utf-8"
        if ctype.startswith("text/") or ctype in ("image/svg+xml", "application/json")
        else None
    )
    return web.Response(body=body, content_type=ctype, charset=charset, headers=headers)


async def _index(request: web.Request) -> web.StreamResponse:
    return _static_response(
        request, ["index.html"], {"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer"}
    )


async def _asset(request: web.Request) -> web.StreamResponse:
    return _static_response(request, request.match_info["path"].split("/"), {})


def setup(app: web.Application) -> None:
    """Add the dashboard's routes and its history read model to the server application."""
    from ..server.appkeys import NEW_CORE_KEY, STATE_KEY

    app.router.add_get("/", _index)
    app.router.add_get("/ui/{path:.+}", _asset)
    st = app[STATE_KEY]
    history = app[HISTORY_KEY] = MarketHistory()

    async def on_startup(app: web.Application) -> None:  # after the server's: state is ready
        # listen first (what commits meanwhile waits), then read the journal back from its
        # first record: the core may have started from a snapshot, which skips those events
        history.attach(st.runner)
        await history.rebuild(st.runner, app[NEW_CORE_KEY])

    app.on_startup.append(on_startup)
