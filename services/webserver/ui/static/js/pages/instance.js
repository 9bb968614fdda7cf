// The cluster at a glance: live components with state and last heartbeat, queue depths.
import { h, clear, fmtDate } from "../util.js";
import { get } from "../api.js";
import { showError } from "../app.js";

const REFRESH_MS = 2000;

export async function render(main) {
  const body = h("div");
  clear(main, h("header.page-head", h("h1", "Instance"), h("span.muted", `refreshed every ${REFRESH_MS / 1000} s`)), body);
  let timer = null;
  let stopped = false;
  async function load() {
    try {
      const found = await get("/api/v1/instance");
      if (stopped) return;
      const kinds = {};
      for (const s of found.services) kinds[s.kind] = (kinds[s.kind] || 0) + 1;
      clear(body,
        h("div.cards",
          Object.entries(kinds).map(([k, n]) => h("div.card", { "data-kind": k }, h("div.muted", `${k}s`), h("div.stat", n))),
          found.queues.map((q) => h("div.card", { "data-queue": q.name }, h("div.muted", `queue ${q.name}`), h("div.stat", q.depth)))),
        h("h3", "Components"),
        h("table.grid", h("thead", h("tr", ["Kind", "Id", "State", "Host", "PID", "Started", "Last heartbeat", "Details"].map((x) => h("th", x)))),
          h("tbody", found.services.map((s) => h("tr", { "data-service": s.id },
            h("td", s.kind), h("td.mono", s.id), h("td", h("span.badge", { style: { background: s.state === "RUNNING" ? "#16a34a" : "#f59e0b" } }, s.state)),
            h("td", s.host), h("td", s.pid), h("td", fmtDate(s.started)),
            h("td", s.info?.answering ? "serving this page" : `${fmtDate(s.heartbeat)} (${s.secondsSinceHeartbeat.toFixed(1)} s ago)`),
            h("td", Object.entries(s.info || {}).filter(([k]) => k !== "answering").map(([k, v]) => h("span.label", `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`))))))));
    } catch (error) { clear(body); showError(body, error); }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}
