"""The responsibility-factor iteration converges to the direct solution of the same linear
system, ``(I - A) beta = c``, solved with numpy on random supply networks (cycles included)."""

from __future__ import annotations

import numpy as np
import pytest

from exchange.core.units import PPM
from exchange.rules import formulas as F


def random_network(rng: np.random.Generator, n_products: int) -> dict:
    """Products p0..pn, 1-3 producers each, inputs of any product (cycles allowed) with at most
    0.9 / n units of each input per unit of output, so the network is productive."""
    producers = {}
    names = [f"p{k}" for k in range(n_products)]
    for p in names:
        rows = []
        for _ in range(int(rng.integers(1, 4))):
            out = int(rng.integers(100, 100_000))
            em = int(rng.integers(0, 3 * out))
            inputs = {}
            for i in names:
                if rng.random() < 0.5:
                    inputs[i] = int(rng.integers(0, int(out * 0.9 / n_products) + 1))
            rows.append((em, out, inputs))
        producers[p] = rows
    return producers


def direct_solve(producers: dict) -> dict[str, float]:
    products = sorted(producers)
    idx = {p: k for k, p in enumerate(products)}
    n = len(products)
    a = np.zeros((n, n))
    c = np.zeros(n)
    for p in products:
        y = sum(r[1] for r in producers[p])
        c[idx[p]] = sum(r[0] for r in producers[p]) / y
        for _, _, inputs in producers[p]:
            for i, q in inputs.items():
                a[idx[p], idx[i]] += q / y
    beta = np.linalg.solve(np.eye(n) - a, c)
    return {p: float(beta[idx[p]]) for p in products}


@pytest.mark.parametrize("seed", range(12))
def test_iteration_converges_to_numpy_direct_solve(seed):
    rng = np.random.default_rng(seed)
    producers = random_network(rng, int(rng.integers(2, 9)))
    beta_ppm, iterations = F.responsibility_factors(producers)
    direct = direct_solve(producers)
    assert iterations >= 1
    for p, b in direct.items():
        # the iteration's fixed point is quantized to the nearest ppm: within 0.5 ppm + tol
        assert abs(beta_ppm[p] / PPM - b) <= 0.6e-6 * max(1.0, abs(b)), (p, beta_ppm[p], b)


def test_system_matrix_is_the_one_solved():
    producers = {"a": [(10, 100, {"b": 20})], "b": [(5, 50, {}), (15, 50, {"a": 10})]}
    products, c, a = F.responsibility_system(producers)
    assert products == ["a", "b"]
    assert c == {"a": F.Fraction(1, 10), "b": F.Fraction(1, 5)}
    assert a == {"a": {"b": F.Fraction(1, 5)}, "b": {"a": F.Fraction(1, 10)}}
