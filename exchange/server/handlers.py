"""The built-in websocket methods and the order entry behind them.

Each ``m_*`` function is registered with :func:`~exchange.server.protocol.ws_method`;
:class:`OrderEntryMixin` (part of the gateway) applies order commands now, builds their
replies now as bytes, and queues them once the journal batch is durable. The C gate
(``_accel.gate``) does the same for well-formed plain orders and calls back into these for
the rest.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

import orjson

from ..access.credentials import ROLE_FIRM
from ..core import errors as E
from ..core.commands import AmendOrder, CancelAll, CancelOrder, PlaceOrder
from ..core.events import EXEC_REJECTED, CommandRejected, ExecutionReport
from .framing import _err_bytes
from .idempotency import _reason_text, _same_terms
from .protocol import (
    DEFERRED,
    JSON_STR,
    PX_JSON,
    AmendOrderParams,
    AuthParams,
    CancelAllParams,
    CancelOrderParams,
    ChannelParams,
    EmptyParams,
    PlaceOrderParams,
    ProtocolError,
    validate_amend_order,
    validate_cancel_order,
    validate_place_order,
    wire_order,
    ws_method,
)

if TYPE_CHECKING:
    from .gateway import Session

_dumps = orjson.dumps

# replies built from templates (compact JSON, keys in the order the protocol documents);
# strings from open sets (client order ids) go through orjson, the rest through caches
_PLACE_OK = (
    b'{"req_id":%d,"ok":true,"result":{"order_id":%d,"client_order_id":%s,'
    b'"order_status":%s,"cum_qty":%d,"leaves_qty":%d,"seq":%d}}'
)
_REPORT_OK = (
    b'{"req_id":%d,"ok":true,"result":{"order_id":%d,"client_order_id":%s,'
    b'"exec_type":%s,"order_status":%s,"qty":%d,"price":%s,"cum_qty":%d,'
    b'"leaves_qty":%d}}'
)


class OrderEntryMixin:
    """The gateway's order entry (``self.idem``, ``self.ex``, ``self._enqueue``)."""

    def place(self, s: Session, cmd: PlaceOrder, req_id):
        """place_order. Applied now, and its reply built now (bytes); the reply is queued when
        the command's journal batch is durable (one callback per batch, not per order).
        Idempotent by client_order_id."""
        coid = cmd.client_order_id
        key = None
        if coid is not None:
            key = (cmd.account, coid)
            idem = self.idem
            hit = idem.done.get(key)
            if hit is not None:
                self.metrics.idempotent_replays += 1
                return self._replay(cmd, hit)
            inflight = idem.inflight.get(key)
            if inflight is not None:  # the first is not durable yet: answer when it is
                entry, durable = inflight
                _same_terms(cmd, entry)  # other terms: refused now
                self.metrics.idempotent_replays += 1
                durable.add_done_callback(partial(self._send_replayed, s, req_id, cmd, entry))
                return DEFERRED
            acct = self.ex.accounts.get(cmd.account)
            oid = acct.coids.get(coid) if acct is not None else None
            if oid is not None:
                # placed before a restart (so durable) and still working: its current state
                self.metrics.idempotent_replays += 1
                o = acct.orders[oid]
                return {
                    "order_id": oid,
                    "client_order_id": coid,
                    "order_status": o.status,
                    "cum_qty": o.cum_qty,
                    "leaves_qty": o.leaves,
                    "replayed": True,
                }
        self.admit(s)
        events, durable = self.submit_nowait(cmd)
        data, outcome = self._place_reply(s, cmd, req_id, events)
        entry = None
        if key is not None:  # as the C gate remembers it
            entry = [outcome, cmd, None]
            self.idem.inflight[key] = (entry, durable)
        self._enqueue(durable, s, req_id, data, key, entry)
        return DEFERRED

    def order_command(self, s: Session, req_id, cmd, admit: bool = False) -> object:
        """cancel_order / amend_order: submit ``cmd`` now (after admission control when
        ``admit``); the reply - the order's last execution report, or the reject - is built
        now as bytes and queued once the command is durable. Returns DEFERRED."""
        if admit:
            self.admit(s)
        events, durable = self.submit_nowait(cmd)
        self._enqueue(durable, s, req_id, _report_reply(req_id, events, cmd.account, cmd.TYPE))
        return DEFERRED

    def command(self, s: Session, req_id, cmd, result_fn) -> object:
        """Submit ``cmd`` now; reply ``result_fn(events)`` (or its ProtocolError) once the
        command is durable. Returns DEFERRED (for handlers)."""
        events, durable = self.submit_nowait(cmd)
        if isinstance(events, Exception):  # a core bug, journaled; replay reproduces it
            data = _err_bytes(req_id, E.INTERNAL_ERROR, "internal error")
        else:
            try:
                data = _dumps({"req_id": req_id, "ok": True, "result": result_fn(events)})
            except ProtocolError as exc:
                data = _err_bytes(req_id, exc.code, exc.message)
        self._enqueue(durable, s, req_id, data)
        return DEFERRED

    def _place_reply(self, s: Session, cmd: PlaceOrder, req_id, events) -> tuple:
        """``(reply bytes, outcome to remember)`` of a place_order from its events."""
        if isinstance(events, Exception):  # a core bug, journaled; replay reproduces it
            outcome = ("err", E.INTERNAL_ERROR, "internal error")
            return _err_bytes(req_id, outcome[1], outcome[2]), outcome
        # the incoming order's reports: the first event is its new (or rejected) report; the
        # last report with its order id (searching from the end) has its final state
        first = events[0] if events else None
        if type(first) is not ExecutionReport or first.account != cmd.account:
            # a module put something first: take the first report of this account
            first = next(
                (ev for ev in events if type(ev) is ExecutionReport and ev.account == cmd.account),
                None,
            )
            if first is None:
                outcome = ("err", E.INTERNAL_ERROR, "no execution report")
                return _err_bytes(req_id, outcome[1], outcome[2]), outcome
        if first.exec_type == EXEC_REJECTED:
            outcome = ("err", first.reason or E.BAD_PARAMETER, _reason_text(first.reason))
            return _err_bytes(req_id, outcome[1], outcome[2]), outcome
        oid = first.order_id
        last = first
        for i in range(len(events) - 1, 0, -1):
            ev = events[i]
            if type(ev) is ExecutionReport and ev.order_id == oid:
                last = ev
                break
        if s.cod and last.leaves_qty:
            s.placed.add(oid)
        coid = first.client_order_id
        data = _PLACE_OK % (
            req_id,
            oid,
            b"null" if coid is None else _dumps(coid),
            JSON_STR[last.order_status],
            last.cum_qty,
            last.leaves_qty,
            self.ex.last_seq,  # the order's seq: built right after the runner applied it
        )
        return data, data


def _report_reply(req_id, events, account: str, kind: str) -> bytes:
    """Reply to cancel/amend: the order's last execution report, or the reject."""
    if isinstance(events, Exception):  # a core bug, journaled; replay reproduces it
        return _err_bytes(req_id, E.INTERNAL_ERROR, "internal error")
    last = None
    for ev in events:
        t = type(ev)
        if t is CommandRejected:
            return _err_bytes(req_id, ev.code, ev.message)
        if t is ExecutionReport and ev.account == account:
            if last is None or ev.order_id == last.order_id:
                last = ev
    if last is None:
        return _err_bytes(req_id, E.UNKNOWN_ORDER, f"{kind}: no report")
    coid = last.client_order_id
    p = last.price
    return _REPORT_OK % (
        req_id,
        last.order_id,
        b"null" if coid is None else _dumps(coid),
        JSON_STR[last.exec_type],
        JSON_STR[last.order_status],
        last.qty,
        b"null" if p is None else PX_JSON[p],
        last.cum_qty,
        last.leaves_qty,
    )


@ws_method("auth", AuthParams, auth=False)
def m_auth(s: Session, p: AuthParams) -> dict:
    """Authenticate with an API key (or send ``Authorization: Bearer`` on the handshake)."""
    return s.gw.authenticate(s, p.api_key, p.cancel_on_disconnect, p.batch)


@ws_method("ping", EmptyParams, auth=False)
def m_ping(s: Session, p) -> dict:
    """Application-level heartbeat: returns the server time and the last sequence number."""
    return {"pong": True, "ts": time.time_ns(), "seq": s.gw.ex.last_seq}


@ws_method("place_order", PlaceOrderParams, roles=(ROLE_FIRM,), validate=validate_place_order)
def m_place(s: Session, cmd: PlaceOrder):
    """Place an order for the session's firm. Idempotent by client_order_id."""
    cmd.account = s.firm_id
    return s.gw.place(s, cmd, s.req_id)


@ws_method("cancel_order", CancelOrderParams, roles=(ROLE_FIRM,), validate=validate_cancel_order)
def m_cancel(s: Session, cmd: CancelOrder):
    """Cancel one of the firm's live orders by order_id or client_order_id."""
    return s.gw.order_command(s, s.req_id, _own_order_ref(s, cmd))


@ws_method("amend_order", AmendOrderParams, roles=(ROLE_FIRM,), validate=validate_amend_order)
def m_amend(s: Session, cmd: AmendOrder):
    """Change a live order's total quantity and/or price."""
    return s.gw.order_command(s, s.req_id, _own_order_ref(s, cmd), admit=True)


def _own_order_ref(s: Session, cmd):
    """A cancel/amend naming an order (by order_id or client_order_id) of the session's
    firm."""
    if cmd.order_id is None and cmd.client_order_id is None:
        raise ProtocolError(E.INVALID_PARAMS, "give order_id or client_order_id")
    cmd.account = s.firm_id
    return cmd


def _canceled(events: list, firm: str) -> dict:
    n = 0
    for ev in events:
        if type(ev) is CommandRejected:
            raise ProtocolError(ev.code, ev.message)
        if type(ev) is ExecutionReport and ev.account == firm:
            n += 1
    return {"canceled": n}


@ws_method("cancel_all", CancelAllParams, roles=(ROLE_FIRM,))
def m_cancel_all(s: Session, p: CancelAllParams):
    """Cancel all the firm's live orders (optionally of one instrument and/or segment)."""
    firm = s.firm_id
    return s.gw.command(
        s,
        s.req_id,
        CancelAll(account=firm, instrument=p.instrument, segment=p.segment),
        lambda events: _canceled(events, firm),
    )


@ws_method("open_orders", EmptyParams, roles=(ROLE_FIRM,))
def m_open_orders(s: Session, p) -> dict:
    """The firm's live orders (state as of the last applied command)."""
    ex = s.gw.ex
    return {"as_of_seq": ex.last_seq, "orders": [wire_order(o) for o in ex.open_orders(s.firm_id)]}


@ws_method("subscribe", ChannelParams)
def m_subscribe(s: Session, p: ChannelParams) -> dict:
    """Subscribe to a channel; the result carries its snapshot where it has one."""
    r = s.gw.subscribe(s, p.channel)
    if p.from_seq is not None:
        # this server keeps no replay of its channels (a market-data gateway does, ADR
        # 0014): a resuming client gets the fresh snapshot, flagged
        r["resumed"] = False
    return r


@ws_method("unsubscribe", ChannelParams)
def m_unsubscribe(s: Session, p: ChannelParams) -> dict:
    """Stop a subscription."""
    return s.gw.unsubscribe(s, p.channel)
