"""Compliance commands and events: MRV, surrender, offset caps, deadline processing.

All quantities are whole tonnes (CO2e, or tce for fuel), all money integer fen, all rates integer
basis points (caps) or parts per million (coefficients, multiples); the conversions from the
human-facing config and API happen in :mod:`exchange.core.units` only.

Pairs travel as tuples of tuples (``((fuel, tce), ...)``) so a command round-trips through the
journal's JSON unchanged.
"""

from __future__ import annotations

from typing import Any

from ..core.commands import Command, command
from ..core.events import event
from .mrv import DEFAULT_COVERED, DEFAULT_GRID_FACTOR_PPM


# =========================================================================== commands
@command("configure_compliance")
class ConfigureCompliance(Command):
    """Market-wide compliance parameters (genesis; a later one replaces them for what follows)."""

    carbon_coefficients_ppm: tuple[Any, ...] = ()  # ((fuel, t C per tce x 1e6), ...)
    co2_per_c: tuple[Any, ...] = (44, 12)  # (numerator, denominator): t CO2 per t C
    offset_types: tuple[Any, ...] = ("CCER", "PHCER")
    banking: bool = True
    penalty_mode: str = "both"  # fixed | multiple | both | greater
    penalty_fixed_fine: int = 0  # fen per non-compliant firm-period
    penalty_multiple_ppm: int = 0  # x period average allowance price x shortfall tonnes
    late_fine: int = 0  # fen per late firm-period
    penalty_fallback_price: int = 0  # fen/t when the period had no allowance trade
    # appended later, with defaults, so older journals replay unchanged
    grid_factor_ppm: int = DEFAULT_GRID_FACTOR_PPM  # t CO2 per MWh of electricity x 1e6
    covered_categories: tuple[Any, ...] = DEFAULT_COVERED  # categories that create obligation
    # the boards whose allowance trades make the period's average (penalty) price: None (a
    # record written before this field) counts every board, as the rule was then;
    # configurations built from [compliance] give ("main",)
    penalty_price_segments: tuple[Any, ...] | None = None


@command("configure_compliance_period")
class ConfigureCompliancePeriod(Command):
    """A compliance period (e.g. 2026): when it starts (trades from then on count to it), the
    surrender deadline, eligible vintages and the initial offset cap and sub-caps."""

    period: int
    start_ts: int = 0
    deadline_ts: int | None = None  # None: deadline processing whenever the operator runs it
    eligible_vintages: tuple[Any, ...] = ()  # allowance vintages; () = by the banking rule
    offset_vintages: tuple[Any, ...] = ()  # offset vintages; () = any vintage <= period
    offset_cap_bps: int = 500
    offset_sub_caps_bps: tuple[Any, ...] = ()  # ((offset_type, bps), ...), each inside the cap


@command("register_verifier")
class RegisterVerifier(Command):
    verifier: str
    name: str = ""


@command("submit_activity_data")
class SubmitActivityData(Command):
    """A firm's activity data for a period, by category: energy (fuel use by type in whole tce,
    electricity bought in whole MWh), process emissions in t CO2, natural emissions (livestock,
    land, biological processes) in t CO2e; output in the product's unit. Replaces a pending or
    rejected submission."""

    firm_id: str
    period: int
    fuels: tuple[Any, ...] = ()  # ((fuel, tce), ...)
    process_emissions: int = 0
    output: int = 0
    # appended later, with defaults, so older journals replay unchanged
    electricity_mwh: int = 0
    natural_emissions: int = 0


@command("verify_emissions")
class VerifyEmissions(Command):
    firm_id: str
    period: int
    verifier: str


@command("reject_submission")
class RejectSubmission(Command):
    firm_id: str
    period: int
    verifier: str
    reason: str = ""


@command("surrender_units")
class SurrenderUnits(Command):
    """Surrender ``qty`` units of ``instrument`` against ``firm_id``'s obligation for
    ``period``; the units are retired. Offsets count against the cap in effect at ``ts``."""

    firm_id: str
    period: int
    instrument: str
    qty: int
    serials: tuple[Any, ...] = ()  # credits: exactly these serials (registry); () = oldest first


@command("set_offset_cap")
class SetOffsetCap(Command):
    """Change a period's offset cap (and sub-caps) from ``effective_ts`` (default: the command's
    ts) on. Never earlier than the command: a surrender already made is never rewritten."""

    period: int
    cap_bps: int
    # ((offset_type, bps), ...); None keeps the sub-caps in force at effective_ts, () clears
    sub_caps_bps: tuple[Any, ...] | None = ()
    effective_ts: int | None = None
    operator: str = ""


@command("process_compliance_deadline")
class ProcessComplianceDeadline(Command):
    """Close a period: settle SME sub-quotas per their terms, compute every firm's shortfall,
    status, penalty and next period's allocation deduction; expire surplus without banking."""

    period: int
    operator: str = ""


# =========================================================================== events
@event("compliance_configured")
class ComplianceConfigured:
    fuels: tuple[Any, ...]
    offset_types: tuple[Any, ...]
    banking: bool
    grid_factor_ppm: int = 0
    covered_categories: tuple[Any, ...] = ()


@event("compliance_period_configured")
class CompliancePeriodConfigured:
    period: int
    start_ts: int
    deadline_ts: int | None
    offset_cap_bps: int
    offset_sub_caps_bps: tuple[Any, ...]


@event("verifier_registered")
class VerifierRegistered:
    verifier: str


@event("activity_data_submitted")
class ActivityDataSubmitted:
    """``emissions`` is the total over every category; ``covered_emissions`` what the
    obligation would be once verified (the covered categories' sum)."""

    firm_id: str
    period: int
    version: int
    fuel_emissions: int
    process_emissions: int
    emissions: int
    output: int
    electricity_mwh: int = 0
    electricity_emissions: int = 0
    energy_emissions: int = 0  # fuel + electricity emissions
    natural_emissions: int = 0
    covered_categories: tuple[Any, ...] = ()
    covered_emissions: int = 0


@event("emissions_verified")
class EmissionsVerified:
    """``emissions`` is the total over every category; the obligation counts the covered
    categories only (plus anything the rules module added)."""

    firm_id: str
    period: int
    verifier: str
    emissions: int
    obligation: int
    fuel_emissions: int = 0
    electricity_emissions: int = 0
    energy_emissions: int = 0
    process_emissions: int = 0
    natural_emissions: int = 0
    covered_categories: tuple[Any, ...] = ()
    covered_emissions: int = 0


@event("submission_rejected")
class SubmissionRejected:
    firm_id: str
    period: int
    verifier: str
    reason: str


@event("obligation_added")
class ObligationAdded:
    firm_id: str
    period: int
    qty: int
    obligation: int


@event("units_surrendered")
class UnitsSurrendered:
    firm_id: str
    period: int
    instrument: str
    qty: int
    kind: str  # allowance | offset
    offset_type: str | None
    by: str  # the firm itself, "sub_quota" (auto at deadline) or "parent:<id>"
    cap_bps: int  # offset cap in effect for this surrender
    surrendered: int  # total surrendered for the period after this one
    offsets: int  # offsets surrendered for the period after this one
    obligation: int


@event("offset_cap_changed")
class OffsetCapChanged:
    period: int
    cap_bps: int
    sub_caps_bps: tuple[Any, ...]
    effective_ts: int
    operator: str


@event("sub_quota_compliance")
class SubQuotaCompliance:
    """What the deadline did with an SME's sub-quota: ``surrendered`` from the lot against the
    SME's obligation, ``covered_by_parent`` (the parent surrendered for the SME's shortfall), and
    only without the rules module (which owns it: ``settle_sub_quotas``) ``reverted`` or
    ``banked`` surplus."""

    lot_id: int
    sme: str
    parent: str
    action: str
    qty: int


@event("compliance_settled")
class ComplianceSettled:
    firm_id: str
    period: int
    obligation: int
    surrendered: int
    shortfall: int
    status: str  # compliant | late | non_compliant
    penalty: int  # fen assessed
    penalty_paid: int  # fen collected from the firm's free cash
    deduction: int  # tonnes deducted from next period's allocation


@event("compliance_deadline_processed")
class ComplianceDeadlineProcessed:
    period: int
    average_price: int
    compliant: int
    late: int
    non_compliant: int
    unverified: int
