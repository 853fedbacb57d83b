"""The penalty's average price counts the main board only (docs/COMPLIANCE.md, "average
price"); a configuration command written before that rule keeps the old one (every board)
and the state it always had, so an old journal replays to the same state hash."""

from __future__ import annotations

import pytest

from exchange.compliance.commands import ConfigureCompliance
from exchange.compliance.config import ComplianceConfig, compliance_commands
from exchange.core.commands import PlaceOrder
from exchange.core.events import Trade
from exchange.app.engine import build_exchange

from test_compliance import DAY, T2026, base_market, firm


def _market(rule):
    """base_market's compliance configured again, with ``rule`` as penalty_price_segments
    (None: the command as it was before the rule), then three allowance trades: two on the
    main board, one on the SME board."""
    m = base_market(rules=False)
    m.ok(
        ConfigureCompliance(
            carbon_coefficients_ppm=(("coal", 747_600),),
            co2_per_c=(44, 12),
            offset_types=("CCER", "PHCER"),
            penalty_mode="both",
            penalty_fixed_fine=5_000_000,
            penalty_multiple_ppm=3_000_000,
            late_fine=1_000_000,
            penalty_price_segments=rule,
        )
    )
    firm(m, "A", cash=50_000_000)
    firm(m, "B", cash=1_000_000, CEA_2026=2_000)
    firm(m, "S", cash=1_000_000, size_class="sme", CEA_2026=500)
    m.at(T2026 + 10 * DAY)
    for seller, seg, price, qty in (
        ("B", "main", 8_500, 1_000),
        ("B", "main", 8_600, 200),
        ("S", "sme", 7_800, 100),
    ):
        m.ok(
            PlaceOrder(
                account=seller,
                instrument="CEA-2026",
                segment=seg,
                side="sell",
                price=price,
                qty=qty,
            )
        )
        evs = m.ok(
            PlaceOrder(
                account="A", instrument="CEA-2026", segment=seg, side="buy", price=price, qty=qty
            )
        )
        assert [(t.segment, t.qty) for t in evs if isinstance(t, Trade)] == [(seg, qty)]
    return m


def _restored(m):
    """A new core (the same modules as ``m``'s) restored from ``m``'s snapshot."""
    ex2 = build_exchange()
    ex2.modules.pop("rules", None)  # base_market(rules=False) runs without it
    ex2.restore(m.ex.snapshot())
    return ex2


def test_main_board_only_hand_computed():
    m = _market(("main",))
    # main board: 1,000 t x 85.00 + 200 t x 86.00 = 8,500,000 + 1,720,000 = 10,220,000 fen
    # over 1,200 t = 8,516.67 -> half up 8,517 fen (85.17 CNY); the SME trade at 78.00 is out
    assert m.comp.average_price(2026) == 8_517
    assert m.comp.params["penalty_price_segments"] == ["main"]
    # the firms' own trade tallies still count every board (their statements show them all)
    assert m.comp.trades["A"][2026]["CEA-2026"][0] == 1_300


def test_a_configuration_without_the_rule_keeps_every_board_and_its_state():
    m = _market(None)
    # every board: 10,220,000 + 100 x 78.00 = 11,000,000 fen over 1,300 t = 8,461.54 -> 8,462
    assert m.comp.average_price(2026) == 8_462
    # the configuration's state is what it was before the rule existed: no new key
    assert "penalty_price_segments" not in m.comp.params
    # and it survives a snapshot round trip as such
    ex2 = _restored(m)
    assert ex2.to_state()["modules"]["compliance"] == m.ex.to_state()["modules"]["compliance"]
    assert ex2.modules["compliance"].average_price(2026) == 8_462


def test_snapshot_round_trip_keeps_the_main_board_rule():
    m = _market(("main",))
    ex2 = _restored(m)
    assert ex2.state_hash() == m.ex.state_hash()
    # the rule is restored with the state
    comp = ex2.modules["compliance"]
    assert comp._price_segments == frozenset({"main"})
    assert comp.average_price(2026) == 8_517


def test_genesis_from_config_uses_the_main_board_rule():
    cfg = ComplianceConfig(periods=[{"period": 2026, "start": "2026-01-01"}])
    assert compliance_commands(cfg)[0].penalty_price_segments == ("main",)
    from exchange.app.config import load_settings

    assert load_settings(None).compliance.penalty.price_boards == ["main"]
    with pytest.raises(ValueError):
        ComplianceConfig(penalty={"price_boards": []})


@pytest.mark.parametrize("bad", [(), ("",), (5,), "main"])
def test_a_bad_rule_is_rejected(bad):
    m = base_market(rules=False)
    m.rejects(
        ConfigureCompliance(
            carbon_coefficients_ppm=(("coal", 747_600),), penalty_price_segments=bad
        ),
        "BAD_PARAMETER",
    )
