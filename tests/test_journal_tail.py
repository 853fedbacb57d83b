"""Tail repair never deletes a record whose integrity it cannot disprove as a torn write.
Only an incomplete final write (its payload cut short) is trimmed on start; any other damage
at the end of the log - a changed byte in the last (acknowledged) record, a flipped bit in
the hash of the record before it - makes the start refuse, naming the record, with nothing
changed on disk; ``journal truncate`` is the operator's explicit way to drop records."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import uuid

import pytest

from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, JournalCorruptError, open_journal
from test_journal import ROOT, run_commands, stream_commands


async def _log_ending_in_an_order(path: str) -> int:
    cmds = stream_commands(300)
    last = max(i for i, c in enumerate(cmds) if c.TYPE == "place_order")
    r = await run_commands(open_journal(path), cmds[: last + 1], stop_snapshot=False)
    return r.exchange.last_seq


def _dump(path: str) -> str:
    con = sqlite3.connect(path)
    h = hashlib.sha256()
    for row in con.execute("SELECT seq, ts, payload, hash FROM journal ORDER BY seq"):
        h.update(repr(row).encode())
    for row in con.execute("SELECT seq, chain_hash, data_hash FROM snapshots ORDER BY seq"):
        h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def _journal_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exchange", "journal", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_changed_byte_in_the_last_acknowledged_record_refuses(tmp_path):
    path = str(tmp_path / "j.sqlite")
    last = await _log_ending_in_an_order(path)
    con = sqlite3.connect(path)
    (p,) = con.execute("SELECT payload FROM journal WHERE seq=?", (last,)).fetchone()
    assert p.startswith(b'["place_order"')
    i = p.index(b",") + 2  # a byte inside the record, which still ends its JSON
    p2 = p[:i] + bytes([p[i] ^ 0x01]) + p[i + 1 :]
    con.execute("UPDATE journal SET payload=? WHERE seq=?", (p2, last))
    con.commit()
    con.close()
    before = _dump(path)
    r = CoreRunner(build_exchange(), open_journal(path))
    with pytest.raises(JournalCorruptError, match=f"seq {last}\\b") as ei:
        await r.start()
    assert ei.value.seq == last and "journal truncate" in str(ei.value)
    assert _dump(path) == before  # nothing deleted
    # the operator's explicit decision: drop it and what follows, then start
    out = _journal_cli("truncate", path, "--from", str(last))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"dropped records {last}..{last}" in out.stdout
    r = CoreRunner(build_exchange(), open_journal(path))
    await r.start()
    assert r.exchange.last_seq == last - 1
    await r.stop(snapshot=False)


async def test_flipped_bit_in_the_previous_hash_deletes_nothing(tmp_path):
    path = str(tmp_path / "j.sqlite")
    last = await _log_ending_in_an_order(path)
    con = sqlite3.connect(path)
    (h,) = con.execute("SELECT hash FROM journal WHERE seq=?", (last - 1,)).fetchone()
    con.execute("UPDATE journal SET hash=? WHERE seq=?", (bytes([h[0] ^ 0x80]) + h[1:], last - 1))
    con.commit()
    con.close()
    before = _dump(path)
    for _ in range(2):  # and again: every start refuses the same way, nothing is lost
        r = CoreRunner(build_exchange(), open_journal(path))
        with pytest.raises(JournalCorruptError) as ei:
            await r.start()
        assert ei.value.seq == last - 1, ei.value
        assert _dump(path) == before


async def test_incomplete_final_write_is_still_trimmed(tmp_path):
    path = str(tmp_path / "j.sqlite")
    last = await _log_ending_in_an_order(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE journal SET payload = substr(payload, 1, 9) WHERE seq = ?", (last,))
    con.commit()
    con.close()
    r = CoreRunner(build_exchange(), open_journal(path))
    await r.start()
    assert r.exchange.last_seq == last - 1 and r.recovery["truncated"] == [last]
    await r.stop(snapshot=False)


async def test_postgres_changed_last_record_refuses(postgres_dsn):
    import asyncpg

    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        r = await run_commands(
            open_journal(postgres_dsn, schema=schema), stream_commands(100), stop_snapshot=False
        )
        last = r.exchange.last_seq
        con = await asyncpg.connect(postgres_dsn)
        await con.execute(
            f'UPDATE "{schema}".journal_commands SET payload = '
            f"overlay(payload placing '\\x20'::bytea from 3 for 1) "
            f"WHERE seq = $1",
            last,
        )
        await con.close()
        r = CoreRunner(build_exchange(), open_journal(postgres_dsn, schema=schema))
        with pytest.raises(JournalCorruptError) as ei:
            await r.start()
        assert ei.value.seq == last
        con = await asyncpg.connect(postgres_dsn)
        n = await con.fetchval(f'SELECT count(*) FROM "{schema}".journal_commands')
        await con.close()
        assert n == last
    finally:
        con = await asyncpg.connect(postgres_dsn)
        await con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await con.close()
