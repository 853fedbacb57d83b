"""NATS JetStream journal (nats-py): the command log on a replicated stream.

    open_journal("nats://h1:4222,h2:4222,h3:4222/MARKET?replicas=3")

Layout (ADR 0010):

- **One stream per journal**, ``STREAM``, subject ``exchange.journal.STREAM``, file storage,
  ``replicas`` copies (R3 in production; R1 by default, for a single test server), deletes
  and purges denied: the log only grows.
- **One message per group-commit batch**, not per command. The message body is the batch's
  records back to back, each ``seq (8 bytes BE) | ts (8, BE signed) | chain hash (32) |
  payload length (4, BE) | payload`` - the same records, chain and payloads as SQLite's and
  PostgreSQL's, so ``base.Journal`` verifies and decodes them unchanged. A message is
  stored whole or not at all, so a batch is atomic as a SQL transaction is; and it is one
  replicated (and, with ``sync_interval: always``, fsynced) write per batch rather than per
  command: per-message appends would cap the journal at the few hundred fsyncs a second a
  disk gives. A batch larger than a message (the server's ``max_payload``, 1 MiB by
  default) is split into several, published one after the other.
- **The guard**: every publish carries ``Nats-Expected-Last-Sequence`` = the stream
  sequence of the previous message *this writer* appended (or found at open). A writer
  whose view is stale - another process appended since - is refused by the stream leader
  with error 10071 and never appends; :class:`StaleWriterError` says so. Because every
  message is published only after the previous one was acknowledged, a refused message is
  never followed by one of ours (pipelining messages would let a later one land after a
  foreign one, forking the chain).
- **Snapshots** go to the object store ``STREAM_snapshots`` (same replicas), one object per
  snapshot, its description ``{"seq", "chain_hash", "data_hash"}``: the chain hash of the
  record it was taken at binds it to the log, exactly as the SQL backends' rows do.
- **Reading** is an ordered push consumer from the stream sequence of the message that
  holds the first record wanted (found by bisection over the stream: a message's first
  record seq grows with its stream sequence).

What an acknowledgement means depends on the servers' settings: JetStream acknowledges a
publish once the stream's Raft group has it on a majority, but by default each server
flushes to disk only every two minutes; run the servers with ``sync_interval: always``
(nats-server >= 2.10) so that acknowledged means fsynced on a majority (docs/DEPLOYMENT.md,
ADR 0010).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
    TypeVar,
)
from urllib.parse import parse_qsl, unquote

import orjson

from .base import (
    Frames,
    Journal,
    JournalCorruptError,
    JournalError,
    Record,
    StoredRow,
    chain_rows,
    tail_damage,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.api import StreamInfo
    from nats.js.client import JetStreamContext
    from nats.js.object_store import ObjectStore

_T = TypeVar("_T")

log = logging.getLogger("exchange.journal.jetstream")
# how long a read of the stream or the snapshot store waits for the cluster to answer: a start
# may come while the nodes left elect new leaders (the node that led them died)
OPEN_TIMEOUT_S = 60.0
NO_PLACEMENT = 10005  # JetStream's "no suitable peers for placement": retried, not final
SNAPSHOT_READ_ATTEMPTS = 4  # a snapshot whose digest is wrong is read again this often

_REC = struct.Struct(">Qq32sI")  # seq, ts, chain hash, payload length
_REC_SIZE = _REC.size
WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a refused expected-last-sequence
_HEADER_ROOM = 4096  # bytes of a message kept for its headers


class StaleWriterError(JournalError):
    """The stream moved on without this writer: another process appended (a new leader),
    so this one's view of the log is stale. Nothing of the refused batch was appended."""


def parse_target(target: str) -> tuple[list[str], str, dict[str, Any]]:
    """``nats://[user:pass@]h1:4222[,h2:4222...]/STREAM[?replicas=3&timeout=5]`` ->
    (server URLs, stream name, options from the query)."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme not in ("nats", "tls"):
        raise ValueError(f"not a NATS journal URL: {target!r}")
    hosts, slash, path = rest.partition("/")
    stream, _, query = path.partition("?")
    stream = unquote(stream)
    if not slash or not stream:
        raise ValueError(
            f"NATS journal URL needs a stream name: nats://HOST:4222/STREAM ({_redact(target)!r})"
        )
    if not all(c.isalnum() or c in "_-" for c in stream):
        raise ValueError(f"bad stream name {stream!r}: letters, digits, '_' and '-' only")
    cred = ""
    if "@" in hosts:
        cred, hosts = hosts.rsplit("@", 1)
        cred += "@"
    servers = [f"{scheme}://{cred}{h}" for h in hosts.split(",") if h]
    if not servers:
        raise ValueError(f"NATS journal URL names no server: {_redact(target)!r}")
    opts: dict[str, Any] = {}
    for k, v in parse_qsl(query):
        if k == "replicas":
            opts["replicas"] = int(v)
        elif k in ("timeout", "append_timeout"):
            opts[k] = float(v)
        else:
            raise ValueError(
                f"unknown NATS journal option {k!r} (replicas, timeout, append_timeout)"
            )
    return servers, stream, opts


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    hosts, slash, path = rest.partition("/")
    if "@" in hosts:
        cred, hosts = hosts.rsplit("@", 1)
        hosts = cred.split(":", 1)[0] + "@" + hosts
    return f"{scheme}{sep}{hosts}{slash}{path}"


def encode_batch(rows: Iterable[StoredRow]) -> bytes:
    """Chained rows ``(seq, ts, payload, hash)`` as one message body."""
    pack = _REC.pack
    return b"".join(pack(seq, ts, h, len(p)) + p for seq, ts, p, h in rows)


def decode_batch(body: bytes, sseq: int = 0) -> list[tuple[int, int, bytes, bytes]]:
    """A message body back into rows ``(seq, ts, payload, hash)``. A body that does not
    parse is a damaged message: JournalCorruptError naming the first seq it holds."""
    rows: list[tuple[int, int, bytes, bytes]] = []
    off, n = 0, len(body)
    unpack = _REC.unpack_from
    try:
        while off < n:
            seq, ts, h, ln = unpack(body, off)
            off += _REC_SIZE
            if off + ln > n:
                raise ValueError("record runs past the message")
            rows.append((seq, ts, body[off : off + ln], h))
            off += ln
    except (struct.error, ValueError) as e:
        first = rows[0][0] if rows else 0
        raise JournalCorruptError(
            first + len(rows), f"stream message {sseq} is not a journal batch ({e})"
        ) from None
    if not rows:
        raise JournalCorruptError(0, f"stream message {sseq} holds no record")
    return rows


class JetStreamJournal(Journal):
    def __init__(
        self,
        target: str,
        *,
        replicas: int = 1,
        keep_snapshots: int = 3,
        readonly: bool = False,
        repair_tail: bool = True,
        timeout: float = 5.0,
        append_timeout: float = 10.0,
        max_message_bytes: int | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        """``replicas``: copies of a stream this creates (an existing stream keeps its own;
        a mismatch is logged). ``append_timeout``: how long an append keeps retrying while
        the cluster elects a stream leader (a server died) before the runner is failed.
        ``repair_tail`` is accepted for the interface's sake: a JetStream message is
        stored whole or not at all, so there is never a torn record to trim."""
        super().__init__()
        servers, stream, q = parse_target(target)
        self.url = target
        self.servers = servers
        self.stream = stream
        self.subject = f"exchange.journal.{stream}"
        self.bucket = f"{stream}_snapshots"
        self.replicas = int(q.get("replicas", replicas))
        self.timeout = float(q.get("timeout", timeout))
        self.append_timeout = float(q.get("append_timeout", append_timeout))
        self.connect_timeout = connect_timeout
        self.keep_snapshots = keep_snapshots
        self.readonly = readonly
        self.max_message_bytes = max_message_bytes
        self.target = _redact(target)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._obs: ObjectStore | None = None
        self._stream_last = 0  # stream sequence of the last message (the guard's value)
        self._firsts: dict[int, int] = {}  # stream seq -> first record seq it holds
        self._body_cache: tuple[int, bytes] | None = None
        self._lock = asyncio.Lock()
        self._closing = False

    async def _retrying(
        self, fn: Callable[[], Awaitable[_T]], what: str, timeout: float | None = None
    ) -> _T:
        """``await fn()``, retried while the cluster cannot answer - a request timing out,
        no responders, 503 while a stream or meta leader is elected after a server died -
        for up to ``OPEN_TIMEOUT_S`` (or ``append_timeout`` if longer): the journal's own
        stream and its snapshot store each elect a leader when a node dies, one after the
        other; and "no suitable peers for placement" while a cluster forms. "Not found" and
        other refusals are final. (Appends do not come here: an
        append waits ``append_timeout`` for its acknowledgement.)"""
        from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
        from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

        loop = asyncio.get_running_loop()
        limit = max(self.append_timeout, OPEN_TIMEOUT_S) if timeout is None else timeout
        deadline = loop.time() + limit
        while True:
            try:
                return await fn()
            except NotFoundError:
                raise
            except (
                NatsTimeout,
                NoRespondersError,
                NoStreamResponseError,
                asyncio.TimeoutError,
                APIError,
            ) as e:
                # 10005 "no suitable peers for placement": a cluster still forming (or a
                # node just restarted) does not know enough peers for the replicas yet
                if (
                    isinstance(e, APIError)
                    and not (e.code and e.code >= 500)
                    and e.err_code != NO_PLACEMENT
                ):
                    raise
                if loop.time() >= deadline:
                    raise JournalError(
                        f"journal {self.target}: {what}: no answer within {limit:g} s ({e!r})"
                    ) from e
                await asyncio.sleep(0.25)

    # ---------------------------------------------------------------- open / close
    async def open(self) -> None:
        if self._nc is not None:
            return
        self._closing = False
        try:
            import nats
        except ImportError as e:  # pragma: no cover - the extra is not installed
            raise JournalError(
                "the NATS journal needs nats-py: pip install 'carbon-exchange[nats]'"
            ) from e
        try:
            self._nc = await nats.connect(
                servers=self.servers,
                name="exchange-journal",
                connect_timeout=self.connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            )
        except Exception as e:
            self._nc = None
            raise JournalError(f"cannot connect to {self.target}: {e!r}") from e
        try:
            self._js = self._nc.jetstream(timeout=self.timeout)
            await self._open_stream()
            await self._open_snapshots()
        except BaseException:
            await self.close()
            raise

    async def _on_error(self, e: Exception) -> None:
        log.warning("journal %s: NATS error %r", self.target, e)

    async def _on_disconnect(self) -> None:
        if self._closing:
            return
        log.warning("journal %s: disconnected from NATS; reconnecting", self.target)

    async def _on_reconnect(self) -> None:
        log.warning(
            "journal %s: reconnected to %s",
            self.target,
            self._nc.connected_url.netloc if self._nc and self._nc.connected_url else "?",
        )

    async def _open_stream(self) -> None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        js = self._need()
        try:
            info = await self._retrying(lambda: js.stream_info(self.stream), "stream info")
        except NotFoundError:
            if self.readonly:
                raise JournalError(
                    f"no journal at {self.target} (no stream {self.stream})"
                ) from None
            info = await self._retrying(
                lambda: js.add_stream(
                    api.StreamConfig(
                        name=self.stream,
                        subjects=[self.subject],
                        description="exchange command journal (hash-chained batches)",
                        storage=api.StorageType.FILE,
                        num_replicas=self.replicas,
                        retention=api.RetentionPolicy.LIMITS,
                        discard=api.DiscardPolicy.NEW,
                        max_msgs=-1,
                        max_bytes=-1,
                        max_age=0,
                        max_msg_size=-1,
                        deny_delete=True,
                        deny_purge=True,
                        allow_rollup_hdrs=False,
                        duplicate_window=0,
                    )
                ),
                "create stream",
            )
        except JournalError:
            raise
        except Exception as e:
            raise JournalError(f"journal {self.target}: stream {self.stream}: {e!r}") from e
        cfg = info.config
        if cfg.num_replicas and cfg.num_replicas != self.replicas:
            log.warning(
                "journal %s: stream %s has %d replicas (asked for %d); kept as it is",
                self.target,
                self.stream,
                cfg.num_replicas,
                self.replicas,
            )
        st = info.state
        msgs, first, last = st.messages or 0, st.first_seq or 0, st.last_seq or 0
        self._stream_last = last
        if not msgs:
            if last:  # every message gone, but the stream had some: not a fresh log
                raise JournalCorruptError(
                    1, f"record missing (stream {self.stream} is empty after {last} messages)"
                )
            return
        if first != 1:
            raise JournalCorruptError(
                1, f"record missing (stream {self.stream} starts at message {first})"
            )
        if msgs != last - first + 1:
            gap = await self._first_gap(first, last)
            raise JournalCorruptError(
                gap,
                f"record missing from the middle of the log (stream {self.stream} "
                f"holds {msgs} of messages {first}..{last})",
            )
        rows = decode_batch(await self._body(last), last)
        self._firsts[last] = rows[0][0]
        if len(rows) < 3 and last > 1:  # the tail check looks at the last three records
            rows = decode_batch(await self._body(last - 1), last - 1) + rows
        self.last_seq, self.last_hash = rows[-1][0], bytes(rows[-1][3])
        if self.check_tail:
            found = tail_damage([(s, t, p, h) for s, t, p, h in reversed(rows[-3:])])
            if found is not None:
                _kind, seq, why = found
                raise JournalCorruptError(
                    seq,
                    f"{why}; refusing to start, nothing was changed. A JetStream "
                    f"stream cannot drop its tail: restore the journal from a copy "
                    f"(a mirror of stream {self.stream})",
                )

    async def refresh(self) -> int:
        """Re-read the end of the stream (a follower: another process appends); return
        the new ``last_seq``. The records are chain-verified when they are read."""
        js = self._need()
        info = await self._retrying(lambda: js.stream_info(self.stream), "stream info")
        last = info.state.last_seq or 0
        if last != self._stream_last:
            if last < self._stream_last:
                raise JournalCorruptError(
                    self.last_seq,
                    f"stream {self.stream} went back from message {self._stream_last} to {last}",
                )
            self._body_cache = None
            rows = decode_batch(await self._body(last), last)
            self._firsts[last] = rows[0][0]
            self._stream_last = last
            self.last_seq, self.last_hash = rows[-1][0], bytes(rows[-1][3])
        return self.last_seq

    async def _first_gap(self, first: int, last: int) -> int:
        """The first record seq of the first missing stream message (for the message)."""
        from nats.js.errors import NotFoundError

        prev = None
        for s in range(first, last + 1):
            try:
                body = await self._body(s)
            except NotFoundError:
                return decode_batch(prev, s - 1)[-1][0] + 1 if prev else 1
            prev = body
        return 1

    async def _open_snapshots(self) -> None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        js = self._need()
        try:
            self._obs = await self._retrying(
                lambda: js.object_store(self.bucket), "snapshot bucket"
            )
        except NotFoundError:
            if self.readonly:
                self._obs = None
                return
            self._obs = await self._retrying(
                lambda: js.create_object_store(
                    self.bucket,
                    config=api.ObjectStoreConfig(
                        description="exchange journal snapshots",
                        storage=api.StorageType.FILE,
                        replicas=self.replicas,
                    ),
                ),
                "create snapshot bucket",
            )

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._closing = True
        self._js = self._obs = None
        self._body_cache = None
        if nc is not None:
            try:
                await nc.close()
            except Exception:
                pass

    def _need(self) -> JetStreamContext:
        if self._js is None:
            raise JournalError(f"journal {self.target} is not open")
        return self._js

    # ---------------------------------------------------------------- messages
    async def _body(self, sseq: int) -> bytes:
        """The body of stream message ``sseq`` (the stream leader's copy)."""
        c = self._body_cache
        if c is not None and c[0] == sseq:
            return c[1]
        js = self._need()
        m = await self._retrying(lambda: js.get_msg(self.stream, sseq), f"message {sseq}")
        body = m.data or b""
        self._body_cache = (sseq, body)
        if m.subject and m.subject != self.subject:
            raise JournalCorruptError(
                0, f"stream message {sseq} is not a journal batch (subject {m.subject})"
            )
        return body

    async def _first_of(self, sseq: int) -> int:
        f = self._firsts.get(sseq)
        if f is None:
            body = await self._body(sseq)
            if len(body) < _REC_SIZE:
                decode_batch(body, sseq)  # raises
            f = _REC.unpack_from(body, 0)[0]
            if len(self._firsts) > 100_000:
                self._firsts.clear()
            self._firsts[sseq] = f
        return f

    async def _locate(self, seq: int) -> int:
        """The stream sequence of the message holding record ``seq`` (0: none)."""
        if seq < 1 or seq > self.last_seq or not self._stream_last:
            return 0
        # every message holds at least one record, so message k starts at record k or
        # later: the message holding record ``seq`` is at most message ``seq``
        lo, hi = 1, min(self._stream_last, seq)
        while lo < hi:  # the last message whose first record is <= seq
            mid = (lo + hi + 1) // 2
            if await self._first_of(mid) <= seq:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # ---------------------------------------------------------------- append
    async def _append_rows(self, records: Sequence[Record] | Frames) -> tuple[int, bytes]:
        js = self._need()
        nc = self._nc
        if nc is None:  # set whenever the JetStream context is
            raise JournalError(f"journal {self.target} is not open")
        if self.readonly:
            raise JournalError(f"journal {self.target} is open read-only")
        rows = chain_rows(records, self.last_seq, self.last_hash)
        limit = self.max_message_bytes or max(4096, nc.max_payload - _HEADER_ROOM)
        async with self._lock:
            chunk: list[tuple[int, int, bytes, bytes]] = []
            size = 0
            for r in rows:
                n = _REC_SIZE + len(r[2])
                if chunk and size + n > limit:
                    await self._publish(js, chunk)
                    chunk, size = [], 0
                chunk.append(r)
                size += n
            if chunk:
                await self._publish(js, chunk)
        return rows[-1][0], rows[-1][3]

    async def _publish(self, js: JetStreamContext, rows: Sequence[StoredRow]) -> None:
        """Append one message of ``rows`` after stream message ``_stream_last``; on return
        it is acknowledged. Retries through a stream leader election (timeouts, no
        responders) for up to ``append_timeout``; a refusal of the guard is final."""
        from nats.js.errors import APIError

        body = encode_batch(rows)
        expect = self._stream_last
        headers = {
            "Nats-Expected-Last-Sequence": str(expect),
            "Exchange-Seqs": f"{rows[0][0]}-{rows[-1][0]}",
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.append_timeout
        last_err: BaseException | None = None
        while True:
            try:
                ack = await js.publish(
                    self.subject,
                    body,
                    timeout=self.timeout,
                    stream=self.stream,
                    headers=dict(headers),
                )
                if ack.seq != expect + 1:
                    raise JournalError(
                        f"journal {self.target}: batch stored as stream "
                        f"message {ack.seq}, expected {expect + 1}"
                    )
                break
            except APIError as e:
                if e.err_code != WRONG_LAST_SEQUENCE:
                    if e.code and e.code >= 500 and loop.time() < deadline:
                        last_err = e  # e.g. 503 no stream leader yet
                        await asyncio.sleep(0.2)
                        continue
                    raise JournalError(f"journal {self.target}: append refused: {e}") from e
                # the stream has a message after ``expect``: ours (an earlier attempt
                # whose acknowledgement was lost) or another writer's
                if await self._ours_at(expect + 1, rows):
                    break
                raise StaleWriterError(
                    f"journal {self.target}: stream {self.stream} was appended to by "
                    f"another writer after message {expect} (this writer's view ends at "
                    f"seq {self.last_seq}); nothing of seq {rows[0][0]}..{rows[-1][0]} "
                    f"was appended"
                ) from e
            except JournalError:
                raise
            except Exception as e:  # timeout, no responders, connection lost
                last_err = e
                if loop.time() >= deadline:
                    raise JournalError(
                        f"journal {self.target}: append of seq "
                        f"{rows[0][0]}..{rows[-1][0]} not acknowledged within "
                        f"{self.append_timeout:g} s: {e!r}"
                    ) from e
                await asyncio.sleep(0.2)
                # the message may have been stored though its ack was lost: the retry's
                # guard then refuses, and _ours_at finds it
        if last_err is not None:
            log.warning(
                "journal %s: batch %d..%d acknowledged after retrying (%r)",
                self.target,
                rows[0][0],
                rows[-1][0],
                last_err,
            )
        self._stream_last = expect + 1
        self._firsts[expect + 1] = rows[0][0]
        self._body_cache = None

    async def _ours_at(self, sseq: int, rows: Sequence[StoredRow]) -> bool:
        try:
            self._body_cache = None
            got = decode_batch(await self._body(sseq), sseq)
        except Exception:
            return False
        return [(r[0], bytes(r[3])) for r in got] == [(r[0], bytes(r[3])) for r in rows]

    # ---------------------------------------------------------------- read
    async def _read_rows(
        self, from_seq: int, limit: int, to_seq: int | None = None
    ) -> Sequence[StoredRow]:
        self._need()
        end = self.last_seq if to_seq is None else min(to_seq, self.last_seq)
        end = min(end, from_seq + limit - 1)
        if from_seq > end:
            return []
        s0 = await self._locate(from_seq)
        if not s0:
            return []
        rows: list[tuple[int, int, bytes, bytes]] = []
        next_sseq = s0
        msgs = self._messages(s0)
        try:
            async for sseq, body, pending in msgs:
                if self._take(rows, decode_batch(body, sseq), sseq, from_seq, end):
                    return rows
                next_sseq = sseq + 1
                if not pending:
                    # The consumer's server has nothing after this, yet the stream's leader
                    # said the log goes on: an ordered consumer may sit on a replica still
                    # catching up (a server just restarted). Read the rest from the leader.
                    break
        finally:
            await msgs.aclose()
        while next_sseq <= self._stream_last:
            if self._take(
                rows, decode_batch(await self._body(next_sseq), next_sseq), next_sseq, from_seq, end
            ):
                break
            next_sseq += 1
        return rows

    def _take(
        self,
        rows: list[tuple[int, int, bytes, bytes]],
        got: list[tuple[int, int, bytes, bytes]],
        sseq: int,
        from_seq: int,
        end: int,
    ) -> bool:
        """Add the records of one batch (stream message ``sseq``) in ``[from_seq, end]`` to
        ``rows``; True once ``end`` is reached."""
        self._firsts[sseq] = got[0][0]
        for r in got:
            if r[0] > end:
                return True
            if r[0] >= from_seq:
                rows.append(r)
        return got[-1][0] >= end

    async def _messages(self, start: int) -> AsyncGenerator[tuple[int, bytes, int], None]:
        """``(stream seq, body, messages pending after it)`` from stream message ``start``
        on, through an ordered push consumer (recreated by nats-py from the last sequence
        seen if a message is missed); stops when the caller does."""
        from nats.js import api

        js = self._need()
        q: asyncio.Queue[tuple[int, bytes, int]] = asyncio.Queue()

        async def cb(msg: Msg) -> None:
            md = msg.metadata
            await q.put((md.sequence.stream, msg.data, md.num_pending))

        try:
            sub = await self._retrying(
                lambda: js.subscribe(
                    self.subject,
                    stream=self.stream,
                    cb=cb,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    config=api.ConsumerConfig(opt_start_seq=start, ack_policy=api.AckPolicy.NONE),
                    pending_msgs_limit=4096,
                    pending_bytes_limit=256 << 20,
                ),
                "ordered consumer",
                timeout=self.timeout,
            )
        except JournalError as e:
            # Right after a server died the meta leader may still place a new consumer on
            # it, and the creation times out until the server is declared offline: read
            # message by message from the stream leader meanwhile (slower, never stuck).
            log.warning("journal %s: %s; reading message by message", self.target, e)
            for sseq in range(start, self._stream_last + 1):
                yield sseq, await self._body(sseq), self._stream_last - sseq
            return
        try:
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), self.timeout * 2)
                except asyncio.TimeoutError:
                    raise JournalError(
                        f"journal {self.target}: no message from stream "
                        f"{self.stream} within {self.timeout * 2:g} s"
                    ) from None
                yield item
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    async def _hash_at(self, seq: int) -> bytes | None:
        s = await self._locate(seq)
        if not s:
            return None
        for r in decode_batch(await self._body(s), s):
            if r[0] == seq:
                return bytes(r[3])
        return None

    # ---------------------------------------------------------------- snapshots
    @staticmethod
    def _name(seq: int) -> str:
        return f"snapshot-{seq:020d}"

    async def write_snapshot(self, seq: int, data: bytes) -> None:
        self._need()
        if self._obs is None or self.readonly:
            raise JournalError(f"journal {self.target} is open read-only")
        from nats.js import api

        data = bytes(data)
        h = await self._hash_at(seq)
        if h is None:
            raise JournalError(f"snapshot at seq {seq}: no such record in the log")
        desc = orjson.dumps(
            {"seq": seq, "chain_hash": h.hex(), "data_hash": hashlib.sha256(data).hexdigest()}
        ).decode()
        obs = self._obs
        await self._retrying(
            lambda: obs.put(
                self._name(seq), data, meta=api.ObjectMeta(name=self._name(seq), description=desc)
            ),
            f"snapshot {seq}",
        )
        if self.keep_snapshots > 0:
            rows = await self._snapshot_rows()
            for s, _c, _d in rows[self.keep_snapshots :]:
                try:
                    await obs.delete(self._name(s))
                except Exception as e:
                    log.warning("journal %s: old snapshot %d not deleted: %r", self.target, s, e)

    async def _snapshot_rows(self) -> Sequence[StoredRow]:
        from nats.js.errors import NotFoundError

        self._need()
        if self._obs is None:
            return []
        try:
            obs = self._obs
            infos = await self._retrying(lambda: obs.list(ignore_deletes=True), "snapshot list")
        except NotFoundError:
            return []
        rows: list[tuple[int, bytes, bytes]] = []
        for info in infos:
            if info.deleted or not (info.name or "").startswith("snapshot-"):
                continue
            try:
                d = orjson.loads(info.description or "")
                rows.append(
                    (int(d["seq"]), bytes.fromhex(d["chain_hash"]), bytes.fromhex(d["data_hash"]))
                )
            except Exception:
                log.warning(
                    "journal %s: snapshot object %s has no readable description; ignored",
                    self.target,
                    info.name,
                )
        rows.sort(reverse=True)
        return rows

    async def _snapshot_data(self, seq: int) -> bytes | None:
        from nats.js.errors import NotFoundError

        if self._obs is None:
            return None
        obs = self._obs
        for attempt in range(SNAPSHOT_READ_ATTEMPTS):
            try:
                res = await self._retrying(lambda: obs.get(self._name(seq)), f"snapshot {seq}")
                if res.data is None:
                    raise ValueError("snapshot object without data")
                return bytes(res.data)
            except NotFoundError:
                return None
            except JournalError:  # no answer (a leader election): not proof of damage
                raise
            except Exception as e:  # a digest mismatch: damaged, or read from a replica
                # still catching up (the object store reads through a consumer that may sit
                # on a server just restarted): read again before calling it damaged
                if attempt + 1 == SNAPSHOT_READ_ATTEMPTS:
                    log.warning("journal %s: snapshot %d unreadable: %r", self.target, seq, e)
                    return None
                await asyncio.sleep(0.5 * (attempt + 1))
        return None

    async def snapshot_seqs(self) -> list[int]:
        return sorted(r[0] for r in await self._snapshot_rows())

    # ---------------------------------------------------------------- repair / admin
    async def _delete_from(self, seq: int) -> tuple[int, int]:
        raise JournalError(
            f"journal {self.target}: a JetStream stream cannot drop its tail (deletes are "
            f"denied, and a deleted message would leave a gap); restore the stream from a "
            f"copy instead"
        )

    async def drop(self) -> None:
        """Delete this journal's stream and snapshot bucket (tests, throw-away markets)."""
        from nats.js.errors import NotFoundError

        js = self._need()
        drops: tuple[Callable[[], Awaitable[bool]], ...] = (
            lambda: js.delete_stream(self.stream),
            lambda: js.delete_object_store(self.bucket),
        )
        for f in drops:
            try:
                await f()
            except NotFoundError:
                pass

    async def stream_info(self) -> StreamInfo:
        return await self._need().stream_info(self.stream)
