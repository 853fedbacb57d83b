"""The order vocabulary and the order-state machine.

Sides, times in force, order types, order statuses, execution types and self-trade
prevention policies are :class:`enum.StrEnum` s whose values are the protocol's strings
(docs/PROTOCOL.md), so ``Side.BUY == "buy"`` and a journal, a snapshot or an event written
with either is the same bytes.

The values the core sets itself - statuses, exec types, liquidity, the sides of L2 changes -
are the plain ``str`` values (``OrderStatus.FILLED.value``, exported as ``ST_FILLED``, ``BUY``
and friends): the compiled twin and the encoders that read these objects take their fast path
on exact ``str`` objects and compare statuses by identity with the constants they were given
(``_core_path()`` in exchange.py). A command may carry members or plain strings; an order
keeps the command's side and time in force as given, on both paths. A member and its value
compare and hash equal, so ``o.status == OrderStatus.FILLED`` reads the same either way.

The order-state machine
-----------------------

An order is born ``new`` (an order refused before it got an id never exists: its one report
says ``rejected``). From then on its status only changes along :data:`ORDER_TRANSITIONS`::

    new              -> partially_filled | filled | canceled | expired
    partially_filled -> partially_filled | filled | canceled | expired
    filled, canceled, expired, rejected: final

Every place in the Python core that changes a status goes through :func:`transition`, which
refuses any other move with :class:`IllegalTransition` (a bug, never a business reject). The
compiled twin is told the same table (``setup({"ORDER_TRANSITIONS": ...})``); its status
changes are checked against it by tests/test_core_transitions.py, which replays seeded streams
through the compiled path and follows every order's reports.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final, NewType

if TYPE_CHECKING:
    from .book import Order

# ------------------------------------------------------------------ identifiers
FirmId = NewType("FirmId", str)  # an account: a firm's id or a system account (@bank, ...)
OrderId = NewType("OrderId", int)  # the core's order id, from 1; 0 in a pre-id reject
TradeId = NewType("TradeId", int)
ClientOrderId = NewType("ClientOrderId", str)  # the firm's own id of a live order
Symbol = NewType("Symbol", str)  # an instrument, e.g. "CEA-2026"
SegmentName = NewType("SegmentName", str)  # "main", "sme", "chain:<id>", ...


# ------------------------------------------------------------------ vocabulary
class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class TimeInForce(StrEnum):
    GTC = "GTC"  # good till cancelled
    DAY = "DAY"  # expires at the end of the trading day
    IOC = "IOC"  # immediate or cancel: what does not trade on arrival is cancelled
    FOK = "FOK"  # fill or kill: trades in full on arrival or is rejected


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"  # an IOC (or FOK) limit at the band's edge or its protection price


class OrderStatus(StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


class ExecType(StrEnum):
    """What an execution report is about (FIX ExecType)."""

    NEW = "new"
    TRADE = "trade"
    CANCELED = "canceled"
    REPLACED = "replaced"
    REJECTED = "rejected"
    EXPIRED = "expired"


class StpPolicy(StrEnum):
    """Self-trade prevention: what happens when an order would trade with its own firm's."""

    CANCEL_RESTING = "cancel_resting"  # the resting order goes, matching goes on
    CANCEL_INCOMING = "cancel_incoming"  # the incoming order's rest is cancelled
    CANCEL_BOTH = "cancel_both"  # both


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


# The stored forms (exact str, see the module docstring).
BUY: Final = Side.BUY.value
SELL: Final = Side.SELL.value
GTC: Final = TimeInForce.GTC.value
DAY: Final = TimeInForce.DAY.value
IOC: Final = TimeInForce.IOC.value
FOK: Final = TimeInForce.FOK.value
LIMIT: Final = OrderType.LIMIT.value
MARKET: Final = OrderType.MARKET.value

# ------------------------------------------------------------------ the state machine
ORDER_TRANSITIONS: Final[dict[OrderStatus, frozenset[OrderStatus]]] = {
    OrderStatus.NEW: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}
#: the statuses an order's first report may carry
INITIAL_STATUSES: Final = frozenset({OrderStatus.NEW, OrderStatus.REJECTED})


class IllegalTransition(RuntimeError):
    """A status change outside :data:`ORDER_TRANSITIONS`: a bug in the core."""


#: :data:`ORDER_TRANSITIONS` in the stored form (exact str) orders hold: the allowed
#: ``(old, new)`` pairs, one set lookup per status change
_ALLOWED: Final = frozenset(
    (old.value, new.value) for old, news in ORDER_TRANSITIONS.items() for new in news
)


def allowed(old: str, new: str) -> bool:
    """May an order go from status ``old`` to ``new``?"""
    return (str(old), str(new)) in _ALLOWED


def transition(order: Order, new: OrderStatus) -> None:
    """Set ``order``'s status to ``new``, which the table must allow from its current one."""
    v: str = new._value_  # the stored form, without the enum's value descriptor
    if (order.status, v) not in _ALLOWED:
        raise IllegalTransition(f"order {order.order_id}: {order.status} -> {v}")
    order.status = v


def is_final(status: str) -> bool:
    """Has an order with this status stopped working (filled, canceled, expired, rejected)?"""
    return not ORDER_TRANSITIONS[OrderStatus(status)]
