"""SME fund endpoints of the HTTP API (``/api/v1/compliance/sme-fund...``).

Registered with :func:`exchange.server.api.route`; imported by :mod:`exchange.compliance.api`,
which the server loads at start. Who may do what:

* anyone (no key): the fund's public statement (balance, inflows, grants paid with projects);
* ``firm``: apply for a grant for itself (an SME), list its own applications;
* ``operator``: change the fund's parameters, deposit from the regulator's budget, apply on an
  SME's behalf, approve, reject, disburse, list every application.

Money travels as decimal CNY strings (``"50000.00"``), shares as percent strings (``"30"`` in,
``"30.00"`` out) and times as ISO-8601 with offset, requests and answers alike
(exchange/present.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..core import errors as E
from ..core.units import MAX_QTY, UnitError, percent_to_bps
from ..present import cny, present
from ..server.api import (
    ApiContext,
    CommandResult,
    Ident,
    Percent,
    Text,
    enum_param,
    ident_param,
    int_param,
    route,
)
from ..access.credentials import ROLE_FIRM, ROLE_OPERATOR
from ..server.protocol import MAX_PERIOD, Period, Price, ProtocolError
from .fund import (
    STATUSES,
    ApplyForGrant,
    ApproveGrant,
    ConfigureSmeFund,
    DisburseGrant,
    FundDeposit,
    RejectGrant,
    SmeFundModule,
    fund_module,
    fund_statement,
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
        description='% of each penalty paid to the fund, e.g. "30"'
    )
    auction_to_fund_pct: Percent = Field(
        description="% of allowance auction proceeds (applies once the exchange has auctions)"
    )
    sme_period_limit: Price | None = Field(
        description="CNY one SME may receive per period; null = no limit"
    )
    period_limit: Price | None = Field(
        description="CNY all SMEs together may receive per period; null = no limit"
    )


class FundDepositBody(_Body):
    amount: Price = Field(description="CNY from the regulator's budget")
    period: Period | None = Field(
        None, description="period the inflow counts to; default: the current compliance period"
    )
    ref: Text(500) = Field("", description="e.g. the budget line")


class GrantApplicationBody(_Body):
    period: Period = Field(description="compliance period the grant counts to, e.g. 2026")
    amount: Price = Field(description="CNY requested")
    project: Text(500, min_length=1) = Field(description="the abatement project")
    # within the core's quantity limit: abatement is summed per SME and period in statements
    verified_abatement_t: StrictInt = Field(
        gt=0, le=MAX_QTY, description="verified abatement, t CO2e"
    )
    sme: Ident | None = Field(
        None, description="operators only (and required for them): the SME applied for"
    )


class GrantRejectBody(_Body):
    reason: Text(500, min_length=1)


class EmptyBody(_Body):
    pass


# ------------------------------------------------------------------------------ responses
class _Out(BaseModel):
    # closed, so a statement field the models do not describe fails the tests, not the reader
    model_config = ConfigDict(extra="forbid")


# The statement as it leaves the server: in units for people (exchange/present.py), built
# from the core's fen, bps and ns by the suffix rules (``amount_fen`` -> ``amount``, a CNY
# string; ``share_bps`` -> ``share_pct``; ``applied_ts`` -> ``applied_at``, ISO-8601).
CNY = Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["50000.00"], description="CNY")
PCT = Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["30.00"], description="percent")


def _cny(description: str = "CNY") -> Any:  # a pydantic Field (typed Any by pydantic)
    return Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["50000.00"], description=description)


class FundParams(_Out):
    effective_seq: int = Field(description="applies to commands from this sequence number on")
    effective_at: str = Field(description="ISO-8601 with offset")
    penalty_to_fund_pct: str = PCT
    auction_to_fund_pct: str = PCT
    sme_period_limit: str | None = _cny("CNY one SME may receive per period; null: no limit")
    period_limit: str | None = _cny("CNY all SMEs together may receive per period; null: no limit")
    operator: str


class FundInflow(_Out):
    seq: int
    at: str = Field(description="ISO-8601 with offset")
    source: str = Field(description="penalty | auction | budget")
    period: int
    amount: str = _cny("into the fund, CNY")
    gross: str = _cny("the penalty / proceeds / deposit it is a share of, CNY")
    share_pct: str = PCT
    ref: str = Field(
        description="the budget line (budget); empty for a penalty: the paying "
        "firm is withheld from the public statement"
    )


class FundInflowPeriod(_Out):
    period: int
    total: str = CNY
    penalty: str = CNY
    auction: str = CNY
    budget: str = CNY


class FundInflows(_Out):
    total: str = CNY
    by_source: dict[str, str] = Field(description="CNY by source")
    by_period: list[FundInflowPeriod]
    entries: list[FundInflow]


class GrantApplication(_Out):
    application_id: int
    sme: str
    period: int
    amount: str = CNY
    project: str
    verified_abatement_t: int
    applicant: str = Field(description="the SME, or operator:<label> on its behalf")
    status: str = Field(description=" | ".join(STATUSES))
    applied_seq: int
    applied_at: str = Field(description="ISO-8601 with offset")
    decided_by: str | None
    decided_seq: int | None
    decided_at: str | None
    reason: str | None
    disbursed_seq: int | None
    disbursed_at: str | None


class SmeGrantPeriod(_Out):
    period: int
    amount: str = CNY
    limit: str | None = _cny("the limit per SME and period now, CNY")


class SmeGrants(_Out):
    sme: str
    total: str = CNY
    grants: int
    verified_abatement_t: int
    by_period: list[SmeGrantPeriod]


class GrantPeriod(_Out):
    period: int
    total: str = CNY
    grants: int
    verified_abatement_t: int
    limit: str | None = _cny("the limit per period now, CNY")


class FundGrants(_Out):
    total: str = CNY
    count: int
    by_sme: list[SmeGrants]
    by_period: list[GrantPeriod]
    paid: list[GrantApplication]


class BalanceCheck(_Out):
    inflows: str = CNY
    grants: str = CNY
    balance: str = CNY
    ok: bool = Field(description="balance = inflows - grants")


class FundStatement(_Out):
    """The SME fund's public statement (CNY strings, ISO-8601 times)."""

    account: str
    configured: bool
    period: int | None = Field(description="inflows and grants of this period only, or all")
    as_of_seq: int
    as_of_at: str = Field(description="ISO-8601 with offset")
    params: FundParams | None
    params_history: list[FundParams]
    balance: str = CNY
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
    app_id: int = ctx.params["application_id"]  # typed by the route (server.api.PATH_PARAMS)
    return app_id


def _who(ctx: ApiContext) -> str:
    who: str = ctx.cred.label or ctx.cred.key_id
    return who


PERIOD_QUERY = {"period": int_param(0, MAX_PERIOD, "this period only (default: all)")}


def _module(ctx: ApiContext) -> SmeFundModule:
    try:
        return fund_module(ctx.ex)
    except LookupError:
        raise ProtocolError(E.SME_FUND_NOT_CONFIGURED, "no SME fund module", 400) from None


# ------------------------------------------------------------------------------ routes
@route(
    "GET",
    BASE,
    tag=TAG,
    roles=None,
    response=FundStatement,
    query=PERIOD_QUERY,
    summary="The SME fund's public statement: balance, inflows, grants (?period=2026)",
)
async def statement(ctx: ApiContext, _b: object) -> dict[str, Any]:
    """Balance; inflows by source (penalty, auction, budget) and by period, each listed; grants
    paid by SME and by period with their projects; parameters and their history."""
    _module(ctx)
    st = fund_statement(ctx.ex, ctx.params["period"])
    # which firm paid a penalty is that firm's compliance record, not the fund's: the public
    # statement keeps the amount and withholds the payer (docs/PRIVACY.md)
    for e in st["inflows"]["entries"]:
        if e["source"] == "penalty":
            e["ref"] = ""
    return statement_for_people(st)


def statement_for_people(st: dict[str, Any]) -> dict[str, Any]:
    """The fund statement (:func:`~.fund.fund_statement`, in the core's units) as
    :class:`FundStatement` describes it: CNY strings, percent, ISO-8601 times."""
    # fen under keys without the suffix, which the suffix rules cannot see: converted here
    inflows = dict(st["inflows"])
    inflows["by_source"] = {k: cny(v) for k, v in inflows["by_source"].items()}
    inflows["by_period"] = [
        {k: (cny(v) if k in ("penalty", "auction", "budget") else v) for k, v in row.items()}
        for row in inflows["by_period"]
    ]
    out: dict[str, Any] = present({**st, "inflows": inflows})
    return out


@route(
    "PUT",
    BASE + "/params",
    body=FundParamsBody,
    response=CommandResult,
    tag=TAG,
    summary="Change the fund's shares and limits (journaled; applies to what follows)",
)
async def set_params(ctx: ApiContext, b: FundParamsBody) -> dict[str, Any]:
    """Never retroactive: penalties already collected and grants already paid stay as they
    are. BAD_PARAMETER for a share outside [0, 100 %]."""
    return await ctx.command(
        ConfigureSmeFund(
            penalty_to_fund_bps=_bps(b.penalty_to_fund_pct),
            auction_to_fund_bps=_bps(b.auction_to_fund_pct),
            sme_period_limit=b.sme_period_limit,
            period_limit=b.period_limit,
            operator=_who(ctx),
        )
    )


@route(
    "POST",
    BASE + "/deposits",
    body=FundDepositBody,
    response=CommandResult,
    tag=TAG,
    summary="Deposit into the fund from the regulator's budget",
)
async def deposit(ctx: ApiContext, b: FundDepositBody) -> dict[str, Any]:
    return await ctx.command(
        FundDeposit(amount=b.amount, period=b.period, ref=b.ref, operator=_who(ctx))
    )


@route(
    "POST",
    BASE + "/applications",
    body=GrantApplicationBody,
    response=CommandResult,
    tag=TAG,
    roles=(ROLE_FIRM, ROLE_OPERATOR),
    summary="Apply for a grant (an SME for itself, or an operator on its behalf)",
)
async def apply(ctx: ApiContext, b: GrantApplicationBody) -> dict[str, Any]:
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
    return await ctx.command(
        ApplyForGrant(
            sme=sme,
            period=b.period,
            amount=b.amount,
            project=b.project,
            verified_abatement_t=b.verified_abatement_t,
            applicant=applicant,
        )
    )


@route(
    "GET",
    BASE + "/applications",
    response=GrantApplications,
    tag=TAG,
    roles=(ROLE_FIRM, ROLE_OPERATOR),
    query={
        **PERIOD_QUERY,
        "status": enum_param(STATUSES, "only applications in it"),
        "sme": ident_param("only this SME's (a firm key: its own)"),
    },
    summary="Grant applications (?status=&period=&sme=); a firm sees its own",
)
async def applications(ctx: ApiContext, _b: object) -> dict[str, Any]:
    m = _module(ctx)
    sme = ctx.params["sme"]
    if ctx.cred.role == ROLE_FIRM:
        if sme not in (None, ctx.cred.firm_id):
            raise ProtocolError(E.FORBIDDEN, "a firm sees its own applications only", 403)
        sme = ctx.cred.firm_id
    status = ctx.params["status"]
    return {"applications": m.applications_of(sme, ctx.params["period"], status)}


@route(
    "POST",
    BASE + "/applications/{application_id}/approve",
    body=EmptyBody,
    response=CommandResult,
    tag=TAG,
    summary="Approve a pending grant application",
)
async def approve(ctx: ApiContext, _b: EmptyBody) -> dict[str, Any]:
    return await ctx.command(ApproveGrant(application_id=_app_id(ctx), operator=_who(ctx)))


@route(
    "POST",
    BASE + "/applications/{application_id}/reject",
    body=GrantRejectBody,
    response=CommandResult,
    tag=TAG,
    summary="Reject a pending or approved (unpaid) grant application, with a reason",
)
async def reject(ctx: ApiContext, b: GrantRejectBody) -> dict[str, Any]:
    return await ctx.command(
        RejectGrant(application_id=_app_id(ctx), reason=b.reason, operator=_who(ctx))
    )


@route(
    "POST",
    BASE + "/applications/{application_id}/disburse",
    body=EmptyBody,
    response=CommandResult,
    tag=TAG,
    summary="Pay an approved grant from the fund to the SME (within balance and limits)",
)
async def disburse(ctx: ApiContext, _b: EmptyBody) -> dict[str, Any]:
    """SME_FUND_INSUFFICIENT, GRANT_SME_LIMIT_EXCEEDED or GRANT_PERIOD_LIMIT_EXCEEDED when the
    grant would exceed the fund's balance, the limit per SME and period, or the period's."""
    return await ctx.command(DisburseGrant(application_id=_app_id(ctx), operator=_who(ctx)))
