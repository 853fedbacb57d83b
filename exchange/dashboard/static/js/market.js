// Market view: instruments and their boards (segments), live L2 depth, recent trades, tickers,
// daily OHLC and today's 1-minute bars - each of them per board: the selected board's ticker,
// candles and trades, never a mix of main, sme and chain:<id>.
import { $, el, setRows, qty, px, nsToTime, toFen, fenToStr, showError, toast, errorText } from "./util.js";
import { publicApi } from "./api.js";
import { WsClient } from "./wsclient.js";
import { CandleChart, minuteOf } from "./chart.js";

const DEPTH_LEVELS = 12;
const TRADES_KEPT = 60;

/** A board's key, as the ticker channels name it: the instrument for main, else "SYM@seg". */
export const boardKey = (sym, seg) => (!seg || seg === "main" ? sym : `${sym}@${seg}`);

/** A trade's time of day in the market's zone: from its ISO-8601 "at", else its ns "ts". */
const timeOf = (t) => (t.at ? t.at.slice(11, 19) : nsToTime(t.ts));

export class MarketView {
  constructor({ keys, setConn }) {
    this.keys = keys;
    this.setConn = setConn;
    this.instruments = []; // from /api/v1/instruments
    this.sel = { instrument: null, segment: "main" };
    this.books = new Map(); // "SYM:seg" -> LocalBook
    this.trades = new Map(); // board key -> [trade, ...] newest first
    this.tickers = new Map(); // board key -> ticker
    this.days = new Map(); // board key -> current trading day (from the candle endpoint)
    this.client = null;
    this.chart = new CandleChart($("#chart"));
    this.intraday = new CandleChart($("#chart-intraday"), { kind: "intraday" });
    this.listeners = new Set(); // other views that want instrument / ticker updates
  }

  async start() {
    $("#market-key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const k = $("#market-key").value.trim();
      if (k) this.useKey(k, "market");
    });
    try {
      await this.loadInstruments();
    } catch (e) {
      showError(null, e, "Could not load instruments");
    }
    const key = this.keys.get("market") || this.keys.get("operator") || this.keys.get("firm");
    if (key) this.useKey(key, null);
    else {
      // public data (instruments, candles, recent trades) needs no key; live depth does
      $("#market-signin").hidden = false;
      this.renderDepth();
      this.loadRecentTrades();
    }
    setInterval(() => this.refreshCandles(), 60000);
  }

  async loadInstruments() {
    const r = await publicApi.get("/instruments");
    // allowances first (latest vintage first), then offsets
    const rank = (i) => [i.kind === "allowance" ? 0 : 1, -(i.vintage || 0), i.instrument];
    this.instruments = r.instruments.slice().sort((a, b) => {
      const ra = rank(a), rb = rank(b);
      for (let k = 0; k < ra.length; k++) if (ra[k] !== rb[k]) return ra[k] < rb[k] ? -1 : 1;
      return 0;
    });
    // the instrument list carries the main board's statistics; the other boards' come with
    // their ticker channels
    for (const t of r.instruments) if (!this.tickers.has(t.instrument)) this.tickers.set(t.instrument, t);
    if (!this.sel.instrument && this.instruments.length) this.sel.instrument = this.instruments[0].instrument;
    this.renderChips();
    this.renderTicker();
    this.renderOverview();
    this.renderMarketState();
    for (const fn of this.listeners) fn("instruments", this.instruments);
    this.refreshCandles();
  }

  segmentsOf(sym) {
    const i = this.instruments.find((x) => x.instrument === sym);
    return i ? i.segments : [];
  }

  /** Connect the market-data session with a key (any role). */
  async useKey(key, remember) {
    if (this.client && this.client.state === "online") return;
    if (this.client) this.client.close();
    const c = new WsClient(key, { onStatus: (s, d) => this.onStatus(s, d) });
    this.client = c;
    try {
      await c.connect();
    } catch (e) {
      if (remember) showError(null, e, "Market data sign-in failed");
      $("#market-signin").hidden = false;
      return;
    }
    if (remember) this.keys.set(remember, key);
    $("#market-signin").hidden = true;
    await this.subscribeAll();
  }

  onStatus(state, detail) {
    this.setConn(state, detail);
    if (state === "error" && detail && this.client && this.client._hadSession) toast(`Connection lost — ${detail}`, "error");
    else if (state === "reconnecting") toast(`Market data connection lost — ${detail}; reconnecting`, "warn", 4000);
    else if (detail && state === "online" && detail.includes(":")) toast(detail, "error");
  }

  async subscribeAll() {
    const c = this.client;
    const subs = [];
    for (const ins of this.instruments) {
      const sym = ins.instrument;
      subs.push(c.subscribe(`trades:${sym}`, (data) => this.onTrade(data)));
      for (const seg of ins.segments) {
        // one ticker per board: ticker:SYM is the main board's, ticker:SYM@seg another's
        subs.push(c.subscribe(`ticker:${boardKey(sym, seg)}`, (data) => this.onTicker(data, seg),
          (r) => { if (r.snapshot) this.onTicker(r.snapshot, seg); }));
        subs.push(c.subscribeBook(sym, seg, (book) => this.onBook(book)));
      }
    }
    const results = await Promise.allSettled(subs);
    for (const r of results) if (r.status === "rejected") showError(null, r.reason, "Subscription failed");
    await this.loadRecentTrades();
  }

  /** The selected board's trades from before this page subscribed: GET /trades, the
   * journal-backed history (it survives a server restart), merged with the live ones. */
  async loadRecentTrades() {
    const { instrument: sym, segment: seg } = this.sel;
    if (!sym) return;
    const key = boardKey(sym, seg);
    try {
      const q = new URLSearchParams({ instrument: sym, segment: seg, limit: String(TRADES_KEPT) });
      const r = await publicApi.get(`/trades?${q}`);
      const byId = new Map((this.trades.get(key) || []).map((t) => [t.trade_id, t]));
      for (const t of r.trades) if (!byId.has(t.trade_id)) byId.set(t.trade_id, t);
      this.trades.set(key, [...byId.values()].sort((a, b) => b.trade_id - a.trade_id).slice(0, TRADES_KEPT));
    } catch (e) {
      showError(null, e, `Recent trades of ${sym} · ${seg}`);
    }
    if (key === boardKey(this.sel.instrument, this.sel.segment)) this.renderTrades();
  }

  onBook(book) {
    const key = `${book.instrument}:${book.segment}`;
    this.books.set(key, book);
    this.scheduleRender(key);
  }

  notify(what, data) {
    for (const fn of this.listeners) fn(what, data);
  }

  scheduleRender(key) {
    this.dirty = this.dirty || new Set();
    this.dirty.add(key);
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = null;
      const d = this.dirty; this.dirty = new Set();
      if (d.has(`${this.sel.instrument}:${this.sel.segment}`)) this.renderDepth();
      this.renderOverview();
      this.notify("book", d);
    });
  }

  /** A board's ticker (``seg``: the board it was subscribed for, when the push omits it). */
  onTicker(t, seg) {
    const key = boardKey(t.instrument, t.segment || seg);
    const prev = this.tickers.get(key);
    this.tickers.set(key, t);
    const selected = key === boardKey(this.sel.instrument, this.sel.segment);
    // a new trading day (end of day resets the day's statistics): reload the charts
    if (prev && selected && (t.trades ?? 0) < (prev.trades ?? 0)) this.refreshCandles();
    if (selected) this.renderTicker();
    if (key !== t.instrument) return; // the rest reads the main boards (market state, chips)
    this.renderMarketState();
    for (const fn of this.listeners) fn("ticker", t);
  }

  renderMarketState() {
    const halted = [...this.tickers.values()].filter((x) => x.halted).map((x) => x.instrument);
    const ms = $("#market-state");
    ms.textContent = halted.length ? "HALT ACTIVE" : "TRADING";
    ms.title = halted.length ? `halted: ${halted.join(", ")}` : "all instruments trading";
    ms.dataset.state = halted.length ? "halted" : "open";
  }

  onTrade(tr) {
    const key = boardKey(tr.instrument, tr.segment);
    const list = this.trades.get(key) || [];
    if (list.some((t) => t.trade_id === tr.trade_id)) return;
    list.unshift(tr);
    if (list.length > TRADES_KEPT) list.length = TRADES_KEPT;
    this.trades.set(key, list);
    if (key === boardKey(this.sel.instrument, this.sel.segment)) {
      this.renderTrades(tr.trade_id);
      const day = this.days.get(key);
      if (day !== undefined) this.chart.trade(day, tr.price, tr.qty);
      const m = minuteOf(tr.at, tr.ts);
      if (m !== null) this.intraday.trade(m, tr.price, tr.qty, tr.at && `${tr.at.slice(0, 16)}:00${tr.at.slice(19).replace(/^\.\d+/, "")}`);
    }
  }

  select(sym, seg) {
    const segs = this.segmentsOf(sym);
    this.sel = { instrument: sym, segment: segs.includes(seg) ? seg : (segs.includes("main") ? "main" : segs[0]) };
    this.renderChips();
    this.renderTicker();
    this.renderDepth();
    this.renderTrades();
    this.renderOverview();
    this.refreshCandles();
    this.loadRecentTrades();
  }

  /** The selected board's daily candles and today's 1-minute bars. */
  async refreshCandles() {
    const { instrument: sym, segment: seg } = this.sel;
    if (!sym) return;
    const key = boardKey(sym, seg);
    const enc = encodeURIComponent(sym), q = `segment=${encodeURIComponent(seg)}`;
    const still = () => key === boardKey(this.sel.instrument, this.sel.segment);
    try {
      const r = await publicApi.get(`/market/candles/${enc}?limit=90&${q}`);
      this.days.set(key, r.day);
      if (still()) {
        // only the main board sets the reference price: the line is drawn on its chart only
        this.chart.set(r.candles, seg === "main" ? r.reference_price : null);
        $("#chart-meta").textContent = `${sym} · ${seg} board · trading day ${r.day}`;
      }
    } catch (e) {
      if (still()) $("#chart-meta").textContent = `chart unavailable — ${errorText(e)}`;
    }
    try {
      const r = await publicApi.get(`/market/bars/${enc}?${q}`);
      if (still()) {
        this.intraday.set(r.bars, null);
        $("#chart-intraday-meta").textContent = `${sym} · ${seg} board · today, 1-minute bars`;
      }
    } catch (e) {
      if (still()) $("#chart-intraday-meta").textContent = `bars unavailable — ${errorText(e)}`;
    }
  }

  // ------------------------------------------------------------------ rendering
  renderChips() {
    const box = $("#instrument-chips");
    box.replaceChildren(...this.instruments.map((i) => {
      const t = this.tickers.get(i.instrument) || i;
      return el("button", {
        class: "chip" + (i.instrument === this.sel.instrument ? " active" : ""),
        dataset: { instrument: i.instrument }, onclick: () => this.select(i.instrument, this.sel.segment),
      }, el("span", { class: "chip-sym", text: i.instrument }),
      el("span", { class: "chip-kind", text: i.kind === "offset" ? `offset · ${i.offset_type || ""}` : "allowance" }),
      el("span", { class: "chip-last", text: px(t.last || t.reference_price) }));
    }));
    const segs = this.segmentsOf(this.sel.instrument);
    $("#segment-chips").replaceChildren(...segs.map((s) => el("button", {
      class: "chip seg" + (s === this.sel.segment ? " active" : ""), dataset: { segment: s },
      onclick: () => this.select(this.sel.instrument, s), text: s,
    })));
  }

  renderTicker() {
    const key = boardKey(this.sel.instrument, this.sel.segment);
    $("#ticker").dataset.board = key;
    const t = this.tickers.get(key) || { instrument: this.sel.instrument, segment: this.sel.segment };
    $("#tk-last").textContent = px(t.last);
    const chg = $("#tk-chg");
    const last = toFen(t.last), ref = toFen(t.reference_price);
    if (last !== null && ref) {
      const d = last - ref;
      const pct = ((d / ref) * 100).toFixed(2);
      chg.textContent = `${d >= 0 ? "+" : ""}${fenToStr(d)} (${d >= 0 ? "+" : ""}${pct}%)`;
      chg.dataset.dir = d > 0 ? "up" : d < 0 ? "down" : "flat";
    } else { chg.textContent = ""; }
    $("#tk-bid").textContent = px(t.best_bid);
    $("#tk-ask").textContent = px(t.best_ask);
    $("#tk-open").textContent = px(t.day_open);
    $("#tk-high").textContent = px(t.day_high);
    $("#tk-low").textContent = px(t.day_low);
    $("#tk-vwap").textContent = px(t.vwap);
    $("#tk-vol").textContent = qty(t.volume);
    $("#tk-band").textContent = t.band ? `${px(t.reference_price)} · ${t.band[0]}–${t.band[1]}` : px(t.reference_price);
    const st = $("#tk-status");
    st.textContent = t.halted ? "HALTED" : "TRADING";
    st.dataset.state = t.halted ? "halted" : "open";
  }

  renderDepth() {
    const key = `${this.sel.instrument}:${this.sel.segment}`;
    const book = this.books.get(key);
    const body = $("#depth-body");
    if (!book) {
      setRows(body, [], this.client ? "Loading…" : "Sign in to see live depth", 4);
      $("#depth-meta").textContent = "";
      $("#depth-spread").textContent = "";
      return;
    }
    const bids = book.bidLevels().slice(0, DEPTH_LEVELS);
    const asks = book.askLevels().slice(0, DEPTH_LEVELS);
    const cum = (lv) => { let s = 0; return lv.map(([, q]) => (s += q)); };
    const cb = cum(bids), ca = cum(asks);
    const max = Math.max(cb[cb.length - 1] || 0, ca[ca.length - 1] || 0, 1);
    const rows = [];
    const n = Math.max(bids.length, asks.length);
    for (let i = 0; i < n; i++) {
      const b = bids[i], a = asks[i];
      const tdBq = el("td", { class: "num bidq depthbar", text: b ? qty(b[1]) : "" });
      const tdB = el("td", { class: "num bid", text: b ? b[0] : "" });
      const tdA = el("td", { class: "num ask", text: a ? a[0] : "" });
      const tdAq = el("td", { class: "num askq depthbar", text: a ? qty(a[1]) : "" });
      if (b) { tdBq.style.setProperty("--w", `${(cb[i] / max) * 100}%`); tdB.dataset.price = b[0]; tdB.dataset.qty = b[1]; tdB.dataset.side = "bid"; }
      if (a) { tdAq.style.setProperty("--w", `${(ca[i] / max) * 100}%`); tdA.dataset.price = a[0]; tdA.dataset.qty = a[1]; tdA.dataset.side = "ask"; }
      rows.push(el("tr", {}, tdBq, tdB, tdA, tdAq));
    }
    setRows(body, rows, "Empty book", 4);
    const bb = bids[0] && toFen(bids[0][0]), ba = asks[0] && toFen(asks[0][0]);
    $("#depth-spread").textContent = bb && ba ? `Spread ${fenToStr(ba - bb)} · mid ${fenToStr(Math.round((ba + bb) / 2))}` : "";
    $("#depth-meta").textContent = `${key.replace(":", " · ")} · book seq ${book.seq}${book.resyncs ? ` · ${book.resyncs} resync(s)` : ""}`;
  }

  renderTrades(newId) {
    const key = boardKey(this.sel.instrument, this.sel.segment);
    const list = (this.trades.get(key) || []);
    const rows = list.map((t) => el("tr", { class: t.trade_id === newId ? "flash" : "", dataset: { tradeId: t.trade_id } },
      el("td", { text: timeOf(t) }),
      el("td", { text: t.segment }),
      el("td", { class: `num ${t.aggressor === "buy" ? "bid" : "ask"}`, text: t.price }),
      el("td", { class: "num", text: qty(t.qty) })));
    setRows($("#trades-body"), rows, "No recent trades", 4);
    $("#trades-meta").textContent = this.sel.instrument ? `${this.sel.instrument} · ${this.sel.segment} board` : "";
  }

  renderOverview() {
    const rows = [];
    for (const ins of this.instruments) {
      for (const seg of ins.segments) {
        const key = `${ins.instrument}:${seg}`;
        const b = this.books.get(key);
        const bid = b ? b.bidLevels()[0] : null, ask = b ? b.askLevels()[0] : null;
        const sum = (m) => { let s = 0; for (const q of m.values()) s += q; return s; };
        const sel = ins.instrument === this.sel.instrument && seg === this.sel.segment;
        rows.push(el("tr", { class: "clickable" + (sel ? " selected" : ""), dataset: { book: key },
          onclick: () => this.select(ins.instrument, seg) },
        el("td", { text: ins.instrument }), el("td", { text: seg }),
        el("td", { class: "num", text: bid ? qty(bid[1]) : "—" }),
        el("td", { class: bid ? "num bid" : "num muted", text: bid ? bid[0] : "—" }),
        el("td", { class: ask ? "num ask" : "num muted", text: ask ? ask[0] : "—" }),
        el("td", { class: "num", text: ask ? qty(ask[1]) : "—" }),
        el("td", { class: "num", text: b ? qty(sum(b.bids)) : "—" }),
        el("td", { class: "num", text: b ? qty(sum(b.asks)) : "—" }),
        el("td", { class: "num muted", text: b ? String(b.seq) : "—" })));
      }
    }
    setRows($("#books-body"), rows, "No instruments", 9);
  }
}
