"""Event-loop stall watchdog: log where the exchange was when its event loop stopped turning.

Every request, acknowledgement and market-data push of the exchange goes through one event
loop, so anything that holds it - a long callback, a slow system call, a collector pause, the
process not being scheduled - delays every firm at once. The watchdog makes such stalls
visible to the operator instead of leaving them to be guessed from the clients' latency:

* a loop timer records a heartbeat every ``interval`` seconds;
* a daemon thread checks it; when the loop has not turned for ``threshold`` seconds it takes
  the main thread's stack at that moment (``sys._current_frames``) - the code that is
  holding the loop, or the line it is blocked in;
* when the loop turns again it logs a one-line warning with the stall's length and where the
  loop's thread was (the innermost frames, ``file:line function``; the whole stack is in
  ``last_stall`` and at DEBUG level), at most one per ``log_every`` seconds, with the count of
  the others, and counts it (``stalls``,
  ``stall_seconds_max``; ``/metrics`` exports them). A stack that ends in the event loop's
  own code means no single callback held it: the iteration was long because much was ready
  (an overloaded server), which the warning says instead of printing that stack.

The thread needs the GIL only to check the heartbeat (four times per ``threshold``, at most
every 25 ms) and to read the stack; a stalled loop that holds the GIL gives it up within the
interpreter's switch
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

# the innermost Python frame while the loop runs its own C code (uvloop's uv_run, the
# selector): the stall was the loop's own work, not one callback
_LOOP_FRAMES = {"run_until_complete", "run_forever", "_run_once", "select"}


def _where_line(frame, depth: int = 3) -> str:
    """The innermost ``depth`` frames on one line: ``gateway.py:412 _flush_dirty <
    events.py:80 _run``."""
    out = []
    while frame is not None and len(out) < depth:
        code = frame.f_code
        out.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return " < ".join(out)


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
        self._where: str | None = None  # the innermost function of that stack
        self._at: str | None = None  # that stack's innermost frames, on one line
        self.log_every = 5.0  # seconds between two stall warnings, at most one per ...
        self._quiet_until = 0.0
        self._unlogged = 0

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
        stack, where, at = self._stack, self._where, self._at
        self._stack = self._where = self._at = None
        self.stalls += 1
        if late > self.stall_seconds_max:
            self.stall_seconds_max = late
        self.last_stall = {"seconds": round(late, 4), "stack": stack}
        now = time.monotonic()
        if now < self._quiet_until:  # an overloaded server stalls often: one warning per
            self._unlogged += 1  # log_every seconds, with the count of the others
            return
        self._quiet_until = now + self.log_every
        more = f" ({self._unlogged} more since the last warning)" if self._unlogged else ""
        self._unlogged = 0
        if stack is None:
            detail = (
                " (no stack: the stall ended before the watchdog looked, or the whole "
                "process was not running - CPU contention, a fork, a page-fault storm)"
            )
        elif where in _LOOP_FRAMES:
            detail = (
                "; the thread was in the event loop itself, between callbacks (a long "
                "iteration: many ready sockets and callbacks - load, not one long call)"
            )
        else:
            detail = f"; the loop's thread was at {at}"
        # one line: an operator reads the figure and the place, not a 12-line traceback
        log.warning(
            "event loop stalled for %.0f ms (threshold %.0f ms)%s%s",
            late * 1000,
            self.threshold * 1000,
            more,
            detail,
        )
        if stack is not None and where not in _LOOP_FRAMES:
            log.debug("the stalled loop's stack:\n%s", stack)

    # ------------------------------------------------------------------ thread side
    def _watch(self) -> None:
        # looking every quarter threshold, any stall of 1.25 thresholds or more gets its stack
        check = min(self.threshold / 4, 0.025)
        taken_for = None
        while not self._halt.wait(check):
            beat = self._beat
            if time.monotonic() - beat - self.interval >= self.threshold and taken_for != beat:
                taken_for = beat  # one stack per stall, taken while it lasts
                frame = sys._current_frames().get(self._main_id)
                if frame is not None:
                    self._where = frame.f_code.co_name
                    self._stack = "".join(traceback.format_stack(frame, limit=12))
                    self._at = _where_line(frame)
