// Daily OHLC candlestick chart on a <canvas>, with volume bars. No library.
const C = {
  bg: "#0b1220", grid: "#1c2636", axis: "#7d8aa3", up: "#22c55e", down: "#ef4444",
  vol: "rgba(125,138,163,0.28)", ref: "#eab308", text: "#c7d0e0",
};

export class CandleChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.candles = [];
    this.ref = null;
    this.hover = null;
    new ResizeObserver(() => this.draw()).observe(canvas);
    canvas.addEventListener("mousemove", (e) => { this.hover = e.offsetX; this.draw(); });
    canvas.addEventListener("mouseleave", () => { this.hover = null; this.draw(); });
  }

  /** candles: [{day, open, high, low, close, volume}], prices as decimal strings */
  set(candles, ref) {
    this.candles = candles.map((c) => ({ ...c, o: +c.open, h: +c.high, l: +c.low, c: +c.close }));
    this.ref = ref ? +ref : null;
    this.draw();
  }

  /** A trade of the current day: update (or open) the last candle. */
  trade(day, price, qty) {
    const p = +price;
    let last = this.candles[this.candles.length - 1];
    if (!last || last.day !== day) {
      last = { day, open: price, high: price, low: price, close: price, volume: 0, o: p, h: p, l: p, c: p };
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
    const cs = this.candles.slice(-90);
    const padL = 8, padR = 58, padT = 12, padB = 22;
    const volH = Math.max(24, (H - padT - padB) * 0.18);
    const priceH = H - padT - padB - volH - 6;
    if (!cs.length) {
      g.fillStyle = C.axis; g.textAlign = "center";
      g.fillText(this.ref ? `No trades yet · reference price ${this.ref.toFixed(2)}` : "No trades yet", W / 2, H / 2);
      return;
    }
    let lo = Math.min(...cs.map((c) => c.l)), hi = Math.max(...cs.map((c) => c.h));
    if (this.ref) { lo = Math.min(lo, this.ref); hi = Math.max(hi, this.ref); }
    if (hi - lo < 0.02) { hi += 0.5; lo -= 0.5; }
    const pad = (hi - lo) * 0.08; hi += pad; lo -= pad;
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
      g.fillRect(xx - bw / 2, top, bw, Math.max(1, bot - top));
    });
    // day labels
    g.fillStyle = C.axis; g.textAlign = "center";
    const every = Math.ceil(cs.length / 8);
    cs.forEach((c, i) => { if (i % every === 0) g.fillText(`D${c.day}`, x(i), H - 6); });
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
    g.fillText(`D${c.day}  O ${c.open}  H ${c.high}  L ${c.low}  C ${c.close}  V ${c.volume.toLocaleString("en-US")} t`, padL + 4, padT + 4);
  }
}
