// Boot: tabs, the market-data session, and the three views.
import { $, $$, toast, errorText } from "./util.js";
import { MarketView } from "./market.js";
import { OperatorView } from "./operator.js";
import { FirmView } from "./firm.js";
import { publicApi } from "./api.js";

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

// Which node serves this page and which node leads (GET /node): a replicated exchange runs a
// leader and hot standbys (docs/DEPLOYMENT.md); an operator must see at a glance which one
// this is, and when it has lost the lease.
export function nodeText(n) {
  const journal = { sqlite: "SQLite", postgresql: "PostgreSQL", nats: "JetStream", memory: "in memory" }[n.journal] || n.journal;
  if (n.role === "single") return `node ${n.node_id} · single node · ${journal}`;
  if (n.role === "leader") return `node ${n.node_id} · leader · ${journal}`;
  const who = n.leader ? `leader is ${n.leader.node_id}` : "no leader now";
  return `node ${n.node_id} · stepping down · ${who}`;
}

function startNodeStatus() {
  const el = $("#node-role");
  const poll = async () => {
    try {
      const n = await publicApi.get("/node");
      el.textContent = nodeText(n);
      el.dataset.role = n.role;
      el.title = n.leader
        ? `leader ${n.leader.node_id} at ${n.leader.address} · lease revision ${n.leader.revision}` +
          (n.leader.renewed_s_ago == null ? "" : ` · renewed ${n.leader.renewed_s_ago} s ago`)
        : `journal ${n.journal}`;
    } catch (e) {
      el.textContent = "node unreachable";
      el.dataset.role = "unreachable";
      el.title = errorText(e);
    }
  };
  poll();
  setInterval(poll, 5000);
}

window.addEventListener("unhandledrejection", (ev) => {
  toast(`Unexpected error — ${errorText(ev.reason)}`, "error");
});

document.addEventListener("DOMContentLoaded", () => {
  startClock();
  startNodeStatus();
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
