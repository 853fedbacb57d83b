"""``python -m exchange registry ...`` on the demo market (in process) and on a journal."""

from __future__ import annotations

import json

from exchange.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["registry", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_registry_cli_reads_the_demo_market(capsys):
    rc, out, _ = run(capsys, "holdings", "POWER1", "--demo")
    assert rc == 0
    assert "POWER1 CCER-2026: 5000 t\n  DEMO/POWER1-CCER-2026/2026/1-5000" in out
    assert "POWER1 RMN-2026: 6560 t\n  CEX/FOREST-YN1/2026/1641-8200" in out
    rc, out, _ = run(capsys, "projects", "--demo")
    assert (
        "2026: gross 12000 - own 800 - baseline 3000 = net 8200 t; buffer 1640 t; "
        "CEX/FOREST-YN1/2026/1-8200"
    ) in out
    rc, out, _ = run(capsys, "buffer", "--demo", "--format", "json")
    assert json.loads(out)["pools"]["natural"] == {
        "offset_type": "RMN",
        "contributed": 1640,
        "cancelled": 0,
        "held": 1640,
    }
    rc, out, _ = run(capsys, "serial", "DEMO/POWER1-CCER-2026/2026/4990-5010", "--demo")
    assert rc == 0
    assert out.splitlines()[0] == (
        "DEMO/POWER1-CCER-2026/2026/4990-5010: 21 t named, 11 t issued, 0 t retired"
    )
    assert "10 t of it were never issued" in out


def test_registry_cli_errors_are_one_line(capsys):
    rc, _, err = run(capsys, "serial", "not-a-serial", "--demo")
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err
    rc, _, err = run(capsys, "holdings", "NOBODY", "--demo")
    assert rc == 2 and "no account 'NOBODY'" in err
