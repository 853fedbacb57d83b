"""The multi-period simulation: firms abate and trade through the real exchange core.

Each period is a compliance year P (allowance vintage ``CEA-P``); every step is a command
through the gateway — the same commands an operator, a verifier or a firm sends the server:

  1. operator: AddInstrument CEA-P (and CCER-P), ConfigureCompliancePeriod P (offset cap);
  2. rules: PreAllocate P — pre_ratio x benchmark x last verified output x phi, per covered firm
     (``allocation.mode = "fixed"``: the operator issues fixed allocations with IssueUnits);
     a chain's core firm gets its SMEs' pool (IssueUnits) and splits it (SplitSubQuotas by the
     chain's strategy, revenue share and surplus/shortfall terms);
  3. offsets: a supplier offers CCER at the offset price; firms buy up to the cap (IOC) when
     allowances trade above it;
  4. firms: ``rounds_per_period`` call-style rounds of MAC-priced DAY limit-order ladders,
     EndOfDay after each (see :mod:`exchange.sim.trading`);
  5. firms abate what they still lack: their MAC then equals the price;
  6. MRV: SubmitActivityData (coal use + process emissions) and VerifyEmissions; the rules
     module trues up the allocation to verified output; ClosePeriod P updates allocation
     factors (with supply-chain coupling) and benchmarks;
  7. settlement rounds: firms buy remaining shortfalls and sell spare allowances;
  8. compliance: SurrenderUnits (offsets up to the cap first, then the oldest eligible
     allowances), ProcessComplianceDeadline P (penalties, next period's deductions, SME
     shortfall covered per terms), SettleSubQuotas P (SME surplus reverts or banks).

Positions, allocations, factors, benchmarks, obligations and penalties are read back from the
events the core returns — never from its internal state.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..compliance.commands import (
    ComplianceSettled,
    ConfigureCompliance,
    ConfigureCompliancePeriod,
    EmissionsVerified,
    ProcessComplianceDeadline,
    RegisterVerifier,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from ..compliance.fund import (
    ApplyForGrant,
    ApproveGrant,
    ConfigureSmeFund,
    DisburseGrant,
    FundDeposit,
    GrantApplied,
    GrantDisbursed,
)
from ..compliance.mrv import fuel_emissions
from ..core.commands import (
    AddInstrument,
    CreateSubQuota,
    DepositCash,
    IssueUnits,
    RegisterFirm,
    RegisterSupplyChain,
    SetPriceBand,
)
from ..core.events import CommandRejected, ExecutionReport
from ..core.exchange import AddSegment
from ..rules.commands import (
    ClosePeriod,
    PreAllocate,
    SetBenchmark,
    SetInputUse,
    SetOutputHistory,
    SetRulesParams,
    SettleSubQuotas,
    SplitSubQuotas,
)
from ..rules.events import AllocationChanged, BenchmarkUpdated, FactorChanged, GainShared
from ..rules.formulas import intensity_total, period_allocation
from .agents import Curves, abatement_cost, build_population
from .equilibrium import OffsetRule, OffsetType, closed_form, cover, least_cost, plan
from .gateway import InProcessGateway
from .progress import Progress
from .scenario import Scenario
from .split import split_weights
from .trading import Market

OFFSET_SUPPLIER = "OFFSET-SUPPLY"
OPERATOR = "SIM-OPERATOR"
# the fund has run out or a limit is reached: the grant waits, as it would for a real SME
FUND_DRY = ("SME_FUND_INSUFFICIENT", "GRANT_SME_LIMIT_EXCEEDED", "GRANT_PERIOD_LIMIT_EXCEEDED")
VERIFIER = "SIM-VERIFIER"
FEN = 100
PPM = 1_000_000
COAL_PPM = 747_600  # t C per tce (seed 004)
RULES_STRATEGY = {
    "equal": "equal",
    "by_output": "output",
    "by_baseline_emissions": "baseline_emissions",
    "by_responsibility": "responsibility",
}  # by_abatement_potential: see split.py

# per firm x period records written to firms.csv (in this order)
RECORD_FIELDS = (
    "output",
    "baseline_emissions",
    "benchmark",
    "phi",
    "pre_allocation",
    "true_up",
    "allocation",
    "deduction",
    "sub_quota_in",
    "sub_quota_out",
    "bought",
    "sold",
    "net_bought",
    "abatement",
    "emissions",
    "obligation",
    "verified_intensity",
    "offsets_bought",
    "offsets_used",
    "allowances_surrendered",
    "shortfall",
    "penalty",
    "banked",
    "abatement_cost",
    "offset_cost",
    "no_trade_abatement_cost",
    "no_trade_offset_cost",
    "trade_cash",
    "sme_revenue",
    "fund_grants",
    "gain_share",
    "net_cost",
    "direct_allocation",
    "direct_net_cost",
)


class SimulationError(RuntimeError):
    """The engine refused a command the simulation expected to succeed (a bug)."""


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    periods: int
    ids: list[str]
    sector: list[str]
    size_class: list[str]
    chain: list[str]
    tier: list[int]
    records: dict[str, np.ndarray]  # name -> (periods, n)
    rounds: list[dict]
    period_rows: list[dict]
    summary: dict
    state_hash: str = ""
    extra: dict = field(default_factory=dict)


def _fen(cny: float) -> int:
    return max(1, int(round(cny * FEN)))


def _ppm(x: float) -> int:
    return int(round(x * PPM))


class Simulation:
    def __init__(
        self,
        sc: Scenario,
        seed: int | None = None,
        periods: int | None = None,
        gateway=None,
        progress: bool = False,
        label: str = "simulate",
    ):
        self.sc = sc
        self.seed = sc.scenario.seed if seed is None else int(seed)
        self.T = periods or sc.scenario.periods
        self.rng = np.random.default_rng(self.seed)
        self.pop = build_population(sc, self.rng)
        self.order_rng = np.random.default_rng(self.seed + 1_000_003)
        self.gw = gateway if gateway is not None else InProcessGateway()
        self.idx = {fid: i for i, fid in enumerate(self.pop.ids)}
        self.market = Market(self.gw, self.pop, self.idx, sc.market, self.order_rng)
        rounds = sc.market.rounds_per_period + sc.market.settlement_rounds
        self.progress = Progress(self.T * rounds, label, enabled=progress)
        n = self.pop.n
        self.phi = np.full(n, sc.rules.phi_initial)
        off = sc.offsets
        self.offset_rule = OffsetRule(
            cap=off.cap if off.enabled else 0.0,
            types=[
                OffsetType(name, price, sub, float(supply))
                for name, price, sub, supply in off.all_types()
            ]
            if off.enabled and off.cap > 0
            else [],
        )
        self.alloc_rec: dict[int, dict] = {}
        self.bench: dict[str, float] = {}
        self._ev: dict[str, np.ndarray] = {}
        self.timers: dict[str, float] = {}
        self.tolerated: Counter = Counter()
        self._t = time.perf_counter()
        self.verify_state = True
        self._power_state = None

    def _lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timers[phase] = self.timers.get(phase, 0.0) + now - self._t
        self._t = now

    # ------------------------------------------------------------------ plumbing
    def send_all(self, cmds, strict: bool = True) -> list[list]:
        if not cmds:
            return []
        acc = dict(volume=0, notional=0, trades=0, rejects=0)
        out = self.gw.send_all(cmds)
        tolerated = getattr(self.gw, "tolerated", ())
        for cmd, evs in zip(cmds, out):
            self.market._events(evs, acc)
            self._collect(evs)
            if strict:
                for ev in evs:
                    if isinstance(ev, CommandRejected) and ev.code in tolerated:
                        self.tolerated[f"{cmd.TYPE}:{ev.code}"] += 1
                    elif isinstance(ev, CommandRejected) or (
                        isinstance(ev, ExecutionReport) and ev.exec_type == "rejected"
                    ):
                        raise SimulationError(
                            f"{cmd.TYPE} refused: {getattr(ev, 'code', None) or ev.reason} "
                            f"{getattr(ev, 'message', '')} ({cmd})"
                        )
        return out

    def send(self, cmd, strict: bool = True) -> list:
        return self.send_all([cmd], strict)[0]

    def _collect(self, evs) -> None:
        """Read the rules' and compliance's events into this period's arrays."""
        idx, ev = self.idx, self._ev
        for e in evs:
            tp = type(e)
            if tp is AllocationChanged:
                i = idx.get(e.firm_id)
                if i is None:
                    continue
                self.alloc_rec[i] = e.allocation
                key = "pre_allocation" if e.kind == "pre_allocation" else "true_up"
                if key in ev:
                    ev[key][i] += e.issued
            elif tp is FactorChanged:
                i = idx.get(e.firm_id)
                if i is not None:
                    self.phi[i] = e.phi_after_ppm / PPM
            elif tp is BenchmarkUpdated:
                self.bench[e.product] = e.after_ppm / PPM
            elif tp is EmissionsVerified:
                i = idx.get(e.firm_id)
                if i is not None and "obligation" in ev:
                    ev["obligation"][i] = e.obligation
            elif tp is GainShared:
                if "gain_share" in ev:  # + received by the SME, - paid by the core firm
                    ev["gain_share"][idx[e.sme]] += e.amount / FEN
                    ev["gain_share"][idx[e.core]] -= e.amount / FEN
            elif tp is ComplianceSettled:
                i = idx.get(e.firm_id)
                if i is not None and "shortfall" in ev:
                    ev["shortfall"][i] = e.shortfall
                    ev["penalty"][i] = e.penalty / FEN
                    ev["deduction_next"][i] = e.deduction

    # ------------------------------------------------------------------ setup
    def _product(self, i: int) -> str:
        pop = self.pop
        sec = pop.sector_names[pop.sector[i]]
        return sec if pop.covered[i] else f"{sec}:sme"

    def _setup(self) -> None:
        sc, pop = self.sc, self.pop
        m, r = sc.market, sc.rules
        cmds: list = [
            AddSegment(name="main", max_order_qty=99_999, fee_bps=m.fee_bps, access="all"),
            AddSegment(name="sme", max_order_qty=99_999, fee_bps=0, access="sme_sell_any_buy"),
            ConfigureCompliance(
                carbon_coefficients_ppm=(
                    ("coal", COAL_PPM),
                    ("natural_gas", 443_500),
                    ("oil", 582_500),
                ),
                offset_types=tuple(t.name for t in self.offset_rule.types)
                or (sc.offsets.offset_type,),
                banking=sc.compliance.banking,
                penalty_mode="both",
                penalty_fixed_fine=_fen(sc.compliance.fixed_fine)
                if sc.compliance.fixed_fine
                else 0,
                penalty_multiple_ppm=_ppm(sc.compliance.penalty_multiple),
                penalty_fallback_price=_fen(m.initial_price),
                # a shortfall is valued at the main board's price, as the exchange's own
                # configuration does (docs/COMPLIANCE.md)
                penalty_price_segments=("main",),
            ),
            RegisterVerifier(verifier=VERIFIER, name="simulation verifier"),
            *(
                [
                    ConfigureSmeFund(
                        penalty_to_fund_bps=int(round(sc.sme_fund.penalty_share * 10_000)),
                        sme_period_limit=_fen(sc.sme_fund.sme_period_limit)
                        if sc.sme_fund.sme_period_limit
                        else None,
                        period_limit=_fen(sc.sme_fund.period_limit)
                        if sc.sme_fund.period_limit
                        else None,
                        operator=OPERATOR,
                    )
                ]
                if sc.sme_fund.enabled
                else []
            ),
            SetRulesParams(
                pre_ratio_ppm=_ppm(sc.allocation.pre_ratio),
                initial_phi_ppm=_ppm(r.phi_initial),
                phi_min_ppm=_ppm(r.phi_min),
                phi_max_ppm=_ppm(r.phi_max),
                max_step_ppm=_ppm(r.max_step) if r.update_factors else 0,
                alpha_up_ppm=_ppm(r.alpha_up),
                alpha_down_ppm=_ppm(r.alpha_down),
                kappa_ppm=_ppm(r.kappa),
                kappa_max_ppm=_ppm(r.kappa_max),
                benchmark_step_ppm=_ppm(r.benchmark_step) if r.update_benchmarks else 0,
                max_tightening_ppm=_ppm(r.max_tightening),
                instrument_pattern="CEA-{period}",
                gain_share_ppm=_ppm(r.gain_share),
                # intensity mode holds the total at sum B x Y; floating is an explicit opt-in
                allocation_total=sc.rules.allocation_total,
            ),
        ]
        if sc.allocation.mode == "intensity":
            for s in sc.sectors:
                b = (
                    s.benchmark
                    if s.benchmark is not None
                    else s.intensity * (1 - m.benchmark_stringency)
                )
                self.bench[s.name] = b
                cmds.append(SetBenchmark(product=s.name, intensity_ppm=max(1, _ppm(b))))
        for i, fid in enumerate(pop.ids):
            sec = pop.sector_names[pop.sector[i]]
            cmds.append(
                RegisterFirm(
                    firm_id=fid,
                    name=fid,
                    sector=sec,
                    product=self._product(i),
                    size_class="sme" if pop.sme[i] else "large",
                )
            )
        if self.offset_rule.types:
            cmds.append(
                RegisterFirm(
                    firm_id=OFFSET_SUPPLIER,
                    name="offset project developer",
                    sector="offsets",
                    size_class="large",
                )
            )
        per_t = m.cash_per_tonne or 2.0 * m.price_cap
        e_hist = self._baseline(pop.output, 0)
        for i, fid in enumerate(pop.ids):
            cmds.append(DepositCash(account=fid, amount=_fen(per_t * max(e_hist[i], 1.0) * 1.5)))
            cmds.append(
                SetOutputHistory(
                    firm_id=fid,
                    rows=(
                        (
                            sc.scenario.start_year - 1,
                            max(1, int(round(pop.output[i]))),
                            int(round(e_hist[i])),
                        ),
                    ),
                )
            )
        for c, cid in enumerate(pop.chain_ids):
            members = tuple((pop.ids[i], int(pop.tier[i])) for i in np.nonzero(pop.chain == c)[0])
            outdeg: dict[int, int] = {}
            for s, _ in pop.edges[c]:
                outdeg[s] = outdeg.get(s, 0) + 1
            edges = tuple((pop.ids[s], pop.ids[t], PPM // outdeg[s]) for s, t in pop.edges[c])
            cmds.append(RegisterSupplyChain(chain_id=cid, members=members, edges=edges))
        self.send_all(cmds)

    def _input_use(self, year: int, output: np.ndarray) -> list:
        """Each chain customer's input use for the period, so the close computes the
        responsibility factors (docs/RULES.md §5) and the ``by_responsibility`` split weighs
        what an SME embodies: a supplier's output goes to its customers in the shares of the
        chain's edges (1 / its out-degree), as units of the supplier's product."""
        pop = self.pop
        used: dict[int, dict[str, int]] = {}
        for es in pop.edges:
            outdeg: dict[int, int] = {}
            for s, _ in es:
                outdeg[s] = outdeg.get(s, 0) + 1
            for s, c in es:
                q = used.setdefault(c, {})
                prod = self._product(s)
                q[prod] = q.get(prod, 0) + int(output[s]) // outdeg[s]
        return [
            SetInputUse(firm_id=pop.ids[c], period=year, inputs=tuple(sorted(q.items())))
            for c, q in sorted(used.items())
        ]

    def _baseline(self, output: np.ndarray, t: int) -> np.ndarray:
        pop = self.pop
        decay = np.array([(1 - s.autonomous_improvement) ** t for s in self.sc.sectors])
        e = pop.intensity * decay[pop.sector] * output
        fixed = ~np.isnan(pop.fixed_emissions)
        e[fixed] = pop.fixed_emissions[fixed]
        return e

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        sc, pop, market = self.sc, self.pop, self.market
        n, T = pop.n, self.T
        m = sc.market
        self._setup()
        self._lap("setup")
        rec = {k: np.zeros((T, n)) for k in RECORD_FIELDS}
        last_output = np.maximum(1, np.round(pop.output)).astype(np.int64)
        last_emissions = self._baseline(pop.output, 0)
        price = float(m.initial_price)
        width = float(m.initial_width)
        rounds: list[dict] = []
        period_rows: list[dict] = []
        rule = self.offset_rule
        cap_bps = int(round(rule.cap * 10_000))
        sub_bps = [int(round(t.sub_cap * 10_000)) for t in rule.types]
        vintage_of: dict[str, int] = {}
        growth_draw = np.random.default_rng(self.seed + 7)
        fixed_alloc = None
        deduction_next = np.zeros(n, dtype=np.int64)
        # output without the supply response (the trend); equal to output when no sector
        # responds, so such scenarios run exactly as before
        last_trend = last_output.copy()
        trend_rec = np.zeros((T, n))
        cc_rec = np.full((T, n), np.nan)
        exp_rec = np.full(T, np.nan)
        respond = self._response_params()
        base0 = out0 = None
        pw = self._power_setup()
        power_rows: list[dict] = []
        indirect = np.zeros((T, n))

        for t in range(T):
            year = sc.scenario.start_year + t
            instr = f"CEA-{year}"
            off_instrs = [f"{ot.name}-{year}" for ot in rule.types]
            ev = self._ev = {
                k: np.zeros(n, dtype=np.int64)
                for k in ("pre_allocation", "true_up", "obligation", "shortfall", "deduction_next")
            }
            ev["penalty"] = np.zeros(n)
            ev["gain_share"] = np.zeros(n)
            # 1. output, baseline emissions, MAC curves
            g = pop.growth + np.where(np.isnan(pop.fixed_emissions), 1.0, 0.0) * growth_draw.normal(
                0.0, 1.0, n
            ) * np.array([sc.sectors[s].output_growth_sd for s in pop.sector])
            output_f = np.where(np.isnan(pop.fixed_emissions), last_trend * (1 + g), pop.output)
            trend = np.maximum(1, np.round(output_f)).astype(np.int64)
            if pw is not None:
                # business as usual for the generators: what demand leaves to fossil
                # generation with no carbon price
                trend[pw["mask"]], _ = self._dispatch(t, trend, 0.0, np.zeros(n))
            if t == 0:
                # period 1's business-as-usual: the fixed cap and the period-1 intensities
                # the equal-intensity cut starts from
                out0 = trend.astype(float)
                base0 = self._baseline(out0, 1)
                if sc.allocation.mode == "fixed":
                    fa = pop.fixed_allocation.copy()
                    nofa = np.isnan(fa)
                    fa[nofa] = base0[nofa] * (1 - sc.allocation.reduction)
                    fixed_alloc = fa
            output = trend
            if respond is not None or pw is not None:
                free = self._free_allocation_per_output(t, trend, fixed_alloc, base0, out0)
                avail = self._allowances_for(
                    t,
                    fixed_alloc,
                    deduction_next,
                    market.bank(vintage_of, year).sum() if sc.compliance.banking else 0,
                )
                p_exp = self._expected_price(t, trend, free, respond, avail)
                exp_rec[t] = p_exp
                output, cc_rec[t], power_info = self._outputs_at(t, trend, p_exp, free, respond)
            trend_rec[t] = trend
            base = self._baseline(output.astype(float), t + 1)
            cv = Curves.for_period(pop, base)
            rec["output"][t] = output
            rec["baseline_emissions"][t] = base
            rec["benchmark"][t] = (
                [self.bench.get(self._product(i).split(":")[0], np.nan) for i in range(n)]
                if self.bench
                else np.nan
            )
            rec["phi"][t] = self.phi
            band = m.price_band_bps
            cmds = [
                AddInstrument(
                    symbol=instr, kind="allowance", vintage=year, reference_price=_fen(price)
                ),
                SetPriceBand(instrument=instr, band_bps=band, reference_price=_fen(price)),
            ]
            vintage_of[instr] = year
            for ot, sym in zip(rule.types, off_instrs):
                cmds += [
                    AddInstrument(
                        symbol=sym,
                        kind="offset",
                        vintage=year,
                        offset_type=ot.name,
                        reference_price=_fen(ot.price),
                    ),
                    SetPriceBand(instrument=sym, band_bps=band),
                ]
            market.new_period(instr, off_instrs, _fen(price))
            cmds.append(
                ConfigureCompliancePeriod(
                    period=year,
                    start_ts=self._now() + 1,
                    offset_cap_bps=cap_bps,
                    offset_sub_caps_bps=tuple(
                        (ot.name, b) for ot, b in zip(rule.types, sub_bps) if b < cap_bps
                    ),
                )
            )
            self.send_all(cmds)

            # 2. allocation
            self.alloc_rec = {}
            self.send(PreAllocate(period=year))
            if sc.allocation.mode == "fixed":
                if sc.allocation.sector_cut == "equal_intensity":
                    # the same total as the proportional cut, shared in proportion to
                    # I_i,1 x Y_i,t: every firm's allowed intensity is its period-1
                    # intensity cut by the same percentage
                    # (the proportional cut's issue, whole tonnes per firm, so the two
                    # cuts issue exactly the same total)
                    cap_t = int(
                        np.floor(
                            np.where(pop.covered, fixed_alloc, 0.0)
                            * (1 - sc.allocation.cap_decline) ** t
                        ).sum()
                    )
                    final = _largest_remainder(
                        cap_t, np.where(pop.covered, base0 / out0 * output, 0.0)
                    )
                else:
                    final = np.floor(
                        np.where(
                            pop.covered, fixed_alloc * (1 - sc.allocation.cap_decline) ** t, 0.0
                        )
                    ).astype(np.int64)
                final = np.maximum(final - deduction_next, 0)
                pre = np.minimum(np.floor(final * sc.allocation.pre_ratio).astype(np.int64), final)
                self.send_all(
                    [
                        IssueUnits(
                            account=pop.ids[i],
                            instrument=instr,
                            qty=int(pre[i]),
                            source="allocation",
                            ref=f"{year}:pre",
                        )
                        for i in np.nonzero(pre > 0)[0]
                    ]
                )
                ev["pre_allocation"] += pre
                target = int(final.sum())
            else:
                final, target = self._forecast_allocation(output)
            pre_issued = ev["pre_allocation"].copy()
            sq_in, sq_out = self._sme_pools(t, year, instr, cv, price, last_output, last_emissions)
            rec["pre_allocation"][t] = ev["pre_allocation"]
            rec["sub_quota_in"][t] = sq_in
            rec["sub_quota_out"][t] = sq_out
            pending = final - pre_issued  # expected true-up
            self._lap("allocation")

            # 3. trading days until the market clears or the deadline (rounds_per_period)
            bank = market.bank(vintage_of, year) if sc.compliance.banking else 0
            width = max(width, m.initial_width / 2)
            locked_days = []
            first_volume = 1
            cleared = False
            for r in range(m.rounds_per_period):
                held = (market.h + bank + pending).astype(float)
                info = market.call_round(cv, rule, base, held, price, width)
                moved = abs(info["next_price"] - price) <= price * 0.005
                price, width = info["next_price"], info["next_width"]
                info.update(period=t + 1, round=r + 1, phase="trading")
                rounds.append(info)
                if info["limit_locked"]:
                    locked_days.append(r + 1)
                self.progress.update(1, f"period {t + 1}/{T} price {price:8.2f}")
                cleared = info["cleared"] and not info["limit_locked"]
                if r == 0:
                    first_volume = max(info["volume"], 1)
                elif (
                    m.early_stop
                    and cleared
                    and moved
                    and info["volume"] <= m.stop_volume_share * first_volume
                ):
                    self.progress.update(m.rounds_per_period - r - 1)
                    break
            close_price = price
            self._lap("trading")

            # 4. cover emissions: offsets where cheaper than abating, inside the cap's room
            held = (market.h + bank + pending).astype(float)
            _, want = cover(cv, rule, base, held)
            o_held = np.zeros(n, dtype=np.int64)
            for k, (ot, sym) in enumerate(zip(rule.types, off_instrs)):
                wk = want[:, k].astype(np.int64)
                if wk.sum() > 0:
                    supply = int(ot.supply) or int(wk.sum())
                    self.send(
                        IssueUnits(
                            account=OFFSET_SUPPLIER,
                            instrument=sym,
                            qty=supply,
                            source="offset_project",
                            ref=f"{year}",
                        )
                    )
                    o_held += market.buy_offsets(sym, _fen(ot.price), supply, wk, OFFSET_SUPPLIER)
            offset_cost = (
                sum(market.hold[sym] * ot.price for ot, sym in zip(rule.types, off_instrs))
                if rule.types
                else 0.0
            )
            rec["offsets_bought"][t] = o_held
            abate = np.clip(base - held - o_held, 0.0, cv.a_max)
            verified = np.round(np.maximum(base - abate, 0.0)).astype(np.int64)
            rec["abatement"][t] = abate
            rec["emissions"][t] = verified
            if pw is not None:
                power_rows.append(self._power_row(year, output, verified, power_info, pw))
                indirect[t] = pw["use"] * output * power_rows[-1]["grid_factor"]
            rec["verified_intensity"][t] = verified / np.maximum(output, 1)
            rec["abatement_cost"][t] = abatement_cost(cv, abate)
            rec["offset_cost"][t] = offset_cost

            # 5. MRV: submit and verify (the rules module trues up), then close the period
            mrv = []
            for i in range(n):
                fuels, process = _activity_data(int(verified[i]))
                mrv.append(
                    SubmitActivityData(
                        firm_id=pop.ids[i],
                        period=year,
                        fuels=fuels,
                        process_emissions=process,
                        output=int(output[i]),
                    )
                )
                mrv.append(VerifyEmissions(firm_id=pop.ids[i], period=year, verifier=VERIFIER))
            self.send_all(mrv)
            self.send_all(self._input_use(year, output))  # chain data for the close
            if sc.allocation.mode == "fixed":
                tu = final - pre
                self.send_all(
                    [
                        IssueUnits(
                            account=pop.ids[i],
                            instrument=instr,
                            qty=int(tu[i]),
                            source="allocation",
                            ref=f"{year}:true-up",
                        )
                        for i in np.nonzero(tu > 0)[0]
                    ]
                )
                ev["true_up"] += np.maximum(tu, 0)
            self._lap("offsets_abatement_mrv")
            self.send(ClosePeriod(period=year))
            self._lap("close_period")
            obligation = ev["obligation"].copy()
            rec["obligation"][t] = obligation
            rec["true_up"][t] = ev["true_up"]
            rec["allocation"][t] = ev["pre_allocation"] + ev["true_up"]
            rec["deduction"][t] = deduction_next

            # 6. settlement rounds: cover what is still short, sell what is spare
            def offsets_usable():
                use = np.zeros(n, dtype=np.int64)
                for sym, b in zip(off_instrs, sub_bps):
                    use += np.minimum(np.maximum(market.hold[sym], 0), obligation * b // 10_000)
                return np.minimum(use, obligation * cap_bps // 10_000)

            for r in range(m.settlement_rounds):
                bank = market.bank(vintage_of, year) if sc.compliance.banking else 0
                need = (obligation - market.h - bank - offsets_usable()).astype(float)
                info = market.settle_round(need, price)
                info.update(
                    period=t + 1,
                    round=m.rounds_per_period + r + 1,
                    phase="settlement",
                    cleared=True,
                    limit_locked="",
                )
                rounds.append(info)
                self.progress.update(1, f"period {t + 1}/{T} price {price:8.2f}")
            self._lap("settlement_trading")

            # 7. compliance: surrender (offsets first, each type inside its sub-cap and all
            # inside the cap), deadline, sub-quota settlement
            held_before = {s: a.copy() for s, a in market.hold.items()}
            sur = []
            room = obligation * cap_bps // 10_000
            o_use = np.zeros(n, dtype=np.int64)
            for sym, b in zip(off_instrs, sub_bps):
                q = np.minimum(
                    np.minimum(np.maximum(market.hold[sym], 0), obligation * b // 10_000),
                    room - o_use,
                )
                for i in np.nonzero(q > 0)[0]:
                    sur.append(
                        SurrenderUnits(
                            firm_id=pop.ids[i], period=year, instrument=sym, qty=int(q[i])
                        )
                    )
                o_use += q
            left = obligation - o_use
            eligible = sorted(
                (v, s)
                for s, v in vintage_of.items()
                if v == year or (sc.compliance.banking and v < year)
            )
            for _, sym in eligible:
                q = np.minimum(np.maximum(market.hold[sym], 0), left)
                for i in np.nonzero(q > 0)[0]:
                    sur.append(
                        SurrenderUnits(
                            firm_id=pop.ids[i], period=year, instrument=sym, qty=int(q[i])
                        )
                    )
                left = left - q
            self.send_all(sur)
            surrendered_allow = sum(held_before[s] - market.hold[s] for _, s in eligible)
            self.send(ProcessComplianceDeadline(period=year))
            self.send(SettleSubQuotas(period=year))
            grants = self._fund_grants(year, base - verified)
            deduction_next = ev["deduction_next"].copy()
            self._lap("compliance")
            bank_after = market.bank(vintage_of, year + 1)
            vol = sum(x["volume"] for x in rounds if x["period"] == t + 1)
            notional = sum(x["notional"] for x in rounds if x["period"] == t + 1)
            avg_price = notional / vol if vol else close_price
            rec["offsets_used"][t] = o_use
            rec["allowances_surrendered"][t] = surrendered_allow
            rec["shortfall"][t] = ev["shortfall"]
            rec["penalty"][t] = ev["penalty"]
            rec["banked"][t] = bank_after
            rec["bought"][t] = market.bought
            rec["sold"][t] = market.sold
            rec["net_bought"][t] = market.bought - market.sold
            rec["trade_cash"][t] = market.cash / FEN
            rec["sme_revenue"][t] = market.sme_revenue / FEN
            # what compliance cost each firm, net of its trading: abatement + offsets +
            # penalties - cash from trading (sales minus purchases)
            rec["fund_grants"][t] = grants
            rec["gain_share"][t] = ev["gain_share"]
            rec["net_cost"][t] = (
                rec["abatement_cost"][t]
                + rec["offset_cost"][t]
                + rec["penalty"][t]
                - rec["trade_cash"][t]
                - grants
                - ev["gain_share"]
            )
            self._direct_counterfactual(t, rec, cv, rule, base, output, close_price)

            # counterfactuals on the same allocation path: no trade (each firm alone), and
            # the least-cost solution of the same constrained problem (same allowances, same
            # offset rule); the closed form where the curves allow one
            held_no_trade = (final + sq_in - sq_out + bank).astype(float)
            nt_a, nt_o = cover(cv, rule, base, held_no_trade)
            rec["no_trade_abatement_cost"][t] = abatement_cost(cv, nt_a)
            rec["no_trade_offset_cost"][t] = (
                (nt_o * rule.prices()[None, :]).sum(axis=1) if rule.types else 0.0
            )
            allowances = float(held_no_trade.sum())
            lc = least_cost(cv, rule, base, allowances, m.price_cap)
            cf = closed_form(cv, rule, base, allowances)
            period_rows.append(
                self._period_row(
                    t,
                    year,
                    rec,
                    rounds,
                    close_price,
                    avg_price,
                    vol,
                    base,
                    verified,
                    abate,
                    allowances,
                    target,
                    lc,
                    cf,
                    o_use,
                    ev,
                    locked_days,
                    cleared,
                    market,
                )
            )
            last_output = output
            last_trend = trend
            last_emissions = verified.astype(float)
        self.progress.close()
        self._lap("records")
        res = self._result(rec, rounds, period_rows, time.perf_counter() - t0)
        res.extra["trend_output"] = trend_rec
        if respond is not None or pw is not None:
            res.extra["expected_price"] = exp_rec
            for row, pe in zip(res.period_rows, exp_rec):
                row["expected_price"] = round(float(pe), 4)
        if pw is not None:
            res.extra["indirect_emissions"] = indirect
            for row, pr in zip(res.period_rows, power_rows):
                row.update(pr)
            res.summary["electricity"] = {
                "demand_mwh": round(sum(r["power_demand_mwh"] for r in power_rows), 1),
                "clean_mwh": round(sum(r["clean_mwh"] for r in power_rows), 1),
                "fossil_mwh": round(sum(r["fossil_mwh"] for r in power_rows), 1),
                "clean_share_first": power_rows[0]["clean_share"],
                "clean_share_last": power_rows[-1]["clean_share"],
                "power_emissions": int(sum(r["power_emissions"] for r in power_rows)),
            }
        if respond is not None:
            res.extra["carbon_cost_per_output"] = cc_rec
            res.summary["supply_response"] = {
                "output_vs_trend": round(float(rec["output"].sum() / trend_rec.sum() - 1), 6),
                "by_sector": {
                    name: round(
                        float(
                            rec["output"][:, sel].sum() / max(trend_rec[:, sel].sum(), 1e-12) - 1
                        ),
                        6,
                    )
                    for name, sel in (
                        (nm, pop.sector == k) for k, nm in enumerate(pop.sector_names)
                    )
                    if sel.any()
                },
            }
        self._lap("final_checks")
        res.summary["phase_seconds"] = {k: round(v, 3) for k, v in self.timers.items()}
        return res

    # ------------------------------------------------------------------ supply response
    def _response_params(self):
        """(margin, elasticity, max cut, responds) per firm, or None when no sector has a
        margin. Listed firms with fixed baseline emissions do not respond (their output does
        not drive their emissions)."""
        secs = self.sc.sectors
        if all(s.margin is None for s in secs):
            return None
        k = self.pop.sector
        margin = np.array([s.margin or 0.0 for s in secs])[k]
        active = (margin > 0) & np.isnan(self.pop.fixed_emissions)
        return (
            np.where(active, margin, 1.0),
            np.array([s.supply_elasticity for s in secs])[k],
            np.array([s.max_output_cut for s in secs])[k],
            active,
        )

    def _free_allocation_per_output(self, t, trend, fixed_alloc, base0, out0) -> np.ndarray:
        """Allowances one more unit of output brings the firm for free (t per 10,000 CNY):
        intensity mode B x phi (the rules' allocation before normalisation); a fixed cap cut
        in equal intensity (1 - x_t) x I_i,1 (the allocation follows output); a fixed cap cut
        proportionally nothing (the allocation follows period-1 emissions, not output); chain
        SMEs nothing (their sub-quota pool follows last year's output)."""
        sc, pop = self.sc, self.pop
        n = pop.n
        if sc.allocation.mode == "intensity":
            b = np.array([self.bench.get(pop.sector_names[pop.sector[i]], 0.0) for i in range(n)])
            return np.where(pop.covered, b * self.phi, 0.0)
        if sc.allocation.sector_cut == "equal_intensity":
            i0 = base0 / out0
            cap_t = (
                np.where(pop.covered, fixed_alloc, 0.0) * (1 - sc.allocation.cap_decline) ** t
            ).sum()
            need = float(np.where(pop.covered, i0 * trend, 0.0).sum())
            return np.where(pop.covered, i0 * cap_t / need if need else 0.0, 0.0)
        return np.zeros(n)

    def _allowances_for(self, t, fixed_alloc, deduction, bank: int):
        """The period's allowances as a function of output, for the expected price: a fixed
        cap is the same whatever the output (both cuts); in intensity mode the total is
        sum B x Y over covered firms. Plus what is banked."""
        sc, pop = self.sc, self.pop
        if sc.allocation.mode == "fixed":
            cap = float(
                np.floor(
                    np.where(pop.covered, fixed_alloc, 0.0) * (1 - sc.allocation.cap_decline) ** t
                ).sum()
            )
            total = cap - float(deduction.sum()) + float(bank)
            return lambda y: total
        b = np.array([self.bench.get(pop.sector_names[pop.sector[i]], 0.0) for i in range(pop.n)])
        b = np.where(pop.covered, b, 0.0)
        return lambda y: float((b * y).sum()) - float(deduction.sum()) + float(bank)

    # ------------------------------------------------------------------ electricity
    def _power_setup(self):
        """The generators (the power sector's firms), each one's fixed share of fossil
        generation (its drawn size), and every firm's electricity use per unit of output."""
        self._power_state = self._power_make()
        return self._power_state

    def _power_make(self):
        cfg = self.sc.power
        if cfg is None:
            return None
        pop = self.pop
        k = pop.sector_names.index(cfg.sector)
        mask = pop.sector == k
        share = pop.output[mask] / pop.output[mask].sum()
        use = np.array([s.electricity_use for s in self.sc.sectors])[pop.sector]
        return {
            "cfg": cfg,
            "mask": mask,
            "share": share,
            "use": np.where(mask, 0.0, use),
            "sector": self.sc.sectors[k],
        }

    def _dispatch(self, t, output, p, free):
        """Generation for the period at carbon price p: demand D = sum of electricity use x
        output of the other sectors; clean generation runs every MWh cheaper than fossil's
        marginal cost with carbon, fossil_cost + p x (EF - f) (EF the sector's emission
        factor, f the free allowances a MWh brings): Q_c = min(D, K_t x clip((that -
        clean_cost_min) / (clean_cost_max - clean_cost_min), 0, 1)); fossil generation
        D - Q_c, shared among the generators by their fixed shares, as output (10,000 CNY).
        Returns (generators' outputs, the balance's figures)."""
        pw = self._power_state
        cfg, sec = pw["cfg"], pw["sector"]
        demand = float((pw["use"] * output).sum())
        cap = cfg.clean_capacity * (1 + cfg.clean_capacity_growth) ** t
        ef = sec.intensity * (1 - sec.autonomous_improvement) ** (t + 1) * cfg.tariff / 1e4
        f_mwh = float((free[pw["mask"]] * pw["share"]).sum()) * cfg.tariff / 1e4
        mf = cfg.fossil_cost + p * (ef - f_mwh)
        frac = min(
            1.0, max(0.0, (mf - cfg.clean_cost_min) / (cfg.clean_cost_max - cfg.clean_cost_min))
        )
        clean = min(demand, cap * frac)
        fossil = demand - clean
        y = np.maximum(1, np.round(fossil * pw["share"] * cfg.tariff / 1e4)).astype(np.int64)
        return y, {
            "power_demand_mwh": demand,
            "clean_mwh": clean,
            "fossil_target_mwh": fossil,
            "fossil_cost_with_carbon": mf,
            "emission_factor": ef,
            "free_per_mwh": f_mwh,
        }

    def _outputs_at(self, t, trend, p, free, respond):
        """Every firm's output at carbon price p: the supply response where a sector has a
        margin, then the generators' dispatch for the resulting demand."""
        out, cc, info = trend, np.full(len(trend), np.nan), None
        if respond is not None:
            out, cc = self._supply_response(t, trend, p, free, respond)
        if self._power_state is not None:
            out = out.copy()
            out[self._power_state["mask"]], info = self._dispatch(t, out, p, free)
        return out, cc, info

    def _power_row(self, year, output, verified, info, pw) -> dict:
        """The period's electricity balance. Generation is whole 10,000 CNY of output per
        generator, so fossil generation is that output x 10,000 / tariff and the balance
        (clean + fossil - demand) is the rounding, at most half a unit per generator. The
        grid factor is the generators' verified emissions per MWh consumed."""
        cfg = pw["cfg"]
        fossil = float(output[pw["mask"]].sum()) * 1e4 / cfg.tariff
        demand, clean = info["power_demand_mwh"], info["clean_mwh"]
        supplied = clean + fossil
        e_pw = int(verified[pw["mask"]].sum())
        return {
            "power_demand_mwh": round(demand, 1),
            "clean_mwh": round(clean, 1),
            "fossil_mwh": round(fossil, 1),
            "clean_share": round(clean / supplied, 6) if supplied else 0.0,
            "power_balance_mwh": round(supplied - demand, 1),
            "fossil_cost_with_carbon": round(info["fossil_cost_with_carbon"], 4),
            "power_emissions": e_pw,
            # per MWh consumed: the consumers' indirect emissions add up to exactly what
            # the generators emitted
            "grid_factor": e_pw / demand if demand else 0.0,
        }

    def _expected_price(self, t, trend, free, params, allowances) -> float:
        """The price firms expect the period to clear at, output decisions included: the p
        at which the allowances firms need — abating to p, using offsets by the cap's rule,
        with outputs answering p — equal the allowances there are (bisection on that excess
        demand, which falls as p rises: more abatement, less output). Deciding output on
        last year's price instead sends the market round a cobweb: a high price cuts output,
        the cut lowers the price, output comes back, the price rises again."""
        rule, cap = self.offset_rule, float(self.sc.market.price_cap)

        def excess(p: float) -> float:
            y, _, _ = self._outputs_at(t, trend, p, free, params)
            base = self._baseline(y.astype(float), t + 1)
            cv = Curves.for_period(self.pop, base)
            return plan(cv, rule, base, p).allowance_demand - allowances(y)

        if excess(0.0) <= 0:
            return 0.0
        if excess(cap) > 0:
            return cap
        lo, hi = 0.0, cap
        while hi - lo > 1e-6 * max(1.0, hi):
            mid = 0.5 * (lo + hi)
            if excess(mid) > 0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def _supply_response(self, t, trend, price, free, params):
        """Output after the supply response (docs/SIMULATION.md, 'Supply response'). At the
        expected allowance price p (the last close) each firm's carbon cost per unit of
        output, CNY per 10,000 CNY:

            c_i = [C_i(a_i(p)) + sum_k p_k O_ik + p x (allowances needed)] / Y_i - p x free_i

        its abatement cost, offsets and allowances at p for its trend output, less the free
        allocation a unit of output brings. MAC curves are shares of baseline emissions, so
        c_i does not depend on Y_i (marginal = average). With margin m (share of output value,
        10,000 m CNY per unit): cut_i = min(max_cut, elasticity x max(0, c_i - 10,000 m) /
        (10,000 m)), output = round(trend x (1 - cut_i))."""
        margin, eta, max_cut, active = params
        rule = self.offset_rule
        base = self._baseline(trend.astype(float), t + 1)
        cv = Curves.for_period(self.pop, base)
        pl = plan(cv, rule, base, price)
        off = (pl.offsets * rule.prices()[None, :]).sum(axis=1) if rule.types else 0.0
        cost = abatement_cost(cv, pl.abatement) + off + price * pl.allowances
        c = cost / trend - price * free
        mu = margin * 10_000.0
        cut = np.clip(eta * np.maximum(0.0, c - mu) / mu, 0.0, max_cut)
        out = np.where(active, np.maximum(1, np.round(trend * (1 - cut))), trend)
        return out.astype(np.int64), np.where(active, c, np.nan)

    def _forecast_allocation(self, output: np.ndarray) -> tuple[np.ndarray, int]:
        """Each firm's expected allocation for the period, read from the rules' records
        (benchmark and phi fixed at pre-allocation) and normalised as the rules module will
        normalise it at the close: the period total is sum B x Y (intensity mode) and phi only
        divides it (docs/RULES.md). Returns (per firm, the period's total)."""
        n = self.pop.n
        final = np.zeros(n, dtype=np.int64)
        ids = self.pop.ids
        recs = sorted(self.alloc_rec.items(), key=lambda r: ids[r[0]])  # the engine's order
        if not recs:
            return final, 0
        idx = [i for i, _ in recs]
        rows = [(a["benchmark_ppm"], int(output[i]), a["phi_ppm"]) for i, a in recs]
        # the rules' own formula; the target stays sum B x Y even when the scenario lets
        # phi move the total (floating), so the report can say by how much
        alloc = period_allocation(self.sc.rules.allocation_total, rows)
        ded = np.array([a["deduction"] for _, a in recs], dtype=np.int64)
        final[idx] = np.maximum(np.array(alloc["parts"], dtype=np.int64) - ded, 0)
        return final, intensity_total([(b, y) for b, y, _ in rows])

    def _fund_grants(self, year: int, abated: np.ndarray) -> np.ndarray:
        """The SME fund's round after the deadline (penalties have flowed in): the
        regulator's budget is deposited, every chain SME that abated applies for
        grant_per_tonne x its verified abatement, the operator approves and pays in firm order
        while the fund's balance and limits allow (a refused payment is the fund running
        dry, not an error). Returns the CNY each firm received."""
        cfg, pop = self.sc.sme_fund, self.pop
        got = np.zeros(pop.n)
        if not cfg.enabled:
            return got
        if cfg.budget_per_period > 0:
            self.send(
                FundDeposit(
                    amount=_fen(cfg.budget_per_period),
                    period=year,
                    ref=f"budget:{year}",
                    operator=OPERATOR,
                )
            )
        smes = [
            i
            for i in np.nonzero(pop.sme & (pop.chain >= 0))[0]
            if cfg.grant_per_tonne > 0 and abated[i] >= 1
        ]
        cap = cfg.sme_period_limit or float("inf")  # nobody applies for more than the limit
        apps = self.send_all(
            [
                ApplyForGrant(
                    sme=pop.ids[i],
                    period=year,
                    amount=_fen(min(cfg.grant_per_tonne * abated[i], cap)),
                    project=f"abatement {year}",
                    verified_abatement_t=int(abated[i]),
                    applicant=pop.ids[i],
                )
                for i in smes
            ]
        )
        ids = [e.application_id for evs in apps for e in evs if type(e) is GrantApplied]
        self.send_all([ApproveGrant(application_id=a, operator=OPERATOR) for a in ids])
        for evs in self.send_all(
            [DisburseGrant(application_id=a, operator=OPERATOR) for a in ids], strict=False
        ):
            for e in evs:
                if type(e) is GrantDisbursed:
                    got[self.idx[e.sme]] += e.amount / FEN
                elif isinstance(e, CommandRejected) and e.code not in FUND_DRY:
                    raise SimulationError(f"disburse_grant refused: {e.code} {e.message}")
        return got

    def _direct_counterfactual(self, t, rec, cv, rule, base, output, price) -> None:
        """The same SMEs allocated directly instead of through sub-quotas: each gets its
        sector's benchmark allocation B x Y, faces the same market price and offset rule, and
        abates, buys or sells to the price: net cost = C(a) + offsets + p x (allowances needed
        - B x Y). ``direct_net_cost`` beside ``net_cost`` is what the scheme did for it."""
        pop = self.pop
        smes = np.nonzero(pop.sme & (pop.chain >= 0))[0]
        rec["direct_allocation"][t] = np.nan
        rec["direct_net_cost"][t] = np.nan
        if not len(smes) or not self.bench:
            return
        b = np.array([self.bench.get(pop.sector_names[pop.sector[i]], 0.0) for i in smes])
        alloc = np.floor(b * output[smes])
        pl = plan(cv, rule, base, price)
        off = (pl.offsets[smes] * rule.prices()[None, :]).sum(axis=1) if rule.types else 0.0
        rec["direct_allocation"][t, smes] = alloc
        rec["direct_net_cost"][t, smes] = (
            abatement_cost(cv, pl.abatement)[smes] + off + price * (pl.allowances[smes] - alloc)
        )

    def _sme_pools(self, t, year, instr, cv, price, last_output, last_emissions):
        """Sub-quotas carved out of each chain's core firm: the core firm splits part of its
        own pre-allocation (``sub_quota_share`` x its SMEs' benchmark allocation, at most what
        it holds) into sub-quotas by the chain's strategy. Nothing is issued: the core firm's
        holding falls by exactly what its SMEs receive, inside the period's total."""
        sc, pop = self.sc, self.pop
        n = pop.n
        sq_in = np.zeros(n, dtype=np.int64)
        sq_out = np.zeros(n, dtype=np.int64)
        for c, cid in enumerate(pop.chain_ids):
            spec = sc.chains[pop.chain_spec[c]]
            smes = np.nonzero((pop.chain == c) & pop.sme)[0]
            if len(smes) == 0 or spec.sub_quota_share <= 0:
                continue
            core = int(pop.core_of_chain[c])
            bm = np.array(
                [
                    self.bench.get(pop.sector_names[pop.sector[i]], 0.0)
                    if self.bench
                    else last_emissions[i] / max(last_output[i], 1) * (1 - sc.allocation.reduction)
                    for i in smes
                ]
            )
            pool = int(math.floor(spec.sub_quota_share * (bm * last_output[smes]).sum()))
            pool = min(pool, int(self.market.h[core]))
            if pool <= 0:
                continue
            terms = dict(
                revenue_share_ppm=_ppm(spec.revenue_share),
                surplus_rule=spec.surplus_rule,
                shortfall_rule=spec.shortfall_rule,
                chain_id=cid,
            )
            if spec.split_strategy in RULES_STRATEGY:
                evs = self.send(
                    SplitSubQuotas(
                        parent=pop.ids[core],
                        instrument=instr,
                        amount=pool,
                        smes=tuple(pop.ids[i] for i in smes),
                        strategy=RULES_STRATEGY[spec.split_strategy],
                        **terms,
                    )
                )
                parts = {
                    p[0]: p[1] for e in evs if type(e).__name__ == "SubQuotasSplit" for p in e.parts
                }
                amounts = np.array([parts.get(pop.ids[i], 0) for i in smes])
            else:
                w = split_weights(
                    spec.split_strategy,
                    smes,
                    pop,
                    output=last_output,
                    baseline=last_emissions,
                    curves=cv,
                    price=price,
                    chain=c,
                )
                amounts = _largest_remainder(pool, w)
                self.send_all(
                    [
                        CreateSubQuota(
                            parent=pop.ids[core],
                            sme=pop.ids[i],
                            instrument=instr,
                            qty=int(q),
                            **terms,
                        )
                        for i, q in zip(smes, amounts)
                        if q > 0
                    ]
                )
            sq_in[smes] += amounts
            sq_out[core] += int(amounts.sum())
        return sq_in, sq_out

    def _period_row(
        self,
        t,
        year,
        rec,
        rounds,
        close_price,
        avg_price,
        vol,
        base,
        verified,
        abate,
        allowances,
        target,
        lc,
        cf,
        o_use,
        ev,
        locked_days,
        cleared,
        market,
    ) -> dict:
        m = self.sc.market
        bau = float(base.sum())
        ac = float(rec["abatement_cost"][t].sum())
        oc = float(rec["offset_cost"][t].sum())
        nt_ac = float(rec["no_trade_abatement_cost"][t].sum())
        nt_oc = float(rec["no_trade_offset_cost"][t].sum())
        row = dict(
            period=t + 1,
            year=year,
            close_price=round(close_price, 4),
            vwap=round(avg_price, 4),
            volume=int(vol),
            trades=sum(x["trades"] for x in rounds if x["period"] == t + 1),
            trading_days=sum(1 for x in rounds if x["period"] == t + 1 and x["phase"] == "trading"),
            limit_locked_days=len(locked_days),
            cleared=bool(cleared),
            baseline_emissions=bau,
            emissions=int(verified.sum()),
            allocation=int(rec["allocation"][t].sum()),
            allocation_target=int(target),
            allowances_available=allowances,
            required_reduction=bau - allowances,
            abatement=float(abate.sum()),
            abatement_cost=ac,
            offset_cost=oc,
            compliance_cost=ac + oc,
            no_trade_abatement_cost=nt_ac,
            no_trade_offset_cost=nt_oc,
            no_trade_compliance_cost=nt_ac + nt_oc,
            least_cost_price=round(lc.price, 4),
            least_cost_mac=round(lc.mac, 4),
            least_cost_corner=lc.corner,
            least_cost_abatement_cost=lc.abatement_cost,
            least_cost_offset_cost=lc.offset_cost,
            least_cost_compliance_cost=lc.total_cost,
            least_cost_offsets_used=round(lc.offsets_used, 2),
            offsets_used=int(o_use.sum()),
            shortfall=int(ev["shortfall"].sum()),
            penalties=float(ev["penalty"].sum()),
            non_compliant=int((ev["shortfall"] > 0).sum()),
            net_bought_sum=int((market.bought - market.sold).sum()),
            sme_revenue=float(market.sme_revenue.sum() / FEN),
            price_at_cap=bool(close_price >= m.price_cap * 0.999),
        )
        if cf is not None:
            row.update(
                analytic_price=round(cf["price"], 4),
                analytic_mac=round(cf["mac"], 4),
                analytic_offsets_used=round(cf["offsets_used"], 2),
            )
        return row

    def _now(self) -> int:
        seq = getattr(self.gw, "seq", None)
        return seq.ts if seq is not None else time.time_ns()

    def _result(self, rec, rounds, period_rows, runtime) -> RunResult:
        sc, pop = self.sc, self.pop
        vol = sum(r["volume"] for r in rounds)
        notional = sum(r["notional"] for r in rounds)
        obligation = rec["obligation"].sum()
        summary = {
            "scenario": sc.scenario.name,
            "seed": self.seed,
            "periods": self.T,
            "firms": pop.n,
            "mean_price": round(notional / vol, 4) if vol else None,
            "final_price": period_rows[-1]["close_price"],
            "total_emissions": int(rec["emissions"].sum()),
            "total_baseline_emissions": float(rec["baseline_emissions"].sum()),
            "total_allocation": int(rec["allocation"].sum()),
            "total_abatement": float(rec["abatement"].sum()),
            "total_abatement_cost": float(rec["abatement_cost"].sum()),
            "total_offset_cost": float(rec["offset_cost"].sum()),
            "total_compliance_cost": float(rec["abatement_cost"].sum() + rec["offset_cost"].sum()),
            "no_trade_abatement_cost": float(rec["no_trade_abatement_cost"].sum()),
            "no_trade_compliance_cost": float(
                rec["no_trade_abatement_cost"].sum() + rec["no_trade_offset_cost"].sum()
            ),
            "least_cost_abatement_cost": float(
                sum(p["least_cost_abatement_cost"] for p in period_rows)
            ),
            "least_cost_compliance_cost": float(
                sum(p["least_cost_compliance_cost"] for p in period_rows)
            ),
            "final_least_cost_price": period_rows[-1]["least_cost_price"],
            "offset_share_used": float(rec["offsets_used"].sum() / obligation)
            if obligation
            else 0.0,
            "limit_locked_days": int(sum(p["limit_locked_days"] for p in period_rows)),
            "allocation_total": sc.rules.allocation_total
            if sc.allocation.mode == "intensity"
            else "fixed",
            "total_penalties": float(rec["penalty"].sum()),
            "total_shortfall": int(rec["shortfall"].sum()),
            "sme_revenue": float(rec["sme_revenue"].sum()),
            "volume": int(vol),
            "trades": int(sum(r["trades"] for r in rounds)),
            "order_rejects": int(sum(r["rejects"] for r in rounds)),
            "commands": int(self.gw.commands),
            "runtime_s": round(runtime, 3),
            "conservation_ok": all(p["net_bought_sum"] == 0 for p in period_rows),
            "by_period": period_rows,
        }
        if "analytic_price" in period_rows[-1]:
            summary["analytic_price"] = period_rows[-1]["analytic_price"]
        ex = getattr(self.gw, "exchange", None)
        state_hash = ""
        if ex is not None and self.verify_state:
            ex.check_invariants()
            state_hash = ex.state_hash()
            summary["state_hash"] = state_hash
        elif ex is None and hasattr(self.gw, "state_hash"):
            state_hash = summary["state_hash"] = self.gw.state_hash()
        summary["gateway"] = getattr(self.gw, "name", "in-process")
        if self.tolerated:
            summary["tolerated_rejects"] = dict(sorted(self.tolerated.items()))
        if getattr(self.gw, "skipped", None):
            summary["skipped_commands"] = dict(sorted(self.gw.skipped.items()))
        chain_names = [pop.chain_ids[c] if c >= 0 else "" for c in pop.chain]
        return RunResult(
            scenario=sc,
            seed=self.seed,
            periods=self.T,
            ids=pop.ids,
            sector=[pop.sector_names[s] for s in pop.sector],
            size_class=["sme" if s else "large" for s in pop.sme],
            chain=chain_names,
            tier=[int(x) for x in pop.tier],
            records=rec,
            rounds=rounds,
            period_rows=period_rows,
            summary=summary,
            state_hash=state_hash,
        )


def _activity_data(emissions: int) -> tuple[tuple, int]:
    """MRV activity data that gives exactly ``emissions`` t: about 80 % from coal (tce x
    0.7476 t C/tce x 44/12), the rest reported as process emissions."""
    per_tce = COAL_PPM * 44 / (12 * PPM)
    tce = int(emissions * 0.8 / per_tce)
    while tce > 0 and fuel_emissions((("coal", tce),), {"coal": COAL_PPM}, (44, 12)) > emissions:
        tce -= 1
    fe = fuel_emissions((("coal", tce),), {"coal": COAL_PPM}, (44, 12)) if tce else 0
    return ((("coal", tce),) if tce else ()), emissions - fe


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` whole tonnes in proportion to ``weights``; the parts sum to ``total``."""
    w = np.asarray(weights, dtype=float)
    if w.sum() <= 0:
        w = np.ones_like(w)
    raw = total * w / w.sum()
    base = np.floor(raw).astype(np.int64)
    left = total - int(base.sum())
    if left > 0:
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:left]] += 1
    return base


def run_scenario(
    sc: Scenario,
    seed: int | None = None,
    periods: int | None = None,
    gateway=None,
    progress: bool = False,
    label: str = "simulate",
    verify_state: bool = True,
) -> RunResult:
    """Run a scenario. ``verify_state`` checks the core's ledger and book invariants and
    records its state hash at the end (seconds on very large runs)."""
    sim = Simulation(
        sc, seed=seed, periods=periods, gateway=gateway, progress=progress, label=label
    )
    sim.verify_state = verify_state
    return sim.run()
