"""Small shared fixtures for tests that drive the core in process.

``Market`` wraps a :class:`exchange.app.engine.Sequencer` over a fresh ``build_exchange()`` with a
small explicit market (segments ``main``/``sme``/``chain``, one allowance instrument with a
reference price), so a test reads like the trade: ``m.firm("A", cash=...)``,
``m.buy("A", 8500, 10)``. Everything goes through ordinary commands.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from exchange.core.commands import (
    AddInstrument,
    CancelOrder,
    DepositCash,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    RegisterSupplyChain,
)
from exchange.core.events import ExecutionReport, Trade
from exchange.core.exchange import AddSegment
from exchange.app.engine import Sequencer, build_exchange

CEA = "CEA-2026"
REF = 8_500  # 85.00 CNY, the reference price of CEA in the test market
BAND_LO, BAND_HI = 7_650, 9_350  # +-10 %


def streams_settings(examples: int):
    """hypothesis settings for long command streams: no deadline, no too-slow or
    too-much-data health checks (a stream is long on purpose)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Market:
    def __init__(
        self,
        *,
        main_fee_bps: int = 5,
        sme_fee_bps: int = 0,
        chain_fee_bps: int = 2,
        tick: int = 1,
        lot: int = 1,
        sme_lot: int = 1,
        max_order_qty: int = 99_999,
        sme_access: str = "sme_sell_any_buy",
        reference_price: int = REF,
        instruments: tuple = (CEA,),
    ):
        self.seq = Sequencer(build_exchange())
        self.ex = self.seq.ex
        self.events: list = []
        self.run(
            AddSegment(
                name="main",
                tick=tick,
                lot=lot,
                max_order_qty=max_order_qty,
                fee_bps=main_fee_bps,
                access="all",
            ),
            AddSegment(
                name="sme",
                tick=tick,
                lot=sme_lot,
                max_order_qty=20_000,
                fee_bps=sme_fee_bps,
                access=sme_access,
            ),
            AddSegment(
                name="chain",
                tick=tick,
                lot=lot,
                max_order_qty=max_order_qty,
                fee_bps=chain_fee_bps,
                access="members",
            ),
        )
        for sym in instruments:
            self.run(
                AddInstrument(
                    symbol=sym, kind="allowance", vintage=2026, reference_price=reference_price
                )
            )

    # ------------------------------------------------------------------ commands
    def apply(self, cmd) -> list:
        evs = self.seq(cmd)
        self.events.extend(evs)
        return evs

    def run(self, *cmds) -> list:
        out = []
        for c in cmds:
            out.extend(self.apply(c))
        return out

    def firm(
        self,
        firm_id: str,
        *,
        cash: int = 0,
        units: int = 0,
        instrument: str = CEA,
        size_class: str = "large",
        stp: str = "cancel_resting",
    ) -> str:
        self.apply(RegisterFirm(firm_id=firm_id, size_class=size_class, stp_policy=stp))
        if cash:
            self.apply(DepositCash(account=firm_id, amount=cash))
        if units:
            self.apply(IssueUnits(account=firm_id, instrument=instrument, qty=units, ref="test"))
        return firm_id

    def chain(self, chain_id: str, core: str, *suppliers: str) -> None:
        members = ((core, 0),) + tuple((s, 1) for s in suppliers)
        edges = tuple((s, core, 1_000_000 // max(1, len(suppliers))) for s in suppliers)
        self.apply(RegisterSupplyChain(chain_id=chain_id, members=members, edges=edges))

    def place(self, account: str, side: str, price, qty, **kw) -> list:
        kw.setdefault("instrument", CEA)
        return self.apply(PlaceOrder(account=account, side=side, price=price, qty=qty, **kw))

    def buy(self, account: str, price, qty, **kw) -> list:
        return self.place(account, "buy", price, qty, **kw)

    def sell(self, account: str, price, qty, **kw) -> list:
        return self.place(account, "sell", price, qty, **kw)

    def cancel(self, account: str, order_id=None, client_order_id=None) -> list:
        return self.apply(
            CancelOrder(account=account, order_id=order_id, client_order_id=client_order_id)
        )

    # ------------------------------------------------------------------ reading
    def book(self, segment: str = "main", instrument: str = CEA):
        return self.ex.books[(instrument, segment)]

    def cash(self, firm_id: str) -> int:
        return self.ex.accounts[firm_id].cash

    def cash_reserved(self, firm_id: str) -> int:
        return self.ex.accounts[firm_id].cash_reserved

    def units(self, firm_id: str, instrument: str = CEA) -> int:
        h = self.ex.accounts[firm_id].holdings.get(instrument)
        return h.total if h else 0

    def units_reserved(self, firm_id: str, instrument: str = CEA) -> int:
        h = self.ex.accounts[firm_id].holdings.get(instrument)
        return h.reserved if h else 0


def reports(events, account: str | None = None, exec_type: str | None = None) -> list:
    return [
        e
        for e in events
        if isinstance(e, ExecutionReport)
        and (account is None or e.account == account)
        and (exec_type is None or e.exec_type == exec_type)
    ]


def trades(events) -> list:
    return [e for e in events if isinstance(e, Trade)]


def order_id(events) -> int:
    """The id of the order a place command created (its ``new`` report)."""
    for e in events:
        if isinstance(e, ExecutionReport) and e.exec_type == "new":
            return e.order_id
    raise AssertionError(f"no new execution report in {events!r}")


def reject_code(events) -> str | None:
    """The reason code of a rejected command (order reject or CommandRejected), else None."""
    for e in events:
        if isinstance(e, ExecutionReport) and e.exec_type == "rejected":
            return e.reason
        if getattr(e, "TYPE", None) == "command_rejected":
            return e.code
    return None
