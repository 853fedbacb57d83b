"""Async Python client for the exchange's websocket protocol (docs/PROTOCOL.md).

    async with ExchangeClient("ws://127.0.0.1:8080/ws", "demo-key-power1") as c:
        await c.subscribe("executions")
        book = await c.subscribe_book("CEA-2026", "main")      # a LocalBook kept up to date
        r = await c.place_order("CEA-2026", "buy", 100, "85.10", client_order_id="b-1")
        push = await c.next_push("executions")                  # (channel, seq, data)

* Requests return the ``result`` or raise :class:`ExchangeError` with the stable code.
* Pushes go to per-channel queues (:meth:`next_push`, :meth:`drain`) and to ``on_push``.
* Book channels keep a :class:`LocalBook`; an update whose ``seq`` is not the next one is a
  gap: the client resubscribes and rebuilds the book from a fresh snapshot (``resyncs``).
* With ``reconnect=True`` a dropped connection is re-opened with back-off, re-authenticated and
  every subscription re-made with the last seq seen on it (``from_seq``): a server that still
  has the missed messages (a market-data gateway, ``serve --market-data``) resends them and
  the book carries on (``resumes``); otherwise its reply is a fresh snapshot, loaded as on a
  first subscribe (``resume_snapshots``). Requests in flight when it drops raise
  ``ConnectionError``; retrying ``place_order`` with the same ``client_order_id`` is safe
  (idempotent).
* ``batch=True`` asks the server for one frame per tick (a JSON array of messages);
  :meth:`send_batch` sends many requests in one frame. Both are for high-rate users.
* Several URLs (``ExchangeClient(["ws://a/ws", "ws://b/ws"], key, reconnect=True)``): the
  nodes of a replicated exchange (``serve --standby``). The client connects to the one that
  leads - a standby answers ``NOT_LEADER`` with the leader's address, which the client
  follows - and after a drop reconnects to whichever leads then. A ``place_order`` with a
  ``client_order_id`` (and the read-only requests) that was in flight, or is sent while
  the client reconnects, is sent again once it is connected, until its timeout: the
  client_order_id makes the retry return the first order's acknowledgement, never a second
  order (``failover_retries`` counts them). ``SHUTTING_DOWN`` is retried the same way, and
  a ping every 2 s finds a leader that stalled with its connections open.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from typing import Any, Callable

import aiohttp
import orjson

__all__ = [
    "ExchangeClient",
    "ExchangeError",
    "LocalBook",
    "PlatformClient",
    "build_batch",
    "hash_action_id",
]


class ExchangeError(Exception):
    """An error reply: ``code`` is the stable code, ``message`` the explanation."""

    def __init__(self, code: str, message: str = "", leader: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.leader = leader  # NOT_LEADER: the leader's websocket address, when it is known


NOT_LEADER = "NOT_LEADER"
# the node did not take the request and another will: send it again after a fail-over
_FAILOVER_CODES = frozenset({NOT_LEADER, "SHUTTING_DOWN", "LEADER_UNAVAILABLE"})
# ... of those, the codes of a node that cannot take it: reconnect (to the leader) first;
# LEADER_UNAVAILABLE is a market-data gateway between leaders: ask it again
_RECONNECT_CODES = frozenset({NOT_LEADER, "SHUTTING_DOWN"})
# requests sent again after a fail-over: a retried place_order returns the first one's ack
# (client_order_id), the others only read
_RETRYABLE = frozenset({"ping", "open_orders"})


class LocalBook:
    """An L2 book rebuilt from a snapshot plus sequenced updates. Prices are the wire's
    decimal strings; ``bids()``/``asks()`` give ``[[price, qty], ...]`` best first."""

    def __init__(self, instrument: str, segment: str):
        self.instrument = instrument
        self.segment = segment
        self.book_seq = 0
        self._bids: dict[str, int] = {}
        self._asks: dict[str, int] = {}

    def load(self, snap: dict) -> None:
        self.book_seq = snap["book_seq"]
        self._bids = {p: q for p, q in snap["bids"]}
        self._asks = {p: q for p, q in snap["asks"]}

    def apply(self, seq: int, changes) -> bool:
        """Apply one update; False (and nothing applied) if ``seq`` is not the next one."""
        if seq <= self.book_seq:
            return True  # already in the snapshot
        if seq != self.book_seq + 1:
            return False
        for side, price, qty in changes:
            levels = self._bids if side == "buy" else self._asks
            if qty:
                levels[price] = qty
            else:
                levels.pop(price, None)
        self.book_seq = seq
        return True

    @staticmethod
    def _key(p: str):
        from decimal import Decimal

        return Decimal(p)

    def bids(self) -> list:
        return [[p, self._bids[p]] for p in sorted(self._bids, key=self._key, reverse=True)]

    def asks(self) -> list:
        return [[p, self._asks[p]] for p in sorted(self._asks, key=self._key)]

    def depth(self) -> dict:
        return {"bids": self.bids(), "asks": self.asks()}


class ExchangeClient:
    def __init__(
        self,
        url: "str | list[str]",
        api_key: str | None = None,
        *,
        cancel_on_disconnect: bool = False,
        batch: bool = False,
        reconnect: bool = False,
        on_push: Callable | None = None,
        timeout: float = 10.0,
        header_auth: bool = False,
        max_queue: int = 100_000,
    ):
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("no URL")
        self.url = self.urls[0]  # the node connected to (or tried last)
        self.leader_url: str | None = None  # where the last NOT_LEADER pointed
        self.failover_retries = 0
        self.suspect_seconds = 10.0  # how long a node that dropped is tried last
        self._suspect: dict[str, float] = {}  # url -> loop time until it is tried last
        self._connect_timeout = min(timeout, 3.0) if len(self.urls) > 1 else None
        self.api_key = api_key
        self.cancel_on_disconnect = cancel_on_disconnect
        self.batch = batch
        self.reconnect = reconnect
        self.on_push = on_push
        self.timeout = timeout
        self.header_auth = header_auth
        self.max_queue = max_queue
        self.auth_result: dict | None = None
        self.books: dict[str, LocalBook] = {}
        self.channels: set[str] = set()
        self.resyncs = 0
        self.reconnects = 0
        self.resumes = 0  # re-subscribes the server resumed from the last seq seen
        self.resume_snapshots = 0  # ... that it answered with a fresh snapshot instead
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._queues: dict[str, deque] = defaultdict(deque)
        self._arrived = asyncio.Event()
        self._seqs: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._closing = False
        self._connected = asyncio.Event()
        self._resyncing: set[str] = set()

    # ---------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> "ExchangeClient":
        try:
            await self.connect()
        except BaseException:
            await self.close()  # no session or socket left open behind the error
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def connect(self) -> dict | None:
        """Open the websocket and authenticate (if a key was given). With several URLs,
        try the leader last pointed to, then each URL in turn from the current one,
        following ``NOT_LEADER`` answers; raise the last failure if none leads. A node
        whose connection just dropped is tried last, and a ``NOT_LEADER`` pointing to it
        is not followed for a while: a stalled leader accepts TCP connections (the kernel
        does) but answers nothing, and the lease names it until it expires."""
        if len(self.urls) == 1 and self.leader_url is None:
            return await self._connect_once()
        loop = asyncio.get_running_loop()
        now = loop.time()
        suspect = {u for u, t in self._suspect.items() if t > now}
        i = self.urls.index(self.url) if self.url in self.urls else 0
        ring = self.urls[i:] + self.urls[:i]
        order = (
            ([self.leader_url] if self.leader_url and self.leader_url not in suspect else [])
            + [u for u in ring if u not in suspect]
            + [u for u in ring if u in suspect]
        )
        tried: set[str] = set()
        last: BaseException | None = None
        while order:
            u = order.pop(0)
            if u in tried:
                continue
            tried.add(u)
            self.url = u
            try:
                r = await asyncio.wait_for(self._connect_once(), self._connect_timeout)
                self.leader_url = None
                self._suspect.pop(u, None)
                return r
            except ExchangeError as e:
                if e.code != NOT_LEADER:
                    raise
                last = e
                await self._abandon()
                if e.leader and e.leader not in tried and e.leader not in suspect:
                    self.leader_url = e.leader
                    order.insert(0, e.leader)
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
                last = e
                self._suspect[u] = loop.time() + self.suspect_seconds
                await self._abandon()
        raise last if last is not None else ConnectionError("no URL answered")

    async def _abandon(self) -> None:
        """Close a socket opened to a node that does not lead (no reconnect from it)."""
        ws, self._ws = self._ws, None
        self._connected.clear()
        if ws is not None and not ws.closed:
            await ws.close()

    async def _connect_once(self) -> dict | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {}
        url = self.url
        if self.header_auth and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
            q = []
            if self.cancel_on_disconnect:
                q.append("cancel_on_disconnect=1")
            if self.batch:
                q.append("batch=1")
            if q:
                url += ("&" if "?" in url else "?") + "&".join(q)
        try:
            # with several nodes, a ping every 2 s: a leader that stalls (stopped, cut
            # off) keeps its TCP connections open, and only a missing pong shows it
            self._ws = await self._session.ws_connect(
                url,
                headers=headers,
                autoping=True,
                max_msg_size=64 << 20,
                compress=0,
                heartbeat=2.0 if len(self.urls) > 1 else None,
            )
        except aiohttp.WSServerHandshakeError as e:
            if e.status == 401:
                raise ExchangeError("AUTH_FAILED", "unknown or revoked API key") from None
            raise
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(self._ws))
        self._connected.set()
        if self.api_key and not self.header_auth:
            self.auth_result = await self.request(
                "auth",
                {
                    "api_key": self.api_key,
                    "cancel_on_disconnect": self.cancel_on_disconnect,
                    "batch": self.batch,
                },
            )
        return self.auth_result

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2.0)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drop(self) -> None:
        """Close the socket abruptly without closing the client (tests reconnect with it)."""
        if self._ws is not None:
            await self._ws.close(code=4000, message=b"client drop")

    # ---------------------------------------------------------------- requests
    def _frame(self, method: str, params: dict | None) -> tuple[int, bytes, asyncio.Future]:
        req_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        msg = {"req_id": req_id, "method": method}
        if params:
            msg["params"] = params
        return req_id, orjson.dumps(msg), fut

    async def request(
        self, method: str, params: dict | None = None, timeout: float | None = None
    ) -> Any:
        if not (
            self.reconnect
            and (
                method in _RETRYABLE
                or (method == "place_order" and params and params.get("client_order_id"))
            )
        ):
            return await self._request_once(method, params, timeout)
        # fail-over: send again once reconnected (to the new leader) until the timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            try:
                if self._ws is None or self._ws.closed:
                    await asyncio.wait_for(
                        self._connected.wait(), max(0.01, deadline - loop.time())
                    )
                return await self._request_once(method, params, max(0.01, deadline - loop.time()))
            except (ConnectionError, ExchangeError, asyncio.TimeoutError) as e:
                if isinstance(e, ExchangeError) and e.code not in _FAILOVER_CODES:
                    raise
                if loop.time() >= deadline:
                    raise
                if (
                    isinstance(e, ExchangeError)
                    and e.code in _RECONNECT_CODES
                    and self._ws is not None
                ):
                    await self.drop()  # a standby answered: reconnect to the leader
                self.failover_retries += 1
                await asyncio.sleep(0.05)

    async def _request_once(self, method: str, params: dict | None, timeout: float | None) -> Any:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("not connected")
        req_id, data, fut = self._frame(method, params)
        try:
            await self._ws.send_str(data.decode())
            return await asyncio.wait_for(fut, timeout or self.timeout)
        finally:
            self._pending.pop(req_id, None)

    async def send_raw(self, data: str | bytes) -> None:
        """Send a frame as is (tests of bad input)."""
        if isinstance(data, bytes):
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data)

    def send_batch_nowait(self, calls: list[tuple[str, dict | None]]) -> list[asyncio.Future]:
        """Queue many requests as one frame (a JSON array); returns their futures."""
        futs, parts = [], []
        for method, params in calls:
            _, data, fut = self._frame(method, params)
            parts.append(data)
            futs.append(fut)
        frame = b"[" + b",".join(parts) + b"]"
        asyncio.get_running_loop().create_task(self._ws.send_str(frame.decode()))
        return futs

    async def send_batch(
        self, calls: list[tuple[str, dict | None]], return_exceptions: bool = True
    ) -> list:
        futs = self.send_batch_nowait(calls)
        return await asyncio.gather(*futs, return_exceptions=return_exceptions)

    # ---------------------------------------------------------------- methods
    async def ping(self) -> dict:
        return await self.request("ping")

    async def place_order(
        self,
        instrument: str,
        side: str,
        qty: int,
        price: str | None = None,
        *,
        segment: str = "main",
        order_type: str = "limit",
        tif: str = "GTC",
        post_only: bool = False,
        client_order_id: str | None = None,
    ) -> dict:
        p: dict = {
            "instrument": instrument,
            "segment": segment,
            "side": side,
            "qty": qty,
            "order_type": order_type,
            "tif": tif,
        }
        if price is not None:
            p["price"] = str(price)
        if post_only:
            p["post_only"] = True
        if client_order_id is not None:
            p["client_order_id"] = client_order_id
        return await self.request("place_order", p)

    async def cancel_order(
        self, order_id: int | None = None, client_order_id: str | None = None
    ) -> dict:
        p: dict = {}
        if order_id is not None:
            p["order_id"] = order_id
        if client_order_id is not None:
            p["client_order_id"] = client_order_id
        return await self.request("cancel_order", p)

    async def amend_order(
        self,
        order_id: int | None = None,
        client_order_id: str | None = None,
        *,
        qty: int | None = None,
        price: str | None = None,
    ) -> dict:
        p: dict = {}
        if order_id is not None:
            p["order_id"] = order_id
        if client_order_id is not None:
            p["client_order_id"] = client_order_id
        if qty is not None:
            p["qty"] = qty
        if price is not None:
            p["price"] = str(price)
        return await self.request("amend_order", p)

    async def cancel_all(self, instrument: str | None = None, segment: str | None = None) -> dict:
        p = {k: v for k, v in (("instrument", instrument), ("segment", segment)) if v}
        return await self.request("cancel_all", p)

    async def open_orders(self) -> list:
        return (await self.request("open_orders"))["orders"]

    async def subscribe(self, channel: str, from_seq: int | None = None) -> dict:
        """Subscribe; with ``from_seq`` (the last seq seen on the channel), ask the server to
        resume after it: ``result["resumed"]`` says whether it did (the missed messages
        follow) or sent a fresh snapshot."""
        p: dict = {"channel": channel}
        if from_seq is not None:
            p["from_seq"] = from_seq
        r = await self.request("subscribe", p)
        self.channels.add(channel)
        return r

    def last_seq(self, channel: str) -> int | None:
        """The seq of the last message of ``channel`` this client has (its book's
        ``book_seq`` for a book), or None."""
        book = self.books.get(channel)
        if book is not None and channel not in self._resyncing:
            return book.book_seq
        return self._seqs.get(channel)

    def _subscribed(self, r: dict) -> None:
        channel = r["channel"]
        if r.get("subscribed") is False:
            return
        self._seqs[channel] = r.get("seq", 0)
        if r.get("resumed") is True:  # the book carries on from where it was
            self.resumes += 1
            return
        if r.get("resumed") is False:
            self.resume_snapshots += 1
        if channel.startswith("book:") and "snapshot" in r:
            _, instr, seg = channel.split(":", 2)
            book = self.books.get(channel)
            if book is None:
                book = self.books[channel] = LocalBook(instr, seg)
            book.load(r["snapshot"])
            self._resyncing.discard(channel)

    async def subscribe_book(self, instrument: str, segment: str = "main") -> LocalBook:
        ch = f"book:{instrument}:{segment}"
        await self.subscribe(ch)
        return self.books[ch]

    async def unsubscribe(self, channel: str) -> dict:
        r = await self.request("unsubscribe", {"channel": channel})
        self.channels.discard(channel)
        self.books.pop(channel, None)
        return r

    # ---------------------------------------------------------------- pushes
    async def next_push(self, channel: str | None = None, timeout: float = 5.0) -> tuple:
        """The next ``(channel, seq, data)`` push (of ``channel``, if given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if channel is None:
                for ch, q in self._queues.items():
                    if q:
                        return q.popleft()
            else:
                q = self._queues.get(channel)
                if q:
                    return q.popleft()
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError(f"no push on {channel or 'any channel'}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    def drain(self, channel: str) -> list:
        """Every queued push of ``channel``, oldest first."""
        q = self._queues.get(channel)
        if not q:
            return []
        out = list(q)
        q.clear()
        return out

    # ---------------------------------------------------------------- reading
    async def _read_loop(self, ws) -> None:
        loads = orjson.loads
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    obj = loads(msg.data)
                    if type(obj) is list:
                        for m in obj:
                            self._dispatch(m)
                    else:
                        self._dispatch(obj)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                    break
        finally:
            self.close_code = ws.close_code
            ex = ws.exception()
            self.close_reason = str(ex) if ex else ""
            err = ConnectionError(f"connection closed ({ws.close_code})")
            for fut in list(self._pending.values()):
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            self._arrived.set()
            if ws is self._ws:  # not a socket abandoned for another node
                self._connected.clear()
                if len(self.urls) > 1 and not self._closing:  # dropped: try the others first
                    self._suspect[self.url] = (
                        asyncio.get_running_loop().time() + self.suspect_seconds
                    )
                if self.reconnect and not self._closing:
                    asyncio.get_running_loop().create_task(self._reconnect_loop())

    def _dispatch(self, m: dict) -> None:
        if "req_id" in m:
            fut = self._pending.pop(m["req_id"], None) if m["req_id"] is not None else None
            if fut is None:
                self._push("_errors", 0, m.get("error") or m.get("result"))
                return
            if fut.done():
                return
            if m.get("ok"):
                r = m.get("result")
                if type(r) is dict and "channel" in r and "seq" in r:
                    self._subscribed(r)  # synchronously: later pushes in this frame need it
                fut.set_result(r)
            else:
                e = m.get("error") or {}
                fut.set_exception(
                    ExchangeError(e.get("code", "?"), e.get("message", ""), e.get("leader"))
                )
            return
        ch = m.get("channel")
        if ch is None:
            return
        seq = m.get("seq", 0)
        data = m.get("data")
        book = self.books.get(ch)
        if book is not None:
            if ch in self._resyncing:
                return
            if not book.apply(seq, data["changes"]):
                self.resyncs += 1
                self._resyncing.add(ch)
                asyncio.get_running_loop().create_task(self._resync(ch))
                return
        else:
            last = self._seqs.get(ch)
            if last is not None and seq != last + 1:
                self._push("_gaps", seq, {"channel": ch, "expected": last + 1, "got": seq})
            self._seqs[ch] = seq
        self._push(ch, seq, data)

    def _push(self, ch: str, seq: int, data) -> None:
        q = self._queues[ch]
        q.append((ch, seq, data))
        if len(q) > self.max_queue:
            q.popleft()
        self._arrived.set()
        if self.on_push is not None:
            self.on_push(ch, seq, data)

    async def _resync(self, ch: str) -> None:
        try:
            await self.subscribe(ch)
        except Exception:
            pass
        finally:
            self._resyncing.discard(ch)

    async def _reconnect_loop(self) -> None:
        delay = 0.05
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self.connect()
                for ch in sorted(self.channels):
                    await self.subscribe(ch, self.last_seq(ch))
                self.reconnects += 1
                return
            except ExchangeError as e:
                if e.code != NOT_LEADER:
                    return  # the key was revoked: do not hammer the server
                delay = min(delay * 2, 0.5)  # a take-over under way: keep looking
            except Exception:
                delay = min(delay * 2, 2.0 if len(self.urls) == 1 else 0.5)

    async def wait_connected(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)


# The platform side of carbon-inclusive issuance (keyed action ids, batches): its own module.
from .platform import PlatformClient, build_batch, hash_action_id  # noqa: E402
