// Firm view: a firm's balances, open orders and executions; place and cancel orders.
// Orders go through the websocket with the firm's own API key; the executions panel is the
// firm's blotter, GET /firms/{id}/executions (journal-backed: it survives a server restart),
// reloaded on each fill the websocket reports.
import { $, el, setRows, qty, money, px, nsToTime, pctText, toFen, showError, clearMsg, toast, ApiError } from "./util.js";
import { WsClient } from "./wsclient.js";
import { HttpApi, publicApi } from "./api.js";
import { cny, grantRows, lotSummary, renderLots } from "./sme.js";
import { categoryCell } from "./emissions.js";
import { FirmCredits } from "./registry.js";

const LIVE = new Set(["new", "partially_filled"]);

export class FirmView {
  constructor({ keys, market, setConn }) {
    this.keys = keys;
    this.market = market;
    this.setConn = setConn;
    this.client = null;
    this.firm = null;
    this.orders = new Map(); // order_id -> order
    this.execs = []; // the blotter: fills, newest first (GET /firms/{id}/executions)
    this.orderEvents = []; // order history: reports, newest first (GET /firms/{id}/orders)
    this.coidSeq = 0;
    this.placedTif = new Map(); // client_order_id -> tif of orders placed from this page
    this.credits = new FirmCredits(() => (this.http ? { http: this.http, firm: this.firm } : null));
  }

  start() {
    $("#firm-key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const k = $("#firm-key").value.trim();
      if (k) this.signIn(k, true);
    });
    $("#firm-signout").addEventListener("click", () => this.signOut());
    $("#order-form").addEventListener("submit", (e) => { e.preventDefault(); this.placeOrder(); });
    $("#cancel-all").addEventListener("click", () => this.cancelAll());
    for (const r of document.querySelectorAll("#order-form input[name=side]")) {
      r.addEventListener("change", () => this.updateTicketLabel());
    }
    $("#ord-type").addEventListener("change", () => {
      $("#ord-price").placeholder = $("#ord-type").value === "market" ? "protection price (optional)" : "85.00";
      this.updateTicketLabel();
    });
    $("#ord-instrument").addEventListener("change", () => { this.fillSegments(); this.renderQuote(); });
    $("#ord-segment").addEventListener("change", () => this.renderQuote());
    this.market.listeners.add((what) => { if (what === "book") this.renderQuote(); });
    this.market.listeners.add((what) => { if (what === "instruments") this.fillInstruments(); });
    this.fillInstruments();
    const k = this.keys.get("firm");
    if (k) this.signIn(k, false);
  }

  fillInstruments() {
    const sel = $("#ord-instrument");
    const cur = sel.value;
    sel.replaceChildren(...this.market.instruments.map((i) => el("option", { value: i.instrument, text: i.instrument })));
    if (cur) sel.value = cur;
    this.fillSegments();
  }

  fillSegments() {
    const sel = $("#ord-segment");
    const cur = sel.value;
    const segs = this.market.segmentsOf($("#ord-instrument").value);
    sel.replaceChildren(...segs.map((s) => el("option", { value: s, text: s })));
    if (segs.includes(cur)) sel.value = cur; else if (segs.includes("main")) sel.value = "main";
    this.renderQuote();
  }

  updateTicketLabel() {
    const side = document.querySelector("#order-form input[name=side]:checked").value;
    const b = $("#ord-submit");
    b.textContent = `Place ${side} order`;
    b.dataset.side = side;
  }

  async signIn(key, remember) {
    const err = $("#firm-signin-error");
    clearMsg(err);
    if (this.client) this.client.close();
    const c = new WsClient(key, { onStatus: (s, d) => this.onStatus(s, d) });
    let me;
    try {
      me = await c.connect();
    } catch (e) {
      showError(err, e, "Sign-in failed");
      if (!remember) this.keys.set("firm", null);
      return;
    }
    if (me.role !== "firm" || !me.firm_id) {
      c.close();
      showError(err, new ApiError("NOT_A_FIRM_KEY", `this key has role ${me.role}; the firm view needs a firm's API key`));
      return;
    }
    this.client = c;
    this.firm = me.firm_id;
    this.orders.clear();
    this.execs = [];
    this.orderEvents = [];
    if (remember) this.keys.set("firm", key);
    $("#firm-whoami").textContent = me.firm_id;
    $("#firm-signin").hidden = true;
    $("#firm-main").hidden = false;
    this.market.useKey(key, null);
    try {
      await c.subscribe("executions", (er) => this.onExec(er), (r) => this.loadOpenOrders(r.open_orders));
      await c.subscribe("balances", (b) => { this.renderBalances(b); this.scheduleCompliance(); },
        (r) => this.renderBalances(r.snapshot));
    } catch (e) {
      showError(null, e, "Subscribing to the firm's channels failed");
    }
    this.updateTicketLabel();
    this.renderQuote();
    this.renderExecs();
    this.http = new HttpApi(key);
    this.loadExecutions();
    this.loadOrderHistory();
    this.loadCompliance();
    this.loadSme();
    this.credits.load();
  }

  /** The firm's blotter from the server's history (the last trading days, newest first). */
  async loadExecutions() {
    const firm = this.firm;
    if (!firm || !this.http) return;
    try {
      const r = await this.http.get(`/firms/${encodeURIComponent(firm)}/executions?limit=200`);
      if (firm !== this.firm) return;
      this.execs = r.executions;
      $("#executions-meta").textContent = `fills of the last ${r.keep_days} trading days, newest first`;
    } catch (e) {
      $("#executions-meta").textContent = `executions unavailable — ${e.text || e.message}`;
    }
    this.renderExecs();
  }

  /** The firm's order history: every execution report, newest first (journal-backed). */
  async loadOrderHistory() {
    const firm = this.firm;
    if (!firm || !this.http) return;
    try {
      const r = await this.http.get(`/firms/${encodeURIComponent(firm)}/orders?limit=200`);
      if (firm !== this.firm) return;
      this.orderEvents = r.orders;
      $("#order-history-meta").textContent = `every report on the firm's orders of the last ${r.keep_days} trading days, newest first`;
    } catch (e) {
      $("#order-history-meta").textContent = `order history unavailable — ${e.text || e.message}`;
    }
    this.renderOrderHistory();
  }

  /** A report came in: reload the history (and, on a fill, the blotter) once the burst is over. */
  scheduleExecutions(fill) {
    this.fillSeen = this.fillSeen || fill;
    clearTimeout(this.execTimer);
    this.execTimer = setTimeout(() => {
      if (this.fillSeen) this.loadExecutions();
      this.fillSeen = false;
      this.loadOrderHistory();
    }, 200);
  }

  /** Holdings moved (a surrender, an allocation, a trade): refresh compliance, at most every 5 s. */
  scheduleCompliance() {
    if (this.compTimer) return;
    this.compTimer = setTimeout(() => {
      this.compTimer = null;
      // a sale of sub-quota units, a grant paid or a lot reverted also moves the holdings
      if (this.http) { this.loadCompliance(); this.loadSme(); this.credits.load(); }
    }, 5000);
  }

  /**
   * Sub-quotas the firm received (an SME: from which core firm, on what terms) or split out
   * (a core firm: to whom, on the same terms), and an SME's grant applications to the SME fund.
   */
  async loadSme() {
    const firm = this.firm;
    const enc = encodeURIComponent(firm);
    const recvBox = $("#firm-sq-received-box"), splitBox = $("#firm-sq-split-box");
    let sq = null;
    try {
      sq = await this.http.get(`/rules/sub-quotas/${enc}`);
    } catch (e) {
      recvBox.hidden = false;
      splitBox.hidden = true;
      renderLots($("#firm-sq-received"), [], "received", `Sub-quotas unavailable — ${e.text || e.message}`);
      $("#firm-sq-summary").replaceChildren();
    }
    if (firm !== this.firm) return; // signed out or switched firm meanwhile
    const isSme = sq ? sq.size_class === "sme" : false;
    if (sq) {
      // an SME always sees what it received, a core firm what it split out; the other side
      // only when there is something on it
      recvBox.hidden = !(isSme || sq.received.length);
      splitBox.hidden = !(!isSme || sq.split_out.length);
      renderLots($("#firm-sq-received"), sq.received, "received", "No sub-quotas received");
      $("#firm-sq-summary").replaceChildren(...sq.received.map((q) =>
        el("li", { dataset: { lot: q.lot_id }, text: lotSummary(q) })));
      renderLots($("#firm-sq-split"), sq.split_out, "split_out", "No sub-quotas split out");
      const out = sq.split_out.reduce((n, q) => n + q.granted, 0);
      const got = sq.received.reduce((n, q) => n + q.granted, 0);
      $("#firm-sq-meta").textContent = [
        sq.received.length ? `received ${qty(got)} t in ${sq.received.length} lot(s)` : "",
        sq.split_out.length ? `split out ${qty(out)} t in ${sq.split_out.length} lot(s)` : ""]
        .filter(Boolean).join(" · ");
    }
    await this.loadGrants(isSme);
  }

  /** The firm's own grant applications (GET /compliance/sme-fund/applications, firm key). */
  async loadGrants(isSme) {
    const panel = $("#firm-fund-panel");
    let apps;
    try {
      apps = (await this.http.get("/compliance/sme-fund/applications")).applications;
    } catch (e) {
      panel.hidden = !isSme;
      setRows($("#firm-grants tbody"), [], `Grant applications unavailable — ${e.text || e.message}`, 8);
      return;
    }
    // grants are for SMEs: a large firm's console shows the panel only if it has applications
    panel.hidden = !(isSme || apps.length);
    setRows($("#firm-grants tbody"), grantRows(apps), "No grant applications", 8);
    const received = {};
    for (const a of apps) if (a.status === "disbursed") received[a.period] = (received[a.period] || 0) + toFen(a.amount);
    let limit = null;
    try {
      const p = (await publicApi.get("/compliance/sme-fund")).params;
      limit = p ? p.sme_period_limit : null;
    } catch { /* the limit is a hint only; the applications above are what matters */ }
    const parts = Object.entries(received).sort().map(([per, fen]) =>
      `received ${cny(fen)} CNY for ${per}${limit !== null && limit !== undefined ? ` of ${cny(limit)} per period` : ""}`);
    $("#firm-fund-meta").textContent = parts.join(" · ") || (apps.length ? "nothing paid yet" : "");
  }

  /** The firm's allocation factor and, per compliance period, its statement's key figures. */
  async loadCompliance() {
    const firm = this.firm;
    const enc = encodeURIComponent(firm);
    try {
      const f = await this.http.get(`/rules/factors/${enc}`);
      const n = (f.history || []).length;
      const [i, d = ""] = String(f.phi).split(".");
      const phi = $("#firm-phi");
      if (n) {
        phi.textContent = `allocation factor φ ${i}.${d.padEnd(4, "0").slice(0, 4)} · ${n} change(s)`;
        phi.dataset.assessed = "true";
      } else {
        // never assessed: a covered firm has the configured initial φ until its first
        // assessment; a firm whose product has no benchmark is not assessed at all, and a
        // default φ shown for it would read as a finding
        const [me, bm] = await Promise.all([this.http.get(`/firms/${enc}`), this.http.get("/rules/benchmarks")]);
        if (firm !== this.firm) return;
        const covered = me.product && Object.prototype.hasOwnProperty.call(bm, me.product);
        phi.textContent = covered
          ? `allocation factor φ ${i}.${d.padEnd(4, "0").slice(0, 4)} · initial`
          : `allocation factor not assessed · no benchmark for ${me.product || "its product"}`;
        phi.dataset.assessed = "false";
      }
    } catch (e) {
      $("#firm-phi").textContent = `allocation factor unavailable — ${e.text || e.message}`;
    }
    let periods = [];
    try {
      const r = await this.http.get("/dashboard/compliance-periods");
      periods = r.periods.map((p) => p.period);
      const th = $("#firm-compliance th.categories");
      if (th && r.covered_categories) {
        const rest = (r.emission_categories || []).filter((c) => !r.covered_categories.includes(c));
        th.title = `Verified t CO₂e: E energy (fuels + electricity), P process, N natural. Covered now: ${r.covered_categories.join(", ")}`
          + (rest.length ? `; ${rest.join(", ")} reported only (*): no obligation` : "");
      }
    } catch (e) {
      setRows($("#firm-compliance tbody"), [], `Compliance unavailable — ${e.text || e.message}`, 9);
      return;
    }
    const rows = [];
    for (const p of periods) {
      let st;
      try { st = await this.http.get(`/compliance/statements/${enc}/${p}`); } catch (e) {
        rows.push(el("tr", {}, el("td", { text: String(p) }), el("td", { colspan: 8, class: "neg", text: e.text || e.message })));
        continue;
      }
      const cap = st.offsets_vs_cap;
      const alloc = st.allocation && st.allocation.exists ? st.allocation.total : null;
      rows.push(el("tr", { dataset: { period: p } },
        el("td", { class: "strong", text: String(p) }),
        el("td", {}, el("span", { class: `status ${st.status}`, title: `submission: ${st.submission.status}`,
          text: st.status === "none" ? "no record" : st.status.replace("_", " ") })),
        st.emissions_by_category && st.submission.status !== "none" ? categoryCell(st.emissions_by_category) : el("td", { class: "num", text: "—" }),
        el("td", { class: "num", text: qty(st.obligation.total) }),
        el("td", { class: "num", text: qty(st.surrendered.total) }),
        el("td", { class: "num", text: qty(st.surrendered.offsets) }),
        el("td", { class: "num", title: cap ? `cap ${pctText(cap.cap_pct)} = ${cap.cap_qty} t` : "", text: cap ? qty(cap.remaining) : "—" }),
        el("td", { class: "num", text: qty(st.outstanding) }),
        el("td", { class: "num", text: alloc === null || alloc === undefined ? "—" : qty(alloc) })));
    }
    setRows($("#firm-compliance tbody"), rows, "No compliance periods", 9);
  }

  signOut() {
    if (this.client) this.client.close();
    this.client = null;
    this.http = null;
    this.firm = null;
    this.keys.set("firm", null);
    this.orders.clear();
    this.execs = [];
    $("#firm-main").hidden = true;
    $("#firm-signin").hidden = false;
    $("#firm-key").value = "";
  }

  onStatus(state, detail) {
    this.setConn(state, detail);
    if (state === "error" && detail && this.client && this.client._hadSession) toast(`Connection lost — ${detail}`, "error");
    else if (state === "reconnecting") toast(`Firm session lost — ${detail}; reconnecting`, "warn", 4000);
    else if (state === "online" && detail && detail.includes(":")) toast(detail, "error");
  }

  loadOpenOrders(list) {
    this.orders.clear();
    for (const o of list || []) this.orders.set(o.order_id, o);
    this.renderOrders();
  }

  onExec(er) {
    this.scheduleExecutions(er.exec_type === "trade");
    if (LIVE.has(er.order_status) && er.leaves_qty > 0) {
      const o = this.orders.get(er.order_id) || {};
      this.orders.set(er.order_id, {
        ...o, order_id: er.order_id, client_order_id: er.client_order_id, instrument: er.instrument,
        segment: er.segment, side: er.side, price: er.price, qty: er.qty, cum_qty: er.cum_qty,
        leaves_qty: er.leaves_qty, order_status: er.order_status,
        tif: o.tif || this.placedTif.get(er.client_order_id) || "",
      });
    } else {
      this.orders.delete(er.order_id);
    }
    if (er.exec_type === "rejected") toast(`Order ${er.client_order_id || er.order_id} rejected — ${er.reason}`, "error");
    if (er.exec_type === "trade") toast(`${er.side === "buy" ? "Bought" : "Sold"} ${qty(er.last_qty)} t ${er.instrument} @ ${er.last_px}`, "ok", 4000);
    this.renderOrders();
    this.renderExecs();
  }

  async placeOrder() {
    const errBox = $("#order-error"), okBox = $("#order-ok");
    clearMsg(errBox, okBox);
    if (!this.client) { showError(errBox, new ApiError("NOT_SIGNED_IN", "sign in with a firm key first")); return; }
    const side = document.querySelector("#order-form input[name=side]:checked").value;
    const qtyText = $("#ord-qty").value.trim();
    if (!/^\d+$/.test(qtyText)) {
      showError(errBox, new ApiError("INVALID_QTY", "quantity must be a whole number of tonnes"));
      return;
    }
    const type = $("#ord-type").value;
    const priceText = $("#ord-price").value.trim();
    if (type === "limit" && !priceText) {
      showError(errBox, new ApiError("PRICE_REQUIRED", "a limit order needs a price"));
      return;
    }
    const params = {
      instrument: $("#ord-instrument").value, segment: $("#ord-segment").value, side,
      qty: parseInt(qtyText, 10), order_type: type, tif: $("#ord-tif").value,
      post_only: $("#ord-postonly").checked,
      client_order_id: `ui-${Date.now().toString(36)}-${++this.coidSeq}`,
    };
    if (priceText) params.price = priceText;
    this.placedTif.set(params.client_order_id, params.tif);
    const btn = $("#ord-submit");
    btn.disabled = true;
    try {
      const r = await this.client.request("place_order", params);
      okBox.textContent = `Order ${r.order_id} ${r.order_status.replace("_", " ")}: ${qty(r.cum_qty)} t filled, ${qty(r.leaves_qty)} t working`;
      okBox.dataset.orderId = r.order_id;
    } catch (e) {
      showError(errBox, e, "Order rejected");
    } finally {
      btn.disabled = false;
    }
  }

  async cancel(orderId) {
    const errBox = $("#order-error");
    clearMsg(errBox);
    try {
      const r = await this.client.request("cancel_order", { order_id: orderId });
      toast(`Order ${r.order_id} ${r.order_status}`, "ok", 3000);
    } catch (e) {
      showError(errBox, e, `Cancel of order ${orderId} failed`);
    }
  }

  async cancelAll() {
    if (!this.client) return;
    try {
      const r = await this.client.request("cancel_all", {});
      toast(`${r.canceled} order(s) canceled`, "ok", 3000);
    } catch (e) {
      showError($("#order-error"), e, "Cancel all failed");
    }
  }

  /** Best bid / ask of the ticket's book, live; clicking a side fills the price. */
  renderQuote() {
    const book = this.market.books.get(`${$("#ord-instrument").value}:${$("#ord-segment").value}`);
    const bid = book ? book.bidLevels()[0] : null, ask = book ? book.askLevels()[0] : null;
    const q = $("#ticket-quote");
    q.replaceChildren(
      el("button", { type: "button", class: "q bid", disabled: !bid, title: "Use the best bid",
        onclick: () => { if (bid) $("#ord-price").value = bid[0]; } },
      el("span", { class: "q-label", text: "Bid" }), bid ? `${bid[0]} × ${qty(bid[1])}` : "—"),
      el("button", { type: "button", class: "q ask", disabled: !ask, title: "Use the best ask",
        onclick: () => { if (ask) $("#ord-price").value = ask[0]; } },
      el("span", { class: "q-label", text: "Ask" }), ask ? `${ask[0]} × ${qty(ask[1])}` : "—"));
  }

  renderBalances(b) {
    if (!b) return;
    $("#bal-cash").textContent = money(b.cash);
    $("#bal-cash-res").textContent = money(b.cash_reserved);
    $("#bal-cash-avail").textContent = money(b.cash_available);
    $("#bal-meta").textContent = `CNY · as of seq ${b.as_of_seq}`;
    const rows = Object.entries(b.holdings || {}).map(([sym, h]) => el("tr", { dataset: { instrument: sym } },
      el("td", { text: sym }), el("td", { class: "num", text: qty(h.total) }),
      el("td", { class: "num", text: qty(h.reserved) }), el("td", { class: "num", text: qty(h.available) })));
    setRows($("#holdings tbody"), rows, "No holdings", 4);
  }

  renderOrders() {
    const list = [...this.orders.values()].sort((a, b) => b.order_id - a.order_id);
    const rows = list.map((o) => el("tr", { dataset: { orderId: o.order_id } },
      el("td", { class: "mono", text: String(o.order_id) }),
      el("td", { text: o.instrument }), el("td", { text: o.segment }),
      el("td", { class: o.side === "buy" ? "bid" : "ask", text: o.side.toUpperCase() }),
      el("td", { class: "num", text: px(o.price) }), el("td", { class: "num", text: qty(o.qty) }),
      el("td", { class: "num", text: qty(o.cum_qty) }), el("td", { class: "num", text: qty(o.leaves_qty) }),
      el("td", { text: o.tif || "" }),
      el("td", {}, el("span", { class: `status ${o.order_status}`, text: o.order_status.replace("_", " ") })),
      el("td", {}, el("button", { class: "btn small ghost", text: "Cancel", "aria-label": `Cancel order ${o.order_id}`,
        onclick: () => this.cancel(o.order_id) }))));
    setRows($("#open-orders tbody"), rows, "No open orders", 11);
  }

  renderOrderHistory() {
    const rows = this.orderEvents.map((o) => el("tr", { dataset: { eventId: o.event_id, orderId: o.order_id } },
      el("td", { text: o.at ? `${o.at.slice(0, 10)} ${o.at.slice(11, 19)}` : nsToTime(o.ts) }),
      el("td", { class: "mono", text: o.order_id ? String(o.order_id) : "—" }),
      el("td", { class: "mono", text: o.client_order_id || "" }),
      el("td", { text: `${o.instrument} · ${o.segment}` }),
      el("td", { class: o.side === "buy" ? "bid" : "ask", text: o.side.toUpperCase() }),
      el("td", { text: o.exec_type }),
      el("td", {}, el("span", { class: `status ${o.order_status}`, text: o.order_status.replace("_", " ") })),
      el("td", { class: "num", text: o.exec_type === "trade" ? `${o.last_px} (${qty(o.last_qty)} t)` : px(o.price) }),
      el("td", { class: "num", text: qty(o.qty) }),
      el("td", { class: "num", text: qty(o.cum_qty) }),
      el("td", { class: "num", text: qty(o.leaves_qty) }),
      el("td", { class: "muted", text: o.reason || "" })));
    setRows($("#order-history tbody"), rows, "No orders yet", 12);
  }

  renderExecs() {
    const rows = this.execs.map((e) => el("tr", { dataset: { tradeId: e.trade_id, orderId: e.order_id } },
      el("td", { text: e.at ? `${e.at.slice(0, 10)} ${e.at.slice(11, 19)}` : nsToTime(e.ts) }),
      el("td", { class: "mono", text: String(e.trade_id) }),
      el("td", { class: "mono", text: String(e.order_id) }),
      el("td", { text: `${e.instrument} · ${e.segment}` }),
      el("td", { class: e.side === "buy" ? "bid" : "ask", text: e.side.toUpperCase() }),
      el("td", { class: "muted", text: e.liquidity }),
      el("td", { class: "num", text: qty(e.qty) }),
      el("td", { class: "num", text: e.price }),
      el("td", { class: "num", text: e.fee && e.fee !== "0.00" ? money(e.fee) : "" }),
      el("td", { class: `num ${String(e.proceeds).startsWith("-") ? "neg" : "pos"}`, text: money(e.proceeds) })));
    setRows($("#executions tbody"), rows, "No executions yet", 10);
  }
}
