"""Market data per board (instrument x segment): a trade on the ``sme`` board or a
``chain:<id>`` book moves only its own board's day statistics, ticker and candles, and only the
``main`` board's VWAP sets the instrument's reference price and band at the end of the day."""

from __future__ import annotations

import asyncio

import pytest

from exchange.core.commands import EndOfDay
from exchange.core.events import DayEnded
from exchange.core.exchange import Exchange
from exchange.dashboard.candles import CandleStore
from exchange.app.engine import build_exchange

from helpers import CEA, REF, Market, trades
from test_server import I, SME1, STEEL, op, running_server

BIG = 10**10


@pytest.fixture(params=[True, False], ids=["compiled", "python"])
def m(request, monkeypatch):
    if not request.param:
        import exchange.app.engine as engine

        real = engine.build_exchange
        monkeypatch.setattr(
            engine, "build_exchange", lambda **kw: real(**{**kw, "accelerate": False})
        )
        import helpers

        monkeypatch.setattr(
            helpers, "build_exchange", lambda **kw: real(**{**kw, "accelerate": False})
        )
    mk = Market()
    assert mk.ex.accelerated is (request.param and build_exchange().accelerated)
    mk.firm("BUYER", cash=BIG)
    mk.firm("SELLER", units=10_000)
    mk.firm("SME", units=10_000, size_class="sme")
    mk.firm("CORE", cash=BIG)
    mk.firm("SUPP", units=10_000)
    mk.chain("steel", "CORE", "SUPP")
    return mk


def _trade(m, seller, px, qty, segment="main", buyer="BUYER"):
    m.sell(seller, px, qty, segment=segment)
    assert sum(t.qty for t in trades(m.buy(buyer, px, qty, segment=segment))) == qty


def test_an_sme_trade_does_not_move_the_main_board(m):
    _trade(m, "SELLER", 8_510, 10)
    _trade(m, "SME", 8_520, 100, segment="sme")
    _trade(m, "SUPP", 8_000, 50, segment="chain:steel", buyer="CORE")
    main, sme, chain = m.book("main"), m.book("sme"), m.book("chain:steel")
    assert (main.last, main.day_low, main.day_high, main.day_volume, main.day_trades) == (
        8_510,
        8_510,
        8_510,
        10,
        1,
    )
    assert (sme.last, sme.day_open, sme.day_volume, sme.vwap()) == (8_520, 8_520, 100, 8_520)
    assert (chain.last, chain.day_low, chain.day_volume) == (8_000, 8_000, 50)
    m.ex.check_invariants()


def test_only_the_main_board_sets_the_reference_price(m):
    _trade(m, "SELLER", 8_510, 10)
    _trade(m, "SME", 8_800, 1_000, segment="sme")
    _trade(m, "SUPP", 8_000, 1_000, segment="chain:steel", buyer="CORE")
    (de,) = [e for e in m.apply(EndOfDay()) if isinstance(e, DayEnded)]
    assert dict(de.reference_prices)[CEA] == 8_510
    assert m.ex.instruments[CEA].reference_price == 8_510
    # every board starts the new day afresh; the last price stays
    for seg in ("main", "sme", "chain:steel"):
        b = m.book(seg)
        assert (b.day_volume, b.day_trades, b.day_open) == (0, 0, 0) and b.last


def test_a_day_traded_only_off_the_main_board_keeps_the_reference(m):
    _trade(m, "SME", 9_000, 500, segment="sme")
    m.apply(EndOfDay())
    assert m.ex.instruments[CEA].reference_price == REF


def test_board_statistics_survive_a_snapshot(m):
    _trade(m, "SELLER", 8_510, 10)
    _trade(m, "SME", 8_520, 100, segment="sme")
    again = build_exchange()
    again.restore(m.ex.snapshot())
    assert again.snapshot() == m.ex.snapshot()
    assert again.books[(CEA, "sme")].last == 8_520
    assert again.books[(CEA, "main")].day_volume == 10


def test_a_state_with_the_statistics_on_the_instrument_still_loads(m):
    _trade(m, "SELLER", 8_510, 10)
    s = m.ex.to_state()
    for sym, ins in s["instruments"].items():
        for sym_, seg, bs in s["books"]:
            if sym_ == sym and seg == "main":
                ins.extend(bs.pop("day"))
    ex = Exchange()
    ex.load_state(s)
    assert ex.books[(CEA, "main")].last == 8_510
    assert ex.books[(CEA, "main")].vwap() == 8_510


def test_candles_are_per_board(m):
    store = CandleStore()
    _trade(m, "SELLER", 8_510, 10)
    _trade(m, "SME", 8_800, 100, segment="sme")
    store.seed(m.ex)
    assert [c["close"] for c in store.series(CEA)] == ["85.10"]
    assert [c["close"] for c in store.series(f"{CEA}@sme")] == ["88.00"]


# ------------------------------------------------------------------------------ server


async def test_the_main_ticker_ignores_an_sme_trade_and_each_board_has_its_own(tmp_path):
    from exchange.client import ExchangeClient

    async with running_server(tmp_path) as srv:
        async with (
            ExchangeClient(srv.ws_url, SME1) as sme,
            ExchangeClient(srv.ws_url, STEEL) as buyer,
            ExchangeClient(srv.ws_url, STEEL) as watcher,
        ):
            main0 = (await watcher.subscribe(f"ticker:{I}"))["snapshot"]
            snap = (await watcher.subscribe(f"ticker:{I}@sme"))["snapshot"]
            assert snap["segment"] == "sme" and snap["last"] is None
            await sme.place_order(I, "sell", 100, "85.20", segment="sme")
            r = await buyer.place_order(I, "buy", 100, "85.20", segment="sme")
            assert r["order_status"] == "filled"
            got = []
            while True:
                _, _, t = await watcher.next_push(f"ticker:{I}@sme")
                got.append(t)
                if t["last"] is not None:
                    break
            assert t["last"] == "85.20" and t["volume"] == 100 and t["segment"] == "sme"
            await asyncio.sleep(0.2)
            # the main board's ticker did not move: no push on ticker:CEA-2026 at all
            assert watcher.drain(f"ticker:{I}") == []
            status, body = await op(srv, "GET", "/instruments")
            main = [x for x in body["instruments"] if x["instrument"] == I][0]
            assert main["last"] == main0["last"] and main["volume"] == main0["volume"]
            status, body = await op(srv, "GET", f"/market/candles/{I}?segment=sme", key=None)
            assert status == 200 and body["candles"][-1]["close"] == "85.20"
            status, body = await op(srv, "GET", f"/market/candles/{I}", key=None)
            assert status == 200 and all(
                c["close"] != "85.20" or c["closed"] for c in body["candles"]
            )
            status, body = await op(srv, "POST", "/end-of-day", {})
            assert status == 200, body
            assert srv.st.exchange.instruments[I].reference_price != 8_520


async def test_a_ticker_is_pushed_only_when_something_in_it_changed(tmp_path):
    from exchange.client import ExchangeClient

    async with running_server(tmp_path) as srv:
        async with ExchangeClient(srv.ws_url, STEEL) as c:
            snap = (await c.subscribe(f"ticker:{I}"))["snapshot"]
            lo = snap["band"][0]
            # a bid at the bottom of the band: the book changes, its top and the ticker do not
            await c.place_order(I, "buy", 1, lo)
            await asyncio.sleep(0.3)
            assert c.drain(f"ticker:{I}") == []
            bid = "%.2f" % (float(snap["best_bid"]) + 0.01)
            assert bid < snap["best_ask"]
            await c.place_order(I, "buy", 1, bid)
            _, _, t = await c.next_push(f"ticker:{I}")
            assert t["best_bid"] == bid


async def test_a_board_has_one_ticker_channel_name(tmp_path):
    from exchange.client import ExchangeClient, ExchangeError

    async with running_server(tmp_path) as srv:
        async with ExchangeClient(srv.ws_url, STEEL) as c:
            for bad in (f"ticker:{I}@main", f"ticker:{I}@", f"ticker:{I}@nope"):
                with pytest.raises(ExchangeError) as e:
                    await c.subscribe(bad)
                assert e.value.code == "UNKNOWN_CHANNEL"
            r = (
                await c.subscribe(f"ticker:{I}@chain:steel")
                if (I, "chain:steel") in srv.st.exchange.books
                else await c.subscribe(f"ticker:{I}@sme")
            )
            assert r["snapshot"]["instrument"] == I
