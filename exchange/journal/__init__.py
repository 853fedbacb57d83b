"""Durable command journal: hash-chained log, snapshots, recovery, group commit.

    open_journal(target) -> Journal
        "path/to/file.sqlite" or "sqlite:///abs/path"  -> SQLiteJournal (embedded default)
        "postgresql://..." / "postgres://..."           -> PostgresJournal (production)
        "nats://h1:4222[,h2,...]/STREAM[?replicas=3]"   -> JetStreamJournal (replicated)
    CoreRunner(exchange, journal, ...)                 -> sequencing + group commit

See :mod:`exchange.journal.base` for the interface and the hash chain, and
``docs/adr/0002-journal.md`` for the design.
"""

from __future__ import annotations

from typing import Any, Protocol

from .base import (
    GENESIS_HASH,
    Journal,
    JournalCorruptError,
    JournalError,
    VerifyReport,
    record_hash,
)
from .runner import CoreRunner, RunnerFailed, replay_into

__all__ = [
    "open_journal",
    "default_target",
    "default_options",
    "Journal",
    "JournalError",
    "JournalCorruptError",
    "CoreRunner",
    "RunnerFailed",
    "replay_into",
    "record_hash",
    "GENESIS_HASH",
    "VerifyReport",
]


class JournalSettings(Protocol):
    """The ``[journal]`` settings these helpers read (the application's ``JournalConfig``)."""

    @property
    def url(self) -> str: ...

    @property
    def data_dir(self) -> str: ...

    @property
    def schema_name(self) -> str: ...


class Settings(Protocol):
    """Settings with a ``[journal]`` section (the application's ``Settings``)."""

    @property
    def journal(self) -> JournalSettings: ...


def default_target(settings: Settings) -> str:
    """The journal of a deployment: the settings' ``[journal] url``, else the embedded
    ``<journal.data_dir>/journal.sqlite``."""
    import os

    return settings.journal.url or os.path.join(settings.journal.data_dir, "journal.sqlite")


def default_options(settings: Settings, target: str) -> dict[str, Any]:
    """Backend options the settings give ``target`` (PostgreSQL: ``[journal] schema``)."""
    if journal_kind(target) == "postgresql":
        return {"schema": settings.journal.schema_name}
    return {}


def journal_kind(target: str) -> str:
    """``postgresql``, ``sqlite`` or ``nats``: which backend ``target`` opens (ValueError for
    a URL of no backend). The one place a target's form is read."""
    t = str(target)
    if t.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    if t.startswith(("nats://", "tls://")):
        return "nats"
    if t.startswith("sqlite://") or "://" not in t:
        return "sqlite"
    raise ValueError(
        f"unknown journal target {t!r}: use a .sqlite path, sqlite:///path, "
        "postgresql://... or nats://HOST:4222/STREAM"
    )


def is_replicated(target: str | None) -> bool:
    """Is ``target`` a JetStream journal (what a standby and a market-data gateway follow)?
    False for any other form, a URL of no backend included."""
    try:
        return bool(target) and journal_kind(str(target)) == "nats"
    except ValueError:
        return False


def open_journal(target: str, **options: Any) -> Journal:
    """A journal for ``target`` (not yet opened: ``await journal.open()``, or let
    :meth:`CoreRunner.start` do it). Options go to the backend (e.g. ``keep_snapshots``,
    PostgreSQL ``schema``)."""
    t = str(target)
    j: Journal
    kind = journal_kind(t)
    if kind == "postgresql":
        from .postgres import PostgresJournal

        j = PostgresJournal(t, **options)
    elif kind == "nats":
        from .jetstream import JetStreamJournal

        j = JetStreamJournal(t, **options)
    elif t.startswith("sqlite://"):
        path = t[len("sqlite://") :]
        if not path.startswith("/"):
            raise ValueError(f"sqlite URL needs an absolute path (sqlite:///abs/path): {t!r}")
        from .sqlite import SQLiteJournal

        j = SQLiteJournal(path, **options)
    else:
        from .sqlite import SQLiteJournal
        import os

        j = SQLiteJournal(os.path.abspath(t), **options)
        t = j.path  # a plain path: reopened by its absolute path
    j.spec = (t, dict(options))  # to reopen it in another process
    return j
