"""Order entry on the wire: the one model of place_order, cancel_order and amend_order params.

Each method's params are a tuple of :class:`Param` - name, kind, bounds or allowed values,
required or its default, whether ``null`` is allowed. Everything that checks the shape of an
order request follows it:

* the Python parser (:mod:`exchange.server.protocol`): the pydantic TypedDicts that validate
  and document the params are built from it (:func:`typed_dict`), and the hand-written fast
  paths read its constants (``NAME_MAX``, the enums, the defaults);
* the C gate (``exchange/server/_accel.c``, ``gate``), which takes plainly well-formed orders
  and hands everything else to the Python path, is checked against it:
  ``tests/test_order_entry.py`` derives every way a request can break the model
  (:func:`violations`) and requires the C gate and the Python path to give each the same
  reply, code and message, and to leave the same state;
* the core (``check_price``, ``check_qty``, the enums in ``Exchange.place_order``) then checks
  the business rules of a well-formed order: tick, lot, maximum size, price band, access.

The enums are the core's (:mod:`exchange.core.orders`): a value the wire admits is one the
core knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.orders import OrderType, Side, TimeInForce

NAME_MAX = 64  # instrument, segment, client_order_id: 1 .. 64 characters
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # every integer a client sends (the journal's)

SIDES: tuple[str, ...] = tuple(s.value for s in Side)
ORDER_TYPES: tuple[str, ...] = tuple(t.value for t in OrderType)
TIFS: tuple[str, ...] = tuple(t.value for t in TimeInForce)

# kinds of param
NAME = "name"  # a str of 1 .. NAME_MAX characters
INT64 = "int64"  # a JSON integer (not a bool, not a float) within 64 signed bits
PRICE = "price"  # a decimal string in CNY, at most two decimals (protocol.Price)
BOOL = "bool"  # true or false
ENUM = "enum"  # one of ``values``, exactly (case matters)

REQUIRED = object()  # the default of a param that must be given


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: str
    default: Any = REQUIRED
    nullable: bool = False  # null is allowed (and means the default)
    values: tuple = ()  # ENUM: the allowed values
    doc: str = ""  # the description in the method's schema

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


PLACE_ORDER: tuple[Param, ...] = (
    Param("instrument", NAME),
    Param("segment", NAME, "main"),
    Param("side", ENUM, values=SIDES),
    Param("qty", INT64, doc="whole tonnes"),
    Param(
        "price",
        PRICE,
        None,
        nullable=True,
        doc="limit (or market protection) price, CNY decimal string",
    ),
    Param("order_type", ENUM, "limit", values=ORDER_TYPES),
    Param("tif", ENUM, "GTC", values=TIFS),
    Param("post_only", BOOL, False),
    Param(
        "client_order_id",
        NAME,
        None,
        nullable=True,
        doc="makes place_order idempotent: a retry returns the first result",
    ),
)

# cancel and amend name one of the firm's orders by either id; a request with neither is
# refused by the handler (INVALID_PARAMS, "give order_id or client_order_id")
ORDER_REF: tuple[Param, ...] = (
    Param("order_id", INT64, None, nullable=True),
    Param("client_order_id", NAME, None, nullable=True),
)
CANCEL_ORDER = ORDER_REF
AMEND_ORDER: tuple[Param, ...] = ORDER_REF + (
    Param("qty", INT64, None, nullable=True, doc="new total order quantity"),
    Param("price", PRICE, None, nullable=True),
)

ORDER_ENTRY: dict[str, tuple[Param, ...]] = {
    "place_order": PLACE_ORDER,
    "cancel_order": CANCEL_ORDER,
    "amend_order": AMEND_ORDER,
}


def defaults(params: tuple[Param, ...]) -> dict[str, Any]:
    """``{name: default}`` of the optional params."""
    return {p.name: p.default for p in params if not p.required}


def violations(params: tuple[Param, ...], valid: dict) -> list[tuple[str, dict]]:
    """Every way to break the model from the well-formed ``valid`` params, one at a time:
    ``(what, params)`` with a required param missing, an unknown key, and for each param a
    value of every wrong type, null where it is not allowed, a string too short or too long,
    an integer past 64 bits either way, a value not in its enum (another case included), a
    price with too many decimals or not a decimal string."""
    out: list[tuple[str, dict]] = []

    def put(what: str, name: str, value: Any) -> None:
        out.append((what, {**valid, name: value}))

    for p in params:
        if p.required:
            out.append((f"{p.name} missing", {k: v for k, v in valid.items() if k != p.name}))
        if not p.nullable:
            put(f"{p.name} null", p.name, None)
        wrong_types = {
            "a list": [1],
            "an object": {"a": 1},
            "a float": 1.5,
            "true": True,
            "a number": 7,
            "a string": "7",
        }
        if p.kind == NAME:
            del wrong_types["a string"]
            put(f"{p.name} empty", p.name, "")
            put(f"{p.name} over {NAME_MAX}", p.name, "x" * (NAME_MAX + 1))
        elif p.kind == INT64:
            del wrong_types["a number"]
            put(f"{p.name} 2^63", p.name, INT64_MAX + 1)
            put(f"{p.name} -2^63-1", p.name, INT64_MIN - 1)
            put(f"{p.name} 2^64", p.name, 2**64)
        elif p.kind == PRICE:
            del wrong_types["a string"]  # "7" is a price
            for bad in ("85.001", "1e2", "-1.00", "85,00", " 85.00", "1" * 16 + ".00"):
                put(f"{p.name} {bad!r}", p.name, bad)
        elif p.kind == BOOL:
            del wrong_types["true"]
            put(f"{p.name} 0", p.name, 0)
        elif p.kind == ENUM:
            del wrong_types["a string"]
            put(f"{p.name} not one of {p.values}", p.name, "nope")
            put(f"{p.name} {p.values[0].swapcase()!r}", p.name, p.values[0].swapcase())
        for what, value in wrong_types.items():
            put(f"{p.name} {what}", p.name, value)
    out.append(("an unknown key", {**valid, "extra": 1}))
    return out
