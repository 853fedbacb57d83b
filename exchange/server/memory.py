"""A non-durable stand-in for :class:`exchange.journal.CoreRunner` with the same interface.

Used by gateway unit tests and ``serve --in-memory`` (throw-away markets, gateway-only
benchmarks). It keeps the journal's timing contract: commands submitted in one event-loop tick
are applied at once (under their envelope: seq and ts, kept beside each command), then
"committed" together on the next tick, when the listeners run in seq order and the
submitters' futures resolve. Nothing survives a restart.
"""

from __future__ import annotations

import asyncio
import time


class MemoryRunner:
    def __init__(self, exchange, **_ignored):
        self.exchange = exchange
        self._listeners: list = []
        self._pending: list = []  # (cmd, seq, ts, events)
        self._future = None
        self._last_ts = 0
        self.is_empty = True
        self.journal_lag = 0
        self._t0 = 0.0  # when the first pending command came in

    async def start(self) -> None:
        self.is_empty = self.exchange.last_seq == 0

    def add_listener(self, fn) -> None:
        self._listeners.append(fn)

    async def submit(self, cmd):
        events, fut = self.submit_nowait(cmd)
        await asyncio.shield(fut)
        return events

    def submit_nowait(self, cmd):
        ex = self.exchange
        seq = ex.last_seq + 1
        ts = time.time_ns()
        if ts <= self._last_ts:
            ts = self._last_ts + 1
        self._last_ts = ts
        events = ex.apply(cmd, seq, ts)
        loop = asyncio.get_running_loop()
        if self._future is None:
            self._future = loop.create_future()
            loop.call_soon(self._commit)
            self._t0 = time.monotonic()
        self._pending.append((cmd, seq, ts, events))
        self.journal_lag = len(self._pending)
        return events, self._future

    @property
    def journal_lag_seconds(self) -> float:
        return time.monotonic() - self._t0 if self._pending else 0.0

    def _commit(self) -> None:
        batch, self._pending = self._pending, []
        fut, self._future = self._future, None
        self.journal_lag = 0
        for cmd, seq, ts, events in batch:
            for fn in self._listeners:
                fn(cmd, seq, ts, events)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def stop(self) -> None:
        if self._pending:
            self._commit()
