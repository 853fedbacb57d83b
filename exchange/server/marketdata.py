"""``serve --market-data``: a market-data gateway that follows the journal (ADR 0014).

    python -m exchange serve --market-data --journal nats://h1:4222,h2:4222/MARKET \\
        --data-dir DIR --port 8090 [--leader ws://leader:8080/ws]

A gateway serves websocket subscribers the public channels - ``book:<instrument>:<segment>``,
``trades:<instrument>``, ``ticker:<instrument>[@<segment>]`` - snapshot plus sequenced
deltas exactly as the leader does, and forwards everything else a client sends (orders,
``executions`` and ``balances`` subscriptions) to the leader. Several run behind a load
balancer; none of them is on the leader's hot path.

Where the data comes from: the gateway is a journal follower
(:class:`~exchange.journal.follower.Follower`, as the hot standby is). It applies the
stream to a core replica of its own and turns the events of each applied command into the
market-data messages, so the messages and their sequence numbers are the same on every
gateway by construction: they are functions of the journal.

* ``book:...`` - ``seq`` is the book's own update counter (``book_seq``, part of the
  replicated state; the leader numbers its book pushes the same way).
* ``trades:...`` - ``seq`` is the ``trade_id`` (numbered by the core, exchange-wide): it
  grows by one per trade of the instrument when one instrument trades, and jumps over the
  other instruments' trades otherwise.
* ``ticker:...`` - ``seq`` is the journal seq of the command after which the ticker changed
  (a ticker is a whole state, never a delta).

Resuming (``subscribe`` with ``from_seq``): each book and trades channel keeps its last
``ring`` messages (the newest, whether or not anyone subscribes: a client failing over from
another gateway brings its ``from_seq`` here). When every message after ``from_seq`` is in
the ring, or not yet made (this gateway is behind the one the client left), the reply is
``{"channel", "seq": from_seq, "resumed": true}`` followed by the missed messages; else it is
the usual snapshot with ``"resumed": false``. A ticker is always its snapshot, ``resumed``
saying whether the client's ``from_seq`` was the current one.

Forwarding: the first request a session sends that is not served here opens a websocket of
its own to the leader (the address in the journal's leader lease, or ``--leader``),
authenticated with the key the client authenticated with here, and relays the request and
its reply (``req_id`` mapped both ways) and the pushes of channels subscribed there. When
that websocket drops, the requests in flight are answered ``LEADER_UNAVAILABLE`` (the client
retries a ``place_order`` with its ``client_order_id``), and a session with a channel
subscribed at the leader is closed (1012) so that its client re-subscribes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from ..core import errors as E
from ..access.credentials import ApiKeyRevoked
from ..core.events import BookUpdate, DayEnded, MarketState, Trade
from ..journal.follower import Follower, log as follower_log
from ..journal.runner import _SEAL_PREFIX
from ..core.exchange import SequenceError
from ..journal.codec import decode_payload
from .protocol import ticker_channel, wire_book_changes, wire_depth, wire_ticker, wire_trade

log = logging.getLogger("exchange.server.marketdata")

LEADER_UNAVAILABLE = "LEADER_UNAVAILABLE"
CLOSE_SLOW = 4008
CLOSE_REVOKED = 4003
DEFAULT_RING = 4096  # messages kept per channel for resuming subscribers
DEFAULT_INTERVAL = 0.05  # seconds between follower steps
WRITE_LIMIT = 4 << 20  # bytes buffered for one subscriber before it is a slow consumer
PUBLIC = ("book", "trades", "ticker")
MD_KEY = web.AppKey("market_data", object)

_dumps = orjson.dumps
_loads = orjson.loads


def frame(payload: bytes) -> bytes:
    """A final, unmasked text frame (RFC 6455, server to client)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def _err(req_id, code: str, message: str, **extra) -> bytes:
    return _dumps(
        {"req_id": req_id, "ok": False, "error": dict({"code": code, "message": message}, **extra)}
    )


class ProtocolFailure(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ====================================================================== following


class EmittingFollower(Follower):
    """A follower that hands every command it applies after its start, with the events the
    core made of it, to ``on_command(cmd, seq, ts, events)``."""

    on_command = None

    async def _apply(self, to_seq: int) -> int:
        ex = self.exchange
        n0 = self.applied
        if to_seq <= ex.last_seq:
            self.lag_seq = 0
            return 0
        apply = ex.apply
        emit = self.on_command
        async for rows in self.journal.read_rows(ex.last_seq + 1, to_seq):
            for seq, ts, p, h in rows:
                d = _loads(p)
                cmd = decode_payload(d)
                try:
                    events = apply(cmd, seq, ts)
                except SequenceError:
                    raise
                except Exception:  # as it did live (and on replay)
                    follower_log.warning(
                        "core raised on seq %d (%s), as it did live", seq, cmd.TYPE, exc_info=True
                    )
                    events = ()
                if bytes(p[: len(_SEAL_PREFIX)]) == _SEAL_PREFIX:
                    self._check_seal(seq, d)
                self.head_hash = bytes(h)
                self.applied += 1
                if emit is not None and events:
                    emit(cmd, seq, ts, events)
        self.lag_seq = max(0, self.journal.last_seq - ex.last_seq)
        return self.applied - n0


class Channel:
    """One public channel: its current seq, the ring of its last messages (framed), the
    messages made since the last flush, and its subscribers."""

    __slots__ = ("name", "seq", "floor", "ring", "pending", "subs")

    def __init__(self, name: str, seq: int):
        self.name = name
        self.seq = seq
        # every message with a seq above ``floor`` is in the ring (or still to come)
        self.floor = seq
        self.ring: deque = deque()
        self.pending: list = []
        self.subs: set = set()

    def add(self, seq: int, msg: bytes, ring_max: int) -> None:
        f = frame(msg)
        self.seq = seq
        ring = self.ring
        ring.append((seq, f))
        if len(ring) > ring_max:
            self.floor = ring.popleft()[0]
        self.pending.append((seq, f))

    def since(self, seq: int) -> bytes:
        """The framed messages after ``seq`` (the caller checked ``floor <= seq``)."""
        ring = self.ring
        if not ring or ring[-1][0] <= seq:
            return b""
        return b"".join(f for s, f in ring if s > seq)


class MDSession:
    """One downstream websocket connection."""

    __slots__ = (
        "md",
        "ws",
        "transport",
        "cred",
        "api_key",
        "cod",
        "subs",
        "closed",
        "upstream",
        "up_channels",
        "peer",
        "auth_failures",
    )

    def __init__(self, md: "MarketData", ws, transport, peer: str):
        self.md = md
        self.ws = ws
        self.transport = transport
        self.cred = None
        self.api_key: str | None = None
        self.cod = False
        self.subs: dict[str, int] = {}  # public channel -> last seq sent
        self.closed = False
        self.upstream: Upstream | None = None
        self.up_channels: set[str] = set()  # channels subscribed at the leader
        self.peer = peer
        self.auth_failures = 0

    def write(self, data: bytes, n: int = 1) -> None:
        """Write framed messages; a subscriber that does not read is closed (4008)."""
        tr = self.transport
        if self.closed or tr is None or tr.is_closing():
            return
        if tr.get_write_buffer_size() > self.md.write_limit:
            self.md.metrics["slow_consumer_disconnects"] += 1
            self.kill(
                CLOSE_SLOW, f"{E.SLOW_CONSUMER}: more than {self.md.write_limit} bytes waiting"
            )
            return
        tr.write(data)
        m = self.md.metrics
        m["messages_out"] += n
        m["writes"] += 1

    def send(self, msg: bytes) -> None:
        self.write(frame(msg))

    def reply(self, req_id, result) -> None:
        self.send(_dumps({"req_id": req_id, "ok": True, "result": result}))

    def error(self, req_id, code: str, message: str, **extra) -> None:
        self.send(_err(req_id, code, message, **extra))

    def kill(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.md.detach(self)
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 2.0)
        except Exception:
            if self.transport is not None:
                self.transport.abort()


# ====================================================================== forwarding


class Upstream:
    """One session's websocket to the leader, authenticated with the session's key."""

    def __init__(self, md: "MarketData", s: MDSession):
        self.md = md
        self.s = s
        self.ws = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending: dict[int, Any] = {}  # upstream req_id -> the client's req_id
        self.next_id = 1
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        md = self.md
        try:
            ws = await md.connect_leader(self.s.api_key, self.s.cod)
        except Exception as e:
            if not self.ready.done():
                self.ready.set_exception(e)
            self._gone()
            return
        self.ws = ws
        self.ready.set_result(True)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSED, WSMsgType.CLOSE):
                        break
                    continue
                self._relay(msg.data)
        except Exception:
            pass
        finally:
            self._gone()

    def _relay(self, data) -> None:
        s = self.s
        obj = _loads(data)
        for m in obj if type(obj) is list else (obj,):
            if "req_id" in m:
                rid = m["req_id"]
                if rid in self.pending:
                    m["req_id"] = self.pending.pop(rid)
                    s.send(_dumps(m))
                    md = self.md
                    md.metrics["forwarded_replies"] += 1
            else:  # a push of a channel subscribed at the leader: as it is
                s.send(_dumps(m))

    async def request(self, req_id, method: str, params) -> None:
        try:
            await self.ready
        except Exception as e:
            self.s.error(
                req_id, LEADER_UNAVAILABLE, f"the leader cannot be reached from this gateway: {e}"
            )
            return
        ws = self.ws
        if ws is None or ws.closed:
            self.s.error(req_id, LEADER_UNAVAILABLE, "the connection to the leader dropped")
            return
        uid = self.next_id
        self.next_id += 1
        self.pending[uid] = req_id
        msg = {"req_id": uid, "method": method}
        if params is not None:
            msg["params"] = params
        self.md.metrics["forwarded_requests"] += 1
        try:
            await ws.send_str(_dumps(msg).decode())
        except Exception:
            pass  # the reader sees the drop and answers the request

    def _gone(self) -> None:
        s = self.s
        if s.upstream is self:
            s.upstream = None
        for rid in list(self.pending.values()):
            s.error(
                rid,
                LEADER_UNAVAILABLE,
                "the connection to the leader dropped; the request's outcome is unknown",
            )
        self.pending.clear()
        if s.up_channels and not s.closed:
            s.kill(
                WSCloseCode.SERVICE_RESTART, "the connection to the leader dropped; subscribe again"
            )

    async def close(self) -> None:
        ws = self.ws
        if ws is not None and not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except Exception:
                pass
        self.task.cancel()


# ====================================================================== the gateway


class MarketData:
    """The follower, the public channels and the downstream sessions."""

    def __init__(
        self,
        follower: EmittingFollower,
        *,
        ring: int = DEFAULT_RING,
        interval: float = DEFAULT_INTERVAL,
        leader: str | None = None,
        lease=None,
        cfg=None,
        node: str = "",
    ):
        self.follower = follower
        self.ex = follower.exchange
        self.ring = max(1, int(ring))
        self.interval = interval
        self.leader_fixed = leader
        self.lease = lease
        self.leader_address = leader or ""
        self.cfg = cfg
        self.node = node
        self.write_limit = WRITE_LIMIT
        self.channels: dict[str, Channel] = {}
        self.tickers: dict[tuple, Channel] = {}  # board -> its ticker channel (subscribed)
        self._tick_last: dict[tuple, bytes] = {}
        self.sessions: set[MDSession] = set()
        self.key_sessions: dict[str, int] = {}
        self.metrics = {
            "messages_out": 0,
            "writes": 0,
            "connections_total": 0,
            "slow_consumer_disconnects": 0,
            "forwarded_requests": 0,
            "forwarded_replies": 0,
            "resumed": 0,
            "resume_snapshots": 0,
            "steps": 0,
            "step_errors": 0,
        }
        self.ready = False
        self.stepped_at = 0.0
        self.error: str | None = None
        self._http = None  # aiohttp ClientSession for the upstreams
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        follower.on_command = self.on_command

    # ---------------------------------------------------------------- channels
    def channel(self, name: str) -> Channel | None:
        """The public channel ``name`` (made on first use: its ring starts now), or None."""
        ch = self.channels.get(name)
        if ch is not None:
            return ch
        ex = self.ex
        kind, _, rest = name.partition(":")
        if kind == "book":
            instr, _, seg = rest.partition(":")
            book = ex.books.get((instr, seg))
            if book is None:
                return None
            ch = Channel(name, book.seq)
        elif kind == "trades":
            if rest not in ex.instruments:
                return None
            ch = Channel(name, ex.next_trade_id - 1)
        else:
            return None
        self.channels[name] = ch
        return ch

    def start_channels(self) -> None:
        """Every book and trades channel from the followed state: their rings fill from the
        first command applied, subscribed or not (a resuming client may come from another
        gateway)."""
        for instr, seg in self.ex.books:
            self.channel(f"book:{instr}:{seg}")
        for instr in self.ex.instruments:
            self.channel(f"trades:{instr}")

    def on_command(self, cmd, seq, ts, events) -> None:
        """Follower hook: the market-data messages of one applied command, in its order."""
        boards = None
        ring = self.ring
        channels = self.channels
        for ev in events:
            t = type(ev)
            if t is BookUpdate:
                name = f"book:{ev.instrument}:{ev.segment}"
                ch = channels.get(name) or self.channel(name)
                if ch is not None:
                    bs = ev.book_seq
                    ch.add(
                        bs,
                        _dumps(
                            {
                                "channel": name,
                                "seq": bs,
                                "data": {
                                    "instrument": ev.instrument,
                                    "segment": ev.segment,
                                    "book_seq": bs,
                                    "changes": wire_book_changes(ev.changes),
                                },
                            }
                        ),
                        ring,
                    )
                if self.tickers:
                    boards = boards or set()
                    boards.add((ev.instrument, ev.segment))
            elif t is Trade:
                name = f"trades:{ev.instrument}"
                ch = channels.get(name) or self.channel(name)
                if ch is not None:
                    ch.add(
                        ev.trade_id,
                        _dumps({"channel": name, "seq": ev.trade_id, "data": wire_trade(ev)}),
                        ring,
                    )
                if self.tickers:
                    boards = boards or set()
                    boards.add((ev.instrument, ev.segment))
            elif t is MarketState or t is DayEnded:
                if self.tickers:
                    boards = set(self.tickers)
            elif t is ApiKeyRevoked:
                for s in [
                    s for s in self.sessions if s.cred is not None and s.cred.key_id == ev.key_id
                ]:
                    s.kill(CLOSE_REVOKED, "KEY_REVOKED: the API key was revoked")
        if boards:
            for key in boards:
                ch = self.tickers.get(key)
                if ch is None:
                    continue
                data = _dumps(wire_ticker(self.ex, *key))
                if self._tick_last.get(key) == data:
                    continue
                self._tick_last[key] = data
                ch.add(seq, b'{"channel":%s,"seq":%d,"data":%s}' % (_dumps(ch.name), seq, data), 1)

    def flush(self) -> None:
        """Send each channel's new messages to its subscribers, only those after the seq a
        subscriber has; a subscriber's messages of all its channels go out in one write."""
        out: dict = {}
        for ch in list(self.channels.values()) + list(self.tickers.values()):
            pending = ch.pending
            if not pending:
                continue
            ch.pending = []
            if not ch.subs:
                continue
            first = pending[0][0]
            last = pending[-1][0]
            whole = b"".join(f for _, f in pending)
            n = len(pending)
            name = ch.name
            for s in ch.subs:
                seen = s.subs.get(name)
                if seen is None or seen >= last:
                    continue
                s.subs[name] = last
                if seen < first:
                    part, k = whole, n
                else:
                    fs = [f for q, f in pending if q > seen]
                    part, k = b"".join(fs), len(fs)
                o = out.get(s)
                if o is None:
                    out[s] = [part, k]
                else:
                    o[0] += part
                    o[1] += k
        for s, (data, k) in out.items():
            s.write(data, k)

    # ---------------------------------------------------------------- subscribing
    def subscribe(self, s: MDSession, name: str, from_seq: int | None) -> tuple[dict, bytes]:
        """The reply's result and the framed messages to send after it."""
        ex = self.ex
        kind, _, rest = name.partition(":")
        if kind == "ticker":
            sym, _, seg = rest.partition("@")
            key = (sym, seg or "main")
            if key not in ex.books or name != ticker_channel(*key):
                raise ProtocolFailure(E.UNKNOWN_CHANNEL, f"unknown channel {name[:80]!r}")
            ch = self.tickers.get(key)
            snap = wire_ticker(ex, *key)
            if ch is None:
                ch = self.tickers[key] = Channel(name, ex.last_seq)
                self._tick_last[key] = _dumps(snap)
            ch.subs.add(s)
            s.subs[name] = ch.seq
            out = {"channel": name, "seq": ch.seq, "snapshot": snap}
            if from_seq is not None:
                out["resumed"] = from_seq == ch.seq
            return out, b""
        ch = self.channel(name) if kind in ("book", "trades") else None
        if ch is None:
            raise ProtocolFailure(E.UNKNOWN_CHANNEL, f"unknown channel {name[:80]!r}")
        ch.subs.add(s)
        if from_seq is not None and from_seq >= ch.floor:
            # everything after from_seq is in the ring, or not made yet (this gateway is
            # behind the one the client came from): resend the missed, then go on
            self.metrics["resumed"] += 1
            missed = ch.since(from_seq)
            s.subs[name] = max(from_seq, ch.seq)
            return {"channel": name, "seq": from_seq, "resumed": True}, missed
        if from_seq is not None:
            self.metrics["resume_snapshots"] += 1
        s.subs[name] = ch.seq
        out: dict = {"channel": name, "seq": ch.seq}
        if kind == "book":
            instr, _, seg = rest.partition(":")
            out["snapshot"] = wire_depth(ex.books[(instr, seg)])
        if from_seq is not None:
            out["resumed"] = False
        return out, b""

    def unsubscribe(self, s: MDSession, name: str) -> bool:
        if s.subs.pop(name, None) is None:
            return False
        ch = self.channels.get(name)
        if ch is None:
            kind, _, rest = name.partition(":")
            sym, _, seg = rest.partition("@")
            key = (sym, seg or "main")
            ch = self.tickers.get(key)
            if ch is not None:
                ch.subs.discard(s)
                if not ch.subs:
                    del self.tickers[key]
                    self._tick_last.pop(key, None)
            return True
        ch.subs.discard(s)
        return True

    # ---------------------------------------------------------------- sessions
    def attach(self, s: MDSession) -> None:
        self.sessions.add(s)
        self.metrics["connections_total"] += 1

    def detach(self, s: MDSession) -> None:
        if s not in self.sessions:
            return
        self.sessions.discard(s)
        s.closed = True
        for name in list(s.subs):
            self.unsubscribe(s, name)
        if s.cred is not None:
            k = s.cred.key_id
            n = self.key_sessions.get(k, 1) - 1
            if n > 0:
                self.key_sessions[k] = n
            else:
                self.key_sessions.pop(k, None)
        up = s.upstream
        if up is not None:
            s.upstream = None
            s.up_channels.clear()
            asyncio.get_running_loop().create_task(up.close())

    def authenticate(self, s: MDSession, api_key, cod: bool) -> dict:
        if s.cred is not None:
            raise ProtocolFailure(E.ALREADY_AUTHENTICATED, "this connection is authenticated")
        cred = self.ex.modules["credentials"].lookup(api_key)
        if cred is None:
            s.auth_failures += 1
            if s.auth_failures >= getattr(self.cfg, "max_auth_failures", 5):
                s.kill(4001, f"{E.AUTH_FAILED}: {s.auth_failures} failed authentications")
            raise ProtocolFailure(E.AUTH_FAILED, "unknown or revoked API key")
        cap = getattr(self.cfg, "max_connections_per_key", 0) if self.cfg is not None else 0
        if cap and self.key_sessions.get(cred.key_id, 0) >= cap:
            raise ProtocolFailure(E.TOO_MANY_CONNECTIONS, f"the API key has {cap} connections open")
        self.key_sessions[cred.key_id] = self.key_sessions.get(cred.key_id, 0) + 1
        s.cred = cred
        s.api_key = api_key
        s.cod = bool(cod)
        return {
            "key_id": cred.key_id,
            "role": cred.role,
            "firm_id": cred.firm_id,
            "cancel_on_disconnect": s.cod,
            "batch": False,
            "heartbeat_seconds": getattr(self.cfg, "heartbeat_seconds", 15.0),
            "market_data": True,
            "node": self.node,
        }

    def on_request(self, s: MDSession, m) -> None:
        if type(m) is not dict:
            s.error(None, E.BAD_REQUEST, "a request is a JSON object")
            return
        req_id = m.get("req_id")
        method = m.get("method")
        params = m.get("params")
        if type(method) is not str:
            s.error(req_id, E.BAD_REQUEST, "method missing")
            return
        if params is not None and type(params) is not dict:
            s.error(req_id, E.INVALID_PARAMS, "params must be an object")
            return
        p = params or {}
        try:
            if method == "auth":
                s.reply(
                    req_id,
                    self.authenticate(s, p.get("api_key"), p.get("cancel_on_disconnect") is True),
                )
                return
            if method == "ping":
                s.reply(req_id, {"pong": True, "ts": time.time_ns(), "seq": self.ex.last_seq})
                return
            if s.cred is None:
                raise ProtocolFailure(E.NOT_AUTHENTICATED, "send auth first")
            if method in ("subscribe", "unsubscribe"):
                name = p.get("channel")
                if type(name) is not str or not 0 < len(name) <= 128:
                    raise ProtocolFailure(E.INVALID_PARAMS, "channel: a channel name")
                if name.partition(":")[0] in PUBLIC:
                    self._public(s, req_id, method, name, p)
                    return
                if method == "subscribe":
                    s.up_channels.add(name)
                else:
                    s.up_channels.discard(name)
            self.forward(s, req_id, method, params)
        except ProtocolFailure as e:
            s.error(req_id, e.code, e.message)

    def _public(self, s: MDSession, req_id, method: str, name: str, p: dict) -> None:
        if method == "unsubscribe":
            if not self.unsubscribe(s, name):
                raise ProtocolFailure(E.NOT_SUBSCRIBED, f"not subscribed to {name[:80]!r}")
            s.reply(req_id, {"channel": name, "subscribed": False})
            return
        extra = set(p) - {"channel", "from_seq"}
        if extra:
            raise ProtocolFailure(E.INVALID_PARAMS, f"unknown params {sorted(extra)}")
        from_seq = p.get("from_seq")
        if from_seq is not None and (type(from_seq) is not int or from_seq < 0):
            raise ProtocolFailure(E.INVALID_PARAMS, "from_seq: a non-negative integer")
        result, missed = self.subscribe(s, name, from_seq)
        s.reply(req_id, result)
        if missed:
            s.write(missed, missed.count(b'"channel"'))

    def forward(self, s: MDSession, req_id, method: str, params) -> None:
        up = s.upstream
        if up is None:
            up = s.upstream = Upstream(self, s)
        asyncio.get_running_loop().create_task(up.request(req_id, method, params))

    async def connect_leader(self, api_key: str, cod: bool):
        """A websocket to the leader, authenticated with ``api_key``; follows one
        ``NOT_LEADER`` to the address it names."""
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = await self.leader_url()
        for _ in range(2):
            ws = await self._http.ws_connect(url, compress=0, max_msg_size=64 << 20, heartbeat=10.0)
            await ws.send_str(
                _dumps(
                    {
                        "req_id": 0,
                        "method": "auth",
                        "params": {"api_key": api_key, "cancel_on_disconnect": cod},
                    }
                ).decode()
            )
            msg = await asyncio.wait_for(ws.receive(), 10.0)
            r = _loads(msg.data) if msg.type == WSMsgType.TEXT else {}
            if r.get("ok"):
                return ws
            await ws.close()
            e = r.get("error") or {}
            if e.get("code") == "NOT_LEADER" and e.get("leader"):
                url = self.leader_address = e["leader"]
                continue
            raise ConnectionError(f"{e.get('code', 'closed')}: {e.get('message', '')}")
        raise ConnectionError("no leader answered")

    async def leader_url(self) -> str:
        if self.lease is not None and not self.leader_fixed:
            try:
                h = await self.lease.holder()
                if h and h.get("address"):
                    self.leader_address = h["address"]
            except Exception:
                pass
        if not self.leader_address:
            raise ConnectionError("no leader known (the lease names none; give --leader)")
        return self.leader_address

    # ---------------------------------------------------------------- running
    async def run(self) -> None:
        f = self.follower
        while not self._stop.is_set():
            try:
                await f.step()
                self.metrics["steps"] += 1
                self.stepped_at = time.monotonic()
                self.error = None
            except Exception as e:  # the cluster electing: the next step retries
                self.metrics["step_errors"] += 1
                self.error = repr(e)
                log.warning("market data: follower step failed: %r", e)
                if isinstance(e, SequenceError) or type(e).__name__ == "FollowerDiverged":
                    raise
            self.flush()
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    def start(self) -> None:
        self.start_channels()
        self.ready = True
        self.stepped_at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        self._stop.set()
        self.ready = False
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5.0)
            except Exception:
                pass
        for s in list(self.sessions):
            s.kill(WSCloseCode.GOING_AWAY, f"{E.SHUTTING_DOWN}: gateway going away")
        await asyncio.sleep(0)
        if self._http is not None:
            await self._http.close()
            self._http = None


# ====================================================================== HTTP


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    md: MarketData = request.app[MD_KEY]
    cfg = md.cfg
    header_key = None
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        header_key = token.strip()
        if scheme.lower() != "bearer" or md.ex.modules["credentials"].lookup(header_key) is None:
            return web.json_response(
                {
                    "ok": False,
                    "error": {"code": E.AUTH_FAILED, "message": "unknown or revoked API key"},
                },
                status=401,
            )
    if not md.ready:
        return web.json_response(
            {
                "ok": False,
                "error": {"code": E.SHUTTING_DOWN, "message": "the gateway is not serving"},
            },
            status=503,
        )
    hb = getattr(cfg, "heartbeat_seconds", 15.0)
    ws = web.WebSocketResponse(
        heartbeat=hb or None,
        compress=False,
        max_msg_size=4 * getattr(cfg, "max_frame_bytes", 65536),
    )
    await ws.prepare(request)
    tr = request.transport
    s = MDSession(md, ws, tr, request.remote or "")
    md.attach(s)
    timer = asyncio.get_running_loop().call_later(
        getattr(cfg, "auth_timeout_seconds", 10.0), _auth_timeout, s
    )
    if header_key is not None:
        try:
            md.authenticate(
                s, header_key, request.query.get("cancel_on_disconnect", "") in ("1", "true")
            )
        except ProtocolFailure as e:
            s.error(None, e.code, e.message)
            s.kill(4029 if e.code == E.TOO_MANY_CONNECTIONS else 4001, e.code)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    obj = _loads(msg.data)
                except orjson.JSONDecodeError:
                    s.error(None, E.BAD_JSON, "frame is not valid JSON")
                    continue
                for m in obj if type(obj) is list else (obj,):
                    md.on_request(s, m)
            elif msg.type == WSMsgType.BINARY:
                s.error(None, E.BINARY_NOT_SUPPORTED, "send JSON text frames")
            elif msg.type == WSMsgType.ERROR:
                break
            if s.closed:
                break
    finally:
        timer.cancel()
        md.detach(s)
    return ws


def _auth_timeout(s: MDSession) -> None:
    if s.cred is None and not s.closed:
        s.kill(4001, f"{E.NOT_AUTHENTICATED}: no auth within the time limit")


async def readyz(request: web.Request) -> web.Response:
    md: MarketData = request.app[MD_KEY]
    f = md.follower
    fresh = time.monotonic() - md.stepped_at < max(5.0, 20 * md.interval)
    ok = md.ready and fresh
    body = {
        "ok": ok,
        "role": "market-data",
        "last_seq": md.ex.last_seq,
        "journal_lag": f.lag_seq,
        "leader": md.leader_address,
    }
    if md.error:
        body["error"] = md.error
    return web.json_response(body, status=200 if ok else 503)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    md: MarketData = request.app[MD_KEY]
    m = md.metrics
    subs = sum(len(ch.subs) for ch in md.channels.values()) + sum(
        len(ch.subs) for ch in md.tickers.values()
    )
    rows = [
        ("exchange_md_connections", "gauge", "open websocket connections", len(md.sessions)),
        (
            "exchange_md_connections_total",
            "counter",
            "websocket connections accepted",
            m["connections_total"],
        ),
        ("exchange_md_subscriptions", "gauge", "public channel subscriptions", subs),
        (
            "exchange_md_messages_out_total",
            "counter",
            "market-data messages written",
            m["messages_out"],
        ),
        ("exchange_md_writes_total", "counter", "socket writes", m["writes"]),
        (
            "exchange_md_slow_consumer_disconnects_total",
            "counter",
            "subscribers closed for not reading",
            m["slow_consumer_disconnects"],
        ),
        ("exchange_md_resumed_total", "counter", "subscribes resumed from from_seq", m["resumed"]),
        (
            "exchange_md_resume_snapshots_total",
            "counter",
            "subscribes with from_seq answered with a snapshot",
            m["resume_snapshots"],
        ),
        (
            "exchange_md_forwarded_requests_total",
            "counter",
            "requests forwarded to the leader",
            m["forwarded_requests"],
        ),
        ("exchange_md_follower_steps_total", "counter", "journal follower steps", m["steps"]),
        ("exchange_md_follower_errors_total", "counter", "failed follower steps", m["step_errors"]),
        ("exchange_last_seq", "gauge", "last journal seq applied", md.ex.last_seq),
        (
            "exchange_md_journal_lag",
            "gauge",
            "records behind the journal's end at the last step",
            md.follower.lag_seq,
        ),
    ]
    out = []
    for name, kind, help_, v in rows:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n{name} {v}\n")
    return web.Response(
        text="".join(out),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def make_app(md: MarketData) -> web.Application:
    app = web.Application()
    app[MD_KEY] = md
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


# ====================================================================== serve --market-data


def add_arguments(p) -> None:
    """The ``serve`` options of a market-data gateway."""
    p.add_argument(
        "--market-data",
        action="store_true",
        help="run a market-data gateway: follow the JetStream journal, serve the "
        "public channels, forward orders to the leader (docs/DEPLOYMENT.md)",
    )
    p.add_argument(
        "--leader",
        default=None,
        metavar="URL",
        help="market data: the leader's websocket URL (default: the address in "
        "the journal's leader lease)",
    )
    p.add_argument(
        "--md-ring",
        type=int,
        default=DEFAULT_RING,
        metavar="N",
        help=f"market data: messages kept per channel for resuming subscribers "
        f"(default {DEFAULT_RING})",
    )
    p.add_argument(
        "--md-interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"market data: seconds between journal reads (default {DEFAULT_INTERVAL:g})",
    )


async def serve_market_data(args, settings, host: str, port: int, data_dir, new_exchange) -> int:
    """Follow the journal (a core made by ``new_exchange()``, the composition root's
    build_exchange), then serve until SIGINT/SIGTERM."""
    import signal
    from pathlib import Path

    from ..access.credentials import load_secret
    from ..journal import is_replicated, open_journal
    from ..journal.lease import LeaderLease

    target = args.journal or settings.journal.url
    if not is_replicated(target):
        print(
            "serve --market-data needs a JetStream journal: --journal "
            "nats://HOST:4222[,...]/STREAM",
            flush=True,
        )
        return 2
    ex = new_exchange()
    try:
        ex.modules["credentials"].secret = load_secret(Path(data_dir), create=False)
    except FileNotFoundError:
        print(
            f"serve --market-data: no api-key-secret in {data_dir}: copy the leader's "
            f"(every node needs the same one, ADR 0008)",
            flush=True,
        )
        return 2
    follower = EmittingFollower(ex, open_journal(target))
    await follower.start()
    node = args.node_id or f"{socket.gethostname()}-{os.getpid()}"
    lease = None
    if not args.leader:
        lease = LeaderLease(target, node=f"md-{node}")
        await lease.open()
    md = MarketData(
        follower,
        ring=args.md_ring,
        interval=args.md_interval,
        leader=args.leader,
        lease=lease,
        cfg=settings.server,
        node=node,
    )
    md.start()
    app = make_app(md)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    bound = port
    for addr in runner.addresses:
        bound = addr[1]
        break
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    print(
        f"market-data gateway {node} following {follower.journal.target} at seq "
        f"{ex.last_seq}; leader {args.leader or 'from the lease'}",
        flush=True,
    )
    print(f"listening on {host}:{bound}", flush=True)
    done = asyncio.ensure_future(stop.wait())
    await asyncio.wait([done, md._task], return_when=asyncio.FIRST_COMPLETED)
    failed = md._task.done() and md._task.exception() is not None
    if failed:
        print(f"market-data gateway stopped: {md._task.exception()!r}", flush=True)
    print("shutting down", flush=True)
    await md.stop()
    await runner.cleanup()
    if lease is not None:
        await lease.close()
    await follower.journal.close()
    print(f"stopped at seq {ex.last_seq}", flush=True)
    return 1 if failed else 0
