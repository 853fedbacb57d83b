// Small helpers shared by the views: DOM building, number formatting, errors shown in words.

/** An error from the server (websocket error reply or HTTP error body) or the client. */
export class ApiError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.code = code || "ERROR";
    this.status = status;
  }
  /** "INSUFFICIENT_CASH: not enough free cash" — the stable code and the server's words. */
  get text() {
    return this.message && this.message !== this.code ? `${this.code}: ${this.message}` : this.code;
  }
}

export function errorText(err) {
  if (err instanceof ApiError) return err.text;
  if (err && err.message) return err.message;
  return String(err);
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** el("td", {class: "num", text: "85.50"}, child, ...) */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function setRows(tbody, rows, emptyText, cols) {
  tbody.replaceChildren(...(rows.length ? rows
    : [el("tr", { class: "empty" }, el("td", { colspan: cols, text: emptyText }))]));
}

/** Decimal price string -> integer fen (exact; prices are never floats in the console). */
export function toFen(s) {
  if (s === null || s === undefined || s === "") return null;
  const m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(String(s).trim());
  if (!m) return null;
  const fen = parseInt(m[2], 10) * 100 + parseInt((m[3] || "0").padEnd(2, "0"), 10);
  return m[1] ? -fen : fen;
}

export function fenToStr(fen) {
  if (fen === null || fen === undefined) return "—";
  const neg = fen < 0; const a = Math.abs(fen);
  return `${neg ? "-" : ""}${Math.floor(a / 100)}.${String(a % 100).padStart(2, "0")}`;
}

const grouper = new Intl.NumberFormat("en-US");
export const qty = (n) => (n === null || n === undefined ? "—" : grouper.format(n));

/** "1234567.50" -> "1,234,567.50" without going through floats. */
export function money(s) {
  if (s === null || s === undefined) return "—";
  const [i, f] = String(s).split(".");
  const neg = i.startsWith("-");
  const digits = neg ? i.slice(1) : i;
  return `${neg ? "-" : ""}${grouper.format(BigInt(digits))}${f !== undefined ? "." + f : ""}`;
}

export const px = (s) => (s === null || s === undefined ? "—" : s);

/** A time as the server writes it for people (ISO-8601 with its offset,
 * "2027-12-31T00:00:00+08:00", docs/PROTOCOL.md "Units"), or the websocket's ts (integer ns, a
 * number or a digit string) -> ms since the epoch; null for none. */
export function timeMs(t) {
  if (t === null || t === undefined || t === "") return null;
  if (typeof t === "string" && !/^\d+$/.test(t)) {
    const ms = Date.parse(t);
    return Number.isNaN(ms) ? null : ms;
  }
  return Number(BigInt(t) / 1000000n);
}

const ISO = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(?::\d\d(?:\.\d+)?)?(Z|[+-]\d\d:\d\d)$/;

/** An ISO-8601 time as the API writes it -> "2027-06-01 08:00 +08:00": the market's local
 * time with its offset, as the server wrote it (nothing converted in the browser). */
export function whenText(iso) {
  const m = ISO.exec(iso || "");
  if (!m) return iso ? String(iso) : "—";
  return `${m[1]} ${m[2]} ${m[3] === "Z" ? "+00:00" : m[3]}`;
}

/** An ISO-8601 time as the API writes it -> its date in the market's zone, "2027-06-01"; the
 * websocket's ns (no zone on it) -> the UTC date. */
export function dateText(t) {
  const m = ISO.exec(typeof t === "string" ? t : "");
  if (m) return m[1];
  const ms = timeMs(t);
  return ms === null ? "—" : new Date(ms).toISOString().slice(0, 10);
}

export function nsToTime(ns) {
  const ms = timeMs(ns);
  if (!ms) return "—";
  return new Date(ms).toISOString().slice(11, 19);
}

/** A percent string as the server writes it ("5.00") -> "5 %"; "—" for none. */
export function pctText(s) {
  return s === null || s === undefined ? "—" : bpsToPct(pctToBps(s));
}

export function nowTime() {
  return new Date().toISOString().slice(11, 19);
}

/** Percent string ("5", "2.5") -> integer basis points; null if not a valid percent. */
export function pctToBps(s) {
  const m = /^(\d{1,3})(?:\.(\d{1,2}))?$/.exec(String(s).trim());
  if (!m) return null;
  return parseInt(m[1], 10) * 100 + parseInt((m[2] || "0").padEnd(2, "0"), 10);
}

export function bpsToPct(bps) {
  if (bps === null || bps === undefined) return "—";
  const s = (bps / 100).toFixed(2).replace(/\.?0+$/, "");
  return `${s} %`;
}

// ------------------------------------------------------------------ toasts
export function toast(message, kind = "error", ms = 8000) {
  const box = document.getElementById("toasts");
  const t = el("div", { class: `toast ${kind}` },
    el("span", { class: "toast-msg", text: message }),
    el("button", { class: "toast-x", "aria-label": "Dismiss", text: "×",
      onclick: () => t.remove() }));
  box.append(t);
  if (ms) setTimeout(() => t.remove(), ms);
  while (box.children.length > 5) box.firstChild.remove();
  return t;
}

/** Show an error in words in a form's error line and as a toast. */
export function showError(target, err, prefix = "") {
  const msg = (prefix ? prefix + " — " : "") + errorText(err);
  if (target) {
    target.textContent = msg;
    target.hidden = false;
  }
  toast(msg, "error");
  console.warn(msg, err);
}

export function clearMsg(...targets) {
  for (const t of targets) if (t) t.textContent = "";
}
