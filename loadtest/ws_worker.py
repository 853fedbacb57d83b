"""One load-generator process: C websocket connections, one firm each, driven open-loop.

The orchestrator (:mod:`loadtest.ws_run`) starts ``python -m loadtest _worker`` processes,
writes one JSON spec line to each one's stdin, waits until every worker prints ``READY``
(connected, authenticated, subscribed), then writes ``START <t0>`` with a common start time on
the system-wide monotonic clock. The worker prints one JSON result line and exits.

Open loop, free of coordinated omission
---------------------------------------
Message ``i`` (0-based, counted over this worker's whole schedule) has the *intended* send time
``t0 + i / rate``, fixed before the run. The sender wakes at most once per event-loop tick,
builds every message whose intended time has come, appends each frame to its connection's
buffer and writes each buffer with one ``transport.write``. It never waits for a reply. The
``req_id`` of scheduled message ``i`` is ``i`` itself, so an acknowledgement's latency is
``arrival - (t0 + i / rate)`` with no per-message bookkeeping; a server that stalls therefore
shows its stall in every message that should have been sent meanwhile, and a generator that
falls behind shows it too (``send_lag_ms``, how late the oldest due message went out).

Latencies are appended to compact ``array('q')`` buffers in microseconds during the run (about
40 ns each) and recorded into HdrHistograms (1 us .. 60 s, 3 significant digits) after it,
grouped by value: the histogram is the same as if every value had been recorded on arrival.

Order flow (per connection, i.e. per firm)
-------------------------------------------
* new passive limit orders at 1..``depth_ticks`` ticks from the mid on either side;
* crossing IOC orders priced ``cross_ticks`` through the mid (they trade with resting orders
  of other firms, or expire);
* cancels of the firm's oldest live order (by ``client_order_id``, so no round trip is needed
  to learn the order id);
* amends of the newest live order (quantity down, which keeps priority, or a new passive
  price).
A firm keeps at most ``max_live`` orders: above it a new order becomes a cancel. Fills and
cancels learned from execution reports drop orders from the live set. A cancel or amend that
races a fill is refused by the exchange; that is a business reject, counted apart from errors.

Execution-report latency: from the intended send time of a ``place_order`` to the arrival of
the first execution report (``new``, ``trade``, ``rejected``, ``expired``) that carries its
``client_order_id``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import resource
import sys
import time
from array import array

import orjson

from .ws_proto import text_frame, ws_connect

# method codes stored per scheduled message (bytearray, one byte each)
M_PLACE, M_CROSS, M_CANCEL, M_AMEND = 1, 2, 3, 4
METHOD_NAMES = {
    M_PLACE: "place_order",
    M_CROSS: "place_order_crossing",
    M_CANCEL: "cancel_order",
    M_AMEND: "amend_order",
}
TIMELINE_S = 0.1  # bucket of the acknowledgement-latency timeline, seconds
CTRL_BASE = 1_000_000_000  # req_ids of control messages (auth, subscribe, cancel_all)

# Reply error codes that are the exchange refusing the business request (the request was
# well-formed and handled); everything else, and every unanswered request, is an error.
GATEWAY_CODES = {
    "BAD_JSON",
    "BAD_REQUEST",
    "BINARY_NOT_SUPPORTED",
    "FRAME_TOO_LARGE",
    "UNKNOWN_METHOD",
    "INVALID_PARAMS",
    "NOT_AUTHENTICATED",
    "AUTH_FAILED",
    "ALREADY_AUTHENTICATED",
    "FORBIDDEN",
    "RATE_LIMITED",
    "UNKNOWN_CHANNEL",
    "NOT_SUBSCRIBED",
    "SLOW_CONSUMER",
    "SHUTTING_DOWN",
    "NOT_FOUND",
    "INTERNAL_ERROR",
    "OVERLOADED",
}


def fmt_px(fen: int) -> bytes:
    return f"{fen // 100}.{fen % 100:02d}".encode()


class Conn:
    """One firm's connection and its live orders."""

    __slots__ = ("idx", "proto", "out", "live", "ctrl", "closed_early", "api_key")

    def __init__(self, idx: int, api_key: str):
        self.idx = idx
        self.api_key = api_key
        self.proto = None
        self.out: list[bytes] = []
        self.live: dict[bytes, tuple] = {}  # client_order_id -> (side, price_fen, qty)
        self.ctrl: dict[int, asyncio.Future] = {}
        self.closed_early = False


class Worker:
    def __init__(self, spec: dict):
        self.spec = spec
        self.url = spec["url"]
        self.rate = float(spec["rate"])
        self.duration = float(spec["duration"])
        self.total = int(self.rate * self.duration)
        self.wid = int(spec.get("worker_id", 0))
        self.instrument = spec.get("instrument", "CEA-2026").encode()
        self.segment = spec.get("segment", "main").encode()
        self.mid = int(spec.get("mid_fen", 8500))
        self.depth_ticks = int(spec.get("depth_ticks", 20))
        self.cross_ticks = int(spec.get("cross_ticks", 5))
        self.max_live = int(spec.get("max_live", 100))
        self.max_qty = int(spec.get("max_qty", 10))
        mix = spec.get("mix") or {}
        self.p_new = float(mix.get("new", 0.50))
        self.p_cross = float(mix.get("cross", 0.10))
        self.p_cancel = float(mix.get("cancel", 0.25))
        # amend: the rest
        self.subscribe = list(spec.get("subscribe", ["executions"]))
        self.passive = bool(spec.get("passive", False))
        self.batch = bool(spec.get("batch", False))
        self.drain = float(spec.get("drain", 5.0))
        self.tick = float(spec.get("tick_ms", 1.0)) / 1000.0
        self.backlog_limit = int(spec.get("backlog_bytes", 8 << 20))
        self.rng = random.Random(int(spec.get("seed", 1)) * 1000 + self.wid)
        self.conns = [Conn(i, k) for i, k in enumerate(spec["api_keys"])]
        self.methods = bytearray(self.total)
        self.acked = bytearray(self.total)
        self.exec_seen = bytearray(self.total)
        self.ack_lat = array("q")
        # worst acknowledgement latency per TIMELINE_S of intended send time: where in the
        # run the tail came from (a stall shows as a spike, queueing as a rising slope)
        self.ack_timeline = array("q", bytes(8 * (int(self.duration / TIMELINE_S) + 1)))
        self.exec_lat = array("q")
        self.send_lag = array("q")
        self.errors: dict[str, int] = {}
        self.rejects: dict[str, int] = {}
        self.n_ack = 0
        self.n_ok = 0
        self.n_exec_reports = 0
        self.n_pushes = 0
        self.n_sent = 0
        self.n_dropped = 0
        self.t0 = 0.0
        self.last_ack = 0.0
        self.first_ack = 0.0
        self._ctrl_id = CTRL_BASE + self.wid * 100_000
        # client_order_id = <run tag><worker>-<schedule index>: unique per run, because the
        # exchange makes place_order idempotent by (firm, client_order_id) - a sweep reuses
        # the same firms, and a repeated id would be answered from the idempotency window
        # instead of placing an order
        tag = spec.get("run_tag") or os.urandom(3).hex()
        self.coid_prefix = f"{tag}w{self.wid}-".encode()
        # pre-encoded fragments
        ins, seg = self.instrument, self.segment
        self._place_head = (
            b',"method":"place_order","params":{"instrument":"'
            + ins
            + b'","segment":"'
            + seg
            + b'","side":"'
        )
        self._px = {p: fmt_px(p) for p in range(max(1, self.mid - 200), self.mid + 201)}

    # ------------------------------------------------------------------ receiving
    def on_message_factory(self, conn: Conn):
        loads = orjson.loads
        mono = time.monotonic
        total = self.total
        rate = self.rate
        acked = self.acked
        exec_seen = self.exec_seen
        ack_lat = self.ack_lat
        timeline = self.ack_timeline
        per_bucket = rate * TIMELINE_S
        exec_lat = self.exec_lat
        live = conn.live
        prefix = self.coid_prefix
        plen = len(prefix)
        errors = self.errors
        rejects = self.rejects

        def handle(m, now):
            rid = m.get("req_id")
            if rid is not None:
                if 0 <= rid < total:
                    if acked[rid]:
                        errors["DUPLICATE_REPLY"] = errors.get("DUPLICATE_REPLY", 0) + 1
                        return
                    acked[rid] = 1
                    self.n_ack += 1
                    self.last_ack = now
                    lat = int((now - self.t0 - rid / rate) * 1e6)
                    ack_lat.append(lat)
                    b = int(rid / per_bucket)
                    if lat > timeline[b]:
                        timeline[b] = lat
                    if m.get("ok"):
                        self.n_ok += 1
                    else:
                        code = (m.get("error") or {}).get("code", "UNKNOWN")
                        d = errors if code in GATEWAY_CODES else rejects
                        d[code] = d.get(code, 0) + 1
                else:
                    fut = conn.ctrl.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(m)
                return
            ch = m.get("channel")
            self.n_pushes += 1
            if ch == "executions":
                self.n_exec_reports += 1
                d = m.get("data") or {}
                coid = d.get("client_order_id")
                if not coid:
                    return
                bcoid = coid.encode()
                if d.get("leaves_qty", 1) == 0:
                    live.pop(bcoid, None)
                if bcoid.startswith(prefix):
                    try:
                        i = int(bcoid[plen:])
                    except ValueError:
                        return
                    if 0 <= i < total and not exec_seen[i]:
                        exec_seen[i] = 1
                        exec_lat.append(int((now - self.t0 - i / rate) * 1e6))

        def on_message(payload: bytes):
            now = mono()
            try:
                m = loads(payload)
            except orjson.JSONDecodeError:
                errors["CLIENT_BAD_JSON"] = errors.get("CLIENT_BAD_JSON", 0) + 1
                return
            if type(m) is list:
                for x in m:
                    handle(x, now)
            else:
                handle(m, now)

        return on_message

    # ------------------------------------------------------------------ control requests
    async def ctrl(self, conn: Conn, method: str, params: dict, timeout: float = 10.0) -> dict:
        self._ctrl_id += 1
        rid = self._ctrl_id
        fut = asyncio.get_running_loop().create_future()
        conn.ctrl[rid] = fut
        conn.proto.send_text(orjson.dumps({"req_id": rid, "method": method, "params": params}))
        return await asyncio.wait_for(fut, timeout)

    def passive_factory(self, conn: Conn):
        """Subscriber-only connection: decode replies to control requests, count pushes."""
        loads = orjson.loads

        def on_message(payload: bytes):
            if conn.ctrl:
                m = loads(payload)
                for x in m if type(m) is list else (m,):
                    rid = x.get("req_id")
                    if rid is None:
                        self.n_pushes += 1
                        continue
                    fut = conn.ctrl.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(x)
            else:
                self.n_pushes += 1

        return on_message

    async def connect_one(self, conn: Conn, sem: asyncio.Semaphore):
        async with sem:
            factory = self.passive_factory if self.passive else self.on_message_factory
            conn.proto = await ws_connect(self.url, factory(conn))
            r = await self.ctrl(
                conn, "auth", {"api_key": conn.api_key, **({"batch": True} if self.batch else {})}
            )
            if not r.get("ok"):
                raise RuntimeError(f"auth failed: {r}")
            for ch in self.subscribe:
                r = await self.ctrl(conn, "subscribe", {"channel": ch})
                if not r.get("ok"):
                    raise RuntimeError(f"subscribe {ch} failed: {r}")
            if self.passive and self.spec.get("stall"):
                # a subscriber that stops reading: the server must bound what it queues
                conn.proto.transport.pause_reading()

    # ------------------------------------------------------------------ sending
    def build(self, i: int, conn: Conn) -> bytes:
        """The frame of scheduled message ``i`` for ``conn``; updates the firm's live set."""
        rng = self.rng
        r = rng.random()
        live = conn.live
        nlive = len(live)
        if r < self.p_new:
            kind = M_PLACE
        elif r < self.p_new + self.p_cross:
            kind = M_CROSS
        elif r < self.p_new + self.p_cross + self.p_cancel:
            kind = M_CANCEL
        else:
            kind = M_AMEND
        if kind >= M_CANCEL and not nlive:
            kind = M_PLACE
        elif kind == M_PLACE and nlive >= self.max_live:
            kind = M_CANCEL
        self.methods[i] = kind
        if kind == M_CANCEL:
            coid = next(iter(live))
            del live[coid]
            return text_frame(
                b'{"req_id":%d,"method":"cancel_order","params":'
                b'{"client_order_id":"%s"}}' % (i, coid)
            )
        if kind == M_AMEND:
            coid = next(reversed(live))
            side, price, qty = live[coid]
            if qty > 1 and rng.random() < 0.5:
                qty -= 1
                live[coid] = (side, price, qty)
                return text_frame(
                    b'{"req_id":%d,"method":"amend_order","params":'
                    b'{"client_order_id":"%s","qty":%d}}' % (i, coid, qty)
                )
            off = int(rng.random() * self.depth_ticks) + 1
            new_price = self.mid - off if side == "buy" else self.mid + off
            if new_price == price:  # an amend that changes nothing is refused (NO_CHANGE)
                new_price = (
                    new_price + 1
                    if off > 1 and side == "buy" or off == 1 and side == "sell"
                    else new_price - 1
                )
            price = new_price
            live[coid] = (side, price, qty)
            return text_frame(
                b'{"req_id":%d,"method":"amend_order","params":'
                b'{"client_order_id":"%s","price":"%s"}}' % (i, coid, self._px[price])
            )
        coid = self.coid_prefix + str(i).encode()
        r2 = rng.random()
        buy = r2 < 0.5
        qty = int(rng.random() * self.max_qty) + 1
        if kind == M_CROSS:
            # crossing IOC: priced through the mid, trades with another firm's resting order
            price = self.mid + self.cross_ticks if buy else self.mid - self.cross_ticks
            return text_frame(
                b'{"req_id":%d%s%s","qty":%d,"price":"%s","tif":"IOC",'
                b'"client_order_id":"%s"}}'
                % (i, self._place_head, b"buy" if buy else b"sell", qty, self._px[price], coid)
            )
        off = int(rng.random() * self.depth_ticks) + 1
        price = self.mid - off if buy else self.mid + off
        side = "buy" if buy else "sell"
        live[coid] = (side, price, qty)
        return text_frame(
            b'{"req_id":%d%s%s","qty":%d,"price":"%s","client_order_id":"%s"}}'
            % (i, self._place_head, side.encode(), qty, self._px[price], coid)
        )

    async def sender(self):
        loop_sleep = asyncio.sleep
        mono = time.monotonic
        rate = self.rate
        t0 = self.t0
        total = self.total
        conns = self.conns
        nconn = len(conns)
        build = self.build
        lag = self.send_lag
        limit = self.backlog_limit
        tick = self.tick
        i = 0
        while i < total:
            now = mono()
            due = int((now - t0) * rate) + 1
            if due > total:
                due = total
            if due > i:
                lag.append(int((now - (t0 + i / rate)) * 1e6))
                touched = []
                for j in range(i, due):
                    c = conns[j % nconn]
                    if c.closed_early:
                        self.n_dropped += 1
                        self.errors["DISCONNECTED"] = self.errors.get("DISCONNECTED", 0) + 1
                        continue
                    if not c.out:
                        touched.append(c)
                    c.out.append(build(j, c))
                for c in touched:
                    t = c.proto.transport
                    if t.is_closing():
                        c.closed_early = True
                        self.n_dropped += len(c.out)
                        self.errors["DISCONNECTED"] = self.errors.get("DISCONNECTED", 0) + len(
                            c.out
                        )
                    elif t.get_write_buffer_size() > limit:
                        # the server stopped reading: do not buffer without bound
                        self.n_dropped += len(c.out)
                        self.errors["CLIENT_BACKLOG"] = self.errors.get("CLIENT_BACKLOG", 0) + len(
                            c.out
                        )
                    else:
                        t.write(b"".join(c.out))
                        self.n_sent += len(c.out)
                    c.out.clear()
                i = due
            # sleep until the next message is due, but at least one tick: sub-tick sleeps
            # only spin the event loop (each wake-up costs more than the messages it sends)
            delay = t0 + i / rate - mono()
            await loop_sleep(delay if delay > tick else tick)

    # ------------------------------------------------------------------ the run
    async def main(self):
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(64)
        t_conn = time.monotonic()
        await asyncio.gather(*(self.connect_one(c, sem) for c in self.conns))
        connect_s = time.monotonic() - t_conn
        print("READY", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.startswith("START"):
            return {"error": f"expected START, got {line!r}"}
        self.t0 = float(line.split()[1])
        gc.collect()
        gc.freeze()
        gc.disable()  # no cyclic garbage in the hot path; no 10 ms collector pauses
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        await loop_sleep_until(self.t0)
        if self.passive:
            return await self.passive_run(ru0, connect_s)
        await self.sender()
        t_end_send = time.monotonic()
        # drain: wait for the outstanding replies
        deadline = t_end_send + self.drain
        while self.n_ack < self.n_sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # late execution reports of the last orders
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        gc.enable()
        unanswered = self.n_sent - self.n_ack
        if unanswered > 0:
            self.errors["NO_REPLY"] = self.errors.get("NO_REPLY", 0) + unanswered
        # tidy the market for the next step of a sweep: cancel what is left
        if self.spec.get("cancel_all_after", True):
            for c in self.conns:
                if c.proto is not None and not c.proto.transport.is_closing():
                    try:
                        await self.ctrl(c, "cancel_all", {}, timeout=10)
                    except Exception:
                        pass
        for c in self.conns:
            if c.proto is not None:
                c.proto.close()
        by_method: dict[str, int] = {}
        for code, name in METHOD_NAMES.items():
            by_method[name] = self.methods.count(code)
        return {
            "worker_id": self.wid,
            "connections": len(self.conns),
            "connect_seconds": round(connect_s, 3),
            "scheduled": self.total,
            "sent": self.n_sent,
            "dropped": self.n_dropped,
            "acked": self.n_ack,
            "ok": self.n_ok,
            "exec_reports": self.n_exec_reports,
            "pushes": self.n_pushes,
            "t0": self.t0,
            "first_ack_offset": None,
            "last_ack_offset": (self.last_ack - self.t0) if self.n_ack else None,
            "send_end_offset": t_end_send - self.t0,
            "errors": self.errors,
            "rejects": self.rejects,
            "by_method": by_method,
            "cpu_seconds": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "ack_lat_us": encode_samples(self.ack_lat),
            "ack_timeline_max_us": self.ack_timeline.tolist(),
            "exec_lat_us": encode_samples(self.exec_lat),
            "send_lag_us": encode_samples(self.send_lag),
            "closed": sum(
                1 for c in self.conns if c.proto is None or c.proto.close_code is not None
            ),
            "close_codes": sorted(
                {
                    c.proto.close_code
                    for c in self.conns
                    if c.proto is not None and c.proto.close_code
                }
            ),
        }

    async def passive_run(self, ru0, connect_s: float) -> dict:
        await loop_sleep_until(self.t0 + self.duration + 0.5)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        res = {
            "worker_id": self.wid,
            "passive": True,
            "connections": len(self.conns),
            "connect_seconds": round(connect_s, 3),
            "frames": sum(c.proto.frames_in for c in self.conns),
            "bytes": sum(c.proto.bytes_in for c in self.conns),
            "pushes": self.n_pushes,
            "closed": sum(1 for c in self.conns if c.proto.transport.is_closing()),
            "close_codes": sorted({c.proto.close_code for c in self.conns if c.proto.close_code}),
            "close_reasons": sorted(
                {c.proto.close_reason for c in self.conns if c.proto.close_reason}
            )[:5],
            "cpu_seconds": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        }
        for c in self.conns:
            c.proto.close()
        await asyncio.sleep(0.1)
        return res


async def loop_sleep_until(t: float):
    while True:
        d = t - time.monotonic()
        if d <= 0:
            return
        await asyncio.sleep(min(d, 0.5))


def encode_samples(a: array) -> str:
    """Latency samples (us) -> base64 of an encoded HdrHistogram."""
    from .ws_hist import from_samples

    return from_samples(a).encode().decode("ascii")


def worker_main() -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    spec = orjson.loads(sys.stdin.readline())
    w = Worker(spec)
    try:
        res = asyncio.run(w.main())
    except Exception as e:  # report, do not hang the orchestrator
        print("RESULT " + orjson.dumps({"error": f"{type(e).__name__}: {e}"}).decode(), flush=True)
        return 1
    print("RESULT " + orjson.dumps(res).decode(), flush=True)
    return 0
