"""A signed checkpoint of the journal's chain head, kept outside the journal.

    cp = Checkpoint("/var/lib/carbon-exchange/journal.checkpoint", key)   # key: bytes
    CoreRunner(ex, journal, checkpoint=cp)

The runner writes ``{"seq", "hash", "mac"}`` - the durable end of the log, its chain hash and
``HMAC-SHA256(key, "exchange-journal-checkpoint" || seq (8 bytes BE) || hash)`` - after every
snapshot and on shutdown (atomically: a temporary file, fsync, rename; mode 0600). A start
checks the journal against it before it trusts anything: a log that ends before the
checkpoint's seq lost acknowledged records (its tail was cut), one whose record at that seq
has another chain hash was rewritten (every later hash recomputed - the chain alone cannot
show that). Both refuse, as does a checkpoint whose HMAC does not match. The key must not
live with the journal: whoever can rewrite the log and read the key can sign a new head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct

from .base import Journal, JournalCorruptError, JournalError, log

_DOMAIN = b"exchange-journal-checkpoint"


class Checkpoint:
    def __init__(self, path: str, key: bytes):
        if not key:
            raise JournalError("checkpoint key is empty")
        self.path = os.fspath(path)
        self._key = bytes(key)

    @classmethod
    def from_key_file(cls, path: str, key_file: str) -> "Checkpoint":
        try:
            with open(key_file, "rb") as f:
                key = f.read().strip()
        except OSError as e:
            raise JournalError(f"cannot read the checkpoint key {key_file}: {e}") from None
        return cls(path, key)

    def _mac(self, seq: int, chain_hash: bytes) -> str:
        return hmac.new(
            self._key, _DOMAIN + struct.pack(">Q", seq) + chain_hash, hashlib.sha256
        ).hexdigest()

    def write(self, seq: int, chain_hash: bytes) -> None:
        """Atomically replace the checkpoint (blocking: call it off the event loop)."""
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        body = json.dumps(
            {"seq": seq, "hash": chain_hash.hex(), "mac": self._mac(seq, chain_hash)}
        ).encode()
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself durable
        finally:
            os.close(dfd)

    def read(self) -> tuple[int, bytes] | None:
        """``(seq, chain hash)`` of a checkpoint whose HMAC matches; None when there is no
        checkpoint file. JournalCorruptError when its HMAC does not match."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            d = json.loads(raw)
            seq, h, mac = int(d["seq"]), bytes.fromhex(d["hash"]), str(d["mac"])
        except Exception:
            raise JournalCorruptError(0, f"checkpoint {self.path} is unreadable") from None
        if not hmac.compare_digest(self._mac(seq, h), mac):
            raise JournalCorruptError(
                seq,
                f"checkpoint {self.path} does not carry a valid "
                f"HMAC: forged, or signed with another key",
            )
        return seq, h

    async def check(self, journal: Journal) -> int:
        """Refuse a journal behind or diverging from the checkpoint; return its seq (0: no
        checkpoint yet - a first start, or one before checkpoints were written)."""
        cp = self.read()
        if cp is None:
            if journal.last_seq:  # a first start with a key, or a deleted checkpoint file
                log.warning(
                    "journal %s: no signed checkpoint at %s; the log (to seq %d) is "
                    "accepted unchecked against one, and signed from now on",
                    journal.target,
                    self.path,
                    journal.last_seq,
                )
            return 0
        seq, h = cp
        if journal.last_seq < seq:
            raise JournalCorruptError(
                journal.last_seq + 1,
                f"journal behind its signed checkpoint: records up to seq {seq} were durable, "
                f"the log ends at seq {journal.last_seq} (records {journal.last_seq + 1}.."
                f"{seq} removed); refusing to start, nothing was changed",
            )
        if seq and await journal._hash_at(seq) != h:
            raise JournalCorruptError(
                seq,
                f"journal diverges from its signed checkpoint at seq {seq}: its chain "
                f"hash there differs, so records at or before it were rewritten; "
                f"refusing to start, nothing was changed",
            )
        return seq
