"""``python -m loadtest``: the websocket load test of the served exchange.

    python -m loadtest run --rate 5000 --duration 10 --json out/run.json
    python -m loadtest run --echo --rate 5000 --duration 10          # the echo baseline
    python -m loadtest run --url ws://127.0.0.1:8080/ws --rate 2000   # a running server
    python -m loadtest sweep --json out/sweep.json                    # + out/sweep.md, .png
    python -m loadtest memory --clients 1000 --duration 60 --json out/memory.json
    python -m loadtest echo --port 8765                               # serve the baseline
    python -m loadtest costs                        # per-message costs of the order path
    python -m loadtest profile --rate 3000          # py-spy the server under load, summarised
    python -m loadtest failover --runs 5 --json out/failover.json   # kill the leader under load
    python -m loadtest mdsoak --subscribers 10000 --gateways 2 --duration 30 --json out/mdsoak.json

See docs/LOADTEST.md. (The engine micro-benchmarks are ``python -m loadtest.engine``.)
"""

from __future__ import annotations

import argparse
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=None,
        help="target a running server (ws://127.0.0.1:PORT/ws) instead of starting "
        "`python -m exchange serve` on a free port with a temporary data dir",
    )
    p.add_argument(
        "--config",
        default=None,
        help="server config for a started server (default: the packaged default "
        "with per-connection rate limits lifted)",
    )
    p.add_argument("--operator-key", default="operator-demo-key")
    p.add_argument(
        "--firms",
        type=int,
        default=20,
        help="firms (one websocket connection each) created for the load",
    )
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument(
        "--batch",
        action="store_true",
        help="ask the server for batched replies (auth param batch=true)",
    )
    p.add_argument("--no-exec", action="store_true", help="do not subscribe to execution reports")
    p.add_argument(
        "--drain",
        type=float,
        default=5.0,
        help="seconds to wait for outstanding replies after the schedule ends",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--keep", action="store_true", help="keep the server's temp data dir")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        from .ws_worker import worker_main

        return worker_main()
    if argv and argv[0] == "failover":  # the replicated exchange: its own options
        from .failover import main as failover_main

        return failover_main(argv[1:])
    if argv and argv[0] == "mdsoak":  # market-data gateways: their own options
        from .mdsoak import main as mdsoak_main

        return mdsoak_main(argv[1:])
    if argv and argv[0] == "_mdsub":
        from .mdsoak import subscriber_main

        return subscriber_main()
    from . import ws_costs, ws_echo, ws_profile
    from .ws_cli import cmd_memory, cmd_run, cmd_sweep

    ap = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="offer one rate, report latency and throughput")
    _common(p)
    p.add_argument("--rate", type=float, required=True, help="offered orders per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--echo", action="store_true", help="load the echo baseline instead")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "sweep",
        help="a ladder of rates up to saturation, echo baseline "
        "included; JSON + markdown report + plot",
    )
    _common(p)
    p.add_argument(
        "--rates",
        default=None,
        help="comma-separated offered rates (default 1000,5000,10000,...,50000)",
    )
    p.add_argument(
        "--echo-rates",
        default=None,
        help="rates for the echo baseline (default 10000,30000,...,120000)",
    )
    p.add_argument(
        "--climb",
        type=float,
        default=1.2,
        help="after the listed rates, while the last step was sustained, offer "
        "this many times more per step until two steps miss (0: no climb)",
    )
    p.add_argument(
        "--max-rate", type=float, default=1_000_000, help="the climb's highest offered rate"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    p.add_argument("--report", default=None, help="markdown report (default: JSON path .md)")
    p.add_argument("--plot", default=None, help="PNG plot (default: JSON path .png)")
    p.add_argument("--skip-echo", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "memory",
        help="N clients subscribed to one book through a run; report the server's peak RSS",
    )
    _common(p)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--client-procs", type=int, default=1)
    p.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="orders/s meanwhile (every order is a book update to every client)",
    )
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--channel", default="book:CEA-2026:main")
    p.add_argument(
        "--stall",
        action="store_true",
        help="subscribers stop reading after subscribing (slow consumers): the "
        "server must bound its queues and disconnect them",
    )
    p.set_defaults(func=cmd_memory)

    ws_echo.register(sub)
    ws_costs.register(sub)
    ws_profile.register(sub)
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
