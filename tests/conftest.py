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
