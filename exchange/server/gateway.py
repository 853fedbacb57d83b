"""The websocket gateway: the session (one connection) and the Gateway that holds them.

The gateway is split by concern (docs/adr/0003-gateway.md, "Module layout"):

* :mod:`.framing`: frames out (headers built here) and in (aiohttp's parser straight to
  :meth:`Session.on_text`), close codes;
* :mod:`.admission`: the per-key token bucket, ``OVERLOADED``, ``SHUTTING_DOWN``;
* :mod:`.idempotency`: retries of a place_order by ``client_order_id``;
* :mod:`.fanout`: subscriptions, pushes of durable events, delivery and its memory bound;
* :mod:`.handlers`: the built-in websocket methods and order entry;
* this module: :class:`Session`, :class:`Gateway` (the mixins above and the sessions,
  authentication, heartbeat, journal batches), the aiohttp handler, and the C extension's
  entry points (``_gate``, ``_fanout``, ``_replies``), which stand in for parts of all of them.

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
import time
from functools import partial

import orjson
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from ..access.credentials import ROLE_FIRM
from ..core import errors as E
from ..core.commands import AmendOrder, CancelOrder, PlaceOrder
from ..core.events import (
    EXEC_REJECTED,
    BookUpdate,
    CommandRejected,
    ExecutionReport,
    Trade,
)
from .admission import AdmissionMixin, KeyBucket
from .fanout import ER_HEADS_MAX, FanoutMixin
from .framing import (
    _FRAME_HEAD,
    _HEADS,
    _WS_KW,
    BINARY,
    CLOSE_AUTH,
    CLOSE_SLOW,
    CLOSE_TOO_MANY,
    TEXT,
    WRITE_HIGH,
    _DirectWS,
    _err_bytes,
    _text_frame,
)
from .handlers import OrderEntryMixin, _report_reply
from .idempotency import _NOT_DURABLE, Idempotency, IdempotencyMixin, _same_kind
from .protocol import DEFERRED, METHODS, ProtocolError, er_head, validation_message

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

GATEWAY_KEY = web.AppKey("gateway", object)  # app[GATEWAY_KEY] -> Gateway

INT64 = 1 << 63
BIG_MESSAGE = 1024  # a message this long (a book snapshot) is counted when it is queued


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

    __slots__ = (
        "gw",
        "ws",
        "cred",
        "firm_id",
        "role",
        "key_id",
        "batch",
        "cod",
        "subs",
        "out",
        "wake",
        "closed",
        "tokens",
        "refill_at",
        "placed",
        "writer",
        "peer",
        "req_id",
        "transport",
        "flushing",
        "backoff",
        "rx",
        "idle",
        "ping_at",
        "qmax",
        "qn",
        "qbytes",
        "held",
        "qbig",
        "bucket",
        "auth_failures",
        "conn",
        "__weakref__",
    )

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
        self.conn = None  # the connection's transport (the handler's request.transport)
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
        self.send(b'%s%d,"data":%s}' % (head, seq, data))

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
            tr = self.conn
            if tr is not None:
                tr.abort()

    # ---------------------------------------------------------------- input
    def on_text(self, data: str) -> None:
        if len(data) > self.gw.max_frame:
            self.error(None, E.FRAME_TOO_LARGE, f"frame over {self.gw.max_frame} bytes")
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
                tokens = min(
                    tokens + (now - self.refill_at) * gw.cfg.rate_limit_per_second,
                    float(gw.cfg.rate_limit_burst),
                )
                self.refill_at = now
            if tokens < 1.0:
                self.tokens = tokens
                self.error(
                    req_id,
                    E.RATE_LIMITED,
                    f"over {gw.cfg.rate_limit_per_second:g} requests/s "
                    f"(burst {gw.cfg.rate_limit_burst}) for this "
                    f"{'API key' if bucket is not None else 'connection'}; "
                    f"request dropped",
                )
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
            self.error(
                req_id, E.INTERNAL_ERROR, "internal error; the request may not have been applied"
            )


class Gateway(AdmissionMixin, IdempotencyMixin, FanoutMixin, OrderEntryMixin):
    """Sessions, subscriptions and fan-out over one exchange + runner."""

    def __init__(self, exchange, runner, cfg, logger=None, new_exchange=None):
        self.ex = exchange
        # a fresh core of the live one's kind, for replaying the journal into a scratch copy
        # (the composition root passes its build_exchange; the server does not import it)
        self.new_exchange = (
            new_exchange if new_exchange is not None else partial(_same_kind, exchange)
        )
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
        runner.add_listener(
            self._idem_listen if _idem_listen is None else partial(_idem_listen, self.idem)
        )

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

    # (output scheduling and the send-queue memory bound: fanout.py)

    # ---------------------------------------------------------------- commands
    async def submit(self, cmd, *, internal: bool = False) -> list:
        """Apply ``cmd``; return its events once durable. Journal trouble and core bugs become
        ProtocolErrors (SHUTTING_DOWN 503 / INTERNAL_ERROR 500). ``internal``: the server's
        own command (a cancel-on-disconnect at shutdown), taken while clients' are not."""
        return (await self.submit_seq(cmd, internal=internal))[1]

    async def submit_seq(self, cmd, *, internal: bool = False) -> tuple[int, list]:
        """:meth:`submit`, with the seq ``cmd`` was applied at (its envelope is the runner's,
        not the command's: read right after the runner applied it)."""
        events, durable = self.submit_nowait(cmd, internal=internal)
        seq = self.ex.last_seq
        try:
            await asyncio.shield(durable)
        except Exception as exc:
            self.not_ready(str(exc)[:200])
            raise ProtocolError(
                E.SHUTTING_DOWN, "the journal could not make the command durable", 503
            ) from None
        if isinstance(events, Exception):
            raise ProtocolError(E.INTERNAL_ERROR, "internal error (the command is journaled)", 500)
        return seq, events

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
            await asyncio.gather(
                *(
                    self.submit(CancelOrder(account=firm_id, order_id=oid), internal=True)
                    for oid in order_ids
                )
            )
        except Exception as exc:  # shutting down
            self.log_exception(exc)

    def authenticate(
        self, s: Session, api_key: str, cod: bool = False, batch: bool = False
    ) -> dict:
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
                self.cfg.rate_limit_per_second, self.cfg.rate_limit_burst, now
            )
        s.bucket = bucket
        s.tokens = bucket.lease(now)  # from now on the key's, not the connection's
        s.cred = cred
        s.role = cred.role
        s.firm_id = cred.firm_id
        s.key_id = cred.key_id
        s.cod = bool(cod) and cred.role == ROLE_FIRM
        s.batch = bool(batch)
        return {
            "key_id": cred.key_id,
            "role": cred.role,
            "firm_id": cred.firm_id,
            "cancel_on_disconnect": s.cod,
            "batch": s.batch,
            "heartbeat_seconds": self.cfg.heartbeat_seconds,
            "rate_limit_per_second": self.cfg.rate_limit_per_second,
        }

    # (subscriptions and fan-out: fanout.py)

    # ---------------------------------------------------------------- orders
    # (order entry: handlers.py; admission control: admission.py; retries:
    # idempotency.py)
    def submit_nowait(self, cmd, *, internal: bool = False):
        """Apply ``cmd`` now; return ``(events, durable_future)`` (see CoreRunner)."""
        if not self.accepting and not internal:
            raise self.not_accepting()
        try:
            return self.runner.submit_nowait(cmd)
        except Exception as exc:  # RunnerFailed: stopped or journal write failed
            raise self.submit_failed(exc) from None

    def _enqueue(self, durable, s: Session, req_id, data: bytes, key=None, outcome=None) -> None:
        """Queue ``data`` (the reply, built now) for ``s`` once ``durable`` - the command's
        journal batch - is done: one done-callback per batch, not per command."""
        if durable is not self._batch_future:
            self._batch_future = durable
            self._batch = []
            durable.add_done_callback(
                partial(self._batch_durable, self._batch)
                if _replies is None
                else partial(_replies, self, self._batch)
            )
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


# (the built-in methods: handlers.py)

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
                gw.metrics.gateway_errors.get(E.AUTH_FAILED, 0) + 1
            )
            return web.json_response(
                {
                    "ok": False,
                    "error": {"code": E.AUTH_FAILED, "message": "unknown or revoked API key"},
                },
                status=401,
            )
        header_key = token.strip()
        cap = cfg.max_connections_per_key
        cred = gw.credentials.lookup(header_key)
        if cap and gw.key_sessions.get(cred.key_id, 0) >= cap:
            gw.metrics.gateway_errors[E.TOO_MANY_CONNECTIONS] = (
                gw.metrics.gateway_errors.get(E.TOO_MANY_CONNECTIONS, 0) + 1
            )
            return web.json_response(
                {
                    "ok": False,
                    "error": {
                        "code": E.TOO_MANY_CONNECTIONS,
                        "message": f"the API key has {cap} connections open",
                    },
                },
                status=429,
                headers={"Retry-After": "1"},
            )
    if not gw.accepting:
        return web.json_response(
            {
                "ok": False,
                "error": {"code": E.SHUTTING_DOWN, "message": "the server is shutting down"},
            },
            status=503,
        )
    ws = _DirectWS(
        heartbeat=cfg.heartbeat_seconds,
        max_msg_size=4 * cfg.max_frame_bytes,
        compress=False,
        timeout=2.0,
        **_WS_KW,
    )
    s = Session(gw, ws, request.remote or "")
    s.conn = request.transport
    ws.session = s
    await ws.prepare(request)
    gw.attach(s)
    if header_key is not None:
        gw.authenticate(
            s,
            header_key,
            request.query.get("cancel_on_disconnect", "") in ("1", "true"),
            request.query.get("batch", "") in ("1", "true"),
        )
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
                s.error(
                    None,
                    E.BINARY_NOT_SUPPORTED,
                    "binary frames are not supported; send JSON text frames",
                )
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

    _gate_setup(
        {
            "Session": Session,
            "PlaceOrder": PlaceOrder,
            "CancelOrder": CancelOrder,
            "AmendOrder": AmendOrder,
            "ExecutionReport": ExecutionReport,
            "CommandRejected": CommandRejected,
            "prices": _PRICES,
            "ROLE_FIRM": ROLE_FIRM,
            "EXEC_REJECTED": EXEC_REJECTED,
            "report_reply": _report_reply,
        }
    )

# Gateway.on_commit's usual events in C (exchange/server/_accel.c: fanout; read when a Gateway is
# made), Gateway._batch_durable (replies; read per batch) and Gateway._idem_listen
# (idem_listen; read when a Gateway is made): None where the extension is not built.
try:
    from ._accel import (
        fanout as _fanout,
        fanout_setup as _fanout_setup,
        idem_listen as _idem_listen,
        replies as _replies,
    )
except ImportError:  # pragma: no cover - an install without the extension
    _fanout = _replies = _idem_listen = None
else:
    from .protocol import er_push_ref

    _fanout_setup(
        {
            "BookUpdate": BookUpdate,
            "Trade": Trade,
            "er_head": er_head,
            "er_push": er_push_ref,
            "ER_HEADS_MAX": ER_HEADS_MAX,
        }
    )
