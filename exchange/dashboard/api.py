"""The dashboard's HTTP endpoints, registered in the operator API's route registry (imported by
:func:`exchange.server.api.load_extensions` at start; the history routes are in
:mod:`.history_api`, imported here)."""

from __future__ import annotations

from ..core import errors as E
from ..core.units import format_price
from ..server.api import ApiContext, Param, ident_param, int_param, route
from ..server.protocol import ProtocolError
from . import history_api  # noqa: F401  (registers /trades, /firms/{id}/executions, bars)


# a segment name is an identifier (main, sme, chain:<id>); main unless given
SEGMENT_PARAM = ident_param("the board: main (default), sme or chain:<id>")
SEGMENT_PARAM = Param(
    {**SEGMENT_PARAM.schema, "default": "main"},
    SEGMENT_PARAM.parse,
    SEGMENT_PARAM.description,
    False,
    "main",
)


@route(
    "GET",
    "/market/candles/{instrument}",
    roles=None,
    tag="market",
    query={
        "limit": int_param(1, 750, "most recent trading days", default=120),
        "segment": SEGMENT_PARAM,
    },
    summary="Daily open/high/low/close of one board of an instrument, oldest first",
)
async def candles(ctx: ApiContext, body) -> dict:
    """``?limit=N`` (default 120, at most 750) most recent trading days of one board
    (``?segment=``, default ``main``: the board whose prices set the reference price). A
    candle of the current day is still open (``closed: false``). Prices are decimal CNY
    strings, ``first_at`` the day's first trade (ISO-8601). Rebuilt from the journal at
    start: a restart keeps them."""
    from . import HISTORY_KEY

    sym = ctx.path["instrument"]
    ins = ctx.ex.instruments.get(sym)
    if ins is None:
        raise ProtocolError(E.UNKNOWN_INSTRUMENT, f"no instrument {sym[:64]!r}", 404)
    seg = ctx.params["segment"]
    if (sym, seg) not in ctx.ex.books:
        raise ProtocolError(E.UNKNOWN_INSTRUMENT, f"no board {sym[:64]!r} in {seg[:80]!r}", 404)
    limit = ctx.params["limit"]
    store = ctx.request.app.get(HISTORY_KEY)
    series = store.candle_series(sym, seg, limit) if store is not None else []
    return {
        "instrument": sym,
        "segment": seg,
        "day": ctx.ex.day,
        "reference_price": format_price(ins.reference_price) if ins.reference_price else None,
        "candles": series,
    }


@route(
    "GET",
    "/market/trades/{instrument}",
    roles=None,
    tag="market",
    query={"limit": int_param(1, 100, "newest trades", default=50)},
    summary="Latest public trades of an instrument (all segments), newest first",
)
async def recent_trades(ctx: ApiContext, body) -> dict:
    """``?limit=N`` (default 50, at most 100): the first page of ``GET /trades?instrument=``
    (journal-backed: it survives a restart), in the ``trades:<instrument>`` push form. No
    counterparties."""
    from . import HISTORY_KEY
    from .history_api import trade_json

    sym = ctx.path["instrument"]
    if sym not in ctx.ex.instruments:
        raise ProtocolError(E.UNKNOWN_INSTRUMENT, f"no instrument {sym[:64]!r}", 404)
    limit = ctx.params["limit"]
    store = ctx.request.app.get(HISTORY_KEY)
    rows = store.public_trades(sym, limit=limit) if store is not None else []
    return {
        "instrument": sym,
        "trades": [trade_json(r) for r in rows],
    }


@route(
    "GET",
    "/dashboard/compliance-periods",
    tag="compliance",
    roles=("operator", "verifier", "firm"),
    summary="Compliance periods known to the compliance module (for the console's selectors)",
)
async def compliance_periods(ctx: ApiContext, body) -> dict:
    """With the emission categories and the ones covered now, for the console's labels: an
    uncovered category is shown, marked as creating no obligation."""
    from ..compliance.mrv import CATEGORIES

    m = ctx.ex.modules.get("compliance")
    periods = getattr(m, "periods", None) or {}
    params = getattr(m, "params", None) or {}
    return {
        "periods": [
            {"period": p, "closed": bool(v.get("closed"))} for p, v in sorted(periods.items())
        ],
        "emission_categories": list(CATEGORIES),
        "covered_categories": list(params.get("covered_categories", ())),
    }
