"""``serve --standby`` on a JetStream journal: two real server processes share one stream
and its leader lease. The leader is SIGKILLed: the standby takes the lease after its ttl,
recovers and serves every acknowledged order. A leader that is SIGSTOPped past its lease
and then resumed steps down (exit 3) - the new leader's first append moved the stream, so
the old one could not append even if it tried - and nothing is lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from exchange.client import ExchangeClient, ExchangeError
from loadtest.nats_cluster import free_ports
from test_server_restart import ROOT, state

pytestmark = pytest.mark.slow
I = "CEA-2026"


class Node:
    """A ``serve --standby`` process whose output is collected by a thread."""

    def __init__(self, tmp_path, url: str, name: str, ttl: float = 2.0):
        self.name = name
        self.lines: list[str] = []
        # not --port 0: a killed node's ephemeral port can go to another test's server
        # while the failing-over client still tries that address
        port = free_ports(1)[0]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "data"),
                "--journal",
                url,
                "--standby",
                "--node-id",
                name,
                "--lease-ttl",
                str(ttl),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None and not any(re.search(pattern, x) for x in self.lines):
                time.sleep(0.2)  # the reader may still be draining
                if not any(re.search(pattern, x) for x in self.lines):
                    break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {pattern!r} in:\n" + "".join(self.lines[-40:]))

    @property
    def port(self) -> int:
        return int(self.wait_for(r"listening on [\d.]+:(\d+)").group(1))

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


async def _place(port: int, cid: str, price: str) -> dict:
    async with ExchangeClient(f"ws://127.0.0.1:{port}/ws", "demo-key-power1") as a:
        return await a.place_order(I, "sell", 3, price, client_order_id=cid)


async def _orders(port: int) -> dict:
    async with ExchangeClient(f"ws://127.0.0.1:{port}/ws", "demo-key-power1") as a:
        return {o["client_order_id"]: o for o in await a.open_orders()}


async def _drop(url: str) -> None:
    from exchange.journal import open_journal
    from exchange.journal.lease import LeaderLease

    j = open_journal(url)
    await j.open()
    try:
        await j.drop()
        await j._js.delete_key_value(LeaderLease(url, node="x").bucket)
    except Exception:
        pass
    finally:
        await j.close()


def test_standby_takes_over_and_a_resumed_leader_steps_down(tmp_path, nats_url):
    url = f"{nats_url}/fo_{uuid.uuid4().hex[:12]}"
    nodes: list[Node] = []
    try:
        a = Node(tmp_path, url, "a")
        nodes.append(a)
        a.wait_for("took the leader lease")
        pa = a.port
        b = Node(tmp_path, url, "b")
        nodes.append(b)
        m = b.wait_for(
            r"waiting for the leader lease.*leader now: a (\S+); answering "
            r"NOT_LEADER on [\d.]+:(\d+)"
        )
        assert m.group(1) == f"ws://127.0.0.1:{pa}/ws"  # the lease names the leader
        pb_standby = int(m.group(2))
        ack1 = asyncio.run(_place(pa, "fo-1", "88.80"))
        st1 = asyncio.run(state(pa))

        async def ask_standby():
            with pytest.raises(ExchangeError) as e:
                await _place(pb_standby, "fo-x", "88.70")
            return e.value

        e = asyncio.run(ask_standby())
        assert e.code == "NOT_LEADER" and e.leader == f"ws://127.0.0.1:{pa}/ws"

        # a client given both nodes places orders throughout; the leader dies, the standby
        # takes the lease once its ttl ran out, the client follows it
        urls = [f"ws://127.0.0.1:{pb_standby}/ws", f"ws://127.0.0.1:{pa}/ws"]
        acks: dict = {}

        async def trade_through_failover():
            async with ExchangeClient(urls, "demo-key-power1", reconnect=True, timeout=30) as c:
                assert c.url.endswith(f":{pa}/ws")  # followed NOT_LEADER to the leader
                for i in range(40):
                    if i == 10:
                        a.signal(signal.SIGKILL)
                    cid = f"fo-c{i}"
                    acks[cid] = await c.place_order(I, "sell", 1, "89.00", client_order_id=cid)
                return c.failover_retries, c.url

        t0 = time.monotonic()
        retries, now_at = asyncio.run(trade_through_failover())
        pb = b.port
        assert pb == pb_standby and now_at.endswith(f":{pb}/ws")
        failover_s = time.monotonic() - t0
        live = asyncio.run(_orders(pb))
        assert live["fo-1"]["order_id"] == ack1["order_id"]
        lost = [
            cid for cid, ack in acks.items() if live.get(cid, {}).get("order_id") != ack["order_id"]
        ]
        assert len(acks) == 40 and not lost, lost
        assert asyncio.run(state(pb))["last_seq"] > st1["last_seq"]
        # the standby had followed the stream: it continued that core, no snapshot loaded
        took = b.wait_for(r"took the leader lease.*continuing the followed core at seq (\d+)")
        assert int(took.group(1)) >= st1["last_seq"]
        assert "Recovered from nats://" in "".join(b.lines)
        print(
            f"failover after SIGKILL: 40 orders acknowledged in {failover_s:.1f} s, "
            f"{retries} retries, none lost"
        )
        assert retries > 0 and failover_s < 30

        # the new leader is stopped past its lease; a new standby takes over
        c = Node(tmp_path, url, "c")
        nodes.append(c)
        c.wait_for("waiting for the leader lease.*leader now: b")
        b.signal(signal.SIGSTOP)
        pc = c.port
        ack2 = asyncio.run(_place(pc, "fo-2", "88.90"))
        b.signal(signal.SIGCONT)  # it wakes up: its lease ran out, and the stream moved on
        b.wait_for("no longer leader", timeout=30)
        assert b.proc.wait(30) == 3
        live = asyncio.run(_orders(pc))
        assert live["fo-1"]["order_id"] == ack1["order_id"]
        assert live["fo-2"]["order_id"] == ack2["order_id"]
        c.signal(signal.SIGTERM)
        assert c.proc.wait(30) == 0
    finally:
        for n in nodes:
            n.stop()
        asyncio.run(_drop(url))
