"""The one place where human-facing decimals become the core's integers and back.

Quantities are whole tonnes of CO2e (``int``). Prices and cash are integer fen
(0.01 CNY). Rates are integer basis points (1 bp = 0.01 %) or parts per million.
Nothing in the ledger, the book or settlement is ever a ``float``.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation, ROUND_FLOOR

FEN_PER_CNY = 100
BPS = 10_000
PPM = 1_000_000


class UnitError(ValueError):
    """A value that cannot be converted exactly to the core's integer units."""


def parse_price(text: str | int | Decimal) -> int:
    """``"85.50"`` -> ``8550`` fen. Rejects more than two decimals, floats and junk."""
    if isinstance(text, bool) or isinstance(text, float):
        raise UnitError("prices travel as decimal strings, e.g. \"85.50\"")
    try:
        d = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise UnitError(f"not a decimal price: {text!r}") from None
    if not d.is_finite():
        raise UnitError(f"not a finite price: {text!r}")
    fen = d * FEN_PER_CNY
    if fen != fen.to_integral_value():
        raise UnitError(f"price {text!r} has more than two decimals (1 fen = 0.01 CNY)")
    return int(fen)


def format_price(fen: int) -> str:
    """``8550`` -> ``"85.50"``."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // FEN_PER_CNY}.{fen % FEN_PER_CNY:02d}"


def fee_floor(notional: int, bps: int) -> int:
    """Fee charged on a fill: floor(notional x bps / 10,000). The exchange never rounds up."""
    return notional * bps // BPS


def fee_ceil(notional: int, bps: int) -> int:
    """Upper bound reserved for a fee before the fill: ceil(notional x bps / 10,000)."""
    return -((-notional * bps) // BPS)


def share_floor(amount: int, ppm: int) -> int:
    """floor(amount x ppm / 1,000,000): the share of an amount at a rate in parts per million."""
    return amount * ppm // PPM


def ratio_to_ppm(value: str | Decimal | int) -> int:
    """``"0.35"`` -> 350000 ppm. Accepts a Decimal-compatible string in [0, 1] or beyond."""
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise UnitError(f"not a decimal ratio: {value!r}") from None
    return int((d * PPM).to_integral_value(rounding=ROUND_FLOOR))


def ppm_to_decimal(ppm: int) -> Decimal:
    return Decimal(ppm) / PPM


def percent_to_bps(value: str | Decimal | int) -> int:
    """``"10"`` (percent) -> 1000 bps."""
    d = Decimal(str(value)) * 100
    if d != d.to_integral_value():
        raise UnitError(f"percentage {value!r} is finer than one basis point")
    return int(d)


# ------------------------------------------------------------------ rules: exact ratios -> ints
# The rules module computes factors exactly (fractions.Fraction) and quantizes here, once.

def floor_int(value) -> int:
    """Round an exact rational (Fraction/int) down to an integer (allocations: whole tonnes)."""
    if type(value) is int:
        return value
    from fractions import Fraction
    v = value if type(value) is Fraction else Fraction(value)
    return v.numerator // v.denominator


def ppm_half_even(value) -> int:
    """An exact ratio (Fraction/Decimal/int) -> integer ppm, nearest, half to even."""
    from fractions import Fraction
    if type(value) is int:
        return value * PPM
    v = value if type(value) is Fraction else Fraction(value)
    return ratio_ppm(v.numerator, v.denominator)


def ratio_ppm(num: int, den: int) -> int:
    """``num / den`` (den > 0) in integer ppm, nearest, half to even: round(num x PPM / den)
    in integers (the rules explain every firm's factor and allocation with a dozen of these)."""
    q, r = divmod(num * PPM, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    return q


def ppm_toward(value, anchor_ppm: int) -> int:
    """An exact ratio -> integer ppm, rounded toward ``anchor_ppm`` (the previous value), so a
    value that respects a clamp or a step limit still respects it after rounding."""
    from fractions import Fraction
    v = Fraction(value) * PPM
    lo = v.numerator // v.denominator
    if lo == v:
        return lo
    return lo + 1 if lo < anchor_ppm else lo
