// Verified emissions by category (docs/COMPLIANCE.md, "MRV"): energy (fuels + electricity
// bought), process, natural — each covered (counts toward the obligation) or reported only.
// The firm view reads a statement's `emissions_by_category`; the operator view a summary row.
import { el, qty } from "./util.js";

const SHORT = { energy: "E", process: "P", natural: "N" };
export const CATEGORIES = ["energy", "process", "natural"];

/** {energy: {emissions, covered, fuels, electricity}, process: {...}, natural: {...}} from a
 *  compliance summary row and the summary's covered categories. */
export function fromSummaryRow(row, covered) {
  const cov = new Set(covered || []);
  return {
    energy: { emissions: row.energy, covered: cov.has("energy"), fuels: row.energy_fuels, electricity: row.energy_electricity },
    process: { emissions: row.process, covered: cov.has("process") },
    natural: { emissions: row.natural, covered: cov.has("natural") },
    total: row.emissions, covered_total: row.covered_emissions,
  };
}

/** A table cell: "E 34,452 · P 500 · N 1,250", an uncovered category muted and marked, the
 *  detail (fuels / electricity, covered or not) in the title. */
export function categoryCell(b) {
  if (!b || !b.energy) return el("td", { class: "num", text: "—" });
  const parts = [];
  const words = [];
  for (const c of CATEGORIES) {
    const x = b[c];
    if (parts.length) parts.push(" · ");
    parts.push(el("span", { class: x.covered ? "" : "muted", dataset: { category: c, covered: String(x.covered) },
      text: `${SHORT[c]} ${qty(x.emissions)}${x.covered ? "" : "*"}` }));
    const detail = c === "energy" ? ` (fuels ${qty(x.fuels)} + electricity ${qty(x.electricity)})` : "";
    words.push(`${c} ${qty(x.emissions)} t${detail}, ${x.covered ? "covered" : "not covered"}`);
  }
  words.push(`total ${qty(b.total)} t; covered ${qty(b.covered_total)} t`);
  return el("td", { class: "num categories", title: `${words.join("\n")}\n* reported, not covered: no obligation` }, ...parts);
}
