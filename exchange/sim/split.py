"""SME sub-quota split strategies: how a core firm's SME pool is divided.

Weights per SME from what is known at pre-allocation (last verified data):

* ``equal``                   the same for every SME;
* ``by_output``               last verified output;
* ``by_baseline_emissions``   last verified emissions;
* ``by_responsibility``       responsibility embodied along the chain: an SME's own emissions
                              plus its suppliers' responsibility in proportion to the share of
                              their output it takes, R_i = E_i + sum_j w_ji R_j (solved on the
                              chain's edges, suppliers first);
* ``by_abatement_potential``  what the SME can abate at the last price, a_i(p).
"""
from __future__ import annotations

import numpy as np

from .agents import abatement_at


def responsibility(pop, chain: int, emissions: np.ndarray) -> dict[int, float]:
    """R_i = E_i + sum over suppliers j of w_ji R_j, w_ji = 1 / out-degree of j."""
    edges = pop.edges[chain]
    members = [int(i) for i in np.nonzero(pop.chain == chain)[0]]
    outdeg: dict[int, int] = {}
    sup_of: dict[int, list[int]] = {}
    for s, c in edges:
        outdeg[s] = outdeg.get(s, 0) + 1
        sup_of.setdefault(c, []).append(s)
    R: dict[int, float] = {}
    # deepest tier first: suppliers are always one tier further from the core
    for i in sorted(members, key=lambda i: -pop.tier[i]):
        R[i] = float(emissions[i]) + sum(R[j] / outdeg[j] for j in sup_of.get(i, ()))
    return R


def split_weights(strategy: str, smes: np.ndarray, pop, *, output, baseline, curves, price,
                  chain: int) -> np.ndarray:
    if strategy == "equal":
        return np.ones(len(smes))
    if strategy == "by_output":
        return np.asarray(output[smes], dtype=float)
    if strategy == "by_baseline_emissions":
        return np.asarray(baseline[smes], dtype=float)
    if strategy == "by_responsibility":
        R = responsibility(pop, chain, baseline)
        return np.array([R[int(i)] for i in smes])
    if strategy == "by_abatement_potential":
        return abatement_at(curves, price)[smes]
    raise ValueError(f"unknown split strategy {strategy!r}")
