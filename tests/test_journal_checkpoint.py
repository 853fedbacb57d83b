"""A signed checkpoint of the chain head, kept outside the journal: (seq, chain hash, HMAC
with a key that is not in the journal) written at every snapshot and on shutdown. A start
that finds the journal behind the checkpoint (its tail cut off) or diverging from it (the
chain rewritten from some record on, every hash recomputed) refuses; so does a checkpoint
whose HMAC is wrong."""

from __future__ import annotations

import json
import sqlite3

import pytest

from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, JournalCorruptError, open_journal
from exchange.journal.base import record_hash
from test_journal import clock_from, stream_commands


def _runner(path, cp, key, **kw):
    from exchange.journal.checkpoint import Checkpoint

    return CoreRunner(
        build_exchange(),
        open_journal(path),
        clock=clock_from(),
        checkpoint=Checkpoint(cp, key),
        **kw,
    )


async def _log(tmp_path, key=b"k" * 32):
    path, cp = str(tmp_path / "j.sqlite"), str(tmp_path / "keys" / "journal.checkpoint")
    r = _runner(path, cp, key, snapshot_every_commands=200)
    await r.start()
    for c in stream_commands(400):
        await r.submit(c)
    await r.stop()
    return path, cp, r.exchange.last_seq


async def test_checkpoint_written_on_snapshot_and_shutdown(tmp_path):
    path, cp, last = await _log(tmp_path)
    d = json.loads(open(cp).read())
    con = sqlite3.connect(path)
    (h,) = con.execute("SELECT hash FROM journal WHERE seq=?", (last,)).fetchone()
    con.close()
    assert d["seq"] == last and d["hash"] == h.hex() and len(d["mac"]) == 64
    r = _runner(path, cp, b"k" * 32)
    await r.start()  # an honest journal at the checkpoint starts
    assert r.recovery["checkpoint_seq"] == last
    await r.stop(snapshot=False)


async def test_journal_behind_the_checkpoint_refuses(tmp_path):
    path, cp, last = await _log(tmp_path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM journal WHERE seq > ?", (last - 5,))
    con.execute("DELETE FROM snapshots WHERE seq > ?", (last - 5,))
    con.commit()
    con.close()
    with pytest.raises(JournalCorruptError, match="behind") as ei:
        await _runner(path, cp, b"k" * 32).start()
    assert ei.value.seq == last - 4


async def test_rewritten_chain_diverges_from_the_checkpoint(tmp_path):
    path, cp, last = await _log(tmp_path)
    bad = last - 50
    con = sqlite3.connect(path)
    rows = con.execute(
        "SELECT seq, ts, payload FROM journal WHERE seq >= ? ORDER BY seq", (bad,)
    ).fetchall()
    (prev,) = con.execute("SELECT hash FROM journal WHERE seq=?", (bad - 1,)).fetchone()
    for seq, ts, p in rows:  # change one record and rehash everything after it: a valid chain
        if seq == bad:
            p = p.replace(b",", b", ", 1)
        prev = record_hash(prev, seq, ts, p)
        con.execute("UPDATE journal SET payload=?, hash=? WHERE seq=?", (p, prev, seq))
    con.execute("DELETE FROM snapshots WHERE seq >= ?", (bad,))
    con.commit()
    con.close()
    with pytest.raises(JournalCorruptError, match="diverges") as ei:
        await _runner(path, cp, b"k" * 32).start()
    assert ei.value.seq == last


async def test_forged_checkpoint_or_wrong_key_refuses(tmp_path):
    path, cp, last = await _log(tmp_path)
    d = json.loads(open(cp).read())
    d["seq"] -= 10
    open(cp, "w").write(json.dumps(d))
    with pytest.raises(JournalCorruptError, match="checkpoint"):
        await _runner(path, cp, b"k" * 32).start()
    path2, cp2, _ = await _log(tmp_path / "b")
    with pytest.raises(JournalCorruptError, match="checkpoint"):
        await _runner(path2, cp2, b"x" * 32).start()


def test_server_refuses_a_journal_cut_behind_its_checkpoint(tmp_path):
    import asyncio
    import signal
    import subprocess
    import sys
    from exchange.client import ExchangeClient
    from test_server_restart import ROOT, ServerProcess

    key = tmp_path / "secret" / "checkpoint.key"
    key.parent.mkdir()
    key.write_bytes(b"s" * 32)
    data = tmp_path / "data"
    srv = ServerProcess(data, extra=["--checkpoint-key-file", str(key)])
    srv.start()

    async def order():
        async with ExchangeClient(srv.ws_url, "demo-key-power1") as a:
            return await a.place_order("CEA-2026", "sell", 1, "86.20", client_order_id="c-1")

    ack = asyncio.run(order())
    assert srv.kill(signal.SIGTERM) == 0
    d = json.loads((data / "journal.checkpoint").read_text())
    assert d["seq"] > ack["seq"]
    con = sqlite3.connect(data / "journal.sqlite")  # cut the acknowledged order off the log
    con.execute("DELETE FROM journal WHERE seq >= ?", (ack["seq"],))
    con.execute("DELETE FROM snapshots WHERE seq >= ?", (ack["seq"],))
    con.commit()
    con.close()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data),
            "--checkpoint-key-file",
            str(key),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "behind its signed checkpoint" in out.stderr


async def test_missing_checkpoint_with_a_journal_is_warned(tmp_path, caplog):
    """Without a checkpoint file a start cannot tell a first start from a deleted file: it
    accepts the journal, but says so (the ADR's documented limit)."""
    import logging
    import os

    path, cp, last = await _log(tmp_path)
    os.remove(cp)
    with caplog.at_level(logging.WARNING, logger="exchange.journal"):
        r = _runner(path, cp, b"k" * 32)
        await r.start()
    assert f"no signed checkpoint at {cp}" in caplog.text and f"seq {last}" in caplog.text
    await r.stop(snapshot=False)
    assert os.path.exists(cp)  # written again on stop
