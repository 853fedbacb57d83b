// SME sub-quotas and SME fund grants: the tables the Firm view (an SME, its core firm) and the
// Operator view share. Rows come straight from GET /rules/sub-quotas[/{firm}] (SubQuotaLot) and
// GET /compliance/sme-fund[/applications] (GrantApplication); money there is CNY strings, times
// ISO-8601 (docs/PROTOCOL.md "Units").
import { el, setRows, qty, money, fenToStr, dateText } from "./util.js";

/** Integer fen, or a CNY string as the API now writes money ("8000.00"), -> "80,000.00"
 * (grouped, no floats). */
export const cny = (fen) => (fen === null || fen === undefined ? "—"
  : money(typeof fen === "string" ? fen : fenToStr(fen)));

/** ppm -> "65 %", "33.3333 %" (exact: integer arithmetic only). */
export function ppmPct(ppm) {
  const frac = String(ppm % 10000).padStart(4, "0").replace(/0+$/, "");
  return `${Math.floor(ppm / 10000)}${frac ? "." + frac : ""} %`;
}

/** A lot's revenue share (the SME's part) in ppm: from "revenue_share" as the API writes it
 * for people ("0.7"), else from the integer "revenue_share_ppm". */
export function sharePpm(q) {
  if (q.revenue_share_ppm !== undefined && q.revenue_share_ppm !== null) return q.revenue_share_ppm;
  const [i, f = ""] = String(q.revenue_share).split(".");
  return parseInt(i, 10) * 1000000 + parseInt((f + "000000").slice(0, 6), 10);
}

const SURPLUS = { revert: "reverts to parent", bank: "banked by SME" };
const SURPLUS_TITLE = {
  revert: "at the period's end the lot's free rest goes back to the core firm",
  bank: "at the period's end the lot's free rest stays with the SME (the terms still apply to its sale)",
};
const SHORTFALL = { sme: "SME bears it", parent: "parent covers" };
const SHORTFALL_TITLE = {
  sme: "a shortfall of the SME beyond the lot is the SME's own",
  parent: "at the deadline the core firm surrenders for the SME's shortfall beyond the lot",
};
const USE = { surrendered: "surrendered", covered_by_parent: "covered by parent", reverted: "reverted", banked: "banked" };

/** What the period end did with a lot: compliance's use of it and the rules' settlement. */
function periodEnd(lot) {
  const parts = [];
  for (const [k, v] of Object.entries(lot.compliance || {})) {
    if (k in USE && v) parts.push(`${USE[k]} ${qty(v)} t`);
  }
  const s = lot.settlement;
  if (s) {
    parts.push(`surplus ${qty(s.surplus)} t ${s.action === "revert" ? "reverted" : "banked"}`
      + (s.reserved_left ? ` · ${qty(s.reserved_left)} t in orders` : ""));
  }
  return parts.length ? parts.join(" · ") : "open";
}

/**
 * An SME's lot in one sentence: the grant, the parent firm, the revenue-share terms and what
 * reverts at the period's end (or what did, once the period is settled).
 */
export function lotSummary(q) {
  const share = sharePpm(q);
  const per = q.period === null || q.period === undefined ? "the period" : String(q.period);
  const head = `Lot #${q.lot_id}: ${qty(q.granted)} t of ${q.instrument} granted by ${q.parent}`
    + (q.period === null || q.period === undefined ? "" : ` for ${per}`);
  const terms = `you keep ${ppmPct(share)} of each sale's net proceeds, ${q.parent} gets ${ppmPct(1000000 - share)}`;
  let end;
  if (q.settlement) {
    end = q.settlement.action === "revert"
      ? `at the end of ${per} ${qty(q.settlement.surplus)} t reverted to ${q.parent}`
      : `at the end of ${per} ${qty(q.settlement.surplus)} t stayed with you (banked)`;
  } else if (q.surplus_rule === "revert") {
    end = `at the end of ${per} what is left unsold and unsurrendered (${qty(q.held)} t now) reverts to ${q.parent}`;
  } else {
    end = `at the end of ${per} what is left (${qty(q.held)} t now) stays with you (banked); nothing reverts`;
  }
  return `${head} · ${terms} · ${end}.`;
}

/**
 * One row per lot. ``side``: "received" (an SME's view: the parent it came from),
 * "split_out" (a core firm's: the SME it went to) or "all" (the operator's: both).
 */
export function lotRows(lots, side) {
  return lots.map((q) => {
    const who = side === "received" ? [el("td", { class: "strong", text: q.parent })]
      : side === "split_out" ? [el("td", { class: "strong", text: q.sme })]
        : [el("td", { class: "strong", text: q.parent }), el("td", { class: "strong", text: q.sme })];
    const share = sharePpm(q);
    return el("tr", { dataset: { lot: q.lot_id, parent: q.parent, sme: q.sme } },
      el("td", { class: "mono", text: `#${q.lot_id}` }),
      el("td", { text: q.period === null || q.period === undefined ? "—" : String(q.period) }),
      el("td", { text: q.instrument }),
      ...who,
      el("td", { text: q.chain_id || "—" }),
      el("td", { class: "num", text: qty(q.granted) }),
      el("td", { class: "num", text: qty(q.held) }),
      el("td", { class: "num", text: qty(q.sold) }),
      el("td", { class: "terms", title: `of the net proceeds of each sale of the lot: SME ${ppmPct(share)}, parent ${ppmPct(1000000 - share)}` },
        `SME ${ppmPct(share)}`, el("span", { class: "muted", text: ` · parent ${ppmPct(1000000 - share)}` })),
      el("td", { class: "terms", title: SURPLUS_TITLE[q.surplus_rule] || "", text: SURPLUS[q.surplus_rule] || q.surplus_rule }),
      el("td", { class: "terms", title: SHORTFALL_TITLE[q.shortfall_rule] || "", text: SHORTFALL[q.shortfall_rule] || q.shortfall_rule }),
      el("td", { class: "num", title: "CNY from sales of the lot: SME / parent" },
        q.sold ? `${cny(q.sme_proceeds)} / ${cny(q.parent_proceeds)}` : "—"),
      el("td", { class: "small", text: periodEnd(q) }));
  });
}

export const LOT_HEAD = {
  received: ["Lot", "Period", "Instrument", "From (core firm)", "Chain"],
  split_out: ["Lot", "Period", "Instrument", "To (SME)", "Chain"],
  all: ["Lot", "Period", "Instrument", "Core firm", "SME", "Chain"],
};
const LOT_TAIL = [["Granted (t)", true], ["Held (t)", true], ["Sold (t)", true], ["Revenue share"],
  ["Surplus"], ["Shortfall"], ["Proceeds SME / parent (CNY)", true], ["Period end"]];

/** The header row of a lot table. */
export function lotHead(side) {
  return el("tr", {}, ...LOT_HEAD[side].map((h) => el("th", { text: h })),
    ...LOT_TAIL.map(([h, num]) => el("th", { class: num ? "num" : "", text: h })));
}

export function lotColumns(side) { return LOT_HEAD[side].length + LOT_TAIL.length; }

/** Fill a lot table (head and body). */
export function renderLots(table, lots, side, emptyText) {
  table.tHead.replaceChildren(lotHead(side));
  setRows(table.tBodies[0], lotRows(lots, side), emptyText, lotColumns(side));
}

/** A time as the API writes it (ISO-8601 with offset) -> its date in the market's zone. */
const nsDate = (t) => (t ? dateText(t) : "—");

function decision(a) {
  if (a.status === "disbursed") return `paid ${nsDate(a.disbursed_at)} · seq ${a.disbursed_seq}`;
  if (a.status === "rejected") return `rejected by ${a.decided_by || "operator"}: ${a.reason}`;
  if (a.status === "approved") return `approved by ${a.decided_by} · awaiting payment`;
  return "awaiting decision";
}

/** One row per grant application (an SME's own: status, applied, decision). */
export function grantRows(apps) {
  return apps.map((a) => el("tr", { dataset: { application: a.application_id, status: a.status } },
    el("td", { class: "mono", text: `#${a.application_id}` }),
    el("td", { text: String(a.period) }),
    el("td", { class: "project", text: a.project }),
    el("td", { class: "num", text: qty(a.verified_abatement_t) }),
    el("td", { class: "num", text: cny(a.amount) }),
    el("td", {}, el("span", { class: `status ${a.status}`, text: a.status })),
    el("td", { class: "small", text: `${nsDate(a.applied_at)}${a.applicant && a.applicant !== a.sme ? ` by ${a.applicant}` : ""}` }),
    el("td", { class: "small", text: decision(a) })));
}

/** One row per grant paid (the fund statement's ``grants.paid``: all disbursed). */
export function paidGrantRows(paid) {
  return paid.map((a) => el("tr", { dataset: { application: a.application_id } },
    el("td", { class: "mono", text: `#${a.application_id}` }),
    el("td", { class: "strong", text: a.sme }),
    el("td", { text: String(a.period) }),
    el("td", { class: "project", text: a.project }),
    el("td", { class: "num", text: qty(a.verified_abatement_t) }),
    el("td", { class: "num", text: cny(a.amount) }),
    el("td", { class: "small", text: `${nsDate(a.disbursed_at)} · seq ${a.disbursed_seq}` })));
}
