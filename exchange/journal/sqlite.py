"""SQLite journal: the embedded default (one file, nothing to start).

WAL mode with ``synchronous=FULL``: a batch is one transaction (multi-row INSERTs of the
chained rows) and is fsynced when its COMMIT returns. By default (``writer="process"``) the
batch goes as one :class:`~.base.Frames` buffer over a pipe, driven by the event loop, to
:mod:`exchange.journal.writer`, a process on the other core that hashes, INSERTs and COMMITs;
``writer="thread"`` chains and INSERTs on the event loop and COMMITs on a worker thread. Reads
(replay, snapshots) use this process's own connection on one dedicated worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import hashlib
import itertools
import os
import sqlite3
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Callable, Sequence, TypeVar

from .base import (
    Frames,
    Journal,
    JournalCorruptError,
    JournalError,
    Record,
    StoredRow,
    chain_rows,
    log,
    tail_damage,
    tail_refusal,
    widen_pipe,
)

_T = TypeVar("_T")
#: what goes down the writer's pipe: a header, Frames' buffers, a snapshot
_Chunk = bytes | bytearray | memoryview

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq     INTEGER PRIMARY KEY,
    ts      INTEGER NOT NULL,
    payload BLOB    NOT NULL,
    hash    BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    seq        INTEGER PRIMARY KEY,
    chain_hash BLOB NOT NULL,
    data_hash  BLOB NOT NULL,
    data       BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
FORMAT_VERSION = "1"


def _write_all(f: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


_WRITER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "writer.py")
_HEAD = struct.Struct(">BI")
_LAST = struct.Struct(">Q")
_MAX_CHUNK = 4096  # rows per INSERT: 4 x 4096 parameters, under SQLite's 32766 limit
_SQL: dict[int, str] = {}
_flatten = itertools.chain.from_iterable


def _insert_sql(k: int) -> str:
    sql = _SQL.get(k)
    if sql is None:
        sql = _SQL[k] = "INSERT INTO journal (seq, ts, payload, hash) VALUES " + ",".join(
            ["(?,?,?,?)"] * k
        )
    return sql


class _WriterLink:
    """The core process's end of the writer process's pipes, driven by the event loop:
    non-blocking writes (continued by ``add_writer`` when the pipe is full) and replies read
    by ``add_reader``. No thread: a worker thread doing blocking pipe I/O needed the GIL back
    after every write and read, and the busy event loop gave it up only at the 5 ms switch
    interval - several such waits per batch, on every batch's way to durability. The pipe
    is widened to 1 MiB where the kernel allows, so a batch usually goes in one ``writev``.
    One request at a time (the journal's lock)."""

    def __init__(self, proc: subprocess.Popen[bytes], path: str) -> None:
        self.proc = proc
        self.path = path
        self.loop = asyncio.get_running_loop()
        stdin, stdout = _pipes(proc)
        self.wfd = stdin.fileno()
        self.rfd = stdout.fileno()
        os.set_blocking(self.wfd, False)
        os.set_blocking(self.rfd, False)
        widen_pipe(self.wfd)
        self._in = bytearray()
        self._msgs: collections.deque[tuple[int, bytes]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._out: list[memoryview] = []  # memoryviews still to write
        self._error: JournalError | None = None
        self._attached = True
        self.loop.add_reader(self.rfd, self._readable)

    def _died(self, why: str = "") -> JournalError:
        return JournalError(
            f"journal writer process for {self.path} died (exit {self.proc.poll()}){why}"
        )

    def _fail(self, err: JournalError) -> None:
        if self._error is None:
            self._error = err
        self._stop_io()
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_exception(self._error)

    def _stop_io(self) -> None:
        if self._attached:
            self._attached = False
            self.loop.remove_reader(self.rfd)
            self.loop.remove_writer(self.wfd)
        self._out = []

    def _readable(self) -> None:
        try:
            data = os.read(self.rfd, 1 << 16)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(self._died(f": {e!r}"))
            return
        if not data:
            self._fail(self._died())
            return
        buf = self._in
        buf += data
        while len(buf) >= _HEAD.size:
            k, n = _HEAD.unpack_from(buf)
            if len(buf) < _HEAD.size + n:
                break
            msg = bytes(buf[_HEAD.size : _HEAD.size + n])
            del buf[: _HEAD.size + n]
            self._msgs.append((k, msg))
        w = self._waiter
        if self._msgs and w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _flush(self) -> None:
        out = self._out
        try:
            while out:
                n = os.writev(self.wfd, out)
                while out and n >= len(out[0]):
                    n -= len(out[0])
                    out.pop(0)
                if out and n:
                    out[0] = out[0][n:]
        except BlockingIOError:
            pass
        except OSError as e:  # EPIPE: the writer is gone
            self._fail(self._died(f": {e!r}"))
            return
        if out:
            self.loop.add_writer(self.wfd, self._flush)
        else:
            self.loop.remove_writer(self.wfd)

    async def receive(self) -> bytes:
        """The next reply's body; JournalError on an error reply or a dead writer."""
        while not self._msgs:
            if self._error is not None:
                raise self._error
            self._waiter = self.loop.create_future()
            await self._waiter
        k, msg = self._msgs.popleft()
        if k != ord("K"):
            raise JournalError(f"journal writer: {msg.decode(errors='replace')}")
        return msg

    async def request(self, head: bytes, *parts: _Chunk) -> bytes:
        if self._error is not None:
            raise self._error
        self._out = [memoryview(x).cast("B") for x in (head, *parts) if len(x)]
        self._flush()
        try:
            return await self.receive()
        except asyncio.CancelledError:
            # its reply may still come and would answer the next request: no next request
            self._fail(
                JournalError(f"journal writer link for {self.path}: a request was cancelled")
            )
            raise

    def detach(self) -> None:
        """Give the pipes back to blocking use (closing, killing)."""
        self._stop_io()
        for fd in (self.wfd, self.rfd):
            try:
                os.set_blocking(fd, True)
            except OSError:
                pass


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    """The writer process's stdin and stdout (it is started with both as pipes)."""
    if proc.stdin is None or proc.stdout is None:
        raise JournalError("journal writer process started without its pipes")
    return proc.stdin, proc.stdout


def private_files(path: str) -> None:
    """Make the journal's files readable by their owner only: the log holds every firm's
    orders, balances and API-key hashes. A missing directory is created 0700; the database
    is created 0600 before SQLite opens it, and SQLite gives its WAL and shared-memory files
    the database's mode; files an older version left group/world-readable are tightened.
    (An existing directory is left alone here: it may be shared, /tmp; the server makes
    its own data directory 0700.)"""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        os.makedirs(d, mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for p in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


_LOCK_FDS: set[int] = set()  # the writer locks this process holds (writer_lock)


def _drop_locks_in_child() -> None:
    """A forked child (the runner's snapshot serialiser) must not hold the writer lock: if
    the server were killed while the child still ran, a restart would find the journal
    locked until the child exited. Closing the child's copies leaves the parent's lock."""
    for fd in _LOCK_FDS:
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCK_FDS.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


def writer_lock(path: str) -> int | None:
    """Take the journal's writer lock - an exclusive ``flock`` on ``<journal>.lock``, held
    while the journal is open for writing and dropped by the kernel when the process dies -
    and return its descriptor. SQLite's own locks only serialise transactions: two writers
    (a running server and ``keys create``, say) would each append from the end they read,
    and the second's records would fork the hash chain. Raises JournalError naming the
    holder's pid when another process (or another open journal) has it."""
    if path == ":memory:" or path.startswith("file:"):
        return None
    lock_path = path + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
        raise JournalError(
            f"journal {path} is in use by another process (pid {holder}): "
            f"stop the server (or the other command) first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCK_FDS.add(fd)
    return fd


class SQLiteJournal(Journal):
    def __init__(
        self,
        path: str,
        *,
        keep_snapshots: int = 3,
        repair_tail: bool = True,
        readonly: bool = False,
        writer: str | None = None,
    ):
        """``writer``: "process" (default) - hashing, INSERT and COMMIT in a writer process
        on the other core, see :mod:`exchange.journal.writer`; "thread" - chain and INSERT
        on the event loop, COMMIT on a worker thread (env ``JOURNAL_WRITER`` sets the
        default)."""
        super().__init__()
        self.writer = writer or os.environ.get("JOURNAL_WRITER", "process")
        if self.writer not in ("process", "thread"):
            raise ValueError(f"writer must be 'process' or 'thread', not {self.writer!r}")
        self._proc: subprocess.Popen[bytes] | None = None
        self._link: _WriterLink | None = None
        self.path = path
        self.repair_tail = repair_tail and not readonly
        self.readonly = readonly
        self.target = path
        self.keep_snapshots = keep_snapshots
        self._con: sqlite3.Connection | None = None
        self._lock_fd: int | None = None  # the writer lock (writer_lock), while open
        self._pool: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- thread plumbing
    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._pool is None:
            raise JournalError(f"journal {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ---------------------------------------------------------------- open / close
    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-sqlite")
        try:
            await self._call(self._open_sync)
            if self.writer == "process" and not self.readonly:
                await self._start_writer()
        except BaseException:
            if self._proc is not None:
                if self._link is not None:
                    self._link.detach()
                if self._proc.poll() is None:
                    self._proc.kill()
                self._proc.wait()
                for f in _pipes(self._proc):
                    f.close()
                self._proc = None
            if self._con is not None or self._lock_fd is not None:
                await self._call(self._close_sync)
            self._pool.shutdown(wait=True)
            self._pool = None
            raise

    async def _start_writer(self) -> None:
        # the script by path, not ``-m``: it needs only the standard library, and skipping
        # the package import keeps its start-up to a few tens of milliseconds.
        # A process group of its own: Ctrl-C (SIGINT to the terminal's foreground group) and
        # a group-wide SIGTERM reach the server, which then flushes and writes its final
        # snapshot through this writer - they must not kill the writer first. It still dies
        # with the server (PR_SET_PDEATHSIG, writer.py) and exits when its pipe closes.
        env = dict(os.environ, JOURNAL_KEEP_SNAPSHOTS=str(self.keep_snapshots))
        self._proc = subprocess.Popen(
            [sys.executable, _WRITER_SCRIPT, self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=env,
            close_fds=True,
            process_group=0,
        )
        self._link = _WriterLink(self._proc, self.path)
        try:
            hello = await self._link.receive()
        except JournalError as e:
            raise JournalError(
                f"journal writer process for {self.path} did not start: {e}"
            ) from None
        if (_LAST.unpack_from(hello)[0], hello[8:40]) != (self.last_seq, self.last_hash):
            raise JournalError(
                f"journal writer for {self.path} sees a different end of the "
                f"log (seq {_LAST.unpack_from(hello)[0]}, not {self.last_seq})"
            )

    async def _send(self, kind: bytes, *parts: _Chunk) -> bytes:
        n = sum(memoryview(x).nbytes for x in parts)
        if self._link is None:
            raise JournalError(f"journal {self.path}: no writer process")
        return await self._link.request(_HEAD.pack(kind[0], n), *parts)

    @property
    def _db(self) -> sqlite3.Connection:
        """The open database connection."""
        if self._con is None:
            raise JournalError(f"journal {self.path} is not open")
        return self._con

    def _open_sync(self) -> None:
        if self.readonly and not os.path.exists(self.path):
            raise JournalError(f"no journal at {self.path}")
        if not self.readonly:
            private_files(self.path)
            self._lock_fd = writer_lock(self.path)  # before anything may change the file
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._con = con
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode})")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA cache_size=-65536")  # 64 MiB: a big batch never spills mid-way
        if not self.readonly:
            con.executescript(SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT_VERSION,))
        try:
            fmt = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()[0]
        except (sqlite3.OperationalError, TypeError):
            raise JournalError(f"{self.path}: not a journal") from None
        if fmt != FORMAT_VERSION:
            raise JournalError(f"{self.path}: journal format {fmt}, expected {FORMAT_VERSION}")
        self._drop_torn_tail()
        n, lo, hi = con.execute("SELECT count(*), min(seq), max(seq) FROM journal").fetchone()
        if n:
            if lo != 1:
                raise JournalCorruptError(1, f"record missing (log starts at seq {lo})")
            if hi - lo + 1 != n:
                missing = self._first_gap()
                raise JournalCorruptError(missing, "record missing from the middle of the log")
            self.last_seq = hi
            self.last_hash = bytes(
                con.execute("SELECT hash FROM journal WHERE seq=?", (hi,)).fetchone()[0]
            )

    def _drop_torn_tail(self) -> None:
        """Judge the last record (:func:`~.base.tail_damage`): an incomplete final write is
        trimmed with a warning; any other damage refuses the open, changing nothing."""
        if not self.check_tail:
            return
        con = self._db
        rows = con.execute(
            "SELECT seq, ts, payload, hash FROM journal ORDER BY seq DESC LIMIT 3"
        ).fetchall()
        found = tail_damage(rows)
        if found is None:
            return
        kind, seq, why = found
        if kind != "torn":
            raise tail_refusal(self.path, seq, why)
        if not self.repair_tail:
            raise JournalCorruptError(
                seq, "last record torn (incomplete write); a start would truncate it"
            )
        log.warning(
            "journal %s: last record seq %d is torn (incomplete write); truncated", self.path, seq
        )
        con.execute("BEGIN IMMEDIATE")
        con.execute("DELETE FROM journal WHERE seq=?", (seq,))
        con.execute("DELETE FROM snapshots WHERE seq>=?", (seq,))
        con.execute("COMMIT")
        self.truncated.append(seq)

    async def _delete_from(self, seq: int) -> tuple[int, int]:
        def run() -> tuple[int, int]:
            con = self._db
            con.execute("BEGIN IMMEDIATE")
            try:
                n = con.execute("DELETE FROM journal WHERE seq>=?", (seq,)).rowcount
                k = con.execute("DELETE FROM snapshots WHERE seq>=?", (seq,)).rowcount
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            return n, k

        async with self._lock:
            return await self._call(run)

    def _first_gap(self) -> int:
        prev = 0
        for (s,) in self._db.execute("SELECT seq FROM journal ORDER BY seq"):
            if s != prev + 1:
                return prev + 1
            prev = s
        return prev + 1

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._proc is not None:
            proc = self._proc
            if self._link is not None:
                self._link.detach()
            try:
                async with self._lock:
                    await self._call(self._quit_sync)
            except Exception:
                if proc.poll() is None:
                    proc.kill()
                await self._call(proc.wait)
            self._proc = None
        try:
            await self._call(self._close_sync)
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _quit_sync(self) -> None:
        proc = self._proc
        if proc is None:
            return
        stdin, stdout = _pipes(proc)
        try:
            if proc.poll() is None:
                _write_all(stdin, _HEAD.pack(ord("Q"), 0))
                stdin.close()
                proc.wait(30)
        finally:
            for f in (stdin, stdout):
                try:
                    f.close()
                except OSError:
                    pass

    def _close_sync(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._lock_fd is not None:
            _LOCK_FDS.discard(self._lock_fd)
            os.close(self._lock_fd)  # releases the writer lock
            self._lock_fd = None

    # ---------------------------------------------------------------- writes
    async def _append_rows(self, records: Sequence[Record] | Frames) -> tuple[int, bytes]:
        """Process mode: send the batch's Frames to the writer process and wait for its
        reply (chained, INSERTed, COMMITted). Thread mode: chain and INSERT on the calling
        (event-loop) thread - CPU work that holds the GIL wherever it runs, and the INSERT
        only fills SQLite's page cache - then COMMIT (write the WAL, fsync) on the worker
        thread, which holds no GIL while it waits for the disk: one GIL hand-over per batch
        instead of one per row."""
        if self._pool is None:
            raise JournalError(f"journal {self.path} is not open")
        if self._proc is not None:
            frames = Frames.of(records)
            if frames.first_seq != self.last_seq + 1:
                raise JournalError(
                    f"append out of sequence: got seq {frames.first_seq}, "
                    f"expected {self.last_seq + 1}"
                )
            async with self._lock:
                resp = await self._send(b"A", *frames.wire())
            return _LAST.unpack_from(resp)[0], resp[8:40]
        async with self._lock:
            rows = chain_rows(records, self.last_seq, self.last_hash)
            con = self._db
            con.execute("BEGIN IMMEDIATE")
            try:
                # multi-row INSERTs in power-of-two chunks (a fixed set of cached statements)
                i, n = 0, len(rows)
                while i < n:
                    k = min(_MAX_CHUNK, 1 << ((n - i).bit_length() - 1))
                    con.execute(_insert_sql(k), tuple(_flatten(rows[i : i + k])))
                    i += k
                await self._call(con.execute, "COMMIT")
            except BaseException:
                await asyncio.shield(self._call(self._rollback))
                raise
        return rows[-1][0], rows[-1][3]

    def _rollback(self) -> None:
        """End the append's transaction when its INSERTs or COMMIT failed (or the append
        was cancelled), so the connection is left as it was."""
        con = self._con
        if con is not None and con.in_transaction:
            con.execute("ROLLBACK")

    async def write_snapshot(self, seq: int, data: bytes) -> None:
        if self._proc is not None:
            async with self._lock:
                await self._send(b"S", _LAST.pack(seq), data)
            return
        async with self._lock:
            await self._call(self._snapshot_sync, seq, bytes(data))

    def _snapshot_sync(self, seq: int, data: bytes) -> None:
        con = self._db
        row = con.execute("SELECT hash FROM journal WHERE seq=?", (seq,)).fetchone()
        if row is None:
            raise JournalError(f"snapshot at seq {seq}: no such record in the log")
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                (seq, row[0], hashlib.sha256(data).digest(), data),
            )
            if self.keep_snapshots > 0:
                con.execute(
                    "DELETE FROM snapshots WHERE seq NOT IN "
                    "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                    (self.keep_snapshots,),
                )
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------- reads
    async def _read_rows(
        self, from_seq: int, limit: int, to_seq: int | None = None
    ) -> Sequence[StoredRow]:
        async with self._lock:
            return await self._call(self._read_sync, from_seq, limit, to_seq)

    def _read_sync(
        self, from_seq: int, limit: int, to_seq: int | None
    ) -> list[tuple[int, int, bytes, bytes]]:
        if to_seq is None:
            to_seq = 1 << 62
        return self._db.execute(
            "SELECT seq, ts, payload, hash FROM journal WHERE seq >= ? AND seq <= ? "
            "ORDER BY seq LIMIT ?",
            (from_seq, to_seq, limit),
        ).fetchall()

    async def _hash_at(self, seq: int) -> bytes | None:
        async with self._lock:
            return await self._call(self._hash_sync, seq)

    def _hash_sync(self, seq: int) -> bytes | None:
        row = self._db.execute("SELECT hash FROM journal WHERE seq=?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    async def _snapshot_rows(self) -> Sequence[StoredRow]:
        rows: list[tuple[int, bytes, bytes]] = await self._call(
            lambda: self._db.execute(
                "SELECT seq, chain_hash, data_hash FROM snapshots ORDER BY seq DESC"
            ).fetchall()
        )
        return rows

    async def _snapshot_data(self, seq: int) -> bytes | None:
        row = await self._call(
            lambda: self._db.execute("SELECT data FROM snapshots WHERE seq=?", (seq,)).fetchone()
        )
        return None if row is None else bytes(row[0])

    async def snapshot_seqs(self) -> list[int]:
        return await self._call(
            lambda: [r[0] for r in self._db.execute("SELECT seq FROM snapshots ORDER BY seq")]
        )
