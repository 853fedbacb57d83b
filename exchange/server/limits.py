"""Bounds on clients below the websocket protocol: connections and HTTP request rates.

    guard = ConnectionGuard(cfg)              # server.* limits (exchange/app/config.py)
    guard.install(runner.server)              # after AppRunner.setup(), before the site starts
    app = web.Application(middlewares=[http_rate_limit(cfg), ...])

**Connections** (``ConnectionGuard``, on aiohttp's ``Server``: every TCP connection, HTTP and
websocket alike, passes its ``connection_made``/``connection_lost``):

* *handshake timeout* - a connection whose first request head (an HTTP request or the
  websocket upgrade) is not complete ``handshake_timeout_seconds`` after it opened is
  aborted. aiohttp's own bound on that is its keep-alive timeout, 75 s: long enough for a
  slowloris crowd to hold every descriptor.
* *per-IP cap* - past ``max_connections_per_ip`` open connections from one address, a new one
  gets ``429 TOO_MANY_CONNECTIONS`` and is closed. Addresses in ``connection_limit_exempt``
  (default loopback: a local reverse proxy, the load test) are not capped.
* *descriptor guard* - past ``max_connections`` open connections (0: the process's descriptor
  limit less a reserve for the journal, snapshots and the writer process), the oldest
  connection still waiting for its first request head is aborted to make room; if there is
  none, the new connection gets ``503 TOO_MANY_CONNECTIONS`` and is closed. The accept loop
  therefore never meets EMFILE (which stops accepting for a second at a time, for everyone),
  and idle or half-open connections cannot keep real clients out: they are the first to go.

The guard is installed on the server object, not in the request path: it costs a dict update
per connection and nothing per request or websocket message.

**HTTP rate limits** (``http_rate_limit``, a middleware on ``/api/``): token buckets per API
key (the bearer token) and per client address; over either, ``429 RATE_LIMITED`` with
``Retry-After``. Buckets idle long enough to be full again are dropped (keeping them would
change nothing), so a flood of made-up keys cannot grow the table without bound.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time

import orjson
from aiohttp import web

from ..core import errors as E

FD_RESERVE = 64  # descriptors kept for the journal, snapshots, the writer process, logs
BUCKETS_MAX = 10_000  # token buckets kept per table before idle (full) ones are dropped


def _raw_response(
    status: int, reason: str, code: str, message: str, retry_after: int | None = None
) -> bytes:
    body = orjson.dumps({"ok": False, "error": {"code": code, "message": message}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if retry_after is not None:
        head += f"Retry-After: {retry_after}\r\n"
    return head.encode() + b"\r\n" + body


def max_connections(cfg) -> int:
    """``server.max_connections``, or (0) the descriptor limit less FD_RESERVE."""
    if cfg.max_connections:
        return cfg.max_connections
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, soft - FD_RESERVE)


class ConnectionGuard:
    """Per-IP caps, the handshake timeout and the descriptor guard (module docstring)."""

    def __init__(self, cfg):
        self.per_ip = cfg.max_connections_per_ip
        self.exempt = frozenset(cfg.connection_limit_exempt)
        self.max_open = max_connections(cfg)
        self.timeout = cfg.handshake_timeout_seconds
        self.by_ip: dict[str, int] = {}
        self.conns: dict = {}  # handler -> (ip, transport)
        # handlers whose first request head has not arrived -> its timeout handle; in the
        # order they connected, so the first is the oldest
        self.pending: dict = {}
        # counters for /metrics
        self.refused_per_ip = 0
        self.refused_full = 0
        self.evicted = 0
        self.handshake_timeouts = 0

    @property
    def open(self) -> int:
        return len(self.conns)

    def install(self, server: web.Server) -> None:
        """Wrap ``server``'s connection hooks and request factory (aiohttp's ``Server``:
        ``AppRunner.server`` after ``setup()``)."""
        made, lost, factory = server.connection_made, server.connection_lost, server.request_factory

        def connection_made(handler, transport):
            made(handler, transport)
            self._opened(handler, transport)

        def connection_lost(handler, exc=None):
            lost(handler, exc)
            self._closed(handler)

        def request_factory(message, payload, protocol, writer, task, *a, **kw):
            h = self.pending.pop(protocol, None)  # its first request head is complete
            if h is not None:
                h.cancel()
            return factory(message, payload, protocol, writer, task, *a, **kw)

        server.connection_made = connection_made
        server.connection_lost = connection_lost
        server.request_factory = request_factory

    def _opened(self, handler, transport) -> None:
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, (tuple, list)) and peer else ""
        self.conns[handler] = (ip, transport)
        n = self.by_ip.get(ip, 0) + 1
        self.by_ip[ip] = n
        if self.per_ip and n > self.per_ip and ip not in self.exempt:
            self.refused_per_ip += 1
            self._refuse(
                handler,
                transport,
                429,
                "Too Many Requests",
                f"more than {self.per_ip} connections from {ip}",
            )
            return
        if len(self.conns) > self.max_open:
            # room first: the oldest connection that has not sent its first request head
            old = next(iter(self.pending), None)
            if old is not None:
                self.evicted += 1
                self.pending.pop(old).cancel()
                entry = self.conns.get(old)
                if entry is not None:
                    entry[1].abort()
            else:
                self.refused_full += 1
                self._refuse(
                    handler,
                    transport,
                    503,
                    "Service Unavailable",
                    f"the server has {self.max_open} connections open",
                )
                return
        self.pending[handler] = asyncio.get_running_loop().call_later(
            self.timeout, self._timed_out, handler
        )

    def _refuse(self, handler, transport, status, reason, message) -> None:
        transport.write(
            _raw_response(status, reason, E.TOO_MANY_CONNECTIONS, message, retry_after=1)
        )
        transport.close()

    def _timed_out(self, handler) -> None:
        if self.pending.pop(handler, None) is None:
            return
        entry = self.conns.get(handler)
        if entry is not None:
            self.handshake_timeouts += 1
            entry[1].abort()

    def _closed(self, handler) -> None:
        h = self.pending.pop(handler, None)
        if h is not None:
            h.cancel()
        entry = self.conns.pop(handler, None)
        if entry is None:
            return
        ip = entry[0]
        n = self.by_ip.get(ip, 1) - 1
        if n > 0:
            self.by_ip[ip] = n
        else:
            self.by_ip.pop(ip, None)


class TokenBuckets:
    """Token buckets by name: ``take(name)`` -> 0.0 when a token was taken, else the seconds
    until one is there."""

    __slots__ = ("rate", "burst", "buckets")

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = float(burst)
        self.buckets: dict = {}  # name -> [tokens, at]

    def take(self, name, now: float) -> float:
        b = self.buckets.get(name)
        if b is None:
            if len(self.buckets) >= BUCKETS_MAX:
                self._prune(now)
            b = self.buckets[name] = [self.burst, now]
        else:
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return 0.0
        return (1.0 - b[0]) / self.rate

    def _prune(self, now: float) -> None:
        """Drop the buckets that are full again (dropping them changes nothing); if every
        one is busy, the older half."""
        rate, burst = self.rate, self.burst
        full = [k for k, (t, at) in self.buckets.items() if t + (now - at) * rate >= burst]
        for k in full:
            del self.buckets[k]
        if len(self.buckets) >= BUCKETS_MAX:
            for k in list(self.buckets)[: BUCKETS_MAX // 2]:
                del self.buckets[k]


def http_rate_limit(cfg):
    """The operator API's rate limits as an aiohttp middleware: per API key (bearer token)
    ``http_rate_limit_per_key`` requests/s (burst ``http_rate_limit_burst``), and per client
    address ``http_rate_limit_per_ip`` (burst twice that; addresses in
    ``connection_limit_exempt`` are not limited by address). Over either: 429 RATE_LIMITED
    with Retry-After (whole seconds)."""
    per_key = (
        TokenBuckets(cfg.http_rate_limit_per_key, cfg.http_rate_limit_burst)
        if cfg.http_rate_limit_per_key > 0
        else None
    )
    per_ip = (
        TokenBuckets(cfg.http_rate_limit_per_ip, int(2 * cfg.http_rate_limit_per_ip) or 1)
        if cfg.http_rate_limit_per_ip > 0
        else None
    )
    exempt = frozenset(cfg.connection_limit_exempt)
    clock = time.monotonic

    @web.middleware
    async def rate_limit(request: web.Request, handler):
        if not request.path.startswith("/api/"):
            return await handler(request)
        now = clock()
        wait = 0.0
        ip = request.remote or ""
        if per_ip is not None and ip not in exempt:
            wait = per_ip.take(ip, now)
            what = f"requests from {ip}: {cfg.http_rate_limit_per_ip:g}/s"
        if not wait and per_key is not None:
            auth = request.headers.get("Authorization")
            if auth:
                wait = per_key.take(auth, now)
                what = (
                    f"requests with this API key: {cfg.http_rate_limit_per_key:g}/s "
                    f"(burst {cfg.http_rate_limit_burst})"
                )
        if wait:
            retry = max(1, math.ceil(wait))
            return web.json_response(
                {
                    "ok": False,
                    "error": {
                        "code": E.RATE_LIMITED,
                        "message": f"over the limit of {what}; retry in {retry} s",
                    },
                },
                status=429,
                headers={"Retry-After": str(retry)},
            )
        return await handler(request)

    return rate_limit
