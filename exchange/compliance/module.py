"""The compliance module: MRV, surrender against obligations, offset caps, deadline processing.

A :class:`exchange.core.exchange.Module` of the deterministic core: every change is a command
(see :mod:`exchange.compliance.commands`), every check runs before the first mutation, time is
the command's ``ts``. State round-trips through ``to_state``/``load_state`` as plain JSON.

Per firm and period it keeps one record: the activity data submission (pending, rejected,
verified) with its emissions per category (energy: fuels and electricity; process; natural),
the obligation (the verified emissions of the categories covered when it was submitted, plus
anything the rules module adds when a negative true-up cannot be clawed back), every surrender
with the offset cap in effect when it was made, and the settlement made at the deadline.

Interfaces with the rules module (``ex.modules.get("rules")``, optional):

* on verification: ``rules.on_verified(firm_id, period, emissions, output) -> list[event]``,
  with the covered emissions (the scope the obligation and the allocation answer for);
* at the deadline, for a shortfall: ``rules.add_allocation_deduction(firm_id, period + 1, qty)``;
* rules calls :meth:`ComplianceModule.add_obligation` back.

With the SME fund (``ex.modules.get("sme_fund")``, :mod:`exchange.compliance.fund`), the
fund's configured share of each penalty collected at the deadline goes to ``@sme_fund``
(``fund.credit``) and the rest to ``@bank``.

Trades are not compliance commands, but a statement lists them and the penalty uses the
period's average allowance price, so the module listens to the core's trades
(``Exchange.trade_listeners``, called as each fill settles) and keeps per firm/period/instrument
aggregates of them.
"""

from __future__ import annotations

import bisect
import copy
from typing import TYPE_CHECKING, Any, Callable, TypeGuard

from ..core import errors as E
from ..core.accounts import BANK, CASH, LOT_SUB_QUOTA, RETIRED, post_cash
from ..core.events import Posting, Trade
from ..core.exchange import Module
from ..core.records import record_maker
from ..core.units import BPS, format_percent
from . import mrv
from .commands import (
    ActivityDataSubmitted,
    ComplianceConfigured,
    ComplianceDeadlineProcessed,
    CompliancePeriodConfigured,
    ComplianceSettled,
    ConfigureCompliance,
    ConfigureCompliancePeriod,
    EmissionsVerified,
    ObligationAdded,
    OffsetCapChanged,
    ProcessComplianceDeadline,
    RegisterVerifier,
    RejectSubmission,
    SetOffsetCap,
    SubmissionRejected,
    SubmitActivityData,
    SubQuotaCompliance,
    SurrenderUnits,
    UnitsSurrendered,
    VerifierRegistered,
    VerifyEmissions,
)
from .fund import SmeFundModule, fund_part

if TYPE_CHECKING:
    from ..core.accounts import Account
    from ..core.exchange import Exchange, Instrument
    from ..registry.module import RegistryModule

STATUS_COMPLIANT = "compliant"
STATUS_LATE = "late"
STATUS_NON_COMPLIANT = "non_compliant"
STATUS_UNVERIFIED = "unverified"


def _is_int(v: object) -> TypeGuard[int]:
    return type(v) is int


def _seq(v: object, what: str, code: str = E.BAD_PARAMETER) -> tuple[Any, ...]:
    """A list/tuple field (as decoded from the journal), or a reject: bad input never raises
    anything but a Reject out of a handler."""
    if not isinstance(v, (tuple, list)):
        raise E.Reject(code, f"{what} must be a list")
    return tuple(v)


def _pairs(v: object, what: str, code: str = E.BAD_PARAMETER) -> tuple[Any, ...]:
    out = _seq(v, what, code)
    for p in out:
        if not isinstance(p, (tuple, list)) or len(p) != 2 or not isinstance(p[0], str):
            raise E.Reject(code, f"{what} must be a list of (name, number) pairs")
    return out


def _ident(v: object, code: str, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise E.Reject(code, f"{what} must be a non-empty string, got {v!r}"[:200])
    return v


_record = record_maker(
    "ComplianceRecord",
    (
        "status",
        "version",
        "fuels",
        "process_emissions",
        "output",
        "fuel_emissions",
        "emissions",
        "electricity_mwh",
        "grid_factor_ppm",
        "electricity_emissions",
        "natural_emissions",
        "covered_categories",
        "covered_emissions",
        "submitted_ts",
        "verifier",
        "verified_ts",
        "rejections",
        "extra_obligation",
        "surrendered",
        "offsets",
        "offsets_by_type",
        "surrenders",
        "late_surrender",
        "settlement",
    ),
)
_settlement = record_maker(
    "Settlement",
    (
        "status",
        "ts",
        "shortfall",
        "penalty",
        "penalty_paid",
        "penalty_outstanding",
        "deduction",
        "average_price",
    ),
)


_AFTER_ANY_PERIOD = float("inf")  # sorts after every (start_ts, period) with the same start


def _load_record(r: dict[str, Any]) -> dict[str, Any]:
    if "covered_emissions" not in r:
        # a snapshot from before emission categories: its emissions are fuel + process under
        # the rule of the time (energy and process covered), and a journal replayed from the
        # same commands gives exactly these values (the new command fields default to them)
        submitted = r.get("version", 0) > 0
        r.setdefault("electricity_mwh", 0)
        r.setdefault("grid_factor_ppm", mrv.DEFAULT_GRID_FACTOR_PPM if submitted else None)
        r.setdefault("electricity_emissions", 0)
        r.setdefault("natural_emissions", 0)
        r.setdefault("covered_categories", list(mrv.DEFAULT_COVERED) if submitted else [])
        r["covered_emissions"] = r.get("emissions", 0)
    if r.get("settlement") is not None:
        # record_maker's makers carry their load function (core.records), untyped as such
        r["settlement"] = _settlement.load(r["settlement"])  # type: ignore[attr-defined]
    rec: dict[str, Any] = _record.load(r)  # type: ignore[attr-defined]
    return rec


def new_record() -> dict[str, Any]:
    return _record(
        status="none",  # none | pending | rejected | verified
        version=0,
        fuels=[],
        process_emissions=0,
        output=0,
        fuel_emissions=0,
        emissions=0,
        electricity_mwh=0,
        grid_factor_ppm=None,
        electricity_emissions=0,
        natural_emissions=0,
        covered_categories=[],
        covered_emissions=0,
        submitted_ts=None,
        verifier=None,
        verified_ts=None,
        rejections=[],
        extra_obligation=0,
        surrendered=0,
        offsets=0,
        offsets_by_type={},
        surrenders=[],
        late_surrender=False,
        settlement=None,
    )


class ComplianceModule(Module):
    name = "compliance"

    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex)
        self.params: dict[str, Any] | None = None
        self.periods: dict[int, dict[str, Any]] = {}
        self.verifiers: dict[str, str] = {}
        self.records: dict[str, dict[int, dict[str, Any]]] = {}
        # firm -> period -> instrument -> [buy_qty, buy_notional, sell_qty, sell_notional,
        #                                   trades, fees]
        self.trades: dict[str, dict[int, dict[str, list[Any]]]] = {}
        # period -> instrument -> [qty, notional]
        self.volume: dict[int, dict[str, list[Any]]] = {}
        # sub-quota lot id -> what compliance did with it
        self.sub_quota_use: dict[int, dict[str, Any]] = {}
        self._period_starts: list[tuple[int, int]] = []
        # params["penalty_price_segments"] as a set; None: every board counts (the old rule)
        self._price_segments: frozenset[Any] | None = None
        ex.trade_listeners.append(self._on_trade)

    # ================================================================== wiring
    def handlers(self) -> dict[type, Callable[[Any], list[Any]]]:
        h: dict[type, Callable[[Any], list[Any]]] = {
            ConfigureCompliance: self._configure,
            ConfigureCompliancePeriod: self._configure_period,
            RegisterVerifier: self._register_verifier,
            SubmitActivityData: self._submit,
            VerifyEmissions: self._verify,
            RejectSubmission: self._reject,
            SurrenderUnits: self._surrender,
            SetOffsetCap: self._set_cap,
            ProcessComplianceDeadline: self._deadline,
        }
        return h

    def _on_trade(self, t: Trade) -> None:
        if self._period_starts:
            self._record_trade(t)

    def _record_trade(self, t: Trade) -> None:
        period = self.period_of(t.ts)
        if period is None:
            return
        notional = t.price * t.qty
        sym = t.instrument
        boards = self._price_segments
        if boards is None or t.segment in boards:
            # the tally of the average (penalty) price: only the boards the rule names
            per = self.volume.get(period)
            if per is None:
                per = self.volume[period] = {}
            v = per.get(sym)
            if v is None:
                v = per[sym] = [0, 0]
            v[0] += t.qty
            v[1] += notional
        trades = self.trades
        for firm, buy, fee in ((t.buyer, True, t.buyer_fee), (t.seller, False, t.seller_fee)):
            # get before set: a trade is the commonest event, and setdefault would build
            # the empty containers each time only to throw them away
            by_period = trades.get(firm)
            if by_period is None:
                by_period = trades[firm] = {}
            by_sym = by_period.get(period)
            if by_sym is None:
                by_sym = by_period[period] = {}
            a = by_sym.get(sym)
            if a is None:
                a = by_sym[sym] = [0, 0, 0, 0, 0, 0]
            if buy:
                a[0] += t.qty
                a[1] += notional
            else:
                a[2] += t.qty
                a[3] += notional
            a[4] += 1
            a[5] += fee

    # ================================================================== lookups
    def period_of(self, ts: int) -> int | None:
        """The compliance period a timestamp falls in: the latest period started by then."""
        starts = self._period_starts
        k = bisect.bisect_right(starts, (ts, _AFTER_ANY_PERIOD))
        return starts[k - 1][1] if k else None

    def _reindex(self) -> None:
        self._period_starts = sorted((p["start_ts"], k) for k, p in self.periods.items())

    def _registry(self) -> RegistryModule | None:
        """The exchange's registry module, where it has one."""
        from ..registry.module import RegistryModule

        r = self.ex.modules.get("registry")
        return r if isinstance(r, RegistryModule) else None

    def _need_params(self) -> dict[str, Any]:
        if self.params is None:
            raise E.Reject(E.COMPLIANCE_NOT_CONFIGURED, "compliance is not configured")
        return self.params

    def _period(self, period: object) -> dict[str, Any]:
        self._need_params()
        p = self.periods.get(period) if _is_int(period) else None
        if p is None:
            raise E.Reject(E.UNKNOWN_PERIOD, f"no compliance period {period!r}")
        return p

    def _open_period(self, period: object) -> dict[str, Any]:
        p = self._period(period)
        if p["closed"]:
            raise E.Reject(E.PERIOD_CLOSED, f"compliance period {period} is closed")
        return p

    def record(self, firm_id: str, period: int) -> dict[str, Any] | None:
        return self.records.get(firm_id, {}).get(period)

    def _record(self, firm_id: str, period: int) -> dict[str, Any]:
        r = self.records.setdefault(firm_id, {}).get(period)
        if r is None:
            r = self.records[firm_id][period] = new_record()
        return r

    @staticmethod
    def obligation_of(rec: dict[str, Any] | None) -> int:
        if rec is None:
            return 0
        base = rec["covered_emissions"] if rec["status"] == "verified" else 0
        extra: int = rec["extra_obligation"]
        return base + extra

    def obligation(self, firm_id: str, period: int) -> int:
        return self.obligation_of(self.record(firm_id, period))

    def cap_at(self, period: int, ts: int) -> tuple[int, dict[str, int]]:
        """(cap_bps, {offset_type: sub_cap_bps}) in effect at ``ts``."""
        cur = None
        for entry in self.periods[period]["caps"]:
            if entry[0] <= ts:
                cur = entry
            else:
                break
        if cur is None:  # before the first entry (cannot happen: the first is effective at 0)
            cur = self.periods[period]["caps"][0]
        return cur[2], {k: v for k, v in cur[3]}

    def eligible_vintages(self, period: int) -> list[int] | None:
        """Allowance vintages that count for ``period`` (None = every vintage <= period)."""
        p = self.periods[period]
        if p["eligible_vintages"]:
            return list(p["eligible_vintages"])
        return None if self._need_params()["banking"] else [period]

    def is_eligible(self, period: int, instr: Instrument) -> tuple[bool, str, str]:
        """(eligible, reject code, message) for surrendering ``instr`` against ``period``."""
        p = self.periods[period]
        if instr.kind == "allowance":
            ev = self.eligible_vintages(period)
            ok = instr.vintage <= period if ev is None else instr.vintage in ev
            if not ok:
                return (
                    False,
                    E.INELIGIBLE_VINTAGE,
                    (
                        f"{instr.symbol} (vintage {instr.vintage}) is not eligible for period "
                        f"{period}; eligible: {ev if ev is not None else f'<= {period}'}"
                    ),
                )
            return True, "", ""
        if instr.offset_type not in self._need_params()["offset_types"]:
            return (
                False,
                E.INELIGIBLE_OFFSET_TYPE,
                (f"offset type {instr.offset_type!r} is not accepted for compliance"),
            )
        registry = self._registry()
        if registry is not None and not registry.counts_as_offset(instr.offset_type):
            return (
                False,
                E.INELIGIBLE_OFFSET_TYPE,
                (
                    f"{instr.offset_type} credits are carbon-inclusive credits not declared "
                    "CCER-equivalent (declare_offset_class)"
                ),
            )
        ov = p["offset_vintages"]
        ok = instr.vintage in ov if ov else instr.vintage <= period
        if not ok:
            return (
                False,
                E.INELIGIBLE_VINTAGE,
                (
                    f"{instr.symbol} (vintage {instr.vintage}) is not an eligible offset vintage "
                    f"for period {period}"
                ),
            )
        return True, "", ""

    def average_price(self, period: int) -> int:
        """Volume-weighted average price of the period's allowance trades (fen); without
        trades the reference price of the period's vintage, else the configured fallback.
        The trades are those of the boards in the ``penalty_price_segments`` rule (``main``
        for a configuration made from ``[compliance]``; every board when the configuration
        command predates the rule): ``volume`` holds only those."""
        q = n = 0
        for sym, (vq, vn) in sorted(self.volume.get(period, {}).items()):
            ins = self.ex.instruments.get(sym)
            if ins is not None and ins.kind == "allowance":
                q += vq
                n += vn
        if q:
            return mrv.round_half_up_div(n, q)
        for sym in sorted(self.ex.instruments):
            ins = self.ex.instruments[sym]
            if ins.kind == "allowance" and ins.vintage == period and ins.reference_price:
                return ins.reference_price
        fallback: int = self._need_params()["penalty_fallback_price"]
        return fallback

    # ================================================================== configuration
    def _configure(self, c: ConfigureCompliance) -> list[Any]:
        coef = {}
        for pair in _pairs(c.carbon_coefficients_ppm, "carbon_coefficients_ppm"):
            fuel, ppm = pair[0], pair[1]
            if not isinstance(fuel, str) or not fuel or not _is_int(ppm) or ppm < 0:
                raise E.Reject(E.BAD_PARAMETER, "carbon coefficients are (fuel, ppm >= 0)")
            coef[fuel] = ppm
        if not coef:
            raise E.Reject(E.BAD_PARAMETER, "at least one carbon coefficient is needed")
        co2 = _seq(c.co2_per_c, "co2_per_c")
        if len(co2) != 2:
            raise E.Reject(E.BAD_PARAMETER, "co2_per_c is (numerator, denominator)")
        num, den = co2
        if not (_is_int(num) and _is_int(den) and num > 0 and den > 0):
            raise E.Reject(E.BAD_PARAMETER, "co2_per_c is (numerator, denominator) > 0")
        if c.penalty_mode not in mrv.PENALTY_MODES:
            raise E.Reject(E.BAD_PARAMETER, f"penalty_mode must be one of {mrv.PENALTY_MODES}")
        for v in (
            c.penalty_fixed_fine,
            c.penalty_multiple_ppm,
            c.late_fine,
            c.penalty_fallback_price,
        ):
            if not _is_int(v) or v < 0:
                raise E.Reject(E.BAD_PARAMETER, "fines, multiples and prices are integers >= 0")
        given_types = _seq(c.offset_types, "offset_types")
        if not all(isinstance(t, str) and t for t in given_types):
            raise E.Reject(E.BAD_PARAMETER, "offset types are non-empty strings")
        types = sorted(set(given_types))
        if type(c.banking) is not bool:
            raise E.Reject(E.BAD_PARAMETER, "banking is true or false")
        grid = c.grid_factor_ppm
        if not _is_int(grid) or not 0 <= grid <= mrv.MAX_GRID_FACTOR_PPM:
            raise E.Reject(
                E.BAD_PARAMETER,
                "grid_factor_ppm is an integer within [0, "
                f"{mrv.MAX_GRID_FACTOR_PPM}] (t CO2 per MWh x "
                "1,000,000)",
            )
        given = _seq(c.covered_categories, "covered_categories")
        if (
            not given
            or not all(x in mrv.CATEGORIES for x in given)
            or len(set(given)) != len(given)
        ):
            raise E.Reject(
                E.BAD_PARAMETER,
                f"covered_categories: one or more of {list(mrv.CATEGORIES)}, each once"[:200],
            )
        covered = [x for x in mrv.CATEGORIES if x in given]  # one canonical order
        boards: list[str] | None = None
        if c.penalty_price_segments is not None:
            given_boards = _seq(c.penalty_price_segments, "penalty_price_segments")
            if not given_boards or not all(isinstance(b, str) and b for b in given_boards):
                raise E.Reject(
                    E.BAD_PARAMETER,
                    "penalty_price_segments: one or more board names (main, sme, chain:<id>)",
                )
            boards = sorted(set(given_boards))
        self.params = {
            "coefficients_ppm": dict(sorted(coef.items())),
            "co2_per_c": [num, den],
            "offset_types": types,
            "banking": bool(c.banking),
            "penalty_mode": c.penalty_mode,
            "penalty_fixed_fine": c.penalty_fixed_fine,
            "penalty_multiple_ppm": c.penalty_multiple_ppm,
            "late_fine": c.late_fine,
            "penalty_fallback_price": c.penalty_fallback_price,
            "grid_factor_ppm": c.grid_factor_ppm,
            "covered_categories": covered,
        }
        if boards is not None:
            # only when given: a configuration without the rule keeps the state (and its
            # hash) it always had
            self.params["penalty_price_segments"] = boards
        self._price_segments = None if boards is None else frozenset(boards)
        return [
            ComplianceConfigured(
                tuple(sorted(coef)),
                tuple(types),
                bool(c.banking),
                c.grid_factor_ppm,
                tuple(covered),
            )
        ]

    def _check_caps(self, cap_bps: object, sub_caps: object) -> list[Any]:
        if not _is_int(cap_bps) or not 0 <= cap_bps <= BPS:
            raise E.Reject(
                E.CAP_OUT_OF_RANGE,
                f"the offset cap must be within 0 % .. 100 %, got {format_percent(cap_bps)}",
            )
        out = {}
        for pair in _pairs(sub_caps, "sub_caps_bps", E.CAP_OUT_OF_RANGE):
            otype, bps = pair[0], pair[1]
            if otype not in self._need_params()["offset_types"]:
                raise E.Reject(E.INELIGIBLE_OFFSET_TYPE, f"unknown offset type {otype!r}")
            if not _is_int(bps) or not 0 <= bps <= cap_bps:
                raise E.Reject(
                    E.CAP_OUT_OF_RANGE,
                    f"the {otype} sub-cap must be within 0 % .. the cap "
                    f"({format_percent(cap_bps)}), got {format_percent(bps)}",
                )
            out[otype] = bps
        return [[k, v] for k, v in sorted(out.items())]

    def _configure_period(self, c: ConfigureCompliancePeriod) -> list[Any]:
        self._need_params()
        if not _is_int(c.period) or c.period <= 0:
            raise E.Reject(E.BAD_PARAMETER, "period must be a positive integer (e.g. 2026)")
        if c.period in self.periods:
            raise E.Reject(
                E.BAD_PARAMETER, f"period {c.period} is configured; change caps with set_offset_cap"
            )
        if not _is_int(c.start_ts) or (c.deadline_ts is not None and not _is_int(c.deadline_ts)):
            raise E.Reject(E.BAD_PARAMETER, "start_ts and deadline_ts are integer ns")
        for v in _seq(c.eligible_vintages, "eligible_vintages") + _seq(
            c.offset_vintages, "offset_vintages"
        ):
            if not _is_int(v):
                raise E.Reject(E.BAD_PARAMETER, "vintages are integers")
        subs = self._check_caps(c.offset_cap_bps, c.offset_sub_caps_bps)
        self.periods[c.period] = {
            "start_ts": c.start_ts,
            "deadline_ts": c.deadline_ts,
            "eligible_vintages": sorted(set(c.eligible_vintages)),
            "offset_vintages": sorted(set(c.offset_vintages)),
            "caps": [[0, self.ex.last_seq, c.offset_cap_bps, subs, ""]],
            "closed": False,
            "closed_ts": None,
            "average_price": None,
        }
        self._reindex()
        return [
            CompliancePeriodConfigured(
                c.period, c.start_ts, c.deadline_ts, c.offset_cap_bps, tuple(tuple(s) for s in subs)
            )
        ]

    def _register_verifier(self, c: RegisterVerifier) -> list[Any]:
        _ident(c.verifier, E.BAD_PARAMETER, "verifier id")
        if not isinstance(c.name, str):
            raise E.Reject(E.BAD_PARAMETER, "name must be a string")
        if c.verifier in self.verifiers:
            raise E.Reject(E.DUPLICATE_VERIFIER, f"verifier {c.verifier!r} is registered")
        self.verifiers[c.verifier] = c.name or ""
        return [VerifierRegistered(c.verifier)]

    def _set_cap(self, c: SetOffsetCap) -> list[Any]:
        p = self._open_period(c.period)
        eff = self.ex.now if c.effective_ts is None else c.effective_ts
        sub = c.sub_caps_bps
        if sub is None and _is_int(eff):
            # no sub-caps given: keep those in force when the change takes effect (an empty
            # tuple clears them), each at most the new cap - a sub-cap above the cap would
            # allow nothing more than the cap does
            cap = c.cap_bps if _is_int(c.cap_bps) else 0
            sub = tuple((k, min(v, cap)) for k, v in sorted(self.cap_at(c.period, eff)[1].items()))
        subs = self._check_caps(c.cap_bps, sub if sub is not None else ())
        if not isinstance(c.operator, str):
            raise E.Reject(E.BAD_PARAMETER, "operator must be a string")
        if not _is_int(eff) or eff < self.ex.now:
            raise E.Reject(
                E.CAP_EFFECTIVE_IN_PAST,
                "a cap change takes effect at or after the time it is made: "
                "surrenders already made are never rewritten",
            )
        p["caps"].append([eff, self.ex.last_seq, c.cap_bps, subs, c.operator or ""])
        p["caps"].sort(key=lambda e: (e[0], e[1]))
        return [
            OffsetCapChanged(
                c.period, c.cap_bps, tuple(tuple(s) for s in subs), eff, c.operator or ""
            )
        ]

    # ================================================================== MRV
    def _submit(self, c: SubmitActivityData) -> list[Any]:
        params = self._need_params()
        self._open_period(c.period)
        self.ex.firm(_ident(c.firm_id, E.UNKNOWN_ACCOUNT, "firm_id"))
        rec = self.record(c.firm_id, c.period)
        if rec is not None and rec["status"] == "verified":
            raise E.Reject(
                E.ALREADY_VERIFIED,
                f"{c.firm_id}'s emissions for {c.period} are verified; "
                "a second submission is not accepted",
            )
        fuels: dict[str, int] = {}
        for pair in _pairs(c.fuels, "fuels (fuel, tce)", E.BAD_ACTIVITY_DATA):
            fuel, tce = pair
            if fuel not in params["coefficients_ppm"]:
                raise E.Reject(
                    E.UNKNOWN_FUEL,
                    f"no carbon coefficient for fuel {fuel!r}; "
                    f"known: {sorted(params['coefficients_ppm'])}",
                )
            if not _is_int(tce) or tce < 0:
                raise E.Reject(E.BAD_ACTIVITY_DATA, "fuel use is a whole number of tce >= 0")
            if fuel in fuels:
                raise E.Reject(E.BAD_ACTIVITY_DATA, f"fuel {fuel!r} listed twice")
            fuels[fuel] = tce
        for name, v in (
            ("process_emissions", c.process_emissions),
            ("output", c.output),
            ("electricity_mwh", c.electricity_mwh),
            ("natural_emissions", c.natural_emissions),
        ):
            if not _is_int(v) or v < 0:
                raise E.Reject(E.BAD_ACTIVITY_DATA, f"{name} must be a whole number >= 0")
        fl = sorted(fuels.items())
        grid = params["grid_factor_ppm"]
        covered = params["covered_categories"]
        by = mrv.category_emissions(
            fl,
            c.electricity_mwh,
            c.process_emissions,
            c.natural_emissions,
            params["coefficients_ppm"],
            tuple(params["co2_per_c"]),
            grid,
        )
        cov = mrv.covered_emissions(by, covered)
        rec = self._record(c.firm_id, c.period)
        # the factors and the covered categories in force now are kept with the submission: a
        # later configure_compliance applies to submissions after it, never to this one
        rec.update(
            status="pending",
            version=rec["version"] + 1,
            fuels=[[k, v] for k, v in fl],
            process_emissions=c.process_emissions,
            output=c.output,
            fuel_emissions=by["fuels"],
            emissions=by["total"],
            electricity_mwh=c.electricity_mwh,
            grid_factor_ppm=grid,
            electricity_emissions=by["electricity"],
            natural_emissions=c.natural_emissions,
            covered_categories=list(covered),
            covered_emissions=cov,
            submitted_ts=self.ex.now,
        )
        return [
            ActivityDataSubmitted(
                c.firm_id,
                c.period,
                rec["version"],
                by["fuels"],
                c.process_emissions,
                by["total"],
                c.output,
                c.electricity_mwh,
                by["electricity"],
                by["energy"],
                c.natural_emissions,
                tuple(covered),
                cov,
            )
        ]

    def _check_verifier(self, verifier: object) -> None:
        if not isinstance(verifier, str) or verifier not in self.verifiers:
            raise E.Reject(E.NOT_A_VERIFIER, f"{verifier!r} is not a registered verifier")

    def _pending(self, firm_id: str, period: int) -> dict[str, Any]:
        _ident(firm_id, E.UNKNOWN_ACCOUNT, "firm_id")
        rec = self.record(firm_id, period)
        if rec is not None and rec["status"] == "verified":
            raise E.Reject(E.ALREADY_VERIFIED, f"{firm_id}'s {period} emissions are verified")
        if rec is None or rec["status"] != "pending":
            raise E.Reject(
                E.NO_SUBMISSION, f"no pending activity data submission from {firm_id} for {period}"
            )
        return rec

    def _verify(self, c: VerifyEmissions) -> list[Any]:
        self._open_period(c.period)
        self._check_verifier(c.verifier)
        rec = self._pending(c.firm_id, c.period)
        events: list[Any] = []
        rules = self.ex.modules.get("rules")
        hook = getattr(rules, "on_verified", None)
        if hook is not None:  # may raise Reject: nothing of ours has changed yet
            events.extend(hook(c.firm_id, c.period, rec["covered_emissions"], rec["output"]) or ())
        rec.update(status="verified", verifier=c.verifier, verified_ts=self.ex.now)
        fe, ee = rec["fuel_emissions"], rec["electricity_emissions"]
        events.insert(
            0,
            EmissionsVerified(
                c.firm_id,
                c.period,
                c.verifier,
                rec["emissions"],
                self.obligation_of(rec),
                fe,
                ee,
                fe + ee,
                rec["process_emissions"],
                rec["natural_emissions"],
                tuple(rec["covered_categories"]),
                rec["covered_emissions"],
            ),
        )
        return events

    def _reject(self, c: RejectSubmission) -> list[Any]:
        self._open_period(c.period)
        self._check_verifier(c.verifier)
        if not isinstance(c.reason, str) or not c.reason.strip():
            raise E.Reject(E.REASON_REQUIRED, "a rejected submission needs a reason")
        rec = self._pending(c.firm_id, c.period)
        rec["status"] = "rejected"
        rec["rejections"].append([self.ex.now, c.verifier, c.reason, rec["version"]])
        return [SubmissionRejected(c.firm_id, c.period, c.verifier, c.reason)]

    def add_obligation(self, firm_id: str, period: int, qty: int) -> list[Any]:
        """Called by the rules module: a negative true-up it could not claw back from holdings
        becomes extra obligation for ``period``. Returns the event (rules appends it)."""
        if not _is_int(qty) or qty <= 0 or not _is_int(period):
            return []
        rec = self._record(firm_id, period)
        rec["extra_obligation"] += qty
        return [ObligationAdded(firm_id, period, qty, self.obligation_of(rec))]

    # ================================================================== surrender
    def _retire(
        self,
        src: Account,
        instr: Instrument,
        qty: int,
        period: int,
        reason: str,
        prefer: str | None = None,
    ) -> tuple[Posting, list[Any]]:
        """Move ``qty`` units to @retired; keep the core's sub-quota bookkeeping right."""
        taken = self.ex.move_units(
            src,
            self.ex.accounts[RETIRED],
            instr.symbol,
            qty,
            f"{reason}:{src.firm_id}",
            reason,
            prefer=prefer,
        )
        self._note_sub_quota(
            taken, "surrendered" if reason.startswith("surrender") else reason.split(":")[0]
        )
        return Posting(instr.symbol, src.firm_id, RETIRED, qty, reason), taken

    def _note_sub_quota(self, taken: list[Any], what: str) -> None:
        for key, q in taken:
            if key.startswith(LOT_SUB_QUOTA + ":"):
                lot_id = int(key.split(":", 1)[1])
                lot = self.ex.sub_quotas.get(lot_id)
                if lot is not None:
                    lot["held"] -= q
                use = self.sub_quota_use.setdefault(lot_id, {})
                use[what] = use.get(what, 0) + q

    def _add_surrender(
        self,
        rec: dict[str, Any],
        c_seq: int,
        ts: int,
        instr: Instrument,
        qty: int,
        by: str,
        cap_bps: int,
    ) -> None:
        rec["surrenders"].append(
            [c_seq, ts, instr.symbol, instr.kind, instr.offset_type, qty, by, cap_bps]
        )
        rec["surrendered"] += qty
        if instr.kind == "offset":
            rec["offsets"] += qty
            obt = rec["offsets_by_type"]
            obt[instr.offset_type] = obt.get(instr.offset_type, 0) + qty

    def _surrender(self, c: SurrenderUnits) -> list[Any]:
        p = self._open_period(c.period)
        acct = self.ex.firm(_ident(c.firm_id, E.UNKNOWN_ACCOUNT, "firm_id"))
        instr = self.ex.instrument(_ident(c.instrument, E.UNKNOWN_INSTRUMENT, "instrument"))
        if not _is_int(c.qty) or c.qty <= 0:
            raise E.Reject(E.BAD_QUANTITY, "quantity must be a positive whole number of tonnes")
        rec = self.record(c.firm_id, c.period)
        if rec is None or rec["status"] != "verified":
            raise E.Reject(
                E.NO_OBLIGATION, f"{c.firm_id} has no verified obligation for {c.period} yet"
            )
        ok, code, msg = self.is_eligible(c.period, instr)
        if not ok:
            raise E.Reject(code, msg)
        h = acct.holdings.get(instr.symbol)
        have = 0 if h is None else h.available
        if c.qty > have:
            raise E.Reject(
                E.INSUFFICIENT_HOLDINGS,
                f"surrender of {c.qty} t {instr.symbol}, {have} t free to surrender",
            )
        obligation = self.obligation_of(rec)
        if rec["surrendered"] + c.qty > obligation:
            raise E.Reject(
                E.EXCEEDS_OBLIGATION,
                f"surrender of {c.qty} t would exceed the obligation: "
                f"{obligation - rec['surrendered']} t outstanding",
            )
        cap_bps, subs = self.cap_at(c.period, self.ex.now)
        if instr.kind == "offset":
            cap = mrv.cap_qty(obligation, cap_bps)
            if rec["offsets"] + c.qty > cap:
                raise E.Reject(
                    E.OFFSET_CAP_EXCEEDED,
                    f"offsets would reach {rec['offsets'] + c.qty} t; the cap of "
                    f"{format_percent(cap_bps)} of {obligation} t allows {cap} t "
                    f"({max(0, cap - rec['offsets'])} t left)",
                )
            sub = subs.get(instr.offset_type) if instr.offset_type is not None else None
            if sub is not None:
                used = rec["offsets_by_type"].get(instr.offset_type, 0)
                sub_cap = mrv.cap_qty(obligation, sub)
                if used + c.qty > sub_cap:
                    raise E.Reject(
                        E.OFFSET_SUBCAP_EXCEEDED,
                        f"{instr.offset_type} would reach {used + c.qty} t; its "
                        f"sub-cap of {format_percent(sub)} allows {sub_cap} t "
                        f"({max(0, sub_cap - used)} t left)",
                    )
        # serials named: the registry checks them (held, never retired) before anything moves
        registry = self._registry()
        if c.serials:
            if registry is None or instr.kind != "offset" or registry.params is None:
                raise E.Reject(
                    E.BAD_SERIAL, "only credits registered with serials are surrendered by serial"
                )
            registry.set_pick(registry.pick(c.firm_id, instr.symbol, c.serials, c.qty))
        # ---- accepted
        prefer = LOT_SUB_QUOTA + ":" if acct.size_class == "sme" else None
        posting, _ = self._retire(acct, instr, c.qty, c.period, f"surrender:{c.period}", prefer)
        self._add_surrender(rec, self.ex.last_seq, self.ex.now, instr, c.qty, c.firm_id, cap_bps)
        if p["deadline_ts"] is not None and self.ex.now > p["deadline_ts"]:
            rec["late_surrender"] = True
        # the registry's retirements (which serials, for whom) between the posting and the
        # surrender's own event, which stays last
        return (
            [posting]
            + (registry.drain() if registry is not None else [])
            + [
                UnitsSurrendered(
                    c.firm_id,
                    c.period,
                    instr.symbol,
                    c.qty,
                    instr.kind,
                    instr.offset_type,
                    c.firm_id,
                    cap_bps,
                    rec["surrendered"],
                    rec["offsets"],
                    obligation,
                )
            ]
        )

    # ================================================================== deadline
    def _deadline(self, c: ProcessComplianceDeadline) -> list[Any]:
        p = self._open_period(c.period)
        if p["deadline_ts"] is not None and self.ex.now < p["deadline_ts"]:
            raise E.Reject(
                E.DEADLINE_NOT_REACHED,
                f"the {c.period} surrender deadline is at {p['deadline_ts']} ns",
            )
        ex = self.ex
        period = c.period
        params = self._need_params()
        events: list[Any] = []
        cap_bps, _ = self.cap_at(period, self.ex.now)
        # 1. SME sub-quotas: cover the SME's verified emissions from its sub-quota, then a
        #    remaining shortfall from the parent where the terms say so, then surplus per terms.
        lots = [
            (lid, lot)
            for lid, lot in sorted(ex.sub_quotas.items())
            if not self.sub_quota_use.get(lid, {}).get("settled_period")
            and self.is_eligible(period, ex.instruments[lot["instrument"]])[0]
        ]
        for lid, lot in lots:
            sme = ex.accounts[lot["sme"]]
            instr = ex.instruments[lot["instrument"]]
            rec = self.record(sme.firm_id, period)
            if rec is None or rec["status"] != "verified":
                continue
            need = self.obligation_of(rec) - rec["surrendered"]
            q = min(need, self._lot_free(sme, instr.symbol, lid))
            if q > 0:
                posting, _ = self._retire(
                    sme, instr, q, period, f"surrender:{period}", f"{LOT_SUB_QUOTA}:{lid}"
                )
                self._add_surrender(
                    rec, self.ex.last_seq, self.ex.now, instr, q, "sub_quota", cap_bps
                )
                events += [
                    posting,
                    SubQuotaCompliance(lid, sme.firm_id, lot["parent"], "surrendered", q),
                ]
        for lid, lot in lots:
            if lot["shortfall_rule"] != "parent":
                continue
            sme_id = lot["sme"]
            rec = self.record(sme_id, period)
            if rec is None or rec["status"] != "verified":
                continue
            need = self.obligation_of(rec) - rec["surrendered"]
            parent = ex.accounts[lot["parent"]]
            for sym in self._eligible_allowances(period):
                if need <= 0:
                    break
                h = parent.holdings.get(sym)
                q = min(need, h.available if h is not None else 0)
                if q <= 0:
                    continue
                instr = ex.instruments[sym]
                posting, _ = self._retire(
                    parent, instr, q, period, f"surrender:{period}:for:{sme_id}"
                )
                self._add_surrender(
                    rec,
                    self.ex.last_seq,
                    self.ex.now,
                    instr,
                    q,
                    f"parent:{parent.firm_id}",
                    cap_bps,
                )
                use = self.sub_quota_use.setdefault(lid, {})
                use["covered_by_parent"] = use.get("covered_by_parent", 0) + q
                events += [
                    posting,
                    SubQuotaCompliance(lid, sme_id, parent.firm_id, "covered_by_parent", q),
                ]
                need -= q
        if ex.modules.get("rules") is None:
            # without the rules module (which owns it: settle_sub_quotas) the surplus is
            # settled here, with the same meaning: revert moves the free rest of the lot back
            # to the parent, bank leaves it with the SME (its terms still apply to sales)
            for lid, lot in lots:
                sme = ex.accounts[lot["sme"]]
                sym = lot["instrument"]
                q = self._lot_free(sme, sym, lid)
                if lot["surplus_rule"] == "revert" and q > 0:
                    key = f"{LOT_SUB_QUOTA}:{lid}"
                    parent = ex.accounts[lot["parent"]]
                    taken = ex.move_units(
                        sme,
                        parent,
                        sym,
                        q,
                        f"sub_quota_return:{lid}",
                        "sub_quota_return",
                        prefer=key,
                    )
                    self._note_sub_quota(taken, "reverted")
                    events += [
                        Posting(sym, sme.firm_id, parent.firm_id, q, f"sub_quota_return:{lid}"),
                        SubQuotaCompliance(lid, sme.firm_id, lot["parent"], "reverted", q),
                    ]
                elif q > 0:
                    use = self.sub_quota_use.setdefault(lid, {})
                    use["banked"] = use.get("banked", 0) + q
                    events.append(SubQuotaCompliance(lid, sme.firm_id, lot["parent"], "banked", q))
        for lid, _ in lots:
            self.sub_quota_use.setdefault(lid, {})["settled_period"] = period
        # 2. every firm with a record for the period: shortfall, status, penalty, deduction
        avg = self.average_price(period)
        counts = {
            STATUS_COMPLIANT: 0,
            STATUS_LATE: 0,
            STATUS_NON_COMPLIANT: 0,
            STATUS_UNVERIFIED: 0,
        }
        rules = ex.modules.get("rules")
        deduct = getattr(rules, "add_allocation_deduction", None)
        fund = ex.modules.get("sme_fund")
        fund = fund if isinstance(fund, SmeFundModule) else None
        for firm_id in sorted(self.records):
            rec = self.records[firm_id].get(period)
            if rec is None:
                continue
            if rec["status"] != "verified" and not rec["extra_obligation"]:
                counts[STATUS_UNVERIFIED] += 1
                rec["settlement"] = _settlement(
                    status=STATUS_UNVERIFIED,
                    ts=self.ex.now,
                    shortfall=0,
                    penalty=0,
                    penalty_paid=0,
                    penalty_outstanding=0,
                    deduction=0,
                    average_price=avg,
                )
                continue
            obligation = self.obligation_of(rec)
            shortfall = max(0, obligation - rec["surrendered"])
            if shortfall:
                status = STATUS_NON_COMPLIANT
                pen = mrv.penalty(
                    params["penalty_mode"],
                    shortfall,
                    params["penalty_fixed_fine"],
                    params["penalty_multiple_ppm"],
                    avg,
                )
            elif rec["late_surrender"]:
                status, pen = STATUS_LATE, params["late_fine"]
            else:
                status, pen = STATUS_COMPLIANT, 0
            acct = ex.accounts.get(firm_id)
            paid = 0
            if pen and acct is not None:
                paid = min(pen, max(0, acct.cash_available))
                if paid:
                    # the SME fund's configured share goes to it (fund.py); the rest, the
                    # rounding included, to the bank as before
                    to_fund = fund_part(paid, fund.share_bps("penalty")) if fund else 0
                    if paid - to_fund:
                        post_cash(acct, ex.accounts[BANK], paid - to_fund)
                        events.append(
                            Posting(CASH, firm_id, BANK, paid - to_fund, f"penalty:{period}")
                        )
                    if to_fund and fund is not None:  # (to_fund is 0 without a fund)
                        events += fund.credit(acct, paid, "penalty", period, firm_id)
            if shortfall and deduct is not None:
                deduct(firm_id, period + 1, shortfall)
            counts[status] += 1
            rec["settlement"] = _settlement(
                status=status,
                ts=self.ex.now,
                shortfall=shortfall,
                penalty=pen,
                penalty_paid=paid,
                penalty_outstanding=pen - paid,
                deduction=shortfall,
                average_price=avg,
            )
            events.append(
                ComplianceSettled(
                    firm_id,
                    period,
                    obligation,
                    rec["surrendered"],
                    shortfall,
                    status,
                    pen,
                    paid,
                    shortfall,
                )
            )
        # 3. no banking: what is left of the period's allowances expires
        if not params["banking"]:
            for sym in sorted(ex.instruments):
                ins = ex.instruments[sym]
                if ins.kind != "allowance" or ins.vintage > period:
                    continue
                for firm_id in sorted(ex.accounts):
                    acct = ex.accounts[firm_id]
                    h = acct.holdings.get(sym)
                    if acct.system or h is None or h.available <= 0:
                        continue
                    posting, _ = self._retire(acct, ins, h.available, period, f"expired:{period}")
                    events.append(posting)
        p["closed"] = True
        p["closed_ts"] = self.ex.now
        p["average_price"] = avg
        events.append(
            ComplianceDeadlineProcessed(
                period,
                avg,
                counts[STATUS_COMPLIANT],
                counts[STATUS_LATE],
                counts[STATUS_NON_COMPLIANT],
                counts[STATUS_UNVERIFIED],
            )
        )
        return events

    def _lot_free(self, acct: Account, sym: str, lot_id: int) -> int:
        """Units of sub-quota lot ``lot_id`` still in ``acct`` and not reserved by orders
        (reservations are per instrument, so the free part of the holding bounds it)."""
        h = acct.holdings.get(sym)
        if h is None:
            return 0
        free: int = max(0, min(h.lots.get(f"{LOT_SUB_QUOTA}:{lot_id}", 0), h.available))
        return free

    def _eligible_allowances(self, period: int) -> list[str]:
        """Allowance instruments eligible for ``period``, oldest vintage first."""
        out = [
            (ins.vintage, sym)
            for sym, ins in self.ex.instruments.items()
            if ins.kind == "allowance" and self.is_eligible(period, ins)[0]
        ]
        return [sym for _, sym in sorted(out)]

    # ================================================================== state
    def to_state(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "params": self.params,
                "periods": {str(k): v for k, v in sorted(self.periods.items())},
                "verifiers": dict(sorted(self.verifiers.items())),
                "records": {
                    f: {str(p): r for p, r in sorted(ps.items())}
                    for f, ps in sorted(self.records.items())
                },
                "trades": {
                    f: {str(p): dict(sorted(i.items())) for p, i in sorted(ps.items())}
                    for f, ps in sorted(self.trades.items())
                },
                "volume": {str(p): dict(sorted(i.items())) for p, i in sorted(self.volume.items())},
                "sub_quota_use": {
                    str(k): dict(sorted(v.items())) for k, v in sorted(self.sub_quota_use.items())
                },
            }
        )

    def load_state(self, s: dict[str, Any] | None) -> None:
        if s is None:
            return
        s = copy.deepcopy(s)
        self.params = s["params"]
        if self.params is not None:
            # a snapshot from before emission categories: the defaults a replay of its
            # configure_compliance would give
            self.params.setdefault("grid_factor_ppm", mrv.DEFAULT_GRID_FACTOR_PPM)
            self.params.setdefault("covered_categories", list(mrv.DEFAULT_COVERED))
        boards = (self.params or {}).get("penalty_price_segments")
        self._price_segments = None if boards is None else frozenset(boards)
        self.periods = {int(k): v for k, v in s["periods"].items()}
        self.verifiers = dict(s["verifiers"])
        self.records = {
            f: {int(p): _load_record(r) for p, r in ps.items()} for f, ps in s["records"].items()
        }
        self.trades = {f: {int(p): i for p, i in ps.items()} for f, ps in s["trades"].items()}
        self.volume = {int(p): i for p, i in s["volume"].items()}
        self.sub_quota_use = {int(k): v for k, v in s["sub_quota_use"].items()}
        self._reindex()
