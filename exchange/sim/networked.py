"""``--networked URL``: the same simulation against a running server.

:class:`NetworkedGateway` has the in-process gateway's interface (``send_all(commands) ->
events per command``) but sends every command over the network:

* operator steps (segments, instruments, firms, cash, issuance, supply chains, sub-quotas,
  end of day, rules parameters, benchmarks, allocation runs, splits, MRV submissions,
  surrenders, deadline) go to the operator HTTP API (``/api/v1``); the core events in each
  ``CommandResult`` are decoded back into event objects;
* verification goes to the verifier endpoint with the verifier key;
* every firm gets its own API key (``POST /api-keys``) and its own websocket session through
  :class:`exchange.client.ExchangeClient`; orders are ``place_order`` / ``cancel_all`` on the
  firm's session, sent concurrently per batch. Fills come back on each firm's ``executions``
  channel; the two sides of a fill are joined by ``trade_id`` into a ``Trade`` for the
  simulation's bookkeeping (sub-quota proceeds splits are not visible on that channel).

What the server cannot take over the API is skipped and counted in ``skipped``:
``configure_compliance``, ``configure_compliance_period`` and ``register_verifier`` are
genesis settings of the server's config file (``[compliance]``), so MRV and deadlines work
only for the periods that file configures; rejects with a code in :attr:`tolerated` (an
instrument or firm that already exists, a period the server does not know, a deadline not
reached yet) are reported to the simulation as rejections it may ignore.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from decimal import Decimal

import aiohttp

from ..compliance.commands import (
    ConfigureCompliance,
    ConfigureCompliancePeriod,
    ProcessComplianceDeadline,
    RegisterVerifier,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from ..core.commands import (
    AddInstrument,
    CancelAll,
    CreateSubQuota,
    DepositCash,
    EndOfDay,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    RegisterSupplyChain,
    SetPriceBand,
    TransferUnits,
)
from ..core.events import EVENT_TYPES, CommandRejected, ExecutionReport, Trade
from ..core.exchange import AddSegment
from ..core.units import format_price, parse_price
from ..present import event_fields_from_people, pct, ratio
from ..rules.commands import (
    ClosePeriod,
    PreAllocate,
    SetBenchmark,
    SetInputUse,
    SetOutputHistory,
    SetRulesParams,
    SettleAllocations,
    SettleSubQuotas,
    SplitSubQuotas,
)

GENESIS_ONLY = (ConfigureCompliance, ConfigureCompliancePeriod, RegisterVerifier)
STEPS = {
    PreAllocate: "pre_allocate",
    ClosePeriod: "close_period",
    SettleAllocations: "settle_allocations",
    SettleSubQuotas: "settle_sub_quotas",
}


def _ratio(ppm: int) -> str:
    return str((Decimal(ppm) / 1_000_000).normalize())


def decode_event(d: dict):
    cls = EVENT_TYPES.get(d.get("type"))
    if cls is None:
        return None
    # the server writes events in units for people (docs/PROTOCOL.md "Units"): back to the
    # core's fen, bps, ppm and ns
    kw = event_fields_from_people(d, cls._FIELDS)
    try:
        return cls(**kw)
    except TypeError:
        return None


class NetworkedGateway:
    name = "networked"
    tolerated = frozenset(
        {
            "DUPLICATE_INSTRUMENT",
            "DUPLICATE_ACCOUNT",
            "DUPLICATE_CHAIN",
            "UNKNOWN_PERIOD",
            "PERIOD_CLOSED",
            "DEADLINE_NOT_REACHED",
            "PERIOD_ALREADY_OPEN",
            "NO_OBLIGATION",
            "NOT_FOUND",
        }
    )
    exchange = None

    def __init__(
        self,
        url: str,
        operator_key: str = "operator-demo-key",
        verifier_key: str = "verifier-demo-key",
        verifier_id: str | None = "VERIFIER1",
        timeout: float = 30.0,
    ):
        base = url.rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        self.base = base
        self.api = base + "/api/v1"
        self.ws_url = ("ws" + base[4:] if base.startswith("http") else base) + "/ws"
        self.operator_key = operator_key
        self.verifier_key = verifier_key
        self.verifier_id = verifier_id  # registered verification body (None: the key's label)
        self.timeout = timeout
        self.commands = 0
        self.skipped: Counter = Counter()
        self.rejected: Counter = Counter()
        self.clients: dict = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="sim-networked"
        )
        self._thread.start()
        try:
            self.session = self._run(self._open())
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            raise

    # ------------------------------------------------------------------ plumbing
    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _open(self):
        s = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with s.get(
                self.api + "/state", headers={"Authorization": f"Bearer {self.operator_key}"}
            ) as r:
                if r.status != 200:
                    raise ConnectionError(
                        f"{self.api}/state answered {r.status}: {(await r.text())[:200]}"
                    )
        except BaseException:
            await s.close()
            raise
        return s

    async def _http(
        self, method: str, path: str, body: dict | None, cmd, key: str | None = None
    ) -> list:
        hdr = {"Authorization": f"Bearer {key or self.operator_key}"}
        async with self.session.request(method, self.api + path, json=body or {}, headers=hdr) as r:
            data = await r.json(content_type=None)
        if r.status >= 300 or (isinstance(data, dict) and data.get("ok") is False):
            err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            code = err.get("code", f"HTTP_{r.status}")
            self.rejected[code] += 1
            return [CommandRejected(cmd.TYPE, code, err.get("message", ""))]
        evs = [decode_event(e) for e in (data.get("events") or [])]
        return [e for e in evs if e is not None]

    def send(self, cmd) -> list:
        return self.send_all([cmd])[0]

    def send_all(self, cmds) -> list[list]:
        out = self._run(self._send_all(list(cmds)))
        self.commands += len(cmds)
        return out

    def state_hash(self) -> str:
        async def get():
            async with self.session.get(
                self.api + "/state", headers={"Authorization": f"Bearer {self.operator_key}"}
            ) as r:
                return (await r.json()).get("state_hash", "")

        return self._run(get())

    def close(self) -> None:
        async def shut():
            for c in self.clients.values():
                await c.close()
            await self.session.close()

        try:
            self._run(shut())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ commands
    async def _send_all(self, cmds: list) -> list[list]:
        out: list[list] = [None] * len(cmds)  # type: ignore[list-item]
        orders: list[tuple[int, object]] = []
        for i, c in enumerate(cmds):
            if isinstance(c, (PlaceOrder, CancelAll)):
                orders.append((i, c))
                continue
            if orders:
                await self._orders(orders, out)
                orders = []
            out[i] = await self._one(c)
        if orders:
            await self._orders(orders, out)
        return out

    async def _orders(self, orders, out) -> None:
        async def one(i, c):
            cl = self.clients.get(c.account)
            if cl is None:
                out[i] = [CommandRejected(c.TYPE, "UNKNOWN_ACCOUNT", "no session")]
                return
            try:
                if isinstance(c, CancelAll):
                    await cl.cancel_all(c.instrument, c.segment)
                else:
                    await cl.place_order(
                        c.instrument,
                        c.side,
                        c.qty,
                        format_price(c.price) if c.price else None,
                        segment=c.segment,
                        order_type=c.order_type,
                        tif=c.tif,
                        client_order_id=c.client_order_id,
                    )
                out[i] = []
            except Exception as e:  # ExchangeError: a business reject
                code = getattr(e, "code", type(e).__name__)
                self.rejected[code] += 1
                out[i] = [
                    ExecutionReport(
                        c.account,
                        0,
                        getattr(c, "client_order_id", None),
                        getattr(c, "instrument", ""),
                        getattr(c, "segment", ""),
                        getattr(c, "side", ""),
                        "rejected",
                        "rejected",
                        getattr(c, "price", None),
                        getattr(c, "qty", 0),
                        0,
                        0,
                        0,
                        0,
                        code,
                    )
                ]

        await asyncio.gather(*(one(i, c) for i, c in orders))
        out[orders[-1][0]].extend(await self._fills())

    async def _fills(self) -> list:
        """Pushes caused by the batch arrive before each session's reply to a later request:
        ping every session, then join both sides of every fill by trade_id."""
        await asyncio.gather(*(c.ping() for c in self.clients.values()))
        sides: dict[int, dict] = {}
        for firm, c in self.clients.items():
            for _, _, d in c.drain("executions"):
                if d.get("exec_type") != "trade" or not d.get("trade_id"):
                    continue
                t = sides.setdefault(d["trade_id"], {})
                t[d["side"]] = d
        trades = []
        for tid in sorted(sides):
            t = sides[tid]
            b, s = t.get("buy"), t.get("sell")
            any_side = b or s
            trades.append(
                Trade(
                    tid,
                    any_side["instrument"],
                    any_side["segment"],
                    parse_price(any_side["last_px"]),
                    any_side["last_qty"],
                    b["account"] if b else "?",
                    s["account"] if s else "?",
                    0,
                    0,
                    "buy" if (b and b.get("liquidity") == "taker") else "sell",
                    parse_price(b["fee"]) if b else 0,
                    parse_price(s["fee"]) if s else 0,
                    (),
                )
            )
        return trades

    async def _one(self, c) -> list:
        if isinstance(c, GENESIS_ONLY):
            self.skipped[c.TYPE] += 1
            return []
        if isinstance(c, RegisterFirm):
            evs = await self._http(
                "POST",
                "/firms",
                {
                    "firm_id": c.firm_id,
                    "name": c.name,
                    "sector": c.sector,
                    "product": c.product,
                    "size_class": c.size_class,
                    "stp_policy": c.stp_policy,
                    "can_trade": c.can_trade,
                },
                c,
            )
            if not any(isinstance(e, CommandRejected) for e in evs):
                await self._session_for(c.firm_id)
            return evs
        if isinstance(c, AddSegment):
            return await self._http(
                "POST",
                "/segments",
                {
                    "name": c.name,
                    "tick": format_price(c.tick),
                    "lot": c.lot,
                    "max_order_qty": c.max_order_qty,
                    "fee_pct": pct(c.fee_bps),
                    "access": c.access,
                },
                c,
            )
        if isinstance(c, AddInstrument):
            return await self._http(
                "POST",
                "/instruments",
                {
                    "symbol": c.symbol,
                    "kind": c.kind,
                    "vintage": c.vintage,
                    "offset_type": c.offset_type,
                    "reference_price": format_price(c.reference_price),
                },
                c,
            )
        if isinstance(c, SetPriceBand):
            return await self._http(
                "PUT",
                f"/instruments/{c.instrument}/band",
                {
                    "band_pct": pct(c.band_bps),
                    "reference_price": None
                    if c.reference_price is None
                    else format_price(c.reference_price),
                },
                c,
            )
        if isinstance(c, DepositCash):
            return await self._http(
                "POST", "/deposits", {"account": c.account, "amount": format_price(c.amount)}, c
            )
        if isinstance(c, IssueUnits):
            return await self._http(
                "POST",
                "/issuance",
                {
                    "account": c.account,
                    "instrument": c.instrument,
                    "qty": c.qty,
                    "source": c.source,
                    "ref": c.ref,
                },
                c,
            )
        if isinstance(c, TransferUnits):
            return await self._http(
                "POST",
                "/transfers",
                {
                    "from_account": c.from_account,
                    "to_account": c.to_account,
                    "instrument": c.instrument,
                    "qty": c.qty,
                },
                c,
            )
        if isinstance(c, RegisterSupplyChain):
            return await self._http(
                "POST",
                "/supply-chains",
                {
                    "chain_id": c.chain_id,
                    "members": [{"firm": f, "tier": t} for f, t in c.members],
                    "edges": [
                        {"supplier": s, "customer": u, "weight": ratio(w)} for s, u, w in c.edges
                    ],
                },
                c,
            )
        if isinstance(c, CreateSubQuota):
            return await self._http(
                "POST",
                "/sub-quotas",
                {
                    "parent": c.parent,
                    "sme": c.sme,
                    "instrument": c.instrument,
                    "qty": c.qty,
                    "revenue_share": ratio(c.revenue_share_ppm),
                    "surplus_rule": c.surplus_rule,
                    "shortfall_rule": c.shortfall_rule,
                    "chain_id": c.chain_id,
                },
                c,
            )
        if isinstance(c, EndOfDay):
            return await self._http("POST", "/end-of-day", {}, c)
        if isinstance(c, SetRulesParams):
            body = {}
            for f in c._FIELDS:
                v = getattr(c, f)
                if v is None:
                    continue
                body[f[:-4] if f.endswith("_ppm") else f] = _ratio(v) if f.endswith("_ppm") else v
            return await self._http("POST", "/rules/params", body, c)
        if isinstance(c, SetBenchmark):
            return await self._http(
                "POST",
                "/rules/benchmarks",
                {"product": c.product, "intensity": _ratio(c.intensity_ppm)},
                c,
            )
        if isinstance(c, SetOutputHistory):
            return await self._http(
                "POST",
                "/rules/output-history",
                {
                    "firm_id": c.firm_id,
                    "rows": [
                        {"period": r[0], "output": r[1], "emissions": r[2] if len(r) > 2 else None}
                        for r in c.rows
                    ],
                },
                c,
            )
        if isinstance(c, SetInputUse):
            return await self._http(
                "POST",
                "/rules/input-use",
                {
                    "firm_id": c.firm_id,
                    "period": c.period,
                    "inputs": [{"product": p, "qty": q} for p, q in c.inputs],
                },
                c,
            )
        if type(c) in STEPS:
            return await self._http(
                "POST", "/rules/allocation-runs", {"period": c.period, "step": STEPS[type(c)]}, c
            )
        if isinstance(c, SplitSubQuotas):
            return await self._http(
                "POST",
                "/rules/splits",
                {
                    "parent": c.parent,
                    "instrument": c.instrument,
                    "amount": c.amount,
                    "smes": list(c.smes),
                    "strategy": c.strategy,
                    "revenue_share": _ratio(c.revenue_share_ppm),
                    "surplus_rule": c.surplus_rule,
                    "shortfall_rule": c.shortfall_rule,
                    "chain_id": c.chain_id,
                },
                c,
            )
        if isinstance(c, SubmitActivityData):
            return await self._http(
                "POST",
                "/compliance/submissions",
                {
                    "period": c.period,
                    "fuels": {f: q for f, q in c.fuels},
                    "process_emissions": c.process_emissions,
                    "output": c.output,
                    "electricity_mwh": c.electricity_mwh,
                    "natural_emissions": c.natural_emissions,
                    "firm_id": c.firm_id,
                },
                c,
            )
        if isinstance(c, VerifyEmissions):
            return await self._http(
                "POST",
                f"/compliance/submissions/{c.firm_id}/{c.period}/verify",
                {"verifier": self.verifier_id} if self.verifier_id else {},
                c,
                key=self.verifier_key,
            )
        if isinstance(c, SurrenderUnits):
            return await self._http(
                "POST",
                "/compliance/surrenders",
                {
                    "period": c.period,
                    "instrument": c.instrument,
                    "qty": c.qty,
                    "firm_id": c.firm_id,
                },
                c,
            )
        if isinstance(c, ProcessComplianceDeadline):
            return await self._http("POST", f"/compliance/periods/{c.period}/deadline", {}, c)
        self.skipped[c.TYPE] += 1
        return []

    async def _session_for(self, firm_id: str) -> None:
        from ..client import ExchangeClient

        hdr = {"Authorization": f"Bearer {self.operator_key}"}
        async with self.session.post(
            self.api + "/api-keys",
            headers=hdr,
            json={"role": "firm", "firm_id": firm_id, "label": "simulation"},
        ) as r:
            data = await r.json(content_type=None)
            if r.status >= 300:
                raise ConnectionError(f"cannot issue an API key for {firm_id}: {data}")
        cl = ExchangeClient(self.ws_url, data["api_key"])
        await cl.connect()
        await cl.subscribe("executions")
        self.clients[firm_id] = cl
