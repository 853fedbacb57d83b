"""Events: what the core says happened. Pure data, produced by ``Exchange.apply``.

Execution reports follow FIX meaning: ``exec_type`` is what this report is about (new, trade,
canceled, replaced, rejected, expired); ``order_status`` is the order's state after it
(new, partially_filled, filled, canceled, rejected, expired); ``cum_qty + leaves_qty`` equals
the order quantity while the order works.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, TypeVar, dataclass_transform

from .orders import ExecType, OrderStatus

EVENT_TYPES: dict[str, type] = {}
_T = TypeVar("_T")


@dataclass_transform()
def event(name: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: make ``cls`` a slotted dataclass event called ``name``."""

    def wrap(cls: type[_T]) -> type[_T]:
        cls = dataclass(slots=True)(cls)
        setattr(cls, "TYPE", name)
        setattr(cls, "_FIELDS", tuple(f.name for f in fields(cls)))  # type: ignore[arg-type]
        EVENT_TYPES[name] = cls
        return cls

    return wrap


def encode_event(ev: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": ev.TYPE}
    for f in ev._FIELDS:
        d[f] = getattr(ev, f)
    return d


# exec_type and order_status values, as stored (exact str: see exchange/core/orders.py)
EXEC_NEW = ExecType.NEW.value
EXEC_TRADE = ExecType.TRADE.value
EXEC_CANCELED = ExecType.CANCELED.value
EXEC_REPLACED = ExecType.REPLACED.value
EXEC_REJECTED = ExecType.REJECTED.value
EXEC_EXPIRED = ExecType.EXPIRED.value

ST_NEW = OrderStatus.NEW.value
ST_PARTIAL = OrderStatus.PARTIALLY_FILLED.value
ST_FILLED = OrderStatus.FILLED.value
ST_CANCELED = OrderStatus.CANCELED.value
ST_REJECTED = OrderStatus.REJECTED.value
ST_EXPIRED = OrderStatus.EXPIRED.value


@event("execution_report")
class ExecutionReport:
    account: str
    order_id: int  # 0 when the order was rejected before it got an id
    client_order_id: str | None
    instrument: str
    segment: str
    side: str
    exec_type: str
    order_status: str
    price: int | None  # the order's limit (or protection) price, fen
    qty: int  # the order's total quantity
    last_qty: int
    last_px: int
    cum_qty: int
    leaves_qty: int
    reason: str | None = None  # reject / cancel reason code
    trade_id: int = 0
    fee: int = 0  # fee charged on this fill, fen
    liquidity: str | None = None  # "maker" | "taker" on trades
    ts: int = 0


@event("trade")
class Trade:
    trade_id: int
    instrument: str
    segment: str
    price: int
    qty: int
    buyer: str
    seller: str
    buy_order_id: int
    sell_order_id: int
    aggressor: str  # side of the incoming order
    buyer_fee: int
    seller_fee: int
    # sub-quota proceeds splits: ((beneficiary, amount), ...) paid out of the seller's net
    proceeds_split: tuple[tuple[str, int], ...] = ()
    ts: int = 0


@event("book_update")
class BookUpdate:
    """L2 changes of one book caused by one command: ((side, price, new_level_qty), ...).
    A new_level_qty of 0 removes the level. ``book_seq`` increases by one per update."""

    instrument: str
    segment: str
    book_seq: int
    changes: tuple[tuple[str, int, int], ...]


@event("command_rejected")
class CommandRejected:
    """A non-order command was refused; nothing changed."""

    command: str
    code: str
    message: str


@event("posting")
class Posting:
    """One double-entry movement outside a trade: ``amount`` of ``asset`` (``CNY`` or an
    instrument) from ``debit`` to ``credit``."""

    asset: str
    debit: str
    credit: str
    amount: int
    reason: str


@event("firm_registered")
class FirmRegistered:
    firm_id: str
    size_class: str


@event("instrument_added")
class InstrumentAdded:
    symbol: str
    kind: str


@event("supply_chain_registered")
class SupplyChainRegistered:
    chain_id: str
    members: tuple[tuple[str, int], ...]


@event("sub_quota_created")
class SubQuotaCreated:
    lot_id: int
    parent: str
    sme: str
    instrument: str
    qty: int
    revenue_share_ppm: int
    surplus_rule: str
    shortfall_rule: str


@event("market_state")
class MarketState:
    """Halt/resume or price band change. ``scope`` is ``*``, ``INSTR`` or ``INSTR:SEGMENT``."""

    scope: str
    halted: bool
    reference_price: int | None = None
    band_bps: int | None = None


@event("session_opened")
class SessionOpened:
    """The trading calendar opened session ``session`` (0 = the first of the day) of the local
    trading date ``date``."""

    date: str
    session: int


@event("session_closed")
class SessionClosed:
    """A session ended: at its scheduled close, or ``early`` by an operator's end of day.
    ``end_of_day``: it was the day's last, and the day's close (``DayEnded``) follows."""

    date: str
    session: int
    end_of_day: bool
    early: bool = False


@event("trading_calendar_set")
class TradingCalendarSet:
    """``calendar``: ``{tz, sessions, weekdays, holidays}``, or None (no calendar)."""

    calendar: dict[str, Any] | None


@event("day_ended")
class DayEnded:
    day: int
    reference_prices: tuple[tuple[str, int], ...]  # ((instrument, price), ...)
    expired_orders: int
    # ((instrument, "up" | "down"), ...): no trade and the main book bid at the upper limit
    # (or offered at the lower one); the reference rolled to that limit price
    limit_locked: tuple[tuple[str, str], ...] = ()


@event("account_updated")
class AccountUpdated:
    firm_id: str
    can_trade: bool
