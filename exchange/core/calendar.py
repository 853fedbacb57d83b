"""The trading calendar: when the market is open.

A calendar is sessions per day (local wall-clock times, e.g. 09:30-11:30 and 13:00-15:00, the
China national ETS's hours), the weekdays that trade, holidays, and a time zone (default
``Asia/Shanghai``). It is a pure function of a timestamp: the core asks it, on a ``Clock``
command, whether the envelope's time lies inside a session, so the same journal replays to the
same opens and closes whatever the wall clock says when it is replayed. The server asks it when
the next open or close is due, to journal a ``Clock`` command then.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_hhmm(text: str) -> int:
    """``"09:30"`` -> minutes after midnight (570); ``"24:00"`` is the end of the day."""
    if text == "24:00":
        return 1440
    m = _HHMM.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return int(m.group(1)) * 60 + int(m.group(2))


def format_hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class TradingCalendar:
    sessions: tuple[tuple[int, int], ...]  # (open, close) in minutes after local midnight
    tz: str = DEFAULT_TZ
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday = 0
    holidays: tuple[str, ...] = ()  # ISO dates, local

    @classmethod
    def build(
        cls,
        sessions: Iterable[Sequence[str]],
        tz: str = DEFAULT_TZ,
        weekdays: Iterable[int] = (0, 1, 2, 3, 4),
        holidays: Iterable[str] = (),
    ) -> "TradingCalendar":
        """From config-like values (``[["09:30", "11:30"], ...]``); raises ValueError with a
        message a person can act on."""
        spans = []
        for s in sessions:
            if len(s) != 2:
                raise ValueError(f"a session is [open, close], not {s!r}")
            spans.append((parse_hhmm(s[0]), parse_hhmm(s[1])))
        if not spans:
            raise ValueError("a trading calendar needs at least one session")
        for o, c in spans:
            if not o < c:
                raise ValueError(
                    f"session {format_hhmm(o)}-{format_hhmm(c)} closes before it opens"
                )
        for (_, c), (o, _) in zip(spans, spans[1:]):
            if not c < o:
                raise ValueError("sessions must be in order, with a break between them")
        try:
            ZoneInfo(tz)
        except Exception:
            raise ValueError(f"unknown time zone {tz!r}") from None
        days = tuple(sorted(set(int(d) for d in weekdays)))
        if not days or any(not 0 <= d <= 6 for d in days):
            raise ValueError("weekdays are 0 (Monday) .. 6 (Sunday), at least one")
        hol = tuple(sorted(set(holidays)))
        for h in hol:
            if not isinstance(h, str) or _DATE.fullmatch(h) is None:
                raise ValueError(f"holiday {h!r} is not a date YYYY-MM-DD")
            dt.date.fromisoformat(h)
        return cls(tuple(spans), tz, days, hol)

    def to_state(self) -> dict[str, Any]:
        return {
            "tz": self.tz,
            "sessions": [[format_hhmm(o), format_hhmm(c)] for o, c in self.sessions],
            "weekdays": list(self.weekdays),
            "holidays": list(self.holidays),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> "TradingCalendar":
        return cls.build(s["sessions"], s["tz"], s["weekdays"], s["holidays"])

    # ------------------------------------------------------------------ queries
    def local(self, ts_ns: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, dt.timezone.utc).astimezone(
            ZoneInfo(self.tz)
        )

    def is_trading_day(self, date: dt.date) -> bool:
        return date.weekday() in self.weekdays and date.isoformat() not in self.holidays

    def locate(self, ts_ns: int) -> tuple[str, int | None, bool]:
        """(local date ISO, the session ``ts_ns`` lies in or None, whether the day's last
        session has closed). Sessions are half-open: [open, close)."""
        t = self.local(ts_ns)
        date = t.date()
        minute = t.hour * 60 + t.minute
        after_close = minute >= self.sessions[-1][1]
        if not self.is_trading_day(date):
            return date.isoformat(), None, True
        for i, (o, c) in enumerate(self.sessions):
            if o <= minute < c:
                return date.isoformat(), i, after_close
        return date.isoformat(), None, after_close

    def next_change(self, ts_ns: int) -> int:
        """The first session open or close strictly after ``ts_ns`` (ns since the epoch)."""
        zone = ZoneInfo(self.tz)
        t = self.local(ts_ns)
        day = t.date()
        for _ in range(400):  # a year of holidays at most
            if self.is_trading_day(day):
                for o, c in self.sessions:
                    for m in (o, c):
                        at = dt.datetime.combine(day, dt.time(0), zone) + dt.timedelta(minutes=m)
                        ns = int(at.timestamp()) * 1_000_000_000
                        if ns > ts_ns:
                            return ns
            day += dt.timedelta(days=1)
        raise ValueError("no trading day within 400 days")
