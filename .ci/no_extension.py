"""pytest plugin (``-p no_extension``, with .ci on PYTHONPATH): the run goes without the
compiled extensions, as an install without a C compiler does. A ``None`` in ``sys.modules``
makes every import of an accelerator (``exchange.core._accel``, ``exchange.journal._accel``,
``exchange.server._accel``; ADR 0013) raise ImportError, so each module takes its pure-Python
path and the tests that need an extension skip. Loaded before any test module imports
``exchange``."""

import sys

ACCELERATORS = ("exchange.core._accel", "exchange.journal._accel", "exchange.server._accel")

for name in ACCELERATORS:
    sys.modules[name] = None  # type: ignore[assignment]
