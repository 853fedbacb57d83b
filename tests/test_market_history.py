"""Market history from the journal (exchange/dashboard/history.py, history_api.py): public
trades per board, a firm's executions, today's 1-minute bars and the daily candles, rebuilt
from the journal at start - from genesis even when the core starts from a snapshot - and
paged over HTTP in units for people. Privacy: public trades name no firm; a firm's blotter is
for the firm, its verifier and operators (tests/test_privacy_access.py has the route too)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp.test_utils import TestServer

from exchange.app.engine import Sequencer
from exchange.app.server import STATE_KEY, create_app
from exchange.client import ExchangeClient
from exchange.core.commands import EndOfDay, PlaceOrder
from exchange.core.events import Trade
from exchange.dashboard.history import MINUTE_NS, MarketHistory
from exchange.present import time_iso

from test_server import CEMENT, OPERATOR, POWER, SME1, STEEL, settings_with

SYM = "CEA-2026"
T0 = 1_800_000_000 * 1_000_000_000  # 2027-01-15T16:00:00+08:00, a minute's start


def _trade(
    tid, price, qty, segment="main", buyer="B", seller="S", aggressor="buy", ts=T0, split=()
):
    return Trade(
        trade_id=tid,
        instrument=SYM,
        segment=segment,
        price=price,
        qty=qty,
        buyer=buyer,
        seller=seller,
        buy_order_id=10 + tid,
        sell_order_id=20 + tid,
        aggressor=aggressor,
        buyer_fee=price * qty // 2000,
        seller_fee=price * qty // 2000,
        proceeds_split=split,
        ts=ts,
    )


class Cmd:
    """A command as the history reads it: only its events and envelope matter."""


# ------------------------------------------------------------------------------ read model


def test_kept_rows_cost_the_garbage_collector_nothing():
    """What the history keeps (up to hundreds of thousands of rows) must not be examined by
    the cyclic GC: at 20,000 orders/s kept row tuples made every young collection examine
    each of them once and every full one walk them all - event-loop pauses of 40-300 ms.
    The history keeps the core's events themselves (which the compiled core makes untracked;
    these, made in Python, are tracked) and ints: nothing of its own per row."""
    import gc

    h = MarketHistory()
    h.feed(Cmd(), 1, T0, [_trade(1, 8_501, 1, buyer="F1")])  # the board's and firms' keys exist
    for i in range(2, 9):
        h.feed(Cmd(), i, T0, [_trade(i, 8_501, 1, buyer=f"F{i % 7}")])
    gc.collect()
    before = len(gc.get_objects())
    trades = [_trade(i, 8_500 + i % 50, 1, buyer=f"F{i % 7}") for i in range(9, 2009)]
    gc.collect()
    made = len(gc.get_objects()) - before  # the events and the test's own list
    for i, t in enumerate(trades, 9):
        h.feed(Cmd(), i, T0, [t])
    del trades
    gc.collect()
    assert len(gc.get_objects()) - before <= made  # kept 6,000 rows, allocated none
    read = h.public_trades(SYM, "main", limit=3)
    assert [r.trade_id for r in read] == [2008, 2007, 2006] and read[0].price == 8_508
    assert h.firm_executions("S", limit=1)[0].side == "sell"


def test_trades_executions_and_minute_bars_by_hand():
    h = MarketHistory()
    h.feed(Cmd(), 1, T0, [_trade(1, 8_510, 100)])
    h.feed(
        Cmd(),
        2,
        T0,
        [_trade(2, 8_530, 50, ts=T0 + 30 * 10**9), _trade(3, 8_490, 25, ts=T0 + 59 * 10**9)],
    )
    h.feed(Cmd(), 3, T0, [_trade(4, 8_500, 5, ts=T0 + MINUTE_NS)])
    h.feed(
        Cmd(),
        4,
        T0,
        [
            _trade(
                5,
                8_800,
                10,
                segment="sme",
                buyer="B",
                seller="SME1",
                aggressor="sell",
                ts=T0 + MINUTE_NS,
                split=(("P", 26_400), ("SME1", 61_600)),
            )
        ],
    )
    # a command heard twice (read back, then live) counts once
    h.feed(Cmd(), 4, T0, [_trade(5, 8_800, 10, segment="sme")])
    # minute bars of the main board: 8,510 / 8,530 / 8,490 in the first minute, 8,500 next
    b = h.minute_bars(SYM)
    assert [
        (
            x["ts"],
            x["open_fen"],
            x["high_fen"],
            x["low_fen"],
            x["close_fen"],
            x["volume"],
            x["trades"],
        )
        for x in b
    ] == [
        (T0, 8_510, 8_530, 8_490, 8_490, 175, 3),
        (T0 + MINUTE_NS, 8_500, 8_500, 8_500, 8_500, 5, 1),
    ]
    # the SME board's trade draws only on its own bars and candle
    assert [x["close_fen"] for x in h.minute_bars(SYM, "sme")] == [8_800]
    assert [c["close"] for c in h.candle_series(SYM)] == ["85.00"]
    assert [c["close"] for c in h.candle_series(SYM, "sme")] == ["88.00"]
    # public trades: newest first, every board or one
    assert [r.trade_id for r in h.public_trades(SYM)] == [5, 4, 3, 2, 1]
    assert [r.trade_id for r in h.public_trades(SYM, "main", limit=2)] == [4, 3]
    assert [r.trade_id for r in h.public_trades(SYM, "main", before=3)] == [2, 1]
    assert [
        r.trade_id for r in h.public_trades(SYM, t_from=T0 + 30 * 10**9, t_to=T0 + MINUTE_NS)
    ] == [3, 2]
    assert "SME1" not in repr(h.trades) and "'B'" not in repr(h.trades)
    # executions: the buyer took 100 t @ 85.10 as the aggressor: paid 851,000 + fee 425
    x = h.firm_executions("B")
    assert [r.trade_id for r in x] == [5, 4, 3, 2, 1]
    first = x[-1]
    assert (first.side, first.liquidity, first.price, first.qty, first.fee, first.proceeds) == (
        "buy",
        "taker",
        8_510,
        100,
        425,
        -851_425,
    )
    # the SME sold 10 t @ 88.00 = 88,000, fee 44: 87,956 net, of which the parent P got
    # 26,400 -> 61,556 to the SME (the split's own line is what it keeps before the fee)
    (s,) = h.firm_executions("SME1")
    assert (s.side, s.liquidity, s.proceeds) == ("sell", "taker", 88_000 - 44 - 26_400)
    assert h.firm_executions("S", instrument="CCER-2026") == []


def test_end_of_day_resets_bars_and_drops_trades_past_the_kept_days():
    from exchange.core.events import DayEnded

    h = MarketHistory(keep_days=2)
    h.feed(Cmd(), 1, T0, [_trade(1, 8_500, 1)])
    h.feed(Cmd(), 2, T0, [DayEnded(1, ((SYM, 8_500),), 0)])
    assert h.minute_bars(SYM) == []  # today's bars only
    assert [r.trade_id for r in h.public_trades(SYM)] == [1]  # day 0 is within 2 days of day 1
    h.feed(Cmd(), 3, T0, [_trade(2, 8_600, 1, ts=T0 + 86_400 * 10**9)])
    h.feed(Cmd(), 4, T0, [DayEnded(2, ((SYM, 8_600),), 0)])
    assert [r.trade_id for r in h.public_trades(SYM)] == [2]
    assert [r.trade_id for r in h.firm_executions("B")] == [2]
    assert [c["day"] for c in h.candle_series(SYM)] == [0, 1]  # candles go back further
    h.feed(Cmd(), 5, T0, [DayEnded(3, (), 0)])
    h.feed(Cmd(), 6, T0, [DayEnded(4, (), 0)])
    assert h.trades == {} and h.executions == {}


def test_the_bound_per_board_holds():
    h = MarketHistory(max_trades=3, max_executions=2)
    for i in range(1, 8):
        h.feed(Cmd(), i, T0, [_trade(i, 8_500, 1)])
    assert [r.trade_id for r in h.public_trades(SYM)] == [7, 6, 5]
    assert [r.trade_id for r in h.firm_executions("S")] == [7, 6]


def test_the_bound_over_all_firms_holds():
    """Many firms do not multiply the per-firm bound: over all of them the oldest go first."""
    h = MarketHistory(max_executions=10, max_executions_total=6)
    for i in range(1, 7):  # firms F1..F6 buy from S: 12 executions, 6 kept
        h.feed(Cmd(), i, T0, [_trade(i, 8_500, 1, buyer=f"F{i}")])
    kept = {f: [r.trade_id for r in reversed(h.firm_executions(f))] for f in h.executions}
    assert kept == {"F4": [4], "F5": [5], "F6": [6], "S": [4, 5, 6]}
    assert sum(len(metas) for _evs, metas in h.executions.values()) == 6
    h = MarketHistory(max_trades_total=2)
    for i, seg in enumerate(("main", "sme", "chain:c1"), 1):
        h.feed(Cmd(), i, T0, [_trade(i, 8_500, 1, segment=seg)])
    assert [r.trade_id for r in h.public_trades(SYM)] == [3, 2]
    assert h.boards() == [(SYM, "chain:c1"), (SYM, "sme")]


def test_the_core_events_feed_it_like_the_journal_does():
    """A real market (genesis of config/default.toml): the scratch-core path of rebuild is
    the same feed as the live one."""
    from exchange.app.config import load_settings
    from exchange.app.market import genesis_commands

    seq = Sequencer()
    h = MarketHistory()
    for c in genesis_commands(load_settings(None), demo=True):
        evs = seq(c)
        h.feed(c, seq.ex.last_seq, seq.ts, evs)
    for c in (
        PlaceOrder(account="STEEL1", instrument=SYM, side="sell", qty=300, price=8_520),
        PlaceOrder(account="CEMENT1", instrument=SYM, side="buy", qty=300, price=8_520),
        EndOfDay(),
        PlaceOrder(account="STEEL1", instrument=SYM, side="sell", qty=10, price=8_530),
        PlaceOrder(account="CEMENT1", instrument=SYM, side="buy", qty=10, price=8_530),
    ):
        evs = seq(c)
        h.feed(c, seq.ex.last_seq, seq.ts, evs)
    assert [r.qty for r in h.public_trades(SYM)] == [10, 300]
    assert [c["close"] for c in h.candle_series(SYM)] == ["85.20", "85.30"]
    assert [c["closed"] for c in h.candle_series(SYM)] == [True, False]
    assert len(h.minute_bars(SYM)) == 1  # the second day's only
    assert {r.side for r in h.firm_executions("CEMENT1")} == {"buy"}


# ------------------------------------------------------------------------------ server


@contextlib.asynccontextmanager
async def served(data_dir, **journal):
    s = settings_with()
    if journal:
        s = s.model_copy(update={"journal": s.journal.model_copy(update=journal)})
    app = create_app(s, data_dir)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    srv.ws_url = f"ws://127.0.0.1:{srv.port}/ws"
    srv.http = f"http://127.0.0.1:{srv.port}/api/v1"
    srv.st = app[STATE_KEY]
    try:
        yield srv
    finally:
        await srv.close()


async def get(srv, path, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s:
        async with s.get(srv.http + path, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def _fills(srv):
    async with (
        ExchangeClient(srv.ws_url, CEMENT) as buyer,
        ExchangeClient(srv.ws_url, STEEL) as steel,
    ):
        # the demo book: POWER1 sells 1,000 t at 85.40 on main, SME1 500 t at 85.20 on sme
        r = await buyer.place_order(SYM, "buy", 100, "85.40")
        assert r["order_status"] == "filled"
        r = await buyer.place_order(SYM, "buy", 40, "85.50")  # fills at the resting 85.40
        assert r["order_status"] == "filled"
        r = await steel.place_order(SYM, "buy", 20, "86.00", segment="sme")  # at 85.20
        assert r["order_status"] == "filled"


async def test_history_survives_a_restart_from_a_snapshot(tmp_path):
    data = tmp_path / "data"
    async with served(data) as srv:
        await _fills(srv)
        st, before = await get(srv, f"/trades?instrument={SYM}")
        assert st == 200 and [t["qty"] for t in before["trades"]] == [20, 40, 100]
        # a snapshot after the trades: the next start restores it and skips their events
        srv.st.runner._snapshot_now()
        await asyncio.sleep(0.5)
    async with served(data) as srv:
        assert srv.st.recovery["snapshot_seq"] > 0, srv.st.recovery
        st, after = await get(srv, f"/trades?instrument={SYM}")
        assert st == 200 and after == before
        t = after["trades"][-1]
        # units for people, no firm
        assert set(t) == {"trade_id", "instrument", "segment", "price", "qty", "aggressor", "at"}
        assert t["price"] == "85.40" and t["segment"] == "main" and t["at"].endswith("+08:00")
        assert "POWER1" not in str(after) and "CEMENT1" not in str(after)
        # one board; paging with the cursor
        st, main = await get(srv, f"/trades?instrument={SYM}&segment=main&limit=1")
        assert [x["qty"] for x in main["trades"]] == [40], before
        st, older = await get(
            srv, f"/trades?instrument={SYM}&segment=main&limit=1&before={main['next_before']}"
        )
        assert [x["qty"] for x in older["trades"]] == [100] and older["next_before"]
        st, last = await get(
            srv, f"/trades?instrument={SYM}&segment=main&limit=1&before={older['next_before']}"
        )
        assert last["trades"] == [] and last["next_before"] is None
        st, sme = await get(srv, f"/trades?instrument={SYM}&segment=sme")
        assert [x["price"] for x in sme["trades"]] == ["85.20"]
        # the buyer's blotter, after the restart
        st, ex = await get(srv, "/firms/CEMENT1/executions", CEMENT)
        assert st == 200
        assert [(e["side"], e["price"], e["qty"], e["liquidity"]) for e in ex["executions"]] == [
            ("buy", "85.40", 40, "taker"),
            ("buy", "85.40", 100, "taker"),
        ]
        # main board fee 0.05 %: 100 x 85.40 = 8,540.00, fee 4.27 -> paid 8,544.27
        assert ex["executions"][1]["fee"] == "4.27"
        assert ex["executions"][1]["proceeds"] == "-8544.27"
        assert "POWER1" not in str(ex)
        st, ex = await get(srv, "/firms/POWER1/executions", OPERATOR)
        assert [(e["side"], e["liquidity"]) for e in ex["executions"]] == [
            ("sell", "maker"),
            ("sell", "maker"),
        ]
        # the SME sold on its board; its parent's share is not its cash
        st, ex = await get(srv, "/firms/SME1/executions", SME1)
        (e,) = ex["executions"]
        assert e["segment"] == "sme" and e["side"] == "sell"
        # today's minute bars and the candle, per board
        st, bars = await get(srv, f"/market/bars/{SYM}")
        assert st == 200 and sum(b["volume"] for b in bars["bars"]) == 140
        assert bars["bars"][-1]["close"] == "85.40"
        st, bars = await get(srv, f"/market/bars/{SYM}?segment=sme")
        assert [b["close"] for b in bars["bars"]] == ["85.20"]
        st, c = await get(srv, f"/market/candles/{SYM}")
        assert c["candles"][-1]["close"] == "85.40" and c["candles"][-1]["volume"] == 140
        st, c = await get(srv, f"/market/candles/{SYM}?segment=sme")
        assert c["candles"][-1]["close"] == "85.20"
        # the recent-trades route reads the same history
        st, r = await get(srv, f"/market/trades/{SYM}")
        assert [x["qty"] for x in r["trades"]] == [20, 40, 100]


async def test_order_history_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    async with served(data) as srv:
        async with ExchangeClient(srv.ws_url, CEMENT) as c:
            r = await c.place_order(SYM, "buy", 10, "84.00", client_order_id="h-rest")
            await c.request("cancel_order", {"order_id": r["order_id"]})
            with contextlib.suppress(Exception):
                await c.place_order(SYM, "buy", 10, "200.00", client_order_id="h-band")
            await c.place_order(SYM, "buy", 5, "85.40", client_order_id="h-fill")
        st, before = await get(srv, "/firms/CEMENT1/orders", CEMENT)
        assert st == 200
        srv.st.runner._snapshot_now()
        await asyncio.sleep(0.5)
    async with served(data) as srv:
        assert srv.st.recovery["snapshot_seq"] > 0
        st, after = await get(srv, "/firms/CEMENT1/orders", CEMENT)
        assert st == 200 and after == before
        mine = [
            (o["client_order_id"], o["exec_type"], o["order_status"])
            for o in after["orders"]
            if (o["client_order_id"] or "").startswith("h-")
        ]
        assert mine == [
            ("h-fill", "trade", "filled"),
            ("h-fill", "new", "new"),
            ("h-band", "rejected", "rejected"),
            ("h-rest", "canceled", "canceled"),
            ("h-rest", "new", "new"),
        ]
        fill = after["orders"][0]
        assert (fill["last_px"], fill["last_qty"], fill["price"]) == ("85.40", 5, "85.40")
        assert fill["at"].endswith("+08:00") and fill["trade_id"]
        band = after["orders"][2]
        assert band["reason"] == "OUTSIDE_PRICE_BAND" and band["order_id"] == 0
        # paging by event id
        st, p1 = await get(srv, "/firms/CEMENT1/orders?limit=2", CEMENT)
        st, p2 = await get(srv, f"/firms/CEMENT1/orders?limit=2&before={p1['next_before']}", CEMENT)
        assert [o["event_id"] for o in p1["orders"] + p2["orders"]] == [
            o["event_id"] for o in after["orders"][:4]
        ]
        assert (await get(srv, "/firms/CEMENT1/orders", POWER))[0] == 403


async def test_trades_time_window_and_bad_parameters(tmp_path):
    async with served(tmp_path / "data") as srv:
        await _fills(srv)
        st, all_ = await get(srv, "/trades")
        assert st == 200 and len(all_["trades"]) == 3
        newest = all_["trades"][0]["at"]
        st, w = await get(srv, "/trades?to=" + aiohttp.helpers.quote(newest, safe=""))
        assert [t["qty"] for t in w["trades"]] == [40, 100]
        st, w = await get(srv, "/trades?from=" + aiohttp.helpers.quote(newest, safe=""))
        assert [t["qty"] for t in w["trades"]] == [20]
        st, w = await get(srv, "/trades?from=2000-01-01&to=2000-01-02")
        assert st == 200 and w["trades"] == []
        assert (await get(srv, "/trades?from=yesterday"))[0] == 422
        st, body = await get(srv, "/trades?from=2026-02-30")
        assert st == 400 and body["error"]["code"] == "BAD_PARAMETER"
        assert (await get(srv, "/trades?instrument=NOPE"))[0] == 404
        assert (await get(srv, f"/trades?instrument={SYM}&segment=nope"))[0] == 404
        assert (await get(srv, f"/market/bars/{SYM}?segment=nope"))[0] == 404
        assert (await get(srv, "/firms/NOPE/executions", OPERATOR))[0] == 404
        assert (await get(srv, "/firms/CEMENT1/executions", POWER))[0] == 403
        assert (await get(srv, "/firms/CEMENT1/executions"))[0] == 401


async def test_an_in_memory_server_hears_everything_live(tmp_path):
    app = create_app(settings_with(), None, in_memory=True)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    srv.ws_url = f"ws://127.0.0.1:{srv.port}/ws"
    srv.http = f"http://127.0.0.1:{srv.port}/api/v1"
    try:
        await _fills(srv)
        st, t = await get(srv, f"/trades?instrument={SYM}")
        assert [x["qty"] for x in t["trades"]] == [20, 40, 100]
    finally:
        await srv.close()


def test_time_iso_is_what_the_routes_show():
    assert time_iso(T0) == "2027-01-15T16:00:00+08:00"
