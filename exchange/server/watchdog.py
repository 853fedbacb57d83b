"""Event-loop stall watchdog: log where the exchange was when its event loop stopped turning.

Every request, acknowledgement and market-data push of the exchange goes through one event
loop, so anything that holds it - a long callback, a slow system call, a collector pause, the
process not being scheduled - delays every firm at once. The watchdog makes such stalls
visible to the operator instead of leaving them to be guessed from the clients' latency:

* a loop timer records a heartbeat every ``interval`` seconds;
* a daemon thread checks it; when the loop has not turned for ``threshold`` seconds it takes
  the main thread's stack at that moment (``sys._current_frames``) - the code that is
  holding the loop, or the line it is blocked in;
* when the loop turns again it logs one warning with the stall's length and that stack, and
  counts it (``stalls``, ``stall_seconds_max``; ``/metrics`` exports them).

The thread needs the GIL only to check the heartbeat (a few times per ``threshold``) and to
read the stack; a stalled loop that holds the GIL gives it up within the interpreter's switch
interval (5 ms), so the stack is taken while the stall lasts.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger("exchange.server.watchdog")


class LoopWatchdog:
    def __init__(self, threshold: float = 0.1, interval: float | None = None):
        self.threshold = threshold
        self.interval = interval if interval is not None else min(threshold / 4, 0.025)
        self.stalls = 0  # stalls of at least ``threshold`` seconds since start
        self.stall_seconds_max = 0.0
        self.last_stall: dict | None = None  # seconds, stack of the latest stall
        self._beat = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._main_id = threading.main_thread().ident
        self._stack: str | None = None  # taken by the thread during the current stall
        self._stall_from = 0.0

    # ------------------------------------------------------------------ loop side
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._main_id = threading.get_ident()  # the thread running the loop
        self._beat = time.monotonic()
        self._timer = self._loop.call_later(self.interval, self._tick)
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    def _tick(self) -> None:
        now = time.monotonic()
        late = now - self._beat - self.interval
        self._beat = now
        if late >= self.threshold:
            self._report(late)
        self._timer = self._loop.call_later(self.interval, self._tick)

    def _report(self, late: float) -> None:
        stack = self._stack
        self._stack = None
        self.stalls += 1
        if late > self.stall_seconds_max:
            self.stall_seconds_max = late
        self.last_stall = {"seconds": round(late, 4), "stack": stack}
        log.warning("event loop stalled for %.0f ms (threshold %.0f ms)%s", late * 1000,
                    self.threshold * 1000,
                    f"; the loop's thread was at:\n{stack}" if stack else
                    " (no stack: the stall ended before the watchdog looked, or the whole "
                    "process was not running - CPU contention, a fork, a page-fault storm)")

    # ------------------------------------------------------------------ thread side
    def _watch(self) -> None:
        check = min(self.threshold / 2, 0.05)
        taken_for = None
        while not self._halt.wait(check):
            beat = self._beat
            if time.monotonic() - beat - self.interval >= self.threshold and taken_for != beat:
                taken_for = beat  # one stack per stall, taken while it lasts
                frame = sys._current_frames().get(self._main_id)
                if frame is not None:
                    self._stack = "".join(traceback.format_stack(frame, limit=12))
