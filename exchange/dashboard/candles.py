"""Daily open/high/low/close per board: a read model for the dashboard's price chart.

A board is an instrument's book in one segment; its key here is the instrument for the ``main``
board and ``<instrument>@<segment>`` for the others (as the ticker channels are named), so a
trade on ``sme`` or ``chain:<id>`` never draws on the main board's candle. The core keeps only
the current day's statistics (``OrderBook.day_open/high/low/last``); the chart needs past days
too. :class:`CandleStore` is fed by a runner listener (committed commands
and their events, in sequence order): every ``Trade`` updates the candle of the current trading
day, every ``DayEnded`` closes it. It is a *derived* view, not state: nothing in the core depends
on it, and it is kept in ``<data-dir>/candles.json`` (written at each end of day and at shutdown)
so the chart survives a restart. On start the current day's candle is taken from the core, which
is authoritative for it. Prices are integer fen here and decimal strings on the wire.
"""
from __future__ import annotations

import json
import logging
import os
from collections import deque
from pathlib import Path

from ..core.events import DayEnded, Trade
from ..core.units import format_price

log = logging.getLogger("exchange.dashboard")

MAX_DAYS = 750  # candles kept per instrument (about three trading years)
RECENT_TRADES = 100  # public trades kept per instrument for a page that has just opened


def board_key(instrument: str, segment: str = "main") -> str:
    """The main board is the instrument itself; another is ``<instrument>@<segment>``."""
    return instrument if segment == "main" else f"{instrument}@{segment}"


class CandleStore:
    def __init__(self, path: Path | None = None, max_days: int = MAX_DAYS):
        self.path = path
        self.max_days = max_days
        self.day = 0
        # instrument -> {day: [open, high, low, close, volume, trades, first_ts]}
        self.candles: dict[str, dict[int, list[int]]] = {}
        # instrument -> the latest public trades since this process started (not persisted)
        self.recent: dict[str, deque] = {}
        self.dirty = False

    # ------------------------------------------------------------------ persistence
    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text())
            self.candles = {sym: {int(d): [int(x) for x in c] for d, c in days.items()}
                            for sym, days in raw.get("candles", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            self.candles = {}

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        tmp = self.path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps({"version": 1, "candles": {
                sym: {str(d): c for d, c in sorted(days.items())}
                for sym, days in sorted(self.candles.items())}}))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)

    # ------------------------------------------------------------------ feeding
    def seed(self, ex) -> None:
        """Take the current day (and its statistics so far) from the core."""
        self.day = ex.day
        for (sym, seg), book in ex.books.items():
            key = board_key(sym, seg)
            days = self.candles.get(key)
            if book.day_trades:
                if days is None:
                    days = self.candles[key] = {}
                days[self.day] = [book.day_open, book.day_high, book.day_low, book.last,
                                  book.day_volume, book.day_trades,
                                  days.get(self.day, [0] * 7)[6]]
            elif days is not None:
                days.pop(self.day, None)
        self.dirty = True

    def on_commit(self, cmd, events) -> None:
        """Runner listener: called once per durable command, in sequence order."""
        for ev in events:
            t = type(ev)
            if t is Trade:
                self.add_trade(board_key(ev.instrument, ev.segment), ev.price, ev.qty,
                               getattr(cmd, "ts", 0))
                q = self.recent.get(ev.instrument)
                if q is None:
                    q = self.recent[ev.instrument] = deque(maxlen=RECENT_TRADES)
                q.append(ev)
            elif t is DayEnded:
                self.day = ev.day
                self.dirty = True
                self.save()

    def add_trade(self, board: str, price: int, qty: int, ts: int = 0) -> None:
        """``board``: see :func:`board_key`."""
        days = self.candles.setdefault(board, {})
        c = days.get(self.day)
        if c is None:
            days[self.day] = [price, price, price, price, qty, 1, ts]
            if len(days) > self.max_days:
                for d in sorted(days)[:len(days) - self.max_days]:
                    del days[d]
        else:
            if price > c[1]:
                c[1] = price
            if price < c[2]:
                c[2] = price
            c[3] = price
            c[4] += qty
            c[5] += 1
        self.dirty = True

    # ------------------------------------------------------------------ reading
    def series(self, board: str, limit: int = 120) -> list[dict]:
        """``board``: see :func:`board_key`."""
        days = self.candles.get(board, {})
        out = []
        for d in sorted(days)[-limit:]:
            o, h, lo, c, v, n, ts = days[d]
            out.append({"day": d, "open": format_price(o), "high": format_price(h),
                        "low": format_price(lo), "close": format_price(c), "volume": v,
                        "trades": n, "closed": d < self.day, "first_ts": ts})
        return out

    def recent_trades(self, instrument: str, limit: int = 50) -> list[dict]:
        """The latest public trades, newest first, in the ``trades:<instrument>`` wire form."""
        from ..server.protocol import wire_trade

        q = self.recent.get(instrument) or ()
        return [wire_trade(ev) for ev in list(q)[::-1][:limit]]
