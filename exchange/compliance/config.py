"""``[compliance]`` settings and the genesis commands built from them.

Human-facing values (decimal coefficients, percentages, CNY amounts, dates) are converted to the
core's integers by :mod:`exchange.core.units` (and dates to integer ns here); the commands that
result go through the journal like any other.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import InvalidOperation
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.units import PPM, parse_price, percent_to_bps, ratio_to_ppm, to_decimal
from .commands import ConfigureCompliance, ConfigureCompliancePeriod, RegisterVerifier
from .fund import ConfigureSmeFund
from .mrv import CATEGORIES, DEFAULT_COVERED, MAX_GRID_FACTOR_PPM, PENALTY_MODES

if TYPE_CHECKING:
    from ..core.commands import Command


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _pct_ok(v: str) -> str:
    bps = percent_to_bps(v)
    if not 0 <= bps <= 10_000:
        raise ValueError(f"percentage {v!r} outside [0, 100]")
    return v


@overload
def to_ns(value: str) -> int: ...


@overload
def to_ns(value: None) -> None: ...


def to_ns(value: str | None) -> int | None:
    """``"2027-12-31"`` or an ISO timestamp (UTC unless it says otherwise) -> int ns."""
    if value is None:
        return None
    if len(value) == 10:
        d = date.fromisoformat(value)
        dt = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
    else:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


class PenaltyConfig(_Strict):
    mode: str = Field("both", description="fixed | multiple | both | greater")
    fixed_fine: str = Field("50000.00", description="CNY per non-compliant firm and period")
    price_multiple: str = Field(
        "3", description="x the period's average allowance price x shortfall tonnes"
    )
    late_fine: str = Field("10000.00", description="CNY when the obligation was met late")
    fallback_price: str = Field("0", description="CNY/t when the period had no price at all")
    price_boards: list[str] = Field(
        ["main"],
        description="the boards whose allowance trades make the average price: "
        "main (SME and chain boards are bilateral, sub-quota markets)",
    )

    @field_validator("price_boards")
    @classmethod
    def _boards(cls, v: list[str]) -> list[str]:
        if not v or not all(isinstance(b, str) and b for b in v):
            raise ValueError("price_boards: one or more board names (main, sme, chain:<id>)")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in PENALTY_MODES:
            raise ValueError(f"mode must be one of {PENALTY_MODES}")
        return v

    @field_validator("fixed_fine", "late_fine", "fallback_price")
    @classmethod
    def _money(cls, v: str) -> str:
        if parse_price(v) < 0:
            raise ValueError("amounts are >= 0")
        return v

    @field_validator("price_multiple")
    @classmethod
    def _mult(cls, v: str) -> str:
        if ratio_to_ppm(v) < 0:
            raise ValueError("price multiple is >= 0")
        return v


class SmeFundConfig(_Strict):
    """``[compliance.sme_fund]``: the SME fund (exchange/compliance/fund.py). Operators change
    these at runtime with configure_sme_fund (PUT /compliance/sme-fund/params)."""

    penalty_to_fund_pct: str = Field(
        "0", description="% of each penalty collected at the deadline paid to the fund"
    )
    auction_to_fund_pct: str = Field(
        "0", description="% of allowance auction proceeds, once the exchange holds auctions"
    )
    sme_period_limit: str | None = Field(
        None, description="CNY one SME may receive per period; none = no limit"
    )
    period_limit: str | None = Field(
        None, description="CNY all SMEs together may receive per period; none = no limit"
    )

    @field_validator("penalty_to_fund_pct", "auction_to_fund_pct")
    @classmethod
    def _pct(cls, v: str) -> str:
        return _pct_ok(v)

    @field_validator("sme_period_limit", "period_limit")
    @classmethod
    def _money(cls, v: str | None) -> str | None:
        if v is not None and parse_price(v) < 0:
            raise ValueError("limits are >= 0")
        return v

    def command(self) -> ConfigureSmeFund:
        return ConfigureSmeFund(
            penalty_to_fund_bps=percent_to_bps(self.penalty_to_fund_pct),
            auction_to_fund_bps=percent_to_bps(self.auction_to_fund_pct),
            sme_period_limit=None
            if self.sme_period_limit is None
            else parse_price(self.sme_period_limit),
            period_limit=None if self.period_limit is None else parse_price(self.period_limit),
            operator="config",
        )


class CompliancePeriodConfig(_Strict):
    period: int = Field(gt=0, description="compliance year, e.g. 2026")
    start: str = Field(description="date trades start counting to this period (UTC)")
    deadline: str | None = Field(None, description="surrender deadline (UTC); none = any time")
    eligible_vintages: list[int] = Field(
        default_factory=list, description="allowance vintages; empty = the banking rule"
    )
    offset_vintages: list[int] = Field(
        default_factory=list, description="offset vintages; empty = any vintage <= period"
    )
    offset_cap_pct: str | None = Field(None, description="overrides the default cap")
    offset_sub_caps_pct: dict[str, str] | None = None

    @field_validator("start", "deadline")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None:
            to_ns(v)
        return v

    @field_validator("offset_cap_pct")
    @classmethod
    def _cap(cls, v: str | None) -> str | None:
        return v if v is None else _pct_ok(v)


class ComplianceConfig(_Strict):
    """MRV and compliance settlement (DESIGN.md section 2, docs/COMPLIANCE.md)."""

    carbon_coefficients: dict[str, str] = Field(
        default_factory=lambda: {"coal": "0.7476", "oil": "0.5825", "natural_gas": "0.4435"},
        description="t C per tce of each fuel",
    )
    co2_per_carbon: str = Field("44/12", description="t CO2 per t C, an exact fraction")
    grid_factor_t_per_mwh: str = Field(
        "0.5703",
        description="grid emission factor: t CO2 per MWh of electricity bought "
        "(exact to the millionth)",
    )
    covered_categories: list[str] = Field(
        default_factory=lambda: list(DEFAULT_COVERED),
        description=f"emission categories that create obligation, of {list(CATEGORIES)}; "
        "the others are verified and reported only",
    )
    offset_types: list[str] = Field(default_factory=lambda: ["CCER", "PHCER"])
    offset_cap_pct: str = Field("5", description="offsets may cover this % of the obligation")
    offset_sub_caps_pct: dict[str, str] = Field(
        default_factory=dict, description="per offset type, inside the cap"
    )
    banking: bool = Field(True, description="earlier vintages count later; surplus is kept")
    penalty: PenaltyConfig = Field(default_factory=PenaltyConfig)
    verifiers: list[str] = Field(default_factory=list, description="registered verifier ids")
    periods: list[CompliancePeriodConfig] = Field(default_factory=list)
    sme_fund: SmeFundConfig | None = Field(
        None, description="the SME fund; absent = no fund (penalties all go to the bank)"
    )

    @field_validator("carbon_coefficients")
    @classmethod
    def _coef(cls, v: dict[str, str]) -> dict[str, str]:
        for fuel, c in v.items():
            if ratio_to_ppm(c) < 0:
                raise ValueError(f"coefficient of {fuel} must be >= 0")
        return v

    @field_validator("grid_factor_t_per_mwh")
    @classmethod
    def _grid(cls, v: str) -> str:
        try:  # the units' guarded parser: no huge strings or exponents
            d = to_decimal(v, "grid factor")
        except (InvalidOperation, ValueError):
            raise ValueError(f"not a decimal: {str(v)[:64]!r}") from None
        if not 0 <= d * PPM <= MAX_GRID_FACTOR_PPM:
            raise ValueError(
                f"the grid emission factor is within [0, {MAX_GRID_FACTOR_PPM // PPM}] t CO2/MWh"
            )
        if d * PPM != (d * PPM).to_integral_value():
            raise ValueError(f"{v!r} is finer than one part per million")
        return v

    @field_validator("covered_categories")
    @classmethod
    def _covered(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CATEGORIES]
        if bad or not v or len(set(v)) != len(v):
            raise ValueError(
                f"covered_categories: one or more of {list(CATEGORIES)}, each once; got {v!r}"
            )
        return v

    @field_validator("co2_per_carbon")
    @classmethod
    def _frac(cls, v: str) -> str:
        f = Fraction(v)
        if f <= 0:
            raise ValueError("co2_per_carbon must be > 0")
        return v

    @field_validator("offset_cap_pct")
    @classmethod
    def _cap(cls, v: str) -> str:
        return _pct_ok(v)

    @field_validator("offset_sub_caps_pct")
    @classmethod
    def _subs(cls, v: dict[str, str]) -> dict[str, str]:
        for k, p in v.items():
            _pct_ok(p)
        return v


def _sub_caps(d: dict[str, str]) -> tuple[tuple[str, int], ...]:
    return tuple((k, percent_to_bps(v)) for k, v in sorted(d.items()))


def compliance_commands(
    cfg: ComplianceConfig | None, verifiers: Sequence[str] = ()
) -> list[Command]:
    """Genesis commands for compliance: parameters, periods, verifiers."""
    if cfg is None:
        return []
    frac = Fraction(cfg.co2_per_carbon)
    p = cfg.penalty
    cmds: list[Command] = [
        ConfigureCompliance(
            carbon_coefficients_ppm=tuple(
                (k, ratio_to_ppm(v)) for k, v in sorted(cfg.carbon_coefficients.items())
            ),
            co2_per_c=(frac.numerator, frac.denominator),
            offset_types=tuple(cfg.offset_types),
            banking=cfg.banking,
            penalty_mode=p.mode,
            penalty_fixed_fine=parse_price(p.fixed_fine),
            penalty_multiple_ppm=ratio_to_ppm(p.price_multiple),
            late_fine=parse_price(p.late_fine),
            penalty_fallback_price=parse_price(p.fallback_price),
            grid_factor_ppm=ratio_to_ppm(cfg.grid_factor_t_per_mwh),
            covered_categories=tuple(c for c in CATEGORIES if c in cfg.covered_categories),
            # SME and chain boards are bilateral, sub-quota markets: only the main board's
            # trades price a shortfall (docs/COMPLIANCE.md, "average price")
            penalty_price_segments=tuple(p.price_boards),
        )
    ]
    for per in cfg.periods:
        cap = per.offset_cap_pct if per.offset_cap_pct is not None else cfg.offset_cap_pct
        subs = (
            per.offset_sub_caps_pct
            if per.offset_sub_caps_pct is not None
            else cfg.offset_sub_caps_pct
        )
        cmds.append(
            ConfigureCompliancePeriod(
                period=per.period,
                start_ts=to_ns(per.start),
                deadline_ts=to_ns(per.deadline),
                eligible_vintages=tuple(per.eligible_vintages),
                offset_vintages=tuple(per.offset_vintages),
                offset_cap_bps=percent_to_bps(cap),
                offset_sub_caps_bps=_sub_caps(subs),
            )
        )
    if cfg.sme_fund is not None:
        cmds.append(cfg.sme_fund.command())
    seen = set()
    for v in list(cfg.verifiers) + [v for v in verifiers if v]:
        if v not in seen:
            seen.add(v)
            cmds.append(RegisterVerifier(verifier=v))
    return cmds
