"""``python -m exchange registry ...``: the credit registry, read from the journal.

    python -m exchange registry serial CCER/P-0042/2026/1-500   # issued? retired, for whom?
    python -m exchange registry holdings POWER1                  # the serials an account holds
    python -m exchange registry buffer                           # the removal buffer pools
    python -m exchange registry projects                         # removal projects
    python -m exchange registry batches                          # carbon-inclusive batches

The state is read like ``report`` reads it (latest proven snapshot + replay, read only):
``--journal PATH_OR_DSN`` or the config's journal; ``--demo`` builds the demo market in
process instead. ``--format json`` prints the same figures as the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import sys

from ..present import present
from ..registry.config import tonnes_text


def _load(args):
    if args.demo:
        from .config import config_path, load_settings
        from .engine import Sequencer
        from .market import genesis_commands

        seq = Sequencer()
        seq.run(genesis_commands(load_settings(config_path(args.config))))
        return seq.ex
    from .compliance_cli import _load_from_journal

    return asyncio.run(_load_from_journal(args.journal, args.config))


def _command(fn):
    """``fn(args, ex, registry)`` as a subcommand: the market loaded, an error (exit 2) when
    it has no configured registry."""

    def run(args) -> int:
        ex = _load(args)
        reg = ex.modules.get("registry")
        if reg is None or reg.params is None:
            print(
                "error: the credit registry is not configured in this market ([registry] in "
                "the settings)",
                file=sys.stderr,
            )
            return 2
        return fn(args, ex, reg)

    return run


def _json(data) -> None:
    # the same units for people as the HTTP API (exchange/present.py)
    print(json.dumps(present(data), indent=1, sort_keys=True, ensure_ascii=False))


@_command
def _serial(args, ex, reg) -> int:
    from ..core.errors import Reject

    try:
        info = reg.lookup(args.serial)
    except Reject as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    if args.format == "json":
        _json(info)
        return 0
    print(
        f"{info['serial']}: {info['units']} t named, {info['issued_units']} t issued, "
        f"{info['retired_units']} t retired"
    )
    for b in info["blocks"]:
        print(
            f"  {b['serial']}  {b['instrument']}  ({b['origin']})  {b['units']} t, "
            f"{b['retired_units']} t retired"
        )
        for r in b["retirements"]:
            period = f", period {r['period']}" if r["period"] is not None else ""
            print(
                f"    retired {r['serial']} for {r['beneficiary']} ({r['reason']}{period}, "
                f"seq {r['seq']})"
            )
    if info["issued_units"] < info["units"]:
        print(f"  {info['units'] - info['issued_units']} t of it were never issued")
    return 0


@_command
def _holdings(args, ex, reg) -> int:
    if args.firm not in ex.accounts:
        print(f"error: no account {args.firm!r}", file=sys.stderr)
        return 2
    held = reg.holdings(args.firm)
    if args.format == "json":
        _json({"firm_id": args.firm, "serials": held})
        return 0
    if not held:
        print(f"{args.firm} holds no credits")
    for sym, serials in held.items():
        total = ex.accounts[args.firm].holdings[sym].total
        print(f"{args.firm} {sym}: {total} t")
        for s in serials:
            print(f"  {s}")
    return 0


@_command
def _buffer(args, ex, reg) -> int:
    pools = {
        t: {
            "offset_type": reg.params["removal_types"][t],
            "contributed": c,
            "cancelled": x,
            "held": c - x,
        }
        for t, (c, x) in sorted(reg.buffer.items())
    }
    if args.format == "json":
        _json({"buffer_pct": f"{reg.params['buffer_bps'] / 100:g}", "pools": pools})
        return 0
    print(f"Buffer pool: {reg.params['buffer_bps'] / 100:g} % of every removal issuance")
    for t, p in pools.items():
        print(
            f"  {t:<11} {p['offset_type']:<6} contributed {p['contributed']:>9} t  "
            f"cancelled {p['cancelled']:>9} t  held {p['held']:>9} t"
        )
    return 0


@_command
def _projects(args, ex, reg) -> int:
    if args.format == "json":
        _json(reg.projects)
        return 0
    if not reg.projects:
        print("no removal projects")
    for pid, p in sorted(reg.projects.items()):
        print(
            f"{pid} ({p['removal_type']}, owner {p['owner']}): reversed {p['reversed']} t, "
            f"uncovered {p['uncovered']} t"
        )
        for v, r in sorted(p["vintages"].items()):
            print(
                f"  {v}: gross {r['gross_removal']} - own {r['project_emissions']} - baseline "
                f"{r['baseline_removal']} = net {r['net_removal']} t; buffer {r['buffer']} t; "
                f"{r['serial'] or 'nothing issued'}"
            )
    return 0


@_command
def _batches(args, ex, reg) -> int:
    rows = [
        {"batch_id": bid, **{k: v for k, v in b.items() if k != "action_ids"}}
        for bid, b in sorted(reg.batches.items())
    ]
    if args.format == "json":
        _json(rows)
        return 0
    if not rows:
        print("no carbon-inclusive batches")
    for b in rows:
        print(
            f"{b['batch_id']} {b['platform_id']} vintage {b['vintage']}: {b['status']}, "
            f"{b['records']} records, {tonnes_text(b['reduction_g'])} t CO2e -> "
            f"{b['reduction_t']} t "
            f"({b['serial'] or 'no serial'})"
        )
        for at, (n, q, g) in b["totals"].items():
            print(f"  {at:<18} {n:>8} records  {q:>10} units  {tonnes_text(g)} t CO2e")
    return 0


def register(sub) -> None:
    from .config import add_config_argument

    p = sub.add_parser(
        "registry",
        help="credit registry: serials, buffer pool, removal projects, carbon-inclusive batches",
    )
    rsub = p.add_subparsers(
        dest="registry_command", metavar="{serial,holdings,buffer,projects,batches}"
    )

    def common(q):
        q.add_argument(
            "--journal", default=None, help="journal path or DSN (default: the config's journal)"
        )
        add_config_argument(q)
        q.add_argument(
            "--demo", action="store_true", help="no journal: build the demo market in process"
        )
        q.add_argument("--format", choices=("text", "json"), default="text")

    s = rsub.add_parser("serial", help="is a serial issued and retired (for whom, when)?")
    s.add_argument("serial", help="ISSUER/PROJECT/VINTAGE/FIRST[-LAST]")
    common(s)
    s.set_defaults(func=_serial)
    h = rsub.add_parser("holdings", help="the serials an account holds, oldest first")
    h.add_argument("firm")
    common(h)
    h.set_defaults(func=_holdings)
    for name, fn, text in (
        ("buffer", _buffer, "the removal buffer pools"),
        ("projects", _projects, "removal projects and their vintages"),
        ("batches", _batches, "carbon-inclusive batches"),
    ):
        q = rsub.add_parser(name, help=text)
        common(q)
        q.set_defaults(func=fn)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
