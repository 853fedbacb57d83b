"""CoreRunner: sequencing, group commit, snapshots and recovery around the core.

::

    runner = CoreRunner(build_exchange(), open_journal("data/journal.sqlite"))
    await runner.start()                 # latest snapshot + replay of the log after it
    if runner.is_empty:
        for cmd in genesis_commands(settings):
            await runner.submit(cmd)
    events = await runner.submit(PlaceOrder(...))   # returns once the command is durable
    await runner.stop()                  # flush, final snapshot, close

``submit`` gives a command its envelope - ``seq`` (last + 1) and ``ts`` (the clock, strictly
increasing), kept beside the command, never written onto it - encodes its record into the
current batch (a command that cannot be encoded is refused here, before the
core sees it) and applies it to the core at once, ``apply(cmd, seq, ts)`` (so the next
command sees its effect). That
per-command path is the submitter's: ``_accel.Submitter`` in C where the extension is built,
``_PySubmitter`` (the reference, the same steps) otherwise. The commit loop writes one batch
at a time; everything submitted while a batch is being written goes into the next one (group
commit: at least one batch per event-loop tick, larger under load). A command's events are
returned - and listeners called - only after its batch is durable. Nothing is acknowledged
that a restart could lose.

If the journal fails to write, the runner stops accepting commands (:class:`RunnerFailed`):
the core has applied commands the log does not hold, so the process must restart and recover.

Listeners see the commands submitted while they are registered: add them before the first
submit. Do not mutate a command after submitting it. Snapshots are serialised in a forked
child on Linux (``fork_snapshots``); ``snapshot_bytes``/``restore_bytes`` are the snapshot
format (orjson of ``Exchange.to_state()``; ``Exchange.restore`` reads it too).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import sys
import time
from itertools import chain

import orjson
from typing import TYPE_CHECKING, Any, Callable

from ..core.book import Order
from ..core.commands import Command, SnapshotMarker
from ..core.exchange import SequenceError
from .base import _STAMP, Frames, Journal, JournalCorruptError, JournalError, widen_pipe
from .codec import decode_payload, payload_line

if TYPE_CHECKING:
    from ..core.book import OrderBook
    from ..core.exchange import Exchange
    from .checkpoint import Checkpoint

try:  # the submit path in C (_accel.c), built with the package where a compiler is
    from ._accel import Submitter as _CSubmitter, rows_json as _rows_json
except ImportError:  # pragma: no cover - an install without the extension
    _CSubmitter = _rows_json = None

log = logging.getLogger("exchange.journal.runner")

#: a command's events (``Exchange.apply``), or the exception the core raised on it
Result = list[Any] | Exception
#: ``fn(cmd, seq, ts, events)``, told of every durable command with its envelope
Listener = Callable[[Command, int, int, list[Any]], object]
#: what a batch keeps of each command for the listeners: (cmd, seq, ts, events)
Applied = tuple[Command, int, int, Result]


class RunnerFailed(JournalError):
    """The runner cannot accept commands: it is stopped, or a journal write failed."""


_SNAP_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _orders_json(book: OrderBook) -> list[Any] | orjson.Fragment:
    """A book's resting orders for the snapshot: the JSON of ``[o.to_state() for o in
    book.iter_orders()]``, written by C straight from the orders' slots (no list per order;
    ~10x faster on a deep book) - or those lists, where C does not take a value."""
    rows = _rows_json(chain(book.bids.values(), book.asks.values()), Order, Order.STATE_FIELDS)
    if rows is None:
        return [o.to_state() for o in book.iter_orders()]
    return orjson.Fragment(rows)


def snapshot_bytes(ex: Exchange) -> bytes:
    """The core's state (``Exchange.to_state``) as canonical JSON, via orjson (several
    times faster than ``Exchange.snapshot``'s json.dumps on a large book), the orders
    encoded by C where the extension is built: the same bytes either way."""
    try:
        return orjson.dumps(
            ex.to_state(encode_orders=_orders_json if _rows_json else None), option=_SNAP_OPTS
        )
    except TypeError:  # something orjson cannot write: the core's own encoder
        data: bytes = ex.snapshot()
        return data


def restore_bytes(ex: Exchange, data: bytes) -> None:
    """Load a snapshot written by :func:`snapshot_bytes` (or ``Exchange.snapshot``)."""
    ex.load_state(orjson.loads(data))


class _Batch:
    __slots__ = ("frames", "applied", "future", "snapshot", "snapshot_written", "t0")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.frames = Frames()  # the records, appended as they are submitted
        self.t0 = 0.0  # time.monotonic() when its first record came in
        self.applied: list[Applied] = []  # (cmd, seq, ts, events)
        self.future: asyncio.Future[None] = loop.create_future()
        # (seq, the state's bytes, or a future of them from a forked child)
        self.snapshot: tuple[int, bytes | asyncio.Future[bytes]] | None = None
        self.snapshot_written: asyncio.Future[None] | None = None


class _PySubmitter:
    """The submit path: envelope, apply and frame each command. The pure-Python reference of
    ``_accel.Submitter``, which does the same steps in C (tests run both); the runner uses
    the C one where the extension is built (``C_SUBMITTER``).

    The runner sets the callables once and the batch fields whenever it opens a batch; it
    reads and writes the counters (``last_ts``, ``since_snapshot``, ``accepting``)."""

    __slots__ = (
        "ex",
        "apply",
        "clock",
        "fallback_line",
        "on_first",
        "on_snapshot",
        "on_error",
        "refuse",
        "seq_error",
        "frames",
        "lines",
        "stamps",
        "future",
        "applied",
        "last_ts",
        "since_snapshot",
        "snapshot_every",
        "accepting",
    )

    ex: Exchange
    apply: Callable[[Command, int, int], list[Any]]
    clock: Callable[[], int]
    fallback_line: Callable[[Command], bytes]
    on_first: Callable[[], None]
    on_snapshot: Callable[[], None]
    on_error: Callable[[Command, int, BaseException], None]
    refuse: Callable[[], None]
    seq_error: type[Exception]
    frames: Frames
    lines: bytearray
    stamps: bytearray
    future: asyncio.Future[None]
    applied: list[Applied] | None
    last_ts: int
    since_snapshot: int
    snapshot_every: int
    accepting: bool

    def __init__(self) -> None:
        self.last_ts = self.since_snapshot = self.snapshot_every = 0
        self.accepting = False

    def submit(self, cmd: Command) -> tuple[Result, asyncio.Future[None]]:
        if not self.accepting:
            self.refuse()
            raise RuntimeError("runner not accepting commands")
        # the envelope, beside the command: the command object is not written to
        seq = self.ex.last_seq + 1
        ts = self.clock()
        if ts <= self.last_ts:
            ts = self.last_ts + 1
        self.last_ts = ts
        # the payload first: a command that cannot be encoded is refused before the core
        # sees it, and the journal holds the command as submitted
        lines = self.lines
        before = len(lines)
        lines += self.fallback_line(cmd)  # the orjson encoder: this is the reference path
        result: Result
        try:
            try:
                result = self.apply(cmd, seq, ts)
            except self.seq_error:
                raise
            except Exception as e:  # a core bug: journal it anyway, replay reproduces it
                self.on_error(cmd, seq, e)
                result = e
        except BaseException:  # not journaled: keep the batch's payloads and stamps in step
            del lines[before:]
            raise
        stamps = self.stamps
        stamps += _STAMP.pack(ts)
        if len(stamps) == 8:  # the batch's first record
            self.frames.first_seq = seq
            self.on_first()
        if self.applied is not None:
            self.applied.append((cmd, seq, ts, result))
        future = self.future
        self.since_snapshot += 1
        if self.since_snapshot >= self.snapshot_every:
            self.on_snapshot()
        return result, future


C_SUBMITTER = _CSubmitter is not None


def _submitter_field(name: str) -> Any:
    """A CoreRunner attribute that is its submitter's ``name``."""
    return property(
        lambda self: getattr(self._sub, name), lambda self, v: setattr(self._sub, name, v)
    )


class CoreRunner:
    def __init__(
        self,
        exchange: Exchange,
        journal: Journal,
        *,
        snapshot_every_commands: int = 100_000,
        snapshot_every_seconds: float = 300.0,
        clock: Callable[[], int] = time.time_ns,
        verify: str = "full",
        gc_freeze: bool = False,
        fork_snapshots: bool | None = None,
        c_submitter: bool = True,
        use_snapshots: bool = True,
        checkpoint: Checkpoint | None = None,
        adopt_hash: bytes | None = None,
    ) -> None:
        """``verify``: "full" checks the whole hash chain on start (default); "tail" only the
        records replayed after the snapshot (the snapshot is still checked to sit on the
        chain). ``gc_freeze``: move the recovered state - and, after each snapshot, everything
        alive - out of the cyclic GC's reach (``gc.freeze``), so full collections do not
        walk a book of 10^5 orders. Off by default: it is process-wide, and cyclic garbage
        alive at a freeze (an Exchange and its modules reference each other) is never
        collected - for a server with one runner per process only. ``c_submitter``: use the
        submit path in C where it is built (False: the pure-Python reference, for tests).
        ``use_snapshots``: False recovers from genesis, replaying the whole log without
        loading any snapshot (``serve --recover-from-genesis``: the way past a snapshot
        that fails its proof). ``checkpoint``: a :class:`~.checkpoint.Checkpoint` - the
        signed chain head, checked on start, written after every snapshot and on stop.
        ``adopt_hash``: ``exchange`` is not fresh but followed this journal up to its
        ``last_seq`` (a hot standby's :class:`~.follower.Follower`), whose record there has
        this chain hash; start continues it - the records appended since are replayed -
        instead of recovering from a snapshot."""
        self.exchange = exchange
        self.journal = journal
        # The submit path's state lives in the submitter: the counters below (_last_ts,
        # _since_snapshot, _accepting, snapshot_every_commands) are views of it.
        # the C Submitter has _PySubmitter's fields and submit
        sub: _PySubmitter = (_CSubmitter if c_submitter and _CSubmitter else _PySubmitter)()
        self._sub = sub
        sub.ex, sub.apply, sub.clock = exchange, exchange.apply, clock
        sub.fallback_line, sub.seq_error = payload_line, SequenceError
        sub.on_first, sub.on_snapshot = self._wake_commit_loop, self._snapshot_now
        sub.on_error, sub.refuse = self._core_raised, self._refuse
        sub.applied = None
        # the instance attribute skips a Python frame per command; the method below is the
        # same call, documented
        self.submit_nowait = sub.submit  # type: ignore[method-assign]  # per instance, on purpose
        self.snapshot_every_commands = snapshot_every_commands
        self.snapshot_every_seconds = snapshot_every_seconds
        self.clock = clock
        self.verify = verify
        self.use_snapshots = use_snapshots
        self.checkpoint = checkpoint
        self.adopt_hash = adopt_hash
        self.gc_freeze = gc_freeze
        # serialise snapshots in a forked child (Linux): no pause of the event loop
        self.fork_snapshots = (
            hasattr(os, "fork") and sys.platform.startswith("linux")
            if fork_snapshots is None
            else fork_snapshots
        )
        self._listeners: list[Listener] = []
        self._durable_seq = 0
        self._writing: _Batch | None = None  # the batch the journal is making durable
        self._snapshot_timer: asyncio.TimerHandle | None = None
        self._snapshot_task: asyncio.Task[None] | None = None  # the latest snapshot being stored
        self._batch: _Batch | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._stopping = False
        self.recovery: dict[str, Any] = {}
        self.recovery_skipped: list[int] = []  # unsealed snapshots passed over on start
        self._last_snapshot_size = 0  # bytes of the latest snapshot serialised (or loaded)
        self.snapshots_forked = 0  # snapshots serialised in a forked child since start
        self.snapshots_inline = 0  # ... and inline, on the event loop
        self.batches = 0  # batches made durable (group commits) since start
        self.batched_records = 0

    # ---------------------------------------------------------------- properties
    # views of the submitter's state (the submit path reads and writes it there)
    _last_ts = _submitter_field("last_ts")
    _since_snapshot = _submitter_field("since_snapshot")
    _accepting = _submitter_field("accepting")

    @property
    def snapshot_every_commands(self) -> int:
        return self._sub.snapshot_every

    @snapshot_every_commands.setter
    def snapshot_every_commands(self, v: int) -> None:
        self._sub.snapshot_every = min(int(v), 2**62)

    # logs with at least this many records before the snapshot are chain-checked in a child
    # process, in parallel with the restore and the replay of the tail
    child_check_min = 50_000

    @property
    def is_empty(self) -> bool:
        """Nothing was ever journaled (or submitted): the caller submits genesis."""
        return bool(self.exchange.last_seq == 0)

    @property
    def journal_lag(self) -> int:
        """Commands applied to the core but not yet durable."""
        lag: int = self.exchange.last_seq - self._durable_seq
        return lag

    @property
    def journal_lag_seconds(self) -> float:
        """How long the oldest command applied but not yet durable has waited (0.0: none):
        the batch being written, else the one filling up."""
        b = self._writing
        if b is None:
            b = self._batch
            if b is None or not b.frames.count:
                return 0.0
        return time.monotonic() - b.t0

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    def add_listener(self, fn: Listener) -> None:
        """``fn(cmd, seq, ts, events)`` for every command (snapshot markers included) once it
        is durable, in seq order, on the event loop; ``seq``/``ts`` are its envelope.
        Exceptions are logged, not raised."""
        self._listeners.append(fn)
        if self._batch is not None and self._sub.applied is None:
            self._sub.applied = self._batch.applied

    def _open_batch(self, loop: asyncio.AbstractEventLoop) -> _Batch:
        """A new current batch; the submitter frames into it from now on."""
        b = self._batch = _Batch(loop)
        sub = self._sub
        sub.frames, sub.lines, sub.stamps = b.frames, b.frames.lines, b.frames.ts
        sub.future = b.future
        sub.applied = b.applied if self._listeners else None
        return b

    def _current(self) -> tuple[_Batch, asyncio.Event]:
        """The batch filling up and the commit loop's wake-up (``start`` made them)."""
        b, wake = self._batch, self._wake
        if b is None or wake is None:
            raise RunnerFailed("runner not started")
        return b, wake

    def _wake_commit_loop(self) -> None:
        """The submitter's ``on_first``: the first record entered the current batch."""
        b, wake = self._current()
        b.t0 = time.monotonic()
        wake.set()

    def _refuse(self) -> None:
        raise RunnerFailed(
            "runner not accepting commands"
            + (f": journal write failed: {self._failed!r}" if self._failed else "")
        )

    @staticmethod
    def _core_raised(cmd: Command, seq: int, exc: BaseException) -> None:
        log.error("core raised on seq %d (%s)", seq, cmd.TYPE, exc_info=exc)

    # ---------------------------------------------------------------- start / recovery
    async def start(self) -> None:
        """Open the journal and recover: the newest valid snapshot, then the log after it.
        Raises :class:`JournalCorruptError` (journal closed again) on a damaged log."""
        await self.journal.open()
        try:
            await self._recover()
        except BaseException:
            await self.journal.close()
            raise
        if self.gc_freeze:
            gc.freeze()
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._open_batch(loop)
        self._accepting = True
        self._task = asyncio.create_task(self._commit_loop(), name="journal-commit")
        self._arm_snapshot_timer()

    async def _choose_snapshot(self) -> tuple[int, bytes, int, str] | None:
        """The newest stored snapshot that matches the log *and* has a seal in it:
        ``(seq, data, seal_seq, state_hash)`` or None. A snapshot row proves nothing by
        itself - its data_hash is computed over its own data, which whoever can write the
        file can recompute; the seal record after its marker is in the hash chain. A
        snapshot without a seal (written before seals existed) is not used: the start
        falls back to an older sealed one, or to the log from genesis."""
        j = self.journal
        skipped: list[int] = []
        self.recovery_skipped = skipped
        if not self.use_snapshots:
            return None
        async for seq, data in j.snapshots():
            seal = await find_seal(j, seq)
            if seal is not None:
                return seq, data, seal[0], seal[1]
            log.warning(
                "journal %s: snapshot at seq %d has no seal in the log (written by an "
                "older version, or not by this exchange); not used",
                j.target,
                seq,
            )
            skipped.append(seq)
        return None

    async def _adopt(self) -> None:
        """Continue a core that followed this journal: check it sits on the chain, replay
        what was appended since it last read."""
        t0 = time.perf_counter()
        j, ex = self.journal, self.exchange
        refresh = getattr(j, "refresh", None)
        if refresh is not None:
            await refresh()
        if await j.prev_hash(ex.last_seq + 1) != self.adopt_hash:
            raise JournalCorruptError(
                ex.last_seq, "the followed state is not on this journal's hash chain"
            )
        replayed = await replay_into(ex, j, ex.last_seq + 1)
        self._durable_seq = ex.last_seq
        self._last_ts = ex.now
        self._since_snapshot = replayed
        self.recovery_skipped = []
        self.recovery = {
            "snapshot_seq": 0,
            "replayed": replayed,
            "last_seq": ex.last_seq,
            "truncated": [],
            "adopted": True,
            "snapshot_proof": "followed (state hashes checked at every seal)",
            "unsealed_snapshots_skipped": [],
            "checkpoint_seq": None,
            "snapshot_load_s": 0.0,
            "replay_s": time.perf_counter() - t0,
            "chain_check_wait_s": 0.0,
            "chain_check": "followed",
            "seconds": time.perf_counter() - t0,
        }
        log.info(
            "journal %s: took over a followed core at seq %d (%d replayed, %.2f s)",
            j.target,
            ex.last_seq,
            replayed,
            self.recovery["seconds"],
        )

    async def _recover(self) -> None:
        if self.adopt_hash is not None:
            return await self._adopt()
        t0 = time.perf_counter()
        j = self.journal
        ex = self.exchange
        if ex.last_seq != 0:
            raise JournalError("CoreRunner needs a fresh Exchange (last_seq 0) to recover into")
        # the signed head first: a log cut short or rewritten must not be trusted at all
        cp_seq = await self.checkpoint.check(j) if self.checkpoint is not None else None
        snap = await self._choose_snapshot()
        snap_seq = 0
        checker = None
        t_verify = 0.0
        failed = True
        try:
            if snap is not None:
                snap_seq, data, seal_seq, sealed_hash = snap
                if self.verify == "full":
                    # The records the snapshot stands for are checked in a child process on
                    # the other core while this one restores and replays the tail (both are
                    # CPU-bound Python); inline when the journal cannot be reopened elsewhere.
                    checker = await _start_chain_check(j, snap_seq, self.child_check_min)
                    if checker is None:
                        tv = time.perf_counter()
                        await j.verify_chain(1, snap_seq)
                        t_verify = time.perf_counter() - tv
                restore_bytes(ex, data)
                self._last_snapshot_size = len(data)
                # the proof: the state as loaded, serialised again, hashes to what the seal
                # in the chain recorded (one more serialisation, ~0.3 s at 50,000 orders)
                if state_digest(ex) != sealed_hash:
                    raise JournalCorruptError(
                        snap_seq,
                        f"snapshot at seq {snap_seq} does not match the state hash "
                        f"its seal (seq {seal_seq}) records: the snapshot was altered; refusing "
                        f"to start from it. Restart with --recover-from-genesis to rebuild the "
                        f"state from the log alone (and run `journal verify`)",
                    )
                if ex.last_seq != snap_seq:
                    raise JournalError(
                        f"snapshot at seq {snap_seq} holds state of seq {ex.last_seq}"
                    )
            t1 = time.perf_counter()
            replayed = await replay_into(ex, j, snap_seq + 1)
            failed = False
        finally:
            if checker is not None:
                tv = time.perf_counter()
                try:
                    if not failed:  # else its verdict does not matter: just stop it
                        await _finish_chain_check(checker)
                finally:
                    if checker.returncode is None:
                        checker.kill()
                        await checker.wait()
                t_verify = time.perf_counter() - tv
        self._durable_seq = ex.last_seq
        self._last_ts = ex.now
        self._since_snapshot = replayed
        self.recovery = {
            "snapshot_seq": snap_seq,
            "replayed": replayed,
            "last_seq": ex.last_seq,
            "truncated": list(j.truncated),
            "snapshot_proof": "sealed"
            if snap_seq
            else ("not used (--recover-from-genesis)" if not self.use_snapshots else "none"),
            "unsealed_snapshots_skipped": list(self.recovery_skipped),
            "checkpoint_seq": cp_seq,
            "snapshot_load_s": t1 - t0,
            "replay_s": time.perf_counter() - t1,
            "chain_check_wait_s": t_verify,
            "chain_check": ("child process" if checker else "inline")
            if self.verify == "full" and snap_seq
            else "replayed records only",
            "seconds": time.perf_counter() - t0,
        }
        log.info(
            "journal %s recovered: snapshot seq %d, %d commands replayed, last seq %d (%.2f s)",
            j.target,
            snap_seq,
            replayed,
            ex.last_seq,
            self.recovery["seconds"],
        )

    # ---------------------------------------------------------------- submit
    def submit_nowait(self, cmd: Command) -> tuple[Result, asyncio.Future[None]]:
        """Envelope, encode, apply and enqueue ``cmd``; return ``(events, durable)`` where
        ``durable`` is a future resolved when the command's batch is durable. The events must
        not be acknowledged before that. If the core raises (other than a SequenceError), the
        command is journaled anyway (replay reproduces it), the error is logged and returned
        in place of the events; :meth:`submit` raises it. RunnerFailed when the runner is
        not accepting commands. (Each instance binds this name to its submitter's
        ``submit``, which does exactly this without a Python frame: _PySubmitter.)"""
        return self._sub.submit(cmd)

    async def submit(self, cmd: Command) -> list[Any]:
        """Apply ``cmd`` and return its events once it is durable."""
        result, fut = self.submit_nowait(cmd)
        await asyncio.shield(fut)
        if isinstance(result, Exception):
            raise result
        return result

    def _snapshot_now(self) -> None:
        ex = self.exchange
        m = SnapshotMarker()
        seq = ex.last_seq + 1
        ts = self._last_ts = self._last_ts + 1
        ex.apply(m, seq, ts)
        b, wake = self._current()
        data: bytes | asyncio.Future[bytes] | None = (
            self._fork_snapshot(ex) if self._snapshot_in_child(ex) else None
        )
        if data is None:
            data = snapshot_bytes(ex)
            self._last_snapshot_size = len(data)
            self.snapshots_inline += 1
            # serialised already: the marker's own record seals the snapshot (the record is
            # encoded after apply, and sealing changes nothing the core holds)
            m.of_seq, m.state_hash = seq, hashlib.sha256(data).hexdigest()
        else:
            self.snapshots_forked += 1
        first = b.frames.add(seq, ts, payload_line(m)) == 1
        if self._listeners:
            b.applied.append((m, seq, ts, []))
        b.snapshot = (seq, data)
        if b.snapshot_written is None:
            b.snapshot_written = asyncio.get_running_loop().create_future()
        if first:
            wake.set()
        self._since_snapshot = 0
        self._arm_snapshot_timer()

    # A fork is not free: fork() blocked ~4-6 ms for a ~120 MB process here, and every page
    # the core writes afterwards takes a fault (and a copy while the child lives) - with
    # reference counting nearly every page it touches: +10-60 ms of CPU to touch those
    # 120 MB once. Serialising ~2,000 resting orders (~190 KB) inline takes ~1.5-3 ms;
    # 14,000 (~1 MB) take ~30 ms. So small states are serialised inline, large ones in a
    # child (ADR 0002).
    fork_min_orders = 4_000  # resting orders at which a snapshot is serialised in a child
    fork_min_bytes = 512 << 10  # ... or when the previous snapshot was at least this large

    def _snapshot_in_child(self, ex: Exchange) -> bool:
        if not self.fork_snapshots:
            return False
        if self._last_snapshot_size >= self.fork_min_bytes:
            return True
        return sum(len(b.orders) for b in ex.books.values()) >= self.fork_min_orders

    def _arm_snapshot_timer(self) -> None:
        """Time-based snapshots: ``snapshot_every_seconds`` after the last snapshot (or the
        start), one is taken if any command came in since. A timer, not a clock read per
        command on the submit path."""
        if self._snapshot_timer is not None:
            self._snapshot_timer.cancel()
            self._snapshot_timer = None
        secs = self.snapshot_every_seconds
        if self._accepting and secs and 0 < secs < float("inf"):
            self._snapshot_timer = asyncio.get_running_loop().call_later(
                secs, self._snapshot_timer_fired
            )

    def _snapshot_timer_fired(self) -> None:
        self._snapshot_timer = None
        if self._accepting and self._since_snapshot > 0:
            self._snapshot_now()
        else:
            self._arm_snapshot_timer()

    def _fork_snapshot(self, ex: Exchange) -> asyncio.Future[bytes] | None:
        """Serialise the state in a forked child (a copy-on-write image of this instant), so
        the event loop does not pause for it: returns a future of the bytes, or None when
        fork is not possible (then the caller serialises inline)."""
        try:
            r, w = os.pipe()
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError as e:
            os.close(r)
            os.close(w)
            log.warning("fork for a snapshot failed (%r); serialising inline", e)
            return None
        if pid == 0:  # the child: serialise, write, leave without any clean-up
            code = 1
            try:
                os.close(r)
                gc.disable()
                view = memoryview(snapshot_bytes(ex))
                while view:
                    view = view[os.write(w, view) :]
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        return _collect_child(pid, r)

    async def snapshot(self) -> int:
        """Take a snapshot now (a marker in the stream); return its seq once it is stored."""
        if not self._accepting:
            raise RunnerFailed("runner not accepting commands")
        self._snapshot_now()
        b, _ = self._current()
        assert b.snapshot is not None and b.snapshot_written is not None  # _snapshot_now's
        await asyncio.shield(b.snapshot_written)
        return b.snapshot[0]

    # ---------------------------------------------------------------- commit loop
    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        j = self.journal
        while True:
            b, wake = self._current()
            if not b.frames.count:
                if self._stopping:
                    return
                await wake.wait()
                wake.clear()
                continue
            nxt = self._open_batch(loop)
            self._writing = b
            try:
                await j.append(b.frames)
            except BaseException as e:
                self._accepting = False
                self._failed = e
                log.critical("journal write failed; no further commands accepted: %r", e)
                err = RunnerFailed(f"journal write failed: {e!r}")
                for fut in (b.future, nxt.future):
                    if not fut.done():
                        fut.set_exception(err)
                        fut.exception()  # mark retrieved: waiters get it via shield
                if isinstance(e, asyncio.CancelledError):
                    raise
                return
            self._durable_seq = b.frames.last_seq
            self._writing = None
            self.batches += 1
            self.batched_records += b.frames.count
            listeners = self._listeners
            if listeners:
                for cmd, seq, ts, events in b.applied:
                    if isinstance(events, Exception):
                        events = []
                    for fn in listeners:
                        try:
                            fn(cmd, seq, ts, events)
                        except Exception:
                            log.exception("journal listener %r failed on seq %d", fn, seq)
            b.future.set_result(None)
            if b.snapshot is not None:
                # stored beside the commit loop, not in it: the next batches need not wait
                # for the forked child to serialise the state
                self._snapshot_task = asyncio.create_task(
                    self._store_snapshot(b, self._snapshot_task), name="journal-snapshot"
                )

    async def _store_snapshot(self, b: _Batch, previous: asyncio.Task[None] | None) -> None:
        """Write ``b``'s snapshot once its batch is durable (it is: the commit loop starts
        this after), in order after ``previous``."""
        if previous is not None:
            await asyncio.wait([previous])
        snap, written = b.snapshot, b.snapshot_written
        assert snap is not None and written is not None  # _snapshot_now set both
        try:
            seq, data = snap
            if not isinstance(data, bytes):
                data = await data  # from the forked child
                self._last_snapshot_size = len(data)
                # the seal of a forked snapshot: a marker record with the snapshot's state
                # hash, durable before the row is stored - so every stored snapshot has one
                # in the chain (a crash between leaves a seal without a snapshot: harmless)
                seal = SnapshotMarker(of_seq=seq, state_hash=hashlib.sha256(data).hexdigest())
                _, durable = self._sub.submit(seal)
                self._since_snapshot = max(0, self._since_snapshot - 1)  # no new state
                await asyncio.shield(durable)
            await self.journal.write_snapshot(seq, data)
            await self._write_checkpoint()
            written.set_result(None)
            if self.gc_freeze:
                gc.freeze()
        except Exception as e:
            log.exception("snapshot at seq %d not written", seq)
            written.set_exception(e)
            written.exception()

    async def _write_checkpoint(self) -> None:
        """Sign the journal's durable end (its last_seq / last_hash are set together when a
        batch is durable) into the checkpoint file, off the event loop (an fsync)."""
        cp = self.checkpoint
        if cp is None:
            return
        j = self.journal
        await asyncio.to_thread(cp.write, j.last_seq, j.last_hash)

    # ---------------------------------------------------------------- stop
    async def stop(self, snapshot: bool = True) -> None:
        """Stop accepting commands, flush, take a final snapshot, close the journal."""
        if self._task is None:
            await self.journal.close()
            return
        if self._accepting and snapshot and self._since_snapshot > 0 and not self._failed:
            self._snapshot_now()
        # a snapshot being stored still needs its seal journaled: keep accepting until then
        # (the newest one: the current batch's, the one being written, or the stored task's;
        # they are stored in order, so the newest done means all done)
        pending = next(
            (
                b.snapshot_written
                for b in (self._batch, self._writing)
                if b is not None and b.snapshot is not None
            ),
            self._snapshot_task,
        )
        if pending is not None:  # (or until the commit loop fails: then there is no seal)
            await asyncio.wait([pending, self._task], return_when=asyncio.FIRST_COMPLETED)
        self._accepting = False
        self._arm_snapshot_timer()  # cancels it
        self._stopping = True
        self._current()[1].set()
        try:
            await self._task
        finally:
            self._task = None
            if self._snapshot_task is not None:
                await asyncio.wait([self._snapshot_task])
                self._snapshot_task = None
            try:
                if self._failed is None:  # everything submitted is durable: sign the end
                    await self._write_checkpoint()
            finally:
                await self.journal.close()


async def _start_chain_check(
    journal: Journal, to_seq: int, min_records: int
) -> asyncio.subprocess.Process | None:
    """Verify the chain 1..to_seq in a child interpreter (``python -m
    exchange.journal.check``); returns an awaitable process handle, or None."""
    spec = getattr(journal, "spec", None)
    if spec is None or to_seq < min_records:  # small logs: not worth a process
        return None
    import json
    import os
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exchange.journal.check",
            spec[0],
            json.dumps(spec[1]),
            str(to_seq),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except Exception as e:  # no processes here: check inline
        log.warning("chain check in a child process unavailable (%r); checking inline", e)
        return None


async def _finish_chain_check(proc: asyncio.subprocess.Process) -> None:
    import json

    out, err = await proc.communicate()
    try:
        res = json.loads(out.decode().strip().splitlines()[-1])
    except Exception:
        raise JournalError(
            f"chain check process failed (exit {proc.returncode}): {err.decode()[-500:]}"
        ) from None
    if "corrupt_seq" in res:
        raise JournalCorruptError(res["corrupt_seq"], res["reason"])
    if "error" in res:
        raise JournalError(res["error"])


def _collect_child(pid: int, fd: int) -> asyncio.Future[bytes]:
    """A future of a forked snapshot child's output: the pipe read to EOF by the event loop
    (``add_reader``; not a thread, which would need the GIL back after every read), then the
    child reaped. Fails with JournalError if the child did not exit cleanly."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()
    chunks: list[bytes] = []
    widen_pipe(fd)
    os.set_blocking(fd, False)

    def done(err: BaseException | None) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        _, status = os.waitpid(pid, 0)  # the child closed its end: it is exiting
        if err is None and (not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0):
            err = JournalError(f"snapshot child {pid} failed (status {status})")
        if not fut.done():
            if err is None:
                fut.set_result(b"".join(chunks))
            else:
                fut.set_exception(err)

    def readable() -> None:
        try:
            while True:
                c = os.read(fd, 1 << 20)
                if not c:
                    done(None)
                    return
                chunks.append(c)
        except BlockingIOError:
            pass
        except OSError as e:
            done(JournalError(f"reading snapshot child {pid}: {e!r}"))

    loop.add_reader(fd, readable)
    return fut


def state_digest(ex: Exchange) -> str:
    """SHA-256 (hex) of the state as a snapshot holds it (:func:`snapshot_bytes`): what a
    seal records and what a start recomputes after loading the snapshot."""
    return hashlib.sha256(snapshot_bytes(ex)).hexdigest()


_SEAL_PREFIX = b'["snapshot_marker",'


async def find_seal(journal: Journal, snap_seq: int) -> tuple[int, str] | None:
    """The seal of the snapshot at ``snap_seq``: ``(seal seq, state hash)`` from the first
    ``snapshot_marker`` record at or after it with ``of_seq == snap_seq`` (chain-verified as
    it is read), or None. A snapshot serialised inline is sealed by its own marker; a forked
    one by a marker journaled once the child's bytes are in - usually a few hundred to a
    few thousand records later - so the scan stops early; for an unsealed snapshot it reads
    the whole tail (once, after an upgrade)."""
    async for rows in journal.read_rows(snap_seq):
        for seq, _ts, p, _h in rows:
            if bytes(p[: len(_SEAL_PREFIX)]) == _SEAL_PREFIX:
                d = orjson.loads(p)
                if len(d) >= 3 and d[1] == snap_seq and isinstance(d[2], str):
                    return seq, d[2]
    return None


async def restore_proven_snapshot(
    ex: Exchange, journal: Journal, max_seq: int | None = None
) -> int:
    """For offline readers (``journal replay``, reports): restore into ``ex`` the newest
    snapshot at or before ``max_seq`` that has a seal in the log and matches it; return its
    seq (0: none usable, replay from genesis). Unsealed snapshots are skipped; one that does
    not match its seal raises JournalCorruptError, as a start does."""
    async for seq, data in journal.snapshots(max_seq):
        seal = await find_seal(journal, seq)
        if seal is None:
            continue
        restore_bytes(ex, data)
        if state_digest(ex) != seal[1]:
            raise JournalCorruptError(
                seq,
                f"snapshot at seq {seq} does not match the state "
                f"hash its seal (seq {seal[0]}) records",
            )
        return seq
    return 0


async def replay_into(
    ex: Exchange, journal: Journal, from_seq: int = 1, to_seq: int | None = None
) -> int:
    """Apply the log's records ``from_seq..to_seq`` to ``ex``; return how many. A core
    exception on a record is logged and replay goes on, exactly as it went live."""
    n = 0
    apply = ex.apply
    loads = orjson.loads
    async for rows in journal.read_rows(from_seq, to_seq):
        for seq, ts, p, _h in rows:
            cmd = decode_payload(loads(p))
            try:
                apply(cmd, seq, ts)
            except SequenceError:
                raise
            except Exception:
                log.warning(
                    "core raised on replay of seq %d (%s), as it did live",
                    seq,
                    cmd.TYPE,
                    exc_info=True,
                )
        n += len(rows)
    return n
