"""The C accelerators as CPython extension modules (ADR 0013): one per package, multi-phase
initialisation, everything they keep in the module's state rather than in process globals.

A multi-phase module can be instantiated again from its spec (importlib does this for a
subinterpreter, or for an explicit ``module_from_spec``): a second instance must start empty
and stay independent of the first, which the process-global version could not do (its second
"instance" shared the first's registry, classes and constants). The book methods, installed
on the Python class OrderBook, reach the state through their own descriptor type; the last
tests check it binds and falls back like the function it stands in for."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap

import pytest

from exchange.core import book as book_mod
from exchange.core.book import Level, Order, OrderBook

ACCELERATORS = ("exchange.core._accel", "exchange.journal._accel", "exchange.server._accel")


def _built(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def fresh(name: str):
    """A second, independent instance of the extension module ``name`` (skip if not built)."""
    if _built(name) is None:
        pytest.skip(f"{name} is not built")
    spec = importlib.util.find_spec(name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ACCELERATORS)
def test_each_accelerator_is_a_multi_phase_module_beside_its_package(name):
    first = _built(name)
    if first is None:
        pytest.skip(f"{name} is not built")
    second = fresh(name)
    assert second is not first  # a single-phase module would hand back the same one
    assert first.__name__ == second.__name__ == name
    # beside the Python it accelerates: exchange/<package>/_accel.*.so
    assert first.__file__.rsplit("/", 2)[-2] == name.split(".")[1]


def test_journal_state_is_per_module_not_per_process():
    from exchange.core.commands import PlaceOrder
    from exchange.journal import codec

    _accel = pytest.importorskip("exchange.journal._accel")

    cmd = PlaceOrder(
        account="A",
        instrument="CEA-2026",
        segment="main",
        side="buy",
        qty=1,
        price=100,
        order_type="limit",
        tif="GTC",
        post_only=False,
        client_order_id=None,
    )
    codec.payload_line(cmd)  # registers PlaceOrder with the C encoder
    other = fresh("exchange.journal._accel")
    assert PlaceOrder in _accel.registry
    assert other.registry == {} and other.registry is not _accel.registry
    assert other.Submitter is not _accel.Submitter  # a heap type per module instance
    buf = bytearray()
    assert other.append_line(buf, cmd) is False and buf == b""  # nothing registered there
    assert _accel.append_line(buf, cmd) is True and buf.endswith(b"\n")


def test_core_state_is_per_module_not_per_process():
    _accel = pytest.importorskip("exchange.core._accel")
    other = fresh("exchange.core._accel")
    assert other.CorePath is not _accel.CorePath
    assert other.CorePath.__module__ == "exchange.core._accel"
    with pytest.raises(RuntimeError, match="setup"):
        other.CorePath(object())  # this instance was told no classes
    with pytest.raises(TypeError, match="setup"):
        other.book_methods(dict(book_mod.PY_METHODS))


def test_server_state_is_per_module_not_per_process():
    from exchange.server import gateway  # noqa: F401  (calls gate_setup at import)

    other = fresh("exchange.server._accel")
    with pytest.raises(RuntimeError, match="gate_setup first"):
        other.fanout_setup({})
    assert other.gate(object(), {}) is False  # not set up: not taken


@pytest.mark.skipif(sys.version_info < (3, 12), reason="an interpreter's own GIL: 3.12 and later")
def test_each_accelerator_loads_in_an_interpreter_with_its_own_gil():
    """The modules declare Py_MOD_PER_INTERPRETER_GIL_SUPPORTED: an isolated interpreter (its
    own GIL; it refuses an extension that does not declare it) loads each, with a state of its
    own. Loaded by file, so the packages' Python (and its other extensions) stay out."""
    interpreters = pytest.importorskip(
        "_interpreters" if sys.version_info >= (3, 13) else "_xxsubinterpreters"
    )
    paths = {
        name: importlib.util.find_spec(name).origin
        for name in ACCELERATORS
        if _built(name) is not None
    }
    if len(paths) < len(ACCELERATORS):
        pytest.skip("the accelerators are not built")
    script = textwrap.dedent(f"""
        import importlib.util
        mods = {{}}
        for name, path in {paths!r}.items():
            spec = importlib.util.spec_from_file_location(name, path)
            mods[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mods[name])
        assert mods["exchange.journal._accel"].registry == {{}}
        try:
            mods["exchange.core._accel"].CorePath(None)
        except RuntimeError as e:
            assert "setup" in str(e)
        else:
            raise AssertionError("CorePath made without setup")
        """)
    iid = interpreters.create()  # isolated by default: its own GIL
    try:
        failed = interpreters.run_string(iid, script)  # 3.12 raises; 3.13 returns the error
    finally:
        interpreters.destroy(iid)
    assert failed is None, failed


needs_book = pytest.mark.skipif(
    not book_mod.COMPILED_METHODS, reason="exchange.core._accel is not built"
)


@needs_book
def test_compiled_book_methods_bind_like_functions():
    add = book_mod.COMPILED_METHODS["add"]
    assert OrderBook.__dict__["add"] is add
    assert OrderBook.add is add  # from the class: the descriptor itself
    b = OrderBook("CEA-2026")
    bound = b.add
    assert bound.__self__ is b and bound.__func__ is add
    assert add.__name__ == "add" and "price level" in add.__doc__


@needs_book
def test_compiled_book_methods_hand_keywords_and_odd_calls_to_python():
    b = OrderBook("CEA-2026")
    o = Order(1, "A", None, "CEA-2026", "main", book_mod.BUY, 100, 5, "GTC", seq=1)
    b.add(order=o)  # a keyword: the Python method takes it
    assert isinstance(b.bids[-100], Level) and b.orders[1] is o
    assert b.crosses(book_mod.SELL, price=100) is True
    with pytest.raises(TypeError):
        b.remove()  # the Python method's own error for a missing argument
    assert b.remove(1) is o and not b.bids
