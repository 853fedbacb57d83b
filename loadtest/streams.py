"""One seeded command stream for the engine benchmarks and the journal load test.

``generate(commands, seed)`` returns a :class:`Stream`: a list of plain tuples, independent of
any engine, so the same stream can drive the book-only matcher, the full core and the peer
engines.

* ``(ADD, oid, side, price, qty, account)`` — a GTC limit order; ``oid`` counts the adds from 1,
  which is also the order id the core assigns on a fresh market where every order is accepted
  (the setup from :func:`market_setup_commands` makes sure of that: funded accounts, prices
  inside the band, buyers and sellers in disjoint accounts so self-trade prevention never
  fires);
* ``(CANCEL, oid, account)`` — cancel an order that is resting at that point of the stream.

Shape: limit orders around a mid price that walks slowly (bounded well inside the +-10 % band),
mostly passive at 1..``depth_ticks`` ticks from the mid so the book grows deep, a share
(``cross_ratio``) that cross the spread and sweep one or more levels, and about ``cancel_ratio``
cancels of orders that are live at that point.

The generator tracks which orders are live with its own small heap matcher (price-time, no
self-trade possible), independent of :mod:`exchange.core.book`, so a bug in the book cannot hide
in the stream.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

ADD = 0
CANCEL = 1
BUY = "buy"
SELL = "sell"

INSTRUMENT = "CEA-2026"
SEGMENT = "main"


@dataclass
class Stream:
    ops: list
    seed: int
    n_buyers: int
    n_sellers: int
    mid: int
    # what the generator's own matcher saw: a cross-check for every engine that runs the stream
    expected_fills: int = 0
    expected_traded_qty: int = 0
    expected_resting: int = 0
    counts: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def buyers(self) -> list[str]:
        return [f"B{i:03d}" for i in range(self.n_buyers)]

    @property
    def sellers(self) -> list[str]:
        return [f"S{i:03d}" for i in range(self.n_sellers)]


def generate(
    commands: int,
    seed: int = 42,
    *,
    mid: int = 8500,
    depth_ticks: int = 300,
    cancel_ratio: float = 0.25,
    cross_ratio: float = 0.10,
    max_qty: int = 100,
    n_buyers: int = 50,
    n_sellers: int = 50,
) -> Stream:
    """A seeded stream of ``commands`` adds and cancels (see the module docstring)."""
    rng = random.Random(seed)
    rand = rng.random
    randint = rng.randint
    ops: list = []
    live: dict[int, list] = {}  # oid -> [side, price, leaves, account]
    live_ids: list[int] = []  # for O(1) random choice
    pos: dict[int, int] = {}
    bids: list = []  # heap of (-price, oid), stale entries skipped lazily
    asks: list = []  # heap of (price, oid)
    lo, hi = mid * 95 // 100, mid * 105 // 100
    cur = mid
    oid = 0
    fills = traded = 0
    n_add = n_cancel = n_cross = 0

    def drop(i: int) -> None:
        j = pos.pop(i)
        last = live_ids.pop()
        if last != i:
            live_ids[j] = last
            pos[last] = j
        del live[i]

    buyers = [f"B{i:03d}" for i in range(n_buyers)]
    sellers = [f"S{i:03d}" for i in range(n_sellers)]
    for _ in range(commands):
        r = rand()
        if r < cancel_ratio and live_ids:
            victim = live_ids[randint(0, len(live_ids) - 1)]
            ops.append((CANCEL, victim, live[victim][3]))
            drop(victim)
            n_cancel += 1
            continue
        # random walk of the mid, bounded inside the band
        step = rand()
        if step < 0.05 and cur > lo:
            cur -= 1
        elif step > 0.95 and cur < hi:
            cur += 1
        oid += 1
        n_add += 1
        side = BUY if rand() < 0.5 else SELL
        crossing = rand() < cross_ratio
        if crossing:
            n_cross += 1
            off = randint(0, 20)
            qty = randint(1, max_qty * 3)
            price = cur + off if side == BUY else cur - off
        else:
            # skewed towards the touch: most orders near the mid, a long tail deep in the book
            off = 1 + int(depth_ticks * rand() ** 2)
            qty = randint(1, max_qty)
            price = cur - off if side == BUY else cur + off
        acct = (
            buyers[randint(0, n_buyers - 1)] if side == BUY else sellers[randint(0, n_sellers - 1)]
        )
        ops.append((ADD, oid, side, price, qty, acct))
        # match against the generator's own book
        left = qty
        if side == BUY:
            opp = asks
        else:
            opp = bids
        while left and opp:
            key, mid_ = opp[0]
            m = live.get(mid_)
            if m is None:
                heapq.heappop(opp)
                continue
            if (side == BUY and key > price) or (side == SELL and -key < price):
                break
            q = min(left, m[2])
            m[2] -= q
            left -= q
            fills += 1
            traded += q
            if not m[2]:
                heapq.heappop(opp)
                drop(mid_)
        if left:
            live[oid] = [side, price, left, acct]
            pos[oid] = len(live_ids)
            live_ids.append(oid)
            if side == BUY:
                heapq.heappush(bids, (-price, oid))
            else:
                heapq.heappush(asks, (price, oid))
    return Stream(
        ops,
        seed,
        n_buyers,
        n_sellers,
        mid,
        fills,
        traded,
        len(live),
        {"add": n_add, "cancel": n_cancel, "crossing_add": n_cross},
    )


# --------------------------------------------------------------------------- the core


def market_setup_commands(stream: Stream, *, cash_fen: int = 10**12, units: int = 10**7) -> list:
    """Commands that build a market where every order of ``stream`` is accepted: the default
    market rules from ``config/default.toml`` plus the stream's buyers (cash) and sellers
    (allowances of :data:`INSTRUMENT`)."""
    from exchange.app.config import load_settings
    from exchange.core.commands import DepositCash, IssueUnits, RegisterFirm, SetPriceBand
    from exchange.app.market import market_commands

    cmds = market_commands(load_settings())
    cmds.append(SetPriceBand(instrument=INSTRUMENT, reference_price=stream.mid))
    for b in stream.buyers:
        cmds.append(RegisterFirm(firm_id=b, size_class="large"))
        cmds.append(DepositCash(account=b, amount=cash_fen))
    for s in stream.sellers:
        cmds.append(RegisterFirm(firm_id=s, size_class="large"))
        cmds.append(IssueUnits(account=s, instrument=INSTRUMENT, qty=units, ref="bench"))
    return cmds


def iter_core_commands(
    stream: Stream, first_seq: int = 1, first_ts: int = 1_767_225_600 * 10**9, ts_step: int = 1_000
):
    """The stream as core commands (``PlaceOrder`` / ``CancelOrder``), each with its envelope
    beside it: ``(cmd, seq, ts)``, ``seq`` from ``first_seq`` and ``ts`` every ``ts_step`` ns,
    ready for ``Exchange.apply(cmd, seq, ts)``; made lazily (a million at once is a lot of
    RAM)."""
    from exchange.core.commands import CancelOrder, PlaceOrder

    seq, ts = first_seq, first_ts
    for op in stream.ops:
        if op[0] == ADD:
            _, _oid, side, price, qty, acct = op
            yield (
                PlaceOrder(
                    account=acct,
                    instrument=INSTRUMENT,
                    segment=SEGMENT,
                    side=side,
                    price=price,
                    qty=qty,
                ),
                seq,
                ts,
            )
        else:
            yield CancelOrder(account=op[2], order_id=op[1]), seq, ts
        seq += 1
        ts += ts_step


def core_commands(
    stream: Stream, first_seq: int = 1, first_ts: int = 1_767_225_600 * 10**9, ts_step: int = 1_000
) -> list:
    """:func:`iter_core_commands` as a list of ``(cmd, seq, ts)``."""
    return list(iter_core_commands(stream, first_seq, first_ts, ts_step))
