"""Commands of the rules module. Like every command they go through the journal; ratios travel
as integer parts per million (``*_ppm``, 1.0 = 1,000,000), intensities as ppm of a tonne of
CO2e per unit of output. :mod:`exchange.rules.config` converts the human-facing decimals."""

from __future__ import annotations

from typing import Any

from ..core.commands import Command, command

# names of the parameters set by set_rules_params, with their types (see RulesParams)
PARAM_FIELDS = (
    "pre_ratio_ppm",
    "initial_phi_ppm",
    "phi_min_ppm",
    "phi_max_ppm",
    "max_step_ppm",
    "alpha_up_ppm",
    "alpha_down_ppm",
    "kappa_ppm",
    "kappa_max_ppm",
    "coupling_weights",
    "w_tech_ppm",
    "w_eff_ppm",
    "w_hist_ppm",
    "benchmark_step_ppm",
    "max_tightening_ppm",
    "allow_loosening",
    "max_loosening_ppm",
    "instrument_pattern",
    "allocation_total",
    "cap_tonnes",
    "gain_share_ppm",
)


@command("set_rules_params")
class SetRulesParams(Command):
    """Change rules parameters. ``None`` leaves one unchanged. Effective from the period after
    the latest pre-allocated one (immediately when no period is open yet): never retroactive."""

    pre_ratio_ppm: int | None = None  # pre-allocation share of the expected allocation
    initial_phi_ppm: int | None = None  # phi of a firm never assessed; base of the assessment
    phi_min_ppm: int | None = None
    phi_max_ppm: int | None = None
    max_step_ppm: int | None = None  # largest relative change of phi per period
    alpha_up_ppm: int | None = None  # gain on a positive gap
    alpha_down_ppm: int | None = None  # loss on a negative gap
    kappa_ppm: int | None = None  # supply-chain coupling strength
    kappa_max_ppm: int | None = None  # cap of the coupling term
    coupling_weights: str | None = None  # "edges" | "tier"
    w_tech_ppm: int | None = None  # assessment weight: technology level
    w_eff_ppm: int | None = None  # assessment weight: energy efficiency
    w_hist_ppm: int | None = None  # assessment weight: historical intensity vs benchmark
    benchmark_step_ppm: int | None = None  # gradient step size eta
    max_tightening_ppm: int | None = None  # largest benchmark cut per period (relative)
    allow_loosening: bool | None = None
    max_loosening_ppm: int | None = None
    instrument_pattern: str | None = None  # allowance of period P, e.g. "CEA-{period}"
    # how the period's total is fixed: "intensity" (sum B x Y) | "absolute" (cap_tonnes) |
    # "floating" (no normalisation: the total moves with phi)
    allocation_total: str | None = None
    cap_tonnes: int | None = None  # the absolute cap, tonnes per period
    # share of the value of a core firm's coupling gain it pays to the SMEs whose verified
    # cuts made it, at the period close (docs/RULES.md, "Gains shared along the chain")
    gain_share_ppm: int | None = None


@command("set_benchmark")
class SetBenchmark(Command):
    """Set a product's benchmark intensity (ppm t CO2e per unit). Used by allocations created
    after it; allocations already pre-allocated keep the benchmark they were computed with."""

    product: str
    intensity_ppm: int


@command("assess_firm")
class AssessFirm(Command):
    """Initial allocation factor from an assessment (technology level and energy efficiency as
    ratios in [0, 1], historical intensity in ppm t/unit)."""

    firm_id: str
    technology_ppm: int
    efficiency_ppm: int
    hist_intensity_ppm: int


@command("set_output_history")
class SetOutputHistory(Command):
    """Historical (pre-scheme) output, optionally emissions, of a firm: the base of the first
    pre-allocation and of the split strategies. rows: ((period, output[, emissions]), ...)."""

    firm_id: str
    rows: tuple[Any, ...] = ()


@command("set_input_use")
class SetInputUse(Command):
    """Supply-chain data for the responsibility factors: the quantities of input products a
    firm used in a period. inputs: ((product, quantity), ...)."""

    firm_id: str
    period: int
    inputs: tuple[Any, ...] = ()


@command("pre_allocate")
class PreAllocate(Command):
    """Open a period: issue every covered firm its pre-allocation, its share (by
    ``B x last verified output x phi``) of ``pre_ratio`` x the period's expected total."""

    period: int


@command("record_verified")
class RecordVerified(Command):
    """Verified emissions and output, for markets without the compliance module (simulations,
    tests). With compliance loaded, verification goes through compliance, which calls
    ``RulesModule.on_verified``."""

    firm_id: str
    period: int
    emissions: int
    output: int


@command("close_period")
class ClosePeriod(Command):
    """After all verifications of a period: the verified firms' allocations normalised to
    the period's total (with the period's phi), responsibility factors, allocation-factor
    updates with supply-chain coupling, benchmark gradient step, pending deductions settled."""

    period: int


@command("settle_allocations")
class SettleAllocations(Command):
    """Bring every firm's issued allocation of ``period`` to its current total (applies
    deductions recorded after the period was closed)."""

    period: int


@command("split_sub_quotas")
class SplitSubQuotas(Command):
    """Split ``amount`` tonnes of the parent's free ``instrument`` holding into sub-quotas for
    ``smes`` by a strategy: equal | output | baseline_emissions | responsibility | abatement.
    Every SME gets the same terms. All or nothing."""

    parent: str
    instrument: str
    amount: int
    smes: tuple[Any, ...] = ()
    strategy: str = "equal"
    revenue_share_ppm: int = 500_000
    surplus_rule: str = "revert"
    shortfall_rule: str = "sme"
    chain_id: str | None = None


@command("settle_sub_quotas")
class SettleSubQuotas(Command):
    """Period end for the sub-quotas of period ``period``'s allowance (run after the
    compliance deadline): unsold free surplus reverts to the parent or is banked with the SME,
    per each sub-quota's terms."""

    period: int
