"""The SQLite journal's writer process: ``python -m exchange.journal.writer PATH``.

The core's process only encodes a batch (orjson payloads, framed) and pipes it here; this
process checks the sequence, computes the hash chain, INSERTs and COMMITs (fsync) on the other
CPU core - the work PostgreSQL's server does for the PostgreSQL backend. With the GIL, a writer
*thread* could overlap only the fsync; the hashing and B-tree inserts competed with the core.

Protocol on stdin/stdout, every message ``kind (1 byte) + length (4 bytes, BE) + body``:

    parent -> writer  b"A" append: first seq (8), count n (4), n timestamps (8 each, native
                      order), n payloads each followed by a newline (Frames.wire)
                      b"S" snapshot: seq (8) + data
                      b"Q" quit
    writer -> parent  b"K" ok: last_seq (8) + last_hash (32)
                      b"E" error: utf-8 message (the transaction was rolled back)

The writer dies with its parent (PR_SET_PDEATHSIG on Linux), so an unacknowledged batch it was
committing when the core was killed is either committed whole or rolled back - never half -
and a restarted core never races a stale writer.
"""

from __future__ import annotations

import hashlib
import os
from array import array
import signal
from typing import BinaryIO
import sqlite3
import struct
import sys

HEAD = struct.Struct(">BI")
FRAMES_HEAD = struct.Struct(">QI")  # as exchange.journal.base.Frames.wire
ENVELOPE = struct.Struct(">Qq")  # seq, ts: hashed before the payload
MAX_CHUNK = 4096
# journal_size_limit: -1, the WAL file is never cut back when it restarts. Cutting it (to 64
# MiB, say) runs inside the COMMIT that restarts the WAL, in this process's main thread: an
# ftruncate that drops tens of MB of page cache stalled every acknowledgement for 90-120 ms,
# about every 21 s at 20,000 orders/s. The file's size stays bounded by WAL_MAX_BYTES (plus
# a batch), the high-water mark it is reused from.
WAL_KEEP_BYTES = -1
# a WAL grown past this gets a blocking checkpoint between batches
WAL_MAX_BYTES = int(os.environ.get("JOURNAL_WAL_MAX_BYTES", 256 << 20))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent is already gone
            os._exit(1)
    except Exception:
        pass


def _read_exact(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EOFError
    return b


def main(path: str) -> int:
    _die_with_parent()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    if not os.path.exists(path):
        msg = f"no journal at {path}".encode()
        out.write(HEAD.pack(ord("E"), len(msg)) + msg)
        out.flush()
        return 1
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA cache_size=-65536")
    # Checkpoints (copying the WAL back into the database file, then an fsync of it) run on
    # a thread of their own with its own connection, not inside a COMMIT: SQLite's automatic
    # checkpoint every 1,000 pages stalled the batch that crossed the mark by 30-100 ms.
    # sqlite3 releases the GIL while it works, so parsing, hashing and INSERTing the next
    # batch go on meanwhile; a PASSIVE checkpoint never blocks the writer.
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")  # see WAL_KEEP_BYTES
    checkpointer = _Checkpointer(path)
    row = con.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    last_seq, last_hash = (row[0], bytes(row[1])) if row else (0, bytes(32))
    sha = hashlib.sha256
    sql: dict[int, str] = {}

    def reply(kind: bytes, body: bytes) -> None:
        out.write(HEAD.pack(kind[0], len(body)) + body)
        out.flush()

    reply(b"K", struct.pack(">Q", last_seq) + last_hash)  # ready: where the log ends

    while True:
        try:
            kind, n = HEAD.unpack(_read_exact(inp, HEAD.size))
            body = _read_exact(inp, n)
        except EOFError:
            break
        if kind == ord("Q"):
            break
        try:
            if kind == ord("A"):
                first, count = FRAMES_HEAD.unpack_from(body)
                i = FRAMES_HEAD.size + 8 * count
                tss = array("q")
                tss.frombytes(body[FRAMES_HEAD.size : i])
                payloads = body[i:].split(b"\n")
                if len(payloads) != count + 1 or payloads[-1]:
                    raise ValueError(
                        f"batch of {count} records holds {len(payloads) - 1} payload lines"
                    )
                if count and first != last_seq + 1:
                    raise ValueError(
                        f"append out of sequence: got seq {first}, expected {last_seq + 1}"
                    )
                params: list[int | bytes] = []  # seq, ts, payload, hash, seq, ts, ...
                add = params.extend
                pack = ENVELOPE.pack
                h, seq = last_hash, first
                for ts, p in zip(tss, payloads):
                    h = sha(h + pack(seq, ts) + p).digest()
                    add((seq, ts, p, h))
                    seq += 1
                expect = seq
                count = len(params) // 4
                con.execute("BEGIN IMMEDIATE")
                try:
                    j = 0
                    while j < count:
                        k = min(MAX_CHUNK, 1 << ((count - j).bit_length() - 1))
                        s = sql.get(k)
                        if s is None:
                            s = sql[k] = (
                                "INSERT INTO journal (seq, ts, payload, hash) VALUES "
                                + ",".join(["(?,?,?,?)"] * k)
                            )
                        con.execute(s, params[4 * j : 4 * (j + k)])
                        j += k
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
                if count:
                    last_seq, last_hash = expect - 1, h
                reply(b"K", struct.pack(">Q", last_seq) + last_hash)
                checkpointer.written(n + 40 * count)  # the rows' bytes: + seq and hash
                if _size(path + "-wal") > WAL_MAX_BYTES:
                    # the passive checkpoints never caught up with a continuous stream of
                    # commits (the WAL restarts only after one has copied every frame):
                    # one blocking checkpoint here, between batches, resets it
                    con.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            elif kind == ord("S"):
                (seq,) = struct.unpack_from(">Q", body)
                data = body[8:]
                r = con.execute("SELECT hash FROM journal WHERE seq=?", (seq,)).fetchone()
                if r is None:
                    raise ValueError(f"snapshot at seq {seq}: no such record in the log")
                keep = int(os.environ.get("JOURNAL_KEEP_SNAPSHOTS", "3"))
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.execute(
                        "INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                        (seq, r[0], sha(data).digest(), data),
                    )
                    if keep > 0:
                        con.execute(
                            "DELETE FROM snapshots WHERE seq NOT IN "
                            "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                            (keep,),
                        )
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
                reply(b"K", struct.pack(">Q", last_seq) + last_hash)
            else:
                raise ValueError(f"unknown message kind {kind}")
        except Exception as e:
            reply(b"E", f"{type(e).__name__}: {e}".encode())
    checkpointer.stop()
    con.close()
    return 0


class _Checkpointer:
    """Run ``PRAGMA wal_checkpoint(PASSIVE)`` on a thread after about ``WAL_BYTES`` of rows
    have been committed."""

    WAL_BYTES = 1000 * 4096  # SQLite's own default interval: 1,000 pages of 4 KiB

    def __init__(self, path: str):
        import threading

        self._path = path
        self._due = threading.Event()
        self._quit = False
        self._since = 0
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def written(self, nbytes: int) -> None:
        self._since += nbytes
        if self._since >= self.WAL_BYTES:
            self._since = 0
            self._due.set()

    def _run(self) -> None:
        con = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._quit:
                    return
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or the like: the next one catches up
        finally:
            con.close()

    def stop(self) -> None:
        self._quit = True
        self._due.set()
        self._thread.join(30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
