"""``serve --market-data`` on a JetStream journal: real processes on loopback - a leader
(``serve --standby``, the only node) and two market-data gateways following its stream -
and real websocket clients.

* The same update carries the same ``seq`` from either gateway, and the leader's book
  pushes are the gateways' (book_seq is replicated state).
* Book deltas arrive gap-free and in order; trades carry their trade ids.
* An order sent to a gateway reaches the leader, its acknowledgement and execution report
  are relayed.
* A gateway killed mid-stream: its client re-subscribes on the other gateway with the last
  seq it saw and is resumed without a gap; a restarted gateway answers a from_seq older
  than its start with a snapshot flagged ``resumed: false``.
"""

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

from exchange.client import ExchangeClient
from loadtest.nats_cluster import free_ports

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
I = "CEA-2026"
BOOK = f"book:{I}:main"
TRADES = f"trades:{I}"


class Proc:
    """A ``python -m exchange serve ...`` process whose output a thread collects."""

    def __init__(self, name: str, args: list[str]):
        self.name = name
        self.args = args
        self.lines: list[str] = []
        self.port = free_ports(1)[0]
        self.start()

    def start(self) -> None:
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exchange", "serve", "--port", str(self.port), *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc, lines) -> None:
        for line in proc.stdout:
            lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                time.sleep(0.3)
                if not any(re.search(pattern, x) for x in self.lines):
                    break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {pattern!r} in:\n" + "".join(self.lines[-40:]))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, nats_url):
    """A leader and two market-data gateways on one fresh stream."""
    tmp = tmp_path_factory.mktemp("md")
    url = f"{nats_url}/md_{uuid.uuid4().hex[:12]}"
    data = str(tmp / "data")  # one data directory: the nodes share the key-hashing secret
    procs: list[Proc] = []
    try:
        leader = Proc(
            "leader",
            [
                "--data-dir",
                data,
                "--journal",
                url,
                "--standby",
                "--node-id",
                "lead",
                "--lease-ttl",
                "3",
            ],
        )
        procs.append(leader)
        leader.wait_for(r"listening on")
        gws = []
        for n in ("g1", "g2"):
            g = Proc(
                n,
                [
                    "--data-dir",
                    data,
                    "--journal",
                    url,
                    "--market-data",
                    "--node-id",
                    n,
                    "--md-interval",
                    "0.02",
                ],
            )
            procs.append(g)
            gws.append(g)
        for g in gws:
            g.wait_for(r"listening on")
        yield {"url": url, "leader": leader, "gateways": gws, "data": data}
    finally:
        for p in procs:
            p.kill()
        asyncio.run(_drop(url))


async def _trade(leader_url: str, n: int, tag: str, pause: float = 0.0) -> None:
    """``n`` resting sells and ``n`` buys crossing them (book updates and trades), with
    ``pause`` seconds between pairs."""
    async with (
        ExchangeClient(leader_url, "demo-key-power1") as s,
        ExchangeClient(leader_url, "demo-key-cement1") as b,
    ):
        for i in range(n):
            await s.place_order(I, "sell", 2, "86.00", client_order_id=f"{tag}-s{i}")
            await b.place_order(I, "buy", 1, "86.00", client_order_id=f"{tag}-b{i}")
            await asyncio.sleep(pause)


async def _collect(c: ExchangeClient, channel: str, until, timeout: float = 20.0) -> list:
    """Pushes of ``channel`` until ``until(pushes)`` holds."""
    out: list = []
    end = asyncio.get_running_loop().time() + timeout
    while not until(out):
        left = end - asyncio.get_running_loop().time()
        assert left > 0, f"{channel}: only {[p[1] for p in out]}"
        out.append(await c.next_push(channel, timeout=left))
    return out


def test_same_seq_from_both_gateways_and_the_leader(cluster):
    g1, g2 = cluster["gateways"]
    leader = cluster["leader"]

    async def go():
        cs = [ExchangeClient(u, "verifier-demo-key") for u in (g1.url, g2.url, leader.url)]
        for c in cs:
            await c.connect()
        try:
            subs = [await c.subscribe(BOOK) for c in cs]
            book0 = subs[2]["seq"]
            # every subscriber starts from the same book state, whichever node it asked
            for r in subs[:2]:
                assert r["snapshot"]["book_seq"] <= book0
            trades0 = [(await c.subscribe(TRADES))["seq"] for c in cs]
            for c in cs[:2]:
                await c.subscribe(f"ticker:{I}")
            await _trade(leader.url, 5, "same")
            last_book = None

            def upto(target):
                return lambda ps: bool(ps) and ps[-1][1] >= target

            lead_book = await _collect(cs[2], BOOK, lambda ps: len(ps) >= 10)
            last_book = lead_book[-1][1]
            books = [await _collect(c, BOOK, upto(last_book)) for c in cs[:2]]
            trades = [await _collect(c, TRADES, lambda ps: len(ps) >= 5) for c in cs]
            await asyncio.sleep(0.3)
            tickers = [c.drain(f"ticker:{I}") for c in cs[:2]]
            return book0, trades0, lead_book, books, trades, tickers
        finally:
            for c in cs:
                await c.close()

    book0, trades0, lead_book, books, trades, tickers = asyncio.run(go())
    # the same updates, the same seqs, the same bodies - on both gateways and the leader
    tail = [p for p in books[0] if p[1] > book0]
    assert tail == [p for p in books[1] if p[1] > book0]
    assert [(s, d) for _c, s, d in tail] == [(s, d) for _c, s, d in lead_book]
    # gap-free and in order
    seqs = [s for _c, s, _d in tail]
    assert seqs == list(range(book0 + 1, book0 + 1 + len(seqs)))
    assert trades0[0] == trades0[1] == trades0[2]
    assert trades[0] == trades[1] == trades[2]  # the leader numbers trades alike
    ids = [s for _c, s, _d in trades[0]]
    assert ids == [d["trade_id"] for _c, _s, d in trades[0]]
    assert ids == list(range(trades0[0] + 1, trades0[0] + 6))  # one instrument trading
    # tickers: numbered by the journal seq of the command that changed them
    assert tickers[0] and tickers[0] == tickers[1]
    assert tickers[0][-1][2]["trades"] >= 5


def test_an_order_through_a_gateway_reaches_the_leader(cluster):
    g1 = cluster["gateways"][0]
    leader = cluster["leader"]

    async def go():
        async with ExchangeClient(g1.url, "demo-key-steel1") as c:
            assert c.auth_result["market_data"] is True
            await c.subscribe("executions")
            ack = await c.place_order(I, "sell", 7, "88.50", client_order_id="md-fwd-1")
            _ch, _seq, er = await c.next_push("executions", timeout=10)
            again = await c.place_order(I, "sell", 7, "88.50", client_order_id="md-fwd-1")
            mine = await c.open_orders()
        async with ExchangeClient(leader.url, "demo-key-steel1") as d:
            on_leader = {o["client_order_id"]: o for o in await d.open_orders()}
        return ack, er, again, mine, on_leader

    ack, er, again, mine, on_leader = asyncio.run(go())
    assert ack["order_status"] == "new" and ack["order_id"] > 0
    assert er["client_order_id"] == "md-fwd-1" and er["exec_type"] == "new"
    assert again["order_id"] == ack["order_id"] and again.get("replayed") is True
    assert on_leader["md-fwd-1"]["order_id"] == ack["order_id"]
    assert any(o["client_order_id"] == "md-fwd-1" for o in mine)


def test_a_client_resumes_on_the_other_gateway_when_one_dies(cluster):
    g1, g2 = cluster["gateways"]
    leader = cluster["leader"]

    async def go():
        c = ExchangeClient([g1.url, g2.url], "verifier-demo-key", reconnect=True, timeout=20)
        await c.connect()
        assert c.url == g1.url
        try:
            book = await c.subscribe_book(I)
            await c.subscribe(TRADES)
            trader = asyncio.create_task(_trade(leader.url, 20, "resume", pause=0.1))
            await _collect(c, BOOK, lambda ps: len(ps) >= 4)
            g1.kill()  # mid-stream: the orders go on
            await trader
            lead = ExchangeClient(leader.url, "verifier-demo-key")
            await lead.connect()
            final = (await lead.subscribe(BOOK))["snapshot"]
            await lead.close()
            end = asyncio.get_running_loop().time() + 20
            while book.book_seq < final["book_seq"] or c.reconnects < 1:
                assert asyncio.get_running_loop().time() < end, (book.book_seq, final)
                await asyncio.sleep(0.05)
            assert c.connected
            return (
                c.url,
                c.resumes,
                c.resume_snapshots,
                c.resyncs,
                book.depth(),
                final,
                c.drain(BOOK),
                c.drain(TRADES),
            )
        finally:
            await c.close()

    url, resumes, snapshots, resyncs, depth, final, pushes, trades = asyncio.run(go())
    assert url == g2.url
    assert resumes == 2 and snapshots == 0 and resyncs == 0  # book and trades resumed
    assert depth == {"bids": final["bids"], "asks": final["asks"]}
    seqs = [s for _c, s, _d in pushes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    ids = [s for _c, s, _d in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no trade missed over the switch

    # the killed gateway restarts: a from_seq from before its start is answered with a
    # snapshot that says so; a from_seq it can serve is resumed
    g1.start()
    g1.wait_for("listening on")

    async def again():
        async with (
            ExchangeClient(g1.url, "verifier-demo-key") as c,
            ExchangeClient(g1.url, "verifier-demo-key") as watch,
        ):
            old = await c.subscribe(BOOK, from_seq=1)
            await c.unsubscribe(BOOK)
            now = await c.subscribe(BOOK, from_seq=final["book_seq"])
            await c.unsubscribe(BOOK)
            # updates made while nobody is subscribed here are kept for a client that
            # resumes from before them
            await watch.subscribe(BOOK)
            await _trade(leader.url, 3, "ring")
            target = final["book_seq"] + 6
            seen = await _collect(watch, BOOK, lambda ps: bool(ps) and ps[-1][1] >= target)
            back = await c.subscribe(BOOK, from_seq=final["book_seq"])
            missed = await _collect(c, BOOK, lambda ps: len(ps) >= 6)
            return old, now, back, missed, seen

    old, now, back, missed, seen = asyncio.run(again())
    assert old["resumed"] is False and old["snapshot"]["book_seq"] >= final["book_seq"]
    assert now["resumed"] is True and now["seq"] == final["book_seq"]
    assert back == {"channel": BOOK, "seq": final["book_seq"], "resumed": True}
    assert [p[1] for p in missed] == list(range(final["book_seq"] + 1, final["book_seq"] + 7))
    assert missed == seen[-6:]


def test_readyz_and_metrics(cluster):
    import aiohttp

    g2 = cluster["gateways"][1]

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{g2.port}/readyz") as r:
                ready = (r.status, await r.json())
            async with s.get(f"http://127.0.0.1:{g2.port}/metrics") as r:
                text = await r.text()
        return ready, text

    (status, body), text = asyncio.run(go())
    assert status == 200 and body["role"] == "market-data" and body["last_seq"] > 0
    assert re.search(r"^exchange_md_messages_out_total [1-9]", text, re.M)
    assert re.search(r"^exchange_md_forwarded_requests_total \d", text, re.M)


def test_the_leader_flags_a_from_seq_subscribe_as_not_resumed(cluster):
    leader = cluster["leader"]

    async def go():
        async with ExchangeClient(leader.url, "verifier-demo-key") as c:
            plain = await c.subscribe(BOOK)
            await c.unsubscribe(BOOK)
            again = await c.subscribe(BOOK, from_seq=plain["seq"])
            return plain, again

    plain, again = asyncio.run(go())
    assert "resumed" not in plain
    assert again["resumed"] is False and again["snapshot"]["book_seq"] >= plain["seq"]


def test_a_gateway_checks_keys_and_channels(cluster):
    from exchange.client import ExchangeError

    g1 = cluster["gateways"][1]

    async def go():
        codes = []
        async with ExchangeClient(g1.url) as c:  # no key: nothing but auth and ping
            assert (await c.ping())["pong"] is True
            for call in (
                lambda: c.subscribe(BOOK),
                lambda: c.place_order(I, "buy", 1, "85.00"),
                lambda: c.request("auth", {"api_key": "not-a-key"}),
            ):
                with pytest.raises(ExchangeError) as e:
                    await call()
                codes.append(e.value.code)
        async with ExchangeClient(g1.url, "verifier-demo-key") as c:
            for ch in ("book:NOPE:main", "ticker:CEA-2026@main", "trades:NOPE"):
                with pytest.raises(ExchangeError) as e:
                    await c.subscribe(ch)
                codes.append(e.value.code)
            with pytest.raises(ExchangeError) as e:
                await c.request("subscribe", {"channel": BOOK, "from_seq": -1})
            codes.append(e.value.code)
        return codes

    assert asyncio.run(go()) == [
        "NOT_AUTHENTICATED",
        "NOT_AUTHENTICATED",
        "AUTH_FAILED",
        "UNKNOWN_CHANNEL",
        "UNKNOWN_CHANNEL",
        "UNKNOWN_CHANNEL",
        "INVALID_PARAMS",
    ]
