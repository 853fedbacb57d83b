"""PostgreSQL journal (asyncpg): the production store.

Same records, chain and snapshots as SQLite, in two tables of a schema (option ``schema``,
default ``public``): ``journal_commands`` and ``journal_snapshots``. A batch is one transaction
written with ``COPY`` (``copy_records_to_table``), committed with ``synchronous_commit=on``, so
it is in the server's fsynced WAL when :meth:`append` returns. A session advisory lock keeps a
second writer off the same log.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from typing import TYPE_CHECKING, Sequence

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
)

if TYPE_CHECKING:
    import asyncpg


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad schema name {name!r}")
    return f'"{name}"'


class PostgresJournal(Journal):
    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        keep_snapshots: int = 3,
        repair_tail: bool = True,
        connect_timeout: float = 10.0,
        readonly: bool = False,
        lock_wait: float = 10.0,
    ):
        """``lock_wait``: seconds to wait for the writer's advisory lock. A writer restarted
        right after a crash can find the killed one's session - and its lock - still
        alive for a moment (the crash test hit it within 20 SIGKILLs); only a lock held
        past this is another writer."""
        super().__init__()
        repair_tail = repair_tail and not readonly
        self.readonly = readonly
        self.dsn = dsn
        self.schema = schema
        self.target = f"{_redact(dsn)} (schema {schema})"
        self.keep_snapshots = keep_snapshots
        self.repair_tail = repair_tail
        self.connect_timeout = connect_timeout
        self.lock_wait = lock_wait
        s = _ident(schema)
        self._t = f"{s}.journal_commands"
        self._s = f"{s}.journal_snapshots"
        self._con: asyncpg.Connection[asyncpg.Record] | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._con is not None:
            return
        import asyncpg

        try:
            self._con = con = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        except Exception as e:
            raise JournalError(f"cannot connect to {_redact(self.dsn)}: {e}") from e
        try:
            await con.execute("SET synchronous_commit = on")
            lock_key = zlib.crc32(f"exchange.journal:{self.schema}".encode())
            if self.repair_tail:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.lock_wait
                while not await con.fetchval("SELECT pg_try_advisory_lock($1)", lock_key):
                    if loop.time() >= deadline:
                        raise JournalError(
                            f"journal {self.target} is open by another writer "
                            f"(its lock held for {self.lock_wait:g} s)"
                        )
                    await asyncio.sleep(0.1)
            if self.readonly:
                name = f"{_ident(self.schema)}.journal_commands"
                if await con.fetchval("SELECT to_regclass($1)", name) is None:
                    raise JournalError(f"no journal at {self.target}")
            else:
                await self._create()
            await self._drop_torn_tail()
            counts = await con.fetchrow(f"SELECT count(*), min(seq), max(seq) FROM {self._t}")
            assert counts is not None  # an aggregate without GROUP BY: always one row
            n, lo, hi = counts
            if n:
                if lo != 1:
                    raise JournalCorruptError(1, f"record missing (log starts at seq {lo})")
                if hi - lo + 1 != n:
                    gap = await con.fetchval(
                        f"SELECT min(seq) + 1 FROM {self._t} t WHERE seq < $1 AND NOT EXISTS "
                        f"(SELECT 1 FROM {self._t} u WHERE u.seq = t.seq + 1)",
                        hi,
                    )
                    raise JournalCorruptError(gap, "record missing from the middle of the log")
                self.last_seq = hi
                self.last_hash = bytes(
                    await con.fetchval(f"SELECT hash FROM {self._t} WHERE seq=$1", hi)
                )
        except BaseException:
            await con.close()
            self._con = None
            raise

    async def _create(self) -> None:
        await self._need().execute(f"""
            CREATE SCHEMA IF NOT EXISTS {_ident(self.schema)};
            CREATE TABLE IF NOT EXISTS {self._t} (
                seq bigint PRIMARY KEY, ts bigint NOT NULL,
                payload bytea NOT NULL, hash bytea NOT NULL);
            CREATE TABLE IF NOT EXISTS {self._s} (
                seq bigint PRIMARY KEY, chain_hash bytea NOT NULL,
                data_hash bytea NOT NULL, data bytea NOT NULL);
        """)

    async def _drop_torn_tail(self) -> None:
        """As SQLite's: trim only an incomplete final write; refuse on anything else."""
        if not self.check_tail:
            return
        con = self._need()
        rows = await con.fetch(
            f"SELECT seq, ts, payload, hash FROM {self._t} ORDER BY seq DESC LIMIT 3"
        )
        found = tail_damage(rows)
        if found is None:
            return
        kind, seq, why = found
        if kind != "torn":
            raise tail_refusal(f"{_redact(self.dsn)} --schema {self.schema}", seq, why)
        if not self.repair_tail:
            raise JournalCorruptError(
                seq, "last record torn (incomplete write); a start would truncate it"
            )
        log.warning(
            "journal %s: last record seq %d is torn (incomplete write); truncated", self.target, seq
        )
        async with con.transaction():
            await con.execute(f"DELETE FROM {self._t} WHERE seq=$1", seq)
            await con.execute(f"DELETE FROM {self._s} WHERE seq>=$1", seq)
        self.truncated.append(seq)

    async def _delete_from(self, seq: int) -> tuple[int, int]:
        con = self._need()
        async with self._lock:
            async with con.transaction():
                n = await con.fetchval(
                    f"WITH d AS (DELETE FROM {self._t} WHERE seq >= $1 RETURNING 1) "
                    f"SELECT count(*) FROM d",
                    seq,
                )
                k = await con.fetchval(
                    f"WITH d AS (DELETE FROM {self._s} WHERE seq >= $1 RETURNING 1) "
                    f"SELECT count(*) FROM d",
                    seq,
                )
        return n, k

    async def close(self) -> None:
        if self._con is not None:
            con, self._con = self._con, None
            await con.close()

    def _need(self) -> asyncpg.Connection[asyncpg.Record]:
        if self._con is None:
            raise JournalError(f"journal {self.target} is not open")
        return self._con

    async def _append_rows(self, records: Sequence[Record] | Frames) -> tuple[int, bytes]:
        con = self._need()
        rows = chain_rows(records, self.last_seq, self.last_hash)
        async with self._lock:
            async with con.transaction():
                await con.copy_records_to_table(
                    "journal_commands",
                    schema_name=self.schema,
                    records=rows,
                    columns=("seq", "ts", "payload", "hash"),
                )
        return rows[-1][0], rows[-1][3]

    async def write_snapshot(self, seq: int, data: bytes) -> None:
        con = self._need()
        data = bytes(data)
        async with self._lock:
            h = await con.fetchval(f"SELECT hash FROM {self._t} WHERE seq=$1", seq)
            if h is None:
                raise JournalError(f"snapshot at seq {seq}: no such record in the log")
            async with con.transaction():
                await con.execute(
                    f"INSERT INTO {self._s} VALUES ($1,$2,$3,$4) ON CONFLICT (seq) DO UPDATE "
                    f"SET chain_hash=EXCLUDED.chain_hash, data_hash=EXCLUDED.data_hash, "
                    f"data=EXCLUDED.data",
                    seq,
                    h,
                    hashlib.sha256(data).digest(),
                    data,
                )
                if self.keep_snapshots > 0:
                    await con.execute(
                        f"DELETE FROM {self._s} WHERE seq NOT IN (SELECT seq FROM {self._s} "
                        f"ORDER BY seq DESC LIMIT $1)",
                        self.keep_snapshots,
                    )

    async def _read_rows(
        self, from_seq: int, limit: int, to_seq: int | None = None
    ) -> Sequence[StoredRow]:
        con = self._need()
        async with self._lock:
            return await con.fetch(
                f"SELECT seq, ts, payload, hash FROM {self._t} WHERE seq >= $1 AND seq <= $2 "
                f"ORDER BY seq LIMIT $3",
                from_seq,
                to_seq if to_seq is not None else 1 << 62,
                limit,
            )

    async def _hash_at(self, seq: int) -> bytes | None:
        con = self._need()
        async with self._lock:
            h = await con.fetchval(f"SELECT hash FROM {self._t} WHERE seq=$1", seq)
        return None if h is None else bytes(h)

    async def _snapshot_rows(self) -> Sequence[StoredRow]:
        con = self._need()
        async with self._lock:
            return await con.fetch(
                f"SELECT seq, chain_hash, data_hash FROM {self._s} ORDER BY seq DESC"
            )

    async def _snapshot_data(self, seq: int) -> bytes | None:
        con = self._need()
        async with self._lock:
            d = await con.fetchval(f"SELECT data FROM {self._s} WHERE seq=$1", seq)
        return None if d is None else bytes(d)

    async def snapshot_seqs(self) -> list[int]:
        con = self._need()
        async with self._lock:
            return [r[0] for r in await con.fetch(f"SELECT seq FROM {self._s} ORDER BY seq")]

    async def drop(self) -> None:
        """Remove this journal's tables (tests, throw-away markets)."""
        con = self._need()
        async with self._lock:
            await con.execute(f"DROP TABLE IF EXISTS {self._t}; DROP TABLE IF EXISTS {self._s}")


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return dsn
