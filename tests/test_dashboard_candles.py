"""The dashboard's candle read model (exchange/dashboard/candles.py): daily OHLC from the
committed events, end of day, seeding from the core's own day statistics. Surviving a restart
is the history read model's (rebuilt from the journal: tests/test_market_history.py). No
browser needed (tests/test_dashboard.py drives the page)."""

from __future__ import annotations

from types import SimpleNamespace

from exchange.core.commands import EndOfDay, PlaceOrder
from exchange.core.events import DayEnded, Trade
from exchange.dashboard.candles import CandleStore
from exchange.app.engine import Sequencer
from exchange.app.market import genesis_commands
from exchange.app.config import load_settings


def trade(sym: str, price: int, qty: int, tid: int = 1) -> Trade:
    return Trade(
        trade_id=tid,
        instrument=sym,
        segment="main",
        price=price,
        qty=qty,
        buyer="B",
        seller="S",
        buy_order_id=1,
        sell_order_id=2,
        aggressor="buy",
        buyer_fee=0,
        seller_fee=0,
    )


CMD = SimpleNamespace()  # the command itself is not read: its events and envelope are


def test_trades_build_daily_ohlc_and_end_of_day_closes_it():
    s = CandleStore()
    s.on_commit(CMD, 0, 10, [trade("CEA-2026", 8510, 100)])
    s.on_commit(CMD, 0, 11, [trade("CEA-2026", 8530, 50), trade("CEA-2026", 8490, 25)])
    s.on_commit(CMD, 0, 12, [trade("CEA-2026", 8500, 5)])
    s.on_commit(CMD, 0, 13, [DayEnded(1, (("CEA-2026", 8506),), 0)])
    s.on_commit(CMD, 0, 14, [trade("CEA-2026", 8600, 7)])
    day0, day1 = s.series("CEA-2026")
    assert day0 == {
        "day": 0,
        "open": "85.10",
        "high": "85.30",
        "low": "84.90",
        "close": "85.00",
        "volume": 180,
        "trades": 4,
        "closed": True,
        "first_ts": 10,
    }
    assert day1["open"] == day1["close"] == "86.00" and day1["closed"] is False
    assert s.series("CCER-2026") == []
    assert s.series("CEA-2026", limit=1) == [day1]


def test_seed_takes_the_current_day_from_the_core(tmp_path):
    seq = Sequencer()
    seq.run(genesis_commands(load_settings(None), demo=True))
    ex = seq.ex
    seq(
        PlaceOrder(
            account="STEEL1",
            instrument="CEA-2026",
            segment="main",
            side="sell",
            qty=300,
            price=8520,
        )
    )
    seq(
        PlaceOrder(
            account="CEMENT1",
            instrument="CEA-2026",
            segment="main",
            side="buy",
            qty=300,
            price=8520,
            tif="IOC",
        )
    )
    s = CandleStore()
    s.seed(ex)
    (c,) = s.series("CEA-2026")
    assert (c["open"], c["high"], c["low"], c["close"], c["volume"]) == (
        "85.20",
        "85.20",
        "85.20",
        "85.20",
        300,
    )
    seq(EndOfDay())
    s2 = CandleStore()
    s2.candles = s.candles
    s2.seed(ex)  # a new day without trades: yesterday's candle stays, no empty candle today
    assert [x["day"] for x in s2.series("CEA-2026")] == [0]
    assert s2.series("CEA-2026")[0]["closed"] is True
