"""The package on its own: the wheel an operator installs serves, simulates and shows its
dashboard outside the checkout.

The slow part builds the wheel once (``python -m build --wheel`` on a copy of the working tree),
installs it into one fresh virtualenv (PyPI for its dependencies) and runs ``carbon-exchange``
from empty temporary directories: ``serve`` (``/readyz``, the dashboard page, its scripts, and
one browser test of tests/test_dashboard.py against it), ``simulate`` of a shipped scenario by
name, ``journal verify``, ``init-config`` with ``$CARBON_EXCHANGE_CONFIG``, and the package
read from a zip. The fast part checks the same rules on the checkout's install.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

import test_dashboard as dashboard
from test_dashboard import browser, chromium_path, page  # noqa: F401  (fixtures: page uses server)

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# ------------------------------------------------------------------ fast: the checkout's install
def test_wheel_package_list_covers_every_directory():
    """pyproject.toml lists the packages (discovery cannot map config/ to exchange.defaults):
    every directory of exchange/ and config/ with Python modules must be there, or the wheel
    would silently leave it out. (Data files ship through recursive package-data globs; the
    slow test below checks the wheel holds every one.)"""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"exchange.defaults": "config"}
    found = set()
    for top, name in ((ROOT / "exchange", "exchange"), (ROOT / "config", "exchange.defaults")):
        for d in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            if "__pycache__" not in d.parts and any(d.glob("*.py")):
                found.add(".".join([name, *d.relative_to(top).parts]))
    assert found == listed, (
        f"missing from pyproject.toml: {sorted(found - listed)}; "
        f"listed but not in the tree: {sorted(listed - found)}"
    )
    assert not any(p.startswith("loadtest") for p in listed)


def test_version_names_package_and_journal_format(capsys):
    from exchange import __version__
    from exchange.cli import main
    from exchange.journal.sqlite import FORMAT_VERSION

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"carbon-exchange {__version__}" in out and f"journal format {FORMAT_VERSION}" in out


def test_config_precedence_flag_then_environment_then_packaged(tmp_path, monkeypatch):
    from exchange.app.config import CONFIG_ENV, config_origin, config_path, load_settings

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert config_path(None) is None
    assert "packaged default" in config_origin(None)
    assert load_settings(None).demo.firms  # the packaged default has the demo market
    env_file = tmp_path / "env.toml"
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert config_path(None) == str(env_file)
    assert config_origin(str(env_file)).endswith(f"env.toml (${CONFIG_ENV})")
    assert config_path("flag.toml") == "flag.toml"


def test_init_config_writes_the_commented_default_and_refuses_to_overwrite(tmp_path, capsys):
    from exchange.cli import main
    from exchange.app.config import default_config_text, load_settings

    dest = tmp_path / "etc" / "exchange.toml"
    assert main(["init-config", str(dest)]) == 0
    text = dest.read_text()
    assert text.endswith(default_config_text()) and text.startswith("#")
    assert load_settings(dest) == load_settings(None)
    dest.write_text(text.replace('data_dir = "data"', 'data_dir = "/var/lib/exchange"'))
    assert main(["init-config", str(dest)]) == 1
    assert "exists" in capsys.readouterr().err
    assert load_settings(dest).journal.data_dir == "/var/lib/exchange"  # untouched
    assert main(["init-config", str(dest), "--force"]) == 0
    assert load_settings(dest).journal.data_dir == "data"


def test_missing_or_bad_settings_file_is_an_error_in_words(tmp_path, capsys):
    from exchange.cli import main

    assert main(["demo", "--config", str(tmp_path / "none.toml")]) == 2
    assert "settings file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[market\n")
    assert main(["journal", "verify", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_unknown_scenario_lists_the_shipped_names(tmp_path, capsys):
    from exchange.cli import main
    from exchange.app.config import shipped_scenarios

    names = list(shipped_scenarios())
    assert {"three_sectors", "supply_chain_smes"} <= set(names)
    assert main(["simulate", "no_such_scenario", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "neither a file nor a shipped scenario" in err and ", ".join(names) in err
    assert (
        main(
            [
                "simulate",
                "--compare",
                "nope.toml",
                "--vary",
                "offset_cap=0,0.1",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "three_sectors" in capsys.readouterr().err


# ------------------------------------------------------------------ slow: the installed wheel
_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.so",
    "*.pyc",
    "data",
    "artifacts",
    "out",
    ".pytest_cache",
    ".hypothesis",
    "docs",
    "tests",
)


def _run(cmd, cwd, env, timeout=300, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {p.returncode}:\n"
            f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """One wheel, one fresh virtualenv with it installed, and an environment that knows nothing
    of the checkout."""
    base = tmp_path_factory.mktemp("packaging")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "CARBON_EXCHANGE_CONFIG")
    }
    env["PYTHONUNBUFFERED"] = "1"
    t0 = time.monotonic()
    # a copy: the build writes build/ and *.egg-info beside the sources, and the checkout's
    # in-place extension must not stand in for the one the wheel compiles
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_COPY_IGNORE)
    dist = base / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src], base, env)
    wheels = list(dist.glob("carbon_exchange-*.whl"))
    assert len(wheels) == 1, wheels
    t_build = time.monotonic() - t0
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", venv], base, env)
    py, cli = venv / "bin" / "python", venv / "bin" / "carbon-exchange"
    _run(
        [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheels[0]],
        base,
        env,
        timeout=600,
    )
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    print(
        f"[packaging] wheel built in {t_build:.1f} s, installed in "
        f"{time.monotonic() - t0 - t_build:.1f} s"
    )
    return {"base": base, "wheel": wheels[0], "py": py, "cli": cli, "env": env}


def _empty_dir(installed, name: str) -> Path:
    d = installed["base"] / name
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def server(installed):
    """``carbon-exchange serve --port <free> --data-dir d`` from an empty directory, with the
    dashboard tests' trading history seeded."""
    run = _empty_dir(installed, "run")
    info = dashboard.start_server(
        [str(installed["cli"]), "serve", "--port", str(_free_port()), "--data-dir", "d"],
        cwd=run,
        data=run / "d",
        env=installed["env"],
    )
    info["run"] = run
    yield info
    dashboard.stop_server(info)


@pytest.mark.slow
def test_wheel_holds_the_package_and_its_data_only(installed):
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = z.namelist()
        top = z.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode()
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"exchange"}, tops  # no loadtest, no config at the top of site-packages
    assert top.split() == ["exchange"]
    # every shipped file of the tree is in the wheel, where importlib.resources finds it
    data = {
        f"exchange/defaults/{f.relative_to(ROOT / 'config').as_posix()}"
        for f in (ROOT / "config").rglob("*.toml")
    }
    data |= {
        f"exchange/dashboard/{f.relative_to(ROOT / 'exchange' / 'dashboard').as_posix()}"
        for f in (ROOT / "exchange" / "dashboard" / "static").rglob("*")
        if f.is_file()
    }
    assert {
        "exchange/defaults/default.toml",
        "exchange/defaults/scenarios/three_sectors.toml",
        "exchange/dashboard/static/index.html",
        "exchange/dashboard/static/js/app.js",
    } <= data
    assert data <= set(names), sorted(data - set(names))
    for pkg in ("core", "journal", "server"):  # each package's accelerator (ADR 0013)
        assert any(n.startswith(f"exchange/{pkg}/_accel") and n.endswith(".so") for n in names)
    assert b"carbon-exchange = exchange.cli:main" in entry


@pytest.mark.slow
def test_installed_command_imports_from_site_packages(installed):
    d = _empty_dir(installed, "where")
    p = _run(
        [
            installed["py"],
            "-c",
            "import exchange, importlib.util; print(exchange.__file__); "
            "print(importlib.util.find_spec('loadtest'))",
        ],
        d,
        installed["env"],
    )
    where, loadtest = p.stdout.split()
    assert Path(where).is_relative_to(installed["base"] / "venv"), where
    assert loadtest == "None"
    v = _run([installed["cli"], "--version"], d, installed["env"]).stdout
    from exchange import __version__
    from exchange.journal.sqlite import FORMAT_VERSION

    assert v.strip() == f"carbon-exchange {__version__} (journal format {FORMAT_VERSION})"


@pytest.mark.slow
def test_installed_server_is_ready_and_serves_the_dashboard(server):
    with urllib.request.urlopen(server["base"] + "/readyz", timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())["ok"] is True
    out = "".join(server["output"])
    assert "Settings: the packaged default settings" in out
    assert (server["run"] / "d" / "journal.sqlite").is_file()
    # the page, its scripts and stylesheet, from the installed package's data
    dashboard.test_page_served_with_assets(server)


@pytest.mark.slow
def test_installed_dashboard_in_a_browser(page, server):  # noqa: F811 (page: the fixture)
    dashboard.test_market_view_shows_client_orders_in_depth(page, server)


@pytest.mark.slow
def test_installed_simulate_shipped_scenario_by_name(installed):
    d = _empty_dir(installed, "sim")
    _run(
        [installed["cli"], "simulate", "three_sectors", "--out", "o", "--quiet"],
        d,
        installed["env"],
    )
    report = (d / "o" / "report.md").read_text()
    assert report.startswith("#") and (d / "o" / "summary.json").is_file()


@pytest.mark.slow
def test_installed_init_config_and_environment(installed):
    d = _empty_dir(installed, "site")
    env, cli = installed["env"], installed["cli"]
    _run([cli, "init-config", "site.toml"], d, env)
    again = _run([cli, "init-config", "site.toml"], d, env, check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    # the operator's file, found through the environment, is the one the server says it uses
    env = dict(env, CARBON_EXCHANGE_CONFIG=str(d / "site.toml"))
    proc = subprocess.Popen(
        [str(cli), "serve", "--in-memory", "--port", "0"],
        cwd=d,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("listening on"):
                break
    finally:
        dashboard.stop_server({"proc": proc})
    out = "".join(lines)
    assert f"Settings: {d / 'site.toml'} ($CARBON_EXCHANGE_CONFIG)" in out, out


@pytest.mark.slow
def test_installed_package_reads_its_data_from_a_zip(installed):
    """The shipped files are read through importlib.resources: the package zipped (the pure
    Python code runs; the compiled extension cannot load from a zip) still finds them."""
    d = _empty_dir(installed, "zip")
    site = Path(
        _run(
            [
                installed["py"],
                "-c",
                "import exchange, os; print(os.path.dirname(os.path.dirname(exchange.__file__)))",
            ],
            d,
            installed["env"],
        ).stdout.strip()
    )
    archive = d / "exchange.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted([site / "exchange", *(site / "exchange").rglob("*")]):
            # directories get entries too (as `zip -r` makes): zipimport finds the namespace
            # package exchange.core by its directory entry
            if "__pycache__" not in f.parts and f.suffix != ".so":
                z.write(f, f.relative_to(site).as_posix())
    code = (
        "import exchange, exchange.app.config as c, exchange.dashboard as dsh; "
        "assert exchange.__file__.startswith(%r), exchange.__file__; "
        "s = c.load_settings(); t = c.shipped_scenarios(); "
        "print(len(s.demo.firms), sorted(t), "
        "len(dsh.STATIC.joinpath('js', 'app.js').read_bytes()) > 0)" % str(archive)
    )
    p = _run([installed["py"], "-c", code], d, dict(installed["env"], PYTHONPATH=str(archive)))
    assert "three_sectors" in p.stdout and p.stdout.strip().endswith("True"), p.stdout


@pytest.mark.slow
def test_installed_journal_verify(installed, server):
    # after the graceful stop (final snapshot), from the server's directory, as an auditor would
    assert dashboard.stop_server(server) == 0
    p = _run(
        [installed["cli"], "journal", "verify", "d/journal.sqlite"], server["run"], installed["env"]
    )
    assert "hash chain: ok" in p.stdout and "state_hash " in p.stdout, p.stdout
