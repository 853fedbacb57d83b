"""``python -m exchange demo``: build the demo market in process, trade, print the result."""

from __future__ import annotations

from .config import add_config_argument, config_path, load_settings
from ..core.commands import PlaceOrder
from ..core.events import Trade
from ..core.units import format_price, parse_price
from .engine import Sequencer
from .market import genesis_commands


def render_book(ex, instrument: str, segment: str = "main", levels: int = 5) -> str:
    d = ex.books[(instrument, segment)].depth(levels)
    lines = [
        f"  {instrument} / {segment}",
        f"  {'bid qty':>9} {'bid':>9} | {'ask':<9} {'ask qty':<9}",
    ]
    for i in range(max(len(d["bids"]), len(d["asks"]), 1)):
        b = d["bids"][i] if i < len(d["bids"]) else None
        a = d["asks"][i] if i < len(d["asks"]) else None
        lines.append(
            f"  {b[1] if b else '':>9} {format_price(b[0]) if b else '':>9} | "
            f"{format_price(a[0]) if a else '':<9} {a[1] if a else '':<9}"
        )
    return "\n".join(lines)


def run_demo(config: str | None = None) -> int:
    settings = load_settings(config_path(config))
    seq = Sequencer()
    seq.run(genesis_commands(settings))
    ex = seq.ex
    print(
        f"Demo market: {len(ex.instruments)} instruments, "
        f"{sum(1 for a in ex.accounts.values() if not a.system)} firms, "
        f"{len(ex.books)} books, {len(ex.chains)} supply chains\n"
    )
    print("Resting book before trading:")
    print(render_book(ex, "CEA-2026"))
    trades = []
    for cmd in (
        PlaceOrder(
            account="CEMENT1",
            instrument="CEA-2026",
            side="buy",
            price=parse_price("85.50"),
            qty=1800,
            client_order_id="c-1",
        ),
        PlaceOrder(
            account="STEEL1",
            instrument="CEA-2026",
            side="sell",
            price=parse_price("84.80"),
            qty=1000,
            client_order_id="s-1",
        ),
        PlaceOrder(
            account="POWER1",
            instrument="CEA-2026",
            segment="sme",
            side="buy",
            price=parse_price("85.20"),
            qty=300,
            client_order_id="p-1",
        ),
    ):
        for ev in seq(cmd):
            if isinstance(ev, Trade):
                trades.append(ev)
    print("\nTrades:")
    for t in trades:
        split = (
            "  proceeds split "
            + ", ".join(f"{who} {format_price(amt)}" for who, amt in t.proceeds_split)
            if t.proceeds_split
            else ""
        )
        print(
            f"  #{t.trade_id} {t.instrument}/{t.segment} {t.qty} t @ {format_price(t.price)} "
            f"{t.buyer} <- {t.seller} fees {format_price(t.buyer_fee)}+"
            f"{format_price(t.seller_fee)}{split}"
        )
    print("\nBook after trading:")
    print(render_book(ex, "CEA-2026"))
    print(render_book(ex, "CEA-2026", "sme"))
    ex.check_invariants()
    print(f"\nInvariants hold. state_hash {ex.state_hash()}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="build the demo market in process, trade, print the book")
    add_config_argument(p)
    p.set_defaults(func=lambda a: run_demo(a.config))
