"""Leadership of a JetStream journal: a lease in a key-value bucket.

    lease = LeaderLease("nats://h1:4222,h2:4222/MARKET", node="a", address="ws://a:8080/ws")
    await lease.open()
    if await lease.acquire():          # compare-and-set: only if nobody holds it
        lease.start_renewing(on_lost)  # every second; on_lost() when it cannot be kept

The bucket ``STREAM_leader`` holds one key, ``leader``: ``{"node", "address", "since"}``.
Taking it is a KV *create* (refused while the key exists); keeping it is an *update* that
names the revision this node last wrote (refused once anyone else wrote). The bucket's
``ttl`` (max age) removes a value that was not rewritten for ``ttl`` seconds, so a leader
that died or stalls frees the lease after at most ``ttl``, measured by the NATS servers'
clocks, not by the exchange nodes'.

A leader that cannot renew for ``ttl`` seconds by its own monotonic clock - a SIGSTOP, a
partition - counts itself as no longer leader even before it hears so. The lease gives
liveness and an address to send clients to; the safety of the log does not rest on it: a
former leader's appends are refused by the stream's expected-last-sequence guard once the
new leader has appended (the new leader journals a marker as soon as it takes over).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import orjson

from .base import JournalError
from .jetstream import _redact, parse_target

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

log = logging.getLogger("exchange.journal.lease")

KEY = "leader"


class LeaderLease:
    def __init__(
        self,
        target: str,
        *,
        node: str,
        address: str = "",
        ttl: float = 5.0,
        renew_every: float = 1.0,
        replicas: int | None = None,
        timeout: float = 2.0,
    ):
        servers, stream, q = parse_target(target)
        self.servers = servers
        self.bucket = f"{stream}_leader"
        self.target = _redact(target)
        self.node = node
        self.address = address
        self.ttl = float(ttl)
        self.renew_every = float(renew_every)
        self.replicas = int(replicas or q.get("replicas", 1))
        self.timeout = timeout
        self.revision = 0  # of the value this node last wrote (0: not held)
        self._seen: tuple[int, float] | None = None  # (holder's revision, first seen at)
        self.renewed_at = 0.0  # time.monotonic() of the last successful write
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._thread: threading.Thread | None = None
        self._renew_stop: threading.Event | None = None

    async def open(self) -> None:
        from nats.js import api
        from nats.js.errors import BucketNotFoundError, NotFoundError

        try:
            self._nc = await self._connect()
        except Exception as e:
            raise JournalError(f"lease {self.target}: cannot connect: {e!r}") from e
        js = self._nc.jetstream(timeout=self.timeout)
        try:
            self._kv = await js.key_value(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            self._kv = await js.create_key_value(
                api.KeyValueConfig(
                    bucket=self.bucket,
                    history=1,
                    ttl=self.ttl,
                    replicas=self.replicas,
                    storage=api.StorageType.FILE,
                    description="exchange leader lease",
                )
            )

    async def _connect(self) -> Any:
        """A connection for the lease (the open one, and the renewing thread's own)."""
        import nats

        return await nats.connect(
            servers=self.servers,
            name=f"exchange-lease-{self.node}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=self.timeout,
        )

    async def close(self) -> None:
        self.stop_renewing()
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:
                pass

    def _value(self) -> bytes:
        return orjson.dumps({"node": self.node, "address": self.address, "since": time.time()})

    @property
    def held(self) -> bool:
        """This node holds the lease by its own clock: it wrote it less than ``ttl`` ago."""
        return bool(self.revision) and time.monotonic() - self.renewed_at < self.ttl

    @property
    def _bucket(self) -> KeyValue:
        """The lease's KV bucket (``open`` made it)."""
        if self._kv is None:
            raise JournalError(f"lease {self.target}: not open")
        return self._kv

    async def holder(self) -> dict[str, Any] | None:
        """The current leader's ``{"node", "address", "since"}``, or None (lease free)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        try:
            e = await self._bucket.get(KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        try:
            return dict(orjson.loads(e.value or b"null") or {}, revision=e.revision)
        except Exception:
            return None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (KV create), or if its holder has not rewritten
        it for ``1.5 x ttl`` by this node's clock (a compare-and-set on the revision seen):
        the bucket's max age should have removed it by then, but after the KV stream's own
        leader died a value was seen to outlive it by a minute. The holder counts itself
        out after ``ttl`` without a renewal, so the margin keeps two leaders apart. True
        when this node now holds the lease."""
        from nats.js.errors import KeyWrongLastSequenceError, APIError

        t = time.monotonic()
        try:
            self.revision = await self._bucket.create(KEY, self._value())
        except (KeyWrongLastSequenceError, APIError) as e:
            if (
                isinstance(e, APIError)
                and not isinstance(e, KeyWrongLastSequenceError)
                and e.err_code != 10071
            ):
                raise
            h = await self.holder()
            rev = (h or {}).get("revision")
            if rev is None:
                return False
            seen = self._seen
            if seen is None or seen[0] != rev:
                self._seen = (rev, t)
                return False
            if t - seen[1] < 1.5 * self.ttl:
                return False
            try:  # the holder stopped renewing: take it over by its last revision
                self.revision = await self._bucket.update(KEY, self._value(), last=rev)
            except (KeyWrongLastSequenceError, APIError):
                self._seen = None
                return False
            log.warning(
                "lease %s: revision %d was not renewed for %.1f s; taken over",
                self.target,
                rev,
                t - seen[1],
            )
        self.renewed_at = t
        log.warning(
            "lease %s: node %s is leader (revision %d)", self.target, self.node, self.revision
        )
        return True

    async def renew(self, kv: KeyValue | None = None) -> bool:
        """Rewrite the lease naming the revision this node last wrote; False (and the
        lease dropped) when someone else wrote since, or this node's clock says it ran
        out before the write. ``kv``: the bucket handle of the calling thread's loop."""
        from nats.js.errors import KeyWrongLastSequenceError, APIError

        if not self.revision:
            return False
        t = time.monotonic()
        if t - self.renewed_at >= self.ttl:  # stalled past the lease (SIGSTOP, a pause)
            self._lost("not renewed for %.1f s" % (t - self.renewed_at))
            return False
        try:
            self.revision = await (kv or self._bucket).update(
                KEY, self._value(), last=self.revision
            )
        except KeyWrongLastSequenceError:
            self._lost("another node holds it")
            return False
        except APIError as e:
            if e.err_code == 10071:
                self._lost("another node holds it")
                return False
            raise
        self.renewed_at = t
        return True

    def _lost(self, why: str) -> None:
        log.warning("lease %s: node %s is no longer leader (%s)", self.target, self.node, why)
        self.revision = 0

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby need not wait for ``ttl``."""
        self.stop_renewing()
        if self.revision and self._kv is not None:
            try:
                await self._kv.delete(KEY, last=self.revision)
            except Exception as e:
                log.warning("lease %s: not released: %r", self.target, e)
        self.revision = 0

    def start_renewing(self, on_lost: Callable[[], None]) -> None:
        """Renew every ``renew_every`` seconds on a thread of its own (its own event loop and
        NATS connection): a leader whose event loop is saturated by orders, or blocked by a
        recovery, must not lose the lease to its own stalls. ``on_lost()`` is called once,
        on the caller's loop, when a renewal is refused or cannot be made within ``ttl``. A
        stopped process (SIGSTOP) stops this thread too: it cannot renew through a pause."""
        self.stop_renewing()
        loop = asyncio.get_running_loop()
        done = self._renew_stop = threading.Event()

        def lost() -> None:
            if not done.is_set():
                loop.call_soon_threadsafe(on_lost)

        async def renew_loop() -> None:
            nc = await self._connect()
            try:
                kv = await nc.jetstream(timeout=self.timeout).key_value(self.bucket)
                while not done.is_set():
                    t_next = time.monotonic() + self.renew_every
                    while time.monotonic() < t_next:  # a stop is seen within 50 ms
                        if done.is_set():
                            return
                        await asyncio.sleep(0.05)
                    try:
                        ok = await asyncio.wait_for(
                            self.renew(kv), max(0.1, self.ttl - self.renew_every)
                        )
                    except Exception as e:  # no answer: keep trying until the ttl is out
                        ok = self.held
                        if not ok:
                            self._lost(f"renewal failed: {e!r}")
                    if not ok:
                        lost()
                        return
            finally:
                await nc.close()

        def run() -> None:
            try:
                asyncio.run(renew_loop())
            except Exception as e:
                log.error("lease %s: renewal thread failed: %r", self.target, e)
                self._lost(f"renewal thread failed: {e!r}")
                lost()

        self._thread = threading.Thread(target=run, name="lease-renew", daemon=True)
        self._thread.start()

    def stop_renewing(self) -> None:
        ev, t = getattr(self, "_renew_stop", None), getattr(self, "_thread", None)
        if ev is not None:
            ev.set()
        if t is not None and t is not threading.current_thread():
            t.join(self.renew_every + self.timeout + 1)
        self._thread = self._renew_stop = None

    async def wait_for(self, poll: float = 0.25, stop: asyncio.Event | None = None) -> bool:
        """Poll until this node takes the lease (True) or ``stop`` is set (False)."""
        while stop is None or not stop.is_set():
            try:
                if await self.acquire():
                    return True
            except Exception as e:  # a leader election in the cluster: try again
                log.warning("lease %s: %r", self.target, e)
            await asyncio.sleep(poll)
        return False
