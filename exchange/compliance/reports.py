"""Compliance read side: firm statements, the market-wide summary, the offset-cap what-if.

Pure functions of an :class:`~exchange.core.exchange.Exchange` (no I/O, nothing changes), used by
the CLI (``python -m exchange report ...``), the admin API and the tests. The dicts they build
keep the core's units - money integer fen (``*_fen``), quantities whole tonnes, rates basis
points (``*_bps``), times ns (``*_ts``) - so tests can add them up; what a person or a client
reads goes through :func:`statement_for_people` / :func:`exchange.present.present` (CNY
strings, percent, ISO-8601 times), and the CSV renderings flatten that form.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any, Iterable

from ..core.units import PPM, format_percent, format_price
from ..present import present, ratio_text, text
from . import mrv
from .fund import firm_grants
from .module import ComplianceModule, STATUS_UNVERIFIED

if TYPE_CHECKING:
    from ..core.exchange import Exchange
    from ..rules.module import RulesModule


def module(ex: Exchange) -> ComplianceModule:
    m = ex.modules.get("compliance")
    if not isinstance(m, ComplianceModule):
        raise LookupError("the exchange has no compliance module")
    return m


def _rules(ex: Exchange) -> RulesModule | None:
    from ..rules.module import RulesModule

    r = ex.modules.get("rules")
    return r if isinstance(r, RulesModule) else None


def _params(m: ComplianceModule) -> dict[str, Any]:
    """The market's compliance parameters (``configure_compliance``; a period needs them)."""
    if m.params is None:
        raise KeyError("compliance is not configured")
    return m.params


def _coef_text(ppm: int) -> str:
    text = ratio_text(ppm)  # None only for None
    return text if text is not None else ""


def _share_text(ppm: int) -> str:
    """A ratio in ppm as a decimal string, fixed point: 700,000 -> "0.7", 1,000,000 -> "1"."""
    return _coef_text(ppm)


def _pct_text(ppm: int) -> str:
    """A ratio in ppm as a percentage: 700,000 -> "70 %", 333,333 -> "33.3333 %"."""
    return f"{ppm // 10_000}.{ppm % 10_000:04d}".rstrip("0").rstrip(".") + " %"


_SURPLUS_TEXT = {
    "revert": "surplus reverts to the parent",
    "bank": "surplus stays banked with the SME",
}
_SHORTFALL_TEXT = {"sme": "shortfall borne by the SME", "parent": "shortfall covered by the parent"}


def _sub_quota_lines(st: dict[str, Any]) -> list[str]:
    L = []
    for q in st["sub_quotas"]:
        head = f"received from {q['parent']}" if q["role"] == "sme" else f"split to {q['sme']}"
        chain = f" in chain {q['chain_id']}" if q.get("chain_id") else ""
        L.append(
            f"  Sub-quota #{q['lot_id']} {head}{chain}: {q['instrument']} granted "
            f"{q['granted']} t, held {q['held']} t, sold {q['sold']} t"
        )
        share = q["revenue_share_ppm"]
        surplus = _SURPLUS_TEXT.get(q["surplus_rule"], q["surplus_rule"])
        shortfall = _SHORTFALL_TEXT.get(q["shortfall_rule"], q["shortfall_rule"])
        L.append(
            f"    terms: SME keeps {_pct_text(share)} of proceeds (parent "
            f"{_pct_text(PPM - share)}); {surplus}; {shortfall}"
        )
        if q["sold"]:
            L.append(
                f"    proceeds: SME {format_price(q['sme_proceeds_fen'])} CNY, parent "
                f"{format_price(q['parent_proceeds_fen'])} CNY"
            )
        use = {k: v for k, v in q["compliance"].items() if k != "settled_period" and v}
        if use:
            L.append(
                "    at the deadline: "
                + ", ".join(f"{k.replace('_', ' ')} {v} t" for k, v in use.items())
            )
        s = q.get("settlement")
        if s:
            left = f", {s['reserved_left']} t in orders left" if s["reserved_left"] else ""
            L.append(
                f"    period end {s['period']}: surplus {s['surplus']} t "
                f"{'reverted' if s['action'] == 'revert' else 'banked'}{left}"
            )
    return L


def emissions_by_category(
    rec: dict[str, Any] | None, covered: Iterable[str] | None = None
) -> dict[str, Any]:
    """A record's emissions per category (t CO2e) and whether each is covered, i.e. counts
    toward the obligation: ``energy`` (with its ``fuels`` and ``electricity`` parts),
    ``process``, ``natural``; ``total`` = the three, ``covered_total`` = the covered ones (the
    obligation's base once verified), ``not_covered_total`` = the rest. The covered categories
    are the ones in force when the data was submitted; ``covered`` (the market's current ones)
    labels a firm without a submission."""
    if rec is not None and rec["version"] > 0:
        covered = rec["covered_categories"]
    covered = list(covered or ())
    r = rec if rec is not None else {}
    fe, ee = r.get("fuel_emissions", 0), r.get("electricity_emissions", 0)
    total, cov = r.get("emissions", 0), r.get("covered_emissions", 0)
    return {
        "energy": {
            "emissions": fe + ee,
            "covered": "energy" in covered,
            "fuels": fe,
            "electricity": ee,
            "electricity_mwh": r.get("electricity_mwh", 0),
        },
        "process": {"emissions": r.get("process_emissions", 0), "covered": "process" in covered},
        "natural": {"emissions": r.get("natural_emissions", 0), "covered": "natural" in covered},
        "total": total,
        "covered_total": cov,
        "not_covered_total": total - cov,
        "covered_categories": covered,
    }


def _offsets_vs_cap(
    m: ComplianceModule, rec: dict[str, Any], period: int, ts: int
) -> dict[str, Any]:
    obligation = m.obligation_of(rec)
    cap_bps, subs = m.cap_at(period, ts)
    cap = mrv.cap_qty(obligation, cap_bps)
    used = rec["offsets"]
    out = {
        "cap_bps": cap_bps,
        "cap_qty": cap,
        "used": used,
        "remaining": max(0, cap - used),
        "over_current_cap": max(0, used - cap),
        "sub_caps": {},
    }
    for otype, bps in sorted(subs.items()):
        q = mrv.cap_qty(obligation, bps)
        u = rec["offsets_by_type"].get(otype, 0)
        out["sub_caps"][otype] = {
            "bps": bps,
            "cap_qty": q,
            "used": u,
            "remaining": max(0, min(q - u, cap - used)),
        }
    for otype, u in sorted(rec["offsets_by_type"].items()):
        if otype not in subs:
            out["sub_caps"].setdefault(
                otype, {"bps": None, "cap_qty": None, "used": u, "remaining": None}
            )
    return out


def firm_statement(ex: Exchange, firm_id: str, period: int) -> dict[str, Any]:
    """Everything about one firm's compliance for one period."""
    m = module(ex)
    if period not in m.periods:
        raise KeyError(f"no compliance period {period}")
    acct = ex.accounts.get(firm_id)
    if acct is None or acct.system:
        raise KeyError(f"unknown firm {firm_id!r}")
    p = m.periods[period]
    rec = m.record(firm_id, period)
    rules = _rules(ex)
    params = _params(m)
    coef = params["coefficients_ppm"]
    num, den = params["co2_per_c"]
    st: dict[str, Any] = {
        "firm_id": firm_id,
        "name": acct.name,
        "sector": acct.sector,
        "product": acct.product,
        "size_class": acct.size_class,
        "period": period,
        "deadline_ts": p["deadline_ts"],
        "period_closed": p["closed"],
        "as_of_ts": ex.now,
    }
    covered_now = params["covered_categories"]
    st["emissions_by_category"] = dict(
        emissions_by_category(rec, covered_now),
        verified=rec is not None and rec["status"] == "verified",
    )
    if rec is None:
        st["submission"] = {"status": "none"}
        st["obligation"] = {
            "verified_emissions": 0,
            "added_by_rules": 0,
            "total": 0,
            "covered_categories": list(covered_now),
        }
        st["surrenders"] = []
        st["surrendered"] = {"allowances": 0, "offsets": 0, "total": 0, "offsets_by_type": {}}
        st["offsets_vs_cap"] = None
        st["settlement"] = {"status": "not_reported"} if p["closed"] else None
    else:
        st["submission"] = {
            "status": rec["status"],
            "version": rec["version"],
            "fuels": [
                {
                    "fuel": f,
                    "tce": q,
                    "carbon_coefficient_t_c_per_tce": _coef_text(coef.get(f, 0)),
                    "emissions_t_co2_exact": f"{q * coef.get(f, 0) * num}/{den * PPM}",
                }
                for f, q in rec["fuels"]
            ],
            "fuel_emissions": rec["fuel_emissions"],
            "electricity_mwh": rec["electricity_mwh"],
            "grid_factor_t_co2_per_mwh": None
            if rec["grid_factor_ppm"] is None
            else _coef_text(rec["grid_factor_ppm"]),
            "electricity_emissions_t_co2_exact": (
                f"{rec['electricity_mwh'] * (rec['grid_factor_ppm'] or 0)}/{PPM}"
            ),
            "electricity_emissions": rec["electricity_emissions"],
            "process_emissions": rec["process_emissions"],
            "natural_emissions": rec["natural_emissions"],
            "emissions": rec["emissions"],
            "covered_categories": list(rec["covered_categories"]),
            "covered_emissions": rec["covered_emissions"],
            "output": rec["output"],
            "submitted_ts": rec["submitted_ts"],
            "verifier": rec["verifier"],
            "verified_ts": rec["verified_ts"],
            "rejections": [
                {"ts": r[0], "verifier": r[1], "reason": r[2], "version": r[3]}
                for r in rec["rejections"]
            ],
        }
        # the obligation counts the covered categories only; the statement's
        # emissions_by_category shows the rest
        verified = rec["covered_emissions"] if rec["status"] == "verified" else 0
        st["obligation"] = {
            "verified_emissions": verified,
            "added_by_rules": rec["extra_obligation"],
            "total": m.obligation_of(rec),
            "covered_categories": list(
                rec["covered_categories"] if rec["version"] else covered_now
            ),
        }
        st["surrenders"] = [
            {
                "seq": s[0],
                "ts": s[1],
                "instrument": s[2],
                "kind": s[3],
                "offset_type": s[4],
                "qty": s[5],
                "by": s[6],
                "cap_bps_in_effect": s[7],
            }
            for s in rec["surrenders"]
        ]
        st["surrendered"] = {
            "allowances": rec["surrendered"] - rec["offsets"],
            "offsets": rec["offsets"],
            "total": rec["surrendered"],
            "offsets_by_type": dict(sorted(rec["offsets_by_type"].items())),
        }
        ts = p["closed_ts"] if p["closed"] else ex.now
        st["offsets_vs_cap"] = _offsets_vs_cap(m, rec, period, ts)
        st["settlement"] = dict(rec["settlement"]) if rec["settlement"] else None
    st["outstanding"] = max(0, st["obligation"]["total"] - st["surrendered"]["total"])
    st["status"] = (
        st["settlement"]["status"] if st["settlement"] else "open" if rec is not None else "none"
    )
    # allocation and factor history come from the rules module when it is loaded
    st["allocation"] = (
        rules.allocation(firm_id, period)
        if rules is not None and hasattr(rules, "allocation")
        else None
    )
    st["next_period_allocation"] = (
        rules.allocation(firm_id, period + 1)
        if rules is not None and hasattr(rules, "allocation")
        else None
    )
    st["factor_history"] = (
        rules.factor_history(firm_id)
        if rules is not None and hasattr(rules, "factor_history")
        else []
    )
    st["holdings"] = {
        sym: {"total": h.total, "reserved": h.reserved, "lots": dict(h.lots)}
        for sym, h in sorted(acct.holdings.items())
        if h.total or h.reserved
    }
    st["cash"] = {"cash_fen": acct.cash, "reserved_fen": acct.cash_reserved}
    # allowances still held that count for this period: with banking they carry forward
    st["banking"] = params["banking"]
    st["eligible_allowances_held"] = {
        sym: h.total
        for sym, h in sorted(acct.holdings.items())
        if h.total
        and ex.instruments[sym].kind == "allowance"
        and m.is_eligible(period, ex.instruments[sym])[0]
    }
    st["trades"] = [
        {
            "instrument": sym,
            "bought": a[0],
            "buy_notional_fen": a[1],
            "sold": a[2],
            "sell_notional_fen": a[3],
            "trades": a[4],
            "fees_fen": a[5],
        }
        for sym, a in sorted(m.trades.get(firm_id, {}).get(period, {}).items())
    ]
    # sub-quotas the firm received (an SME) or split out (a core firm), with their terms; the
    # period-end settlement of the surplus is the rules module's (settle_sub_quotas)
    settled = getattr(rules, "settled_lots", None) or {}
    st["sub_quotas"] = [
        {
            "lot_id": lid,
            "role": "sme" if lot["sme"] == firm_id else "parent",
            "parent": lot["parent"],
            "sme": lot["sme"],
            "instrument": lot["instrument"],
            "period": getattr(ex.instruments.get(lot["instrument"]), "vintage", None),
            "chain_id": lot.get("chain_id"),
            "created_seq": lot.get("created_seq"),
            "granted": lot["granted"],
            "held": lot["held"],
            "sold": lot["sold"],
            "revenue_share": _share_text(lot["revenue_share_ppm"]),
            "revenue_share_ppm": lot["revenue_share_ppm"],
            "surplus_rule": lot["surplus_rule"],
            "shortfall_rule": lot["shortfall_rule"],
            "sme_proceeds_fen": lot["sme_proceeds"],
            "parent_proceeds_fen": lot["parent_proceeds"],
            "settlement": dict(settled[lid]) if lid in settled else None,
            "compliance": dict(sorted(m.sub_quota_use.get(lid, {}).items())),
        }
        for lid, lot in sorted(ex.sub_quotas.items())
        if firm_id in (lot["sme"], lot["parent"])
    ]
    # the SME fund: the firm's grant applications for the period, what it received, and
    # what of its penalty went to the fund
    st["sme_fund"] = firm_grants(ex, firm_id, period)
    return st


# The summary's per-category columns (verified t CO2e): energy and its two parts, process,
# natural, and the covered sum the obligation is made of.
CATEGORY_COLUMNS = (
    "energy_fuels",
    "energy_electricity",
    "energy",
    "process",
    "natural",
    "covered_emissions",
)


def _category_columns(rec: dict[str, Any] | None) -> dict[str, int]:
    if rec is None:
        return {k: 0 for k in CATEGORY_COLUMNS}
    fe, ee = rec["fuel_emissions"], rec["electricity_emissions"]
    return {
        "energy_fuels": fe,
        "energy_electricity": ee,
        "energy": fe + ee,
        "process": rec["process_emissions"],
        "natural": rec["natural_emissions"],
        "covered_emissions": rec["covered_emissions"],
    }


def compliance_summary(ex: Exchange, period: int) -> dict[str, Any]:
    """Market-wide compliance for one period: one row per firm with a record, totals."""
    m = module(ex)
    if period not in m.periods:
        raise KeyError(f"no compliance period {period}")
    p = m.periods[period]
    rows = []
    totals = {
        "emissions": 0,
        **{k: 0 for k in CATEGORY_COLUMNS},
        "obligation": 0,
        "surrendered": 0,
        "allowances": 0,
        "offsets": 0,
        "shortfall": 0,
        "penalty_fen": 0,
        "penalty_paid_fen": 0,
        "deduction": 0,
    }
    counts: dict[str, int] = {}
    # carbon-inclusive platforms hold credits but are not regulated emitters
    from ..registry.module import RegistryModule

    reg = ex.modules.get("registry")
    platforms = reg.platforms if isinstance(reg, RegistryModule) else {}
    for firm_id in sorted(ex.accounts):
        acct = ex.accounts[firm_id]
        if acct.system:
            continue
        rec = m.record(firm_id, period)
        if rec is None and firm_id in platforms:
            continue
        if rec is None:
            status = "not_reported" if p["closed"] else "none"
            row: dict[str, Any] = {
                "firm_id": firm_id,
                "size_class": acct.size_class,
                "submission": "none",
                **dict.fromkeys(totals, 0),  # every summed column, nothing to sum
                "status": status,
            }
        else:
            s = rec["settlement"]
            obligation = m.obligation_of(rec)
            outstanding = max(0, obligation - rec["surrendered"])
            verified = rec["status"] == "verified"
            row = {
                "firm_id": firm_id,
                "size_class": acct.size_class,
                "submission": rec["status"],
                # verified emissions, every category; the obligation counts the covered
                "emissions": rec["emissions"] if verified else 0,
                **_category_columns(rec if verified else None),
                "obligation": obligation,
                "surrendered": rec["surrendered"],
                "allowances": rec["surrendered"] - rec["offsets"],
                "offsets": rec["offsets"],
                "shortfall": s["shortfall"] if s else outstanding,
                "penalty_fen": s["penalty"] if s else 0,
                "penalty_paid_fen": s["penalty_paid"] if s else 0,
                "deduction": s["deduction"] if s else 0,
                "status": s["status"] if s else "open",
            }
        for k in totals:
            totals[k] += row[k]
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        rows.append(row)
    as_of = p["closed_ts"] if p["closed"] else ex.now
    cap_bps, subs = m.cap_at(period, as_of)
    return {
        "period": period,
        "start_ts": p["start_ts"],
        "deadline_ts": p["deadline_ts"],
        "as_of_ts": as_of,  # the cap in force is the one at this time (ns)
        "closed": p["closed"],
        "closed_ts": p["closed_ts"],
        "average_price_fen": p["average_price"] if p["closed"] else m.average_price(period),
        "offset_cap_bps": cap_bps,
        "offset_sub_caps_bps": dict(sorted(subs.items())),
        "cap_history": [
            {
                "effective_ts": c[0],
                "seq": c[1],
                "cap_bps": c[2],
                "sub_caps_bps": {k: v for k, v in c[3]},
                "operator": c[4],
            }
            for c in p["caps"]
        ],
        "covered_categories": list(_params(m)["covered_categories"]),
        "grid_factor_t_co2_per_mwh": _coef_text(_params(m)["grid_factor_ppm"]),
        "counts": dict(sorted(counts.items())),
        "totals": totals,
        "firms": rows,
    }


def what_if_cap(
    ex: Exchange, period: int, cap_bps: int, sub_caps_bps: dict[str, int] | None = None
) -> dict[str, Any]:
    """Which firms' offsets would exceed a proposed cap, and by how much (nothing changes).

    Per firm with an obligation (verified, or provisional from a pending submission's
    computed emissions): offsets already surrendered (they stay valid: a cap change
    never rewrites a surrender) and eligible offsets still held that they could no longer use.
    ``exceeds_by = max(0, surrendered + held - proposed cap)`` split into
    ``surrendered_over`` and ``holdings_over``; the same per offset type for the sub-caps.
    """
    m = module(ex)
    if period not in m.periods:
        raise KeyError(f"no compliance period {period}")
    if type(cap_bps) is not int or not 0 <= cap_bps <= 10_000:
        raise ValueError(
            f"the offset cap must be within 0 % .. 100 %, got {format_percent(cap_bps)}"
        )
    subs = dict(sub_caps_bps or {})
    for k, v in subs.items():
        if type(v) is not int or not 0 <= v <= cap_bps:
            raise ValueError(
                f"the {k} sub-cap must be within 0 % .. the cap "
                f"({format_percent(cap_bps)}), got {format_percent(v)}"
            )
    p = m.periods[period]
    now = p["closed_ts"] if p["closed"] else ex.now
    cur_bps, cur_subs = m.cap_at(period, now)
    firms = []
    for firm_id in sorted(m.records):
        rec = m.records[firm_id].get(period)
        if rec is None or rec["status"] not in ("verified", "pending"):
            continue
        acct = ex.accounts.get(firm_id)
        # a pending submission gives a provisional obligation (its computed emissions)
        provisional = rec["status"] == "pending"
        obligation = (
            rec["covered_emissions"] + rec["extra_obligation"]
            if provisional
            else m.obligation_of(rec)
        )
        held: dict[str, int] = {}
        for sym, h in sorted(acct.holdings.items()) if acct is not None else ():
            ins = ex.instruments.get(sym)
            if (
                ins is None or ins.kind != "offset" or h.available <= 0 or ins.offset_type is None
            ):  # (an offset always names its type)
                continue
            if m.is_eligible(period, ins)[0]:
                held[ins.offset_type] = held.get(ins.offset_type, 0) + h.available
        used = rec["offsets"]
        held_total = sum(held.values())
        new_cap = mrv.cap_qty(obligation, cap_bps)
        cur_cap = mrv.cap_qty(obligation, cur_bps)
        exceed = max(0, used + held_total - new_cap)
        surrendered_over = max(0, used - new_cap)
        by_type = {}
        for otype in sorted(set(held) | set(rec["offsets_by_type"]) | set(subs)):
            u = rec["offsets_by_type"].get(otype, 0)
            hq = held.get(otype, 0)
            if otype in subs:
                q = mrv.cap_qty(obligation, subs[otype])
                by_type[otype] = {
                    "proposed_sub_cap_qty": q,
                    "surrendered": u,
                    "held": hq,
                    "exceeds_by": max(0, u + hq - q),
                    "surrendered_over": max(0, u - q),
                }
            else:
                by_type[otype] = {
                    "proposed_sub_cap_qty": None,
                    "surrendered": u,
                    "held": hq,
                    "exceeds_by": 0,
                    "surrendered_over": 0,
                }
        firms.append(
            {
                "firm_id": firm_id,
                "obligation": obligation,
                "provisional": provisional,
                "current_cap_qty": cur_cap,
                "proposed_cap_qty": new_cap,
                "offsets_surrendered": used,
                "offsets_held": held_total,
                "exceeds": exceed > 0 or any(t["exceeds_by"] for t in by_type.values()),
                "exceeds_by": exceed,
                "surrendered_over": surrendered_over,
                "holdings_over": exceed - surrendered_over,
                "room_now": max(0, cur_cap - used),
                "room_proposed": max(0, new_cap - used),
                "by_type": by_type,
            }
        )
    return {
        "period": period,
        "as_of_ts": now,
        "current_cap_bps": cur_bps,
        "current_sub_caps_bps": dict(sorted(cur_subs.items())),
        "proposed_cap_bps": cap_bps,
        "proposed_sub_caps_bps": dict(sorted(subs.items())),
        "firms": firms,
        "firms_exceeding": [f["firm_id"] for f in firms if f["exceeds"]],
    }


# --------------------------------------------------------------------------- for people
_SETTLEMENT_FEN = ("penalty", "penalty_paid", "penalty_outstanding", "average_price")


def statement_for_people(st: dict[str, Any]) -> dict[str, Any]:
    """A firm statement as a person or a client reads it: the fields that hold fen or bps
    without saying so get their suffix, then :func:`exchange.present.present` turns every
    suffix into units for people (``penalty`` -> a CNY string, ``cap_in_effect_bps`` ->
    ``cap_in_effect_pct``, ``deadline_ts`` -> ``deadline_at``, ...)."""
    st = dict(st)
    if st.get("settlement"):
        st["settlement"] = {
            (f"{k}_fen" if k in _SETTLEMENT_FEN else k): v for k, v in st["settlement"].items()
        }
    st["surrenders"] = [
        {("cap_in_effect_bps" if k == "cap_bps_in_effect" else k): v for k, v in s.items()}
        for s in st.get("surrenders", ())
    ]
    c = st.get("offsets_vs_cap")
    if c:
        c = st["offsets_vs_cap"] = dict(c)
        c["sub_caps"] = {
            t: {("cap_bps" if k == "bps" else k): v for k, v in sub.items()}
            for t, sub in c["sub_caps"].items()
        }
    out: dict[str, Any] = present(st)
    return out


# --------------------------------------------------------------------------- CSV / text
def _flatten(prefix: str, v: object, out: list[tuple[str, Any]]) -> None:
    if isinstance(v, dict):
        for k in v:
            _flatten(f"{prefix}.{k}" if prefix else str(k), v[k], out)
    elif isinstance(v, list):
        if not v:
            out.append((prefix, ""))
        for i, x in enumerate(v):
            _flatten(f"{prefix}[{i}]", x, out)
    else:
        out.append((prefix, "" if v is None else v))


def statement_csv(st: dict[str, Any]) -> str:
    """A statement as two-column CSV (``field,value``), every figure of the JSON (in units for
    people, as the JSON answer shows them)."""
    rows: list[tuple[str, Any]] = []
    _flatten("", statement_for_people(st), rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["field", "value"])
    w.writerows(rows)
    return buf.getvalue()


SUMMARY_COLUMNS = (
    "firm_id",
    "size_class",
    "submission",
    "emissions",
    *CATEGORY_COLUMNS,
    "obligation",
    "surrendered",
    "allowances",
    "offsets",
    "shortfall",
    "penalty",
    "penalty_paid",
    "deduction",
    "status",
)


def summary_csv(summary: dict[str, Any]) -> str:
    """The summary as CSV: one row per firm, then a TOTAL row (penalties in CNY)."""
    summary = present(summary)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for r in summary["firms"]:
        w.writerow([r[c] for c in SUMMARY_COLUMNS])
    t = summary["totals"]
    w.writerow(["TOTAL", "", ""] + [t[c] for c in SUMMARY_COLUMNS[3:-1]] + [""])
    return buf.getvalue()


def _cov(c: dict[str, Any]) -> str:
    return "covered" if c["covered"] else "not covered"


def _category_lines(b: dict[str, Any]) -> list[str]:
    """The emissions of a statement by category, in words."""
    e = b["energy"]
    return [
        f"    energy  {e['emissions']:>10} t (fuels {e['fuels']} + electricity "
        f"{e['electricity']})  {_cov(e)}",
        f"    process {b['process']['emissions']:>10} t  {_cov(b['process'])}",
        f"    natural {b['natural']['emissions']:>10} t  {_cov(b['natural'])}",
        f"    total   {b['total']:>10} t CO2e; covered {b['covered_total']} t, not covered "
        f"{b['not_covered_total']} t",
    ]


def statement_text(st: dict[str, Any]) -> str:
    """A human-readable statement for the terminal."""
    L = [
        f"Compliance statement  {st['firm_id']} ({st['name'] or st['size_class']})  "
        f"period {st['period']}  status: {st['status']}"
    ]
    sub = st["submission"]
    if sub["status"] != "none":
        L.append(
            f"  MRV: submission v{sub['version']} {sub['status']}"
            + (f" by {sub['verifier']}" if sub["verifier"] else "")
        )
        for f in sub["fuels"]:
            L.append(
                f"    {f['fuel']:<12} {f['tce']:>10} tce x "
                f"{f['carbon_coefficient_t_c_per_tce']} t C/tce x 44/12"
            )
        if sub["electricity_mwh"]:
            L.append(
                f"    {'electricity':<12} {sub['electricity_mwh']:>10} MWh x "
                f"{sub['grid_factor_t_co2_per_mwh']} t CO2/MWh"
            )
        L.extend(_category_lines(st["emissions_by_category"]))
        L.append(f"    output {sub['output']}")
    o = st["obligation"]
    L.append(
        f"  Obligation: {o['total']} t (verified {o['verified_emissions']} in "
        f"{' + '.join(o['covered_categories']) or 'no category'}"
        f" + from true-up {o['added_by_rules']})"
    )
    a = st["allocation"]
    if a:
        L.append(
            f"  Allocation: pre {a.get('pre_allocation', 0)} + true-up {a.get('true_up', 0)}"
            f" - deduction {a.get('deduction', 0)} = {a.get('total', 0)} t"
        )
    n = st["next_period_allocation"]
    if n and n.get("deduction"):
        L.append(f"  Next period ({st['period'] + 1}) allocation deduction: {n['deduction']} t")
    for fh in st["factor_history"]:
        L.append(f"  Factor: {text(present(fh))}")
    for t in st["trades"]:
        L.append(
            f"  Trades {t['instrument']}: bought {t['bought']} t"
            f" ({format_price(t['buy_notional_fen'])} CNY), sold {t['sold']} t"
            f" ({format_price(t['sell_notional_fen'])} CNY), fees"
            f" {format_price(t['fees_fen'])}"
        )
    for s in st["surrenders"]:
        cap = f", cap {format_percent(s['cap_bps_in_effect'])}" if s["kind"] == "offset" else ""
        L.append(
            f"  Surrendered {s['qty']:>8} t {s['instrument']:<12} ({s['kind']}{cap}) by {s['by']}"
        )
    su = st["surrendered"]
    L.append(
        f"  Surrendered total {su['total']} t = allowances {su['allowances']}"
        f" + offsets {su['offsets']}; outstanding {st['outstanding']} t"
    )
    c = st["offsets_vs_cap"]
    if c:
        L.append(
            f"  Offsets vs cap: {c['used']} / {c['cap_qty']} t ({format_percent(c['cap_bps'])})"
        )
        for k, v in c["sub_caps"].items():
            if v["bps"] is not None:
                L.append(f"    {k}: {v['used']} / {v['cap_qty']} t ({format_percent(v['bps'])})")
    s = st["settlement"]
    if s and s.get("status") not in (None, "not_reported", STATUS_UNVERIFIED):
        L.append(
            f"  Deadline: shortfall {s['shortfall']} t, penalty"
            f" {format_price(s['penalty'])} CNY (paid {format_price(s['penalty_paid'])},"
            f" average price {format_price(s['average_price'])}),"
            f" deduction {s['deduction']} t from {st['period'] + 1}"
        )
    for h, v in st["holdings"].items():
        L.append(f"  Holding {h:<12} {v['total']:>10} t (reserved {v['reserved']})")
    L.append(f"  Cash {format_price(st['cash']['cash_fen'])} CNY")
    L.extend(_sub_quota_lines(st))
    f = st.get("sme_fund")
    for g in (f or {}).get("applications", ()):
        why = f": {g['reason']}" if g["status"] == "rejected" and g.get("reason") else ""
        L.append(
            f"  SME fund grant #{g['application_id']} {g['status']}: "
            f"{format_price(g['amount_fen'])} CNY for {g['project']!r} "
            f"({g['verified_abatement_t']} t abated){why}"
        )
    if f and (f["received_fen"] or f["applications"]):
        L.append(
            f"  SME fund: received {format_price(f['received_fen'])} CNY in grants for "
            f"{st['period']}"
        )
    if f and f["penalty_to_fund_fen"]:
        L.append(
            f"  Of the penalty, {format_price(f['penalty_to_fund_fen'])} CNY went to the SME fund"
        )
    return "\n".join(L)


def summary_text(sm: dict[str, Any]) -> str:
    L = [
        f"Compliance summary  period {sm['period']}  "
        f"{'closed' if sm['closed'] else 'open'}  offset cap "
        f"{format_percent(sm['offset_cap_bps'])}"
        + "".join(f", {t} {format_percent(b)}" for t, b in sm["offset_sub_caps_bps"].items())
        + "  average price "
        f"{format_price(sm['average_price_fen'])} CNY",
        f"  {'firm':<10} {'status':<14} {'obligation':>10} {'surrendered':>11} "
        f"{'offsets':>8} {'shortfall':>9} {'penalty CNY':>14}",
    ]
    for r in sm["firms"]:
        L.append(
            f"  {r['firm_id']:<10} {r['status']:<14} {r['obligation']:>10} "
            f"{r['surrendered']:>11} {r['offsets']:>8} {r['shortfall']:>9} "
            f"{format_price(r['penalty_fen']):>14}"
        )
    t = sm["totals"]
    L.append(
        f"  {'TOTAL':<10} {'':<14} {t['obligation']:>10} {t['surrendered']:>11} "
        f"{t['offsets']:>8} {t['shortfall']:>9} {format_price(t['penalty_fen']):>14}"
    )
    L.append(f"  counts: {text(sm['counts'])}")
    cov = sm["covered_categories"]
    L.append(
        f"  Verified emissions by category (t CO2e; covered: {', '.join(cov)}; "
        f"grid factor {sm['grid_factor_t_co2_per_mwh']} t CO2/MWh)"
    )
    L.append(
        f"  {'firm':<10} {'fuels':>10} {'electricity':>11} {'energy':>10} {'process':>10} "
        f"{'natural':>10} {'total':>10} {'covered':>10}"
    )
    for r in sm["firms"] + [dict(sm["totals"], firm_id="TOTAL")]:
        L.append(
            f"  {r['firm_id']:<10} {r['energy_fuels']:>10} {r['energy_electricity']:>11} "
            f"{r['energy']:>10} {r['process']:>10} {r['natural']:>10} {r['emissions']:>10} "
            f"{r['covered_emissions']:>10}"
        )
    return "\n".join(L)
