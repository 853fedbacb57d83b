"""Gateway micro-benchmark: CPU per order of the websocket path, without the network.

    python -m exchange.app.bench [--orders 20000] [--json out/gateway_bench.json]

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
  ``balances`` and one on the book channel (every report and book update is pushed);
* ``loadmix``: what ``python -m loadtest run`` sends, without the network: 20 firms, one
  session each, subscribed to ``executions``, unbatched (one frame per message, written to
  a transport stand-in through ``Session.flush``), one request per frame, the load test's
  mix (50 % resting limit orders, 10 % crossing IOC, 25 % cancels of the oldest live order,
  15 % amends of the newest, by ``client_order_id``), 20 requests per event-loop tick, on
  uvloop and with the GC settings of the server.

The figures are per order; ``gateway_overhead_us`` is ``gateway_memory - core``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time

from .config import load_settings
import random

from ..core.commands import DepositCash, IssueUnits, PlaceOrder, RegisterFirm
from ..core.events import ExecutionReport
from .engine import Sequencer, build_exchange
from .market import genesis_commands
from ..access.credentials import ROLE_FIRM, IssueApiKey, demo_key_commands, hash_key, key_id_for
from ..server.gateway import Gateway, Session
from ..server.memory import MemoryRunner

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
        out.append(
            '{"req_id":%d,"method":"place_order","params":{"instrument":"CEA-2026",'
            '"side":"%s","qty":1,"price":"%d.%02d"%s}}' % (rid, side, px // 100, px % 100, tif)
        )
    return out


def _market(settings):
    seq = Sequencer(build_exchange())
    seq.run(
        genesis_commands(settings)
        + demo_key_commands(settings)
        + [
            DepositCash(account="CEMENT1", amount=10**11),
            IssueUnits(account="POWER1", instrument="CEA-2026", qty=10**6),
        ]
    )
    return seq.ex


def _settings():
    s = load_settings()
    return s.model_copy(
        update={
            "server": s.server.model_copy(
                update={
                    "rate_limit_per_second": 1e9,
                    "rate_limit_burst": 10**9,
                    "send_queue_max": 10**7,
                }
            )
        }
    )


def bench_core(n: int) -> float:
    ex = _market(_settings())
    cmds = []
    for i in range(n):
        side = "sell" if i % 2 else "buy"
        px = 8500 + ((i // 2) % 20) - (10 if side == "buy" else 5)
        cmds.append(
            PlaceOrder(
                account="POWER1" if side == "sell" else "CEMENT1",
                instrument="CEA-2026",
                side=side,
                qty=1,
                price=px,
                tif="IOC" if (i // 2) % 2 else "GTC",
            )
        )
    t0 = time.process_time()
    ts = ex.now
    for c in cmds:
        ts += 1
        ex.apply(c, ex.last_seq + 1, ts)
    return (time.process_time() - t0) / n * 1e6


class _StubRunner:
    """Answers every command with one 'new' execution report; commits once per tick. It
    moves ``ex.last_seq`` on as a runner would (the gateway reads a command's seq there),
    and applies nothing."""

    journal_lag = 0
    journal_lag_seconds = 0.0

    def __init__(self, ex):
        self.exchange = ex
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
        self.exchange.last_seq += 1
        return [
            ExecutionReport(
                cmd.account,
                self._seq,
                cmd.client_order_id,
                cmd.instrument,
                cmd.segment,
                cmd.side,
                "new",
                "new",
                cmd.price,
                cmd.qty,
                0,
                0,
                0,
                cmd.qty,
            )
        ], self._fut

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
    runner = _StubRunner(ex) if stub else MemoryRunner(ex)
    gw = Gateway(ex, runner, settings.server)
    return await _drive(gw, n, subscribe)


class _Transport:
    """Stands in for a socket transport: counts what is written."""

    def __init__(self):
        self.written = 0

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def write(self, data) -> None:
        self.written += len(data)


MIX_FIRMS = 20
MIX_PER_TICK = 20  # requests per event-loop tick (20,000/s at a 1 ms tick)
MID = 8500  # fen


def _mix_market(settings):
    seq = Sequencer(build_exchange())
    cmds = genesis_commands(settings) + demo_key_commands(settings)
    keys = []
    for i in range(MIX_FIRMS):
        fid = f"LTBENCH{i:04d}"
        key = f"bench-key-{i}"
        h = hash_key(key)
        cmds += [
            RegisterFirm(firm_id=fid, name=fid, sector="power", size_class="large"),
            DepositCash(account=fid, amount=10**10),
            IssueUnits(
                account=fid, instrument="CEA-2026", qty=10**7, source="allocation", ref="bench"
            ),
            IssueApiKey(
                key_id=key_id_for(h), role=ROLE_FIRM, key_hash=h, firm_id=fid, label="bench"
            ),
        ]
        keys.append(key)
    seq.run(cmds)
    return seq.ex, keys


def _mix_frames(n: int, seed: int = 1) -> list[tuple[int, bytes]]:
    """(firm index, request frame) in the load test's mix (loadtest/ws_worker.py)."""
    rng = random.Random(seed)
    live: list[dict] = [{} for _ in range(MIX_FIRMS)]
    out = []
    head = b',"method":"place_order","params":{"instrument":"CEA-2026","segment":"main","side":"'
    for i in range(n):
        f = i % MIX_FIRMS
        lv = live[f]
        r = rng.random()
        kind = 0 if r < 0.5 else 1 if r < 0.6 else 2 if r < 0.85 else 3
        if kind >= 2 and not lv:
            kind = 0
        elif kind == 0 and len(lv) >= 100:
            kind = 2
        if kind == 2:
            coid = next(iter(lv))
            del lv[coid]
            out.append(
                (
                    f,
                    b'{"req_id":%d,"method":"cancel_order","params":'
                    b'{"client_order_id":"%s"}}' % (i, coid),
                )
            )
            continue
        if kind == 3:
            coid = next(reversed(lv))
            side, price, qty = lv[coid]
            if qty > 1 and rng.random() < 0.5:
                lv[coid] = (side, price, qty - 1)
                out.append(
                    (
                        f,
                        b'{"req_id":%d,"method":"amend_order","params":'
                        b'{"client_order_id":"%s","qty":%d}}' % (i, coid, qty - 1),
                    )
                )
                continue
            off = int(rng.random() * 20) + 1
            price = MID - off if side == b"buy" else MID + off
            lv[coid] = (side, price, qty)
            out.append(
                (
                    f,
                    b'{"req_id":%d,"method":"amend_order","params":'
                    b'{"client_order_id":"%s","price":"%d.%02d"}}'
                    % (i, coid, price // 100, price % 100),
                )
            )
            continue
        coid = b"bench-%d" % i
        side = b"buy" if rng.random() < 0.5 else b"sell"
        qty = int(rng.random() * 10) + 1
        if kind == 1:
            price = MID + 5 if side == b"buy" else MID - 5
            out.append(
                (
                    f,
                    b'{"req_id":%d%s%s","qty":%d,"price":"%d.%02d","tif":"IOC",'
                    b'"client_order_id":"%s"}}'
                    % (i, head, side, qty, price // 100, price % 100, coid),
                )
            )
            continue
        off = int(rng.random() * 20) + 1
        price = MID - off if side == b"buy" else MID + off
        lv[coid] = (side, price, qty)
        out.append(
            (
                f,
                b'{"req_id":%d%s%s","qty":%d,"price":"%d.%02d","client_order_id":"%s"}}'
                % (i, head, side, qty, price // 100, price % 100, coid),
            )
        )
    return out


async def _loadmix(n: int, warmup: int = 10_000, stats: dict | None = None) -> float:
    settings = _settings()
    ex, keys = _mix_market(settings)
    gw = Gateway(ex, MemoryRunner(ex), settings.server)
    sessions = []
    for key in keys:
        s = Session(gw, _Sink())
        gw.attach(s)
        s.transport = _Transport()
        gw.authenticate(s, key)
        gw.subscribe(s, "executions")
        sessions.append(s)
    frames = _mix_frames(warmup + n)
    # the server's GC settings (exchange/app/server.py): start-up heap frozen, thresholds
    cfg = settings.server
    old_threshold = gc.get_threshold()
    if cfg.gc_freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*cfg.gc_threshold)

    async def feed(part) -> None:
        for k in range(0, len(part), MIX_PER_TICK):
            for f, data in part[k : k + MIX_PER_TICK]:
                sessions[f].on_text(data)
            for _ in range(3):  # commit, replies, flush
                await asyncio.sleep(0)

    await feed(frames[:warmup])  # books filled to the load test's steady state
    t0 = time.process_time()
    await feed(frames[warmup:])
    el = time.process_time() - t0
    if stats is not None:
        m = gw.metrics
        stats.update(
            messages_in=m.messages_in,
            messages_out=m.messages_out,
            orders=m.orders,
            trades=m.trades,
            gateway_errors=dict(m.gateway_errors),
            queued=sum(len(s.out) for s in sessions),
            bytes_written=sum(s.transport.written for s in sessions),
        )
    for s in sessions:
        s.closed = True
    gc.set_threshold(*old_threshold)
    gc.unfreeze()
    return el / n * 1e6


def _run_loop(coro):
    """Run on uvloop when the server would (``server.uvloop`` and installed)."""
    if _settings().server.uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m exchange.app.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--orders", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs per case")
    p.add_argument(
        "--case",
        action="append",
        default=None,
        help="run only this case (repeatable): core, gateway_stub_core, "
        "gateway_memory, gateway_memory_subscribed, loadmix",
    )
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    n = a.orders - a.orders % (2 * BATCH)
    res: dict = {"orders": n}
    cases = {
        "core": lambda: bench_core(n),
        "gateway_stub_core": lambda: asyncio.run(_gateway(n, True, False)),
        "gateway_memory": lambda: asyncio.run(_gateway(n, False, False)),
        "gateway_memory_subscribed": lambda: asyncio.run(_gateway(n, False, True)),
        "loadmix": lambda: _run_loop(_loadmix(n)),
    }
    if a.case:
        cases = {k: v for k, v in cases.items() if k in a.case}
    for name, fn in cases.items():
        res[f"{name}_us"] = round(min(fn() for _ in range(a.repeat)), 2)
        print(f"{name:>28}: {res[f'{name}_us']:7.2f} us CPU per order", flush=True)
    if "gateway_memory_us" in res and "core_us" in res:
        res["gateway_overhead_us"] = round(res["gateway_memory_us"] - res["core_us"], 2)
        print(f"{'gateway_overhead':>28}: {res['gateway_overhead_us']:7.2f} us CPU per order")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
