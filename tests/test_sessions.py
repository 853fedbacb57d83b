"""Trading sessions: the trading calendar (exchange/core/calendar.py) opens and closes the
market on ``Clock`` commands, expires DAY orders and rolls the reference at the day's last
close; an operator can still halt or close early; a replay of the same commands gives the same
state; the server journals the clock by itself."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from exchange.core import errors as E
from exchange.core.calendar import TradingCalendar
from exchange.core.commands import Clock, EndOfDay, Halt, Resume, SetTradingCalendar
from exchange.core.events import DayEnded, MarketState, SessionClosed, SessionOpened
from exchange.app.engine import Sequencer, build_exchange

from helpers import CEA, Market, reject_code, reports, trades

SH = ZoneInfo("Asia/Shanghai")
BIG = 10**10


def at(day: str, hhmm: str) -> int:
    """Shanghai local time -> ns since the epoch."""
    h, m = map(int, hhmm.split(":"))
    t = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(h, m), SH)
    return int(t.timestamp()) * 1_000_000_000


MON, TUE, SAT = "2027-03-01", "2027-03-02", "2027-03-06"  # a Monday, Tuesday and Saturday


@pytest.fixture
def m():
    mk = Market()
    mk.firm("BUYER", cash=BIG)
    mk.firm("SELLER", units=10_000)
    mk.seq(
        SetTradingCalendar(
            sessions=(("09:30", "11:30"), ("13:00", "15:00")), holidays=("2027-03-03",)
        ),
        ts=at(MON, "08:00"),
    )
    return mk


def tick(m, day, hhmm):
    return m.seq(Clock(), ts=at(day, hhmm))


def kinds(evs, t):
    return [e for e in evs if isinstance(e, t)]


def test_closed_before_the_first_session_with_a_clear_code(m):
    assert m.ex.market_halted
    m.seq.ts = at(MON, "09:00")
    evs = m.buy("BUYER", 8_500, 1)
    assert reject_code(evs) == E.MARKET_CLOSED


def test_a_day_opens_breaks_reopens_and_closes_by_the_clock(m):
    evs = tick(m, MON, "09:30")
    assert kinds(evs, SessionOpened) == [SessionOpened(MON, 0)]
    assert kinds(evs, MarketState)[-1].halted is False and not m.ex.market_halted
    m.seq.ts = at(MON, "10:00")
    day_order = reports(m.buy("BUYER", 8_400, 10, tif="DAY"))[0].order_id
    m.sell("SELLER", 8_600, 10)
    assert trades(m.buy("BUYER", 8_600, 10))
    evs = tick(m, MON, "11:30")  # the lunch break: closed, the day goes on
    assert kinds(evs, SessionClosed) == [SessionClosed(MON, 0, False)]
    assert not kinds(evs, DayEnded) and m.ex.market_halted
    assert reject_code(m.buy("BUYER", 8_400, 1)) == E.MARKET_CLOSED
    evs = tick(m, MON, "13:00")
    assert kinds(evs, SessionOpened) == [SessionOpened(MON, 1)]
    evs = tick(m, MON, "15:00")
    assert kinds(evs, SessionClosed) == [SessionClosed(MON, 1, True)]
    (de,) = kinds(evs, DayEnded)
    assert dict(de.reference_prices)[CEA] == 8_600 and de.expired_orders == 1
    assert day_order not in m.book().orders
    assert m.ex.market_halted
    assert tick(m, MON, "16:00") == []  # nothing more today


def test_weekends_and_holidays_stay_closed(m):
    tick(m, TUE, "10:00")
    evs = tick(m, "2027-03-03", "10:00")  # the holiday: Tuesday's day ends, nothing opens
    assert kinds(evs, DayEnded) and not kinds(evs, SessionOpened)
    assert tick(m, SAT, "10:00") == [] and m.ex.market_halted
    assert kinds(tick(m, "2027-03-08", "09:30"), SessionOpened)


def test_a_missed_close_still_ends_the_day(m):
    tick(m, MON, "14:00")
    evs = tick(m, TUE, "09:45")  # the server was down over Monday's close
    assert [
        type(e).__name__ for e in evs if type(e) in (SessionClosed, DayEnded, SessionOpened)
    ] == ["SessionClosed", "DayEnded", "SessionOpened"]
    assert kinds(evs, SessionOpened) == [SessionOpened(TUE, 0)]


def test_operator_halt_holds_through_an_open_and_an_early_close_holds_the_day(m):
    m.seq(Halt(), ts=at(MON, "09:00"))
    tick(m, MON, "09:30")
    assert m.ex.market_halted  # halted by the operator, though the session is open
    assert reject_code(m.buy("BUYER", 8_400, 1)) == E.HALTED
    m.seq(Resume(), ts=at(MON, "10:00"))
    assert not m.ex.market_halted
    evs = m.seq(EndOfDay(), ts=at(MON, "10:30"))  # close early
    assert kinds(evs, SessionClosed) == [SessionClosed(MON, 0, True, True)]
    assert len(kinds(evs, DayEnded)) == 1 and m.ex.market_halted
    assert not kinds(tick(m, MON, "13:00"), SessionOpened)  # not today again
    evs = tick(m, TUE, "09:30")
    assert kinds(evs, SessionOpened) and not kinds(evs, DayEnded)  # no second end of day


def test_without_a_calendar_the_market_is_always_open():
    mk = Market()
    assert not mk.ex.market_halted and mk.seq(Clock()) == []
    mk.seq(SetTradingCalendar(sessions=(("09:30", "15:00"),)), ts=at(SAT, "10:00"))
    assert mk.ex.market_halted
    mk.seq(SetTradingCalendar(sessions=()), ts=at(SAT, "10:01"))
    assert not mk.ex.market_halted


def test_a_bad_calendar_is_refused():
    mk = Market()
    for bad in [
        dict(sessions=(("11:30", "09:30"),)),
        dict(sessions=(("9:30", "11:30"),)),
        dict(sessions=(("09:30", "11:30"),), tz="Mars/Olympus"),
        dict(sessions=(("09:30", "11:30"), ("11:00", "15:00"))),
        dict(sessions=(("09:30", "11:30"),), holidays=("2027-13-01",)),
    ]:
        (ev,) = mk.seq(SetTradingCalendar(**bad))
        assert ev.code == E.BAD_PARAMETER, bad
    assert mk.ex.calendar is None


@pytest.mark.parametrize("accelerate", [True, False])
def test_replay_and_snapshot_give_the_same_state(m, accelerate):
    tick(m, MON, "09:30")
    m.seq.ts = at(MON, "10:00")
    m.sell("SELLER", 8_600, 10)
    m.buy("BUYER", 8_600, 4, tif="DAY")
    tick(m, MON, "11:30")
    again = Sequencer(build_exchange(accelerate=accelerate))
    for c, seq, ts in m.seq.log:
        again.ex.apply(c, seq, ts)
    assert again.ex.snapshot() == m.ex.snapshot()
    restored = build_exchange()
    restored.restore(m.ex.snapshot())
    assert restored.snapshot() == m.ex.snapshot()
    assert restored.calendar == m.ex.calendar and restored.market_halted


def test_next_change_walks_sessions_weekends_and_holidays():
    cal = TradingCalendar.build((("09:30", "11:30"), ("13:00", "15:00")), holidays=("2027-03-03",))
    assert cal.next_change(at(MON, "08:00")) == at(MON, "09:30")
    assert cal.next_change(at(MON, "09:30")) == at(MON, "11:30")
    assert cal.next_change(at(MON, "12:00")) == at(MON, "13:00")
    assert cal.next_change(at(TUE, "15:00")) == at("2027-03-04", "09:30")
    assert cal.next_change(at("2027-03-05", "16:00")) == at("2027-03-08", "09:30")


async def test_the_server_journals_the_clock_by_itself(tmp_path):
    """With sessions on, the server puts the calendar in the core at start and journals a
    clock command, so the market's state follows the calendar without an operator."""
    from aiohttp.test_utils import TestServer

    from exchange.app.config import load_settings
    from exchange.app.server import STATE_KEY, create_app

    s = load_settings()
    cal = s.market.calendar.model_copy(
        update={
            "enabled": True,
            "weekdays": [0, 1, 2, 3, 4, 5, 6],
            "sessions": [("00:00", "24:00")],
        }
    )
    s = s.model_copy(update={"market": s.market.model_copy(update={"calendar": cal})})
    app = create_app(s, tmp_path / "data")
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        ex = app[STATE_KEY].exchange
        assert ex.calendar is not None and ex.session["open"] == 0
        assert not ex.market_halted
        assert app[STATE_KEY].session_clock is not None
    finally:
        await srv.close()
