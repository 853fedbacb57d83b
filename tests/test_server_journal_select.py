"""``serve`` on the PostgreSQL journal: selected by ``--journal postgresql://...`` or by the
config's ``[journal] url``; an acknowledged order survives a SIGKILL and a restart."""

from __future__ import annotations

import asyncio
import signal
import uuid

import asyncpg
import pytest

from exchange.client import ExchangeClient
from test_server_restart import ServerProcess, state

I = "CEA-2026"


async def _drop(dsn: str, schema: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await con.close()


async def _rows(dsn: str, schema: str) -> int:
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetchval(f'SELECT count(*) FROM "{schema}".journal_commands')
    finally:
        await con.close()


@pytest.fixture
def schema(postgres_dsn):
    """A fresh schema for one test's journal, dropped afterwards."""
    name = "srv_" + uuid.uuid4().hex[:12]
    yield name
    asyncio.run(_drop(postgres_dsn, name))


def _order_survives_restart(srv: ServerProcess, dsn: str, schema: str, tmp_path) -> None:
    try:
        _place_kill_restart(srv, dsn, schema, tmp_path)
    finally:
        if srv.proc and srv.proc.poll() is None:
            srv.kill()


def _place_kill_restart(srv: ServerProcess, dsn: str, schema: str, tmp_path) -> None:
    srv.start()
    out = "".join(srv.output)
    assert "New market built" in out and "postgresql://" in out, out
    assert not (tmp_path / "data" / "journal.sqlite").exists()

    async def place():
        async with ExchangeClient(srv.ws_url, "demo-key-power1") as a:
            ack = await a.place_order(I, "sell", 3, "88.80", client_order_id="pg-1")
            return ack, await state(srv.port)

    ack, st_before = asyncio.run(place())
    assert asyncio.run(_rows(dsn, schema)) == st_before["last_seq"]
    assert srv.kill(signal.SIGKILL) == -signal.SIGKILL

    srv.start()
    assert "Recovered from postgresql://" in "".join(srv.output[-12:]), srv.output[-12:]

    async def check():
        st_after = await state(srv.port)
        assert st_after["state_hash"] == st_before["state_hash"]
        async with ExchangeClient(srv.ws_url, "demo-key-power1") as a:
            live = {o["order_id"]: o for o in await a.open_orders()}
        assert ack["order_id"] in live and live[ack["order_id"]]["client_order_id"] == "pg-1"

    asyncio.run(check())
    assert srv.kill(signal.SIGTERM) == 0


def test_serve_on_postgresql_from_the_command_line(tmp_path, postgres_dsn, schema):
    srv = ServerProcess(
        tmp_path / "data", extra=["--journal", postgres_dsn, "--journal-schema", schema]
    )
    _order_survives_restart(srv, postgres_dsn, schema, tmp_path)


def test_serve_on_postgresql_from_the_config(tmp_path, postgres_dsn, schema):
    from exchange.app.config import default_config_text

    text = default_config_text().replace(
        "[journal]\n", f'[journal]\nurl = "{postgres_dsn}"\nschema = "{schema}"\n', 1
    )
    cfg = tmp_path / "exchange.toml"
    cfg.write_text(text)
    srv = ServerProcess(tmp_path / "data", extra=["--config", str(cfg)])
    _order_survives_restart(srv, postgres_dsn, schema, tmp_path)


def test_journal_verify_follows_the_configured_url(tmp_path, postgres_dsn, schema):
    """`journal verify --config FILE` audits the journal the server runs on: the config's
    `[journal] url` and `schema`, not `<data_dir>/journal.sqlite`."""
    import subprocess
    import sys
    from exchange.app.config import default_config_text
    from exchange.journal import open_journal
    from test_journal import run_commands, stream_commands
    from test_server_restart import ROOT

    r = asyncio.run(run_commands(open_journal(postgres_dsn, schema=schema), stream_commands(100)))
    cfg = tmp_path / "exchange.toml"
    cfg.write_text(
        default_config_text().replace(
            "[journal]\n", f'[journal]\nurl = "{postgres_dsn}"\nschema = "{schema}"\n', 1
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "exchange", "journal", "verify", "--config", str(cfg)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"schema {schema}" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == f"state_hash {r.exchange.state_hash()}"
