"""Fan-out: subscriptions, the pushes of durable events to them, and delivery.

The runner calls :meth:`FanoutMixin.on_commit` (or its C twin ``_fanout``) after each
durable command, in seq order: every event is encoded once and queued on the subscribed
sessions; book updates go out every ``server.book_push_interval_ms``, balances and tickers
once per round of commits. Queued output is flushed late in the tick, one write per
connection, and the bytes held for peers that do not read are bounded in total
(``server.send_queue_total_max_bytes``): past it the largest holders are closed.
"""

from __future__ import annotations

import asyncio
from itertools import islice
from typing import TYPE_CHECKING

import orjson

from ..access.credentials import ApiKeyRevoked
from ..core import errors as E
from ..core.commands import PlaceOrder
from ..core.events import (
    EXEC_REJECTED,
    BookUpdate,
    CommandRejected,
    DayEnded,
    ExecutionReport,
    MarketState,
    Posting,
    Trade,
)
from .framing import CLOSE_REVOKED, CLOSE_SLOW
from .protocol import (
    ER_BODY,
    ProtocolError,
    er_head,
    er_push,
    er_tail_args,
    fmt_px,
    ticker_channel,
    wire_balances,
    wire_depth,
    wire_order,
    wire_ticker,
    wire_trade,
)

if TYPE_CHECKING:
    from .gateway import Session

_dumps = orjson.dumps

_EXEC_PUSH = b'{"channel":"executions","seq":%d,"data":%s}'
ER_HEADS_MAX = 200_000  # execution report heads kept (orders working); past it, start over
MEASURE_S = 0.05  # how often the bytes of backed-up connections are measured (total bound)


def _ticker_board(rest: str) -> tuple[str, str]:
    """``CEA-2026`` -> its main board; ``CEA-2026@sme`` -> ``("CEA-2026", "sme")``."""
    sym, _, seg = rest.partition("@")
    return sym, seg or "main"


def _held(s) -> int:
    return s.held


def _qbig(s) -> int:
    return s.qbig


class FanoutMixin:
    """The gateway's subscriptions and pushes (the ``*_subs`` tables, ``self.sessions``)."""

    def want_flush(self, s: Session) -> None:
        """Flush ``s`` late in the next tick. Two hops: the first callback runs behind
        whatever this tick already scheduled (a journal batch's replies are scheduled right
        after its pushes), the second writes, so pushes and replies share one write."""
        self._to_flush.append(s)
        if not self._flush_out_scheduled:
            self._flush_out_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_hop)

    def _flush_hop(self) -> None:
        asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        self._flush_out_scheduled = False
        todo, self._to_flush = self._to_flush, []
        for s in todo:
            s.flush()

    def backlogged(self, s: Session) -> None:
        """``s``'s transport holds bytes its peer has not taken: count them (and its queue)
        towards the total bound until they are gone. Nothing is counted per message: a
        connection whose peer keeps up never gets here (its transport buffer is empty at every
        flush), so the order path pays nothing for the bound."""
        self._backlog.add(s)
        if not self._measuring:
            self._measuring = True
            asyncio.get_running_loop().call_later(MEASURE_S, self._measure)

    def queued_big(self, s: Session, n: int) -> None:
        """A big message (a book snapshot, a deep book's push: BIG_MESSAGE or more) was
        queued for ``s``. The timer cannot see queues that grow within one turn of the event
        loop - a burst of subscribe requests on many connections answered in one long turn
        queued ~700 MB before anything was flushed - so these are counted as they are queued
        (small messages, the order path's, are not) and the bound is enforced at once."""
        s.qbig += n
        big = self.big_bytes = self.big_bytes + n
        if big + self.queued_bytes > self.queued_bytes_max:
            self._shed_big()

    def _shed_big(self) -> None:
        """Over the total bound by big messages not yet flushed: close the connections that
        queued the most of them until under it."""
        limit = self.queued_bytes_max
        for s in sorted((x for x in self.sessions if x.qbig), key=_qbig, reverse=True):
            if self.big_bytes + self.queued_bytes <= limit:
                break
            self.metrics.send_queue_total_disconnects += 1
            self.metrics.slow_consumer_disconnects += 1
            s.kill(
                CLOSE_SLOW,
                f"{E.SLOW_CONSUMER}: the server's send queues hold over "
                f"{limit} bytes; this connection's ({s.qbig + s.held}) is "
                f"among the largest",
            )

    def _measure(self) -> None:
        """Every MEASURE_S while any socket is backed up: the bytes each such connection
        holds (its transport's buffer + its queue, counted incrementally: a stalled queue only
        grows) and their total, ``queued_bytes``. Over ``send_queue_total_max_bytes`` the
        connections holding the most are closed as slow consumers until the total is under
        the bound again: one client that does not read costs at most its share, and a crowd
        of them cannot take the server's memory (200 of them took ~460 MB before this). The
        total can pass the bound between two measurements by what the server writes in
        MEASURE_S, not more."""
        backlog = self._backlog
        total = 0
        for s in tuple(backlog):
            tr = s.transport
            if s.closed or tr is None or tr.is_closing():
                backlog.discard(s)
                s.held = 0
                continue
            out = s.out
            n = len(out)
            if n < s.qn:  # flushed since: count afresh
                s.qn = s.qbytes = 0
            if n > s.qn:
                s.qbytes += sum(map(len, islice(out, s.qn, None)))
                s.qn = n
            held = max(tr.get_write_buffer_size() + s.qbytes, s.qbig)
            s.held = held
            if not held:
                backlog.discard(s)
            total += held - s.qbig  # big messages queued are in big_bytes already
        limit = self.queued_bytes_max - self.big_bytes
        if total > limit:
            for s in sorted(backlog, key=_held, reverse=True):
                if total <= limit:
                    break
                total -= s.held - s.qbig
                limit += s.qbig  # (its big messages leave big_bytes with it)
                self.metrics.send_queue_total_disconnects += 1
                self.metrics.slow_consumer_disconnects += 1
                s.kill(
                    CLOSE_SLOW,
                    f"{E.SLOW_CONSUMER}: the server's send queues hold over "
                    f"{self.queued_bytes_max} bytes; this connection's "
                    f"({s.held}) is among the largest",
                )
                backlog.discard(s)
                s.held = 0
        self.queued_bytes = total
        if backlog:
            asyncio.get_running_loop().call_later(MEASURE_S, self._measure)
        else:
            self._measuring = False

    def subscribe(self, s: Session, channel: str) -> dict:
        ex = self.ex
        if channel == "executions" or channel == "balances":
            if s.firm_id is None:
                raise ProtocolError(E.FORBIDDEN, f"{channel} is a firm channel")
            table = self.exec_subs if channel == "executions" else self.bal_subs
            table.setdefault(s.firm_id, set()).add(s)
            s.subs.setdefault(channel, 0)
            out = {"channel": channel, "seq": s.subs[channel]}
            if channel == "balances":
                out["snapshot"] = wire_balances(ex, s.firm_id)
            else:
                out["open_orders"] = [wire_order(o) for o in ex.open_orders(s.firm_id)]
            return out
        kind, _, rest = channel.partition(":")
        if kind == "book":
            instr, _, seg = rest.partition(":")
            book = ex.books.get((instr, seg))
            if book is None:
                raise ProtocolError(
                    E.UNKNOWN_CHANNEL, f"no book {rest!r} (book:<instrument>:<segment>)"
                )
            self.book_subs.setdefault((instr, seg), set()).add(s)
            s.subs[channel] = book.seq
            return {"channel": channel, "seq": book.seq, "snapshot": wire_depth(book)}
        if kind == "trades" and rest in ex.instruments:
            self.trade_subs.setdefault(rest, set()).add(s)
            # numbered by trade id, as on a market-data gateway (ADR 0014): the pushes are
            # the trades after the last one made so far
            s.subs.setdefault(channel, ex.next_trade_id - 1)
            return {"channel": channel, "seq": s.subs[channel]}
        if kind == "ticker":
            key = _ticker_board(rest)
            if key in ex.books and channel == ticker_channel(*key):  # one name per board
                subs = self.ticker_subs.get(key)
                snap = wire_ticker(ex, *key)
                if not subs:  # the first subscriber has exactly this: push only a change
                    subs = self.ticker_subs[key] = set()
                    self._last_tick[key] = _dumps(snap)
                subs.add(s)
                s.subs.setdefault(channel, 0)
                return {"channel": channel, "seq": s.subs[channel], "snapshot": snap}
            if key[0] in ex.instruments:
                raise ProtocolError(
                    E.UNKNOWN_CHANNEL, f"no board {rest[:80]!r} (ticker:<instrument>[@<segment>])"
                )
        raise ProtocolError(E.UNKNOWN_CHANNEL, f"unknown channel {channel[:80]!r}")

    def _unsub(self, s: Session, channel: str) -> bool:
        if s.subs.pop(channel, None) is None:
            return False
        if channel == "executions":
            table, key = self.exec_subs, s.firm_id
        elif channel == "balances":
            table, key = self.bal_subs, s.firm_id
        else:
            kind, _, rest = channel.partition(":")
            if kind == "book":
                instr, _, seg = rest.partition(":")
                table, key = self.book_subs, (instr, seg)
            elif kind == "trades":
                table, key = self.trade_subs, rest
            else:
                table, key = self.ticker_subs, _ticker_board(rest)
        subs = table.get(key)
        if subs is not None:
            subs.discard(s)
            if not subs:
                del table[key]
                if table is self.ticker_subs:
                    self._last_tick.pop(key, None)
        return True

    def unsubscribe(self, s: Session, channel: str) -> dict:
        if not self._unsub(s, channel):
            raise ProtocolError(E.NOT_SUBSCRIBED, f"not subscribed to {channel[:80]!r}")
        return {"channel": channel, "subscribed": False}

    def on_commit(self, cmd, seq, ts, events) -> None:
        """Runner listener: after durability, in seq order. The reference of ``_fanout``
        (exchange/server/_accel.c), which the runner calls instead where the extension is built:
        it does the usual reports and events itself and calls ``_on_report``/``_on_event``
        for the rest."""
        self.metrics.commands += 1
        for ev in events:
            if type(ev) is ExecutionReport:
                self._on_report(ev)
            else:
                self._on_event(ev)
        self._after_commit(cmd)

    def _on_report(self, ev) -> None:
        """One durable execution report: reject counts, balances to push, the executions
        push to the account's subscribers."""
        acct = ev.account
        if ev.exec_type == EXEC_REJECTED:
            m = self.metrics
            r = ev.reason or "?"
            m.rejects[r] = m.rejects.get(r, 0) + 1
            m.orders_rejected += 1
        elif acct in self.bal_subs:
            self._dirty_bal.add(acct)
        subs = self.exec_subs.get(acct)
        if subs:
            # the order's fixed fields, formatted once while it works
            heads = self._er_heads
            oid = ev.order_id
            if ev.leaves_qty:
                head = heads.get(oid)
                if head is None:
                    if len(heads) >= ER_HEADS_MAX:
                        heads.clear()
                    head = heads[oid] = er_head(ev)
            else:  # its last report (or a reject, order id 0)
                head = heads.pop(oid, None) or er_head(ev)
            if len(subs) == 1:  # (usual) one format for the whole push
                for s in subs:
                    ss = s.subs
                    seq = ss.get("executions")
                    if seq is not None:
                        seq += 1
                        ss["executions"] = seq
                        s.send(er_push(seq, head, ev))
            else:
                data = ER_BODY % er_tail_args(ev, head)
                for s in tuple(subs):  # (a send may close a session: copy)
                    ss = s.subs
                    seq = ss.get("executions")
                    if seq is not None:
                        seq += 1
                        ss["executions"] = seq
                        s.send(_EXEC_PUSH % (seq, data))

    def _on_event(self, ev) -> None:
        """One durable event other than an execution report."""
        t = type(ev)
        bal_subs = self.bal_subs
        if t is BookUpdate:
            book_subs = self.book_subs
            ticker_subs = self.ticker_subs
            if not book_subs and not ticker_subs:
                return
            key = (ev.instrument, ev.segment)
            subs = book_subs.get(key)
            if subs:
                ch = f"book:{ev.instrument}:{ev.segment}"
                bs = ev.book_seq
                msg = _dumps(
                    {
                        "channel": ch,
                        "seq": bs,
                        "data": {
                            "instrument": ev.instrument,
                            "segment": ev.segment,
                            "book_seq": bs,
                            "changes": [[c[0], fmt_px(c[1]), c[2]] for c in ev.changes],
                        },
                    }
                )
                if self._book_interval > 0:  # held back, sent to all in one go
                    pend = self._book_pending.get(key)
                    if pend is None:
                        pend = self._book_pending[key] = (ch, [])
                    pend[1].append((bs, msg))
                    if not self._book_timer:
                        self._book_timer = True
                        asyncio.get_running_loop().call_later(self._book_interval, self._push_books)
                else:
                    for s in tuple(subs):
                        if s.subs.get(ch, bs) < bs:
                            s.subs[ch] = bs
                            s.send(msg)
            if ticker_subs and key in ticker_subs:
                self._dirty_tick.add(key)
        elif t is Trade:
            self.metrics.trades += 1
            subs = self.trade_subs.get(ev.instrument)
            if subs:
                ch = f"trades:{ev.instrument}"
                tid = ev.trade_id
                msg = b'{"channel":%s,"seq":%d,"data":%s}' % (
                    _dumps(ch),
                    tid,
                    _dumps(wire_trade(ev)),
                )
                for s in tuple(subs):
                    if s.subs.get(ch, tid) < tid:  # not one made before it subscribed
                        s.subs[ch] = tid
                        s.send(msg)
            key = (ev.instrument, ev.segment)
            if key in self.ticker_subs:  # the trade's own board only
                self._dirty_tick.add(key)
            for who, _amt in ev.proceeds_split:
                if who in bal_subs:
                    self._dirty_bal.add(who)
        elif t is Posting:
            if bal_subs:
                if ev.debit in bal_subs:
                    self._dirty_bal.add(ev.debit)
                if ev.credit in bal_subs:
                    self._dirty_bal.add(ev.credit)
        elif t is CommandRejected:
            m = self.metrics
            m.rejects[ev.code] = m.rejects.get(ev.code, 0) + 1
        elif t is ApiKeyRevoked:
            for s in [s for s in self.sessions if s.key_id == ev.key_id]:
                s.kill(CLOSE_REVOKED, "KEY_REVOKED: the API key was revoked")
        elif t is MarketState or t is DayEnded:
            self._dirty_tick.update(self.ticker_subs)

    def _after_commit(self, cmd) -> None:
        if type(cmd) is PlaceOrder:
            self.metrics.orders += 1
        if self._dirty_bal or self._dirty_tick:
            self._dirty_soon()

    def _dirty_soon(self) -> None:
        """Balances or tickers changed: push them once this round of commits is done."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_dirty)

    def _push_books(self) -> None:
        """Every ``book_push_interval_ms``: the book updates made durable since the last
        call, each still its own message in seq order, queued to each subscriber at once -
        so a subscriber's socket gets one write per interval, not one per update (the
        fan-out to 1,000 subscribers was one syscall per subscriber per update). A session
        gets only the updates after the ``book_seq`` it already has (its snapshot)."""
        self._book_timer = False
        pending, self._book_pending = self._book_pending, {}
        for key, (ch, items) in pending.items():
            subs = self.book_subs.get(key)
            if not subs:
                continue
            first = items[0][0]
            last = items[-1][0]
            for s in tuple(subs):
                seen = s.subs.get(ch)
                if seen is None or seen >= last:
                    continue
                s.subs[ch] = last
                if seen < first:
                    s.send_many([m for _, m in items])
                else:
                    s.send_many([m for bs, m in items if bs > seen])

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        ex = self.ex
        if self._dirty_bal:
            dirty, self._dirty_bal = self._dirty_bal, set()
            for firm in dirty:
                subs = self.bal_subs.get(firm)
                if subs:
                    data = _dumps(wire_balances(ex, firm))
                    for s in tuple(subs):
                        s.push("balances", data)
        if self._dirty_tick:
            dirty, self._dirty_tick = self._dirty_tick, set()
            last = self._last_tick
            for key in dirty:
                subs = self.ticker_subs.get(key)
                if subs:
                    data = _dumps(wire_ticker(ex, *key))
                    if last.get(key) == data:
                        continue  # nothing in it changed (e.g. an order away from the top)
                    last[key] = data
                    ch = ticker_channel(*key)
                    for s in tuple(subs):
                        s.push(ch, data)
