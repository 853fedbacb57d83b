"""``python -m exchange``: one entry point, one subcommand per capability.

Each capability's package has a ``cli`` module with ``register(subparsers)`` that adds its
subcommand and sets ``func`` on it; this file only lists those modules.
"""
from __future__ import annotations

import argparse
import importlib
import sys

CLI_MODULES = [
    "exchange.demo",
    "exchange.journal.cli",
    "exchange.server.cli",
    "exchange.compliance.cli",
    "exchange.rules.cli",
    "exchange.sim.cli",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exchange",
        description="Carbon allowance exchange: matching engine, journal, server, rules, "
                    "compliance and simulation.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in CLI_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
