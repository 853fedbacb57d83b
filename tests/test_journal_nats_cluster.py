"""The JetStream journal on a three-node cluster that the test starts itself (nats-server on
free loopback ports, a store directory per node, ``sync_interval: always`` where the binary
knows it): an R3 stream keeps every acknowledged command through the death of its stream
leader, and a real ``serve --journal nats://...`` loses no acknowledged order to SIGKILL,
restarted on the two surviving nodes. Skipped when the nats-server binary is missing
(``.ci/run`` installs Debian's package)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from exchange.client import ExchangeClient
from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, open_journal
from loadtest.nats_cluster import NatsCluster, nats_server_binary
from services import unavailable
from test_journal import clock_from, full_replay_hash, stream_commands
from test_server_restart import ServerProcess, state

pytestmark = pytest.mark.slow
I = "CEA-2026"


@pytest.fixture
def cluster(tmp_path):
    if nats_server_binary() is None:
        unavailable("nats-server", "binary not found (apt-get install nats-server)")
    c = NatsCluster(tmp_path / "nats", nodes=3)
    c.start()
    yield c
    c.stop()


async def _leader(url: str) -> str:
    j = open_journal(url)
    await j.open()
    try:
        for _ in range(50):
            info = await j.stream_info()
            if info.cluster and info.cluster.leader:
                return info.cluster.leader
            await asyncio.sleep(0.2)
        raise AssertionError("stream has no leader")
    finally:
        await j.close()


async def test_r3_stream_keeps_acknowledged_commands_when_its_leader_dies(cluster):
    url = cluster.journal_url("CLUSTERED", replicas=3)
    cmds = stream_commands(900, seed=21)
    r = CoreRunner(
        build_exchange(), open_journal(url), snapshot_every_commands=300, clock=clock_from()
    )
    await r.start()
    info = await r.journal.stream_info()
    assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
    half = len(cmds) // 2
    for c in cmds[:half]:
        await r.submit(c)
    leader = await _leader(url)
    cluster.kill(int(leader[1:]))  # SIGKILL the stream's leader: the others elect one
    for c in cmds[half:]:  # appends ride out the election (append_timeout)
        await r.submit(c)
    live, last = r.exchange.state_hash(), r.exchange.last_seq
    await r.stop(snapshot=False)
    assert await _leader(url) != leader
    cluster.start_node(int(leader[1:]))
    cluster.wait_ready()
    full, n = await full_replay_hash(open_journal(url))
    assert n == last and full == live
    r2 = CoreRunner(build_exchange(), open_journal(url))
    await r2.start()
    assert r2.recovery["snapshot_seq"] > 0 and r2.exchange.state_hash() == live
    await r2.stop(snapshot=False)


def test_serve_on_the_cluster_loses_no_acknowledged_order(cluster, tmp_path):
    url = cluster.journal_url("SERVED", replicas=3)
    srv = ServerProcess(tmp_path / "data", extra=["--journal", url])
    try:
        srv.start(timeout=60)
        out = "".join(srv.output)
        assert "New market built" in out and "/SERVED" in out, out

        async def place(cid: str, price: str):
            async with ExchangeClient(srv.ws_url, "demo-key-power1") as a:
                ack = await a.place_order(I, "sell", 3, price, client_order_id=cid)
                return ack, await state(srv.port)

        ack1, st1 = asyncio.run(place("js-1", "88.80"))
        assert srv.kill(signal.SIGKILL) == -signal.SIGKILL
        leader = asyncio.run(_leader(url))
        cluster.kill(int(leader[1:]))  # and the stream's leader node with it

        srv.start(timeout=60)  # on the two nodes left
        assert "Recovered from nats://" in "".join(srv.output[-12:]), srv.output[-12:]
        ack2, st2 = asyncio.run(place("js-2", "88.90"))
        assert st2["last_seq"] > st1["last_seq"]
        assert srv.kill(signal.SIGKILL) == -signal.SIGKILL

        srv.start(timeout=60)

        async def check():
            st3 = await state(srv.port)
            assert st3["state_hash"] == st2["state_hash"]
            async with ExchangeClient(srv.ws_url, "demo-key-power1") as a:
                live = {o["order_id"]: o for o in await a.open_orders()}
            assert live[ack1["order_id"]]["client_order_id"] == "js-1"
            assert live[ack2["order_id"]]["client_order_id"] == "js-2"

        asyncio.run(check())
        assert srv.kill(signal.SIGTERM) == 0
    finally:
        if srv.proc and srv.proc.poll() is None:
            srv.kill()
