"""pytest plugin (``-p no_extension``, with .ci on PYTHONPATH): the run goes without the
compiled extension, as an install without a C compiler does. A ``None`` in ``sys.modules``
makes every ``import exchange._hotpath`` raise ImportError, so each module takes its
pure-Python path and the tests that need the extension skip. Loaded before any test module
imports ``exchange``."""
import sys

sys.modules["exchange._hotpath"] = None  # type: ignore[assignment]
