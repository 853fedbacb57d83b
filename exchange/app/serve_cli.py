"""``python -m exchange serve``: run the exchange server.

    python -m exchange serve [--config FILE] [--host 127.0.0.1] [--port 8080]
                             [--data-dir DIR] [--journal TARGET] [--journal-schema S]
                             [--in-memory] [--no-demo] [--no-uvloop]

The settings come from ``--config FILE``, else ``$CARBON_EXCHANGE_CONFIG``, else the packaged
default (:func:`exchange.app.config.config_path`); the start-up output says which.

Starts the aiohttp application with its journal: ``--journal`` (or the config's
``[journal] url``: ``postgresql://...`` or ``sqlite:///abs/path``), else the SQLite journal in
the data directory (default: the config's ``journal.data_dir``), builds the market (and the demo
market) on the first start,
recovers on every later start, prints the demo API keys (demo market only: ``--no-demo``
issues and prints none; ``keys create`` makes keys), and on SIGINT/SIGTERM stops
accepting, flushes the journal and writes a final snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from .config import add_config_argument, config_origin, config_path, load_settings
from .engine import build_exchange
from ..journal import JournalCorruptError


async def serve(args) -> int:
    from .server import STATE_KEY, create_app, install_guard, printable_demo_keys, tune_gc
    from ..server.appkeys import NODE_KEY

    settings = load_settings(args.config)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    data_dir = args.data_dir or settings.journal.data_dir
    if args.journal_schema:
        settings.journal.schema_name = args.journal_schema
    if args.checkpoint_key_file:
        settings.journal.checkpoint_key_file = args.checkpoint_key_file
    if getattr(args, "market_data", False):  # a gateway following the journal (ADR 0014)
        from ..server.marketdata import serve_market_data

        return await serve_market_data(args, settings, host, port, data_dir, build_exchange)
    leadership = None
    if args.standby:  # serve only while holding the journal's leader lease
        from pathlib import Path
        from .server import journal_target
        from ..server.standby import take_leadership

        target, options = journal_target(settings, Path(data_dir), args.journal)
        leadership = await take_leadership(
            target,
            node=args.node_id,
            ttl=args.lease_ttl,
            host=host,
            port=port,
            options=options,
            address=args.advertise or (f"ws://{host}:{port}/ws" if port else ""),
            new_exchange=build_exchange,
        )
        if leadership is None:
            return 0
        if leadership.port is not None:  # --port 0: the port the standby listened on
            port = leadership.port
    app = create_app(
        settings,
        data_dir,
        in_memory=args.in_memory,
        demo=not args.no_demo,
        journal=args.journal,
        recover_from_genesis=args.recover_from_genesis,
        follower=leadership.follower if leadership is not None else None,
    )
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()  # runs on_startup: journal recovery / genesis
    except JournalCorruptError as e:
        # nothing was changed on disk: the operator decides (--recover-from-genesis, or
        # restore the journal from a copy) - the message names the record or snapshot
        print(f"refusing to start: {e}", file=sys.stderr, flush=True)
        await runner.cleanup()
        if leadership is not None:
            await leadership.close()
        return 2
    st = app[STATE_KEY]
    if leadership is not None:
        await leadership.fence(st.runner)  # a former leader's next append is refused
        node = app[NODE_KEY]
        node.node_id, node.lease = leadership.lease.node, leadership.lease
    tune_gc(settings.server)
    if settings.server.stall_warn_ms > 0:
        from ..server.watchdog import LoopWatchdog

        st.watchdog = LoopWatchdog(settings.server.stall_warn_ms / 1000)
        st.watchdog.start()
    install_guard(app, runner)  # connection caps and the handshake timeout
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    bound = port
    for addr in runner.addresses:  # the real port for --port 0
        bound = addr[1]
        break
    ex = st.exchange
    rec = st.recovery
    where = "in memory (nothing is kept)" if args.in_memory else st.runner.journal.target
    print(
        f"Carbon exchange serving on http://{host}:{bound}  (websocket ws://{host}:{bound}/ws,"
        f" operator API http://{host}:{bound}/api/v1, OpenAPI /api/v1/openapi.json)"
    )
    print(f"Settings: {config_origin(args.config)}")
    if st.first_start:
        print(f"New market built from these settings; journal {where}")
    else:
        print(
            f"Recovered from {where}: last seq {ex.last_seq} (snapshot seq "
            f"{rec.get('snapshot_seq', 0)}, {rec.get('replayed', 0)} commands replayed in "
            f"{rec.get('seconds', 0.0):.2f} s)"
        )
    keys = printable_demo_keys(app)  # none without the demo market (--no-demo)
    if keys:
        print(
            'Demo API keys (stored only as keyed hashes; send as {"method": "auth", '
            '"params": {"api_key": ...}} or Authorization: Bearer):'
        )
        for role, firm, key in keys:
            print(f"  {role:<9} {firm or '':<9} {key}")
    elif not ex.modules["credentials"].by_hash:
        print(
            "No API key on record: stop the server and run `python -m exchange keys create "
            "--role operator --label NAME` (same --data-dir) for the first operator key"
        )
    # the stop signals are handled before "listening on" is printed: whoever waits for that
    # line may stop the server at once, and gets the graceful stop
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if leadership is not None:
        if not leadership.lease.address:  # --port 0: the lease names the port bound
            leadership.lease.address = f"ws://{host}:{bound}/ws"
        leadership.watch(st.runner, stop.set)
    print(f"listening on {host}:{bound}", flush=True)
    await stop.wait()
    lost = leadership is not None and leadership.lost.is_set()
    if lost:  # stop accepting at once; no final snapshot: another node is the writer
        print(f"no longer leader: {leadership.why}; stepping down", flush=True)
        await st.runner.stop(snapshot=False)
    print("shutting down: closing connections, flushing the journal, final snapshot", flush=True)
    if st.watchdog is not None:
        st.watchdog.stop()
    await runner.cleanup()
    if leadership is not None:
        await leadership.close()
    print(f"stopped at seq {ex.last_seq}", flush=True)
    if lost:
        from ..server.standby import LOST_LEADERSHIP_EXIT

        return LOST_LEADERSHIP_EXIT
    return 0


def run(args) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args.config = config_path(args.config)  # resolved once: serve() loads and reports the same
    settings = load_settings(args.config)
    use_uvloop = settings.server.uvloop and not args.no_uvloop
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            use_uvloop = False
    if use_uvloop:
        return uvloop.run(serve(args))
    return asyncio.run(serve(args))


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the exchange server (websocket, operator API)")
    add_config_argument(p)
    p.add_argument("--host", default=None, help="listen address (default server.host)")
    p.add_argument("--port", type=int, default=None, help="port (default server.port; 0: any)")
    p.add_argument("--data-dir", default=None, help="journal directory (default journal.data_dir)")
    p.add_argument(
        "--journal",
        default=None,
        metavar="TARGET",
        help="journal: postgresql://user@host/db or sqlite:///abs/path (default "
        "journal.url, else DATA_DIR/journal.sqlite)",
    )
    p.add_argument(
        "--journal-schema",
        default=None,
        metavar="SCHEMA",
        help="PostgreSQL schema of the journal's tables (default journal.schema)",
    )
    p.add_argument(
        "--checkpoint-key-file",
        default=None,
        metavar="FILE",
        help="sign the chain head into DATA_DIR/journal.checkpoint with this key "
        "and refuse a journal behind or diverging from it (default "
        "journal.checkpoint_key_file)",
    )
    p.add_argument(
        "--recover-from-genesis",
        action="store_true",
        help="rebuild the state from the whole log, loading no snapshot (after a "
        "start refused a snapshot that does not match its seal)",
    )
    p.add_argument(
        "--in-memory",
        action="store_true",
        help="no journal: nothing survives a restart (tests, gateway benchmarks)",
    )
    p.add_argument(
        "--no-demo",
        action="store_true",
        help="production: the first start builds the market without the demo "
        "firms and issues no API key (make one with `keys create`)",
    )
    p.add_argument(
        "--standby",
        action="store_true",
        help="JetStream journal only: serve only while holding the stream's leader "
        "lease - wait for it, take over when the leader dies, exit 3 when it "
        "is lost (docs/DEPLOYMENT.md)",
    )
    p.add_argument(
        "--node-id", default=None, help="this node's name in the lease (default HOSTNAME-PID)"
    )
    p.add_argument(
        "--advertise",
        default=None,
        metavar="URL",
        help="the websocket URL the lease names for clients (default ws://HOST:PORT/ws)",
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds a leader that stopped renewing keeps the lease (default 5)",
    )
    from ..server.marketdata import add_arguments as market_data_arguments

    market_data_arguments(p)  # --market-data, --leader, --md-ring, --md-interval
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    p.set_defaults(func=run)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
