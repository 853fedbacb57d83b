"""Market history over HTTP: public trades, a firm's executions and order history, today's
1-minute bars.

Registered in the operator API's route registry (imported by :mod:`exchange.dashboard.api`,
which :func:`exchange.server.api.load_extensions` loads at start). The data come from the
journal-fed read model :class:`~exchange.dashboard.history.MarketHistory`, so they survive a
restart. Units for people (exchange/present.py): prices and cash as CNY strings, times as
ISO-8601 with the market zone's offset; ``from`` / ``to`` take ISO-8601 (a date alone is its
midnight in the market's zone). Pages run newest first; ``next_before`` is the cursor of the
next (older) page, ``null`` on the last.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..core import errors as E
from ..core.units import UnitError
from ..present import parse_time
from ..privacy import require_firm_reader
from ..server.api import (
    INT64_MAX,
    ApiContext,
    Param,
    ident_param,
    int_param,
    route,
)
from ..server.protocol import ProtocolError
from .history import KEEP_DAYS, MAX_EXECUTIONS, MAX_TRADES, MarketHistory

# An ISO-8601 date, or date and time with its offset. The pattern is the shape; a date that
# does not exist (2026-02-30) is a 400 BAD_PARAMETER from the handler.
TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2}))?$"
)


def time_param(description: str) -> Param:
    import re

    rx = re.compile(TIME_PATTERN[1:-1])

    def parse(text: str) -> str:
        if rx.fullmatch(text) is None:
            raise ValueError(
                "must be an ISO-8601 date, or date and time with its offset "
                "(2027-01-15T09:30:00+08:00)"
            )
        return text

    return Param(
        {
            "type": "string",
            "pattern": TIME_PATTERN,
            "maxLength": 40,
            "examples": ["2027-01-15T09:30:00+08:00"],
        },
        parse,
        description,
    )


def _window(ctx: ApiContext) -> tuple[int | None, int | None]:
    out = []
    for name in ("from", "to"):
        text = ctx.params.get(name)
        if text is None:
            out.append(None)
            continue
        try:
            out.append(parse_time(text))
        except UnitError as exc:
            raise ProtocolError(E.BAD_PARAMETER, f"{name}: {exc}", 400) from None
    return out[0], out[1]


def _history(ctx: ApiContext):
    from . import HISTORY_KEY

    h = ctx.request.app.get(HISTORY_KEY)
    if h is None:
        raise ProtocolError(E.NOT_FOUND, "this server keeps no market history", 404)
    return h


_PAGE = {
    "limit": int_param(1, 500, "most rows per page", default=100),
    "before": int_param(1, INT64_MAX, "a page's next_before: rows older than it"),
    "from": time_param("rows at or after this time (ISO-8601)"),
    "to": time_param("rows before this time (ISO-8601)"),
}

SEGMENT_FILTER = ident_param("a board: main, sme or chain:<id> (default: every board)")


class PublicTrade(BaseModel):
    trade_id: int
    instrument: str
    segment: str = Field(description="the board: main, sme or chain:<id>")
    price: str = Field(description="CNY per tonne", examples=["85.40"])
    qty: int = Field(description="tonnes")
    aggressor: Literal["buy", "sell"] = Field(description="the side of the incoming order")
    at: str = Field(description="ISO-8601 with the market zone's offset")


class TradesPage(BaseModel):
    trades: list[PublicTrade] = Field(description="newest first; no counterparty")
    next_before: int | None = Field(description="pass as before= for the next (older) page")
    keep_days: int = Field(description="trading days of trades kept per board")


class Execution(BaseModel):
    trade_id: int
    instrument: str
    segment: str
    side: Literal["buy", "sell"]
    order_id: int
    price: str = Field(description="CNY per tonne")
    qty: int = Field(description="tonnes")
    fee: str = Field(description="CNY, the firm's fee on this fill")
    liquidity: Literal["maker", "taker"]
    proceeds: str = Field(
        description="CNY the fill moved to the firm's cash (negative: paid), "
        "fee included; a sub-quota sale net of the parents' part"
    )
    at: str = Field(description="ISO-8601 with the market zone's offset")


class ExecutionsPage(BaseModel):
    firm_id: str
    executions: list[Execution] = Field(description="newest first; no counterparty")
    next_before: int | None
    keep_days: int = Field(description="trading days of executions kept per firm")


class OrderEvent(BaseModel):
    event_id: int = Field(
        description="numbers the firm's order events in journal order; the page cursor"
    )
    order_id: int = Field(description="0 for an order refused before it got an id")
    client_order_id: str | None
    instrument: str
    segment: str
    side: Literal["buy", "sell"]
    exec_type: str = Field(description="new, trade, canceled, replaced, expired, rejected")
    order_status: str
    price: str | None = Field(description="the order's limit (or protection) price, CNY")
    qty: int
    last_qty: int
    last_px: str | None = Field(description="CNY, on a trade")
    cum_qty: int
    leaves_qty: int
    reason: str | None = Field(description="the reject or cancel code")
    trade_id: int | None
    at: str


class OrdersPage(BaseModel):
    firm_id: str
    orders: list[OrderEvent] = Field(description="newest first")
    next_before: int | None
    keep_days: int = Field(description="trading days of order events kept per firm")


class Bar(BaseModel):
    at: str = Field(description="the minute's start, ISO-8601")
    open: str
    high: str
    low: str
    close: str
    volume: int
    trades: int


class BarsPage(BaseModel):
    instrument: str
    segment: str
    day: int = Field(description="the current trading day (the bars are of this day)")
    bars: list[Bar] = Field(description="1-minute bars with at least one trade, oldest first")


def _check_board(ctx: ApiContext, sym: str | None, seg: str | None) -> None:
    if sym is not None and sym not in ctx.ex.instruments:
        raise ProtocolError(E.UNKNOWN_INSTRUMENT, f"no instrument {sym[:64]!r}", 404)
    if seg is not None:
        known = (
            {s for (i, s) in ctx.ex.books if i == sym}
            if sym is not None
            else {s for (_, s) in ctx.ex.books}
        )
        if seg not in known:
            raise ProtocolError(E.UNKNOWN_SEGMENT, f"no board {seg[:80]!r}", 404)


def trade_json(r) -> dict:
    """A public trade (a ``TradeRow``) as the routes answer it: no counterparty."""
    return {
        "trade_id": r.trade_id,
        "instrument": r.instrument,
        "segment": r.segment,
        "price_fen": r.price,
        "qty": r.qty,
        "aggressor": r.aggressor,
        "ts": r.ts,
    }


def _firm_rows(ctx: ApiContext, read) -> tuple[str, list, int, MarketHistory]:
    """The common part of a firm's history pages: the caller may read the firm (the firm,
    its verifier, operators), the firm and the instrument filter exist, then
    ``read(history, firm_id, instrument, t_from=, t_to=, before=, limit=)``. Returns the
    firm, the rows, the page's limit and the history."""
    firm_id = ctx.path["firm_id"]
    require_firm_reader(ctx, firm_id)
    a = ctx.ex.accounts.get(firm_id)
    if a is None or a.system:
        raise ProtocolError(E.UNKNOWN_ACCOUNT, f"no firm {firm_id[:64]!r}", 404)
    sym = ctx.params.get("instrument")
    _check_board(ctx, sym, None)
    t_from, t_to = _window(ctx)
    h = _history(ctx)
    limit = ctx.params["limit"]
    rows = read(
        h, firm_id, sym, t_from=t_from, t_to=t_to, before=ctx.params.get("before"), limit=limit
    )
    return firm_id, rows, limit, h


def _next(rows, limit: int) -> int | None:
    """The cursor of the next (older) page: the id (trade or event) of this page's last row."""
    return rows[-1][0] if len(rows) == limit else None


@route(
    "GET",
    "/trades",
    roles=None,
    tag="market",
    query={
        "instrument": ident_param("an instrument (default: every instrument)"),
        "segment": SEGMENT_FILTER,
        **_PAGE,
    },
    response=TradesPage,
    summary="Public trades from the journal-backed history, newest first, paged",
)
async def trades(ctx: ApiContext, body) -> dict:
    """Every board's trades unless ``segment`` names one. The last ``keep_days`` trading
    days are kept (at most 20,000 trades per board); they survive a restart. No counterparty:
    the live feed is the websocket channel ``trades:<instrument>``."""
    sym, seg = ctx.params.get("instrument"), ctx.params.get("segment")
    _check_board(ctx, sym, seg)
    t_from, t_to = _window(ctx)
    h = _history(ctx)
    limit = ctx.params["limit"]
    rows = h.public_trades(
        sym, seg, t_from=t_from, t_to=t_to, before=ctx.params.get("before"), limit=limit
    )
    return {
        "trades": [trade_json(r) for r in rows],
        "next_before": _next(rows, limit),
        "keep_days": h.keep_days,
    }


@route(
    "GET",
    "/firms/{firm_id}/executions",
    roles=("operator", "verifier", "firm", "platform"),
    tag="firms",
    query={"instrument": ident_param("an instrument (default: every one)"), **_PAGE},
    response=ExecutionsPage,
    summary="A firm's executions (its blotter) from the journal-backed history, paged",
)
async def executions(ctx: ApiContext, body) -> dict:
    """Each fill of the firm's orders: side, order, price, quantity, fee, maker or taker,
    and the cash it moved; newest first, the last ``keep_days`` trading days (at most
    10,000 per firm), surviving a restart. For the firm, its verifier and operators
    (docs/PRIVACY.md); the counterparty is never shown."""
    firm_id, rows, limit, h = _firm_rows(ctx, MarketHistory.firm_executions)
    return {
        "firm_id": firm_id,
        "executions": [
            {
                "trade_id": r.trade_id,
                "instrument": r.instrument,
                "segment": r.segment,
                "side": r.side,
                "order_id": r.order_id,
                "price_fen": r.price,
                "qty": r.qty,
                "fee_fen": r.fee,
                "liquidity": r.liquidity,
                "proceeds_fen": r.proceeds,
                "ts": r.ts,
            }
            for r in rows
        ],
        "next_before": _next(rows, limit),
        "keep_days": h.keep_days,
    }


@route(
    "GET",
    "/firms/{firm_id}/orders",
    roles=("operator", "verifier", "firm", "platform"),
    tag="firms",
    query={"instrument": ident_param("an instrument (default: every one)"), **_PAGE},
    response=OrdersPage,
    summary="A firm's order history (its execution reports) from the journal-backed history, paged",
)
async def orders(ctx: ApiContext, body) -> dict:
    """Every execution report of the firm's orders - accepted, replaced, filled, canceled,
    expired, rejected (with the reason) - newest first, the last ``keep_days`` trading days
    (at most 20,000 per firm), surviving a restart. ``before`` takes a page's
    ``next_before`` (an ``event_id``). For the firm, its verifier and operators."""
    firm_id, rows, limit, h = _firm_rows(ctx, MarketHistory.order_events)
    return {
        "firm_id": firm_id,
        "orders": [
            {
                "event_id": r.event_id,
                "order_id": r.order_id,
                "client_order_id": r.client_order_id,
                "instrument": r.instrument,
                "segment": r.segment,
                "side": r.side,
                "exec_type": r.exec_type,
                "order_status": r.order_status,
                "price_fen": r.price,
                "qty": r.qty,
                "last_qty": r.last_qty,
                "last_px_fen": r.last_px if r.last_qty else None,
                "cum_qty": r.cum_qty,
                "leaves_qty": r.leaves_qty,
                "reason": r.reason,
                "trade_id": r.trade_id or None,
                "ts": r.ts,
            }
            for r in rows
        ],
        "next_before": _next(rows, limit),
        "keep_days": h.keep_days,
    }


@route(
    "GET",
    "/market/bars/{instrument}",
    roles=None,
    tag="market",
    query={"segment": ident_param("the board: main (default), sme or chain:<id>")},
    response=BarsPage,
    summary="Today's 1-minute open/high/low/close of one board, rebuilt from the journal",
)
async def bars(ctx: ApiContext, body) -> dict:
    """Minutes without a trade have no bar. The bars start again at each end of day."""
    sym = ctx.path["instrument"]
    seg = ctx.params.get("segment") or "main"
    _check_board(ctx, sym, seg)
    h = _history(ctx)
    return {"instrument": sym, "segment": seg, "day": ctx.ex.day, "bars": h.minute_bars(sym, seg)}


__all__ = ["trades", "executions", "orders", "bars", "MAX_TRADES", "MAX_EXECUTIONS", "KEEP_DAYS"]
