"""``python -m exchange`` and the ``carbon-exchange`` command: one entry point, one subcommand per
capability.

Each capability has a ``cli`` module with ``register(subparsers)`` that adds its subcommand and
sets ``func`` on it; this file only lists those modules. The ones that load the settings or build
the exchange live in the composition root, :mod:`exchange.app`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

CLI_MODULES = [
    "exchange.app.demo",
    "exchange.app.config_cli",
    "exchange.app.journal_cli",
    "exchange.app.serve_cli",
    "exchange.app.keys_cli",
    "exchange.app.compliance_cli",
    "exchange.app.registry_cli",
    "exchange.rules.cli",
    "exchange.sim.cli",
]


def version_text() -> str:
    """The package version and the journal format it writes: an operator upgrading needs both."""
    from . import __version__
    from .journal.sqlite import FORMAT_VERSION

    return f"carbon-exchange {__version__} (journal format {FORMAT_VERSION})"


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m exchange" if name in ("", "__main__.py", "-c") else name


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or _prog(),
        description="Carbon allowance exchange: matching engine, journal, server, rules, "
        "compliance and simulation.",
    )
    p.add_argument("--version", action="version", version=version_text())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in CLI_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .app.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:  # a missing or bad settings file: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
