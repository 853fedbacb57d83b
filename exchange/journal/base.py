"""The journal interface, the hash chain and the errors every backend shares.

A record is ``(seq, ts, payload)``: the command's sequence number, its timestamp (int ns) and
the command serialised as :mod:`.codec` describes (a JSON array ``[type, fields...]``; older
records an ``encode_command`` object). Each stored record also carries

    hash = SHA-256(prev_hash || seq (8 bytes, big-endian) || ts (8 bytes, big-endian, signed)
                   || payload bytes)

with ``prev_hash`` = 32 zero bytes for seq 1, so changing, removing or reordering any record
breaks every hash after it. A snapshot stores the chain hash of the record it was taken at,
which binds it to the log.

Backends implement a few primitive coroutines (``_append_rows``, ``_read_rows``, ...); the
chain arithmetic, verification and decoding live here, once.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from array import array
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Iterator, Protocol, Self, Sequence

import orjson

from .codec import dict_payload, is_payload, payload_dict

log = logging.getLogger("exchange.journal")

#: a record as it is appended: ``(seq, ts, payload)``
Record = tuple[int, int, dict[str, Any] | bytes]


class StoredRow(Protocol):
    """A row as a backend stores and reads it: ``(seq, ts, payload, hash)`` (a snapshot's:
    ``(seq, chain_hash, data_hash)``), a tuple or a driver's record; the blobs come back as
    whatever the driver gives for one (bytes, memoryview)."""

    def __getitem__(self, i: int, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


GENESIS_HASH = bytes(32)
_ENVELOPE = struct.Struct(">Qq")
READ_CHUNK = 20_000

_sha256 = hashlib.sha256
_pack = _ENVELOPE.pack
dumps = orjson.dumps
loads = orjson.loads


class JournalError(Exception):
    """The journal cannot do what was asked (bad batch, closed journal, I/O failure)."""


class JournalCorruptError(JournalError):
    """The log is not what was written: a record was modified, removed or reordered, or a
    snapshot does not match the log. ``seq`` names the first record found wrong."""

    def __init__(self, seq: int, reason: str):
        self.seq = seq
        self.reason = reason
        super().__init__(f"journal corrupt at seq {seq}: {reason}")

    def __reduce__(self) -> tuple[type[JournalCorruptError], tuple[int, str]]:
        # survives the trip back from a checking child process
        return (type(self), (self.seq, self.reason))


_FRAMES_HEAD = struct.Struct(">QI")  # first seq, record count
_STAMP = struct.Struct("=q")  # a record's timestamp in Frames.ts: int64, native order


class Frames:
    """A batch of consecutive records as :class:`CoreRunner` builds it while it applies
    commands, and as the SQLite writer process reads it: the payloads, each followed by a
    newline (orjson never writes a raw one), back to back in one buffer; the timestamps as
    native int64s, 8 bytes each, in a second ``bytearray`` (the writer's wire format; the C
    submitter appends them without a method call); the seqs implied, ``first_seq`` onwards
    without a gap. Per record that is two buffer appends - nothing for the allocator or the GC
    to keep
    (holding each record's own bytes object until its batch was durable fragmented the C
    heap: orjson allocates 1 KiB and shrinks it in place, and every later ``dumps`` paid
    ~2-3 us in malloc). Iterating gives ``(seq, ts, payload)`` records, so every backend
    takes a Frames where it takes a list of records."""

    __slots__ = ("lines", "ts", "first_seq")

    def __init__(self) -> None:
        self.lines = bytearray()
        self.ts = bytearray()  # native int64 stamps (_STAMP), 8 bytes a record
        self.first_seq = 0

    @classmethod
    def of(cls, records: Iterable[Record] | Frames) -> "Frames":
        """Frames of ``(seq, ts, payload)`` records (payload: an ``encode_command`` dict or
        its orjson bytes), checked: consecutive seqs, no newline inside a payload."""
        if isinstance(records, Frames):
            return records
        f = cls()
        for seq, ts, d in records:
            p = d if isinstance(d, bytes) else dict_payload(d)
            if b"\n" in p:
                raise JournalError(f"payload of seq {seq} holds a newline (not orjson output)")
            f.add(seq, ts, p + b"\n")
        return f

    def add(self, seq: int, ts: int, line: bytes) -> int:
        """Append a record; ``line`` is its payload followed by ``b"\\n"``. Returns the
        number of records now held."""
        n = len(self.ts) >> 3
        if not n:
            self.first_seq = seq
        elif seq != self.first_seq + n:
            raise JournalError(
                f"append out of sequence: got seq {seq}, expected {self.first_seq + n}"
            )
        self.lines += line
        self.ts += _STAMP.pack(ts)
        return n + 1

    @property
    def count(self) -> int:
        return len(self.ts) >> 3

    @property
    def last_seq(self) -> int:
        return self.first_seq + (len(self.ts) >> 3) - 1

    def __len__(self) -> int:
        return len(self.ts) >> 3

    def wire(self) -> tuple[bytes, bytearray, bytearray]:
        """The batch as the SQLite writer process reads it: first seq (8 bytes BE), count
        (4), the timestamps (8 bytes each, native order: both ends are one machine), the
        newline-terminated payloads."""
        return _FRAMES_HEAD.pack(self.first_seq, len(self.ts) >> 3), self.ts, self.lines

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        payloads = bytes(self.lines).split(b"\n")
        stamps = array("q")
        stamps.frombytes(self.ts)  # a copy: the buffers may still grow while this runs
        seq = self.first_seq
        for ts, p in zip(stamps, payloads):
            yield seq, ts, p
            seq += 1


def widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Ask the kernel for a ``size``-byte pipe buffer (Linux ``F_SETPIPE_SZ``), so a batch or
    a snapshot goes through in few system calls. Where that is refused (not Linux, or over
    /proc/sys/fs/pipe-max-size) the pipe keeps its default 64 KiB."""
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass


def record_hash(prev_hash: bytes, seq: int, ts: int, payload: bytes) -> bytes:
    return _sha256(prev_hash + _pack(seq, ts) + payload).digest()


def _row_hash_ok(row: StoredRow, prev_hash: bytes) -> bool:
    seq, ts, p, h = row
    try:
        return record_hash(prev_hash, seq, ts, bytes(p)) == bytes(h)
    except Exception:
        return False


def _incomplete(p: Any, h: Any) -> bool:
    """A record cut short by a write that did not finish: its hash is not 32 bytes, or its
    payload does not end its JSON (every complete payload is an array or an object, and
    ends with its closing bracket) and does not parse. A changed byte inside a record that
    still ends its JSON is not an incomplete write: it is a modification."""
    try:
        if len(bytes(h)) != 32:
            return True
        p = bytes(p)
    except Exception:
        return False
    if p.rstrip().endswith((b"]", b"}")):
        return False
    try:
        loads(p)
        return False
    except Exception:
        return True


def tail_damage(rows: Sequence[StoredRow]) -> tuple[str, int, str] | None:
    """``rows``: the last three records ``(seq, ts, payload, hash)``, newest first. None when
    the last record is intact (its hash extends its predecessor's and its payload is a
    command). Else ``("torn", seq, why)`` when it is an incomplete final write on top of an
    intact predecessor - the one thing a start may trim: SQLite and PostgreSQL commits are
    atomic, so such a record was never acknowledged unless the disk lied - or
    ``("corrupt", seq, why)``, naming the first record found wrong: a start must refuse and
    change nothing (the record may be an acknowledged command, or intact itself while the
    record before it is damaged). A last record that does not follow its predecessor is a
    gap, not a tear: the open's count check reports it."""
    if not rows:
        return None
    seq, ts, p, h = rows[0]
    prev_row = rows[1] if len(rows) > 1 and rows[1][0] == seq - 1 else None
    if seq != 1 and prev_row is None:
        return None
    prev = GENESIS_HASH if seq == 1 or prev_row is None else bytes(prev_row[3])
    if _row_hash_ok(rows[0], prev):
        try:
            if is_payload(loads(bytes(p))):
                return None
        except Exception:
            pass
        return (
            "corrupt",
            seq,
            "last record's payload is not a command, though its hash matches (written wrong)",
        )
    if prev_row is not None:  # is the predecessor itself intact? (then the last is at fault)
        before = (
            GENESIS_HASH
            if seq - 1 == 1
            else (bytes(rows[2][3]) if len(rows) > 2 and rows[2][0] == seq - 2 else None)
        )
        if before is not None and not _row_hash_ok(prev_row, before):
            return (
                "corrupt",
                seq - 1,
                f"hash chain broken at the record before the last: "
                f"record {seq - 1} does not match its stored hash "
                f"(record {seq} after it is not to blame)",
            )
    if _incomplete(p, h):
        return ("torn", seq, "last record is an incomplete write (cut short)")
    return (
        "corrupt",
        seq,
        "last record does not match its hash: changed after it was "
        "written (it is complete, so not a torn write)",
    )


def tail_refusal(target: str, seq: int, why: str) -> "JournalCorruptError":
    """The start's refusal: what is wrong, that nothing was changed, what the operator can
    do about it."""
    return JournalCorruptError(
        seq,
        f"{why}; refusing to start, nothing was changed on disk. Restore the journal "
        f"from a copy, or drop record {seq} and every record after it (acknowledged "
        f"commands are lost) with: python -m exchange journal truncate {target} "
        f"--from {seq}",
    )


def chain_rows(
    records: Iterable[Record], last_seq: int, last_hash: bytes
) -> list[tuple[int, int, bytes, bytes]]:
    """Encode and hash a batch: ``(seq, ts, dict)`` -> ``(seq, ts, payload, hash)`` rows.
    Raises :class:`JournalError` unless the seqs continue ``last_seq`` without a gap."""
    rows: list[tuple[int, int, bytes, bytes]] = []
    h = last_hash
    expect = last_seq + 1
    append = rows.append
    for seq, ts, d in records:
        if seq != expect:
            raise JournalError(f"append out of sequence: got seq {seq}, expected {expect}")
        p = d if isinstance(d, bytes) else dict_payload(d)
        h = _sha256(h + _pack(seq, ts) + p).digest()
        append((seq, ts, p, h))
        expect += 1
    return rows


def verify_rows(rows: Iterable[StoredRow], expect_seq: int, prev_hash: bytes) -> bytes:
    """Check a run of stored rows ``(seq, ts, payload, hash)`` continues the chain at
    ``expect_seq`` / ``prev_hash``; return the last hash. Raises JournalCorruptError."""
    h = prev_hash
    for seq, ts, p, stored in rows:
        if seq != expect_seq:
            if seq > expect_seq:
                raise JournalCorruptError(
                    expect_seq, f"record missing (next record present is seq {seq})"
                )
            raise JournalCorruptError(seq, f"record out of order (expected seq {expect_seq})")
        try:
            h = _sha256(h + _pack(seq, ts) + p).digest()
        except (TypeError, struct.error):
            raise JournalCorruptError(seq, "record damaged (wrong field types)") from None
        if h != stored:
            raise JournalCorruptError(
                seq, "hash chain broken: record modified, or an earlier record changed"
            )
        expect_seq += 1
    return h


@dataclass
class VerifyReport:
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_hash: str = ""
    snapshots: list[int] = field(default_factory=list)


class Journal:
    """A durable, hash-chained command log with snapshots.

    Use::

        j = open_journal("data/journal.sqlite")      # or "postgresql://..."
        await j.open()
        await j.append([(seq, ts, encode_command(cmd)), ...])   # durable on return
        async for seq, ts, d in j.read(from_seq):                # async iterator
            ex.apply(decode_command(d), seq, ts)
        await j.write_snapshot(seq, ex.snapshot())
        snap = await j.latest_snapshot()                          # (seq, bytes) | None
        await j.close()

    ``read`` is an **async** iterator for every backend (PostgreSQL has no sync driver here);
    it verifies the hash chain as it goes and raises :class:`JournalCorruptError` on a
    modified, missing or reordered record. ``last_seq`` / ``last_hash`` describe the durable
    end of the log after :meth:`open`.
    """

    target: str = ""
    spec: tuple[str, dict[str, Any]] | None = None  # (target, options) to reopen it elsewhere

    def __init__(self) -> None:
        self.check_tail = True  # False: open without judging the last record (truncate)
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.first_seq = 1
        self.truncated: list[int] = []  # seqs of torn records dropped on open

    # ---------------------------------------------------------------- backend primitives
    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _append_rows(self, records: Sequence[Record] | Frames) -> tuple[int, bytes]:
        """Chain, write and make durable ``records`` (a list of ``(seq, ts, payload)`` or a
        :class:`Frames`; iterate, don't index); return the new (last_seq, last_hash)."""
        raise NotImplementedError

    async def _read_rows(
        self, from_seq: int, limit: int, to_seq: int | None = None
    ) -> Sequence[StoredRow]:
        """Up to ``limit`` stored rows ``(seq, ts, payload, hash)`` with seq >= from_seq
        (and <= to_seq), in seq order."""
        raise NotImplementedError

    async def _hash_at(self, seq: int) -> bytes | None:
        raise NotImplementedError

    async def _snapshot_rows(self) -> Sequence[StoredRow]:
        """``(seq, chain_hash, data_hash)`` for every stored snapshot, newest first."""
        raise NotImplementedError

    async def _snapshot_data(self, seq: int) -> bytes | None:
        raise NotImplementedError

    async def write_snapshot(self, seq: int, data: bytes) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- the interface
    async def append(self, records: Sequence[Record] | Frames) -> None:
        """Append ``(seq, ts, encode_command(cmd))`` records; they continue ``last_seq``
        without a gap. Durable (fsynced / committed) when this returns. The payload may
        also be given already serialised (orjson bytes of that dict), and the batch as
        :class:`Frames`, as CoreRunner does."""
        if not len(records):
            return
        self.last_seq, self.last_hash = await self._append_rows(records)

    async def prev_hash(self, seq: int) -> bytes:
        """The chain hash a record at ``seq`` must extend (of seq - 1)."""
        if seq <= 1:
            return GENESIS_HASH
        h = await self._hash_at(seq - 1)
        if h is None:
            raise JournalCorruptError(seq - 1, "record missing")
        return h

    async def read_rows(
        self, from_seq: int = 1, to_seq: int | None = None, chunk: int = READ_CHUNK
    ) -> AsyncIterator[Sequence[StoredRow]]:
        """Verified stored rows ``(seq, ts, payload_bytes, hash)`` in chunks."""
        from_seq = max(from_seq, 1)
        end = self.last_seq if to_seq is None else min(to_seq, self.last_seq)
        if from_seq > end:
            return
        h = await self.prev_hash(from_seq)
        expect = from_seq
        while expect <= end:
            rows = await self._read_rows(expect, chunk, end)
            if not rows:
                raise JournalCorruptError(expect, "record missing (log ends early)")
            h = verify_rows(rows, expect, h)
            expect = rows[-1][0] + 1
            yield rows

    async def read(
        self, from_seq: int = 1, to_seq: int | None = None
    ) -> AsyncIterator[tuple[int, int, dict[str, Any]]]:
        """``(seq, ts, encode_command dict)`` from ``from_seq`` on, chain-verified."""
        async for rows in self.read_rows(from_seq, to_seq):
            for seq, ts, p, _h in rows:
                yield seq, ts, payload_dict(loads(p))

    async def latest_snapshot(self, max_seq: int | None = None) -> tuple[int, bytes] | None:
        """The newest snapshot (at or before ``max_seq``) that matches the log: its data hash
        is right and it sits on the chain (its stored chain hash equals the record's). A
        damaged one is skipped with a warning; None when there is none. (This does not
        prove the data: CoreRunner also checks the snapshot's seal, see ``find_seal``.)"""
        async for seq, data in self.snapshots(max_seq):
            return seq, data
        return None

    async def snapshots(self, max_seq: int | None = None) -> AsyncIterator[tuple[int, bytes]]:
        """Every snapshot that matches the log, as :meth:`latest_snapshot` checks them,
        newest first."""
        for seq, chain_hash, data_hash in await self._snapshot_rows():
            if max_seq is not None and seq > max_seq:
                continue
            if seq > self.last_seq:
                log.warning(
                    "journal %s: snapshot at seq %d is past the end of the log (%d); ignored",
                    self.target,
                    seq,
                    self.last_seq,
                )
                continue
            data = await self._snapshot_data(seq)
            if data is None or _sha256(data).digest() != bytes(data_hash):
                log.warning("journal %s: snapshot at seq %d is damaged; ignored", self.target, seq)
                continue
            if await self._hash_at(seq) != bytes(chain_hash):
                raise JournalCorruptError(seq, "snapshot does not match the log's hash chain")
            yield seq, bytes(data)

    async def snapshot_seqs(self) -> list[int]:
        return sorted(r[0] for r in await self._snapshot_rows())

    async def _delete_from(self, seq: int) -> tuple[int, int]:
        """Delete the records and snapshots at or after ``seq`` in one transaction; return
        how many of each."""
        raise NotImplementedError

    async def truncate_from(self, seq: int) -> tuple[int, int]:
        """The operator's explicit repair (``journal truncate``): drop every record from
        ``seq`` on, and the snapshots at or after it. Never called by a start."""
        if seq < 1:
            raise JournalError("truncate --from must be 1 or more")
        n = await self._delete_from(seq)
        self.last_seq = seq - 1
        self.last_hash = await self.prev_hash(seq) if seq > 1 else GENESIS_HASH
        return n

    async def verify_chain(self, from_seq: int = 1, to_seq: int | None = None) -> VerifyReport:
        """Check the whole chain (or a range) without decoding; raise JournalCorruptError."""
        rep = VerifyReport(first_seq=from_seq)
        async for rows in self.read_rows(from_seq, to_seq):
            rep.records += len(rows)
            rep.last_seq = rows[-1][0]
            rep.last_hash = rows[-1][3].hex()
        return rep

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
