"""Per-firm, per-period records as dicts that share their key table.

A market keeps an allocation record, a compliance record and a settlement per firm and
period: for 10,000 firms over ten periods that is 300,000 small dicts of fixed shape, most of
whose memory is the same key table, repeated. CPython's key-sharing dictionaries (PEP 412)
store that table once for every instance dict of a class whose attributes are set in the same
order; :func:`record_maker` makes such dicts directly. They are ordinary ``dict`` objects
(``rec["key"]``, ``json.dumps``, equality, ``to_state``) and about half the size. Adding a key
outside the shape still works: that one dict becomes an ordinary dict.
"""

from __future__ import annotations

from typing import Any, Callable


def record_maker(name: str, keys: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """``make(**values)`` returns a dict with exactly ``keys``, in that order, sharing its key
    table with every other dict this maker made. Every key must be given."""
    cls = type(name, (), {"__slots__": ("__dict__",)})
    order = tuple(keys)
    known = frozenset(order)

    def make(**values: Any) -> dict[str, Any]:
        if values.keys() != known:
            missing = sorted(known - values.keys())
            extra = sorted(values.keys() - known)
            raise TypeError(f"{name}: missing {missing}, unexpected {extra}")
        d: dict[str, Any] = cls().__dict__
        for k in order:
            d[k] = values[k]
        return d

    def load(d: dict[str, Any]) -> dict[str, Any]:
        """A record read back from a snapshot, in the shared shape when it has it."""
        return make(**d) if d.keys() == known else d

    make.load = load  # type: ignore[attr-defined]
    make.keys = order  # type: ignore[attr-defined]
    return make
