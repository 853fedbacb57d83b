"""SME sub-quota split weights the simulation computes itself.

Every other strategy is the rules module's (``SplitSubQuotas``; ``RULES_STRATEGY`` in
:mod:`exchange.sim.runner` maps the names), so each is computed one way only, by the engine:
``equal``, ``by_output``, ``by_baseline_emissions`` and ``by_responsibility`` (what the SME
answers for at the last close: its emissions plus the responsibility its inputs embody,
docs/RULES.md §5, from the input use the simulation sends for every chain customer).

What the rules module cannot know is here:

* ``by_abatement_potential``  what the SME can abate at the last price, a_i(p), from its MAC
                              curve (the rules' ``abatement`` strategy weighs emissions above a
                              product benchmark, and SMEs' products have none).
"""

from __future__ import annotations

import numpy as np

from .agents import abatement_at

SIM_STRATEGIES = ("by_abatement_potential",)


def split_weights(
    strategy: str, smes: np.ndarray, pop, *, output, baseline, curves, price, chain: int
) -> np.ndarray:
    """Weights of ``smes`` for a strategy the simulation computes (``SIM_STRATEGIES``)."""
    if strategy == "by_abatement_potential":
        return abatement_at(curves, price)[smes]
    raise ValueError(
        f"split strategy {strategy!r} is computed by the rules module "
        "(SplitSubQuotas), not by the simulation"
    )
