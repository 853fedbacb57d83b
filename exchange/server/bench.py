"""Gateway micro-benchmark: CPU per order of the websocket path, without the network.

    python -m exchange.server.bench [--orders 20000] [--json out/gateway_bench.json]

Feeds ``place_order`` frames (50 orders per frame, the load test's order mix of resting and
IOC orders around one price) straight into :meth:`Session.on_text` of two sessions and lets
the replies and pushes go to a socket stand-in, measuring **process CPU time** (robust to a
machine shared with other jobs, unlike wall time). Cases:

* ``core``: ``Exchange.apply`` alone on the same orders (the floor);
* ``gateway_stub_core``: the gateway path with a stub core that answers every order with one
  execution report (envelope, rate limit, validation, command, reply encoding, durability
  callback, writer);
* ``gateway_memory``: the real core behind :class:`~exchange.server.memory.MemoryRunner`
  (no journal), no subscriptions;
* ``gateway_memory_subscribed``: the same with both firms on ``executions`` and
  ``balances`` and one on the book channel (every report and book update is pushed).

The figures are per order; ``gateway_overhead_us`` is ``gateway_memory - core``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

from ..config import load_settings
from ..core.commands import DepositCash, IssueUnits, PlaceOrder
from ..core.events import ExecutionReport
from ..engine import Sequencer, build_exchange
from ..market import genesis_commands
from .credentials import demo_key_commands
from .gateway import Gateway, Session
from .memory import MemoryRunner

BATCH = 50


class _Sink:
    """Stands in for the websocket: frames are dropped."""

    closed = False
    compress = False

    async def send_frame(self, data, opcode) -> None:
        pass


def _orders(side: str, n: int, start: int) -> list[str]:
    out = []
    for k in range(n):
        rid = start + k
        px = 8500 + (rid % 20) - (10 if side == "buy" else 5)
        tif = ',"tif":"IOC"' if rid % 2 else ""
        out.append('{"req_id":%d,"method":"place_order","params":{"instrument":"CEA-2026",'
                   '"side":"%s","qty":1,"price":"%d.%02d"%s}}'
                   % (rid, side, px // 100, px % 100, tif))
    return out


def _market(settings):
    seq = Sequencer(build_exchange())
    seq.run(genesis_commands(settings) + demo_key_commands(settings) + [
        DepositCash(account="CEMENT1", amount=10 ** 11),
        IssueUnits(account="POWER1", instrument="CEA-2026", qty=10 ** 6)])
    return seq.ex


def _settings():
    s = load_settings()
    return s.model_copy(update={"server": s.server.model_copy(update={
        "rate_limit_per_second": 1e9, "rate_limit_burst": 10 ** 9,
        "send_queue_max": 10 ** 7})})


def bench_core(n: int) -> float:
    ex = _market(_settings())
    cmds = []
    for i in range(n):
        side = "sell" if i % 2 else "buy"
        px = 8500 + ((i // 2) % 20) - (10 if side == "buy" else 5)
        cmds.append(PlaceOrder(account="POWER1" if side == "sell" else "CEMENT1",
                               instrument="CEA-2026", side=side, qty=1, price=px,
                               tif="IOC" if (i // 2) % 2 else "GTC"))
    t0 = time.process_time()
    ts = ex.now
    for c in cmds:
        ts += 1
        c.seq = ex.last_seq + 1
        c.ts = ts
        ex.apply(c)
    return (time.process_time() - t0) / n * 1e6


class _StubRunner:
    """Answers every command with one 'new' execution report; commits once per tick."""

    journal_lag = 0

    def __init__(self):
        self._fut = None
        self._seq = 0

    def add_listener(self, fn) -> None:
        pass

    def submit_nowait(self, cmd):
        loop = asyncio.get_running_loop()
        if self._fut is None:
            self._fut = loop.create_future()
            loop.call_soon(self._commit)
        self._seq += 1
        cmd.seq = self._seq
        return [ExecutionReport(cmd.account, self._seq, cmd.client_order_id, cmd.instrument,
                                cmd.segment, cmd.side, "new", "new", cmd.price, cmd.qty, 0, 0,
                                0, cmd.qty)], self._fut

    def _commit(self) -> None:
        fut, self._fut = self._fut, None
        fut.set_result(None)


async def _drive(gw: Gateway, n: int, subscribe: bool) -> float:
    a, b = Session(gw, _Sink()), Session(gw, _Sink())
    gw.authenticate(a, "demo-key-power1", batch=True)
    gw.authenticate(b, "demo-key-cement1", batch=True)
    for s in (a, b):
        gw.attach(s)
        s.writer = asyncio.get_running_loop().create_task(s.write_loop())
    if subscribe:
        for s in (a, b):
            gw.subscribe(s, "executions")
            gw.subscribe(s, "balances")
        gw.subscribe(b, "book:CEA-2026:main")
    frames = []
    for k in range(0, n // 2, BATCH):
        frames.append((a, "[" + ",".join(_orders("sell", BATCH, k)) + "]"))
        frames.append((b, "[" + ",".join(_orders("buy", BATCH, k)) + "]"))
    t0 = time.process_time()
    for i, (s, f) in enumerate(frames):
        s.on_text(f)
        if i % 2:  # one pair of frames per tick: commit, replies, writers
            for _ in range(3):
                await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    el = time.process_time() - t0
    for s in (a, b):
        s.closed = True
        s.wake.set()
    await asyncio.sleep(0)
    return el / n * 1e6


async def _gateway(n: int, stub: bool, subscribe: bool) -> float:
    settings = _settings()
    ex = _market(settings)
    runner = _StubRunner() if stub else MemoryRunner(ex)
    gw = Gateway(ex, runner, settings.server)
    return await _drive(gw, n, subscribe)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m exchange.server.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs per case")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    n = a.orders - a.orders % (2 * BATCH)
    res: dict = {"orders": n}
    cases = {
        "core": lambda: bench_core(n),
        "gateway_stub_core": lambda: asyncio.run(_gateway(n, True, False)),
        "gateway_memory": lambda: asyncio.run(_gateway(n, False, False)),
        "gateway_memory_subscribed": lambda: asyncio.run(_gateway(n, False, True)),
    }
    for name, fn in cases.items():
        res[f"{name}_us"] = round(min(fn() for _ in range(a.repeat)), 2)
        print(f"{name:>28}: {res[f'{name}_us']:7.2f} us CPU per order", flush=True)
    res["gateway_overhead_us"] = round(res["gateway_memory_us"] - res["core_us"], 2)
    print(f"{'gateway_overhead':>28}: {res['gateway_overhead_us']:7.2f} us CPU per order")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
