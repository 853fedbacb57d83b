"""Building a market from configuration, as commands.

The market's rules (segments, instruments, bands) and the demo market (firms, cash,
allocations, supply chains, sub-quotas, resting orders) are turned into ordinary commands, so
they go through the journal like everything else and a replay of the log rebuilds them.
"""

from __future__ import annotations

from decimal import Decimal

from .config import Settings
from ..core.commands import (
    AddInstrument,
    CreateSubQuota,
    DepositCash,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    RegisterSupplyChain,
    SetPriceBand,
)
from ..core.exchange import AddSegment
from ..core.units import PPM, parse_price, ratio_to_ppm
from ..registry.commands import (
    ImportCredits,
    IssueCredits,
    RecordExternalCancellation,
    RegisterPlatform,
    RegisterRemovalProject,
    VerifyRemoval,
)


def market_commands(settings: Settings) -> list:
    """Segments, instruments and price bands."""
    m = settings.market
    cmds: list = []
    for s in m.segments:
        cmds.append(
            AddSegment(
                name=s.name,
                tick=s.tick,
                lot=s.lot,
                max_order_qty=s.max_order_qty,
                fee_bps=s.fee_bps,
                access=s.access,
            )
        )
    for i in m.instruments:
        cmds.append(
            AddInstrument(
                symbol=i.symbol,
                kind=i.kind,
                vintage=i.vintage,
                offset_type=i.offset_type,
                reference_price=i.reference_price_fen,
            )
        )
        cmds.append(SetPriceBand(instrument=i.symbol, band_bps=m.price_band_bps))
    return cmds


def _demo_credits(settings: Settings, firm_id: str, sym: str, qty: int) -> list:
    """A demo firm's credits with serials (a DEMO project per firm, units 1..qty): issued here
    for CCER; carbon-inclusive and removal credits, which this registry issues only from
    batches and verifications, come in as an import from a demo regional registry that
    reports them cancelled there."""
    instr = next(i for i in settings.market.instruments if i.symbol == sym)
    reg = settings.registry
    project = f"{firm_id}-{sym}"
    if instr.offset_type in set(reg.removal_types.values()) | {reg.carbon_inclusive_type}:
        return [
            RecordExternalCancellation(
                registry="DEMO-REGIONAL",
                issuer="DEMO",
                project=project,
                vintage=instr.vintage,
                first=1,
                last=qty,
                reference=f"demo transfer {project}",
            ),
            ImportCredits(
                registry="DEMO-REGIONAL",
                account=firm_id,
                instrument=sym,
                issuer="DEMO",
                project=project,
                first=1,
                last=qty,
            ),
        ]
    return [
        IssueCredits(
            account=firm_id, instrument=sym, issuer="DEMO", project=project, first=1, last=qty
        )
    ]


def demo_commands(settings: Settings, with_orders: bool = True) -> list:
    """The demo market: firms with cash and allowances, supply chains, sub-quotas, orders."""
    d = settings.demo
    cmds: list = []
    for f in d.firms:
        cmds.append(
            RegisterFirm(
                firm_id=f.firm_id,
                name=f.name,
                sector=f.sector,
                product=f.product,
                size_class=f.size_class,
                stp_policy=f.stp_policy,
            )
        )
        if f.cash_fen:
            cmds.append(DepositCash(account=f.firm_id, amount=f.cash_fen))
        for sym, qty in f.holdings.items():
            if qty:
                kind = next(
                    (i.kind for i in settings.market.instruments if i.symbol == sym), "allowance"
                )
                if kind == "offset" and settings.registry is not None:
                    cmds += _demo_credits(settings, f.firm_id, sym, qty)
                    continue
                cmds.append(
                    IssueUnits(
                        account=f.firm_id,
                        instrument=sym,
                        qty=qty,
                        source="allocation" if kind == "allowance" else "offset_project",
                        ref="demo",
                    )
                )
    if settings.registry is not None:
        for p in d.platforms:
            cmds.append(RegisterPlatform(platform_id=p.platform_id, name=p.name))
        for r in d.removal_projects:
            cmds.append(
                RegisterRemovalProject(
                    project_id=r.project_id, removal_type=r.removal_type, owner=r.owner, name=r.name
                )
            )
            if r.vintage is not None:
                cmds.append(
                    VerifyRemoval(
                        project_id=r.project_id,
                        vintage=r.vintage,
                        verifier=d.verifier_id,
                        gross_removal=r.gross_removal,
                        project_emissions=r.project_emissions,
                        baseline_removal=r.baseline_removal,
                    )
                )
    for c in d.chains:
        total = sum(Decimal(e.weight) for e in c.edges) or Decimal(1)
        edges = tuple(
            (e.supplier, e.customer, int(Decimal(e.weight) / total * PPM)) for e in c.edges
        )
        cmds.append(
            RegisterSupplyChain(
                chain_id=c.chain_id, members=tuple((m.firm, m.tier) for m in c.members), edges=edges
            )
        )
    for s in d.sub_quotas:
        cmds.append(
            CreateSubQuota(
                parent=s.parent,
                sme=s.sme,
                instrument=s.instrument,
                qty=s.qty,
                revenue_share_ppm=ratio_to_ppm(s.revenue_share),
                surplus_rule=s.surplus_rule,
                shortfall_rule=s.shortfall_rule,
                chain_id=s.chain_id,
            )
        )
    if with_orders:
        for i, o in enumerate(d.orders):
            cmds.append(
                PlaceOrder(
                    account=o.firm,
                    instrument=o.instrument,
                    segment=o.segment,
                    side=o.side,
                    price=parse_price(o.price),
                    qty=o.qty,
                    client_order_id=f"demo-{i}",
                )
            )
    return cmds


def genesis_commands(settings: Settings, demo: bool = True) -> list:
    """Everything a new market starts with."""
    cmds = market_commands(settings)
    # ---- compliance (exchange/compliance): parameters, periods, verifiers --------------
    from ..compliance.config import compliance_commands

    cmds += compliance_commands(settings.compliance, [settings.demo.verifier_id] if demo else [])
    # ---- end compliance -----------------------------------------------------------------
    # ---- rules (exchange/rules): parameters and benchmarks ------------------------------
    from ..rules.config import rules_commands

    cmds += rules_commands(settings.rules)
    # ---- end rules ----------------------------------------------------------------------
    from ..registry.config import registry_commands

    cmds += registry_commands(settings.registry)
    if demo:
        cmds += demo_commands(settings)
    return cmds
