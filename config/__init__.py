"""The shipped configuration: ``default.toml`` and ``scenarios/*.toml``.

This directory is the single copy of those files. Installed, it is the package
``exchange.defaults`` (``package-dir`` in pyproject.toml), so a wheel, a zip or an editable
install reads the same files through :mod:`importlib.resources` (``exchange.app.config``).
This file is what makes it a regular package for that import; it holds no code.
"""
