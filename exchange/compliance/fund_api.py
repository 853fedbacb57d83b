"""SME fund endpoints of the HTTP API (``/api/v1/compliance/sme-fund...``).

Registered with :func:`exchange.server.api.route`; imported by :mod:`exchange.compliance.api`,
which the server loads at start. Who may do what:

* anyone (no key): the fund's public statement (balance, inflows, grants paid with projects);
* ``firm``: apply for a grant for itself (an SME), list its own applications;
* ``operator``: change the fund's parameters, deposit from the regulator's budget, apply on an
  SME's behalf, approve, reject, disburse, list every application.

Money travels as decimal CNY strings in requests (``"50000.00"``) and as integer fen
(``*_fen``) in statements and events; shares as percent strings (``"30"``).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..core import errors as E
from ..core.units import MAX_QTY, UnitError, percent_to_bps
from ..server.api import ApiContext, CommandResult, Ident, Percent, Text, enum_param, \
    ident_param, int_param, route
from ..server.credentials import ROLE_FIRM, ROLE_OPERATOR
from ..server.protocol import MAX_PERIOD, Period, Price, ProtocolError
from .fund import (
    STATUSES, ApplyForGrant, ApproveGrant, ConfigureSmeFund, DisburseGrant, FundDeposit,
    RejectGrant, fund_module, fund_statement,
)

TAG = "sme-fund"
BASE = "/compliance/sme-fund"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------ requests
class FundParamsBody(_Body):
    """All four parameters, every time: a PUT replaces them (an omitted limit would silently
    become no limit)."""

    penalty_to_fund_pct: Percent = Field(
        description="% of each penalty paid to the fund, e.g. \"30\"")
    auction_to_fund_pct: Percent = Field(
        description="% of allowance auction proceeds (applies once the exchange has auctions)")
    sme_period_limit: Price | None = Field(
        description="CNY one SME may receive per period; null = no limit")
    period_limit: Price | None = Field(
        description="CNY all SMEs together may receive per period; null = no limit")


class FundDepositBody(_Body):
    amount: Price = Field(description="CNY from the regulator's budget")
    period: Period | None = Field(
        None, description="period the inflow counts to; default: the current compliance period")
    ref: Text(500) = Field("", description="e.g. the budget line")


class GrantApplicationBody(_Body):
    period: Period = Field(description="compliance period the grant counts to, e.g. 2026")
    amount: Price = Field(description="CNY requested")
    project: Text(500, min_length=1) = Field(description="the abatement project")
    # within the core's quantity limit: abatement is summed per SME and period in statements
    verified_abatement_t: StrictInt = Field(gt=0, le=MAX_QTY,
                                            description="verified abatement, t CO2e")
    sme: Ident | None = Field(None, description="operators only (and required for them): "
                                                "the SME applied for")


class GrantRejectBody(_Body):
    reason: Text(500, min_length=1)


class EmptyBody(_Body):
    pass


# ------------------------------------------------------------------------------ responses
class _Out(BaseModel):
    # closed, so a statement field the models do not describe fails the tests, not the reader
    model_config = ConfigDict(extra="forbid")


class FundParams(_Out):
    effective_seq: int = Field(description="applies to commands from this sequence number on")
    effective_ts: int
    penalty_to_fund_bps: int
    auction_to_fund_bps: int
    sme_period_limit_fen: int | None
    period_limit_fen: int | None
    operator: str


class FundInflow(_Out):
    seq: int
    ts: int
    source: str = Field(description="penalty | auction | budget")
    period: int
    amount_fen: int = Field(description="into the fund")
    gross_fen: int = Field(description="the penalty / proceeds / deposit it is a share of")
    share_bps: int
    ref: str = Field(description="the budget line (budget); empty for a penalty: the paying "
                                 "firm is withheld from the public statement")


class FundInflowPeriod(_Out):
    period: int
    total_fen: int
    penalty: int
    auction: int
    budget: int


class FundInflows(_Out):
    total_fen: int
    by_source: dict[str, int]
    by_period: list[FundInflowPeriod]
    entries: list[FundInflow]


class GrantApplication(_Out):
    application_id: int
    sme: str
    period: int
    amount_fen: int
    project: str
    verified_abatement_t: int
    applicant: str = Field(description="the SME, or operator:<label> on its behalf")
    status: str = Field(description=" | ".join(STATUSES))
    applied_seq: int
    applied_ts: int
    decided_by: str | None
    decided_seq: int | None
    decided_ts: int | None
    reason: str | None
    disbursed_seq: int | None
    disbursed_ts: int | None


class SmeGrantPeriod(_Out):
    period: int
    amount_fen: int
    limit_fen: int | None = Field(description="the limit per SME and period now")


class SmeGrants(_Out):
    sme: str
    total_fen: int
    grants: int
    verified_abatement_t: int
    by_period: list[SmeGrantPeriod]


class GrantPeriod(_Out):
    period: int
    total_fen: int
    grants: int
    verified_abatement_t: int
    limit_fen: int | None = Field(description="the limit per period now")


class FundGrants(_Out):
    total_fen: int
    count: int
    by_sme: list[SmeGrants]
    by_period: list[GrantPeriod]
    paid: list[GrantApplication]


class BalanceCheck(_Out):
    inflows_fen: int
    grants_fen: int
    balance_fen: int
    ok: bool = Field(description="balance = inflows - grants")


class FundStatement(_Out):
    """The SME fund's public statement (integer fen)."""

    account: str
    configured: bool
    period: int | None = Field(description="inflows and grants of this period only, or all")
    as_of_seq: int
    as_of_ts: int
    params: FundParams | None
    params_history: list[FundParams]
    balance_fen: int
    inflows: FundInflows
    grants: FundGrants
    applications: dict[str, int] = Field(description="applications by status")
    balance_check: BalanceCheck


class GrantApplications(_Out):
    applications: list[GrantApplication]


# ------------------------------------------------------------------------------ helpers
def _bps(pct: str) -> int:
    try:
        return percent_to_bps(pct)
    except (UnitError, ValueError, ArithmeticError):
        raise ProtocolError(E.INVALID_PARAMS, f"not a percentage: {pct!r}", 422) from None


def _app_id(ctx: ApiContext) -> int:
    return ctx.params["application_id"]  # typed by the route (server.api.PATH_PARAMS)


def _who(ctx: ApiContext) -> str:
    return ctx.cred.label or ctx.cred.key_id


PERIOD_QUERY = {"period": int_param(0, MAX_PERIOD, "this period only (default: all)")}


def _module(ctx: ApiContext):
    try:
        return fund_module(ctx.ex)
    except LookupError:
        raise ProtocolError(E.SME_FUND_NOT_CONFIGURED, "no SME fund module", 400) from None


# ------------------------------------------------------------------------------ routes
@route("GET", BASE, tag=TAG, roles=None, response=FundStatement, query=PERIOD_QUERY,
       summary="The SME fund's public statement: balance, inflows, grants (?period=2026)")
async def statement(ctx: ApiContext, _b) -> dict:
    """Balance; inflows by source (penalty, auction, budget) and by period, each listed; grants
    paid by SME and by period with their projects; parameters and their history."""
    _module(ctx)
    st = fund_statement(ctx.ex, ctx.params["period"])
    # which firm paid a penalty is that firm's compliance record, not the fund's: the public
    # statement keeps the amount and withholds the payer (docs/PRIVACY.md)
    for e in st["inflows"]["entries"]:
        if e["source"] == "penalty":
            e["ref"] = ""
    return st


@route("PUT", BASE + "/params", body=FundParamsBody, response=CommandResult, tag=TAG,
       summary="Change the fund's shares and limits (journaled; applies to what follows)")
async def set_params(ctx: ApiContext, b: FundParamsBody) -> dict:
    """Never retroactive: penalties already collected and grants already paid stay as they
    are. BAD_PARAMETER for a share outside [0, 100 %]."""
    return await ctx.command(ConfigureSmeFund(
        penalty_to_fund_bps=_bps(b.penalty_to_fund_pct),
        auction_to_fund_bps=_bps(b.auction_to_fund_pct), sme_period_limit=b.sme_period_limit,
        period_limit=b.period_limit, operator=_who(ctx)))


@route("POST", BASE + "/deposits", body=FundDepositBody, response=CommandResult, tag=TAG,
       summary="Deposit into the fund from the regulator's budget")
async def deposit(ctx: ApiContext, b: FundDepositBody) -> dict:
    return await ctx.command(FundDeposit(amount=b.amount, period=b.period, ref=b.ref,
                                         operator=_who(ctx)))


@route("POST", BASE + "/applications", body=GrantApplicationBody, response=CommandResult,
       tag=TAG, roles=(ROLE_FIRM, ROLE_OPERATOR),
       summary="Apply for a grant (an SME for itself, or an operator on its behalf)")
async def apply(ctx: ApiContext, b: GrantApplicationBody) -> dict:
    """NOT_AN_SME for a firm whose size class is not sme; the event grant_applied carries the
    application_id the next steps take."""
    if ctx.cred.role == ROLE_FIRM:
        if b.sme not in (None, ctx.cred.firm_id):
            raise ProtocolError(E.FORBIDDEN, "a firm key applies for its own firm only", 403)
        sme, applicant = ctx.cred.firm_id, ctx.cred.firm_id
    else:
        if not b.sme:
            # a rule of the caller's role, not of the body's shape
            raise ProtocolError(E.BAD_PARAMETER, "sme is required for an operator key", 400)
        sme, applicant = b.sme, f"operator:{_who(ctx)}"
    return await ctx.command(ApplyForGrant(
        sme=sme, period=b.period, amount=b.amount, project=b.project,
        verified_abatement_t=b.verified_abatement_t, applicant=applicant))


@route("GET", BASE + "/applications", response=GrantApplications, tag=TAG,
       roles=(ROLE_FIRM, ROLE_OPERATOR),
       query={**PERIOD_QUERY, "status": enum_param(STATUSES, "only applications in it"),
              "sme": ident_param("only this SME's (a firm key: its own)")},
       summary="Grant applications (?status=&period=&sme=); a firm sees its own")
async def applications(ctx: ApiContext, _b) -> dict:
    m = _module(ctx)
    sme = ctx.params["sme"]
    if ctx.cred.role == ROLE_FIRM:
        if sme not in (None, ctx.cred.firm_id):
            raise ProtocolError(E.FORBIDDEN, "a firm sees its own applications only", 403)
        sme = ctx.cred.firm_id
    status = ctx.params["status"]
    return {"applications": m.applications_of(sme, ctx.params["period"], status)}


@route("POST", BASE + "/applications/{application_id}/approve", body=EmptyBody,
       response=CommandResult, tag=TAG, summary="Approve a pending grant application")
async def approve(ctx: ApiContext, _b: EmptyBody) -> dict:
    return await ctx.command(ApproveGrant(application_id=_app_id(ctx), operator=_who(ctx)))


@route("POST", BASE + "/applications/{application_id}/reject", body=GrantRejectBody,
       response=CommandResult, tag=TAG,
       summary="Reject a pending or approved (unpaid) grant application, with a reason")
async def reject(ctx: ApiContext, b: GrantRejectBody) -> dict:
    return await ctx.command(RejectGrant(application_id=_app_id(ctx), reason=b.reason,
                                         operator=_who(ctx)))


@route("POST", BASE + "/applications/{application_id}/disburse", body=EmptyBody,
       response=CommandResult, tag=TAG,
       summary="Pay an approved grant from the fund to the SME (within balance and limits)")
async def disburse(ctx: ApiContext, _b: EmptyBody) -> dict:
    """SME_FUND_INSUFFICIENT, GRANT_SME_LIMIT_EXCEEDED or GRANT_PERIOD_LIMIT_EXCEEDED when the
    grant would exceed the fund's balance, the limit per SME and period, or the period's."""
    return await ctx.command(DisburseGrant(application_id=_app_id(ctx), operator=_who(ctx)))
