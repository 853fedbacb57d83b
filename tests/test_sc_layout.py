"""sortedcontainers' private layout, which the order book reads for speed, is named and checked
in one place (exchange/core/_sc_layout.py; ADR 0013). The check must pass on the installed
release and fail loudly, naming the version, on one that changed the layout; the compiled book
runs it when it is set up."""

from __future__ import annotations

import importlib
import importlib.util
import types

import pytest
import sortedcontainers
from sortedcontainers import SortedDict

from exchange.core import _sc_layout
from exchange.core import book as book_mod


def test_the_installed_release_has_the_layout_the_book_reads():
    _sc_layout.check()  # raises LayoutError on a release that changed it
    sd = SortedDict({5: "a", 1: "b"})
    d, lists, maxes, index = _sc_layout.parts(sd)
    sd[3] = "c"  # through the public API: the same objects change
    assert lists == [[1, 3, 5]] and maxes == [5] and d[_sc_layout.LEN] == 3
    assert index == [] and isinstance(d[_sc_layout.LOAD], int)
    assert sd.keys()[0] == lists[0][0] == book_mod.first_key(sd)


def test_another_major_version_is_refused_with_its_version(monkeypatch):
    monkeypatch.setattr(sortedcontainers, "__version__", "3.0.0")
    with pytest.raises(_sc_layout.LayoutError, match=r"sortedcontainers 3\.0\.0: not a 2\.x"):
        _sc_layout.check()


def test_a_renamed_private_attribute_is_refused_with_the_version(monkeypatch):
    # what a release that renamed SortedList._lists looks like to the check
    monkeypatch.setattr(_sc_layout, "LISTS", "_sublists")
    with pytest.raises(
        _sc_layout.LayoutError, match=rf"sortedcontainers {sortedcontainers.__version__}: .*missing"
    ):
        _sc_layout.check()


def test_a_changed_meaning_is_refused():
    # a SortedList whose sublists are not kept where the book looks (a copy per access)
    class CopyingList(sortedcontainers.SortedList):
        @property
        def _lists(self):
            return [list(x) for x in self.__dict__["_lists"]]

        @_lists.setter
        def _lists(self, v):
            self.__dict__["_lists"] = v

    class CopyingDict(SortedDict):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self._list = CopyingList(self._list)

    fake = types.SimpleNamespace(
        __version__="2.9.0", SortedDict=CopyingDict, SortedList=sortedcontainers.SortedList
    )
    with pytest.raises(_sc_layout.LayoutError, match=r"sortedcontainers 2\.9\.0: "):
        _sc_layout.check(fake)


def test_the_compiled_book_checks_the_layout_when_it_is_set_up(monkeypatch):
    if importlib.util.find_spec("exchange.core._accel") is None:
        pytest.skip("exchange.core._accel is not built")
    importlib.import_module("exchange.core._accel")
    spec = importlib.util.find_spec("exchange.core._accel")
    accel = importlib.util.module_from_spec(spec)  # an instance of its own, not the live one
    spec.loader.exec_module(accel)
    monkeypatch.setattr(sortedcontainers, "__version__", "3.0.0")
    with pytest.raises(_sc_layout.LayoutError, match=r"3\.0\.0"):
        accel.setup(
            {"OrderBook": book_mod.OrderBook, "Order": book_mod.Order, "Level": book_mod.Level}
        )
