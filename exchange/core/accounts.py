"""Accounts, holdings made of lots, and the double-entry ledger.

Every movement of cash or units is a posting from one account to another, so for every asset
the balances over all accounts sum to zero. Issuance and deposits are postings *from* system
accounts whose balance goes negative:

* ``@issuer``  — negative of all units ever issued (per instrument);
* ``@bank``    — negative of all cash deposited (withdrawals post back to it);
* ``@retired`` — units surrendered for compliance or cancelled;
* ``EXCHANGE`` — the exchange's own account: it receives the fees.

So "holdings plus retired equal issued" and "cash sums to what was deposited" are the same
statement: each asset's balances sum to zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .book import Order
    from .orders import ClientOrderId, OrderId

ISSUER = "@issuer"
BANK = "@bank"
RETIRED = "@retired"
EXCHANGE_ACCOUNT = "EXCHANGE"
SYSTEM_ACCOUNTS = (ISSUER, BANK, RETIRED, EXCHANGE_ACCOUNT)

CASH = "CNY"

# lot provenance kinds
LOT_ALLOCATION = "allocation"
LOT_PURCHASE = "purchase"
LOT_TRANSFER = "transfer"
LOT_SUB_QUOTA = "sub_quota"
LOT_OFFSET = "offset_project"


class Holding:
    """Units of one instrument in one account. ``lots`` maps a provenance key
    ``"kind:ref"`` to a quantity, in the order the lots were first created (FIFO)."""

    __slots__ = ("total", "reserved", "lots")

    def __init__(self) -> None:
        self.total = 0
        self.reserved = 0
        self.lots: dict[str, int] = {}

    @property
    def available(self) -> int:
        return self.total - self.reserved

    def to_state(self) -> list[Any]:
        return [self.total, self.reserved, [[k, v] for k, v in self.lots.items()]]

    @classmethod
    def from_state(cls, s: list[Any]) -> "Holding":
        h = cls()
        h.total, h.reserved = s[0], s[1]
        h.lots = {k: v for k, v in s[2]}
        return h


class Account:
    """A firm (or a system account). Cash with a reserved part; holdings per instrument."""

    __slots__ = (
        "firm_id",
        "name",
        "sector",
        "product",
        "size_class",
        "stp_policy",
        "can_trade",
        "system",
        "cash",
        "cash_reserved",
        "holdings",
        "chains",
        "orders",
        "coids",
    )

    def __init__(
        self,
        firm_id: str,
        name: str = "",
        sector: str = "",
        product: str = "",
        size_class: str = "large",
        stp_policy: str = "cancel_resting",
        can_trade: bool = True,
        system: bool = False,
    ) -> None:
        self.firm_id = firm_id
        self.name = name
        self.sector = sector
        self.product = product
        self.size_class = size_class
        self.stp_policy = stp_policy
        self.can_trade = can_trade
        self.system = system
        self.cash = 0
        self.cash_reserved = 0
        self.holdings: dict[str, Holding] = {}
        self.chains: dict[str, int] = {}  # chain_id -> tier
        self.orders: dict[OrderId, Order] = {}  # live order_id -> Order
        self.coids: dict[ClientOrderId, OrderId] = {}  # live client_order_id -> order_id

    def holding(self, instrument: str) -> Holding:
        h = self.holdings.get(instrument)
        if h is None:
            h = self.holdings[instrument] = Holding()
        return h

    @property
    def cash_available(self) -> int:
        return self.cash - self.cash_reserved

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sector": self.sector,
            "product": self.product,
            "size_class": self.size_class,
            "stp_policy": self.stp_policy,
            "can_trade": self.can_trade,
            "system": self.system,
            "cash": self.cash,
            "cash_reserved": self.cash_reserved,
            "holdings": {k: h.to_state() for k, h in sorted(self.holdings.items())},
            "chains": dict(sorted(self.chains.items())),
        }

    @classmethod
    def from_state(cls, firm_id: str, s: dict[str, Any]) -> "Account":
        a = cls(
            firm_id,
            s["name"],
            s["sector"],
            s["product"],
            s["size_class"],
            s["stp_policy"],
            s["can_trade"],
            s["system"],
        )
        a.cash = s["cash"]
        a.cash_reserved = s["cash_reserved"]
        a.holdings = {k: Holding.from_state(v) for k, v in s["holdings"].items()}
        a.chains = dict(s["chains"])
        return a


def post_cash(debit: Account, credit: Account, amount: int) -> None:
    """Move ``amount`` fen from ``debit`` to ``credit`` (one double-entry posting)."""
    debit.cash -= amount
    credit.cash += amount


def take_units(
    acct: Account, instrument: str, qty: int, prefer: str | None = None
) -> list[tuple[str, int]]:
    """Remove ``qty`` units from ``acct``'s lots, FIFO (or lots whose key starts with
    ``prefer`` first). Returns ``[(lot_key, qty), ...]``. The caller checked availability."""
    h = acct.holding(instrument)
    h.total -= qty
    if acct.system:
        return [("", qty)]
    lots = h.lots
    if prefer is None:
        # fast path: the oldest lot covers it all
        for key in lots:
            have = lots[key]
            if have > qty:
                lots[key] = have - qty
                return [(key, qty)]
            break
    taken: list[tuple[str, int]] = []
    left = qty
    keys = list(lots)
    if prefer is not None:
        keys.sort(key=lambda k: not k.startswith(prefer))
    for key in keys:
        have = lots[key]
        q = have if have <= left else left
        if q == have:
            del lots[key]
        else:
            lots[key] = have - q
        taken.append((key, q))
        left -= q
        if not left:
            break
    return taken


def put_units(acct: Account, instrument: str, qty: int, lot_key: str) -> None:
    h = acct.holding(instrument)
    h.total += qty
    if not acct.system:
        h.lots[lot_key] = h.lots.get(lot_key, 0) + qty
