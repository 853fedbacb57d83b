"""The journal's files are private: the data directory 0700, the database, its WAL and shared
memory file 0600 (snapshots live inside the database), whatever the umask, and files left
0644 by an older version are tightened on the next open."""

from __future__ import annotations

import os
import signal
import stat

from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, open_journal
from test_server_restart import ServerProcess


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _files(path: str) -> list[str]:
    return [p for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)]


async def test_new_journal_files_are_0600_in_a_0700_directory(tmp_path):
    old = os.umask(0o022)
    try:
        path = str(tmp_path / "data" / "journal.sqlite")
        r = CoreRunner(build_exchange(), open_journal(path))
        await r.start()
        assert _mode(tmp_path / "data") == 0o700
        files = _files(path)
        assert path + "-wal" in files
        assert {p: _mode(p) for p in files} == {p: 0o600 for p in files}
        await r.stop()  # the final snapshot goes into the same file
        assert {p: _mode(p) for p in _files(path)} == {p: 0o600 for p in _files(path)}
    finally:
        os.umask(old)


async def test_open_tightens_files_an_older_version_left_readable(tmp_path):
    path = str(tmp_path / "j.sqlite")
    r = CoreRunner(build_exchange(), open_journal(path))
    await r.start()
    await r.stop()
    for p in _files(path):
        os.chmod(p, 0o644)
    r = CoreRunner(build_exchange(), open_journal(path))
    await r.start()
    assert {p: _mode(p) for p in _files(path)} == {p: 0o600 for p in _files(path)}
    await r.stop()


def test_server_data_dir_is_private(tmp_path):
    old = os.umask(0o022)
    try:
        srv = ServerProcess(tmp_path / "data")
        srv.start()
    finally:
        os.umask(old)
    try:
        assert _mode(tmp_path / "data") == 0o700
        path = str(tmp_path / "data" / "journal.sqlite")
        assert {p: _mode(p) for p in _files(path)} == {p: 0o600 for p in _files(path)}
    finally:
        assert srv.kill(signal.SIGTERM) == 0
