"""Events of the rules module. Ratios are integer ppm; the ``terms``/``inputs`` dicts of a
factor change are the explanation a firm reads (docs/RULES.md lists every key)."""

from __future__ import annotations

from typing import Any

from ..core.events import event


@event("rules_params_set")
class RulesParamsSet:
    effective_from: int  # first period the parameters apply to (0 = all)
    params: dict[str, Any]  # the full parameter set from that period on


@event("benchmark_set")
class BenchmarkSet:
    product: str
    intensity_ppm: int
    previous_ppm: int | None


@event("benchmark_updated")
class BenchmarkUpdated:
    """The gradient step after a period: inputs (weighted intensity, outputs) and terms."""

    product: str
    period: int
    before_ppm: int
    after_ppm: int
    inputs: dict[str, Any]
    terms: dict[str, Any]


@event("factor_changed")
class FactorChanged:
    """A firm's allocation factor moved (``reason`` assessment | verification)."""

    firm_id: str
    period: int
    reason: str
    phi_before_ppm: int
    phi_after_ppm: int
    inputs: dict[str, Any]
    terms: dict[str, Any]


@event("output_history_set")
class OutputHistorySet:
    firm_id: str
    periods: tuple[Any, ...]


@event("input_use_set")
class InputUseSet:
    firm_id: str
    period: int
    inputs: tuple[Any, ...]


@event("verified_recorded")
class VerifiedRecorded:
    firm_id: str
    period: int
    emissions: int
    output: int


@event("allocation_changed")
class AllocationChanged:
    """One allocation step of a firm and period (``kind`` pre_allocation | true_up |
    normalisation | deduction). ``issued`` units were issued (or, negative, clawed back from
    free holdings); ``to_obligation`` could not be clawed back and was added to the
    compliance obligation."""

    firm_id: str
    period: int
    kind: str
    instrument: str
    issued: int
    to_obligation: int
    allocation: dict[str, Any]  # the firm's allocation record after the step


@event("allocation_normalised")
class AllocationNormalised:
    """The close of a period shared its total among the verified firms in proportion to
    B x Y_verified x phi. ``total`` is the period's total for those firms (intensity: their
    sum B x Y; absolute: the cap less what unverified firms keep), ``raw_total`` the sum of
    B x Y x phi floored, ``scale_ppm`` = total / raw_total in ppm (display only; the shares
    are exact, largest remainder). One ``allocation_changed`` of kind ``normalisation``
    follows per firm whose allocation moved."""

    period: int
    mode: str  # the period's allocation_total: "intensity" | "absolute"
    total: int  # tonnes shared (before deductions)
    raw_total: int  # floor(sum B x Y_verified x phi), tonnes
    scale_ppm: int
    firms: int  # verified firms sharing the total


@event("period_opened")
class PeriodOpened:
    period: int
    instrument: str
    firms: int
    pre_allocated: int  # tonnes


@event("period_closed")
class PeriodClosed:
    period: int
    factors_updated: int
    benchmarks_updated: int
    unverified: tuple[Any, ...]  # covered firms without verified data: phi unchanged
    responsibility: dict[str, Any]  # product -> responsibility factor (ppm t/unit)
    responsibility_iterations: int


@event("sub_quotas_split")
class SubQuotasSplit:
    parent: str
    instrument: str
    strategy: str
    amount: int
    parts: tuple[Any, ...]  # ((sme, qty, weight_text, lot_id), ...); lot_id 0 for a zero part


@event("sub_quota_settled")
class SubQuotaSettled:
    lot_id: int
    period: int
    sme: str
    parent: str
    surplus: int  # free units of the lot left with the SME at period end
    action: str  # "revert" | "bank"
    moved: int  # units moved back to the parent
    reserved_left: int  # units of the lot in resting sell orders, left untouched


@event("gain_shared")
class GainShared:
    """A core firm paid an SME its share of the value of the coupling gain that the SME's
    verified cut helped make (at the period close; the cash moves in a Posting beside it)."""

    period: int
    core: str
    sme: str
    amount: int  # fen paid
    gain_t_ppm: int  # the core firm's coupling gain, ppm of a tonne (c x phi x B x Y)
    price: int  # fen per tonne it was valued at (the period's VWAP, else the reference)
    share_ppm: int  # gain_share in force
    weight_ppm: int  # this SME's part of the SMEs' w x g
