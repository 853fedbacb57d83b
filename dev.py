#!/usr/bin/env python3
"""Set-up and entry point for a fresh machine that has only python3.

    python3 dev.py run     # create .venv, install, start the exchange (demo market)
    python3 dev.py test    # create .venv, install, run the test suite

Anything after the verb is passed on (``python3 dev.py test -k book``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".installed"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT)


def ensure_venv() -> None:
    if not PY.exists():
        print("[dev] creating .venv", flush=True)
        sh(sys.executable, "-m", "venv", str(VENV))
    # reinstall when the package definition or a C source or header changes (the editable
    # install compiles each package's _accel.c in place, ADR 0013)
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    for src in sorted([*(ROOT / "exchange").rglob("*.c"), *(ROOT / "exchange").rglob("*.h")]):
        h.update(src.read_bytes())
    digest = h.hexdigest()
    if not STAMP.exists() or STAMP.read_text() != digest:
        print("[dev] installing the project and its dev dependencies into .venv", flush=True)
        sh(str(PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        sh(str(PY), "-m", "pip", "install", "--quiet", "-e", ".[dev]")
        STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    verb = argv[0] if argv else "help"
    rest = argv[1:]
    if verb == "run":
        ensure_venv()
        os.execv(
            str(PY),
            [str(PY), "-m", "exchange", "serve", *rest]
            if (ROOT / "exchange" / "app" / "serve_cli.py").exists()
            else [str(PY), "-m", "exchange", "demo", *rest],
        )
    if verb == "test":
        ensure_venv()
        os.execv(str(PY), [str(PY), "-m", "pytest", *rest])
    print(__doc__)
    return 0 if verb == "help" else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
