"""A start proves the snapshot it loads: the log holds, in a seal record after the snapshot's
marker, the hash of the state the snapshot was taken of; after loading, the recomputed hash
must equal it or the start refuses, naming the snapshot. A forged snapshot (balance changed,
data_hash recomputed, so the row's own check passes) is caught; ``--recover-from-genesis``
replays the log without snapshots and serves the true balances."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys

import orjson
import pytest

from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, JournalCorruptError, open_journal
from test_journal import clock_from, stream_commands
from test_server_restart import ROOT, ServerProcess

import asyncio

FORGED = 99_000_000 * 100  # 99 M CNY in fen


def forge_newest_snapshot(path: str, firm: str | None = None) -> tuple[int, str]:
    """Add 99 M CNY to a firm's cash in the newest snapshot (taken from a system account so
    the ledger still balances) and recompute its data_hash. Returns (seq, firm)."""
    con = sqlite3.connect(path)
    seq, data = con.execute("SELECT seq, data FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
    st = orjson.loads(data)
    accounts = st["accounts"]
    firm = firm or next(k for k, a in accounts.items() if not a["system"])
    system = next(k for k, a in accounts.items() if a["system"])
    accounts[firm]["cash"] += FORGED
    accounts[system]["cash"] -= FORGED
    forged = orjson.dumps(st, option=orjson.OPT_SORT_KEYS)
    con.execute(
        "UPDATE snapshots SET data=?, data_hash=? WHERE seq=?",
        (forged, hashlib.sha256(forged).digest(), seq),
    )
    con.commit()
    con.close()
    return seq, firm


async def _journal_with_snapshots(path: str, forked: bool = False) -> str:
    r = CoreRunner(
        build_exchange(),
        open_journal(path),
        snapshot_every_commands=250,
        clock=clock_from(),
        fork_snapshots=forked,
    )
    if forked:  # every snapshot serialised by a forked child: sealed by a later record
        r.fork_min_orders = 0
    await r.start()
    for c in stream_commands(600):
        await r.submit(c)
    await r.stop()  # and a final snapshot
    return r.exchange.state_hash()


async def test_forged_snapshot_is_refused_naming_it(tmp_path):
    path = str(tmp_path / "j.sqlite")
    true_hash = await _journal_with_snapshots(path)
    seq, firm = forge_newest_snapshot(path)
    r = CoreRunner(build_exchange(), open_journal(path))
    with pytest.raises(JournalCorruptError, match=f"snapshot at seq {seq}") as ei:
        await r.start()
    assert ei.value.seq == seq and "recover-from-genesis" in str(ei.value)
    # from genesis: the log alone, the true market
    r = CoreRunner(build_exchange(), open_journal(path), use_snapshots=False)
    await r.start()
    assert r.recovery["snapshot_seq"] == 0
    assert r.exchange.state_hash() == true_hash
    await r.stop(snapshot=False)


@pytest.mark.parametrize("forked", [False, True])
async def test_every_snapshot_has_a_seal_and_a_clean_start_checks_it(tmp_path, forked):
    path = str(tmp_path / "j.sqlite")
    true_hash = await _journal_with_snapshots(path, forked)
    j = open_journal(path)
    await j.open()
    seals = {}
    async for seq, _ts, d in j.read(1):
        if d["type"] == "snapshot_marker" and d.get("of_seq"):
            seals[d["of_seq"]] = (seq, d["state_hash"])
    snaps = await j.snapshot_seqs()
    for s in snaps:
        seal_seq, h = seals[s]
        assert seal_seq > s if forked else seal_seq == s  # inline: the marker itself
        assert h == hashlib.sha256(await j._snapshot_data(s)).hexdigest()
    await j.close()
    r = CoreRunner(build_exchange(), open_journal(path))
    await r.start()
    assert r.recovery["snapshot_seq"] == snaps[-1] and r.recovery["snapshot_proof"] == "sealed"
    assert r.exchange.state_hash() == true_hash
    await r.stop(snapshot=False)


async def test_unsealed_snapshot_of_an_older_version_is_not_trusted(tmp_path):
    """Snapshots written before seals existed prove nothing: the start falls back to an
    older sealed snapshot or the log from genesis, with a warning, and gets the true state."""
    path = str(tmp_path / "j.sqlite")
    await _journal_with_snapshots(path)
    r = CoreRunner(build_exchange(), open_journal(path), clock=clock_from(2 * 10**18))
    await r.start()
    for c in stream_commands(700)[-20:]:  # a few more records after the last snapshot
        await r.submit(c)
    true_hash = r.exchange.state_hash()
    await r.stop(snapshot=False)
    con = sqlite3.connect(path)
    newest = con.execute("SELECT max(seq) FROM snapshots").fetchone()[0]
    # make the newest snapshot look like one an older version wrote: a row at a record with
    # no seal after it (the last record of the log)
    (last,) = con.execute("SELECT max(seq) FROM journal").fetchone()
    (data,) = con.execute("SELECT data FROM snapshots WHERE seq=?", (newest,)).fetchone()
    (h,) = con.execute("SELECT hash FROM journal WHERE seq=?", (last,)).fetchone()
    st = orjson.loads(data)
    st["last_seq"] = last
    data = orjson.dumps(st, option=orjson.OPT_SORT_KEYS)
    con.execute(
        "INSERT INTO snapshots VALUES (?,?,?,?)", (last, h, hashlib.sha256(data).digest(), data)
    )
    con.commit()
    con.close()
    r = CoreRunner(build_exchange(), open_journal(path))
    await r.start()
    assert r.recovery["snapshot_seq"] == newest  # the sealed one below it
    assert r.exchange.state_hash() == true_hash
    await r.stop(snapshot=False)


def _serve(data_dir, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def _firm(port: int, firm: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"http://127.0.0.1:{port}/api/v1/firms/{firm}",
            headers={"Authorization": "Bearer operator-demo-key"},
        ) as r:
            assert r.status == 200, await r.text()
            b = (await r.json())["balances"]
            b.pop("as_of_seq", None)  # the final snapshot's marker and seal came after
            return b


def test_server_refuses_a_forged_snapshot_and_recovers_from_genesis(tmp_path):
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    before = asyncio.run(_firm(srv.port, "POWER1"))
    assert srv.kill(signal.SIGTERM) == 0  # final snapshot
    path = str(tmp_path / "data" / "journal.sqlite")
    seq, firm = forge_newest_snapshot(path, "POWER1")
    out = _serve(tmp_path / "data")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "listening on" not in text, text[-3000:]
    assert re.search(rf"snapshot at seq {seq}\b", text), text[-3000:]
    assert "--recover-from-genesis" in text
    srv = ServerProcess(tmp_path / "data", extra=["--recover-from-genesis"])
    srv.start()
    try:
        assert "snapshot seq 0," in "".join(srv.output[-12:]), srv.output[-12:]
        assert asyncio.run(_firm(srv.port, "POWER1")) == before  # not the forged cash
    finally:
        assert srv.kill(signal.SIGTERM) == 0


def test_journal_replay_refuses_a_forged_snapshot(tmp_path):
    path = str(tmp_path / "j.sqlite")
    asyncio.run(_journal_with_snapshots(path))
    seq, _ = forge_newest_snapshot(path)
    cmd = [sys.executable, "-m", "exchange", "journal", "replay", path]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and f"snapshot at seq {seq}" in out.stdout + out.stderr
    out = subprocess.run(
        cmd + ["--no-snapshot"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


async def test_postgres_forged_snapshot_is_refused(postgres_dsn):
    import uuid
    import asyncpg

    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        r = CoreRunner(
            build_exchange(),
            open_journal(postgres_dsn, schema=schema),
            snapshot_every_commands=250,
            clock=clock_from(),
        )
        await r.start()
        for c in stream_commands(400):
            await r.submit(c)
        await r.stop()
        true_hash = r.exchange.state_hash()
        con = await asyncpg.connect(postgres_dsn)
        seq, data = await con.fetchrow(
            f'SELECT seq, data FROM "{schema}".journal_snapshots ORDER BY seq DESC LIMIT 1'
        )
        st = orjson.loads(data)
        firm = next(k for k, a in st["accounts"].items() if not a["system"])
        st["accounts"][firm]["cash"] += FORGED
        forged = orjson.dumps(st, option=orjson.OPT_SORT_KEYS)
        await con.execute(
            f'UPDATE "{schema}".journal_snapshots SET data=$1, data_hash=$2 WHERE seq=$3',
            forged,
            hashlib.sha256(forged).digest(),
            seq,
        )
        await con.close()
        with pytest.raises(JournalCorruptError, match=f"snapshot at seq {seq}"):
            await CoreRunner(build_exchange(), open_journal(postgres_dsn, schema=schema)).start()
        r = CoreRunner(
            build_exchange(), open_journal(postgres_dsn, schema=schema), use_snapshots=False
        )
        await r.start()
        assert r.exchange.state_hash() == true_hash
        await r.stop(snapshot=False)
    finally:
        con = await asyncpg.connect(postgres_dsn)
        await con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await con.close()


async def test_forked_snapshot_in_flight_at_stop_is_sealed_and_stored(tmp_path):
    """stop() keeps accepting until the newest snapshot in flight has its seal journaled -
    also when that snapshot's batch is the one being written, not the current one."""
    path = str(tmp_path / "j.sqlite")
    cmds = stream_commands(300)
    r = CoreRunner(build_exchange(), open_journal(path), clock=clock_from(), fork_snapshots=True)
    r.fork_min_orders = 0
    await r.start()
    for c in cmds[:200]:
        await r.submit(c)
    r._snapshot_now()
    marker = r.exchange.last_seq
    await asyncio.sleep(0)  # the commit loop takes the marker's batch: it is being written
    assert r._writing is not None and r._writing.snapshot is not None
    r.submit_nowait(cmds[200])
    await r.stop(snapshot=False)
    j = open_journal(path)
    await j.open()
    assert marker in await j.snapshot_seqs()
    await j.close()
