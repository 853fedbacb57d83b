"""The session clock: the server's side of the trading calendar (exchange/core/calendar.py).

The core never reads a clock; it opens and closes sessions when a ``Clock`` command says what
time it is. This task journals one at each scheduled open and close (and once at start, to catch
up after a restart), so a replay of the journal opens and closes the market at exactly the same
commands. At start it also journals ``SetTradingCalendar`` when the configured calendar differs
from the one in the core's state.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..core.commands import Clock, SetTradingCalendar

log = logging.getLogger("exchange.server")


def calendar_command(settings, ex) -> SetTradingCalendar | None:
    """The command that puts the configured calendar in the core, or None when it is there."""
    cfg = settings.market.calendar
    cal = cfg.calendar()
    want = None if cal is None else cal.to_state()
    have = None if ex.calendar is None else ex.calendar.to_state()
    if want == have:
        return None
    if cal is None:
        return SetTradingCalendar(sessions=())
    return SetTradingCalendar(
        sessions=tuple(tuple(s) for s in want["sessions"]),
        tz=cal.tz,
        weekdays=tuple(cal.weekdays),
        holidays=tuple(cal.holidays),
    )


async def run_session_clock(runner, ex, settings, *, clock=time.time_ns) -> None:
    """Until cancelled: a ``Clock`` command now, then at every session open and close."""
    check_s = settings.market.calendar.clock_check_s
    due = 0  # submit at once: a restart may have missed an open or a close
    while True:
        cal = ex.calendar
        if cal is None:
            return
        now = clock()
        if now >= due:
            try:
                await runner.submit(Clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not the leader, stopping: try again at the next look
                log.warning("session clock: could not journal a clock command: %s", exc)
            now = clock()
            due = cal.next_change(now)
        await asyncio.sleep(min(check_s, max(0.0, (due - now) / 1e9)))


async def start_session_clock(runner, ex, settings) -> asyncio.Task | None:
    """Journal the configured calendar if it changed; start the clock task when there is one."""
    cmd = calendar_command(settings, ex)
    if cmd is not None:
        await runner.submit(cmd)
    if ex.calendar is None:
        return None
    return asyncio.get_running_loop().create_task(
        run_session_clock(runner, ex, settings), name="session-clock"
    )
