"""Registry commands and events: serials, imports, retirements, removals, carbon-inclusive
batches.

Quantities are whole tonnes (t CO2e); conversion factors are grams CO2e per unit of an action
(an integer: 1 g = 10^-6 t); shares are basis points. Serials travel as strings
``ISSUER/PROJECT/VINTAGE/FIRST-LAST`` (:mod:`exchange.registry.serials`).
"""

from __future__ import annotations

from ..core.commands import Command, command
from ..core.events import event


# =========================================================================== commands
@command("configure_registry")
class ConfigureRegistry(Command):
    """Turn the registry on: from now on every offset-kind instrument's units carry serials
    (units already outstanding get serials of a ``LEGACY`` block per instrument)."""

    issuer: str = "CEX"  # this registry's issuer code (removal issuance)
    buffer_bps: int = 2000  # share of every removal issuance put in the buffer pool
    removal_types: tuple = (("natural", "RMN"), ("engineered", "RME"))  # (type, offset_type)
    carbon_inclusive_type: str = "PHCER"  # offset type issued from platforms' batches
    max_batch_records: int = 1_000_000


@command("issue_credits")
class IssueCredits(Command):
    """Offset credits issued by ``issuer`` (e.g. the national CCER registry) for ``project``,
    units ``first..last`` of the instrument's vintage, to ``account``."""

    account: str
    instrument: str
    issuer: str
    project: str
    first: int
    last: int


@command("record_external_cancellation")
class RecordExternalCancellation(Command):
    """Another registry reports that it cancelled units ``first..last`` of
    ``issuer/project/vintage`` for transfer into this one (its cancellation ``reference``)."""

    registry: str
    issuer: str
    project: str
    vintage: int
    first: int
    last: int
    reference: str = ""


@command("import_credits")
class ImportCredits(Command):
    """Units another registry cancelled, brought in under their original serials."""

    registry: str
    account: str
    instrument: str
    issuer: str
    project: str
    first: int
    last: int


@command("retire_credits")
class RetireCredits(Command):
    """Voluntary retirement (not against an obligation) of ``qty`` units, oldest first, or of
    exactly ``serials``; ``beneficiary`` is on whose behalf (default: the account)."""

    account: str
    instrument: str
    qty: int
    serials: tuple = ()
    beneficiary: str = ""
    reason: str = ""


@command("declare_offset_class")
class DeclareOffsetClass(Command):
    """Operator: carbon-inclusive credits of ``offset_type`` count (or stop counting) as
    CCER-equivalent offsets for compliance, within the offset cap and their sub-cap."""

    offset_type: str
    ccer_equivalent: bool = True
    operator: str = ""


# ---- removals
@command("register_removal_project")
class RegisterRemovalProject(Command):
    project_id: str
    removal_type: str  # natural | engineered
    owner: str  # the firm account that receives the credits
    name: str = ""


@command("verify_removal")
class VerifyRemoval(Command):
    """A verifier's result for a project and vintage: gross removal, the project's own
    emissions and its baseline removal (what would have been removed anyway), in t CO2."""

    project_id: str
    vintage: int
    verifier: str
    gross_removal: int
    project_emissions: int = 0
    baseline_removal: int = 0


@command("report_reversal")
class ReportReversal(Command):
    """A removal was reversed (fire, leakage): cancel ``qty`` t, buffer pool first."""

    project_id: str
    qty: int
    cause: str
    reporter: str = ""


# ---- carbon-inclusive
@command("register_platform")
class RegisterPlatform(Command):
    """A carbon-inclusive platform; its firm account (created when missing) holds its credits."""

    platform_id: str
    name: str = ""


@command("set_conversion_factor")
class SetConversionFactor(Command):
    """Operator: one row of the conversion table (a new table version)."""

    action_type: str
    unit: str
    g_co2e_per_unit: int  # grams CO2e avoided per unit of the action
    operator: str = ""


@command("submit_action_batch")
class SubmitActionBatch(Command):
    """A platform's batch of recorded actions: ``((action_id, action_type, qty, "YYYY-MM-DD"),
    ...)``. ``action_id`` is the platform-side HMAC-SHA256 (64 hex digits) of the action's own
    identifier: never a name, phone number or raw id."""

    platform_id: str
    vintage: int
    records: tuple = ()


@command("approve_action_batch")
class ApproveActionBatch(Command):
    batch_id: str
    verifier: str


@command("reject_action_batch")
class RejectActionBatch(Command):
    batch_id: str
    verifier: str
    reason: str


# =========================================================================== events
@event("registry_configured")
class RegistryConfigured:
    issuer: str
    buffer_bps: int
    legacy_blocks: int


@event("credits_issued")
class CreditsIssued:
    serial: str
    instrument: str
    account: str
    qty: int
    origin: str  # ccer | import | removal | carbon_inclusive | legacy


@event("external_cancellation_recorded")
class ExternalCancellationRecorded:
    registry: str
    serial: str
    reference: str


@event("credits_retired")
class CreditsRetired:
    serial: str
    instrument: str
    account: str
    beneficiary: str
    qty: int
    reason: str
    period: int | None


@event("offset_class_declared")
class OffsetClassDeclared:
    offset_type: str
    ccer_equivalent: bool


@event("removal_project_registered")
class RemovalProjectRegistered:
    project_id: str
    removal_type: str
    owner: str


@event("removal_verified")
class RemovalVerified:
    project_id: str
    vintage: int
    gross_removal: int
    project_emissions: int
    baseline_removal: int
    net_removal: int
    buffer: int
    issued_to_owner: int


@event("reversal_reported")
class ReversalReported:
    project_id: str
    qty: int
    cause: str
    from_buffer: int
    from_project: int
    uncovered: int


@event("platform_registered")
class PlatformRegistered:
    platform_id: str


@event("conversion_factor_set")
class ConversionFactorSet:
    action_type: str
    unit: str
    g_co2e_per_unit: int
    version: int


@event("action_batch_submitted")
class ActionBatchSubmitted:
    batch_id: str
    platform_id: str
    vintage: int
    records: int
    reduction_t: int
    table_version: int


@event("action_batch_decided")
class ActionBatchDecided:
    batch_id: str
    status: str  # approved | rejected
    verifier: str
    issued: int
    serial: str
