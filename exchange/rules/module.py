"""The rules module: benchmarks, the dynamic allocation factor, supply-chain coupling,
allocation runs (pre-allocation, true-up, claw-back, deductions) and SME sub-quota splitting.

It is a :class:`~exchange.core.exchange.Module` of the deterministic core: state is plain
integers and strings, every change is a command, every formula lives in
:mod:`exchange.rules.formulas` (exact rationals, quantized once; see docs/RULES.md).

Interface for the compliance module (found as ``ex.modules.get("rules")``); each method checks
its input and raises :class:`~exchange.core.errors.Reject` *before* it changes anything:

``on_verified(firm_id, period, emissions, output) -> list[event]``
    Record a firm's verified emissions (t) and output (units) for ``period`` and true it up:
    the allocation becomes ``floor(B x Y_verified x phi x k_pre)`` (benchmark and phi as fixed
    when the period's allocation was created, k_pre the scale of the pre-allocation; the close
    replaces it by the exact share of the period's total) less deductions; a positive true-up
    is issued, a negative one clawed back from the free holding of the period's allowance, and
    what cannot be clawed back is added to the obligation with
    ``compliance.add_obligation(firm_id, period, qty)``.
``add_allocation_deduction(firm_id, period, qty) -> None``
    Deduct ``qty`` t from the firm's allocation of ``period`` (a shortfall penalty). It is
    recorded now and takes effect at the next allocation step of that period: pre-allocation,
    true-up, ``close_period`` or ``settle_allocations`` (all of which emit the events).
``allocation(firm_id, period) -> dict``
    ``pre_allocation``, ``true_up``, ``deduction``, ``total`` (= max(0, pre + true-up -
    deduction); a deduction beyond the allocation is shown as ``deduction_unapplied``) and
    the details (benchmark, phi, outputs, the period's ``allocation_total`` mode, the
    ``raw_allocation`` B x Y x phi and the ``scale`` that turned it into the allocation,
    issued, clawed back, added to the obligation).
``factor_history(firm_id) -> list[dict]``
    Every change of the firm's allocation factor with its inputs and terms.
``shortfall_cover(sme_id, period) -> str``
    Who covers an SME's shortfall for ``period``: the parent's firm id when the SME holds a
    sub-quota of that period's allowance whose ``shortfall_rule`` is ``parent``, else the SME.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..core import errors as E
from ..core.accounts import CASH, ISSUER, LOT_SUB_QUOTA, post_cash
from ..core.commands import CreateSubQuota, IssueUnits
from ..core.events import Posting
from ..core.exchange import Module
from ..core.records import record_maker
from ..core.units import MAX_QTY, PPM, floor_int, ppm_half_even, ratio_ppm

if TYPE_CHECKING:
    from ..core.accounts import Account
    from ..core.exchange import Exchange
from . import formulas as F
from .commands import (
    PARAM_FIELDS,
    AssessFirm,
    ClosePeriod,
    PreAllocate,
    RecordVerified,
    SetBenchmark,
    SetInputUse,
    SetOutputHistory,
    SetRulesParams,
    SettleAllocations,
    SettleSubQuotas,
    SplitSubQuotas,
)
from .events import (
    AllocationChanged,
    AllocationNormalised,
    BenchmarkSet,
    BenchmarkUpdated,
    FactorChanged,
    GainShared,
    InputUseSet,
    OutputHistorySet,
    PeriodClosed,
    PeriodOpened,
    RulesParamsSet,
    SubQuotaSettled,
    SubQuotasSplit,
    VerifiedRecorded,
)

DEFAULT_PARAMS: dict[str, Any] = {
    "pre_ratio_ppm": 700_000,
    "initial_phi_ppm": 1_000_000,
    "phi_min_ppm": 500_000,
    "phi_max_ppm": 1_500_000,
    "max_step_ppm": 100_000,
    "alpha_up_ppm": 500_000,
    "alpha_down_ppm": 1_000_000,
    "kappa_ppm": 200_000,
    "kappa_max_ppm": 50_000,
    "coupling_weights": "edges",
    "w_tech_ppm": 50_000,
    "w_eff_ppm": 50_000,
    "w_hist_ppm": 500_000,
    "benchmark_step_ppm": 500_000,
    "max_tightening_ppm": 50_000,
    "allow_loosening": False,
    "max_loosening_ppm": 20_000,
    "instrument_pattern": "CEA-{period}",
    "allocation_total": "intensity",
    "cap_tonnes": 0,
    "gain_share_ppm": 0,
}
assert tuple(DEFAULT_PARAMS) == PARAM_FIELDS

MAX_RATIO_PPM = 100 * PPM  # no ratio parameter may exceed 100


def _ppm(v: Fraction | int) -> int:
    """An exact ratio -> integer ppm for explanations (nearest, half to even)."""
    return ppm_half_even(v)


def validate_params(p: dict[str, Any]) -> None:
    """Raise Reject(BAD_PARAMETER) unless ``p`` is a consistent full parameter set."""
    for k, v in p.items():
        if k.endswith("_ppm") and (type(v) is not int or not 0 <= v <= MAX_RATIO_PPM):
            raise E.Reject(E.BAD_PARAMETER, f"{k} must be an integer in [0, {MAX_RATIO_PPM}]")
    for k in (
        "pre_ratio_ppm",
        "max_step_ppm",
        "max_tightening_ppm",
        "benchmark_step_ppm",
        "w_tech_ppm",
        "w_eff_ppm",
        "w_hist_ppm",
        "kappa_max_ppm",
        "gain_share_ppm",
    ):
        if p[k] > PPM:
            raise E.Reject(E.BAD_PARAMETER, f"{k} must be within [0, 1] (ppm <= 1000000)")
    if not 0 < p["phi_min_ppm"] <= p["initial_phi_ppm"] <= p["phi_max_ppm"]:
        raise E.Reject(E.BAD_PARAMETER, "need 0 < phi_min <= initial_phi <= phi_max")
    if p["coupling_weights"] not in ("edges", "tier"):
        raise E.Reject(E.BAD_PARAMETER, "coupling_weights is edges or tier")
    if type(p["allow_loosening"]) is not bool:
        raise E.Reject(E.BAD_PARAMETER, "allow_loosening is true or false")
    if p["allocation_total"] not in F.ALLOCATION_TOTALS:
        raise E.Reject(
            E.BAD_PARAMETER, f"allocation_total is one of {', '.join(F.ALLOCATION_TOTALS)}"
        )
    if type(p["cap_tonnes"]) is not int or p["cap_tonnes"] < 0:
        raise E.Reject(E.BAD_PARAMETER, "cap_tonnes must be an integer >= 0")
    if p["allocation_total"] == "absolute" and p["cap_tonnes"] <= 0:
        raise E.Reject(E.BAD_PARAMETER, "allocation_total absolute needs cap_tonnes > 0")
    pat = p["instrument_pattern"]
    if type(pat) is not str or "{period}" not in pat:
        raise E.Reject(E.BAD_PARAMETER, "instrument_pattern must contain {period}")
    try:
        pat.format(period=2026)
    except (KeyError, IndexError, ValueError):
        raise E.Reject(E.BAD_PARAMETER, "instrument_pattern may only use {period}") from None


def _int(v: object, name: str, code: str = E.BAD_PARAMETER, minimum: int = 0) -> int:
    if type(v) is not int or v < minimum:
        raise E.Reject(code, f"{name} must be an integer >= {minimum}")
    return v


# A factor history holds an explanation per firm and period (its inputs and terms: some twenty
# named values); as dicts that was a kilobyte each, the largest part of a 10,000-firm market's
# state. Kept as tuples of values whose key tuples are shared, and given out as the same dicts
# (to_state, factor_history), so the state and its hash are unchanged.
_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}
_allocation_record = record_maker(
    "AllocationRecord",
    (
        "instrument",
        "mode",
        "k_pre_num",
        "k_pre_den",
        "k_num",
        "k_den",
        "normalised",
        "benchmark_ppm",
        "phi_ppm",
        "pre_ratio_ppm",
        "base_output",
        "opened",
        "pre",
        "verified",
        "verified_output",
        "final",
        "deduction",
        "issued",
        "clawed_back",
        "to_obligation",
    ),
)


def _firm_resp(v: dict[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """A firm's responsibility record; a state from before final consumers were counted kept
    ``[period, intensity_ppm, output, responsibility_ppm]``."""
    if isinstance(v, dict):
        return dict(v)
    period, inten, out, resp = v
    return {
        "period": period,
        "verified": True,
        "emissions": None,
        "output": out,
        "embodied_ppm": None,
        "responsibility_ppm": resp,
        "intensity_ppm": inten,
        "outside_inputs": [],
    }


def _pack(d: dict[str, Any]) -> tuple[Any, ...]:
    keys = tuple(d)
    return _SHAPES.setdefault(keys, keys), tuple(d.values())


def _unpack(packed: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(*packed))


def _pack_factor(h: dict[str, Any]) -> tuple[Any, ...]:
    return (
        h["seq"],
        h["period"],
        h["reason"],
        h["phi_before_ppm"],
        h["phi_after_ppm"],
        _pack(h["inputs"]),
        _pack(h["terms"]),
    )


def _unpack_factor(t: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "seq": t[0],
        "period": t[1],
        "reason": t[2],
        "phi_before_ppm": t[3],
        "phi_after_ppm": t[4],
        "inputs": _unpack(t[5]),
        "terms": _unpack(t[6]),
    }


class RulesModule(Module):
    name = "rules"

    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex)
        # [(effective_from_period, full params)], ascending; entry 0 applies from period 0
        self.schedule: list[tuple[int, dict[str, Any]]] = [(0, dict(DEFAULT_PARAMS))]
        self.benchmarks: dict[str, int] = {}  # product -> ppm t/unit, for the next allocation
        self.phi: dict[str, int] = {}  # firm -> current allocation factor (ppm)
        self.assessments: dict[str, dict[str, Any]] = {}  # firm -> assessment inputs
        # firm -> period -> [output, emissions|None]
        self.history: dict[str, dict[int, list[Any]]] = {}
        self.inputs: dict[str, dict[int, dict[str, int]]] = {}  # firm -> period -> {product: q}
        self.verified: dict[int, dict[str, list[int]]] = {}  # period -> firm -> [emissions, output]
        # firm -> period -> allocation record
        self.allocs: dict[str, dict[int, dict[str, Any]]] = {}
        self.periods: dict[int, str] = {}  # period -> "open" | "closed"
        # firm -> factor history (_pack_factor)
        self.factors: dict[str, list[tuple[Any, ...]]] = {}
        self.bench_history: dict[str, list[dict[str, Any]]] = {}  # product -> benchmark history
        self.resp: dict[int, dict[str, int]] = {}  # period -> product -> beta (ppm t/unit)
        # firm -> latest responsibility (_close_period)
        self.firm_resp: dict[str, dict[str, Any]] = {}
        # sub-quota lot -> period-end settlement
        self.settled_lots: dict[int, dict[str, Any]] = {}
        self.gain_shares: dict[int, list[Any]] = {}  # period -> [[core, sme, fen, explanation]]
        # period -> its total and scale (see _pre_allocate)
        self.totals: dict[int, dict[str, Any]] = {}

    # ================================================================== plumbing
    def handlers(self) -> dict[type, Callable[[Any], list[Any]]]:
        return {
            SetRulesParams: self._set_params,
            SetBenchmark: self._set_benchmark,
            AssessFirm: self._assess,
            SetOutputHistory: self._set_history,
            SetInputUse: self._set_inputs,
            PreAllocate: self._pre_allocate,
            RecordVerified: self._record_verified,
            ClosePeriod: self._close_period,
            SettleAllocations: self._settle_allocations,
            SplitSubQuotas: self._split,
            SettleSubQuotas: self._settle_sub_quotas,
        }

    def to_state(self) -> dict[str, Any]:
        def per(d: dict[int, Any]) -> list[list[Any]]:
            # {int: x} -> [[int, x]] sorted (JSON object keys must be strings)
            return [[k, d[k]] for k in sorted(d)]

        return {
            "schedule": [[p, dict(sorted(v.items()))] for p, v in self.schedule],
            "benchmarks": dict(sorted(self.benchmarks.items())),
            "phi": dict(sorted(self.phi.items())),
            "assessments": dict(sorted(self.assessments.items())),
            "history": {f: per(d) for f, d in sorted(self.history.items())},
            "inputs": {
                f: per({p: dict(sorted(q.items())) for p, q in d.items()})
                for f, d in sorted(self.inputs.items())
            },
            "verified": per({p: dict(sorted(d.items())) for p, d in self.verified.items()}),
            "allocs": {f: per(d) for f, d in sorted(self.allocs.items())},
            "periods": per(self.periods),
            "factors": {f: [_unpack_factor(h) for h in v] for f, v in sorted(self.factors.items())},
            "bench_history": dict(sorted(self.bench_history.items())),
            "resp": per({p: dict(sorted(d.items())) for p, d in self.resp.items()}),
            "firm_resp": dict(sorted(self.firm_resp.items())),
            "settled_lots": per(self.settled_lots),
            "totals": per(self.totals),
            "gain_shares": per(self.gain_shares),
        }

    def load_state(self, s: dict[str, Any]) -> None:
        def per(rows: Iterable[Sequence[Any]]) -> dict[int, Any]:
            return {int(k): v for k, v in rows}

        self.schedule = [(int(p), dict(v)) for p, v in s["schedule"]]
        self.benchmarks = dict(s["benchmarks"])
        self.phi = dict(s["phi"])
        self.assessments = dict(s["assessments"])
        self.history = {f: per(d) for f, d in s["history"].items()}
        self.inputs = {f: per(d) for f, d in s["inputs"].items()}
        self.verified = per(s["verified"])
        # record_maker's maker carries its load function (core.records), untyped as such
        load = _allocation_record.load  # type: ignore[attr-defined]
        self.allocs = {f: {int(p): load(r) for p, r in d} for f, d in s["allocs"].items()}
        self.periods = per(s["periods"])
        self.factors = {f: [_pack_factor(h) for h in v] for f, v in s["factors"].items()}
        self.bench_history = {p: list(v) for p, v in s["bench_history"].items()}
        self.resp = per(s["resp"])
        self.firm_resp = {f: _firm_resp(v) for f, v in s["firm_resp"].items()}
        self.settled_lots = per(s["settled_lots"])
        self.totals = per(s.get("totals", []))
        self.gain_shares = per(s.get("gain_shares", []))
        # a state written before the total was normalised allocated B x Y x phi per firm:
        # it keeps that meaning ("floating") instead of changing periods already issued
        for _, v in self.schedule:
            v.setdefault("allocation_total", "floating")
            v.setdefault("cap_tonnes", 0)
            v.setdefault("gain_share_ppm", 0)  # no sharing before the parameter existed
        for d in self.allocs.values():
            for rec in d.values():
                for k, dv in (
                    ("mode", "floating"),
                    ("k_pre_num", 1),
                    ("k_pre_den", 1),
                    ("k_num", 1),
                    ("k_den", 1),
                    ("normalised", False),
                ):
                    rec.setdefault(k, dv)

    # ================================================================== read side
    def params(self, period: int | None = None) -> dict[str, Any]:
        """The parameters that apply to ``period`` (default: the next period to open)."""
        if period is None:
            period = self.next_effective_period()
        cur = self.schedule[0][1]
        for p, v in self.schedule:
            if p <= period:
                cur = v
        return dict(cur)

    def next_effective_period(self) -> int:
        """First period a parameter change made now applies to."""
        return max(self.periods) + 1 if self.periods else 0

    def instrument_for(self, period: int) -> str:
        pattern: str = self.params(period)["instrument_pattern"]
        return pattern.format(period=period)

    def allocation(self, firm_id: str, period: int) -> dict[str, Any]:
        rec = self.allocs.get(firm_id, {}).get(period)
        if rec is None:
            return {
                "firm_id": firm_id,
                "period": period,
                "pre_allocation": 0,
                "true_up": 0,
                "deduction": 0,
                "total": 0,
                "exists": False,
                "allocation_total": self.params(period)["allocation_total"],
            }
        return self._view(firm_id, period, rec)

    def period_totals(self, period: int) -> dict[str, Any] | None:
        """How a period's total was fixed and shared (None before it is pre-allocated):
        ``allocation_total``; the pre-allocation's ``pre_basis`` (T from Y_last, or the cap),
        ``pre_total`` (pre_ratio x T), ``pre_raw_total`` (sum B x Y_last x phi, floored) and
        ``pre_scale`` k_pre; after the close ``total``, ``raw_total``, ``scale``, ``firms``
        (verified firms sharing it) and ``unverified_pre`` (what unverified firms keep).
        Scales are exact ``[numerator, denominator]`` with a ``*_ppm`` display value."""
        t = self.totals.get(period)
        if t is None:
            return None
        out = dict(t)
        for k in ("pre_scale", "scale"):
            if out.get(k) is not None:
                out[f"{k}_ppm"] = _ppm(Fraction(*out[k]))
        return out

    def factor_history(self, firm_id: str) -> list[dict[str, Any]]:
        return [_unpack_factor(h) for h in self.factors.get(firm_id, [])]

    def responsibility(self, firm_id: str) -> dict[str, Any] | None:
        """What the firm answers for at the latest close that had data on it:
        ``responsibility_ppm`` = its emissions + sum of its inputs x their products'
        responsibility factors (ppm t), with ``emissions``, ``embodied_ppm``, ``output``,
        ``intensity_ppm`` (None without output: a final consumer), ``verified`` and the
        ``outside_inputs`` nobody in the scheme makes (counted 0). None before any close."""
        fr = self.firm_resp.get(firm_id)
        return None if fr is None else dict(fr, firm_id=firm_id)

    def benchmark_history(self, product: str) -> list[dict[str, Any]]:
        return [dict(h) for h in self.bench_history.get(product, [])]

    def shortfall_cover(self, sme_id: str, period: int) -> str:
        sym = self.instrument_for(period)
        for lot_id in sorted(self.ex.sub_quotas):
            lot = self.ex.sub_quotas[lot_id]
            if (
                lot["sme"] == sme_id
                and lot["instrument"] == sym
                and lot["shortfall_rule"] == "parent"
            ):
                parent: str = lot["parent"]
                return parent
        return sme_id

    def _view(self, firm_id: str, period: int, rec: dict[str, Any]) -> dict[str, Any]:
        true_up = rec["final"] - rec["pre"] if rec["verified"] else 0
        out = rec["verified_output"] if rec["verified"] else rec["base_output"]
        return {
            "firm_id": firm_id,
            "period": period,
            "exists": True,
            "instrument": rec["instrument"],
            "pre_allocation": rec["pre"],
            "true_up": true_up,
            "deduction": rec["deduction"],
            "total": max(0, rec["pre"] + true_up - rec["deduction"]),
            "deduction_unapplied": max(0, rec["deduction"] - rec["pre"] - true_up),
            "benchmark_ppm": rec["benchmark_ppm"],
            "phi_ppm": rec["phi_ppm"],
            "base_output": rec["base_output"],
            "verified_output": rec["verified_output"],
            "verified": rec["verified"],
            "opened": rec["opened"],
            "issued": rec["issued"],
            "clawed_back": rec["clawed_back"],
            "to_obligation": rec["to_obligation"],
            # why the allocation is what it is: B x Y x phi, times the period's scale
            "allocation_total": rec["mode"],
            "raw_allocation": rec["benchmark_ppm"] * out * rec["phi_ppm"] // PPM**2,
            "scale_num": rec["k_num"],
            "scale_den": rec["k_den"],
            "scale_ppm": ratio_ppm(rec["k_num"], rec["k_den"]),
            "pre_scale_ppm": ratio_ppm(rec["k_pre_num"], rec["k_pre_den"]),
            "normalised": rec["normalised"],
        }

    # ================================================================== helpers
    def _covered(self, acct: Account) -> bool:
        return not acct.system and acct.product in self.benchmarks

    def _phi_of(self, firm_id: str, params: dict[str, Any]) -> int:
        phi: int = self.phi.get(firm_id, params["initial_phi_ppm"])
        return phi

    def _latest(
        self, firm_id: str, before: int | None = None
    ) -> tuple[int, int, int | None] | None:
        """Latest (period, output, emissions|None): verified data first, then the history."""
        best = None
        for p in sorted(self.verified, reverse=True):
            if before is not None and p >= before:
                continue
            v = self.verified[p].get(firm_id)
            if v is not None:
                best = (p, v[1], v[0])
                break
        for p in sorted(self.history.get(firm_id, {}), reverse=True):
            if before is not None and p >= before:
                continue
            if best is None or p > best[0]:
                out, em = self.history[firm_id][p]
                best = (p, out, em)
            break
        return best

    def _new_record(self, firm_id: str, period: int) -> dict[str, Any]:
        """An allocation record fixes the benchmark and phi used for that period, and the
        scale k of its current allocation: k_pre (the pre-allocation's T / sum B Y phi) until
        the close normalises it (k_num/k_den), 1 in the floating mode."""
        acct = self.ex.accounts[firm_id]
        params = self.params(period)
        base = self._latest(firm_id, before=period)
        k_pre = self.totals.get(period, {}).get("pre_scale", [1, 1])
        return _allocation_record(
            instrument=self.instrument_for(period),
            mode=params["allocation_total"],
            k_pre_num=k_pre[0],
            k_pre_den=k_pre[1],
            k_num=k_pre[0],
            k_den=k_pre[1],
            normalised=False,
            benchmark_ppm=self.benchmarks.get(acct.product, 0),
            phi_ppm=self._phi_of(firm_id, params),
            pre_ratio_ppm=params["pre_ratio_ppm"],
            base_output=base[1] if base else 0,
            opened=False,
            pre=0,
            verified=False,
            verified_output=0,
            final=0,
            deduction=0,
            issued=0,
            clawed_back=0,
            to_obligation=0,
        )

    def _open_record(self, firm_id: str, period: int, store: bool = True) -> dict[str, Any]:
        """The record a period opens with. A record made earlier (a deduction recorded before
        the previous period closed, a verification before the pre-allocation) fixed B, phi
        and the base output of that moment; the period takes the values at its opening, so
        such a record is renewed, keeping what was recorded on it (deduction, verified data,
        deliveries)."""
        recs = self.allocs.setdefault(firm_id, {}) if store else self.allocs.get(firm_id, {})
        old = recs.get(period)
        rec = self._new_record(firm_id, period)
        if old is not None:
            for k in (
                "deduction",
                "verified",
                "verified_output",
                "issued",
                "clawed_back",
                "to_obligation",
            ):
                rec[k] = old[k]
        if store:
            recs[period] = rec
        return rec  # the caller sets pre, the scale and (when verified) final

    def _provisional(self, rec: dict[str, Any], period: int, output: int) -> int:
        """The allocation a verification gives before the close: B x Y x phi at the
        pre-allocation's scale k_pre (1 when floating)."""
        if rec["mode"] != "floating" and self.periods.get(period) == "closed":
            # the close shared the period's total among the firms verified by then; a firm
            # verified later keeps its pre-allocation (and a re-verified one its share), so
            # that total is not exceeded
            q: int = rec["final"] if rec["verified"] else rec["pre"]
            return q
        return F.scaled_allocation(
            rec["benchmark_ppm"],
            output,
            rec["phi_ppm"],
            Fraction(rec["k_pre_num"], rec["k_pre_den"]),
        )

    @staticmethod
    def _target(rec: dict[str, Any]) -> int:
        if rec["verified"]:
            t: int = max(0, rec["final"] - rec["deduction"])
            return t
        if rec["opened"]:
            t = max(0, rec["pre"] - rec["deduction"])
            return t
        return 0

    def _check_settle(self, rec: dict[str, Any], run: dict[str, Any] | None = None) -> None:
        """What a settlement needs, checked before any change. Its issue must fit under the
        core's MAX_QTY t outstanding of the instrument (as IssueUnits must; the run issues
        through ``ex._issue``, which does not check) - with the issues of the rest of the
        run when ``run`` (instrument -> tonnes so far) adds them up - or the run is refused
        with QUANTITY_LIMIT and changes nothing. Clawbacks in the same run are not counted
        against it: the check may refuse a run that would just fit, never pass one that
        does not."""
        delta = self._target(rec) - self._position(rec)
        sym = rec["instrument"]
        if delta and sym not in self.ex.instruments:
            raise E.Reject(E.UNKNOWN_INSTRUMENT, f"allowance instrument {sym!r} does not exist")
        if delta > 0:
            total = delta + (run.get(sym, 0) if run is not None else 0)
            if run is not None:
                run[sym] = total
            h = self.ex.accounts[ISSUER].holdings.get(sym)
            room = MAX_QTY + (h.total if h is not None else 0)  # @issuer holds minus it
            if total > room:
                raise E.Reject(
                    E.QUANTITY_LIMIT,
                    f"the allocation run would issue {total} t of {sym}: at most "
                    f"{MAX_QTY} t may be outstanding, {max(room, 0)} t left",
                )

    @staticmethod
    def _position(rec: dict[str, Any]) -> int:
        pos: int = rec["issued"] - rec["clawed_back"] + rec["to_obligation"]
        return pos

    def _settle(self, firm_id: str, period: int, rec: dict[str, Any], kind: str) -> list[Any]:
        """Issue or claw back the difference between the record's target and what was
        delivered; what cannot be clawed back goes to the compliance obligation."""
        delta = self._target(rec) - self._position(rec)
        if delta == 0:
            return []
        ex = self.ex
        sym = rec["instrument"]
        acct = ex.accounts[firm_id]
        events: list[Any] = []
        issued = to_obl = 0
        if delta > 0:
            events.extend(
                ex._issue(
                    IssueUnits(
                        account=firm_id,
                        instrument=sym,
                        qty=delta,
                        source="allocation",
                        ref=str(period),
                    )
                )
            )
            rec["issued"] += delta
            issued = delta
        else:
            want = -delta
            h = acct.holdings.get(sym)
            take = min(want, h.available if h is not None else 0)
            if take:
                ex.move_units(
                    acct,
                    ex.accounts[ISSUER],
                    sym,
                    take,
                    "",
                    "clawback",
                    prefer=f"allocation:{period}",
                )
                events.append(Posting(sym, firm_id, ISSUER, take, f"clawback:allocation:{period}"))
                rec["clawed_back"] += take
            to_obl = want - take
            if to_obl:
                rec["to_obligation"] += to_obl
                comp = ex.modules.get("compliance")
                if comp is not None and hasattr(comp, "add_obligation"):
                    events.extend(comp.add_obligation(firm_id, period, to_obl) or [])
            issued = -take
        events.append(
            AllocationChanged(
                firm_id, period, kind, sym, issued, to_obl, self._view(firm_id, period, rec)
            )
        )
        return events

    # ================================================================== parameters, data
    def _set_params(self, c: SetRulesParams) -> list[Any]:
        eff = self.next_effective_period()
        new = self.params(eff)
        changed = False
        for k in PARAM_FIELDS:
            v = getattr(c, k)
            if v is not None:
                new[k] = v
                changed = True
        if not changed:
            raise E.Reject(E.NO_CHANGE, "set_rules_params names no parameter")
        validate_params(new)
        self.schedule = [(p, v) for p, v in self.schedule if p < eff] + [(eff, new)]
        return [RulesParamsSet(eff, dict(sorted(new.items())))]

    def _set_benchmark(self, c: SetBenchmark) -> list[Any]:
        if not c.product or type(c.product) is not str:
            raise E.Reject(E.BAD_PARAMETER, "product must be a non-empty name")
        _int(c.intensity_ppm, "intensity_ppm", minimum=1)
        prev = self.benchmarks.get(c.product)
        self.benchmarks[c.product] = c.intensity_ppm
        self.bench_history.setdefault(c.product, []).append(
            {
                "seq": self.ex.last_seq,
                "period": None,
                "reason": "set",
                "before_ppm": prev,
                "after_ppm": c.intensity_ppm,
            }
        )
        return [BenchmarkSet(c.product, c.intensity_ppm, prev)]

    def _assess(self, c: AssessFirm) -> list[Any]:
        acct = self.ex.firm(c.firm_id)
        b = self.benchmarks.get(acct.product)
        if b is None:
            raise E.Reject(E.NO_BENCHMARK, f"no benchmark for product {acct.product!r}")
        for name in ("technology_ppm", "efficiency_ppm"):
            if _int(getattr(c, name), name) > PPM:
                raise E.Reject(E.BAD_PARAMETER, f"{name} must be within [0, 1]")
        _int(c.hist_intensity_ppm, "hist_intensity_ppm")
        p = self.params()
        r = F.initial_phi(
            c.technology_ppm,
            c.efficiency_ppm,
            c.hist_intensity_ppm,
            b,
            p["w_tech_ppm"],
            p["w_eff_ppm"],
            p["w_hist_ppm"],
            p["initial_phi_ppm"],
            p["phi_min_ppm"],
            p["phi_max_ppm"],
        )
        before = self._phi_of(c.firm_id, p)
        inputs = {
            "technology_ppm": c.technology_ppm,
            "efficiency_ppm": c.efficiency_ppm,
            "hist_intensity_ppm": c.hist_intensity_ppm,
            "benchmark_ppm": b,
            "w_tech_ppm": p["w_tech_ppm"],
            "w_eff_ppm": p["w_eff_ppm"],
            "w_hist_ppm": p["w_hist_ppm"],
            "base_ppm": p["initial_phi_ppm"],
            "phi_min_ppm": p["phi_min_ppm"],
            "phi_max_ppm": p["phi_max_ppm"],
        }
        terms = {
            "tech_ppm": _ppm(r["tech"]),
            "eff_ppm": _ppm(r["eff"]),
            "hist_gap_ppm": _ppm(r["hist_gap"]),
            "hist_ppm": _ppm(r["hist"]),
            "raw_ppm": _ppm(r["raw"]),
            "bound_limited": r["bound_limited"],
        }
        self.assessments[c.firm_id] = {
            "technology_ppm": c.technology_ppm,
            "efficiency_ppm": c.efficiency_ppm,
            "hist_intensity_ppm": c.hist_intensity_ppm,
        }
        return [
            self._record_factor(
                c.firm_id,
                self.next_effective_period(),
                "assessment",
                before,
                r["phi_ppm"],
                inputs,
                terms,
                self.ex.last_seq,
            )
        ]

    def _record_factor(
        self,
        firm_id: str,
        period: int,
        reason: str,
        before: int,
        after: int,
        inputs: dict[str, Any],
        terms: dict[str, Any],
        seq: int,
    ) -> FactorChanged:
        self.phi[firm_id] = after
        self.factors.setdefault(firm_id, []).append(
            _pack_factor(
                {
                    "seq": seq,
                    "period": period,
                    "reason": reason,
                    "phi_before_ppm": before,
                    "phi_after_ppm": after,
                    "inputs": inputs,
                    "terms": terms,
                }
            )
        )
        return FactorChanged(firm_id, period, reason, before, after, inputs, terms)

    def _set_history(self, c: SetOutputHistory) -> list[Any]:
        self.ex.firm(c.firm_id)
        rows = {}
        for r in c.rows:
            if not isinstance(r, (tuple, list)) or len(r) not in (2, 3):
                raise E.Reject(E.BAD_PARAMETER, "rows are (period, output[, emissions])")
            period = _int(r[0], "period")
            out = _int(r[1], "output")
            em = _int(r[2], "emissions") if len(r) == 3 and r[2] is not None else None
            rows[period] = [out, em]
        if not rows:
            raise E.Reject(E.BAD_PARAMETER, "no rows")
        self.history.setdefault(c.firm_id, {}).update(rows)
        return [OutputHistorySet(c.firm_id, tuple(sorted(rows)))]

    def _set_inputs(self, c: SetInputUse) -> list[Any]:
        self.ex.firm(c.firm_id)
        _int(c.period, "period")
        inputs = {}
        for r in c.inputs:
            if not isinstance(r, (tuple, list)) or len(r) != 2 or type(r[0]) is not str:
                raise E.Reject(E.BAD_PARAMETER, "inputs are (product, quantity)")
            inputs[r[0]] = _int(r[1], "input quantity")
        if self.periods.get(c.period) == "closed":
            raise E.Reject(E.PERIOD_ALREADY_CLOSED, f"period {c.period} is closed")
        self.inputs.setdefault(c.firm_id, {})[c.period] = inputs
        return [InputUseSet(c.firm_id, c.period, tuple(sorted(inputs.items())))]

    # ================================================================== allocation runs
    def _pre_allocate(self, c: PreAllocate) -> list[Any]:
        period = _int(c.period, "period", minimum=1)
        if period in self.periods:
            raise E.Reject(E.PERIOD_ALREADY_OPEN, f"period {period} was already pre-allocated")
        sym = self.instrument_for(period)
        ins = self.ex.instruments.get(sym)
        if ins is None or ins.kind != "allowance":
            raise E.Reject(E.UNKNOWN_INSTRUMENT, f"no allowance instrument {sym!r}")
        firms = [a for fid, a in sorted(self.ex.accounts.items()) if self._covered(a)]
        params = self.params(period)
        mode = params["allocation_total"]
        recs = [self._open_record(a.firm_id, period, store=False) for a in firms]
        # the expected total from last outputs, shared by B x Y_last x phi; its scale k_pre
        # carries the provisional true-ups until the close knows every verified output
        alloc = F.period_allocation(
            mode,
            [(r["benchmark_ppm"], r["base_output"], r["phi_ppm"]) for r in recs],
            params["cap_tonnes"],
            params["pre_ratio_ppm"],
        )
        k = alloc["scale"]
        run: dict[str, Any] = {}
        for rec, pre in zip(recs, alloc["parts"]):
            trial = dict(
                rec,
                opened=True,
                pre=pre,
                k_pre_num=k.numerator,
                k_pre_den=k.denominator,
                k_num=k.numerator,
                k_den=k.denominator,
            )
            if trial["verified"]:
                trial["final"] = self._provisional(trial, period, trial["verified_output"])
            self._check_settle(trial, run)
        # ---- accepted
        for a, rec in zip(firms, recs):
            self.allocs.setdefault(a.firm_id, {})[period] = rec
        self.totals[period] = {
            "allocation_total": mode,
            "pre_basis": alloc["basis"],
            "pre_total": alloc["total"],
            "pre_raw_total": floor_int(alloc["raw"]),
            "pre_scale": [k.numerator, k.denominator],
            "pre_firms": len(recs),
            "total": None,
            "raw_total": None,
            "scale": None,
            "firms": None,
            "unverified_pre": None,
        }
        events: list[Any] = []
        total = 0
        for a, rec, pre in zip(firms, recs, alloc["parts"]):
            rec.update(
                opened=True,
                pre=pre,
                k_pre_num=k.numerator,
                k_pre_den=k.denominator,
                k_num=k.numerator,
                k_den=k.denominator,
            )
            if rec["verified"]:
                rec["final"] = self._provisional(rec, period, rec["verified_output"])
            before = rec["issued"] - rec["clawed_back"]
            events.extend(self._settle(a.firm_id, period, rec, "pre_allocation"))
            total += rec["issued"] - rec["clawed_back"] - before
        self.periods[period] = "open"
        return [PeriodOpened(period, sym, len(firms), total)] + events

    def on_verified(self, firm_id: str, period: int, emissions: int, output: int) -> list[Any]:
        acct = self.ex.firm(firm_id)
        _int(period, "period", minimum=1)
        _int(emissions, "emissions", E.BAD_VERIFIED_DATA)
        _int(output, "output", E.BAD_VERIFIED_DATA)
        rec = self.allocs.get(firm_id, {}).get(period)
        if rec is None and self._covered(acct):
            rec = self._new_record(firm_id, period)
            new = True
        else:
            new = False
        if rec is not None:
            trial = dict(
                rec,
                verified=True,
                verified_output=output,
                final=self._provisional(rec, period, output),
            )
            self._check_settle(trial)
        # ---- accepted
        self.verified.setdefault(period, {})[firm_id] = [emissions, output]
        events: list[Any] = [VerifiedRecorded(firm_id, period, emissions, output)]
        if rec is not None:
            if new:
                self.allocs.setdefault(firm_id, {})[period] = rec
            rec.update(verified=True, verified_output=output, final=trial["final"])
            events.extend(self._settle(firm_id, period, rec, "true_up"))
        return events

    def _record_verified(self, c: RecordVerified) -> list[Any]:
        if "compliance" in self.ex.modules:
            raise E.Reject(E.BAD_PARAMETER, "verified data comes from the compliance module")
        return self.on_verified(c.firm_id, c.period, c.emissions, c.output)

    def add_allocation_deduction(self, firm_id: str, period: int, qty: int) -> None:
        acct = self.ex.firm(firm_id)
        _int(period, "period", minimum=1)
        _int(qty, "qty", E.BAD_AMOUNT, minimum=1)
        recs = self.allocs.setdefault(acct.firm_id, {})
        rec = recs.get(period)
        if rec is None:
            rec = recs[period] = self._new_record(firm_id, period)
        rec["deduction"] += qty

    def settle_allocation(self, firm_id: str, period: int) -> list[Any]:
        """Apply what is pending for one firm and period now (e.g. a fresh deduction)."""
        rec = self.allocs.get(firm_id, {}).get(period)
        if rec is None:
            return []
        self._check_settle(rec)
        return self._settle(firm_id, period, rec, "deduction")

    def _settle_period(self, period: int) -> list[Any]:
        recs = [(f, d[period]) for f, d in sorted(self.allocs.items()) if period in d]
        run: dict[str, Any] = {}
        for _, rec in recs:
            self._check_settle(rec, run)
        events: list[Any] = []
        for f, rec in recs:
            events.extend(self._settle(f, period, rec, "deduction"))
        return events

    def _settle_allocations(self, c: SettleAllocations) -> list[Any]:
        if c.period not in self.periods:
            raise E.Reject(E.PERIOD_NOT_OPEN, f"period {c.period} was never opened")
        return self._settle_period(c.period)

    # ================================================================== period close
    def _partners(self, firm_id: str, mode: str) -> list[tuple[str, Fraction]]:
        """Chain partners of a firm with coupling weights w_fj (docs/RULES.md)."""
        acct = self.ex.accounts[firm_id]
        weights: dict[str, Fraction] = {}
        for chain_id in sorted(acct.chains):
            ch = self.ex.chains[chain_id]
            if mode == "edges":
                for sup, cust, w in ch["edges"]:
                    other = cust if sup == firm_id else sup if cust == firm_id else None
                    if other is not None and other != firm_id:
                        weights[other] = weights.get(other, Fraction(0)) + Fraction(w, PPM)
            else:
                tier = ch["members"][firm_id]
                for other, t in ch["members"].items():
                    if other != firm_id:
                        w = Fraction(1, 1 + abs(t - tier))
                        weights[other] = max(weights.get(other, Fraction(0)), w)
        if mode == "tier" and weights:
            total = sum(weights.values())
            weights = {k: v / total for k, v in weights.items()}
        return sorted(weights.items())

    def _close_period(self, c: ClosePeriod) -> list[Any]:
        period = c.period
        state = self.periods.get(period)
        if state is None:
            raise E.Reject(E.PERIOD_NOT_OPEN, f"period {period} was never pre-allocated")
        if state == "closed":
            raise E.Reject(E.PERIOD_ALREADY_CLOSED, f"period {period} is already closed")
        params = self.params(period)
        ex = self.ex
        verified = self.verified.get(period, {})
        # 1. responsibility factors of products (only when input data exists); an empty
        # input-use record is a firm's report that it used no inputs
        used = {f: d[period] for f, d in sorted(self.inputs.items()) if period in d}
        producers: dict[str, list[Any]] = {}
        made_by: dict[str, list[str]] = {}
        for f in sorted(verified):
            em, out = verified[f]
            prod = ex.accounts[f].product
            if out > 0 and prod:
                producers.setdefault(prod, []).append((em, out, used.get(f, {})))
                made_by.setdefault(prod, []).append(f)
        beta: dict[str, int] = {}
        iters = 0
        if any(used.values()) and producers:
            try:
                beta, iters = F.responsibility_factors(producers)
            except F.Diverges as d:
                raise E.Reject(E.RESPONSIBILITY_DIVERGES, str(d)) from None
        # products with supply-chain data: some producer used inputs and every producer
        # reported its input use. Their gap is measured against beta_p, the product's average
        # with what its inputs embody (seed 003: a producer answers only for the excess).
        # With part of the producers reporting, beta_p would set firms that declared what
        # they buy against firms that did not (and reward not declaring): those products,
        # like products without input data, compare direct intensity with the direct B.
        chained = {
            p
            for p, fs in made_by.items()
            if all(f in used for f in fs) and any(used[f] for f in fs)
        }
        # 2. each verified firm's intensity (direct + embodied in inputs) and gap
        inten: dict[str, Fraction] = {}
        embodied: dict[str, Fraction] = {}
        for f in sorted(verified):
            em, out = verified[f]
            embodied[f] = F.embodied(used.get(f, {}), beta)
            if out > 0:
                inten[f] = F.intensity(em + embodied[f], out)
        gaps: dict[str, tuple[Fraction, int, str, int, Fraction]] = {}
        for f, i in inten.items():
            rec = self.allocs.get(f, {}).get(period)
            prod = ex.accounts[f].product
            b = rec["benchmark_ppm"] if rec else self.benchmarks.get(prod, 0)
            ref = F.gap_reference(b, beta.get(prod) if prod in chained else None)
            if ref is None:
                continue
            # like with like: beta_p includes embodied emissions, B is a direct intensity
            i_gap = i if ref[0] == "responsibility" else F.intensity(verified[f][0], verified[f][1])
            gaps[f] = (F.gap(i_gap, ref[1]), b, ref[0], ref[1], i_gap)
        # an SME has no benchmark: its sub-quota is its indicator (seed 000's sub-indicator),
        # so its verified cut is g = 1 - E / sub-quota granted, and counts as a partner's cut
        sym = self.instrument_for(period)
        granted: dict[str, int] = {}
        for lot in ex.sub_quotas.values():
            if lot["instrument"] == sym:
                granted[lot["sme"]] = granted.get(lot["sme"], 0) + lot["granted"]
        for f in sorted(verified):
            if f not in gaps and granted.get(f, 0) > 0:
                em = verified[f][0]
                gaps[f] = (1 - Fraction(em, granted[f]), 0, "sub_quota", granted[f], Fraction(em))
        # 3. new allocation factors (covered firms with a gap)
        updates = []
        shares_due = []  # core firms whose partners' cuts raised their factor
        for f in sorted(gaps):
            if not self._covered(ex.accounts[f]) and f not in self.allocs:
                continue
            g, b, ref_kind, ref_ppm, i_gap = gaps[f]
            partners = []
            for j, w in self._partners(f, params["coupling_weights"]):
                gj = gaps.get(j, (Fraction(0), 0))[0]
                partners.append((j, w, gj))
            own = F.own_term(g, params["alpha_up_ppm"], params["alpha_down_ppm"])
            c_raw, c_cap = F.coupling_term(
                [(w, gj) for _, w, gj in partners], params["kappa_ppm"], params["kappa_max_ppm"]
            )
            before = self._phi_of(f, params)
            r = F.update_phi(
                before,
                own,
                c_cap,
                params["phi_min_ppm"],
                params["phi_max_ppm"],
                params["max_step_ppm"],
            )
            em, out = verified[f]
            inputs = {
                "emissions": em,
                "output": out,
                "embodied_ppm": _ppm(embodied[f]),
                "intensity_ppm": _ppm(i_gap),
                "benchmark_ppm": b,
                # what the gap was measured against: "responsibility" (beta_p, the
                # product's average with its inputs) or "benchmark" (B)
                "reference": ref_kind,
                "reference_ppm": ref_ppm,
                "partners": [[j, _ppm(w), _ppm(gj)] for j, w, gj in partners],
                "alpha_up_ppm": params["alpha_up_ppm"],
                "alpha_down_ppm": params["alpha_down_ppm"],
                "kappa_ppm": params["kappa_ppm"],
                "kappa_max_ppm": params["kappa_max_ppm"],
                "phi_min_ppm": params["phi_min_ppm"],
                "phi_max_ppm": params["phi_max_ppm"],
                "max_step_ppm": params["max_step_ppm"],
            }
            terms = {
                "gap_ppm": _ppm(g),
                "own_ppm": _ppm(own),
                "coupling_raw_ppm": _ppm(c_raw),
                "coupling_ppm": _ppm(c_cap),
                "multiplier_ppm": _ppm(r["multiplier"]),
                "phi_raw_ppm": _ppm(r["raw"]),
                "step_limited": r["step_limited"],
                "bound_limited": r["bound_limited"],
            }
            updates.append((f, before, r["phi_ppm"], inputs, terms))
            if c_cap > 0 and params["gain_share_ppm"]:
                shares_due.append((f, before, b, out, c_cap, partners))
        gain_payments = self._gain_payments(period, sym, params, shares_due, gaps)
        # 4. benchmark gradient step per product
        by_product: dict[str, list[Any]] = {}
        for f, i in inten.items():
            prod = ex.accounts[f].product
            if prod in self.benchmarks:
                by_product.setdefault(prod, []).append((i, verified[f][1]))
        bench_updates = []
        for prod in sorted(by_product):
            target = F.weighted_intensity(by_product[prod])
            b = self.benchmarks[prod]
            r = F.benchmark_step(
                b,
                target,
                params["benchmark_step_ppm"],
                params["max_tightening_ppm"],
                params["allow_loosening"],
                params["max_loosening_ppm"],
            )
            inputs = {
                "weighted_intensity_ppm": _ppm(target),
                "firms": len(by_product[prod]),
                "output": sum(y for _, y in by_product[prod]),
                "step_ppm": params["benchmark_step_ppm"],
                "max_tightening_ppm": params["max_tightening_ppm"],
                "allow_loosening": params["allow_loosening"],
                "max_loosening_ppm": params["max_loosening_ppm"],
            }
            terms = {
                "gradient_ppm": _ppm(r["gradient"]),
                "raw_ppm": _ppm(r["raw"]),
                "limited": r["limited"],
            }
            bench_updates.append((prod, b, r["benchmark_ppm"], inputs, terms))
        # 5. the verified firms share the period's total by B x Y_verified x phi, with the phi
        # fixed in their records (the period's, not the one computed above for the next)
        mode = params["allocation_total"]
        recs = [(f, d[period]) for f, d in sorted(self.allocs.items()) if period in d]
        ver = [(f, r) for f, r in recs if r["verified"]]
        unverified_pre = sum(r["pre"] for _, r in recs if not r["verified"])
        alloc = F.period_allocation(
            mode,
            [(r["benchmark_ppm"], r["verified_output"], r["phi_ppm"]) for _, r in ver],
            params["cap_tonnes"],
            PPM,
            unverified_pre,
        )
        shares = dict(zip((f for f, _ in ver), alloc["parts"]))
        k = alloc["scale"]
        # every settlement (the shares, pending deductions) must be possible
        run: dict[str, Any] = {}
        for f, r in recs:
            self._check_settle(
                dict(r, final=shares[f]) if f in shares and mode != "floating" else r, run
            )
        # ---- accepted
        events: list[Any] = []
        t = self.totals.setdefault(period, {"allocation_total": mode})
        t.update(
            total=alloc["total"],
            raw_total=floor_int(alloc["raw"]),
            scale=[k.numerator, k.denominator],
            firms=len(ver),
            unverified_pre=unverified_pre,
        )
        if mode != "floating":  # floating: nothing to share, each firm keeps B x Y x phi
            events.append(
                AllocationNormalised(
                    period, mode, alloc["total"], floor_int(alloc["raw"]), _ppm(k), len(ver)
                )
            )
            for f, r in ver:
                r.update(final=shares[f], k_num=k.numerator, k_den=k.denominator, normalised=True)
                events.extend(self._settle(f, period, r, "normalisation"))
        for f, before, after, inputs, terms in updates:
            events.append(
                self._record_factor(
                    f, period, "verification", before, after, inputs, terms, self.ex.last_seq
                )
            )
        for core, sme, amount, info in gain_payments:
            post_cash(ex.accounts[core], ex.accounts[sme], amount)
            self.gain_shares.setdefault(period, []).append([core, sme, amount, info])
            events.append(Posting(CASH, core, sme, amount, f"gain_share:{period}"))
            events.append(
                GainShared(
                    period,
                    core,
                    sme,
                    amount,
                    info["gain_t_ppm"],
                    info["price"],
                    info["share_ppm"],
                    info["weight_ppm"],
                )
            )
        for prod, before, after, inputs, terms in bench_updates:
            self.benchmarks[prod] = after
            self.bench_history.setdefault(prod, []).append(
                {
                    "seq": self.ex.last_seq,
                    "period": period,
                    "reason": "gradient_step",
                    "before_ppm": before,
                    "after_ppm": after,
                    "inputs": inputs,
                    "terms": terms,
                }
            )
            events.append(BenchmarkUpdated(prod, period, before, after, inputs, terms))
        if beta:
            self.resp[period] = dict(sorted(beta.items()))
        # what each firm answers for: its own emissions plus the average of what it buys
        # (final consumers, with no output, bear exactly the latter)
        outside = F.outside_inputs(producers, list(used.values()))
        for f in sorted(set(verified) | {f for f, q in used.items() if q}):
            em, out = verified.get(f, (0, 0))
            q = used.get(f, {})
            emb = embodied[f] if f in embodied else F.embodied(q, beta)
            self.firm_resp[f] = {
                "period": period,
                "verified": f in verified,
                "emissions": em,
                "output": out,
                "embodied_ppm": _ppm(emb),
                "responsibility_ppm": _ppm(em + emb),
                "intensity_ppm": _ppm(inten[f]) if f in inten else None,
                "outside_inputs": [i for i in sorted(q) if i in outside],
            }
        unverified = tuple(
            sorted(
                f
                for f, d in self.allocs.items()
                if period in d and d[period]["opened"] and f not in verified
            )
        )
        self.periods[period] = "closed"
        events.extend(self._settle_period(period))
        events.insert(
            0,
            PeriodClosed(
                period,
                len(updates),
                len(bench_updates),
                unverified,
                dict(sorted(beta.items())),
                iters,
            ),
        )
        return events

    def _gain_payments(
        self, period: int, sym: str, params: dict[str, Any], due: list[Any], gaps: dict[str, Any]
    ) -> list[Any]:
        """What each core firm owes the SMEs whose verified cuts raised its factor: the
        coupling term c adds c x phi x B x Y tonnes to its raw weight; valued at the period's
        volume-weighted price of its allowance (the reference price on a day without trades),
        ``gain_share`` of it goes to its SME partners in proportion to w_fj x g_j (cuts only;
        an SME that missed its sub-quota gets nothing). Paid from free cash, never more.
        Returns [(core, sme, fen, explanation)], computed before anything moves."""
        ex = self.ex
        comp = ex.modules.get("compliance")
        vol = getattr(comp, "volume", {}).get(period, {}).get(sym) if comp else None
        ins = ex.instruments.get(sym)
        price = (vol[1] // vol[0]) if vol and vol[0] else (ins.reference_price if ins else 0)
        out = []
        for f, phi, b, y, c, partners in due:
            gain_t = Fraction(c) * F.raw_weight(b, y, phi)
            owed = floor_int(gain_t * price * Fraction(params["gain_share_ppm"], PPM))
            # SMEs whose cut was measured against their sub-quota (gaps[j][2] is the reference)
            smes = [
                (j, w * gj)
                for j, w, gj in partners
                if gj > 0
                and ex.accounts[j].size_class == "sme"
                and j in gaps
                and gaps[j][2] == "sub_quota"
            ]
            owed = min(owed, max(0, ex.accounts[f].cash_available))
            if owed <= 0 or not smes:
                continue
            total_w = sum(w for _, w in smes)
            for (j, w), amt in zip(smes, F.split_amounts(owed, [w for _, w in smes])):
                if amt > 0:
                    out.append(
                        (
                            f,
                            j,
                            amt,
                            {
                                "gain_t_ppm": _ppm(gain_t),
                                "price": price,
                                "share_ppm": params["gain_share_ppm"],
                                "weight_ppm": _ppm(w / total_w),
                            },
                        )
                    )
        return out

    def gain_share_history(self, firm_id: str | None = None) -> list[dict[str, Any]]:
        """Gain-share payments, per period: [{period, core, sme, amount, ...}]."""
        return [
            {"period": p, "core": core, "sme": sme, "amount": amt, **info}
            for p, rows in sorted(self.gain_shares.items())
            for core, sme, amt, info in rows
            if firm_id is None or firm_id in (core, sme)
        ]

    # ================================================================== sub-quotas
    def split_weight(self, sme_id: str, strategy: str) -> Fraction:
        """The weight of one SME under a strategy (docs/RULES.md, "Split strategies")."""
        if strategy == "equal":
            return Fraction(1)
        acct = self.ex.accounts[sme_id]
        latest = self._latest(sme_id)
        out = latest[1] if latest else 0
        known = latest[2] if latest else None
        if known is None:
            a = self.assessments.get(sme_id)
            em = Fraction(a["hist_intensity_ppm"] * out, PPM) if a else Fraction(0)
        else:
            em = Fraction(known)
        if strategy == "output":
            return Fraction(out)
        if strategy == "baseline_emissions":
            return em
        if strategy == "responsibility":
            fr = self.firm_resp.get(sme_id)
            if fr is not None:
                return Fraction(fr["responsibility_ppm"], PPM)
            return em
        if strategy == "abatement":
            b = self.benchmarks.get(acct.product)
            if b is None:
                return Fraction(0)
            return max(Fraction(0), em - Fraction(b * out, PPM))
        raise E.Reject(E.UNKNOWN_STRATEGY, f"unknown split strategy {strategy!r}")

    def _split(self, c: SplitSubQuotas) -> list[Any]:
        ex = self.ex
        parent = ex.firm(c.parent)
        if c.strategy not in F.STRATEGIES:
            raise E.Reject(E.UNKNOWN_STRATEGY, f"strategy must be one of {', '.join(F.STRATEGIES)}")
        ex._positive(c.amount)
        smes = list(c.smes)
        if not smes or len(set(smes)) != len(smes) or not all(type(s) is str for s in smes):
            raise E.Reject(E.BAD_PARAMETER, "smes must be a non-empty list of distinct firm ids")
        h = parent.holdings.get(c.instrument)
        ex.instrument(c.instrument)
        if h is None or c.amount > h.available:
            raise E.Reject(
                E.INSUFFICIENT_HOLDINGS,
                f"split of {c.amount} t exceeds the parent's free holding "
                f"({0 if h is None else h.available} t)",
            )
        for s in smes:  # every per-SME check, with one tonne, before any weight is computed
            ex.check_sub_quota(self._cmd(c, s, 1))
        weights = [self.split_weight(s, c.strategy) for s in smes]
        try:
            parts = F.split_amounts(c.amount, weights)
        except ZeroDivisionError:
            raise E.Reject(
                E.NO_SPLIT_BASIS, f"no data for strategy {c.strategy!r}: every weight is zero"
            ) from None
        # ---- accepted: each create_sub_quota re-runs the core's checks, which hold
        events: list[Any] = []
        out = []
        for s, q, w in zip(smes, parts, weights):
            lot_id = 0
            if q:
                lot_id = ex.next_lot_id
                events.extend(ex._create_sub_quota(self._cmd(c, s, q)))
            out.append((s, q, str(w), lot_id))
        return [
            SubQuotasSplit(parent.firm_id, c.instrument, c.strategy, c.amount, tuple(out))
        ] + events

    @staticmethod
    def _cmd(c: SplitSubQuotas, sme: str, qty: int) -> CreateSubQuota:
        return CreateSubQuota(
            parent=c.parent,
            sme=sme,
            instrument=c.instrument,
            qty=qty,
            revenue_share_ppm=c.revenue_share_ppm,
            surplus_rule=c.surplus_rule,
            shortfall_rule=c.shortfall_rule,
            chain_id=c.chain_id,
        )

    def _settle_sub_quotas(self, c: SettleSubQuotas) -> list[Any]:
        period = _int(c.period, "period", minimum=1)
        if period not in self.periods:
            raise E.Reject(E.PERIOD_NOT_OPEN, f"period {period} was never opened")
        sym = self.instrument_for(period)
        ex = self.ex
        events: list[Any] = []
        for lot_id in sorted(ex.sub_quotas):
            lot = ex.sub_quotas[lot_id]
            if lot["instrument"] != sym or lot_id in self.settled_lots:
                continue
            sme = ex.accounts[lot["sme"]]
            key = f"{LOT_SUB_QUOTA}:{lot_id}"
            h = sme.holdings.get(sym)
            in_lot = h.lots.get(key, 0) if h is not None else 0
            free = min(in_lot, h.available) if h is not None else 0
            moved = 0
            if lot["surplus_rule"] == "revert" and free:
                parent = ex.accounts[lot["parent"]]
                # the lot was created before any later sub-quota lot of this holding, so the
                # prefix-preferred FIFO takes exactly from it (checked)
                taken = ex.move_units(
                    sme,
                    parent,
                    sym,
                    free,
                    f"sub_quota_return:{lot_id}",
                    "sub_quota_return",
                    prefer=key,
                )
                assert taken == [(key, free)], taken
                events.append(
                    Posting(sym, sme.firm_id, parent.firm_id, free, f"sub_quota_return:{lot_id}")
                )
                lot["held"] = max(0, lot["held"] - free)
                moved = free
            self.settled_lots[lot_id] = {
                "period": period,
                "surplus": free,
                "action": lot["surplus_rule"],
                "moved": moved,
                "reserved_left": in_lot - free,
            }
            events.append(
                SubQuotaSettled(
                    lot_id,
                    period,
                    sme.firm_id,
                    lot["parent"],
                    free,
                    lot["surplus_rule"],
                    moved,
                    in_lot - free,
                )
            )
        return events
