"""Shared fixtures. Service helpers (skip, or fail with REQUIRE_SERVICES=1) are in services.py."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# the tests expect the packaged default settings (the demo market), whatever the shell says
os.environ.pop("CARBON_EXCHANGE_CONFIG", None)

from services import nats_url as _nats_url  # noqa: E402
from services import postgres_dsn as _postgres_dsn  # noqa: E402


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of the test PostgreSQL (``TEST_POSTGRES_DSN``, default 127.0.0.1:5432/test)."""
    return _postgres_dsn()


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of the test NATS server with JetStream (``TEST_NATS_URL``, default
    nats://127.0.0.1:4222)."""
    return _nats_url()


BROWSER_SKIPS = ("chromium not available", "playwright not available")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line at the end when the browser tests were skipped for want of chromium or
    Playwright, with how to install them (the skip reasons alone scroll past)."""
    n = 0
    why = set()
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        for svc in BROWSER_SKIPS:
            if svc in reason:
                n += 1
                why.add(svc.split()[0])
    if n:
        terminalreporter.write_line(
            f"{n} browser test(s) skipped: {' and '.join(sorted(why))} missing - install with "
            f"`apt-get install -y chromium` and `.venv/bin/pip install playwright` "
            f"(REQUIRE_SERVICES=1 makes this a failure)",
            yellow=True,
            bold=True,
        )
