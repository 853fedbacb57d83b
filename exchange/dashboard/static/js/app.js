// Boot: tabs, the market-data session, and the three views.
import { $, $$, toast, errorText } from "./util.js";
import { MarketView } from "./market.js";
import { OperatorView } from "./operator.js";
import { FirmView } from "./firm.js";

// Keys live in sessionStorage only (gone when the tab closes), never in the URL.
export const keys = {
  get(role) { return sessionStorage.getItem(`cx.key.${role}`); },
  set(role, k) { if (k) sessionStorage.setItem(`cx.key.${role}`, k); else sessionStorage.removeItem(`cx.key.${role}`); },
};

function showView(name) {
  for (const b of $$(".tabs [role=tab]")) b.setAttribute("aria-selected", String(b.dataset.view === name));
  for (const v of $$(".view")) v.hidden = v.id !== `view-${name}`;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  window.dispatchEvent(new CustomEvent("cx:view", { detail: name }));
}

function setConn(node, state, detail) {
  node.dataset.state = state;
  node.querySelector(".conn-text").textContent = detail && state === "online" ? `live · ${detail}` : state;
  node.title = detail || state;
}

function startClock() {
  const c = $("#clock");
  const tick = () => { c.textContent = new Date().toISOString().slice(11, 19) + " UTC"; };
  tick();
  setInterval(tick, 1000);
}

window.addEventListener("unhandledrejection", (ev) => {
  toast(`Unexpected error — ${errorText(ev.reason)}`, "error");
});

document.addEventListener("DOMContentLoaded", () => {
  startClock();
  const market = new MarketView({ keys, setConn: (s, d) => setConn($("#conn-status"), s, d) });
  const operator = new OperatorView({ keys, market });
  const firm = new FirmView({ keys, market, setConn: (s, d) => setConn($("#firm-conn"), s, d) });
  window.cx = { market, operator, firm }; // for debugging in the browser console
  for (const b of $$(".tabs [role=tab]")) b.addEventListener("click", () => showView(b.dataset.view));
  const initial = (location.hash || "#market").slice(1);
  showView(["market", "operator", "firm"].includes(initial) ? initial : "market");
  market.start();
  operator.start();
  firm.start();
});
