"""The SME fund: a ledger account financed by shares of penalties (and of auction proceeds,
should the exchange ever auction allowances) and by deposits from the regulator's budget,
paying operator-approved grants to SMEs for verified abatement projects (DESIGN.md section 2,
"SME sub-quotas, revenue sharing and the SME fund"; docs/COMPLIANCE.md, "The SME fund").

A :class:`~exchange.core.exchange.Module` of the deterministic core, like compliance: every
change is a journaled command with events, every check runs before the first mutation, time is
the command's ``ts``, money is integer fen.

The fund is the system account ``@sme_fund``. Like ``@bank`` it is an ordinary ledger account,
so "cash sums to zero over all accounts" still holds: money enters it by postings from the
firm that pays a penalty, or from ``@bank`` (money from outside the exchange: the regulator's
budget), and leaves it by postings to the SME that gets a grant. Its balance is therefore
always inflows minus grants. The account is created by the first ``configure_sme_fund``, so a
market that never uses the fund has exactly the state it had before the fund existed.

Parameters (``configure_sme_fund``) apply to what follows and are never retroactive: a share
applies to penalties collected after the change, a limit to disbursements after it; a lower
limit never takes back a grant already paid.

Grant flow, one command and one event per step::

    apply_for_grant  -> pending --approve_grant--> approved --disburse_grant--> disbursed
                           \\--reject_grant--> rejected   <--reject_grant--/

Limits and the fund's balance are checked when money moves (``disburse_grant``): per SME and
period (what the SME has received for the period plus this grant) and per period (all SMEs).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable, TypeGuard

from ..core import errors as E
from ..core.accounts import BANK, CASH, Account, post_cash
from ..core.commands import Command, command
from ..core.events import Posting, event
from ..core.exchange import Module
from ..core.units import BPS, MAX_CASH, format_percent, format_price

if TYPE_CHECKING:
    from ..core.exchange import Exchange

FUND_ACCOUNT = "@sme_fund"
SOURCES = ("penalty", "auction", "budget")
PENDING, APPROVED, REJECTED, DISBURSED = "pending", "approved", "rejected", "disbursed"
STATUSES = (PENDING, APPROVED, REJECTED, DISBURSED)
MAX_TEXT = 500  # project descriptions, reasons, references: bounded, they live in the state


# =========================================================================== commands
@command("configure_sme_fund")
class ConfigureSmeFund(Command):
    """The fund's parameters; replaces all of them from this command on (never retroactive).
    The first one opens the fund (creates ``@sme_fund``)."""

    penalty_to_fund_bps: int = 0  # share of each collected penalty paid to the fund
    auction_to_fund_bps: int = 0  # share of auction proceeds, once the exchange has auctions
    sme_period_limit: int | None = None  # fen one SME may receive per period; None: no limit
    period_limit: int | None = None  # fen all SMEs together may receive per period; None: none
    operator: str = ""


@command("fund_deposit")
class FundDeposit(Command):
    """Money from the regulator's budget into the fund (a posting from ``@bank``, where all
    money from outside the exchange comes from). ``period``: the period the inflow is counted
    to; None = the compliance period the command's ``ts`` falls in."""

    amount: int
    period: int | None = None
    ref: str = ""  # e.g. the budget line
    operator: str = ""


@command("apply_for_grant")
class ApplyForGrant(Command):
    """An SME (``size_class`` "sme") applies for ``amount`` fen for a project that abates
    ``verified_abatement_t`` t CO2e; filed by the SME or by an operator on its behalf."""

    sme: str
    period: int
    amount: int
    project: str
    verified_abatement_t: int
    applicant: str = ""  # who filed it: the SME's id, or "operator:<label>"


@command("approve_grant")
class ApproveGrant(Command):
    application_id: int
    operator: str


@command("reject_grant")
class RejectGrant(Command):
    """Refuse a pending or approved (not yet paid) application, with a reason."""

    application_id: int
    reason: str
    operator: str = ""


@command("disburse_grant")
class DisburseGrant(Command):
    """Pay an approved grant from the fund to the SME, within the fund's balance and limits."""

    application_id: int
    operator: str = ""


# =========================================================================== events
@event("sme_fund_configured")
class SmeFundConfigured:
    penalty_to_fund_bps: int
    auction_to_fund_bps: int
    sme_period_limit: int | None
    period_limit: int | None
    operator: str
    effective_seq: int  # applies to commands from this sequence number on


@event("sme_fund_inflow")
class SmeFundInflow:
    source: str  # penalty | auction | budget
    period: int
    amount: int  # fen into the fund
    gross: int  # the penalty collected / proceeds / deposit it is a share of
    share_bps: int  # the share in effect (10,000 for a deposit)
    ref: str  # the paying firm (penalty), the auction, the budget line
    balance: int  # the fund's balance after it


@event("grant_applied")
class GrantApplied:
    application_id: int
    sme: str
    period: int
    amount: int
    project: str
    verified_abatement_t: int
    applicant: str


@event("grant_approved")
class GrantApproved:
    application_id: int
    sme: str
    operator: str


@event("grant_rejected")
class GrantRejected:
    application_id: int
    sme: str
    reason: str
    operator: str


@event("grant_disbursed")
class GrantDisbursed:
    application_id: int
    sme: str
    period: int
    amount: int
    project: str
    fund_balance: int  # after the grant
    sme_period_total: int  # what the SME has received for the period, this grant included
    period_total: int  # what all SMEs have received for the period, this grant included


# =========================================================================== module
def _is_int(v: object) -> TypeGuard[int]:
    return type(v) is int


def _text(v: object, what: str, required: bool, code: str = E.BAD_PARAMETER) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT or (required and not v.strip()):
        raise E.Reject(
            code,
            f"{what} must be a{' non-empty' if required else ''} string of at "
            f"most {MAX_TEXT} characters",
        )
    return v


def _limit(v: object, what: str) -> int | None:
    if v is not None and (not _is_int(v) or v < 0):
        raise E.Reject(E.BAD_PARAMETER, f"{what} is a whole number of fen >= 0, or none")
    return v


def _share(v: object, what: str) -> int:
    if not _is_int(v) or not 0 <= v <= BPS:
        # a person set it as a percentage: name it without the core's unit
        raise E.Reject(
            E.BAD_PARAMETER,
            f"{what.removesuffix('_bps')} must be within [0, 100 %], got {format_percent(v)}",
        )
    return v


def fund_part(amount: int, bps: int) -> int:
    """The fund's share of ``amount`` fen: floor(amount x bps / 10,000); the rest (the
    rounding included) stays where it was going (the bank, for a penalty)."""
    return amount * bps // BPS


class SmeFundModule(Module):
    name = "sme_fund"

    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex)
        self._reset()

    def _reset(self) -> None:
        self.params: dict[str, Any] | None = None
        # [seq, ts, penalty_bps, auction_bps, sme_period_limit, period_limit, operator]
        self.params_history: list[list[Any]] = []
        # [seq, ts, source, period, amount, gross, share_bps, ref]
        self.inflows: list[list[Any]] = []
        self.applications: dict[int, dict[str, Any]] = {}
        self.next_application_id = 1
        self.disbursed: dict[str, dict[int, int]] = {}  # sme -> period -> fen received
        self.period_disbursed: dict[int, int] = {}  # period -> fen received by all SMEs

    # ================================================================== wiring
    def handlers(self) -> dict[type, Callable[[Any], list[Any]]]:
        return {
            ConfigureSmeFund: self._configure,
            FundDeposit: self._deposit,
            ApplyForGrant: self._apply,
            ApproveGrant: self._approve,
            RejectGrant: self._reject,
            DisburseGrant: self._disburse,
        }

    # ================================================================== lookups
    @property
    def configured(self) -> bool:
        return self.params is not None

    def balance(self) -> int:
        a = self.ex.accounts.get(FUND_ACCOUNT)
        return a.cash if a is not None else 0

    def share_bps(self, source: str) -> int:
        """The share of ``source`` ("penalty" | "auction") that goes to the fund now."""
        if self.params is None:
            return 0
        bps: int = self.params[f"{source}_to_fund_bps"]
        return bps

    def _need(self) -> dict[str, Any]:
        if self.params is None:
            raise E.Reject(
                E.SME_FUND_NOT_CONFIGURED, "the SME fund is not configured (configure_sme_fund)"
            )
        return self.params

    def _check_period(self, period: object) -> int:
        """A positive integer; where compliance periods are configured, one of them (a grant
        period outside them would escape the per-period limits)."""
        if not _is_int(period) or period <= 0:
            raise E.Reject(
                E.UNKNOWN_PERIOD, f"period must be a positive integer, got {period!r}"[:200]
            )
        comp = self.ex.modules.get("compliance")
        periods = getattr(comp, "periods", None)
        if periods and period not in periods:
            raise E.Reject(
                E.UNKNOWN_PERIOD, f"no compliance period {period}; known: {sorted(periods)}"
            )
        return period

    def _application(self, app_id: object) -> dict[str, Any]:
        a = self.applications.get(app_id) if _is_int(app_id) else None
        if a is None:
            raise E.Reject(E.UNKNOWN_GRANT_APPLICATION, f"no grant application {app_id!r}"[:200])
        return a

    # ================================================================== inflows
    def credit(self, payer: Account, gross: int, source: str, period: int, ref: str) -> list[Any]:
        """Pay the fund its current share of ``gross`` fen out of ``payer``'s cash (which the
        caller has checked covers ``gross``). Returns the events (none when the share is 0).
        Called by compliance at the deadline for penalties; an auction would call it the same
        way with ``source="auction"``. Never raises: the caller has already changed state."""
        bps = self.share_bps(source)
        amount = fund_part(gross, bps)
        if amount <= 0:
            return []
        return self._inflow(payer, amount, gross, bps, source, period, ref)

    def _inflow(
        self, payer: Account, amount: int, gross: int, bps: int, source: str, period: int, ref: str
    ) -> list[Any]:
        fund = self.ex.accounts[FUND_ACCOUNT]
        post_cash(payer, fund, amount)
        self.inflows.append(
            [self.ex.last_seq, self.ex.now, source, period, amount, gross, bps, ref]
        )
        return [
            Posting(CASH, payer.firm_id, FUND_ACCOUNT, amount, f"sme_fund:{source}:{period}"),
            SmeFundInflow(source, period, amount, gross, bps, ref, fund.cash),
        ]

    # ================================================================== configuration
    def _configure(self, c: ConfigureSmeFund) -> list[Any]:
        p = _share(c.penalty_to_fund_bps, "penalty_to_fund_bps")
        a = _share(c.auction_to_fund_bps, "auction_to_fund_bps")
        sl = _limit(c.sme_period_limit, "sme_period_limit")
        pl = _limit(c.period_limit, "period_limit")
        op = _text(c.operator, "operator", False)
        # ---- accepted
        if FUND_ACCOUNT not in self.ex.accounts:
            self.ex.accounts[FUND_ACCOUNT] = Account(
                FUND_ACCOUNT, "SME fund", system=True, can_trade=False
            )
        self.params = {
            "penalty_to_fund_bps": p,
            "auction_to_fund_bps": a,
            "sme_period_limit": sl,
            "period_limit": pl,
            "operator": op,
            "effective_seq": self.ex.last_seq,
            "effective_ts": self.ex.now,
        }
        self.params_history.append([self.ex.last_seq, self.ex.now, p, a, sl, pl, op])
        return [SmeFundConfigured(p, a, sl, pl, op, self.ex.last_seq)]

    def _deposit(self, c: FundDeposit) -> list[Any]:
        self._need()
        if not _is_int(c.amount) or c.amount <= 0:
            raise E.Reject(E.BAD_AMOUNT, "amount must be positive (CNY, at least 0.01)")
        period = c.period
        if period is None:
            from .module import ComplianceModule

            comp = self.ex.modules.get("compliance")
            period = (
                comp.period_of(self.ex.now)
                if isinstance(comp, ComplianceModule) and getattr(comp, "_period_starts", None)
                else None
            )
            if period is None:
                raise E.Reject(
                    E.UNKNOWN_PERIOD,
                    "no compliance period at this time: give the period the deposit counts to",
                )
        self._check_period(period)
        ref = _text(c.ref, "ref", False)
        _text(c.operator, "operator", False)
        # money from outside, like DepositCash: within the core's limit on all cash deposited
        room = MAX_CASH + self.ex.accounts[BANK].cash
        if c.amount > room:
            raise E.Reject(
                E.QUANTITY_LIMIT,
                f"deposit of {format_price(c.amount)} CNY: at most "
                f"{format_price(MAX_CASH)} CNY may be on deposit in "
                f"all, {format_price(max(room, 0))} left",
            )
        return self._inflow(self.ex.accounts[BANK], c.amount, c.amount, BPS, "budget", period, ref)

    # ================================================================== grants
    def _apply(self, c: ApplyForGrant) -> list[Any]:
        self._need()
        if not isinstance(c.sme, str) or not c.sme:
            raise E.Reject(E.UNKNOWN_ACCOUNT, f"unknown account {c.sme!r}"[:200])
        sme = self.ex.firm(c.sme)
        if sme.size_class != "sme":
            raise E.Reject(
                E.NOT_AN_SME,
                f"{c.sme!r} is a {sme.size_class} firm: the fund makes grants to SMEs only",
            )
        self._check_period(c.period)
        if not _is_int(c.amount) or c.amount <= 0:
            raise E.Reject(E.BAD_AMOUNT, "amount must be positive (CNY, at least 0.01)")
        if not _is_int(c.verified_abatement_t) or c.verified_abatement_t <= 0:
            raise E.Reject(
                E.BAD_QUANTITY, "verified_abatement_t must be a positive whole number of tonnes"
            )
        _text(c.project, "project", True)
        _text(c.applicant, "applicant", False)
        # ---- accepted
        app_id = self.next_application_id
        self.next_application_id = app_id + 1
        self.applications[app_id] = {
            "sme": c.sme,
            "period": c.period,
            "amount": c.amount,
            "project": c.project,
            "verified_abatement_t": c.verified_abatement_t,
            "applicant": c.applicant or c.sme,
            "status": PENDING,
            "applied_seq": self.ex.last_seq,
            "applied_ts": self.ex.now,
            "decided_by": None,
            "decided_seq": None,
            "decided_ts": None,
            "reason": None,
            "disbursed_seq": None,
            "disbursed_ts": None,
        }
        return [
            GrantApplied(
                app_id,
                c.sme,
                c.period,
                c.amount,
                c.project,
                c.verified_abatement_t,
                c.applicant or c.sme,
            )
        ]

    def _approve(self, c: ApproveGrant) -> list[Any]:
        self._need()
        a = self._application(c.application_id)
        op = _text(c.operator, "operator", True)
        if a["status"] != PENDING:
            raise E.Reject(
                E.GRANT_NOT_PENDING, f"application {c.application_id} is {a['status']}, not pending"
            )
        a.update(
            status=APPROVED, decided_by=op, decided_seq=self.ex.last_seq, decided_ts=self.ex.now
        )
        return [GrantApproved(c.application_id, a["sme"], op)]

    def _reject(self, c: RejectGrant) -> list[Any]:
        self._need()
        a = self._application(c.application_id)
        if not isinstance(c.reason, str) or not c.reason.strip():
            raise E.Reject(E.REASON_REQUIRED, "a rejected application needs a reason")
        reason = _text(c.reason, "reason", True)
        op = _text(c.operator, "operator", False)
        if a["status"] not in (PENDING, APPROVED):
            raise E.Reject(
                E.GRANT_CLOSED, f"application {c.application_id} is already {a['status']}"
            )
        a.update(
            status=REJECTED,
            decided_by=op,
            decided_seq=self.ex.last_seq,
            decided_ts=self.ex.now,
            reason=reason,
        )
        return [GrantRejected(c.application_id, a["sme"], reason, op)]

    def _disburse(self, c: DisburseGrant) -> list[Any]:
        params = self._need()
        a = self._application(c.application_id)
        _text(c.operator, "operator", False)
        if a["status"] != APPROVED:
            raise E.Reject(
                E.GRANT_NOT_APPROVED,
                f"application {c.application_id} is {a['status']}: only an "
                "approved application is paid",
            )
        amount, sme_id, period = a["amount"], a["sme"], a["period"]
        bal = self.balance()
        if amount > bal:
            raise E.Reject(
                E.SME_FUND_INSUFFICIENT, f"grant of {amount} fen, the fund holds {bal} fen"
            )
        got = self.disbursed.get(sme_id, {}).get(period, 0)
        lim = params["sme_period_limit"]
        if lim is not None and got + amount > lim:
            raise E.Reject(
                E.GRANT_SME_LIMIT_EXCEEDED,
                f"{sme_id} would receive {got + amount} fen for {period}; the limit "
                f"per SME and period is {lim} fen ({max(0, lim - got)} fen left)",
            )
        total = self.period_disbursed.get(period, 0)
        lim = params["period_limit"]
        if lim is not None and total + amount > lim:
            raise E.Reject(
                E.GRANT_PERIOD_LIMIT_EXCEEDED,
                f"grants for {period} would reach {total + amount} fen; the period "
                f"limit is {lim} fen ({max(0, lim - total)} fen left)",
            )
        # ---- accepted
        fund = self.ex.accounts[FUND_ACCOUNT]
        sme = self.ex.accounts[sme_id]
        post_cash(fund, sme, amount)
        self.disbursed.setdefault(sme_id, {})[period] = got + amount
        self.period_disbursed[period] = total + amount
        a.update(status=DISBURSED, disbursed_seq=self.ex.last_seq, disbursed_ts=self.ex.now)
        return [
            Posting(CASH, FUND_ACCOUNT, sme_id, amount, f"sme_grant:{c.application_id}"),
            GrantDisbursed(
                c.application_id,
                sme_id,
                period,
                amount,
                a["project"],
                fund.cash,
                got + amount,
                total + amount,
            ),
        ]

    # ================================================================== state
    def to_state(self) -> dict[str, Any] | None:
        if self.params is None and not self.params_history:
            return None  # never used: the market's state is what it was without the fund
        return copy.deepcopy(
            {
                "params": self.params,
                "params_history": self.params_history,
                "inflows": self.inflows,
                "applications": [[k, v] for k, v in sorted(self.applications.items())],
                "next_application_id": self.next_application_id,
                "disbursed": {
                    s: {str(p): v for p, v in sorted(ps.items())}
                    for s, ps in sorted(self.disbursed.items())
                },
                "period_disbursed": {str(p): v for p, v in sorted(self.period_disbursed.items())},
            }
        )

    def load_state(self, s: dict[str, Any] | None) -> None:
        self._reset()
        if s is None:
            return
        s = copy.deepcopy(s)
        self.params = s["params"]
        self.params_history = s["params_history"]
        self.inflows = s["inflows"]
        self.applications = {int(k): v for k, v in s["applications"]}
        self.next_application_id = s["next_application_id"]
        self.disbursed = {
            sme: {int(p): v for p, v in ps.items()} for sme, ps in s["disbursed"].items()
        }
        self.period_disbursed = {int(p): v for p, v in s["period_disbursed"].items()}

    # ================================================================== read side
    def application_view(self, app_id: int) -> dict[str, Any]:
        a = self.applications[app_id]
        return {
            "application_id": app_id,
            "sme": a["sme"],
            "period": a["period"],
            "amount_fen": a["amount"],
            "project": a["project"],
            "verified_abatement_t": a["verified_abatement_t"],
            "applicant": a["applicant"],
            "status": a["status"],
            "applied_seq": a["applied_seq"],
            "applied_ts": a["applied_ts"],
            "decided_by": a["decided_by"],
            "decided_seq": a["decided_seq"],
            "decided_ts": a["decided_ts"],
            "reason": a["reason"],
            "disbursed_seq": a["disbursed_seq"],
            "disbursed_ts": a["disbursed_ts"],
        }

    def applications_of(
        self, sme: str | None = None, period: int | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            self.application_view(k)
            for k, a in sorted(self.applications.items())
            if (sme is None or a["sme"] == sme)
            and (period is None or a["period"] == period)
            and (status is None or a["status"] == status)
        ]


def _params_view(row: list[Any]) -> dict[str, Any]:
    seq, ts, p, a, sl, pl, op = row
    return {
        "effective_seq": seq,
        "effective_ts": ts,
        "penalty_to_fund_bps": p,
        "auction_to_fund_bps": a,
        "sme_period_limit_fen": sl,
        "period_limit_fen": pl,
        "operator": op,
    }


def fund_module(ex: Exchange) -> SmeFundModule:
    m = ex.modules.get("sme_fund")
    if not isinstance(m, SmeFundModule):
        raise LookupError("the exchange has no SME fund module")
    return m


def fund_statement(ex: Exchange, period: int | None = None) -> dict[str, Any]:
    """The fund's public statement: balance, inflows by source and by period (each one listed),
    grants paid by SME and by period with their projects, the parameters and their history.
    With ``period``, inflows and grants of that period only (the balance is always the whole
    fund's). ``balance_check`` restates the ledger identity balance = inflows - grants."""
    m = fund_module(ex)
    entries = [
        {
            "seq": r[0],
            "ts": r[1],
            "source": r[2],
            "period": r[3],
            "amount_fen": r[4],
            "gross_fen": r[5],
            "share_bps": r[6],
            "ref": r[7],
        }
        for r in m.inflows
        if period is None or r[3] == period
    ]
    by_source = {s: 0 for s in SOURCES}
    by_period: dict[int, dict[str, Any]] = {}
    for e in entries:
        by_source[e["source"]] += e["amount_fen"]
        row = by_period.setdefault(
            e["period"], {"period": e["period"], "total_fen": 0, **{s: 0 for s in SOURCES}}
        )
        row[e["source"]] += e["amount_fen"]
        row["total_fen"] += e["amount_fen"]
    paid = [
        m.application_view(k)
        for k, a in sorted(m.applications.items())
        if a["status"] == DISBURSED and (period is None or a["period"] == period)
    ]
    by_sme: dict[str, dict[str, Any]] = {}
    g_period: dict[int, dict[str, Any]] = {}
    lim = m.params or {}
    for g in paid:
        s = by_sme.setdefault(
            g["sme"],
            {
                "sme": g["sme"],
                "total_fen": 0,
                "grants": 0,
                "verified_abatement_t": 0,
                "by_period": {},
            },
        )
        s["total_fen"] += g["amount_fen"]
        s["grants"] += 1
        s["verified_abatement_t"] += g["verified_abatement_t"]
        s["by_period"][g["period"]] = s["by_period"].get(g["period"], 0) + g["amount_fen"]
        p = g_period.setdefault(
            g["period"],
            {
                "period": g["period"],
                "total_fen": 0,
                "grants": 0,
                "verified_abatement_t": 0,
                "limit_fen": lim.get("period_limit"),
            },
        )
        p["total_fen"] += g["amount_fen"]
        p["grants"] += 1
        p["verified_abatement_t"] += g["verified_abatement_t"]
    for s in by_sme.values():
        s["by_period"] = [
            {"period": k, "amount_fen": v, "limit_fen": lim.get("sme_period_limit")}
            for k, v in sorted(s["by_period"].items())
        ]
    counts = {s: 0 for s in STATUSES}
    for a in m.applications.values():
        if period is None or a["period"] == period:
            counts[a["status"]] += 1
    inflow_total = sum(by_source.values())
    grant_total = sum(g["amount_fen"] for g in paid)
    all_in = sum(r[4] for r in m.inflows)
    all_out = sum(m.period_disbursed.values())
    bal = m.balance()
    return {
        "account": FUND_ACCOUNT,
        "configured": m.configured,
        "period": period,
        "as_of_seq": ex.last_seq,
        "as_of_ts": ex.now,
        "params": _params_view(m.params_history[-1]) if m.params_history else None,
        "params_history": [_params_view(r) for r in m.params_history],
        "balance_fen": bal,
        "inflows": {
            "total_fen": inflow_total,
            "by_source": by_source,
            "by_period": [by_period[k] for k in sorted(by_period)],
            "entries": entries,
        },
        "grants": {
            "total_fen": grant_total,
            "count": len(paid),
            "by_sme": [by_sme[k] for k in sorted(by_sme)],
            "by_period": [g_period[k] for k in sorted(g_period)],
            "paid": paid,
        },
        "applications": counts,
        "balance_check": {
            "inflows_fen": all_in,
            "grants_fen": all_out,
            "balance_fen": bal,
            "ok": bal == all_in - all_out,
        },
    }


def firm_grants(ex: Exchange, firm_id: str, period: int) -> dict[str, Any] | None:
    """A firm's grant applications for a period and what the fund paid it (firm statements);
    None when the exchange has no SME fund module."""
    m = ex.modules.get("sme_fund")
    if not isinstance(m, SmeFundModule):
        return None
    apps = m.applications_of(sme=firm_id, period=period)
    return {
        "applications": apps,
        "received_fen": m.disbursed.get(firm_id, {}).get(period, 0),
        "penalty_to_fund_fen": sum(
            r[4] for r in m.inflows if r[2] == "penalty" and r[3] == period and r[7] == firm_id
        ),
    }
