"""Events: what the core says happened. Pure data, produced by ``Exchange.apply``.

Execution reports follow FIX meaning: ``exec_type`` is what this report is about (new, trade,
canceled, replaced, rejected, expired); ``order_status`` is the order's state after it
(new, partially_filled, filled, canceled, rejected, expired); ``cum_qty + leaves_qty`` equals
the order quantity while the order works.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

EVENT_TYPES: dict[str, type] = {}


def event(name: str):
    def wrap(cls):
        cls = dataclass(slots=True)(cls)
        cls.TYPE = name
        cls._FIELDS = tuple(f.name for f in fields(cls))
        EVENT_TYPES[name] = cls
        return cls

    return wrap


def encode_event(ev) -> dict[str, Any]:
    d = {"type": ev.TYPE}
    for f in ev._FIELDS:
        d[f] = getattr(ev, f)
    return d


# exec_type values
EXEC_NEW = "new"
EXEC_TRADE = "trade"
EXEC_CANCELED = "canceled"
EXEC_REPLACED = "replaced"
EXEC_REJECTED = "rejected"
EXEC_EXPIRED = "expired"

# order_status values
ST_NEW = "new"
ST_PARTIAL = "partially_filled"
ST_FILLED = "filled"
ST_CANCELED = "canceled"
ST_REJECTED = "rejected"
ST_EXPIRED = "expired"


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
    proceeds_split: tuple = ()
    ts: int = 0


@event("book_update")
class BookUpdate:
    """L2 changes of one book caused by one command: ((side, price, new_level_qty), ...).
    A new_level_qty of 0 removes the level. ``book_seq`` increases by one per update."""

    instrument: str
    segment: str
    book_seq: int
    changes: tuple


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
    members: tuple


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
    calendar: dict | None


@event("day_ended")
class DayEnded:
    day: int
    reference_prices: tuple  # ((instrument, price), ...)
    expired_orders: int
    # ((instrument, "up" | "down"), ...): no trade and the main book bid at the upper limit
    # (or offered at the lower one); the reference rolled to that limit price
    limit_locked: tuple = ()


@event("account_updated")
class AccountUpdated:
    firm_id: str
    can_trade: bool
