"""``python -m exchange journal verify|replay``: audit a command log.

    python -m exchange journal verify [PATH_OR_DSN]
        check the hash chain end to end, replay the whole log into a fresh core, check every
        stored snapshot against the replayed state and the core's invariants; print what was
        found and end with ``state_hash <hex>``. Exit 1 on a broken chain, a gap, a torn last
        record or a snapshot that does not match the log.

    python -m exchange journal replay [PATH_OR_DSN] --to SEQ [--book CEA-2026/main] [--json]
        rebuild the state as of SEQ (from the newest snapshot at or before it, then the log),
        print the books and ``state_hash <hex>``; ``--json`` prints the whole state instead.

    python -m exchange journal truncate [PATH_OR_DSN] --from SEQ
        the operator's explicit repair: delete record SEQ and every record after it (and
        the snapshots at or after SEQ). A start never deletes a record it cannot show to be
        an incomplete write; it refuses and names this command instead (ADR 0009). Stop
        the server first; keep a copy of the journal.

PATH_OR_DSN defaults to ``<journal.data_dir>/journal.sqlite`` from the settings file.
``verify`` and ``replay`` do not write to the journal (a torn last record is reported, not
truncated).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from ..journal.base import JournalCorruptError, JournalError
from ..journal.runner import replay_into, restore_proven_snapshot, snapshot_bytes
from ..present import time_iso


def _target(args) -> tuple[str, dict]:
    """The journal to open and its options: the argument, else the settings' journal (its
    ``url`` and ``schema``, or ``<data_dir>/journal.sqlite``); ``--schema`` wins."""
    from ..journal import default_options, default_target
    from .config import config_path, load_settings

    settings = load_settings(config_path(args.config))
    target = args.target or default_target(settings)
    opts = default_options(settings, target)
    if args.schema and "schema" in opts:
        opts["schema"] = args.schema
    return target, opts


def _open(args):
    from ..journal import open_journal

    target, opts = _target(args)
    return target, open_journal(target, readonly=True, **opts)


async def _verify(args) -> int:
    from .engine import build_exchange

    target, j = _open(args)
    print(f"journal {j.target}")
    t0 = time.perf_counter()
    try:
        await j.open()
        print(f"records: seq 1..{j.last_seq} ({j.last_seq} commands)")
        rep = await j.verify_chain()
        print(f"hash chain: ok ({rep.records} records, head {rep.last_hash or '-'})")
        snaps = await j.snapshot_seqs()
        ex = build_exchange()
        done = 0
        for s in snaps:
            if s > j.last_seq:
                print(f"snapshot at seq {s}: past the end of the log")
                return 1
            done += await replay_into(ex, j, done + 1, s)
            stored = await j.latest_snapshot(max_seq=s)
            if stored is None or stored[0] != s:
                print(f"FAILED: snapshot at seq {s} is damaged")
                return 1
            if stored[1] != snapshot_bytes(ex):
                print(f"FAILED: snapshot at seq {s} does not equal the replayed state")
                return 1
            print(f"snapshot at seq {s}: equals the replayed state")
        done += await replay_into(ex, j, done + 1)
        ex.check_invariants()
        dt = time.perf_counter() - t0
        print(f"replayed {done} commands in {dt:.2f} s; invariants hold")
        print(f"state_hash {ex.state_hash()}")
        return 0
    except JournalCorruptError as e:
        print(f"FAILED: {e}")
        return 1
    except AssertionError as e:
        print(f"FAILED: invariant broken after replay: {e}")
        return 1
    except JournalError as e:
        print(f"FAILED: {e}")
        return 2
    finally:
        await j.close()


async def _replay(args) -> int:
    from .demo import render_book
    from .engine import build_exchange

    target, j = _open(args)
    try:
        await j.open()
        to = j.last_seq if args.to is None else args.to
        if to > j.last_seq:
            print(f"seq {to} is past the end of the log ({j.last_seq})", file=sys.stderr)
            return 2
        ex = build_exchange()
        start = 0
        if not args.no_snapshot:  # only a snapshot its seal in the chain proves
            start = await restore_proven_snapshot(ex, j, to)
        n = await replay_into(ex, j, start + 1, to)
        if args.json:
            print(json.dumps(ex.to_state(), sort_keys=True, indent=1))
            return 0
        print(
            f"state as of seq {ex.last_seq} ({time_iso(ex.now)}): snapshot seq {start}, "
            f"{n} commands replayed"
        )
        books = (
            [tuple(b.split("/", 1)) if "/" in b else (b, "main") for b in args.book]
            if args.book
            else sorted(k for k, b in ex.books.items() if len(b.orders))
        )
        for sym, seg in books:
            if (sym, seg) not in ex.books:
                print(f"  no book {sym}/{seg}")
                continue
            print(render_book(ex, sym, seg, levels=args.levels))
        print(f"state_hash {ex.state_hash()}")
        return 0
    except JournalCorruptError as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        await j.close()


async def _truncate(args) -> int:
    from ..journal import open_journal

    target, opts = _target(args)
    sqlite = "://" not in target or target.startswith("sqlite://")
    j = open_journal(target, **({"writer": "thread"} if sqlite else opts))
    j.check_tail = False  # the last record is what the operator decided to drop
    try:
        await j.open()
        end = j.last_seq
        if args.from_seq > end:
            print(f"nothing to drop: the log ends at seq {end}")
            return 0
        n, k = await j.truncate_from(args.from_seq)
        print(
            f"journal {j.target}: dropped records {args.from_seq}..{end} ({n} records) and "
            f"{k} snapshots; the log now ends at seq {j.last_seq}"
        )
        return 0
    except JournalError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        await j.close()


def register(sub) -> None:
    from .config import add_config_argument

    p = sub.add_parser("journal", help="verify or replay a command journal (audit)")
    jsub = p.add_subparsers(dest="journal_command", metavar="{verify,replay,truncate}")

    def common(q):
        q.add_argument(
            "target",
            nargs="?",
            default=None,
            help="SQLite path, sqlite:///abs/path, postgresql://... or "
            "nats://HOST:4222/STREAM "
            "(default: <journal.data_dir>/journal.sqlite)",
        )
        add_config_argument(q)
        q.add_argument(
            "--schema",
            default=None,
            help="PostgreSQL schema of the journal (default journal.schema)",
        )

    v = jsub.add_parser("verify", help="check the hash chain, replay, print state_hash")
    common(v)
    v.set_defaults(func=lambda a: asyncio.run(_verify(a)))
    r = jsub.add_parser("replay", help="rebuild the state as of a sequence number")
    common(r)
    r.add_argument("--to", type=int, default=None, help="last seq to apply (default: all)")
    r.add_argument(
        "--book",
        action="append",
        default=[],
        help="book to print, INSTRUMENT[/SEGMENT] (repeatable; default: all non-empty books)",
    )
    r.add_argument("--levels", type=int, default=5)
    r.add_argument("--json", action="store_true", help="print the whole state as JSON")
    r.add_argument("--no-snapshot", action="store_true", help="replay from seq 1")
    r.set_defaults(func=lambda a: asyncio.run(_replay(a)))
    t = jsub.add_parser("truncate", help="drop records from SEQ on (explicit repair)")
    common(t)
    t.add_argument(
        "--from",
        dest="from_seq",
        type=int,
        required=True,
        help="first record to drop; every record after it goes too",
    )
    t.set_defaults(func=lambda a: asyncio.run(_truncate(a)))
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
