"""The Python client against the real server: local books, gap resync, reconnect."""

from __future__ import annotations

import pytest

from exchange.client import ExchangeClient, ExchangeError, LocalBook
from test_server import CEMENT, I, POWER, STEEL, eventually, running_server


def test_local_book_applies_in_order_and_detects_gaps():
    b = LocalBook(I, "main")
    b.load({"book_seq": 5, "bids": [["85.00", 10]], "asks": [["86.00", 5]]})
    assert b.apply(5, [["buy", "85.00", 99]])  # already in the snapshot: ignored
    assert b.bids() == [["85.00", 10]]
    assert b.apply(6, [["buy", "85.10", 3], ["sell", "86.00", 0]])
    assert b.bids() == [["85.10", 3], ["85.00", 10]] and b.asks() == []
    assert not b.apply(8, [["buy", "1.00", 1]])  # gap: nothing applied
    assert b.book_seq == 6 and len(b.bids()) == 2


@pytest.fixture
async def server(tmp_path):
    async with running_server(tmp_path) as srv:
        yield srv


def server_book(srv, segment="main"):
    from exchange.server.protocol import wire_depth

    d = wire_depth(srv.st.exchange.books[(I, segment)])
    return d["book_seq"], d["bids"], d["asks"]


async def test_gap_triggers_resubscribe_and_fresh_snapshot(server):
    async with (
        ExchangeClient(server.ws_url, STEEL) as watcher,
        ExchangeClient(server.ws_url, POWER) as trader,
    ):
        book = await watcher.subscribe_book(I)
        await trader.place_order(I, "sell", 5, "86.00")
        assert await eventually(lambda: book.book_seq == server_book(server)[0])
        # a push that skips sequence numbers (as if one were lost)
        watcher._dispatch(
            {
                "channel": f"book:{I}:main",
                "seq": book.book_seq + 3,
                "data": {"changes": [["buy", "1.00", 1]]},
            }
        )
        assert watcher.resyncs == 1
        await trader.place_order(I, "sell", 7, "86.20")
        seq, bids, asks = server_book(server)
        assert await eventually(lambda: book.book_seq == seq)
        assert book.bids() == bids and book.asks() == asks
        assert ["1.00", 1] not in book.bids()


async def test_reconnect_resubscribes_and_retry_is_idempotent(server):
    c = ExchangeClient(server.ws_url, CEMENT, reconnect=True)
    await c.connect()
    try:
        book = await c.subscribe_book(I)
        await c.subscribe("executions")
        first = await c.place_order(I, "buy", 10, "84.00", client_order_id="rc-1")
        # the server drops the connection
        gw = server.st.gateway
        for s in list(gw.sessions):
            s.kill(1011, "test drop")
        assert await eventually(lambda: c.reconnects == 1 and c.connected, 5)
        assert await eventually(lambda: f"book:{I}:main" in c.books, 5)
        # retry after reconnect: the same order, not a second one
        again = await c.place_order(I, "buy", 10, "84.00", client_order_id="rc-1")
        assert again["order_id"] == first["order_id"] and again["replayed"]
        # subscriptions were re-made: book updates and executions flow again
        async with ExchangeClient(server.ws_url, POWER) as other:
            await other.place_order(I, "sell", 3, "86.30")
        await c.place_order(I, "buy", 1, "84.01")
        seq, bids, asks = server_book(server)
        book = c.books[f"book:{I}:main"]
        assert await eventually(lambda: book.book_seq == seq)
        assert book.bids() == bids and book.asks() == asks
        _, _, er = await c.next_push("executions")
        assert er["account"] == "CEMENT1"
    finally:
        await c.close()


async def test_request_errors_are_exchange_errors(server):
    async with ExchangeClient(server.ws_url, POWER) as c:
        with pytest.raises(ExchangeError) as e:
            await c.place_order(I, "sell", 1, "85.001")
        assert e.value.code == "INVALID_PARAMS" and "two decimals" in e.value.message
        with pytest.raises(ExchangeError) as e:
            await c.subscribe("book:NOPE:main")
        assert e.value.code == "UNKNOWN_CHANNEL"
        with pytest.raises(ExchangeError) as e:
            await c.unsubscribe("executions")
        assert e.value.code == "NOT_SUBSCRIBED"
        with pytest.raises(ExchangeError) as e:
            await c.request("no_such_method")
        assert e.value.code == "UNKNOWN_METHOD"
