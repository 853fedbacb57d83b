"""sortedcontainers' private layout, named and checked in one place.

A book side is a ``SortedDict``. For speed the compiled order book (exchange/core/_accel.c)
reads and updates the ``SortedList`` of its keys directly instead of through the public API:
the smallest key is ``sd._list._lists[0][0]``, and while the keys are one sublist a level is
opened or closed by editing that sublist, ``_maxes[0]`` and ``_len`` in place. (The Python
book, book.py's ``first_key``, ``open_level`` and ``close_first_level``, is the reference and
uses the public API.) These attributes are private to sortedcontainers; they have been the
same throughout the 2.x releases, but nothing promises that.

So their names live here, and :func:`check` verifies, on a small ``SortedDict`` driven through
the public API only, that the installed release still has them and keeps them as the book
expects. The compiled book calls it when it is set up (``_accel.setup`` with ``OrderBook``)
and reads a side's parts only through :func:`parts`. A release that changed the layout fails
there, with its version in the message, instead of corrupting a book. tests/test_sc_layout.py
runs the check against the installed release and against a changed one.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import sortedcontainers

# the SortedDict's SortedList of keys, and that SortedList's parts (instance attributes)
LIST = "_list"  # SortedDict -> SortedList
LISTS = "_lists"  # list of sorted sublists of keys
MAXES = "_maxes"  # list: the largest key of each sublist
INDEX = "_index"  # list: the positional index tree, empty until a positional lookup
LEN = "_len"  # int: the number of keys
LOAD = "_load"  # int: the sublist size the list splits at (twice this)

#: the release series whose layout this module knows
KNOWN_MAJOR = 2


class LayoutError(RuntimeError):
    """The installed sortedcontainers does not keep the layout the order book relies on."""


def parts(
    sd: sortedcontainers.SortedDict,
) -> tuple[dict[str, Any], list[list[Any]], list[Any], list[int]]:
    """The parts of ``sd``'s SortedList the compiled book reads and edits in place: its
    instance ``__dict__`` (which holds ``LEN`` and ``LOAD``), its sublists, their maxima and
    its positional index."""
    sl = getattr(sd, LIST)
    return vars(sl), getattr(sl, LISTS), getattr(sl, MAXES), getattr(sl, INDEX)


def check(module: ModuleType = sortedcontainers) -> None:
    """Raise :class:`LayoutError`, naming the installed version, when ``module`` (the
    sortedcontainers package) is not a release whose layout is the one above."""
    version = str(getattr(module, "__version__", "unknown"))
    problem = _problem(module, version)
    if problem is not None:
        raise LayoutError(
            f"sortedcontainers {version}: {problem}; the order book reads its private layout "
            f"(exchange/core/_sc_layout.py knows the {KNOWN_MAJOR}.x one): check the new "
            f"release's SortedList and update that module, or install sortedcontainers "
            f"{KNOWN_MAJOR}.x"
        )


def _problem(module: ModuleType, version: str) -> str | None:
    """What is wrong with the layout, or None. Everything is driven through the public API and
    then read through the private names, so a changed meaning fails as a missing name does."""
    if version.split(".")[0] != str(KNOWN_MAJOR):
        return f"not a {KNOWN_MAJOR}.x release"
    sd = module.SortedDict({30: "c", 10: "a", 20: "b"})
    try:
        sl = getattr(sd, LIST)
        d, lists, maxes, index = parts(sd)
    except AttributeError as e:
        return f"a private attribute is missing ({e})"
    if not isinstance(sl, module.SortedList):
        return f"SortedDict.{LIST} is not its SortedList"
    if type(d) is not dict or d.get(LEN) != 3 or type(d.get(LOAD)) is not int or d[LOAD] < 2:
        return f"SortedList.{LEN}/{LOAD} are not ints in its __dict__"
    if type(lists) is not list or lists != [[10, 20, 30]] or type(lists[0]) is not list:
        return f"SortedList.{LISTS} is not one sorted list of the keys"
    if type(maxes) is not list or maxes != [30]:
        return f"SortedList.{MAXES} is not the sublists' maxima"
    if type(index) is not list or index:
        return f"SortedList.{INDEX} is not an empty list before a positional lookup"
    # the same objects are changed in place by the public API (the C keeps them)
    sd[5] = "z"
    del sd[30]
    if parts(sd)[1] is not lists or lists != [[5, 10, 20]] or maxes != [20] or d[LEN] != 3:
        return "the SortedList's lists are not updated in place"
    # several sublists and a positional lookup build the index, in the same list
    big = module.SortedDict((k, None) for k in range(4 * d[LOAD]))
    _, big_lists, _, big_index = parts(big)
    big.peekitem(len(big) // 2)
    if len(big_lists) < 2 or not big_index or parts(big)[3] is not big_index:
        return f"SortedList.{INDEX} is not built in place by a positional lookup"
    return None
