"""Idempotent order entry: a retried place_order (same firm, same ``client_order_id``)
gets the first one's outcome, never a second order.

:class:`Idempotency` remembers the last ``server.idempotency_window`` orders with a client
order id; :class:`IdempotencyMixin` (part of :class:`~exchange.server.gateway.Gateway`)
answers retries from it, keeps each entry's final state as the order finishes, and rebuilds
the window from the journal after a restart.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING

import orjson

from ..core import errors as E
from ..core.commands import PlaceOrder
from ..core.events import EXEC_REJECTED, ExecutionReport
from .framing import _err_bytes
from .protocol import ProtocolError

if TYPE_CHECKING:
    from .gateway import Session

_dumps = orjson.dumps
_loads = orjson.loads


class Idempotency:
    """(firm, client_order_id) -> the first place_order of the last ``window`` orders.

    While the order is not yet durable, ``inflight`` holds ``(entry, durable future)`` with a
    mutable entry ``[outcome, command, final]``; once durable, ``done`` keeps it as a tuple
    ``(outcome, terms, final)`` (:meth:`remember`). The outcome is the reply as sent (bytes,
    exact size - an ``orjson.dumps`` result would keep its 4 KiB buffer), ``("err", code,
    message)``, or ``("journal", seq)`` for an order known only from the journal (rebuilt on
    start); the terms (:func:`_terms`) are what a retry must repeat; ``final`` is ``(order_id,
    status, cum_qty)`` once the order is done (``Gateway._idem_listen``). A ring of keys drops
    the oldest.

    What the window keeps is tuples of strings and integers only, never the command object
    or a list: the cyclic GC untracks such tuples (the compiled gateway makes them
    untracked), so 20,000 remembered orders add nothing to what each young collection
    examines. Keeping the command and a list per order made every young collection walk
    the whole backlog of new entries once, 17-35 ms at 20,000 orders/s (docs/BENCHMARKS.md).
    """

    __slots__ = ("done", "inflight", "window", "ring")

    def __init__(self, window: int):
        self.done: dict = {}
        self.inflight: dict = {}  # key -> (entry, durable future) until durable
        self.window = window
        self.ring: deque = deque()

    def remember(self, key, entry) -> None:
        """Keep ``entry`` (``[outcome, command or terms, final]``) as ``(outcome, terms,
        final)``; the oldest key goes once there are more than ``window``."""
        d = self.done
        if key not in d:
            self.ring.append(key)
        first = entry[1]
        d[key] = (entry[0], first if type(first) is tuple else _terms(first), entry[2])
        if len(d) > self.window:
            d.pop(self.ring.popleft(), None)


_NOT_DURABLE = "the journal could not make the order durable; it may be lost"


_TERMS = ("instrument", "segment", "side", "qty", "price", "order_type", "tif", "post_only")
_TERM_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(PlaceOrder)
    if f.name in _TERMS and f.default is not dataclasses.MISSING
}


def _terms(cmd) -> tuple:
    """What a retry of a place_order must repeat: everything but the ids and stamps."""
    return (
        cmd.instrument,
        cmd.segment,
        cmd.side,
        cmd.qty,
        cmd.price,
        cmd.order_type,
        cmd.tif,
        cmd.post_only,
    )


def _dict_terms(d: dict) -> tuple:
    """:func:`_terms` of a journaled place_order (its encode_command dict)."""
    return tuple(d.get(f, _TERM_DEFAULTS.get(f)) for f in _TERMS)


def _same_terms(cmd: PlaceOrder, entry) -> None:
    """Refuse a retry that reuses a remembered client order id for another order: replaying
    the first order's reply to it would tell the client an order it never sent was placed."""
    first = entry[1]
    if _terms(cmd) != (first if type(first) is tuple else _terms(first)):
        raise ProtocolError(
            E.DUPLICATE_CLIENT_ORDER_ID,
            f"client_order_id {cmd.client_order_id!r} was used for an order "
            f"with other terms (side, price, quantity, ...); use a new id",
        )


def _same_kind(ex):
    """A fresh core with ``ex``'s modules, in their order (what build_exchange() makes for a
    core it made)."""
    return type(ex)(modules=tuple(type(m) for m in ex.modules.values()))


async def _outcomes_from_journal(journal, wanted: dict, last: int, new_exchange) -> dict:
    """``{(firm, client_order_id): outcome}`` of the place_orders at the journal seqs
    ``wanted`` maps them to: ``(order_id, final status, cum_qty)`` for an order that is done,
    ``("err", code, message)`` for one refused when placed. The log is replayed into a scratch
    exchange from the newest snapshot before the first of them (or from the start) to
    ``last``: at most the snapshot interval plus twice the idempotency window of commands,
    once per start, and only when some order of the window is no longer working. The snapshot
    is only read for these answers; the live state was proven by the runner."""
    from ..journal.codec import decode_payload
    from ..journal.runner import restore_bytes

    first = min(wanted.values())
    scratch = new_exchange()
    start = 1
    snap = await journal.latest_snapshot(max_seq=first - 1)
    if snap is not None:
        restore_bytes(scratch, snap[1])
        start = snap[0] + 1
    by_seq = {seq: key for key, seq in wanted.items()}
    working: dict = {}  # order id -> key, placed and not yet done
    out: dict = {}
    apply = scratch.apply
    async for rows in journal.read_rows(start, last):
        for seq, ts, p, _h in rows:
            try:
                events = apply(decode_payload(_loads(p)), seq, ts)
            except Exception:  # as it did live (replay_into); the outcome stays unknown
                continue
            key = by_seq.get(seq)
            if key is not None:
                for ev in events:
                    if type(ev) is ExecutionReport and ev.account == key[0]:
                        if ev.exec_type == EXEC_REJECTED:
                            out[key] = (
                                "err",
                                ev.reason or E.BAD_PARAMETER,
                                _reason_text(ev.reason),
                            )
                        else:
                            working[ev.order_id] = key
                        break
            if working:
                for ev in events:
                    if type(ev) is ExecutionReport and not ev.leaves_qty:
                        k = working.pop(ev.order_id, None)
                        if k is not None:
                            out[k] = (ev.order_id, ev.order_status, ev.cum_qty)
    return out


def _reason_text(code: str | None) -> str:
    return (code or "rejected").replace("_", " ").lower()


class IdempotencyMixin:
    """The gateway's answers to retries (``self.idem``, ``self.ex``, ``self.runner``)."""

    def _replay(self, cmd: PlaceOrder, entry) -> dict:
        """The answer to a retry of a remembered place_order: refused when it names other
        terms than the first, the first's error again, or the order as it is now (its
        status, not the one the first reply had)."""
        _same_terms(cmd, entry)
        outcome, _first, final = entry
        if type(outcome) is tuple:
            if outcome[0] == "journal":  # placed before this process started
                return self._replay_journaled(cmd, outcome[1], final)
            raise ProtocolError(outcome[1], outcome[2])  # ("err", code, message)
        r = _loads(outcome)["result"]
        oid = r["order_id"]
        acct = self.ex.accounts.get(cmd.account)
        o = acct.orders.get(oid) if acct is not None else None
        if o is not None:  # still working
            r["order_status"], r["cum_qty"], r["leaves_qty"] = o.status, o.cum_qty, o.leaves
        elif final is not None and final[0] == oid:  # done since the first reply
            r["order_status"], r["cum_qty"], r["leaves_qty"] = final[1], final[2], 0
        r["replayed"] = True
        return r

    def _replay_journaled(self, cmd: PlaceOrder, seq: int, final=None) -> dict:
        """A retry of an order placed before a restart (the window rebuilt from the journal).
        Still working: its current state; done: its final state (found by replaying the log
        at start, ``rebuild_idempotency``), never placed again. Only if that replay could not
        say (a log without the records it needed) is the retry refused by name."""
        acct = self.ex.accounts.get(cmd.account)
        oid = acct.coids.get(cmd.client_order_id) if acct is not None else None
        if oid is not None:  # the id's latest use (the window keeps the latest) still works
            o = acct.orders[oid]
            return {
                "order_id": oid,
                "client_order_id": cmd.client_order_id,
                "order_status": o.status,
                "cum_qty": o.cum_qty,
                "leaves_qty": o.leaves,
                "seq": seq,
                "replayed": True,
            }
        if final is not None:
            return {
                "order_id": final[0],
                "client_order_id": cmd.client_order_id,
                "order_status": final[1],
                "cum_qty": final[2],
                "leaves_qty": 0,
                "seq": seq,
                "replayed": True,
            }
        raise ProtocolError(
            E.DUPLICATE_CLIENT_ORDER_ID,
            f"client_order_id {cmd.client_order_id!r} was used by the order of "
            f"seq {seq}, placed before a restart and no longer working; not "
            f"placed again",
        )

    def _send_replayed(self, s: Session, req_id, cmd, entry, durable) -> None:
        """Answer a retry that arrived while the first place_order was not yet durable."""
        if durable.cancelled() or durable.exception() is not None:
            s.send(_err_bytes(req_id, E.SHUTTING_DOWN, _NOT_DURABLE))
            return
        # the entry as remembered when the batch became durable, with the order's final
        # state if it has finished since
        entry = self.idem.done.get((cmd.account, cmd.client_order_id), entry)
        try:
            s.send(_dumps({"req_id": req_id, "ok": True, "result": self._replay(cmd, entry)}))
        except ProtocolError as exc:
            s.send(_err_bytes(req_id, exc.code, exc.message))

    def _idem_listen(self, cmd, seq, ts, events) -> None:
        """A durable command's reports: an order remembered for retries that is now done
        (nothing left to fill) gets its final state in its entry, so that a replay shows it
        after the order has left the book. Only orders with a client order id are looked up."""
        idem = self.idem
        done = idem.done
        inflight = idem.inflight
        if not done and not inflight:
            return
        for ev in events:
            if type(ev) is ExecutionReport and not ev.leaves_qty and ev.client_order_id is not None:
                key = (ev.account, ev.client_order_id)
                final = (ev.order_id, ev.order_status, ev.cum_qty)
                x = inflight.get(key)
                if x is not None:  # not durable yet: its batch remembers the entry
                    x[0][2] = final
                    continue
                entry = done.get(key)
                if entry is not None:
                    done[key] = (entry[0], entry[1], final)

    async def rebuild_idempotency(self) -> int:
        """The idempotency window after a restart: the last ``window`` place_orders with a
        client order id, read back from the journal (at most ``2 x window`` records, so a
        start stays bounded), remembered with their terms and seq. Without this a retry of an
        order that had filled before the restart was placed, and traded, again. Returns how
        many were remembered."""
        journal = getattr(self.runner, "journal", None)
        last = self.ex.last_seq
        window = self.idem.window
        if journal is None or not last or window <= 0:
            return 0
        found: list = []
        async for seq, _ts, d in journal.read(max(1, last - 2 * window + 1), last):
            if d.get("type") == "place_order" and d.get("client_order_id") is not None:
                found.append(((d["account"], d["client_order_id"]), seq, _dict_terms(d)))
        kept = {}  # the latest use of each key, in journal order
        for key, seq, terms in found:
            kept.pop(key, None)
            kept[key] = (seq, terms)
        kept = dict(list(kept.items())[-window:])
        # the orders no longer working: what became of them is in no state the server keeps
        # (the core forgets an order once it is done), so the log is replayed to see it
        accounts = self.ex.accounts
        gone = {}
        for key, (seq, _terms) in kept.items():
            acct = accounts.get(key[0])
            if acct is None or key[1] not in acct.coids:
                gone[key] = seq
        outcomes = (
            await _outcomes_from_journal(journal, gone, last, self.new_exchange) if gone else {}
        )
        remember = self.idem.remember
        for key, (seq, terms) in kept.items():
            outcome = outcomes.get(key)
            if outcome is None:
                remember(key, (("journal", seq), terms, None))
            elif outcome[0] == "err":  # refused when placed: the retry gets that again
                remember(key, (outcome, terms, None))
            else:
                remember(key, (("journal", seq), terms, outcome))
        return len(kept)
