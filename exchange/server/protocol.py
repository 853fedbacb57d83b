"""The websocket protocol: envelopes, per-method parameter models, wire encoders.

Requests  ``{"req_id": <int>, "method": "<name>", "params": {...}}``
Replies   ``{"req_id": <int>, "ok": true, "result": {...}}`` or
          ``{"req_id": <int>, "ok": false, "error": {"code": "<STABLE_CODE>", "message": "..."}}``
Pushes    ``{"channel": "<name>", "seq": <int>, "data": {...}}``

Prices travel as decimal strings (``"85.50"``) and are converted with
:func:`exchange.core.units.parse_price` / :func:`~exchange.core.units.format_price` only;
quantities are integers. Parameter models are pydantic v2 models with ``extra="forbid"`` and
strict integers, so ``"qty": "5"`` or ``"qty": 5.0`` is ``INVALID_PARAMS``, never a guess.

Method table
------------
Every websocket method lives in :data:`METHODS`, filled with :func:`ws_method`. A rules or
compliance module adds its own methods from its ``api.py`` (imported by the server at start,
see :mod:`exchange.server.api`)::

    from pydantic import BaseModel
    from exchange.server.protocol import ws_method

    class ActivityParams(BaseModel):
        period: str

    @ws_method("submit_activity", ActivityParams, roles=("firm",))
    async def submit_activity(session, p: ActivityParams) -> dict:
        events = await session.gateway.submit_checked(SubmitActivity(firm=session.firm_id, ...))
        return {"accepted": True}

A handler gets the :class:`~exchange.server.gateway.Session` and the validated params and
returns the ``result`` dict (sync or async). Raising :class:`ProtocolError` (or a core
:class:`~exchange.core.errors.Reject`) becomes an error reply with its code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, TypeAdapter
from pydantic.functional_validators import BeforeValidator
from typing_extensions import NotRequired, TypedDict

from ..core import errors as E
from ..core.commands import AmendOrder, CancelOrder, PlaceOrder
from ..core.units import UnitError, format_price, parse_price
from .order_model import (
    AMEND_ORDER,
    BOOL,
    CANCEL_ORDER,
    INT64,
    INT64_MAX,
    INT64_MIN,
    NAME,
    NAME_MAX,
    ORDER_TYPES,
    PLACE_ORDER,
    PRICE,
    SIDES,
    TIFS,
    Param,
    defaults,
)


class ProtocolError(Exception):
    """An error reply: stable ``code`` plus a human message."""

    def __init__(self, code: str, message: str = "", status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message or code.replace("_", " ").lower()
        self.status = status


# Gateway codes defined here rather than in exchange/core/errors.py (they never come from
# the core): order entry refused because the server is behind (docs/PROTOCOL.md, section 6).
OVERLOADED = "OVERLOADED"

_PRICE_RE = re.compile(r"[0-9]{1,15}(\.[0-9]{1,16})?")  # < 10^15 CNY: fen fit in 64 bits
_PRICES: dict[str, int] = {}  # wire string -> fen: prices repeat (a tick grid), parse once


def _price(v: Any) -> int:
    fen = _PRICES.get(v) if type(v) is str else None
    if fen is not None:
        return fen
    if not isinstance(v, str):
        raise ValueError('prices travel as decimal strings, e.g. "85.50"')
    if len(v) > 32:
        raise ValueError("price string too long")
    # plain digits first (no sign, exponent - "1e400000" would make a huge int - or "_"),
    # then parse_price's own checks (at most two decimals, ...)
    if _PRICE_RE.fullmatch(v) is None:
        raise ValueError(
            "a price is a decimal string of digits, under 10^15, with at most "
            'two decimals, e.g. "85.50"'
        )
    try:
        fen = parse_price(v)
    except UnitError as e:
        raise ValueError(str(e)) from None
    if len(_PRICES) >= 100_000:
        _PRICES.clear()
    _PRICES[v] = fen
    return fen


# the pattern is exactly what _price accepts (the OpenAPI document shows it): at most 15
# integer digits, and decimals that are zero after the second ("85.500" is 85.50)
Price = Annotated[
    int,
    BeforeValidator(_price),
    Field(
        json_schema_extra={
            "type": "string",
            "pattern": r"^[0-9]{1,15}(\.[0-9]{1,2}0{0,14})?$",
            "examples": ["85.50"],
        }
    ),
]
"""A price on the wire: a decimal string in CNY with at most two decimals -> int fen."""

# Every integer a client sends fits in 64 signed bits (the journal's integers: INT64_MIN,
# INT64_MAX, order_model.py); the core checks the business limits (order sizes, balances:
# QUANTITY_LIMIT) on top.
Int64 = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
"""A strict JSON integer within the 64-bit signed range."""

# A compliance or allocation period is a year-like number; anything longer is a typo or an
# attack (a 20-digit period used to reach the journal and stop it).
MAX_PERIOD = 999_999_999
Period = Annotated[StrictInt, Field(ge=0, le=MAX_PERIOD)]
"""A period number on the wire: 0 .. 999,999,999."""

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]
ClientOrderId = Name


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthParams(Params):
    api_key: str = Field(min_length=1, max_length=512)
    cancel_on_disconnect: StrictBool = Field(
        False, description="cancel the orders placed on this connection when it closes"
    )
    batch: StrictBool = Field(
        False, description="send replies and pushes as JSON arrays, one frame per tick"
    )


# ------------------------------------------------------------------ order entry params
# place_order, cancel_order and amend_order params are TypedDicts (validated by a
# TypeAdapter) rather than models: they are the hot path and validate in about half the time
# (a fifth for cancels and amends). They are built from the one model of order entry,
# exchange/server/order_model.py, which the C gate is checked against too.


def _annotation(p: Param) -> Any:
    t: Any = {NAME: Name, INT64: Int64, PRICE: Price, BOOL: StrictBool}.get(p.kind)
    if t is None:  # ENUM
        t = Literal[p.values]
    if p.nullable:
        t = t | None
    if p.doc:
        t = Annotated[t, Field(description=p.doc)]
    return t if p.required else NotRequired[t]


def typed_dict(name: str, params: tuple[Param, ...], doc: str | None = None) -> Any:
    """The TypedDict of ``params`` (unknown keys refused), named and documented."""
    td = TypedDict(name, {p.name: _annotation(p) for p in params})  # type: ignore[operator]
    td.__doc__ = doc
    td.__module__ = __name__
    td.__pydantic_config__ = ConfigDict(extra="forbid")
    return td


_PLACE_DOC = """place_order params. A TypedDict (validated by a TypeAdapter) rather than a model: it
is the hot path and validates in about half the time. Absent optional keys take the
defaults segment "main", price null, order_type "limit", tif "GTC", post_only false."""
PlaceOrderParams = typed_dict("PlaceOrderParams", PLACE_ORDER, _PLACE_DOC)
# cancel_order / amend_order name one of the firm's orders: ``order_id`` or
# ``client_order_id`` (the handlers refuse a request with neither: INVALID_PARAMS)
CancelOrderParams = typed_dict("CancelOrderParams", CANCEL_ORDER)
AmendOrderParams = typed_dict("AmendOrderParams", AMEND_ORDER)


def order_ref(p: dict) -> tuple:
    """``(order_id, client_order_id)`` of validated cancel or amend params; one of them is
    given."""
    oid = p.get("order_id")
    coid = p.get("client_order_id")
    if oid is None and coid is None:
        raise ProtocolError(E.INVALID_PARAMS, "give order_id or client_order_id")
    return oid, coid


# ------------------------------------------------------------------ order entry validators
# place_order, cancel_order and amend_order are most of the traffic. Their validators return
# the core command itself (``account`` None: the handler sets the session's firm) and check
# plainly well-formed params by hand - about a third of the instructions of the pydantic
# validation plus the dataclass constructor. Anything they do not accept outright (a missing
# or extra key, a wrong type, a price string not parsed before) goes through the pydantic
# validator, which accepts or reports it exactly as the models above say.

_MISSING = object()
_SIDES = frozenset(SIDES)
_ORDER_TYPES = frozenset(ORDER_TYPES)
_TIFS = frozenset(TIFS)
_PLACE_DEFAULTS = defaults(PLACE_ORDER)
_SEGMENT = _PLACE_DEFAULTS["segment"]
_ORDER_TYPE = _PLACE_DEFAULTS["order_type"]
_TIF = _PLACE_DEFAULTS["tif"]
_POST_ONLY = _PLACE_DEFAULTS["post_only"]
_new = object.__new__
# the fast paths set every field themselves; if the commands gain a field, use their
# constructors instead
_FAST_PLACE = PlaceOrder._FIELDS == (
    "account",
    "instrument",
    "segment",
    "side",
    "qty",
    "price",
    "order_type",
    "tif",
    "post_only",
    "client_order_id",
)
_FAST_REF = CancelOrder._FIELDS == (
    "account",
    "order_id",
    "client_order_id",
) and AmendOrder._FIELDS == ("account", "order_id", "client_order_id", "qty", "price")


def _adapter(td) -> Callable:
    return TypeAdapter(td).validator.validate_python  # skip the Python wrapper


_place_slow = _adapter(PlaceOrderParams)
_cancel_slow = _adapter(CancelOrderParams)
_amend_slow = _adapter(AmendOrderParams)


def _opt_price(get) -> tuple:
    """An optional ``price`` param for the fast paths: ``(fen or None, 1)`` when given,
    ``(None, 0)`` when absent, ``(None, -1)`` when the fast path cannot take it (not a price
    string parsed before: the pydantic path parses or refuses it)."""
    price = get("price", _MISSING)
    if price is _MISSING:
        return None, 0
    if price is None:
        return None, 1
    fen = _PRICES.get(price) if type(price) is str else None
    return (None, -1) if fen is None else (fen, 1)


def _opt_coid(get) -> tuple:
    """An optional ``client_order_id`` param for the fast paths, as :func:`_opt_price`."""
    coid = get("client_order_id", _MISSING)
    if coid is _MISSING:
        return None, 0
    if coid is None or type(coid) is str and 0 < len(coid) <= NAME_MAX:
        return coid, 1
    return None, -1


def validate_place_order(p) -> PlaceOrder:
    """place_order params -> a PlaceOrder (account None). Raises ValidationError."""
    if type(p) is dict and _FAST_PLACE:
        get = p.get
        ins = get("instrument")
        side = get("side")
        qty = get("qty")
        if (
            type(ins) is str
            and 0 < len(ins) <= NAME_MAX
            and type(qty) is int
            and INT64_MIN <= qty <= INT64_MAX
            and type(side) is str
            and side in _SIDES
        ):
            n = 3
            seg = get("segment", _MISSING)
            if seg is _MISSING:
                seg = _SEGMENT
            elif type(seg) is str and 0 < len(seg) <= NAME_MAX:
                n += 1
            else:
                n = -1
            price, k = _opt_price(get)
            n = -1 if k < 0 else n + k
            ot = get("order_type", _MISSING)
            if ot is _MISSING:
                ot = _ORDER_TYPE
            elif type(ot) is str and ot in _ORDER_TYPES:
                n += 1
            else:
                n = -1
            tif = get("tif", _MISSING)
            if tif is _MISSING:
                tif = _TIF
            elif type(tif) is str and tif in _TIFS:
                n += 1
            else:
                n = -1
            po = get("post_only", _MISSING)
            if po is _MISSING:
                po = _POST_ONLY
            elif type(po) is bool:
                n += 1
            else:
                n = -1
            coid, k = _opt_coid(get)
            n = -1 if k < 0 else n + k
            # no other keys: anything not accepted set n to -1, which the keys after it
            # cannot bring back up to len(p)
            if len(p) == n:
                cmd = _new(PlaceOrder)
                cmd.account = None
                cmd.instrument = ins
                cmd.segment = seg
                cmd.side = side
                cmd.qty = qty
                cmd.price = price
                cmd.order_type = ot
                cmd.tif = tif
                cmd.post_only = po
                cmd.client_order_id = coid
                return cmd
    return PlaceOrder(account=None, **_place_slow(p))


def validate_cancel_order(p) -> CancelOrder:
    """cancel_order params -> a CancelOrder (account None; the handler checks that it names
    an order). Raises ValidationError."""
    if type(p) is dict and len(p) == 1 and _FAST_REF:
        coid = p.get("client_order_id", _MISSING)
        oid = None
        if coid is _MISSING:
            coid = None
            oid = p.get("order_id", _MISSING)
            ok = type(oid) is int and INT64_MIN <= oid <= INT64_MAX
        else:
            ok = type(coid) is str and 0 < len(coid) <= NAME_MAX
        if ok:
            cmd = _new(CancelOrder)
            cmd.account = None
            cmd.order_id = oid
            cmd.client_order_id = coid
            return cmd
    return CancelOrder(account=None, **_cancel_slow(p))


def validate_amend_order(p) -> AmendOrder:
    """amend_order params -> an AmendOrder (account None; the handler checks that it names
    an order). Raises ValidationError."""
    if type(p) is dict and _FAST_REF:
        get = p.get
        n = 0
        oid = get("order_id", _MISSING)
        if oid is _MISSING:
            oid = None
        elif oid is None or type(oid) is int and INT64_MIN <= oid <= INT64_MAX:
            n += 1
        else:
            n = -1
        coid, k = _opt_coid(get)
        n = -1 if k < 0 else n + k
        qty = get("qty", _MISSING)
        if qty is _MISSING:
            qty = None
        elif qty is None or type(qty) is int and INT64_MIN <= qty <= INT64_MAX:
            n += 1
        else:
            n = -1
        price, k = _opt_price(get)
        n = -1 if k < 0 else n + k
        if len(p) == n:
            cmd = _new(AmendOrder)
            cmd.account = None
            cmd.order_id = oid
            cmd.client_order_id = coid
            cmd.qty = qty
            cmd.price = price
            return cmd
    return AmendOrder(account=None, **_amend_slow(p))


class CancelAllParams(Params):
    instrument: Name | None = None
    segment: Name | None = None


class ChannelParams(Params):
    channel: str = Field(
        min_length=1,
        max_length=128,
        description=(
            "executions | balances | book:<instrument>:<segment> | trades:<instrument> | "
            "ticker:<instrument>"
        ),
    )
    from_seq: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)] | None = Field(
        None,
        description="subscribe only: the last seq this client saw on the channel "
        "(before a reconnect); the reply says whether the server resumed "
        "from it (resumed: true, the missed messages follow) or sent a "
        "fresh snapshot (resumed: false)",
    )


class EmptyParams(Params):
    pass


# ------------------------------------------------------------------ the method table


@dataclass(slots=True)
class Method:
    name: str
    params: Any  # a pydantic model class, or a type a TypeAdapter validates (TypedDict)
    validate: Callable  # params dict -> validated params (raises ValidationError)
    handler: Callable
    roles: tuple[str, ...] | None  # None: any authenticated credential
    auth: bool  # False: allowed before auth
    doc: str

    def json_schema(self) -> dict:
        if isinstance(self.params, type) and issubclass(self.params, BaseModel):
            return self.params.model_json_schema()
        return TypeAdapter(self.params).json_schema()


METHODS: dict[str, Method] = {}

DEFERRED = object()
"""A handler may return this after arranging to send the reply itself (place_order)."""


def ws_method(
    name: str,
    params: Any = EmptyParams,
    *,
    roles: tuple[str, ...] | None = None,
    auth: bool = True,
    validate: Callable | None = None,
):
    """Register a websocket method handler ``fn(session, params) -> dict | awaitable``.
    ``params``: a pydantic model (or a TypedDict, validated with a TypeAdapter); it documents
    the method. ``validate``: instead of validating with ``params``, this callable turns the
    params into what the handler gets (raising ValidationError, TypeError or ValueError)."""

    def deco(fn):
        if name in METHODS and METHODS[name].handler is not fn:
            raise RuntimeError(f"websocket method {name!r} registered twice")
        if validate is not None:
            v = validate
        elif isinstance(params, type) and issubclass(params, BaseModel):
            v = params.model_validate
        else:
            v = TypeAdapter(params).validator.validate_python  # skip the Python wrapper
        METHODS[name] = Method(name, params, v, fn, roles, auth, (fn.__doc__ or "").strip())
        return fn

    return deco


def validation_message(exc) -> str:
    """A short, stable message from a pydantic ValidationError."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "params"
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[13:]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


# ------------------------------------------------------------------ wire encoders


class _PxTextCache(dict):
    """fen -> ``format_price(fen)`` ("85.50"): the hot encoders format the same prices over
    and over. Bounded."""

    def __missing__(self, fen: int) -> str:
        if len(self) >= 100_000:
            self.clear()
        t = self[fen] = format_price(fen)
        return t


_PX_TEXT: dict = _PxTextCache()
fmt_px = _PX_TEXT.__getitem__
"""``format_price`` with a cache."""


class _JsonStrCache(dict):
    """str (or None) -> its JSON text as bytes, for values from small sets (statuses, exec
    types, reason codes, firm and instrument ids): one dict probe instead of an encoder
    call. Bounded; exact-size bytes (an ``orjson.dumps`` result keeps a 4 KiB buffer)."""

    def __missing__(self, k):
        if len(self) >= 10_000:
            self.clear()
        v = self[k] = b"null" if k is None else bytes(memoryview(orjson.dumps(k)))
        return v


class _PxJsonCache(dict):
    """fen -> the price as a JSON string, b'"85.50"'. Bounded."""

    def __missing__(self, fen):
        if len(self) >= 100_000:
            self.clear()
        v = self[fen] = b'"%s"' % format_price(fen).encode()
        return v


JSON_STR: dict = _JsonStrCache()
PX_JSON: dict = _PxJsonCache()


def px(v: int | None) -> str | None:
    return None if v is None else fmt_px(v)


def wire_er(ev) -> dict:
    """ExecutionReport -> wire dict (FIX names; prices and fees as decimal strings)."""
    p = ev.price
    lq = ev.last_qty
    fee = ev.fee
    return {
        "account": ev.account,
        "order_id": ev.order_id,
        "client_order_id": ev.client_order_id,
        "instrument": ev.instrument,
        "segment": ev.segment,
        "side": ev.side,
        "exec_type": ev.exec_type,
        "order_status": ev.order_status,
        "price": None if p is None else _PX_TEXT[p],
        "qty": ev.qty,
        "last_qty": lq,
        "last_px": _PX_TEXT[ev.last_px] if lq else None,
        "cum_qty": ev.cum_qty,
        "leaves_qty": ev.leaves_qty,
        "reason": ev.reason,
        "trade_id": ev.trade_id or None,
        "fee": _PX_TEXT[fee] if fee else "0.00",
        "liquidity": ev.liquidity,
        "ts": ev.ts,
    }


# An execution report as bytes, in wire_er's key order: the order's fixed fields (account,
# ids, instrument, segment, side) are formatted once per order (er_head; the gateway keeps
# them while the order works), the rest per report. Same JSON as orjson.dumps(wire_er(ev)),
# at about two thirds of its cost.
_ER_HEAD = (
    b'{"account":%s,"order_id":%d,"client_order_id":%s,"instrument":%s,"segment":%s,"side":%s,'
)
ER_TAIL = (
    b'"exec_type":%s,"order_status":%s,"price":%s,"qty":%d,"last_qty":%d,"last_px":%s,'
    b'"cum_qty":%d,"leaves_qty":%d,"reason":%s,"trade_id":%s,"fee":%s,"liquidity":%s,'
    b'"ts":%d}'
)
ER_BODY = b"%s" + ER_TAIL  # (head, tail fields...) -> the report
ER_PUSH = b'{"channel":"executions","seq":%d,"data":%s' + ER_TAIL + b"}"  # (seq, head, ...)


def er_head(ev) -> bytes:
    c = ev.client_order_id
    return _ER_HEAD % (
        JSON_STR[ev.account],
        ev.order_id,
        b"null" if c is None else orjson.dumps(c),
        JSON_STR[ev.instrument],
        JSON_STR[ev.segment],
        JSON_STR[ev.side],
    )


def er_tail_args(ev, head: bytes) -> tuple:
    """``(head, ...)``: the arguments of ER_BODY (and, after a seq, of ER_PUSH)."""
    p = ev.price
    lq = ev.last_qty
    tid = ev.trade_id
    fee = ev.fee
    return (
        head,
        JSON_STR[ev.exec_type],
        JSON_STR[ev.order_status],
        b"null" if p is None else PX_JSON[p],
        ev.qty,
        lq,
        PX_JSON[ev.last_px] if lq else b"null",
        ev.cum_qty,
        ev.leaves_qty,
        JSON_STR[ev.reason],
        b"%d" % tid if tid else b"null",
        PX_JSON[fee] if fee else b'"0.00"',
        JSON_STR[ev.liquidity],
        ev.ts,
    )


def _not_in_c(seq, head, ev) -> None:
    return None


try:  # the same push formatted in C (exchange/server/_accel.c), built with the package
    from ._accel import er_push as _c_er_push
except ImportError:  # pragma: no cover - an install without the extension
    _c_er_push = None

#: ``er_push_c(seq, head, ev) -> bytes | None``: ``ER_PUSH % ((seq,) + er_tail_args(ev,
#: head))``, the executions push of one report, written by C from the report's slots (about
#: a sixth of the %-format's cost), or None where a value is not a plain one (or the extension
#: is not built): then format it with ER_PUSH, the reference (tests/test_server.py).
er_push_c = _c_er_push if _c_er_push is not None else _not_in_c


def er_push_ref(seq: int, head: bytes, ev) -> bytes:
    """The executions push of one report, formatted by ER_PUSH: the reference."""
    return ER_PUSH % ((seq,) + er_tail_args(ev, head))


def er_push(seq: int, head: bytes, ev) -> bytes:
    """The executions push of one report: written by C where its values are plain."""
    data = er_push_c(seq, head, ev)
    return data if data is not None else er_push_ref(seq, head, ev)


def wire_trade(ev) -> dict:
    """Public trade: no counterparties."""
    return {
        "trade_id": ev.trade_id,
        "instrument": ev.instrument,
        "segment": ev.segment,
        "price": fmt_px(ev.price),
        "qty": ev.qty,
        "aggressor": ev.aggressor,
        "ts": ev.ts,
    }


def wire_book_changes(changes) -> list:
    return [[c[0], fmt_px(c[1]), c[2]] for c in changes]


def wire_depth(book) -> dict:
    """Full-depth L2 snapshot of an OrderBook (consistent with its ``seq``)."""
    bids = [[format_price(-k), lv.qty] for k, lv in book.bids.items()]
    asks = [[format_price(k), lv.qty] for k, lv in book.asks.items()]
    return {
        "instrument": book.instrument,
        "segment": book.segment,
        "book_seq": book.seq,
        "bids": bids,
        "asks": asks,
    }


def wire_balances(ex, firm_id: str) -> dict:
    a = ex.accounts[firm_id]
    return {
        "account": firm_id,
        "as_of_seq": ex.last_seq,
        "cash": format_price(a.cash),
        "cash_reserved": format_price(a.cash_reserved),
        "cash_available": format_price(a.cash - a.cash_reserved),
        "holdings": {
            k: {"total": h.total, "reserved": h.reserved, "available": h.total - h.reserved}
            for k, h in sorted(a.holdings.items())
        },
    }


def wire_order(o) -> dict:
    return {
        "order_id": o.order_id,
        "client_order_id": o.client_order_id,
        "instrument": o.instrument,
        "segment": o.segment,
        "side": o.side,
        "price": px(o.price),
        "qty": o.qty,
        "cum_qty": o.cum_qty,
        "leaves_qty": o.leaves,
        "tif": o.tif,
        "post_only": o.post_only,
        "order_status": o.status,
    }


def ticker_channel(symbol: str, segment: str = "main") -> str:
    """The ticker channel of one board: ``ticker:<instrument>`` for the main board,
    ``ticker:<instrument>@<segment>`` for the others (``ticker:CEA-2026@sme``,
    ``ticker:CEA-2026@chain:steel``)."""
    return f"ticker:{symbol}" if segment == "main" else f"ticker:{symbol}@{segment}"


def wire_ticker(ex, symbol: str, segment: str = "main") -> dict:
    """One board's ticker: its own last price and day statistics; the reference price and
    band are the instrument's (set by the main board)."""
    ins = ex.instruments[symbol]
    book = ex.books.get((symbol, segment))
    bb = book.best_bid() if book is not None else None
    ba = book.best_ask() if book is not None else None
    band = ins.band()
    if book is None:
        last = day_open = day_high = day_low = vwap = None
        volume = trades = 0
    else:
        last, day_open = book.last or None, book.day_open or None
        day_high, day_low, vwap = book.day_high or None, book.day_low or None, book.vwap()
        volume, trades = book.day_volume, book.day_trades
    return {
        "instrument": symbol,
        "segment": segment,
        "last": px(last),
        "best_bid": px(bb),
        "best_ask": px(ba),
        "day_open": px(day_open),
        "day_high": px(day_high),
        "day_low": px(day_low),
        "vwap": px(vwap),
        "volume": volume,
        "trades": trades,
        "reference_price": px(ins.reference_price or None),
        "band": None if band is None else [format_price(band[0]), format_price(band[1])],
        "halted": ex.is_halted(symbol, segment) if book is not None else ins.halted,
    }


__all__ = [
    "ProtocolError",
    "Price",
    "Int64",
    "INT64_MIN",
    "INT64_MAX",
    "Period",
    "MAX_PERIOD",
    "Params",
    "AuthParams",
    "PlaceOrderParams",
    "CancelOrderParams",
    "AmendOrderParams",
    "order_ref",
    "validate_place_order",
    "validate_cancel_order",
    "validate_amend_order",
    "CancelAllParams",
    "ChannelParams",
    "EmptyParams",
    "Method",
    "METHODS",
    "ws_method",
    "DEFERRED",
    "OVERLOADED",
    "validation_message",
    "wire_er",
    "wire_trade",
    "wire_book_changes",
    "wire_depth",
    "wire_balances",
    "wire_order",
    "wire_ticker",
    "ticker_channel",
    "fmt_px",
    "JSON_STR",
    "PX_JSON",
    "er_head",
    "er_tail_args",
    "er_push_c",
    "er_push",
    "er_push_ref",
    "ER_BODY",
    "ER_PUSH",
    "E",
]
