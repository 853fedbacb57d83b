"""Agents: the firm population as numpy arrays, with marginal abatement cost curves.

Every firm's MAC curve is piecewise linear through K points (abatement in tonnes, CNY/t); a
linear curve MAC(a) = c*a is the two-point case (0, 0) -> (a_max, c*a_max). Curves are stored
as shares of baseline emissions so they follow a firm's size from period to period; the
functions below evaluate them for all firms at once:

* :func:`abatement_at`   a_i(p): the abatement where MAC_i reaches p (the MAC's inverse);
* :func:`mac_at`         MAC_i(a);
* :func:`abatement_cost` C_i(a) = integral of MAC_i from 0 to a.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .scenario import MacConfig, Scenario


@dataclass
class Population:
    ids: list[str]
    sector: np.ndarray  # int index into sector_names
    sector_names: list[str]
    sme: np.ndarray  # bool
    chain: np.ndarray  # int index into chain_ids, -1 = none
    chain_ids: list[str]
    chain_spec: list[int]  # chain index -> index into scenario.chains
    tier: np.ndarray  # int, -1 = none
    core_of_chain: np.ndarray  # chain index -> firm index of its core firm
    edges: list[list[tuple[int, int]]]  # per chain: (supplier, customer) firm indices
    output: np.ndarray  # 10,000 CNY, current period
    growth: np.ndarray  # mean growth per period
    intensity: np.ndarray  # baseline intensity, t per 10,000 CNY
    fixed_emissions: np.ndarray  # baseline emissions given directly (nan = from output)
    fixed_allocation: np.ndarray  # nan = by rule
    share_pts: np.ndarray  # (n, K) abatement as share of baseline emissions
    cost_pts: np.ndarray  # (n, K) CNY/t at those points
    slope_abs: np.ndarray  # linear absolute slope CNY/t per t (nan = share-based)
    max_share: np.ndarray
    covered: np.ndarray = field(default=None)  # bool: gets its own allocation

    @property
    def n(self) -> int:
        return len(self.ids)


def _lognormal_unit(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    """Multipliers with mean 1."""
    if sigma <= 0:
        return np.ones(size)
    return np.exp(rng.normal(-0.5 * sigma * sigma, sigma, size))


def _curve(mac: MacConfig) -> tuple[list[float], list[float], float, float]:
    """(shares, costs, absolute slope or nan, max share)."""
    if mac.kind == "linear":
        ms = mac.max_abatement_share
        if mac.slope is not None:
            return [0.0, ms], [0.0, 0.0], float(mac.slope), ms
        return [0.0, ms], [0.0, mac.full_abatement_cost * ms], float("nan"), ms
    shares = [p[0] for p in mac.points]
    costs = [p[1] for p in mac.points]
    return shares, costs, float("nan"), shares[-1]


def build_population(sc: Scenario, rng: np.random.Generator) -> Population:
    sectors = {s.name: i for i, s in enumerate(sc.sectors)}
    rows: list[dict] = []

    def gen(
        sector_name: str,
        n: int,
        prefix: str,
        sme_share: float = 0.0,
        size_class: str | None = None,
        scale: float = 1.0,
        chain: int = -1,
        tier: int = -1,
    ) -> list[int]:
        s = sc.sectors[sectors[sector_name]]
        out = s.output_mean * scale * _lognormal_unit(rng, s.output_dispersion, n)
        inten = s.intensity * _lognormal_unit(rng, s.intensity_dispersion, n)
        mult = _lognormal_unit(rng, s.mac.dispersion, n)
        growth = s.output_growth + s.output_growth_sd * rng.standard_normal(n)
        if size_class is None:
            smes = rng.random(n) < sme_share
        else:
            smes = np.full(n, size_class == "sme")
        first = len(rows)
        for k in range(n):
            rows.append(
                dict(
                    id=f"{prefix}{k + 1:05d}" if n > 1 or chain < 0 else prefix,
                    sector=sectors[sector_name],
                    sme=bool(smes[k]),
                    chain=chain,
                    tier=tier,
                    output=float(out[k]),
                    growth=float(growth[k]),
                    intensity=float(inten[k]),
                    fixed_e=np.nan,
                    fixed_a=np.nan,
                    mac=s.mac,
                    mult=float(mult[k]),
                )
            )
        return list(range(first, len(rows)))

    for s in sc.sectors:
        if s.firms:
            gen(s.name, s.firms, f"{s.name[:3].upper()}-", s.sme_share)
    for f in sc.firms:
        s = sc.sectors[sectors[f.sector]]
        mac = f.mac or s.mac
        e0 = f.baseline_emissions
        out = f.output if f.output is not None else e0 / s.intensity
        inten = e0 / out if e0 is not None else s.intensity
        rows.append(
            dict(
                id=f.id,
                sector=sectors[f.sector],
                sme=f.size_class == "sme",
                chain=-1,
                tier=-1,
                output=float(out),
                growth=0.0 if e0 else s.output_growth,
                intensity=float(inten),
                fixed_e=float(e0) if e0 is not None else np.nan,
                fixed_a=float(f.allocation) if f.allocation is not None else np.nan,
                mac=mac,
                mult=1.0,
            )
        )
    chain_ids: list[str] = []
    chain_spec: list[int] = []
    cores: list[int] = []
    edges: list[list[tuple[int, int]]] = []
    for ci, c in enumerate(sc.chains):
        for k in range(c.count):
            cid = c.id if c.count == 1 else f"{c.id}{k + 1:04d}"
            idx = len(chain_ids)
            chain_ids.append(cid)
            chain_spec.append(ci)
            core = gen(
                c.core_sector,
                1,
                f"{cid}-CORE",
                size_class="large",
                scale=c.core_output_scale,
                chain=idx,
                tier=0,
            )
            cores.append(core[0])
            prev = core
            es: list[tuple[int, int]] = []
            for t in sorted(c.tiers, key=lambda t: t.tier):
                members = gen(
                    t.sector,
                    t.firms,
                    f"{cid}-T{t.tier}-",
                    size_class=t.size_class,
                    scale=t.output_scale,
                    chain=idx,
                    tier=t.tier,
                )
                for j, m in enumerate(members):
                    es.append((m, prev[j % len(prev)]))
                prev = members
            edges.append(es)

    n = len(rows)
    K = max(len(_curve(r["mac"])[0]) for r in rows)
    share_pts = np.zeros((n, K))
    cost_pts = np.zeros((n, K))
    slope_abs = np.full(n, np.nan)
    max_share = np.zeros(n)
    for i, r in enumerate(rows):
        sh, co, sl, ms = _curve(r["mac"])
        sh = sh + [sh[-1]] * (K - len(sh))
        co = co + [co[-1]] * (K - len(co))
        share_pts[i] = sh
        cost_pts[i] = np.asarray(co) * r["mult"]
        slope_abs[i] = sl * r["mult"] if sl == sl else np.nan
        max_share[i] = ms
    ids = [r["id"] for r in rows]
    if len(set(ids)) != n:
        raise ValueError("generated firm ids collide; rename sectors or chains")
    pop = Population(
        ids=ids,
        sector=np.array([r["sector"] for r in rows], dtype=np.int64),
        sector_names=[s.name for s in sc.sectors],
        sme=np.array([r["sme"] for r in rows], dtype=bool),
        chain=np.array([r["chain"] for r in rows], dtype=np.int64),
        chain_ids=chain_ids,
        chain_spec=chain_spec,
        tier=np.array([r["tier"] for r in rows], dtype=np.int64),
        core_of_chain=np.array(cores, dtype=np.int64),
        edges=edges,
        output=np.array([r["output"] for r in rows]),
        growth=np.array([r["growth"] for r in rows]),
        intensity=np.array([r["intensity"] for r in rows]),
        fixed_emissions=np.array([r["fixed_e"] for r in rows]),
        fixed_allocation=np.array([r["fixed_a"] for r in rows]),
        share_pts=share_pts,
        cost_pts=cost_pts,
        slope_abs=slope_abs,
        max_share=max_share,
    )
    # SMEs inside a chain are covered through sub-quotas, not a direct allocation
    pop.covered = ~(pop.sme & (pop.chain >= 0))
    return pop


@dataclass
class Curves:
    """MAC curves in tonnes for one period: points (a, m) per firm, shape (n, K). Technical
    abatement only: offsets are a compliance option priced in :mod:`exchange.sim.equilibrium`."""

    a: np.ndarray
    m: np.ndarray

    @classmethod
    def for_period(cls, pop: Population, baseline: np.ndarray) -> "Curves":
        a = pop.share_pts * baseline[:, None]
        m = pop.cost_pts.copy()
        lin = ~np.isnan(pop.slope_abs)
        if lin.any():
            amax = pop.max_share[lin] * baseline[lin]
            m[lin, -1] = pop.slope_abs[lin] * amax
            m[lin, :-1] = 0.0
            if m.shape[1] > 2:  # padded linear curves: keep the points on the line
                fr = pop.share_pts[lin] / pop.max_share[lin][:, None]
                m[lin] = fr * m[lin, -1][:, None]
        return cls(a, m)

    @property
    def a_max(self) -> np.ndarray:
        return self.a[:, -1]


def abatement_at(cv: Curves, p) -> np.ndarray:
    """a_i(p) = the largest abatement whose MAC is <= p (0 below the curve's start, a_max at
    or above its end). ``p`` is a scalar or a per-firm array."""
    a, m = cv.a, cv.m
    n, K = a.shape
    p = np.broadcast_to(np.asarray(p, dtype=float), (n,))
    k = (m <= p[:, None]).sum(axis=1) - 1
    res = np.zeros(n)
    top = k >= K - 1
    res[top] = a[top, -1]
    mid = (k >= 0) & ~top
    if mid.any():
        r = np.nonzero(mid)[0]
        kk = k[r]
        m0, m1 = m[r, kk], m[r, kk + 1]
        a0, a1 = a[r, kk], a[r, kk + 1]
        res[r] = a0 + (p[r] - m0) / (m1 - m0) * (a1 - a0)
    return res


def mac_at(cv: Curves, x) -> np.ndarray:
    """MAC_i(x) for per-firm abatement x (clipped to [0, a_max])."""
    a, m = cv.a, cv.m
    n, K = a.shape
    x = np.clip(np.broadcast_to(np.asarray(x, dtype=float), (n,)), 0.0, a[:, -1])
    k = np.clip((a <= x[:, None]).sum(axis=1) - 1, 0, K - 2)
    r = np.arange(n)
    a0, a1, m0, m1 = a[r, k], a[r, k + 1], m[r, k], m[r, k + 1]
    w = np.where(a1 > a0, (x - a0) / np.where(a1 > a0, a1 - a0, 1.0), 0.0)
    return m0 + w * (m1 - m0)


def abatement_cost(cv: Curves, x) -> np.ndarray:
    """C_i(x) = integral of MAC_i over [0, x] in CNY (x clipped to [0, a_max])."""
    a, m = cv.a, cv.m
    n, K = a.shape
    x = np.clip(np.broadcast_to(np.asarray(x, dtype=float), (n,)), 0.0, a[:, -1])
    total = np.zeros(n)
    for k in range(K - 1):
        lo, hi = a[:, k], a[:, k + 1]
        seg = np.clip(x - lo, 0.0, np.maximum(hi - lo, 0.0))
        width = hi - lo
        slope = np.where(width > 0, (m[:, k + 1] - m[:, k]) / np.where(width > 0, width, 1), 0)
        total += seg * (m[:, k] + 0.5 * slope * seg)
    return total
