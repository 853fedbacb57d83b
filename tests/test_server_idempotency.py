"""place_order's idempotency by client_order_id over a real websocket on loopback: a retry
must name the same order, a replay shows the order as it is now, and the window survives a
restart (rebuilt from the journal)."""
from __future__ import annotations

import asyncio
import signal

import pytest

from exchange.client import ExchangeClient, ExchangeError

from exchange.server import gateway as gateway_mod

from test_server import CEMENT, I, POWER, running_server
from test_server_restart import ServerProcess, state

DUP = "DUPLICATE_CLIENT_ORDER_ID"


@pytest.fixture(params=["c", "python"])
async def server(request, tmp_path, monkeypatch):
    """The server with the C gate, fan-out and durable replies where built, and with the
    Python reference paths: the answers must be the same."""
    if request.param == "python":
        monkeypatch.setattr(gateway_mod, "_gate", gateway_mod._gate_off)
        monkeypatch.setattr(gateway_mod, "_fanout", None)
        monkeypatch.setattr(gateway_mod, "_replies", None)
    elif gateway_mod._replies is None:
        pytest.skip("the C extension is not built")
    async with running_server(tmp_path) as srv:
        yield srv


async def test_a_retry_with_other_terms_is_refused_not_replayed(server):
    async with ExchangeClient(server.ws_url, POWER) as c:
        first = await c.place_order(I, "sell", 10, "86.00", client_order_id="terms-1")
        seq = server.st.exchange.last_seq
        for side, qty, price in (("buy", 10, "86.00"), ("sell", 11, "86.00"),
                                 ("sell", 10, "86.10")):
            with pytest.raises(ExchangeError) as e:
                await c.place_order(I, side, qty, price, client_order_id="terms-1")
            assert e.value.code == DUP, (side, qty, price)
        assert server.st.exchange.last_seq == seq  # nothing was submitted
        again = await c.place_order(I, "sell", 10, "86.00", client_order_id="terms-1")
        assert again["order_id"] == first["order_id"] and again["replayed"] is True
        # a retry in the same frame as the first (not durable yet) with other terms, too
        res = await c.send_batch([
            ("place_order", {"instrument": I, "side": "sell", "qty": 5, "price": "86.20",
                             "client_order_id": "terms-2"}),
            ("place_order", {"instrument": I, "side": "sell", "qty": 6, "price": "86.20",
                             "client_order_id": "terms-2"})])
        assert isinstance(res[0], dict)
        assert isinstance(res[1], ExchangeError) and res[1].code == DUP
        # a rejected first attempt: a retry with other terms is refused as a duplicate too
        with pytest.raises(ExchangeError) as e:
            await c.place_order(I, "sell", 10, "99.99", client_order_id="terms-3")
        assert e.value.code == "OUTSIDE_PRICE_BAND"
        with pytest.raises(ExchangeError) as e:
            await c.place_order(I, "sell", 10, "86.30", client_order_id="terms-3")
        assert e.value.code == DUP


async def test_a_replay_shows_the_orders_current_status(server):
    async with ExchangeClient(server.ws_url, POWER) as s, \
            ExchangeClient(server.ws_url, CEMENT) as b:
        # 85.00: under the demo market's best ask (85.20), over its best bid (84.90)
        first = await s.place_order(I, "sell", 10, "85.00", client_order_id="now-1")
        assert first["order_status"] == "new" and first["leaves_qty"] == 10
        await b.place_order(I, "buy", 4, "85.00")
        part = await s.place_order(I, "sell", 10, "85.00", client_order_id="now-1")
        assert part["replayed"] and part["order_id"] == first["order_id"]
        assert (part["order_status"], part["cum_qty"], part["leaves_qty"]) == \
            ("partially_filled", 4, 6)
        await b.place_order(I, "buy", 6, "85.00")
        done = await s.place_order(I, "sell", 10, "85.00", client_order_id="now-1")
        assert (done["order_status"], done["cum_qty"], done["leaves_qty"]) == ("filled", 10, 0)
        # cancelled after the first reply: the replay says so
        c1 = await s.place_order(I, "sell", 3, "86.40", client_order_id="now-2")
        await s.cancel_order(order_id=c1["order_id"])
        again = await s.place_order(I, "sell", 3, "86.40", client_order_id="now-2")
        assert again["order_id"] == c1["order_id"]
        assert (again["order_status"], again["leaves_qty"]) == ("canceled", 0)
        assert not [o for o in await s.open_orders() if o["client_order_id"] == "now-2"]


def test_the_window_is_rebuilt_from_the_journal_after_a_restart(tmp_path):
    srv = ServerProcess(tmp_path / "data")
    srv.start()

    async def trade():
        async with ExchangeClient(srv.ws_url, POWER) as s, \
                ExchangeClient(srv.ws_url, CEMENT) as b:
            await s.place_order(I, "sell", 10, "85.00", client_order_id="rs-sell")
            f = await b.place_order(I, "buy", 10, "85.00", client_order_id="rs-buy")
            assert f["order_status"] == "filled"
            return f, await state(srv.port)

    filled, before = asyncio.run(trade())
    assert srv.kill(signal.SIGKILL) == -signal.SIGKILL
    srv.start()
    try:
        async def retry():
            async with ExchangeClient(srv.ws_url, CEMENT) as b, \
                    ExchangeClient(srv.ws_url, POWER) as s:
                # the filled order's retry is not executed again
                with pytest.raises(ExchangeError) as e:
                    await b.place_order(I, "buy", 10, "85.00", client_order_id="rs-buy")
                assert e.value.code == DUP and str(filled["seq"]) in e.value.message
                with pytest.raises(ExchangeError) as e:
                    await s.place_order(I, "sell", 10, "85.00", client_order_id="rs-sell")
                assert e.value.code == DUP
                # other terms under a remembered id: refused too
                with pytest.raises(ExchangeError) as e:
                    await b.place_order(I, "buy", 1, "85.00", client_order_id="rs-buy")
                assert e.value.code == DUP
                after = await state(srv.port)
                assert after["last_seq"] == before["last_seq"]
                assert after["state_hash"] == before["state_hash"]
                # a new id still trades
                r = await s.place_order(I, "sell", 1, "86.00", client_order_id="rs-new")
                assert r["order_status"] == "new" and "replayed" not in r
        asyncio.run(retry())
    finally:
        assert srv.kill(signal.SIGTERM) == 0
