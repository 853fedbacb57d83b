"""Price-time priority order book on sortedcontainers: the core's matcher, and a small
library of its own.

Layout
------
One book per (instrument, segment)::

    OrderBook
      bids: SortedDict  -price -> Level     best bid = smallest key
      asks: SortedDict   price -> Level     best ask = smallest key
      orders: dict       order_id -> Order  every resting order
      changes: list      (side, price, level qty) since the last drain (the core's L2 feed)

    Level (one price)
      qty                the sum of its orders' leaves
      head <-> ... <-> tail   its orders in arrival order, linked through Order.prev/.next

Asks are keyed by ``price`` and bids by ``-price``, so the best level of either side is the
smallest key and "crosses" is the same test ``key <= limit_key`` for both sides. A level is a
FIFO of its orders, a doubly linked list through the orders' own ``prev``/``next`` slots:
appending is O(1), and any order leaves in O(1), found by id in ``orders`` without a scan or a
per-level index. A level is never empty while it is in a side.

Operations (n resting orders, L levels on a side, f fills and self-trade cancels, k levels
emptied by a match)

=====================================  ====================  ================================
operation                              cost                  notes
=====================================  ====================  ================================
best_bid, best_ask, crosses            O(1)                  the first key of a side
depth_at(side, price), level_qty       O(1)                  a dict lookup
depth(levels)                          O(levels)
add (rest an order)                    O(1), O(log L) new    a new level is a sorted insert
remove / cancel                        O(1), O(log L) last   the last order closes its level
reduce (smaller qty, same price)       O(1)                  keeps time priority
match / place                          O(f + k log L)
fillable (fill-or-kill check)          O(orders scanned)     stops once enough is found
replace (new price or larger qty)      remove + place        loses time priority
iter_orders, to_state                  O(n)
=====================================  ====================  ================================

Two layers
----------
``add``, ``remove``, ``reduce``, ``crosses``, ``fillable`` and ``match`` are the primitives the
exchange core (:mod:`exchange.core.exchange`) drives, with risk and settlement around them.
The compiled twin (exchange/core/_accel.c) has ``add``, ``remove``, ``crosses`` and ``match``
step for step and replaces them where it is built; so their contract is fixed: they record L2
changes in ``changes`` for the core to drain, and ``match`` leaves the incoming order to its
caller, which settles each fill in turn.

``place``, ``cancel``, ``replace`` and ``depth_at`` make the book usable on its own (the
benchmark's "book-only" matcher, tests/test_book_library.py): ``place`` updates the incoming
order and every maker (leaves, cumulative quantity, status along
:data:`exchange.core.orders.ORDER_TRANSITIONS`) and returns the fills, the orders self-trade
prevention cancelled and the L2 changes of that one call; self-trade prevention is a
parameter (``None``: an order may trade with its own account's); an unknown order id is a
result (``found`` false), not a ``KeyError``.

The book knows nothing about cash, holdings or fees.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, NamedTuple

from sortedcontainers import SortedDict

from .orders import BUY as BUY, SELL as SELL  # re-exported: the book's callers use them
from .orders import (
    ClientOrderId,
    FirmId,
    OrderId,
    OrderStatus,
    SegmentName,
    StpPolicy,
    Symbol,
    transition,
)

# self-trade prevention policies, as stored (exact str)
STP_CANCEL_RESTING = StpPolicy.CANCEL_RESTING.value
STP_CANCEL_INCOMING = StpPolicy.CANCEL_INCOMING.value
STP_CANCEL_BOTH = StpPolicy.CANCEL_BOTH.value
STP_POLICIES = (STP_CANCEL_RESTING, STP_CANCEL_INCOMING, STP_CANCEL_BOTH)

_INF = float("inf")


def first_key(side_map: SortedDict) -> int:
    """The smallest key of a non-empty side: the best level's."""
    k: int = side_map.peekitem(0)[0]
    return k


def open_level(side_map: SortedDict, k: int, level: Level) -> None:
    """Put a new level in its side. (The compiled twin edits sortedcontainers' sorted key
    list in place here; the reference uses the public API.)"""
    side_map[k] = level


def close_first_level(side_map: SortedDict, k: int) -> None:
    """Take the best level, now empty, out of its side."""
    del side_map[k]


class Order:
    """A working order. ``leaves`` is what still rests or may still trade."""

    __slots__ = (
        "order_id",
        "account",
        "client_order_id",
        "instrument",
        "segment",
        "side",
        "price",
        "qty",
        "leaves",
        "cum_qty",
        "tif",
        "post_only",
        "reserved",
        "status",
        "seq",
        "prev",
        "next",  # the neighbours in its price level while it rests (else None)
    )

    def __init__(
        self,
        order_id: OrderId,
        account: FirmId,
        client_order_id: ClientOrderId | None,
        instrument: Symbol,
        segment: SegmentName,
        side: str,
        price: int,
        qty: int,
        tif: str,
        post_only: bool = False,
        seq: int = 0,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.client_order_id = client_order_id
        self.instrument = instrument
        self.segment = segment
        self.side = side  # orders.Side, stored as its str value (BUY, SELL)
        self.price = price
        self.qty = qty
        self.leaves = qty
        self.cum_qty = 0
        self.tif = tif  # orders.TimeInForce value
        self.post_only = post_only
        self.reserved = 0  # cash (buy) or units (sell) still reserved for this order
        self.status: str = _NEW  # changed only by orders.transition
        self.seq = seq
        self.prev: Order | None = None
        self.next: Order | None = None

    #: the fields of :meth:`to_state`, in its order (a snapshot encoder may read them itself)
    STATE_FIELDS = (
        "order_id",
        "account",
        "client_order_id",
        "side",
        "price",
        "qty",
        "leaves",
        "cum_qty",
        "tif",
        "post_only",
        "reserved",
        "status",
        "seq",
    )

    def to_state(self) -> list[Any]:
        return [
            self.order_id,
            self.account,
            self.client_order_id,
            self.side,
            self.price,
            self.qty,
            self.leaves,
            self.cum_qty,
            self.tif,
            self.post_only,
            self.reserved,
            self.status,
            self.seq,
        ]

    @classmethod
    def from_state(cls, s: list[Any], instrument: Symbol, segment: SegmentName) -> "Order":
        (oid, acct, coid, side, price, qty, leaves, cum, tif, post_only, reserved, status, seq) = s
        o = cls(oid, acct, coid, instrument, segment, side, price, qty, tif, post_only, seq)
        o.leaves = leaves
        o.cum_qty = cum
        o.reserved = reserved
        o.status = status
        return o


class Level:
    """Orders at one price in arrival order, plus their total leaves quantity (``qty``).

    The orders form a doubly linked list from ``head`` (the oldest, the next to trade) to
    ``tail`` through their ``prev``/``next`` slots: resting an order appends it, and any order
    leaves in O(1) with :func:`unlink`. It replaced an ``OrderedDict`` keyed by order id, whose
    insert, delete and node bookkeeping were ~12 % of the full core's time (profiled); the book's
    ``orders`` dict already finds an order by id. A level is never empty in a book: the last
    order to leave takes it out of its side. There is no Python ``__init__`` (it would triple
    the cost of ``Level()``): create levels with :func:`new_level`."""

    __slots__ = ("qty", "head", "tail")
    qty: int
    head: Order | None
    tail: Order | None

    def __iter__(self) -> Iterator[Order]:
        o = self.head
        while o is not None:
            yield o
            o = o.next

    def __len__(self) -> int:
        """The number of orders (a walk of the list: for checks and tests)."""
        n = 0
        o = self.head
        while o is not None:
            n += 1
            o = o.next
        return n

    def __bool__(self) -> bool:
        return self.head is not None


def new_level() -> Level:
    """An empty level with ``qty`` 0."""
    level = Level()
    level.qty = 0
    level.head = level.tail = None
    return level


def append(level: Level, order: Order) -> None:
    """Put ``order`` at the back of ``level``'s queue."""
    tail = level.tail
    order.prev = tail
    order.next = None
    if tail is None:
        level.head = order
    else:
        tail.next = order
    level.tail = order


def unlink(level: Level, order: Order) -> None:
    """Take ``order`` out of ``level``'s queue, wherever it stands."""
    p = order.prev
    n = order.next
    if p is None:
        level.head = n
    else:
        p.next = n
    if n is None:
        level.tail = p
    else:
        n.prev = p
    order.prev = order.next = None


_NEW = OrderStatus.NEW.value  # a new order's stored status

#: one L2 change: (side, price, the level's new total quantity; 0 = the level is gone)
LevelChange = tuple[str, int, int]

# The library's results are named tuples: made at C speed (a frozen dataclass sets each
# field through object.__setattr__), one per call and one per fill.


class Fill(NamedTuple):
    """``qty`` of the incoming order traded with resting ``maker`` at ``price``."""

    maker: Order
    qty: int
    price: int


class PlaceResult(NamedTuple):
    fills: tuple[Fill, ...]
    stp_canceled: tuple[Order, ...]  # resting orders self-trade prevention took out
    rested: bool  # what was left of the order now rests
    changes: tuple[LevelChange, ...]  # this call's L2 changes, in order


class CancelResult(NamedTuple):
    order: Order | None  # None: no resting order had that id
    changes: tuple[LevelChange, ...]

    @property
    def found(self) -> bool:
        return self.order is not None


class ReplaceResult(NamedTuple):
    order: Order | None  # None: no resting order had that id
    placed: PlaceResult | None  # when the order went back through the matcher
    changes: tuple[LevelChange, ...]  # every L2 change of the replace, in order

    @property
    def found(self) -> bool:
        return self.order is not None


class OrderBook:
    # The day statistics are the board's own (a book is one board: instrument x segment): a
    # trade on ``sme`` or ``chain:<id>`` never moves the ``main`` board's figures, and only the
    # main board's VWAP sets the instrument's reference price at the end of the day.
    __slots__ = (
        "instrument",
        "segment",
        "bids",
        "asks",
        "orders",
        "changes",
        "seq",
        "day_open",
        "day_high",
        "day_low",
        "last",
        "day_volume",
        "day_notional",
        "day_trades",
    )

    DAY_STATE = (
        "day_open",
        "day_high",
        "day_low",
        "last",
        "day_volume",
        "day_notional",
        "day_trades",
    )

    def __init__(
        self, instrument: Symbol = Symbol(""), segment: SegmentName = SegmentName("main")
    ) -> None:
        self.instrument = instrument
        self.segment = segment
        self.bids: SortedDict = SortedDict()  # -price -> Level
        self.asks: SortedDict = SortedDict()  # price -> Level
        self.orders: dict[OrderId, Order] = {}  # resting orders by id
        # L2 changes since the last drain, in order: (side, price, new level qty); a level may
        # appear more than once, the last entry wins (consumers apply them in order)
        self.changes: list[tuple[str, int, int]] = []
        self.seq = 0  # L2 update sequence number
        self.last = 0  # the last trade's price, kept across days
        self.reset_day()

    def reset_day(self) -> None:
        self.day_open = 0
        self.day_high = 0
        self.day_low = 0
        self.day_volume = 0
        self.day_notional = 0
        self.day_trades = 0

    def vwap(self) -> int | None:
        """The day's volume-weighted average price on this board, half up to the fen."""
        if not self.day_volume:
            return None
        return (self.day_notional + self.day_volume // 2) // self.day_volume

    def __del__(self) -> None:
        """Resting orders link to their neighbours (``prev``/``next``), a reference cycle; the
        compiled core makes orders outside the cyclic GC (exchange/core/_accel.c, ``alloc``), so a
        book that goes away unlinks its orders itself (once per book, not per order)."""
        for side_map in (getattr(self, "bids", None), getattr(self, "asks", None)):
            for lv in side_map.values() if side_map else ():
                o = lv.head
                while o is not None:
                    o.prev, o.next, o = None, None, o.next
                lv.head = lv.tail = None

    # ------------------------------------------------------------------ queries
    def best_bid(self) -> int | None:
        b = self.bids
        return -first_key(b) if b else None

    def best_ask(self) -> int | None:
        a = self.asks
        return first_key(a) if a else None

    def level_qty(self, side: str, price: int) -> int:
        if side == BUY:
            lv = self.bids.get(-price)
        else:
            lv = self.asks.get(price)
        return lv.qty if lv is not None else 0

    def depth(self, levels: int = 10) -> dict[str, list[list[int]]]:
        """L2 depth: ``{"bids": [[price, qty], ...], "asks": [...]}`` best first."""
        bids = [[-k, lv.qty] for k, lv in self.bids.items()[:levels]]
        asks = [[k, lv.qty] for k, lv in self.asks.items()[:levels]]
        return {"bids": bids, "asks": asks}

    def crosses(self, side: str, price: int | None) -> bool:
        """Would an order on ``side`` at ``price`` (None = any price) trade immediately?"""
        if side == BUY:
            best = self.best_ask()
            return best is not None and (price is None or best <= price)
        best = self.best_bid()
        return best is not None and (price is None or best >= price)

    # ------------------------------------------------------------------ mutations
    def add(self, order: Order) -> None:
        """Rest ``order`` at the back of its price level."""
        side = order.side
        price = order.price
        oid = order.order_id
        if side == BUY:
            side_map = self.bids
            k = -price
        else:
            side_map = self.asks
            k = price
        level = side_map.get(k)
        if level is None:
            level = new_level()
            open_level(side_map, k, level)
        append(level, order)
        lq = level.qty + order.leaves
        level.qty = lq
        self.orders[oid] = order
        self.changes.append((side, price, lq))

    def remove(self, order_id: OrderId) -> Order:
        """Take a resting order out of the book (cancel/expire/replace). KeyError if absent."""
        order = self.orders.pop(order_id)
        side = order.side
        price = order.price
        if side == BUY:
            side_map = self.bids
            k = -price
        else:
            side_map = self.asks
            k = price
        level = side_map[k]
        unlink(level, order)
        lq = level.qty - order.leaves
        level.qty = lq
        if level.head is None:
            del side_map[k]
        self.changes.append((side, price, lq))
        return order

    def reduce(self, order: Order, new_leaves: int) -> None:
        """Lower a resting order's leaves in place: it keeps its time priority."""
        level = self.bids[-order.price] if order.side == BUY else self.asks[order.price]
        level.qty -= order.leaves - new_leaves
        order.leaves = new_leaves
        self.changes.append((order.side, order.price, level.qty))

    def fillable(self, side: str, limit: int | None, account: str, stp: str, need: int) -> int:
        """How much an incoming order could fill now (stops counting once ``need`` is reached).
        Own orders are skipped under cancel_resting and end matching under the other policies."""
        if side == BUY:
            opp, klimit = self.asks, (_INF if limit is None else limit)
        else:
            opp, klimit = self.bids, (_INF if limit is None else -limit)
        got = 0
        for k in opp.irange(maximum=klimit if klimit != _INF else None):
            level: Level = opp[k]
            for maker in level:
                if maker.account == account:
                    if stp == STP_CANCEL_RESTING:
                        continue
                    return got
                got += maker.leaves
                if got >= need:
                    return got
        return got

    def match(
        self,
        order: Order,
        limit: int | None,
        stp: str | None,
        fills: list[tuple[Order, int, int]],
        stp_cancels: list[Order],
    ) -> bool:
        """Match ``order`` (not resting) against the opposite side at prices no worse than
        ``limit`` (None = any). Appends ``(maker, qty, price)`` to ``fills`` and each resting
        order cancelled by self-trade prevention to ``stp_cancels``. Updates the makers'
        leaves/cum_qty; the incoming order is left untouched so the caller can account for each
        fill in turn. Returns True when self-trade prevention cancels the incoming remainder.
        ``stp`` None (no prevention) is the reference's only: the core always passes the
        account's policy, and the compiled twin takes any other value as cancel_resting."""
        if order.side == BUY:
            opp, klimit, sign, opp_side = self.asks, (_INF if limit is None else limit), 1, SELL
        else:
            opp, klimit, sign, opp_side = self.bids, (_INF if limit is None else -limit), -1, BUY
        remaining = order.leaves
        account = order.account
        orders = self.orders
        changes = self.changes
        killed = False
        while remaining and opp:
            k = first_key(opp)
            if k > klimit:
                break
            level = opp[k]
            price = k * sign
            lq = level.qty  # kept in a local while this level is worked, stored back below
            while True:
                maker = level.head
                if stp is not None and maker.account == account:
                    if stp == STP_CANCEL_INCOMING:
                        killed = True
                        break
                    unlink(level, maker)
                    lq -= maker.leaves
                    del orders[maker.order_id]
                    stp_cancels.append(maker)
                    if stp == STP_CANCEL_BOTH:
                        killed = True  # stop after the emptiness check below
                else:
                    ml = maker.leaves
                    if ml <= remaining:
                        q = ml
                        unlink(level, maker)
                        del orders[maker.order_id]
                    else:
                        q = remaining
                    maker.leaves = ml - q
                    maker.cum_qty += q
                    lq -= q
                    remaining -= q
                    fills.append((maker, q, price))
                if level.head is None:
                    close_first_level(opp, k)
                    break
                if not remaining or killed:
                    break
            level.qty = lq
            changes.append((opp_side, price, lq))
            if killed:
                break
        return killed

    def drain_changes(self) -> tuple[LevelChange, ...]:
        """L2 changes since the last drain as ``((side, price, level_qty), ...)`` in the order
        they happened (a level may repeat; the last entry is its current quantity)."""
        ch = self.changes
        out = tuple(ch)
        ch.clear()
        return out

    # ------------------------------------------------------------------ the library
    def depth_at(self, side: str, price: int) -> int:
        """The quantity resting on ``side`` at ``price`` (0: no such level)."""
        return self.level_qty(side, price)

    def place(self, order: Order, *, ioc: bool = False, stp: str | None = None) -> PlaceResult:
        """Match ``order`` (not resting, ``leaves`` > 0) at prices no worse than its own,
        then rest what is left - or, with ``ioc``, cancel it. ``stp`` is the self-trade
        prevention policy (a :class:`~exchange.core.orders.StpPolicy` value), or None to let
        an account's orders trade with each other. The incoming order and every maker are
        updated (leaves, cum_qty, status)."""
        mark = len(self.changes)
        fills: list[tuple[Order, int, int]] = []
        stp_cancels: list[Order] = []
        killed = False
        if self.crosses(order.side, order.price):  # else nothing to match: it rests
            if stp is None:
                killed = _reference_match(self, order, order.price, None, fills, stp_cancels)
            else:
                killed = self.match(order, order.price, stp, fills, stp_cancels)
            for maker in stp_cancels:
                transition(maker, OrderStatus.CANCELED)
            for maker, q, _px in fills:
                order.leaves -= q
                order.cum_qty += q
                transition(
                    maker, OrderStatus.PARTIALLY_FILLED if maker.leaves else OrderStatus.FILLED
                )
                transition(
                    order, OrderStatus.PARTIALLY_FILLED if order.leaves else OrderStatus.FILLED
                )
        rested = False
        if order.leaves:
            if killed or ioc:
                transition(order, OrderStatus.CANCELED)
            else:
                self.add(order)
                rested = True
        return PlaceResult(
            tuple([Fill(m, q, px) for m, q, px in fills]) if fills else (),
            tuple(stp_cancels),
            rested,
            self._take_changes(mark),
        )

    def cancel(self, order_id: OrderId) -> CancelResult:
        """Take a resting order out (its status becomes canceled). An id that is not resting
        here gives ``found`` false and changes nothing."""
        order = self.orders.get(order_id)
        if order is None:
            return CancelResult(None, ())
        mark = len(self.changes)
        self.remove(order_id)
        transition(order, OrderStatus.CANCELED)
        return CancelResult(order, self._take_changes(mark))

    def replace(
        self,
        order_id: OrderId,
        *,
        qty: int | None = None,
        price: int | None = None,
        stp: str | None = None,
    ) -> ReplaceResult:
        """Change a resting order's total quantity (``qty``, more than it has filled) and/or
        price. A smaller quantity at the same price keeps the order's place in its queue;
        anything else takes it out and places it again (it may trade). An unknown id gives
        ``found`` false and changes nothing."""
        order = self.orders.get(order_id)
        if order is None:
            return ReplaceResult(None, None, ())
        new_qty = order.qty if qty is None else qty
        new_price = order.price if price is None else price
        if new_qty <= order.cum_qty:
            raise ValueError(
                f"order {order_id}: the new quantity {new_qty} does not exceed "
                f"the filled {order.cum_qty}"
            )
        mark = len(self.changes)
        new_leaves = new_qty - order.cum_qty
        if new_price == order.price and new_qty <= order.qty:
            self.reduce(order, new_leaves)
            order.qty = new_qty
            return ReplaceResult(order, None, self._take_changes(mark))
        self.remove(order_id)
        order.qty, order.price, order.leaves = new_qty, new_price, new_leaves
        placed = self.place(order, stp=stp)
        return ReplaceResult(order, placed, self._take_changes(mark) + placed.changes)

    def _take_changes(self, mark: int) -> tuple[LevelChange, ...]:
        """The L2 changes recorded since ``mark``, taken out of ``changes``."""
        out = tuple(self.changes[mark:])
        del self.changes[mark:]
        return out

    # ------------------------------------------------------------------ state
    def iter_orders(self) -> Iterator[Order]:
        """Resting orders, bids best-first then asks best-first, FIFO within a level."""
        for lv in self.bids.values():
            yield from lv
        for lv in self.asks.values():
            yield from lv

    def to_state(self, encode_orders: Callable[[OrderBook], Any] | None = None) -> dict[str, Any]:
        """``encode_orders(book)``, when given, stands in for the list of the resting orders'
        ``to_state()`` (in :meth:`iter_orders` order) and must serialise to the same JSON: a
        snapshot writer's faster path (exchange.journal.runner.snapshot_bytes)."""
        if encode_orders is not None:
            out: dict[str, Any] = {"seq": self.seq, "orders": encode_orders(self)}
        else:
            out = {"seq": self.seq, "orders": [o.to_state() for o in self.iter_orders()]}
        if self.last or self.day_trades:
            out["day"] = [getattr(self, f) for f in self.DAY_STATE]
        return out

    def load_state(self, s: dict[str, Any]) -> list[Order]:
        self.seq = s["seq"]
        for f, v in zip(self.DAY_STATE, s.get("day", ())):
            setattr(self, f, v)
        loaded = []
        for os_ in s["orders"]:
            o = Order.from_state(os_, self.instrument, self.segment)
            self.add(o)
            loaded.append(o)
        self.changes.clear()
        return loaded


# ---------------------------------------------------------------------------- compiled methods
# exchange/core/_accel.c has add, remove, crosses and match step for step as above, on the same
# objects; where the extension is built they replace the methods above, which stay the
# reference (PY_METHODS) and which the compiled ones call for anything unusual (a subclass, a
# number beyond 64 bits). use_compiled(False) puts the Python methods back (tests compare them).
PY_METHODS = {name: OrderBook.__dict__[name] for name in ("add", "remove", "crosses", "match")}
# the library's matcher without self-trade prevention (stp=None), which only the reference has
_reference_match = PY_METHODS["match"]


def _compiled_methods() -> dict[str, Any]:
    try:
        _accel = importlib.import_module("exchange.core._accel")
    except ImportError:
        return {}
    _accel.setup(
        {
            "OrderBook": OrderBook,
            "Order": Order,
            "Level": Level,
            "BUY": BUY,
            "SELL": SELL,
            "STP_CANCEL_RESTING": STP_CANCEL_RESTING,
            "STP_CANCEL_INCOMING": STP_CANCEL_INCOMING,
            "STP_CANCEL_BOTH": STP_CANCEL_BOTH,
        }
    )
    methods: dict[str, Any] = _accel.book_methods(PY_METHODS)
    return methods


COMPILED_METHODS = _compiled_methods()


def use_compiled(on: bool = True) -> bool:
    """Install the compiled OrderBook methods (``on``, where built) or the Python ones; returns
    whether the compiled ones were installed before."""
    before = OrderBook.__dict__["add"] is COMPILED_METHODS.get("add")
    for name, fn in (COMPILED_METHODS if on and COMPILED_METHODS else PY_METHODS).items():
        setattr(OrderBook, name, fn)
    return before


use_compiled(True)
