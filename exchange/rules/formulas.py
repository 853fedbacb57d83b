"""The rules' formulas as pure functions of integers (docs/RULES.md has the maths).

Arithmetic and rounding — one policy, applied in one place:

* Every input is an integer: tonnes, output units, or a ratio in parts per million (ppm,
  1.0 = 1,000,000). Intensities and benchmarks are ppm of a tonne per unit of output.
* Every formula is evaluated *exactly* in rational arithmetic (:class:`fractions.Fraction`),
  so no intermediate rounding, no float, no platform dependence.
* A result is quantized once, at the end, by a helper of :mod:`exchange.core.units`:
  an allocation factor or a benchmark to whole ppm *toward its previous value*
  (:func:`~exchange.core.units.ppm_toward`, so rounding can never push a value past a clamp
  or a step limit); an allocation to whole tonnes *down* (:func:`~exchange.core.units.floor_int`,
  the regulator never issues a fraction of a tonne); explanatory terms in events to the nearest
  ppm, half to even (:func:`~exchange.core.units.ppm_half_even`), display only.
* The responsibility-factor iteration is the one place that is not exact (it is an infinite
  series): it runs in :class:`decimal.Decimal` with the explicit context ``RESP_CONTEXT``
  (34 digits, half-even) and its fixed point is quantized to ppm, half to even.

Same integers in, same integers out, on every replay.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal, ROUND_HALF_EVEN
from fractions import Fraction
from typing import Any, Sequence

from ..core.units import PPM, floor_int, ppm_half_even, ppm_toward

ONE = Fraction(1)

# ---------------------------------------------------------------------------------- allocation


# how the period's total is fixed (docs/RULES.md, section 2)
ALLOCATION_TOTALS = ("intensity", "absolute", "floating")


def allocation_tonnes(benchmark_ppm: int, output: int, phi_ppm: int, ratio_ppm: int = PPM) -> int:
    """``A = ratio x B x Y x phi``, floored to whole tonnes (the ``floating`` mode)."""
    return floor_int(Fraction(ratio_ppm * benchmark_ppm * output * phi_ppm, PPM**3))


def raw_weight(benchmark_ppm: int, output: int, phi_ppm: int) -> Fraction:
    """A firm's raw weight ``w = B x Y x phi`` in tonnes, exact: the share of the period's
    total it is entitled to is ``w / sum(w)``."""
    return Fraction(benchmark_ppm * output * phi_ppm, PPM**2)


def intensity_total(rows: list[tuple[int, int]]) -> int:
    """The intensity-mode total ``T = sum_f B_f x Y_f`` over ``[(benchmark_ppm, output)]``,
    floored once to whole tonnes (phi plays no part: it only redistributes T)."""
    return floor_int(Fraction(sum(b * y for b, y in rows), PPM))


def scaled_allocation(benchmark_ppm: int, output: int, phi_ppm: int, scale: Fraction) -> int:
    """``floor(B x Y x phi x k)``: a firm's allocation at a known scale k, before the other
    firms' data is in (the provisional true-up)."""
    scale = Fraction(scale)  # in integers: one call per firm at each verification
    return (benchmark_ppm * output * phi_ppm * scale.numerator) // (PPM**2 * scale.denominator)


def period_allocation(
    mode: str,
    rows: list[tuple[int, int, int]],
    cap_tonnes: int = 0,
    ratio_ppm: int = PPM,
    held_outside: int = 0,
) -> dict[str, Any]:
    """Allocate a period's total over ``rows = [(benchmark_ppm, output, phi_ppm), ...]``.

    * ``intensity``: ``basis = floor(sum B x Y)``; ``absolute``: ``basis = cap_tonnes -
      held_outside`` (what firms outside ``rows`` keep), never below 0. Then
      ``total = floor(ratio x basis)`` is split in proportion to the raw weights
      ``w = B x Y x phi`` by the largest-remainder method, so the parts sum to ``total``
      exactly; the scale is ``k = basis / sum(w)`` (1 when no firm has a weight, and then
      ``total`` 0: with no basis to share by, nothing is allocated).
    * ``floating``: each firm ``floor(ratio x B x Y x phi)``, the total moves with phi
      (``k = 1``).

    Returns ``{"basis", "total", "raw" (sum w, exact), "scale" (exact), "parts"}``."""
    if mode not in ALLOCATION_TOTALS:
        raise ValueError(f"unknown allocation_total {mode!r}")
    weights = [raw_weight(b, y, phi) for b, y, phi in rows]
    raw = sum(weights, Fraction(0))
    if mode == "floating":
        parts = [allocation_tonnes(b, y, phi, ratio_ppm) for b, y, phi in rows]
        return {
            "basis": floor_int(raw),
            "total": sum(parts),
            "raw": raw,
            "scale": ONE,
            "parts": parts,
        }
    if mode == "intensity":
        basis = intensity_total([(b, y) for b, y, _ in rows])
    else:
        basis = max(0, cap_tonnes - held_outside)
    total = floor_int(Fraction(ratio_ppm * basis, PPM))
    if raw == 0:
        return {"basis": basis, "total": 0, "raw": raw, "scale": ONE, "parts": [0] * len(rows)}
    return {
        "basis": basis,
        "total": total,
        "raw": raw,
        "scale": Fraction(basis) / raw,
        "parts": split_amounts(total, weights),
    }


# ---------------------------------------------------------------------------------- gap, phi


def intensity(emissions: int | Fraction, output: int) -> Fraction:
    """Verified intensity in tonnes per unit of output (exact)."""
    return Fraction(emissions) / output


def gap(intensity_t: Fraction, benchmark_ppm: int) -> Fraction:
    """Performance gap ``g = 1 - I / B`` (positive: the firm beat its benchmark)."""
    return ONE - intensity_t / Fraction(benchmark_ppm, PPM)


def own_term(g: Fraction, alpha_up_ppm: int, alpha_down_ppm: int) -> Fraction:
    """``alpha_up x g`` for g > 0, ``alpha_down x g`` for g < 0 (then negative)."""
    if g > 0:
        return Fraction(alpha_up_ppm, PPM) * g
    return Fraction(alpha_down_ppm, PPM) * g


def coupling_term(
    partners: list[tuple[Fraction, Fraction]], kappa_ppm: int, kappa_max_ppm: int
) -> tuple[Fraction, Fraction]:
    """``min(kappa x sum_j w_fj x max(0, g_j), kappa_max)`` over ``[(w_fj, g_j), ...]``.
    Returns ``(uncapped, capped)``."""
    raw = Fraction(kappa_ppm, PPM) * sum(
        (w * max(g, Fraction(0)) for w, g in partners), Fraction(0)
    )
    return raw, min(raw, Fraction(kappa_max_ppm, PPM))


def update_phi(
    phi_ppm: int,
    own: Fraction,
    coupling: Fraction,
    phi_min_ppm: int,
    phi_max_ppm: int,
    max_step_ppm: int,
) -> dict[str, Any]:
    """``phi' = phi x (1 + own + coupling)``; limited to ``phi x (1 +- max_step)``; clamped to
    ``[phi_min, phi_max]``; rounded to whole ppm toward the old phi. Returns the new phi and
    every intermediate value (exact Fractions)."""
    phi = Fraction(phi_ppm, PPM)
    mult = ONE + own + coupling
    raw = phi * mult
    step = Fraction(max_step_ppm, PPM)
    lo, hi = phi * (ONE - step), phi * (ONE + step)
    stepped = min(max(raw, lo), hi)
    bounded = min(max(stepped, Fraction(phi_min_ppm, PPM)), Fraction(phi_max_ppm, PPM))
    new = ppm_toward(bounded, phi_ppm)
    return {
        "multiplier": mult,
        "raw": raw,
        "step_limited": stepped != raw,
        "bound_limited": bounded != stepped,
        "phi_ppm": new,
    }


def initial_phi(
    technology_ppm: int,
    efficiency_ppm: int,
    hist_intensity_ppm: int,
    benchmark_ppm: int,
    w_tech_ppm: int,
    w_eff_ppm: int,
    w_hist_ppm: int,
    base_ppm: int,
    phi_min_ppm: int,
    phi_max_ppm: int,
) -> dict[str, Any]:
    """Assessment: ``phi0 = base + w_tech (2 tau - 1) + w_eff (2 eta - 1) + w_hist (1 - H/B)``
    with technology level tau and energy efficiency eta in [0, 1]; clamped to the bounds and
    rounded to whole ppm toward ``base``."""
    tech = Fraction(w_tech_ppm, PPM) * (Fraction(2 * technology_ppm, PPM) - 1)
    eff = Fraction(w_eff_ppm, PPM) * (Fraction(2 * efficiency_ppm, PPM) - 1)
    hist_gap = ONE - Fraction(hist_intensity_ppm, benchmark_ppm)
    hist = Fraction(w_hist_ppm, PPM) * hist_gap
    raw = Fraction(base_ppm, PPM) + tech + eff + hist
    bounded = min(max(raw, Fraction(phi_min_ppm, PPM)), Fraction(phi_max_ppm, PPM))
    return {
        "tech": tech,
        "eff": eff,
        "hist_gap": hist_gap,
        "hist": hist,
        "raw": raw,
        "bound_limited": bounded != raw,
        "phi_ppm": ppm_toward(bounded, base_ppm),
    }


# ---------------------------------------------------------------------------------- benchmarks


def benchmark_step(
    benchmark_ppm: int,
    target: Fraction,
    step_ppm: int,
    max_tightening_ppm: int,
    allow_loosening: bool,
    max_loosening_ppm: int,
) -> dict[str, Any]:
    """Gradient step on ``L(B) = 1/2 (B - I)^2``: ``B' = B - eta (B - I)``, with I the
    output-weighted average verified intensity (t/unit). The move down is at most
    ``max_tightening x B``; a move up is dropped unless loosening is allowed, then at most
    ``max_loosening x B``. Rounded to whole ppm toward the old benchmark."""
    b = Fraction(benchmark_ppm, PPM)
    grad = b - target
    raw = b - Fraction(step_ppm, PPM) * grad
    lo = b * (ONE - Fraction(max_tightening_ppm, PPM))
    hi = b * (ONE + Fraction(max_loosening_ppm, PPM)) if allow_loosening else b
    new = min(max(raw, lo), hi)
    return {
        "gradient": grad,
        "raw": raw,
        "limited": new != raw,
        "benchmark_ppm": ppm_toward(new, benchmark_ppm),
    }


def weighted_intensity(rows: list[tuple[Fraction, int]]) -> Fraction:
    """Output-weighted average intensity ``sum(I_f Y_f) / sum(Y_f)`` of ``[(I_f, Y_f)]``."""
    total = sum(y for _, y in rows)
    return sum((i * y for i, y in rows), Fraction(0)) / total


# ---------------------------------------------------------------------------------- responsibility

RESP_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN)
RESP_TOLERANCE = Decimal("1e-12")  # stop when no factor moves by more than this (t/unit)
RESP_MAX_ITER = 10_000


class Diverges(ArithmeticError):
    """The responsibility factors have no finite solution (or the iteration did not reach it):
    the input network is not productive. ``products`` names the products involved."""

    def __init__(self, message: str, products: tuple[str, ...] = ()):
        super().__init__(message)
        self.products = tuple(products)


def responsibility_system(
    producers: dict[str, list[tuple[int, int, dict[str, int]]]],
) -> tuple[list[str], dict[str, Fraction], dict[str, dict[str, Fraction]]]:
    """Build ``beta = c + A beta`` from ``{product: [(emissions, output, {input: qty}), ...]}``:
    ``c_p = sum_f E_f / sum_f Y_f`` and ``A_pi = sum_f in_fi / sum_f Y_f`` (output-weighted
    average over the producers of p). Products used as inputs but not produced here have no
    row: their factor is 0 (their emissions are outside the system, see
    :func:`outside_inputs`). Exact Fractions."""
    products = sorted(producers)
    c: dict[str, Fraction] = {}
    a: dict[str, dict[str, Fraction]] = {}
    for p in products:
        rows = producers[p]
        y = sum(r[1] for r in rows)
        c[p] = Fraction(sum(r[0] for r in rows), y)
        row: dict[str, Fraction] = {}
        for _, _, inputs in rows:
            for i, q in inputs.items():
                if i in producers:
                    row[i] = row.get(i, Fraction(0)) + Fraction(q, y)
        a[p] = dict(sorted(row.items()))
    return products, c, a


def outside_inputs(
    producers: dict[str, list[tuple[int, int, dict[str, int]]]],
    consumers: Sequence[dict[str, int]] = (),
) -> list[str]:
    """Input products that nobody in the system makes: their factor is 0, so what they embody
    is outside the scheme. Reported, never silently dropped."""
    used = {i for rows in producers.values() for _, _, inputs in rows for i in inputs}
    used.update(i for inputs in consumers for i in inputs)
    return sorted(used - set(producers))


def _components(products: list[str], a: dict[str, dict[str, Fraction]]) -> list[list[str]]:
    """Strongly connected components of the input graph (p -> i when p uses i), each sorted,
    in the order of their smallest member (Tarjan, iterative: the graph may be long)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in products:
        if root in index:
            continue
        work = [(root, iter(sorted(k for k, v in a[root].items() if v > 0)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(k for k, w in a[nxt].items() if w > 0))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return sorted(out)


def non_productive(products: list[str], a: dict[str, dict[str, Fraction]]) -> list[str]:
    """The products of every cycle of the input network that takes, directly and through its
    inputs, at least one unit of itself per unit made (spectral radius of its block of A >= 1;
    (I - A) is then singular or has no non-negative inverse). Empty for a productive network.

    Exact: the network splits into strongly connected components (A is block triangular over
    them, so its spectral radius is the largest of theirs); for one component, I - A_S is a
    Z-matrix, and such a matrix is a non-singular M-matrix (rho(A_S) < 1) exactly when every
    leading principal minor is positive, i.e. when Gaussian elimination without pivoting
    finds only positive pivots (each pivot is a ratio of two successive minors)."""
    bad: list[str] = []
    for comp in _components(products, a):
        if len(comp) == 1 and a[comp[0]].get(comp[0], 0) == 0:
            continue  # no cycle through it: its factor is a finite sum
        n = len(comp)
        pos = {p: k for k, p in enumerate(comp)}
        m = [[(ONE if r == k else Fraction(0)) for k in range(n)] for r in range(n)]
        for p in comp:
            for i, v in a[p].items():
                if i in pos:
                    m[pos[p]][pos[i]] -= v
        for k in range(n):
            piv = m[k][k]
            if piv <= 0:
                bad.extend(comp)
                break
            for r in range(k + 1, n):
                if m[r][k]:
                    f = m[r][k] / piv
                    row_k, row_r = m[k], m[r]
                    for j in range(k, n):
                        row_r[j] -= f * row_k[j]
    return sorted(bad)


def responsibility_factors(
    producers: dict[str, list[tuple[int, int, dict[str, int]]]],
    tol: Decimal = RESP_TOLERANCE,
    max_iter: int = RESP_MAX_ITER,
) -> tuple[dict[str, int], int]:
    """Solve ``beta_p = (sum_i in_pi x beta_i + E_p) / Y_p`` for every product by the Jacobi
    iteration ``beta^(k+1) = c + A beta^(k)``, ``beta^(0) = c``, in :data:`RESP_CONTEXT`.
    Returns ``({product: beta_ppm}, iterations)``; raises :class:`Diverges` naming the
    products of a non-productive cycle (checked exactly first, see :func:`non_productive`),
    or when the iteration has not settled after ``max_iter`` steps."""
    products, c, a = responsibility_system(producers)
    bad = non_productive(products, a)
    if bad:
        raise Diverges(
            "the inputs per unit of output form a non-productive network: "
            f"{', '.join(bad)} take, directly and through their inputs, at least "
            "one unit of themselves per unit made",
            tuple(bad),
        )
    ctx = RESP_CONTEXT
    cd = {p: ctx.divide(Decimal(v.numerator), Decimal(v.denominator)) for p, v in c.items()}
    ad = {
        p: [(i, ctx.divide(Decimal(v.numerator), Decimal(v.denominator))) for i, v in row.items()]
        for p, row in a.items()
    }
    beta = dict(cd)
    for k in range(1, max_iter + 1):
        new = {}
        delta = Decimal(0)
        for p in products:
            s = cd[p]
            for i, w in ad[p]:
                s = ctx.add(s, ctx.multiply(w, beta[i]))
            new[p] = s
            d = abs(ctx.subtract(s, beta[p]))
            if d > delta:
                delta = d
        beta = new
        if delta <= tol:
            return {p: ppm_half_even(Fraction(beta[p])) for p in products}, k
    cyc = [p for comp in _components(products, a) for p in comp if len(comp) > 1 or a[p].get(p)]
    raise Diverges(
        f"responsibility factors not settled after {max_iter} iterations: the "
        f"cycle through {', '.join(cyc)} is barely productive (it takes almost "
        "one unit of itself per unit made)",
        tuple(cyc),
    )


def embodied(inputs: dict[str, int], beta_ppm: dict[str, int]) -> Fraction:
    """``sum_i in_i x beta_i`` in tonnes, exact: what a firm's inputs embody. Inputs without a
    factor (made outside the system) count 0."""
    return sum(
        (Fraction(q * beta_ppm[i], PPM) for i, q in sorted(inputs.items()) if i in beta_ppm),
        Fraction(0),
    )


def responsibility_tonnes(
    emissions: int, inputs: dict[str, int], beta_ppm: dict[str, int]
) -> Fraction:
    """A firm's responsibility ``R_f = E_f + sum_i in_fi x beta_i`` (t CO2, exact): its own
    emissions plus the average of what it buys. A final consumer (no output) bears exactly
    the average of the products it uses."""
    return emissions + embodied(inputs, beta_ppm)


def gap_reference(benchmark_ppm: int, beta_ppm: int | None) -> tuple[str, int] | None:
    """The intensity a firm's gap is measured against: its product's responsibility factor
    beta_p when the product has supply-chain data (pass ``beta_ppm`` then; a producer below
    the product's average gains, one above answers for the excess), else the direct benchmark
    B; ``None`` when neither is positive."""
    if beta_ppm is not None and beta_ppm > 0:
        return "responsibility", beta_ppm
    if benchmark_ppm > 0:
        return "benchmark", benchmark_ppm
    return None


# ---------------------------------------------------------------------------------- splitting

STRATEGIES = ("equal", "output", "baseline_emissions", "responsibility", "abatement")


def split_amounts(amount: int, weights: Sequence[Fraction | int]) -> list[int]:
    """Split ``amount`` tonnes in proportion to ``weights`` by the largest-remainder method:
    each gets ``floor(amount x w / W)``, then the tonnes left go one each to the largest
    fractional remainders, ties to the earlier entry. The parts sum exactly to ``amount``.
    All-zero weights raise ZeroDivisionError (the caller rejects)."""
    # Exact in integers: over a common denominator the weights are integers w_k, and
    # amount x w_k / W = q_k + r_k / W, so the floors are q_k and the remainders compare
    # as r_k (the same result as rational arithmetic, without a Fraction per firm).
    fr = [w if type(w) is int else Fraction(w) for w in weights]
    den = math.lcm(*{1 if type(w) is int else w.denominator for w in fr}) if fr else 1
    ints = [w * den if type(w) is int else w.numerator * (den // w.denominator) for w in fr]
    total = sum(ints)
    if total <= 0:
        raise ZeroDivisionError("no weight")
    parts, rems = [], []
    for w in ints:
        q, r = divmod(amount * w, total)
        parts.append(q)
        rems.append(r)
    left = amount - sum(parts)
    order = sorted(range(len(ints)), key=lambda k: (-rems[k], k))
    for k in order[:left]:
        parts[k] += 1
    return parts
