"""The websocket gateway: sessions, the built-in methods, subscriptions and fan-out.

Text frames come straight from aiohttp's frame parser to :meth:`Session.on_text` (see
``_DirectQueue``). Per message: one ``orjson.loads``, a hand-checked envelope, a token-bucket
rate check, the method's validator (order entry: hand-checked fast paths that build the core
command, falling back to the pydantic models), the handler. Order commands go to the runner
(journal + core); their replies are built as bytes at once and queued, with every push, on the
session once the journal batch is durable; one callback per tick frames each session's queue
and writes it in one ``transport.write`` (with ``batch`` on, as one frame). Nothing on this
path logs.

Fan-out runs in the runner's listener (after durability, in seq order): each event is encoded
once and appended to the subscribed sessions' queues; book updates are sent every
``server.book_push_interval_ms``, balances and tickers once per tick. A session whose queue
passes ``server.send_queue_max`` is closed (code 4008, ``SLOW_CONSUMER``) and its queue
dropped, so memory stays bounded; place_order/amend_order get ``OVERLOADED`` while the server
is behind (``Gateway.admit``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from itertools import islice
from functools import partial

import orjson
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from ..core import errors as E
from ..core.commands import AmendOrder, CancelAll, CancelOrder, PlaceOrder
from ..core.events import (
    EXEC_REJECTED, BookUpdate, CommandRejected, DayEnded, ExecutionReport, MarketState, Posting,
    Trade,
)
from ..access.credentials import ROLE_FIRM, ApiKeyRevoked
from .protocol import (
    DEFERRED, ER_BODY, JSON_STR, METHODS, OVERLOADED, PX_JSON, AmendOrderParams, AuthParams,
    CancelAllParams, CancelOrderParams, ChannelParams, EmptyParams, PlaceOrderParams,
    ProtocolError, er_head, er_push, er_tail_args, fmt_px, validate_amend_order,
    validate_cancel_order, validate_place_order,
    validation_message, wire_balances, wire_depth, wire_order, wire_ticker, wire_trade,
    ticker_channel,
    ws_method,
)

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

GATEWAY_KEY = web.AppKey("gateway", object)  # app[GATEWAY_KEY] -> Gateway

try:  # aiohttp's frame parser and message queue (C), for _DirectWS
    import inspect as _inspect

    from aiohttp._websocket.reader import (
        WebSocketDataQueue, WebSocketReader as _DirectReader,
    )
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE as _CHUNK
    # text frames as bytes: orjson parses UTF-8 bytes directly (no str decode first)
    _WS_KW = ({"decode_text": False} if "decode_text" in _inspect.signature(
        web.WebSocketResponse.__init__).parameters else {})
except ImportError:  # pragma: no cover - an older aiohttp: the plain path
    WebSocketDataQueue = object
    _DirectReader = None
    _CHUNK = 0
    _WS_KW = {}

CLOSE_AUTH = 4001  # auth timeout / failed header auth
CLOSE_REVOKED = 4003  # the API key was revoked
CLOSE_SLOW = 4008  # slow consumer
CLOSE_TOO_MANY = 4029  # over the API key's connection cap (HTTP 429's meaning)
INT64 = 1 << 63


_HEADS: dict[str, bytes] = {}  # channel -> b'{"channel":"...","seq":' (few distinct)
_EXEC_PUSH = b'{"channel":"executions","seq":%d,"data":%s}'
ER_HEADS_MAX = 200_000  # execution report heads kept (orders working); past it, start over
WRITE_HIGH = 1 << 20  # bytes buffered in the socket's transport before the writer waits
LEASE_S = 0.02  # a session's lease of its key's rate limit: this many seconds' worth
BIG_MESSAGE = 1024  # a message this long (a book snapshot) is counted when it is queued
MEASURE_S = 0.05  # how often the bytes of backed-up connections are measured (total bound)


def _ticker_board(rest: str) -> tuple[str, str]:
    """``CEA-2026`` -> its main board; ``CEA-2026@sme`` -> ``("CEA-2026", "sme")``."""
    sym, _, seg = rest.partition("@")
    return sym, seg or "main"


def _held(s) -> int:
    return s.held


def _qbig(s) -> int:
    return s.qbig


def _text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed websocket text frame (RFC 6455 server frame)."""
    return _FRAME_HEAD[len(payload)] + payload


class _FrameHeads(dict):
    """payload length -> the header of a final, unmasked, uncompressed text frame (RFC 6455
    server frame), computed once per length (messages come in few sizes); bounded."""

    def __missing__(self, n: int) -> bytes:
        if n < 126:
            h = bytes((0x81, n))
        elif n < 65536:
            h = b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            return b"\x81\x7f" + n.to_bytes(8, "big")  # large: not kept
        if len(self) >= 65536:
            self.clear()
        self[n] = h
        return h


_FRAME_HEAD: dict = _FrameHeads()


def _err_bytes(req_id, code: str, message: str) -> bytes:
    return _dumps({"req_id": req_id, "ok": False, "error": {"code": code, "message": message}})


class Metrics:
    """Counters for /metrics (Prometheus text). Plain ints: the hot path only adds."""

    def __init__(self):
        self.orders = 0
        self.orders_rejected = 0
        self.trades = 0
        self.commands = 0
        self.rejects: dict[str, int] = {}
        self.gateway_errors: dict[str, int] = {}
        self.messages_in = 0
        self.messages_out = 0
        self.frames_out = 0
        self.writes = 0  # socket writes (one per connection per flush)
        self.connections = 0
        self.connections_total = 0
        self.slow_consumer_disconnects = 0
        # of those, closed because all connections' send queues together were over
        # server.send_queue_total_max_bytes (the largest queues go first)
        self.send_queue_total_disconnects = 0
        self.idempotent_replays = 0
        self.overloaded = 0  # order entry refused with OVERLOADED
        # ... by the bound that refused it: journal_lag (in time), in_flight (in commands),
        # send_queue (the connection's)
        self.overloaded_by: dict[str, int] = {}


class Session:
    """One websocket connection."""

    __slots__ = ("gw", "ws", "cred", "firm_id", "role", "key_id", "batch", "cod", "subs",
                 "out", "wake", "closed", "tokens", "refill_at", "placed", "writer", "peer",
                 "req_id", "transport", "flushing", "backoff", "rx", "idle", "ping_at",
                 "qmax", "qn", "qbytes", "held", "qbig", "bucket", "auth_failures",
                 "__weakref__")

    def __init__(self, gw: "Gateway", ws, peer: str = ""):
        self.gw = gw
        self.ws = ws
        self.cred = None
        self.firm_id: str | None = None
        self.role: str | None = None
        self.key_id: str | None = None
        self.batch = False
        self.cod = False
        self.subs: dict[str, int] = {}  # channel -> last seq sent
        self.out: list[bytes] = []
        self.wake = asyncio.Event()
        self.closed = False
        self.tokens = float(gw.cfg.rate_limit_burst)
        self.refill_at = time.monotonic()
        self.placed: set[int] = set()  # order ids placed here (cancel-on-disconnect)
        self.writer: asyncio.Task | None = None
        self.peer = peer
        self.req_id = None  # of the request being handled
        self.transport = None  # set: frames are written straight to it (see flush)
        self.flushing = False  # a flush of this session is scheduled
        self.backoff = 0.0  # retry delay while the socket's buffer is full (2 ms .. 100 ms)
        self.rx = False  # a frame arrived since the last heartbeat round
        self.idle = 0  # heartbeat rounds (half a heartbeat each) without a frame
        self.ping_at: float | None = None  # when the heartbeat ping was sent
        self.qmax = gw.cfg.send_queue_max  # past this many queued messages: SLOW_CONSUMER
        # what the total send-queue bound counts while the socket is backed up
        # (Gateway._measure): messages of ``out`` counted so far, their bytes, and the last
        # total (those + the transport's buffer)
        self.qn = 0
        self.qbytes = 0
        self.held = 0
        self.qbig = 0  # bytes of big messages (BIG_MESSAGE) queued since the last flush
        self.bucket = None  # the API key's shared token bucket, once authenticated
        self.auth_failures = 0

    @property
    def gateway(self) -> "Gateway":
        return self.gw

    # ---------------------------------------------------------------- output
    def send(self, data: bytes) -> None:
        """Queue one message; close the connection when the queue is over its bound."""
        if self.closed:
            return
        self.out.append(data)
        if len(data) >= BIG_MESSAGE:
            self.gw.queued_big(self, len(data))
        self._queued()

    def send_many(self, msgs: list) -> None:
        """Queue several messages (one bound check, one flush)."""
        if self.closed or not msgs:
            return
        self.out.extend(msgs)
        self._queued()

    def _queued(self) -> None:
        """After queueing: the slow-consumer bound, then a flush unless one is due."""
        if len(self.out) > self.qmax:
            self._slow()
            return
        if not self.flushing:
            self.flushing = True
            if self.transport is not None:
                self.gw.want_flush(self)
            else:
                self.wake.set()

    def _slow(self) -> None:
        self.gw.metrics.slow_consumer_disconnects += 1
        self.kill(CLOSE_SLOW, f"{E.SLOW_CONSUMER}: more than {self.qmax} messages queued")

    def push(self, channel: str, data: bytes) -> None:
        """A push on a per-session sequenced channel (everything but books)."""
        subs = self.subs
        seq = subs.get(channel)
        if seq is None:
            return
        seq += 1
        subs[channel] = seq
        head = _HEADS.get(channel)
        if head is None:
            head = _HEADS[channel] = b'{"channel":' + _dumps(channel) + b',"seq":'
        self.send(b"%s%d,\"data\":%s}" % (head, seq, data))

    def reply(self, req_id, result) -> None:
        self.send(_dumps({"req_id": req_id, "ok": True, "result": result}))

    def error(self, req_id, code: str, message: str) -> None:
        ge = self.gw.metrics.gateway_errors
        ge[code] = ge.get(code, 0) + 1
        self.send(_err_bytes(req_id, code, message))

    def flush(self) -> None:
        """Write the queue to the transport: every message becomes a complete text frame
        (unmasked, uncompressed — the server never negotiates compression) and the lot goes out
        in one ``transport.write`` (one syscall per connection per tick). While the socket's
        buffer is over WRITE_HIGH the queue waits and grows towards the slow-consumer bound."""
        tr = self.transport
        out = self.out
        if self.closed or not out or tr is None or tr.is_closing():
            self.flushing = False
            if out and tr is not None and tr.is_closing():
                # the connection is going (the peer closed it, or it was aborted) while its
                # last frames are still being answered: nothing queued can ever be written,
                # and kept it would grow to send_queue_max - for 200 such connections, GBs
                self.out = []
                self.drop_big()
            return
        buffered = tr.get_write_buffer_size()
        if buffered:  # the peer is behind: counted towards the total bound (Gateway._measure)
            self.gw.backlogged(self)
            if buffered > WRITE_HIGH:  # the peer is not reading: try later
                self.backoff = min(max(self.backoff * 2, 0.002), 0.1)
                asyncio.get_running_loop().call_later(self.backoff, self.flush)
                return
        self.backoff = 0.0
        self.flushing = False
        self.out = []
        if self.qn:
            self.qn = self.qbytes = 0
        if self.qbig:
            self.drop_big()
        m = self.gw.metrics
        m.messages_out += len(out)
        m.writes += 1
        if self.batch:
            m.frames_out += 1
            tr.write(_text_frame(b"[" + b",".join(out) + b"]"))
        else:
            n = len(out)
            m.frames_out += n
            if n == 1:
                x = out[0]
                tr.write(_FRAME_HEAD[len(x)] + x)
            else:  # header, message, header, message, ...: built by C loops, one join
                parts = [b""] * (2 * n)
                parts[::2] = map(_FRAME_HEAD.__getitem__, map(len, out))
                parts[1::2] = out
                tr.write(b"".join(parts))
        if not buffered and tr.get_write_buffer_size():
            # what the socket did not take stays in the transport: measured from now on, also
            # when nothing more is sent (a last big write is never seen by a later flush)
            self.gw.backlogged(self)

    async def write_loop(self) -> None:
        """Without a usable transport: drain the queue with aiohttp's ``send_frame``."""
        ws = self.ws
        metrics = self.gw.metrics
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                self.flushing = False
                out = self.out
                if not out:
                    if self.closed:
                        return
                    continue
                self.out = []
                self.drop_big()
                metrics.messages_out += len(out)
                metrics.writes += 1 if self.batch else len(out)
                if self.batch:
                    metrics.frames_out += 1
                    await ws.send_frame(b"[" + b",".join(out) + b"]", TEXT)
                else:
                    metrics.frames_out += len(out)
                    for m in out:
                        await ws.send_frame(m, TEXT)
                if self.closed:
                    return
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    def drop_big(self) -> None:
        """The big messages counted for this session are gone (flushed or dropped)."""
        if self.qbig:
            self.gw.big_bytes -= self.qbig
            self.qbig = 0

    def kill(self, code: int, reason: str) -> None:
        """Close now: drop queued output, send a close frame with the reason."""
        if self.closed:
            return
        self.closed = True
        self.out = []
        self.qn = self.qbytes = 0
        self.drop_big()
        self.wake.set()
        self.gw.detach(self)
        asyncio.get_running_loop().create_task(self._close(code, reason))

    def close_now(self, code: int, reason: str) -> None:
        """Close after writing what is queued (an error reply that says why)."""
        if self.transport is not None and not self.closed:
            self.flush()
        self.kill(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        tr = self.transport
        if tr is not None and tr.get_write_buffer_size() > WRITE_HIGH:
            # the peer reads nothing: a close frame would wait behind megabytes that never
            # leave, and the buffer would stay in memory meanwhile - drop it now
            tr.abort()
            return
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 2.0)
        except Exception:
            pass
        if not self.ws.closed:
            tr = getattr(self.ws, "_req", None)
            tr = tr.transport if tr is not None else None
            if tr is not None:
                tr.abort()

    # ---------------------------------------------------------------- input
    def on_text(self, data: str) -> None:
        if len(data) > self.gw.max_frame:
            self.error(None, E.FRAME_TOO_LARGE,
                       f"frame over {self.gw.max_frame} bytes")
            return
        try:
            obj = _loads(data)
        except _JSONDecodeError:
            if type(data) is not str:  # bytes (decode_text off): RFC 6455 wants 1007
                try:
                    bytes(data).decode("utf-8")
                except UnicodeDecodeError:
                    self.kill(1007, "invalid UTF-8 in a text frame")
                    return
            self.error(None, E.BAD_JSON, "frame is not valid JSON")
            return
        if type(obj) is list:
            if not obj:
                self.error(None, E.BAD_REQUEST, "empty batch")
            for item in obj:
                if self.closed:  # killed mid-batch (slow consumer, revoked key): stop here
                    break
                self.on_request(item)
        else:
            self.on_request(obj)

    def on_request(self, obj) -> None:
        if _gate(self, obj):  # a plain order request, handled in C (exchange/server/_accel.c)
            return
        gw = self.gw
        gw.metrics.messages_in += 1
        if type(obj) is not dict:
            self.error(None, E.BAD_REQUEST, "a request is a JSON object")
            return
        req_id = obj.get("req_id")
        if type(req_id) is not int or not -INT64 <= req_id < INT64:
            self.error(None, E.BAD_REQUEST, "req_id must be a 64-bit integer")
            return
        # token bucket: the API key's, shared by its connections (a lease of it is in
        # self.tokens, which the C gate spends); before auth the connection's own
        tokens = self.tokens
        if tokens < 1.0:
            now = time.monotonic()
            bucket = self.bucket
            if bucket is not None:
                tokens += bucket.lease(now)
            else:
                tokens = min(tokens + (now - self.refill_at) * gw.cfg.rate_limit_per_second,
                             float(gw.cfg.rate_limit_burst))
                self.refill_at = now
            if tokens < 1.0:
                self.tokens = tokens
                self.error(req_id, E.RATE_LIMITED,
                           f"over {gw.cfg.rate_limit_per_second:g} requests/s "
                           f"(burst {gw.cfg.rate_limit_burst}) for this "
                           f"{'API key' if bucket is not None else 'connection'}; "
                           f"request dropped")
                return
        self.tokens = tokens - 1.0
        method = obj.get("method")
        m = METHODS.get(method) if type(method) is str else None
        if m is None:
            if type(method) is not str:
                self.error(req_id, E.BAD_REQUEST, "method must be a string")
            else:
                self.error(req_id, E.UNKNOWN_METHOD, f"unknown method {method[:64]!r}")
            return
        if len(obj) > 3 and any(k not in ("req_id", "method", "params") for k in obj):
            self.error(req_id, E.BAD_REQUEST, "a request has only req_id, method and params")
            return
        if m.auth and self.cred is None:
            self.error(req_id, E.NOT_AUTHENTICATED, "authenticate first (method auth)")
            return
        if m.roles is not None and self.role not in m.roles:
            self.error(req_id, E.FORBIDDEN, f"{method} needs role {' or '.join(m.roles)}")
            return
        params = obj.get("params")
        if params is None:  # omitted or null
            params = {}
        try:
            p = m.validate(params)
        except ValidationError as exc:
            self.error(req_id, E.INVALID_PARAMS, validation_message(exc))
            return
        except (TypeError, ValueError) as exc:  # model_post_init checks
            self.error(req_id, E.INVALID_PARAMS, str(exc)[:200])
            return
        self.req_id = req_id
        try:
            r = m.handler(self, p)
        except ProtocolError as exc:
            self.error(req_id, exc.code, exc.message)
            return
        except E.Reject as exc:
            self.error(req_id, exc.code, exc.message)
            return
        except Exception as exc:
            gw.log_exception(exc)
            self.error(req_id, E.INTERNAL_ERROR, "internal error")
            return
        if r is DEFERRED:
            return
        if hasattr(r, "__await__"):
            task = asyncio.ensure_future(r)
            task.add_done_callback(lambda t, rid=req_id: self._done(rid, t))
        else:
            self.reply(req_id, r)

    def _done(self, req_id, task: asyncio.Task) -> None:
        if task.cancelled():
            self.error(req_id, E.SHUTTING_DOWN, "the server is shutting down")
            return
        exc = task.exception()
        if exc is None:
            self.reply(req_id, task.result())
        elif isinstance(exc, (ProtocolError, E.Reject)):
            self.error(req_id, exc.code, exc.message)
        else:
            self.gw.log_exception(exc)
            self.error(req_id, E.INTERNAL_ERROR, "internal error; the request may not "
                                                 "have been applied")


class Idempotency:
    """(firm, client_order_id) -> the first place_order of the last ``window`` orders, as an
    entry ``[outcome, command, final]``: the outcome is the reply as sent (bytes, exact size -
    an ``orjson.dumps`` result would keep its 4 KiB buffer), ``("err", code, message)``, or
    ``("journal", seq)`` for an order known only from the journal (rebuilt on start); the
    command (or its terms, :func:`_terms`) is what a retry must repeat; ``final`` is
    ``(order_id, status, cum_qty)`` once the order is done (``Gateway._idem_listen``). A ring
    of keys drops the oldest."""

    __slots__ = ("done", "inflight", "window", "ring")

    def __init__(self, window: int):
        self.done: dict = {}
        self.inflight: dict = {}  # key -> (outcome, durable future) until durable
        self.window = window
        self.ring: deque = deque()

    def remember(self, key, outcome) -> None:
        d = self.done
        if key not in d:
            self.ring.append(key)
        d[key] = outcome
        if len(d) > self.window:
            d.pop(self.ring.popleft(), None)


class KeyBucket:
    """The rate limit of one API key across all its connections: a token bucket
    (``rate_limit_per_second``, ``rate_limit_burst``) that lends its tokens to the key's
    sessions in leases of LEASE_S worth of the rate. A session spends its lease
    (``Session.tokens``) on the C gate's path as before, and comes back here only when it is
    used up - once per lease, not per request - so the order path stays as it was while eight
    connections of one key get what one would, not eight times that. A session gives back what
    it has not spent when it closes. The long-run rate is the key's exactly (every token enters
    through this bucket); at any moment the key's sessions may hold up to one lease each."""

    __slots__ = ("tokens", "at", "rate", "burst", "chunk")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now
        self.chunk = max(1.0, min(self.burst, rate * LEASE_S))

    def lease(self, now: float) -> float:
        t = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        take = min(t, self.chunk)
        if take < 1.0:
            self.tokens = t
            return 0.0
        self.tokens = t - take
        return take

    def give_back(self, tokens: float) -> None:
        if tokens > 0:
            self.tokens = min(self.burst, self.tokens + tokens)


class Gateway:
    """Sessions, subscriptions and fan-out over one exchange + runner."""

    def __init__(self, exchange, runner, cfg, logger=None, new_exchange=None):
        self.ex = exchange
        # a fresh core of the live one's kind, for replaying the journal into a scratch copy
        # (the composition root passes its build_exchange; the server does not import it)
        self.new_exchange = new_exchange if new_exchange is not None else partial(
            _same_kind, exchange)
        self.runner = runner
        self.cfg = cfg
        self.log = logger
        self.metrics = Metrics()
        self.idem = Idempotency(cfg.idempotency_window)
        self.sessions: set[Session] = set()
        self.exec_subs: dict[str, set[Session]] = {}
        self.bal_subs: dict[str, set[Session]] = {}
        self.book_subs: dict[tuple[str, str], set[Session]] = {}
        self.trade_subs: dict[str, set[Session]] = {}
        # tickers per board, (instrument, segment); channel names: protocol.ticker_channel
        self.ticker_subs: dict[tuple[str, str], set[Session]] = {}
        self._dirty_bal: set[str] = set()
        self._dirty_tick: set[tuple[str, str]] = set()
        # the last ticker pushed per board: a flush whose ticker is the same sends nothing
        self._last_tick: dict[tuple[str, str], bytes] = {}
        self._flush_scheduled = False
        self._batch_future = None  # the journal batch the current place_orders ride in
        self._batch: list = []  # (session, req_id, reply, idempotency key, outcome)
        self._er_heads: dict = {}  # order id -> er_head() while the order works
        self.max_frame = cfg.max_frame_bytes
        self._max_in_flight = cfg.max_commands_in_flight
        self._max_lag_s = cfg.max_journal_lag_ms / 1000.0
        self._overload_queue = cfg.overload_send_queue
        self._to_flush: list[Session] = []
        # book updates held back for _push_books: (instrument, segment) -> (channel, [(seq,
        # message)]); server.book_push_interval_ms 0 sends each update at once
        self._book_interval = cfg.book_push_interval_ms / 1000.0
        self._book_pending: dict = {}
        self._book_timer = False
        self._hb_sessions: set[Session] = set()
        self._hb_interval: float | None = None
        self._flush_out_scheduled = False
        # the total send-queue bound: sessions whose socket is backed up (their bytes are
        # measured every MEASURE_S while any is), and the bytes they hold
        self._backlog: set[Session] = set()
        self._measuring = False
        self.queued_bytes = 0
        self.queued_bytes_max = cfg.send_queue_total_max_bytes
        self.big_bytes = 0  # bytes of big messages queued and not yet flushed (Session.send)
        self.key_buckets: dict[str, KeyBucket] = {}  # key_id -> its rate limit
        self.key_sessions: dict[str, int] = {}  # key_id -> open authenticated sessions
        self.failed: str | None = None  # set when the runner refused a command
        self.accepting = True
        # the fan-out in C where the extension is built (on_commit is its reference)
        runner.add_listener(self.on_commit if _fanout is None else partial(_fanout, self))
        runner.add_listener(self._idem_listen)

    @property
    def credentials(self):
        return self.ex.modules["credentials"]

    def log_exception(self, exc) -> None:
        if self.log is not None:
            self.log.error("internal error", exc_info=exc)

    # ---------------------------------------------------------------- heartbeat
    def watch_heartbeat(self, s: Session, interval: float) -> None:
        """Heartbeat ``s`` (on the direct path): one timer for all sessions, every half
        interval. A session silent for about ``interval`` gets a ping; one that sends
        nothing (no pong) within half an interval after it is closed - the rule aiohttp's
        heartbeat implements with a timer reset per received chunk."""
        self._hb_sessions.add(s)
        if self._hb_interval is None:
            self._hb_interval = interval
            asyncio.get_running_loop().call_later(interval / 2, self._heartbeat)

    def _heartbeat(self) -> None:
        hb = self._hb_interval
        loop = asyncio.get_running_loop()
        now = loop.time()
        for s in tuple(self._hb_sessions):
            if s.closed:
                self._hb_sessions.discard(s)
                continue
            if s.rx:
                s.rx = False
                s.idle = 0
                s.ping_at = None
                continue
            s.idle += 1
            if s.ping_at is not None:
                if now - s.ping_at >= hb / 2 - 1e-3:
                    self._hb_sessions.discard(s)
                    s.ws.heartbeat_timeout()
            elif s.idle >= 2:
                tr = s.transport
                if tr is not None and not tr.is_closing():
                    tr.write(b"\x89\x00")  # ping, empty payload
                    s.ping_at = now
        if self._hb_sessions:
            loop.call_later(hb / 2, self._heartbeat)
        else:
            self._hb_interval = None

    # ---------------------------------------------------------------- output
    def want_flush(self, s: Session) -> None:
        """Flush ``s`` late in the next tick. Two hops: the first callback runs behind
        whatever this tick already scheduled (a journal batch's replies are scheduled right
        after its pushes), the second writes, so pushes and replies share one write."""
        self._to_flush.append(s)
        if not self._flush_out_scheduled:
            self._flush_out_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_hop)

    def _flush_hop(self) -> None:
        asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        self._flush_out_scheduled = False
        todo, self._to_flush = self._to_flush, []
        for s in todo:
            s.flush()

    # ---------------------------------------------------------------- send-queue memory
    def backlogged(self, s: Session) -> None:
        """``s``'s transport holds bytes its peer has not taken: count them (and its queue)
        towards the total bound until they are gone. Nothing is counted per message: a
        connection whose peer keeps up never gets here (its transport buffer is empty at every
        flush), so the order path pays nothing for the bound."""
        self._backlog.add(s)
        if not self._measuring:
            self._measuring = True
            asyncio.get_running_loop().call_later(MEASURE_S, self._measure)

    def queued_big(self, s: Session, n: int) -> None:
        """A big message (a book snapshot, a deep book's push: BIG_MESSAGE or more) was
        queued for ``s``. The timer cannot see queues that grow within one turn of the event
        loop - a burst of subscribe requests on many connections answered in one long turn
        queued ~700 MB before anything was flushed - so these are counted as they are queued
        (small messages, the order path's, are not) and the bound is enforced at once."""
        s.qbig += n
        big = self.big_bytes = self.big_bytes + n
        if big + self.queued_bytes > self.queued_bytes_max:
            self._shed_big()

    def _shed_big(self) -> None:
        """Over the total bound by big messages not yet flushed: close the connections that
        queued the most of them until under it."""
        limit = self.queued_bytes_max
        for s in sorted((x for x in self.sessions if x.qbig), key=_qbig, reverse=True):
            if self.big_bytes + self.queued_bytes <= limit:
                break
            self.metrics.send_queue_total_disconnects += 1
            self.metrics.slow_consumer_disconnects += 1
            s.kill(CLOSE_SLOW, f"{E.SLOW_CONSUMER}: the server's send queues hold over "
                               f"{limit} bytes; this connection's ({s.qbig + s.held}) is "
                               f"among the largest")

    def _measure(self) -> None:
        """Every MEASURE_S while any socket is backed up: the bytes each such connection
        holds (its transport's buffer + its queue, counted incrementally: a stalled queue only
        grows) and their total, ``queued_bytes``. Over ``send_queue_total_max_bytes`` the
        connections holding the most are closed as slow consumers until the total is under
        the bound again: one client that does not read costs at most its share, and a crowd
        of them cannot take the server's memory (200 of them took ~460 MB before this). The
        total can pass the bound between two measurements by what the server writes in
        MEASURE_S, not more."""
        backlog = self._backlog
        total = 0
        for s in tuple(backlog):
            tr = s.transport
            if s.closed or tr is None or tr.is_closing():
                backlog.discard(s)
                s.held = 0
                continue
            out = s.out
            n = len(out)
            if n < s.qn:  # flushed since: count afresh
                s.qn = s.qbytes = 0
            if n > s.qn:
                s.qbytes += sum(map(len, islice(out, s.qn, None)))
                s.qn = n
            held = max(tr.get_write_buffer_size() + s.qbytes, s.qbig)
            s.held = held
            if not held:
                backlog.discard(s)
            total += held - s.qbig  # big messages queued are in big_bytes already
        limit = self.queued_bytes_max - self.big_bytes
        if total > limit:
            for s in sorted(backlog, key=_held, reverse=True):
                if total <= limit:
                    break
                total -= s.held - s.qbig
                limit += s.qbig  # (its big messages leave big_bytes with it)
                self.metrics.send_queue_total_disconnects += 1
                self.metrics.slow_consumer_disconnects += 1
                s.kill(CLOSE_SLOW, f"{E.SLOW_CONSUMER}: the server's send queues hold over "
                                   f"{self.queued_bytes_max} bytes; this connection's "
                                   f"({s.held}) is among the largest")
                backlog.discard(s)
                s.held = 0
        self.queued_bytes = total
        if backlog:
            asyncio.get_running_loop().call_later(MEASURE_S, self._measure)
        else:
            self._measuring = False

    # ---------------------------------------------------------------- commands
    async def submit(self, cmd, *, internal: bool = False) -> list:
        """Apply ``cmd``; return its events once durable. Journal trouble and core bugs become
        ProtocolErrors (SHUTTING_DOWN 503 / INTERNAL_ERROR 500). ``internal``: the server's
        own command (a cancel-on-disconnect at shutdown), taken while clients' are not."""
        events, durable = self.submit_nowait(cmd, internal=internal)
        try:
            await asyncio.shield(durable)
        except Exception as exc:
            self.not_ready(str(exc)[:200])
            raise ProtocolError(E.SHUTTING_DOWN, "the journal could not make the command "
                                                 "durable", 503) from None
        if isinstance(events, Exception):
            raise ProtocolError(E.INTERNAL_ERROR, "internal error (the command is journaled)",
                                500)
        return events

    async def submit_checked(self, cmd) -> list:
        """Submit; a CommandRejected becomes a ProtocolError with its code."""
        events = await self.submit(cmd)
        for ev in events:
            if type(ev) is CommandRejected:
                raise ProtocolError(ev.code, ev.message)
        return events

    # ---------------------------------------------------------------- sessions
    def attach(self, s: Session) -> None:
        self.sessions.add(s)
        self.metrics.connections = len(self.sessions)
        self.metrics.connections_total += 1

    def detach(self, s: Session) -> None:
        if s not in self.sessions:
            return
        self.sessions.discard(s)
        self._hb_sessions.discard(s)
        self._backlog.discard(s)
        s.drop_big()
        if s.key_id is not None:
            n = self.key_sessions.get(s.key_id, 1) - 1
            if n > 0:
                self.key_sessions[s.key_id] = n
            else:
                self.key_sessions.pop(s.key_id, None)
            if s.bucket is not None:
                s.bucket.give_back(s.tokens)
                s.tokens = 0.0
        self.metrics.connections = len(self.sessions)
        for ch in list(s.subs):
            self._unsub(s, ch)
        if s.cod and s.firm_id is not None and s.placed and self.accepting:
            acct = self.ex.accounts.get(s.firm_id)
            live = sorted(oid for oid in s.placed if acct is not None and oid in acct.orders)
            s.placed = set()
            if live:
                asyncio.get_running_loop().create_task(self._cancel_orders(s.firm_id, live))

    async def shutdown(self) -> None:
        """Stop accepting; cancel the live orders of cancel-on-disconnect sessions (journaled,
        before the runner stops); close every connection with 1001. Orders are refused from
        the first line on: /readyz is already 503."""
        self.accepting = False
        jobs = []
        for s in list(self.sessions):
            if s.cod and s.firm_id is not None and s.placed:
                acct = self.ex.accounts.get(s.firm_id)
                live = sorted(o for o in s.placed if acct is not None and o in acct.orders)
                s.placed = set()
                if live:
                    jobs.append(self._cancel_orders(s.firm_id, live))
        if jobs:
            await asyncio.gather(*jobs)
        for s in list(self.sessions):
            s.kill(1001, f"{E.SHUTTING_DOWN}: server going away")
        await asyncio.sleep(0)

    async def _cancel_orders(self, firm_id: str, order_ids: list[int]) -> None:
        try:
            await asyncio.gather(*(self.submit(CancelOrder(account=firm_id, order_id=oid),
                                               internal=True) for oid in order_ids))
        except Exception as exc:  # shutting down
            self.log_exception(exc)

    def authenticate(self, s: Session, api_key: str, cod: bool = False,
                     batch: bool = False) -> dict:
        if s.cred is not None:
            raise ProtocolError(E.ALREADY_AUTHENTICATED, "this connection is authenticated")
        cred = self.credentials.lookup(api_key)
        if cred is None:
            s.auth_failures += 1
            limit = self.cfg.max_auth_failures
            if s.auth_failures >= limit:  # guessing keys: the connection goes
                why = f"{limit} failed authentications on this connection"
                s.error(s.req_id, E.AUTH_FAILED, f"unknown or revoked API key; {why}")
                s.close_now(CLOSE_AUTH, f"{E.AUTH_FAILED}: {why}")
                return DEFERRED
            raise ProtocolError(E.AUTH_FAILED, "unknown or revoked API key", 401)
        cap = self.cfg.max_connections_per_key
        if cap and self.key_sessions.get(cred.key_id, 0) >= cap:
            why = f"the API key has {cap} connections open"
            s.error(s.req_id, E.TOO_MANY_CONNECTIONS, why)
            s.close_now(CLOSE_TOO_MANY, f"{E.TOO_MANY_CONNECTIONS}: {why}")
            return DEFERRED
        self.key_sessions[cred.key_id] = self.key_sessions.get(cred.key_id, 0) + 1
        now = time.monotonic()
        bucket = self.key_buckets.get(cred.key_id)
        if bucket is None:
            bucket = self.key_buckets[cred.key_id] = KeyBucket(
                self.cfg.rate_limit_per_second, self.cfg.rate_limit_burst, now)
        s.bucket = bucket
        s.tokens = bucket.lease(now)  # from now on the key's, not the connection's
        s.cred = cred
        s.role = cred.role
        s.firm_id = cred.firm_id
        s.key_id = cred.key_id
        s.cod = bool(cod) and cred.role == ROLE_FIRM
        s.batch = bool(batch)
        return {"key_id": cred.key_id, "role": cred.role, "firm_id": cred.firm_id,
                "cancel_on_disconnect": s.cod, "batch": s.batch,
                "heartbeat_seconds": self.cfg.heartbeat_seconds,
                "rate_limit_per_second": self.cfg.rate_limit_per_second}

    # ---------------------------------------------------------------- subscriptions
    def subscribe(self, s: Session, channel: str) -> dict:
        ex = self.ex
        if channel == "executions" or channel == "balances":
            if s.firm_id is None:
                raise ProtocolError(E.FORBIDDEN, f"{channel} is a firm channel")
            table = self.exec_subs if channel == "executions" else self.bal_subs
            table.setdefault(s.firm_id, set()).add(s)
            s.subs.setdefault(channel, 0)
            out = {"channel": channel, "seq": s.subs[channel]}
            if channel == "balances":
                out["snapshot"] = wire_balances(ex, s.firm_id)
            else:
                out["open_orders"] = [wire_order(o) for o in ex.open_orders(s.firm_id)]
            return out
        kind, _, rest = channel.partition(":")
        if kind == "book":
            instr, _, seg = rest.partition(":")
            book = ex.books.get((instr, seg))
            if book is None:
                raise ProtocolError(E.UNKNOWN_CHANNEL, f"no book {rest!r} (book:<instrument>:"
                                                       f"<segment>)")
            self.book_subs.setdefault((instr, seg), set()).add(s)
            s.subs[channel] = book.seq
            return {"channel": channel, "seq": book.seq, "snapshot": wire_depth(book)}
        if kind == "trades" and rest in ex.instruments:
            self.trade_subs.setdefault(rest, set()).add(s)
            s.subs.setdefault(channel, 0)
            return {"channel": channel, "seq": s.subs[channel]}
        if kind == "ticker":
            key = _ticker_board(rest)
            if key in ex.books and channel == ticker_channel(*key):  # one name per board
                subs = self.ticker_subs.get(key)
                snap = wire_ticker(ex, *key)
                if not subs:  # the first subscriber has exactly this: push only a change
                    subs = self.ticker_subs[key] = set()
                    self._last_tick[key] = _dumps(snap)
                subs.add(s)
                s.subs.setdefault(channel, 0)
                return {"channel": channel, "seq": s.subs[channel], "snapshot": snap}
            if key[0] in ex.instruments:
                raise ProtocolError(E.UNKNOWN_CHANNEL, f"no board {rest[:80]!r} (ticker:"
                                                       f"<instrument>[@<segment>])")
        raise ProtocolError(E.UNKNOWN_CHANNEL, f"unknown channel {channel[:80]!r}")

    def _unsub(self, s: Session, channel: str) -> bool:
        if s.subs.pop(channel, None) is None:
            return False
        if channel == "executions":
            table, key = self.exec_subs, s.firm_id
        elif channel == "balances":
            table, key = self.bal_subs, s.firm_id
        else:
            kind, _, rest = channel.partition(":")
            if kind == "book":
                instr, _, seg = rest.partition(":")
                table, key = self.book_subs, (instr, seg)
            elif kind == "trades":
                table, key = self.trade_subs, rest
            else:
                table, key = self.ticker_subs, _ticker_board(rest)
        subs = table.get(key)
        if subs is not None:
            subs.discard(s)
            if not subs:
                del table[key]
                if table is self.ticker_subs:
                    self._last_tick.pop(key, None)
        return True

    def unsubscribe(self, s: Session, channel: str) -> dict:
        if not self._unsub(s, channel):
            raise ProtocolError(E.NOT_SUBSCRIBED, f"not subscribed to {channel[:80]!r}")
        return {"channel": channel, "subscribed": False}

    # ---------------------------------------------------------------- fan-out
    def on_commit(self, cmd, events) -> None:
        """Runner listener: after durability, in seq order. The reference of ``_fanout``
        (exchange/server/_accel.c), which the runner calls instead where the extension is built:
        it does the usual reports and events itself and calls ``_on_report``/``_on_event``
        for the rest."""
        self.metrics.commands += 1
        for ev in events:
            if type(ev) is ExecutionReport:
                self._on_report(ev)
            else:
                self._on_event(ev)
        self._after_commit(cmd)

    def _on_report(self, ev) -> None:
        """One durable execution report: reject counts, balances to push, the executions
        push to the account's subscribers."""
        acct = ev.account
        if ev.exec_type == EXEC_REJECTED:
            m = self.metrics
            r = ev.reason or "?"
            m.rejects[r] = m.rejects.get(r, 0) + 1
            m.orders_rejected += 1
        elif acct in self.bal_subs:
            self._dirty_bal.add(acct)
        subs = self.exec_subs.get(acct)
        if subs:
            # the order's fixed fields, formatted once while it works
            heads = self._er_heads
            oid = ev.order_id
            if ev.leaves_qty:
                head = heads.get(oid)
                if head is None:
                    if len(heads) >= ER_HEADS_MAX:
                        heads.clear()
                    head = heads[oid] = er_head(ev)
            else:  # its last report (or a reject, order id 0)
                head = heads.pop(oid, None) or er_head(ev)
            if len(subs) == 1:  # (usual) one format for the whole push
                for s in subs:
                    ss = s.subs
                    seq = ss.get("executions")
                    if seq is not None:
                        seq += 1
                        ss["executions"] = seq
                        s.send(er_push(seq, head, ev))
            else:
                data = ER_BODY % er_tail_args(ev, head)
                for s in tuple(subs):  # (a send may close a session: copy)
                    ss = s.subs
                    seq = ss.get("executions")
                    if seq is not None:
                        seq += 1
                        ss["executions"] = seq
                        s.send(_EXEC_PUSH % (seq, data))

    def _on_event(self, ev) -> None:
        """One durable event other than an execution report."""
        t = type(ev)
        bal_subs = self.bal_subs
        if t is BookUpdate:
            book_subs = self.book_subs
            ticker_subs = self.ticker_subs
            if not book_subs and not ticker_subs:
                return
            key = (ev.instrument, ev.segment)
            subs = book_subs.get(key)
            if subs:
                ch = f"book:{ev.instrument}:{ev.segment}"
                bs = ev.book_seq
                msg = _dumps({"channel": ch, "seq": bs, "data": {
                    "instrument": ev.instrument, "segment": ev.segment, "book_seq": bs,
                    "changes": [[c[0], fmt_px(c[1]), c[2]] for c in ev.changes]}})
                if self._book_interval > 0:  # held back, sent to all in one go
                    pend = self._book_pending.get(key)
                    if pend is None:
                        pend = self._book_pending[key] = (ch, [])
                    pend[1].append((bs, msg))
                    if not self._book_timer:
                        self._book_timer = True
                        asyncio.get_running_loop().call_later(self._book_interval,
                                                              self._push_books)
                else:
                    for s in tuple(subs):
                        if s.subs.get(ch, bs) < bs:
                            s.subs[ch] = bs
                            s.send(msg)
            if ticker_subs and key in ticker_subs:
                self._dirty_tick.add(key)
        elif t is Trade:
            self.metrics.trades += 1
            subs = self.trade_subs.get(ev.instrument)
            if subs:
                data = _dumps(wire_trade(ev))
                for s in tuple(subs):
                    s.push(f"trades:{ev.instrument}", data)
            key = (ev.instrument, ev.segment)
            if key in self.ticker_subs:  # the trade's own board only
                self._dirty_tick.add(key)
            for who, _amt in ev.proceeds_split:
                if who in bal_subs:
                    self._dirty_bal.add(who)
        elif t is Posting:
            if bal_subs:
                if ev.debit in bal_subs:
                    self._dirty_bal.add(ev.debit)
                if ev.credit in bal_subs:
                    self._dirty_bal.add(ev.credit)
        elif t is CommandRejected:
            m = self.metrics
            m.rejects[ev.code] = m.rejects.get(ev.code, 0) + 1
        elif t is ApiKeyRevoked:
            for s in [s for s in self.sessions if s.key_id == ev.key_id]:
                s.kill(CLOSE_REVOKED, "KEY_REVOKED: the API key was revoked")
        elif t is MarketState or t is DayEnded:
            self._dirty_tick.update(self.ticker_subs)

    def _after_commit(self, cmd) -> None:
        if type(cmd) is PlaceOrder:
            self.metrics.orders += 1
        if self._dirty_bal or self._dirty_tick:
            self._dirty_soon()

    def _dirty_soon(self) -> None:
        """Balances or tickers changed: push them once this round of commits is done."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_dirty)

    def _push_books(self) -> None:
        """Every ``book_push_interval_ms``: the book updates made durable since the last
        call, each still its own message in seq order, queued to each subscriber at once -
        so a subscriber's socket gets one write per interval, not one per update (the
        fan-out to 1,000 subscribers was one syscall per subscriber per update). A session
        gets only the updates after the ``book_seq`` it already has (its snapshot)."""
        self._book_timer = False
        pending, self._book_pending = self._book_pending, {}
        for key, (ch, items) in pending.items():
            subs = self.book_subs.get(key)
            if not subs:
                continue
            first = items[0][0]
            last = items[-1][0]
            for s in tuple(subs):
                seen = s.subs.get(ch)
                if seen is None or seen >= last:
                    continue
                s.subs[ch] = last
                if seen < first:
                    s.send_many([m for _, m in items])
                else:
                    s.send_many([m for bs, m in items if bs > seen])

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        ex = self.ex
        if self._dirty_bal:
            dirty, self._dirty_bal = self._dirty_bal, set()
            for firm in dirty:
                subs = self.bal_subs.get(firm)
                if subs:
                    data = _dumps(wire_balances(ex, firm))
                    for s in tuple(subs):
                        s.push("balances", data)
        if self._dirty_tick:
            dirty, self._dirty_tick = self._dirty_tick, set()
            last = self._last_tick
            for key in dirty:
                subs = self.ticker_subs.get(key)
                if subs:
                    data = _dumps(wire_ticker(ex, *key))
                    if last.get(key) == data:
                        continue  # nothing in it changed (e.g. an order away from the top)
                    last[key] = data
                    ch = ticker_channel(*key)
                    for s in tuple(subs):
                        s.push(ch, data)

    # ---------------------------------------------------------------- orders
    def submit_nowait(self, cmd, *, internal: bool = False):
        """Apply ``cmd`` now; return ``(events, durable_future)`` (see CoreRunner)."""
        if not self.accepting and not internal:
            raise self.not_accepting()
        try:
            return self.runner.submit_nowait(cmd)
        except Exception as exc:  # RunnerFailed: stopped or journal write failed
            raise self.submit_failed(exc) from None

    def not_accepting(self) -> ProtocolError:
        """The error of a request that would change state while the server is not ready."""
        if self.failed is not None:
            return ProtocolError(E.SHUTTING_DOWN, f"not accepting commands: {self.failed}", 503)
        return ProtocolError(E.SHUTTING_DOWN, "the server is shutting down", 503)

    def not_ready(self, why: str) -> None:
        """The runner refused or lost a command: /readyz answers 503 from now on, and so does
        every request that would change state - orders included. ``accepting`` is the one
        switch the order path (the C gate too) reads, so a load balancer that sees 503 on
        /readyz never finds orders still being taken."""
        self.failed = why
        self.accepting = False

    def submit_failed(self, exc: Exception) -> ProtocolError:
        """The runner refused a command (it is stopped, or a journal write failed): /readyz
        turns 503, and this is the error the request gets."""
        self.not_ready(str(exc)[:200])
        return ProtocolError(E.SHUTTING_DOWN, f"not accepting commands: {exc}", 503)

    def place(self, s: Session, cmd: PlaceOrder, req_id):
        """place_order. Applied now, and its reply built now (bytes); the reply is queued when
        the command's journal batch is durable (one callback per batch, not per order).
        Idempotent by client_order_id."""
        coid = cmd.client_order_id
        key = None
        if coid is not None:
            key = (cmd.account, coid)
            idem = self.idem
            hit = idem.done.get(key)
            if hit is not None:
                self.metrics.idempotent_replays += 1
                return self._replay(cmd, hit)
            inflight = idem.inflight.get(key)
            if inflight is not None:  # the first is not durable yet: answer when it is
                entry, durable = inflight
                _same_terms(cmd, entry)  # other terms: refused now
                self.metrics.idempotent_replays += 1
                durable.add_done_callback(partial(self._send_replayed, s, req_id, cmd, entry))
                return DEFERRED
            acct = self.ex.accounts.get(cmd.account)
            oid = acct.coids.get(coid) if acct is not None else None
            if oid is not None:
                # placed before a restart (so durable) and still working: its current state
                self.metrics.idempotent_replays += 1
                o = acct.orders[oid]
                return {"order_id": oid, "client_order_id": coid, "order_status": o.status,
                        "cum_qty": o.cum_qty, "leaves_qty": o.leaves, "replayed": True}
        self.admit(s)
        events, durable = self.submit_nowait(cmd)
        data, outcome = self._place_reply(s, cmd, req_id, events)
        entry = None
        if key is not None:  # as the C gate remembers it
            entry = [outcome, cmd, None]
            self.idem.inflight[key] = (entry, durable)
        self._enqueue(durable, s, req_id, data, key, entry)
        return DEFERRED

    def _replay(self, cmd: PlaceOrder, entry) -> dict:
        """The answer to a retry of a remembered place_order: refused when it names other
        terms than the first, the first's error again, or the order as it is now (its
        status, not the one the first reply had)."""
        _same_terms(cmd, entry)
        outcome, _first, final = entry
        if type(outcome) is tuple:
            if outcome[0] == "journal":  # placed before this process started
                return self._replay_journaled(cmd, outcome[1], final)
            raise ProtocolError(outcome[1], outcome[2])  # ("err", code, message)
        r = _loads(outcome)["result"]
        oid = r["order_id"]
        acct = self.ex.accounts.get(cmd.account)
        o = acct.orders.get(oid) if acct is not None else None
        if o is not None:  # still working
            r["order_status"], r["cum_qty"], r["leaves_qty"] = o.status, o.cum_qty, o.leaves
        elif final is not None and final[0] == oid:  # done since the first reply
            r["order_status"], r["cum_qty"], r["leaves_qty"] = final[1], final[2], 0
        r["replayed"] = True
        return r

    def _replay_journaled(self, cmd: PlaceOrder, seq: int, final=None) -> dict:
        """A retry of an order placed before a restart (the window rebuilt from the journal).
        Still working: its current state; done: its final state (found by replaying the log
        at start, ``rebuild_idempotency``), never placed again. Only if that replay could not
        say (a log without the records it needed) is the retry refused by name."""
        acct = self.ex.accounts.get(cmd.account)
        oid = acct.coids.get(cmd.client_order_id) if acct is not None else None
        if oid is not None:  # the id's latest use (the window keeps the latest) still works
            o = acct.orders[oid]
            return {"order_id": oid, "client_order_id": cmd.client_order_id,
                    "order_status": o.status, "cum_qty": o.cum_qty, "leaves_qty": o.leaves,
                    "seq": seq, "replayed": True}
        if final is not None:
            return {"order_id": final[0], "client_order_id": cmd.client_order_id,
                    "order_status": final[1], "cum_qty": final[2], "leaves_qty": 0,
                    "seq": seq, "replayed": True}
        raise ProtocolError(E.DUPLICATE_CLIENT_ORDER_ID,
                            f"client_order_id {cmd.client_order_id!r} was used by the order of "
                            f"seq {seq}, placed before a restart and no longer working; not "
                            f"placed again")

    def _send_replayed(self, s: Session, req_id, cmd, entry, durable) -> None:
        """Answer a retry that arrived while the first place_order was not yet durable."""
        if durable.cancelled() or durable.exception() is not None:
            s.send(_err_bytes(req_id, E.SHUTTING_DOWN, _NOT_DURABLE))
            return
        try:
            s.send(_dumps({"req_id": req_id, "ok": True, "result": self._replay(cmd, entry)}))
        except ProtocolError as exc:
            s.send(_err_bytes(req_id, exc.code, exc.message))

    def _idem_listen(self, cmd, events) -> None:
        """A durable command's reports: an order remembered for retries that is now done
        (nothing left to fill) gets its final state in its entry, so that a replay shows it
        after the order has left the book. Only orders with a client order id are looked up."""
        idem = self.idem
        done = idem.done
        if not done and not idem.inflight:
            return
        for ev in events:
            if (type(ev) is ExecutionReport and not ev.leaves_qty
                    and ev.client_order_id is not None):
                key = (ev.account, ev.client_order_id)
                entry = done.get(key)
                if entry is None:
                    x = idem.inflight.get(key)
                    entry = x[0] if x is not None else None
                if type(entry) is list:
                    entry[2] = (ev.order_id, ev.order_status, ev.cum_qty)

    async def rebuild_idempotency(self) -> int:
        """The idempotency window after a restart: the last ``window`` place_orders with a
        client order id, read back from the journal (at most ``2 x window`` records, so a
        start stays bounded), remembered with their terms and seq. Without this a retry of an
        order that had filled before the restart was placed, and traded, again. Returns how
        many were remembered."""
        journal = getattr(self.runner, "journal", None)
        last = self.ex.last_seq
        window = self.idem.window
        if journal is None or not last or window <= 0:
            return 0
        found: list = []
        async for seq, _ts, d in journal.read(max(1, last - 2 * window + 1), last):
            if d.get("type") == "place_order" and d.get("client_order_id") is not None:
                found.append(((d["account"], d["client_order_id"]), seq, _dict_terms(d)))
        remember = self.idem.remember
        kept = found[-window:]
        for key, seq, terms in kept:
            remember(key, [("journal", seq), terms, None])
        # the orders no longer working: what became of them is in no state the server keeps
        # (the core forgets an order once it is done), so the log is replayed to see it
        accounts = self.ex.accounts
        gone = {}
        for key, seq, _terms in kept:
            acct = accounts.get(key[0])
            if acct is None or key[1] not in acct.coids:
                gone[key] = seq
        if gone:
            done = self.idem.done
            for key, outcome in (await _outcomes_from_journal(journal, gone, last,
                                                              self.new_exchange)).items():
                entry = done.get(key)
                if entry is None:
                    continue
                if outcome[0] == "err":  # refused when placed: the retry gets that again
                    entry[0] = outcome
                else:
                    entry[2] = outcome
        return len(kept)

    def admit(self, s: Session) -> None:
        """Admission control for new risk (place_order, amend_order): refuse with OVERLOADED,
        before the core or the journal see the request, while the server is behind: the
        oldest command applied but not yet durable has waited ``max_journal_lag_ms`` or
        longer, or ``max_commands_in_flight`` or more are (the journal or the event loop
        lags), or ``overload_send_queue`` or more messages wait for this connection's socket
        (its client does not keep up). A refusal costs a fraction of an order, so past
        saturation the server keeps answering every request promptly instead of queueing
        replies until the slow-consumer rule drops the connection. Cancels are never refused
        for load: a firm can always take risk off. Returns when admitted.

        The bound on time is what keeps acknowledgements prompt whatever the rate; a bound on
        the count alone (5,000 until 2026-12-06) refused orders the server had the CPU for
        once it got faster: the same ~100 ms of journal lag holds more commands at a higher
        rate (docs/BENCHMARKS.md, run 11)."""
        runner = self.runner
        lag = runner.journal_lag
        if lag and lag >= self._max_in_flight:
            why = "in_flight"
        elif lag and runner.journal_lag_seconds >= self._max_lag_s:
            why = "journal_lag"
        elif len(s.out) >= self._overload_queue:
            why = "send_queue"
        else:
            return
        raise self.overloaded(s, why)

    def overloaded(self, s: Session, why: str) -> ProtocolError:
        """A refusal by admission control (``why``: the bound), counted; the error to answer.
        Also called by the C gate, which answers well-formed orders' refusals itself: a
        refusal must cost less than an order, or past saturation the server falls further
        behind with every refusal and serves ever fewer orders (it did: 27,000/s at
        84,000/s offered, docs/BENCHMARKS.md run 12)."""
        m = self.metrics
        m.overloaded += 1
        m.overloaded_by[why] = m.overloaded_by.get(why, 0) + 1
        return ProtocolError(OVERLOADED, f"server busy ({self.runner.journal_lag} commands not "
                                         f"yet durable, {len(s.out)} messages queued for this "
                                         f"connection); not applied, retry later", 503)

    def order_command(self, s: Session, req_id, cmd, admit: bool = False) -> object:
        """cancel_order / amend_order: submit ``cmd`` now (after admission control when
        ``admit``); the reply - the order's last execution report, or the reject - is built
        now as bytes and queued once the command is durable. Returns DEFERRED."""
        if admit:
            self.admit(s)
        events, durable = self.submit_nowait(cmd)
        self._enqueue(durable, s, req_id, _report_reply(req_id, events, cmd.account, cmd.TYPE))
        return DEFERRED

    def command(self, s: Session, req_id, cmd, result_fn) -> object:
        """Submit ``cmd`` now; reply ``result_fn(events)`` (or its ProtocolError) once the
        command is durable. Returns DEFERRED (for handlers)."""
        events, durable = self.submit_nowait(cmd)
        if isinstance(events, Exception):  # a core bug, journaled; replay reproduces it
            data = _err_bytes(req_id, E.INTERNAL_ERROR, "internal error")
        else:
            try:
                data = _dumps({"req_id": req_id, "ok": True, "result": result_fn(events)})
            except ProtocolError as exc:
                data = _err_bytes(req_id, exc.code, exc.message)
        self._enqueue(durable, s, req_id, data)
        return DEFERRED

    def _enqueue(self, durable, s: Session, req_id, data: bytes, key=None,
                 outcome=None) -> None:
        """Queue ``data`` (the reply, built now) for ``s`` once ``durable`` - the command's
        journal batch - is done: one done-callback per batch, not per command."""
        if durable is not self._batch_future:
            self._batch_future = durable
            self._batch = []
            durable.add_done_callback(partial(self._batch_durable, self._batch)
                                      if _replies is None else
                                      partial(_replies, self, self._batch))
        self._batch.append((s, req_id, data, key, outcome))

    def _batch_durable(self, batch: list, fut) -> None:
        """A journal batch is durable: queue its replies (built at submit time) and remember
        the place_order outcomes for retries. The reference of ``_replies``
        (exchange/server/_accel.c), which does this where the extension is built and calls this
        method for a failed batch."""
        if self._batch_future is fut:
            self._batch_future = None
        if fut.cancelled() or fut.exception() is not None:
            for s, req_id, _data, key, _outcome in batch:
                if key is not None:
                    self.idem.inflight.pop(key, None)
                s.send(_err_bytes(req_id, E.SHUTTING_DOWN, _NOT_DURABLE))
            return
        idem = self.idem
        forget = idem.inflight.pop
        remember = idem.remember
        for s, _req_id, data, key, outcome in batch:
            if key is not None:
                forget(key, None)
                remember(key, outcome)
            s.send(data)

    def _place_reply(self, s: Session, cmd: PlaceOrder, req_id, events) -> tuple:
        """``(reply bytes, outcome to remember)`` of a place_order from its events."""
        if isinstance(events, Exception):  # a core bug, journaled; replay reproduces it
            outcome = ("err", E.INTERNAL_ERROR, "internal error")
            return _err_bytes(req_id, outcome[1], outcome[2]), outcome
        # the incoming order's reports: the first event is its new (or rejected) report; the
        # last report with its order id (searching from the end) has its final state
        first = events[0] if events else None
        if type(first) is not ExecutionReport or first.account != cmd.account:
            # a module put something first: take the first report of this account
            first = next((ev for ev in events if type(ev) is ExecutionReport
                          and ev.account == cmd.account), None)
            if first is None:
                outcome = ("err", E.INTERNAL_ERROR, "no execution report")
                return _err_bytes(req_id, outcome[1], outcome[2]), outcome
        if first.exec_type == EXEC_REJECTED:
            outcome = ("err", first.reason or E.BAD_PARAMETER, _reason_text(first.reason))
            return _err_bytes(req_id, outcome[1], outcome[2]), outcome
        oid = first.order_id
        last = first
        for i in range(len(events) - 1, 0, -1):
            ev = events[i]
            if type(ev) is ExecutionReport and ev.order_id == oid:
                last = ev
                break
        if s.cod and last.leaves_qty:
            s.placed.add(oid)
        coid = first.client_order_id
        data = _PLACE_OK % (req_id, oid, b"null" if coid is None else _dumps(coid),
                            JSON_STR[last.order_status], last.cum_qty, last.leaves_qty,
                            cmd.seq)
        return data, data


# replies built from templates (compact JSON, keys in the order the protocol documents);
# strings from open sets (client order ids) go through orjson, the rest through caches
_PLACE_OK = (b'{"req_id":%d,"ok":true,"result":{"order_id":%d,"client_order_id":%s,'
             b'"order_status":%s,"cum_qty":%d,"leaves_qty":%d,"seq":%d}}')
_REPORT_OK = (b'{"req_id":%d,"ok":true,"result":{"order_id":%d,"client_order_id":%s,'
              b'"exec_type":%s,"order_status":%s,"qty":%d,"price":%s,"cum_qty":%d,'
              b'"leaves_qty":%d}}')
_NOT_DURABLE = "the journal could not make the order durable; it may be lost"


_TERMS = ("instrument", "segment", "side", "qty", "price", "order_type", "tif", "post_only")
_TERM_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PlaceOrder) if f.name in _TERMS
                  and f.default is not dataclasses.MISSING}


def _terms(cmd) -> tuple:
    """What a retry of a place_order must repeat: everything but the ids and stamps."""
    return (cmd.instrument, cmd.segment, cmd.side, cmd.qty, cmd.price, cmd.order_type, cmd.tif,
            cmd.post_only)


def _dict_terms(d: dict) -> tuple:
    """:func:`_terms` of a journaled place_order (its encode_command dict)."""
    return tuple(d.get(f, _TERM_DEFAULTS.get(f)) for f in _TERMS)


def _same_terms(cmd: PlaceOrder, entry) -> None:
    """Refuse a retry that reuses a remembered client order id for another order: replaying
    the first order's reply to it would tell the client an order it never sent was placed."""
    first = entry[1]
    if _terms(cmd) != (first if type(first) is tuple else _terms(first)):
        raise ProtocolError(E.DUPLICATE_CLIENT_ORDER_ID,
                            f"client_order_id {cmd.client_order_id!r} was used for an order "
                            f"with other terms (side, price, quantity, ...); use a new id")


def _same_kind(ex):
    """A fresh core with ``ex``'s modules, in their order (what build_exchange() makes for a
    core it made)."""
    return type(ex)(modules=tuple(type(m) for m in ex.modules.values()))


async def _outcomes_from_journal(journal, wanted: dict, last: int, new_exchange) -> dict:
    """``{(firm, client_order_id): outcome}`` of the place_orders at the journal seqs
    ``wanted`` maps them to: ``(order_id, final status, cum_qty)`` for an order that is done,
    ``("err", code, message)`` for one refused when placed. The log is replayed into a scratch
    exchange from the newest snapshot before the first of them (or from the start) to
    ``last``: at most the snapshot interval plus twice the idempotency window of commands,
    once per start, and only when some order of the window is no longer working. The snapshot
    is only read for these answers; the live state was proven by the runner."""
    from ..journal.codec import decode_payload
    from ..journal.runner import restore_bytes

    first = min(wanted.values())
    scratch = new_exchange()
    start = 1
    snap = await journal.latest_snapshot(max_seq=first - 1)
    if snap is not None:
        restore_bytes(scratch, snap[1])
        start = snap[0] + 1
    by_seq = {seq: key for key, seq in wanted.items()}
    working: dict = {}  # order id -> key, placed and not yet done
    out: dict = {}
    apply = scratch.apply
    async for rows in journal.read_rows(start, last):
        for seq, ts, p, _h in rows:
            try:
                events = apply(decode_payload(_loads(p), seq, ts))
            except Exception:  # as it did live (replay_into); the outcome stays unknown
                continue
            key = by_seq.get(seq)
            if key is not None:
                for ev in events:
                    if type(ev) is ExecutionReport and ev.account == key[0]:
                        if ev.exec_type == EXEC_REJECTED:
                            out[key] = ("err", ev.reason or E.BAD_PARAMETER,
                                        _reason_text(ev.reason))
                        else:
                            working[ev.order_id] = key
                        break
            if working:
                for ev in events:
                    if type(ev) is ExecutionReport and not ev.leaves_qty:
                        k = working.pop(ev.order_id, None)
                        if k is not None:
                            out[k] = (ev.order_id, ev.order_status, ev.cum_qty)
    return out


def _reason_text(code: str | None) -> str:
    return (code or "rejected").replace("_", " ").lower()


def _report_reply(req_id, events, account: str, kind: str) -> bytes:
    """Reply to cancel/amend: the order's last execution report, or the reject."""
    if isinstance(events, Exception):  # a core bug, journaled; replay reproduces it
        return _err_bytes(req_id, E.INTERNAL_ERROR, "internal error")
    last = None
    for ev in events:
        t = type(ev)
        if t is CommandRejected:
            return _err_bytes(req_id, ev.code, ev.message)
        if t is ExecutionReport and ev.account == account:
            if last is None or ev.order_id == last.order_id:
                last = ev
    if last is None:
        return _err_bytes(req_id, E.UNKNOWN_ORDER, f"{kind}: no report")
    coid = last.client_order_id
    p = last.price
    return _REPORT_OK % (req_id, last.order_id, b"null" if coid is None else _dumps(coid),
                         JSON_STR[last.exec_type], JSON_STR[last.order_status], last.qty,
                         b"null" if p is None else PX_JSON[p], last.cum_qty, last.leaves_qty)


# ====================================================================== built-in methods

@ws_method("auth", AuthParams, auth=False)
def m_auth(s: Session, p: AuthParams) -> dict:
    """Authenticate with an API key (or send ``Authorization: Bearer`` on the handshake)."""
    return s.gw.authenticate(s, p.api_key, p.cancel_on_disconnect, p.batch)


@ws_method("ping", EmptyParams, auth=False)
def m_ping(s: Session, p) -> dict:
    """Application-level heartbeat: returns the server time and the last sequence number."""
    return {"pong": True, "ts": time.time_ns(), "seq": s.gw.ex.last_seq}


@ws_method("place_order", PlaceOrderParams, roles=(ROLE_FIRM,), validate=validate_place_order)
def m_place(s: Session, cmd: PlaceOrder):
    """Place an order for the session's firm. Idempotent by client_order_id."""
    cmd.account = s.firm_id
    return s.gw.place(s, cmd, s.req_id)


@ws_method("cancel_order", CancelOrderParams, roles=(ROLE_FIRM,),
           validate=validate_cancel_order)
def m_cancel(s: Session, cmd: CancelOrder):
    """Cancel one of the firm's live orders by order_id or client_order_id."""
    return s.gw.order_command(s, s.req_id, _own_order_ref(s, cmd))


@ws_method("amend_order", AmendOrderParams, roles=(ROLE_FIRM,),
           validate=validate_amend_order)
def m_amend(s: Session, cmd: AmendOrder):
    """Change a live order's total quantity and/or price."""
    return s.gw.order_command(s, s.req_id, _own_order_ref(s, cmd), admit=True)


def _own_order_ref(s: Session, cmd):
    """A cancel/amend naming an order (by order_id or client_order_id) of the session's
    firm."""
    if cmd.order_id is None and cmd.client_order_id is None:
        raise ProtocolError(E.INVALID_PARAMS, "give order_id or client_order_id")
    cmd.account = s.firm_id
    return cmd


def _canceled(events: list, firm: str) -> dict:
    n = 0
    for ev in events:
        if type(ev) is CommandRejected:
            raise ProtocolError(ev.code, ev.message)
        if type(ev) is ExecutionReport and ev.account == firm:
            n += 1
    return {"canceled": n}


@ws_method("cancel_all", CancelAllParams, roles=(ROLE_FIRM,))
def m_cancel_all(s: Session, p: CancelAllParams):
    """Cancel all the firm's live orders (optionally of one instrument and/or segment)."""
    firm = s.firm_id
    return s.gw.command(s, s.req_id, CancelAll(account=firm, instrument=p.instrument,
                                               segment=p.segment),
                        lambda events: _canceled(events, firm))


@ws_method("open_orders", EmptyParams, roles=(ROLE_FIRM,))
def m_open_orders(s: Session, p) -> dict:
    """The firm's live orders (state as of the last applied command)."""
    ex = s.gw.ex
    return {"as_of_seq": ex.last_seq, "orders": [wire_order(o) for o in
                                                 ex.open_orders(s.firm_id)]}


@ws_method("subscribe", ChannelParams)
def m_subscribe(s: Session, p: ChannelParams) -> dict:
    """Subscribe to a channel; the result carries its snapshot where it has one."""
    return s.gw.subscribe(s, p.channel)


@ws_method("unsubscribe", ChannelParams)
def m_unsubscribe(s: Session, p: ChannelParams) -> dict:
    """Stop a subscription."""
    return s.gw.unsubscribe(s, p.channel)


# ====================================================================== the handler

async def websocket_handler(request: web.Request) -> web.StreamResponse:
    gw: Gateway = request.app[GATEWAY_KEY]
    cfg = gw.cfg
    header_key = None
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or gw.credentials.lookup(token.strip()) is None:
            gw.metrics.gateway_errors[E.AUTH_FAILED] = (
                gw.metrics.gateway_errors.get(E.AUTH_FAILED, 0) + 1)
            return web.json_response(
                {"ok": False, "error": {"code": E.AUTH_FAILED,
                                        "message": "unknown or revoked API key"}}, status=401)
        header_key = token.strip()
        cap = cfg.max_connections_per_key
        cred = gw.credentials.lookup(header_key)
        if cap and gw.key_sessions.get(cred.key_id, 0) >= cap:
            gw.metrics.gateway_errors[E.TOO_MANY_CONNECTIONS] = (
                gw.metrics.gateway_errors.get(E.TOO_MANY_CONNECTIONS, 0) + 1)
            return web.json_response(
                {"ok": False, "error": {"code": E.TOO_MANY_CONNECTIONS,
                                        "message": f"the API key has {cap} connections open"}},
                status=429, headers={"Retry-After": "1"})
    if not gw.accepting:
        return web.json_response({"ok": False, "error": {
            "code": E.SHUTTING_DOWN, "message": "the server is shutting down"}}, status=503)
    ws = _DirectWS(heartbeat=cfg.heartbeat_seconds, max_msg_size=4 * cfg.max_frame_bytes,
                   compress=False, timeout=2.0, **_WS_KW)
    s = Session(gw, ws, request.remote or "")
    ws.session = s
    await ws.prepare(request)
    gw.attach(s)
    if header_key is not None:
        gw.authenticate(s, header_key,
                        request.query.get("cancel_on_disconnect", "") in ("1", "true"),
                        request.query.get("batch", "") in ("1", "true"))
    # write frames straight to the transport when the websocket is uncompressed (it is:
    # compress=False) and the transport is a plain asyncio one; else a writer task
    tr = request.transport
    if tr is not None and not ws.compress and hasattr(tr, "get_write_buffer_size"):
        s.transport = tr
        if s.out:
            s.flushing = True
            gw.want_flush(s)
    else:
        s.transport = None
        s.writer = asyncio.get_running_loop().create_task(s.write_loop())
    loop = asyncio.get_running_loop()
    timer = loop.call_later(cfg.auth_timeout_seconds, _auth_timeout, s)
    try:
        # with ``ws.direct`` text frames are handled in the transport's data_received (see
        # _DirectQueue) and only control frames and errors arrive here
        async for msg in ws:
            t = msg.type
            if t is TEXT:
                s.on_text(msg.data)
            elif t is BINARY:
                s.error(None, E.BINARY_NOT_SUPPORTED,
                        "binary frames are not supported; send JSON text frames")
            elif t is WSMsgType.ERROR:
                break
            if s.closed:
                break
    finally:
        timer.cancel()
        s.closed = True
        s.wake.set()
        gw.detach(s)
        if not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except Exception:
                pass
        w = s.writer
        if w is not None and not w.done():
            w.cancel()
    return ws


class _DirectQueue(WebSocketDataQueue):
    """aiohttp's queue of parsed websocket messages, short-circuited for text frames: the
    frame parser (aiohttp's, in C) hands each complete text message straight to the session
    inside the transport's ``data_received``, instead of queueing a message object, waking
    the handler task and going through ``receive()`` and ``async for`` per message. Control
    frames (close, ping, pong) and errors take aiohttp's normal path."""

    def __init__(self, protocol, limit, *, loop, session):
        super().__init__(protocol, limit, loop=loop)
        self.session = session

    def feed_data(self, data, size) -> None:
        s = self.session
        s.rx = True  # anything from the peer counts for the heartbeat
        t = data[0]
        if (t is TEXT or t is BINARY) and s.transport is not None:
            if not s.closed:
                try:
                    if t is TEXT:
                        s.on_text(data[1])
                    else:
                        s.error(None, E.BINARY_NOT_SUPPORTED,
                                "binary frames are not supported; send JSON text frames")
                except Exception as exc:  # on_text answers errors itself; a bug must not
                    s.gw.log_exception(exc)  # reach the frame parser
            return
        WebSocketDataQueue.feed_data(self, data, size)


class _DirectWS(web.WebSocketResponse):
    """A WebSocketResponse whose text frames go straight to ``session.on_text`` (see
    _DirectQueue). Falls back to aiohttp's own queue when its internals are not what this
    was written against (``direct`` is then False)."""

    session: Session | None = None
    direct = False

    def __init__(self, *, heartbeat=None, **kw):
        # the gateway's own heartbeat (Gateway._heartbeat: one timer for all sessions) is
        # used on the direct path; aiohttp's - a call_soon and a timer reset per received
        # chunk - only if we fall back to it
        super().__init__(heartbeat=None, **kw)
        self.hb = heartbeat

    def _aiohttp_heartbeat(self) -> None:
        if self.hb:
            self._heartbeat = self.hb
            self._pong_heartbeat = self.hb / 2.0

    def _post_start(self, request, protocol, writer) -> None:
        s = self.session
        if s is None or _DirectReader is None:
            self._aiohttp_heartbeat()
            return super()._post_start(request, protocol, writer)
        try:
            self._ws_protocol = protocol
            self._writer = writer
            tr = request.transport
            if tr is not None and hasattr(tr, "get_write_buffer_size"):
                s.transport = tr  # frames that arrive with the handshake are answered
            self._reader = _DirectQueue(request._protocol, _CHUNK, loop=self._loop,
                                        session=s)
            self._parser = _DirectReader(self._reader, self._max_msg_size,
                                         compress=bool(self._compress),
                                         decode_text=self._decode_text)
        except Exception:  # not the aiohttp this was written for
            s.transport = None
            self._reader = self._parser = None
            self._aiohttp_heartbeat()
            return super()._post_start(request, protocol, writer)
        self.direct = True
        request.protocol.set_parser(self._parser)
        request.protocol.keep_alive(False)
        if self.hb:
            s.gw.watch_heartbeat(s, self.hb)

    def heartbeat_timeout(self) -> None:
        """No pong in time: close the connection as aiohttp's own heartbeat does."""
        try:
            self._handle_ping_pong_exception(
                asyncio.TimeoutError("no PONG received within the heartbeat"))
        except Exception:
            tr = self.session.transport if self.session is not None else None
            if tr is not None:
                tr.abort()


def _auth_timeout(s: Session) -> None:
    if s.cred is None and not s.closed:
        s.kill(CLOSE_AUTH, f"{E.NOT_AUTHENTICATED}: no auth within the time limit")


def _gate_off(session, obj) -> bool:
    return False


# Plain place/cancel/amend requests in C (exchange/server/_accel.c): the steps of on_request, the
# validators' fast paths, the handlers, Gateway.place/order_command and the replies, for an
# authenticated firm's well-formed request; False (nothing changed) for anything else, which
# on_request then handles here. Off where the extension is not built.
try:
    from ._accel import gate as _gate, gate_setup as _gate_setup
except ImportError:  # pragma: no cover - an install without the extension
    _gate = _gate_off
else:
    from .protocol import _PRICES

    _gate_setup({"Session": Session, "PlaceOrder": PlaceOrder, "CancelOrder": CancelOrder,
                 "AmendOrder": AmendOrder, "ExecutionReport": ExecutionReport,
                 "CommandRejected": CommandRejected, "prices": _PRICES,
                 "ROLE_FIRM": ROLE_FIRM, "EXEC_REJECTED": EXEC_REJECTED,
                 "report_reply": _report_reply})

# Gateway.on_commit's usual events in C (exchange/server/_accel.c: fanout; read when a Gateway is
# made), and Gateway._batch_durable (replies; read per batch): None where the extension is
# not built.
try:
    from ._accel import fanout as _fanout, fanout_setup as _fanout_setup, \
        replies as _replies
except ImportError:  # pragma: no cover - an install without the extension
    _fanout = _replies = None
else:
    from .protocol import er_push_ref

    _fanout_setup({"BookUpdate": BookUpdate, "Trade": Trade, "er_head": er_head,
                   "er_push": er_push_ref, "ER_HEADS_MAX": ER_HEADS_MAX})
