"""A hot standby's core: follow a journal that another process writes, and check it.

    f = Follower(build_exchange(), open_journal("nats://.../MARKET"))
    await f.start()            # the newest proven snapshot, then the log after it
    await f.step()             # apply what was appended since (chain-verified)
    runner = CoreRunner(f.exchange, f.journal, adopt_hash=f.head_hash)   # take over

Every record is read through the hash chain (``Journal.read_rows``) and applied as replay
does. At every snapshot the leader took, the follower checks that its own state is the
leader's: a snapshot marker serialised inline carries the state hash it seals; a marker
whose snapshot was serialised in a forked child is sealed by a later record, so the
follower hashes its state at the marker and compares when the seal arrives. A mismatch is
:class:`FollowerDiverged`: the standby must not take over from that state (a fresh
recovery from the log is the way back).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from typing import Any

from ..core.exchange import Exchange, SequenceError
from .base import Journal, JournalCorruptError
from .codec import decode_payload
from .runner import _SEAL_PREFIX, restore_proven_snapshot, state_digest

log = logging.getLogger("exchange.journal.follower")


class FollowerDiverged(JournalCorruptError):
    """The followed state does not hash to what the leader sealed at a snapshot."""


class Follower:
    def __init__(self, exchange: Exchange, journal: Journal) -> None:
        self.exchange = exchange
        self.journal = journal
        self.head_hash = b""  # chain hash of the last record applied
        self.seals_checked = 0
        self.applied = 0
        self.lag_seq = 0  # records behind the log's end at the last step
        self._pending: dict[int, str] = {}  # marker seq -> state hash there (forked seals)

    async def start(self) -> None:
        """Open the journal; load the newest proven snapshot and replay the rest."""
        j = self.journal
        await j.open()
        t0 = time.perf_counter()
        await restore_proven_snapshot(self.exchange, j)
        self.head_hash = await j.prev_hash(self.exchange.last_seq + 1)
        await self._apply(j.last_seq)
        log.info(
            "follower of %s at seq %d (%.2f s)",
            j.target,
            self.exchange.last_seq,
            time.perf_counter() - t0,
        )

    async def step(self) -> int:
        """Apply the records appended since the last step; return how many."""
        j = self.journal
        refresh = getattr(j, "refresh", None)
        if refresh is not None:
            await refresh()
        return await self._apply(j.last_seq)

    async def _apply(self, to_seq: int) -> int:
        ex = self.exchange
        n0 = self.applied
        if to_seq <= ex.last_seq:
            self.lag_seq = 0
            return 0
        apply = ex.apply
        loads = orjson.loads
        async for rows in self.journal.read_rows(ex.last_seq + 1, to_seq):
            for seq, ts, p, h in rows:
                d = loads(p)
                cmd = decode_payload(d)
                try:
                    apply(cmd, seq, ts)
                except SequenceError:
                    raise
                except Exception:  # as it did live (and on replay)
                    log.warning(
                        "core raised on seq %d (%s), as it did live", seq, cmd.TYPE, exc_info=True
                    )
                if bytes(p[: len(_SEAL_PREFIX)]) == _SEAL_PREFIX:
                    self._check_seal(seq, d)
                self.head_hash = bytes(h)
                self.applied += 1
        self.lag_seq = max(0, self.journal.last_seq - ex.last_seq)
        return self.applied - n0

    def _check_seal(self, seq: int, d: list[Any]) -> None:
        of_seq = d[1] if len(d) > 1 else None
        sealed = d[2] if len(d) > 2 else None
        if not of_seq:  # a plain marker: a snapshot taken in a child, sealed later
            self._pending[seq] = state_digest(self.exchange)
            return
        mine = state_digest(self.exchange) if of_seq == seq else self._pending.pop(of_seq, None)
        if mine is None:  # the marker was before this follower started
            return
        if mine != sealed:
            raise FollowerDiverged(
                of_seq,
                f"the followed state at seq {of_seq} hashes to "
                f"{mine[:16]}..., the leader sealed {str(sealed)[:16]}"
                f"... (seal at seq {seq}): this standby diverged",
            )
        self.seals_checked += 1

    async def run(self, stop: asyncio.Event, interval: float = 0.1) -> None:
        """Step every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.step()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
