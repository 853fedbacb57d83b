"""``[registry]`` settings and the genesis commands built from them.

Human-facing values (percentages, t CO2e per unit as decimal strings) become the core's
integers here, through :mod:`exchange.core.units`; the commands go through the journal.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.units import percent_to_bps, to_decimal
from .commands import ConfigureRegistry, DeclareOffsetClass, SetConversionFactor

G_PER_T = 1_000_000


def tonnes_text(grams: int) -> str:
    """Grams CO2e as tonnes for people, exact: ``1_534_000`` -> ``"1.534"``."""
    whole, frac = divmod(grams, G_PER_T)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversionRow(_Strict):
    unit: str = Field(description="the unit an action is counted in (km, kWh, trip, ...)")
    t_co2e_per_unit: str = Field(
        description="t CO2e avoided per unit, exact to the gram (6 decimals)"
    )

    @field_validator("t_co2e_per_unit")
    @classmethod
    def _factor(cls, v):
        g = to_decimal(v, "t_co2e_per_unit") * G_PER_T
        if g != g.to_integral_value() or not 0 <= g <= 10**9:
            raise ValueError("t CO2e per unit is within [0, 1000] with at most 6 decimals")
        return v

    def grams(self) -> int:
        return int(Decimal(self.t_co2e_per_unit) * G_PER_T)


class RegistryConfig(_Strict):
    """The credit registry (docs/COMPLIANCE.md, "The credit registry")."""

    issuer: str = Field("CEX", description="this registry's issuer code (removal credits)")
    buffer_pct: str = Field(
        "20",
        description="share of every removal issuance kept in the buffer pool against reversals",
    )
    removal_types: dict[str, str] = Field(
        default_factory=lambda: {"natural": "RMN", "engineered": "RME"},
        description="removal type -> the offset type of its credits",
    )
    carbon_inclusive_type: str = Field(
        "PHCER", description="offset type of the credits issued from platforms' batches"
    )
    ccer_equivalent: list[str] = Field(
        default_factory=list,
        description="carbon-inclusive types declared CCER-equivalent at "
        "genesis (operators change it at runtime)",
    )
    max_batch_records: int = Field(1_000_000, ge=1, le=10_000_000)
    conversion_table: dict[str, ConversionRow] = Field(default_factory=dict)

    @field_validator("buffer_pct")
    @classmethod
    def _pct(cls, v):
        if not 0 <= percent_to_bps(v) <= 10_000:
            raise ValueError(f"buffer_pct {v!r} outside [0, 100]")
        return v


def registry_commands(cfg: RegistryConfig | None) -> list:
    if cfg is None:
        return []
    cmds: list = [
        ConfigureRegistry(
            issuer=cfg.issuer,
            buffer_bps=percent_to_bps(cfg.buffer_pct),
            removal_types=tuple(sorted(cfg.removal_types.items())),
            carbon_inclusive_type=cfg.carbon_inclusive_type,
            max_batch_records=cfg.max_batch_records,
        )
    ]
    for t in cfg.ccer_equivalent:
        cmds.append(DeclareOffsetClass(offset_type=t, ccer_equivalent=True, operator="genesis"))
    for action, row in sorted(cfg.conversion_table.items()):
        cmds.append(
            SetConversionFactor(
                action_type=action, unit=row.unit, g_co2e_per_unit=row.grams(), operator="genesis"
            )
        )
    return cmds
