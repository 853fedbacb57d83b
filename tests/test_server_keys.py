"""API keys in production: ``serve --no-demo`` issues and prints no known key, ``keys create``
makes one (printed once, stored as a keyed hash, journaled), and records written as plain
SHA-256 before the keyed hash still work once and are rehashed (docs/adr/0008)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import stat
import subprocess
import sys

import aiohttp
import pytest

from exchange.client import ExchangeClient, ExchangeError
from exchange.access.credentials import (
    SCHEME_HMAC,
    SCHEME_SHA256,
    SECRET_FILE,
    IssueApiKey,
    hash_key,
    key_id_for,
)

from test_server import op, running_server
from test_server_restart import ROOT, ServerProcess

DEMO_KEYS = (
    "operator-demo-key",
    "verifier-demo-key",
    "demo-key-power1",
    "demo-key-cement1",
    "demo-key-steel1",
    "demo-key-sme1",
    "demo-key-sme2",
)


async def _status(port: int, key: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"http://127.0.0.1:{port}/api/v1/state", headers={"Authorization": f"Bearer {key}"}
        ) as r:
            return r.status


def _keys(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exchange", "keys", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_demo_start_has_no_known_key_and_keys_create_makes_one(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(data, ["--no-demo"])
    srv.start()
    try:
        out = "".join(srv.output)
        for k in DEMO_KEYS:
            assert k not in out
        assert "keys create" in out  # says how to get the first key

        async def refused():
            for k in ("operator-demo-key", "verifier-demo-key"):
                assert await _status(srv.port, k) == 401
            with pytest.raises(ExchangeError):
                async with ExchangeClient(srv.ws_url, "demo-key-power1"):
                    pass

        asyncio.run(refused())
    finally:
        assert srv.kill(signal.SIGTERM) == 0

    r = _keys("create", "--role", "operator", "--label", "ops-1", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert len(key) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", key)
    secret = data / SECRET_FILE
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    # journaled as a keyed digest: neither the key nor its plain SHA-256 is on disk
    blob = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
    assert key.encode() not in blob
    assert hashlib.sha256(key.encode()).hexdigest().encode() not in blob
    listed = _keys("list", "--data-dir", str(data))
    assert listed.returncode == 0 and "ops-1" in listed.stdout and key not in listed.stdout

    srv2 = ServerProcess(data, ["--no-demo"])
    srv2.start()
    try:
        out = "".join(srv2.output)
        assert key not in out and "operator-demo-key" not in out

        async def works():
            assert await _status(srv2.port, key) == 200
            assert await _status(srv2.port, "operator-demo-key") == 401

        asyncio.run(works())
    finally:
        assert srv2.kill(signal.SIGTERM) == 0


def test_keys_create_refuses_an_empty_journal(tmp_path):
    r = _keys("create", "--role", "operator", "--label", "x", "--data-dir", str(tmp_path / "none"))
    assert r.returncode == 2 and "start the server once" in r.stderr


def test_demo_config_without_keys_issues_no_operator_key():
    from exchange.app.config import DemoConfig

    d = DemoConfig()
    assert d.operator_key is None and d.verifier_key is None


async def test_keys_are_hmac_under_the_data_dirs_secret(tmp_path):
    async with running_server(tmp_path) as srv:
        creds = srv.st.exchange.modules["credentials"]
        secret = (tmp_path / "data" / SECRET_FILE).read_bytes()
        assert creds.secret == secret and len(secret) == 32
        cred = creds.lookup("operator-demo-key")
        assert cred.scheme == SCHEME_HMAC
        assert cred.key_hash == hash_key("operator-demo-key", secret)
        assert cred.key_hash != hashlib.sha256(b"operator-demo-key").hexdigest()
        # a key issued over HTTP is keyed too
        status, body = await op(srv, "POST", "/api-keys", {"role": "operator", "label": "o2"})
        assert status == 201
        new = creds.keys[body["key_id"]]
        assert new.scheme == SCHEME_HMAC and new.key_hash == hash_key(body["api_key"], secret)
        assert (await op(srv, "GET", "/state", key=body["api_key"]))[0] == 200


async def test_a_legacy_sha256_record_authenticates_and_is_rehashed(tmp_path):
    legacy = "legacy-operator-key-0123456789"
    h = hash_key(legacy)  # plain SHA-256, as journaled before the keyed hash
    async with running_server(tmp_path) as srv:
        creds = srv.st.exchange.modules["credentials"]
        kid = key_id_for(h)
        # a record as the old code wrote it: no scheme field (the default is sha256)
        await srv.st.runner.submit(
            IssueApiKey(key_id=kid, role="operator", key_hash=h, label="old")
        )
        assert creds.keys[kid].scheme == SCHEME_SHA256
        assert (await op(srv, "GET", "/state", key=legacy))[0] == 200
        await asyncio.sleep(0.05)
        cred = creds.keys[kid]
        assert cred.scheme == SCHEME_HMAC and cred.key_hash == hash_key(legacy, creds.secret)
        assert h not in creds.by_hash
        assert (await op(srv, "GET", "/state", key=legacy))[0] == 200
    # the rehash is journaled: after a restart the record is keyed, and the key still works
    async with running_server(tmp_path) as srv:
        creds = srv.st.exchange.modules["credentials"]
        assert creds.keys[kid].scheme == SCHEME_HMAC
        seq = srv.st.exchange.last_seq
        assert (await op(srv, "GET", "/state", key=legacy))[0] == 200
        await asyncio.sleep(0.05)
        assert srv.st.exchange.last_seq == seq  # nothing left to rehash


def test_legacy_state_without_scheme_loads_as_sha256():
    from exchange.access.credentials import Credential

    c = Credential("k-1", "operator", None, "ab" * 32, "x", 3, 0)
    assert c.scheme == SCHEME_SHA256 and len(c.to_state()) == 6


def test_keys_create_refuses_while_the_server_holds_the_journal(tmp_path):
    """``keys create`` against a running server's journal would append from the end it read
    while the server appends too: the chain forks. The journal's writer lock refuses it."""
    data = tmp_path / "data"
    srv = ServerProcess(data, ["--no-demo"])
    srv.start()
    try:
        journal = data / "journal.sqlite"
        before = journal.stat().st_size, (data / "journal.sqlite-wal").stat().st_size
        r = _keys("create", "--role", "operator", "--label", "racer", "--data-dir", str(data))
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "in use by another process" in r.stderr and "Traceback" not in r.stderr
        assert f"pid {srv.proc.pid}" in r.stderr
        assert r.stdout == ""  # no key printed: none was made
        assert (journal.stat().st_size, (data / "journal.sqlite-wal").stat().st_size) == before
    finally:
        assert srv.kill(signal.SIGTERM) == 0
    # the server's lock went with it
    r = _keys("create", "--role", "operator", "--label", "after", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr


def test_a_forked_child_does_not_keep_the_journal_writer_lock(tmp_path):
    """The runner forks to serialise snapshots; if the server dies while such a child runs,
    a restart must not find the journal locked by the child."""
    from exchange.journal import JournalError
    from exchange.journal import sqlite as S

    path = str(tmp_path / "j.sqlite")
    fd = S.writer_lock(path)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child lives on after the parent lets go
        import time

        os.write(w, b"x")  # running (its at-fork handlers have run)
        time.sleep(1.5)
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    try:
        with pytest.raises(JournalError):
            S.writer_lock(path)  # held (by this process)
        S._LOCK_FDS.discard(fd)
        os.close(fd)  # the parent's end goes, as when it is killed
        fd2 = S.writer_lock(path)  # free although the child still runs
        S._LOCK_FDS.discard(fd2)
        os.close(fd2)
    finally:
        os.waitpid(pid, 0)
