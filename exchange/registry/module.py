"""The credit registry: one record of serials for every credit unit, against double counting.

A :class:`exchange.core.exchange.Module` of the deterministic core. Once configured
(``configure_registry``), every unit of an offset-kind instrument (CCER, carbon-inclusive
credits, removal credits) has a serial (:mod:`exchange.registry.serials`): units enter only
through the registry's issuance commands, which say which serials they are, and the core's
plain ``issue_units`` refuses them (``SERIALS_REQUIRED``).

Where serials go
----------------
The core moves *quantities*; the registry follows every move of a credit instrument and moves
the same number of serials, oldest first (lowest block number, then lowest unit):

* trades: ``Exchange.trade_listeners`` (seller -> buyer);
* everything else (issuance, transfers, surrenders, retirements, reversals):
  ``Exchange.unit_listeners``, called by ``Exchange.move_units``, the one other way units move.
  A command that moves *particular* serials (a surrender naming them, a reversal of one
  project) puts them in ``_pick`` just before the move.

So for every account and credit instrument, the serials the registry says it holds number
exactly its holding in the core (``check``), and every issued unit is held by one account or
retired exactly once.

Double counting (``DOUBLE_COUNTED``), in its four forms
-------------------------------------------------------
1. issuance of a range that overlaps one already issued (same issuer, project and vintage);
2. a carbon-inclusive batch holding an action id that any platform already claimed;
3. an import of units that the source registry has not reported cancelled (or already
   imported);
4. a second retirement of a unit.
Each message names the conflicting serials.

Removals are issued net of the project's own emissions and of its baseline; a configured share
of every issuance goes to the buffer pool ``@buffer``; a reversal cancels from the pool first
(the same removal type), then from the project's own credits still with its owner; what
neither covers is recorded as the project's uncovered reversal.
"""

from __future__ import annotations

import copy
import re
from datetime import date

from ..core import errors as E
from ..core.accounts import ISSUER, RETIRED, Account
from ..core.commands import RegisterFirm
from ..core.events import Posting
from ..core.exchange import Module
from ..core.units import BPS, MAX_QTY
from . import serials as S
from .commands import (
    ActionBatchDecided,
    ActionBatchSubmitted,
    ApproveActionBatch,
    ConfigureRegistry,
    ConversionFactorSet,
    CreditsIssued,
    CreditsRetired,
    DeclareOffsetClass,
    ExternalCancellationRecorded,
    ImportCredits,
    IssueCredits,
    OffsetClassDeclared,
    PlatformRegistered,
    RecordExternalCancellation,
    RegisterPlatform,
    RegisterRemovalProject,
    RegistryConfigured,
    RejectActionBatch,
    RemovalProjectRegistered,
    RemovalVerified,
    ReportReversal,
    RetireCredits,
    ReversalReported,
    SetConversionFactor,
    SubmitActionBatch,
    VerifyRemoval,
)

BUFFER = "@buffer"
LEGACY = "LEGACY"
REMOVAL_TYPES = ("natural", "engineered")
MAX_UNIT = 10**15  # unit numbers in a serial; no block is larger than MAX_QTY
MAX_RECORD_QTY = 10**9  # units of one recorded action
MAX_FACTOR_G = 10**9  # g CO2e per unit of an action (1,000 t)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# block fields
B_ISSUER, B_PROJECT, B_VINTAGE, B_FIRST, B_LAST, B_INSTRUMENT, B_ORIGIN, B_SEQ = range(8)


def _int(v, lo: int, hi: int, what: str, code: str = E.BAD_PARAMETER) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise E.Reject(code, f"{what} must be a whole number in [{lo}, {hi}], got {v!r}"[:200])
    return v


def _ident(v, what: str) -> str:
    """Registry identifiers (issuers, projects, platforms, action types): printable ASCII
    without ``/`` so serials split one way."""
    if not isinstance(v, str) or not _IDENT.fullmatch(v):
        raise E.Reject(
            E.BAD_PARAMETER,
            f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ : - "
            f"(starting with a letter or digit), got {v!r}"[:200],
        )
    return v


def _text(v, what: str, limit: int = 500) -> str:
    if not isinstance(v, str) or len(v) > limit or not v.isprintable():
        raise E.Reject(
            E.BAD_PARAMETER, f"{what} must be printable text of at most {limit} characters"
        )
    return v


class RegistryModule(Module):
    name = "registry"

    def __init__(self, ex):
        super().__init__(ex)
        self.params: dict | None = None
        # block_no -> [issuer, project, vintage, first, last, instrument, origin, seq]
        self.blocks: list[list] = []
        self.by_key: dict[str, list] = {}  # "issuer/project/vintage" -> [[first, last, block]]
        self.owned: dict[str, dict[str, list]] = {}  # account -> instrument -> pieces
        # block_no -> [[lo, hi, account, beneficiary, reason, period, seq, ts], ...]
        self.retired: dict[int, list] = {}
        # registry -> key -> [[first, last, reference, seq], ...] sorted
        self.cancellations: dict[str, dict[str, list]] = {}
        self.ccer_equivalent: set[str] = set()
        self.projects: dict[str, dict] = {}
        self.buffer: dict[str, list] = {}  # removal type -> [contributed, cancelled]
        self.platforms: dict[str, dict] = {}
        self.table: dict[str, list] = {}  # action type -> [unit, g per unit, version]
        self.table_version = 0
        self.batches: dict[str, dict] = {}
        self.claimed: dict[str, str] = {}  # action id -> batch id (derived from batches)
        self._pick: list | None = None
        self._retire_as: tuple | None = None  # (beneficiary, reason) for the next retirement
        self._events: list = []

    def handlers(self):
        return {
            ConfigureRegistry: self._configure,
            IssueCredits: self._issue_credits,
            RecordExternalCancellation: self._record_cancellation,
            ImportCredits: self._import,
            RetireCredits: self._retire_credits,
            DeclareOffsetClass: self._declare_class,
            RegisterRemovalProject: self._register_project,
            VerifyRemoval: self._verify_removal,
            ReportReversal: self._reversal,
            RegisterPlatform: self._register_platform,
            SetConversionFactor: self._set_factor,
            SubmitActionBatch: self._submit_batch,
            ApproveActionBatch: self._approve_batch,
            RejectActionBatch: self._reject_batch,
        }

    # ================================================================== following the core
    def _listen(self) -> None:
        ex = self.ex
        ex.serialised_kinds = frozenset(("offset",))
        if self._on_trade not in ex.trade_listeners:
            ex.trade_listeners.append(self._on_trade)
        if self._on_move not in ex.unit_listeners:
            ex.unit_listeners.append(self._on_move)

    def _pieces(self, account: str, instrument: str) -> list:
        by = self.owned.get(account)
        if by is None:
            by = self.owned[account] = {}
        p = by.get(instrument)
        if p is None:
            p = by[instrument] = []
        return p

    def _on_trade(self, t) -> None:
        if self.ex.instruments[t.instrument].kind != "offset":
            return
        taken = S.take_oldest(self._pieces(t.seller, t.instrument), t.qty)
        S.add(self._pieces(t.buyer, t.instrument), taken)

    def _on_move(self, src: Account, dst: Account, instrument: str, qty: int, reason: str) -> None:
        if self.ex.instruments[instrument].kind != "offset":
            return
        pick, self._pick = self._pick, None
        if pick is None:
            if src.firm_id == ISSUER:
                raise AssertionError(f"{qty} t of {instrument} issued without serials")
            pick = S.take_oldest(self._pieces(src.firm_id, instrument), qty)
        elif src.firm_id != ISSUER:
            held = self._pieces(src.firm_id, instrument)
            for b, lo, hi in pick:
                S.take_exact(held, b, lo, hi)
        if dst.firm_id == RETIRED:
            self._record_retirement(src.firm_id, instrument, pick, reason)
        else:
            S.add(self._pieces(dst.firm_id, instrument), pick)

    def _record_retirement(self, account: str, instrument: str, pieces: list, reason: str) -> None:
        info, self._retire_as = self._retire_as, None
        if info is not None:
            beneficiary, why = info
        else:
            why = reason
            beneficiary = account
            # compliance: "surrender:PERIOD" or "surrender:PERIOD:for:SME"
            parts = reason.split(":")
            if len(parts) == 4 and parts[2] == "for":
                beneficiary = parts[3]
        period = None
        parts = why.split(":")
        if parts[0] == "surrender" and len(parts) > 1 and parts[1].isdigit():
            period = int(parts[1])
        for b, lo, hi in pieces:
            self.retired.setdefault(b, []).append(
                [lo, hi, account, beneficiary, why, period, self.ex.last_seq, self.ex.now]
            )
            self.retired[b].sort()
            self._events.append(
                CreditsRetired(
                    self.serial_of(b, lo, hi),
                    instrument,
                    account,
                    beneficiary,
                    hi - lo + 1,
                    why,
                    period,
                )
            )

    def drain(self) -> list:
        """The registry events of moves made by another module's command (a surrender)."""
        out, self._events = self._events, []
        return out

    # ================================================================== lookups
    def serial_of(self, b: int, lo: int, hi: int) -> str:
        blk = self.blocks[b]
        return S.fmt(blk[B_ISSUER], blk[B_PROJECT], blk[B_VINTAGE], lo, hi)

    def holdings(self, account: str, instrument: str | None = None) -> dict[str, list[str]]:
        """{instrument: [serial, ...]} an account holds, oldest first."""
        by = self.owned.get(account, {})
        return {
            sym: [self.serial_of(*p) for p in pieces]
            for sym, pieces in sorted(by.items())
            if pieces and (instrument is None or sym == instrument)
        }

    def counts_as_offset(self, offset_type: str | None) -> bool:
        """Carbon-inclusive credits count for compliance only once declared CCER-equivalent."""
        p = self.params
        if p is None or offset_type != p["carbon_inclusive_type"]:
            return True
        return offset_type in self.ccer_equivalent

    def _blocks_of(self, issuer, project, vintage, first, last) -> list:
        return S.overlapping(self.by_key.get(S.key(issuer, project, vintage), []), first, last)

    def lookup(self, serial: str) -> dict:
        """Public: was each unit of ``serial`` issued, and is it retired, for whom, when?"""
        try:
            issuer, project, vintage, first, last = S.parse(serial)
        except ValueError as e:
            raise E.Reject(E.BAD_SERIAL, str(e)) from None
        parts = []
        issued = 0
        for f, la, b in self._blocks_of(issuer, project, vintage, first, last):
            lo, hi = max(f, first), min(la, last)
            issued += hi - lo + 1
            blk = self.blocks[b]
            rets = []
            n_ret = 0
            for r in self.retired.get(b, ()):
                rlo, rhi = max(r[0], lo), min(r[1], hi)
                if rlo <= rhi:
                    n_ret += rhi - rlo + 1
                    rets.append(
                        {
                            "serial": self.serial_of(b, rlo, rhi),
                            "units": rhi - rlo + 1,
                            "beneficiary": r[3],
                            "reason": r[4],
                            "period": r[5],
                            "seq": r[6],
                            "ts": r[7],
                        }
                    )
            parts.append(
                {
                    "serial": self.serial_of(b, lo, hi),
                    "instrument": blk[B_INSTRUMENT],
                    "origin": blk[B_ORIGIN],
                    "units": hi - lo + 1,
                    "retired_units": n_ret,
                    "retirements": rets,
                }
            )
        return {
            "serial": serial,
            "units": last - first + 1,
            "issued_units": issued,
            "retired_units": sum(p["retired_units"] for p in parts),
            "blocks": parts,
        }

    def _retired_in(self, b: int, lo: int, hi: int) -> list:
        return [r for r in self.retired.get(b, ()) if r[0] <= hi and lo <= r[1]]

    # ================================================================== checks
    def _need(self) -> dict:
        if self.params is None:
            raise E.Reject(E.REGISTRY_NOT_CONFIGURED, "the credit registry is not configured")
        return self.params

    def _credit_instrument(self, symbol) -> object:
        instr = self.ex.instrument(symbol if isinstance(symbol, str) else "")
        if instr.kind != "offset":
            raise E.Reject(E.BAD_PARAMETER, f"{instr.symbol} is not a credit (offset) instrument")
        return instr

    def _instrument_for(self, offset_type: str, vintage: int):
        for sym in sorted(self.ex.instruments):
            i = self.ex.instruments[sym]
            if i.kind == "offset" and i.offset_type == offset_type and i.vintage == vintage:
                return i
        raise E.Reject(
            E.UNKNOWN_INSTRUMENT, f"no {offset_type} instrument of vintage {vintage}: add it first"
        )

    def _own_types(self) -> dict[str, str]:
        """Offset types this registry issues itself -> by what."""
        p = self.params
        out = {t: "a verified removal" for t in p["removal_types"].values()}
        out[p["carbon_inclusive_type"]] = "an approved carbon-inclusive batch"
        return out

    def _verifier(self, verifier) -> None:
        comp = self.ex.modules.get("compliance")
        if comp is None or not isinstance(verifier, str) or verifier not in comp.verifiers:
            raise E.Reject(E.NOT_A_VERIFIER, f"{verifier!r} is not a registered verifier")

    def _room(self, instrument: str, qty: int) -> None:
        h = self.ex.accounts[ISSUER].holdings.get(instrument)
        room = MAX_QTY + (h.total if h is not None else 0)
        if qty > room:
            raise E.Reject(
                E.QUANTITY_LIMIT,
                f"issuance of {qty} t: at most {MAX_QTY} t of "
                f"{instrument} outstanding, {max(room, 0)} left",
            )

    def _check_new_block(self, issuer, project, vintage, first, last) -> None:
        clash = self._blocks_of(issuer, project, vintage, first, last)
        if clash:
            names = ", ".join(self.serial_of(b, f, la) for f, la, b in clash[:5])
            raise E.Reject(
                E.DOUBLE_COUNTED,
                f"{S.fmt(issuer, project, vintage, first, last)} overlaps serials "
                f"already issued: {names}",
            )

    # ================================================================== issuance
    def _new_block(self, issuer, project, vintage, first, last, instrument, origin) -> int:
        b = len(self.blocks)
        self.blocks.append(
            [issuer, project, vintage, first, last, instrument, origin, self.ex.last_seq]
        )
        lst = self.by_key.setdefault(S.key(issuer, project, vintage), [])
        lst.append([first, last, b])
        lst.sort()
        return b

    def _deliver(self, b: int, lo: int, hi: int, dst: Account, tag: str) -> list:
        """Issue block ``b``'s units ``lo..hi`` into ``dst`` (core posting and serials)."""
        blk = self.blocks[b]
        qty = hi - lo + 1
        self._pick = [[b, lo, hi]]
        self.ex.move_units(
            self.ex.accounts[ISSUER],
            dst,
            blk[B_INSTRUMENT],
            qty,
            f"{tag}:{blk[B_PROJECT]}",
            "issue",
        )
        return [
            Posting(blk[B_INSTRUMENT], ISSUER, dst.firm_id, qty, f"issue:{tag}"),
            CreditsIssued(
                self.serial_of(b, lo, hi), blk[B_INSTRUMENT], dst.firm_id, qty, blk[B_ORIGIN]
            ),
        ]

    def _configure(self, c: ConfigureRegistry) -> list:
        if self.params is not None:
            raise E.Reject(E.BAD_PARAMETER, "the registry is configured already")
        _ident(c.issuer, "issuer")
        _int(c.buffer_bps, 0, BPS, "buffer_bps")
        _int(c.max_batch_records, 1, 10_000_000, "max_batch_records")
        _ident(c.carbon_inclusive_type, "carbon_inclusive_type")
        types = {}
        for pair in c.removal_types if isinstance(c.removal_types, (tuple, list)) else [None]:
            if (
                not isinstance(pair, (tuple, list))
                or len(pair) != 2
                or pair[0] not in REMOVAL_TYPES
            ):
                raise E.Reject(
                    E.BAD_PARAMETER,
                    f"removal_types are (type, offset_type) pairs, type one of {REMOVAL_TYPES}",
                )
            otype = _ident(pair[1], "removal offset type")
            # one pool per removal type, each of its own instruments: a shared offset type
            # would count one pool's credits in the other's and let a reversal of one type
            # cancel the other's buffer
            if pair[0] in types or otype in types.values() or otype == c.carbon_inclusive_type:
                raise E.Reject(
                    E.BAD_PARAMETER,
                    f"removal_types: {pair[0]} -> {otype} repeats a "
                    "type or an offset type (each removal type has "
                    "its own, not the carbon-inclusive one)",
                )
            types[pair[0]] = otype
        self.params = {
            "issuer": c.issuer,
            "buffer_bps": c.buffer_bps,
            "removal_types": dict(sorted(types.items())),
            "carbon_inclusive_type": c.carbon_inclusive_type,
            "max_batch_records": c.max_batch_records,
        }
        ex = self.ex
        ex.accounts.setdefault(BUFFER, Account(BUFFER, system=True, can_trade=False))
        self.buffer = {t: [0, 0] for t in types}
        self._listen()
        # units already outstanding get serials: one LEGACY block per instrument, in account
        # order, so nothing unserialised is left
        events: list = []
        n = 0
        for sym in sorted(ex.instruments):
            instr = ex.instruments[sym]
            if instr.kind != "offset":
                continue
            holders = [
                (a, ex.accounts[a].holdings[sym].total)
                for a in sorted(ex.accounts)
                if not ex.accounts[a].system
                and sym in ex.accounts[a].holdings
                and ex.accounts[a].holdings[sym].total > 0
            ]
            total = sum(q for _, q in holders)
            if not total:
                continue
            b = self._new_block(LEGACY, sym, instr.vintage, 1, total, sym, "legacy")
            n += 1
            at = 1
            for a, q in holders:
                S.add(self._pieces(a, sym), [[b, at, at + q - 1]])
                events.append(CreditsIssued(self.serial_of(b, at, at + q - 1), sym, a, q, "legacy"))
                at += q
        return [RegistryConfigured(c.issuer, c.buffer_bps, n)] + events

    def _issue_credits(self, c: IssueCredits) -> list:
        self._need()
        acct = self.ex.firm(c.account if isinstance(c.account, str) else "")
        instr = self._credit_instrument(c.instrument)
        own = self._own_types()
        if instr.offset_type in own:
            # removal credits come from a verification (net of the baseline, with the buffer
            # share), carbon-inclusive ones from an approved batch; the same credits issued
            # elsewhere come in by import, against the other registry's cancellation
            raise E.Reject(
                E.BAD_PARAMETER,
                (
                    f"{instr.symbol} ({instr.offset_type}) credits are issued by "
                    f"{own[instr.offset_type]} only; units from another registry come in with "
                    "import_credits"
                ),
            )
        issuer, project = _ident(c.issuer, "issuer"), _ident(c.project, "project")
        if issuer == LEGACY:
            raise E.Reject(E.BAD_PARAMETER, f"issuer {LEGACY} is reserved")
        first, last = _int(c.first, 1, MAX_UNIT, "first"), _int(c.last, 1, MAX_UNIT, "last")
        if last < first:
            raise E.Reject(E.BAD_PARAMETER, "last must be >= first")
        self._room(instr.symbol, last - first + 1)
        self._check_new_block(issuer, project, instr.vintage, first, last)
        # this registry's own serials (removals under its issuer code, batches under a
        # platform's id) are issued by verification and approval only: issued here first, the
        # same units would be issued twice, or the verified ones could not be issued at all
        if issuer == self.params["issuer"] or issuer in self.platforms:
            raise E.Reject(
                E.BAD_PARAMETER,
                f"issuer {issuer} is this registry's own (removals, "
                "carbon-inclusive batches): not issued by hand",
            )
        b = self._new_block(issuer, project, instr.vintage, first, last, instr.symbol, "ccer")
        return self._deliver(b, first, last, acct, "ccer")

    def _record_cancellation(self, c: RecordExternalCancellation) -> list:
        self._need()
        registry = _ident(c.registry, "registry")
        issuer, project = _ident(c.issuer, "issuer"), _ident(c.project, "project")
        vintage = _int(c.vintage, 1, 9999, "vintage")
        first, last = _int(c.first, 1, MAX_UNIT, "first"), _int(c.last, 1, MAX_UNIT, "last")
        if last < first:
            raise E.Reject(E.BAD_PARAMETER, "last must be >= first")
        _text(c.reference, "reference")
        k = S.key(issuer, project, vintage)
        lst = self.cancellations.setdefault(registry, {}).setdefault(k, [])
        lst.append([first, last, c.reference, self.ex.last_seq])
        lst.sort()
        return [
            ExternalCancellationRecorded(
                registry, S.fmt(issuer, project, vintage, first, last), c.reference
            )
        ]

    def _import(self, c: ImportCredits) -> list:
        self._need()
        registry = _ident(c.registry, "registry")
        acct = self.ex.firm(c.account if isinstance(c.account, str) else "")
        instr = self._credit_instrument(c.instrument)
        issuer, project = _ident(c.issuer, "issuer"), _ident(c.project, "project")
        if issuer == LEGACY:  # the units outstanding at configuration, and only those
            raise E.Reject(E.BAD_PARAMETER, f"issuer {LEGACY} is reserved")
        first, last = _int(c.first, 1, MAX_UNIT, "first"), _int(c.last, 1, MAX_UNIT, "last")
        if last < first:
            raise E.Reject(E.BAD_PARAMETER, "last must be >= first")
        serial = S.fmt(issuer, project, instr.vintage, first, last)
        cancelled = self.cancellations.get(registry, {}).get(
            S.key(issuer, project, instr.vintage), []
        )
        if not S.covered(cancelled, first, last):
            raise E.Reject(
                E.DOUBLE_COUNTED,
                f"registry {registry} has not reported {serial} cancelled: units "
                "still live there cannot be imported",
            )
        self._room(instr.symbol, last - first + 1)
        self._check_new_block(issuer, project, instr.vintage, first, last)
        b = self._new_block(issuer, project, instr.vintage, first, last, instr.symbol, "import")
        self.blocks[b].append(registry)
        return self._deliver(b, first, last, acct, f"import:{registry}")

    # ================================================================== retirement
    def pick(self, account: str, instrument: str, serials, qty: int) -> list:
        """The exact pieces ``serials`` name, checked held by ``account`` (for a surrender or
        retirement that names its serials); raises before any change."""
        if not isinstance(serials, (tuple, list)) or not 1 <= len(serials) <= 1000:
            raise E.Reject(E.BAD_SERIAL, "serials is a list of 1 to 1,000 serials")
        held = self.owned.get(account, {}).get(instrument, [])
        out: list = []
        for text in serials:
            try:
                issuer, project, vintage, first, last = S.parse(text)
            except ValueError as e:
                raise E.Reject(E.BAD_SERIAL, str(e)) from None
            blocks = self._blocks_of(issuer, project, vintage, first, last)
            if sum(min(la, last) - max(f, first) + 1 for f, la, _ in blocks) != last - first + 1:
                raise E.Reject(E.UNKNOWN_SERIAL, f"{text} was never issued (whole or in part)")
            for f, la, b in blocks:
                lo, hi = max(f, first), min(la, last)
                if self.blocks[b][B_INSTRUMENT] != instrument:
                    raise E.Reject(
                        E.UNKNOWN_SERIAL,
                        f"{self.serial_of(b, lo, hi)} is {self.blocks[b][B_INSTRUMENT]}"
                        f", not {instrument}",
                    )
                done = self._retired_in(b, lo, hi)
                if done:
                    r = done[0]
                    raise E.Reject(
                        E.DOUBLE_COUNTED,
                        (
                            f"{self.serial_of(b, max(r[0], lo), min(r[1], hi))} is already retired "
                            f"(for {r[3]}, {r[4]}, seq {r[6]}); a unit is retired once"
                        ),
                    )
                if any(p[0] == b and p[1] <= hi and lo <= p[2] for p in out):
                    raise E.Reject(E.DOUBLE_COUNTED, f"{text} is named twice")
                if S.find(held, b, lo, hi) < 0:
                    raise E.Reject(
                        E.SERIAL_NOT_HELD, f"{account} does not hold {self.serial_of(b, lo, hi)}"
                    )
                out.append([b, lo, hi])
        if S.size(out) != qty:
            raise E.Reject(
                E.BAD_QUANTITY, f"the serials name {S.size(out)} t, the quantity is {qty} t"
            )
        return sorted(out)

    def set_pick(self, pieces: list | None) -> None:
        """The serials the next move of units must take (see :meth:`pick`)."""
        self._pick = pieces

    def _retire_credits(self, c: RetireCredits) -> list:
        self._need()
        acct = self.ex.firm(c.account if isinstance(c.account, str) else "")
        instr = self._credit_instrument(c.instrument)
        qty = _int(c.qty, 1, MAX_QTY, "qty", E.BAD_QUANTITY)
        beneficiary = _text(c.beneficiary, "beneficiary", 200) or acct.firm_id
        reason = _text(c.reason, "reason", 200)
        h = acct.holdings.get(instr.symbol)
        have = h.available if h is not None else 0
        pieces = self.pick(acct.firm_id, instr.symbol, c.serials, qty) if c.serials else None
        if qty > have:
            raise E.Reject(
                E.INSUFFICIENT_HOLDINGS, f"retirement of {qty} t {instr.symbol}, {have} t free"
            )
        self._pick = pieces
        self._retire_as = (beneficiary, f"voluntary:{reason}" if reason else "voluntary")
        self.ex.move_units(acct, self.ex.accounts[RETIRED], instr.symbol, qty, "retire", "retire")
        return [Posting(instr.symbol, acct.firm_id, RETIRED, qty, "retire")] + self.drain()

    def _declare_class(self, c: DeclareOffsetClass) -> list:
        p = self._need()
        if c.offset_type != p["carbon_inclusive_type"]:
            raise E.Reject(
                E.BAD_PARAMETER,
                f"only carbon-inclusive credits ({p['carbon_inclusive_type']}) are "
                "declared; other offset types are accepted by the compliance config",
            )
        if type(c.ccer_equivalent) is not bool:
            raise E.Reject(E.BAD_PARAMETER, "ccer_equivalent is true or false")
        if c.ccer_equivalent:
            self.ccer_equivalent.add(c.offset_type)
        else:
            self.ccer_equivalent.discard(c.offset_type)
        return [OffsetClassDeclared(c.offset_type, c.ccer_equivalent)]

    # ================================================================== removals
    def _project(self, project_id) -> dict:
        p = self.projects.get(project_id) if isinstance(project_id, str) else None
        if p is None:
            raise E.Reject(E.UNKNOWN_PROJECT, f"no removal project {project_id!r}")
        return p

    def _register_project(self, c: RegisterRemovalProject) -> list:
        self._need()
        pid = _ident(c.project_id, "project_id")
        if pid in self.projects:
            raise E.Reject(E.BAD_PARAMETER, f"removal project {pid} exists")
        if c.removal_type not in REMOVAL_TYPES:
            raise E.Reject(E.BAD_PARAMETER, f"removal_type must be one of {REMOVAL_TYPES}")
        if c.removal_type not in self.params["removal_types"]:
            raise E.Reject(E.BAD_PARAMETER, f"removal type {c.removal_type} is not configured")
        owner = self.ex.firm(c.owner if isinstance(c.owner, str) else "")
        self.projects[pid] = {
            "removal_type": c.removal_type,
            "owner": owner.firm_id,
            "name": _text(c.name, "name", 200),
            "vintages": {},
            "reversed": 0,
            "from_buffer": 0,
            "from_project": 0,
            "uncovered": 0,
        }
        return [RemovalProjectRegistered(pid, c.removal_type, owner.firm_id)]

    def _verify_removal(self, c: VerifyRemoval) -> list:
        p = self._need()
        proj = self._project(c.project_id)
        self._verifier(c.verifier)
        vintage = _int(c.vintage, 1, 9999, "vintage")
        gross = _int(c.gross_removal, 0, MAX_QTY, "gross_removal")
        own = _int(c.project_emissions, 0, MAX_QTY, "project_emissions")
        base = _int(c.baseline_removal, 0, MAX_QTY, "baseline_removal")
        done = proj["vintages"].get(str(vintage))
        if done is not None:
            raise E.Reject(
                E.DOUBLE_COUNTED,
                (
                    f"{c.project_id}'s {vintage} removal was verified at seq {done['seq']}"
                    + (f" and issued as {done['serial']}" if done["serial"] else "")
                    + "; a vintage is issued once"
                ),
            )
        rtype = proj["removal_type"]
        instr = self._instrument_for(p["removal_types"][rtype], vintage)
        net = max(0, gross - own - base)
        # the buffer share is rounded up: the pool is never short of its share
        buffer = -(-net * p["buffer_bps"] // BPS)
        events: list = []
        serial = ""
        if net:
            self._room(instr.symbol, net)
            self._check_new_block(p["issuer"], c.project_id, vintage, 1, net)
            b = self._new_block(p["issuer"], c.project_id, vintage, 1, net, instr.symbol, "removal")
            serial = self.serial_of(b, 1, net)
            if buffer:
                events += self._deliver(b, 1, buffer, self.ex.accounts[BUFFER], "removal")
            if net > buffer:
                events += self._deliver(
                    b, buffer + 1, net, self.ex.accounts[proj["owner"]], "removal"
                )
            self.buffer[rtype][0] += buffer
        proj["vintages"][str(vintage)] = {
            "seq": self.ex.last_seq,
            "ts": self.ex.now,
            "verifier": c.verifier,
            "gross_removal": gross,
            "project_emissions": own,
            "baseline_removal": base,
            "net_removal": net,
            "buffer": buffer,
            "serial": serial,
            "instrument": instr.symbol,
        }
        return [
            RemovalVerified(c.project_id, vintage, gross, own, base, net, buffer, net - buffer)
        ] + events

    def _reversal(self, c: ReportReversal) -> list:
        p = self._need()
        proj = self._project(c.project_id)
        qty = _int(c.qty, 1, MAX_QTY, "qty", E.BAD_QUANTITY)
        cause = _text(c.cause, "cause", 200)
        if not cause:
            raise E.Reject(E.REASON_REQUIRED, "a reversal states its cause (fire, leakage, ...)")
        _text(c.reporter, "reporter", 100)
        ex = self.ex
        otype = p["removal_types"][proj["removal_type"]]
        syms = sorted(
            (i.vintage, s)
            for s, i in ex.instruments.items()
            if i.kind == "offset" and i.offset_type == otype
        )
        # plan the whole cancellation before moving anything
        plan: list = []  # (account, symbol, pieces)
        left = qty
        buf = ex.accounts[BUFFER]
        for _, sym in syms:
            h = buf.holdings.get(sym)
            q = min(left, h.total if h is not None else 0)
            if q:
                plan.append(
                    (BUFFER, sym, S.take_oldest(list(map(list, self._pieces(BUFFER, sym))), q))
                )
                left -= q
        from_buffer = qty - left
        owner = ex.accounts[proj["owner"]]
        issuer = p["issuer"]

        def mine(b: int) -> bool:
            blk = self.blocks[b]
            return blk[B_PROJECT] == c.project_id and blk[B_ISSUER] == issuer

        for _, sym in syms:
            if not left:
                break
            h = owner.holdings.get(sym)
            free = h.available if h is not None else 0
            own = [list(x) for x in self._pieces(owner.firm_id, sym) if mine(x[0])]
            q = min(left, free, S.size(own))
            if q:
                plan.append((owner.firm_id, sym, S.take_oldest(own, q)))
                left -= q
        from_project = qty - from_buffer - left
        events: list = []
        for acct_id, sym, pieces in plan:
            n = S.size(pieces)
            self._pick = pieces
            self._retire_as = (acct_id, f"reversal:{c.project_id}:{cause}")
            ex.move_units(
                ex.accounts[acct_id], ex.accounts[RETIRED], sym, n, "reversal", "reversal"
            )
            events.append(Posting(sym, acct_id, RETIRED, n, f"reversal:{c.project_id}"))
        self.buffer[proj["removal_type"]][1] += from_buffer
        proj["reversed"] += qty
        proj["from_buffer"] += from_buffer
        proj["from_project"] += from_project
        proj["uncovered"] += left
        return (
            [ReversalReported(c.project_id, qty, cause, from_buffer, from_project, left)]
            + events
            + self.drain()
        )

    # ================================================================== carbon-inclusive
    def _register_platform(self, c: RegisterPlatform) -> list:
        self._need()
        pid = _ident(c.platform_id, "platform_id")
        if pid in self.platforms:
            raise E.Reject(E.BAD_PARAMETER, f"platform {pid} is registered")
        if pid in (self.params["issuer"], LEGACY) or any(
            blk[B_ISSUER] == pid for blk in self.blocks
        ):
            # its batches' serials would share a namespace with credits already issued
            raise E.Reject(
                E.BAD_PARAMETER,
                f"{pid} is an issuer of credits already: a platform id names its own serials",
            )
        name = _text(c.name, "name", 200)
        events: list = []
        acct = self.ex.accounts.get(pid)
        if acct is None:
            events += self.ex._register_firm(
                RegisterFirm(firm_id=pid, name=name, sector="carbon_inclusive")
            )
        elif acct.system:
            raise E.Reject(E.SYSTEM_ACCOUNT, f"{pid!r} is a system account")
        self.platforms[pid] = {"name": name, "batches": 0}
        return events + [PlatformRegistered(pid)]

    def _set_factor(self, c: SetConversionFactor) -> list:
        self._need()
        at = _ident(c.action_type, "action_type")
        unit = _text(c.unit, "unit", 32)
        if not unit:
            raise E.Reject(E.BAD_PARAMETER, "unit is required (e.g. km, kWh, trip)")
        g = _int(c.g_co2e_per_unit, 0, MAX_FACTOR_G, "g_co2e_per_unit")
        self.table_version += 1
        self.table[at] = [unit, g, self.table_version]
        return [ConversionFactorSet(at, unit, g, self.table_version)]

    def _submit_batch(self, c: SubmitActionBatch) -> list:
        p = self._need()
        pid = c.platform_id
        if not isinstance(pid, str) or pid not in self.platforms:
            raise E.Reject(E.UNKNOWN_PLATFORM, f"{pid!r} is not a registered platform"[:200])
        vintage = _int(c.vintage, 1, 9999, "vintage", E.BAD_BATCH)
        records = c.records
        limit = p["max_batch_records"]
        if not isinstance(records, (tuple, list)) or not records:
            raise E.Reject(E.BAD_BATCH, "a batch holds at least one record")
        if len(records) > limit:
            raise E.Reject(
                E.BAD_BATCH,
                f"a batch holds at most {limit:,} records, this one {len(records):,}: split it",
            )
        instr = self._instrument_for(p["carbon_inclusive_type"], vintage)
        table = self.table
        claimed = self.claimed
        prefix = f"{vintage:04d}-"
        ids: list = []
        seen: set = set()
        totals: dict[str, list] = {}
        grams = 0
        for n, r in enumerate(records):
            if not isinstance(r, (tuple, list)) or len(r) != 4:
                raise E.Reject(
                    E.BAD_BATCH, f"record {n}: [action_id, action_type, quantity, date] expected"
                )
            aid, at, q, d = r
            if not isinstance(aid, str) or not _HEX64.fullmatch(aid):
                raise E.Reject(
                    E.BAD_BATCH,
                    f"record {n}: action_id must be 64 lowercase hex "
                    "digits (the platform's HMAC-SHA256 of the action)",
                )
            row = table.get(at) if isinstance(at, str) else None
            if row is None:
                raise E.Reject(
                    E.UNKNOWN_ACTION_TYPE,
                    f"record {n}: action type {at!r} is not in the conversion table; "
                    f"known: {sorted(table)[:20]}"[:300],
                )
            if type(q) is not int or not 1 <= q <= MAX_RECORD_QTY:
                raise E.Reject(
                    E.BAD_BATCH,
                    f"record {n}: quantity must be a whole number in "
                    f"[1, {MAX_RECORD_QTY}] {row[0]}, got {q!r}"[:200],
                )
            if not isinstance(d, str) or len(d) != 10 or not d.startswith(prefix):
                raise E.Reject(
                    E.BAD_BATCH,
                    f"record {n}: date {d!r} is not a YYYY-MM-DD day of the vintage {vintage}"[
                        :200
                    ],
                )
            # ASCII digits only: int() and isdigit() also take other scripts' digits
            md = d[5:7] + d[8:10]
            if d[7] != "-" or not (md.isascii() and md.isdigit()):
                raise E.Reject(E.BAD_BATCH, f"record {n}: {d!r} is not a YYYY-MM-DD date")
            try:
                date(vintage, int(d[5:7]), int(d[8:10]))
            except ValueError:
                raise E.Reject(E.BAD_BATCH, f"record {n}: {d!r} is not a date") from None
            other = claimed.get(aid)
            if other is not None:
                ob = self.batches[other]
                if ob["platform_id"] != pid:
                    # every platform holds the scheme key, so naming the other platform would
                    # tell a prober which app a guessed person used; the operator sees both
                    # batches (GET /registry/batches)
                    raise E.Reject(
                        E.DOUBLE_COUNTED,
                        (
                            f"record {n}: action {aid[:12]}... is already claimed by another "
                            "platform (the registry's operator sees which batch)"
                        ),
                    )
                raise E.Reject(
                    E.DOUBLE_COUNTED,
                    (
                        f"record {n}: action {aid[:12]}... is already claimed in your batch {other}"
                        + (f" (serials {ob['serial']})" if ob["serial"] else " (pending)")
                    ),
                )
            if aid in seen:
                raise E.Reject(
                    E.DOUBLE_COUNTED, f"record {n}: action {aid[:12]}... is in this batch twice"
                )
            seen.add(aid)
            ids.append(aid)
            g = q * row[1]
            grams += g
            t = totals.get(at)
            if t is None:
                t = totals[at] = [0, 0, 0]
            t[0] += 1
            t[1] += q
            t[2] += g
        tonnes = grams // 1_000_000  # never more credits than the reduction
        self._room(instr.symbol, tonnes)
        plat = self.platforms[pid]
        plat["batches"] += 1
        bid = f"{pid}-{plat['batches']:06d}"
        self.batches[bid] = {
            "platform_id": pid,
            "vintage": vintage,
            "instrument": instr.symbol,
            "status": "pending",
            "records": len(ids),
            "totals": dict(sorted(totals.items())),
            "reduction_g": grams,
            "reduction_t": tonnes,
            "table_version": self.table_version,
            "submitted_seq": self.ex.last_seq,
            "submitted_ts": self.ex.now,
            "verifier": None,
            "decided_ts": None,
            "reason": "",
            "serial": "",
            "action_ids": ids,
        }
        for aid in ids:
            claimed[aid] = bid
        return [ActionBatchSubmitted(bid, pid, vintage, len(ids), tonnes, self.table_version)]

    def _batch(self, batch_id) -> dict:
        b = self.batches.get(batch_id) if isinstance(batch_id, str) else None
        if b is None:
            raise E.Reject(E.UNKNOWN_BATCH, f"no batch {batch_id!r}"[:200])
        if b["status"] != "pending":
            raise E.Reject(E.BATCH_NOT_PENDING, f"batch {batch_id} is {b['status']}")
        return b

    def _approve_batch(self, c: ApproveActionBatch) -> list:
        self._need()
        batch = self._batch(c.batch_id)
        self._verifier(c.verifier)
        events: list = []
        t = batch["reduction_t"]
        if t:
            self._room(batch["instrument"], t)
            self._check_new_block(batch["platform_id"], c.batch_id, batch["vintage"], 1, t)
            b = self._new_block(
                batch["platform_id"],
                c.batch_id,
                batch["vintage"],
                1,
                t,
                batch["instrument"],
                "carbon_inclusive",
            )
            batch["serial"] = self.serial_of(b, 1, t)
            events = self._deliver(
                b, 1, t, self.ex.accounts[batch["platform_id"]], "carbon_inclusive"
            )
        batch.update(status="approved", verifier=c.verifier, decided_ts=self.ex.now)
        return [ActionBatchDecided(c.batch_id, "approved", c.verifier, t, batch["serial"])] + events

    def _reject_batch(self, c: RejectActionBatch) -> list:
        self._need()
        batch = self._batch(c.batch_id)
        self._verifier(c.verifier)
        reason = _text(c.reason, "reason", 500)
        if not reason:
            raise E.Reject(E.REASON_REQUIRED, "a rejected batch says why")
        for aid in batch["action_ids"]:
            del self.claimed[aid]
        # the actions are free to be claimed again (corrected), so the batch forgets them
        batch.update(
            status="rejected",
            verifier=c.verifier,
            decided_ts=self.ex.now,
            reason=reason,
            action_ids=[],
        )
        return [ActionBatchDecided(c.batch_id, "rejected", c.verifier, 0, "")]

    def totals_by_action_type(self) -> dict[str, dict]:
        """Approved carbon-inclusive reductions per action type, with the platforms that
        contributed (for publication under the privacy suppression rule)."""
        out: dict[str, dict] = {}
        for bid in sorted(self.batches):
            b = self.batches[bid]
            if b["status"] != "approved":
                continue
            for at, (n, q, g) in b["totals"].items():
                o = out.setdefault(
                    at, {"records": 0, "quantity": 0, "g_co2e": 0, "platforms": set()}
                )
                o["records"] += n
                o["quantity"] += q
                o["g_co2e"] += g
                o["platforms"].add(b["platform_id"])
        return out

    # ================================================================== invariants
    def check(self) -> None:
        """AssertionError unless serials and the core agree (used by tests)."""
        ex = self.ex
        if self.params is None:
            return
        issued: dict[str, int] = {}
        for blk in self.blocks:
            issued[blk[B_INSTRUMENT]] = (
                issued.get(blk[B_INSTRUMENT], 0) + blk[B_LAST] - blk[B_FIRST] + 1
            )
        retired: dict[str, int] = {}
        for b, rs in self.retired.items():
            for r in rs:
                sym = self.blocks[b][B_INSTRUMENT]
                retired[sym] = retired.get(sym, 0) + r[1] - r[0] + 1
        for sym, instr in ex.instruments.items():
            if instr.kind != "offset":
                continue
            held = 0
            for aid, acct in ex.accounts.items():
                h = acct.holdings.get(sym)
                core = h.total if h is not None and aid not in (ISSUER, RETIRED) else 0
                mine = S.size(self.owned.get(aid, {}).get(sym, []))
                assert core == mine, f"{aid} {sym}: core {core} t, serials {mine} t"
                held += mine
            assert held + retired.get(sym, 0) == issued.get(sym, 0), (
                f"{sym}: held {held} + retired {retired.get(sym, 0)} != issued"
            )
        for rtype, (contributed, cancelled) in self.buffer.items():
            otype = self.params["removal_types"][rtype]
            pool = sum(
                h.total
                for s, h in ex.accounts[BUFFER].holdings.items()
                if ex.instruments[s].offset_type == otype
            )
            assert pool == contributed - cancelled >= 0, (
                f"buffer {rtype}: pool {pool} != {contributed} - {cancelled}"
            )

    # ================================================================== state
    def to_state(self):
        if self.params is None:
            return None
        return copy.deepcopy(
            {
                "params": self.params,
                "blocks": self.blocks,
                "owned": {
                    a: {s: p for s, p in sorted(by.items()) if p}
                    for a, by in sorted(self.owned.items())
                },
                "retired": {str(b): rs for b, rs in sorted(self.retired.items())},
                "cancellations": {
                    r: dict(sorted(ks.items())) for r, ks in sorted(self.cancellations.items())
                },
                "ccer_equivalent": sorted(self.ccer_equivalent),
                "projects": dict(sorted(self.projects.items())),
                "buffer": dict(sorted(self.buffer.items())),
                "platforms": dict(sorted(self.platforms.items())),
                "table": dict(sorted(self.table.items())),
                "table_version": self.table_version,
                "batches": dict(sorted(self.batches.items())),
            }
        )

    def load_state(self, s) -> None:
        if s is None:
            return
        s = copy.deepcopy(s)
        self.params = s["params"]
        self.blocks = s["blocks"]
        self.by_key = {}
        for b, blk in enumerate(self.blocks):
            self.by_key.setdefault(S.key(blk[B_ISSUER], blk[B_PROJECT], blk[B_VINTAGE]), []).append(
                [blk[B_FIRST], blk[B_LAST], b]
            )
        for lst in self.by_key.values():
            lst.sort()
        self.owned = s["owned"]
        self.retired = {int(b): rs for b, rs in s["retired"].items()}
        self.cancellations = s["cancellations"]
        self.ccer_equivalent = set(s["ccer_equivalent"])
        self.projects = s["projects"]
        self.buffer = s["buffer"]
        self.platforms = s["platforms"]
        self.table = s["table"]
        self.table_version = s["table_version"]
        self.batches = s["batches"]
        self.claimed = {aid: bid for bid, b in self.batches.items() for aid in b["action_ids"]}
        self._listen()
