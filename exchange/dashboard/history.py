"""Market history from the journal: public trades per board, each firm's executions and order
history, today's 1-minute bars and the daily candles - the read model behind
``GET /api/v1/trades``, ``GET /api/v1/firms/{firm_id}/executions``,
``GET /api/v1/firms/{firm_id}/orders``, ``GET /api/v1/market/bars/{instrument}`` and
``GET /api/v1/market/candles/{instrument}`` (exchange/dashboard/history_api.py, api.py).

It is fed by committed commands and their events, in sequence order, and by nothing else:

* at start, :meth:`MarketHistory.rebuild` reads the journal's records from the first one and
  applies them to a scratch core (a fresh one from ``app[NEW_CORE_KEY]``, build_exchange, thrown
  away afterwards), whose events feed the model. The server's own core may have started from
  a snapshot, which skips every event before it; reading the records again is what brings
  those trades back. The cost: a start replays the log a second time (about as long as a
  recovery from genesis, docs/DASHBOARD.md "History"), and nothing is written beside the
  journal - no side file to lose, go stale or disagree with it;
* after that, the runner's committed-event listener (:meth:`on_commit`), the same path as the
  websocket pushes: a command's trades are here once it is durable.

Memory is bounded (docs/DASHBOARD.md "History"): the public trades of the last ``keep_days``
trading days of each board, at most ``max_trades`` per board; the executions of the last
``keep_days`` trading days of each firm, at most ``max_executions`` per firm and
``max_executions_total`` over all firms; its order events (execution reports: accepted,
replaced, canceled, expired, rejected, filled) of the same days, at most ``max_order_events``
per firm and ``max_order_events_total`` over all; the 1-minute bars
of the current trading day only (at most 1,440 per board); daily candles of the last 750 days
(:mod:`.candles`). What is older is dropped at each end of day.

Public trades name no firm (docs/PRIVACY.md): the rows kept for them hold no account at all.
A firm's executions hold its own side, order and fee, never the counterparty.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, NamedTuple

import orjson

from ..core.events import DayEnded, ExecutionReport, Trade
from .candles import CandleStore, board_key

log = logging.getLogger("exchange.dashboard.history")

KEEP_DAYS = 5  # trading days of public trades and of executions kept (today included)
MAX_TRADES = 20_000  # public trades kept per board
MAX_EXECUTIONS = 10_000  # executions kept per firm
MAX_ORDER_EVENTS = 20_000  # order events (execution reports) kept per firm
# ... and over all firms together (a market of many firms must not multiply the per-firm
# bounds): about 60 MB of rows for each of the two at these figures
MAX_EXECUTIONS_TOTAL = 200_000
MAX_TRADES_TOTAL = 500_000  # public trades over all boards (many chain boards: not x 20,000)
MAX_ORDER_EVENTS_TOTAL = 200_000
MINUTE_NS = 60 * 1_000_000_000
REBUILD_WAIT_S = 10.0  # how long a start waits for commands applied before it listened

# What is kept per board or firm is the core's own event objects (Trade, ExecutionReport: fresh
# objects, which the compiled core leaves untracked by the cyclic GC) in one deque and one int
# per row in another - (id << 25) | (flag << 24) | day, the flag telling a firm's buy side of
# a trade from its sell side - and the rows below are made from them when read. The arrival
# order over all keys is two deques too: the key (one object per board or firm, reused) and
# the same int. Keeping a row so allocates nothing the GC tracks and costs two appends: row
# tuples kept at 20,000 orders/s made every young collection examine each of them once
# (pauses of 40-100 ms on this hardware) and every full collection walk them all.
_DAY_BITS = 24
_DAY_MASK = (1 << _DAY_BITS) - 1
_FLAG = 1 << _DAY_BITS
_ID_SHIFT = _DAY_BITS + 1


def _meta(rid: int, day: int, flag: int = 0) -> int:
    return rid << _ID_SHIFT | (_FLAG if flag else 0) | day


class TradeRow(NamedTuple):
    """A public trade: no account."""

    trade_id: int
    ts: int
    day: int
    instrument: str
    segment: str
    price: int
    qty: int
    aggressor: str


class ExecRow(NamedTuple):
    """One side of a trade, as its firm sees it."""

    trade_id: int
    ts: int
    day: int
    instrument: str
    segment: str
    side: str
    order_id: int
    price: int
    qty: int
    fee: int
    liquidity: str  # "taker" (the incoming order) or "maker" (the resting one)
    proceeds: int  # cash the fill moved to the firm (sell) or from it (buy), fee included


class OrderRow(NamedTuple):
    """An execution report of one of the firm's orders. ``event_id`` numbers the reports in
    the order the journal made them (the same after a restart: the history is rebuilt from
    the journal in its order); it is the page cursor."""

    event_id: int
    ts: int
    day: int
    order_id: int  # 0: refused before it got an id
    client_order_id: str | None
    instrument: str
    segment: str
    side: str
    exec_type: str
    order_status: str
    price: int | None
    qty: int
    last_qty: int
    last_px: int
    cum_qty: int
    leaves_qty: int
    reason: str | None
    trade_id: int


def _ts(ev: Any) -> int:
    return ev.ts  # type: ignore[no-any-return]


def _newest_first(
    kept: tuple[deque, deque] | None,
    before: int | None,
    t_from: int | None,
    t_to: int | None,
    limit: int,
    make: Callable[[Any, int], Any],
    keep: Callable[[Any], bool] | None = None,
    ts_of: Callable[[Any], int] = _ts,
) -> list:
    """Up to ``limit`` rows made by ``make(item, meta)`` from ``kept`` (the items of one key
    and their ints, in ascending ids and times), newest first, with id < ``before`` and
    ``t_from`` <= ts < ``t_to``; ``keep(item)`` filters."""
    out: list = []
    if not kept:
        return out
    for ev, m in zip(reversed(kept[0]), reversed(kept[1])):
        if before is not None and m >> _ID_SHIFT >= before:
            continue
        ts = ts_of(ev)
        if t_to is not None and ts >= t_to:
            continue
        if t_from is not None and ts < t_from:
            break  # ascending times: everything further back is older still
        if keep is not None and not keep(ev):
            continue
        out.append(make(ev, m))
        if len(out) >= limit:
            break
    return out


# A public trade is kept as one int - ts, price, qty and the aggressor's side - under its
# board: the public store holds no account at all, not even inside the core's Trade.
def _pack_trade(t: Trade) -> int:
    return t.ts << 112 | t.price << 56 | t.qty << 1 | (t.aggressor == "buy")


def _packed_ts(p: int) -> int:
    return p >> 112


def _trade_maker(board: tuple[str, str]) -> Callable[[int, int], TradeRow]:
    def make(p: int, m: int) -> TradeRow:
        return TradeRow(
            m >> _ID_SHIFT,
            p >> 112,
            m & _DAY_MASK,
            board[0],
            board[1],
            p >> 56 & (1 << 56) - 1,
            p >> 1 & (1 << 55) - 1,
            "buy" if p & 1 else "sell",
        )

    return make


def _exec_row(t: Trade, m: int) -> ExecRow:
    """One side of trade ``t`` as its firm saw it (the flag: the buy side)."""
    notional = t.price * t.qty
    if m & _FLAG:
        side, oid, fee = "buy", t.buy_order_id, t.buyer_fee
        proceeds = -(notional + fee)
    else:
        side, oid, fee = "sell", t.sell_order_id, t.seller_fee
        # what the seller's cash got: the notional less its fee, less what sub-quota
        # parents were paid out of it (exchange/core/exchange.py, proceeds split)
        paid_out = sum(a for f, a in t.proceeds_split if f != t.seller)
        proceeds = notional - fee - paid_out
    return ExecRow(
        t.trade_id,
        t.ts,
        m & _DAY_MASK,
        t.instrument,
        t.segment,
        side,
        oid,
        t.price,
        t.qty,
        fee,
        "taker" if t.aggressor == side else "maker",
        proceeds,
    )


def _order_row(e: ExecutionReport, m: int) -> OrderRow:
    return OrderRow(
        m >> _ID_SHIFT,
        e.ts,
        m & _DAY_MASK,
        e.order_id,
        e.client_order_id,
        e.instrument,
        e.segment,
        e.side,
        e.exec_type,
        e.order_status,
        e.price,
        e.qty,
        e.last_qty,
        e.last_px,
        e.cum_qty,
        e.leaves_qty,
        e.reason,
        e.trade_id,
    )


class MarketHistory:
    def __init__(
        self,
        keep_days: int = KEEP_DAYS,
        max_trades: int = MAX_TRADES,
        max_executions: int = MAX_EXECUTIONS,
        max_order_events: int = MAX_ORDER_EVENTS,
        max_executions_total: int = MAX_EXECUTIONS_TOTAL,
        max_order_events_total: int = MAX_ORDER_EVENTS_TOTAL,
        max_trades_total: int = MAX_TRADES_TOTAL,
    ):
        self.keep_days = keep_days
        self.max_trades = max_trades
        self.max_executions = max_executions
        self.max_order_events = max_order_events
        self.max_executions_total = max_executions_total
        self.max_order_events_total = max_order_events_total
        self.max_trades_total = max_trades_total
        # (firm or board, id, day) of every execution / order event / trade kept, in
        # arrival order: the bound over all firms (boards) drops from its left
        self._exec_fifo: tuple[deque, deque] = (deque(), deque())
        self._order_fifo: tuple[deque, deque] = (deque(), deque())
        self._trade_fifo: tuple[deque, deque] = (deque(), deque())
        self.day = 0
        self.last_seq = 0  # the last command fed (replayed or live)
        # key -> (the events, their ints): see the comment on _DAY_BITS
        self.trades: dict[tuple[str, str], tuple[deque, deque]] = {}
        self._boards: dict[tuple[str, str], tuple[str, str]] = {}
        self.executions: dict[str, tuple[deque, deque]] = {}
        self.orders: dict[str, tuple[deque, deque]] = {}
        self.events_seen = 0  # execution reports fed: the next one's event_id is this + 1
        # board -> {minute start ns: [open, high, low, close, volume, trades]}, today only
        self.bars: dict[tuple[str, str], dict[int, list[int]]] = {}
        self.candles = CandleStore()
        self.rebuilt = False  # the journal's records have been read (or there is no journal)
        self.rebuild_info: dict = {}
        self._pending: list | None = None  # live commands that came in during the rebuild

    # ------------------------------------------------------------------ feeding
    def on_commit(self, cmd, seq, ts, events) -> None:
        """Runner listener: called once per durable command with its envelope, in sequence
        order. While the journal is being read back (:meth:`rebuild`), live commands wait
        their turn."""
        if self._pending is not None:
            self._pending.append((cmd, seq, ts, events))
            return
        self.feed(cmd, seq, ts, events)

    def feed(self, cmd, seq, ts, events) -> None:
        """One applied command's events; ``seq``/``ts`` its envelope (seq 0: not sequenced,
        never skipped).

        Called for every durable command, on the event loop, before the batch's replies go
        out, so its cost is the exchange's: the order events' keeping (:meth:`_keep`, for the
        most frequent row) is written out here, and the candles are fed from :meth:`_trade`,
        not from a second loop over the events (1.82 -> 1.53 µs a command on the engine
        benchmark's stream)."""
        if seq:
            if seq <= self.last_seq:
                return  # already seen (read back from the journal and then heard live)
            self.last_seq = seq
        orders = None
        for ev in events:
            t = type(ev)
            if t is ExecutionReport:
                if orders is None:
                    orders, (fkeys, fmetas) = self.orders, self._order_fifo
                    per_key, day = self.max_order_events, self.day
                n = self.events_seen = self.events_seen + 1
                acct = ev.account
                kept = orders.get(acct)
                if kept is None:
                    kept = orders[acct] = (deque(maxlen=per_key), deque(maxlen=per_key))
                meta = n << _ID_SHIFT | day
                kept[0].append(ev)
                kept[1].append(meta)
                fkeys.append(acct)
                fmetas.append(meta)
                if len(fkeys) > self.max_order_events_total:
                    self._drop_oldest(orders, self._order_fifo)
            elif t is Trade:
                self._trade(ev, ts)
            elif t is DayEnded:
                self._day_ended(ev.day)
                orders = None  # the rows after it are the new day's

    def _trade(self, ev: Trade, ts: int = 0) -> None:
        key = (ev.instrument, ev.segment)
        board = self._boards.get(key)
        if board is None:
            board = self._boards[key] = key
        self.candles.add_trade(board_key(*key), ev.price, ev.qty, ev.ts or ts)
        day = self.day
        tid = ev.trade_id
        self._keep(
            self.trades,
            self._trade_fifo,
            board,
            _pack_trade(ev),
            _meta(tid, day),
            self.max_trades,
            self.max_trades_total,
        )
        self._keep(
            self.executions,
            self._exec_fifo,
            ev.buyer,
            ev,
            _meta(tid, day, 1),
            self.max_executions,
            self.max_executions_total,
        )
        self._keep(
            self.executions,
            self._exec_fifo,
            ev.seller,
            ev,
            _meta(tid, day),
            self.max_executions,
            self.max_executions_total,
        )
        bars = self.bars.get(board)
        if bars is None:
            bars = self.bars[board] = {}
        ts = ev.ts
        m = ts - ts % MINUTE_NS
        b = bars.get(m)
        p = ev.price
        if b is None:
            bars[m] = [p, p, p, p, ev.qty, 1]
        else:
            if p > b[1]:
                b[1] = p
            if p < b[2]:
                b[2] = p
            b[3] = p
            b[4] += ev.qty
            b[5] += 1

    @classmethod
    def _keep(
        cls,
        qs: dict,
        fifo: tuple[deque, deque],
        key: Any,
        ev: Any,
        meta: int,
        per_key: int,
        total: int,
    ) -> None:
        """Keep event ``ev`` with ``meta`` under ``key`` (a firm, or a board; at most
        ``per_key``: the oldest goes) and in the arrival order of all keys' rows, which drops
        the oldest row of all once there are more than ``total``."""
        kept = qs.get(key)
        if kept is None:
            kept = qs[key] = (deque(maxlen=per_key), deque(maxlen=per_key))
        kept[0].append(ev)
        kept[1].append(meta)
        keys, metas = fifo
        keys.append(key)
        metas.append(meta)
        if len(keys) > total:
            cls._drop_oldest(qs, fifo)

    @staticmethod
    def _drop_oldest(qs: dict, fifo: tuple[deque, deque]) -> None:
        """Drop the oldest row of all keys (the arrival order's first) from its key."""
        keys, metas = fifo
        old, m = keys.popleft(), metas.popleft()
        kept = qs.get(old)
        # gone already when its key's own bound or an end of day dropped it
        if kept and kept[1][0] == m:
            kept[0].popleft()
            kept[1].popleft()
            if not kept[1]:
                del qs[old]

    def _day_ended(self, day: int) -> None:
        self.day = self.candles.day = day
        self.bars.clear()  # the intraday chart is today's
        oldest = day - self.keep_days + 1
        for qs in (self.trades, self.executions, self.orders):
            for k in list(qs):
                evs, metas = qs[k]
                while metas and metas[0] & _DAY_MASK < oldest:
                    evs.popleft()
                    metas.popleft()
                if not metas:
                    del qs[k]
        # arrival order: old days first
        for keys, metas in (self._trade_fifo, self._exec_fifo, self._order_fifo):
            while metas and metas[0] & _DAY_MASK < oldest:
                keys.popleft()
                metas.popleft()

    # ------------------------------------------------------------------ start
    def attach(self, runner) -> None:
        """Listen to ``runner``'s committed commands from now on; they wait while
        :meth:`rebuild` runs."""
        if self._pending is None and not self.rebuilt:
            self._pending = []
        runner.add_listener(self.on_commit)

    async def rebuild(self, runner, new_core: Callable) -> dict:
        """Read the journal of ``runner`` from its first record (see the module docstring)
        into a scratch core made by ``new_core()``; then feed the live commands that came
        in meanwhile. Without a journal (a server in memory) there is nothing to read: the
        model starts empty and hears everything live."""
        from ..core.exchange import SequenceError
        from ..journal.codec import decode_payload

        journal = getattr(runner, "journal", None)
        info = {"records": 0, "trades": 0, "seconds": 0.0}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            if journal is not None:
                scratch = new_core()
                scratch.emit_book_updates = False  # depth changes: not history
                apply, loads = scratch.apply, orjson.loads
                # the log up to the seq the server's core had when we began listening: every
                # later command is heard live (the listener skips what was read here)
                target = runner.exchange.last_seq
                idle_since = None
                while True:
                    n0 = info["records"]
                    async for rows in journal.read_rows(scratch.last_seq + 1, None):
                        for seq, ts, payload, _h in rows:
                            cmd = decode_payload(loads(payload))
                            try:
                                events = apply(cmd, seq, ts)
                            except SequenceError:
                                raise
                            except Exception:  # the core raised live too: no events
                                events = []
                            info["trades"] += sum(1 for e in events if type(e) is Trade)
                            self.feed(cmd, seq, ts, events)
                            info["records"] += 1
                    if scratch.last_seq >= target:
                        break
                    if info["records"] != n0:
                        idle_since = None
                    else:
                        # a batch applied before we listened and not yet durable: wait for
                        # it, but not for a journal that will not take it any more
                        idle_since = idle_since or loop.time()
                        if loop.time() - idle_since > REBUILD_WAIT_S:
                            log.warning(
                                "market history: journal ends at seq %d, the core "
                                "is at %d; history may miss the rest",
                                scratch.last_seq,
                                target,
                            )
                            break
                        await asyncio.sleep(0.01)
        finally:
            pending, self._pending = self._pending or [], None
            for cmd, seq, ts, events in pending:
                self.feed(cmd, seq, ts, events)
            self.rebuilt = True
        info["seconds"] = round(loop.time() - t0, 3)
        self.rebuild_info = info
        log.info(
            "market history: %d journal records read back, %d trades (%.2f s)",
            info["records"],
            info["trades"],
            info["seconds"],
        )
        return info

    # ------------------------------------------------------------------ reading
    def boards(self, instrument: str | None = None) -> list[tuple[str, str]]:
        return sorted(b for b in self.trades if instrument is None or b[0] == instrument)

    def public_trades(
        self,
        instrument: str | None = None,
        segment: str | None = None,
        *,
        t_from: int | None = None,
        t_to: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[TradeRow]:
        """Public trades, newest first: of one board, of every board of an instrument
        (``segment`` None), or of every board (``instrument`` None)."""
        if instrument is not None and segment is not None:
            board = (instrument, segment)
            return _newest_first(
                self.trades.get(board),
                before,
                t_from,
                t_to,
                limit,
                _trade_maker(board),
                ts_of=_packed_ts,
            )
        rows: list[TradeRow] = []
        for b, kept in self.trades.items():
            if (instrument is None or b[0] == instrument) and (segment is None or b[1] == segment):
                rows += _newest_first(
                    kept, before, t_from, t_to, limit, _trade_maker(b), ts_of=_packed_ts
                )
        rows.sort(key=lambda r: -r.trade_id)
        return rows[:limit]

    def firm_executions(
        self,
        firm_id: str,
        instrument: str | None = None,
        *,
        t_from: int | None = None,
        t_to: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[ExecRow]:
        keep = None if instrument is None else (lambda t: t.instrument == instrument)
        return _newest_first(
            self.executions.get(firm_id), before, t_from, t_to, limit, _exec_row, keep
        )

    def order_events(
        self,
        firm_id: str,
        instrument: str | None = None,
        *,
        t_from: int | None = None,
        t_to: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[OrderRow]:
        keep = None if instrument is None else (lambda e: e.instrument == instrument)
        return _newest_first(
            self.orders.get(firm_id), before, t_from, t_to, limit, _order_row, keep
        )

    def minute_bars(self, instrument: str, segment: str = "main") -> list[dict]:
        """Today's 1-minute bars of one board, oldest first (fen, ns)."""
        bars = self.bars.get((instrument, segment)) or {}
        return [
            {
                "ts": m,
                "open_fen": b[0],
                "high_fen": b[1],
                "low_fen": b[2],
                "close_fen": b[3],
                "volume": b[4],
                "trades": b[5],
            }
            for m, b in sorted(bars.items())
        ]

    def candle_series(self, instrument: str, segment: str = "main", limit: int = 120) -> list[dict]:
        return self.candles.series(board_key(instrument, segment), limit)
