"""The trading procedure: call-style rounds of MAC-priced limit-order ladders.

Why it converges to the least-cost equilibrium
----------------------------------------------
A firm holding ``H`` allowances (held, still to be issued, banked) at allowance price p uses
the offsets cheaper than p up to their room (a share S(p) of its verified emissions), abates
to the effective cost e(p) = (1 - S) p + sum s_k p_k, and so wants to buy
``x(p) = (1 - S(p)) (B - a(e(p))) - H`` tonnes (sell if negative); x falls as p rises
(:mod:`exchange.sim.equilibrium`).

Round r of a period has a centre price p_r and a half-width w_r. The grid holds ``levels``
prices spread over p_r x [1 - w_r, 1 + w_r] (in fen, inside the price band). Every firm
posts its demand schedule on that grid as DAY limit orders:

* a buyer bids, at each level L_k, the extra tonnes it wants there: x(L_k) - x(L_k+1);
* a seller offers, at each level, the extra tonnes it would sell: -x(L_k) + x(L_k-1),
  never more than it holds (no short selling).

Sellers post first (they rest), then buyers arrive in a seeded random order, highest level
first, and cross the resting asks in price-time priority. A fill at L between a seller and a
buyer means the seller's MAC after the sale and the buyer's MAC after the purchase sit on the
right sides of L: every trade lowers total abatement cost, and no firm crosses its own
equilibrium position by more than one grid step. End of day expires what is left (EndOfDay, so
the core sets the next reference price to the day's VWAP).

Price discovery: the submitted ladders give the aggregate excess demand D(L_k) at every level,
as a call auction's indicative price would. Trades move tonnes between firms but leave
sum(H) — and so D — unchanged, so the zero of D (linear interpolation between the levels
where it changes sign) is the period's clearing price. The next round centres there and halves
w; when D does not change sign on the grid the centre moves to the edge of the grid (as far
as the price band allows) and w widens; a day locked at the band's limit rolls the reference
to it (the core's rule), so the band walks toward a clearing price outside it. Once the grid
is a few fen wide around p*, every firm's effective cost is within one grid step of the price
and total compliance cost is within a hundredth of a percent of the least-cost total
(tests/test_sim_equilibrium.py holds the price to 1 % of the closed form).
"""

from __future__ import annotations

import numpy as np

from ..core.commands import CancelAll, EndOfDay, PlaceOrder
from ..core.events import DayEnded, ExecutionReport, Posting, Trade
from .agents import Curves
from .equilibrium import OffsetRule, plan

MAX_ORDER = 99_999


class Market:
    def __init__(self, gw, pop, idx: dict[str, int], mcfg, rng: np.random.Generator):
        self.gw = gw
        self.pop = pop
        self.idx = idx
        self.m = mcfg
        self.rng = rng
        n = pop.n
        self.n = n
        self.sme = pop.sme
        self.instr = ""
        self.off_instrs: list[str] = []
        self.ref = 0
        self.rejects = 0
        # holdings per instrument as the events report them (Posting, Trade)
        self.hold: dict[str, np.ndarray] = {}
        self.new_period("", [], int(round(mcfg.initial_price * 100)))

    # ------------------------------------------------------------------ bookkeeping
    def new_period(self, instr: str, off_instrs: list[str], ref_fen: int) -> None:
        n = self.n
        self.instr = instr
        self.off_instrs = list(off_instrs)
        self.ref = ref_fen
        for sym in [instr] + self.off_instrs:
            if sym and sym not in self.hold:
                self.hold[sym] = np.zeros(n, dtype=np.int64)
        self.h = self.hold.get(instr, np.zeros(n, dtype=np.int64))
        self.bought = np.zeros(n, dtype=np.int64)
        self.sold = np.zeros(n, dtype=np.int64)
        self.cash = np.zeros(n, dtype=np.int64)  # fen, trading cash flow this period
        self.sme_revenue = np.zeros(n, dtype=np.int64)

    def _events(self, evs, acc: dict) -> int:
        """Apply one command's events to positions; returns tonnes filled for the command."""
        filled = 0
        idx = self.idx
        for ev in evs:
            tp = type(ev)
            if tp is Trade:
                q, px = ev.qty, ev.price
                b = idx.get(ev.buyer)
                s = idx.get(ev.seller)
                notional = px * q
                filled += q
                hold = self.hold.get(ev.instrument)
                if hold is not None:
                    if b is not None:
                        hold[b] += q
                    if s is not None:
                        hold[s] -= q
                if ev.instrument == self.instr:
                    if b is not None:
                        self.bought[b] += q
                    if s is not None:
                        self.sold[s] += q
                    acc["volume"] += q
                    acc["notional"] += notional
                    acc["trades"] += 1
                if b is not None:
                    self.cash[b] -= notional + ev.buyer_fee
                if s is not None:
                    got = notional - ev.seller_fee
                    for ben, amt in ev.proceeds_split:
                        if ben != ev.seller:
                            j = idx.get(ben)
                            if j is not None:
                                self.cash[j] += amt
                            got -= amt
                    self.cash[s] += got
                    if self.sme[s]:
                        self.sme_revenue[s] += got
            elif tp is Posting:
                hold = self.hold.get(ev.asset)
                if hold is not None:
                    d = idx.get(ev.debit)
                    if d is not None:
                        hold[d] -= ev.amount
                    c = idx.get(ev.credit)
                    if c is not None:
                        hold[c] += ev.amount
            elif tp is ExecutionReport:
                if ev.exec_type == "rejected":
                    self.rejects += 1
                    acc["rejects"] += 1
            elif tp is DayEnded:
                for sym, ref in ev.reference_prices:
                    if sym == self.instr:
                        self.ref = ref
                for sym, direction in ev.limit_locked:
                    if sym == self.instr:
                        acc["limit_locked"] = direction
        return filled

    def band(self) -> tuple[int, int]:
        bps = self.m.price_band_bps
        if bps <= 0 or self.ref <= 0:
            return 1, 10**12
        half = self.ref * bps // 10_000
        return max(1, self.ref - half), self.ref + half

    def _grid(self, price: float, width: float) -> np.ndarray:
        lo, hi = self.band()
        nl = self.m.levels
        if nl == 1:
            raw = np.array([price * 100])
        else:
            raw = np.linspace(price * (1 - width), price * (1 + width), nl) * 100
        lv = np.clip(np.round(raw), lo, hi).astype(np.int64)
        cap = int(self.m.price_cap * 100)
        lv = np.minimum(lv, max(cap, 1))
        return np.unique(lv)

    # ------------------------------------------------------------------ orders
    def _orders(self, side: str, rows, cols, qty, levels, segment_of) -> list:
        ids = self.pop.ids
        instr = self.instr
        out = []
        for i, k, q in zip(rows.tolist(), cols.tolist(), qty.tolist()):
            px = int(levels[k])
            seg = segment_of(i)
            while q > 0:
                c = min(q, MAX_ORDER)
                out.append(
                    PlaceOrder(
                        account=ids[i],
                        instrument=instr,
                        segment=seg,
                        side=side,
                        qty=c,
                        price=px,
                        tif="DAY",
                    )
                )
                q -= c
        return out

    def _send(self, cmds, acc, chunk: int = 2048) -> None:
        # in chunks: a day's orders for 10,000 firms return millions of event objects, and
        # holding them all at once set the run's peak memory
        for k in range(0, len(cmds), chunk):
            for evs in self.gw.send_all(cmds[k : k + chunk]):
                self._events(evs, acc)

    def _send_buys(self, cmds, acc) -> None:
        """Buy orders; with the SME board on, each first takes what SMEs offer there (IOC)
        and rests the rest on the main book."""
        if not self.m.use_sme_board:
            self._send(cmds, acc)
            return
        for c in cmds:
            ioc = PlaceOrder(
                account=c.account,
                instrument=c.instrument,
                segment="sme",
                side="buy",
                qty=c.qty,
                price=c.price,
                tif="IOC",
            )
            got = self._events(self.gw.send_all([ioc])[0], acc)
            if got < c.qty:
                c.qty -= got
                self._events(self.gw.send_all([c])[0], acc)

    def _end_day(self, acc) -> None:
        for evs in self.gw.send_all([EndOfDay()]):
            self._events(evs, acc)

    def _seg_sell(self):
        if self.m.use_sme_board:
            sme = self.sme
            return lambda i: "sme" if sme[i] else "main"
        return lambda i: "main"

    # ------------------------------------------------------------------ rounds
    def call_round(
        self,
        cv: Curves,
        rule: OffsetRule,
        base: np.ndarray,
        held: np.ndarray,
        price: float,
        width: float,
    ) -> dict:
        """One trading day. ``held``: allowances each firm holds, is still to be issued and
        has banked; at level L a firm wants ``x(L) = (1 - S(L)) (B - a(e(L))) - held``
        (:func:`exchange.sim.equilibrium.plan`: offsets cheaper than L cover their share of
        verified emissions, and the firm abates to the effective cost e(L))."""
        levels = self._grid(price, width)
        nl = len(levels)
        lv_cny = levels / 100.0
        x = (
            np.stack([plan(cv, rule, base, float(p)).allowances for p in lv_cny], axis=1)
            - held[:, None]
        )  # (n, nl)
        B = np.floor(np.clip(x, 0, None)).astype(np.int64)
        avail = np.maximum(self.h, 0)[:, None]
        S = np.minimum(np.floor(np.clip(-x, 0, None)).astype(np.int64), avail)
        bid_inc = B - np.concatenate([B[:, 1:], np.zeros((self.n, 1), np.int64)], axis=1)
        ask_inc = S - np.concatenate([np.zeros((self.n, 1), np.int64), S[:, :-1]], axis=1)
        D = B.sum(axis=0) - S.sum(axis=0)
        perm = self.rng.permutation(self.n)
        acc = dict(volume=0, notional=0, trades=0, rejects=0)
        ai = ask_inc[perm]
        r, k = np.nonzero(ai)
        self._send(self._orders("sell", perm[r], k, ai[r, k], levels, self._seg_sell()), acc)
        bi = bid_inc[perm][:, ::-1]
        r, k = np.nonzero(bi)
        buys = self._orders("buy", perm[r], nl - 1 - k, bi[r, k], levels, lambda i: "main")
        self._send_buys(buys, acc)
        self._end_day(acc)
        # indicative clearing price from the ladders
        nxt, w = price, width
        if D.any():
            wmax = max(self.m.initial_width, self.m.price_band_bps / 10_000 or 0.5)
            if D[-1] > 0:  # excess demand on the whole grid: move up, widen
                nxt = lv_cny[-1]
                w = min(2 * width, wmax)
            elif D[0] < 0:  # excess supply on the whole grid: move down, widen
                nxt = lv_cny[0]
                w = min(2 * width, wmax)
            else:
                k = int(np.argmax(D <= 0))
                if k == 0:
                    nxt = lv_cny[0]
                else:
                    d0, d1 = float(D[k - 1]), float(D[k])
                    nxt = lv_cny[k - 1] + d0 / (d0 - d1) * (lv_cny[k] - lv_cny[k - 1])
                w = max(self.m.min_width, width * 0.5)
        else:
            w = max(self.m.min_width, width * 0.5)
        # cleared: the excess demand changes sign on the grid, so the call price is a
        # clearing price and not just the edge of the grid or of the band
        cleared = bool(not D.any() or (D[-1] <= 0 <= D[0]))
        return dict(
            center=round(price, 4),
            width=round(width, 5),
            levels=nl,
            lowest=float(lv_cny[0]),
            highest=float(lv_cny[-1]),
            cleared=cleared,
            limit_locked=acc.get("limit_locked", ""),
            orders=len(buys) + int(ask_inc.astype(bool).sum()),
            volume=acc["volume"],
            notional=acc["notional"] / 100.0,
            trades=acc["trades"],
            rejects=acc["rejects"],
            vwap=round(acc["notional"] / acc["volume"] / 100.0, 4) if acc["volume"] else None,
            indicative=round(float(nxt), 4),
            next_price=float(nxt),
            next_width=w,
            reference=self.ref / 100.0,
        )

    def settle_round(self, need: np.ndarray, price: float, spread: float = 0.02) -> dict:
        """After the true-up: firms buy what they still lack and sell what is spare, at most
        ``spread`` away from the last price (inside the band)."""
        lo, hi = self.band()
        bid = int(min(max(round(price * (1 + spread) * 100), lo), hi))
        ask = int(min(max(round(price * (1 - spread) * 100), lo), hi))
        acc = dict(volume=0, notional=0, trades=0, rejects=0)
        need_i = np.round(need).astype(np.int64)
        sell = np.minimum(np.maximum(-need_i, 0), np.maximum(self.h, 0))
        buy = np.maximum(need_i, 0)
        perm = self.rng.permutation(self.n)
        s_rows = perm[sell[perm] > 0]
        b_rows = perm[buy[perm] > 0]
        self._send(
            self._orders(
                "sell",
                s_rows,
                np.zeros(len(s_rows), np.int64),
                sell[s_rows],
                np.array([ask]),
                self._seg_sell(),
            ),
            acc,
        )
        buys = self._orders(
            "buy",
            b_rows,
            np.zeros(len(b_rows), np.int64),
            buy[b_rows],
            np.array([bid]),
            lambda i: "main",
        )
        self._send_buys(buys, acc)
        self._end_day(acc)
        return dict(
            center=round(price, 4),
            width=spread,
            levels=1,
            lowest=ask / 100.0,
            highest=bid / 100.0,
            orders=len(buys) + len(s_rows),
            volume=acc["volume"],
            notional=acc["notional"] / 100.0,
            trades=acc["trades"],
            rejects=acc["rejects"],
            vwap=round(acc["notional"] / acc["volume"] / 100.0, 4) if acc["volume"] else None,
            indicative=round(price, 4),
            next_price=price,
            next_width=spread,
            reference=self.ref / 100.0,
        )

    def buy_offsets(
        self,
        off_instr: str,
        price_fen: int,
        supply: int,
        want: np.ndarray,
        supplier: str = "OFFSET-SUPPLY",
    ) -> np.ndarray:
        """The offset supplier offers ``supply`` t at the offset price; firms buy up to
        ``want`` (IOC) in a seeded random order; the rest of the offer is withdrawn."""
        acc = dict(volume=0, notional=0, trades=0, rejects=0)
        asks = []
        q = supply
        while q > 0:
            c = min(q, MAX_ORDER)
            asks.append(
                PlaceOrder(
                    account=supplier,
                    instrument=off_instr,
                    side="sell",
                    qty=c,
                    price=price_fen,
                    tif="GTC",
                )
            )
            q -= c
        self._send(asks, acc)
        perm = self.rng.permutation(self.n)
        rows = perm[want[perm] > 0]
        ids = self.pop.ids
        buys = []
        for i in rows.tolist():
            q = int(want[i])
            while q > 0:
                c = min(q, MAX_ORDER)
                buys.append(
                    PlaceOrder(
                        account=ids[i],
                        instrument=off_instr,
                        side="buy",
                        qty=c,
                        price=price_fen,
                        tif="IOC",
                    )
                )
                q -= c
        self._send(buys, acc)
        self._send([CancelAll(account=supplier, instrument=off_instr)], acc)
        return self.hold[off_instr].copy()

    def bank(self, vintage_of: dict[str, int], year: int) -> np.ndarray:
        """Allowances of earlier vintages still held (eligible when banking is on)."""
        out = np.zeros(self.n, dtype=np.int64)
        for sym, arr in self.hold.items():
            v = vintage_of.get(sym)
            if v is not None and v < year:
                out += arr
        return out
