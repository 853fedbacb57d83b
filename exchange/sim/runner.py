"""The multi-period simulation: firms abate and trade through the real exchange core.

One period (a compliance year, vintage ``CEA-<year>``)::

  1. output grows; baseline emissions E0 = intensity x output (or given);
  2. pre-allocation (pre_ratio x benchmark x last verified output x phi) is issued; a supply
     chain's core firm also receives its SMEs' pool and splits it into sub-quotas by the
     chain's strategy (CreateSubQuota, revenue share and surplus/shortfall terms);
  3. offsets: a supplier offers CCER at the offset price; firms buy up to the offset cap when
     allowances trade above it;
  4. trading, ``rounds_per_period`` call-style rounds (see :mod:`exchange.sim.trading`):
     every firm quotes a ladder of DAY limit orders priced from its marginal abatement cost at
     its current position; the day ends (EndOfDay), the indicative clearing price of the
     ladders centres the next round's narrower grid;
  5. abatement: each firm abates what it still lacks (its MAC then equals the price);
  6. MRV: verified emissions and output; true-up of the allocation to verified output;
     allocation factors and benchmarks update (the rules);
  7. settlement rounds: firms buy remaining shortfalls / sell surpluses near the last price;
  8. compliance: surrender offsets (up to the cap) and allowances; shortfall -> penalty;
     SME surplus reverts to the parent or banks; surplus banks (if banking).

Every market action is a command through the gateway; positions and cash come back as
events (Posting, Trade). Where the rules or compliance modules are not registered in the
engine, steps 6 and 8 are computed here from the same formulas (see docs/SIMULATION.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.commands import (
    AddInstrument, CreateSubQuota, DepositCash, IssueUnits, PlaceOrder, RegisterFirm,
    RegisterSupplyChain, SetPriceBand, TransferUnits,
)
from ..core.events import CommandRejected, Trade
from ..core.exchange import AddSegment
from .agents import Curves, abatement_at, abatement_cost, build_population, least_cost_price
from .gateway import InProcessGateway
from .progress import Progress
from .scenario import Scenario
from .split import split_weights
from .trading import Market

OFFSET_SUPPLIER = "OFFSET-SUPPLY"
FEN = 100

# per firm x period records written to firms.csv (in this order)
RECORD_FIELDS = (
    "output", "baseline_emissions", "benchmark", "phi", "pre_allocation", "true_up",
    "allocation", "sub_quota_in", "sub_quota_out", "bought", "sold", "net_bought",
    "abatement", "emissions", "verified_intensity", "offsets_bought", "offsets_used",
    "allowances_surrendered", "shortfall", "penalty", "banked", "abatement_cost",
    "no_trade_abatement", "trade_cash", "sme_revenue",
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
    records: dict[str, np.ndarray]   # name -> (periods, n)
    rounds: list[dict]
    period_rows: list[dict]
    summary: dict
    state_hash: str = ""
    extra: dict = field(default_factory=dict)


def _fen(cny: float) -> int:
    return max(1, int(round(cny * FEN)))


class Simulation:
    def __init__(self, sc: Scenario, seed: int | None = None, periods: int | None = None,
                 gateway=None, progress: bool = False, label: str = "simulate"):
        self.sc = sc
        self.seed = sc.scenario.seed if seed is None else int(seed)
        self.T = periods or sc.scenario.periods
        self.rng = np.random.default_rng(self.seed)
        self.pop = build_population(sc, self.rng)
        self.order_rng = np.random.default_rng(self.seed + 1_000_003)
        self.gw = gateway if gateway is not None else InProcessGateway()
        rounds = sc.market.rounds_per_period + sc.market.settlement_rounds
        self.progress = Progress(self.T * rounds, label, enabled=progress)

    # ------------------------------------------------------------------ plumbing
    def send(self, cmd) -> list:
        evs = self.gw.send(cmd)
        for ev in evs:
            if isinstance(ev, CommandRejected):
                raise SimulationError(f"{cmd.TYPE} refused: {ev.code} {ev.message}")
        return evs

    def send_all(self, cmds) -> None:
        for cmd, evs in zip(cmds, self.gw.send_all(cmds)):
            for ev in evs:
                if isinstance(ev, CommandRejected):
                    raise SimulationError(f"{cmd.TYPE} refused: {ev.code} {ev.message}")

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        sc, pop = self.sc, self.pop
        m = sc.market
        cmds: list = [
            AddSegment(name="main", max_order_qty=99_999, fee_bps=m.fee_bps, access="all"),
            AddSegment(name="sme", max_order_qty=99_999, fee_bps=0, access="sme_sell_any_buy"),
        ]
        for i, fid in enumerate(pop.ids):
            sec = pop.sector_names[pop.sector[i]]
            cmds.append(RegisterFirm(firm_id=fid, name=fid, sector=sec, product=sec,
                                     size_class="sme" if pop.sme[i] else "large"))
        if sc.offsets.enabled:
            cmds.append(RegisterFirm(firm_id=OFFSET_SUPPLIER, name="offset project developer",
                                     sector="offsets", size_class="large"))
        per_t = m.cash_per_tonne or 2.0 * m.price_cap
        e0 = self._baseline(self.pop.output * (1 + self.pop.growth))
        for i, fid in enumerate(pop.ids):
            cmds.append(DepositCash(account=fid, amount=_fen(per_t * max(e0[i], 1.0) * 1.5)))
        for c, cid in enumerate(pop.chain_ids):
            members = tuple((pop.ids[i], int(pop.tier[i])) for i in np.nonzero(pop.chain == c)[0])
            outdeg: dict[int, int] = {}
            for s, _ in pop.edges[c]:
                outdeg[s] = outdeg.get(s, 0) + 1
            edges = tuple((pop.ids[s], pop.ids[t], 1_000_000 // outdeg[s])
                          for s, t in pop.edges[c])
            cmds.append(RegisterSupplyChain(chain_id=cid, members=members, edges=edges))
        self.send_all(cmds)

    def _baseline(self, output: np.ndarray) -> np.ndarray:
        pop = self.pop
        e = pop.intensity * output
        fixed = ~np.isnan(pop.fixed_emissions)
        e[fixed] = pop.fixed_emissions[fixed]
        return e

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        sc, pop = self.sc, self.pop
        n, T = pop.n, self.T
        m = sc.market
        rules = sc.rules
        self._setup()
        idx = {fid: i for i, fid in enumerate(pop.ids)}
        rec = {k: np.zeros((T, n)) for k in RECORD_FIELDS}
        market = Market(self.gw, pop, idx, m, self.order_rng)

        # benchmarks per sector, factors per firm
        nsec = len(sc.sectors)
        bench = np.array([s.benchmark if s.benchmark is not None
                          else s.intensity * (1 - m.benchmark_stringency) for s in sc.sectors])
        phi = np.full(n, rules.phi_initial)
        last_output = pop.output.copy()
        intensity0 = pop.intensity.copy()
        last_emissions = self._baseline(last_output)
        bank = np.zeros(n, dtype=np.int64)
        price = float(m.initial_price)
        width = float(m.initial_width)
        rounds: list[dict] = []
        period_rows: list[dict] = []
        fixed_cap_base = None
        cap = sc.offsets.cap if sc.offsets.enabled else 0.0
        chains = sc.chains

        for t in range(T):
            year = sc.scenario.start_year + t
            instr = f"CEA-{year}"
            off_instr = f"{sc.offsets.offset_type}-{year}"
            # 1. output and baseline emissions
            growth = pop.growth + 0.0
            output = last_output * (1 + growth)
            intensity = intensity0 * np.array(
                [(1 - sc.sectors[s].autonomous_improvement) ** (t + 1) for s in pop.sector])
            base = intensity * output
            fixed = ~np.isnan(pop.fixed_emissions)
            base[fixed] = pop.fixed_emissions[fixed]
            output[fixed] = pop.output[fixed]
            cv = Curves.for_period(pop, base)
            rec["output"][t] = output
            rec["baseline_emissions"][t] = base
            rec["benchmark"][t] = bench[pop.sector]
            rec["phi"][t] = phi
            band = 0 if m.price_band_bps == 0 else m.price_band_bps
            cmds = [AddInstrument(symbol=instr, kind="allowance", vintage=year,
                                  reference_price=_fen(price)),
                    SetPriceBand(instrument=instr, band_bps=band)]
            if sc.offsets.enabled:
                cmds += [AddInstrument(symbol=off_instr, kind="offset", vintage=year,
                                       offset_type=sc.offsets.offset_type,
                                       reference_price=_fen(sc.offsets.price)),
                         SetPriceBand(instrument=off_instr, band_bps=band)]
            self.send_all(cmds)
            market.new_period(instr, _fen(price))

            # 2. allocation: final (A = B x Y x phi, or fixed) and pre-allocation
            if sc.allocation.mode == "fixed":
                if fixed_cap_base is None:
                    fa = pop.fixed_allocation.copy()
                    nofa = np.isnan(fa)
                    fa[nofa] = base[nofa] * (1 - sc.allocation.reduction)
                    fixed_cap_base = fa
                final = fixed_cap_base * (1 - sc.allocation.cap_decline) ** t
                pre = sc.allocation.pre_ratio * final
            else:
                final = bench[pop.sector] * output * phi
                pre = sc.allocation.pre_ratio * bench[pop.sector] * last_output * phi
            final = np.floor(np.where(pop.covered, final, 0.0)).astype(np.int64)
            pre = np.minimum(np.floor(np.where(pop.covered, pre, 0.0)).astype(np.int64), final
                             ) if sc.allocation.pre_ratio < 1 else final.copy()
            # SME pools: the core firm receives its SMEs' benchmark allocation and splits it
            sq_in = np.zeros(n, dtype=np.int64)
            sq_out = np.zeros(n, dtype=np.int64)
            sq_cmds = []
            for c, cid in enumerate(pop.chain_ids):
                spec = chains[pop.chain_spec[c]]
                smes = np.nonzero((pop.chain == c) & pop.sme)[0]
                if len(smes) == 0 or spec.sub_quota_share <= 0:
                    continue
                core = int(pop.core_of_chain[c])
                pool_val = spec.sub_quota_share * (
                    bench[pop.sector[smes]] * output[smes] * phi[smes]).sum()
                pool = int(math.floor(pool_val))
                if pool <= 0:
                    continue
                w = split_weights(spec.split_strategy, smes, pop, output=last_output,
                                  baseline=last_emissions, curves=cv, price=price, chain=c)
                amounts = _largest_remainder(pool, w)
                pre[core] += pool
                final[core] += pool
                for i, q in zip(smes, amounts):
                    if q <= 0:
                        continue
                    sq_cmds.append(CreateSubQuota(
                        parent=pop.ids[core], sme=pop.ids[i], instrument=instr, qty=int(q),
                        revenue_share_ppm=int(round(spec.revenue_share * 1_000_000)),
                        surplus_rule=spec.surplus_rule, shortfall_rule=spec.shortfall_rule,
                        chain_id=cid))
                    sq_in[i] += q
                    sq_out[core] += q
            issue = [IssueUnits(account=pop.ids[i], instrument=instr, qty=int(pre[i]),
                                source="allocation", ref=f"{year}:pre")
                     for i in np.nonzero(pre > 0)[0]]
            self.send_all(issue)
            market.h += pre
            self.send_all(sq_cmds)
            market.h += sq_in - sq_out
            rec["pre_allocation"][t] = pre
            rec["sub_quota_in"][t] = sq_in
            rec["sub_quota_out"][t] = sq_out
            pending = final - pre  # expected true-up (firms forecast their own output)

            # 3. offsets
            o_held = np.zeros(n, dtype=np.int64)
            if sc.offsets.enabled and cap > 0 and price > sc.offsets.price:
                exp_em = np.maximum(base - abatement_at(cv, price), 0.0)
                want = np.floor(cap * exp_em).astype(np.int64)
                supply = sc.offsets.supply_per_period or int(want.sum())
                if supply > 0:
                    self.send(IssueUnits(
                        account=OFFSET_SUPPLIER, instrument=off_instr, qty=int(supply),
                        source="offset_project", ref=f"{year}"))
                    o_held = market.buy_offsets(off_instr, _fen(sc.offsets.price), supply, want)
            rec["offsets_bought"][t] = o_held
            o_use_est = np.minimum(o_held, np.floor(cap * np.maximum(
                base - abatement_at(cv, price), 0.0)).astype(np.int64))

            # 4. trading rounds on the MAC (a new year: reopen the grid around last close)
            width = max(width, m.initial_width / 2)
            for r in range(m.rounds_per_period):
                need = base - market.h - bank - pending - o_use_est
                info = market.call_round(cv, need, price, width)
                price, width = info["next_price"], info["next_width"]
                info.update(period=t + 1, round=r + 1, phase="trading")
                rounds.append(info)
                self.progress.update(1, f"period {t + 1}/{T} price {price:8.2f}")
            close_price = price

            # 5. abatement
            need = base - market.h - bank - pending - o_use_est
            abate = np.clip(need, 0.0, cv.a_max)
            emissions = np.maximum(base - abate, 0.0)
            verified = np.round(emissions).astype(np.int64)
            rec["abatement"][t] = abate
            rec["emissions"][t] = verified
            rec["verified_intensity"][t] = np.where(output > 0, verified / output, 0.0)
            rec["abatement_cost"][t] = abatement_cost(cv, abate)

            # 6. MRV, true-up, factors and benchmarks
            true_up = final - pre
            pos = np.nonzero(true_up > 0)[0]
            self.send_all([IssueUnits(account=pop.ids[i], instrument=instr,
                                      qty=int(true_up[i]), source="allocation",
                                      ref=f"{year}:true-up") for i in pos])
            market.h[pos] += true_up[pos]
            clawback = np.maximum(-true_up, 0)  # added to the obligation (no retire command)
            rec["true_up"][t] = true_up
            rec["allocation"][t] = final
            v_int = np.where(output > 0, verified / np.maximum(output, 1e-12), 0.0)
            if sc.allocation.mode == "intensity":
                if rules.update_factors:
                    phi = _update_phi(phi, v_int, bench[pop.sector], rules, pop, pop.covered)
                if rules.update_benchmarks:
                    bench = _update_benchmarks(bench, v_int, output, pop.sector, nsec, rules,
                                               pop.covered)

            # 7. settlement rounds: cover what is still short, sell what is spare
            obligation = verified + clawback
            o_use = np.minimum(o_held, np.floor(cap * verified).astype(np.int64))
            for r in range(m.settlement_rounds):
                need = (obligation - market.h - bank - o_use).astype(float)
                info = market.settle_round(need, price)
                info.update(period=t + 1, round=m.rounds_per_period + r + 1, phase="settlement")
                rounds.append(info)
                self.progress.update(1, f"period {t + 1}/{T} price {price:8.2f}")

            # 8. compliance
            rem = obligation - o_use
            from_bank = np.minimum(bank, rem)
            rem = rem - from_bank
            from_cur = np.minimum(np.maximum(market.h, 0), rem)
            short = rem - from_cur
            spare = market.h - from_cur
            # SME shortfall covered by the parent where the terms say so
            for c in range(len(pop.chain_ids)):
                spec = chains[pop.chain_spec[c]]
                core = int(pop.core_of_chain[c])
                smes = np.nonzero((pop.chain == c) & pop.sme)[0]
                if spec.shortfall_rule == "parent":
                    for i in smes:
                        if short[i] > 0 and spare[core] > 0:
                            q = min(short[i], spare[core])
                            self.send(TransferUnits(from_account=pop.ids[core],
                                                    to_account=pop.ids[i], instrument=instr,
                                                    qty=int(q)))
                            spare[core] -= q
                            short[i] -= q
                            from_cur[i] += q
                if spec.surplus_rule == "revert":
                    for i in smes:
                        if spare[i] > 0:
                            self.send(TransferUnits(from_account=pop.ids[i],
                                                    to_account=pop.ids[core], instrument=instr,
                                                    qty=int(spare[i])))
                            spare[core] += spare[i]
                            spare[i] = 0
            vol = sum(x["volume"] for x in rounds if x["period"] == t + 1)
            notional = sum(x["notional"] for x in rounds if x["period"] == t + 1)
            avg_price = notional / vol if vol else close_price
            penalty = short * sc.compliance.penalty_multiple * avg_price + np.where(
                short > 0, sc.compliance.fixed_fine, 0.0)
            bank = bank - from_bank + (spare if sc.compliance.banking else 0)
            rec["offsets_used"][t] = o_use
            rec["allowances_surrendered"][t] = from_bank + from_cur
            rec["shortfall"][t] = short
            rec["penalty"][t] = penalty
            rec["banked"][t] = bank
            rec["bought"][t] = market.bought
            rec["sold"][t] = market.sold
            rec["net_bought"][t] = market.bought - market.sold
            rec["trade_cash"][t] = market.cash / FEN
            rec["sme_revenue"][t] = market.sme_revenue / FEN

            # counterfactuals: no trade, and the least-cost allocation of the same reduction
            held_no_trade = final + sq_in - sq_out
            nt = np.clip(base - held_no_trade - o_use_est, 0.0, cv.a_max)
            rec["no_trade_abatement"][t] = abatement_cost(cv, nt)
            required = float((base - held_no_trade - o_use_est).sum())
            lc_price = least_cost_price(cv, required, m.price_cap)
            lc_cost = float(abatement_cost(cv, abatement_at(cv, lc_price)).sum())
            row = dict(period=t + 1, year=year, close_price=round(close_price, 4),
                       vwap=round(avg_price, 4), volume=int(vol),
                       trades=sum(x["trades"] for x in rounds if x["period"] == t + 1),
                       baseline_emissions=float(base.sum()), emissions=int(verified.sum()),
                       allocation=int(final.sum()), required_reduction=required,
                       abatement=float(abate.sum()),
                       abatement_cost=float(rec["abatement_cost"][t].sum()),
                       no_trade_abatement_cost=float(rec["no_trade_abatement"][t].sum()),
                       least_cost_price=round(lc_price, 4), least_cost_abatement_cost=lc_cost,
                       offsets_used=int(o_use.sum()), shortfall=int(short.sum()),
                       penalties=float(penalty.sum()),
                       net_bought_sum=int((market.bought - market.sold).sum()),
                       sme_revenue=float(market.sme_revenue.sum() / FEN))
            if sc.scenario.analytic:
                row["analytic_price"] = _analytic_price(cv, required)
            period_rows.append(row)
            last_output = output
            last_emissions = verified.astype(float)
        self.progress.close()
        return self._result(rec, rounds, period_rows, time.perf_counter() - t0)

    def _result(self, rec, rounds, period_rows, runtime) -> RunResult:
        sc, pop = self.sc, self.pop
        vol = sum(r["volume"] for r in rounds)
        notional = sum(r["notional"] for r in rounds)
        obligation = rec["emissions"].sum()
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
            "no_trade_abatement_cost": float(rec["no_trade_abatement"].sum()),
            "least_cost_abatement_cost": float(
                sum(p["least_cost_abatement_cost"] for p in period_rows)),
            "offset_share_used": float(rec["offsets_used"].sum() / obligation)
            if obligation else 0.0,
            "total_penalties": float(rec["penalty"].sum()),
            "total_shortfall": int(rec["shortfall"].sum()),
            "sme_revenue": float(rec["sme_revenue"].sum()),
            "volume": int(vol),
            "trades": int(sum(r["trades"] for r in rounds)),
            "commands": int(self.gw.commands),
            "runtime_s": round(runtime, 3),
            "conservation_ok": all(p["net_bought_sum"] == 0 for p in period_rows),
            "by_period": period_rows,
        }
        if sc.scenario.analytic:
            summary["analytic_price"] = period_rows[-1].get("analytic_price")
        ex = getattr(self.gw, "exchange", None)
        state_hash = ""
        if ex is not None:
            ex.check_invariants()
            state_hash = ex.state_hash()
            summary["state_hash"] = state_hash
        chain_names = [pop.chain_ids[c] if c >= 0 else "" for c in pop.chain]
        return RunResult(
            scenario=sc, seed=self.seed, periods=self.T, ids=pop.ids,
            sector=[pop.sector_names[s] for s in pop.sector],
            size_class=["sme" if s else "large" for s in pop.sme], chain=chain_names,
            tier=[int(x) for x in pop.tier], records=rec, rounds=rounds,
            period_rows=period_rows, summary=summary, state_hash=state_hash)


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


def _analytic_price(cv: Curves, required: float) -> float | None:
    """p* = R / sum(1/c_i) for linear MACs (two points from 0); None otherwise."""
    a, m = cv.a, cv.m
    if a.shape[1] != 2 or np.any(m[:, 0] != 0) or np.any(a[:, 0] != 0):
        return None
    c = m[:, 1] / a[:, 1]
    return float(required / np.sum(1.0 / c))


def _update_phi(phi, v_int, bench_f, rules, pop, covered) -> np.ndarray:
    """phi <- phi x (1 + alpha g) with g = 1 - I/B, plus supply-chain coupling
    kappa x sum_j w_fj max(0, g_j); step-limited and clamped (DESIGN §2)."""
    g = 1.0 - v_int / bench_f
    new = phi * (1 + np.where(g > 0, rules.alpha_up * g, rules.alpha_down * g))
    if rules.kappa > 0:
        coupling = np.zeros_like(phi)
        for es in pop.edges:
            nbr: dict[int, list[int]] = {}
            for s, c in es:
                nbr.setdefault(s, []).append(c)
                nbr.setdefault(c, []).append(s)
            for f, js in nbr.items():
                coupling[f] = sum(max(0.0, g[j]) for j in js) / len(js)
        new = new + np.minimum(rules.kappa * coupling, rules.max_step)
    new = np.clip(new, phi - rules.max_step, phi + rules.max_step)
    new = np.clip(new, rules.phi_min, rules.phi_max)
    return np.where(covered, new, phi)


def _update_benchmarks(bench, v_int, output, sector, nsec, rules, covered) -> np.ndarray:
    """B <- B - step x (B - I_bar) (I_bar = output-weighted verified intensity), tightening at
    most max_tightening per period and never loosening."""
    new = bench.copy()
    for s in range(nsec):
        sel = (sector == s) & covered
        if not sel.any():
            continue
        ibar = float((v_int[sel] * output[sel]).sum() / output[sel].sum())
        b = bench[s] - rules.benchmark_step * (bench[s] - ibar)
        b = max(b, bench[s] * (1 - rules.max_tightening))
        new[s] = min(b, bench[s])
    return new


def run_scenario(sc: Scenario, seed: int | None = None, periods: int | None = None,
                 gateway=None, progress: bool = False, label: str = "simulate") -> RunResult:
    return Simulation(sc, seed=seed, periods=periods, gateway=gateway, progress=progress,
                      label=label).run()
