"""The order vocabulary (exchange/core/orders.py): StrEnums whose values are the protocol's
strings. A command may carry enum members or plain strings: the journal bytes, the events and
the state hash are the same on either path, and every status the core sets is a plain ``str``."""

from __future__ import annotations

import pytest

from exchange.core import errors as E
from exchange.core import orders
from exchange.core.commands import (
    AddInstrument,
    DepositCash,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
)
from exchange.core.events import ExecutionReport
from exchange.core.exchange import AddSegment, Exchange
from exchange.core.orders import ExecType, OrderStatus, OrderType, Side, StpPolicy, TimeInForce
from exchange.journal.codec import decode_payload, payload_line

import orjson

SYM = "CEA-2026"


def test_the_enum_values_are_the_protocol_strings():
    assert [s.value for s in Side] == ["buy", "sell"]
    assert [t.value for t in TimeInForce] == ["GTC", "DAY", "IOC", "FOK"]
    assert [t.value for t in OrderType] == ["limit", "market"]
    assert [s.value for s in OrderStatus] == [
        "new",
        "partially_filled",
        "filled",
        "canceled",
        "rejected",
        "expired",
    ]
    assert [e.value for e in ExecType] == [
        "new",
        "trade",
        "canceled",
        "replaced",
        "rejected",
        "expired",
    ]
    assert [p.value for p in StpPolicy] == ["cancel_resting", "cancel_incoming", "cancel_both"]
    # the stored forms are exact str objects
    for v in (
        orders.BUY,
        orders.SELL,
        orders.GTC,
        orders.DAY,
        orders.IOC,
        orders.FOK,
        orders.LIMIT,
        orders.MARKET,
    ):
        assert type(v) is str


def test_reject_codes_are_a_str_enum_of_the_module_constants():
    assert E.RejectCode.INSUFFICIENT_FUNDS == E.INSUFFICIENT_FUNDS == "INSUFFICIENT_FUNDS"
    constants = {k: v for k, v in vars(E).items() if k.isupper() and isinstance(v, str)}
    assert {c.name: c.value for c in E.RejectCode} == constants
    assert type(E.UNKNOWN_ORDER) is str  # what events carry stays a plain str


def _commands(enums: bool) -> list:
    side = (lambda s: Side(s)) if enums else (lambda s: s)
    tif = (lambda t: TimeInForce(t)) if enums else (lambda t: t)
    otype = (lambda t: OrderType(t)) if enums else (lambda t: t)
    cmds = [
        AddSegment(name="main", tick=1, lot=1, max_order_qty=500, fee_bps=5),
        AddInstrument(symbol=SYM, kind="allowance", vintage=2026, reference_price=1_000),
    ]
    for firm in ("A", "B"):
        cmds += [
            RegisterFirm(firm_id=firm, stp_policy=StpPolicy.CANCEL_BOTH.value),
            DepositCash(account=firm, amount=10_000_000),
            IssueUnits(account=firm, instrument=SYM, qty=1_000, ref="2026"),
        ]
    cmds += [
        PlaceOrder(
            account="A",
            instrument=SYM,
            side=side("sell"),
            qty=10,
            price=1_000,
            tif=tif("GTC"),
            order_type=otype("limit"),
        ),
        PlaceOrder(
            account="A",
            instrument=SYM,
            side=side("sell"),
            qty=5,
            price=1_010,
            tif=tif("DAY"),
            order_type=otype("limit"),
        ),
        PlaceOrder(
            account="B",
            instrument=SYM,
            side=side("buy"),
            qty=12,
            price=1_010,
            tif=tif("IOC"),
            order_type=otype("limit"),
        ),
        PlaceOrder(
            account="B",
            instrument=SYM,
            side=side("buy"),
            qty=2,
            price=None,
            tif=tif("GTC"),
            order_type=otype("market"),
        ),
        PlaceOrder(
            account="B",
            instrument=SYM,
            side=side("buy"),
            qty=4,
            price=990,
            tif=tif("GTC"),
            order_type=otype("limit"),
        ),
    ]
    return cmds


def _run(enums: bool, accelerate: bool) -> tuple[list, str, list[bytes], Exchange]:
    ex = Exchange(accelerate=accelerate)
    events, lines = [], []
    for seq, cmd in enumerate(_commands(enums), 1):
        lines.append(payload_line(cmd))
        events.extend(ex.apply(cmd, seq, seq * 1_000))
    return events, ex.state_hash(), lines, ex


@pytest.mark.parametrize("accelerate", [False, True])
def test_enum_members_in_commands_change_nothing(accelerate):
    if accelerate and not Exchange(accelerate=True).accelerated:
        pytest.skip("the compiled core is not built")
    ev_s, hash_s, lines_s, _ = _run(False, accelerate)
    ev_e, hash_e, lines_e, ex = _run(True, accelerate)
    assert lines_e == lines_s  # the journal's bytes
    assert ev_e == ev_s and hash_e == hash_s
    assert any(isinstance(e, ExecutionReport) and e.exec_type == "trade" for e in ev_e)
    for o in ex.books[(SYM, "main")].iter_orders():  # statuses are the core's own values
        assert type(o.status) is str
    # and a journal line read back is the plain-string command
    decoded = decode_payload(orjson.loads(lines_e[-1]))
    assert type(decoded.side) is str and decoded.side == Side.BUY


def test_enum_commands_agree_across_the_two_paths():
    if not Exchange(accelerate=True).accelerated:
        pytest.skip("the compiled core is not built")
    ev_py, hash_py, _, _ = _run(True, False)
    ev_c, hash_c, _, _ = _run(True, True)
    assert ev_c == ev_py and hash_c == hash_py
    assert [type(e.side) for e in ev_c if isinstance(e, ExecutionReport)] == [
        type(e.side) for e in ev_py if isinstance(e, ExecutionReport)
    ]
