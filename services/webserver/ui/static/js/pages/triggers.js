// Every trigger with its next date; enable/disable; backfill a date range.
import { h, clear, fmtDate, toast, pager } from "../util.js";
import { api, get, qs, enc } from "../api.js";
import { showError } from "../app.js";

const SIZE = 50;

export function triggersTable(results, reload) {
  const errors = h("div");
  const rows = results.map((t) => {
    const c = t.triggerContext;
    const type = (t.abstractTrigger.type || "").split(".").pop();
    const ref = { namespace: c.namespace, flowId: c.flowId, triggerId: c.triggerId };
    const toggle = h("button.small", { onclick: async () => {
      clear(errors);
      try {
        await api("PUT", "/api/v1/triggers", { json: { ...ref, disabled: !c.disabled } });
        toast(`Trigger ${c.triggerId} ${c.disabled ? "enabled" : "disabled"}`);
        reload();
      } catch (error) { showError(errors, error); }
    } }, c.disabled ? "Enable" : "Disable");
    const start = h("input", { type: "datetime-local", "aria-label": "backfill start" });
    const end = h("input", { type: "datetime-local", "aria-label": "backfill end" });
    const backfill = type === "Schedule" ? h("form.resume", { onsubmit: async (e) => {
      e.preventDefault();
      clear(errors);
      try {
        const answer = await api("PUT", "/api/v1/triggers", { json: { ...ref, backfill: {
          start: start.value ? new Date(start.value).toISOString() : "",
          end: end.value ? new Date(end.value).toISOString() : null } } });
        toast(`Backfill created ${answer.backfill?.executions ?? 0} execution(s)`);
        reload();
      } catch (error) { showError(errors, error); }
    } }, h("span.hint", "backfill from"), start, h("span.hint", "to"), end, h("button.small", { type: "submit" }, "Backfill")) : null;
    return h("tr", { "data-trigger": `${c.namespace}.${c.flowId}.${c.triggerId}` },
      h("td", c.triggerId), h("td", h("a", { href: `/ui/flows/${enc(c.namespace)}/${enc(c.flowId)}` }, c.flowId)), h("td", c.namespace),
      h("td", type, t.abstractTrigger.cron ? h("code", ` ${t.abstractTrigger.cron}`) : null),
      h("td", c.disabled ? h("span.muted", "disabled") : "enabled"),
      h("td", fmtDate(c.nextExecutionDate)), h("td", fmtDate(c.date)), h("td", h("div.actions", toggle, backfill)));
  });
  return h("div", errors, h("table.grid", h("thead", h("tr", ["Trigger", "Flow", "Namespace", "Type", "Status", "Next date", "Last date", ""].map((x) => h("th", x)))), h("tbody", rows)));
}

export async function render(main, _params, query) {
  const state = { q: query.q || "", page: 1 };
  const body = h("div");
  clear(main, h("header.page-head", h("h1", "Triggers")),
    h("div.filters", h("input", { type: "search", placeholder: "Search triggers", value: state.q, "aria-label": "search triggers",
      onchange: (e) => { state.q = e.target.value; state.page = 1; load(); } })), body);
  async function load() {
    try {
      const found = await get(`/api/v1/triggers/search${qs({ q: state.q, page: state.page, size: SIZE })}`);
      clear(body, found.total ? triggersTable(found.results, load) : h("p.empty", "No trigger."),
        pager(found.total, state.page, SIZE, (p) => { state.page = p; load(); }));
    } catch (error) { clear(body); showError(body, error); }
  }
  await load();
}
