"""Pure compliance arithmetic: emissions from activity data, caps, penalties.

Integers only. Carbon coefficients are t C per tce in parts per million (0.7476 -> 747,600);
the CO2/C ratio is the exact fraction 44/12; the grid emission factor is t CO2 per MWh in parts
per million (0.5703 -> 570,300).

Emissions come in three categories, each reported on its own:

* ``energy``: fuels burnt (tce x carbon coefficient x 44/12) plus electricity bought (MWh x the
  grid emission factor);
* ``process``: process emissions, reported in whole t CO2;
* ``natural``: natural and biological sources (livestock, land, biological processes), whole
  t CO2e.

Which categories are *covered* is configuration (``covered_categories``, default energy and
process): the obligation is the sum over the covered categories; an uncovered category is
still verified and reported, it just creates no obligation.

Rounding, chosen once and documented in docs/COMPLIANCE.md:

* fuel emissions = round-half-up( sum(tce x coef_ppm) x 44 / (12 x 1,000,000) ): the exact sum
  over all fuels is rounded once, to whole tonnes;
* electricity emissions = round-half-up( MWh x grid_factor_ppm / 1,000,000 ), rounded once on
  its own, so energy = fuels + electricity exactly and every figure of the breakdown is whole
  tonnes that add up (a combined rounding could make the parts miss their sum by a tonne);
* process and natural emissions are reported in whole tonnes and need no rounding; the total
  and the covered sum are sums of whole tonnes, never rounded again;
* an offset cap or sub-cap in tonnes = floor(obligation x bps / 10,000): a firm may never use
  more offsets than the share allows;
* the price part of a penalty = floor(shortfall x average price x multiple_ppm / 1,000,000);
* the period's average price = round-half-up(notional / volume) of the period's allowance trades
  on the boards the configuration names (the main board: docs/COMPLIANCE.md).
"""

from __future__ import annotations

from typing import Iterable

from ..core.units import BPS, MAX_CASH, PPM


def round_half_up_div(num: int, den: int) -> int:
    """round(num / den) with halves away from zero, for num >= 0, den > 0."""
    return (2 * num + den) // (2 * den)


def fuel_emissions(
    fuels: Iterable[tuple[str, int]], coefficients_ppm: dict[str, int], co2_per_c: tuple[int, int]
) -> int:
    """t CO2 from fuel use: sum(tce x t C/tce) x 44/12, rounded once, half up."""
    num, den = co2_per_c
    total_c_ppm = 0
    for fuel, tce in fuels:
        total_c_ppm += tce * coefficients_ppm[fuel]
    return round_half_up_div(total_c_ppm * num, den * PPM)


def emissions(
    fuels: Iterable[tuple[str, int]],
    process_emissions: int,
    coefficients_ppm: dict[str, int],
    co2_per_c: tuple[int, int],
) -> tuple[int, int]:
    """(fuel emissions, total emissions) in t CO2."""
    fe = fuel_emissions(fuels, coefficients_ppm, co2_per_c)
    return fe, fe + process_emissions


CATEGORY_ENERGY = "energy"
CATEGORY_PROCESS = "process"
CATEGORY_NATURAL = "natural"
CATEGORIES = (CATEGORY_ENERGY, CATEGORY_PROCESS, CATEGORY_NATURAL)
# Today's obligation rule: fuels and process emissions. Natural emissions are reported but
# create no obligation unless a market covers them.
DEFAULT_COVERED = (CATEGORY_ENERGY, CATEGORY_PROCESS)
# The national average grid emission factor China published for 2022: 0.5703 t CO2 per MWh.
DEFAULT_GRID_FACTOR_PPM = 570_300
# No power source emits near 10 t CO2 per MWh (lignite plants about 1.2); the bound keeps the
# electricity emissions of any submission the API accepts (at most MAX_QTY MWh) within 64 bits.
MAX_GRID_FACTOR_PPM = 10_000_000


def electricity_emissions(mwh: int, grid_factor_ppm: int) -> int:
    """t CO2 from electricity bought: MWh x t CO2/MWh, rounded once, half up."""
    return round_half_up_div(mwh * grid_factor_ppm, PPM)


def category_emissions(
    fuels: Iterable[tuple[str, int]],
    electricity_mwh: int,
    process_emissions: int,
    natural_emissions: int,
    coefficients_ppm: dict[str, int],
    co2_per_c: tuple[int, int],
    grid_factor_ppm: int,
) -> dict[str, int]:
    """Emissions per category in whole tonnes, with energy's two parts:
    ``{"fuels", "electricity", "energy", "process", "natural", "total"}``;
    energy = fuels + electricity and total = energy + process + natural, exactly."""
    fe = fuel_emissions(fuels, coefficients_ppm, co2_per_c)
    ee = electricity_emissions(electricity_mwh, grid_factor_ppm)
    energy = fe + ee
    return {
        "fuels": fe,
        "electricity": ee,
        CATEGORY_ENERGY: energy,
        CATEGORY_PROCESS: process_emissions,
        CATEGORY_NATURAL: natural_emissions,
        "total": energy + process_emissions + natural_emissions,
    }


def covered_emissions(by_category: dict[str, int], covered: Iterable[str]) -> int:
    """The obligation's base: the sum of the covered categories' emissions."""
    return sum(by_category[c] for c in covered)


def cap_qty(obligation: int, bps: int) -> int:
    """Most tonnes of offsets a cap of ``bps`` allows against ``obligation``."""
    return obligation * bps // BPS


def penalty(
    mode: str, shortfall: int, fixed_fine: int, multiple_ppm: int, average_price: int
) -> int:
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
