"""Responsibility along a supply chain given as a file: the same formulas the rules module uses
at each close (:mod:`exchange.rules.formulas`), for an operator or a firm to check a chain
before any data is in the engine. ``python -m exchange rules responsibility CHAIN.toml``.

A chain file lists firms::

    [[firms]]
    id = "SMELTER"             # unique
    product = "steel"          # what it makes (may be omitted for a final consumer)
    direct_emissions = 18000   # t CO2, whole tonnes
    output = 10000             # units of product, whole units; 0 = a final consumer
    inputs = { ore = 15000, power = 4000 }   # units of other products it used

What comes out: each product's responsibility factor ``beta_p`` (t CO2 per unit: its producers'
direct emissions plus what their inputs embody, over their output) and each firm's
responsibility ``R_f = E_f + sum_i in_fi x beta_i`` (t CO2): what it answers for. A producer
is compared with its product's average (``gap = 1 - I_f / beta_p``, as at the close); a final
consumer bears the average of what it buys. An input that nobody in the chain makes must be
declared in ``outside = ["diesel", ...]`` (bought from outside the system: it counts 0 and is
listed); an undeclared one is an error naming the field, as it is usually a misspelt product. Units
and rounding are the engine's: whole
tonnes and units in, beta to the ppm (half even), everything else exact from there.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..core.units import PPM, ppm_half_even, ppm_to_decimal
from . import formulas as F

FIRM_FIELDS = ("id", "product", "direct_emissions", "output", "inputs")
TOP_FIELDS = ("firms", "name", "description", "outside")


class ChainError(ValueError):
    """A malformed chain or one without a solution; the message names the field or products."""


def _whole(v: object, where: str) -> int:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or (isinstance(v, float) and not v.is_integer())
    ):
        raise ChainError(f"{where}: must be a whole number >= 0, got {v!r}")
    if v < 0:
        raise ChainError(f"{where}: must be a whole number >= 0, got {v!r} (negative)")
    return int(v)


def parse_chain(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Check a chain (the TOML document as a dict) and return its firms as
    ``[{"id", "product", "direct_emissions", "output", "inputs"}]``; raise
    :class:`ChainError` naming the first bad field, e.g. ``firms[2].output``."""
    for k in data:
        if k not in TOP_FIELDS:
            raise ChainError(f"{k}: unknown key (a chain has {', '.join(TOP_FIELDS)})")
    firms = data.get("firms")
    if not isinstance(firms, list) or not firms:
        raise ChainError("firms: needs at least one [[firms]] table")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, f in enumerate(firms):
        at = f"firms[{n}]"
        if not isinstance(f, dict):
            raise ChainError(f"{at}: must be a table")
        fid = f.get("id")
        if not isinstance(fid, str) or not fid:
            raise ChainError(f"{at}.id: must be a non-empty string")
        at = f"firms[{n}] ({fid})"
        if fid in seen:
            raise ChainError(f"{at}.id: duplicate firm id")
        seen.add(fid)
        for k in f:
            if k not in FIRM_FIELDS:
                raise ChainError(f"{at}.{k}: unknown field (a firm has {', '.join(FIRM_FIELDS)})")
        for k in ("direct_emissions", "output"):
            if k not in f:
                raise ChainError(f"{at}.{k}: missing")
        em = _whole(f["direct_emissions"], f"{at}.direct_emissions")
        y = _whole(f["output"], f"{at}.output")
        prod = f.get("product", "")
        if not isinstance(prod, str):
            raise ChainError(f"{at}.product: must be a string")
        if y > 0 and not prod:
            raise ChainError(f"{at}.product: needed when output > 0 (what does it make?)")
        inputs = f.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ChainError(f"{at}.inputs: must be a table {{product = quantity}}")
        q = {}
        for i, v in inputs.items():
            q[i] = _whole(v, f"{at}.inputs.{i}")
        out.append(
            {
                "id": fid,
                "product": prod,
                "direct_emissions": em,
                "output": y,
                "inputs": dict(sorted(q.items())),
            }
        )
    outside = data.get("outside", [])
    if not isinstance(outside, list) or not all(isinstance(x, str) for x in outside):
        raise ChainError("outside: must be a list of product names")
    made = {f["product"] for f in out if f["output"] > 0}
    for n, f in enumerate(out):
        for i in f["inputs"]:
            if i not in made and i not in outside:
                raise ChainError(
                    f"firms[{n}] ({f['id']}).inputs.{i}: nobody in the chain makes {i!r}; "
                    f"declare it in outside = [...] if it is bought from outside the chain"
                )
    return out


def load_chain(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ChainError(f"cannot read the chain file: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ChainError(f"not TOML: {e}") from None
    return parse_chain(data)


def _dec(ppm: int | None) -> str | None:
    return None if ppm is None else format(ppm_to_decimal(ppm), "f")


def responsibility(firms: list[dict[str, Any]]) -> dict[str, Any]:
    """beta per product and each firm's responsibility for a parsed chain (see module doc).
    Numbers as the engine keeps them: ``*_ppm`` integers (ppm of a tonne, or of a tonne per
    unit) with decimal strings beside them. Raises :class:`ChainError` for a non-productive
    input network, naming its products."""
    producers: dict[str, list[tuple[int, int, dict[str, int]]]] = {}
    who: dict[str, list[str]] = {}
    for f in firms:
        if f["output"] > 0:
            producers.setdefault(f["product"], []).append(
                (f["direct_emissions"], f["output"], f["inputs"])
            )
            who.setdefault(f["product"], []).append(f["id"])
    beta: dict[str, int] = {}
    iters = 0
    if producers:
        try:
            beta, iters = F.responsibility_factors(producers)
        except F.Diverges as d:
            raise ChainError(str(d)) from None
    consumers = [f["inputs"] for f in firms if f["output"] == 0]
    outside = F.outside_inputs(producers, consumers)
    used: dict[str, int] = {}
    for f in firms:
        for i, q in f["inputs"].items():
            used[i] = used.get(i, 0) + q
    products = []
    for p in sorted(beta):
        y = sum(r[1] for r in producers[p])
        products.append(
            {
                "product": p,
                "beta_ppm": beta[p],
                "beta": _dec(beta[p]),
                "producers": who[p],
                "output": y,
                "used_in_chain": used.get(p, 0),
                "not_used_in_chain": y - used.get(p, 0),
            }
        )
    rows = []
    direct = final = Fraction(0)
    for f in firms:
        emb = F.embodied(f["inputs"], beta)
        resp = F.responsibility_tonnes(f["direct_emissions"], f["inputs"], beta)
        direct += f["direct_emissions"]
        row = {
            "id": f["id"],
            "product": f["product"] or None,
            "role": "producer" if f["output"] > 0 else "final consumer",
            "direct_emissions": f["direct_emissions"],
            "output": f["output"],
            "inputs": f["inputs"],
            "embodied_ppm": ppm_half_even(emb),
            "embodied_t": _dec(ppm_half_even(emb)),
            "responsibility_ppm": ppm_half_even(resp),
            "responsibility_t": _dec(ppm_half_even(resp)),
            "intensity_ppm": None,
            "intensity": None,
            "gap_ppm": None,
            "gap": None,
            "excess_ppm": None,
            "excess_t": None,
            "outside_inputs": [i for i in f["inputs"] if i in outside],
        }
        if f["output"] > 0:
            b = beta[f["product"]]
            inten = F.intensity(resp, f["output"])
            # what it answers for above its product's average (negative: below it)
            excess = resp - Fraction(b * f["output"], PPM)
            row.update(
                intensity_ppm=ppm_half_even(inten),
                intensity=_dec(ppm_half_even(inten)),
                excess_ppm=ppm_half_even(excess),
                excess_t=_dec(ppm_half_even(excess)),
            )
            if b > 0:
                g = F.gap(inten, b)
                row.update(gap_ppm=ppm_half_even(g), gap=_dec(ppm_half_even(g)))
        else:
            final += resp
        rows.append(row)
    outside_rows = [
        {"product": i, "quantity": used[i], "used_by": [f["id"] for f in firms if i in f["inputs"]]}
        for i in outside
    ]
    # every tonne emitted in the chain is borne by a final consumer or leaves the chain
    # embodied in output nobody inside uses (up to beta's rounding to the ppm)
    sold = sum(
        (Fraction(beta[p] * (sum(r[1] for r in producers[p]) - used.get(p, 0)), PPM) for p in beta),
        Fraction(0),
    )
    balance = {
        "direct_emissions_t": _dec(ppm_half_even(direct)),
        "final_consumers_t": _dec(ppm_half_even(final)),
        "not_used_in_chain_t": _dec(ppm_half_even(sold)),
        "rounding_t": _dec(ppm_half_even(direct - final - sold)),
    }
    return {
        "products": products,
        "firms": rows,
        "outside_inputs": outside_rows,
        "iterations": iters,
        "balance": balance,
    }


def _num(s: str | None, places: int) -> str:
    if s is None:
        return "-"
    return f"{Decimal(s):,.{places}f}"


def render_text(result: dict[str, Any], source: str = "") -> str:
    """A readable table of :func:`responsibility`'s result."""
    lines = [
        f"Responsibility along the chain {source}".rstrip()
        + f" ({result['iterations']} iterations)",
        "",
    ]
    pw = max([len("product")] + [len(p["product"]) for p in result["products"]])
    lines.append(
        f"{'product':<{pw}}  {'beta t/unit':>12}  {'output':>12}  {'used in chain':>13}  producers"
    )
    for p in result["products"]:
        lines.append(
            f"{p['product']:<{pw}}  {_num(p['beta'], 6):>12}  {p['output']:>12,}  "
            f"{p['used_in_chain']:>13,}  {', '.join(p['producers'])}"
        )
    lines.append("")
    fw = max([len("firm")] + [len(f["id"]) for f in result["firms"]])
    qw = max([len("product")] + [len(f["product"] or "-") for f in result["firms"]])
    lines.append(
        f"{'firm':<{fw}}  {'product':<{qw}}  {'role':<14}  {'direct t':>10}  "
        f"{'embodied t':>12}  {'answers for t':>14}  {'t/unit':>9}  {'vs beta_p':>9}"
    )
    for f in result["firms"]:
        gap = "-"
        if f["gap"] is not None:
            v = round(-Decimal(f["gap"]) * 100, 1)
            gap = "0.0 %" if v == 0 else f"{v:+.1f} %"  # no "-0.0" from beta's rounding
        lines.append(
            f"{f['id']:<{fw}}  {(f['product'] or '-'):<{qw}}  {f['role']:<14}  "
            f"{f['direct_emissions']:>10,}  {_num(f['embodied_t'], 3):>12}  "
            f"{_num(f['responsibility_t'], 3):>14}  {_num(f['intensity'], 4):>9}  {gap:>9}"
        )
    lines.append("")
    lines.append(
        "answers for = direct emissions + inputs x their products' beta; vs beta_p = "
        "its intensity above (+) or below (-) its product's average"
    )
    for o in result["outside_inputs"]:
        lines.append(
            f"outside the chain (nobody in it makes it, counted 0): {o['product']}, "
            f"{o['quantity']:,} units used by {', '.join(o['used_by'])}"
        )
    b = result["balance"]
    lines.append(
        f"balance: direct emissions {_num(b['direct_emissions_t'], 3)} t = final "
        f"consumers {_num(b['final_consumers_t'], 3)} t + embodied in output not "
        f"used in the chain {_num(b['not_used_in_chain_t'], 3)} t"
        + (
            ""
            if Fraction(b["rounding_t"]) == 0
            else f" (beta's rounding to the ppm: {_num(b['rounding_t'], 6)} t)"
        )
    )
    return "\n".join(lines)
