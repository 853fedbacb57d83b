"""Credit registry endpoints of the HTTP API (``/api/v1/registry/...``).

Who may do what:

* public (no key): look a serial up (is it retired, for whom, for which period), the
  conversion table, the buffer pool, carbon-inclusive totals per action type (suppressed below
  the configured minimum of contributing platforms, exchange/privacy.py);
* ``operator``: issue credits with serials, record another registry's cancellation, import,
  declare a carbon-inclusive class CCER-equivalent, register platforms and removal projects,
  set conversion factors, report reversals;
* ``verifier``: verify a removal project's vintage, approve or reject a platform's batch,
  report reversals;
* ``platform``: submit batches of recorded actions (hashed action ids only: see
  :mod:`exchange.client.platform`) and read its own batches;
* ``firm``: its own serials; retire its credits voluntarily (an operator may act for a firm).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ..core import errors as E
from ..core.units import MAX_QTY
from ..privacy import min_contributors, require_firm_reader, suppress, verifier_id
from ..server.api import ApiContext, Ident, Matching, Param, Text, route
from ..server.appkeys import STATE_KEY
from ..access.credentials import ROLE_FIRM, ROLE_OPERATOR, ROLE_PLATFORM, ROLE_VERIFIER
from ..server.protocol import ProtocolError
from .commands import (
    ApproveActionBatch,
    DeclareOffsetClass,
    ImportCredits,
    IssueCredits,
    RecordExternalCancellation,
    RegisterPlatform,
    RegisterRemovalProject,
    RejectActionBatch,
    ReportReversal,
    RetireCredits,
    SetConversionFactor,
    SubmitActionBatch,
    VerifyRemoval,
)
from .config import ConversionRow, tonnes_text
from .module import MAX_RECORD_QTY, MAX_UNIT, RegistryModule
from . import serials as S

TAG = "registry"
# units count from 1 (no leading zero); FIRST <= LAST is the one rule a pattern cannot state
SERIAL_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}/[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}/"
    r"[0-9]{1,4}/[1-9][0-9]{0,15}(-[1-9][0-9]{0,15})?$"
)
_SERIAL_RE = re.compile(SERIAL_PATTERN[1:-1])
Serial = Matching(
    SERIAL_PATTERN, "CCER/P-0042/2026/1-500", "a serial ISSUER/PROJECT/VINTAGE/FIRST[-LAST]"
)
Unit = Annotated[StrictInt, Field(ge=1, le=MAX_UNIT)]
Tonnes = Annotated[StrictInt, Field(ge=0, le=MAX_QTY)]
Vintage = Annotated[StrictInt, Field(ge=1, le=9999)]
ActionId = Matching(
    r"^[0-9a-f]{64}$",
    "9f" * 32,
    "64 lowercase hex digits: the platform's HMAC-SHA256 of the action",
)
# a day the calendar does not have (02-30) matches and is refused by the registry (BAD_BATCH)
Day = Matching(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$", "2026-03-01", "a date YYYY-MM-DD"
)


def _serial_parse(text: str) -> str:
    if _SERIAL_RE.fullmatch(text) is None:
        raise ValueError(
            f"expected a serial ISSUER/PROJECT/VINTAGE/FIRST[-LAST] (pattern {SERIAL_PATTERN})"
        )
    try:
        S.parse(text)
    except ValueError as exc:  # matches the document, but LAST < FIRST: not a schema rule
        raise ProtocolError(E.BAD_PARAMETER, str(exc), 400) from None
    return text


SERIAL_QUERY = Param(
    {"type": "string", "pattern": SERIAL_PATTERN, "maxLength": 200},
    _serial_parse,
    "a serial ISSUER/PROJECT/VINTAGE/FIRST[-LAST]",
    required=True,
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _module(ctx: ApiContext) -> RegistryModule:
    m = ctx.ex.modules.get("registry")
    if m is None or m.params is None:
        raise ProtocolError(E.REGISTRY_NOT_CONFIGURED, "the credit registry is not configured", 404)
    return m


def _acting(ctx: ApiContext, role: str, given: str | None, field: str) -> str:
    """The account a request acts for: a ``role`` key (firm, platform) acts for its own only;
    an operator names it in ``field``."""
    if ctx.cred.role == role:
        if given not in (None, ctx.cred.firm_id):
            raise ProtocolError(E.FORBIDDEN, f"a {role} key acts for its own {role} only", 403)
        return ctx.cred.firm_id
    if not given:
        raise ProtocolError(E.BAD_PARAMETER, f"{field} is required for an operator key", 400)
    return given


def _verifier(ctx: ApiContext, given: str | None) -> str:
    me = verifier_id(ctx.cred)
    if given not in (None, me):
        raise ProtocolError(E.FORBIDDEN, f"this key acts as verifier {me!r}", 403)
    return me


# ------------------------------------------------------------------------------ serials
@route(
    "GET",
    "/registry/serials",
    tag=TAG,
    roles=None,
    query={"serial": SERIAL_QUERY},
    summary="Is a serial issued, retired, for whom and for which period (public)",
)
async def serial_status(ctx: ApiContext, _b) -> dict:
    return _module(ctx).lookup(ctx.params["serial"])


@route(
    "GET",
    "/registry/holdings/{firm_id}",
    tag=TAG,
    roles=(ROLE_FIRM, ROLE_PLATFORM, ROLE_VERIFIER, ROLE_OPERATOR),
    summary="The serials an account holds, oldest first",
)
async def holdings(ctx: ApiContext, _b) -> dict:
    firm_id = ctx.params["firm_id"]
    if not (ctx.cred.role == ROLE_PLATFORM and ctx.cred.firm_id == firm_id):
        require_firm_reader(ctx, firm_id)
    if firm_id not in ctx.ex.accounts:
        raise ProtocolError(E.UNKNOWN_ACCOUNT, f"no account {firm_id!r}", 404)
    return {"firm_id": firm_id, "serials": _module(ctx).holdings(firm_id)}


class IssueBody(_Body):
    account: Ident
    instrument: Ident
    issuer: Ident = Field(description="the issuing registry, e.g. CCER")
    project: Ident
    first: Unit
    last: Unit


@route(
    "POST",
    "/registry/credits",
    body=IssueBody,
    tag=TAG,
    summary="Issue credits with serials (DOUBLE_COUNTED if a unit was issued before)",
)
async def issue(ctx: ApiContext, b: IssueBody) -> dict:
    return await ctx.command(IssueCredits(**b.model_dump()))


class CancellationBody(_Body):
    registry: Ident = Field(description="the registry that cancelled the units")
    issuer: Ident
    project: Ident
    vintage: Vintage
    first: Unit
    last: Unit
    reference: Text(200) = ""


@route(
    "POST",
    "/registry/external-cancellations",
    body=CancellationBody,
    tag=TAG,
    summary="Record another registry's cancellation of units for transfer here",
)
async def cancellation(ctx: ApiContext, b: CancellationBody) -> dict:
    return await ctx.command(RecordExternalCancellation(**b.model_dump()))


class ImportBody(IssueBody):
    registry: Ident = Field(description="the registry that issued and cancelled the units")


@route(
    "POST",
    "/registry/imports",
    body=ImportBody,
    tag=TAG,
    summary="Import units another registry cancelled (DOUBLE_COUNTED otherwise)",
)
async def import_(ctx: ApiContext, b: ImportBody) -> dict:
    return await ctx.command(ImportCredits(**b.model_dump()))


class RetireBody(_Body):
    instrument: Ident
    qty: Annotated[StrictInt, Field(ge=1, le=MAX_QTY)]
    serials: list[Serial] = Field(
        default_factory=list,
        max_length=1000,
        description="exactly these serials; empty: oldest first",
    )
    beneficiary: Text(200) = ""
    reason: Text(200) = ""
    firm_id: Ident | None = Field(None, description="operators only: the firm acted for")


@route(
    "POST",
    "/registry/retirements",
    body=RetireBody,
    tag=TAG,
    roles=(ROLE_FIRM, ROLE_OPERATOR),
    summary="Retire credits voluntarily",
)
async def retire(ctx: ApiContext, b: RetireBody) -> dict:
    firm = _acting(ctx, ROLE_FIRM, b.firm_id, "firm_id")
    return await ctx.command(
        RetireCredits(
            account=firm,
            instrument=b.instrument,
            qty=b.qty,
            serials=tuple(b.serials),
            beneficiary=b.beneficiary,
            reason=b.reason,
        )
    )


class ClassBody(_Body):
    ccer_equivalent: StrictBool


@route(
    "PUT",
    "/registry/offset-classes/{offset_type}",
    body=ClassBody,
    tag=TAG,
    summary="Declare carbon-inclusive credits CCER-equivalent (or not) for compliance",
)
async def declare(ctx: ApiContext, b: ClassBody) -> dict:
    return await ctx.command(
        DeclareOffsetClass(
            offset_type=ctx.params["offset_type"],
            ccer_equivalent=b.ccer_equivalent,
            operator=ctx.cred.label or ctx.cred.key_id,
        )
    )


@route(
    "GET",
    "/registry/offset-classes",
    tag=TAG,
    roles=None,
    summary="Which carbon-inclusive credits count as CCER-equivalent offsets (public)",
)
async def offset_classes(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    t = m.params["carbon_inclusive_type"]
    return {"carbon_inclusive_type": t, "ccer_equivalent": t in m.ccer_equivalent}


# ------------------------------------------------------------------------------ removals
class ProjectBody(_Body):
    project_id: Ident
    removal_type: Literal["natural", "engineered"]
    owner: Ident
    name: Text(200) = ""


@route(
    "POST",
    "/registry/removal-projects",
    body=ProjectBody,
    tag=TAG,
    summary="Register a removal project (natural sink or engineered storage)",
)
async def register_project(ctx: ApiContext, b: ProjectBody) -> dict:
    return await ctx.command(RegisterRemovalProject(**b.model_dump()))


@route(
    "GET",
    "/registry/removal-projects",
    tag=TAG,
    roles=(ROLE_OPERATOR, ROLE_VERIFIER, ROLE_FIRM, ROLE_PLATFORM),
    summary="Removal projects: verified vintages, buffer contributions, reversals",
)
async def projects(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    return {
        "projects": {pid: {k: v for k, v in p.items()} for pid, p in sorted(m.projects.items())}
    }


class RemovalBody(_Body):
    vintage: Vintage
    gross_removal: Tonnes = Field(description="t CO2 removed by the project in the vintage")
    project_emissions: Tonnes = Field(0, description="t CO2e the project itself emitted")
    baseline_removal: Tonnes = Field(0, description="t CO2 that would have been removed anyway")
    verifier: Ident | None = None


@route(
    "POST",
    "/registry/removal-projects/{project_id}/verifications",
    body=RemovalBody,
    tag=TAG,
    roles=(ROLE_VERIFIER,),
    summary="Verify a vintage: issue the net, additional removal, buffer share first",
)
async def verify_removal(ctx: ApiContext, b: RemovalBody) -> dict:
    return await ctx.command(
        VerifyRemoval(
            project_id=ctx.params["project_id"],
            vintage=b.vintage,
            verifier=_verifier(ctx, b.verifier),
            gross_removal=b.gross_removal,
            project_emissions=b.project_emissions,
            baseline_removal=b.baseline_removal,
        )
    )


class ReversalBody(_Body):
    qty: Annotated[StrictInt, Field(ge=1, le=MAX_QTY)]
    cause: Text(200, min_length=1)


@route(
    "POST",
    "/registry/removal-projects/{project_id}/reversals",
    body=ReversalBody,
    tag=TAG,
    roles=(ROLE_OPERATOR, ROLE_VERIFIER),
    summary="Report a reversal (fire, leakage): cancel from the buffer pool first",
)
async def reversal(ctx: ApiContext, b: ReversalBody) -> dict:
    return await ctx.command(
        ReportReversal(
            project_id=ctx.params["project_id"],
            qty=b.qty,
            cause=b.cause,
            reporter=ctx.cred.label or ctx.cred.key_id,
        )
    )


@route(
    "GET",
    "/registry/buffer",
    tag=TAG,
    roles=None,
    summary="The buffer pool per removal type: contributed, cancelled, held (public)",
)
async def buffer(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    out = {}
    for rtype, (contributed, cancelled) in sorted(m.buffer.items()):
        out[rtype] = {
            "offset_type": m.params["removal_types"][rtype],
            "contributed": contributed,
            "cancelled": cancelled,
            "held": contributed - cancelled,
        }
    return {"buffer_pct": f"{m.params['buffer_bps'] / 100:g}", "pools": out}


# ------------------------------------------------------------------------------ carbon-inclusive
class PlatformBody(_Body):
    platform_id: Ident
    name: Text(200) = ""


@route(
    "POST",
    "/registry/platforms",
    body=PlatformBody,
    tag=TAG,
    summary="Register a carbon-inclusive platform (creates its account); then issue it a "
    "platform key",
)
async def register_platform(ctx: ApiContext, b: PlatformBody) -> dict:
    return await ctx.command(RegisterPlatform(**b.model_dump()))


@route(
    "GET",
    "/registry/conversion-table",
    tag=TAG,
    roles=None,
    summary="t CO2e per unit of each recorded action type, with its table version (public)",
)
async def conversion_table(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    return {
        "version": m.table_version,
        "actions": {
            at: {"unit": u, "t_co2e_per_unit": tonnes_text(g), "version": v}
            for at, (u, g, v) in sorted(m.table.items())
        },
    }


class ConversionBody(ConversionRow):
    # the config's row, with the factor's range [0, 1000] t and six decimals in its pattern,
    # so the document states what the validator accepts
    unit: Text(32, min_length=1) = Field(
        description="the unit an action is counted in (km, kWh, trip, ...)"
    )
    t_co2e_per_unit: Matching(
        r"^(1000(\.0{1,6})?|[0-9]{1,3}(\.[0-9]{1,6})?)$",
        "0.000120",
        "t CO2e per unit in [0, 1000], at most 6 decimals",
    ) = Field(description="t CO2e avoided per unit, exact to the gram (6 decimals)")


@route(
    "PUT",
    "/registry/conversion-table/{action_type}",
    body=ConversionBody,
    tag=TAG,
    summary="Set one action type's conversion factor (a new table version)",
)
async def set_factor(ctx: ApiContext, b: ConversionBody) -> dict:
    return await ctx.command(
        SetConversionFactor(
            action_type=ctx.params["action_type"],
            unit=b.unit,
            g_co2e_per_unit=b.grams(),
            operator=ctx.cred.label or ctx.cred.key_id,
        )
    )


Record = tuple[ActionId, Ident, Annotated[StrictInt, Field(ge=1, le=MAX_RECORD_QTY)], Day]


class BatchBody(_Body):
    platform_id: Ident | None = Field(
        None, description="operators only; a platform key submits for itself"
    )
    vintage: Vintage
    records: list[Record] = Field(
        min_length=1,
        description=(
            "[action_id, action_type, quantity, date]: action_id is the platform's HMAC-SHA256 of "
            "the action's own identifier (exchange.client.platform.hash_action_id), never a name, "
            "phone number or raw id"
        ),
    )


@route(
    "POST",
    "/registry/batches",
    body=BatchBody,
    tag=TAG,
    roles=(ROLE_PLATFORM, ROLE_OPERATOR),
    summary="Submit a batch of recorded low-carbon actions for verification",
)
async def submit_batch(ctx: ApiContext, b: BatchBody) -> dict:
    pid = _acting(ctx, ROLE_PLATFORM, b.platform_id, "platform_id")
    return await ctx.command(
        SubmitActionBatch(
            platform_id=pid, vintage=b.vintage, records=tuple(tuple(r) for r in b.records)
        )
    )


def _batch_view(bid: str, b: dict) -> dict:
    return {
        "batch_id": bid,
        **{k: v for k, v in b.items() if k != "action_ids"},
        "reduction_t_co2e": tonnes_text(b["reduction_g"]),
    }


@route(
    "GET",
    "/registry/batches",
    tag=TAG,
    roles=(ROLE_PLATFORM, ROLE_VERIFIER, ROLE_OPERATOR),
    summary="Batches (a platform sees its own)",
)
async def batches(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    mine = ctx.cred.firm_id if ctx.cred.role == ROLE_PLATFORM else None
    return {
        "batches": [
            _batch_view(bid, b)
            for bid, b in sorted(m.batches.items())
            if mine is None or b["platform_id"] == mine
        ]
    }


@route(
    "GET",
    "/registry/batches/{batch_id}",
    tag=TAG,
    roles=(ROLE_PLATFORM, ROLE_VERIFIER, ROLE_OPERATOR),
    summary="One batch",
)
async def batch(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    b = m.batches.get(ctx.params["batch_id"])
    if b is None or (ctx.cred.role == ROLE_PLATFORM and b["platform_id"] != ctx.cred.firm_id):
        raise ProtocolError(E.UNKNOWN_BATCH, f"no batch {ctx.params['batch_id']!r}", 404)
    return _batch_view(ctx.params["batch_id"], b)


class DecisionBody(_Body):
    verifier: Ident | None = None


class RejectBatchBody(_Body):
    verifier: Ident | None = None
    reason: Text(500, min_length=1)


@route(
    "POST",
    "/registry/batches/{batch_id}/approve",
    body=DecisionBody,
    tag=TAG,
    roles=(ROLE_VERIFIER,),
    summary="Approve a batch: issue its credits with serials",
)
async def approve(ctx: ApiContext, b: DecisionBody) -> dict:
    return await ctx.command(
        ApproveActionBatch(batch_id=ctx.params["batch_id"], verifier=_verifier(ctx, b.verifier))
    )


@route(
    "POST",
    "/registry/batches/{batch_id}/reject",
    body=RejectBatchBody,
    tag=TAG,
    roles=(ROLE_VERIFIER,),
    summary="Reject a batch (its action ids may be claimed again)",
)
async def reject(ctx: ApiContext, b: RejectBatchBody) -> dict:
    return await ctx.command(
        RejectActionBatch(
            batch_id=ctx.params["batch_id"], verifier=_verifier(ctx, b.verifier), reason=b.reason
        )
    )


@route(
    "GET",
    "/registry/carbon-inclusive/totals",
    tag=TAG,
    roles=None,
    summary="Approved carbon-inclusive reductions per action type (public; a type with "
    "fewer than [privacy] min_contributors platforms is suppressed)",
)
async def totals(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    groups = {
        at: {
            "records": r["records"],
            "quantity": r["quantity"],
            "t_co2e": tonnes_text(r["g_co2e"]),
            "contributors": r["platforms"],
        }
        for at, r in m.totals_by_action_type().items()
    }
    k = min_contributors(ctx.request.app[STATE_KEY].settings)
    return {"min_contributors": k, "action_types": suppress(groups, k)}
