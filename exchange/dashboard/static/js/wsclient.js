// Websocket client for the exchange protocol (docs/PROTOCOL.md), in the browser.
//
//   const c = new WsClient(apiKey, { onStatus: (state, detail) => ... });
//   const me = await c.connect();                 // auth reply: {role, firm_id, ...}
//   await c.subscribe("executions", (data, seq, result) => ...);
//   const book = await c.subscribeBook("CEA-2026", "main", (book) => ...);
//   const r = await c.request("place_order", {...});   // result, or throws ApiError
//
// Envelope: requests {req_id, method, params}; replies {req_id, ok, result | error:{code,message}};
// pushes {channel, seq, data}. A book channel starts with a snapshot (in the subscribe result)
// and continues with updates numbered by the book's seq; an update that is not the next one is
// a gap: the client resubscribes and rebuilds the book from a fresh snapshot. A dropped
// connection is re-opened with back-off, re-authenticated and every subscription re-made.
import { ApiError } from "./util.js";

export class LocalBook {
  constructor(instrument, segment) {
    this.instrument = instrument;
    this.segment = segment;
    this.seq = 0;
    this.bids = new Map(); // price string -> qty
    this.asks = new Map();
    this.resyncs = 0;
  }
  load(snap) {
    this.seq = snap.book_seq;
    this.bids = new Map(snap.bids.map(([p, q]) => [p, q]));
    this.asks = new Map(snap.asks.map(([p, q]) => [p, q]));
  }
  /** Apply an update; false when it does not follow (a gap). */
  apply(seq, changes) {
    if (seq <= this.seq) return true; // already in the snapshot
    if (seq !== this.seq + 1) return false;
    for (const [side, price, q] of changes) {
      const m = side === "buy" || side === "bid" || side === "b" ? this.bids : this.asks;
      if (q === 0) m.delete(price); else m.set(price, q);
    }
    this.seq = seq;
    return true;
  }
  static cmp(a, b) { return priceKey(a) - priceKey(b); }
  /** [[price, qty], ...] best first */
  bidLevels() { return [...this.bids.entries()].sort((a, b) => priceKey(b[0]) - priceKey(a[0])); }
  askLevels() { return [...this.asks.entries()].sort((a, b) => priceKey(a[0]) - priceKey(b[0])); }
}

function priceKey(p) {
  const [i, f = ""] = p.split(".");
  return parseInt(i, 10) * 100 + parseInt((f + "00").slice(0, 2), 10);
}

export class WsClient {
  constructor(apiKey, { url = null, onStatus = null, reconnect = true } = {}) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = url || `${proto}//${location.host}/ws`;
    this.apiKey = apiKey;
    this.onStatus = onStatus || (() => {});
    this.reconnect = reconnect;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // req_id -> {resolve, reject, method}
    this.subs = new Map(); // channel -> {handler, onResult}
    this.books = new Map(); // channel -> {book, handler}
    this.lastSeq = new Map(); // per-session channel -> last seq
    this.closedByUser = false;
    this.backoff = 500;
    this.identity = null;
    this.state = "offline";
  }

  _status(state, detail = "") {
    this.state = state;
    this.onStatus(state, detail);
  }

  /** Open, authenticate; resolves with the auth result, rejects with ApiError. */
  connect() {
    this.closedByUser = false;
    return new Promise((resolve, reject) => {
      let settled = false;
      this._status("connecting");
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = async () => {
        try {
          const me = await this.request("auth", { api_key: this.apiKey });
          this.identity = me;
          this.backoff = 500;
          this._status("online", me.firm_id || me.role);
          settled = true;
          resolve(me);
          this._resubscribeAll();
        } catch (e) {
          settled = true;
          this.closedByUser = true; // a bad key does not get retried
          this._status("error", e.text || e.message);
          try { ws.close(); } catch { /* already closed */ }
          reject(e);
        }
      };
      ws.onmessage = (ev) => this._onMessage(ev.data);
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        const why = ev.reason || `connection closed (code ${ev.code})`;
        for (const [, p] of this.pending) p.reject(new ApiError("DISCONNECTED", why));
        this.pending.clear();
        if (this.ws !== ws) return;
        if (!settled) {
          settled = true;
          reject(new ApiError("DISCONNECTED", why));
          if (this._hadSession && !this.closedByUser) this._retry(why); // keep trying
          else this._status("error", why);
          return;
        }
        if (this.closedByUser) {
          if (this.state !== "error") this._status("offline"); // keep a failed auth visible
          return;
        }
        this._retry(why);
      };
    });
  }

  /** Re-open after a drop, with exponential back-off (0.5 s doubling to 8 s). */
  _retry(why) {
    this._status("reconnecting", why);
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 8000);
    setTimeout(() => {
      if (!this.closedByUser) this.connect().catch(() => {});
    }, delay);
  }

  close() {
    this.closedByUser = true;
    if (this.ws) this.ws.close(1000, "bye");
    this._status("offline");
  }

  request(method, params = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ApiError("DISCONNECTED", "not connected to the exchange"));
    }
    const req_id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(req_id, { resolve, reject, method });
      ws.send(JSON.stringify({ req_id, method, params }));
    });
  }

  _onMessage(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    const msgs = Array.isArray(msg) ? msg : [msg];
    for (const m of msgs) {
      if (m.req_id !== undefined && m.ok !== undefined) {
        const p = this.pending.get(m.req_id);
        if (!p) {
          if (!m.ok && m.error) this._status(this.state, `${m.error.code}: ${m.error.message}`);
          continue;
        }
        this.pending.delete(m.req_id);
        if (m.ok) p.resolve(m.result);
        else p.reject(new ApiError(m.error.code, m.error.message));
      } else if (m.ok === false && m.error) {
        // an error not tied to a request (bad frame, rate limit, ...): surface it
        this._status(this.state, `${m.error.code}: ${m.error.message}`);
      } else if (m.channel !== undefined) {
        this._onPush(m.channel, m.seq, m.data);
      }
    }
  }

  _onPush(channel, seq, data) {
    const b = this.books.get(channel);
    if (b) {
      if (!b.book.apply(seq, data.changes || [])) {
        b.book.resyncs += 1;
        this._resyncBook(channel);
        return;
      }
      b.handler(b.book, "update");
      return;
    }
    const s = this.subs.get(channel);
    if (!s) return;
    this.lastSeq.set(channel, seq);
    s.handler(data, seq);
  }

  async subscribe(channel, handler, onResult = null) {
    this.subs.set(channel, { handler, onResult });
    const r = await this.request("subscribe", { channel });
    if (onResult) onResult(r);
    return r;
  }

  async subscribeBook(instrument, segment, handler) {
    const channel = `book:${instrument}:${segment}`;
    const book = new LocalBook(instrument, segment);
    this.books.set(channel, { book, handler });
    const r = await this.request("subscribe", { channel });
    book.load(r.snapshot);
    handler(book, "snapshot");
    return book;
  }

  async unsubscribe(channel) {
    this.subs.delete(channel);
    this.books.delete(channel);
    try { await this.request("unsubscribe", { channel }); } catch { /* not subscribed */ }
  }

  async _resyncBook(channel) {
    const b = this.books.get(channel);
    if (!b || b.resyncing) return;
    b.resyncing = true;
    try {
      try { await this.request("unsubscribe", { channel }); } catch { /* gone already */ }
      const r = await this.request("subscribe", { channel });
      b.book.load(r.snapshot);
      b.handler(b.book, "snapshot");
    } catch (e) {
      this._status(this.state, `book resync failed: ${e.text || e.message}`);
    } finally {
      b.resyncing = false;
    }
  }

  async _resubscribeAll() {
    // after a reconnect: make every subscription again (snapshots replace local state)
    if (!this._hadSession) { this._hadSession = true; return; }
    for (const [channel, s] of this.subs) {
      try {
        const r = await this.request("subscribe", { channel });
        if (s.onResult) s.onResult(r);
      } catch (e) { this._status(this.state, `resubscribe ${channel}: ${e.text || e.message}`); }
    }
    for (const [channel, b] of this.books) {
      try {
        const r = await this.request("subscribe", { channel });
        b.book.load(r.snapshot);
        b.handler(b.book, "snapshot");
      } catch (e) { this._status(this.state, `resubscribe ${channel}: ${e.text || e.message}`); }
    }
  }
}
