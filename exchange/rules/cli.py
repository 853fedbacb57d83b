"""``python -m exchange rules responsibility CHAIN.toml [--json]``: responsibility factors
beta per product and what each firm answers for (t CO2), for a chain given as a file (format:
:mod:`exchange.rules.chain`; example: config/chains/example_chain.toml). Exit 2 with the bad
field or the products of a non-productive cycle named when the chain has no answer."""

from __future__ import annotations

import argparse
import json
import sys


def _responsibility(args: argparse.Namespace) -> int:
    from ..present import present
    from .chain import ChainError, load_chain, render_text, responsibility

    try:
        result = responsibility(load_chain(args.chain))
    except ChainError as e:
        print(f"error: {args.chain}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(present(dict(result, chain=args.chain)), indent=1))
    else:
        print(render_text(result, args.chain))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rules", help="rules tools: responsibility along a supply chain")
    rsub = p.add_subparsers(dest="rules_command", metavar="{responsibility}")
    r = rsub.add_parser(
        "responsibility",
        help="beta per product and each firm's responsibility for a chain",
        description="Responsibility factors along a supply chain: beta_p = (inputs x "
        "beta_input + direct emissions) / output per product, and each firm's "
        "responsibility = direct emissions + inputs x beta_input (t CO2). The "
        "chain is a TOML file of [[firms]] with id, product, direct_emissions, "
        "output and inputs {product = quantity}.",
    )
    r.add_argument("chain", metavar="CHAIN.toml", help="the chain file")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(func=_responsibility)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 0

    p.set_defaults(func=_help)
