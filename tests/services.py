"""External services for tests (PostgreSQL, ...): skip with a clear reason when one does not
answer, fail instead when ``REQUIRE_SERVICES=1`` (set by ``.ci/run``).

    from services import postgres_dsn
    dsn = postgres_dsn()          # skips / fails when PostgreSQL does not answer

or use the ``postgres_dsn`` fixture from ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading

import pytest

POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "") not in ("", "0")


def unavailable(service: str, reason: str):
    """Skip (or, with REQUIRE_SERVICES=1, fail) the current test: ``service`` is down."""
    msg = f"{service} not available: {reason}"
    if services_required():
        pytest.fail(msg + " (REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(msg + " (set REQUIRE_SERVICES=1 to make this a failure)")


def _answers(probe, target: str, what: str) -> str | None:
    """Run the coroutine function ``probe``: None when it succeeds, else why ``target`` does not
    answer (refused, timeout, auth, a missing database or JetStream)."""
    result: list = []

    def run():  # own thread and loop: callers may be inside a running event loop
        try:
            asyncio.run(probe())
            result.append(None)
        except Exception as e:
            result.append(f"{target} does not answer{what} ({type(e).__name__}: {e})")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    return result[0] if result else f"{target} does not answer (probe timed out)"


@functools.lru_cache(maxsize=None)
def _probe_postgres(dsn: str) -> str | None:
    """None when ``dsn`` answers ``SELECT 1``, else the reason."""
    try:
        import asyncpg
    except ImportError as e:
        return f"asyncpg not installed ({e})"

    async def probe():
        con = await asyncpg.connect(dsn, timeout=3)
        try:
            await con.fetchval("SELECT 1")
        finally:
            await con.close()

    return _answers(probe, dsn, "")


def postgres_dsn(dsn: str = POSTGRES_DSN) -> str:
    reason = _probe_postgres(dsn)
    if reason is not None:
        unavailable("PostgreSQL", reason)
    return dsn


NATS_URL = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")


@functools.lru_cache(maxsize=None)
def _probe_nats(url: str) -> str | None:
    """None when ``url`` answers with JetStream enabled, else the reason."""
    try:
        import nats
    except ImportError as e:
        return f"nats-py not installed ({e})"

    async def probe():
        nc = await nats.connect(
            url, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0
        )
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

    return _answers(probe, url, " with JetStream")


def nats_url(url: str = NATS_URL) -> str:
    """The test NATS server with JetStream (``TEST_NATS_URL``, default 127.0.0.1:4222)."""
    reason = _probe_nats(url)
    if reason is not None:
        unavailable("NATS JetStream", reason)
    return url
