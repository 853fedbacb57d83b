"""``serve --standby``: serve only while holding the journal's leader lease.

A process started with ``--standby`` on a JetStream journal waits until it takes the lease
(:class:`exchange.journal.lease.LeaderLease`; the first one takes it at once), then
recovers from the stream as any start does, journals a snapshot straight away - the new
leader's first append, which moves the stream on so that a former leader's next append is
refused by the expected-last-sequence guard - and serves, renewing the lease every second.
When the lease is lost (a renewal refused, or none possible for ``ttl`` seconds: the process
was stopped or cut off) or an append is refused as stale, it stops accepting and exits with
status 3: a supervisor restarts it, as a standby again.

While it waits, a standby listens on its port and answers every websocket request with the
error ``NOT_LEADER`` and the leader's address (``{"code": "NOT_LEADER", "message": ...,
"leader": "ws://..."}``) and every HTTP request (``/readyz`` included, so a load balancer
leaves it out) with 503 and the same body; on taking over it closes that listener and the
real server binds the same port.

Meanwhile it is a hot standby: a :class:`~exchange.journal.follower.Follower` applies the
stream to a core of its own every 100 ms, checking its state against every snapshot seal
the leader journals; on taking over, the server continues that core (replaying only what
was appended since the last step) instead of recovering from a snapshot. A follower that
diverges or fails is dropped with a warning, and the take-over recovers from the log as a
cold start does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from ..journal import is_replicated
from ..journal.jetstream import StaleWriterError
from ..journal.lease import LeaderLease

log = logging.getLogger("exchange.server.standby")

LOST_LEADERSHIP_EXIT = 3
NOT_LEADER = "NOT_LEADER"


class NotLeaderSite:
    """The standby's listener: ``NOT_LEADER`` with the leader's address, for every request."""

    def __init__(self) -> None:
        self.leader = ""  # the leader's websocket address, as its lease names it
        self.node = ""
        self.runner = None
        self.port = 0
        self.sockets: set = set()

    def error(self) -> dict:
        return {
            "code": NOT_LEADER,
            "leader": self.leader,
            "message": f"this node is a standby; the leader is {self.node or '?'} at "
            f"{self.leader or 'an address it did not advertise'}",
        }

    async def start(self, host: str, port: int) -> int:
        import orjson
        from aiohttp import WSMsgType, web

        async def ws(request):
            if "Authorization" in request.headers:  # header auth: refuse the upgrade itself
                return web.json_response({"ok": False, "error": self.error()}, status=503)
            sock = web.WebSocketResponse(heartbeat=20)
            await sock.prepare(request)
            self.sockets.add(sock)
            try:
                await serve_one(sock)
            finally:
                self.sockets.discard(sock)
            return sock

        async def serve_one(sock):
            async for msg in sock:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    obj = orjson.loads(msg.data)
                except Exception:
                    obj = {}
                reqs = obj if isinstance(obj, list) else [obj]
                replies = [
                    {
                        "req_id": r.get("req_id") if isinstance(r, dict) else None,
                        "ok": False,
                        "error": self.error(),
                    }
                    for r in reqs
                ]
                await sock.send_str(
                    orjson.dumps(replies if isinstance(obj, list) else replies[0]).decode()
                )

        async def other(request):
            return web.json_response({"ok": False, "error": self.error()}, status=503)

        app = web.Application()
        app.router.add_get("/ws", ws)
        app.router.add_route("*", "/{tail:.*}", other)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        self.port = port
        for addr in self.runner.addresses:
            self.port = addr[1]
            break
        return self.port

    async def stop(self) -> None:
        """Close every client socket (1012: service restart - they reconnect and find this
        node leading), then the listener: an open socket would hold the cleanup up."""
        from aiohttp import WSCloseCode

        for sock in list(self.sockets):
            try:
                await asyncio.wait_for(
                    sock.close(code=WSCloseCode.SERVICE_RESTART, message=b"taking over"), 1.0
                )
            except Exception:
                pass
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class Leadership:
    def __init__(self, lease: LeaderLease):
        self.lease = lease
        self.lost = asyncio.Event()
        self.why = ""
        self.port: int | None = None  # the port the standby listener bound
        self.follower = None  # the core followed while waiting, to continue
        self._watch: asyncio.Task | None = None

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.why = why
            self.lost.set()

    async def fence(self, runner) -> None:
        """The first append as leader: a snapshot (marker, seal and row). It moves the
        stream past anything a former leader saw, so that leader's next append is refused."""
        await runner.snapshot()

    def watch(self, runner, on_lost) -> None:
        """``on_lost()`` once the lease is lost or the runner's journal refuses an append
        as stale (another node appended: this one is no longer the writer)."""
        self.lease.start_renewing(lambda: self._lose("the leader lease was lost"))

        async def loop() -> None:
            while not self.lost.is_set():
                failed = getattr(runner, "_failed", None)
                if failed is not None:
                    self._lose(
                        "the journal refused an append as stale (another node is leader)"
                        if isinstance(failed, StaleWriterError)
                        else f"the journal failed: {failed!r}"
                    )
                    break
                try:
                    await asyncio.wait_for(self.lost.wait(), 0.25)
                except asyncio.TimeoutError:
                    pass
            on_lost()

        self._watch = asyncio.create_task(loop(), name="leadership-watch")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if not self.lost.is_set():
            await self.lease.release()  # a clean stop: the standby need not wait for ttl
        await self.lease.close()


async def _start_follower(target: str, options: dict, new_exchange):
    from ..journal import open_journal
    from ..journal.follower import Follower

    f = Follower(new_exchange(), open_journal(target, **options))
    try:
        await f.start()
    except Exception as e:
        log.warning(
            "standby: not following %s (%r); a take-over will recover from the log", target, e
        )
        await f.journal.close()
        return None
    return f


async def _step(f):
    """One follower step; None when it must be dropped (diverged, or failing)."""
    try:
        await f.step()
        return f
    except Exception as e:
        log.error(
            "standby: follower dropped at seq %d (%s); a take-over will recover from the log",
            f.exchange.last_seq,
            e,
        )
        await f.journal.close()
        return None


async def take_leadership(
    target: str,
    *,
    node: str | None,
    address: str,
    ttl: float,
    host: str = "127.0.0.1",
    port: int | None = None,
    options: dict | None = None,
    follow: bool = True,
    new_exchange=None,
) -> Leadership | None:
    """Wait for the lease of ``target``'s stream (SIGINT/SIGTERM give up: None). With
    ``port``, answer ``NOT_LEADER`` on it meanwhile; ``Leadership.port`` is the port bound
    (for ``--port 0``), for the real server to bind in turn. With ``follow``, the core is
    followed meanwhile in ``new_exchange()`` (the composition root's build_exchange)."""
    if not is_replicated(target):
        raise SystemExit(
            "serve --standby needs a JetStream journal: --journal nats://HOST:4222[,...]/STREAM"
        )
    lease = LeaderLease(
        target, node=node or f"{socket.gethostname()}-{os.getpid()}", address=address, ttl=ttl
    )
    await lease.open()
    site = NotLeaderSite()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    bound = port
    # follow first, lease second: recovering (snapshot + tail) blocks the event loop, and
    # a leader must not spend its lease's ttl on it - with the core followed, taking over
    # is a short tail replay
    follower = await _start_follower(target, options or {}, new_exchange) if follow else None
    try:
        if not await lease.acquire():
            h = await lease.holder() or {}
            site.leader, site.node = h.get("address", ""), h.get("node", "")
            if port is not None:
                bound = await site.start(host, port)
                if not address:  # --port 0: the lease names the port bound
                    lease.address = f"ws://{host}:{bound}/ws"
            print(
                f"standby {lease.node}: waiting for the leader lease of {lease.target}; "
                f"leader now: {site.node or '?'} {site.leader}".rstrip()
                + (f"; answering NOT_LEADER on {host}:{bound}" if port is not None else ""),
                flush=True,
            )
            polls = 0
            while not await _try(lease):
                if stop.is_set():
                    await site.stop()
                    if follower is not None:
                        await follower.journal.close()
                    await lease.close()
                    return None
                if follower is not None:
                    follower = await _step(follower)
                polls += 1
                if polls % 4 == 0:
                    h = await _holder(lease)
                    if h:
                        site.leader, site.node = h.get("address", ""), h.get("node", "")
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
            await site.stop()
        print(
            f"node {lease.node} took the leader lease of {lease.target} (ttl {ttl:g} s)"
            + (
                f"; continuing the followed core at seq {follower.exchange.last_seq} "
                f"({follower.seals_checked} snapshot seals checked)"
                if follower
                else ""
            ),
            flush=True,
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    # renew from now on: recovery may take longer than the ttl
    lead = Leadership(lease)
    lead.port = bound
    lead.follower = follower
    lease.start_renewing(lambda: lead._lose("the leader lease was lost"))
    return lead


async def _try(lease: LeaderLease) -> bool:
    try:
        return await lease.acquire()
    except Exception as e:  # the cluster is electing a leader: try again
        import logging

        logging.getLogger("exchange.server.standby").warning("lease: %r", e)
        return False


async def _holder(lease: LeaderLease) -> dict | None:
    try:
        return await lease.holder()
    except Exception:
        return None
