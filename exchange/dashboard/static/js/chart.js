// OHLC candlestick chart on a <canvas>, with volume bars. No library. One class for both
// charts of the market view: daily candles (``kind: "daily"``, one per trading day) and
// today's 1-minute bars (``kind: "intraday"``, one per minute with a trade).
const C = {
  bg: "#0b1220", grid: "#1c2636", axis: "#7d8aa3", up: "#22c55e", down: "#ef4444",
  vol: "rgba(125,138,163,0.28)", ref: "#eab308", text: "#c7d0e0",
};

/** Minute number of an ISO-8601 time or of ns since the epoch (the key of a 1-minute bar). */
export function minuteOf(at, ts) {
  const ms = at ? Date.parse(at) : ts ? Number(BigInt(ts) / 1000000n) : NaN;
  return Number.isFinite(ms) ? Math.floor(ms / 60000) : null;
}

export class CandleChart {
  constructor(canvas, { kind = "daily" } = {}) {
    this.canvas = canvas;
    this.kind = kind;
    this.candles = [];
    this.ref = null;
    this.hover = null;
    new ResizeObserver(() => this.draw()).observe(canvas);
    canvas.addEventListener("mousemove", (e) => { this.hover = e.offsetX; this.draw(); });
    canvas.addEventListener("mouseleave", () => { this.hover = null; this.draw(); });
  }

  /** The key of a candle: its trading day, or its minute (intraday). */
  keyOf(c) { return this.kind === "intraday" ? minuteOf(c.at) : c.day; }

  /** A candle's label under the axis: "D3", or the minute "09:31" in the market's zone. */
  labelOf(c) {
    if (this.kind !== "intraday") return `D${c.day}`;
    return c.at ? c.at.slice(11, 16) : "";
  }

  /** candles: [{day | at, open, high, low, close, volume}], prices as decimal strings */
  set(candles, ref) {
    this.candles = candles.map((c) => ({ ...c, k: this.keyOf(c), o: +c.open, h: +c.high, l: +c.low, c: +c.close }));
    this.ref = ref ? +ref : null;
    this.draw();
  }

  /** A live trade: update (or open) the last candle, keyed by ``key`` (the day, or the
   * minute of ``minuteOf``); ``at``: the trade's time, for a new intraday bar's label. */
  trade(key, price, qty, at) {
    const p = +price;
    let last = this.candles[this.candles.length - 1];
    if (!last || last.k !== key) {
      last = { k: key, open: price, high: price, low: price, close: price, volume: 0, o: p, h: p, l: p, c: p };
      if (this.kind === "intraday") last.at = at || new Date(key * 60000).toISOString();
      else last.day = key;
      this.candles.push(last);
    }
    if (p > last.h) { last.h = p; last.high = price; }
    if (p < last.l) { last.l = p; last.low = price; }
    last.c = p; last.close = price; last.volume += qty;
    this.draw();
  }

  draw() {
    const cv = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const W = cv.clientWidth, H = cv.clientHeight;
    if (!W || !H) return;
    if (cv.width !== Math.round(W * dpr) || cv.height !== Math.round(H * dpr)) {
      cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
    }
    const g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = C.bg; g.fillRect(0, 0, W, H);
    g.font = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    const cs = this.candles.slice(this.kind === "intraday" ? -240 : -90);  // a session / ~4 months
    const padL = 8, padR = 58, padT = 12, padB = 22;
    const volH = Math.max(24, (H - padT - padB) * 0.18);
    const priceH = H - padT - padB - volH - 6;
    if (!cs.length) {
      g.fillStyle = C.axis; g.textAlign = "center";
      const none = this.kind === "intraday" ? "No trades today" : "No trades yet";
      g.fillText(this.ref ? `${none} · reference price ${this.ref.toFixed(2)}` : none, W / 2, H / 2);
      cv.dataset.candles = "0";
      delete cv.dataset.last;
      return;
    }
    let lo = Math.min(...cs.map((c) => c.l)), hi = Math.max(...cs.map((c) => c.h));
    if (this.ref) { lo = Math.min(lo, this.ref); hi = Math.max(hi, this.ref); }
    // a flat range (a new market's first candle, one price all day): 1 % of the price either
    // side, never below zero, so the candle sits mid-chart on a readable axis
    if (hi - lo < 0.02) {
      const mid = (hi + lo) / 2, d = Math.max(0.05, mid * 0.01);
      hi = mid + d; lo = Math.max(0, mid - d);
    }
    const pad = (hi - lo) * 0.08; hi += pad; lo = Math.max(0, lo - pad);
    const y = (p) => padT + (hi - p) / (hi - lo) * priceH;
    const plotW = W - padL - padR;
    // latest day at the right edge; a short history keeps readable candle widths
    const slot = plotW / Math.max(cs.length, 16);
    const bw = Math.max(2, Math.min(18, slot * 0.6));
    const x = (i) => W - padR - slot * (cs.length - i - 0.5);
    // grid + price axis
    g.strokeStyle = C.grid; g.lineWidth = 1; g.fillStyle = C.axis; g.textAlign = "left";
    const steps = 5;
    for (let k = 0; k <= steps; k++) {
      const p = lo + (hi - lo) * k / steps, yy = Math.round(y(p)) + 0.5;
      g.beginPath(); g.moveTo(padL, yy); g.lineTo(W - padR, yy); g.stroke();
      g.fillText(p.toFixed(2), W - padR + 6, yy + 4);
    }
    if (this.ref) {
      const yy = Math.round(y(this.ref)) + 0.5;
      g.setLineDash([4, 4]); g.strokeStyle = C.ref;
      g.beginPath(); g.moveTo(padL, yy); g.lineTo(W - padR, yy); g.stroke(); g.setLineDash([]);
    }
    const vmax = Math.max(...cs.map((c) => c.volume), 1);
    const vBase = H - padB;
    cs.forEach((c, i) => {
      const xx = x(i), up = c.c >= c.o, col = up ? C.up : C.down;
      g.fillStyle = C.vol;
      const vh = (c.volume / vmax) * volH;
      g.fillRect(xx - bw / 2, vBase - vh, bw, vh);
      g.strokeStyle = col; g.fillStyle = col;
      g.beginPath(); g.moveTo(Math.round(xx) + 0.5, y(c.h)); g.lineTo(Math.round(xx) + 0.5, y(c.l)); g.stroke();
      const top = y(Math.max(c.o, c.c)), bot = y(Math.min(c.o, c.c));
      // open = close (a doji, a single trade): a 2-px bar, visible
      g.fillRect(xx - bw / 2, bot - top < 2 ? top - 1 : top, bw, Math.max(2, bot - top));
    });
    // day / minute labels
    g.fillStyle = C.axis; g.textAlign = "center";
    const every = Math.ceil(cs.length / 8);
    cs.forEach((c, i) => { if (i % every === 0) g.fillText(this.labelOf(c), x(i), H - 6); });
    // hover read-out
    let idx = cs.length - 1;
    if (this.hover !== null) {
      let best = Infinity;
      cs.forEach((_, i) => { const d = Math.abs(x(i) - this.hover); if (d < best) { best = d; idx = i; } });
      g.strokeStyle = "rgba(199,208,224,0.25)";
      g.beginPath(); g.moveTo(Math.round(x(idx)) + 0.5, padT); g.lineTo(Math.round(x(idx)) + 0.5, vBase); g.stroke();
    }
    const c = cs[idx];
    g.textAlign = "left"; g.fillStyle = C.text;
    g.fillText(`${this.labelOf(c)}  O ${c.open}  H ${c.high}  L ${c.low}  C ${c.close}  V ${c.volume.toLocaleString("en-US")} t`, padL + 4, padT + 4);
    // what is drawn, for the page's tests and for screen readers
    cv.dataset.candles = String(cs.length);
    cv.dataset.axis = `${lo.toFixed(2)}-${hi.toFixed(2)}`;
    cv.dataset.last = c.close;
    cv.setAttribute("aria-label", `${this.kind === "intraday" ? "1-minute bars" : "daily candles"}: ${cs.length}, last close ${c.close}`);
  }
}
