"""The one place where human-facing decimals become the core's integers and back.

Quantities are whole tonnes of CO2e (``int``). Prices and cash are integer fen
(0.01 CNY). Rates are integer basis points (1 bp = 0.01 %) or parts per million.
Nothing in the ledger, the book or settlement is ever a ``float``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, ROUND_FLOOR
from fractions import Fraction

FEN_PER_CNY = 100
BPS = 10_000
PPM = 1_000_000

# The core's limits (docs/CORE.md, "Limits"). At most MAX_QTY tonnes of an instrument are ever
# outstanding (issued, less clawed back) and at most MAX_CASH fen are ever on deposit, so no
# balance, reservation or system account can come near 2**63 - the journal's, the snapshot's
# and the compiled core's integers - whatever the commands. Both are far above any real market
# (world emissions are about 4 * 10**10 t a year).
MAX_QTY = 10**15  # tonnes
MAX_CASH = 10**18  # fen (10**16 CNY)


class UnitError(ValueError):
    """A value that cannot be converted exactly to the core's integer units."""


# Every decimal a person or a client writes goes through to_decimal: Decimal() itself takes
# "1E+999990" in no time, but the integer it then becomes has a million digits and converting
# it stalls the event loop for half a minute. So: at most 40 characters, plain digits, and an
# exponent of at most two digits - far beyond any price, cash amount, percentage or ratio.
MAX_DECIMAL_CHARS = 40
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?")


def to_decimal(value: str | int | Decimal, what: str = "number") -> Decimal:
    """A human decimal (``"85.50"``, ``"5"``, ``"0.35"``) -> a finite Decimal of bounded size.
    Raises UnitError for junk, floats, NaN/Infinity, over-long strings and big exponents."""
    if isinstance(value, bool):
        raise UnitError(f"not a decimal {what}: {value!r}")
    if isinstance(value, float):  # settings and scenarios written by hand: exact via repr
        value = repr(value)
    if isinstance(value, int):
        if value.bit_length() > 128:
            raise UnitError(f"{what} out of range")
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value.adjusted()) > MAX_DECIMAL_CHARS:
            raise UnitError(f"{what} out of range: {value!r}")
        return value
    if not isinstance(value, str):
        raise UnitError(f"not a decimal {what}: {value!r}")
    text = value.strip()
    if len(text) > MAX_DECIMAL_CHARS:
        raise UnitError(f"{what} too long (at most {MAX_DECIMAL_CHARS} characters)")
    if _DECIMAL_RE.fullmatch(text) is None:
        raise UnitError(f"not a decimal {what}: {value!r}")
    return Decimal(text)


def parse_price(text: str | int | Decimal) -> int:
    """``"85.50"`` -> ``8550`` fen. Rejects more than two decimals, floats and junk."""
    if isinstance(text, bool) or isinstance(text, float):
        raise UnitError('prices travel as decimal strings, e.g. "85.50"')
    try:
        d = to_decimal(text, "price")
    except InvalidOperation:
        raise UnitError(f"not a decimal price: {text!r}") from None
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
        d = to_decimal(value, "ratio")
    except InvalidOperation:
        raise UnitError(f"not a decimal ratio: {value!r}") from None
    return int((d * PPM).to_integral_value(rounding=ROUND_FLOOR))


def ppm_to_decimal(ppm: int) -> Decimal:
    return Decimal(ppm) / PPM


# a percentage as a person writes it: ASCII digits, an optional point and decimals - no sign,
# exponent, digit separator, other scripts' digits or surrounding whitespace
_PERCENT_RE = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?", re.ASCII)


def percent_to_bps(value: str | Decimal | int) -> int:
    """``"10"`` (percent) -> 1000 bps. A string must be plain decimal digits (``"5"``,
    ``"0.25"``): ``"5_0"``, ``"1e2"``, ``"-0"``, ``"５"``, ``"5\\n"`` are refused."""
    if isinstance(value, str) and _PERCENT_RE.fullmatch(value) is None:
        raise UnitError(f"not a percentage (digits, at most one decimal point): {value[:64]!r}")
    d = to_decimal(value, "percentage") * 100
    if d != d.to_integral_value():
        raise UnitError(f"percentage {value!r} is finer than one basis point")
    return int(d)


def format_percent(bps: object) -> str:
    """1000 bps -> ``"10 %"``, 25 -> ``"0.25 %"``, 210 -> ``"2.1 %"``: how a person reads a
    cap or a rate (anything but an int of bps is shown as given)."""
    if type(bps) is not int:
        return repr(bps)
    whole, frac = divmod(abs(bps), 100)
    text = f"{whole}.{frac:02d}".rstrip("0").rstrip(".")
    return f"{'-' if bps < 0 else ''}{text} %"


# ------------------------------------------------------------------ rules: exact ratios -> ints
# The rules module computes factors exactly (fractions.Fraction) and quantizes here, once.


def floor_int(value: int | Fraction) -> int:
    """Round an exact rational (Fraction/int) down to an integer (allocations: whole tonnes)."""
    if type(value) is int:
        return value
    v = value if type(value) is Fraction else Fraction(value)
    return v.numerator // v.denominator


def ppm_half_even(value: int | Fraction | Decimal) -> int:
    """An exact ratio (Fraction/Decimal/int) -> integer ppm, nearest, half to even."""
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


def ppm_toward(value: int | Fraction | Decimal, anchor_ppm: int) -> int:
    """An exact ratio -> integer ppm, rounded toward ``anchor_ppm`` (the previous value), so a
    value that respects a clamp or a step limit still respects it after rounding."""
    v = Fraction(value) * PPM
    lo = v.numerator // v.denominator
    if lo == v:
        return lo
    return lo + 1 if lo < anchor_ppm else lo
