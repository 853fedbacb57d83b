"""Readiness and order entry agree: while /readyz answers 503, no order is taken."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from exchange.client import ExchangeClient, ExchangeError

from test_server import I, POWER, running_server


async def _readyz(srv) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(srv.http + "/readyz") as r:
            return r.status


async def test_no_order_is_taken_while_readyz_is_503(tmp_path):
    from exchange.journal import RunnerFailed

    async with running_server(tmp_path) as srv:
        runner = srv.st.runner
        ex = srv.st.exchange
        async with ExchangeClient(srv.ws_url, POWER) as c:
            assert (await c.place_order(I, "sell", 1, "86.00"))["order_status"] == "new"
            assert await _readyz(srv) == 200

            def refuse(cmd):
                raise RunnerFailed("journal write failed: disk full")

            runner.submit_nowait = refuse  # one refused command...
            with pytest.raises(ExchangeError) as e:
                await c.place_order(I, "sell", 1, "86.01")
            assert e.value.code == "SHUTTING_DOWN"
            del runner.submit_nowait  # ... and the runner would take the next one again
            assert await _readyz(srv) == 503
            seq = ex.last_seq
            # /readyz says not ready: order entry says so too (it took orders before)
            for px in ("86.02", "86.03"):
                with pytest.raises(ExchangeError) as e:
                    await c.place_order(I, "sell", 1, px, client_order_id=f"r-{px}")
                assert e.value.code == "SHUTTING_DOWN"
                assert "disk full" in e.value.message
            with pytest.raises(ExchangeError) as e:
                await c.request("amend_order", {"order_id": 1, "qty": 2})
            assert e.value.code == "SHUTTING_DOWN"
            assert ex.last_seq == seq  # nothing reached the core
            assert (await c.ping())["pong"]  # the connection stays up for reads


async def test_shutdown_refuses_orders_first_and_still_cancels_on_disconnect(tmp_path):
    async with running_server(tmp_path) as srv:
        gw = srv.st.gateway
        ex = srv.st.exchange
        async with ExchangeClient(srv.ws_url, POWER, cancel_on_disconnect=True) as c:
            r = await c.place_order(I, "sell", 1, "86.00")
            acct = ex.accounts["POWER1"]
            assert r["order_id"] in acct.orders
            srv.st.ready = False  # what on_shutdown does, then gw.shutdown()
            job = asyncio.ensure_future(gw.shutdown())
            await asyncio.sleep(0)  # shutdown has begun: its cancels are on their way
            assert not gw.accepting and await _readyz(srv) == 503
            await job
            # the server's own cancel-on-disconnect went through although clients' cannot
            assert r["order_id"] not in acct.orders
