"""Daily open/high/low/close per board: the candle part of the dashboard's history read model.

A board is an instrument's book in one segment; its key here is the instrument for the ``main``
board and ``<instrument>@<segment>`` for the others (as the ticker channels are named), so a
trade on ``sme`` or ``chain:<id>`` never draws on the main board's candle. The core keeps only
the current day's statistics (``OrderBook.day_open/high/low/last``); the chart needs past days
too. :class:`CandleStore` is fed by :class:`~exchange.dashboard.history.MarketHistory`, which
sees every committed command and its events in sequence order - those replayed from the journal
at start as well as the live ones: every ``Trade`` updates the candle of the current trading
day, every ``DayEnded`` closes it. It is a *derived* view, not state: nothing in the core
depends on it, and nothing of it is written anywhere - a restart rebuilds it from the journal.
Prices are integer fen here and CNY strings on the wire.
"""

from __future__ import annotations

from ..core.events import DayEnded, Trade
from ..present import cny

MAX_DAYS = 750  # candles kept per board (about three trading years)


def board_key(instrument: str, segment: str = "main") -> str:
    """The main board is the instrument itself; another is ``<instrument>@<segment>``."""
    return instrument if segment == "main" else f"{instrument}@{segment}"


class CandleStore:
    def __init__(self, max_days: int = MAX_DAYS):
        self.max_days = max_days
        self.day = 0
        # board -> {day: [open, high, low, close, volume, trades, first_ts]}
        self.candles: dict[str, dict[int, list[int]]] = {}

    # ------------------------------------------------------------------ feeding
    def seed(self, ex) -> None:
        """Take the current day (and its statistics so far) from the core: for a store that
        did not see the day's trades (the history read model replays them instead)."""
        self.day = ex.day
        for (sym, seg), book in ex.books.items():
            key = board_key(sym, seg)
            days = self.candles.get(key)
            if book.day_trades:
                if days is None:
                    days = self.candles[key] = {}
                days[self.day] = [
                    book.day_open,
                    book.day_high,
                    book.day_low,
                    book.last,
                    book.day_volume,
                    book.day_trades,
                    days.get(self.day, [0] * 7)[6],
                ]
            elif days is not None:
                days.pop(self.day, None)

    def on_commit(self, cmd, seq, ts, events) -> None:
        """Called once per durable command with its envelope, in sequence order."""
        for ev in events:
            t = type(ev)
            if t is Trade:
                self.add_trade(
                    board_key(ev.instrument, ev.segment),
                    ev.price,
                    ev.qty,
                    ev.ts or ts,
                )
            elif t is DayEnded:
                self.day = ev.day

    def add_trade(self, board: str, price: int, qty: int, ts: int = 0) -> None:
        """``board``: see :func:`board_key`."""
        days = self.candles.get(board)
        if days is None:
            days = self.candles[board] = {}
        c = days.get(self.day)
        if c is None:
            days[self.day] = [price, price, price, price, qty, 1, ts]
            if len(days) > self.max_days:
                for d in sorted(days)[: len(days) - self.max_days]:
                    del days[d]
        else:
            if price > c[1]:
                c[1] = price
            if price < c[2]:
                c[2] = price
            c[3] = price
            c[4] += qty
            c[5] += 1

    # ------------------------------------------------------------------ reading
    def series(self, board: str, limit: int = 120) -> list[dict]:
        """The last ``limit`` days of ``board`` (see :func:`board_key`), oldest first: prices
        as CNY strings, ``first_ts`` (the day's first trade) in ns for the HTTP layer to
        present as ``first_at``."""
        days = self.candles.get(board, {})
        out = []
        for d in sorted(days)[-limit:]:
            o, h, lo, c, v, n, ts = days[d]
            out.append(
                {
                    "day": d,
                    "open": cny(o),
                    "high": cny(h),
                    "low": cny(lo),
                    "close": cny(c),
                    "volume": v,
                    "trades": n,
                    "closed": d < self.day,
                    "first_ts": ts,
                }
            )
        return out
