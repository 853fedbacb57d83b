// The credit registry (docs/COMPLIANCE.md "The credit registry"): every credit unit has a
// serial ISSUER/PROJECT/VINTAGE/FIRST-LAST. The Operator view gets the registry panel (public
// serial lookup, buffer pools, removal projects with their reversals, carbon-inclusive batches,
// the conversion table and the published totals; declaring the carbon-inclusive class and
// reporting reversals); the Firm view its credits by serial and a retirement form.
// Everything on screen is in tonnes, percentages and ISO dates: the API's ns timestamps and
// grams never show raw.
import { $, el, setRows, qty, dateText, showError, clearMsg, toast, errorText, ApiError } from "./util.js";
import { publicApi } from "./api.js";

export const REGISTRY = {
  serial: (s) => `/registry/serials?serial=${encodeURIComponent(s)}`, // public
  buffer: "/registry/buffer", // public
  projects: "/registry/removal-projects",
  reversal: (id) => `/registry/removal-projects/${encodeURIComponent(id)}/reversals`,
  batches: "/registry/batches",
  table: "/registry/conversion-table", // public
  totals: "/registry/carbon-inclusive/totals", // public
  offsetClass: (t) => `/registry/offset-classes/${encodeURIComponent(t)}`,
  holdings: (firm) => `/registry/holdings/${encodeURIComponent(firm)}`,
  retire: "/registry/retirements",
};

const REMOVAL = { natural: "natural sinks", engineered: "engineered capture and storage" };
const BUFFER = "@buffer";

/** A time as the API writes it (ISO-8601 with offset) -> its date in the market's zone,
 * "2026-12-07". */
export const isoDate = (t) => dateText(t);

/** "DEMO/POWER1-CCER-2026/2026/1-5000" -> units in it (5,000); null if not a serial. */
export function serialUnits(s) {
  const m = /\/(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) return null;
  return m[2] === undefined ? 1 : Number(m[2]) - Number(m[1]) + 1;
}

/** An account in words: the buffer pool is not a firm. */
const who = (a) => (a === BUFFER ? "the buffer pool" : a);

/** A retirement's reason in words (the registry records "surrender:P[:for:SME]",
 * "voluntary[:why]", "reversal:PROJECT:cause", "expired:P"). */
export function reasonText(reason, period) {
  const r = String(reason || "");
  const [kind, ...rest] = r.split(":");
  if (kind === "surrender") {
    const p = rest[0] || period;
    return `surrendered for compliance period ${p}` + (rest[1] === "for" && rest[2] ? ` on behalf of ${rest[2]}` : "");
  }
  if (kind === "voluntary") return rest.length ? `voluntary retirement: ${rest.join(":")}` : "voluntary retirement";
  if (kind === "reversal") return `cancelled for a reversal at ${rest[0]}${rest.length > 1 ? ` (${rest.slice(1).join(":")})` : ""}`;
  if (kind === "expired") return `expired at the end of ${rest[0]}`;
  return r || "—";
}

// Server codes of the registry whose message names serials, with what they mean for a person.
const HINT = {
  DOUBLE_COUNTED: "Already retired or issued: a credit unit counts once, so it cannot be retired again.",
  SERIAL_NOT_HELD: "Your firm does not hold these serials (sold, retired or never yours): pick serials from the table.",
  UNKNOWN_SERIAL: "No such credits were ever issued in this registry, or they are another instrument.",
  BAD_QUANTITY: "The serials must add up to exactly the quantity.",
  INSUFFICIENT_HOLDINGS: "Not enough free credits: units in resting sell orders cannot be retired.",
  INELIGIBLE_OFFSET_TYPE: "This credit type does not count for compliance.",
  UNKNOWN_PROJECT: "No removal project by that id.",
  REASON_REQUIRED: "Say what caused the reversal (fire, leakage, ...).",
  REGISTRY_NOT_CONFIGURED: "This exchange runs without a credit registry.",
  FORBIDDEN: "This key may not do that.",
};

/** Show a server error with its code and message, and a sentence on what it means. */
function showRegistryError(box, e, prefix) {
  showError(box, e, prefix);
  const hint = e && HINT[e.code];
  if (hint && box) box.append(el("div", { class: "hint", text: hint }));
}

const num = (text) => el("td", { class: "num", text });

// ================================================================== operator panel
export class RegistryPanel {
  /** ``api``: a function returning the operator's HttpApi (null when signed out). */
  constructor(api) {
    this.api = api;
    this.projects = {};
    this.started = false;
  }

  start() {
    if (this.started) return;
    this.started = true;
    $("#reg-serial-form").addEventListener("submit", (e) => { e.preventDefault(); this.lookup(); });
    $("#reg-reversal-form").addEventListener("submit", (e) => { e.preventDefault(); this.reportReversal(); });
    $("#reg-class-form").addEventListener("submit", (e) => { e.preventDefault(); this.declareClass(); });
  }

  async load() {
    this.start();
    await Promise.all([this.loadBuffer(), this.loadProjects(), this.loadBatches(), this.loadTable(),
      this.loadTotals()]);
  }

  // ------------------------------------------------------------------ serial lookup (public)
  async lookup() {
    const errBox = $("#reg-serial-error"), out = $("#reg-serial-result");
    clearMsg(errBox);
    const serial = $("#reg-serial").value.trim();
    if (!serial) { showRegistryError(errBox, new ApiError("BAD_SERIAL", "enter a serial, e.g. CCER/P-0042/2026/1-500")); return; }
    let r;
    try {
      r = await publicApi.get(REGISTRY.serial(serial));
    } catch (e) {
      out.hidden = true;
      showRegistryError(errBox, e, `Lookup of ${serial} failed`);
      return;
    }
    this.renderLookup(r);
  }

  renderLookup(r) {
    const out = $("#reg-serial-result");
    out.hidden = false;
    const live = r.issued_units - r.retired_units;
    const words = r.issued_units === 0 ? "never issued"
      : r.retired_units === 0 ? (r.issued_units === r.units ? "issued, none retired" : "issued in part, none retired")
        : r.retired_units === r.issued_units ? "retired" : "retired in part";
    $("#reg-serial-head").replaceChildren(
      el("span", { class: "strong mono", text: r.serial }),
      el("span", { class: `pill ${r.retired_units ? "warn" : "ok"}`, dataset: { state: words }, text: words }),
      el("span", { class: "muted", text: ` ${qty(r.units)} unit(s) (t CO₂e): ${qty(r.issued_units)} issued · ${qty(r.retired_units)} retired · ${qty(live)} live` }));
    const rows = [];
    for (const b of r.blocks) {
      rows.push(el("tr", { class: "block", dataset: { serial: b.serial } },
        el("td", { class: "mono strong", text: b.serial }),
        el("td", { text: `${b.instrument} · ${b.origin}` }),
        num(qty(b.units)), num(qty(b.retired_units)),
        el("td", { colspan: 4, class: "muted", text: b.retired_units ? "" : "not retired" })));
      for (const x of b.retirements) {
        rows.push(el("tr", { class: "retirement", dataset: { serial: x.serial } },
          el("td", { class: "mono", text: `  ↳ ${x.serial}` }),
          el("td", { class: "muted", text: "retired" }),
          num(""), num(qty(x.units)),
          el("td", { class: "strong beneficiary", text: who(x.beneficiary) }),
          el("td", { class: "reason", text: reasonText(x.reason, x.period) }),
          el("td", { text: x.period === null || x.period === undefined ? "—" : String(x.period) }),
          el("td", { class: "small", text: `${isoDate(x.at)} · seq ${x.seq}` })));
      }
    }
    setRows($("#reg-serial-table tbody"), rows, "No unit of this serial was ever issued", 8);
  }

  // ------------------------------------------------------------------ buffer pools (public)
  async loadBuffer() {
    let r;
    try { r = await publicApi.get(REGISTRY.buffer); } catch (e) {
      setRows($("#reg-buffer tbody"), [], `Buffer pools unavailable — ${errorText(e)}`, 5);
      if (e.code === "REGISTRY_NOT_CONFIGURED") $("#reg-meta").textContent = "this exchange runs without a credit registry ([registry] is not configured)";
      return;
    }
    $("#reg-buffer-meta").textContent = `${r.buffer_pct} % of every removal issuance goes to the pool`;
    setRows($("#reg-buffer tbody"), Object.entries(r.pools).map(([t, p]) => el("tr", { dataset: { type: t } },
      el("td", { class: "strong", text: REMOVAL[t] || t }),
      el("td", { text: p.offset_type }),
      num(qty(p.contributed)), num(qty(p.cancelled)), el("td", { class: "num strong", text: qty(p.held) }))),
    "No removal types configured", 5);
  }

  // ------------------------------------------------------------------ removal projects
  async loadProjects() {
    let projects;
    try { projects = (await this.api().get(REGISTRY.projects)).projects; } catch (e) {
      setRows($("#reg-projects tbody"), [], `Removal projects unavailable — ${errorText(e)}`, 15);
      return;
    }
    this.projects = projects;
    const rows = [];
    for (const [pid, p] of Object.entries(projects)) {
      const vs = Object.entries(p.vintages);
      const fromOwn = p.from_project;
      const fromPool = p.from_buffer;
      const span = Math.max(vs.length, 1);
      const rev = [
        el("td", { class: "num reversed", rowspan: span, text: qty(p.reversed) }),
        el("td", { class: "num from-pool", rowspan: span, text: qty(fromPool) }),
        el("td", { class: "num from-own", rowspan: span, text: qty(fromOwn) }),
        el("td", { class: `num uncovered ${p.uncovered ? "neg" : ""}`, rowspan: span, text: qty(p.uncovered) })];
      const head = [
        el("td", { class: "strong", rowspan: span, title: p.name, text: pid }),
        el("td", { rowspan: span, text: REMOVAL[p.removal_type] || p.removal_type }),
        el("td", { rowspan: span, text: p.owner })];
      if (!vs.length) {
        rows.push(el("tr", { dataset: { project: pid } }, ...head,
          el("td", { colspan: 8, class: "muted", text: "no vintage verified yet" }), ...rev));
        continue;
      }
      vs.forEach(([vintage, v], i) => {
        rows.push(el("tr", { dataset: { project: pid, vintage } }, ...(i ? [] : head),
          el("td", { title: `verified ${isoDate(v.at)} by ${v.verifier} (seq ${v.seq})`, text: vintage }),
          num(qty(v.gross_removal)), num(`− ${qty(v.project_emissions)}`), num(`− ${qty(v.baseline_removal)}`),
          el("td", { class: "num strong net", text: qty(v.net_removal) }),
          el("td", { class: "num buffer", text: qty(v.buffer) }),
          num(qty(v.net_removal - v.buffer)),
          el("td", { class: "mono serial", text: v.serial || "—" }),
          ...(i ? [] : rev)));
      });
    }
    setRows($("#reg-projects tbody"), rows, "No removal projects registered", 15);
    const sel = $("#reg-rev-project");
    const cur = sel.value;
    sel.replaceChildren(...Object.keys(projects).map((pid) => el("option", { value: pid, text: pid })));
    if (cur && projects[cur]) sel.value = cur;
  }

  async reportReversal() {
    const errBox = $("#reg-rev-error"), okBox = $("#reg-rev-ok");
    clearMsg(errBox, okBox);
    const pid = $("#reg-rev-project").value;
    const qtyText = $("#reg-rev-qty").value.trim();
    const cause = $("#reg-rev-cause").value.trim();
    if (!pid) { showRegistryError(errBox, new ApiError("UNKNOWN_PROJECT", "no removal project to report on")); return; }
    if (!/^\d+$/.test(qtyText) || Number(qtyText) < 1) {
      showRegistryError(errBox, new ApiError("BAD_QUANTITY", "the reversal is a whole number of tonnes, at least 1"));
      return;
    }
    if (!cause) { showRegistryError(errBox, new ApiError("REASON_REQUIRED", "say what caused the reversal")); return; }
    const q = Number(qtyText);
    if (!confirm(`Report a reversal of ${qty(q)} t at ${pid} (${cause})? Credits are cancelled: the buffer pool's first, then the project's own.`)) return;
    let r;
    try {
      r = await this.api().post(REGISTRY.reversal(pid), { qty: q, cause });
    } catch (e) {
      showRegistryError(errBox, e, `Reversal at ${pid} refused`);
      return;
    }
    const ev = r.events.find((x) => x.type === "reversal_reported");
    okBox.textContent = `Reversal of ${qty(ev.qty)} t at ${pid}: ${qty(ev.from_buffer)} t cancelled from the buffer pool, `
      + `${qty(ev.from_project)} t from the project's own credits, ${qty(ev.uncovered)} t uncovered (seq ${r.seq})`;
    toast(okBox.textContent, "ok", 5000);
    $("#reg-rev-qty").value = ""; $("#reg-rev-cause").value = "";
    await Promise.all([this.loadBuffer(), this.loadProjects()]);
  }

  async declareClass() {
    const errBox = $("#reg-class-error"), okBox = $("#reg-class-ok");
    clearMsg(errBox, okBox);
    const t = $("#reg-class-type").value.trim();
    const yes = $("#reg-class-value").value === "true";
    if (!t) { showRegistryError(errBox, new ApiError("BAD_PARAMETER", "name the credit type, e.g. PHCER")); return; }
    try {
      const r = await this.api().put(REGISTRY.offsetClass(t), { ccer_equivalent: yes });
      okBox.textContent = `${t} declared ${yes ? "CCER-equivalent: it counts for compliance within its sub-cap"
        : "not CCER-equivalent: it no longer counts for compliance"} (seq ${r.seq})`;
      toast(okBox.textContent, "ok", 4000);
    } catch (e) {
      showRegistryError(errBox, e, `Declaring ${t} refused`);
    }
  }

  // ------------------------------------------------------------------ carbon-inclusive
  async loadBatches() {
    let batches;
    try { batches = (await this.api().get(REGISTRY.batches)).batches; } catch (e) {
      setRows($("#reg-batches tbody"), [], `Batches unavailable — ${errorText(e)}`, 9);
      return;
    }
    const decision = (b) => (b.status === "pending" ? "awaiting a verifier"
      : b.status === "rejected" ? `rejected by ${b.verifier}: ${b.reason}` : `approved by ${b.verifier} · ${isoDate(b.decided_at)}`);
    setRows($("#reg-batches tbody"), batches.map((b) => el("tr", { dataset: { batch: b.batch_id, status: b.status } },
      el("td", { class: "mono strong", text: b.batch_id }),
      el("td", { text: b.platform_id }),
      el("td", { text: String(b.vintage) }),
      num(qty(b.records)),
      num(b.reduction_t_co2e),
      num(qty(b.reduction_t)),
      el("td", {}, el("span", { class: `status ${b.status}`, text: b.status })),
      el("td", { class: "mono", text: b.serial || "—" }),
      el("td", { class: "small", text: `submitted ${isoDate(b.submitted_at)} · ${decision(b)}` }))),
    "No batches submitted", 9);
    const n = batches.filter((b) => b.status === "pending").length;
    $("#reg-batches-meta").textContent = `${batches.length} batch(es)${n ? ` · ${n} pending` : ""}`;
  }

  async loadTable() {
    let r;
    try { r = await publicApi.get(REGISTRY.table); } catch (e) {
      setRows($("#reg-table tbody"), [], `Conversion table unavailable — ${errorText(e)}`, 4);
      return;
    }
    $("#reg-table-meta").textContent = `version ${r.version}`;
    setRows($("#reg-table tbody"), Object.entries(r.actions).map(([at, a]) => el("tr", { dataset: { action: at } },
      el("td", { class: "strong", text: at }), el("td", { text: a.unit }),
      el("td", { class: "num", title: `${a.t_co2e_per_unit} t = ${gramsText(a.t_co2e_per_unit)} per ${a.unit}`, text: a.t_co2e_per_unit }),
      el("td", { class: "num", text: String(a.version) }))), "No action types", 4);
  }

  async loadTotals() {
    let r;
    try { r = await publicApi.get(REGISTRY.totals); } catch (e) {
      setRows($("#reg-totals tbody"), [], `Totals unavailable — ${errorText(e)}`, 5);
      return;
    }
    $("#reg-totals-meta").textContent = `published only where at least ${r.min_contributors} platforms contributed`;
    setRows($("#reg-totals tbody"), Object.entries(r.action_types).map(([at, g]) => (g.suppressed
      ? el("tr", { dataset: { action: at, suppressed: "true" } },
        el("td", { class: "strong", text: at }),
        el("td", { colspan: 4, class: "muted suppressed", text: `suppressed — fewer than ${r.min_contributors} platforms contributed` }))
      : el("tr", { dataset: { action: at, suppressed: "false" } },
        el("td", { class: "strong", text: at }), num(qty(g.records)), num(qty(g.quantity)), num(g.t_co2e),
        num(qty(g.contributors))))), "No approved batches yet", 5);
  }
}

/** "0.000072" t -> "72 g" (exact, from the decimal string). */
function gramsText(t) {
  const [i, f = ""] = String(t).split(".");
  const g = BigInt(i) * 1000000n + BigInt((f + "000000").slice(0, 6));
  return `${qty(Number(g))} g`;
}

// ================================================================== firm panel
export class FirmCredits {
  /** ``ctx``: () => ({ http, firm }) of the signed-in firm, or null. */
  constructor(ctx) {
    this.ctx = ctx;
    this.started = false;
  }

  start() {
    if (this.started) return;
    this.started = true;
    $("#retire-form").addEventListener("submit", (e) => { e.preventDefault(); this.retire(); });
    $("#retire-serials").addEventListener("input", () => this.fillQtyFromSerials());
  }

  async load() {
    this.start();
    const c = this.ctx();
    if (!c) return;
    let r;
    try {
      r = await c.http.get(REGISTRY.holdings(c.firm));
    } catch (e) {
      $("#firm-credits-panel").hidden = e.code === "REGISTRY_NOT_CONFIGURED";
      setRows($("#firm-credits tbody"), [], `Credits unavailable — ${errorText(e)}`, 6);
      return;
    }
    if (c.firm !== (this.ctx() || {}).firm) return; // signed out or switched meanwhile
    $("#firm-credits-panel").hidden = false;
    const rows = [];
    let total = 0, blocks = 0;
    for (const [sym, serials] of Object.entries(r.serials)) {
      serials.forEach((s, i) => {
        const n = serialUnits(s);
        total += n; blocks += 1;
        const parts = s.split("/");
        rows.push(el("tr", { dataset: { instrument: sym, serial: s } },
          el("td", { class: i ? "muted" : "strong", text: i ? "" : sym }),
          el("td", { class: "mono serial", text: s }),
          el("td", { text: `${parts[0]} · ${parts[1]}` }),
          el("td", { text: parts[2] }),
          el("td", { class: "num", text: qty(n) }),
          el("td", {}, el("button", { type: "button", class: "btn small ghost", text: "Use", title: "Retire from this serial",
            onclick: () => this.useSerial(sym, s) }))));
      });
    }
    setRows($("#firm-credits tbody"), rows, "No credits held", 6);
    $("#firm-credits-meta").textContent = blocks ? `${qty(total)} t in ${blocks} serial block(s), oldest first` : "";
    const sel = $("#retire-instrument");
    const cur = sel.value;
    const syms = Object.keys(r.serials);
    sel.replaceChildren(...syms.map((s) => el("option", { value: s, text: s })));
    if (cur && syms.includes(cur)) sel.value = cur;
  }

  useSerial(sym, serial) {
    $("#retire-instrument").value = sym;
    $("#retire-serials").value = serial;
    this.fillQtyFromSerials();
  }

  serials() {
    return $("#retire-serials").value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
  }

  /** Naming serials fixes the quantity: fill it in (it stays editable). */
  fillQtyFromSerials() {
    const ss = this.serials();
    const ns = ss.map(serialUnits);
    if (ss.length && ns.every((n) => n !== null)) $("#retire-qty").value = String(ns.reduce((a, b) => a + b, 0));
  }

  async retire() {
    const errBox = $("#retire-error"), okBox = $("#retire-ok");
    clearMsg(errBox, okBox);
    const c = this.ctx();
    if (!c) { showRegistryError(errBox, new ApiError("NOT_SIGNED_IN", "sign in with a firm key first")); return; }
    const instrument = $("#retire-instrument").value;
    const qtyText = $("#retire-qty").value.trim();
    if (!instrument) { showRegistryError(errBox, new ApiError("NO_CREDITS", "the firm holds no credits to retire")); return; }
    if (!/^\d+$/.test(qtyText) || Number(qtyText) < 1) {
      showRegistryError(errBox, new ApiError("BAD_QUANTITY", "the quantity is a whole number of tonnes, at least 1"));
      return;
    }
    const serials = this.serials();
    const bad = serials.find((s) => serialUnits(s) === null || s.split("/").length !== 4);
    if (bad) { showRegistryError(errBox, new ApiError("BAD_SERIAL", `${bad} is not a serial ISSUER/PROJECT/VINTAGE/FIRST-LAST`)); return; }
    const body = { instrument, qty: Number(qtyText), serials };
    const beneficiary = $("#retire-beneficiary").value.trim();
    const reason = $("#retire-reason").value.trim();
    if (beneficiary) body.beneficiary = beneficiary;
    if (reason) body.reason = reason;
    const what = serials.length ? serials.join(", ") : "the oldest serials";
    if (!confirm(`Retire ${qty(body.qty)} t of ${instrument} (${what})${beneficiary ? ` for ${beneficiary}` : ""}? Retired credits are gone for good.`)) return;
    const btn = $("#retire-submit");
    btn.disabled = true;
    try {
      const r = await c.http.post(REGISTRY.retire, body);
      const done = r.events.filter((x) => x.type === "credits_retired");
      okBox.textContent = `Retired ${qty(body.qty)} t of ${instrument}: ${done.map((x) => x.serial).join(", ")}`
        + ` for ${done.length ? who(done[0].beneficiary) : c.firm} (seq ${r.seq})`;
      okBox.dataset.serials = done.map((x) => x.serial).join(" ");
      toast(okBox.textContent, "ok", 4000);
    } catch (e) {
      showRegistryError(errBox, e, "Retirement refused");
    } finally {
      btn.disabled = false;
    }
    await this.load();
  }
}
