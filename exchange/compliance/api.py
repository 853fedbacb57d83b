"""Compliance endpoints of the operator HTTP API (``/api/v1/compliance/...``).

Registered with :func:`exchange.server.api.route` (the server imports this module at start).
Who may do what:

* ``firm``: submit its activity data, surrender its units, read its own statement (a firm
  key acts for its own firm only; an operator may act for any firm by naming ``firm_id``);
* ``verifier``: list submissions, verify or reject one (with a reason). The verifier id the core
  checks against its registry is the credential's label (a body ``verifier`` must match it);
* ``operator``: read and change the offset cap (journaled, with an effective time), the
  what-if of a proposed cap, deadline processing, statements and the market summary.

Percentages travel as decimal strings (``"5"``, ``"0.5"``) and become basis points in
:mod:`exchange.core.units`; fuel use is whole tce, quantities whole tonnes. Statements and the
summary are JSON, or CSV with ``?format=csv``.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from pydantic.config import JsonDict

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..core import errors as E
from ..core.units import MAX_QTY, UnitError, percent_to_bps
from ..present import present_event
from ..privacy import require_firm_reader, verifier_id
from ..server.api import IDENT_KEYS, ApiContext, Ident, Matching, Percent, Text, enum_param, route
from ..access.credentials import ROLE_FIRM, ROLE_OPERATOR, ROLE_VERIFIER
from ..server.protocol import INT64_MAX, Period, ProtocolError, ws_method
from . import reports as R
from ..registry.api import Serial
from .config import to_ns
from .commands import (
    ProcessComplianceDeadline,
    RejectSubmission,
    SetOffsetCap,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from .module import ComplianceModule

TAG = "compliance"
# A websocket method's session (exchange.server.gateway.Session): its firm is set once the
# method's role check has passed, which its type (firm_id: str | None) cannot say
WsSession = Any
# server.api's JSON schema fragment for identifier keys, as pydantic's type for one
_IDENT_KEYS = cast(JsonDict, IDENT_KEYS)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Fuel use, emissions, output and surrendered tonnes within the core's quantity limit: fuel use
# is multiplied into emissions and obligations, and 64-bit inputs could overflow those. Signs
# are left to the core (BAD_ACTIVITY_DATA, BAD_QUANTITY).
Tonnes = Annotated[StrictInt, Field(ge=-MAX_QTY, le=MAX_QTY)]


class SubmissionBody(_Body):
    period: Period = Field(description="compliance period, e.g. 2026")
    fuels: dict[Ident, Tonnes] = Field(
        default_factory=dict,
        max_length=64,
        json_schema_extra=_IDENT_KEYS,
        description='fuel -> whole tce, e.g. {"coal": 10000}',
    )
    process_emissions: Tonnes = Field(0, description="process emissions, t CO2")
    output: Tonnes = Field(0, description="output in the product's unit")
    firm_id: Ident | None = Field(
        None, description="operators only (and required for them): the firm acted for"
    )
    electricity_mwh: Tonnes = Field(
        0, description="energy: electricity bought, whole MWh (x the grid emission factor)"
    )
    natural_emissions: Tonnes = Field(
        0,
        description="natural/biological emissions (livestock, land, biological "
        "processes), t CO2e; reported, and covered only where configured",
    )


class VerifyBody(_Body):
    verifier: Text(128) | None = Field(None, description="verifier id; must equal the key's label")


class RejectBody(_Body):
    verifier: Text(128) | None = Field(None, description="verifier id; must equal the key's label")
    reason: Text(500, min_length=1)


class SurrenderBody(_Body):
    period: Period
    instrument: Ident
    qty: Tonnes = Field(description="whole tonnes")
    serials: list[Serial] = Field(
        default_factory=list,
        max_length=1000,
        description="credits only: exactly these serials (ISSUER/PROJECT/VINTAGE/FIRST-LAST); "
        "empty: oldest first",
    )
    firm_id: Ident | None = Field(
        None, description="operators only (and required for them): the firm acted for"
    )


# 1970-01-01 .. 2261-12-31 (ns since the epoch in 64 bits), a time of day and offset optional;
# a day the calendar does not have (02-30) is refused by the parser (400 BAD_PARAMETER)
EFFECTIVE_PATTERN = (
    r"^(19[7-9][0-9]|2[01][0-9]{2}|22[0-5][0-9]|226[01])-(0[1-9]|1[0-2])-"
    r"(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]"
    r"(\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)


Effective = Matching(EFFECTIVE_PATTERN, "2027-01-01", "an ISO date/time, 1970..2261")


class CapBody(_Body):
    cap_pct: Percent = Field(description='offset cap, percent of the obligation, e.g. "5"')
    sub_caps_pct: dict[Ident, Percent] = Field(
        default_factory=dict,
        max_length=64,
        json_schema_extra=_IDENT_KEYS,
        description='sub-caps per offset type, e.g. {"PHCER": "2"}. Omitted: the '
        "sub-caps in force when the change takes effect are kept (each at most "
        "the new cap); {} clears "
        "every sub-cap; given: these replace them all",
    )
    effective: Effective | None = Field(
        None,
        description="ISO date or date and time (UTC unless an offset is given); "
        "default: when the change is journaled",
    )


class EmptyBody(_Body):
    pass


def _period(ctx: ApiContext) -> int:
    period: int = ctx.params["period"]  # typed and bounded by the route (server.api.PATH_PARAMS)
    return period


def _acting_firm(ctx: ApiContext, firm_id: str | None) -> str:
    cred = ctx.cred
    if cred.role == ROLE_FIRM:
        if firm_id not in (None, cred.firm_id):
            raise ProtocolError(E.FORBIDDEN, "a firm key acts for its own firm only", 403)
        own: str = cred.firm_id
        return own
    if not firm_id:
        # not a schema rule (a firm key may leave it out): a rule of the caller's role
        raise ProtocolError(E.BAD_PARAMETER, "firm_id is required for an operator key", 400)
    return firm_id


def _bps(pct: str) -> int:
    try:
        bps = percent_to_bps(pct)
    except (UnitError, ValueError, ArithmeticError):
        raise ProtocolError(E.INVALID_PARAMS, f"not a percentage: {pct[:64]!r}", 422) from None
    if abs(bps) > INT64_MAX:  # the core answers CAP_OUT_OF_RANGE below this
        raise ProtocolError(E.INVALID_PARAMS, f"percentage out of range: {pct[:64]!r}", 422)
    return bps


def _caps(b: CapBody) -> tuple[int, dict[str, int] | None]:
    """(cap, sub-caps), the sub-caps None when the body leaves them out (keep them)."""
    if "sub_caps_pct" not in b.model_fields_set:
        return _bps(b.cap_pct), None
    return _bps(b.cap_pct), {k: _bps(v) for k, v in sorted(b.sub_caps_pct.items())}


def _effective(b: CapBody) -> int | None:
    """The body's effective time in ns (None: when journaled)."""
    eff = None
    if b.effective is not None:  # the shape is checked (EFFECTIVE_PATTERN); the calendar here
        try:
            eff = to_ns(b.effective)
        except (ValueError, OverflowError):
            eff = None
        # ns since 1970 in 64 bits (an offset can take 1970-01-01 below zero)
        if eff is None or not 0 <= eff <= INT64_MAX:
            raise ProtocolError(
                E.BAD_PARAMETER, f"no such date/time, or before 1970: {b.effective!r}", 400
            ) from None
    return eff


def _verifier(ctx: ApiContext, given: str | None) -> str:
    """The verifier id is bound to the credential: a verifier key acts as the verifier named by
    its label, and may not claim another one in the body."""
    ident: str = ctx.cred.label or ctx.cred.key_id
    if given is not None and given != ident:
        raise ProtocolError(E.FORBIDDEN, f"this key acts as verifier {ident!r}, not {given!r}", 403)
    return ident


FORMAT_QUERY = {"format": enum_param(("json", "csv"), "the answer's format", default="json")}


def _csv(text: str, name: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _module(ctx: ApiContext) -> ComplianceModule:
    m = ctx.ex.modules.get("compliance")
    if not isinstance(m, ComplianceModule):
        raise ProtocolError(E.COMPLIANCE_NOT_CONFIGURED, "no compliance module", 400)
    return m


# ------------------------------------------------------------------------------ MRV
@route(
    "POST",
    "/compliance/submissions",
    body=SubmissionBody,
    tag=TAG,
    roles=(ROLE_FIRM, ROLE_OPERATOR),
    summary="Submit activity data for a period",
)
async def submit(ctx: ApiContext, b: SubmissionBody) -> dict[str, Any]:
    """Emissions by category: energy = sum(fuel tce x carbon coefficient x 44/12) + electricity
    MWh x grid factor; process; natural. The obligation counts the covered categories. Replaces
    a pending or rejected submission; ALREADY_VERIFIED once the period is verified."""
    firm = _acting_firm(ctx, b.firm_id)
    return await ctx.command(
        SubmitActivityData(
            firm_id=firm,
            period=b.period,
            fuels=tuple(sorted(b.fuels.items())),
            process_emissions=b.process_emissions,
            output=b.output,
            electricity_mwh=b.electricity_mwh,
            natural_emissions=b.natural_emissions,
        )
    )


@route(
    "GET",
    "/compliance/periods/{period}/submissions",
    tag=TAG,
    roles=(ROLE_VERIFIER, ROLE_OPERATOR),
    summary="Submissions of a period (verifier queue)",
)
async def submissions(ctx: ApiContext, _b: object) -> dict[str, Any]:
    m = _module(ctx)
    period = _period(ctx)
    # a verifier's queue: what no verifier has taken yet, and what it verified or rejected
    # itself - not other verifiers' firms (exchange/privacy.py)
    me = verifier_id(ctx.cred) if ctx.cred.role == ROLE_VERIFIER else None
    out = []
    for firm_id in sorted(m.records):
        rec = m.records[firm_id].get(period)
        if rec is None or rec["status"] == "none":
            continue
        if me is not None:
            handled = {rec["verifier"]} | {r[1] for r in rec["rejections"]}
            if me not in handled and (
                rec["status"] != "pending" or rec["verifier"] or rec["rejections"]
            ):
                continue
        out.append(
            {
                "firm_id": firm_id,
                "status": rec["status"],
                "version": rec["version"],
                "fuels": dict(rec["fuels"]),
                "process_emissions": rec["process_emissions"],
                "fuel_emissions": rec["fuel_emissions"],
                "emissions": rec["emissions"],
                "output": rec["output"],
                "verifier": rec["verifier"],
                "rejections": rec["rejections"],
                "electricity_mwh": rec["electricity_mwh"],
                "electricity_emissions": rec["electricity_emissions"],
                "natural_emissions": rec["natural_emissions"],
                "by_category": R.emissions_by_category(rec),
                "covered_emissions": rec["covered_emissions"],
            }
        )
    return {"period": period, "submissions": out}


@route(
    "POST",
    "/compliance/submissions/{firm_id}/{period}/verify",
    body=VerifyBody,
    tag=TAG,
    roles=(ROLE_VERIFIER,),
    summary="Verify a pending submission (sets the obligation)",
)
async def verify(ctx: ApiContext, b: VerifyBody) -> dict[str, Any]:
    return await ctx.command(
        VerifyEmissions(
            firm_id=ctx.path["firm_id"], period=_period(ctx), verifier=_verifier(ctx, b.verifier)
        )
    )


@route(
    "POST",
    "/compliance/submissions/{firm_id}/{period}/reject",
    body=RejectBody,
    tag=TAG,
    roles=(ROLE_VERIFIER,),
    summary="Reject a pending submission, with a reason",
)
async def reject(ctx: ApiContext, b: RejectBody) -> dict[str, Any]:
    return await ctx.command(
        RejectSubmission(
            firm_id=ctx.path["firm_id"],
            period=_period(ctx),
            verifier=_verifier(ctx, b.verifier),
            reason=b.reason,
        )
    )


# ------------------------------------------------------------------------------ surrender
@route(
    "POST",
    "/compliance/surrenders",
    body=SurrenderBody,
    tag=TAG,
    roles=(ROLE_FIRM, ROLE_OPERATOR),
    summary="Surrender allowances or offsets",
)
async def surrender(ctx: ApiContext, b: SurrenderBody) -> dict[str, Any]:
    """Retires the units against the firm's obligation; offsets count against the cap in
    effect now (OFFSET_CAP_EXCEEDED, OFFSET_SUBCAP_EXCEEDED, INELIGIBLE_VINTAGE, ...)."""
    firm = _acting_firm(ctx, b.firm_id)
    return await ctx.command(
        SurrenderUnits(
            firm_id=firm,
            period=b.period,
            instrument=b.instrument,
            qty=b.qty,
            serials=tuple(b.serials),
        )
    )


# ------------------------------------------------------------------------------ caps
@route(
    "GET",
    "/compliance/periods/{period}/cap",
    tag=TAG,
    roles=(ROLE_OPERATOR, ROLE_FIRM, ROLE_VERIFIER),
    summary="Offset cap now and its history",
)
async def get_cap(ctx: ApiContext, _b: object) -> dict[str, Any]:
    m = _module(ctx)
    period = _period(ctx)
    if period not in m.periods:
        raise ProtocolError(E.UNKNOWN_PERIOD, f"no compliance period {period}", 404)
    cap, subs = m.cap_at(period, ctx.ex.now)
    return {
        "period": period,
        "cap_bps": cap,
        "sub_caps_bps": dict(sorted(subs.items())),
        "history": [
            {
                "effective_ts": c[0],
                "seq": c[1],
                "cap_bps": c[2],
                "sub_caps_bps": {k: v for k, v in c[3]},
                "operator": c[4],
            }
            for c in m.periods[period]["caps"]
        ],
    }


@route(
    "PUT",
    "/compliance/periods/{period}/cap",
    body=CapBody,
    tag=TAG,
    summary="Change the offset cap (journaled; applies to surrenders after it)",
)
async def set_cap(ctx: ApiContext, b: CapBody) -> dict[str, Any]:
    """Never rewrites a surrender already made; CAP_OUT_OF_RANGE outside [0, 100 %]."""
    cap, subs = _caps(b)
    eff = _effective(b)
    return await ctx.command(
        SetOffsetCap(
            period=_period(ctx),
            cap_bps=cap,
            sub_caps_bps=None if subs is None else tuple(subs.items()),
            effective_ts=eff,
            operator=ctx.cred.label or ctx.cred.key_id,
        )
    )


@route(
    "POST",
    "/compliance/periods/{period}/cap/what-if",
    body=CapBody,
    tag=TAG,
    summary="Which firms' surrenders and holdings a proposed cap would exceed (no change)",
)
async def what_if(ctx: ApiContext, b: CapBody) -> dict[str, Any]:
    cap, subs = _caps(b)
    if subs is None:  # as the change would: keep the sub-caps in force when it takes effect
        m, period = _module(ctx), _period(ctx)
        if period in m.periods:
            eff = _effective(b)
            subs = {
                k: min(v, cap)
                for k, v in m.cap_at(period, ctx.ex.now if eff is None else eff)[1].items()
            }
    try:
        return R.what_if_cap(ctx.ex, _period(ctx), cap, subs)
    except KeyError as e:
        raise ProtocolError(E.UNKNOWN_PERIOD, str(e.args[0]), 404) from None
    except ValueError as e:
        raise ProtocolError(E.CAP_OUT_OF_RANGE, str(e), 400) from None


# ------------------------------------------------------------------------------ deadline
@route(
    "POST",
    "/compliance/periods/{period}/deadline",
    body=EmptyBody,
    tag=TAG,
    summary="Deadline processing: shortfalls, penalties, deductions, statuses",
)
async def deadline(ctx: ApiContext, _b: EmptyBody) -> dict[str, Any]:
    return await ctx.command(
        ProcessComplianceDeadline(period=_period(ctx), operator=ctx.cred.label or ctx.cred.key_id)
    )


# ------------------------------------------------------------------------------ reports
@route(
    "GET",
    "/compliance/statements/{firm_id}/{period}",
    tag=TAG,
    roles=(ROLE_OPERATOR, ROLE_FIRM, ROLE_VERIFIER),
    query=FORMAT_QUERY,
    media_types=("application/json", "text/csv"),
    summary="A firm's compliance statement (JSON, or CSV with ?format=csv)",
)
async def statement(ctx: ApiContext, _b: object) -> web.Response | dict[str, Any]:
    """For the firm itself, the verifier of its submission of the period, and operators."""
    firm_id = ctx.path["firm_id"]
    period = _period(ctx)
    require_firm_reader(ctx, firm_id, period)
    try:
        st = R.firm_statement(ctx.ex, firm_id, period)
    except KeyError as e:
        raise ProtocolError(E.NOT_FOUND, str(e.args[0]), 404) from None
    if ctx.params["format"] == "csv":
        return _csv(R.statement_csv(st), f"statement-{firm_id}-{period}.csv")
    return R.statement_for_people(st)


@route(
    "GET",
    "/compliance/periods/{period}/summary",
    tag=TAG,
    query=FORMAT_QUERY,
    media_types=("application/json", "text/csv"),
    summary="Market-wide compliance summary (JSON, or CSV with ?format=csv)",
)
async def summary(ctx: ApiContext, _b: object) -> web.Response | dict[str, Any]:
    period = _period(ctx)
    try:
        sm = R.compliance_summary(ctx.ex, period)
    except KeyError as e:
        raise ProtocolError(E.NOT_FOUND, str(e.args[0]), 404) from None
    if ctx.params["format"] == "csv":
        return _csv(R.summary_csv(sm), f"compliance-{period}.csv")
    return sm


# ------------------------------------------------------------------------------ websocket
# Firms that trade over the websocket do their compliance on the same session.
class WsSubmitParams(_Body):
    period: Period
    fuels: dict[str, Tonnes] = Field(default_factory=dict)
    process_emissions: Tonnes = 0
    output: Tonnes = 0
    electricity_mwh: Tonnes = 0
    natural_emissions: Tonnes = 0


class WsSurrenderParams(_Body):
    period: Period
    instrument: str = Field(min_length=1, max_length=64)
    qty: Tonnes


class WsPeriodParams(_Body):
    period: Period


def _events(events: list[Any]) -> list[Any]:
    # the same units for people as the HTTP API's command results
    from ..core.events import encode_event

    return [present_event(encode_event(ev)) for ev in events]


@ws_method("submit_activity_data", WsSubmitParams, roles=(ROLE_FIRM,))
async def ws_submit(session: WsSession, p: WsSubmitParams) -> dict[str, Any]:
    """Submit the session firm's activity data for a period (see POST /compliance/submissions)."""
    events = await session.gw.submit_checked(
        SubmitActivityData(
            firm_id=session.firm_id,
            period=p.period,
            fuels=tuple(sorted(p.fuels.items())),
            process_emissions=p.process_emissions,
            output=p.output,
            electricity_mwh=p.electricity_mwh,
            natural_emissions=p.natural_emissions,
        )
    )
    return {"events": _events(events)}


@ws_method("surrender", WsSurrenderParams, roles=(ROLE_FIRM,))
async def ws_surrender(session: WsSession, p: WsSurrenderParams) -> dict[str, Any]:
    """Surrender the session firm's units against its obligation for a period."""
    events = await session.gw.submit_checked(
        SurrenderUnits(firm_id=session.firm_id, period=p.period, instrument=p.instrument, qty=p.qty)
    )
    return {"events": _events(events)}


@ws_method("compliance_statement", WsPeriodParams, roles=(ROLE_FIRM,))
def ws_statement(session: WsSession, p: WsPeriodParams) -> dict[str, Any]:
    """The session firm's compliance statement for a period (same as the HTTP statement)."""
    try:
        return R.statement_for_people(R.firm_statement(session.gw.ex, session.firm_id, p.period))
    except KeyError as e:
        raise ProtocolError(E.NOT_FOUND, str(e.args[0])) from None


# ------------------------------------------------------------------------------ SME fund
# The fund's endpoints live in their own module; importing it registers them with the server.
from . import fund_api  # noqa: E402,F401
