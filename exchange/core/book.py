"""Price-time priority order book on sortedcontainers.

One book per (instrument, segment). Each side is a ``SortedDict`` from a signed key to a
price level: asks are keyed by ``price``, bids by ``-price``, so the best level of either side is
the smallest key and "crosses" is the same test ``key <= limit_key`` for both sides. A level is
a FIFO of its orders, a doubly linked list through the orders' own ``prev``/``next`` slots
(O(1) append and O(1) removal of any order, found by id in ``OrderBook.orders``, without a scan
or a per-level index), that also carries the level's total quantity.

The book knows nothing about cash, holdings or fees: it matches and reports fills. The core
(:mod:`exchange.core.exchange`) wraps it with risk and settlement; the benchmark also drives it
alone as the "book-only" matcher.
"""
from __future__ import annotations

from bisect import insort
from sortedcontainers import SortedDict

BUY = "buy"
SELL = "sell"

# self-trade prevention policies
STP_CANCEL_RESTING = "cancel_resting"
STP_CANCEL_INCOMING = "cancel_incoming"
STP_CANCEL_BOTH = "cancel_both"
STP_POLICIES = (STP_CANCEL_RESTING, STP_CANCEL_INCOMING, STP_CANCEL_BOTH)

_INF = float("inf")


def first_key(side_map: SortedDict):
    """Smallest key of a non-empty SortedDict.

    ``side_map.keys()[0]`` goes through two Python-level ``__getitem__`` calls and a view
    object; on the matching hot path that was 40 % of ``match`` (profiled). sortedcontainers
    keeps its keys in ``_list._lists`` (a list of sorted sublists, stable since 2.0), so the
    smallest key is ``_lists[0][0]``. tests/test_book.py pins this against ``keys()[0]``.
    """
    return side_map._list._lists[0][0]


# Opening and closing a price level. SortedDict.__setitem__/__delitem__ go through three
# Python-level calls (SortedDict, SortedList.add/_expand or remove/_delete), about 100 bytecodes;
# a level is opened or closed by about one command in ten. While the keys fit in one sublist
# (fewer than 2 x load = 2,000 levels a side) and no positional index has been built, the same
# update is a few list operations, inlined in OrderBook.add, OrderBook.match and Exchange._place
# (guarded exactly like this; anything else takes the public path). tests/test_book.py and the
# differential matcher test exercise both paths against the public API.
_dict_setitem = dict.__setitem__
_dict_delitem = dict.__delitem__


def open_level(side_map: SortedDict, k, level) -> None:
    """``side_map[k] = level`` for a key not yet in ``side_map`` (the inlined fast path)."""
    sl = side_map._list
    keys = sl._lists
    if len(keys) == 1 and not sl._index and len(keys[0]) < sl._load << 1:
        first = keys[0]
        insort(first, k)
        sl._maxes[0] = first[-1]
        sl._len += 1
        _dict_setitem(side_map, k, level)
    else:
        side_map[k] = level


def close_first_level(side_map: SortedDict, k) -> None:
    """``del side_map[k]`` where ``k`` is the smallest key (the inlined fast path)."""
    sl = side_map._list
    keys = sl._lists
    first = keys[0]
    if len(keys) == 1 and len(first) > 1 and not sl._index:
        del first[0]  # the largest key, sl._maxes[0], stays
        sl._len -= 1
        _dict_delitem(side_map, k)
    else:
        del side_map[k]


class Order:
    """A working order. ``leaves`` is what still rests or may still trade."""

    __slots__ = (
        "order_id", "account", "client_order_id", "instrument", "segment", "side", "price",
        "qty", "leaves", "cum_qty", "tif", "post_only", "reserved", "status", "seq",
        "prev", "next",  # the neighbours in its price level while it rests (else None)
    )

    def __init__(self, order_id, account, client_order_id, instrument, segment, side, price,
                 qty, tif, post_only=False, seq=0):
        self.order_id = order_id
        self.account = account
        self.client_order_id = client_order_id
        self.instrument = instrument
        self.segment = segment
        self.side = side
        self.price = price
        self.qty = qty
        self.leaves = qty
        self.cum_qty = 0
        self.tif = tif
        self.post_only = post_only
        self.reserved = 0  # cash (buy) or units (sell) still reserved for this order
        self.status = "new"
        self.seq = seq
        self.prev = None
        self.next = None

    #: the fields of :meth:`to_state`, in its order (a snapshot encoder may read them itself)
    STATE_FIELDS = ("order_id", "account", "client_order_id", "side", "price", "qty",
                    "leaves", "cum_qty", "tif", "post_only", "reserved", "status", "seq")

    def to_state(self) -> list:
        return [self.order_id, self.account, self.client_order_id, self.side, self.price,
                self.qty, self.leaves, self.cum_qty, self.tif, self.post_only, self.reserved,
                self.status, self.seq]

    @classmethod
    def from_state(cls, s: list, instrument: str, segment: str) -> "Order":
        (oid, acct, coid, side, price, qty, leaves, cum, tif, post_only, reserved, status,
         seq) = s
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

    def __iter__(self):
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


class OrderBook:
    # The day statistics are the board's own (a book is one board: instrument x segment): a
    # trade on ``sme`` or ``chain:<id>`` never moves the ``main`` board's figures, and only the
    # main board's VWAP sets the instrument's reference price at the end of the day.
    __slots__ = ("instrument", "segment", "bids", "asks", "orders", "changes", "seq",
                 "day_open", "day_high", "day_low", "last", "day_volume", "day_notional",
                 "day_trades")

    DAY_STATE = ("day_open", "day_high", "day_low", "last", "day_volume", "day_notional",
                 "day_trades")

    def __init__(self, instrument: str = "", segment: str = "main"):
        self.instrument = instrument
        self.segment = segment
        self.bids: SortedDict = SortedDict()  # -price -> Level
        self.asks: SortedDict = SortedDict()  # price -> Level
        self.orders: dict[int, Order] = {}  # resting orders by id
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

    def __del__(self):
        """Resting orders link to their neighbours (``prev``/``next``), a reference cycle; the
        compiled core makes orders outside the cyclic GC (exchange/core/_accel.c, ``alloc``), so a
        book that goes away unlinks its orders itself (once per book, not per order)."""
        for side_map in (getattr(self, "bids", None), getattr(self, "asks", None)):
            for lv in (side_map.values() if side_map else ()):
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

    def depth(self, levels: int = 10) -> dict:
        """L2 depth: ``{"bids": [[price, qty], ...], "asks": [...]}`` best first."""
        bids = [[-k, lv.qty] for k, lv in self.bids.items()[:levels]]
        asks = [[k, lv.qty] for k, lv in self.asks.items()[:levels]]
        return {"bids": bids, "asks": asks}

    def crosses(self, side: str, price: int | None) -> bool:
        """Would an order on ``side`` at ``price`` (None = any price) trade immediately?"""
        if side == BUY:
            opp = self.asks
            if not opp:
                return False
            return price is None or opp._list._lists[0][0] <= price  # first_key, inlined
        opp = self.bids
        if not opp:
            return False
        return price is None or -opp._list._lists[0][0] >= price

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
            sl = side_map._list  # open_level(side_map, k, level), inlined
            keys = sl._lists
            if len(keys) == 1 and not sl._index and len(keys[0]) < sl._load << 1:
                first = keys[0]
                insort(first, k)
                sl._maxes[0] = first[-1]
                sl._len += 1
                _dict_setitem(side_map, k, level)
            else:
                side_map[k] = level
        append(level, order)
        lq = level.qty + order.leaves
        level.qty = lq
        self.orders[oid] = order
        self.changes.append((side, price, lq))

    def remove(self, order_id: int) -> Order:
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
            for maker in opp[k]:
                if maker.account == account:
                    if stp == STP_CANCEL_RESTING:
                        continue
                    return got
                got += maker.leaves
                if got >= need:
                    return got
        return got

    def match(self, order: Order, limit: int | None, stp: str, fills: list,
              stp_cancels: list) -> bool:
        """Match ``order`` (not resting) against the opposite side at prices no worse than
        ``limit`` (None = any). Appends ``(maker, qty, price)`` to ``fills`` and each resting
        order cancelled by self-trade prevention to ``stp_cancels``. Updates the makers'
        leaves/cum_qty; the incoming order is left untouched so the caller can account for each
        fill in turn. Returns True when self-trade prevention cancels the incoming remainder."""
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
            k = opp._list._lists[0][0]  # first_key(opp), inlined
            if k > klimit:
                break
            level = opp[k]
            price = k * sign
            lq = level.qty  # kept in a local while this level is worked, stored back below
            while True:
                maker = level.head
                if maker.account == account:
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
                    sl = opp._list  # close_first_level(opp, k), inlined
                    keys = sl._lists
                    first = keys[0]
                    if len(keys) == 1 and len(first) > 1 and not sl._index:
                        del first[0]
                        sl._len -= 1
                        _dict_delitem(opp, k)
                    else:
                        del opp[k]
                    break
                if not remaining or killed:
                    break
            level.qty = lq
            changes.append((opp_side, price, lq))
            if killed:
                break
        return killed

    def drain_changes(self) -> tuple:
        """L2 changes since the last drain as ``((side, price, level_qty), ...)`` in the order
        they happened (a level may repeat; the last entry is its current quantity)."""
        ch = self.changes
        out = tuple(ch)
        ch.clear()
        return out

    # ------------------------------------------------------------------ state
    def iter_orders(self):
        """Resting orders, bids best-first then asks best-first, FIFO within a level."""
        for lv in self.bids.values():
            yield from lv
        for lv in self.asks.values():
            yield from lv

    def to_state(self, encode_orders=None) -> dict:
        """``encode_orders(book)``, when given, stands in for the list of the resting orders'
        ``to_state()`` (in :meth:`iter_orders` order) and must serialise to the same JSON: a
        snapshot writer's faster path (exchange.journal.runner.snapshot_bytes)."""
        if encode_orders is not None:
            out = {"seq": self.seq, "orders": encode_orders(self)}
        else:
            out = {"seq": self.seq, "orders": [o.to_state() for o in self.iter_orders()]}
        if self.last or self.day_trades:
            out["day"] = [getattr(self, f) for f in self.DAY_STATE]
        return out

    def load_state(self, s: dict) -> list[Order]:
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


def _compiled_methods() -> dict:
    try:
        from exchange.core import _accel
    except ImportError:
        return {}
    _accel.setup({"OrderBook": OrderBook, "Order": Order, "Level": Level, "BUY": BUY,
                  "SELL": SELL, "STP_CANCEL_RESTING": STP_CANCEL_RESTING,
                  "STP_CANCEL_INCOMING": STP_CANCEL_INCOMING,
                  "STP_CANCEL_BOTH": STP_CANCEL_BOTH})
    return _accel.book_methods(PY_METHODS)


COMPILED_METHODS = _compiled_methods()


def use_compiled(on: bool = True) -> bool:
    """Install the compiled OrderBook methods (``on``, where built) or the Python ones; returns
    whether the compiled ones were installed before."""
    before = OrderBook.__dict__["add"] is COMPILED_METHODS.get("add")
    for name, fn in (COMPILED_METHODS if on and COMPILED_METHODS else PY_METHODS).items():
        setattr(OrderBook, name, fn)
    return before


use_compiled(True)
