"""Pure compliance arithmetic: emissions from activity data, caps, penalties.

Integers only. Carbon coefficients are t C per tce in parts per million (0.7476 -> 747,600);
the CO2/C ratio is the exact fraction 44/12.

Rounding, chosen once and documented in docs/COMPLIANCE.md:

* fuel emissions = round-half-up( sum(tce x coef_ppm) x 44 / (12 x 1,000,000) ): the exact sum
  over all fuels is rounded once, to whole tonnes;
* an offset cap or sub-cap in tonnes = floor(obligation x bps / 10,000): a firm may never use
  more offsets than the share allows;
* the price part of a penalty = floor(shortfall x average price x multiple_ppm / 1,000,000);
* the period's average price = round-half-up(notional / volume) of the period's allowance trades.
"""
from __future__ import annotations

from ..core.units import BPS, MAX_CASH, PPM


def round_half_up_div(num: int, den: int) -> int:
    """round(num / den) with halves away from zero, for num >= 0, den > 0."""
    return (2 * num + den) // (2 * den)


def fuel_emissions(fuels, coefficients_ppm: dict[str, int], co2_per_c: tuple[int, int]) -> int:
    """t CO2 from fuel use: sum(tce x t C/tce) x 44/12, rounded once, half up."""
    num, den = co2_per_c
    total_c_ppm = 0
    for fuel, tce in fuels:
        total_c_ppm += tce * coefficients_ppm[fuel]
    return round_half_up_div(total_c_ppm * num, den * PPM)


def emissions(fuels, process_emissions: int, coefficients_ppm: dict[str, int],
              co2_per_c: tuple[int, int]) -> tuple[int, int]:
    """(fuel emissions, total emissions) in t CO2."""
    fe = fuel_emissions(fuels, coefficients_ppm, co2_per_c)
    return fe, fe + process_emissions


def cap_qty(obligation: int, bps: int) -> int:
    """Most tonnes of offsets a cap of ``bps`` allows against ``obligation``."""
    return obligation * bps // BPS


def penalty(mode: str, shortfall: int, fixed_fine: int, multiple_ppm: int,
            average_price: int) -> int:
    """Penalty in fen for a shortfall: a fixed fine and/or a multiple of the average price,
    at most MAX_CASH (the product of a shortfall and a price, each within its limit, can pass
    64 bits, and the penalty is kept in the state; no firm can hold more cash anyway)."""
    if shortfall <= 0:
        return 0
    price_part = shortfall * average_price * multiple_ppm // PPM
    if mode == "fixed":
        pen = fixed_fine
    elif mode == "multiple":
        pen = price_part
    elif mode == "greater":
        pen = max(fixed_fine, price_part)
    else:
        pen = fixed_fine + price_part  # "both"
    return min(pen, MAX_CASH)


PENALTY_MODES = ("fixed", "multiple", "both", "greater")
