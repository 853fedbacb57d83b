"""Scenario files: TOML validated by pydantic, with errors a human can act on.

A scenario describes a population of firms (generated per sector, listed one by one, or grown
along supply chains), the market rules the simulation trades under, the allocation rule, the
offset supply and cap, and the compliance penalty. Human-facing numbers are decimal strings or
plain numbers; the simulation converts prices to integer fen once, at the command boundary.

``load_scenario(path)`` raises :class:`ScenarioError` whose message lists every problem with
its location in the file (``sectors[1].mac.slope: Input should be greater than 0``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SPLIT_STRATEGIES = (
    "equal",
    "by_output",
    "by_baseline_emissions",
    "by_responsibility",
    "by_abatement_potential",
)


class ScenarioError(ValueError):
    """A scenario file that cannot be run, with a message that says why and where."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MacConfig(Strict):
    """A marginal abatement cost curve, MAC(a) in CNY per tonne at abatement a.

    ``linear``: MAC(a) = slope x a (slope in CNY/t per t abated), abatement up to
    ``max_abatement_share`` of baseline emissions.
    ``piecewise``: points (share of baseline emissions abated, CNY/t), joined linearly; the
    first point is usually (0, 0); abatement stops at the last point's share.
    Generated firms draw a lognormal multiplier with ``dispersion`` (sigma) around the curve.
    """

    kind: Literal["linear", "piecewise"] = "linear"
    slope: float | None = Field(None, gt=0, description="linear: CNY/t per tonne abated")
    full_abatement_cost: float | None = Field(
        None,
        gt=0,
        description="linear, scaled to firm size: MAC in CNY/t were the firm to "
        "abate 100 % of its baseline, i.e. slope = this / baseline",
    )
    points: list[tuple[float, float]] | None = None
    max_abatement_share: float = Field(0.6, gt=0, le=1)
    dispersion: float = Field(0.3, ge=0, le=2, description="lognormal sigma across firms")

    @model_validator(mode="after")
    def _shape(self):
        if self.kind == "linear":
            if (self.slope is None) == (self.full_abatement_cost is None):
                raise ValueError(
                    "a linear MAC needs exactly one of slope (CNY/t per t) "
                    "or full_abatement_cost (CNY/t at 100 % abatement)"
                )
            if self.points is not None:
                raise ValueError("points belong to a piecewise MAC, not a linear one")
        else:
            pts = self.points
            if not pts or len(pts) < 2:
                raise ValueError("a piecewise MAC needs at least two points [share, CNY/t]")
            for (a0, m0), (a1, m1) in zip(pts, pts[1:]):
                if not a1 > a0:
                    raise ValueError("piecewise MAC shares must strictly increase")
                if m1 < m0:
                    raise ValueError("piecewise MAC costs must not decrease")
            if pts[0][0] < 0 or pts[-1][0] > 1 or pts[0][1] < 0:
                raise ValueError("piecewise MAC shares lie in [0, 1] and costs are >= 0")
        return self


class SectorConfig(Strict):
    name: str = Field(min_length=1)
    intensity: float = Field(
        gt=0,
        description="baseline intensity per 10,000 CNY of output, "
        "in scenario.intensity_unit (t CO2 unless t_c)",
    )
    benchmark: float | None = Field(
        None,
        gt=0,
        description="initial benchmark intensity; "
        "default intensity x (1 - market.benchmark_stringency)",
    )
    firms: int = Field(0, ge=0, description="generated firms of this sector (outside chains)")
    sme_share: float = Field(0.0, ge=0, le=1, description="share of generated firms that are SMEs")
    output_mean: float = Field(10_000, gt=0, description="mean output, 10,000 CNY per period")
    output_dispersion: float = Field(0.5, ge=0, le=3, description="lognormal sigma of output")
    output_growth: float = Field(0.03, gt=-1, lt=1, description="mean output growth per period")
    output_growth_sd: float = Field(0.01, ge=0, lt=1)
    intensity_dispersion: float = Field(0.15, ge=0, le=2)
    autonomous_improvement: float = Field(
        0.0, ge=0, lt=1, description="baseline intensity fall per period"
    )
    margin: float | None = Field(
        None,
        gt=0,
        le=1,
        description="supply response: profit margin before carbon, share "
        "of output value; a firm whose carbon cost per unit of output exceeds it cuts output "
        "(docs/SIMULATION.md, 'Supply response'); unset = output ignores the carbon price",
    )
    supply_elasticity: float = Field(
        1.0,
        ge=0,
        description="supply response: output cut per unit of relative excess "
        "carbon cost, cut = elasticity x (c - margin) / margin",
    )
    max_output_cut: float = Field(
        0.5, ge=0, le=1, description="supply response: largest output cut below trend in one period"
    )
    electricity_use: float = Field(
        0.0,
        ge=0,
        description="with [power]: MWh of electricity "
        "per 10,000 CNY of output, bought from the power sector",
    )
    mac: MacConfig


class FirmConfig(Strict):
    """One firm given explicitly (the analytic scenario)."""

    id: str = Field(min_length=1)
    sector: str
    size_class: Literal["large", "sme"] = "large"
    baseline_emissions: float | None = Field(None, gt=0, description="t per period")
    output: float | None = Field(None, gt=0, description="10,000 CNY per period")
    allocation: float | None = Field(None, ge=0, description="fixed allocation, t per period")
    mac: MacConfig | None = None


class TierConfig(Strict):
    tier: int = Field(ge=1)
    firms: int = Field(ge=1)
    sector: str
    size_class: Literal["large", "sme"] = "large"
    output_scale: float = Field(1.0, gt=0, description="output relative to the sector mean")


class ChainConfig(Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    count: int = Field(1, ge=1, le=10_000, description="chains of this shape")
    core_sector: str
    core_output_scale: float = Field(5.0, gt=0)
    tiers: list[TierConfig] = Field(min_length=1)
    sub_quota_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of the SMEs' benchmark allocation the core firm "
        "carves out of its own allocation and splits as "
        "sub-quotas",
    )
    split_strategy: Literal[SPLIT_STRATEGIES] = "equal"  # type: ignore[valid-type]
    revenue_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="SME's share of the proceeds "
        "when it sells sub-quota units; 1.0 (the source model): an "
        "SME that emits less than its sub-quota keeps what it saves",
    )
    surplus_rule: Literal["revert", "bank"] = "revert"
    shortfall_rule: Literal["sme", "parent"] = "sme"

    @model_validator(mode="after")
    def _tiers(self):
        seen = sorted(t.tier for t in self.tiers)
        if seen != list(range(1, len(seen) + 1)):
            raise ValueError(f"tiers must be 1, 2, ... without gaps, got {seen}")
        return self


class MarketConfig(Strict):
    initial_price: float = Field(60.0, gt=0, description="reference price in CNY/t at start")
    price_band_bps: int = Field(1000, ge=0, le=10_000, description="0 = no price band")
    fee_bps: int = Field(0, ge=0, le=1000)
    rounds_per_period: int = Field(
        20,
        ge=1,
        le=200,
        description="trading days (call "
        "rounds) before MRV, the deadline for price discovery; a "
        "period ends sooner once the market has cleared",
    )
    settlement_rounds: int = Field(2, ge=0, le=20, description="rounds after the true-up")
    levels: int = Field(5, ge=1, le=21, description="price levels per order ladder")
    initial_width: float = Field(0.08, gt=0, le=0.9, description="grid half-width, fraction")
    min_width: float = Field(0.002, gt=0, le=0.5)
    price_cap: float = Field(1000.0, gt=0, description="highest price any agent bids, CNY/t")
    cash_per_tonne: float = Field(
        0.0, ge=0, description="opening cash per t of baseline emissions in CNY; 0 = 2 x price_cap"
    )
    benchmark_stringency: float = Field(0.05, ge=0, lt=1)
    use_sme_board: bool = Field(False, description="SMEs sell on the sme segment")
    early_stop: bool = Field(
        True,
        description="end a period's rounds once the market has "
        "cleared: the excess demand changed sign inside the grid (not at "
        "the grid's or the band's edge, not limit-locked), the call price "
        "moved by < 0.5 % and the round traded < stop_volume_share of the "
        "period's first round",
    )
    stop_volume_share: float = Field(0.01, ge=0, le=1)


class AllocationConfig(Strict):
    mode: Literal["intensity", "fixed"] = "intensity"
    pre_ratio: float = Field(0.7, gt=0, le=1, description="pre-allocation share")
    reduction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="fixed mode: cap = (1 - reduction) "
        "x baseline emissions of period 1, split pro rata",
    )
    cap_decline: float = Field(0.0, ge=0, lt=1, description="fixed mode: cap cut per period")
    sector_cut: Literal["proportional", "equal_intensity"] = Field(
        "proportional",
        description="fixed mode, how the cap is divided: proportional = every "
        "firm (so every sector) gets the same percentage cut of its period-1 emissions; "
        "equal_intensity = the same total, divided so every firm's (so every sector's) "
        "allowed intensity is its period-1 intensity cut by the same percentage, "
        "allocation following current output",
    )

    @model_validator(mode="after")
    def _cut(self):
        if self.sector_cut != "proportional" and self.mode != "fixed":
            raise ValueError(
                'sector_cut applies to mode = "fixed" (in intensity mode the '
                "sectors' benchmarks say how each sector's intensity is cut)"
            )
        return self


class RulesConfig(Strict):
    """Allocation-factor and benchmark updates (seed 000 / DESIGN §2)."""

    allocation_total: Literal["intensity", "floating"] = Field(
        "intensity",
        description="intensity: the period total is sum benchmark x verified "
        "output and phi only divides it (China national ETS, Q = G x Y); floating: each firm "
        "gets B x Y x phi and the total moves with phi (an explicit opt-in, flagged at the top "
        "of the report)",
    )
    update_factors: bool = True
    update_benchmarks: bool = True
    phi_initial: float = Field(1.0, gt=0)
    phi_min: float = Field(0.8, gt=0)
    phi_max: float = Field(1.2, gt=0)
    alpha_up: float = Field(0.5, ge=0)
    alpha_down: float = Field(0.5, ge=0)
    max_step: float = Field(0.05, ge=0, le=1, description="largest relative phi change")
    kappa: float = Field(0.1, ge=0, description="supply-chain coupling")
    kappa_max: float = Field(0.05, ge=0, le=1, description="cap of the coupling term")
    gain_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of the value of a core "
        "firm's coupling gain it pays the SMEs whose verified cuts "
        "(emissions below their sub-quota) made it, at the period close",
    )
    benchmark_step: float = Field(0.5, ge=0, le=1)
    max_tightening: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _range(self):
        if not self.phi_min <= self.phi_initial <= self.phi_max:
            raise ValueError("need phi_min <= phi_initial <= phi_max")
        return self


class OffsetTypeConfig(Strict):
    """One more offset type beside the main one (e.g. carbon-inclusive PHCER)."""

    type: str = Field(
        min_length=1,
        pattern=r"^[A-Z][A-Z0-9]*$",
        description="offset type, instrument <type>-<year>",
    )
    price: float = Field(gt=0, description="ask price, CNY/t")
    sub_cap: float = Field(
        ge=0,
        le=1,
        description="share of the verified obligation this type may cover, inside the overall cap",
    )
    supply_per_period: int = Field(0, ge=0, description="t offered per period; 0 = unlimited")


class OffsetConfig(Strict):
    """Offsets may cover at most ``cap`` x *verified* emissions of each firm (the compliance
    module's rule); each type at most its sub-cap. Agents price that room by the same rule
    (docs/SIMULATION.md, "Offsets in the equilibrium")."""

    enabled: bool = True
    cap: float = Field(
        0.05, ge=0, le=1, description="offsets cover at most this share of the verified obligation"
    )
    price: float = Field(40.0, gt=0, description="offset ask price, CNY/t")
    supply_per_period: int = Field(
        0,
        ge=0,
        description="t of CCER offered per period; "
        "0 = unlimited (cap-bound); scarce supply is rationed pro "
        "rata to verified emissions",
    )
    offset_type: str = Field("CCER", pattern=r"^[A-Z][A-Z0-9]*$")
    sub_cap: float | None = Field(
        None, ge=0, le=1, description="sub-cap of the main type; default the whole cap"
    )
    types: list[OffsetTypeConfig] = Field(
        default_factory=list,
        description="further offset types, each with its price, sub-cap and supply",
    )

    @model_validator(mode="after")
    def _types(self):
        names = [self.offset_type] + [t.type for t in self.types]
        if len(set(names)) != len(names):
            raise ValueError(f"offset types must be unique, got {names}")
        return self

    def all_types(self) -> list[tuple[str, float, float, int]]:
        """(type, price, sub-cap, supply) of every offset type, the main one first."""
        main = (
            self.offset_type,
            self.price,
            self.cap if self.sub_cap is None else min(self.sub_cap, self.cap),
            self.supply_per_period,
        )
        return [main] + [
            (t.type, t.price, min(t.sub_cap, self.cap), t.supply_per_period) for t in self.types
        ]


class ComplianceConfig(Strict):
    penalty_multiple: float = Field(3.0, ge=0, description="x average price per t short")
    fixed_fine: float = Field(0.0, ge=0, description="CNY per non-compliant firm")
    banking: bool = True


class SmeFundConfig(Strict):
    """The SME fund (docs/COMPLIANCE.md), present when something finances it: a share of
    penalties and/or a regulator's budget per period. After each period's deadline every
    chain SME that abated applies for ``grant_per_tonne`` x its verified abatement, the
    operator approves, and grants are paid in firm order while the fund and the limits
    allow."""

    penalty_share: float = Field(
        0.0, ge=0, le=1, description="share of collected penalties paid into the fund"
    )
    budget_per_period: float = Field(
        0.0, ge=0, description="CNY the regulator deposits each period"
    )
    grant_per_tonne: float = Field(
        30.0, ge=0, description="CNY an SME applies for per tonne of verified abatement"
    )
    sme_period_limit: float = Field(
        0.0, ge=0, description="CNY one SME may receive per period; 0 = no limit"
    )
    period_limit: float = Field(
        0.0, ge=0, description="CNY all SMEs may receive per period; 0 = no limit"
    )

    @property
    def enabled(self) -> bool:
        """A fund exists when something finances it."""
        return self.penalty_share > 0 or self.budget_per_period > 0


class PowerConfig(Strict):
    """The power sector as the other sectors' electricity supplier (docs/SIMULATION.md,
    'Electricity'). Its firms are the fossil generators: their output is what demand leaves
    to fossil generation after clean generation, not a trend. The sector's ``intensity``
    (t CO2 per 10,000 CNY) is its emission factor x 10,000 / tariff."""

    sector: str = Field(
        min_length=1, description="the sector whose firms generate fossil electricity"
    )
    tariff: float = Field(400.0, gt=0, description="CNY per MWh: generation <-> output")
    fossil_cost: float = Field(
        250.0, ge=0, description="fossil generation's marginal cost before carbon, CNY/MWh"
    )
    clean_capacity: float = Field(
        0.0, ge=0, description="MWh clean generation could supply in period 1"
    )
    clean_capacity_growth: float = Field(0.0, ge=0, lt=1, description="growth per period")
    clean_cost_min: float = Field(150.0, ge=0, description="CNY/MWh of the cheapest clean MWh")
    clean_cost_max: float = Field(
        450.0,
        ge=0,
        description="CNY/MWh of the dearest clean MWh "
        "of the capacity (a linear supply curve between)",
    )

    @model_validator(mode="after")
    def _costs(self):
        if not self.clean_cost_max > self.clean_cost_min:
            raise ValueError("power: clean_cost_max must exceed clean_cost_min")
        return self


CO2_PER_C = 44 / 12  # t CO2 per t C (molar masses)


class ScenarioMeta(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    intensity_unit: Literal["t_co2", "t_c"] = Field(
        "t_co2",
        description="unit of sectors' intensity and benchmark, per 10,000 CNY of "
        "output: t_co2, or t_c (tonnes of carbon, as seed 004 derives them from energy x t C "
        "per tce); t_c is converted once, on loading, by 44/12",
    )
    periods: int = Field(5, ge=1, le=200)
    seed: int = 0
    start_year: int = Field(2026, ge=2000, le=2200)
    analytic: bool = Field(False, description="report the closed-form price p* = R / sum(1/c)")
    sme_strategy_comparison: bool = Field(
        True,
        description="when SMEs hold sub-quotas, rerun every split strategy for the "
        "'SME revenue by split strategy' plot",
    )


class Scenario(Strict):
    scenario: ScenarioMeta
    market: MarketConfig = Field(default_factory=MarketConfig)
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    offsets: OffsetConfig = Field(default_factory=OffsetConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    sme_fund: SmeFundConfig = Field(default_factory=SmeFundConfig)
    sectors: list[SectorConfig] = Field(min_length=1)
    firms: list[FirmConfig] = Field(default_factory=list)
    chains: list[ChainConfig] = Field(default_factory=list)
    power: PowerConfig | None = None

    @model_validator(mode="after")
    def _units(self):
        """Everything after loading is t CO2: convert carbon intensities here, once."""
        if self.scenario.intensity_unit == "t_c":
            for s in self.sectors:
                s.intensity *= CO2_PER_C
                if s.benchmark is not None:
                    s.benchmark *= CO2_PER_C
            self.scenario.intensity_unit = "t_co2"
        return self

    @model_validator(mode="after")
    def _references(self):
        names = [s.name for s in self.sectors]
        if len(set(names)) != len(names):
            raise ValueError(f"sector names must be unique, got {names}")
        known = set(names)
        for i, f in enumerate(self.firms):
            if f.sector not in known:
                raise ValueError(
                    f"firms[{i}] ({f.id}): unknown sector {f.sector!r}; known: {sorted(known)}"
                )
            if f.baseline_emissions is None and f.output is None:
                raise ValueError(f"firms[{i}] ({f.id}): give baseline_emissions or output")
        ids = [f.id for f in self.firms]
        if len(set(ids)) != len(ids):
            raise ValueError("firm ids must be unique")
        for i, c in enumerate(self.chains):
            for s in [c.core_sector] + [t.sector for t in c.tiers]:
                if s not in known:
                    raise ValueError(
                        f"chains[{i}] ({c.id}): unknown sector {s!r}; known: {sorted(known)}"
                    )
        if len({c.id for c in self.chains}) != len(self.chains):
            raise ValueError("chain ids must be unique")
        if self.power is not None:
            pw = self.power.sector
            if pw not in known:
                raise ValueError(f"power.sector: unknown sector {pw!r}; known: {sorted(known)}")
            ps = next(s for s in self.sectors if s.name == pw)
            if ps.margin is not None or ps.electricity_use:
                raise ValueError(
                    f"power.sector {pw!r}: its output follows demand; give it no "
                    f"margin and no electricity_use"
                )
            if (
                any(pw in [c.core_sector] + [t.sector for t in c.tiers] for c in self.chains)
                or any(f.sector == pw for f in self.firms)
                or not ps.firms
            ):
                raise ValueError(
                    f"power.sector {pw!r}: its firms are generated "
                    f"(sectors[].firms > 0), not listed or in chains"
                )
        n = (
            sum(s.firms for s in self.sectors)
            + len(self.firms)
            + sum(c.count * (1 + sum(t.firms for t in c.tiers)) for c in self.chains)
        )
        if n == 0:
            raise ValueError("the scenario has no firms: set sectors[].firms, firms or chains")
        if (
            self.allocation.mode == "fixed"
            and any(f.allocation is None for f in self.firms)
            and self.firms
            and any(f.allocation is not None for f in self.firms)
        ):
            raise ValueError("fixed allocation: give every listed firm an allocation, or none")
        return self

    @property
    def n_firms(self) -> int:
        return (
            sum(s.firms for s in self.sectors)
            + len(self.firms)
            + sum(c.count * (1 + sum(t.firms for t in c.tiers)) for c in self.chains)
        )


def _fmt_errors(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ""
        for part in err.get("loc", ()):
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"  {loc or '<top level>'}: {msg}")
    return "\n".join(lines)


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(f"bad scenario {source}:\n{_fmt_errors(e)}") from None


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"scenario file not found: {p}")
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"bad scenario {p}: not valid TOML: {e}") from None
    return parse_scenario(data, str(p))


def scenario_to_dict(sc: Scenario) -> dict:
    return sc.model_dump(mode="json")


def apply_override(data: dict, key: str, value: Any) -> dict:
    """Set ``key`` in scenario data. ``key`` is a dotted path (``offsets.cap``,
    ``market.rounds_per_period``); a list along the path sets every element
    (``chains.split_strategy``). Short names: ``split_strategy``, ``offset_cap``."""
    aliases = {
        "split_strategy": "chains.split_strategy",
        "offset_cap": "offsets.cap",
        "offset_price": "offsets.price",
        "periods": "scenario.periods",
        "seed": "scenario.seed",
        "pre_ratio": "allocation.pre_ratio",
        "kappa": "rules.kappa",
        "reduction": "allocation.reduction",
        "sme_fund_budget": "sme_fund.budget_per_period",
        "revenue_share": "chains.revenue_share",
        "sector_cut": "allocation.sector_cut",
    }
    path = aliases.get(key, key).split(".")

    def put(node, parts):
        if isinstance(node, list):
            if not node:
                raise ScenarioError(f"--vary {key}: the scenario has no {parts[0]!r} entries")
            for x in node:
                put(x, parts)
            return
        if not isinstance(node, dict):
            raise ScenarioError(f"--vary {key}: cannot descend into a value")
        if len(parts) == 1:
            node[parts[0]] = value
            return
        if parts[0] not in node:
            node[parts[0]] = {}
        put(node[parts[0]], parts[1:])

    put(data, path)
    return data
