"""``python -m loadtest failover``: kill the leader under load and count what was lost.

    python -m loadtest failover --runs 5 --json out/failover.json [--fault leader]
                                [--rate 2000] [--lease-ttl 2]

Starts a three-node NATS cluster on loopback ports (``loadtest/nats_cluster.py``), then per
run two ``serve --standby`` nodes on a fresh R3 stream (one data directory: they share the
key-hashing secret) and load: the demo firms, one :class:`ExchangeClient` each, given both
nodes' URLs (``reconnect=True``), placing resting limit orders with unique
``client_order_id`` in an open loop at ``--rate``. At a random moment of the load the fault:

* ``leader``: SIGKILL the leader; the standby takes the lease after its ttl;
* ``nats-node``: SIGKILL the NATS server that leads the journal's stream (restarted after
  the run); the exchange rides out the stream's election;
* ``pause``: SIGSTOP the leader past its lease, then SIGCONT: the standby takes over, and
  the woken leader must step down (exit 3) without acknowledging anything the new leader
  does not hold.

The nodes run under a supervisor, as docs/DEPLOYMENT.md asks of a deployment (systemd
``Restart=always``): a node that steps down (exit 3) is restarted as a standby on its port
(``restarts`` in each run counts them). Without it, a NATS election that outlasts the lease's
ttl - both nodes fail to renew, so both step down - leaves no node serving.

After the load every acknowledged order must be resting on the final leader with the
``order_id`` it was acknowledged with (``acks_lost`` counts those that are not), and the
leader's live state hash must equal ``journal verify``'s replay of the stream
(``state_hash_equal``). ``failover_s``: from the fault to the first acknowledgement of an
order sent after it. The JSON holds every run and the summary.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMS = ["demo-key-power1", "demo-key-cement1", "demo-key-steel1", "demo-key-sme1", "demo-key-sme2"]
INSTRUMENT = "CEA-2026"


class Node:
    """A ``serve --standby`` process, its output read by a thread."""

    def __init__(self, url: str, name: str, data_dir: str, config: str, ttl: float):
        from .nats_cluster import free_ports

        self.name = name
        self.lines: list[str] = []
        # a fixed port outside the ephemeral range: after this node dies, no other
        # process's --port 0 gets its address while clients still try it
        self.port = free_ports(1)[0]
        self.cmd = [
            sys.executable,
            "-m",
            "exchange",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            data_dir,
            "--config",
            config,
            "--journal",
            url,
            "--standby",
            "--node-id",
            name,
            "--lease-ttl",
            str(ttl),
        ]
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        self.exits: list[int] = []  # the exit statuses of the incarnations restarted
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    def restart_if_stepped_down(self) -> bool:
        """The supervisor docs/DEPLOYMENT.md asks for (systemd ``Restart=always``): a node
        that stepped down (exit 3: its lease lapsed, e.g. through a NATS election longer
        than the ttl) comes back as a standby, on the same port and data directory."""
        if self.proc.poll() != 3:
            return False
        self.exits.append(3)
        self.lines.append(f"[loadtest] node {self.name} stepped down (exit 3): restarted\n")
        self._spawn()
        return True

    def stepped_down(self, timeout: float) -> bool:
        """Whether this node exited 3 (now or in an incarnation already restarted)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if 3 in self.exits or self.proc.poll() == 3:
                return True
            time.sleep(0.1)
        return False

    def wait_for(self, pattern: str, timeout: float = 90.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                time.sleep(0.3)
                for line in list(self.lines):
                    m = re.search(pattern, line)
                    if m:
                        return m
                break
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name}: no {pattern!r}:\n" + "".join(self.lines[-30:]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


async def _load(
    urls: list[str], rate: float, fault_at: float, after: float, fault, seed: int
) -> dict:
    from exchange.client import ExchangeClient, ExchangeError

    rng = random.Random(seed)
    clients = []
    for key in FIRMS:
        c = ExchangeClient(urls, key, reconnect=True, timeout=30)
        await c.connect()
        clients.append(c)
    acks: dict[str, tuple[str, int, float]] = {}  # cid -> (key, order_id, t_ack)
    sent: dict[str, float] = {}
    rejects: dict[str, str] = {}
    failed: dict[str, str] = {}
    detail: dict[str, tuple] = {}
    tasks: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()

    async def place(i: int, c, key: str) -> None:
        cid = f"f{seed}-{i}"
        side = "sell" if i % 2 else "buy"
        price = f"{rng.choice((88, 89)) if side == 'sell' else rng.choice((80, 81))}.00"
        sent[cid] = loop.time()
        try:
            r = await c.place_order(INSTRUMENT, side, 1, price, client_order_id=cid)
            acks[cid] = (key, r["order_id"], loop.time())
            detail[cid] = (c.url, r.get("seq"), r.get("replayed"), r.get("order_status"))
        except ExchangeError as e:
            rejects[cid] = e.code
        except Exception as e:
            failed[cid] = repr(e)

    t0 = loop.time()
    end = t0 + fault_at + after
    t_fault = None
    i = 0
    while True:
        now = loop.time()
        if now >= end:
            break
        if t_fault is None and now >= t0 + fault_at:
            t_fault = loop.time()
            await loop.run_in_executor(None, fault)
        due = int((now - t0) * rate)
        while i < due:
            k = i % len(clients)
            tasks.append(asyncio.create_task(place(i, clients[k], FIRMS[k])))
            i += 1
        await asyncio.sleep(0.002)
    load_s = loop.time() - t0
    await asyncio.wait(tasks, timeout=60) if tasks else None
    after_fault = [t for cid, (_k, _o, t) in acks.items() if sent[cid] >= t_fault]
    failover_s = (min(after_fault) - t_fault) if after_fault else None
    for c in clients:
        await c.close()
    return {
        "sent": i,
        "acks": acks,
        "detail": detail,
        "rejects": rejects,
        "failed": failed,
        "offered_per_s": i / load_s,
        "acked_per_s": len(acks) / load_s,
        "failover_s": failover_s,
    }


async def _resting(url: str) -> dict[str, tuple[str, int]]:
    from exchange.client import ExchangeClient

    out = {}
    for key in FIRMS:
        async with ExchangeClient(url, key, timeout=30) as c:
            for o in await c.open_orders():
                if o.get("client_order_id"):
                    out[o["client_order_id"]] = (key, o["order_id"])
    return out


async def _state_hash(port: int) -> tuple[str, int]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"http://127.0.0.1:{port}/api/v1/state",
            headers={"Authorization": "Bearer operator-demo-key"},
        ) as r:
            st = await r.json()
            return st["state_hash"], st.get("last_seq")


def _verify_hash(url: str) -> tuple[str | None, str]:
    out = subprocess.run(
        [sys.executable, "-m", "exchange", "journal", "verify", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    lines = out.stdout.strip().splitlines() or [""]
    last = lines[-1]
    return (
        last.split()[1] if last.startswith("state_hash ") else None,
        " | ".join(x for x in lines if x.startswith(("records", "FAILED"))) + out.stderr[-300:],
    )


def one_run(cluster, run: int, a, base: str, config: str, rng: random.Random) -> dict:
    from exchange.journal.jetstream import JetStreamJournal  # noqa: F401 (the extra is there)

    stream = f"FO{run}_{uuid.uuid4().hex[:6]}"
    url = cluster.journal_url(stream, replicas=3)
    data = os.path.join(base, f"data-{run}")
    nodes = []
    res: dict = {"run": run, "fault": a.fault, "stream": stream}
    killed_nats = None
    stop_supervising = threading.Event()

    def supervise() -> None:
        while not stop_supervising.wait(0.2):
            for n in list(nodes):
                n.restart_if_stepped_down()

    threading.Thread(target=supervise, name="supervisor", daemon=True).start()
    try:
        first = Node(url, "a", data, config, a.lease_ttl)
        nodes.append(first)
        first.wait_for("took the leader lease")
        pa = int(first.wait_for(r"listening on [\d.]+:(\d+)").group(1))
        second = Node(url, "b", data, config, a.lease_ttl)
        nodes.append(second)
        pb = int(second.wait_for(r"answering NOT_LEADER on [\d.]+:(\d+)").group(1))
        urls = [f"ws://127.0.0.1:{pa}/ws", f"ws://127.0.0.1:{pb}/ws"]

        def fault() -> None:
            nonlocal killed_nats
            if a.fault == "leader":
                first.proc.send_signal(signal.SIGKILL)
            elif a.fault == "pause":
                first.proc.send_signal(signal.SIGSTOP)
                threading.Timer(
                    a.lease_ttl + 2.0, lambda: first.proc.send_signal(signal.SIGCONT)
                ).start()
            else:
                leader = asyncio.run(_stream_leader(url))
                killed_nats = int(leader[1:])
                cluster.kill(killed_nats)

        fault_at = a.before + rng.uniform(0.0, 1.0)
        load = asyncio.run(_load(urls, a.rate, fault_at, a.after, fault, seed=run))
        if killed_nats is not None:  # verify on a healed cluster: reads need a leader too
            cluster.start_node(killed_nats)
            cluster.wait_ready()
            killed_nats = None
        try:
            final = asyncio.run(_leader_port(url, {"a": pa, "b": pb}))
        except Exception as e:
            final = None
            why = e
        if final is None:
            res.update(
                error=f"no leader after the run: {why!r}",
                **{f"node_{n.name}_exit": n.proc.poll() for n in nodes},
                **{f"node_{n.name}_tail": "".join(n.lines[-12:]) for n in nodes},
                acks=len(load["acks"]),
                acks_lost=None,
                state_hash_equal=False,
            )
            return res
        if a.fault == "pause":  # the woken leader must step down
            down = first.stepped_down(30)
            res["old_leader_exit"] = 3 if down else first.proc.poll()
            res["old_leader_stepped_down"] = down
        try:
            resting = asyncio.run(_resting(f"ws://127.0.0.1:{final}/ws"))
        except Exception as e:  # the node that should lead does not answer: say why
            res.update(
                error=f"final leader {final} unreachable: {e!r}",
                **{f"node_{n.name}_exit": n.proc.poll() for n in nodes},
                **{f"node_{n.name}_tail": "".join(n.lines[-8:]) for n in nodes},
                acks=len(load["acks"]),
                acks_lost=None,
                state_hash_equal=False,
            )
            return res
        lost = [
            cid for cid, (key, oid, _t) in load["acks"].items() if resting.get(cid) != (key, oid)
        ]
        live, live_seq = asyncio.run(_state_hash(final))
        replayed, verify_out = _verify_hash(url)
        res["live_last_seq"], res["verify"] = live_seq, verify_out
        res.update(
            sent=load["sent"],
            acks=len(load["acks"]),
            acks_lost=len(lost),
            lost_sample=lost[:10],
            lost_detail=[
                (cid, load["acks"][cid][1], resting.get(cid), load["detail"].get(cid))
                for cid in lost[:5]
            ],
            rejects=len(load["rejects"]),
            reject_codes=sorted(set(load["rejects"].values())),
            unacknowledged=len(load["failed"]),
            unacknowledged_sample=list(load["failed"].values())[:3],
            offered_per_s=round(load["offered_per_s"]),
            acked_per_s=round(load["acked_per_s"]),
            failover_s=None if load["failover_s"] is None else round(load["failover_s"], 3),
            state_hash_equal=live == replayed,
            fault_at_s=round(fault_at, 3),
            restarts={n.name: len(n.exits) for n in nodes},
        )
    finally:
        stop_supervising.set()
        for n in nodes:
            n.kill()
        if killed_nats is not None:
            cluster.start_node(killed_nats)
            cluster.wait_ready()
    return res


async def _leader_port(url: str, ports: dict, timeout: float = 60.0) -> int:
    """The port of the node that holds the lease and answers (a node may have stepped
    down: a NATS election longer than the lease's ttl makes a leader give it up)."""
    from exchange.client import ExchangeClient
    from exchange.journal.lease import LeaderLease

    lease = LeaderLease(url, node="loadtest")
    await lease.open()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    try:
        while True:
            h = await lease.holder() or {}
            port = ports.get(h.get("node", ""))
            if port:
                try:
                    async with ExchangeClient(
                        f"ws://127.0.0.1:{port}/ws", FIRMS[0], timeout=5
                    ) as c:
                        await c.ping()
                    return port
                except Exception:
                    pass
            if loop.time() > end:
                raise RuntimeError(f"no node leads after {timeout:g} s (lease: {h})")
            await asyncio.sleep(0.3)
    finally:
        await lease.close()


async def _stream_leader(url: str) -> str:
    from exchange.journal import open_journal

    j = open_journal(url)
    await j.open()
    try:
        return (await j.stream_info()).cluster.leader
    finally:
        await j.close()


def main(argv: list[str]) -> int:
    import argparse
    from .nats_cluster import NatsCluster, nats_server_binary

    p = argparse.ArgumentParser(
        prog="python -m loadtest failover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--fault", choices=("leader", "nats-node", "pause"), default="leader")
    p.add_argument("--rate", type=float, default=2000.0, help="offered orders per second")
    p.add_argument(
        "--before",
        type=float,
        default=2.0,
        help="seconds of load before the fault (plus up to 1 s at random)",
    )
    p.add_argument("--after", type=float, default=6.0, help="seconds of load after it")
    p.add_argument("--lease-ttl", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if nats_server_binary() is None:
        print("nats-server not found (apt-get install nats-server)", file=sys.stderr)
        return 2
    from exchange.app.config import default_config_text

    base = tempfile.mkdtemp(prefix="failover-")
    config = os.path.join(base, "exchange.toml")
    text = default_config_text()
    if "\n[server]" not in text:
        text += "\n[server]\n"
    text = text.replace(
        "\n[server]\n",
        "\n[server]\nrate_limit_per_second = 1000000\nrate_limit_burst = 1000000\n",
        1,
    )
    with open(config, "w") as f:
        f.write(text)
    rng = random.Random(a.seed)
    cluster = NatsCluster(os.path.join(base, "nats"), nodes=3).start()
    runs = []
    try:
        for run in range(a.runs):
            r = one_run(cluster, run, a, base, config, rng)
            runs.append(r)
            print(json.dumps(r), flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    fo = [r["failover_s"] for r in runs if r.get("failover_s") is not None]
    summary = {
        "fault": a.fault,
        "runs": len(runs),
        "rate_offered": a.rate,
        "acks": sum(r["acks"] for r in runs),
        "acks_lost": sum(r["acks_lost"] or 0 for r in runs),
        "runs_failed": sum(r.get("error") is not None for r in runs),
        "failover_s": fo,
        "failover_s_median": statistics.median(fo) if fo else None,
        "state_hash_equal": all(r["state_hash_equal"] for r in runs),
        "acked_per_s_median": statistics.median(r.get("acked_per_s", 0) for r in runs),
        "nats_server": ".".join(map(str, cluster.version)),
        "sync_interval_always": cluster.sync_always,
        "lease_ttl_s": a.lease_ttl,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    if a.fault == "pause":
        summary["old_leader_stepped_down"] = all(r.get("old_leader_stepped_down") for r in runs)
    print(json.dumps(summary, indent=1))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "runs": runs}, f, indent=1)
    ok = summary["acks_lost"] == 0 and summary["state_hash_equal"] and not summary["runs_failed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
