"""The ``[rules]`` table of the settings file, and the commands that set it up at genesis.

Ratios are decimal strings here (``"0.70"``) and integer ppm in the core; the conversion is
:func:`exchange.core.units.ratio_to_ppm` (exact to the ppm, else rejected at load).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from ..core.units import PPM, ratio_to_ppm, to_decimal

if TYPE_CHECKING:
    from ..core.commands import Command


def _ratio(v: str, lo: str = "0", hi: str | None = None) -> str:
    try:  # the units' one guarded parser: no huge strings or exponents (API input too)
        d = to_decimal(v, "ratio")
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a decimal: {str(v)[:64]!r}") from None
    if not d.is_finite() or d < Decimal(lo) or (hi is not None and d > Decimal(hi)):
        raise ValueError(f"{v!r} outside [{lo}, {hi if hi is not None else 'inf'}]")
    if d * PPM != (d * PPM).to_integral_value():
        raise ValueError(f"{v!r} is finer than one part per million")
    return str(v)


class BenchmarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product: str = Field(min_length=1)
    intensity: str = Field(description="t CO2e per unit of output, decimal string")

    @field_validator("intensity")
    @classmethod
    def _i(cls, v: str) -> str:
        _ratio(v)
        if Decimal(v) <= 0:
            raise ValueError("intensity must be > 0")
        return v


_UNIT = (
    "pre_ratio",
    "max_step",
    "w_tech",
    "w_eff",
    "w_hist",
    "benchmark_step",
    "max_tightening",
    "max_loosening",
    "kappa_max",
    "gain_share",
)
_ANY = ("initial_phi", "phi_min", "phi_max", "alpha_up", "alpha_down", "kappa")


class RulesConfig(BaseModel):
    """Rules parameters (docs/RULES.md). All ratios are decimal strings."""

    model_config = ConfigDict(extra="forbid")
    pre_ratio: str = "0.7"
    initial_phi: str = "1.0"
    phi_min: str = "0.5"
    phi_max: str = "1.5"
    max_step: str = "0.1"
    alpha_up: str = "0.5"
    alpha_down: str = "1.0"
    kappa: str = "0.2"
    kappa_max: str = "0.05"
    coupling_weights: Literal["edges", "tier"] = "edges"
    w_tech: str = "0.05"
    w_eff: str = "0.05"
    w_hist: str = "0.5"
    benchmark_step: str = "0.5"
    max_tightening: str = "0.05"
    allow_loosening: bool = False
    max_loosening: str = "0.02"
    instrument_pattern: str = "CEA-{period}"
    allocation_total: Literal["intensity", "absolute", "floating"] = "intensity"
    cap_tonnes: StrictInt = Field(0, ge=0)
    gain_share: str = "0"
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)

    @field_validator(*_UNIT)
    @classmethod
    def _unit(cls, v: str) -> str:
        return _ratio(v, "0", "1")

    @field_validator(*_ANY)
    @classmethod
    def _any(cls, v: str) -> str:
        return _ratio(v, "0", "100")

    @field_validator("instrument_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if "{period}" not in v:
            raise ValueError("instrument_pattern must contain {period}")
        v.format(period=2026)
        return v

    @model_validator(mode="after")
    def _phi(self) -> RulesConfig:
        if not 0 < Decimal(self.phi_min) <= Decimal(self.initial_phi) <= Decimal(self.phi_max):
            raise ValueError("need 0 < phi_min <= initial_phi <= phi_max")
        if self.allocation_total == "absolute" and self.cap_tonnes <= 0:
            raise ValueError('allocation_total = "absolute" needs cap_tonnes > 0')
        return self

    def params(self) -> dict[str, Any]:
        """Core parameter names -> values (ppm integers)."""
        out: dict[str, Any] = {}
        for k in _UNIT + _ANY:
            out[f"{k}_ppm"] = ratio_to_ppm(getattr(self, k))
        out["coupling_weights"] = self.coupling_weights
        out["allow_loosening"] = self.allow_loosening
        out["instrument_pattern"] = self.instrument_pattern
        out["allocation_total"] = self.allocation_total
        out["cap_tonnes"] = self.cap_tonnes
        return out


def rules_commands(cfg: RulesConfig | None) -> list[Command]:
    """set_rules_params with every parameter, then set_benchmark per configured product."""
    from .commands import SetBenchmark, SetRulesParams

    if cfg is None:
        return []
    cmds: list[Command] = [SetRulesParams(**cfg.params())]
    for b in cfg.benchmarks:
        cmds.append(SetBenchmark(product=b.product, intensity_ppm=ratio_to_ppm(b.intensity)))
    return cmds
