"""What the load generator talks to: the served exchange or the echo baseline.

A target is started as a subprocess on a free loopback port (or an already running server is
targeted with ``--url``), and firms are provisioned for the load through the operator HTTP API
(firm, cash deposit, allowance issuance, API key), exactly as an operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OPERATOR_KEY = "operator-demo-key"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(n: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it) as far as allowed."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard) if hard != resource.RLIM_INFINITY else max(soft, n)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def http_json(
    method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int, dict | list | None]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode("utf-8", "replace")}


def wait_ready(
    http_base: str, proc: subprocess.Popen | None, timeout: float = 60.0, path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(http_base + path, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s: {last}")


def proc_status(pid: int) -> dict:
    """VmRSS / VmHWM (kB) of a process from /proc/PID/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a process (and its threads) from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(parts[11]) + int(parts[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None


def proc_descendants(pid: int) -> list[int]:
    """``pid``'s child processes, recursively (e.g. the journal's writer process)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def proc_tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` plus its live descendants."""
    total = proc_cpu_seconds(pid)
    if total is None:
        return None
    for c in proc_descendants(pid):
        total += proc_cpu_seconds(c) or 0.0
    return total


class Target:
    """A server to load: ``kind`` is ``exchange`` or ``echo``. Use as a context manager."""

    def __init__(
        self,
        kind: str,
        url: str | None = None,
        config: str | None = None,
        operator_key: str = OPERATOR_KEY,
        server_args: list[str] | None = None,
        keep_dir: bool = False,
        log=None,
    ):
        self.kind = kind
        self.given_url = url
        self.config = config
        self.operator_key = operator_key
        self.server_args = server_args or []
        self.keep_dir = keep_dir
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.port = 0
        self.ws_url = ""
        self.http_base = ""
        self.pid: int | None = None
        self.log = log or (lambda *a: print(*a, file=sys.stderr, flush=True))
        self._firm_seq = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self):
        raise_nofile()
        if self.given_url:
            self.ws_url = self.given_url
            hostport = self.given_url.split("//", 1)[1].split("/", 1)[0]
            self.http_base = "http://" + hostport
            wait_ready(self.http_base, None, 10)
            return self
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix=f"loadtest-{self.kind}-")
        logf = open(os.path.join(self.tmp, "server.log"), "wb")
        if self.kind == "echo":
            cmd = [sys.executable, "-m", "loadtest", "echo", "--port", str(self.port)]
        else:
            cfg = self._write_config()
            cmd = [
                sys.executable,
                "-m",
                "exchange",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                os.path.join(self.tmp, "data"),
                "--config",
                cfg,
            ] + self.server_args
        self.log(f"starting {self.kind}: {' '.join(cmd)}")
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(REPO),
            env=child_env(),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.http_base = f"http://127.0.0.1:{self.port}"
        try:
            wait_ready(self.http_base, self.proc, 90)
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.tmp and not self.keep_dir:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def server_log_tail(self, n: int = 4000) -> str:
        if not self.tmp:
            return ""
        try:
            with open(os.path.join(self.tmp, "server.log"), "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def metrics(self) -> dict[str, float]:
        """The server's /metrics (Prometheus text), each metric summed over its labels (and
        each labelled series under its full name too); empty for the echo baseline or when
        unavailable."""
        if self.kind != "exchange":
            return {}
        try:
            with urllib.request.urlopen(self.http_base + "/metrics", timeout=5) as r:
                text = r.read().decode()
        except Exception:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            try:
                v = float(value)
            except ValueError:
                continue
            out[name] = out.get(name, 0.0) + v
            if name_labels != name:
                out[name_labels] = v
        return out

    def _write_config(self) -> str:
        """The default config plus a ``[server]`` section whose per-connection limits do not
        throttle the load (the load test measures the server, not its rate limiter)."""
        from exchange.app.config import default_config_text

        text = Path(self.config).read_text() if self.config else default_config_text()
        if self.config is None and "\n[server]" not in text:
            text += "\n[server]\nrate_limit_per_second = 1000000\nrate_limit_burst = 1000000\n"
        path = os.path.join(self.tmp, "loadtest.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------------ firms
    def provision(
        self,
        n: int,
        cash: str = "100000000.00",
        units: int = 10_000_000,
        instrument: str = "CEA-2026",
    ) -> list[str]:
        """``n`` funded firms with API keys; returns their keys."""
        if self.kind == "echo":
            return [f"echo-key-{i}" for i in range(n)]
        from .ws_provision import provision_firms

        keys = provision_firms(self, n, cash=cash, units=units, instrument=instrument)
        return keys
