// Operator view (operator credential): market control (halt / resume, price bands), firms with
// allocation factors and compliance status, offset caps with a what-if preview before a change.
import { $, el, setRows, qty, px, bpsToPct, pctToBps, pctText, timeMs, whenText, showError, clearMsg, toast, errorText, ApiError } from "./util.js";
import { HttpApi, publicApi } from "./api.js";
import { cny, paidGrantRows, renderLots } from "./sme.js";
import { categoryCell, fromSummaryRow } from "./emissions.js";
import { RegistryPanel } from "./registry.js";

// The operator API endpoints this view uses (exchange/server/api.py, exchange/compliance/api.py,
// exchange/rules/api.py). Kept in one place so a route change is a one-line change here.
export const ENDPOINTS = {
  state: "/state",
  instruments: "/instruments",
  firms: "/firms",
  halt: "/halt",
  resume: "/resume",
  band: (sym) => `/instruments/${encodeURIComponent(sym)}/band`,
  periods: "/dashboard/compliance-periods",
  summary: (p) => `/compliance/periods/${p}/summary`,
  capWhatIf: (p) => `/compliance/periods/${p}/cap/what-if`,
  capSet: (p) => `/compliance/periods/${p}/cap`,
  factor: (firm) => `/rules/factors/${encodeURIComponent(firm)}`,
  fund: "/compliance/sme-fund", // public: read without the operator's key
  subQuotas: "/rules/sub-quotas",
};

const bpsToPctText = (b) => (b % 100 ? `${Math.floor(b / 100)}.${String(b % 100).padStart(2, "0")}` : String(b / 100));

/** Percent strings by offset type, as the API writes them ({"PHCER": "2.00"}) -> basis points. */
const bpsOf = (m) => Object.fromEntries(Object.entries(m || {}).map(([t, v]) => [t, pctToBps(v)]));

/** A compliance summary or what-if as the API writes it (percent strings, ISO-8601 times,
 * docs/PROTOCOL.md "Units") with the basis points and ms this view compares and fills forms
 * with beside them. */
function capFigures(s) {
  return {
    ...s,
    offset_cap_bps: pctToBps(s.offset_cap_pct), offset_sub_caps_bps: bpsOf(s.offset_sub_caps_pct),
    current_cap_bps: pctToBps(s.current_cap_pct), proposed_cap_bps: pctToBps(s.proposed_cap_pct),
    proposed_sub_caps_bps: bpsOf(s.proposed_sub_caps_pct),
    as_of_ms: timeMs(s.as_of_at),
    cap_history: (s.cap_history || []).map((h) => ({
      ...h, cap_bps: pctToBps(h.cap_pct), sub_caps_bps: bpsOf(h.sub_caps_pct), effective_ms: timeMs(h.effective_at) })),
  };
}

/** The compliance API's cap body: percentages as decimal strings. */
function capBody({ cap_bps, sub_caps_bps }) {
  return {
    cap_pct: bpsToPctText(cap_bps),
    sub_caps_pct: Object.fromEntries(Object.entries(sub_caps_bps || {}).map(([t, b]) => [t, bpsToPctText(b)])),
  };
}

const STATUS_TEXT = { none: "no record", open: "open", compliant: "compliant", late: "late",
  non_compliant: "non-compliant", not_reported: "not reported" };

/** "1" -> "1.0000", "0.98765" -> "0.98765": a decimal string with at least 4 decimals. */
function fixed4(d) {
  if (d === null || d === undefined) return null;
  const [i, f = ""] = String(d).split(".");
  return `${i}.${f.padEnd(4, "0")}`;
}

export class OperatorView {
  constructor({ keys, market }) {
    this.keys = keys;
    this.market = market;
    this.api = null;
    this.instruments = [];
    this.periods = [];
    this.summaries = new Map(); // period -> compliance summary
    this.preview = null; // {period, cap_bps, sub_caps_bps, result}
    this.registry = new RegistryPanel(() => this.api); // its endpoints: REGISTRY in registry.js
  }

  start() {
    $("#operator-key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const k = $("#operator-key").value.trim();
      if (k) this.signIn(k, true);
    });
    $("#op-signout").addEventListener("click", () => this.signOut());
    $("#op-refresh").addEventListener("click", () => this.refresh());
    $("#op-halt-all").addEventListener("click", () => this.halt(null, true));
    $("#op-resume-all").addEventListener("click", () => this.halt(null, false));
    $("#band-form").addEventListener("submit", (e) => { e.preventDefault(); this.setBand(); });
    $("#band-instrument").addEventListener("change", () => this.fillBandForm());
    $("#cap-form").addEventListener("submit", (e) => { e.preventDefault(); this.previewCap(); });
    $("#cap-apply-btn").addEventListener("click", () => this.applyCap());
    $("#cap-form").addEventListener("input", () => this.invalidatePreview());
    $("#cap-period").addEventListener("change", () => { this.fillCapForm(); this.invalidatePreview(); });
    $("#firm-period").addEventListener("change", () => this.loadFirms());
    this.market.listeners.add((what) => {
      if (what === "ticker" && this.api) this.scheduleInstruments();
    });
    const k = this.keys.get("operator");
    if (k) this.signIn(k, false);
  }

  async signIn(key, remember) {
    const err = $("#operator-signin-error");
    clearMsg(err);
    const api = new HttpApi(key);
    let st;
    try {
      st = await api.get(ENDPOINTS.state);
      // /state is open to verifiers too: check the operator role on an operator-only read
      await api.get("/api-keys");
    } catch (e) {
      if (e.code === "FORBIDDEN") e = new ApiError("FORBIDDEN", "this key is not an operator credential");
      showError(err, e, "Sign-in failed");
      if (!remember) this.keys.set("operator", null);
      return;
    }
    this.api = api;
    if (remember) this.keys.set("operator", key);
    $("#operator-signin").hidden = true;
    $("#operator-main").hidden = false;
    this.renderState(st);
    this.market.useKey(key, null);
    await this.refresh();
  }

  signOut() {
    this.api = null;
    this.keys.set("operator", null);
    $("#operator-main").hidden = true;
    $("#operator-signin").hidden = false;
    $("#operator-key").value = "";
  }

  async refresh() {
    if (!this.api) return;
    await Promise.all([this.loadState(), this.loadInstruments(), this.loadPeriods()]);
    await Promise.all([this.loadFirms(), this.loadCaps(), this.loadFund(), this.loadSubQuotas(),
      this.registry.load()]);
  }

  async loadState() {
    try { this.renderState(await this.api.get(ENDPOINTS.state)); } catch (e) { showError(null, e, "State"); }
  }

  renderState(st) {
    $("#op-seq").textContent = String(st.last_seq);
    $("#op-day").textContent = String(st.day);
    $("#op-hash").textContent = st.state_hash.slice(0, 16) + "…";
    $("#op-hash").title = st.state_hash;
  }

  scheduleInstruments() {
    if (this.instTimer) return;
    this.instTimer = setTimeout(() => { this.instTimer = null; this.loadInstruments(); }, 250);
  }

  // ------------------------------------------------------------------ market control
  async loadInstruments() {
    try {
      const r = await this.api.get(ENDPOINTS.instruments);
      this.instruments = r.instruments;
    } catch (e) { showError(null, e, "Instruments"); return; }
    const rows = this.instruments.map((i) => el("tr", { dataset: { instrument: i.instrument } },
      el("td", { class: "strong", text: i.instrument }),
      el("td", { text: i.kind === "offset" ? `offset · ${i.offset_type}` : `allowance · ${i.vintage}` }),
      el("td", { class: "num", text: px(i.reference_price) }),
      el("td", { class: "num", title: `half-width ${pctText(i.band_pct)} around the reference price`,
        text: i.band ? `±${pctText(i.band_pct).replace(" ", "")} · ${i.band[0]}–${i.band[1]}` : pctText(i.band_pct) }),
      el("td", { class: "num", text: px(i.last) }),
      el("td", {}, el("span", { class: "badge", dataset: { state: i.halted ? "halted" : "open" }, text: i.halted ? "HALTED" : "TRADING" })),
      el("td", { class: "actions" }, i.halted
        ? el("button", { class: "btn small ok", text: "Resume", onclick: () => this.halt(i.instrument, false) })
        : el("button", { class: "btn small danger", text: "Halt", onclick: () => this.halt(i.instrument, true) }))));
    setRows($("#op-instruments tbody"), rows, "No instruments", 7);
    const sel = $("#band-instrument");
    const cur = sel.value;
    if (sel.options.length !== this.instruments.length) {
      sel.replaceChildren(...this.instruments.map((i) => el("option", { value: i.instrument, text: i.instrument })));
      if (cur) sel.value = cur;
      this.fillBandForm();
    }
    this.fillOffsetTypes();
  }

  fillBandForm() {
    const i = this.instruments.find((x) => x.instrument === $("#band-instrument").value);
    if (!i) return;
    $("#band-pct").placeholder = (pctToBps(i.band_pct) / 100).toString();
    $("#band-ref").placeholder = i.reference_price || "85.00";
  }

  async halt(instrument, halting) {
    const what = instrument || "the whole market";
    if (halting && !confirm(`Halt trading in ${what}?`)) return;
    try {
      const body = instrument ? { instrument } : {};
      const r = await this.api.post(halting ? ENDPOINTS.halt : ENDPOINTS.resume, body);
      toast(`${halting ? "Halted" : "Resumed"} ${what} (seq ${r.seq})`, "ok", 4000);
    } catch (e) {
      showError(null, e, `${halting ? "Halt" : "Resume"} of ${what} failed`);
    }
    await Promise.all([this.loadInstruments(), this.loadState()]);
  }

  async setBand() {
    const errBox = $("#band-error"), okBox = $("#band-ok");
    clearMsg(errBox, okBox);
    const sym = $("#band-instrument").value;
    const pct = $("#band-pct").value.trim(), ref = $("#band-ref").value.trim();
    const body = {};
    if (pct) {
      const bps = pctToBps(pct);
      if (bps === null || bps > 10000) { showError(errBox, new ApiError("INVALID_BAND", "band must be a percentage between 0 and 100 with at most two decimals")); return; }
      body.band_pct = bpsToPctText(bps);
    }
    if (ref) body.reference_price = ref;
    if (!pct && !ref) { showError(errBox, new ApiError("NOTHING_TO_CHANGE", "give a band width, a reference price, or both")); return; }
    try {
      const r = await this.api.put(ENDPOINTS.band(sym), body);
      okBox.textContent = `Band of ${sym} updated (seq ${r.seq})`;
      $("#band-pct").value = ""; $("#band-ref").value = "";
    } catch (e) {
      showError(errBox, e, `Band change for ${sym} rejected`);
    }
    await this.loadInstruments();
  }

  // ------------------------------------------------------------------ compliance periods and caps
  async loadPeriods() {
    try {
      const r = await this.api.get(ENDPOINTS.periods);
      this.periods = (r.periods || r).map((p) => (typeof p === "object" ? p.period : p));
      this.capsAvailable = true;
    } catch (e) {
      this.periods = [];
      this.capsAvailable = false;
      this.capsError = e;
    }
    for (const id of ["#cap-period", "#firm-period"]) {
      const sel = $(id);
      const cur = sel.value;
      sel.replaceChildren(...this.periods.map((p) => el("option", { value: p, text: String(p) })));
      if (cur && this.periods.map(String).includes(cur)) sel.value = cur;
    }
  }

  async summary(period, fresh = false) {
    if (!fresh && this.summaries.has(period)) return this.summaries.get(period);
    const s = capFigures(await this.api.get(ENDPOINTS.summary(period)));
    this.summaries.set(period, s);
    return s;
  }

  offsetTypes() {
    const types = new Set(this.instruments.filter((i) => i.kind === "offset" && i.offset_type).map((i) => i.offset_type));
    for (const s of this.summaries.values()) for (const t of Object.keys(s.offset_sub_caps_bps || {})) types.add(t);
    return [...types].sort();
  }

  fillOffsetTypes() {
    const box = $("#cap-subcaps");
    const types = this.offsetTypes();
    const have = [...box.querySelectorAll("input")].map((i) => i.dataset.type).join(",");
    if (have === types.join(",")) return;
    box.replaceChildren(...types.map((t) => el("label", {}, `${t} sub-cap (%)`,
      el("input", { name: `sub_${t}`, dataset: { type: t }, inputmode: "decimal", placeholder: "none", size: "6" }))));
    this.fillCapForm();
  }

  async loadCaps() {
    const body = $("#cap-table tbody");
    if (!this.capsAvailable) {
      setRows(body, [], `Compliance API not available — ${errorText(this.capsError)}`, 6);
      $("#cap-form").hidden = true;
      return;
    }
    $("#cap-form").hidden = false;
    const rows = [];
    const subsText = (m) => Object.entries(m || {}).map(([t, b]) => `${t} ≤ ${bpsToPct(b)}`).join(", ") || "—";
    for (const p of this.periods) {
      let s;
      try { s = await this.summary(p, true); } catch (e) { showError(null, e, `Compliance summary ${p}`); continue; }
      // the entry in force is the last one effective by the summary's time; the ones after it
      // are scheduled changes, each shown with when it takes effect, who made it, its seq
      const asOf = s.as_of_ms ?? 0;
      const hist = s.cap_history || [];
      let cur = -1;
      hist.forEach((h, i) => { if (h.effective_ms <= asOf) cur = i; });
      const inForce = cur >= 0 ? hist[cur] : null;
      rows.push(el("tr", { class: "cap-in-force", dataset: { period: p, capBps: s.offset_cap_bps } },
        el("td", { class: "strong", text: String(p) }),
        el("td", { class: "num cap-value", text: bpsToPct(s.offset_cap_bps) }),
        el("td", { text: subsText(s.offset_sub_caps_bps) }),
        el("td", { class: "cap-when", text: inForce && inForce.effective_ms > 0 ? `in force since ${whenText(inForce.effective_at)}` : "in force since the period opened" }),
        el("td", { class: "cap-who", text: inForce && inForce.operator ? inForce.operator : "config" }),
        el("td", { class: "num cap-seq", text: inForce && inForce.seq ? String(inForce.seq) : "—" })));
      for (const h of hist.slice(cur + 1)) {
        rows.push(el("tr", { class: "cap-scheduled", dataset: { schedulePeriod: p, seq: h.seq } },
          el("td", { class: "muted", text: "scheduled" }),
          el("td", { class: "num cap-value", text: bpsToPct(h.cap_bps) }),
          el("td", { text: subsText(h.sub_caps_bps) }),
          el("td", { class: "cap-when", text: `from ${whenText(h.effective_at)}` }),
          el("td", { class: "cap-who", text: h.operator || "—" }),
          el("td", { class: "num cap-seq", text: String(h.seq) })));
      }
    }
    setRows(body, rows, "No compliance periods", 6);
    this.fillOffsetTypes();
    this.fillCapForm();
  }

  fillCapForm() {
    const p = $("#cap-period").value;
    const s = this.summaries.get(Number(p)) || this.summaries.get(p);
    if (!s) return;
    $("#cap-pct").placeholder = (s.offset_cap_bps / 100).toString();
    for (const inp of $("#cap-subcaps").querySelectorAll("input")) {
      const b = (s.offset_sub_caps_bps || {})[inp.dataset.type];
      inp.placeholder = b === undefined ? "none" : (b / 100).toString();
    }
  }

  /** The proposal in the form, or throws ApiError in words. Blank fields keep current values. */
  proposal() {
    const period = Number($("#cap-period").value);
    const s = this.summaries.get(period);
    const capText = $("#cap-pct").value.trim();
    let cap_bps = s ? s.offset_cap_bps : null;
    if (capText) {
      cap_bps = pctToBps(capText);
      if (cap_bps === null || cap_bps > 10000) throw new ApiError("INVALID_CAP", "the offset cap must be a percentage within [0, 100] with at most two decimals");
    }
    if (cap_bps === null) throw new ApiError("INVALID_CAP", "enter the proposed offset cap");
    const sub_caps_bps = { ...((s && s.offset_sub_caps_bps) || {}) };
    for (const inp of $("#cap-subcaps").querySelectorAll("input")) {
      const t = inp.value.trim();
      if (!t) continue;
      if (t === "-" || t.toLowerCase() === "none") { delete sub_caps_bps[inp.dataset.type]; continue; }
      const b = pctToBps(t);
      if (b === null || b > 10000) throw new ApiError("INVALID_CAP", `${inp.dataset.type} sub-cap must be a percentage within [0, 100]`);
      sub_caps_bps[inp.dataset.type] = b;
    }
    return { period, cap_bps, sub_caps_bps };
  }

  invalidatePreview() {
    if (!this.preview) return;
    this.preview = null;
    $("#cap-apply-btn").disabled = true;
    $("#cap-preview").classList.add("stale");
    $("#cap-hint").textContent = "The proposal changed: preview it again before applying.";
  }

  async previewCap() {
    const errBox = $("#cap-error"), okBox = $("#cap-ok");
    clearMsg(errBox, okBox);
    let prop;
    try { prop = this.proposal(); } catch (e) { showError(errBox, e); return; }
    let r;
    try {
      r = await this.api.post(ENDPOINTS.capWhatIf(prop.period), capBody(prop));
    } catch (e) {
      showError(errBox, e, "Preview failed");
      $("#cap-hint").textContent = "Fix the proposal and preview it again.";
      this.preview = null;
      $("#cap-preview").hidden = true;
      $("#cap-apply-btn").disabled = true;
      return;
    }
    r = capFigures(r);
    this.preview = { ...prop, result: r };
    this.renderPreview(r);
    $("#cap-apply-btn").disabled = false;
    $("#cap-hint").textContent = "Check the impact, then apply. The change applies to surrenders from now on; past surrenders are never rewritten.";
  }

  renderPreview(r) {
    const box = $("#cap-preview");
    box.hidden = false;
    box.classList.remove("stale");
    const over = r.firms_exceeding || [];
    const subs = Object.entries(r.proposed_sub_caps_bps || {}).map(([t, b]) => `${t} ≤ ${bpsToPct(b)}`).join(", ");
    $("#cap-preview-head").replaceChildren(
      el("span", { class: "strong", text: `Period ${r.period}: ${bpsToPct(r.current_cap_bps)} → ${bpsToPct(r.proposed_cap_bps)}` }),
      subs ? el("span", { class: "muted", text: ` · sub-caps ${subs}` }) : "",
      el("span", { class: over.length ? "pill warn" : "pill ok",
        text: over.length ? `${over.length} firm(s) would exceed: ${over.join(", ")}` : "No firm would exceed the proposed cap" }));
    const rows = (r.firms || []).map((f) => el("tr", { class: f.exceeds ? "exceeds" : "", dataset: { firm: f.firm_id } },
      el("td", { class: "strong", text: f.firm_id }),
      el("td", { class: "num", text: qty(f.obligation) }),
      el("td", { class: "num", text: qty(f.current_cap_qty) }),
      el("td", { class: "num", text: qty(f.proposed_cap_qty) }),
      el("td", { class: "num", text: qty(f.offsets_surrendered) }),
      el("td", { class: "num", text: qty(f.offsets_held) }),
      el("td", { class: "num " + (f.exceeds_by ? "neg" : ""), text: f.exceeds_by ? qty(f.exceeds_by) : "—" }),
      el("td", { class: "small", text: Object.entries(f.by_type || {}).filter(([, t]) => t.exceeds_by).map(([k, t]) => `${k} over by ${qty(t.exceeds_by)} t`).join(", ") || "—" })));
    setRows($("#cap-preview-table tbody"), rows, "No firm has a verified obligation in this period yet", 8);
  }

  async applyCap() {
    const errBox = $("#cap-error"), okBox = $("#cap-ok");
    clearMsg(errBox, okBox);
    if (!this.preview) { showError(errBox, new ApiError("PREVIEW_FIRST", "preview the change before applying it")); return; }
    const { period, cap_bps, sub_caps_bps, result } = this.preview;
    const over = (result.firms_exceeding || []).length;
    if (over && !confirm(`${over} firm(s) would exceed the new cap. Apply anyway?`)) return;
    try {
      const r = await this.api.put(ENDPOINTS.capSet(period), capBody({ cap_bps, sub_caps_bps }));
      okBox.textContent = `Offset cap for ${period} set to ${bpsToPct(cap_bps)}${r && r.seq ? ` (seq ${r.seq})` : ""}`;
      toast(okBox.textContent, "ok", 4000);
      this.preview = null;
      $("#cap-apply-btn").disabled = true;
      $("#cap-preview").classList.add("stale");
      $("#cap-hint").textContent = "Applied. Preview another change to apply it.";
      $("#cap-pct").value = "";
      for (const inp of $("#cap-subcaps").querySelectorAll("input")) inp.value = "";
    } catch (e) {
      showError(errBox, e, "Cap change rejected");
    }
    await Promise.all([this.loadCaps(), this.loadState()]);
  }

  // ------------------------------------------------------------------ firms
  async loadFirms() {
    let firms;
    try { firms = (await this.api.get(ENDPOINTS.firms)).firms; } catch (e) { showError(null, e, "Firms"); return; }
    const notes = [];
    let factors = {};
    const got = await Promise.allSettled(firms.map((f) => this.api.get(ENDPOINTS.factor(f.firm_id))));
    got.forEach((g, i) => { if (g.status === "fulfilled") factors[firms[i].firm_id] = g.value; });
    const failed = got.find((g) => g.status === "rejected");
    if (failed) notes.push(`allocation factors unavailable for some firms — ${errorText(failed.reason)}`);
    const period = $("#firm-period").value;
    let comp = null;
    let covered = [];
    if (period && this.capsAvailable) {
      try {
        const s = await this.summary(Number(period), true);
        comp = Object.fromEntries((s.firms || []).map((f) => [f.firm_id, f]));
        covered = s.covered_categories || [];
      } catch (e) { notes.push(`compliance status unavailable — ${errorText(e)}`); }
    } else if (!this.capsAvailable) {
      notes.push(`compliance status unavailable — ${errorText(this.capsError)}`);
    }
    const rows = firms.map((f) => {
      const fac = factors && factors[f.firm_id];
      const c = comp && comp[f.firm_id];
      const phi = fac ? fixed4(fac.phi) : null;
      const moves = fac && fac.history ? fac.history.length : 0;
      return el("tr", { dataset: { firm: f.firm_id } },
        el("td", { class: "strong", text: f.firm_id }), el("td", { text: f.name }),
        el("td", { text: [f.sector, f.product].filter(Boolean).join(" / ") || "—" }),
        el("td", { text: f.size_class }),
        el("td", {}, el("span", { class: "badge", dataset: { state: f.can_trade ? "open" : "halted" }, text: f.can_trade ? "enabled" : "stopped" })),
        el("td", { class: "num mono", title: moves ? `${moves} change(s); see /api/v1/rules/factors/${f.firm_id}` : "initial factor", text: phi === null || phi === undefined ? "—" : String(phi) }),
        c && c.energy !== undefined && c.submission === "verified" ? categoryCell(fromSummaryRow(c, covered)) : el("td", { class: "num", text: "—" }),
        el("td", { class: "num", text: c ? qty(c.obligation) : "—" }),
        el("td", { class: "num", text: c ? qty(c.surrendered) : "—" }),
        el("td", {}, c ? el("span", { class: `status ${c.status}`, title: `submission: ${c.submission}`, text: STATUS_TEXT[c.status] || c.status.replace("_", " ") }) : "—"));
    });
    setRows($("#op-firms tbody"), rows, "No firms", 10);
    $("#op-firms-note").textContent = notes.join(" · ");
  }

  // ------------------------------------------------------------------ SME fund, sub-quotas
  /** The fund's public statement: balance, inflows by source and period, grants paid. */
  async loadFund() {
    let f;
    try {
      f = await publicApi.get(ENDPOINTS.fund);
    } catch (e) {
      $("#fund-kpis").replaceChildren(el("div", { class: "neg small", text: `SME fund statement unavailable — ${errorText(e)}` }));
      $("#fund-params").textContent = "";
      setRows($("#fund-periods tbody"), [], "—", 6);
      setRows($("#fund-grants tbody"), [], "—", 7);
      return;
    }
    const src = f.inflows.by_source;
    const apps = f.applications || {};
    const kpi = (label, value, opts = {}) => el("div", { class: "kpi", dataset: { kpi: opts.key || label } },
      el("label", { text: label }), el("span", { class: opts.cls || "", title: opts.title || "", text: value }));
    $("#fund-kpis").replaceChildren(
      kpi("Balance (CNY)", cny(f.balance), { key: "balance", cls: "strong",
        title: f.balance_check.ok ? "balance = inflows − grants (checked)" : "balance check FAILED" }),
      kpi("Inflows", cny(f.inflows.total), { key: "inflows" }),
      kpi("from penalties", cny(src.penalty), { key: "penalty" }),
      kpi("from the budget", cny(src.budget), { key: "budget" }),
      kpi("from auctions", cny(src.auction), { key: "auction" }),
      kpi("Grants paid", `${cny(f.grants.total)} · ${f.grants.count}`, { key: "grants", title: "total CNY · number of grants" }),
      kpi("Applications", `${apps.pending || 0} pending · ${apps.approved || 0} approved · ${apps.rejected || 0} rejected`, { key: "applications" }));
    const p = f.params;
    const limit = (v) => (v === null || v === undefined ? "no limit" : `${cny(v)} CNY`);
    $("#fund-params").textContent = !f.configured || !p ? "The fund is not configured."
      : `${pctText(p.penalty_to_fund_pct)} of each penalty · ${pctText(p.auction_to_fund_pct)} of auction proceeds · `
        + `per SME and period ${limit(p.sme_period_limit)} · per period ${limit(p.period_limit)}`
        + ` · set ${p.operator ? `by ${p.operator} ` : ""}at seq ${p.effective_seq}`;
    $("#fund-meta").textContent = `public statement · as of seq ${f.as_of_seq}${f.balance_check.ok ? "" : " · BALANCE CHECK FAILED"}`;
    const paidBy = Object.fromEntries(f.grants.by_period.map((g) => [g.period, g]));
    const periods = [...new Set([...f.inflows.by_period.map((r) => r.period), ...Object.keys(paidBy).map(Number)])].sort();
    const inBy = Object.fromEntries(f.inflows.by_period.map((r) => [r.period, r]));
    setRows($("#fund-periods tbody"), periods.map((per) => {
      const r = inBy[per] || { penalty: "0.00", budget: "0.00", auction: "0.00", total: "0.00" };
      const g = paidBy[per];
      return el("tr", { dataset: { period: per } },
        el("td", { class: "strong", text: String(per) }),
        el("td", { class: "num", text: cny(r.penalty) }), el("td", { class: "num", text: cny(r.budget) }),
        el("td", { class: "num", text: cny(r.auction) }), el("td", { class: "num", text: cny(r.total) }),
        el("td", { class: "num", title: g && g.limit !== null ? `limit ${cny(g.limit)} CNY` : "",
          text: g ? `${cny(g.total)} (${g.grants})` : "—" }));
    }), "No inflows yet", 6);
    setRows($("#fund-grants tbody"), paidGrantRows(f.grants.paid), "No grants paid yet", 7);
  }

  /** Every sub-quota lot with its terms (operator/verifier list). */
  async loadSubQuotas() {
    let lots;
    try {
      lots = (await this.api.get(ENDPOINTS.subQuotas)).sub_quotas;
    } catch (e) {
      renderLots($("#op-sq"), [], "all", `Sub-quotas unavailable — ${errorText(e)}`);
      return;
    }
    renderLots($("#op-sq"), lots, "all", "No sub-quotas have been split");
    const granted = lots.reduce((n, q) => n + q.granted, 0);
    $("#op-sq-meta").textContent = `${lots.length} lot(s) · ${qty(granted)} t granted`;
  }
}
