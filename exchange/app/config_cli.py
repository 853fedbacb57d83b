"""``python -m exchange init-config FILE [--force]``: write the default settings for an operator
to edit, outside the installed package (then ``--config FILE`` or ``$CARBON_EXCHANGE_CONFIG``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import CONFIG_ENV, default_config_text


def init_config(path: str, force: bool = False) -> int:
    dest = Path(path)
    if dest.exists() and not force:
        print(f"error: {dest} exists; not overwritten (--force replaces it)", file=sys.stderr)
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    header = (
        f"# Carbon exchange settings, written by `init-config` from carbon-exchange "
        f"{__version__}'s defaults.\n"
        f"# Use it with `carbon-exchange serve --config {dest}` (or set "
        f"{CONFIG_ENV}={dest}).\n\n"
    )
    dest.write_text(header + default_config_text(), encoding="utf-8")
    print(
        f"wrote {dest}; start the exchange with it: "
        f"carbon-exchange serve --config {os.fspath(dest)}"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "init-config",
        help="write the commented default settings to FILE for editing",
        description="Write the packaged default settings, every parameter commented, to FILE. "
        f"Use the file with --config FILE or ${CONFIG_ENV}.",
    )
    p.add_argument("file", metavar="FILE", help="where to write (e.g. /etc/carbon-exchange.toml)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(func=lambda a: init_config(a.file, a.force))
