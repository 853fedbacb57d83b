"""Commands: the only way state changes.

A command is a small slotted dataclass that carries only its own fields. The *envelope* - the
strictly increasing sequence number ``seq`` the journal (or any sequencer) assigns and ``ts``,
integer nanoseconds since the epoch - travels beside it: ``Exchange.apply(cmd, seq, ts)``
takes both, and the journal stores them in their own columns of the command's record. While a
command is applied the exchange holds its envelope (``ex.last_seq``, ``ex.now``), so the core
never reads a clock and a command object is never written to: the same object can be applied,
journaled or retried under any envelope.

Commands are registered by name with :func:`command`; :func:`encode_command` and
:func:`decode_command` turn them into plain JSON-able dicts for the journal. The rules and
compliance modules register their own commands the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, TypeVar, dataclass_transform

COMMAND_TYPES: dict[str, type[Command]] = {}
_C = TypeVar("_C", bound="Command")


@dataclass_transform(kw_only_default=True)
def command(name: str) -> Callable[[type[_C]], type[_C]]:
    """Class decorator: make ``cls`` a slotted kw-only dataclass command called ``name``."""

    def wrap(cls: type[_C]) -> type[_C]:
        cls = dataclass(slots=True, kw_only=True)(cls)
        if name in COMMAND_TYPES and COMMAND_TYPES[name] is not cls:
            raise RuntimeError(f"command name {name!r} registered twice")
        cls.TYPE = name
        cls._FIELDS = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        COMMAND_TYPES[name] = cls
        return cls

    return wrap


class Command:
    """Base of every command: its fields, and no envelope (``seq`` and ``ts`` are passed
    beside it, to ``Exchange.apply(cmd, seq, ts)``)."""

    __slots__ = ()
    TYPE = "command"
    _FIELDS: tuple[str, ...] = ()


def encode_command(cmd: Command) -> dict[str, Any]:
    """Command -> plain dict (``type`` plus its fields; the envelope is the record's)."""
    d = {"type": cmd.TYPE}
    for f in cmd._FIELDS:
        v = getattr(cmd, f)
        if isinstance(v, tuple):
            v = [list(x) if isinstance(x, tuple) else x for x in v]
        d[f] = v
    return d


def decode_command(d: dict[str, Any]) -> Command:
    """Plain dict -> command. Raises KeyError for an unknown type, TypeError for bad fields."""
    cls: Any = COMMAND_TYPES[d["type"]]  # a dataclass: its fields are its keywords
    kw = {k: v for k, v in d.items() if k != "type"}
    for k, v in kw.items():
        if isinstance(v, list):
            kw[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    cmd: Command = cls(**kw)
    return cmd


# --------------------------------------------------------------------------- orders

# the order vocabulary (Side, TimeInForce, OrderType) lives in orders.py
from .orders import (  # noqa: E402
    BUY as BUY,
    DAY as DAY,
    FOK as FOK,
    GTC as GTC,
    IOC as IOC,
    LIMIT as LIMIT,
    MARKET as MARKET,
    SELL as SELL,
)


@command("place_order")
class PlaceOrder(Command):
    account: str
    instrument: str
    segment: str = "main"
    side: str  # "buy" | "sell"
    qty: int
    price: int | None = None  # fen; for market orders the optional protection price
    order_type: str = LIMIT  # "limit" | "market"
    tif: str = GTC  # GTC | DAY | IOC | FOK
    post_only: bool = False
    client_order_id: str | None = None


@command("cancel_order")
class CancelOrder(Command):
    account: str
    order_id: int | None = None
    client_order_id: str | None = None


@command("amend_order")
class AmendOrder(Command):
    """Change an order's total quantity and/or price. A quantity decrease keeps time priority;
    a price change or quantity increase loses it."""

    account: str
    order_id: int | None = None
    client_order_id: str | None = None
    qty: int | None = None  # new total order quantity (cum_qty + new leaves)
    price: int | None = None


@command("cancel_all")
class CancelAll(Command):
    account: str
    instrument: str | None = None
    segment: str | None = None


# --------------------------------------------------------------------------- operator


@command("register_firm")
class RegisterFirm(Command):
    firm_id: str
    name: str = ""
    sector: str = ""
    product: str = ""
    size_class: str = "large"  # "large" | "sme"
    stp_policy: str = "cancel_resting"  # cancel_resting | cancel_incoming | cancel_both
    can_trade: bool = True


@command("set_firm_trading")
class SetFirmTrading(Command):
    firm_id: str
    can_trade: bool


@command("add_instrument")
class AddInstrument(Command):
    symbol: str
    kind: str = "allowance"  # "allowance" | "offset"
    vintage: int = 0
    offset_type: str | None = None  # e.g. "CCER", "PHCER" for offsets
    reference_price: int = 0  # fen


@command("register_supply_chain")
class RegisterSupplyChain(Command):
    """A supply-chain network: members as (firm, tier) pairs (tier 0 = core firm) and directed
    edges (supplier, customer, weight_ppm). Opens a ``chain:<id>`` book for every allowance."""

    chain_id: str
    members: tuple[tuple[str, int], ...] = ()  # ((firm_id, tier), ...)
    edges: tuple[tuple[str, str, int], ...] = ()  # ((supplier_id, customer_id, weight_ppm), ...)


@command("deposit_cash")
class DepositCash(Command):
    account: str
    amount: int


@command("withdraw_cash")
class WithdrawCash(Command):
    account: str
    amount: int


@command("issue_units")
class IssueUnits(Command):
    """Issue allowances or offset credits into an account as a new lot with provenance."""

    account: str
    instrument: str
    qty: int
    source: str = "allocation"  # allocation | offset_project | ...
    ref: str = ""  # e.g. period "2026" or offset project id


@command("transfer_units")
class TransferUnits(Command):
    from_account: str
    to_account: str
    instrument: str
    qty: int


@command("create_sub_quota")
class CreateSubQuota(Command):
    """Move ``qty`` units from a parent's free holding into an SME's holding as a sub-quota lot.
    Sales of that lot split the seller's net proceeds ``revenue_share_ppm`` to the SME and the
    rest to the parent, in the same settlement."""

    parent: str
    sme: str
    instrument: str
    qty: int
    revenue_share_ppm: int
    surplus_rule: str = "revert"  # "revert" to parent | "bank" with the SME
    shortfall_rule: str = "sme"  # who covers a shortfall: "sme" | "parent"
    chain_id: str | None = None


@command("set_price_band")
class SetPriceBand(Command):
    instrument: str
    band_bps: int | None = None  # half-width, e.g. 1000 = +-10 %
    reference_price: int | None = None


@command("halt")
class Halt(Command):
    """Halt trading: the whole market (no instrument), an instrument, or one book."""

    instrument: str | None = None
    segment: str | None = None


@command("resume")
class Resume(Command):
    instrument: str | None = None
    segment: str | None = None


@command("end_of_day")
class EndOfDay(Command):
    """Close the trading day: expire DAY orders, set each instrument's reference price to the
    day's VWAP (unchanged when nothing traded), reset the day's statistics."""


@command("set_trading_calendar")
class SetTradingCalendar(Command):
    """Trade in sessions: ``sessions`` ``(("09:30", "11:30"), ("13:00", "15:00"))`` local
    times in ``tz``, on ``weekdays`` (0 = Monday) except ``holidays`` (ISO dates). No
    sessions: no calendar, the market trades whenever it is not halted (and the day ends only
    on ``EndOfDay``)."""

    sessions: tuple[tuple[str, str], ...] = ()
    tz: str = "Asia/Shanghai"
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    holidays: tuple[str, ...] = ()


@command("clock")
class Clock(Command):
    """The time is now: the envelope's ``ts`` (``ex.now`` while it applies). With a trading
    calendar, open or close the session that starts or ends by then (a close after the day's
    last session ends the day). The server journals one at each open and close, so a replay
    opens and closes the market at the same commands."""


@command("snapshot_marker")
class SnapshotMarker(Command):
    """Taken in the stream so a snapshot is consistent: the journal snapshots state right after
    applying it. It changes nothing in the core but the sequence number.

    With ``of_seq`` set it is the snapshot's *seal*, journaled once the snapshot is
    serialised: ``state_hash`` is the SHA-256 (hex) of the state at ``of_seq`` as the
    snapshot holds it. The seal is in the hash chain, the snapshot row is not, so a start
    proves a snapshot against its seal (docs/adr/0009-recovery-trust.md)."""

    of_seq: int = 0
    state_hash: str | None = None
