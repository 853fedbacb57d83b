"""The shape of the import graph (docs/adr/0003-gateway.md, "Module layout"): the composition
root ``exchange.app`` is on top and nothing below it imports it; the core imports only itself;
the dashboard builds on the server and the server does not know the dashboard.

Every ``import`` statement counts, at the top of a module or inside a function (a lazy import is
still a dependency), read from the source with :mod:`ast` so a module that is not imported by
the test run is checked too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "exchange"

# the packages below the composition root
BELOW_APP = ("core", "journal", "rules", "compliance", "registry", "access", "server", "dashboard")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The absolute names of the modules ``path`` imports (``from X import y`` gives ``X`` and,
    since ``y`` may be a submodule, ``X.y``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def package_imports(pkg: str) -> dict[str, set[str]]:
    """``{module: the exchange modules it imports}`` for every module of ``exchange.<pkg>``."""
    out = {}
    for path in sorted((PKG / pkg).rglob("*.py")):
        out[_module_name(path)] = {
            m for m in imports_of(path) if m == "exchange" or m.startswith("exchange.")
        }
    return out


def _offenders(pkg: str, bad) -> list[str]:
    return [
        f"{mod} imports {target}"
        for mod, targets in package_imports(pkg).items()
        for target in sorted(targets)
        if bad(target)
    ]


def _in(target: str, pkg: str) -> bool:
    return target == pkg or target.startswith(pkg + ".")


@pytest.mark.parametrize("pkg", BELOW_APP)
def test_nothing_below_the_composition_root_imports_it(pkg):
    assert (PKG / pkg).is_dir(), pkg
    assert _offenders(pkg, lambda t: _in(t, "exchange.app")) == []


def _graph() -> dict[str, set[str]]:
    """``{module: the exchange modules it imports}`` over the whole package, each import
    narrowed to a module that exists (``from .x import name``: ``.x``, or ``.x.name`` when
    that is a module)."""
    paths = {_module_name(p): p for p in PKG.rglob("*.py")}
    out = {}
    for mod, path in paths.items():
        found = set()
        for t in imports_of(path):
            while t and t not in paths:
                t = t.rpartition(".")[0]
            if t and t != mod:
                found.add(t)
        out[mod] = found
    return out


def test_nothing_below_the_composition_root_reaches_it_through_another_module():
    """Transitively too: a module outside the checked packages (exchange.sim, a top-level
    helper) that imports the app must not be imported from below it."""
    assert _chains_to_app() == []


def _chains_to_app() -> list[str]:
    """``app_module <- ... <- module below it`` for every way one reaches the app."""
    graph = _graph()
    bad = []
    for start in graph:
        if not any(_in(start, f"exchange.{p}") for p in BELOW_APP):
            continue
        seen, todo, via = {start}, [start], {start: None}
        while todo:
            m = todo.pop()
            for t in graph.get(m, ()):
                if t not in seen:
                    seen.add(t)
                    via[t] = m
                    todo.append(t)
        for t in seen:
            if _in(t, "exchange.app"):
                chain = [t]
                while via[chain[-1]] is not None:
                    chain.append(via[chain[-1]])
                bad.append(" <- ".join(chain))
    return sorted(bad)


def test_the_core_imports_only_itself():
    # ``exchange`` alone would be the package's __init__; the core needs none of it
    assert _offenders("core", lambda t: not _in(t, "exchange.core")) == []


def test_the_server_does_not_import_the_dashboard():
    """The dashboard registers routes with the server's route machinery and reads the app's
    keys (exchange/server/appkeys.py); the app package wires both."""
    assert _offenders("server", lambda t: _in(t, "exchange.dashboard")) == []
    dashboard_uses_server = [
        m
        for m, ts in package_imports("dashboard").items()
        if any(_in(t, "exchange.server") for t in ts)
    ]
    assert dashboard_uses_server  # the one direction that remains, so the check above is real


def test_credentials_live_beside_the_core_not_in_the_server():
    # journaled core state: the core's modules may be built without the server
    assert (
        _offenders("access", lambda t: not (_in(t, "exchange.core") or _in(t, "exchange.access")))
        == []
    )


def test_the_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The walk resolves relative imports and reads imports inside functions."""
    pkg = tmp_path / "exchange" / "server"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text(
        "def f():\n    from ..app.engine import build_exchange\n    from . import gateway\n"
    )
    monkeypatch.setattr(f"{__name__}.PKG", tmp_path / "exchange")
    assert {"exchange.app.engine", "exchange.server.gateway"} <= imports_of(pkg / "x.py")
    assert _offenders("server", lambda t: _in(t, "exchange.app")) == [
        "exchange.server.x imports exchange.app.engine",
        "exchange.server.x imports exchange.app.engine.build_exchange",
    ]
    # and through a module outside the checked packages
    (pkg / "x.py").write_text("from .. import helper\n")
    (pkg.parent / "helper.py").write_text("import exchange.app.engine\n")
    (pkg.parent / "app").mkdir()
    (pkg.parent / "app" / "engine.py").write_text("")
    assert _offenders("server", lambda t: _in(t, "exchange.app")) == []
    assert _chains_to_app() == ["exchange.app.engine <- exchange.helper <- exchange.server.x"]
