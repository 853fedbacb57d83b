"""``python -m exchange report firm FIRM --period P`` and ``report compliance --period P``.

The state is read from the journal (latest snapshot + replay of the log after it, read only):
``--journal PATH_OR_DSN`` or the config's ``<journal.data_dir>/journal.sqlite``. ``--demo``
instead builds the demo market in process and runs one scripted compliance period through it
(:func:`exchange.compliance.scenario.demo_period`), so the reports can be seen without a server.

Output: ``--format text`` (default), ``json`` or ``csv``. The figures are the pure functions of
:mod:`exchange.compliance.reports`, the same the admin API serves, in the same units for people
(CNY strings, percent, ISO-8601 times: :mod:`exchange.present`).
"""

from __future__ import annotations

import asyncio
import json
import sys

from ..present import present

from ..compliance import reports as R


async def _load_from_journal(target: str | None, config: str | None):
    from .engine import build_exchange
    from ..journal import default_options, default_target, open_journal
    from ..journal.runner import replay_into, restore_proven_snapshot
    from .config import config_path, load_settings

    settings = load_settings(config_path(config))
    if target is None:
        target = default_target(settings)
    opts = {"repair_tail": False, **default_options(settings, target)}
    j = open_journal(target, **opts)
    await j.open()
    try:
        ex = build_exchange()
        # only a snapshot its seal in the hash chain proves (docs/adr/0009)
        start = await restore_proven_snapshot(ex, j)
        await replay_into(ex, j, start + 1)
        return ex
    finally:
        await j.close()


def load_exchange(args):
    if args.demo:
        from .config import config_path
        from .compliance_demo import demo_period

        return demo_period(config_path(args.config))
    return asyncio.run(_load_from_journal(args.journal, args.config))


def _out(args, data: dict, csv_fn, text_fn, json_fn) -> None:
    if args.format == "json":
        print(json.dumps(json_fn(data), indent=1, sort_keys=True))
    elif args.format == "csv":
        sys.stdout.write(csv_fn(data))
    else:
        print(text_fn(data))


def _firm(args) -> int:
    ex = load_exchange(args)
    try:
        st = R.firm_statement(ex, args.firm, args.period)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    _out(args, st, R.statement_csv, R.statement_text, R.statement_for_people)
    return 0


def _summary(args) -> int:
    ex = load_exchange(args)
    try:
        sm = R.compliance_summary(ex, args.period)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    _out(args, sm, R.summary_csv, R.summary_text, present)
    return 0


def _what_if(args) -> int:
    from ..core.units import percent_to_bps

    ex = load_exchange(args)
    subs = {}
    try:
        for s in args.sub_cap or ():
            k, _, v = s.partition("=")
            subs[k] = percent_to_bps(v)
        m = R.module(ex)
        if not args.sub_cap and args.period in m.periods:
            # no --sub-cap: the sub-caps in force now stay, as PUT .../cap keeps them
            cap = percent_to_bps(args.cap_pct)
            subs = {k: min(v, cap) for k, v in m.cap_at(args.period, ex.now)[1].items()}
        wi = R.what_if_cap(ex, args.period, percent_to_bps(args.cap_pct), subs)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    if args.format == "text":
        from ..core.units import format_percent

        sub_text = ", ".join(f"{k} {format_percent(v)}" for k, v in sorted(subs.items()))
        print(
            f"What if the {args.period} offset cap were {format_percent(wi['proposed_cap_bps'])}"
            f"{' (sub-caps ' + sub_text + ')' if sub_text else ''} "
            f"(now {format_percent(wi['current_cap_bps'])})"
        )
        for f in wi["firms"]:
            mark = "EXCEEDS" if f["exceeds"] else "ok"
            print(
                f"  {f['firm_id']:<10} {mark:<8} obligation {f['obligation']:>9}  cap "
                f"{f['current_cap_qty']:>7} -> {f['proposed_cap_qty']:>7} t  surrendered "
                f"{f['offsets_surrendered']:>6} (over {f['surrendered_over']})  held "
                f"{f['offsets_held']:>6} (over {f['holdings_over']})"
            )
    else:
        print(json.dumps(present(wi), indent=1, sort_keys=True))
    return 0


def register(sub) -> None:
    from .config import add_config_argument

    p = sub.add_parser("report", help="compliance statements and summaries")
    rsub = p.add_subparsers(dest="report_command", metavar="{firm,compliance,what-if}")

    def common(q, formats=("text", "json", "csv")):
        q.add_argument("--period", type=int, required=True, help="compliance period, e.g. 2026")
        q.add_argument(
            "--journal",
            default=None,
            help="journal path or DSN (default: <journal.data_dir>/journal.sqlite)",
        )
        add_config_argument(q)
        q.add_argument(
            "--demo",
            action="store_true",
            help="no journal: build the demo market and run a scripted period",
        )
        q.add_argument("--format", choices=formats, default="text")

    f = rsub.add_parser("firm", help="one firm's statement for a period")
    f.add_argument("firm")
    common(f)
    f.set_defaults(func=_firm)
    c = rsub.add_parser("compliance", help="market-wide compliance summary for a period")
    common(c)
    c.set_defaults(func=_summary)
    w = rsub.add_parser("what-if", help="which firms a proposed offset cap would put over")
    common(w, ("text", "json"))
    w.add_argument("--cap-pct", required=True, help="proposed cap, percent (e.g. 3)")
    w.add_argument("--sub-cap", action="append", help="TYPE=PCT, e.g. PHCER=1")
    w.set_defaults(func=_what_if)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
