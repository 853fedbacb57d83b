"""The aiohttp application: journal + core runner, websocket gateway, operator API, health.

    app = create_app(settings, data_dir)         # web.Application
    # on start-up: open the SQLite journal in data_dir, recover (snapshot + replay), and on
    # the first start submit the genesis commands (market, demo firms, demo API keys)
    # on clean-up: stop accepting, close the websockets, flush, final snapshot

Routes: ``/ws`` (firms), ``/api/v1/...`` (operators, see :mod:`exchange.server.api`),
``/healthz``, ``/readyz``, ``/metrics`` (Prometheus text format 0.0.4).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from aiohttp import web

from .config import Settings
from .engine import build_exchange
from .market import genesis_commands
from ..journal import default_options
from ..server.api import add_routes, api_errors, load_extensions
from ..server.appkeys import NEW_CORE_KEY, NODE_KEY, STATE_KEY
from ..access.credentials import RehashApiKey, demo_key_commands, demo_keys, load_secret
from ..server.gateway import GATEWAY_KEY, Gateway, websocket_handler
from ..server.limits import ConnectionGuard, http_rate_limit
from ..server.node import NodeStatus, journal_kind
from ..server.sessions import start_session_clock

log = logging.getLogger("exchange.server")


class ServerState:
    """What the app holds besides the gateway (for the CLI and tests)."""

    def __init__(self, settings: Settings, data_dir: Path | None, in_memory: bool, demo: bool):
        self.settings = settings
        self.data_dir = data_dir
        self.in_memory = in_memory
        self.demo = demo
        self.exchange = None
        self.runner = None
        self.gateway: Gateway | None = None
        self.first_start = False
        self.ready = False
        self.recovery: dict = {}
        self.watchdog = None  # LoopWatchdog, started by ``serve``
        # per-IP caps, the handshake timeout, the descriptor guard: installed on the aiohttp
        # server by ``serve`` (install_guard)
        self.guard = None
        self.session_clock = None  # the trading calendar's clock task (server/sessions.py)


def journal_target(
    settings: Settings, data_dir: Path | None, journal: str | None = None
) -> tuple[str, dict]:
    """Which journal the server runs on, and its options: ``journal`` (``serve --journal``),
    else the config's ``[journal] url``, else ``<data_dir>/journal.sqlite``. PostgreSQL
    takes the schema from ``[journal] schema``."""
    target = journal or settings.journal.url
    if not target:
        return str(Path(data_dir) / "journal.sqlite"), {}
    return target, default_options(settings, target)


def make_runner(
    settings: Settings,
    data_dir: Path | None,
    in_memory: bool,
    journal: str | None = None,
    recover_from_genesis: bool = False,
    follower=None,
):
    """``follower``: a hot standby's :class:`~exchange.journal.follower.Follower` taking
    over - its core and journal are continued, not recovered from a snapshot."""
    ex = build_exchange() if follower is None else follower.exchange
    if in_memory:
        from ..server.memory import MemoryRunner

        return ex, MemoryRunner(ex)
    from ..journal import CoreRunner, open_journal

    target, options = journal_target(settings, data_dir, journal)
    if "://" not in target:  # the data directory only matters to the embedded journal
        # private: the journal holds every firm's orders and balances (its files are 0600)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
    journal = open_journal(target, **options) if follower is None else follower.journal
    checkpoint = None
    if settings.journal.checkpoint_key_file:  # the signed chain head, outside the journal
        from ..journal.checkpoint import Checkpoint

        checkpoint = Checkpoint.from_key_file(
            settings.journal.checkpoint_file or str(Path(data_dir) / "journal.checkpoint"),
            settings.journal.checkpoint_key_file,
        )
    runner = CoreRunner(
        ex,
        journal,
        checkpoint=checkpoint,
        snapshot_every_commands=settings.journal.snapshot_every_commands,
        snapshot_every_seconds=settings.journal.snapshot_every_seconds,
        use_snapshots=not recover_from_genesis,
        adopt_hash=None if follower is None else follower.head_hash,
    )
    return ex, runner


async def _submit_all(runner, cmds) -> None:
    futs = [runner.submit(c) for c in cmds]
    await asyncio.gather(*futs)


def create_app(
    settings: Settings,
    data_dir: str | Path | None = None,
    *,
    in_memory: bool = False,
    demo: bool = True,
    journal: str | None = None,
    recover_from_genesis: bool = False,
    follower=None,
) -> web.Application:
    """The whole server as an aiohttp application (start it with AppRunner or TestServer)."""
    load_extensions()
    from ..present import set_zone

    set_zone(settings.market.calendar.tz)  # times people read: the market calendar's zone
    st = ServerState(
        settings,
        Path(data_dir) if data_dir is not None else Path(settings.journal.data_dir),
        in_memory,
        demo,
    )
    app = web.Application(
        client_max_size=1 << 20, middlewares=[http_rate_limit(settings.server), api_errors]
    )
    app[STATE_KEY] = st
    app[NEW_CORE_KEY] = build_exchange
    app[NODE_KEY] = NodeStatus(
        socket.gethostname(),
        journal_kind(
            ":memory:" if in_memory else journal_target(settings, st.data_dir, journal)[0]
        ),
    )
    st.guard = ConnectionGuard(settings.server)
    ex, runner = make_runner(
        settings, st.data_dir, in_memory, journal, recover_from_genesis, follower
    )
    st.exchange, st.runner = ex, runner
    # listeners only see live commands (recovery replays without them)
    gw = st.gateway = app[GATEWAY_KEY] = Gateway(
        ex, runner, settings.server, log, new_exchange=build_exchange
    )
    _keyed_credentials(ex.modules["credentials"], st, gw)

    async def on_startup(app: web.Application) -> None:
        await runner.start()
        st.recovery = dict(getattr(runner, "recovery", {}) or {})
        # before any request: a retry of an order from before the restart is not a new order
        await gw.rebuild_idempotency()
        if runner.is_empty:
            st.first_start = True
            # the demo keys are public: only the demo market has them, never --no-demo
            creds = ex.modules["credentials"]
            await _submit_all(
                runner,
                genesis_commands(settings, demo=demo)
                + (demo_key_commands(settings, creds.secret) if demo else []),
            )
        # the leader keeps the session clock (a standby that took over, with its follower's
        # core, too: it is the leader now; a waiting standby has no app)
        st.session_clock = await start_session_clock(runner, ex, settings)
        st.ready = True

    async def on_shutdown(app: web.Application) -> None:
        st.ready = False
        if st.session_clock is not None:
            st.session_clock.cancel()
        if st.gateway is not None:
            await st.gateway.shutdown()

    async def on_cleanup(app: web.Application) -> None:
        if st.runner is not None:
            await st.runner.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_routes(app)
    # ---- dashboard: the console at / and its candle read model -----------------------------
    from ..dashboard import setup as setup_dashboard

    setup_dashboard(app)
    # ---- end dashboard -----------------------------------------------------------------------
    return app


def install_guard(app: web.Application, runner: web.AppRunner) -> None:
    """Put the app's connection guard (exchange/server/limits.py) on ``runner``'s server:
    after ``runner.setup()``, before a site listens."""
    app[STATE_KEY].guard.install(runner.server)


def tune_gc(cfg) -> None:
    """The cyclic GC for a long-running server: collect once, freeze what start-up left alive
    (modules, the recovered market: never garbage) and collect less often. With Python's
    defaults the collector walked the whole heap every few seconds under load, pausing the
    event loop up to ~200 ms (docs/BENCHMARKS.md). Process-wide: called by ``serve``, not
    by ``create_app`` (tests build many apps in one process)."""
    import gc

    if cfg.gc_freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*cfg.gc_threshold)


def _keyed_credentials(creds, st: ServerState, gw: Gateway) -> None:
    """The key-hashing secret (ADR 0008): from the data directory, made there on the first
    start; a server in memory keeps nothing, so a fresh one each run. A legacy (SHA-256)
    record presented with its key is rehashed by a journaled command."""
    import secrets

    creds.secret = secrets.token_bytes(32) if st.in_memory else load_secret(st.data_dir)

    def rehash(cred, key_hash: str) -> None:
        _events, durable = gw.submit_nowait(RehashApiKey(key_id=cred.key_id, key_hash=key_hash))
        durable.add_done_callback(_quiet)

    creds.on_legacy = rehash


def _quiet(fut) -> None:
    """Consume a rehash's outcome: a failure only means the next use rehashes again."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("API key rehash not durable: %s", fut.exception())


def printable_demo_keys(app: web.Application) -> list[tuple[str, str | None, str]]:
    st: ServerState = app[STATE_KEY]
    if not st.demo:  # a production start prints no key, even one a demo start left on record
        return []
    return demo_keys(st.settings, st.exchange.modules["credentials"])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    st: ServerState = request.app[STATE_KEY]
    gw = st.gateway
    ok = st.ready and gw is not None and gw.accepting and gw.failed is None
    body = {
        "ok": ok,
        "last_seq": st.exchange.last_seq if st.exchange else 0,
        "journal_lag": int(getattr(st.runner, "journal_lag", 0) or 0),
    }
    if gw is not None and gw.failed is not None:
        body["error"] = {"code": "SHUTTING_DOWN", "message": gw.failed}
    return web.json_response(body, status=200 if ok else 503)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format 0.0.4."""
    st: ServerState = request.app[STATE_KEY]
    gw = st.gateway
    out: list[str] = []

    def metric(name, kind, help_, samples):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, v in samples:
            lab = (
                "{" + ",".join(f'{k}="{_esc(str(x))}"' for k, x in labels.items()) + "}"
                if labels
                else ""
            )
            out.append(f"{name}{lab} {v}")

    if gw is not None:
        m = gw.metrics
        metric(
            "exchange_orders_total", "counter", "place_order commands journaled", [({}, m.orders)]
        )
        metric(
            "exchange_orders_rejected_total",
            "counter",
            "orders rejected by the core",
            [({}, m.orders_rejected)],
        )
        metric("exchange_trades_total", "counter", "trades", [({}, m.trades)])
        metric(
            "exchange_commands_total",
            "counter",
            "commands made durable since start",
            [({}, m.commands)],
        )
        metric(
            "exchange_rejects_total",
            "counter",
            "rejects by reason code and source",
            [({"reason": k, "source": "core"}, v) for k, v in sorted(m.rejects.items())]
            + [
                ({"reason": k, "source": "gateway"}, v) for k, v in sorted(m.gateway_errors.items())
            ],
        )
        metric(
            "exchange_ws_connections", "gauge", "open websocket connections", [({}, m.connections)]
        )
        metric(
            "exchange_ws_connections_total",
            "counter",
            "websocket connections accepted",
            [({}, m.connections_total)],
        )
        metric(
            "exchange_ws_messages_in_total", "counter", "requests received", [({}, m.messages_in)]
        )
        metric(
            "exchange_ws_messages_out_total",
            "counter",
            "replies and pushes sent",
            [({}, m.messages_out)],
        )
        metric(
            "exchange_ws_frames_out_total", "counter", "websocket frames sent", [({}, m.frames_out)]
        )
        metric(
            "exchange_ws_writes_total",
            "counter",
            "socket writes (frames of a connection are written together)",
            [({}, m.writes)],
        )
        metric(
            "exchange_ws_slow_consumer_disconnects_total",
            "counter",
            "connections closed for a full send queue",
            [({}, m.slow_consumer_disconnects)],
        )
        metric(
            "exchange_ws_send_queue_bytes",
            "gauge",
            "bytes waiting for the sockets of connections whose peers are behind (queued "
            "messages + transport buffers, measured every 50 ms while any is) and big "
            "messages (1 KiB and more) queued and not yet written",
            [({}, gw.queued_bytes + gw.big_bytes)],
        )
        metric(
            "exchange_ws_send_queue_bytes_limit",
            "gauge",
            "server.send_queue_total_max_bytes: over it the largest queues are closed",
            [({}, gw.queued_bytes_max)],
        )
        metric(
            "exchange_ws_send_queue_total_disconnects_total",
            "counter",
            "connections closed as slow consumers because all send queues together were "
            "over the limit (also counted in exchange_ws_slow_consumer_disconnects_total)",
            [({}, m.send_queue_total_disconnects)],
        )
        metric(
            "exchange_overloaded_total",
            "counter",
            "place_order/amend_order refused with OVERLOADED (server behind), by the bound "
            "that refused them: journal_lag, in_flight, send_queue",
            [({"reason": k}, v) for k, v in sorted(m.overloaded_by.items())]
            or [({"reason": "journal_lag"}, 0)],
        )
        metric(
            "exchange_idempotent_replays_total",
            "counter",
            "place_order retries answered from the first result",
            [({}, m.idempotent_replays)],
        )
    g = st.guard
    if g is not None:
        metric(
            "exchange_connections",
            "gauge",
            "open TCP connections (HTTP and websocket)",
            [({}, g.open)],
        )
        metric(
            "exchange_connections_limit",
            "gauge",
            "server.max_connections (or the descriptor limit less a reserve)",
            [({}, g.max_open)],
        )
        metric(
            "exchange_connections_refused_total",
            "counter",
            "connections refused or aborted by the connection limits, by the limit: "
            "per_ip (429), full (503: no idle connection to make room), evicted (the "
            "oldest not yet past its handshake, to make room), handshake_timeout",
            [
                ({"reason": "per_ip"}, g.refused_per_ip),
                ({"reason": "full"}, g.refused_full),
                ({"reason": "evicted"}, g.evicted),
                ({"reason": "handshake_timeout"}, g.handshake_timeouts),
            ],
        )
    if st.exchange is not None:
        metric(
            "exchange_last_seq",
            "gauge",
            "last applied command sequence number",
            [({}, st.exchange.last_seq)],
        )
    metric(
        "exchange_journal_lag",
        "gauge",
        "commands applied but not yet durable",
        [({}, int(getattr(st.runner, "journal_lag", 0) or 0))],
    )
    if st.runner is not None:
        metric(
            "exchange_snapshots_total",
            "counter",
            "snapshots taken since start, by where the state was serialised",
            [
                ({"serialised": "forked child"}, st.runner.snapshots_forked),
                ({"serialised": "inline"}, st.runner.snapshots_inline),
            ],
        )
    wd = st.watchdog
    if wd is not None:
        metric(
            "exchange_loop_stalls_total",
            "counter",
            "event-loop stalls of at least server.stall_warn_ms (each logged with its stack)",
            [({}, wd.stalls)],
        )
        metric(
            "exchange_loop_stall_seconds_max",
            "gauge",
            "longest event-loop stall since start",
            [({}, round(wd.stall_seconds_max, 4))],
        )
    return web.Response(
        text="\n".join(out) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
