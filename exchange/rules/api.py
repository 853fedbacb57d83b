"""Admin HTTP endpoints and websocket methods of the rules module (loaded by the server at
start: see :mod:`exchange.server.api`).

HTTP (``/api/v1``; ratios travel as decimal strings, e.g. ``"0.7"``, and are converted to the
core's ppm by :func:`exchange.core.units.ratio_to_ppm`; responses carry the decimal, written
by :mod:`exchange.present` like every answer of the server)::

    GET  /rules/params                      parameters now and their schedule by period
    POST /rules/params                      set_rules_params (effective from the next period)
    GET  /rules/benchmarks                  benchmarks with their history
    POST /rules/benchmarks                  set_benchmark
    POST /rules/assessments                 assess_firm (initial allocation factor)
    POST /rules/output-history              set_output_history
    POST /rules/input-use                   set_input_use (supply-chain data, responsibility)
    GET  /rules/chains                      supply chains with members' tiers, phi, weights
    GET  /rules/chains/{chain_id}           one chain
    GET  /rules/periods                     periods, their state, responsibility factors and
                                            how each period's total was fixed and shared
    POST /rules/allocation-runs             pre_allocate | close_period | settle_allocations |
                                            settle_sub_quotas for a period
    GET  /rules/allocations/{period}        every firm's allocation of a period
    GET  /rules/allocations/{period}/{firm_id}
    POST /rules/splits                      split_sub_quotas by a strategy
    POST /rules/splits/preview              the amounts a split would give, changing nothing
    GET  /rules/sub-quotas                  sub-quota lots with their terms and period-end
                                            settlement
    GET  /rules/sub-quotas/{firm_id}        the lots a firm received (an SME) or split out (a
                                            core firm), with their terms (firm: own only)
    GET  /rules/factors/{firm_id}           a firm's allocation-factor history (firm: own only)
    GET  /rules/responsibility              what every firm answers for at the latest close
                                            (its emissions + its inputs x their factors)
    GET  /rules/responsibility/{firm_id}    one firm's (firm: own only)

Websocket methods (role firm, for the session's own firm): ``factor_history`` and
``allocation`` (``{"period": 2026}``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from ..core import errors as E
from ..core.units import MAX_QTY, ppm_half_even, ratio_to_ppm
from ..present import present, ratio_text
from ..privacy import may_read_firm, min_contributors, require_firm_reader, suppress
from ..server.api import (
    ApiContext,
    CommandResult,
    Ident,
    Magnitude,
    Ratio,
    Ratio100,
    Text,
    int_param,
    route,
)
from ..server.appkeys import STATE_KEY
from ..access.credentials import ROLE_FIRM, ROLE_OPERATOR, ROLE_VERIFIER
from ..server.protocol import MAX_PERIOD, Period, ProtocolError, ws_method
from . import formulas as F
from .commands import (
    AssessFirm,
    ClosePeriod,
    PreAllocate,
    SetBenchmark,
    SetInputUse,
    SetOutputHistory,
    SetRulesParams,
    SettleAllocations,
    SettleSubQuotas,
    SplitSubQuotas,
)
from .config import _ratio
from .module import RulesModule

if TYPE_CHECKING:
    from ..core.exchange import Exchange

# A websocket method's session (exchange.server.gateway.Session): its firm is set once the
# method's role check has passed, which its type (firm_id: str | None) cannot say
WsSession = Any

READERS = (ROLE_OPERATOR, ROLE_VERIFIER, ROLE_FIRM)
TAG = "rules"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _dec(ppm: int | None) -> str | None:
    # fixed point, never an exponent: 1200 t is "1200", not "1.2E+3" (exchange.present)
    return ratio_text(ppm)


def _ppm_of(v: str, name: str, hi: str | None = None) -> int:
    try:
        _ratio(v, "0", hi)
    except ValueError as exc:
        raise ProtocolError(E.INVALID_PARAMS, f"{name}: {exc}", 422) from None
    return ratio_to_ppm(v)


def _rules(ctx_or_ex: ApiContext | Exchange) -> RulesModule:
    ex = ctx_or_ex.ex if isinstance(ctx_or_ex, ApiContext) else ctx_or_ex
    r = ex.modules.get("rules")
    if not isinstance(r, RulesModule):
        raise ProtocolError(E.NOT_FOUND, "the rules module is not loaded", 404)
    return r


def _params_view(p: dict[str, Any]) -> dict[str, Any]:
    return {
        k[:-4] if k.endswith("_ppm") else k: (_dec(v) if k.endswith("_ppm") else v)
        for k, v in sorted(p.items())
    }


def _int_path(ctx: ApiContext, name: str) -> int:
    v: int = ctx.params[name]  # typed and bounded by the route (server.api.PATH_PARAMS)
    return v


def _own(ctx: ApiContext, firm_id: str) -> None:
    """A firm's rules data is for the firm, its verifier and operators (exchange/privacy.py)."""
    require_firm_reader(ctx, firm_id)


def _readable(ctx: ApiContext, firm_ids: Iterable[str]) -> set[str]:
    """The firms of ``firm_ids`` whose rules data the caller may read."""
    return {f for f in firm_ids if may_read_firm(ctx.ex, ctx.cred, f)}


# ====================================================================== parameters


class ParamsBody(Body):
    pre_ratio: Ratio100 | None = None
    initial_phi: Ratio100 | None = None
    phi_min: Ratio100 | None = None
    phi_max: Ratio100 | None = None
    max_step: Ratio100 | None = None
    alpha_up: Ratio100 | None = None
    alpha_down: Ratio100 | None = None
    kappa: Ratio100 | None = None
    kappa_max: Ratio100 | None = None
    coupling_weights: Literal["edges", "tier"] | None = None
    w_tech: Ratio100 | None = None
    w_eff: Ratio100 | None = None
    w_hist: Ratio100 | None = None
    benchmark_step: Ratio100 | None = None
    max_tightening: Ratio100 | None = None
    allow_loosening: StrictBool | None = None
    max_loosening: Ratio100 | None = None
    instrument_pattern: Text(64) | None = None
    allocation_total: Literal["intensity", "absolute", "floating"] | None = Field(
        None,
        description="how the period's total is fixed: intensity (sum of benchmark x "
        "verified output), absolute (cap_tonnes) or floating (B x Y x phi per firm, the "
        "total moves with phi)",
    )
    cap_tonnes: StrictInt | None = Field(
        None, ge=0, le=MAX_QTY, description="the absolute cap, tonnes per period"
    )
    gain_share: Ratio | None = Field(
        None,
        description="share, in [0, 1], of the value of a core firm's coupling gain it "
        "pays the SMEs whose verified cuts made it, at the period close",
    )


@route("GET", "/rules/params", summary="Rules parameters now and by period", tag=TAG, roles=READERS)
async def get_params(ctx: ApiContext, body: object) -> dict[str, Any]:
    r = _rules(ctx)
    return {
        "next_period": r.next_effective_period(),
        "params": _params_view(r.params()),
        "schedule": [{"effective_from": p, "params": _params_view(v)} for p, v in r.schedule],
    }


@route(
    "POST",
    "/rules/params",
    summary="Change rules parameters from the next period",
    body=ParamsBody,
    response=CommandResult,
    tag=TAG,
)
async def set_params(ctx: ApiContext, b: ParamsBody) -> dict[str, Any]:
    """Journaled as ``set_rules_params``; applies from the period after the latest
    pre-allocated one, never to a period already open."""
    kw = {}
    for k, v in b.model_dump(exclude_none=True).items():
        if k in (
            "coupling_weights",
            "allow_loosening",
            "instrument_pattern",
            "allocation_total",
            "cap_tonnes",
        ):
            kw[k] = v
        else:
            kw[f"{k}_ppm"] = _ppm_of(v, k, "100")
    return await ctx.command(SetRulesParams(**kw))


# ====================================================================== benchmarks, firm data


class BenchmarkBody(Body):
    product: Ident
    intensity: Magnitude = Field(description="t CO2e per unit of output, decimal string")


@route("GET", "/rules/benchmarks", summary="Benchmarks with their history", tag=TAG, roles=READERS)
async def get_benchmarks(ctx: ApiContext, body: object) -> dict[str, Any]:
    r = _rules(ctx)
    out = {
        p: {"intensity": _dec(v), "intensity_ppm": v, "history": r.benchmark_history(p)}
        for p, v in sorted(r.benchmarks.items())
    }
    if ctx.cred.role != ROLE_OPERATOR:
        _suppress_benchmark_inputs(ctx, out)
    return out


def _suppress_benchmark_inputs(ctx: ApiContext, out: dict[str, Any]) -> None:
    """A gradient step's inputs are a statistic of the product's verified firms (their
    weighted intensity and output): below ``[privacy] min_contributors`` firms, readers other
    than operators get the step (the benchmark is public) without its inputs and terms."""
    k = min_contributors(ctx.request.app[STATE_KEY].settings)
    for view in out.values():
        for h in view["history"]:
            inputs = h.get("inputs")
            if not inputs:
                continue
            g = suppress(
                {0: {"contributors": int(inputs.get("firms", 0))}}, k, complementary=False
            )[0]
            if g["suppressed"]:
                h["inputs"] = h["terms"] = {"suppressed": True}


@route(
    "POST",
    "/rules/benchmarks",
    summary="Set a product's benchmark",
    body=BenchmarkBody,
    response=CommandResult,
    tag=TAG,
)
async def set_benchmark(ctx: ApiContext, b: BenchmarkBody) -> dict[str, Any]:
    return await ctx.command(
        SetBenchmark(product=b.product, intensity_ppm=_ppm_of(b.intensity, "intensity"))
    )


class AssessmentBody(Body):
    firm_id: Ident
    technology: Ratio = Field(description="technology level in [0, 1]")
    efficiency: Ratio = Field(description="energy efficiency in [0, 1]")
    hist_intensity: Magnitude = Field(description="historical t CO2e per unit of output")


@route(
    "POST",
    "/rules/assessments",
    summary="Assess a firm: initial allocation factor",
    body=AssessmentBody,
    response=CommandResult,
    tag=TAG,
)
async def assess(ctx: ApiContext, b: AssessmentBody) -> dict[str, Any]:
    return await ctx.command(
        AssessFirm(
            firm_id=b.firm_id,
            technology_ppm=_ppm_of(b.technology, "technology", "1"),
            efficiency_ppm=_ppm_of(b.efficiency, "efficiency", "1"),
            hist_intensity_ppm=_ppm_of(b.hist_intensity, "hist_intensity"),
        )
    )


class HistoryRow(Body):
    period: Period
    output: StrictInt = Field(ge=0, le=MAX_QTY)
    emissions: StrictInt | None = Field(None, ge=0, le=MAX_QTY)


class OutputHistoryBody(Body):
    firm_id: Ident
    rows: list[HistoryRow] = Field(min_length=1)


@route(
    "POST",
    "/rules/output-history",
    summary="Set a firm's historical output",
    body=OutputHistoryBody,
    response=CommandResult,
    tag=TAG,
)
async def output_history(ctx: ApiContext, b: OutputHistoryBody) -> dict[str, Any]:
    return await ctx.command(
        SetOutputHistory(
            firm_id=b.firm_id, rows=tuple((r.period, r.output, r.emissions) for r in b.rows)
        )
    )


class InputRow(Body):
    product: Ident
    qty: StrictInt = Field(ge=0, le=MAX_QTY)


class InputUseBody(Body):
    firm_id: Ident
    period: Period
    inputs: list[InputRow]


@route(
    "POST",
    "/rules/input-use",
    summary="Set a firm's input use (responsibility factors)",
    body=InputUseBody,
    response=CommandResult,
    tag=TAG,
)
async def input_use(ctx: ApiContext, b: InputUseBody) -> dict[str, Any]:
    return await ctx.command(
        SetInputUse(
            firm_id=b.firm_id, period=b.period, inputs=tuple((i.product, i.qty) for i in b.inputs)
        )
    )


# ====================================================================== chains


def _chain_view(ex: Exchange, rules: RulesModule, chain_id: str) -> dict[str, Any]:
    ch = ex.chains[chain_id]
    p = rules.params()
    members = []
    for firm_id, tier in sorted(ch["members"].items(), key=lambda x: (x[1], x[0])):
        phi = rules.phi.get(firm_id, p["initial_phi_ppm"])
        members.append(
            {
                "firm_id": firm_id,
                "tier": tier,
                "size_class": ex.accounts[firm_id].size_class,
                "product": ex.accounts[firm_id].product,
                "phi": _dec(phi),
                "phi_ppm": phi,
                "coupling_weights": {
                    j: _dec(ppm_half_even(w))
                    for j, w in rules._partners(firm_id, p["coupling_weights"])
                },
            }
        )
    return {
        "chain_id": chain_id,
        "core_firm": ch["core_firm"],
        "members": members,
        "edges": [
            {"supplier": s, "customer": c, "weight": _dec(w), "weight_ppm": w}
            for s, c, w in ch["edges"]
        ],
        "coupling_weights_mode": p["coupling_weights"],
    }


@route(
    "GET",
    "/rules/chains",
    summary="Supply chains with tiers, factors and weights",
    tag=TAG,
    roles=READERS,
)
async def get_chains(ctx: ApiContext, body: object) -> dict[str, Any]:
    """A firm sees the chains it belongs to; a verifier those of the firms it verified."""
    r = _rules(ctx)
    return {
        "chains": [
            _members_readable(ctx, _chain_view(ctx.ex, r, c))
            for c in sorted(ctx.ex.chains)
            if _chain_reader(ctx, c)
        ]
    }


def _chain_reader(ctx: ApiContext, chain_id: str) -> bool:
    """A chain's members, tiers and edge weights (transaction shares) are its members'
    business: readable by operators and by whoever may read one of its members."""
    return bool(_readable(ctx, ctx.ex.chains[chain_id]["members"]))


def _members_readable(ctx: ApiContext, view: dict[str, Any]) -> dict[str, Any]:
    """A chain's structure is shared with its readers; a member's allocation factor is that
    firm's record: shown only where the caller may read the firm (exchange/privacy.py)."""
    for m in view["members"]:
        if not may_read_firm(ctx.ex, ctx.cred, m["firm_id"]):
            m["phi"] = m["phi_ppm"] = None
    return view


@route("GET", "/rules/chains/{chain_id}", summary="One supply chain", tag=TAG, roles=READERS)
async def get_chain(ctx: ApiContext, body: object) -> dict[str, Any]:
    r = _rules(ctx)
    cid = ctx.path["chain_id"]
    if cid not in ctx.ex.chains:
        raise ProtocolError(E.UNKNOWN_CHAIN, f"unknown supply chain {cid!r}", 404)
    if not _chain_reader(ctx, cid):
        raise ProtocolError(
            E.FORBIDDEN, "a supply chain is for its members, their verifiers and operators", 403
        )
    return _members_readable(ctx, _chain_view(ctx.ex, r, cid))


# ====================================================================== periods, allocation runs


class AllocationRunBody(Body):
    period: Period
    step: Literal["pre_allocate", "close_period", "settle_allocations", "settle_sub_quotas"]


_STEPS = {
    "pre_allocate": PreAllocate,
    "close_period": ClosePeriod,
    "settle_allocations": SettleAllocations,
    "settle_sub_quotas": SettleSubQuotas,
}


def _totals_for_people(t: dict[str, Any] | None) -> dict[str, Any] | None:
    """A period's totals with each exact scale ``[num, den]`` as ``*_exact``, so the answer
    shows it once, as a decimal of six places (half to even, exchange/present.py), where the
    core keeps the pair and a ppm display value."""
    if t is None:
        return None
    out = dict(t)
    for k in ("pre_scale", "scale"):
        pair = out.pop(k, None)
        if pair is not None:
            out.pop(f"{k}_ppm", None)
            out[f"{k}_exact"] = f"{pair[0]}/{pair[1]}"
    return out


@route(
    "GET",
    "/rules/periods",
    summary="Periods, their state and responsibility factors",
    tag=TAG,
    roles=READERS,
)
async def get_periods(ctx: ApiContext, body: object) -> dict[str, Any]:
    r = _rules(ctx)
    out = [
        {
            "period": p,
            "state": s,
            "instrument": r.instrument_for(p),
            "responsibility": {k: _dec(v) for k, v in r.resp.get(p, {}).items()},
            "allocation": _totals_for_people(r.period_totals(p)),
        }
        for p, s in sorted(r.periods.items())
    ]
    if ctx.cred.role != ROLE_OPERATOR:
        for row in out:
            _suppress_period_statistics(ctx, r, row)
    return {"periods": out}


def _suppress_period_statistics(ctx: ApiContext, r: RulesModule, row: dict[str, Any]) -> None:
    """A product's responsibility factor is a statistic of its verified producers, and a
    period's totals one of its firms: each is shown to readers other than operators only with
    at least ``[privacy] min_contributors`` contributing firms (exchange/privacy.py)."""
    k = min_contributors(ctx.request.app[STATE_KEY].settings)
    p = row["period"]
    accounts = ctx.ex.accounts
    in_period = [f for f, d in r.allocs.items() if p in d]
    verified = [f for f in in_period if r.allocs[f][p].get("verified")]
    groups = {
        prod: {"value": v, "contributors": [f for f in verified if accounts[f].product == prod]}
        for prod, v in row["responsibility"].items()
    }
    row["responsibility"] = {
        prod: g["value"] if not g["suppressed"] else {"suppressed": True}
        for prod, g in suppress(groups, k).items()
    }
    totals = row["allocation"]
    if totals is not None:
        n = totals.get("firms", len(in_period))
        if suppress({0: {"contributors": int(n)}}, k, complementary=False)[0]["suppressed"]:
            row["allocation"] = {
                "allocation_total": totals.get("allocation_total"),
                "suppressed": True,
            }


@route(
    "POST",
    "/rules/allocation-runs",
    summary="Run an allocation step for a period",
    body=AllocationRunBody,
    response=CommandResult,
    tag=TAG,
)
async def allocation_run(ctx: ApiContext, b: AllocationRunBody) -> dict[str, Any]:
    """``pre_allocate`` opens the period; ``close_period`` (after all verifications) updates
    factors and benchmarks; ``settle_allocations`` applies late deductions;
    ``settle_sub_quotas`` reverts or banks sub-quota surplus (after the compliance deadline)."""
    return await ctx.command(_STEPS[b.step](period=b.period))


@route(
    "GET",
    "/rules/allocations/{period}",
    summary="Every firm's allocation of a period",
    tag=TAG,
    roles=(ROLE_OPERATOR, ROLE_VERIFIER),
)
async def get_allocations(ctx: ApiContext, body: object) -> dict[str, Any]:
    r = _rules(ctx)
    period = _int_path(ctx, "period")
    firms = sorted(_readable(ctx, (f for f, d in r.allocs.items() if period in d)))
    return {"period": period, "allocations": [r.allocation(f, period) for f in firms]}


@route(
    "GET",
    "/rules/allocations/{period}/{firm_id}",
    summary="A firm's allocation",
    tag=TAG,
    roles=READERS,
)
async def get_allocation(ctx: ApiContext, body: object) -> dict[str, Any]:
    r = _rules(ctx)
    firm_id = ctx.path["firm_id"]
    _own(ctx, firm_id)
    if firm_id not in ctx.ex.accounts:
        raise ProtocolError(E.UNKNOWN_ACCOUNT, f"unknown firm {firm_id!r}", 404)
    return r.allocation(firm_id, _int_path(ctx, "period"))


# ====================================================================== splits, sub-quotas


class SplitBody(Body):
    parent: Ident
    instrument: Ident
    amount: StrictInt = Field(gt=0, le=MAX_QTY)
    smes: list[Ident] = Field(min_length=1, max_length=1_000)
    strategy: Literal["equal", "output", "baseline_emissions", "responsibility", "abatement"] = (
        "equal"
    )
    revenue_share: Ratio = Field("0.5", description="SME's share of sale proceeds, [0, 1]")
    surplus_rule: Literal["revert", "bank"] = "revert"
    shortfall_rule: Literal["sme", "parent"] = "sme"
    chain_id: Ident | None = None

    @field_validator("revenue_share")
    @classmethod
    def _share(cls, v: str) -> str:
        return _ratio(v, "0", "1")

    def command(self) -> SplitSubQuotas:
        return SplitSubQuotas(
            parent=self.parent,
            instrument=self.instrument,
            amount=self.amount,
            smes=tuple(self.smes),
            strategy=self.strategy,
            revenue_share_ppm=ratio_to_ppm(self.revenue_share),
            surplus_rule=self.surplus_rule,
            shortfall_rule=self.shortfall_rule,
            chain_id=self.chain_id,
        )


@route(
    "POST",
    "/rules/splits",
    summary="Split sub-quotas to SMEs by a strategy",
    body=SplitBody,
    response=CommandResult,
    tag=TAG,
)
async def split(ctx: ApiContext, b: SplitBody) -> dict[str, Any]:
    return await ctx.command(b.command())


@route(
    "POST",
    "/rules/splits/preview",
    summary="Amounts a split would give (no change)",
    body=SplitBody,
    tag=TAG,
)
async def split_preview(ctx: ApiContext, b: SplitBody) -> dict[str, Any]:
    r = _rules(ctx)
    for s in b.smes:
        if s not in ctx.ex.accounts:
            raise ProtocolError(E.UNKNOWN_ACCOUNT, f"unknown firm {s!r}", 404)
    weights = [r.split_weight(s, b.strategy) for s in b.smes]
    try:
        parts = F.split_amounts(b.amount, weights)
    except ZeroDivisionError:
        raise ProtocolError(E.NO_SPLIT_BASIS, "every weight is zero") from None
    return {
        "strategy": b.strategy,
        "amount": b.amount,
        "parts": [
            {"sme": s, "qty": q, "weight": str(Decimal(w.numerator) / w.denominator)}
            for s, q, w in zip(b.smes, parts, weights)
        ],
    }


class _Out(BaseModel):
    # closed, so a field the view adds without describing it fails the tests, not the reader
    model_config = ConfigDict(extra="forbid")


class SubQuotaSettlement(_Out):
    """What ``settle_sub_quotas`` did with the lot at its period's end."""

    period: int
    surplus: int = Field(description="units of the lot still free with the SME, t")
    action: Literal["revert", "bank"]
    moved: int = Field(description="t moved back to the parent (revert)")
    reserved_left: int = Field(description="t of the lot in resting sell orders, left as is")


class SubQuotaLot(_Out):
    """A sub-quota lot with its terms (docs/RULES.md section 6)."""

    lot_id: int
    period: int | None = Field(description="the allowance's vintage (compliance period)")
    instrument: str
    parent: str = Field(description="the core firm it was split from")
    sme: str = Field(description="the SME it was split to")
    chain_id: str | None = Field(description="the supply chain the split was made in")
    granted: int = Field(description="t split to the SME")
    held: int = Field(
        description="t of the lot the SME still holds (sales, surrenders and a "
        "reverted surplus leave it)"
    )
    sold: int = Field(description="t of the lot the SME sold")
    revenue_share: str = Field(
        description="the SME's share of the net sale proceeds, e.g. "
        '"0.7"; the parent gets the rest'
    )
    surplus_rule: Literal["revert", "bank"] = Field(
        description="at the period's end the free rest reverts to the parent, or stays banked "
        "with the SME"
    )
    shortfall_rule: Literal["sme", "parent"] = Field(
        description="who covers the SME's shortfall at the deadline beyond the lot"
    )
    sme_proceeds: str = Field(
        pattern=r"^-?[0-9]+\.[0-9]{2}$",
        examples=["1234.50"],
        description="CNY the SME kept from sales of the lot",
    )
    parent_proceeds: str = Field(
        pattern=r"^-?[0-9]+\.[0-9]{2}$",
        examples=["529.07"],
        description="CNY the parent received from sales of the lot",
    )
    created_seq: int
    settlement: SubQuotaSettlement | None = Field(
        description="the period-end settlement, once settle_sub_quotas ran"
    )
    compliance: dict[str, int] = Field(
        description="what compliance did with the lot: surrendered, covered_by_parent, "
        "reverted, banked (t), settled_period"
    )


class SubQuotaLots(_Out):
    sub_quotas: list[SubQuotaLot]


class FirmSubQuotas(_Out):
    firm_id: str
    size_class: str
    received: list[SubQuotaLot] = Field(description="lots split to this firm (an SME)")
    split_out: list[SubQuotaLot] = Field(description="lots this firm split to SMEs")


def sub_quota_view(ex: Exchange, lot_id: int) -> dict[str, Any]:
    """One lot as :class:`SubQuotaLot`: its figures, its terms, and what the period end
    (rules: settlement; compliance: surrenders, cover by the parent) did with it."""
    lot = ex.sub_quotas[lot_id]
    ins = ex.instruments.get(lot["instrument"])
    rules = ex.modules.get("rules")
    comp = ex.modules.get("compliance")
    settled = getattr(rules, "settled_lots", {}).get(lot_id)
    use = getattr(comp, "sub_quota_use", {}).get(lot_id, {})
    return {
        "lot_id": lot_id,
        "period": getattr(ins, "vintage", None),
        "instrument": lot["instrument"],
        "parent": lot["parent"],
        "sme": lot["sme"],
        "chain_id": lot.get("chain_id"),
        "granted": lot["granted"],
        "held": lot["held"],
        "sold": lot["sold"],
        "revenue_share": _dec(lot["revenue_share_ppm"]),
        "surplus_rule": lot["surplus_rule"],
        "shortfall_rule": lot["shortfall_rule"],
        "sme_proceeds_fen": lot["sme_proceeds"],
        "parent_proceeds_fen": lot["parent_proceeds"],
        "created_seq": lot["created_seq"],
        "settlement": dict(settled) if settled is not None else None,
        "compliance": dict(sorted(use.items())),
    }


@route(
    "GET",
    "/rules/sub-quotas",
    summary="Sub-quota lots and their period-end settlement",
    tag=TAG,
    roles=(ROLE_OPERATOR, ROLE_VERIFIER),
    response=SubQuotaLots,
)
async def get_sub_quotas(ctx: ApiContext, body: object) -> dict[str, Any]:
    _rules(ctx)
    lots = [sub_quota_view(ctx.ex, k) for k in sorted(ctx.ex.sub_quotas)]
    mine = _readable(ctx, {v["sme"] for v in lots} | {v["parent"] for v in lots})
    return {"sub_quotas": [v for v in lots if v["sme"] in mine or v["parent"] in mine]}


@route(
    "GET",
    "/rules/sub-quotas/{firm_id}",
    tag=TAG,
    roles=READERS,
    response=FirmSubQuotas,
    query={"period": int_param(0, MAX_PERIOD, "lots of this period's allowance only")},
    summary="The sub-quotas a firm received (an SME) or split out (a core firm), with terms",
)
async def get_firm_sub_quotas(ctx: ApiContext, body: object) -> dict[str, Any]:
    """``?period=P``: lots of period P's allowance only. A firm key reads only its own."""
    firm_id = ctx.path["firm_id"]
    _own(ctx, firm_id)
    acct = ctx.ex.accounts.get(firm_id)
    if acct is None or acct.system:
        raise ProtocolError(E.UNKNOWN_ACCOUNT, f"unknown firm {firm_id[:64]!r}", 404)
    period = ctx.params["period"]
    lots = [sub_quota_view(ctx.ex, k) for k in sorted(ctx.ex.sub_quotas)]
    lots = [v for v in lots if period is None or v["period"] == period]
    return {
        "firm_id": firm_id,
        "size_class": acct.size_class,
        "received": [v for v in lots if v["sme"] == firm_id],
        "split_out": [v for v in lots if v["parent"] == firm_id],
    }


# ====================================================================== factor history


@route(
    "GET",
    "/rules/factors/{firm_id}",
    summary="A firm's allocation-factor history",
    tag=TAG,
    roles=READERS,
)
async def get_factors(ctx: ApiContext, body: object) -> dict[str, Any]:
    """Every change of the factor with its inputs and terms (docs/RULES.md lists the keys).
    A firm key reads only its own."""
    firm_id = ctx.path["firm_id"]
    _own(ctx, firm_id)
    if firm_id not in ctx.ex.accounts:
        raise ProtocolError(E.UNKNOWN_ACCOUNT, f"unknown firm {firm_id!r}", 404)
    return factor_view(_rules(ctx), firm_id)


def factor_view(rules: RulesModule, firm_id: str) -> dict[str, Any]:
    phi = rules.phi.get(firm_id, rules.params()["initial_phi_ppm"])
    return {
        "firm_id": firm_id,
        "phi": _dec(phi),
        "phi_ppm": phi,
        "history": rules.factor_history(firm_id),
    }


# ====================================================================== responsibility


def responsibility_view(rules: RulesModule, firm_id: str) -> dict[str, Any]:
    """``responsibility_t`` = emissions + sum of inputs x their products' responsibility factors
    (t CO2, decimal string); a final consumer (no output) bears only the latter."""
    fr = rules.responsibility(firm_id)
    if fr is None:
        return {"firm_id": firm_id, "period": None, "responsibility_t": None}
    out = dict(fr)
    for k in ("responsibility", "embodied", "intensity"):
        # once, as the decimal: the ppm figure would show the same number a second time
        out[f"{k}_t" if k != "intensity" else k] = _dec(out.pop(f"{k}_ppm"))
    return out


@route(
    "GET",
    "/rules/responsibility",
    summary="What every firm answers for (t CO2)",
    tag=TAG,
    roles=(ROLE_OPERATOR, ROLE_VERIFIER),
)
async def get_responsibilities(ctx: ApiContext, body: object) -> dict[str, Any]:
    r = _rules(ctx)
    return {"firms": [responsibility_view(r, f) for f in sorted(_readable(ctx, r.firm_resp))]}


@route(
    "GET",
    "/rules/responsibility/{firm_id}",
    summary="What a firm answers for (t CO2)",
    tag=TAG,
    roles=READERS,
)
async def get_responsibility(ctx: ApiContext, body: object) -> dict[str, Any]:
    firm_id = ctx.path["firm_id"]
    _own(ctx, firm_id)
    if firm_id not in ctx.ex.accounts:
        raise ProtocolError(E.UNKNOWN_ACCOUNT, f"unknown firm {firm_id!r}", 404)
    return responsibility_view(_rules(ctx), firm_id)


class NoParams(Body):
    pass


class PeriodParams(Body):
    period: Period


@ws_method("factor_history", NoParams, roles=(ROLE_FIRM,))
def ws_factor_history(session: WsSession, p: NoParams) -> dict[str, Any]:
    """The session firm's allocation factor and every change with its inputs and terms."""
    out: dict[str, Any] = present(factor_view(_rules(session.gw.ex), session.firm_id))
    return out


@ws_method("allocation", PeriodParams, roles=(ROLE_FIRM,))
def ws_allocation(session: WsSession, p: PeriodParams) -> dict[str, Any]:
    """The session firm's allocation of a period (pre-allocation, true-up, deduction, total)."""
    out: dict[str, Any] = present(_rules(session.gw.ex).allocation(session.firm_id, p.period))
    return out
