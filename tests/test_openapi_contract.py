"""The OpenAPI document is an exact contract: schemathesis, with every check, against a served
instance, once per role (operator, firm, verifier).

Each role gets its own server process (a fresh demo market on loopback), so what one run does
(halting the market, revoking keys, ending the day) cannot change what another run sees, and
the three runs go side by side. A run fails on any schemathesis failure; besides, no request
may get a 5xx and /readyz must still answer 200 afterwards.

The command each run uses is the one docs/PROTOCOL.md gives for a run by hand; the settings
are the repository's schemathesis.toml. ``CONTRACT_SEED`` / ``CONTRACT_EXAMPLES`` override the
seed (fixed, so CI is repeatable) and the examples per operation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
ROLES = {
    "operator": "operator-demo-key",
    "firm": "demo-key-power1",
    "verifier": "verifier-demo-key",
}
SEED = os.environ.get("CONTRACT_SEED", "20261207")
EXAMPLES = os.environ.get("CONTRACT_EXAMPLES", "10")
RUN_TIMEOUT = 420  # seconds for all three runs together

pytestmark = pytest.mark.slow


class Served:
    """``python -m exchange serve`` on a free loopback port with a fresh data directory."""

    def __init__(self, data_dir: Path):
        # the log goes to a file: a pipe nobody reads would block the server once it is full
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = data_dir.parent / "server.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exchange",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--data-dir",
                    str(data_dir),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.port = 0
        end = time.monotonic() + 60
        while time.monotonic() < end and self.proc.poll() is None:
            m = re.search(r"^listening on [\d.]+:(\d+)", self.log.read_text(), re.M)
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.1)
        if not self.port:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log.read_text()[-4000:])
        self.base = f"http://127.0.0.1:{self.port}"

    def readyz(self) -> int:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def role_operations(base: str, role: str) -> list[str]:
    """``--include-operation-id`` options for the operations ``role`` may call (its x-roles,
    or public): what a client generated for that role uses. The operator's run covers every
    operation, 401 and 403 included; a firm or verifier run over operations that can only
    answer 403 would spend its time on nothing."""
    with urllib.request.urlopen(base + "/api/v1/openapi.json", timeout=30) as r:
        doc = json.load(r)
    out = []
    for ops in doc["paths"].values():
        for op in ops.values():
            roles = op.get("x-roles")
            if roles is None or role in roles:
                out += ["--include-operation-id", op["operationId"]]
    return out


def schemathesis_command(base: str, key: str, report_dir: Path) -> list[str]:
    return [
        str(SCHEMATHESIS),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{base}/api/v1/openapi.json",
        "--url",
        base,
        "--checks",
        "all",
        "-H",
        f"Authorization: Bearer {key}",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "har",
        "--report-dir",
        str(report_dir),
    ]


def server_errors(report_dir: Path) -> list[str]:
    """Every request of the run that got a 5xx, from its HAR report."""
    bad = []
    for har in report_dir.glob("*"):
        for e in json.loads(har.read_text())["log"]["entries"]:
            if e["response"]["status"] >= 500:
                bad.append(
                    f"{e['response']['status']} {e['request']['method']} {e['request']['url']}"
                )
    return bad


def test_schemathesis_all_checks_pass_for_every_role(tmp_path):
    if not SCHEMATHESIS.exists():
        pytest.fail(f"{SCHEMATHESIS} is missing: install the dev extra (python3 dev.py test does)")
    servers, runs = {}, {}
    try:
        for role in ROLES:
            servers[role] = Served(tmp_path / role / "data")
        for role, key in ROLES.items():
            base = servers[role].base
            only = role_operations(base, role) if role != "operator" else []
            runs[role] = subprocess.Popen(
                schemathesis_command(base, key, tmp_path / role / "report") + only,
                cwd=tmp_path / role,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        end = time.monotonic() + RUN_TIMEOUT
        out = {}
        for role, p in runs.items():
            try:
                out[role] = p.communicate(timeout=max(1.0, end - time.monotonic()))[0]
            except subprocess.TimeoutExpired:
                p.kill()
                out[role] = p.communicate()[0] + f"\n(killed after {RUN_TIMEOUT} s)"
        problems = []
        for role, p in runs.items():
            summary = out[role].rstrip().splitlines()[-1] if out[role].strip() else ""
            print(f"[{role}] {summary}")
            if p.returncode != 0:
                problems.append(
                    f"--- schemathesis as {role} exited {p.returncode}:\n{out[role][-12000:]}"
                )
            errors = server_errors(tmp_path / role / "report")
            if errors:
                problems.append(f"--- as {role}, 5xx answers:\n" + "\n".join(errors[:20]))
            if servers[role].readyz() != 200:
                problems.append(f"--- as {role}: /readyz is not 200 after the run")
        assert not problems, "\n".join(problems)
    finally:
        for p in runs.values():
            if p.poll() is None:
                p.kill()
        for s in servers.values():
            s.stop()
