// Home: executions per day by state (a chart), the latest failures, the running ones.
import { h, clear, fmtDate, stateBadge, STATE_COLORS, loadScript } from "../util.js";
import { api, get, qs, enc } from "../api.js";

function list(title, found) {
  return h("div.card", h("h3", `${title} (${found.total})`), found.results.length
    ? h("table.grid", h("tbody", found.results.map((e) => h("tr",
      h("td", h("a.mono", { href: `/ui/executions/${enc(e.id)}` }, e.id)), h("td", `${e.namespace}.${e.flowId}`),
      h("td", stateBadge(e.state.current)), h("td.muted", fmtDate(e.state.histories?.[0]?.date))))))
    : h("p.muted", "None"));
}

export async function render(main) {
  const [days, failed, running] = await Promise.all([
    api("POST", "/api/v1/stats/executions/daily", { json: {} }),
    get(`/api/v1/executions/search${qs({ state: ["FAILED", "KILLED"], size: 10 })}`),
    get(`/api/v1/executions/search${qs({ state: ["CREATED", "QUEUED", "RUNNING", "PAUSED", "RETRYING", "KILLING"], size: 10 })}`),
    loadScript("/ui/vendor/chart.js/chart.umd.min.js"),
  ]);
  const canvas = h("canvas", { "aria-label": "executions per day" });
  const totals = {};
  for (const d of days) for (const [s, n] of Object.entries(d.executionCounts)) totals[s] = (totals[s] || 0) + n;
  const sum = Object.values(totals).reduce((a, b) => a + b, 0);
  clear(main, h("header.page-head", h("h1", "Dashboard")),
    h("div.cards",
      h("div.card", h("div.muted", "Executions, last 30 days"), h("div.stat", sum)),
      h("div.card", h("div.muted", "Succeeded"), h("div.stat", totals.SUCCESS || 0)),
      h("div.card", h("div.muted", "Failed"), h("div.stat", { style: { color: STATE_COLORS.FAILED } }, totals.FAILED || 0)),
      h("div.card", h("div.muted", "Running now"), h("div.stat", running.total))),
    h("div.card", h("h3", "Executions per day"), h("div.chart-box", canvas)),
    h("div.cards.wide", list("Latest failures", failed), list("Running", running)));
  const shown = Object.keys(STATE_COLORS).filter((s) => totals[s]);
  const chart = new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: days.map((d) => d.startDate),
      datasets: shown.map((s) => ({ label: s, data: days.map((d) => d.executionCounts[s] || 0), backgroundColor: STATE_COLORS[s] })),
    },
    options: { maintainAspectRatio: false, animation: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  });
  return () => chart.destroy();
}
