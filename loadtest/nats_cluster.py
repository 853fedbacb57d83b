"""A throw-away NATS JetStream cluster on loopback ports, started from the ``nats-server``
binary (Debian's package) with a store directory per node under a temporary directory.

    with NatsCluster(tmp_path, nodes=3) as c:
        url = c.journal_url("MARKET", replicas=3)   # nats://127.0.0.1:p1,...,p3/MARKET?replicas=3
        c.kill(0)            # SIGKILL node 0 (its store stays)
        c.start_node(0)      # and bring it back on the same ports and store

Each node is configured so that an acknowledged append is durable on a majority:
``sync_interval: always`` (fsync every write) where the binary knows the option (nats-server
2.10 and later); older servers refuse the option, and then run without it
(``NatsCluster.sync_always`` says which).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.access(p, os.X_OK)),
        None,
    )


def server_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def free_ports(n: int, lo: int = 20000, hi: int = 32000) -> list[int]:
    """``n`` free loopback ports below the kernel's ephemeral range (32768 and up on
    Linux). A port handed out by ``bind(0)`` - or ``serve --port 0`` - is reused by the
    next process that asks once it is free: a node killed by a test could have its port
    taken by another test's server, and a client failing over to that address would talk
    to a stranger (it happened: a demo-market server of another test acknowledged orders
    meant for a killed leader)."""
    import random

    rng = random.SystemRandom()
    socks, ports = [], []
    while len(ports) < n:
        p = rng.randrange(lo, hi)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            s.close()
            continue
        socks.append(s)
        ports.append(p)
    for s in socks:
        s.close()
    return ports


def _run_in_thread(coro_fn):
    """``asyncio.run(coro_fn())`` in a thread of its own: callers may be on a running loop."""
    import asyncio
    import threading

    out: list = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(coro_fn())), daemon=True)
    t.start()
    t.join(30)
    return out[0] if out else False


class NatsCluster:
    def __init__(self, base: Path, nodes: int = 3, name: str = "exchange-test"):
        self.binary = nats_server_binary()
        if self.binary is None:
            raise FileNotFoundError("nats-server binary not found")
        self.version = server_version(self.binary)
        self.sync_always = self.version >= (2, 10, 0)
        self.base = Path(base)
        self.n = nodes
        self.name = name
        ports = free_ports(2 * nodes)
        self.client_ports, self.route_ports = ports[:nodes], ports[nodes:]
        self.procs: list[subprocess.Popen | None] = [None] * nodes

    def config(self, i: int) -> Path:
        routes = ", ".join(
            f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i
        )
        store = self.base / f"n{i}" / "store"
        store.mkdir(parents=True, exist_ok=True)
        sync = "  sync_interval: always\n" if self.sync_always else ""
        text = (
            f"server_name: n{i}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
            f'jetstream {{\n  store_dir: "{store}"\n{sync}}}\n'
        )
        if self.n > 1:
            text += (
                f"cluster {{\n  name: {self.name}\n"
                f"  listen: 127.0.0.1:{self.route_ports[i]}\n  routes: [{routes}]\n}}\n"
            )
        path = self.base / f"n{i}" / "nats.conf"
        path.write_text(text)
        return path

    def start_node(self, i: int) -> None:
        conf = self.config(i)
        log = open(self.base / f"n{i}" / "server.log", "ab")
        self.procs[i] = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def start(self, timeout: float = 30.0) -> "NatsCluster":
        for i in range(self.n):
            self.start_node(i)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running node accepts connections and JetStream has a meta leader
        (an account info request answers)."""
        import nats

        async def ready() -> bool:
            try:
                nc = await nats.connect(
                    self.urls(), connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0
                )
            except Exception:
                return False
            try:
                await nc.jetstream(timeout=1).account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(
                        f"nats-server n{i} exited ({p.returncode}):\n" + self.log(i)[-2000:]
                    )
            if _run_in_thread(ready):
                return
            time.sleep(0.3)
        raise RuntimeError("NATS cluster not ready:\n" + self.log(0)[-2000:])

    def log(self, i: int) -> str:
        try:
            return (self.base / f"n{i}" / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def urls(self, only: list[int] | None = None) -> list[str]:
        return [
            f"nats://127.0.0.1:{p}"
            for i, p in enumerate(self.client_ports)
            if only is None or i in only
        ]

    def journal_url(self, stream: str, replicas: int | None = None) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.client_ports)
        q = f"?replicas={replicas}" if replicas else ""
        return f"nats://{hosts}/{stream}{q}"

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                p.wait(20)

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a stopped node cannot act on SIGTERM
                p.terminate()
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
