"""A real server process, killed with SIGKILL and restarted: every acknowledged order is back."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from exchange.client import ExchangeClient

ROOT = Path(__file__).resolve().parent.parent
I = "CEA-2026"


class ServerProcess:
    def __init__(self, data_dir: Path, extra: list[str] | None = None):
        self.data_dir = data_dir
        self.extra = list(extra or [])  # more `serve` arguments (--journal, --config)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.output: list[str] = []

    def start(self, timeout: float = 30.0, new_group: bool = False) -> None:
        """``new_group``: in a process group of its own, as a terminal runs a command, so that
        ``kill_group`` reaches it the way Ctrl-C does (the whole foreground group)."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                *self.extra,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            process_group=0 if new_group else None,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = re.match(r"listening on [\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def kill(self, sig=signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(20)
        self.output.extend(self.proc.stdout.readlines())
        return rc

    def kill_group(self, sig=signal.SIGINT) -> int:
        os.killpg(self.proc.pid, sig)
        rc = self.proc.wait(20)
        self.output.extend(self.proc.stdout.readlines())
        return rc


async def state(port: int) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"http://127.0.0.1:{port}/api/v1/state",
            headers={"Authorization": "Bearer operator-demo-key"},
        ) as r:
            return await r.json()


def test_restart_keeps_every_acknowledged_order(tmp_path):
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    out = "".join(srv.output)
    assert "demo-key-power1" in out and "operator-demo-key" in out  # keys printed on start-up

    async def trade():
        async with (
            ExchangeClient(srv.ws_url, "demo-key-power1") as a,
            ExchangeClient(srv.ws_url, "demo-key-cement1") as b,
        ):
            acks = []
            calls = [
                (
                    "place_order",
                    {
                        "instrument": I,
                        "side": "sell",
                        "qty": 2,
                        "price": f"{86 + (i % 50) / 100:.2f}",
                        "client_order_id": f"r-{i}",
                    },
                )
                for i in range(300)
            ]
            acks += await a.send_batch(calls)
            acks += await b.send_batch(
                [
                    (
                        "place_order",
                        {
                            "instrument": I,
                            "side": "buy",
                            "qty": 3,
                            "price": "86.10",
                            "client_order_id": f"t-{i}",
                        },
                    )
                    for i in range(40)
                ]
            )
            assert all(isinstance(x, dict) for x in acks), acks[:3]
            live = {o["order_id"]: o for o in await a.open_orders()}
            live.update({o["order_id"]: o for o in await b.open_orders()})
            return acks, live, await state(srv.port)

    acks, live_before, st_before = asyncio.run(trade())
    assert srv.kill(signal.SIGKILL) == -signal.SIGKILL

    srv.start()
    assert "Recovered from" in "".join(srv.output[-12:])

    async def check():
        st_after = await state(srv.port)
        assert st_after["last_seq"] == st_before["last_seq"]
        assert st_after["state_hash"] == st_before["state_hash"]
        async with (
            ExchangeClient(srv.ws_url, "demo-key-power1") as a,
            ExchangeClient(srv.ws_url, "demo-key-cement1") as b,
        ):
            live = {o["order_id"]: o for o in await a.open_orders()}
            live.update({o["order_id"]: o for o in await b.open_orders()})
            assert live == live_before
            for ack in acks:  # every acknowledged order is either still working or done
                if ack["leaves_qty"]:
                    assert ack["order_id"] in live or ack["client_order_id"].startswith("r-")
            # a retry of a still-working order after the restart is not a second order
            resting = next(o for o in live.values() if o["client_order_id"].startswith("r-"))
            again = await a.place_order(
                I, "sell", 2, resting["price"], client_order_id=resting["client_order_id"]
            )
            assert again["order_id"] == resting["order_id"] and again["replayed"]
            # and the market keeps trading
            r = await b.place_order(I, "buy", 1, "86.49")
            assert r["order_status"] == "filled"

    asyncio.run(check())
    assert srv.kill(signal.SIGTERM) == 0
    assert "stopped at seq" in "".join(srv.output)


def test_ctrl_c_stops_gracefully_with_a_final_snapshot(tmp_path):
    """Ctrl-C signals the terminal's whole foreground process group. The journal's writer
    process must not die of it before the server has flushed and written its final snapshot
    (it runs in a group of its own; it still dies with the server, PR_SET_PDEATHSIG)."""
    srv = ServerProcess(tmp_path / "data")
    srv.start(new_group=True)

    async def order():
        async with ExchangeClient(srv.ws_url, "demo-key-power1") as a:
            return await a.place_order(I, "sell", 1, "86.20", client_order_id="c-1")

    ack = asyncio.run(order())
    assert srv.kill_group(signal.SIGINT) == 0
    out = "".join(srv.output)
    assert "journal write failed" not in out and "Traceback" not in out, out[-2000:]
    m = re.search(r"stopped at seq (\d+)", out)
    assert m and int(m.group(1)) > ack["seq"]
    srv.start()
    recovered = "".join(srv.output[-12:])
    assert f"snapshot seq {m.group(1)}, 0 commands replayed" in recovered, recovered
    assert srv.kill(signal.SIGTERM) == 0
