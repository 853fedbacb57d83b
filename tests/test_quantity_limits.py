"""The core's quantity limits: no instrument has more than MAX_QTY tonnes outstanding and no
more than MAX_CASH fen is ever deposited, so every balance, reservation and system account stays
far inside 64 bits (the journal's, the snapshot's and the compiled core's integers). A command
that would cross a limit is rejected with QUANTITY_LIMIT and changes nothing."""

from __future__ import annotations

import hashlib
import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core import errors as E
from exchange.core.accounts import BANK, ISSUER
from exchange.core.commands import (
    CreateSubQuota,
    DepositCash,
    IssueUnits,
    PlaceOrder,
    TransferUnits,
    WithdrawCash,
)
from exchange.core.events import CommandRejected, ExecutionReport
from exchange.core.exchange import AddSegment
from exchange.core.units import MAX_CASH, MAX_QTY
from exchange.server.protocol import wire_balances

from helpers import CEA, Market

INT64_MAX = 2**63 - 1


def business_hash(ex) -> str:
    s = ex.to_state()
    s.pop("last_seq")
    s.pop("now")
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()


def rejected(evs) -> str | None:
    for ev in evs:
        if type(ev) is CommandRejected:
            return ev.code
        if type(ev) is ExecutionReport and ev.exec_type == "rejected":
            return ev.reason
    return None


def check_bounds(ex) -> None:
    ex.check_invariants()
    for a in ex.accounts.values():
        assert abs(a.cash) <= MAX_CASH and 0 <= a.cash_reserved <= MAX_CASH, a.firm_id
        for h in a.holdings.values():
            assert abs(h.total) <= MAX_QTY and 0 <= h.reserved <= MAX_QTY, a.firm_id
        if not a.system:
            orjson.dumps(wire_balances(ex, a.firm_id))  # what GET /firms and balances send
    orjson.dumps(ex.to_state())  # the snapshot


def test_issuing_2_pow_63_twice_is_refused():
    m = Market()
    m.firm("SME1", size_class="sme")
    before = business_hash(m.ex)
    for _ in range(2):
        assert (
            rejected(m.apply(IssueUnits(account="SME1", instrument=CEA, qty=2**63)))
            == E.QUANTITY_LIMIT
        )
    assert business_hash(m.ex) == before
    check_bounds(m.ex)


def test_limits_are_exact():
    m = Market()
    m.firm("A")
    m.firm("B")
    assert rejected(m.apply(IssueUnits(account="A", instrument=CEA, qty=MAX_QTY))) is None
    assert rejected(m.apply(IssueUnits(account="B", instrument=CEA, qty=1))) == E.QUANTITY_LIMIT
    assert rejected(m.apply(DepositCash(account="A", amount=MAX_CASH))) is None
    assert rejected(m.apply(DepositCash(account="B", amount=1))) == E.QUANTITY_LIMIT
    assert rejected(m.apply(WithdrawCash(account="A", amount=5))) is None
    assert rejected(m.apply(DepositCash(account="B", amount=5))) is None
    assert (
        rejected(
            m.apply(
                AddSegment(
                    name="main", tick=1, lot=1, max_order_qty=MAX_QTY + 1, fee_bps=5, access="all"
                )
            )
        )
        == E.QUANTITY_LIMIT
    )
    check_bounds(m.ex)


# ------------------------------------------------------------------ property: at the edge
def _near(limit: int):
    """Amounts that probe a limit: just under, at and over it, and far over it."""
    return st.one_of(
        st.integers(1, 1000),
        st.integers(limit - 1000, limit + 1000),
        st.sampled_from([limit, limit + 1, 2**62, 2**63 - 1, 2**63, 2**64, 10**30]),
    )


firms = st.sampled_from(["A", "B", "C"])
commands = st.one_of(
    st.builds(lambda f, q: IssueUnits(account=f, instrument=CEA, qty=q), firms, _near(MAX_QTY)),
    st.builds(
        lambda f, q: IssueUnits(account=f, instrument=CEA, qty=q), firms, st.integers(1, MAX_QTY)
    ),
    st.builds(lambda f, a: DepositCash(account=f, amount=a), firms, _near(MAX_CASH)),
    st.builds(lambda f, a: DepositCash(account=f, amount=a), firms, st.integers(1, MAX_CASH)),
    st.builds(lambda f, a: WithdrawCash(account=f, amount=a), firms, _near(MAX_CASH)),
    st.builds(
        lambda f, t, q: TransferUnits(from_account=f, to_account=t, instrument=CEA, qty=q),
        firms,
        firms,
        _near(MAX_QTY),
    ),
    st.builds(
        lambda q: CreateSubQuota(
            parent="A", sme="C", instrument=CEA, qty=q, revenue_share_ppm=500_000, chain_id="sc"
        ),
        _near(MAX_QTY),
    ),
    st.builds(
        lambda f, side, p, q: PlaceOrder(account=f, instrument=CEA, side=side, price=p, qty=q),
        firms,
        st.sampled_from(["buy", "sell"]),
        st.sampled_from([8_500, 8_400, 8_600, 10**17, 2**63]),
        st.one_of(st.integers(1, 99_999), _near(MAX_QTY)),
    ),
    st.builds(
        lambda m: AddSegment(name="main", tick=1, lot=1, max_order_qty=m, fee_bps=5, access="all"),
        _near(MAX_QTY),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, min_size=1, max_size=25))
def test_commands_near_the_limits_apply_within_them_or_change_nothing(cmds):
    m = Market(max_order_qty=99_999)
    m.firm("A", cash=10_000_000, units=10_000)
    m.firm("B", cash=10_000_000, units=10_000)
    m.firm("C", size_class="sme")
    m.chain("sc", "A", "C")
    # start at the edge: what is left to issue / deposit is a few units
    m.apply(IssueUnits(account="B", instrument=CEA, qty=MAX_QTY - 20_000 - 5))
    m.apply(DepositCash(account="B", amount=MAX_CASH - 20_000_000 - 5))
    check_bounds(m.ex)
    ex = m.ex
    for cmd in cmds:
        before = business_hash(ex)
        evs = m.apply(cmd)
        code = rejected(evs)
        if code is not None:
            assert business_hash(ex) == before, (cmd, code)
        check_bounds(ex)
        # the limits themselves: never more outstanding or deposited than the maximum
        assert -ex.accounts[ISSUER].holdings[CEA].total <= MAX_QTY
        assert -ex.accounts[BANK].cash <= MAX_CASH


def test_sme_fund_budget_deposits_count_against_the_cash_limit():
    """The fund's budget deposits are cash from @bank like DepositCash: the same limit."""
    from exchange.compliance.fund import ConfigureSmeFund, FundDeposit
    from test_compliance import base_market, firm

    m = base_market()
    m.ok(ConfigureSmeFund(penalty_to_fund_bps=3_000))
    firm(m, "L", cash=1_000)
    room = MAX_CASH + m.ex.accounts[BANK].cash
    m.rejects(FundDeposit(amount=room + 1, period=2026), E.QUANTITY_LIMIT)
    m.ok(FundDeposit(amount=room, period=2026))
    m.rejects(DepositCash(account="L", amount=1), E.QUANTITY_LIMIT)
    m.rejects(FundDeposit(amount=1, period=2026), E.QUANTITY_LIMIT)
    check_bounds(m.ex)


def test_a_penalty_at_an_absurd_price_stays_within_the_cash_limit():
    """A shortfall x an average price x the multiple can pass 64 bits even with every input
    within its limit (reference prices up to MAX_CASH): the penalty is capped at MAX_CASH."""
    from exchange.compliance.commands import (
        ProcessComplianceDeadline,
        SubmitActivityData,
        VerifyEmissions,
    )
    from exchange.core.commands import SetPriceBand
    from test_compliance import DEADLINE, base_market, firm

    m = base_market()
    m.ok(SetPriceBand(instrument="CEA-2026", reference_price=10**17))
    firm(m, "L", cash=1_000)
    m.ok(SubmitActivityData(firm_id="L", period=2026, fuels=(("coal", 1_000),)))
    m.ok(VerifyEmissions(firm_id="L", period=2026, verifier="V1"))
    m.ok(ProcessComplianceDeadline(period=2026), ts=DEADLINE)
    st = m.ex.to_state()
    orjson.dumps(st)  # the snapshot: every int within 64 bits
    check_bounds(m.ex)
