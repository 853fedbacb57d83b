"""``serve --standby``: serve only while holding the journal's leader lease.

A process started with ``--standby`` on a JetStream journal waits until it takes the lease
(:class:`exchange.journal.lease.LeaderLease`; the first one takes it at once), then
recovers from the stream as any start does, journals a snapshot straight away - the new
leader's first append, which moves the stream on so that a former leader's next append is
refused by the expected-last-sequence guard - and serves, renewing the lease every second.
When the lease is lost (a renewal refused, or none possible for ``ttl`` seconds: the process
was stopped or cut off) or an append is refused as stale, it stops accepting and exits with
status 3: a supervisor restarts it, as a standby again.

Not a hot standby yet: while waiting it neither follows the stream nor listens, so a take-over
costs the lease's ``ttl`` plus a recovery (snapshot + tail), and clients see a refused
connection rather than ``NOT_LEADER`` until then.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket

from ..journal.jetstream import StaleWriterError
from ..journal.lease import LeaderLease

LOST_LEADERSHIP_EXIT = 3


class Leadership:
    def __init__(self, lease: LeaderLease):
        self.lease = lease
        self.lost = asyncio.Event()
        self.why = ""
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
                    self._lose("the journal refused an append as stale (another node is "
                               "leader)" if isinstance(failed, StaleWriterError)
                               else f"the journal failed: {failed!r}")
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


async def take_leadership(target: str, *, node: str | None, address: str,
                          ttl: float) -> Leadership | None:
    """Wait for the lease of ``target``'s stream (SIGINT/SIGTERM give up: None)."""
    if not target.startswith(("nats://", "tls://")):
        raise SystemExit("serve --standby needs a JetStream journal: --journal "
                         "nats://HOST:4222[,...]/STREAM")
    lease = LeaderLease(target, node=node or f"{socket.gethostname()}-{os.getpid()}",
                        address=address, ttl=ttl)
    await lease.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        if not await lease.acquire():
            h = await lease.holder() or {}
            print(f"standby {lease.node}: waiting for the leader lease of {lease.target}; "
                  f"leader now: {h.get('node', '?')} {h.get('address', '')}".rstrip(),
                  flush=True)
            if not await lease.wait_for(stop=stop):
                await lease.close()
                return None
        print(f"node {lease.node} took the leader lease of {lease.target} (ttl {ttl:g} s)",
              flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    # renew from now on: recovery may take longer than the ttl
    lead = Leadership(lease)
    lease.start_renewing(lambda: lead._lose("the leader lease was lost"))
    return lead
