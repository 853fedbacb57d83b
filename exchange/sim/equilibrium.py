"""Compliance options and the least-cost equilibrium, by the compliance module's own rule.

A firm with baseline emissions ``B_i`` that abates ``a_i`` has verified emissions
``E_i = B_i - a_i`` and must surrender that many units. Offsets of type *k* (price ``p_k``,
optional supply ``Q_k`` per period) may cover at most ``s_k x E_i`` (the type's sub-cap) and all
offsets together at most ``s x E_i`` (the offset cap) — shares of the *verified* obligation,
exactly as :class:`exchange.compliance.module.ComplianceModule` checks a surrender. The rest
is allowances.

At an allowance price ``p`` a cost-minimising firm uses every offset type cheaper than ``p``
up to its room, cheapest first: shares ``sigma_k(p)`` with ``S(p) = sum_k sigma_k <= s``.
Each tonne it emits then costs

    e(p) = (1 - S) p + sum_k sigma_k p_k           (the effective carbon cost)

because a tonne emitted also *adds* ``sigma_k`` t of offset room. So it abates until
``MAC_i(a_i) = e(p)`` and needs ``(1 - S)(B_i - a_i)`` allowances. A type whose supply ``Q_k``
is smaller than what firms would use is rationed pro rata to verified emissions: its share
becomes ``Q_k / sum_i E_i`` (a firm entitled to a share of its own emissions still counts it
at the margin).

The market clears where ``sum_i (1 - S)(B_i - a_i) = A`` (A: allowances in circulation for the
period). Trading is a way of reaching that point; the least-cost solution is the same point,
because the planner's first-order condition is the firm's (``MAC_i = (1 - S) lambda + sum
sigma_k p_k`` with lambda the shadow price of the cap). With linear MACs ``c_i a`` and one
offset type at its cap (``p_o < p``) it has a closed form:

    m* = (R - s B) / ((1 - s) sum 1/c_i)            (the common marginal abatement cost)
    p* = (m* - s p_o) / (1 - s)                      (the allowance price)

with ``R = B - A`` the required reduction; without offsets ``m* = p* = R / sum 1/c_i``. When
the offsets' use at their price would overshoot the cap's need, the equilibrium sits at the
offset price with offsets partly used (a corner): ``p* = p_o``.

Everything here is vectorised over firms (numpy); prices are CNY/t, quantities tonnes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .agents import Curves, abatement_cost, abatement_at


@dataclass(frozen=True)
class OffsetType:
    name: str
    price: float  # CNY/t
    sub_cap: float  # share of the verified obligation this type may cover
    supply: float = 0.0  # t per period; 0 = unlimited


@dataclass
class OffsetRule:
    """The offset cap ``cap`` (share of verified emissions) and the types, cheapest first."""

    cap: float = 0.0
    types: list[OffsetType] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.types = sorted(self.types, key=lambda t: (t.price, t.name))

    @property
    def active(self) -> bool:
        return self.cap > 0 and bool(self.types)

    def shares(self, p: float, total_emissions: float | None = None) -> np.ndarray:
        """sigma_k(p): the share of each type (in ``types`` order) a firm uses at allowance
        price ``p``; a type with limited supply is rationed to ``Q_k / total_emissions``."""
        out = np.zeros(len(self.types))
        used = 0.0
        for k, t in enumerate(self.types):
            if used >= self.cap - 1e-15:
                break
            if t.price < p:
                s = min(t.sub_cap, self.cap - used)
                if t.supply and total_emissions:
                    s = min(s, t.supply / total_emissions)
                out[k] = s
                used += s
        return out

    def prices(self) -> np.ndarray:
        return np.array([t.price for t in self.types])


NO_OFFSETS = OffsetRule()


@dataclass
class Plan:
    """What every firm does at one allowance price."""

    price: float
    sigma: np.ndarray  # (K,) offset shares by type
    effective: float  # e(p), CNY/t: the MAC every firm abates to
    abatement: np.ndarray  # (n,) technical abatement
    emissions: np.ndarray  # (n,) B - a
    allowances: np.ndarray  # (n,) allowances needed: (1 - S) E
    offsets: np.ndarray  # (n, K) offsets used by type

    @property
    def allowance_demand(self) -> float:
        return float(self.allowances.sum())


def plan(cv: Curves, rule: OffsetRule, base: np.ndarray, p: float) -> Plan:
    """Every firm's cost-minimising response to allowance price ``p`` (see the module doc).
    Supply rationing depends on total emissions, which depend on the shares: a few fixed-point
    steps settle it (the map is a contraction: emissions move little with the shares)."""
    sigma = rule.shares(p)
    tot = None
    for _ in range(8):
        e = (1.0 - sigma.sum()) * p + float(sigma @ rule.prices()) if len(sigma) else p
        a = abatement_at(cv, e)
        E = np.maximum(base - a, 0.0)
        if not any(t.supply for t in rule.types):
            break
        new_tot = float(E.sum())
        new_sigma = rule.shares(p, new_tot)
        if tot is not None and np.allclose(new_sigma, sigma, rtol=0, atol=1e-12):
            break
        sigma, tot = new_sigma, new_tot
    S = float(sigma.sum()) if len(sigma) else 0.0
    offsets = E[:, None] * sigma[None, :] if len(sigma) else np.zeros((len(E), 0))
    return Plan(p, sigma, e, a, E, (1.0 - S) * E, offsets)


@dataclass
class Equilibrium:
    price: float  # allowance price, CNY/t
    mac: float  # marginal abatement cost every unconstrained firm abates to
    abatement: np.ndarray  # (n,) t
    offsets: np.ndarray  # (n, K) t by type
    abatement_cost: float  # CNY, technical abatement
    offset_cost: float  # CNY spent on offsets
    corner: str = ""  # "offset_price" when the price sits at an offset type's price

    @property
    def total_cost(self) -> float:
        return self.abatement_cost + self.offset_cost

    @property
    def offsets_used(self) -> float:
        return float(self.offsets.sum())


def least_cost(
    cv: Curves, rule: OffsetRule, base: np.ndarray, allowances: float, price_cap: float
) -> Equilibrium:
    """The allowance price at which firms' allowance demand equals ``allowances`` (bisection
    on the monotone excess demand), with the least-cost abatement and offset use there.
    Excess demand jumps down at each offset type's price; when the root sits on such a jump
    the equilibrium is the corner ``p = p_k`` with type k used only as far as needed."""
    z = lambda p: plan(cv, rule, base, p).allowance_demand - allowances  # noqa: E731
    if z(0.0) <= 0:
        pl = plan(cv, rule, base, 0.0)
        return _equilibrium(cv, rule, pl)
    hi = float(price_cap)
    if z(hi) > 0:
        return _equilibrium(cv, rule, plan(cv, rule, base, hi))
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if z(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * max(1.0, hi):
            break
    p = 0.5 * (lo + hi)
    for t in rule.types:
        # a root on the jump at an offset price: below it the type is unused, above it used
        # in full; at the corner firms use just enough of it to clear the market
        if abs(p - t.price) < 1e-6 * max(1.0, t.price):
            below = plan(cv, rule, base, t.price)  # type k not used (p_k < p fails)
            above = plan(cv, rule, base, np.nextafter(t.price, np.inf))
            gap = below.allowance_demand - allowances  # what type k must cover
            full = above.offsets.sum(axis=0) - below.offsets.sum(axis=0)
            k = rule.types.index(t)
            frac = min(max(gap / full[k], 0.0), 1.0) if full[k] > 0 else 0.0
            offs = below.offsets.copy()
            offs[:, k] = above.offsets[:, k] * frac
            eq = _equilibrium(cv, rule, below, offs)
            eq.price, eq.corner = float(t.price), "offset_price"
            return eq
    return _equilibrium(cv, rule, plan(cv, rule, base, p))


def _equilibrium(cv, rule, pl: Plan, offsets: np.ndarray | None = None) -> Equilibrium:
    offs = pl.offsets if offsets is None else offsets
    oc = float((offs * rule.prices()[None, :]).sum()) if offs.size else 0.0
    return Equilibrium(
        price=float(pl.price),
        mac=float(pl.effective),
        abatement=pl.abatement,
        offsets=offs,
        abatement_cost=float(abatement_cost(cv, pl.abatement).sum()),
        offset_cost=oc,
    )


def closed_form(cv: Curves, rule: OffsetRule, base: np.ndarray, allowances: float) -> dict | None:
    """The closed form for linear MACs (two points from the origin) that nobody abates to
    its maximum, with no offsets or one unlimited offset type: ``{"price", "mac",
    "offsets_used"}``; None when the curves or the offset rule do not fit the formula."""
    a, m = cv.a, cv.m
    if a.shape[1] != 2 or np.any(m[:, 0] != 0) or np.any(a[:, 0] != 0):
        return None
    c = m[:, 1] / a[:, 1]
    inv = float(np.sum(1.0 / c))
    B = float(base.sum())
    R = B - allowances
    if R <= 0:  # allowances cover business as usual: nothing to abate, the price is zero
        return dict(price=0.0, mac=0.0, offsets_used=0.0)
    if not rule.active:
        p = R / inv
        res = dict(price=p, mac=p, offsets_used=0.0)
    else:
        if len(rule.types) != 1 or rule.types[0].supply:
            return None
        s = min(rule.cap, rule.types[0].sub_cap)
        po = rule.types[0].price
        mac = (R - s * B) / ((1 - s) * inv)
        p = (mac - s * po) / (1 - s)
        if p <= po:  # offsets would not be worth their price at the cap: no-offset formula
            p0 = R / inv
            if p0 <= po:
                res = dict(price=p0, mac=p0, offsets_used=0.0)
            else:  # corner: the price is the offset price, offsets used in part
                used = R - po * inv
                res = dict(price=po, mac=po, offsets_used=used)
        else:
            res = dict(price=p, mac=mac, offsets_used=s * (B - mac * inv))
    if np.any(res["mac"] / c > cv.a_max + 1e-9):
        return None  # someone would abate past its maximum: the formula does not hold
    return res


def cover(
    cv: Curves, rule: OffsetRule, base: np.ndarray, held: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How each firm covers its emissions with the ``held`` allowances (held, still to be
    issued, banked) at least cost once its allowance trading is done: abate while the MAC is
    below the cheapest offset type, use that type up to its room, abate up to the next type's
    price, and so on; abate the rest (up to the maximum). With the allowances fixed, an offset
    competes with abatement, not with the allowance price: at a corner equilibrium (price =
    offset price) this is what uses the offsets the market needs.

    The room follows the compliance rule: offsets of type k at most ``sigma_k x E`` with
    ``E = held + offsets`` the verified emissions, i.e. ``sigma_k x held / (1 - S)`` when all
    types fill their room; whole tonnes, rounded down, so every surrender is inside the cap.
    Scarce types are rationed pro rata to emissions, as in :func:`plan`.
    Returns (technical abatement (n,), offsets (n, K))."""
    n = len(base)
    K = len(rule.types)
    gap = np.maximum(base - held, 0.0)
    offs = np.zeros((n, K))
    a = np.zeros(n)
    if rule.active:
        # emissions if every type fills its room: E = H / (1 - S), with the rationed shares
        # S depending on E in turn (a contraction; a few steps settle it)
        h_tot = float(np.maximum(held, 0.0).sum())
        sigma = rule.shares(np.inf)
        for _ in range(30):
            if sigma.sum() >= 1:
                break
            sigma = rule.shares(np.inf, h_tot / (1.0 - float(sigma.sum())))
        S = float(sigma.sum())
        if 0 < S < 1:
            e_full = np.maximum(held, 0.0) / (1.0 - S)
            for k, t in enumerate(rule.types):
                if sigma[k] <= 0:
                    continue
                left = gap - a - offs.sum(axis=1)
                a += np.clip(np.minimum(abatement_at(cv, t.price) - a, left), 0.0, None)
                left = gap - a - offs.sum(axis=1)
                offs[:, k] = np.floor(np.clip(np.minimum(sigma[k] * e_full, left), 0.0, None))
    a = np.minimum(gap - offs.sum(axis=1), cv.a_max)
    return np.maximum(a, 0.0), offs
