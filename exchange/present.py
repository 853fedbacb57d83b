"""Units for people: how every value a person or a client reads is written.

The core, the journal and the snapshot keep integers: fen (0.01 CNY), whole tonnes, basis
points, parts per million and nanoseconds since the epoch. Everything read outside them - the
HTTP API's JSON, CSV files, the command line, the dashboard - shows

* prices and cash as CNY decimal strings with two decimals (``"85.40"``),
* rates as percentages with two decimals (``"5.00"`` is 5 %),
* ratios and factors as decimal strings with six decimals (``"1.000000"``),
* times as ISO-8601 with the zone's offset, in the market's time zone
  (``"2027-12-31T00:00:00+08:00"``),
* exact fractions as decimal strings with six decimals, rounded half to even,
* quantities as whole tonnes (integers, unchanged).

:func:`present` turns a JSON-able result built from the core's integers into that form, by
the suffix of each key (docs/PROTOCOL.md, "Units"):

===============  ===============  ==========================================================
key              becomes          value
===============  ===============  ==========================================================
``X_fen``        ``X``            CNY string, two decimals: 8540 -> ``"85.40"``
``X_bps``        ``X_pct``        percent string, two decimals: 500 -> ``"5.00"``
``X_ppm``        ``X``            decimal string, six decimals: 1000000 -> ``"1.000000"``
``X_ts``         ``X_at``         ISO-8601 with offset: ``"2027-12-31T00:00:00+08:00"``
``X_ns``         ``X_at``         (the same)
``ts``           ``at``           (the same)
``X_exact``      ``X``            ``"493416000000/3000000"`` -> ``"164472.000000"``
===============  ===============  ==========================================================

A value under such a key may be a number, ``None`` (kept), or a list or an object of them
(``{"PHCER": 500}`` under ``sub_caps_bps`` becomes ``{"PHCER": "5.00"}`` under
``sub_caps_pct``). When the object already has the new key (``revenue_share`` next to
``revenue_share_ppm``), its author wrote the people's form: that one is kept and the core's is
left out. Two keys that would become the same new key are a bug of the result's author:
:class:`PresentError`.

Inputs go the other way with :func:`parse_time` (ISO-8601 -> ns) and the core's
:mod:`exchange.core.units` (``parse_price``, ``percent_to_bps``, ``ratio_to_ppm``): the one place
where human-facing decimals become the core's integers stays that module.

This module is outside the core because it knows the display time zone: the market calendar's
(``[market.calendar] tz``, default Asia/Shanghai), set once at start with :func:`set_zone`.
"""

from __future__ import annotations

import datetime as dt
import re
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .core.units import PPM, UnitError, format_percent, format_price

__all__ = [
    "DEFAULT_ZONE",
    "EXACT_PLACES",
    "PresentError",
    "set_zone",
    "zone",
    "cny",
    "pct",
    "pct_text",
    "ratio",
    "ratio_text",
    "time_iso",
    "parse_time",
    "exact",
    "present",
    "present_key",
    "present_event",
    "text",
    "cap_text",
]

DEFAULT_ZONE = "Asia/Shanghai"
EXACT_PLACES = 6
"""Decimals of an exact fraction shown to people (rounded half to even)."""

_NS = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_zone: ZoneInfo = ZoneInfo(DEFAULT_ZONE)


class PresentError(ValueError):
    """A result that cannot be shown by the rules: two keys that would become one."""


def set_zone(name: str) -> None:
    """The display time zone (the market calendar's ``tz``): set once at start."""
    global _zone
    try:
        _zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def zone() -> ZoneInfo:
    return _zone


# ------------------------------------------------------------------------- single values


def cny(fen: int | None) -> str | None:
    """8540 fen -> ``"85.40"`` (CNY, two decimals); None stays None."""
    return None if fen is None else format_price(fen)


def pct(bps: int | None) -> str | None:
    """500 bps -> ``"5.00"`` (percent, two decimals, no sign of %): JSON and CSV."""
    if bps is None:
        return None
    whole, frac = divmod(abs(bps), 100)
    return f"{'-' if bps < 0 else ''}{whole}.{frac:02d}"


def pct_text(bps: int) -> str:
    """500 bps -> ``"5 %"``: a percentage in a sentence (command line, error messages)."""
    return format_percent(bps)


def ratio(ppm: int | None) -> str | None:
    """1000000 ppm -> ``"1.000000"``; 350000 -> ``"0.350000"`` (six decimals: exact)."""
    if ppm is None:
        return None
    whole, frac = divmod(abs(ppm), PPM)
    return f"{'-' if ppm < 0 else ''}{whole}.{frac:06d}"


def ratio_text(ppm: int | None) -> str | None:
    """1067777 ppm -> ``"1.067777"``, 700000 -> ``"0.7"``, 1200000000 -> ``"1200"``: the shortest
    exact form, for a view that writes a ratio or a quantity in tenths itself (the rules'
    factors and shares, a fuel's coefficient); :func:`ratio` is the suffix rule's fixed form."""
    if ppm is None:
        return None
    whole, frac = divmod(abs(ppm), PPM)
    text = f"{whole}.{frac:06d}".rstrip("0").rstrip(".")
    return f"-{text}" if ppm < 0 else text


def time_iso(ns: int | None, tz: ZoneInfo | None = None) -> str | None:
    """Nanoseconds since the epoch -> ISO-8601 in the market's zone with its offset:
    ``"2027-12-31T00:00:00+08:00"``; microseconds are shown when there are any (the
    nanoseconds below them are dropped: floor)."""
    if ns is None:
        return None
    at = _EPOCH + dt.timedelta(microseconds=ns // 1000)
    return at.astimezone(tz or _zone).isoformat()


_MIN_NS = 0
_MAX_NS = 2**63 - 1


def parse_time(text: str, tz: ZoneInfo | None = None) -> int:
    """ISO-8601 -> nanoseconds since the epoch. A date and time must carry its offset
    (``"2027-12-31T00:00:00+08:00"``, ``"2027-12-30T16:00:00Z"``); a date alone
    (``"2027-12-31"``) is its midnight in the market's zone. Raises UnitError otherwise."""
    if not isinstance(text, str) or len(text) > 40:
        raise UnitError(f"not an ISO-8601 time: {str(text)[:64]!r}")
    s = text.strip()
    try:
        if len(s) == 10:
            day = dt.date.fromisoformat(s)
            at = dt.datetime.combine(day, dt.time(0), tz or _zone)
        else:
            at = dt.datetime.fromisoformat(s)
            if at.tzinfo is None or at.utcoffset() is None:
                raise UnitError(f"time {text[:64]!r} has no zone: add its offset, e.g. +08:00 or Z")
    except ValueError as exc:
        if isinstance(exc, UnitError):
            raise
        raise UnitError(f"not an ISO-8601 time: {text[:64]!r}") from None
    delta = at - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000
    if not _MIN_NS <= ns <= _MAX_NS:
        raise UnitError(f"time {text[:64]!r} outside 1970-2262")
    return ns


def exact(value, places: int = EXACT_PLACES) -> str | None:
    """An exact fraction (``Fraction``, int, or ``"num/den"``) -> a decimal string with
    ``places`` decimals, rounded half to even: ``"493416000000/3000000"`` ->
    ``"164472.000000"``."""
    if value is None:
        return None
    if isinstance(value, str):
        num, sep, den = value.partition("/")
        value = Fraction(int(num), int(den) if sep else 1)
    f = Fraction(value)
    # an exact integer division, so the half-even rule sees the true remainder
    scale = 10**places
    n, r = divmod(f.numerator * scale, f.denominator)
    twice = 2 * r
    if twice > f.denominator or (twice == f.denominator and n & 1):
        n += 1
    sign = "-" if n < 0 else ""
    whole, frac = divmod(abs(n), scale)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"


# ------------------------------------------------------------------------- the converter


def _each(fn, v):
    if v is None:
        return None
    t = type(v)
    if t is dict:
        return {k: _each(fn, x) for k, x in v.items()}
    if t is list or t is tuple:
        return [_each(fn, x) for x in v]
    return fn(v)


def _int(fn):
    def conv(v):
        if type(v) is int:
            return fn(v)
        return v  # already shown (a string), or not a number: as it is

    return conv


_CNY = _int(format_price)
_PCT = _int(pct)
_RATIO = _int(ratio)


def _time(v):
    return time_iso(v) if type(v) is int else v


def _exact(v):
    if isinstance(v, (Fraction, int)) and type(v) is not bool:
        return exact(v)
    if isinstance(v, str) and v.replace("/", "", 1).lstrip("-").isdigit():
        return exact(v)
    return v


_FIELD = re.compile(r"[a-z][a-z0-9_]*")


def present_key(key: str):
    """``(new key, value converter)`` for a key the rules rename, else None. Only field names
    (lower-case snake case) are renamed: a key with a capital, a digit first, a dash or a
    colon is data - an instrument, a firm, an offset type - and stays as it is."""
    if _FIELD.fullmatch(key) is None:
        return None
    if key == "ts":
        return "at", _time
    stem, _, suffix = key.rpartition("_")
    if not stem:
        return None
    if suffix == "fen":
        return stem, _CNY
    if suffix == "bps":
        return stem + "_pct", _PCT
    if suffix == "ppm":
        return stem, _RATIO
    if suffix in ("ts", "ns"):
        return ("at" if stem == "ts" else stem + "_at"), _time
    if suffix == "exact":
        return stem, _exact
    return None


def present(value: Any) -> Any:
    """A JSON-able result in the core's units -> the same result in units for people (module
    docstring). Lists come out as lists; other values are unchanged."""
    t = type(value)
    if t is dict:
        out: dict = {}
        renamed: dict = {}
        for k, v in value.items():
            rule = present_key(k) if type(k) is str else None
            if rule is None:
                if k in renamed:
                    raise PresentError(f"key {k!r} and {renamed[k]!r} would both be {k!r}")
                out[k] = present(v)
                continue
            new, conv = rule
            if new in value:
                continue  # the author already wrote the people's form: it stands alone
            if new in renamed:
                raise PresentError(f"keys {renamed[new]!r} and {k!r} would both be {new!r}")
            renamed[new] = k
            out[new] = present(_each(conv, v))
        return out
    if t is list or t is tuple:
        return [present(x) for x in value]
    if t is Fraction:
        return exact(value)
    return value


# ------------------------------------------------------------------------- core events

# the fields of events that are fen without saying so (every other int is tonnes, a count or
# an id; the suffix rules take the rest)
_EVENT_FEN = {
    "execution_report": ("price", "last_px", "fee"),
    "trade": ("price", "buyer_fee", "seller_fee"),
    "market_state": ("reference_price",),
    # the modules' events (compliance, SME fund, rules)
    "compliance_settled": ("penalty", "penalty_paid"),
    "compliance_deadline_processed": ("average_price",),
    "sme_fund_configured": ("sme_period_limit", "period_limit"),
    "sme_fund_inflow": ("amount", "gross", "balance"),
    "grant_applied": ("amount",),
    "grant_disbursed": ("amount", "fund_balance", "sme_period_total", "period_total"),
    "gain_shared": ("amount", "price"),
}


def present_event(d: dict) -> dict:
    """An encoded core event (``encode_event``) -> the same event in units for people: the
    fen fields of its type as CNY strings (a posting's ``amount`` when its asset is CNY; book
    changes' and reference prices' prices), then :func:`present` for the suffix rules (``ts``
    -> ``at``, ``band_bps`` -> ``band_pct``, ...)."""
    kind = d.get("type")
    d = dict(d)
    for f in _EVENT_FEN.get(kind, ()):
        if type(d.get(f)) is int:
            d[f] = format_price(d[f])
    if kind == "execution_report" and not d.get("last_qty"):
        d["last_px"] = None  # no fill, no fill price (as the websocket writes it)
    if kind == "posting" and d.get("asset") == "CNY" and type(d.get("amount")) is int:
        d["amount"] = format_price(d["amount"])
    elif kind == "trade" and d.get("proceeds_split"):
        d["proceeds_split"] = [[who, format_price(amt)] for who, amt in d["proceeds_split"]]
    elif kind == "book_update":
        d["changes"] = [[c[0], format_price(c[1]), c[2]] for c in d.get("changes", ())]
    elif kind == "day_ended":
        d["reference_prices"] = [[sym, cny(px)] for sym, px in d.get("reference_prices", ())]
    return present(d)


# ------------------------------------------------------------------------- text for people


def text(value: Any) -> str:
    """A value for a line of command-line output: mappings as ``k=v, k=v``, sequences of
    pairs as ``a: 1, b: 2``, other sequences comma-separated; never a Python repr."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(x, (list, tuple)) and len(x) == 2 for x in value):
            return ", ".join(f"{text(a)}: {text(b)}" for a, b in value)
        return ", ".join(text(x) for x in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Fraction):
        return exact(value)
    return str(value)


def cap_text(bps: int) -> str:
    """An offset cap for a sentence: 500 -> ``"5 %"``."""
    return format_percent(bps)


# ------------------------------------------------------------------------- and back
_SIX = re.compile(r"-?[0-9]+\.[0-9]{6}")
_TWO = re.compile(r"-?[0-9]+\.[0-9]{2}")


def _record_from_people(v):
    """A record of the core (an allocation, in an event) from its people form, by the shapes
    :func:`present` writes: ``*_pct`` -> ``*_bps``, ``at`` / ``*_at`` -> ``ts`` / ``*_ts``, a
    six-decimal string -> ``*_ppm``, a two-decimal string -> ``*_fen``. Only for records the
    core built from integers: a decimal an author wrote for people has no way back."""
    from .core.units import parse_price, percent_to_bps, ratio_to_ppm

    if type(v) is list:
        return [_record_from_people(x) for x in v]
    if type(v) is not dict:
        return v
    out: dict = {}
    for k, x in v.items():
        if type(x) is str and k.endswith("_pct"):
            out[k[:-4] + "_bps"] = percent_to_bps(x)
        elif type(x) is str and (k == "at" or k.endswith("_at")):
            out["ts" if k == "at" else k[:-3] + "_ts"] = parse_time(x)
        elif type(x) is str and _SIX.fullmatch(x):
            out[k + "_ppm"] = ratio_to_ppm(x)
        elif type(x) is str and _TWO.fullmatch(x):
            out[k + "_fen"] = parse_price(x)
        else:
            out[k] = _record_from_people(x)
    return out


def event_fields_from_people(d: dict, fields) -> dict:
    """An event as :func:`present_event` wrote it -> its fields in the core's units, for a
    client that rebuilds the core's event objects (``exchange.sim.networked``): ``at`` ->
    ``ts``, ``X_at`` -> ``X_ts``, ``X_pct`` -> ``X_bps``, ``X`` -> ``X_ppm`` / ``X_fen``, and the
    unsuffixed fen fields back to fen. Times come back to the microsecond."""
    from .core.units import parse_price, percent_to_bps, ratio_to_ppm

    kind = d.get("type")
    fen = set(_EVENT_FEN.get(kind, ()))
    out: dict = {}
    for f in fields:
        src, conv = f, None
        if f == "ts":
            src, conv = "at", parse_time
        elif f.endswith(("_ts", "_ns")):
            src, conv = f[:-3] + "_at", parse_time
        elif f.endswith("_fen"):
            src, conv = f[:-4], parse_price
        elif f.endswith("_bps"):
            src, conv = f[:-4] + "_pct", percent_to_bps
        elif f.endswith("_ppm"):
            src, conv = f[:-4], ratio_to_ppm
        elif f in fen:
            conv = parse_price
        if src not in d:
            continue
        v = d[src]
        if conv is None and type(v) is dict:
            out[f] = _record_from_people(v)  # a record inside the event (an allocation)
            continue
        out[f] = v if conv is None or v is None or type(v) is int else conv(v)
    if kind == "execution_report" and out.get("last_px") is None and "last_px" in fields:
        out["last_px"] = 0  # the core's "no fill" price
    if kind == "posting" and d.get("asset") == "CNY" and isinstance(out.get("amount"), str):
        out["amount"] = parse_price(out["amount"])
    elif kind == "trade" and out.get("proceeds_split"):
        out["proceeds_split"] = tuple((who, parse_price(a)) for who, a in out["proceeds_split"])
    elif kind == "book_update" and "changes" in out:
        out["changes"] = tuple((c[0], parse_price(c[1]), c[2]) for c in out["changes"])
    elif kind == "day_ended" and "reference_prices" in out:
        out["reference_prices"] = tuple(
            (sym, None if px is None else parse_price(px)) for sym, px in out["reference_prices"]
        )
    return out
