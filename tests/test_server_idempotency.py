"""place_order's idempotency by client_order_id over a real websocket on loopback: a retry
must name the same order, a replay shows the order as it is now, and the window survives a
restart (rebuilt from the journal)."""

from __future__ import annotations

import asyncio
import gc
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
        monkeypatch.setattr(gateway_mod, "_idem_listen", None)
    elif gateway_mod._replies is None:
        pytest.skip("the C extension is not built")
    async with running_server(tmp_path) as srv:
        yield srv


async def test_a_retry_with_other_terms_is_refused_not_replayed(server):
    async with ExchangeClient(server.ws_url, POWER) as c:
        first = await c.place_order(I, "sell", 10, "86.00", client_order_id="terms-1")
        seq = server.st.exchange.last_seq
        for side, qty, price in (
            ("buy", 10, "86.00"),
            ("sell", 11, "86.00"),
            ("sell", 10, "86.10"),
        ):
            with pytest.raises(ExchangeError) as e:
                await c.place_order(I, side, qty, price, client_order_id="terms-1")
            assert e.value.code == DUP, (side, qty, price)
        assert server.st.exchange.last_seq == seq  # nothing was submitted
        again = await c.place_order(I, "sell", 10, "86.00", client_order_id="terms-1")
        assert again["order_id"] == first["order_id"] and again["replayed"] is True
        # a retry in the same frame as the first (not durable yet) with other terms, too
        res = await c.send_batch(
            [
                (
                    "place_order",
                    {
                        "instrument": I,
                        "side": "sell",
                        "qty": 5,
                        "price": "86.20",
                        "client_order_id": "terms-2",
                    },
                ),
                (
                    "place_order",
                    {
                        "instrument": I,
                        "side": "sell",
                        "qty": 6,
                        "price": "86.20",
                        "client_order_id": "terms-2",
                    },
                ),
            ]
        )
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
    async with (
        ExchangeClient(server.ws_url, POWER) as s,
        ExchangeClient(server.ws_url, CEMENT) as b,
    ):
        # 85.00: under the demo market's best ask (85.20), over its best bid (84.90)
        first = await s.place_order(I, "sell", 10, "85.00", client_order_id="now-1")
        assert first["order_status"] == "new" and first["leaves_qty"] == 10
        await b.place_order(I, "buy", 4, "85.00")
        part = await s.place_order(I, "sell", 10, "85.00", client_order_id="now-1")
        assert part["replayed"] and part["order_id"] == first["order_id"]
        assert (part["order_status"], part["cum_qty"], part["leaves_qty"]) == (
            "partially_filled",
            4,
            6,
        )
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


async def test_the_window_keeps_nothing_the_cyclic_gc_must_walk(server, request):
    """The window keeps tuples of strings and integers only - not the order command, not a
    list - so 20,000 remembered orders add nothing to what each young collection examines.
    The compiled gateway makes them untracked itself (Python's collector untracks such tuples
    only after examining them once); with collections off, that shows before any runs."""
    gc.disable()
    try:
        async with (
            ExchangeClient(server.ws_url, POWER) as s,
            ExchangeClient(server.ws_url, CEMENT) as b,
        ):
            rest = await s.place_order(I, "sell", 10, "85.00", client_order_id="gc-rest")
            with pytest.raises(ExchangeError):  # outside the price band
                await s.place_order(I, "sell", 10, "99.99", client_order_id="gc-rejected")
            await b.place_order(I, "buy", 4, "85.00", client_order_id="gc-fill")
            await s.cancel_order(order_id=rest["order_id"])  # finished after it was kept
            await s.place_order(I, "sell", 2, "86.60", client_order_id="gc-open")
        done = server.st.gateway.idem.done
        assert set(done) >= {
            ("POWER1", "gc-rest"),
            ("POWER1", "gc-rejected"),
            ("CEMENT1", "gc-fill"),
            ("POWER1", "gc-open"),
        }
        for key, entry in done.items():
            assert type(entry) is tuple and len(entry) == 3, entry
            outcome, terms, final = entry
            assert type(terms) is tuple and all(type(t) in (str, int, bool) for t in terms)
            assert final is None or type(final) is tuple
        assert done[("POWER1", "gc-rest")][2] == (rest["order_id"], "canceled", 4)
        kept = [x for key, entry in done.items() for x in (key, entry, entry[1])]
        if request.node.callspec.params["server"] == "c":
            # made untracked by the gateway, except an entry replaced (in Python) when its
            # order finished after it was kept
            fresh = [key for key in done if key != ("POWER1", "gc-rest")]
            assert not [k for k in fresh if gc.is_tracked(k) or gc.is_tracked(done[k])]
        # what is left the collector untracks when it looks (a tuple in a tuple: the outer
        # one on the second look; the runner may have frozen them after a snapshot: thawed,
        # so that the collections see them)
        gc.unfreeze()
        gc.collect()
        gc.collect()
        assert not [x for x in kept if gc.is_tracked(x)]
    finally:
        gc.enable()


def test_the_window_is_rebuilt_from_the_journal_after_a_restart(tmp_path):
    srv = ServerProcess(tmp_path / "data")
    srv.start()

    async def trade():
        async with ExchangeClient(srv.ws_url, POWER) as s, ExchangeClient(srv.ws_url, CEMENT) as b:
            await s.place_order(I, "sell", 10, "85.00", client_order_id="rs-sell")
            f = await b.place_order(I, "buy", 10, "85.00", client_order_id="rs-buy")
            assert f["order_status"] == "filled"
            return f, await state(srv.port)

    filled, before = asyncio.run(trade())
    assert srv.kill(signal.SIGKILL) == -signal.SIGKILL
    srv.start()
    try:

        async def retry():
            async with (
                ExchangeClient(srv.ws_url, CEMENT) as b,
                ExchangeClient(srv.ws_url, POWER) as s,
            ):
                # the filled orders' retries are not executed again: they are answered as
                # replays, with the state the orders ended in before the restart
                r = await b.place_order(I, "buy", 10, "85.00", client_order_id="rs-buy")
                assert r == {**filled, "replayed": True}
                r = await s.place_order(I, "sell", 10, "85.00", client_order_id="rs-sell")
                assert (r["order_status"], r["cum_qty"], r["leaves_qty"], r["replayed"]) == (
                    "filled",
                    10,
                    0,
                    True,
                )
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


def test_orders_done_before_a_restart_replay_their_final_state(tmp_path):
    """Filled, canceled, partly filled then canceled, refused: after a clean restart (a final
    snapshot, nothing replayed) and after a crash, a retry of each is answered as before the
    restart - a replay with the final state, or the refusal again - and changes nothing."""
    srv = ServerProcess(tmp_path / "data")
    srv.start()

    async def trade():
        async with ExchangeClient(srv.ws_url, POWER) as s, ExchangeClient(srv.ws_url, CEMENT) as b:
            first = {}
            first["c-cxl"] = await s.place_order(I, "sell", 5, "89.00", client_order_id="c-cxl")
            await s.cancel_order(client_order_id="c-cxl")
            first["c-part"] = await s.place_order(I, "sell", 10, "85.10", client_order_id="c-part")
            first["c-fill"] = await b.place_order(I, "buy", 4, "85.10", client_order_id="c-fill")
            await s.cancel_order(client_order_id="c-part")
            with pytest.raises(ExchangeError) as e:
                await b.place_order(I, "buy", 1, "50.00", client_order_id="c-band")
            return first, e.value.code

    first, band_code = asyncio.run(trade())
    assert band_code == "OUTSIDE_PRICE_BAND"
    for how in (signal.SIGTERM, signal.SIGKILL):
        srv.kill(how)
        srv.start()

        async def retry():
            async with (
                ExchangeClient(srv.ws_url, POWER) as s,
                ExchangeClient(srv.ws_url, CEMENT) as b,
            ):
                before = await state(srv.port)  # (a clean stop journals its snapshot's seal)
                r = await s.place_order(I, "sell", 5, "89.00", client_order_id="c-cxl")
                assert r == {
                    **first["c-cxl"],
                    "order_status": "canceled",
                    "leaves_qty": 0,
                    "replayed": True,
                }
                r = await s.place_order(I, "sell", 10, "85.10", client_order_id="c-part")
                assert r == {
                    **first["c-part"],
                    "order_status": "canceled",
                    "cum_qty": 4,
                    "leaves_qty": 0,
                    "replayed": True,
                }
                r = await b.place_order(I, "buy", 4, "85.10", client_order_id="c-fill")
                assert r == {**first["c-fill"], "replayed": True}
                with pytest.raises(ExchangeError) as e:
                    await b.place_order(I, "buy", 1, "50.00", client_order_id="c-band")
                assert e.value.code == "OUTSIDE_PRICE_BAND"
                after = await state(srv.port)
                assert (after["last_seq"], after["state_hash"]) == (
                    before["last_seq"],
                    before["state_hash"],
                )

        asyncio.run(retry())
    assert srv.kill(signal.SIGTERM) == 0
