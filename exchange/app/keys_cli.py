"""``python -m exchange keys``: issue and list API keys with the server stopped.

    python -m exchange keys create --role operator --label NAME [--firm FIRM]
                                   [--config FILE] [--data-dir DIR] [--journal TARGET]
    python -m exchange keys list [--config FILE] [--data-dir DIR] [--journal TARGET]

A production market (``serve --no-demo``) starts with no API key at all: nobody can log in
with a key printed in a README. ``keys create`` is how its first operator key is made: it
recovers the market from the journal, journals an ``issue_api_key`` command with the key's
HMAC-SHA256 digest under the data directory's secret (docs/adr/0008-api-key-hashing.md) and
prints the key once; it is not kept anywhere else. Later keys can come from the same command
or from ``POST /api/v1/api-keys`` with an operator key.

Run it while the server is stopped: the journal has one writer, the process that holds its
writer lock (``<journal>.lock`` for SQLite, an advisory lock for PostgreSQL); while a server
runs, ``keys`` says so and changes nothing.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .config import add_config_argument, config_path, load_settings


def _open(args):
    from .server import make_runner

    settings = load_settings(config_path(args.config))
    data_dir = Path(args.data_dir or settings.journal.data_dir)
    ex, runner = make_runner(settings, data_dir, False, args.journal)
    return data_dir, ex, runner


async def _create(args) -> int:
    from ..core.events import CommandRejected
    from ..access.credentials import ROLES_WITH_FIRM, IssueApiKey, load_secret, new_key

    data_dir, ex, runner = _open(args)
    await runner.start()
    try:
        if runner.is_empty:
            print(
                "error: the journal holds no market yet: start the server once first "
                "(serve --no-demo), stop it, then create keys",
                file=sys.stderr,
            )
            return 2
        creds = ex.modules["credentials"]
        creds.secret = load_secret(data_dir)
        key = new_key()
        key_hash, scheme = creds.digest(key)
        key_id = "k-" + new_key()[:16]
        cmd = IssueApiKey(
            key_id=key_id,
            role=args.role,
            key_hash=key_hash,
            firm_id=args.firm if args.role in ROLES_WITH_FIRM else None,
            label=args.label,
            scheme=scheme,
        )
        events = await runner.submit(cmd)
        for ev in events:
            if type(ev) is CommandRejected:
                print(f"error: {ev.code}: {ev.message}", file=sys.stderr)
                return 1
        seq = creds.keys[key_id].issued_seq  # the envelope's, as the core recorded it
    finally:
        await runner.stop()
    print(
        f"key_id {key_id}  role {args.role}"
        + (f"  firm {args.firm}" if args.firm else "")
        + f"  label {args.label!r}  seq {seq}"
    )
    print("API key (shown only this once; stored hashed):")
    print(key, flush=True)
    return 0


async def _list(args) -> int:
    _data_dir, ex, runner = _open(args)
    await runner.start()
    try:
        for key_id, c in sorted(ex.modules["credentials"].keys.items()):
            p = c.public()
            print(
                f"{key_id:<20} {p['role']:<9} {p['firm_id'] or '':<9} "
                f"{'revoked' if p['revoked'] else 'active':<8} {p['label']}"
            )
    finally:
        await runner.stop(snapshot=False)
    return 0


def run(args) -> int:
    if args.keys_command == "create":
        if args.role in ("firm", "platform") and not args.firm:
            print(
                f"error: a {args.role} key needs --firm ID (the firm, or the platform)",
                file=sys.stderr,
            )
            return 2
        return _guarded(_create, args)
    return _guarded(_list, args)


def _guarded(fn, args) -> int:
    """Run ``fn``; a journal that cannot be opened - above all one a running server holds
    (its writer lock) - is an error message, not a traceback."""
    from ..journal import JournalError

    try:
        return asyncio.run(fn(args))
    except JournalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def register(sub) -> None:
    from ..access.credentials import ROLES

    p = sub.add_parser("keys", help="issue or list API keys (with the server stopped)")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for name, helptext in (
        ("create", "issue a new random API key, printed once"),
        ("list", "the API keys on record (ids, roles; never the keys)"),
    ):
        q = ks.add_parser(name, help=helptext)
        add_config_argument(q)
        q.add_argument(
            "--data-dir",
            default=None,
            help="journal and key-secret directory (default journal.data_dir)",
        )
        q.add_argument(
            "--journal",
            default=None,
            metavar="TARGET",
            help="journal: postgresql://... or sqlite:///abs/path (default "
            "journal.url, else DATA_DIR/journal.sqlite)",
        )
        if name == "create":
            q.add_argument("--role", required=True, choices=ROLES)
            q.add_argument("--label", required=True, help="who or what the key is for")
            q.add_argument(
                "--firm",
                default=None,
                help="the firm a firm key trades for (or the platform a platform key acts for)",
            )
    p.set_defaults(func=run)
