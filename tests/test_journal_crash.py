"""Crash test with real processes: a child applies a seeded command stream through CoreRunner
with the SQLite journal and prints every acknowledged seq; it is SIGKILLed at a random moment
(during start-up recovery, mid-batch, mid-snapshot, ...), again and again on the same journal.
After every kill: each acknowledged command is in the log, the recovered state (snapshot +
replay) equals a fresh full replay of the log, and the core's invariants hold."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from exchange.engine import build_exchange
from exchange.journal import CoreRunner, open_journal, replay_into

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("JOURNAL_CRASH_RUNS", "10"))

CHILD = r"""
import asyncio, os, sys
from exchange.engine import build_exchange
from exchange.journal import CoreRunner, open_journal
from loadtest.streams import core_commands, generate, market_setup_commands

path, run = sys.argv[1], int(sys.argv[2])

def out(line):
    os.write(1, (line + "\n").encode())

async def main():
    r = CoreRunner(build_exchange(), open_journal(path), snapshot_every_commands=700)
    await r.start()
    st = generate(3000, seed=1000 + run)
    if r.is_empty:
        for c in market_setup_commands(st):
            await r.submit(c)
            out(f"ack {c.seq} {c.TYPE}")
    out(f"ready {r.exchange.last_seq}")
    cmds = core_commands(st)

    async def client(k):
        for c in cmds[k::16]:
            await r.submit(c)
            out(f"ack {c.seq} {c.TYPE}")
    await asyncio.gather(*(client(k) for k in range(16)))
    out("done")
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _acks(text: str) -> list[tuple[int, str]]:
    out = []
    for line in text.splitlines():
        if line.startswith("ack "):
            parts = line.split()
            if len(parts) == 3:  # the very last line may be cut by the kill
                out.append((int(parts[1]), parts[2]))
    return out


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path):
    path = str(tmp_path / "crash.sqlite")
    rng = random.Random(20261122)
    acked: dict[int, str] = {}
    kills_after_ready = 0
    for run in range(RUNS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, path, str(run)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.4))
        child.send_signal(signal.SIGKILL)
        stdout, stderr = child.communicate(timeout=30)
        text = stdout.decode()
        assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
        kills_after_ready += "ready" in text
        for seq, typ in _acks(text):
            acked[seq] = typ

        # restart: recover exactly as the server does
        r = CoreRunner(build_exchange(), open_journal(path))
        await r.start()
        recovered = r.exchange.state_hash()
        last = r.exchange.last_seq
        r.exchange.check_invariants()
        await r.stop(snapshot=False)
        print(f"run {run}: {len(_acks(text))} acks, log {last}, recovered from snapshot "
              f"{r.recovery['snapshot_seq']} + {r.recovery['replayed']}, "
              f"truncated {r.recovery['truncated']}")

        j = open_journal(path)
        await j.open()
        try:
            types = {}
            async for seq, _ts, d in j.read(1):
                types[seq] = d["type"]
            assert len(types) == last
            missing = [s for s in acked if types.get(s) != acked[s]]
            assert not missing, f"run {run}: acknowledged commands lost: {missing[:10]}"
            ex = build_exchange()
            await replay_into(ex, j, 1)
            ex.check_invariants()
            assert ex.state_hash() == recovered, f"run {run}: recovery != full replay"
        finally:
            await j.close()
    assert acked and kills_after_ready >= RUNS // 2
