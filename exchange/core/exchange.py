"""The exchange core: a deterministic state machine.

``Exchange.apply(command, seq, ts) -> list[event]``. No I/O, no wall clock, no randomness: the
envelope passed beside the command (``seq``, ``ts``; while it applies ``last_seq`` and
``now``) is the only notion of order and time. The same command log always
gives the same state, and :meth:`Exchange.state_hash` proves it.

Business rejects never raise out of ``apply``: every check runs *before* the first mutation,
and a refused command yields a reject event (an ``ExecutionReport`` with ``exec_type`` rejected
for orders, ``RequestRejected``-style ``CommandRejected`` for the rest) and changes nothing but
the sequence number.

The rules and compliance modules plug in as :class:`Module` s: they register their own
commands, handlers and state (see :func:`exchange.app.engine.build_exchange`).

Rounding (not one fen is created or lost):

* fee on a fill = floor(notional x fee_bps / 10,000), charged to buyer and to seller;
* a buy order reserves price x leaves + ceil(price x leaves x fee_bps / 10,000); each fill
  releases exactly the difference between the old and the new reservation, which always covers
  what the fill costs (price improvement and fee rounding only ever free cash);
* a sale of sub-quota units: the seller's net proceeds (notional - seller fee) are cut per lot
  in proportion to the units, floor; of each lot's portion the SME keeps
  floor(portion x revenue_share_ppm / 1,000,000) and the parent gets the rest; the seller (SME)
  receives the net minus what the parents get, so the parts sum exactly to the net.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any, Callable, NoReturn

from . import errors as E
from .accounts import (
    BANK,
    CASH,
    EXCHANGE_ACCOUNT,
    ISSUER,
    LOT_PURCHASE,
    LOT_SUB_QUOTA,
    LOT_TRANSFER,
    SYSTEM_ACCOUNTS,
    Account,
    Holding,
    post_cash,
    put_units,
    take_units,
)
from .book import BUY, SELL, STP_POLICIES, Order, OrderBook
from .commands import (
    DAY,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    AddInstrument,
    AmendOrder,
    CancelAll,
    CancelOrder,
    Clock,
    CreateSubQuota,
    DepositCash,
    EndOfDay,
    Halt,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    RegisterSupplyChain,
    Resume,
    SetFirmTrading,
    SetPriceBand,
    SetTradingCalendar,
    SnapshotMarker,
    TransferUnits,
    WithdrawCash,
    command,
    Command,
)
from .calendar import TradingCalendar
from .events import (
    EXEC_CANCELED,
    EXEC_EXPIRED,
    EXEC_NEW,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_TRADE,
    ST_CANCELED,
    ST_FILLED,
    ST_NEW,
    ST_PARTIAL,
    ST_REJECTED,
    AccountUpdated,
    BookUpdate,
    CommandRejected,
    DayEnded,
    ExecutionReport,
    FirmRegistered,
    InstrumentAdded,
    MarketState,
    Posting,
    SessionClosed,
    SessionOpened,
    SubQuotaCreated,
    SupplyChainRegistered,
    Trade,
    TradingCalendarSet,
)
from .orders import (
    ORDER_TRANSITIONS,
    ClientOrderId,
    FirmId,
    Liquidity,
    OrderId,
    OrderStatus,
    SegmentName,
    Symbol,
    transition,
)
from .units import MAX_CASH, MAX_QTY, PPM, fee_ceil, fee_floor

_TIFS = (GTC, DAY, IOC, FOK)
SEGMENT_ACCESS = ("all", "sme_sell_any_buy", "sme_only", "members")
LIQ_MAKER = Liquidity.MAKER.value
LIQ_TAKER = Liquidity.TAKER.value

NO_LIVE_ORDER = "no live order with that id on this account"  # UNKNOWN_ORDER's message


def _core_path() -> Any:
    """The compiled order path (exchange.core._accel.CorePath), told the classes and constants
    it works with (book.py has told it the book's); None where the extension is not built."""
    try:
        _accel = importlib.import_module("exchange.core._accel")
    except ImportError:
        return None
    _accel.setup(
        {
            "Account": Account,
            "Holding": Holding,
            "Instrument": Instrument,
            "SegmentRules": SegmentRules,
            "ExecutionReport": ExecutionReport,
            "Trade": Trade,
            "BookUpdate": BookUpdate,
            "PlaceOrder": PlaceOrder,
            "CancelOrder": CancelOrder,
            "AmendOrder": AmendOrder,
            "Exchange": Exchange,
            "GTC": GTC,
            "DAY": DAY,
            "IOC": IOC,
            "LIMIT": LIMIT,
            "ST_NEW": ST_NEW,
            "ST_PARTIAL": ST_PARTIAL,
            "ST_FILLED": ST_FILLED,
            "ST_CANCELED": ST_CANCELED,
            "EXEC_NEW": EXEC_NEW,
            "EXEC_TRADE": EXEC_TRADE,
            "EXEC_CANCELED": EXEC_CANCELED,
            "EXEC_REPLACED": EXEC_REPLACED,
            "MAKER": LIQ_MAKER,
            "TAKER": LIQ_TAKER,
            "CANCELED_BY_CLIENT": "CANCELED_BY_CLIENT",
            "UNFILLED_IOC": "UNFILLED_IOC",
            "SELF_TRADE_PREVENTED": E.SELF_TRADE_PREVENTED,
            "ACCESS_ALL": "all",
            "LOT_SUB_QUOTA": LOT_SUB_QUOTA,
            "LOT_PURCHASE": LOT_PURCHASE,
            "EXCHANGE_ACCOUNT": EXCHANGE_ACCOUNT,
            "take_units": take_units,
            "SequenceError": SequenceError,
            "Reject": E.Reject,
            "CommandRejected": CommandRejected,
            "UNKNOWN_ORDER": E.UNKNOWN_ORDER,
            "NO_LIVE_ORDER": NO_LIVE_ORDER,
            "CANCEL_TYPE": CancelOrder.TYPE,
            # the order-state machine (orders.py); tests/test_core_transitions.py holds the
            # compiled path's status changes to it
            "ORDER_TRANSITIONS": ORDER_TRANSITIONS,
        }
    )
    return _accel.CorePath


@command("add_segment")
class AddSegment(Command):
    """Define a segment's rules. ``name`` is ``main``, ``sme`` or ``chain`` (the template every
    ``chain:<id>`` book takes). Applies to books opened from now on and to existing books of
    that segment."""

    name: str
    tick: int = 1  # fen
    lot: int = 1  # tonnes
    max_order_qty: int = 99_999  # listed trading: under 100,000 t
    fee_bps: int = 0
    access: str = "all"


class SegmentRules:
    __slots__ = ("name", "tick", "lot", "max_order_qty", "fee_bps", "access")

    def __init__(
        self, name: str, tick: int, lot: int, max_order_qty: int, fee_bps: int, access: str
    ) -> None:
        self.name = name
        self.tick = tick
        self.lot = lot
        self.max_order_qty = max_order_qty
        self.fee_bps = fee_bps
        self.access = access

    def to_state(self) -> list[Any]:
        return [self.tick, self.lot, self.max_order_qty, self.fee_bps, self.access]


class Instrument:
    """A tradable unit kind and its price band. The day statistics (open, high, low, last,
    volume, VWAP) belong to each board, on its :class:`OrderBook`; the reference price is the
    instrument's and only its ``main`` board's VWAP sets it."""

    __slots__ = (
        "symbol",
        "kind",
        "vintage",
        "offset_type",
        "_ref",
        "_band_bps",
        "band_lo",
        "band_hi",
        "halted",
    )

    def __init__(
        self,
        symbol: str,
        kind: str,
        vintage: int,
        offset_type: str | None,
        reference_price: int,
        band_bps: int,
    ) -> None:
        self.symbol = symbol
        self.kind = kind
        self.vintage = vintage
        self.offset_type = offset_type
        self._ref = reference_price
        self._band_bps = band_bps
        self._set_band()
        self.halted = False

    @property
    def reference_price(self) -> int:
        return self._ref

    @reference_price.setter
    def reference_price(self, v: int) -> None:
        self._ref = v
        self._set_band()

    @property
    def band_bps(self) -> int:
        return self._band_bps

    @band_bps.setter
    def band_bps(self, v: int) -> None:
        self._band_bps = v
        self._set_band()

    def _set_band(self) -> None:
        """Cache the band edges; with no reference price or no band, any price passes."""
        if self._ref <= 0 or self._band_bps <= 0:
            self.band_lo, self.band_hi = 1, 1 << 62
            return
        half = self._ref * self._band_bps // 10_000
        self.band_lo = self._ref - half
        self.band_hi = self._ref + half

    def band(self) -> tuple[int, int] | None:
        """(lowest, highest) allowed price, or None when no reference price is set yet."""
        if self._ref <= 0 or self._band_bps <= 0:
            return None
        return self.band_lo, self.band_hi

    _STATE = ("kind", "vintage", "offset_type", "reference_price", "band_bps", "halted")
    # the day statistics an instrument's state carried before they were per board
    _LEGACY_DAY = (
        "day_open",
        "day_high",
        "day_low",
        "last",
        "day_volume",
        "day_notional",
        "day_trades",
    )

    def to_state(self) -> list[Any]:
        return [getattr(self, f) for f in self._STATE]

    @classmethod
    def from_state(cls, symbol: str, s: list[Any]) -> Instrument:
        i = cls(symbol, s[0], s[1], s[2], s[3], s[4])
        i.halted = s[5]
        return i


class Module:
    """A pluggable part of the state machine (rules, compliance). Subclasses set ``name`` and
    implement ``handlers``; state must round-trip through ``to_state``/``load_state``."""

    name = "module"

    def __init__(self, ex: "Exchange"):
        self.ex = ex

    def handlers(self) -> dict[type, Callable[[Any], list[Any]]]:
        return {}

    def to_state(self) -> Any:
        return None

    def load_state(self, state: Any) -> None:
        pass


class SequenceError(Exception):
    """A command arrived out of sequence: a sequencer bug, not a business reject."""


class Exchange:
    """The whole market state and the rules that change it."""

    DEFAULT_BAND_BPS = 1000

    # The attributes every order reads are slots (a fixed offset for the compiled order path
    # and the interpreter alike, no dict lookup); everything else lives in __dict__.
    __slots__ = (
        "last_seq",
        "now",
        "next_order_id",
        "next_trade_id",
        "market_halted",
        "emit_book_updates",
        "_rules",
        "instruments",
        "books",
        "halted_books",
        "accounts",
        "trade_listeners",
        "_handlers",
        "__dict__",
        "__weakref__",
    )

    def __init__(
        self,
        modules: tuple[type[Module], ...] = (),
        emit_book_updates: bool = True,
        accelerate: bool = True,
    ):
        self.last_seq = 0
        self.now = 0
        self.day = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        self.next_lot_id = 1
        # market_halted is what the order path reads: an operator's market-wide halt, or the
        # trading calendar's market closed between sessions (docs/CORE.md, "Trading sessions")
        self.market_halted = False
        self.operator_halted = False
        self.calendar: TradingCalendar | None = None
        # the calendar's position: the session open now (or None), the trading date of the
        # last session opened, and the last date whose day has ended
        self.session: dict[str, Any] = {"open": None, "date": None, "closed_date": None}
        self.emit_book_updates = emit_book_updates
        self.segments: dict[str, SegmentRules] = {}
        self._rules: dict[str, SegmentRules] = {}  # book segment name -> its rules (derived)
        self.instruments: dict[str, Instrument] = {}
        self.books: dict[tuple[str, str], OrderBook] = {}
        self.halted_books: set[tuple[str, str]] = set()
        self.accounts: dict[str, Account] = {
            a: Account(a, system=True, can_trade=False) for a in SYSTEM_ACCOUNTS
        }
        self.chains: dict[str, dict[str, Any]] = {}
        self.sub_quotas: dict[int, dict[str, Any]] = {}
        # called with each Trade as it settles (modules that observe trades, e.g. compliance):
        # cheaper than wrapping the order handlers, and costs nothing for orders that only rest
        self.trade_listeners: list[Callable[[Trade], None]] = []
        # called by move_units, the one other way units move (the credit registry follows
        # serials with it), and the instrument kinds whose units only a module may issue
        self.unit_listeners: list[Callable[[Account, Account, str, int, str], None]] = []
        self.serialised_kinds: frozenset[str] = frozenset()
        self._handlers: dict[type, Callable[[Any], list[Any]]] = {
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            AmendOrder: self._amend,
            CancelAll: self._cancel_all,
            AddSegment: self._add_segment,
            AddInstrument: self._add_instrument,
            RegisterFirm: self._register_firm,
            SetFirmTrading: self._set_firm_trading,
            RegisterSupplyChain: self._register_chain,
            DepositCash: self._deposit,
            WithdrawCash: self._withdraw,
            IssueUnits: self._issue_command,
            TransferUnits: self._transfer,
            CreateSubQuota: self._create_sub_quota,
            SetPriceBand: self._set_band,
            Halt: self._halt,
            Resume: self._resume,
            EndOfDay: self._end_of_day_command,
            SnapshotMarker: lambda c: [],
            SetTradingCalendar: self._set_calendar,
            Clock: self._clock,
        }
        self.modules: dict[str, Module] = {}
        for mod_cls in modules:
            mod = mod_cls(self)
            self.modules[mod.name] = mod
            self._handlers.update(mod.handlers())
        self._eod_hooks: list[Callable[[], list[Any]]] = []
        # The order path in C (exchange/core/_accel.c, ADR 0007): apply, _place, _cancel and
        # _amend done step for step on these same objects, handing everything unusual back to
        # the methods below, which stay the reference. Only where nothing has replaced them.
        self.accelerated = False
        if (
            accelerate
            and _CorePath is not None
            and self._handlers[PlaceOrder] == self._place
            and self._handlers[CancelOrder] == self._cancel
            and self._handlers[AmendOrder] == self._amend
        ):
            fast = _CorePath(self)
            self._handlers[PlaceOrder] = fast.place
            self._handlers[CancelOrder] = fast.cancel
            self._handlers[AmendOrder] = fast.amend
            # the instance attribute shadows Exchange.apply
            self.apply = fast.apply  # type: ignore[method-assign]
            self.accelerated = True

    # ================================================================== entry point
    def apply(self, cmd: Command, seq: int, ts: int) -> list[Any]:
        """Apply ``cmd`` under its envelope: ``seq`` (after ``last_seq``, else
        :class:`SequenceError`) and ``ts``. Handlers read them as ``last_seq`` and ``now``;
        the command object is not written to."""
        if seq <= self.last_seq:
            raise SequenceError(f"command seq {seq} after {self.last_seq}")
        self.last_seq = seq
        self.now = ts
        handler = self._handlers.get(type(cmd))
        if handler is None:
            return self._unknown_command(cmd)
        try:
            events: list[Any] = handler(cmd)
        except E.Reject as r:
            return self._rejected(cmd, r)
        if self.trade_listeners:
            self._notify_trades(events)
        return events

    def _notify_trades(self, events: list[Any]) -> None:
        """The trade listeners (the compliance and registry modules follow every trade), once
        the command has been applied: its events are the queue matching built, so each
        listener sees its trades in the order they settled and the state after the whole
        command, and one that raises cannot leave a command half-settled."""
        for ev in events:
            if type(ev) is Trade:
                for listener in self.trade_listeners:
                    listener(ev)

    def _unknown_command(self, cmd: Command) -> list[Any]:
        return [CommandRejected(getattr(cmd, "TYPE", "?"), E.UNKNOWN_COMMAND, "unknown command")]

    def _rejected(self, cmd: Command, r: E.Reject) -> list[Any]:
        """The events of a command a handler refused (raised ``r`` before changing state)."""
        if isinstance(cmd, PlaceOrder):
            return [self._reject_er(cmd, r.code, r.message)]
        return [CommandRejected(cmd.TYPE, r.code, r.message)]

    # ================================================================== helpers
    def account(self, firm_id: str) -> Account:
        a = self.accounts.get(firm_id)
        if a is None:
            raise E.Reject(E.UNKNOWN_ACCOUNT, f"unknown account {firm_id!r}")
        return a

    def firm(self, firm_id: str) -> Account:
        a = self.account(firm_id)
        if a.system:
            raise E.Reject(E.SYSTEM_ACCOUNT, f"{firm_id!r} is a system account")
        return a

    def instrument(self, symbol: str) -> Instrument:
        i = self.instruments.get(symbol)
        if i is None:
            raise E.Reject(E.UNKNOWN_INSTRUMENT, f"unknown instrument {symbol!r}")
        return i

    def segment_rules(self, segment: str) -> SegmentRules:
        return self._rules[segment]

    def _index_rules(self) -> None:
        """Derive the segment-name -> rules index (``chain:<id>`` books use ``chain``)."""
        self._rules = dict(self.segments)
        if "chain" in self.segments:
            for chain_id in self.chains:
                self._rules[f"chain:{chain_id}"] = self.segments["chain"]

    def _reject_er(self, cmd: PlaceOrder, code: str, message: str = "") -> ExecutionReport:
        return ExecutionReport(
            cmd.account,
            0,
            cmd.client_order_id,
            cmd.instrument,
            cmd.segment,
            cmd.side,
            EXEC_REJECTED,
            ST_REJECTED,
            cmd.price,
            cmd.qty if isinstance(cmd.qty, int) else 0,
            0,
            0,
            0,
            0,
            code,
            0,
            0,
            None,
            self.now,
        )

    def _er(self, o: Order, exec_type: str, reason: str | None = None) -> ExecutionReport:
        """A report on ``o``. Once an order stops working (canceled, expired) its leaves_qty
        is 0, as in FIX; while it works cum_qty + leaves_qty = qty."""
        leaves = 0 if exec_type == EXEC_CANCELED or exec_type == EXEC_EXPIRED else o.leaves
        return ExecutionReport(
            o.account,
            o.order_id,
            o.client_order_id,
            o.instrument,
            o.segment,
            o.side,
            exec_type,
            o.status,
            o.price,
            o.qty,
            0,
            0,
            o.cum_qty,
            leaves,
            reason,
            0,
            0,
            None,
            self.now,
        )

    def _book_update(self, book: OrderBook, events: list[Any]) -> None:
        if not self.emit_book_updates:
            book.changes.clear()
            return
        ch = book.drain_changes()
        if ch:
            book.seq += 1
            events.append(BookUpdate(book.instrument, book.segment, book.seq, ch))

    def check_price(self, instr: Instrument, rules: SegmentRules, price: object) -> None:
        if type(price) is not int or price <= 0:
            raise E.Reject(E.BAD_PRICE, "price must be a positive number of fen")
        if price % rules.tick:
            raise E.Reject(E.BAD_TICK, f"price must be a multiple of the tick ({rules.tick} fen)")
        band = instr.band()
        if band is not None and not band[0] <= price <= band[1]:
            raise E.Reject(
                E.OUTSIDE_PRICE_BAND, f"price {price} outside the band [{band[0]}, {band[1]}] fen"
            )

    def check_qty(self, rules: SegmentRules, qty: object) -> None:
        if type(qty) is not int or qty <= 0:
            raise E.Reject(E.BAD_QUANTITY, "quantity must be a positive whole number of tonnes")
        if qty % rules.lot:
            raise E.Reject(E.BAD_LOT, f"quantity must be a multiple of the lot ({rules.lot} t)")
        if qty > rules.max_order_qty:
            raise E.Reject(
                E.OVER_MAX_ORDER_SIZE,
                f"quantity over the maximum order size ({rules.max_order_qty} t)",
            )

    def is_halted(self, instrument: str, segment: str) -> bool:
        return (
            self.market_halted
            or self.instruments[instrument].halted
            or (instrument, segment) in self.halted_books
        )

    def check_access(self, acct: Account, segment: str, side: str, rules: SegmentRules) -> None:
        access = rules.access
        if access == "all":
            return
        if access == "members":
            chain_id = segment[6:]
            if chain_id not in acct.chains:
                raise E.Reject(
                    E.NOT_PERMITTED_IN_SEGMENT,
                    f"only members of supply chain {chain_id!r} trade in {segment}",
                )
            return
        is_sme = acct.size_class == "sme"
        if access == "sme_only" and not is_sme:
            raise E.Reject(E.NOT_PERMITTED_IN_SEGMENT, f"only SMEs trade in {segment}")
        if access == "sme_sell_any_buy" and side == SELL and not is_sme:
            raise E.Reject(
                E.NOT_PERMITTED_IN_SEGMENT, f"only SMEs sell in {segment}; anyone may buy from them"
            )

    @staticmethod
    def buy_reserve(price: int, qty: int, fee_bps: int) -> int:
        n = price * qty
        return n + fee_ceil(n, fee_bps)

    # ================================================================== orders
    # Placing an order is five steps, each a method below:
    #
    #   _check_order    every check, in the protocol's order (it fixes which code a bad order
    #                   gets); raises Reject before anything changes
    #   _hold           the order gets its id and holds what it may spend: cash for a buy
    #                   (price x qty + the fee, rounded up), units for a sell
    #   _execute        if it crosses: match against the book and settle each fill
    #   _rest_or_cancel what is left rests (GTC, DAY) or is cancelled (IOC, market)
    #   _book_update    the command's L2 changes as one BookUpdate
    #
    # The compiled twin (exchange/core/_accel.c, ADR 0007) runs the same steps on the same
    # objects and hands anything unusual to these methods.
    def _place(self, cmd: PlaceOrder) -> list[Any]:
        acct, instr, book, rules, price, tif = self._check_order(cmd)
        o = self._hold(cmd, acct, price, tif)
        events: list[Any] = [self._er(o, EXEC_NEW)]
        if book.crosses(o.side, o.price):
            self._execute(o, book, instr, rules, acct, events)
        unfilled = "UNFILLED_MARKET" if cmd.order_type == MARKET else "UNFILLED_IOC"
        self._rest_or_cancel(o, book, acct, unfilled, events)
        self._book_update(book, events)
        return events

    def _check_order(
        self, cmd: PlaceOrder
    ) -> tuple[Account, Instrument, OrderBook, SegmentRules, int, str]:
        """Every check of a new order, in the order that decides its reject code. Returns the
        objects it found, the order's limit price (a market order's is the band's edge or its
        protection price) and its effective time in force (a market order is IOC unless FOK).
        The order keeps the command's own side and time in force objects (a plain ``str`` or
        an :mod:`~exchange.core.orders` member), as the compiled twin does."""
        acct = self.accounts.get(cmd.account)
        if acct is None or acct.system:
            raise E.Reject(E.UNKNOWN_ACCOUNT, f"unknown account {cmd.account!r}")
        if not acct.can_trade:
            raise E.Reject(E.TRADING_NOT_PERMITTED, "account may not trade")
        symbol, segment, side = cmd.instrument, cmd.segment, cmd.side
        instr = self.instrument(symbol)
        book = self.books.get((symbol, segment))
        if book is None:
            raise E.Reject(E.UNKNOWN_SEGMENT, f"no {segment!r} book for {symbol}")
        if side != BUY and side != SELL:
            raise E.Reject(E.BAD_ORDER_TYPE, "side must be buy or sell")
        tif, otype = cmd.tif, cmd.order_type
        if tif not in _TIFS or (otype != LIMIT and otype != MARKET):
            raise E.Reject(E.BAD_ORDER_TYPE, "unknown order type or time in force")
        if cmd.post_only and (otype == MARKET or tif == IOC or tif == FOK):
            raise E.Reject(E.BAD_ORDER_TYPE, "post-only orders must be GTC or DAY limits")
        if self.is_halted(symbol, segment):
            self._halted(symbol, segment)
        rules = self._rules[segment]
        self.check_access(acct, segment, side, rules)
        qty = cmd.qty
        self.check_qty(rules, qty)
        price = self._limit_price(cmd, instr, rules)
        if otype == MARKET and tif != FOK:
            tif = IOC
        coid = cmd.client_order_id
        if coid is not None and coid in acct.coids:
            raise E.Reject(
                E.DUPLICATE_CLIENT_ORDER_ID,
                f"client_order_id {coid!r} is already used by a live order",
            )
        self._check_can_afford(acct, symbol, side, price, qty, rules)
        if cmd.post_only and book.crosses(side, price):
            raise E.Reject(E.POST_ONLY_WOULD_CROSS, "post-only order would trade on arrival")
        if tif == FOK and book.fillable(side, price, acct.firm_id, acct.stp_policy, qty) < qty:
            raise E.Reject(E.FOK_NOT_FILLED, "fill-or-kill order cannot be filled in full")
        return acct, instr, book, rules, price, tif

    def _limit_price(self, cmd: PlaceOrder, instr: Instrument, rules: SegmentRules) -> int:
        """The price an order trades up to: a limit order's own (checked against tick and
        band); a market order's protection price, or without one the band's edge."""
        price = cmd.price
        if cmd.order_type == MARKET and price is None:
            band = instr.band()
            if band is None:
                raise E.Reject(
                    E.BAD_PRICE,
                    "a market order needs a protection price "
                    "while the instrument has no reference price",
                )
            return band[1] if cmd.side == BUY else band[0]
        self.check_price(instr, rules, price)
        assert isinstance(price, int)  # check_price refused anything else
        return price

    def _check_can_afford(
        self, acct: Account, symbol: str, side: str, price: int, qty: int, rules: SegmentRules
    ) -> None:
        """Risk: a buy needs the cash its reservation takes, a sell the units."""
        if side == BUY:
            need = self.buy_reserve(price, qty, rules.fee_bps)
            if need > acct.cash_available:
                raise E.Reject(
                    E.INSUFFICIENT_FUNDS, f"needs {need} fen, {acct.cash_available} available"
                )
            return
        h = acct.holdings.get(symbol)
        have = 0 if h is None else h.available
        if h is None or qty > have:
            raise E.Reject(E.INSUFFICIENT_HOLDINGS, f"needs {qty} t of {symbol}, {have} available")

    def _hold(self, cmd: PlaceOrder, acct: Account, price: int, tif: str) -> Order:
        """The accepted order: its id, its reservation, its place in the account's live
        orders. Nothing after this may raise."""
        oid = OrderId(self.next_order_id)
        self.next_order_id = oid + 1
        coid = None if cmd.client_order_id is None else ClientOrderId(cmd.client_order_id)
        o = Order(
            oid,
            FirmId(acct.firm_id),
            coid,
            Symbol(cmd.instrument),
            SegmentName(cmd.segment),
            cmd.side,
            price,
            cmd.qty,
            tif,
            cmd.post_only,
            self.last_seq,
        )
        if o.side == BUY:
            o.reserved = self.buy_reserve(price, o.qty, self._rules[o.segment].fee_bps)
            acct.cash_reserved += o.reserved
        else:
            o.reserved = o.qty
            acct.holdings[o.instrument].reserved += o.qty
        acct.orders[oid] = o
        if o.client_order_id is not None:
            acct.coids[o.client_order_id] = oid
        return o

    def _rest_or_cancel(
        self, o: Order, book: OrderBook, acct: Account, unfilled: str, events: list[Any]
    ) -> None:
        """After matching: what is left of a GTC or DAY order rests; the rest of an IOC (or
        market) order is cancelled with reason ``unfilled``. An order that self-trade
        prevention cancelled is done."""
        if not o.leaves or o.status == ST_CANCELED:
            return
        if o.tif == GTC or o.tif == DAY:
            book.add(o)
        else:
            self._close(o, acct, OrderStatus.CANCELED, unfilled, events)

    def _execute(
        self,
        o: Order,
        book: OrderBook,
        instr: Instrument,
        rules: SegmentRules,
        acct: Account,
        events: list[Any],
    ) -> None:
        """Match ``o`` as the aggressor, then settle: the resting orders self-trade prevention
        cancelled, each fill in turn (:meth:`_settle_fill`), the board's day statistics, and
        ``o``'s own rest when self-trade prevention stopped it."""
        fills: list[tuple[Order, int, int]] = []
        stp_cancels: list[Order] = []
        killed = book.match(o, o.price, acct.stp_policy, fills, stp_cancels)
        for maker in stp_cancels:
            self._close(
                maker,
                self.accounts[maker.account],
                OrderStatus.CANCELED,
                E.SELF_TRADE_PREVENTED,
                events,
            )
        for maker, q, px in fills:
            self._settle_fill(o, acct, maker, q, px, instr.symbol, rules.fee_bps, events)
        self._record_day_stats(book, fills)
        if killed and o.leaves:
            self._close(o, acct, OrderStatus.CANCELED, E.SELF_TRADE_PREVENTED, events)

    def _settle_fill(
        self,
        taker: Order,
        tacct: Account,
        maker: Order,
        q: int,
        px: int,
        symbol: str,
        fee_bps: int,
        events: list[Any],
    ) -> None:
        """One fill of ``q`` t at ``px``, atomically: cash buyer -> seller and the fees to the
        exchange (:meth:`_pay`), units seller -> buyer (:meth:`_deliver`), both orders' new
        status, the two execution reports and the trade (its listeners are called once the
        whole command is applied: :meth:`_notify_trades`). The matcher has already taken
        ``q`` off the maker's leaves."""
        taker.leaves -= q
        taker.cum_qty += q
        macct = self.accounts[maker.account]
        if taker.side == BUY:
            buyer, bacct, seller, sacct = taker, tacct, maker, macct
        else:
            buyer, bacct, seller, sacct = maker, macct, taker, tacct
        notional = px * q
        fee = fee_floor(notional, fee_bps)  # the same rate, so the same fee, on both sides
        self._pay(buyer, bacct, sacct, notional, fee, fee_bps)
        split = self._deliver(seller, sacct, bacct, symbol, q, notional - fee)
        tid = self.next_trade_id
        self.next_trade_id = tid + 1
        self._filled(maker, macct)
        self._filled(taker, tacct)
        events.append(self._fill_er(maker, q, px, tid, fee, LIQ_MAKER))
        events.append(self._fill_er(taker, q, px, tid, fee, LIQ_TAKER))
        trade = Trade(
            tid,
            symbol,
            taker.segment,
            px,
            q,
            bacct.firm_id,
            sacct.firm_id,
            buyer.order_id,
            seller.order_id,
            taker.side,
            fee,
            fee,
            split,
            self.now,
        )
        events.append(trade)  # the trade listeners see it once the command is applied

    def _pay(
        self, buyer: Order, bacct: Account, sacct: Account, notional: int, fee: int, fee_bps: int
    ) -> None:
        """The buyer pays ``notional`` to the seller and ``fee`` to the exchange; the seller
        pays its ``fee`` too. The buy order's reservation shrinks to what its leaves need:
        the difference always covers what the fill cost (price improvement and fee rounding
        only ever free cash)."""
        new_res = self.buy_reserve(buyer.price, buyer.leaves, fee_bps)
        bacct.cash_reserved -= buyer.reserved - new_res
        buyer.reserved = new_res
        post_cash(bacct, sacct, notional)
        if fee:
            exchange = self.accounts[EXCHANGE_ACCOUNT]
            post_cash(bacct, exchange, fee)
            post_cash(sacct, exchange, fee)

    def _deliver(
        self, seller: Order, sacct: Account, bacct: Account, symbol: str, q: int, net: int
    ) -> tuple[tuple[str, int], ...]:
        """``q`` units from the seller's reservation, oldest lot first, to the buyer as a
        purchase lot. Returns the sub-quota proceeds split of the seller's ``net``, or ()."""
        sacct.holdings[symbol].reserved -= q
        seller.reserved -= q
        taken = take_units(sacct, symbol, q)
        put_units(bacct, symbol, q, LOT_PURCHASE)
        if len(taken) > 1 or taken[0][0].startswith(LOT_SUB_QUOTA):
            return self._split_proceeds(sacct, taken, q, net)
        return ()

    def _filled(self, o: Order, acct: Account) -> None:
        """The status after a fill; a filled order leaves its account's live orders."""
        if o.leaves:
            transition(o, OrderStatus.PARTIALLY_FILLED)
        else:
            transition(o, OrderStatus.FILLED)
            self._forget(o, acct)

    def _fill_er(
        self, o: Order, q: int, px: int, trade_id: int, fee: int, liquidity: str
    ) -> ExecutionReport:
        return ExecutionReport(
            o.account,
            o.order_id,
            o.client_order_id,
            o.instrument,
            o.segment,
            o.side,
            EXEC_TRADE,
            o.status,
            o.price,
            o.qty,
            q,
            px,
            o.cum_qty,
            o.leaves,
            None,
            trade_id,
            fee,
            liquidity,
            self.now,
        )

    @staticmethod
    def _record_day_stats(book: OrderBook, fills: list[tuple[Order, int, int]]) -> None:
        """The board's day statistics (open, high, low, last, volume, notional, trades)."""
        for _maker, q, px in fills:
            if not book.day_trades:
                book.day_open = book.day_high = book.day_low = px
            elif px > book.day_high:
                book.day_high = px
            elif px < book.day_low:
                book.day_low = px
            book.day_trades += 1
            book.day_volume += q
            book.day_notional += px * q
            book.last = px

    def _close(
        self,
        o: Order,
        acct: Account,
        status: OrderStatus,
        reason: str,
        events: list[Any],
        named: int | None = None,
    ) -> None:
        """``o`` stops working (canceled or expired; the caller took it out of its book): its
        reservation goes back, it leaves the account's live orders, and its report says why
        (naming the order ``named``, when given, instead of ``o.order_id``)."""
        transition(o, status)
        self._release(o, acct)
        self._forget(o, acct)
        exec_type = EXEC_EXPIRED if status == OrderStatus.EXPIRED else EXEC_CANCELED
        er = self._er(o, exec_type, reason)
        if named is not None:
            er.order_id = named
        events.append(er)

    def _split_proceeds(
        self, seller: Account, taken: list[tuple[str, int]], q: int, net: int
    ) -> tuple[tuple[str, int], ...]:
        """Pay each sub-quota lot's parent its share of the seller's net proceeds."""
        out: list[tuple[str, int]] = []
        for key, lq in taken:
            if not key.startswith(LOT_SUB_QUOTA):
                continue
            lot = self.sub_quotas[int(key.split(":", 1)[1])]
            portion = net * lq // q
            sme_part = portion * lot["revenue_share_ppm"] // PPM
            parent_part = portion - sme_part
            parent = self.accounts[lot["parent"]]
            post_cash(seller, parent, parent_part)
            lot["sold"] += lq
            lot["held"] -= lq
            lot["sme_proceeds"] += sme_part
            lot["parent_proceeds"] += parent_part
            out.append((lot["parent"], parent_part))
            out.append((seller.firm_id, sme_part))
        return tuple(out)

    def _release(self, o: Order, acct: Account) -> None:
        """Give back whatever the order still has reserved."""
        if o.side == BUY:
            acct.cash_reserved -= o.reserved
        else:
            acct.holdings[o.instrument].reserved -= o.reserved
        o.reserved = 0

    @staticmethod
    def _forget(o: Order, acct: Account) -> None:
        acct.orders.pop(o.order_id, None)
        if o.client_order_id is not None:
            acct.coids.pop(o.client_order_id, None)

    def _find_order(
        self, acct: Account, order_id: int | None, client_order_id: str | None
    ) -> Order:
        # the ids come from the command as given: looked up, never trusted to exist
        if order_id is None and client_order_id is not None:
            order_id = acct.coids.get(ClientOrderId(client_order_id))
        o = acct.orders.get(OrderId(order_id)) if order_id is not None else None
        if o is None:
            raise E.Reject(E.UNKNOWN_ORDER, NO_LIVE_ORDER)
        return o

    def _cancel(self, cmd: CancelOrder) -> list[Any]:
        acct = self.firm(cmd.account)
        o = self._find_order(acct, cmd.order_id, cmd.client_order_id)
        book = self.books[(o.instrument, o.segment)]
        book.remove(o.order_id)
        events: list[Any] = []
        # the report names the order as the command did: an equal int (True is order 1)
        # is echoed as given, by both implementations
        named = cmd.order_id if cmd.order_id is not None else o.order_id
        self._close(o, acct, OrderStatus.CANCELED, "CANCELED_BY_CLIENT", events, named)
        self._book_update(book, events)
        return events

    def _cancel_all(self, cmd: CancelAll) -> list[Any]:
        acct = self.firm(cmd.account)
        events: list[Any] = []
        books = set()
        for o in sorted(acct.orders.values(), key=lambda o: o.order_id):
            if cmd.instrument is not None and o.instrument != cmd.instrument:
                continue
            if cmd.segment is not None and o.segment != cmd.segment:
                continue
            self.books[(o.instrument, o.segment)].remove(o.order_id)
            books.add((o.instrument, o.segment))
            self._close(o, acct, OrderStatus.CANCELED, "CANCELED_BY_CLIENT", events)
        for key in sorted(books):
            self._book_update(self.books[key], events)
        return events

    # Amending is the same shape: _check_amend (every check, in order), then either a
    # reduction in place that keeps time priority, or the order leaves the book and comes
    # back through _execute and _rest_or_cancel like a new one (keeping its id).
    def _amend(self, cmd: AmendOrder) -> list[Any]:
        acct, o, book, instr, rules, new_qty, new_price, new_res = self._check_amend(cmd)
        extra = new_res - o.reserved
        if o.side == BUY:
            acct.cash_reserved += extra
        else:
            acct.holdings[o.instrument].reserved += extra
        o.reserved = new_res
        new_leaves = new_qty - o.cum_qty
        events: list[Any] = []
        if new_price == o.price and new_qty < o.qty:
            book.reduce(o, new_leaves)  # keeps time priority
            o.qty = new_qty
            events.append(self._er(o, EXEC_REPLACED))
        else:
            book.remove(o.order_id)  # loses time priority
            o.qty = new_qty
            o.price = new_price
            o.leaves = new_leaves
            o.seq = self.last_seq
            events.append(self._er(o, EXEC_REPLACED))
            self._execute(o, book, instr, rules, acct, events)
            if o.leaves and o.status != ST_CANCELED:
                book.add(o)
        self._book_update(book, events)
        return events

    def _check_amend(
        self, cmd: AmendOrder
    ) -> tuple[Account, Order, OrderBook, Instrument, SegmentRules, int, int, int]:
        """Every check of an amend, in the order that decides its reject code. Returns what
        it found, the new quantity and price and the reservation the new leaves need."""
        acct = self.firm(cmd.account)
        o = self._find_order(acct, cmd.order_id, cmd.client_order_id)
        if not acct.can_trade:
            raise E.Reject(E.TRADING_NOT_PERMITTED, "account may not trade (cancels allowed)")
        instr = self.instruments[o.instrument]
        rules = self.segment_rules(o.segment)
        book = self.books[(o.instrument, o.segment)]
        if self.is_halted(o.instrument, o.segment):
            self._halted(o.instrument, o.segment)
        new_qty = o.qty if cmd.qty is None else cmd.qty
        new_price = o.price if cmd.price is None else cmd.price
        if new_qty == o.qty and new_price == o.price:
            raise E.Reject(E.NO_CHANGE, "amend changes neither price nor quantity")
        self.check_qty(rules, new_qty)
        if new_qty <= o.cum_qty:
            raise E.Reject(
                E.BAD_QUANTITY, f"new quantity must exceed the filled quantity ({o.cum_qty} t)"
            )
        if new_price != o.price:
            self.check_price(instr, rules, new_price)
        new_leaves = new_qty - o.cum_qty
        if o.side == BUY:
            new_res = self.buy_reserve(new_price, new_leaves, rules.fee_bps)
            extra = new_res - o.reserved
            if extra > acct.cash - acct.cash_reserved:
                raise E.Reject(E.INSUFFICIENT_FUNDS, f"amend needs {extra} fen more")
        else:
            new_res = new_leaves
            extra = new_res - o.reserved
            h = acct.holdings[o.instrument]
            if extra > h.total - h.reserved:
                raise E.Reject(E.INSUFFICIENT_HOLDINGS, f"amend needs {extra} t more")
        if o.post_only and new_price != o.price and book.crosses(o.side, new_price):
            raise E.Reject(E.POST_ONLY_WOULD_CROSS, "post-only order would trade")
        return acct, o, book, instr, rules, new_qty, new_price, new_res

    # ================================================================== operator
    def _add_segment(self, c: AddSegment) -> list[Any]:
        if c.access not in SEGMENT_ACCESS:
            raise E.Reject(E.BAD_PARAMETER, f"access must be one of {SEGMENT_ACCESS}")
        for v in (c.tick, c.lot, c.max_order_qty):
            if type(v) is not int or v <= 0:
                raise E.Reject(E.BAD_PARAMETER, "tick, lot and max_order_qty must be positive")
        if c.lot > MAX_QTY or c.max_order_qty > MAX_QTY or c.tick > MAX_CASH:
            raise E.Reject(
                E.QUANTITY_LIMIT,
                f"lot and max_order_qty are at most {MAX_QTY} t, tick at most {MAX_CASH} fen",
            )
        if type(c.fee_bps) is not int or not 0 <= c.fee_bps <= 10_000:
            raise E.Reject(E.BAD_PARAMETER, "fee_bps must be in [0, 10000]")
        self.segments[c.name] = SegmentRules(
            c.name, c.tick, c.lot, c.max_order_qty, c.fee_bps, c.access
        )
        self._index_rules()
        if c.name != "chain":
            for sym in self.instruments:
                self._open_book(sym, c.name)
        return []

    def _open_book(self, symbol: str, segment: str) -> None:
        if (symbol, segment) not in self.books:
            self.books[(symbol, segment)] = OrderBook(Symbol(symbol), SegmentName(segment))

    def _add_instrument(self, c: AddInstrument) -> list[Any]:
        if c.symbol in self.instruments:
            raise E.Reject(E.DUPLICATE_INSTRUMENT, f"instrument {c.symbol!r} exists")
        if c.kind not in ("allowance", "offset"):
            raise E.Reject(E.BAD_PARAMETER, "kind must be allowance or offset")
        if c.kind == "offset" and not c.offset_type:
            raise E.Reject(E.BAD_PARAMETER, "an offset instrument needs an offset_type")
        if type(c.reference_price) is not int or c.reference_price < 0:
            raise E.Reject(E.BAD_PARAMETER, "reference_price must be >= 0 fen")
        if c.reference_price > MAX_CASH:
            raise E.Reject(E.QUANTITY_LIMIT, f"reference_price is at most {MAX_CASH} fen")
        self.instruments[c.symbol] = Instrument(
            c.symbol, c.kind, c.vintage, c.offset_type, c.reference_price, self.DEFAULT_BAND_BPS
        )
        for seg in self.segments:
            if seg != "chain":
                self._open_book(c.symbol, seg)
        if c.kind == "allowance" and "chain" in self.segments:
            for chain_id in self.chains:
                self._open_book(c.symbol, f"chain:{chain_id}")
        return [InstrumentAdded(c.symbol, c.kind)]

    def _register_firm(self, c: RegisterFirm) -> list[Any]:
        if not c.firm_id or c.firm_id in self.accounts or c.firm_id.startswith("@"):
            raise E.Reject(E.DUPLICATE_ACCOUNT, f"account {c.firm_id!r} exists or is reserved")
        if c.size_class not in ("large", "sme"):
            raise E.Reject(E.BAD_PARAMETER, "size_class must be large or sme")
        if c.stp_policy not in STP_POLICIES:
            raise E.Reject(E.BAD_PARAMETER, f"stp_policy must be one of {STP_POLICIES}")
        self.accounts[c.firm_id] = Account(
            c.firm_id, c.name, c.sector, c.product, c.size_class, c.stp_policy, c.can_trade
        )
        return [FirmRegistered(c.firm_id, c.size_class)]

    def _set_firm_trading(self, c: SetFirmTrading) -> list[Any]:
        acct = self.firm(c.firm_id)
        acct.can_trade = bool(c.can_trade)
        return [AccountUpdated(c.firm_id, acct.can_trade)]

    def _register_chain(self, c: RegisterSupplyChain) -> list[Any]:
        if not c.chain_id or c.chain_id in self.chains or ":" in c.chain_id:
            raise E.Reject(E.DUPLICATE_CHAIN, f"supply chain {c.chain_id!r} exists or is invalid")
        members = {}
        for m in c.members:
            firm_id, tier = m[0], m[1]
            self.firm(firm_id)
            if type(tier) is not int or tier < 0:
                raise E.Reject(E.BAD_PARAMETER, "tier must be an integer >= 0")
            members[firm_id] = tier
        if sum(1 for t in members.values() if t == 0) != 1:
            raise E.Reject(E.BAD_PARAMETER, "a supply chain has exactly one core firm (tier 0)")
        edges = []
        for e in c.edges:
            sup, cust, w = e[0], e[1], e[2]
            if sup not in members or cust not in members:
                raise E.Reject(E.NOT_IN_CHAIN, f"edge {sup}->{cust} names a non-member")
            if type(w) is not int or w < 0:
                raise E.Reject(E.BAD_PARAMETER, "edge weight_ppm must be an integer >= 0")
            edges.append([sup, cust, w])
        self.chains[c.chain_id] = {
            "core_firm": next(f for f, t in members.items() if t == 0),
            "members": members,
            "edges": edges,
        }
        for firm_id, tier in members.items():
            self.accounts[firm_id].chains[c.chain_id] = tier
        self._index_rules()
        if "chain" in self.segments:
            for sym, ins in self.instruments.items():
                if ins.kind == "allowance":
                    self._open_book(sym, f"chain:{c.chain_id}")
        return [SupplyChainRegistered(c.chain_id, tuple(sorted(members.items())))]

    @staticmethod
    def _positive(amount: object) -> None:
        if type(amount) is not int or amount <= 0:
            raise E.Reject(E.BAD_AMOUNT, "amount must be a positive integer")

    def _deposit(self, c: DepositCash) -> list[Any]:
        acct = self.firm(c.account)
        self._positive(c.amount)
        # @bank holds minus everything on deposit; cash only moves between accounts after that,
        # so bounding the total bounds every balance and reservation
        room = MAX_CASH + self.accounts[BANK].cash
        if c.amount > room:
            raise E.Reject(
                E.QUANTITY_LIMIT,
                f"deposit of {c.amount} fen: at most {MAX_CASH} fen "
                f"may be on deposit in all, {max(room, 0)} left",
            )
        post_cash(self.accounts[BANK], acct, c.amount)
        return [Posting(CASH, BANK, acct.firm_id, c.amount, "deposit")]

    def _withdraw(self, c: WithdrawCash) -> list[Any]:
        acct = self.firm(c.account)
        self._positive(c.amount)
        if c.amount > acct.cash_available:
            raise E.Reject(
                E.INSUFFICIENT_FUNDS,
                f"withdrawal of {c.amount} fen, {acct.cash_available} available",
            )
        post_cash(acct, self.accounts[BANK], c.amount)
        return [Posting(CASH, acct.firm_id, BANK, c.amount, "withdrawal")]

    def move_units(
        self,
        src: Account,
        dst: Account,
        instrument: str,
        qty: int,
        lot_key: str,
        reason: str,
        prefer: str | None = None,
    ) -> list[Any]:
        """The one way units move between accounts (checked by the caller). Returns the lots
        taken from ``src`` and appends nothing: callers emit the Posting."""
        taken = take_units(src, instrument, qty, prefer)
        put_units(dst, instrument, qty, lot_key)
        for f in self.unit_listeners:
            f(src, dst, instrument, qty, reason)
        return taken

    def _issue_command(self, c: IssueUnits) -> list[Any]:
        """IssueUnits: at most MAX_QTY t of an instrument outstanding. @issuer holds minus what
        was issued (less clawbacks) and units only move between accounts after that, so this
        bounds every holding and reservation of the instrument."""
        self.firm(c.account)
        if self.instrument(c.instrument).kind in self.serialised_kinds:
            raise E.Reject(
                E.SERIALS_REQUIRED,
                f"{c.instrument} units carry serials: issue "
                "them through the registry (issue_credits)",
            )
        self._positive(c.qty)
        h = self.accounts[ISSUER].holdings.get(c.instrument)
        room = MAX_QTY + (h.total if h is not None else 0)
        if c.qty > room:
            raise E.Reject(
                E.QUANTITY_LIMIT,
                f"issuance of {c.qty} t: at most {MAX_QTY} t of "
                f"{c.instrument} outstanding, {max(room, 0)} left",
            )
        return self._issue(c)

    def _issue(self, c: IssueUnits) -> list[Any]:
        acct = self.firm(c.account)
        self.instrument(c.instrument)
        self._positive(c.qty)
        self.move_units(
            self.accounts[ISSUER], acct, c.instrument, c.qty, f"{c.source}:{c.ref}", "issue"
        )
        return [Posting(c.instrument, ISSUER, acct.firm_id, c.qty, f"issue:{c.source}:{c.ref}")]

    def _transfer(self, c: TransferUnits) -> list[Any]:
        src = self.firm(c.from_account)
        dst = self.firm(c.to_account)
        self.instrument(c.instrument)
        self._positive(c.qty)
        h = src.holdings.get(c.instrument)
        if h is None or c.qty > h.available:
            raise E.Reject(E.INSUFFICIENT_HOLDINGS, "transfer exceeds the free holding")
        self.move_units(src, dst, c.instrument, c.qty, f"{LOT_TRANSFER}:{src.firm_id}", "transfer")
        return [Posting(c.instrument, src.firm_id, dst.firm_id, c.qty, "transfer")]

    def check_sub_quota(self, c: CreateSubQuota) -> tuple[Account, Account]:
        """Every check of a sub-quota split, without changing anything (the rules module's
        multi-SME split runs it for each SME before creating any)."""
        parent = self.firm(c.parent)
        sme = self.firm(c.sme)
        instr = self.instrument(c.instrument)
        if instr.kind != "allowance":
            raise E.Reject(E.BAD_PARAMETER, "sub-quotas are split from allowances")
        self._positive(c.qty)
        if sme.size_class != "sme":
            raise E.Reject(E.NOT_AN_SME, f"{c.sme!r} is not an SME")
        if type(c.revenue_share_ppm) is not int or not 0 <= c.revenue_share_ppm <= PPM:
            raise E.Reject(E.BAD_REVENUE_SHARE, "revenue share must be within [0, 1]")
        if c.surplus_rule not in ("revert", "bank") or c.shortfall_rule not in ("sme", "parent"):
            raise E.Reject(
                E.BAD_PARAMETER, "surplus_rule is revert|bank, shortfall_rule is sme|parent"
            )
        if c.chain_id is not None:
            if c.chain_id not in self.chains:
                raise E.Reject(E.UNKNOWN_CHAIN, f"unknown supply chain {c.chain_id!r}")
            shared = c.chain_id in parent.chains and c.chain_id in sme.chains
        else:
            shared = bool(set(parent.chains) & set(sme.chains))
        if not shared:
            raise E.Reject(E.NOT_IN_CHAIN, f"{c.sme!r} is not in a supply chain of {c.parent!r}")
        h = parent.holdings.get(c.instrument)
        if h is None or c.qty > h.available:
            raise E.Reject(
                E.INSUFFICIENT_HOLDINGS, f"split of {c.qty} t exceeds the parent's free holding"
            )
        return parent, sme

    def _create_sub_quota(self, c: CreateSubQuota) -> list[Any]:
        parent, sme = self.check_sub_quota(c)
        lot_id = self.next_lot_id
        self.next_lot_id = lot_id + 1
        self.sub_quotas[lot_id] = {
            "parent": parent.firm_id,
            "sme": sme.firm_id,
            "instrument": c.instrument,
            "granted": c.qty,
            "held": c.qty,
            "sold": 0,
            "revenue_share_ppm": c.revenue_share_ppm,
            "surplus_rule": c.surplus_rule,
            "shortfall_rule": c.shortfall_rule,
            "chain_id": c.chain_id,
            "sme_proceeds": 0,
            "parent_proceeds": 0,
            "created_seq": self.last_seq,
        }
        self.move_units(parent, sme, c.instrument, c.qty, f"{LOT_SUB_QUOTA}:{lot_id}", "sub_quota")
        return [
            Posting(c.instrument, parent.firm_id, sme.firm_id, c.qty, f"sub_quota:{lot_id}"),
            SubQuotaCreated(
                lot_id,
                parent.firm_id,
                sme.firm_id,
                c.instrument,
                c.qty,
                c.revenue_share_ppm,
                c.surplus_rule,
                c.shortfall_rule,
            ),
        ]

    def _set_band(self, c: SetPriceBand) -> list[Any]:
        instr = self.instrument(c.instrument)
        if c.band_bps is not None and (
            type(c.band_bps) is not int or not 0 <= c.band_bps <= 10_000
        ):
            raise E.Reject(E.BAD_PARAMETER, "band_bps must be in [0, 10000] (0 = no band)")
        if c.reference_price is not None and (
            type(c.reference_price) is not int or c.reference_price < 0
        ):
            raise E.Reject(E.BAD_PARAMETER, "reference_price must be >= 0 fen")
        if c.reference_price is not None and c.reference_price > MAX_CASH:
            raise E.Reject(E.QUANTITY_LIMIT, f"reference_price is at most {MAX_CASH} fen")
        if c.band_bps is not None:
            instr.band_bps = c.band_bps
        if c.reference_price is not None:
            instr.reference_price = c.reference_price
        events = [MarketState(instr.symbol, instr.halted, instr.reference_price, instr.band_bps)]
        self._cancel_outside_band(instr, events)
        return events

    def _cancel_outside_band(self, instr: Instrument, events: list[Any]) -> None:
        """After the band moved, cancel resting orders now outside it (reason
        OUTSIDE_PRICE_BAND), so nothing can ever trade outside the band."""
        lo, hi = instr.band_lo, instr.band_hi
        for key in sorted(k for k in self.books if k[0] == instr.symbol):
            book = self.books[key]
            out = [o for o in book.iter_orders() if not lo <= o.price <= hi]
            for o in sorted(out, key=lambda o: o.order_id):
                book.remove(o.order_id)
                self._close(
                    o, self.accounts[o.account], OrderStatus.CANCELED, E.OUTSIDE_PRICE_BAND, events
                )
            self._book_update(book, events)

    def _scope(self, instrument: str | None, segment: str | None) -> str:
        if instrument is None:
            return "*"
        self.instrument(instrument)
        if segment is None:
            return instrument
        if (instrument, segment) not in self.books:
            raise E.Reject(E.UNKNOWN_SEGMENT, f"no {segment!r} book for {instrument}")
        return f"{instrument}:{segment}"

    def _set_halt(self, instrument: str | None, segment: str | None, halted: bool) -> list[Any]:
        scope = self._scope(instrument, segment)
        if instrument is None:
            self.operator_halted = halted
            self.market_halted = halted or self._calendar_closed()
        elif segment is None:
            self.instruments[instrument].halted = halted
        elif halted:
            self.halted_books.add((instrument, segment))
        else:
            self.halted_books.discard((instrument, segment))
        return [MarketState(scope, halted)]

    def _halt(self, c: Halt) -> list[Any]:
        return self._set_halt(c.instrument, c.segment, True)

    def _resume(self, c: Resume) -> list[Any]:
        return self._set_halt(c.instrument, c.segment, False)

    # ================================================================== trading sessions
    def _halted(self, instrument: str, segment: str) -> NoReturn:
        """Raise the reject of an order on a halted book: closed between sessions (only the
        calendar closed it), or halted."""
        if (
            self.market_halted
            and not self.operator_halted
            and not self.instruments[instrument].halted
            and (instrument, segment) not in self.halted_books
        ):
            raise E.Reject(E.MARKET_CLOSED, "the market is closed: outside the trading sessions")
        raise E.Reject(E.HALTED, f"trading in {instrument}/{segment} is halted")

    def _calendar_closed(self) -> bool:
        return self.calendar is not None and self.session["open"] is None

    def _sync_market_halt(self, events: list[Any]) -> None:
        halted = self.operator_halted or self._calendar_closed()
        if halted != self.market_halted:
            self.market_halted = halted
            events.append(MarketState("*", halted))

    def _set_calendar(self, c: SetTradingCalendar) -> list[Any]:
        if not c.sessions:
            cal = None
        else:
            try:
                cal = TradingCalendar.build(c.sessions, c.tz, c.weekdays, c.holidays)
            except (ValueError, TypeError) as exc:
                raise E.Reject(E.BAD_PARAMETER, f"trading calendar: {exc}") from None
        self.calendar = cal
        events: list[Any] = [TradingCalendarSet(None if cal is None else cal.to_state())]
        if cal is None:
            self.session["open"] = None
        # the new calendar applies from now: open or close what it says
        events.extend(self._clock(c))
        self._sync_market_halt(events)
        return events

    def _clock(self, c: Command) -> list[Any]:
        """Open and close sessions as the calendar says at the envelope's time. A session
        whose close passed is closed (the day's last ends the day, also when the clock missed
        the close entirely: a server down over it); a session is opened only on a date whose
        day has not ended (an operator's early close holds until the next trading date)."""
        cal = self.calendar
        if cal is None:
            return []
        events: list[Any] = []
        sess = self.session
        date, idx, after_close = cal.locate(self.now)
        if sess["open"] is not None and (sess["date"] != date or sess["open"] != idx):
            was = sess["open"]
            sess["open"] = None
            last = was == len(cal.sessions) - 1 or sess["date"] != date or after_close
            events.append(SessionClosed(sess["date"], was, last))
        pending = sess["date"] if sess["date"] != sess["closed_date"] else None
        if sess["open"] is None and pending is not None and (pending != date or after_close):
            self._sync_market_halt(events)
            events.extend(self._end_of_day(c))
            sess["closed_date"] = pending
        if sess["open"] is None and idx is not None and date != sess["closed_date"]:
            sess["open"] = idx
            sess["date"] = date
            events.append(SessionOpened(date, idx))
        self._sync_market_halt(events)
        return events

    def _end_of_day_command(self, c: EndOfDay) -> list[Any]:
        """An operator's end of day. With a calendar it closes the session open now (early),
        and the market stays closed for the rest of the local date: it reopens at the next
        trading date's first session."""
        cal = self.calendar
        if cal is None:
            return self._end_of_day(c)
        events: list[Any] = []
        sess = self.session
        if sess["open"] is not None:
            events.append(SessionClosed(sess["date"], sess["open"], True, True))
            sess["open"] = None
        sess["date"] = sess["closed_date"] = cal.locate(self.now)[0]
        self._sync_market_halt(events)
        events.extend(self._end_of_day(c))
        return events

    def _end_of_day(self, c: Command) -> list[Any]:
        events: list[Any] = []
        expired = 0
        locked = self._limit_locked()
        for key in sorted(self.books):
            book = self.books[key]
            day_orders = [o for o in book.iter_orders() if o.tif == DAY]
            for o in sorted(day_orders, key=lambda o: o.order_id):
                book.remove(o.order_id)
                self._close(o, self.accounts[o.account], OrderStatus.EXPIRED, "END_OF_DAY", events)
                expired += 1
            self._book_update(book, events)
        refs = []
        for sym in sorted(self.instruments):
            ins = self.instruments[sym]
            # only the main board sets the reference: the sme and supply-chain boards are
            # smaller, restricted markets whose prices are not the instrument's price
            main = self.books.get((sym, "main"))
            vwap = main.vwap() if main is not None else None
            lock = locked.get(sym)
            if vwap is not None:
                ins.reference_price = vwap
                self._cancel_outside_band(ins, events)
            elif lock is not None:
                ins.reference_price = lock[1]
                self._cancel_outside_band(ins, events)
            refs.append((sym, ins.reference_price))
        for key in sorted(self.books):
            self.books[key].reset_day()
        self.day += 1
        events.append(
            DayEnded(
                self.day,
                tuple(refs),
                expired,
                tuple((sym, d) for sym, (d, _) in sorted(locked.items())),
            )
        )
        for hook in self._eod_hooks:
            events.extend(hook())
        return events

    def _limit_locked(self) -> dict[str, tuple[str, int]]:
        """Instruments whose main board was locked at a daily limit: no trade all day, and
        buyers still bid at the upper limit (nobody would sell inside the band) or sellers
        still offer at the lower one. As on exchanges with daily price limits, the day then
        settles at the limit, so the band walks toward a clearing price that lies outside it
        instead of freezing the market. ``{symbol: ("up" | "down", limit price)}``."""
        out = {}
        for sym in sorted(self.instruments):
            ins = self.instruments[sym]
            band = ins.band()
            book = self.books.get((sym, "main"))
            if band is None or book is None or book.day_volume:
                continue
            bid, ask = book.best_bid(), book.best_ask()
            if bid is not None and bid >= band[1]:
                out[sym] = ("up", band[1])
            elif ask is not None and ask <= band[0]:
                out[sym] = ("down", band[0])
        return out

    # ================================================================== state
    def to_state(
        self, *, encode_orders: Callable[[OrderBook], Any] | None = None
    ) -> dict[str, Any]:
        """Everything that defines the market, as plain JSON-able data (canonical order).
        ``encode_orders``: see :meth:`OrderBook.to_state`."""
        return {
            "last_seq": self.last_seq,
            "now": self.now,
            "day": self.day,
            "next_order_id": self.next_order_id,
            "next_trade_id": self.next_trade_id,
            "next_lot_id": self.next_lot_id,
            "market_halted": self.market_halted,
            "operator_halted": self.operator_halted,
            "calendar": None if self.calendar is None else self.calendar.to_state(),
            "session": dict(self.session),
            "segments": {k: v.to_state() for k, v in sorted(self.segments.items())},
            "instruments": {k: v.to_state() for k, v in sorted(self.instruments.items())},
            "books": [
                [k[0], k[1], b.to_state(encode_orders)] for k, b in sorted(self.books.items())
            ],
            "halted_books": sorted([list(k) for k in self.halted_books]),
            "accounts": {k: a.to_state() for k, a in sorted(self.accounts.items())},
            "chains": {k: v for k, v in sorted(self.chains.items())},
            "sub_quotas": [[k, v] for k, v in sorted(self.sub_quotas.items())],
            "modules": {k: m.to_state() for k, m in sorted(self.modules.items())},
        }

    def load_state(self, s: dict[str, Any]) -> None:
        """Replace this exchange's state with ``s`` (from :meth:`to_state`)."""
        self.last_seq, self.now, self.day = s["last_seq"], s["now"], s["day"]
        self.next_order_id = s["next_order_id"]
        self.next_trade_id = s["next_trade_id"]
        self.next_lot_id = s["next_lot_id"]
        self.market_halted = s["market_halted"]
        self.operator_halted = s.get("operator_halted", self.market_halted)
        cal = s.get("calendar")
        self.calendar = None if cal is None else TradingCalendar.from_state(cal)
        self.session = dict(s.get("session") or {"open": None, "date": None, "closed_date": None})
        self.segments = {k: SegmentRules(k, *v) for k, v in s["segments"].items()}
        self.instruments = {k: Instrument.from_state(k, v) for k, v in s["instruments"].items()}
        # a state written when the day statistics were the instrument's: they go to its main
        # board (which is where the reference price comes from)
        legacy = {
            k: dict(zip(Instrument._LEGACY_DAY, v[6:]))
            for k, v in s["instruments"].items()
            if len(v) > 6
        }
        self.accounts = {k: Account.from_state(k, v) for k, v in s["accounts"].items()}
        self.books = {}
        for sym, seg, bs in s["books"]:
            book = OrderBook(sym, seg)
            for o in book.load_state(bs):
                acct = self.accounts[o.account]
                acct.orders[o.order_id] = o
                if o.client_order_id is not None:
                    acct.coids[o.client_order_id] = o.order_id
            if seg == "main" and sym in legacy and "day" not in bs:
                for f, v in legacy[sym].items():
                    setattr(book, f, v)
            self.books[(sym, seg)] = book
        self.halted_books = {tuple(k) for k in s["halted_books"]}
        self.chains = dict(s["chains"])
        self.sub_quotas = {k: v for k, v in s["sub_quotas"]}
        self._index_rules()
        for name, ms in s["modules"].items():
            if name in self.modules:
                self.modules[name].load_state(ms)

    def snapshot(self) -> bytes:
        return json.dumps(self.to_state(), sort_keys=True, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        self.load_state(json.loads(data))

    def state_hash(self) -> str:
        """SHA-256 of the canonical state: equal hashes, equal markets."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    # ================================================================== read side
    def balances(self, firm_id: str) -> dict[str, Any]:
        a = self.accounts[firm_id]
        return {
            "cash": a.cash,
            "cash_reserved": a.cash_reserved,
            "holdings": {
                k: {"total": h.total, "reserved": h.reserved, "lots": dict(h.lots)}
                for k, h in sorted(a.holdings.items())
            },
        }

    def open_orders(self, firm_id: str) -> list[Order]:
        return sorted(self.accounts[firm_id].orders.values(), key=lambda o: o.order_id)

    def check_invariants(self) -> None:
        """Raise AssertionError when a ledger or book invariant is broken (used by tests,
        the journal's recovery check and ``journal verify``)."""
        cash_total = sum(a.cash for a in self.accounts.values())
        assert cash_total == 0, f"cash does not balance: {cash_total}"
        per_instr: dict[str, int] = {}
        for a in self.accounts.values():
            if not a.system:
                assert a.cash >= a.cash_reserved >= 0, f"{a.firm_id} cash below reserved"
            for sym, h in a.holdings.items():
                per_instr[sym] = per_instr.get(sym, 0) + h.total
                if not a.system:
                    assert h.total >= h.reserved >= 0, f"{a.firm_id} {sym} below reserved"
                    assert sum(h.lots.values()) == h.total, f"{a.firm_id} {sym} lots != total"
        for sym, t in per_instr.items():
            assert t == 0, f"{sym} does not balance: {t}"
        need_cash: dict[str, int] = {}
        need_units: dict[tuple[str, str], int] = {}
        for (sym, seg), book in self.books.items():
            bb, ba = book.best_bid(), book.best_ask()
            assert bb is None or ba is None or bb < ba, f"book {sym}/{seg} crossed"
            for side_map in (book.bids, book.asks):
                for lv in side_map.values():
                    assert lv.qty == sum(o.leaves for o in lv), "level qty"
                    prev = 0
                    last = None
                    for o in lv:
                        assert o.prev is last and book.orders[o.order_id] is o, "level links"
                        last = o
                        assert o.seq >= prev, "FIFO broken"
                        prev = o.seq
                    assert last is lv.tail and last is not None, "level links"
            assert len(book.orders) == sum(1 for _ in book.iter_orders()), "book index"
            for o in book.iter_orders():
                assert o.leaves > 0 and o.cum_qty + o.leaves == o.qty
                rules = self.segment_rules(seg)
                if o.side == BUY:
                    assert o.reserved == self.buy_reserve(o.price, o.leaves, rules.fee_bps)
                    need_cash[o.account] = need_cash.get(o.account, 0) + o.reserved
                else:
                    assert o.reserved == o.leaves
                    need_units[(o.account, sym)] = need_units.get((o.account, sym), 0) + o.leaves
        for a in self.accounts.values():
            if a.system:
                continue
            assert a.cash_reserved == need_cash.get(a.firm_id, 0), f"{a.firm_id} cash reserve"
            for sym, h in a.holdings.items():
                assert h.reserved == need_units.get((a.firm_id, sym), 0), f"{a.firm_id} units"
            live = {o.order_id for o in a.orders.values()}
            resting = {
                o.order_id
                for b in self.books.values()
                for o in b.orders.values()
                if o.account == a.firm_id
            }
            assert live == resting, f"{a.firm_id} live orders != resting orders"


_CorePath = _core_path()
