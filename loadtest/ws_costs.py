"""Per-message CPU costs of the served exchange's order path, piece by piece, in process.

The websocket load test shows what the whole server carries; this shows where one order's
microseconds go, using the server's own modules (no network, no journal I/O):

    python -m loadtest costs [--n 20000] [--json FILE]

Each line is the median over ``--repeat`` runs of ``--n`` calls, in microseconds per call.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import orjson


def _timeit(fn, n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)
        runs.append((time.perf_counter() - t) / n * 1e6)
    return round(statistics.median(runs), 2)


def measure(n: int = 20000, repeat: int = 5) -> dict:
    from exchange.app.config import load_settings
    from exchange.core.commands import CancelOrder, PlaceOrder
    from exchange.core.events import ExecutionReport
    from exchange.journal.base import record_hash
    from exchange.journal.codec import payload_line
    from exchange.app.engine import Sequencer
    from exchange.app.market import genesis_commands
    from exchange.server.protocol import PlaceOrderParams, wire_er

    out: dict[str, float] = {}
    req = (
        b'{"req_id":123456,"method":"place_order","params":{"instrument":"CEA-2026",'
        b'"segment":"main","side":"buy","qty":5,"price":"84.90","client_order_id":'
        b'"w0-123456"}}'
    )
    params = orjson.loads(req)["params"]

    def f_loads(k):
        loads = orjson.loads
        for _ in range(k):
            loads(req)

    out["orjson.loads(request)"] = _timeit(f_loads, n, repeat)

    import exchange.server.gateway  # noqa: F401  (registers the built-in methods)
    from exchange.server.protocol import METHODS

    m = METHODS["place_order"]
    mv = getattr(m, "validate", None) or PlaceOrderParams.model_validate

    def f_validate(k):
        for _ in range(k):
            mv(params)

    out["place_order params validation (the gateway's validator)"] = _timeit(f_validate, n, repeat)

    def f_cmd(k):
        for _ in range(k):
            PlaceOrder(
                account="F",
                instrument="CEA-2026",
                segment="main",
                side="buy",
                qty=5,
                price=8490,
                order_type="limit",
                tif="GTC",
                post_only=False,
                client_order_id="w0-123456",
            )

    out["PlaceOrder(...) construction"] = _timeit(f_cmd, n, repeat)

    # the core: a demo market with resting orders; place a passive order then cancel it
    seq = Sequencer()
    seq.run(genesis_commands(load_settings(None)))
    counter = [0]

    def f_apply(k):
        for _ in range(k // 2):
            counter[0] += 1
            c = f"x{counter[0]}"
            seq(
                PlaceOrder(
                    account="STEEL1",
                    instrument="CEA-2026",
                    side="buy",
                    price=8400 + counter[0] % 20,
                    qty=5,
                    client_order_id=c,
                )
            )
            seq(CancelOrder(account="STEEL1", client_order_id=c))

    out["Exchange.apply (place or cancel, mean)"] = _timeit(f_apply, n, repeat)

    cmd = PlaceOrder(
        account="STEEL1",
        instrument="CEA-2026",
        side="buy",
        price=8450,
        qty=5,
        client_order_id="w0-1",
    )

    def f_journal(k):  # the runner encodes in the server, the writer process hashes
        h = b"\0" * 32
        for i in range(k):
            h = record_hash(h, i, i, payload_line(cmd)[:-1])

    out["journal record: payload_line + sha256 chain"] = _timeit(f_journal, n, repeat)

    er = ExecutionReport(
        account="STEEL1",
        order_id=1,
        client_order_id="w0-1",
        instrument="CEA-2026",
        segment="main",
        side="buy",
        exec_type="new",
        order_status="new",
        price=8450,
        qty=5,
        last_qty=0,
        last_px=0,
        cum_qty=0,
        leaves_qty=5,
        ts=1,
    )

    def f_er(k):
        d = orjson.dumps
        for _ in range(k):
            d(wire_er(er))

    out["execution report: wire_er + dumps"] = _timeit(f_er, n, repeat)

    return out


def register(sub) -> None:
    p = sub.add_parser("costs", help="per-message CPU costs of the server's order path, in process")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default=None)

    def run(a):
        res = measure(a.n, a.repeat)
        w = max(len(k) for k in res)
        for k, v in res.items():
            print(f"{k:<{w}}  {v:8.2f} us")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(
                    {
                        "us_per_call": res,
                        "n": a.n,
                        "repeat": a.repeat,
                        "command": "python -m loadtest " + " ".join(sys.argv[1:]),
                    },
                    f,
                    indent=2,
                )
        return 0

    p.set_defaults(func=run)
