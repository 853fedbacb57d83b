"""Unit tests of the core's order handling: every order type, cancel, amend, cancel-all,
client order ids, self-trade prevention, segment access, every reject reason the core
produces, settlement figures checked by hand, end of day, FIX fields."""

from __future__ import annotations

import pytest

from exchange.core import errors as E
from exchange.core.commands import (
    AmendOrder,
    CancelAll,
    CreateSubQuota,
    DepositCash,
    EndOfDay,
    Halt,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    Resume,
    SetFirmTrading,
    SetPriceBand,
    TransferUnits,
    WithdrawCash,
)
from exchange.core.events import DayEnded, ExecutionReport
from exchange.core.exchange import Exchange

from helpers import BAND_HI, BAND_LO, CEA, REF, Market, order_id, reject_code, reports, trades

BIG = 10**10  # fen: enough cash for anything in these tests


@pytest.fixture
def m():
    mk = Market()
    mk.firm("BUYER", cash=BIG)
    mk.firm("SELLER", units=10_000)
    mk.firm("MAKER", cash=BIG, units=10_000)
    return mk


def check_invariants(m):
    m.ex.check_invariants()


def state_without_clock(m) -> dict:
    """The core's state minus the envelope fields every command moves (seq, clock)."""
    s = m.ex.to_state()
    s.pop("last_seq")
    s.pop("now")
    return s


# =========================================================================== order types


def test_limit_gtc_rests_and_reserves(m):
    evs = m.buy("BUYER", 8_400, 10, client_order_id="b1")
    (er,) = reports(evs)
    assert (er.exec_type, er.order_status, er.cum_qty, er.leaves_qty, er.qty) == (
        "new",
        "new",
        0,
        10,
        10,
    )
    assert m.book().depth() == {"bids": [[8_400, 10]], "asks": []}
    # price x qty + ceil(fee): 84,000 + ceil(42.0) with 5 bps
    assert m.cash_reserved("BUYER") == 84_000 + 42
    m.sell("SELLER", 8_600, 7)
    assert m.units_reserved("SELLER") == 7
    check_invariants(m)


def test_limit_day_expires_at_end_of_day_gtc_survives(m):
    day = order_id(m.buy("BUYER", 8_400, 10, tif="DAY"))
    gtc = order_id(m.buy("BUYER", 8_300, 10, tif="GTC"))
    evs = m.apply(EndOfDay())
    exp = reports(evs, exec_type="expired")
    assert [(e.order_id, e.order_status, e.reason) for e in exp] == [(day, "expired", "END_OF_DAY")]
    (de,) = [e for e in evs if isinstance(e, DayEnded)]
    assert de.expired_orders == 1
    assert set(m.book().orders) == {gtc}
    assert m.cash_reserved("BUYER") == Exchange.buy_reserve(8_300, 10, 5)
    check_invariants(m)


def test_ioc_fills_what_it_can_and_cancels_the_rest(m):
    m.sell("SELLER", 8_500, 4)
    evs = m.buy("BUYER", 8_500, 10, tif="IOC")
    mine = reports(evs, "BUYER")
    assert [e.exec_type for e in mine] == ["new", "trade", "canceled"]
    assert mine[1].last_qty == 4 and mine[1].last_px == 8_500
    assert mine[-1].reason == "UNFILLED_IOC" and mine[-1].cum_qty == 4
    assert not m.book().orders
    assert m.cash_reserved("BUYER") == 0
    check_invariants(m)


def test_ioc_with_nothing_to_match_is_cancelled(m):
    evs = m.buy("BUYER", 8_500, 10, tif="IOC")
    assert [e.exec_type for e in reports(evs)] == ["new", "canceled"]
    assert not m.book().orders and m.cash_reserved("BUYER") == 0


def test_fok_fills_completely_across_levels(m):
    m.sell("SELLER", 8_500, 4)
    m.sell("MAKER", 8_501, 6)
    evs = m.buy("BUYER", 8_501, 10, tif="FOK")
    assert [(t.qty, t.price) for t in trades(evs)] == [(4, 8_500), (6, 8_501)]
    assert reports(evs, "BUYER")[-1].order_status == "filled"
    assert not m.book().orders
    check_invariants(m)


def test_fok_not_fillable_is_rejected_and_changes_nothing(m):
    m.sell("SELLER", 8_500, 4)
    m.sell("MAKER", 8_502, 6)  # beyond the limit
    before = state_without_clock(m)
    evs = m.buy("BUYER", 8_501, 10, tif="FOK")
    assert reject_code(evs) == E.FOK_NOT_FILLED
    assert not trades(evs)
    assert state_without_clock(m) == before
    assert m.book().depth()["asks"] == [[8_500, 4], [8_502, 6]]
    assert m.cash_reserved("BUYER") == 0
    check_invariants(m)


def test_market_buy_protection_is_the_band_top(m):
    m.sell("SELLER", 8_500, 5)
    m.sell("SELLER", BAND_HI, 5)  # the band top itself is allowed
    evs = m.buy("BUYER", None, 20, order_type="market")
    assert [(t.qty, t.price) for t in trades(evs)] == [(5, 8_500), (5, BAND_HI)]
    last = reports(evs, "BUYER")[-1]
    assert last.exec_type == "canceled" and last.reason == "UNFILLED_MARKET"
    assert last.price == BAND_HI and last.cum_qty == 10  # the protection price on the order
    assert not m.book().orders
    assert m.cash_reserved("BUYER") == 0
    check_invariants(m)


def test_market_sell_protection_is_the_band_bottom(m):
    m.buy("BUYER", 8_400, 5)
    m.buy("BUYER", BAND_LO, 5)
    evs = m.sell("SELLER", None, 20, order_type="market")
    assert [(t.qty, t.price) for t in trades(evs)] == [(5, 8_400), (5, BAND_LO)]
    assert reports(evs, "SELLER")[-1].price == BAND_LO
    assert m.units_reserved("SELLER") == 0
    check_invariants(m)


def test_band_change_cancels_resting_orders_outside_the_new_band(m):
    inside = order_id(m.buy("BUYER", 8_400, 5))
    outside = order_id(m.buy("BUYER", 9_300, 5))  # inside [7,650, 9,350] when placed
    ask = order_id(m.sell("SELLER", 9_340, 5))
    evs = m.apply(SetPriceBand(instrument=CEA, reference_price=8_000))  # [7,200, 8,800]
    cx = reports(evs, exec_type="canceled")
    assert sorted((e.order_id, e.reason) for e in cx) == [
        (outside, E.OUTSIDE_PRICE_BAND),
        (ask, E.OUTSIDE_PRICE_BAND),
    ]
    assert set(m.book().orders) == {inside}
    assert m.cash_reserved("BUYER") == Exchange.buy_reserve(8_400, 5, 5)
    assert m.units_reserved("SELLER") == 0
    check_invariants(m)


def test_end_of_day_vwap_band_cancels_orders_outside_it(m):
    low = order_id(m.buy("BUYER", 7_700, 5, tif="GTC"))
    _trade(m, 9_000, 10)  # VWAP 9,000: tomorrow's band is [8,100, 9,900]
    evs = m.apply(EndOfDay())
    assert [(e.order_id, e.reason) for e in reports(evs, exec_type="canceled")] == [
        (low, E.OUTSIDE_PRICE_BAND)
    ]
    assert not m.book().orders and m.cash_reserved("BUYER") == 0
    check_invariants(m)


def _ref(m):
    return m.ex.instruments[CEA].reference_price


def test_limit_locked_up_day_rolls_the_reference_to_the_upper_limit(m):
    m.buy("BUYER", BAND_HI, 10, tif="DAY")  # buyers at the limit, nobody sells in band
    (de,) = [e for e in m.apply(EndOfDay()) if isinstance(e, DayEnded)]
    assert de.limit_locked == ((CEA, "up"),)
    assert _ref(m) == BAND_HI and dict(de.reference_prices)[CEA] == BAND_HI
    # the band walks: the next day's upper limit is 10 % above the old limit
    assert m.ex.instruments[CEA].band() == (BAND_HI - BAND_HI // 10, BAND_HI + BAND_HI // 10)
    check_invariants(m)


def test_limit_locked_down_day_rolls_the_reference_to_the_lower_limit(m):
    m.sell("SELLER", BAND_LO, 10, tif="DAY")
    (de,) = [e for e in m.apply(EndOfDay()) if isinstance(e, DayEnded)]
    assert de.limit_locked == ((CEA, "down"),) and _ref(m) == BAND_LO
    check_invariants(m)


def test_quiet_day_inside_the_band_or_a_traded_day_is_not_locked(m):
    m.buy("BUYER", BAND_HI - 1, 10, tif="DAY")  # one fen inside the limit: not locked
    (de,) = [e for e in m.apply(EndOfDay()) if isinstance(e, DayEnded)]
    assert de.limit_locked == () and _ref(m) == REF
    # a day that traded (even at the limit) keeps the VWAP rule
    m.buy("BUYER", BAND_HI, 20, tif="DAY")
    m.sell("SELLER", BAND_HI, 5, tif="DAY")
    (de,) = [e for e in m.apply(EndOfDay()) if isinstance(e, DayEnded)]
    assert de.limit_locked == () and _ref(m) == BAND_HI
    check_invariants(m)


def test_market_with_explicit_protection_price(m):
    for p in (8_500, 8_510, 8_520):
        m.sell("SELLER", p, 5)
    evs = m.buy("BUYER", 8_510, 100, order_type="market")
    assert [t.price for t in trades(evs)] == [8_500, 8_510]
    assert m.book().depth()["asks"] == [[8_520, 5]]
    # a protection price outside the band is refused
    assert reject_code(m.buy("BUYER", BAND_HI + 1, 1, order_type="market")) == E.OUTSIDE_PRICE_BAND


def test_market_fok_all_or_nothing(m):
    m.sell("SELLER", 8_500, 5)
    assert reject_code(m.buy("BUYER", None, 6, order_type="market", tif="FOK")) == E.FOK_NOT_FILLED
    evs = m.buy("BUYER", None, 5, order_type="market", tif="FOK")
    assert sum(t.qty for t in trades(evs)) == 5


def test_market_order_without_reference_price_needs_protection():
    mk = Market(reference_price=0)
    mk.firm("B", cash=BIG)
    assert reject_code(mk.buy("B", None, 1, order_type="market")) == E.BAD_PRICE


def test_post_only_rests_when_passive(m):
    m.sell("SELLER", 8_510, 5)
    evs = m.buy("BUYER", 8_509, 5, post_only=True)
    assert reports(evs)[0].exec_type == "new" and not trades(evs)
    assert m.book().best_bid() == 8_509


def test_post_only_that_would_cross_is_rejected(m):
    m.sell("SELLER", 8_510, 5)
    assert reject_code(m.buy("BUYER", 8_510, 5, post_only=True)) == E.POST_ONLY_WOULD_CROSS
    assert m.book().best_bid() is None and m.cash_reserved("BUYER") == 0


@pytest.mark.parametrize("kw", [dict(tif="IOC"), dict(tif="FOK"), dict(order_type="market")])
def test_post_only_must_be_a_resting_limit(m, kw):
    assert reject_code(m.buy("BUYER", 8_500, 5, post_only=True, **kw)) == E.BAD_ORDER_TYPE


# =========================================================================== cancel


def test_cancel_by_order_id_and_client_order_id_releases(m):
    a = order_id(m.buy("BUYER", 8_400, 10))
    m.sell("SELLER", 8_600, 10, client_order_id="s-1")
    evs = m.cancel("BUYER", order_id=a)
    (er,) = reports(evs)
    assert (er.exec_type, er.order_status, er.reason) == (
        "canceled",
        "canceled",
        "CANCELED_BY_CLIENT",
    )
    evs = m.cancel("SELLER", client_order_id="s-1")
    assert reports(evs)[0].exec_type == "canceled"
    assert not m.book().orders
    assert m.cash_reserved("BUYER") == 0 and m.units_reserved("SELLER") == 0
    check_invariants(m)


def test_cancel_unknown_filled_or_foreign_order(m):
    a = order_id(m.buy("BUYER", 8_400, 10))
    assert reject_code(m.cancel("SELLER", order_id=a)) == E.UNKNOWN_ORDER  # not theirs
    assert reject_code(m.cancel("BUYER", order_id=999)) == E.UNKNOWN_ORDER
    assert reject_code(m.cancel("BUYER", client_order_id="nope")) == E.UNKNOWN_ORDER
    m.sell("SELLER", 8_400, 10)  # fills it
    assert reject_code(m.cancel("BUYER", order_id=a)) == E.UNKNOWN_ORDER
    assert reject_code(m.cancel("GHOST", order_id=a)) == E.UNKNOWN_ACCOUNT


# =========================================================================== amend


def _first_fill_order(m, price=8_400, qty=1):
    evs = m.sell("SELLER", price, qty)
    return [t.buy_order_id for t in trades(evs)]


def test_amend_quantity_decrease_keeps_priority(m):
    first = order_id(m.buy("BUYER", 8_400, 10))
    m.buy("MAKER", 8_400, 10)  # behind BUYER at the level
    evs = m.apply(AmendOrder(account="BUYER", order_id=first, qty=4))
    (er,) = reports(evs)
    assert (er.exec_type, er.qty, er.leaves_qty, er.cum_qty) == ("replaced", 4, 4, 0)
    assert m.book().level_qty("buy", 8_400) == 14
    assert m.cash_reserved("BUYER") == Exchange.buy_reserve(8_400, 4, 5)
    assert _first_fill_order(m) == [first]
    check_invariants(m)


def test_amend_quantity_increase_loses_priority(m):
    first = order_id(m.buy("BUYER", 8_400, 10))
    second = order_id(m.buy("MAKER", 8_400, 10))
    m.apply(AmendOrder(account="BUYER", order_id=first, qty=12))
    assert m.cash_reserved("BUYER") == Exchange.buy_reserve(8_400, 12, 5)
    assert _first_fill_order(m) == [second]
    check_invariants(m)


def test_amend_price_change_loses_priority(m):
    first = order_id(m.buy("BUYER", 8_400, 10))
    second = order_id(m.buy("MAKER", 8_400, 10))
    m.apply(AmendOrder(account="BUYER", order_id=first, price=8_399))
    m.apply(AmendOrder(account="BUYER", order_id=first, price=8_400))
    assert _first_fill_order(m) == [second]


def test_amend_price_into_the_spread_trades(m):
    m.sell("SELLER", 8_500, 3)
    b = order_id(m.buy("BUYER", 8_400, 10))
    evs = m.apply(AmendOrder(account="BUYER", order_id=b, price=8_500))
    assert [e.exec_type for e in reports(evs, "BUYER")] == ["replaced", "trade"]
    assert [(t.qty, t.price) for t in trades(evs)] == [(3, 8_500)]
    assert m.book().depth() == {"bids": [[8_500, 7]], "asks": []}
    check_invariants(m)


def test_amend_of_partially_filled_order_sets_total_quantity(m):
    b = order_id(m.buy("BUYER", 8_400, 10))
    m.sell("SELLER", 8_400, 4)
    evs = m.apply(AmendOrder(account="BUYER", order_id=b, qty=6))
    (er,) = reports(evs)
    assert (er.qty, er.cum_qty, er.leaves_qty) == (6, 4, 2)
    assert (
        reject_code(m.apply(AmendOrder(account="BUYER", order_id=b, qty=4))) == E.BAD_QUANTITY
    )  # not above what is already filled
    check_invariants(m)


def test_amend_rejects(m):
    b = order_id(m.buy("BUYER", 8_400, 10, client_order_id="x"))
    s = order_id(m.sell("SELLER", 8_600, 10))
    am = lambda **kw: reject_code(m.apply(AmendOrder(**kw)))  # noqa: E731
    assert am(account="BUYER", order_id=b, qty=10, price=8_400) == E.NO_CHANGE
    assert am(account="BUYER", order_id=b) == E.NO_CHANGE
    assert am(account="BUYER", order_id=999, qty=5) == E.UNKNOWN_ORDER
    assert am(account="BUYER", client_order_id="x", price=BAND_HI + 1) == E.OUTSIDE_PRICE_BAND
    assert am(account="BUYER", order_id=b, qty=0) == E.BAD_QUANTITY
    assert am(account="BUYER", order_id=b, qty=100_000) == E.OVER_MAX_ORDER_SIZE
    assert am(account="SELLER", order_id=s, qty=10_001) == E.INSUFFICIENT_HOLDINGS
    m.apply(WithdrawCash(account="BUYER", amount=m.ex.accounts["BUYER"].cash_available))
    assert am(account="BUYER", order_id=b, qty=11) == E.INSUFFICIENT_FUNDS
    m.apply(Halt(instrument=CEA))
    assert am(account="BUYER", order_id=b, qty=5) == E.HALTED
    check_invariants(m)


def test_amend_post_only_into_cross_rejected(m):
    m.sell("SELLER", 8_500, 3)
    b = order_id(m.buy("BUYER", 8_400, 10, post_only=True))
    assert (
        reject_code(m.apply(AmendOrder(account="BUYER", order_id=b, price=8_500)))
        == E.POST_ONLY_WOULD_CROSS
    )
    assert m.book().best_bid() == 8_400


# =========================================================================== cancel-all


def test_cancel_all_for_an_account_with_filters():
    m = Market(instruments=(CEA, "CEA-2025"))
    m.firm("A", cash=BIG)
    m.firm("SME", cash=BIG, size_class="sme")
    m.firm("B", cash=BIG)
    a1 = order_id(m.buy("A", 8_400, 1))
    a2 = order_id(m.buy("A", 8_400, 1, instrument="CEA-2025"))
    a3 = order_id(m.buy("A", 8_400, 1, segment="sme"))
    b1 = order_id(m.buy("B", 8_400, 1))
    evs = m.apply(CancelAll(account="A", instrument=CEA, segment="sme"))
    assert [e.order_id for e in reports(evs)] == [a3]
    evs = m.apply(CancelAll(account="A", instrument=CEA))
    assert [e.order_id for e in reports(evs)] == [a1]
    evs = m.apply(CancelAll(account="A"))
    assert [e.order_id for e in reports(evs)] == [a2]
    assert m.apply(CancelAll(account="A")) == []
    assert set(m.book().orders) == {b1}
    assert m.cash_reserved("A") == 0
    assert reject_code(m.apply(CancelAll(account="NOBODY"))) == E.UNKNOWN_ACCOUNT
    m.ex.check_invariants()


# =========================================================================== client order ids


def test_client_order_id_unique_among_live_orders_only(m):
    m.buy("BUYER", 8_400, 1, client_order_id="c")
    assert reject_code(m.buy("BUYER", 8_300, 1, client_order_id="c")) == E.DUPLICATE_CLIENT_ORDER_ID
    # another account may use the same id
    assert reports(m.sell("SELLER", 8_600, 1, client_order_id="c"))[0].exec_type == "new"
    m.cancel("BUYER", client_order_id="c")
    assert reports(m.buy("BUYER", 8_300, 1, client_order_id="c"))[0].exec_type == "new"
    m.sell("MAKER", 8_300, 1)  # fills it: the id is free again
    assert reports(m.buy("BUYER", 8_200, 1, client_order_id="c"))[0].exec_type == "new"
    # an IOC that never rests frees its id at once
    m.buy("BUYER", 8_000, 1, client_order_id="ioc", tif="IOC")
    assert reports(m.buy("BUYER", 8_000, 1, client_order_id="ioc"))[0].exec_type == "new"


# =========================================================================== STP


def _stp_market(policy):
    m = Market()
    m.firm("F", cash=BIG, units=1_000, stp=policy)
    m.firm("O", units=1_000)
    return m


def test_stp_cancel_resting():
    m = _stp_market("cancel_resting")
    own = order_id(m.sell("F", 8_500, 5))
    other = order_id(m.sell("O", 8_500, 5))
    evs = m.buy("F", 8_500, 5)
    cx = reports(evs, exec_type="canceled")
    assert [(e.order_id, e.reason) for e in cx] == [(own, E.SELF_TRADE_PREVENTED)]
    assert [(t.sell_order_id, t.qty) for t in trades(evs)] == [(other, 5)]
    assert not m.book().orders and m.units_reserved("F") == 0
    m.ex.check_invariants()


@pytest.mark.parametrize("tif", ["IOC", "GTC"])
def test_stp_cancel_incoming(tif):
    m = _stp_market("cancel_incoming")
    other = order_id(m.sell("O", 8_500, 2))
    own = order_id(m.sell("F", 8_500, 5))
    evs = m.buy("F", 8_500, 10, tif=tif)
    assert [(t.sell_order_id, t.qty) for t in trades(evs)] == [(other, 2)]
    cx = reports(evs, "F", exec_type="canceled")
    assert (cx[0].reason, cx[0].cum_qty, cx[0].order_status) == (
        E.SELF_TRADE_PREVENTED,
        2,
        "canceled",
    )
    assert own in m.book().orders  # the resting own order stays
    assert m.book().depth()["asks"] == [[8_500, 5]]
    assert m.cash_reserved("F") == 0 and m.units_reserved("F") == 5


@pytest.mark.parametrize("tif", ["IOC", "GTC"])
def test_stp_cancel_both(tif):
    m = _stp_market("cancel_both")
    own = order_id(m.sell("F", 8_500, 5))
    m.sell("O", 8_500, 5)
    evs = m.buy("F", 8_500, 10, tif=tif)
    cx = reports(evs, exec_type="canceled")
    assert cx[0].order_id == own and cx[0].reason == E.SELF_TRADE_PREVENTED
    assert cx[1].account == "F" and cx[1].reason == E.SELF_TRADE_PREVENTED
    assert not trades(evs)
    assert m.book().depth()["asks"] == [[8_500, 5]]
    assert own not in m.ex.accounts["F"].orders
    assert m.cash_reserved("F") == 0 and m.units_reserved("F") == 0


@pytest.mark.parametrize("tif", ["GTC", "DAY", "IOC"])
@pytest.mark.parametrize("policy", ["cancel_incoming", "cancel_both"])
def test_stp_cancelled_incoming_order_is_final(policy, tif):
    """Regression: the incoming order cancelled by STP used to rest anyway (GTC/DAY) or get a
    second canceled report (IOC)."""
    m = _stp_market(policy)
    m.sell("F", 8_500, 5)
    evs = m.buy("F", 8_500, 10, tif=tif)
    incoming = order_id(evs)
    mine = [e for e in reports(evs, "F") if e.order_id == incoming]
    assert [e.exec_type for e in mine] == ["new", "canceled"]
    assert incoming not in m.book().orders
    assert incoming not in m.ex.accounts["F"].orders
    m.ex.check_invariants()


def test_stp_applies_to_the_firm_whatever_the_orders(m):
    # a firm's buy meeting its own resting sell never trades (default policy cancel_resting)
    m.sell("MAKER", 8_500, 5)
    evs = m.buy("MAKER", 8_500, 5)
    assert not trades(evs)
    assert reports(evs, exec_type="canceled")[0].reason == E.SELF_TRADE_PREVENTED


# =========================================================================== segments


def test_chain_book_only_for_members():
    m = Market()
    m.firm("CORE", cash=BIG)
    m.firm("SUP", units=100, size_class="sme")
    m.firm("OUT", cash=BIG, units=100)
    m.chain("c1", "CORE", "SUP")
    assert ("CEA-2026", "chain:c1") in m.ex.books
    assert reports(m.sell("SUP", 8_500, 10, segment="chain:c1"))[0].exec_type == "new"
    assert reject_code(m.buy("OUT", 8_500, 10, segment="chain:c1")) == E.NOT_PERMITTED_IN_SEGMENT
    assert reject_code(m.sell("OUT", 8_500, 10, segment="chain:c1")) == E.NOT_PERMITTED_IN_SEGMENT
    evs = m.buy("CORE", 8_500, 10, segment="chain:c1")
    (t,) = trades(evs)
    assert (t.segment, t.buyer, t.seller, t.qty) == ("chain:c1", "CORE", "SUP", 10)
    # chain fee: 2 bps of 85,000 = 17 per side
    assert t.buyer_fee == t.seller_fee == 17
    assert reject_code(m.buy("CORE", 8_500, 1, segment="chain:nope")) == E.UNKNOWN_SEGMENT
    m.ex.check_invariants()


def test_sme_board_smes_sell_anyone_buys():
    m = Market()
    m.firm("SME", units=100, cash=BIG, size_class="sme")
    m.firm("BIG", units=100, cash=BIG)
    assert reject_code(m.sell("BIG", 8_500, 10, segment="sme")) == E.NOT_PERMITTED_IN_SEGMENT
    m.sell("SME", 8_500, 10, segment="sme")
    (t,) = trades(m.buy("BIG", 8_500, 10, segment="sme"))
    assert t.buyer_fee == 0 and t.seller_fee == 0  # no fee on the sme board
    assert reports(m.buy("SME", 8_400, 10, segment="sme"))[0].exec_type == "new"


def test_sme_only_board():
    m = Market(sme_access="sme_only")
    m.firm("SME", cash=BIG, size_class="sme")
    m.firm("BIG", cash=BIG)
    assert reject_code(m.buy("BIG", 8_500, 10, segment="sme")) == E.NOT_PERMITTED_IN_SEGMENT
    assert reports(m.buy("SME", 8_500, 10, segment="sme"))[0].exec_type == "new"


def test_sme_lot_comes_from_config():
    m = Market(sme_lot=10)
    m.firm("SME", cash=BIG, size_class="sme")
    assert reject_code(m.buy("SME", 8_500, 15, segment="sme")) == E.BAD_LOT
    assert reports(m.buy("SME", 8_500, 20, segment="sme"))[0].exec_type == "new"
    assert reports(m.buy("SME", 8_500, 15))[0].exec_type == "new"  # main lot is 1


# =========================================================================== reject codes


def test_order_reject_codes(m):
    m.firm("POOR", cash=100)
    m.firm("BLOCKED", cash=BIG)
    m.apply(SetFirmTrading(firm_id="BLOCKED", can_trade=False))
    cases = [
        (dict(account="POOR", side="buy", price=8_500, qty=1), E.INSUFFICIENT_FUNDS),
        (dict(account="BUYER", side="sell", price=8_500, qty=1), E.INSUFFICIENT_HOLDINGS),
        (dict(account="SELLER", side="sell", price=8_500, qty=10_001), E.INSUFFICIENT_HOLDINGS),
        (dict(account="BUYER", side="buy", price=BAND_HI + 1, qty=1), E.OUTSIDE_PRICE_BAND),
        (dict(account="BUYER", side="buy", price=BAND_LO - 1, qty=1), E.OUTSIDE_PRICE_BAND),
        (dict(account="BUYER", side="buy", price=0, qty=1), E.BAD_PRICE),
        (dict(account="BUYER", side="buy", price=-5, qty=1), E.BAD_PRICE),
        (dict(account="BUYER", side="buy", price=None, qty=1), E.BAD_PRICE),
        (dict(account="BUYER", side="buy", price=85.0, qty=1), E.BAD_PRICE),
        (dict(account="BUYER", side="buy", price="8500", qty=1), E.BAD_PRICE),
        (dict(account="BUYER", side="buy", price=8_500, qty=0), E.BAD_QUANTITY),
        (dict(account="BUYER", side="buy", price=8_500, qty=-1), E.BAD_QUANTITY),
        (dict(account="BUYER", side="buy", price=8_500, qty=1.5), E.BAD_QUANTITY),
        (dict(account="BUYER", side="buy", price=8_500, qty=100_000), E.OVER_MAX_ORDER_SIZE),
        (dict(account="BLOCKED", side="buy", price=8_500, qty=1), E.TRADING_NOT_PERMITTED),
        (dict(account="NOBODY", side="buy", price=8_500, qty=1), E.UNKNOWN_ACCOUNT),
        (dict(account="EXCHANGE", side="buy", price=8_500, qty=1), E.UNKNOWN_ACCOUNT),
        (
            dict(account="BUYER", side="buy", price=8_500, qty=1, instrument="XXX"),
            E.UNKNOWN_INSTRUMENT,
        ),
        (dict(account="BUYER", side="buy", price=8_500, qty=1, segment="dark"), E.UNKNOWN_SEGMENT),
        (dict(account="BUYER", side="hold", price=8_500, qty=1), E.BAD_ORDER_TYPE),
        (dict(account="BUYER", side="buy", price=8_500, qty=1, tif="GTD"), E.BAD_ORDER_TYPE),
        (
            dict(account="BUYER", side="buy", price=8_500, qty=1, order_type="stop"),
            E.BAD_ORDER_TYPE,
        ),
    ]
    for kw, code in cases:
        kw.setdefault("instrument", CEA)
        before = state_without_clock(m)
        evs = m.apply(PlaceOrder(**kw))
        assert len(evs) == 1, kw
        (er,) = evs
        assert isinstance(er, ExecutionReport), kw
        assert (er.exec_type, er.order_status, er.reason) == ("rejected", "rejected", code), kw
        assert er.order_id == 0 and er.cum_qty == 0 and er.leaves_qty == 0
        assert state_without_clock(m) == before, f"a reject changed state: {kw}"


def test_bad_tick():
    m = Market(tick=5)
    m.firm("B", cash=BIG)
    assert reject_code(m.buy("B", 8_501, 1)) == E.BAD_TICK
    assert reports(m.buy("B", 8_505, 1))[0].exec_type == "new"
    b = m.book().best_bid()
    assert reject_code(m.apply(AmendOrder(account="B", order_id=1, price=8_502))) == E.BAD_TICK
    assert m.book().best_bid() == b


def test_bad_lot():
    m = Market(lot=10)
    m.firm("B", cash=BIG)
    assert reject_code(m.buy("B", 8_500, 25)) == E.BAD_LOT
    assert reports(m.buy("B", 8_500, 30))[0].exec_type == "new"


@pytest.mark.parametrize(
    "scope", [dict(), dict(instrument=CEA), dict(instrument=CEA, segment="main")]
)
def test_halted_then_resumed(m, scope):
    b = order_id(m.buy("BUYER", 8_400, 10))
    m.apply(Halt(**scope))
    assert reject_code(m.buy("BUYER", 8_400, 1)) == E.HALTED
    # cancels are still accepted while halted
    assert reports(m.cancel("BUYER", order_id=b))[0].exec_type == "canceled"
    m.apply(Resume(**scope))
    assert reports(m.buy("BUYER", 8_400, 1))[0].exec_type == "new"


def test_halt_of_one_book_leaves_the_others():
    m = Market()
    m.firm("B", cash=BIG)
    m.apply(Halt(instrument=CEA, segment="sme"))
    assert reject_code(m.buy("B", 8_400, 1, segment="sme")) == E.HALTED
    assert reports(m.buy("B", 8_400, 1))[0].exec_type == "new"


def test_operator_reject_codes(m):
    cases = [
        (RegisterFirm(firm_id="BUYER"), E.DUPLICATE_ACCOUNT),
        (RegisterFirm(firm_id="@x"), E.DUPLICATE_ACCOUNT),
        (RegisterFirm(firm_id="Z", stp_policy="nope"), E.BAD_PARAMETER),
        (DepositCash(account="BUYER", amount=0), E.BAD_AMOUNT),
        (DepositCash(account="NOBODY", amount=1), E.UNKNOWN_ACCOUNT),
        (DepositCash(account="EXCHANGE", amount=1), E.SYSTEM_ACCOUNT),
        (WithdrawCash(account="SELLER", amount=1), E.INSUFFICIENT_FUNDS),
        (IssueUnits(account="BUYER", instrument="XXX", qty=1), E.UNKNOWN_INSTRUMENT),
        (
            TransferUnits(from_account="BUYER", to_account="SELLER", instrument=CEA, qty=1),
            E.INSUFFICIENT_HOLDINGS,
        ),
        (
            CreateSubQuota(
                parent="MAKER", sme="SELLER", instrument=CEA, qty=1, revenue_share_ppm=1
            ),
            E.NOT_AN_SME,
        ),
        (Halt(instrument="XXX"), E.UNKNOWN_INSTRUMENT),
        (Halt(instrument=CEA, segment="dark"), E.UNKNOWN_SEGMENT),
        (SetPriceBand(instrument=CEA, band_bps=20_000), E.BAD_PARAMETER),
    ]
    for cmd, code in cases:
        before = state_without_clock(m)
        evs = m.apply(cmd)
        assert [getattr(e, "code", None) for e in evs] == [code], cmd
        assert state_without_clock(m) == before, cmd


def test_withdraw_cannot_touch_reserved_cash(m):
    m.firm("W", cash=100_000)
    m.buy("W", 8_500, 10)  # reserves 85,000 + 43
    assert (
        reject_code(m.apply(WithdrawCash(account="W", amount=100_000 - 85_043 + 1)))
        == E.INSUFFICIENT_FUNDS
    )
    m.apply(WithdrawCash(account="W", amount=100_000 - 85_043))
    assert m.cash("W") == 85_043 == m.cash_reserved("W")
    assert (
        reject_code(
            m.apply(
                TransferUnits(from_account="SELLER", to_account="W", instrument=CEA, qty=10_001)
            )
        )
        == E.INSUFFICIENT_HOLDINGS
    )


# =========================================================================== settlement


def test_settlement_fee_floor_and_release_by_hand():
    m = Market(main_fee_bps=5)
    m.firm("B", cash=1_000_000)
    m.firm("S", units=100)
    # buyer reserves 10 x 8,600 = 86,000 + ceil(86,000 x 5 / 10,000 = 43.0) = 86,043
    b = order_id(m.buy("B", 8_600, 10))
    assert m.cash_reserved("B") == 86_043
    # 7 t sold into it at the maker's price 8,600: notional 60,200; fee floor(30.1) = 30
    evs = m.sell("S", 8_590, 7)
    (t,) = trades(evs)
    assert (t.price, t.qty, t.buyer_fee, t.seller_fee) == (8_600, 7, 30, 30)
    assert m.cash("B") == 1_000_000 - 60_200 - 30
    assert m.cash("S") == 60_200 - 30
    assert m.cash("EXCHANGE") == 60
    # what is left reserved is exactly what the 3 t left need: 25,800 + ceil(12.9) = 25,813
    assert m.cash_reserved("B") == 25_813
    assert m.units("B") == 7 and m.units("S") == 93 and m.units_reserved("S") == 0
    er_b = reports(evs, "B")[0]
    assert (
        er_b.last_qty,
        er_b.last_px,
        er_b.cum_qty,
        er_b.leaves_qty,
        er_b.fee,
        er_b.liquidity,
    ) == (7, 8_600, 7, 3, 30, "maker")
    m.cancel("B", order_id=b)
    assert m.cash_reserved("B") == 0
    m.ex.check_invariants()


def test_settlement_price_improvement_frees_the_difference():
    m = Market(main_fee_bps=5)
    m.firm("B", cash=1_000_000)
    m.firm("S", units=100)
    m.sell("S", 8_501, 7)
    # buyer limit 8,600 reserves 60,200 + 31; it pays 7 x 8,501 = 59,507 + floor(29.75) = 29
    evs = m.buy("B", 8_600, 7)
    (t,) = trades(evs)
    assert (t.price, t.buyer_fee) == (8_501, 29)
    assert m.cash("B") == 1_000_000 - 59_507 - 29
    assert m.cash_reserved("B") == 0
    assert m.cash("S") == 59_507 - 29 and m.cash("EXCHANGE") == 58
    m.ex.check_invariants()


def test_fee_never_rounds_up_small_trade():
    m = Market(main_fee_bps=5)
    m.firm("B", cash=100_000)
    m.firm("S", units=10)
    m.sell("S", 7_999, 1)
    (t,) = trades(m.buy("B", 7_999, 1))  # 7,999 x 5 / 10,000 = 3.9995 -> 3
    assert t.buyer_fee == t.seller_fee == 3
    assert sum(a.cash for a in m.ex.accounts.values()) == 0


def _sub_quota_market(share_ppm=700_000, fee_bps=3):
    m = Market(sme_fee_bps=fee_bps)
    m.firm("PARENT", units=1_000)
    m.firm("SME", size_class="sme", cash=BIG)
    m.firm("BUYER", cash=BIG)
    m.firm("OTHER", units=1_000)
    m.chain("sc", "PARENT", "SME")
    m.apply(
        CreateSubQuota(
            parent="PARENT",
            sme="SME",
            instrument=CEA,
            qty=100,
            revenue_share_ppm=share_ppm,
            chain_id="sc",
        )
    )
    return m


def test_sub_quota_proceeds_split_by_hand():
    m = _sub_quota_market()
    sme0, parent0 = m.cash("SME"), m.cash("PARENT")
    m.sell("SME", 8_507, 33, segment="sme")
    evs = m.buy("BUYER", 8_507, 33, segment="sme")
    (t,) = trades(evs)
    # notional 33 x 8,507 = 280,731; fee floor(280,731 x 3 / 10,000 = 84.2193) = 84
    # net to the seller 280,647; SME keeps floor(280,647 x 0.7 = 196,452.9) = 196,452
    # the parent gets the rest: 84,195
    assert (t.buyer_fee, t.seller_fee) == (84, 84)
    assert t.proceeds_split == (("PARENT", 84_195), ("SME", 196_452))
    assert m.cash("SME") - sme0 == 196_452
    assert m.cash("PARENT") - parent0 == 84_195
    assert m.cash("EXCHANGE") == 168
    lot = m.ex.sub_quotas[1]
    assert (lot["sold"], lot["held"], lot["sme_proceeds"], lot["parent_proceeds"]) == (
        33,
        67,
        196_452,
        84_195,
    )
    m.ex.check_invariants()


def test_sub_quota_split_mixed_lots_fifo_by_hand():
    m = _sub_quota_market(share_ppm=500_000, fee_bps=0)
    # the SME also buys 10 t of its own on the main board (a purchase lot after its sub-quota)
    m.sell("OTHER", 8_000, 10)
    m.buy("SME", 8_000, 10)
    # SME sells 105 t: FIFO takes the 100 t sub-quota lot first, then 5 purchased t
    m.sell("SME", 8_001, 105, segment="sme")
    sme0, parent0 = m.cash("SME"), m.cash("PARENT")
    (t,) = trades(m.buy("BUYER", 8_001, 105, segment="sme"))
    # net 105 x 8,001 = 840,105 (no fee); sub-quota portion floor(840,105 x 100 / 105) =
    # 800,100; SME keeps half = 400,050, the parent 400,050; the purchased 5 t are all the SME's
    assert t.proceeds_split == (("PARENT", 400_050), ("SME", 400_050))
    assert m.cash("PARENT") - parent0 == 400_050
    assert m.cash("SME") - sme0 == 840_105 - 400_050
    assert m.units("SME") == 5
    assert m.ex.balances("SME")["holdings"][CEA]["lots"] == {"purchase": 5}
    m.ex.check_invariants()


def test_sub_quota_split_rounding_loses_no_fen():
    m = _sub_quota_market(share_ppm=333_333, fee_bps=7)
    total_before = m.cash("SME") + m.cash("PARENT") + m.cash("BUYER") + m.cash("EXCHANGE")
    for qty, px in ((1, 8_333), (7, 8_641), (13, 7_777)):
        m.sell("SME", px, qty, segment="sme")
        (t,) = trades(m.buy("BUYER", px, qty, segment="sme"))
        notional = qty * px
        fee = notional * 7 // 10_000
        sme_part = (notional - fee) * 333_333 // 1_000_000
        assert t.proceeds_split == (("PARENT", notional - fee - sme_part), ("SME", sme_part))
    total_after = m.cash("SME") + m.cash("PARENT") + m.cash("BUYER") + m.cash("EXCHANGE")
    assert total_before == total_after
    m.ex.check_invariants()


# =========================================================================== end of day


def _trade(m, px, qty):
    m.sell("SELLER", px, qty)
    assert sum(t.qty for t in trades(m.buy("BUYER", px, qty))) == qty


def test_end_of_day_vwap_becomes_reference(m):
    _trade(m, 8_500, 10)
    _trade(m, 8_600, 30)
    evs = m.apply(EndOfDay())
    (de,) = [e for e in evs if isinstance(e, DayEnded)]
    # (85,000 + 258,000) / 40 = 8,575
    assert dict(de.reference_prices)[CEA] == 8_575
    assert m.ex.instruments[CEA].reference_price == 8_575
    assert m.ex.instruments[CEA].band() == (8_575 - 857, 8_575 + 857)
    # the new band applies to new orders
    assert reject_code(m.buy("BUYER", 8_575 - 858, 1)) == E.OUTSIDE_PRICE_BAND
    assert reports(m.buy("BUYER", 8_575 - 857, 1))[0].exec_type == "new"


def test_end_of_day_vwap_rounds_half_up(m):
    _trade(m, 8_500, 1)
    _trade(m, 8_501, 1)  # 17,001 / 2 = 8,500.5 -> 8,501
    m.apply(EndOfDay())
    assert m.ex.instruments[CEA].reference_price == 8_501
    _trade(m, 8_500, 2)
    _trade(m, 8_501, 1)  # 25,501 / 3 = 8,500.33 -> 8,500
    m.apply(EndOfDay())
    assert m.ex.instruments[CEA].reference_price == 8_500


def test_end_of_day_without_trades_keeps_reference(m):
    m.buy("BUYER", 8_400, 1)
    evs = m.apply(EndOfDay())
    assert dict([e for e in evs if isinstance(e, DayEnded)][0].reference_prices)[CEA] == REF
    evs = m.apply(EndOfDay())
    assert [e for e in evs if isinstance(e, DayEnded)][0].day == 2


def test_end_of_day_expires_day_orders_in_every_book():
    m = Market()
    m.firm("SME", cash=BIG, units=100, size_class="sme")
    m.chain("c", "SME")
    ids = [
        order_id(m.buy("SME", 8_400, 1, tif="DAY", segment=s)) for s in ("main", "sme", "chain:c")
    ]
    ids.append(order_id(m.sell("SME", 8_600, 5, tif="DAY")))
    evs = m.apply(EndOfDay())
    assert sorted(e.order_id for e in reports(evs, exec_type="expired")) == sorted(ids)
    assert all(not b.orders for b in m.ex.books.values())
    assert m.cash_reserved("SME") == 0 and m.units_reserved("SME") == 0
    m.ex.check_invariants()


# =========================================================================== FIX fields


def test_fix_fields_through_a_sweep(m):
    for p, q in ((8_500, 3), (8_501, 4), (8_502, 5)):
        m.sell("SELLER", p, q)
    evs = m.buy("BUYER", 8_502, 20)
    mine = reports(evs, "BUYER")
    assert [e.exec_type for e in mine] == ["new", "trade", "trade", "trade"]
    assert [e.order_status for e in mine] == ["new"] + ["partially_filled"] * 3
    assert [e.last_qty for e in mine[1:]] == [3, 4, 5]
    assert [e.last_px for e in mine[1:]] == [8_500, 8_501, 8_502]
    assert [e.cum_qty for e in mine] == [0, 3, 7, 12]
    for e in mine:
        assert e.cum_qty + e.leaves_qty == e.qty == 20
    # every maker report: filled, cum + leaves = qty
    for e in reports(evs, "SELLER"):
        assert (e.order_status, e.leaves_qty, e.cum_qty) == ("filled", 0, e.qty)
    # trade ids are shared by the two sides' reports and the Trade event
    tids = [t.trade_id for t in trades(evs)]
    assert [e.trade_id for e in mine[1:]] == tids
    assert sorted(e.trade_id for e in reports(evs, "SELLER")) == tids


def test_fix_terminal_reports_have_zero_leaves(m):
    """FIX: once an order stops working (canceled, expired) leaves_qty is 0; cum_qty stays."""
    b = order_id(m.buy("BUYER", 8_400, 10))
    m.sell("SELLER", 8_400, 4)
    (cx,) = reports(m.cancel("BUYER", order_id=b))
    assert (cx.order_status, cx.qty, cx.cum_qty, cx.leaves_qty) == ("canceled", 10, 4, 0)
    m.sell("SELLER", 8_450, 3)
    evs = m.buy("BUYER", 8_450, 10, tif="IOC")
    last = reports(evs, "BUYER")[-1]
    assert (last.exec_type, last.cum_qty, last.leaves_qty) == ("canceled", 3, 0)
    m.buy("BUYER", 8_300, 6, tif="DAY")
    m.sell("SELLER", 8_300, 1)
    (ex,) = reports(m.apply(EndOfDay()), exec_type="expired")
    assert (ex.qty, ex.cum_qty, ex.leaves_qty) == (6, 1, 0)


def test_fix_cum_plus_leaves_in_every_report_of_a_busy_session(m):
    import random

    rng = random.Random(7)
    m.firm("X", cash=BIG, units=10_000)
    m.firm("Y", cash=BIG, units=10_000)
    for _ in range(300):
        acct = rng.choice(["X", "Y", "MAKER"])
        side = rng.choice(["buy", "sell"])
        price = rng.randint(8_480, 8_520)
        tif = rng.choice(["GTC", "GTC", "DAY", "IOC"])
        m.place(acct, side, price, rng.randint(1, 30), tif=tif)
    for e in reports(m.events):
        if e.exec_type in ("new", "trade", "replaced"):
            assert e.cum_qty + e.leaves_qty == e.qty, e
        if e.order_status == "filled":
            assert e.leaves_qty == 0 and e.cum_qty == e.qty
        if e.exec_type in ("canceled", "expired"):
            assert e.leaves_qty == 0 and e.cum_qty < e.qty
    m.ex.check_invariants()


# =========================================================================== regressions


def test_market_order_never_trades_outside_band_against_stale_resting_order(m):
    """Regression: a bid left above the band by a reference price change used to trade."""
    m.buy("BUYER", 9_300, 5)  # inside the band [7,650, 9,350] when placed
    m.apply(SetPriceBand(instrument=CEA, reference_price=8_000))  # band now [7,200, 8,800]
    lo, hi = m.ex.instruments[CEA].band()
    evs = m.sell("SELLER", None, 5, order_type="market")
    assert all(lo <= t.price <= hi for t in trades(evs)), [t.price for t in trades(evs)]


def test_amend_refused_when_trading_not_permitted(m):
    """Regression: _amend did not check can_trade, so a blocked firm could re-price and trade."""
    m.sell("SELLER", 8_500, 5)
    b = order_id(m.buy("BUYER", 8_400, 5))
    m.apply(SetFirmTrading(firm_id="BUYER", can_trade=False))
    evs = m.apply(AmendOrder(account="BUYER", order_id=b, price=8_500))
    assert not trades(evs)
    assert reject_code(evs) == E.TRADING_NOT_PERMITTED


def test_cancel_allowed_when_trading_not_permitted(m):
    b = order_id(m.buy("BUYER", 8_400, 5))
    m.apply(SetFirmTrading(firm_id="BUYER", can_trade=False))
    assert reports(m.cancel("BUYER", order_id=b))[0].exec_type == "canceled"
    assert m.cash_reserved("BUYER") == 0


def test_stp_cancel_both_leaves_no_empty_level_and_no_crash():
    m = _stp_market("cancel_both")
    m.firm("Z", units=100)
    m.buy("F", 8_500, 1)
    m.sell("F", 8_500, 1, tif="IOC")  # STP cancels both
    assert m.book().best_bid() is None and m.book().depth()["bids"] == []
    evs = m.sell("Z", 8_500, 1)
    assert reports(evs)[0].exec_type == "new"


def test_no_band_cancels_nothing_and_allows_any_price(m):
    a = order_id(m.buy("BUYER", 8_400, 5))
    b = order_id(m.sell("SELLER", 9_300, 5))
    resting = {a, b}
    for cmd in (
        SetPriceBand(instrument=CEA, band_bps=0),
        SetPriceBand(instrument=CEA, band_bps=1000, reference_price=0),
    ):
        evs = m.apply(cmd)
        assert not reports(evs)  # nothing cancelled
        assert set(m.book().orders) == resting
        assert m.ex.instruments[CEA].band() is None
        resting.add(order_id(m.buy("BUYER", 1, 1)))  # any price passes
    check_invariants(m)


def test_cancel_all_frees_client_order_ids(m):
    m.buy("BUYER", 8_400, 1, client_order_id="a")
    m.buy("BUYER", 8_300, 1, client_order_id="b")
    m.apply(CancelAll(account="BUYER"))
    assert reports(m.buy("BUYER", 8_400, 1, client_order_id="a"))[0].exec_type == "new"
    assert reports(m.buy("BUYER", 8_400, 1, client_order_id="b"))[0].exec_type == "new"


@pytest.mark.parametrize(
    "kw,code",
    [
        (dict(price=8_500, qty=True), E.BAD_QUANTITY),
        (dict(price=True, qty=1), E.BAD_PRICE),
        (dict(price=8_500, qty=10**30), E.OVER_MAX_ORDER_SIZE),
    ],
)
def test_odd_values_are_rejected_cleanly(m, kw, code):
    assert reject_code(m.buy("BUYER", **kw)) == code


def test_amend_respects_the_lot():
    m = Market(sme_lot=10)
    m.firm("S", size_class="sme", cash=BIG)
    b = order_id(m.buy("S", 8_400, 20, segment="sme"))
    assert reject_code(m.apply(AmendOrder(account="S", order_id=b, qty=15))) == E.BAD_LOT
    assert reports(m.apply(AmendOrder(account="S", order_id=b, qty=10)))[0].exec_type == "replaced"


def test_sub_quota_split_two_parents_by_hand():
    """Units from two parents' sub-quota lots in one fill: each lot's portion of the net is
    floor(net x lot units / fill units); the fen the floors leave over stays with the seller."""
    m = Market(sme_fee_bps=3)
    m.firm("P1", units=100)
    m.firm("P2", units=100)
    m.firm("SME", size_class="sme")
    m.firm("BUYER", cash=BIG)
    m.chain("c1", "P1", "SME")
    m.chain("c2", "P2", "SME")
    m.apply(
        CreateSubQuota(
            parent="P1", sme="SME", instrument=CEA, qty=6, revenue_share_ppm=500_000, chain_id="c1"
        )
    )
    m.apply(
        CreateSubQuota(
            parent="P2", sme="SME", instrument=CEA, qty=4, revenue_share_ppm=250_000, chain_id="c2"
        )
    )
    m.sell("SME", 8_003, 7, segment="sme")
    (t,) = trades(m.buy("BUYER", 8_003, 7, segment="sme"))
    # notional 56,021; fee floor(16.8063) = 16; net 56,005
    # lot 1 (6 t): portion floor(56,005 x 6 / 7) = 48,004 -> SME 24,002, P1 24,002
    # lot 2 (1 t): portion floor(56,005 / 7) = 8,000 -> SME 2,000, P2 6,000
    assert t.seller_fee == 16
    assert t.proceeds_split == (("P1", 24_002), ("SME", 24_002), ("P2", 6_000), ("SME", 2_000))
    assert m.cash("P1") == 24_002 and m.cash("P2") == 6_000
    assert m.cash("SME") == 56_005 - 24_002 - 6_000 == 26_003  # 1 fen of floors stays
    lots = m.ex.sub_quotas
    assert (lots[1]["sold"], lots[1]["held"], lots[2]["sold"], lots[2]["held"]) == (6, 0, 1, 3)
    m.ex.check_invariants()
