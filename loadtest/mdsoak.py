"""``python -m loadtest mdsoak``: many market-data subscribers over several gateways.

    python -m loadtest mdsoak --subscribers 10000 --gateways 2 --duration 30 \\
                              --json out/mdsoak.json [--rate 10] [--client-procs 2]

Starts a three-node NATS cluster on loopback ports (``loadtest/nats_cluster.py``), a leader
(``serve --standby`` on an R3 stream: the lease names it) and ``--gateways`` market-data
gateways (``serve --market-data``, ADR 0014). ``--client-procs`` subscriber processes open
``--subscribers`` websocket connections between them, spread round-robin over the gateways
(the lean client of ``loadtest/ws_proto.py``); each authenticates and subscribes to
``book:CEA-2026:main`` and ``trades:CEA-2026``. Then two firms trade on the leader for
``--duration`` seconds at ``--rate`` orders per second (resting sells, buys crossing them:
a book update per order, a trade per buy).

Afterwards every subscriber must have received every update in order: each book delta's
``seq`` one more than the last (from the snapshot's ``book_seq``), each trade's ``seq`` (its
trade id; only this instrument trades) one more than the last, up to the final book seq
and trade id the leader reports. ``complete`` counts the subscribers that got there,
``gaps`` the pushes that were not the next one. Reported per gateway: peak RSS (VmHWM) and
the subscribers it held; per client process: its peak RSS and messages. The JSON holds
all of it; the exit status is 0 when every subscriber is complete without a gap.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTRUMENT = "CEA-2026"
BOOK = f"book:{INSTRUMENT}:main"
TRADES = f"trades:{INSTRUMENT}"
KEY = "verifier-demo-key"


def _status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, IndexError, ValueError):
        return None


# ====================================================================== subscriber process


class Sub:
    __slots__ = (
        "proto",
        "book",
        "trade",
        "gaps",
        "msgs",
        "subscribed",
        "first_book",
        "first_trade",
        "closed",
    )

    def __init__(self):
        self.proto = None
        self.book = None  # last book seq
        self.trade = None  # last trade id
        self.gaps = 0
        self.msgs = 0
        self.subscribed = 0
        self.first_book = None
        self.first_trade = None
        self.closed = False


def _on_message(sub: Sub, loads):
    def on_message(payload: bytes) -> None:
        m = loads(payload)
        if type(m) is not dict:
            return
        ch = m.get("channel")
        if ch is None:
            r = m.get("result")
            if m.get("req_id") == 2 and r:
                sub.book = sub.first_book = r["seq"]
                sub.subscribed += 1
            elif m.get("req_id") == 3 and r:
                sub.trade = sub.first_trade = r["seq"]
                sub.subscribed += 1
            return
        sub.msgs += 1
        seq = m["seq"]
        if ch == BOOK:
            if sub.book is not None and seq != sub.book + 1:
                sub.gaps += 1
            sub.book = seq
        elif ch == TRADES:
            if sub.trade is not None and seq != sub.trade + 1:
                sub.gaps += 1
            sub.trade = seq

    return on_message


async def _subscriber_main(spec: dict) -> None:
    import orjson

    from .ws_proto import text_frame, ws_connect

    urls = spec["urls"]
    n = spec["count"]
    subs = [Sub() for _ in range(n)]
    hello = b"".join(
        text_frame(orjson.dumps(x))
        for x in (
            {"req_id": 1, "method": "auth", "params": {"api_key": KEY}},
            {"req_id": 2, "method": "subscribe", "params": {"channel": BOOK}},
            {"req_id": 3, "method": "subscribe", "params": {"channel": TRADES}},
        )
    )
    sem = asyncio.Semaphore(100)
    errors: list[str] = []
    t0 = time.monotonic()

    async def one(i: int, sub: Sub) -> None:
        url = urls[(spec["offset"] + i) % len(urls)]
        async with sem:
            for attempt in range(5):
                try:
                    sub.proto = await ws_connect(url, _on_message(sub, orjson.loads), timeout=30)
                    break
                except Exception as e:
                    if attempt == 4:
                        errors.append(repr(e))
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
            sub.proto.send_frames(hello)

    await asyncio.gather(*(one(i, s) for i, s in enumerate(subs)))
    end = time.monotonic() + 120
    while sum(s.subscribed == 2 for s in subs) < n - len(errors) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    connect_s = time.monotonic() - t0
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    _, final_book, final_trade = line.split()
    final_book, final_trade = int(final_book), int(final_trade)
    end = time.monotonic() + spec.get("drain", 60)
    while time.monotonic() < end:
        if all(
            s.book is not None
            and s.book >= final_book
            and s.trade is not None
            and s.trade >= final_trade
            for s in subs
            if s.proto is not None
        ):
            break
        await asyncio.sleep(0.1)
    closed = sum(1 for s in subs if s.proto is not None and s.proto.closed.done())
    codes: dict = {}
    for s in subs:
        if s.proto is not None and s.proto.closed.done():
            k = f"{s.proto.close_code} {s.proto.close_reason}".strip()[:80]
            codes[k] = codes.get(k, 0) + 1
    st = _status(os.getpid())
    res = {
        "subscribers": n,
        "connect_errors": len(errors),
        "connect_error_sample": errors[:3],
        "subscribed": sum(s.subscribed == 2 for s in subs),
        "complete": sum(
            1
            for s in subs
            if s.book is not None
            and s.book >= final_book
            and s.trade is not None
            and s.trade >= final_trade
            and not s.gaps
        ),
        "gaps": sum(s.gaps for s in subs),
        "messages": sum(s.msgs for s in subs),
        "closed_by_server": closed,
        "close_codes": codes,
        "connect_s": round(connect_s, 2),
        "book_first_min": min(
            (s.first_book for s in subs if s.first_book is not None), default=None
        ),
        "book_last_min": min((s.book for s in subs if s.book is not None), default=None),
        "trade_last_min": min((s.trade for s in subs if s.trade is not None), default=None),
        "peak_rss": st.get("VmHWM"),
    }
    for s in subs:
        if s.proto is not None:
            s.proto.close()
    print("RESULT " + json.dumps(res), flush=True)


def subscriber_main() -> int:
    spec = json.loads(sys.stdin.readline())
    try:
        import uvloop

        uvloop.run(_subscriber_main(spec))
    except ImportError:
        asyncio.run(_subscriber_main(spec))
    return 0


# ====================================================================== orchestration


class Server:
    """A ``python -m exchange serve ...`` process whose output a thread collects."""

    def __init__(self, name: str, args: list[str]):
        from .nats_cluster import free_ports

        self.name = name
        self.port = free_ports(1)[0]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exchange", "serve", "--port", str(self.port), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            },
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in x for x in list(self.lines)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no {text!r}:\n" + "".join(self.lines[-30:]))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _spawn_subscribers(spec: dict) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "_mdsub"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    p.stdin.write(json.dumps(spec) + "\n")
    p.stdin.flush()
    return p


def _expect(p: subprocess.Popen, prefix: str, timeout: float) -> str:
    box: list = []

    def read() -> None:
        for line in p.stdout:
            if line.startswith(prefix):
                box.append(line)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        raise RuntimeError(
            f"subscriber process: no {prefix} within {timeout:g} s (exit {p.poll()})"
        )
    return box[0]


async def _drive(leader_url: str, rate: float, duration: float) -> dict:
    """Resting sells and buys crossing them at ``rate`` orders/s; then the leader's final
    book seq and the last trade id."""
    from exchange.client import ExchangeClient

    s = ExchangeClient(leader_url, "demo-key-power1", timeout=30)
    b = ExchangeClient(leader_url, "demo-key-cement1", timeout=30)
    watch = ExchangeClient(leader_url, KEY, timeout=30)
    for c in (s, b, watch):
        await c.connect()
    await watch.subscribe(TRADES)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = acked = 0
    tasks = []
    tag = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        nonlocal acked
        if i % 2 == 0:
            await s.place_order(INSTRUMENT, "sell", 1, "86.00", client_order_id=f"{tag}-{i}")
        else:
            await b.place_order(INSTRUMENT, "buy", 1, "86.00", client_order_id=f"{tag}-{i}")
        acked += 1

    while loop.time() - t0 < duration:
        due = int((loop.time() - t0) * rate)
        while sent < due:
            tasks.append(asyncio.create_task(one(sent)))
            sent += 1
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = loop.time() - t0
    await asyncio.sleep(0.5)
    trade_ids = [d["trade_id"] for _c, _s, d in watch.drain(TRADES)]
    final = (await watch.subscribe(BOOK))["snapshot"]["book_seq"]
    for c in (s, b, watch):
        await c.close()
    return {
        "orders_sent": sent,
        "orders_acked": acked,
        "drive_s": round(elapsed, 2),
        "final_book_seq": final,
        "last_trade_id": max(trade_ids) if trade_ids else None,
        "trades": len(trade_ids),
    }


def run(a) -> dict:
    from exchange.app.config import default_config_text

    from .nats_cluster import NatsCluster

    base = tempfile.mkdtemp(prefix="mdsoak-")
    config = os.path.join(base, "exchange.toml")
    text = default_config_text()
    if "\n[server]" not in text:
        text += "\n[server]\n"
    text = text.replace(
        "\n[server]\n",
        "\n[server]\nrate_limit_per_second = 1000000\n"
        "rate_limit_burst = 1000000\n"
        "max_connections_per_key = 0\n",
        1,
    )
    with open(config, "w") as f:
        f.write(text)
    cluster = NatsCluster(os.path.join(base, "nats"), nodes=3).start()
    servers: list[Server] = []
    procs: list[subprocess.Popen] = []
    data = os.path.join(base, "data")
    url = cluster.journal_url(f"MD_{uuid.uuid4().hex[:6]}", replicas=3)
    try:
        leader = Server(
            "leader",
            [
                "--data-dir",
                data,
                "--config",
                config,
                "--journal",
                url,
                "--standby",
                "--node-id",
                "lead",
            ],
        )
        servers.append(leader)
        leader.wait_for("listening on")
        gws = [
            Server(
                f"g{i}",
                [
                    "--data-dir",
                    data,
                    "--config",
                    config,
                    "--journal",
                    url,
                    "--market-data",
                    "--node-id",
                    f"g{i}",
                    "--md-interval",
                    str(a.md_interval),
                ],
            )
            for i in range(a.gateways)
        ]
        servers.extend(gws)
        for g in gws:
            g.wait_for("listening on")
        urls = [g.url for g in gws]
        per = [
            a.subscribers // a.client_procs + (i < a.subscribers % a.client_procs)
            for i in range(a.client_procs)
        ]
        t0 = time.monotonic()
        off = 0
        for n in per:
            procs.append(
                _spawn_subscribers({"urls": urls, "count": n, "offset": off, "drain": a.drain})
            )
            off += n
        for p in procs:
            _expect(p, "READY", 300)
        connect_s = time.monotonic() - t0
        print(
            f"{a.subscribers} subscribers on {a.gateways} gateways in {connect_s:.1f} s; "
            f"driving {a.rate:g} orders/s for {a.duration:g} s",
            flush=True,
        )
        drive = asyncio.run(_drive(leader.url, a.rate, a.duration))
        for p in procs:
            p.stdin.write(f"FINAL {drive['final_book_seq']} {drive['last_trade_id'] or 0}\n")
            p.stdin.flush()
        results = [json.loads(_expect(p, "RESULT", a.drain + 60)[len("RESULT ") :]) for p in procs]
        gw_rss = {g.name: _status(g.proc.pid).get("VmHWM") for g in gws}
        gw_cpu = {g.name: _cpu_s(g.proc.pid) for g in gws}
        leader_cpu = _cpu_s(leader.proc.pid)
        leader_rss = _status(leader.proc.pid).get("VmHWM")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for srv in servers:
            srv.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    tot = {
        k: sum(r[k] for r in results)
        for k in (
            "subscribers",
            "subscribed",
            "complete",
            "gaps",
            "messages",
            "connect_errors",
            "closed_by_server",
        )
    }
    return {
        "subscribers": a.subscribers,
        "gateways": a.gateways,
        "client_procs": a.client_procs,
        "duration_s": a.duration,
        "rate_offered": a.rate,
        **drive,
        **tot,
        "ok": tot["complete"] == a.subscribers and tot["gaps"] == 0,
        "connect_s": round(connect_s, 1),
        "gateway_peak_rss_mib": {k: round(v / 2**20, 1) if v else None for k, v in gw_rss.items()},
        "leader_peak_rss_mib": round(leader_rss / 2**20, 1) if leader_rss else None,
        "gateway_cpu_s": gw_cpu,
        "leader_cpu_s": leader_cpu,
        "messages_per_s": round(tot["messages"] / max(drive["drive_s"], 1e-9)),
        "client_peak_rss_mib": [round((r["peak_rss"] or 0) / 2**20, 1) for r in results],
        "per_process": results,
        "md_interval_s": a.md_interval,
        "nats_server": ".".join(map(str, cluster.version)),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str]) -> int:
    import argparse
    from .nats_cluster import nats_server_binary

    p = argparse.ArgumentParser(
        prog="python -m loadtest mdsoak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--subscribers", type=int, default=10000)
    p.add_argument("--gateways", type=int, default=2)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of order flow")
    p.add_argument("--rate", type=float, default=10.0, help="orders per second")
    p.add_argument("--client-procs", type=int, default=2, help="subscriber processes")
    p.add_argument(
        "--md-interval",
        type=float,
        default=0.05,
        help="the gateways' --md-interval (seconds between journal reads)",
    )
    p.add_argument(
        "--drain",
        type=float,
        default=60.0,
        help="seconds the subscribers may take to receive the last update",
    )
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if nats_server_binary() is None:
        print("nats-server not found (apt-get install nats-server)", file=sys.stderr)
        return 2
    res = run(a)
    print(json.dumps({k: v for k, v in res.items() if k != "per_process"}, indent=1))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res["ok"] else 1
